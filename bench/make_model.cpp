// make_model: writes a random-weight GGUF model with a real architecture's
// tensor layout, for benchmarking kestrel and other runtimes on identical
// files (the weights are random, so only speed means anything).
//
//   make_model --arch llama --shape tinyllama --weights q4_k_m -o tinyllama-q4_k_m.gguf
//   make_model --arch phi3 --shape tiny -o phi3-tiny.gguf      (loads in llama.cpp too)
//   make_model --shape tinyllama --weights f16 --ks-monarch 4 -o tinyllama-ks.gguf
//
// --ks-monarch N (llama, f32 / f16 / bf16): every attn_q/k/v/output and ffn_gate/up/down
// is stored as a monarch chain of N blocks (ks_monarch_chain, docs/ks-gguf.md) with random
// factors, the same tensors that `kestrel ks-factorize --pattern monarchN` writes, without
// the fit (minutes on one core for TinyLlama): for speed measurements, where the values
// do not matter.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "runtime/ks/ks_factorize.h"
#include "runtime/ks/ks_rewrite.h"
#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/model/synth.h"

namespace {

// The synthetic model of s with every projection a random monarch chain of `blocks`.
kestrel::Status write_ks_model(const kestrel::SynthSpec& s, int blocks, const std::string& out) {
  using namespace kestrel;
  const DType type = s.weights == "f32" ? DType::F32 : s.weights == "bf16" ? DType::BF16 : DType::F16;
  KESTREL_TRY_ASSIGN(std::vector<uint8_t> base, synth_model_gguf(s));
  KESTREL_TRY_ASSIGN(auto file, gguf::File::from_memory(base.data(), base.size()));
  const int64_t E = s.n_embd, Q = s.n_embd, KV = s.n_embd / s.n_head * s.n_head_kv, F = s.n_ff;
  const struct {
    const char* name;
    int64_t n_in, n_out;
  } projs[] = {{"attn_q", E, Q},        {"attn_k", E, KV},   {"attn_v", E, KV},  {"attn_output", Q, E},
               {"ffn_gate", E, F},      {"ffn_up", E, F},    {"ffn_down", F, E}};
  std::mt19937 rng(static_cast<uint32_t>(s.seed));
  std::vector<KsProjFactors> repl;
  for (int64_t il = 0; il < s.n_layer; ++il)
    for (const auto& pr : projs) {
      KESTREL_TRY_ASSIGN(std::vector<KsMatmulParams> pats, ks_monarch_chain(pr.n_in, pr.n_out, blocks));
      KsProjFactors r{static_cast<int>(il), pr.name, pats, {}};
      for (const KsMatmulParams& p : pats) {
        // Scaled by 1/sqrt(c): activations keep their size through the chain.
        std::normal_distribution<float> nd(0.0f, 1.0f / std::sqrt(static_cast<float>(p.c)));
        std::vector<float> w(static_cast<size_t>(p.a) * p.b * p.c * p.d);
        for (float& v : w) v = nd(rng);
        r.factors.push_back(std::move(w));
      }
      repl.push_back(std::move(r));
    }
  gguf::Writer w;
  KESTREL_TRY(ks_rewrite_gguf(*file, repl, type, KsWrite::factors, w));
  return w.write_file(out);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Write a random-weight GGUF model (benchmarks only)"};
  std::string arch = "llama", shape = "tinyllama", weights = "f16", out;
  uint64_t seed = 1;
  int threads = 2;
  app.add_option("--arch", arch,
                 "llama | llama3 (llama + Llama 3.1 rope_freqs, theta 500000) | qwen2 | qwen3 | "
                 "phi3 (fused qkv and gate-up, LongRoPE factors, rotary on 3/4 of each head) | gemma2 | gemma3")
      ->check(CLI::IsMember({"llama", "llama3", "qwen2", "qwen3", "phi3", "gemma2", "gemma3"}));
  app.add_option("--shape", shape, "tinyllama (dim 2048, ffn 5632, 22 layers, 32/4 heads, vocab 32000) | tiny")
      ->check(CLI::IsMember({"tinyllama", "tiny"}));
  app.add_option("--weights", weights, "f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k q4_k_m");
  app.add_option("--seed", seed, "random seed");
  int64_t swa = 0, ctx = 0;
  app.add_option("--ctx", ctx, "context_length written (0: the shape's; phi3's original context is a quarter of it)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 24));
  app.add_option("--swa", swa, "gemma2 / gemma3: sliding window written to the file (0: the arch default)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 24));
  app.add_option("-t,--threads", threads, "quantization threads")->check(CLI::Range(1, 256));
  int ks_monarch = 0;
  app.add_option("--ks-monarch", ks_monarch,
                 "llama, f32 / f16 / bf16: every projection a random monarch chain of N blocks (0: dense)")
      ->check(CLI::Range(0, 64));
  app.add_option("-o,--output", out, "output .gguf path")->required();
  CLI11_PARSE(app, argc, argv);

  kestrel::SynthSpec s;
  using kestrel::ArchId;
  s.arch = arch == "qwen2"    ? ArchId::qwen2
           : arch == "qwen3"  ? ArchId::qwen3
           : arch == "phi3"   ? ArchId::phi3
           : arch == "gemma2" ? ArchId::gemma2
           : arch == "gemma3" ? ArchId::gemma3
                              : ArchId::llama;
  if (shape == "tinyllama") {
    s.n_vocab = 32000;
    s.n_embd = 2048;
    s.n_layer = 22;
    s.n_head = 32;
    s.n_head_kv = 4;
    s.n_ff = 5632;
    s.n_ctx = 2048;
  }
  if (arch == "llama3") {
    s.rope_freqs = true;
    s.rope_theta = 500000.0f;
  }
  if (arch == "phi3") {
    s.rope_long_short = true;
    s.n_rot = (s.n_embd / s.n_head) * 3 / 4 / 2 * 2;
  }
  s.n_swa = swa;
  if (ctx > 0) s.n_ctx = ctx;
  s.weights = weights;
  s.seed = seed;
  s.n_threads = threads;
  if (ks_monarch > 0 && (arch != "llama" || (weights != "f32" && weights != "f16" && weights != "bf16"))) {
    std::fprintf(stderr, "make_model: --ks-monarch needs --arch llama and f32, f16 or bf16 weights\n");
    return 2;
  }
  const kestrel::Status st = ks_monarch > 0 ? write_ks_model(s, ks_monarch, out) : kestrel::write_synth_model(s, out);
  if (!st.ok()) {
    std::fprintf(stderr, "make_model: %s\n", st.to_string().c_str());
    return st.code() == kestrel::StatusCode::invalid_argument ? 2 : 1;
  }
  std::fprintf(stderr, "make_model: wrote %s\n", out.c_str());
  return 0;
}
