// KS layers in a whole model on the GPU (ContextParams::backend = cuda): a small random
// llama whose projections are Kronecker-sparse factor chains (monarch chains of 4 and 8
// blocks, and strided / block-diagonal ones) gives the cpu context's logits for a
// 40-token prompt (the batch_last KS path) and single-token steps (token_major, replayed
// as CUDA graphs from the second step), with F32, F16 and BF16 factors.
// Tolerances (logits NMSE against the cpu context): F32 / F16 factors 1e-8 (F32 math on
// both sides); BF16 factors 1e-4: the GPU rounds each KS factor's input to BF16 on tensor
// cores (2^-8 relative per value, about 1e-3 relative RMS per factor, see cuda_ks.h) over
// up to 3 factors a projection and 7 projections a layer, where the cpu keeps F32 inputs.
// Without a GPU every case prints "SKIP: no CUDA device".
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "ops/cuda/cuda_backend.h"
#include "ops/half.h"
#include "runtime/engine/context.h"
#include "runtime/ks/ks_factorize.h"
#include "runtime/ks/ks_rewrite.h"
#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/model/synth.h"
#include "tests/model_test_util.h"

using namespace kestrel;
using namespace kestrel::testutil;

namespace {

bool have_gpu() {
  static const bool ok = backend_cuda().create(BackendOptions{}).ok();
  return ok;
}

// E = 128, Q = 128 (4 heads of 32), KV = 64 (2 kv heads), F = 256, 2 layers.
SynthSpec spec() {
  SynthSpec s;
  s.n_embd = 128;
  s.n_ff = 256;
  s.n_head = 4;
  s.n_head_kv = 2;
  s.n_layer = 2;
  s.weights = "f32";
  return s;
}

KsProjFactors factors(int layer, const std::string& proj, std::vector<KsMatmulParams> pats, std::mt19937& rng) {
  KsProjFactors r{layer, proj, pats, {}};
  for (const KsMatmulParams& p : pats) {
    // Scaled by 1/sqrt(c) so that activations keep their size through the chain.
    std::normal_distribution<float> nd(0.0f, 1.0f / std::sqrt((float)p.c));
    std::vector<float> w((size_t)p.a * p.b * p.c * p.d);
    for (float& v : w) v = nd(rng);
    r.factors.push_back(std::move(w));
  }
  return r;
}

std::vector<KsMatmulParams> monarch(int64_t n_in, int64_t n_out, int blocks) {
  auto c = ks_monarch_chain(n_in, n_out, blocks);
  REQUIRE(c.status().to_string() == "ok");
  return std::move(c).value();
}

// Layer 0: every projection a monarch chain (4 blocks, as bench/ks_e2e.sh builds them);
// layer 1: monarch 8 and 3-factor chains with odd block sizes.
std::vector<KsProjFactors> chains() {
  std::mt19937 rng(23);
  std::vector<KsProjFactors> r;
  const struct {
    const char* proj;
    int64_t n_in, n_out;
  } projs[] = {{"attn_q", 128, 128},     {"attn_k", 128, 64},  {"attn_v", 128, 64}, {"attn_output", 128, 128},
               {"ffn_gate", 128, 256},   {"ffn_up", 128, 256}, {"ffn_down", 256, 128}};
  for (const auto& p : projs) r.push_back(factors(0, p.proj, monarch(p.n_in, p.n_out, 4), rng));
  r.push_back(factors(1, "attn_q", monarch(128, 128, 8), rng));
  r.push_back(factors(1, "ffn_up", {{2, 48, 64, 1}, {1, 32, 16, 6}, {8, 32, 24, 1}}, rng));  // 128 -> 96 -> 192 -> 256
  r.push_back(factors(1, "ffn_down", {{1, 40, 32, 8}, {8, 16, 40, 1}}, rng));              // 256 -> 320 -> 128
  return r;
}

std::vector<uint8_t> ks_model_bytes(DType type) {
  auto base = synth_model_gguf(spec());  // the writer borrows its tensors until to_bytes()
  REQUIRE(base.status().to_string() == "ok");
  auto f = gguf::File::from_memory(base->data(), base->size());
  REQUIRE(f.status().to_string() == "ok");
  gguf::Writer w;
  REQUIRE(ks_rewrite_gguf(**f, chains(), type, KsWrite::factors, w).to_string() == "ok");
  auto bytes = w.to_bytes();
  REQUIRE(bytes.status().to_string() == "ok");
  return std::move(bytes).value();
}

std::unique_ptr<Context> ctx_on(const Model& m, BackendChoice be) {
  ContextParams cp;
  cp.n_ctx = 64;
  cp.n_batch = 64;
  cp.n_threads = 2;
  cp.kv_type = DType::F32;
  cp.backend = be;
  cp.gpu = &backend_cuda();
  auto c = Context::create(m, cp);
  REQUIRE(c.status().to_string() == "ok");
  return std::move(c).value();
}

}  // namespace

TEST_CASE("cuda context: a model with KS factor chains gives the cpu context's logits", "[cuda][model][ks]") {
  if (!have_gpu()) {
    WARN("SKIP: no CUDA device");
    return;
  }
  for (DType type : {DType::F32, DType::F16, DType::BF16}) {
    const std::vector<uint8_t> bytes = ks_model_bytes(type);
    auto loaded = Model::load_from_memory(bytes.data(), bytes.size(), ModelParams{});
    REQUIRE(loaded.status().to_string() == "ok");
    const Model& m = **loaded;
    REQUIRE(m.layers[0].ks_q.n_factors == 2);
    REQUIRE(m.layers[1].ks_down.n_factors == 2);
    auto gpu = ctx_on(m, BackendChoice::cuda);
    auto cpu = ctx_on(m, BackendChoice::cpu);
    INFO("factors " << dtype_name(type));
    CHECK(std::string(gpu->backend_name()) == "cuda");
    const int64_t V = m.hparams().n_vocab;
    std::vector<int32_t> prompt;
    for (int i = 0; i < 40; ++i) prompt.push_back(3 + (i * 37) % 300);
    std::vector<float> lg, lc;
    REQUIRE(decode_all(*gpu, prompt, 0, 0, &lg).ok());
    REQUIRE(decode_all(*cpu, prompt, 0, 0, &lc).ok());
    double worst = nmse(lc.data(), lg.data(), lc.size());
    int32_t tok = argmax(lc.data() + lc.size() - V, V);
    for (int32_t step = 0; step < 4; ++step) {  // the same tokens on both: the cpu's choice
      REQUIRE(decode_all(*gpu, {tok}, 40 + step, 0, &lg).ok());
      REQUIRE(decode_all(*cpu, {tok}, 40 + step, 0, &lc).ok());
      worst = std::max(worst, nmse(lc.data(), lg.data(), static_cast<size_t>(V)));
      tok = argmax(lc.data(), V);
    }
    std::printf("cuda vs cpu, KS model with %s factors: worst logits NMSE %.3g\n", dtype_name(type), worst);
    CHECK(worst < (type == DType::BF16 ? 1e-4 : 1e-8));
  }
}
