#include "runtime/model/synth.h"

#include <cmath>
#include <memory>
#include <random>
#include <thread>

#include "ops/ref/quant.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/model/quantize.h"

namespace kestrel {

namespace {

struct Blob {
  std::string name;
  DType type;
  std::vector<int64_t> ne;
  std::vector<uint8_t> data;
};

Expected<DType> parse_type(const std::string& s) {
  if (s == "f32") return DType::F32;
  if (s == "f16") return DType::F16;
  if (s == "bf16") return DType::BF16;
  if (s == "q8_0") return DType::Q8_0;
  if (s == "q4_0") return DType::Q4_0;
  if (s == "q5_0") return DType::Q5_0;
  if (s == "q4_1") return DType::Q4_1;
  if (s == "q5_1") return DType::Q5_1;
  if (s == "q4_k" || s == "q4_k_m") return DType::Q4_K;
  if (s == "q5_k") return DType::Q5_K;
  if (s == "q6_k") return DType::Q6_K;
  return Status::invalid_argument("unknown weight type '%s'", s.c_str());
}

// Random matrix [ne0, ne1] quantized row by row; a type whose block does not
// divide ne0 falls back to f16 (as real converters do).
Status make_matrix(Blob& b, DType type, int64_t ne0, int64_t ne1, float scale, uint64_t seed, int n_threads) {
  if (ne0 % dtype_block_size(type) != 0) type = DType::F16;
  b.type = type;
  b.ne = {ne0, ne1};
  const size_t row = dtype_row_size(type, ne0);
  try {
    b.data.resize(row * static_cast<size_t>(ne1));
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("synthetic tensor %s", b.name.c_str());
  }
  auto work = [&](int ith, int nth) {
    std::vector<float> tmp(static_cast<size_t>(ne0));
    for (int64_t r = ith; r < ne1; r += nth) {
      std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(r));
      std::uniform_real_distribution<float> u(-scale, scale);
      for (auto& x : tmp) x = u(rng);
      ref::quantize_row(type, tmp.data(), b.data.data() + static_cast<size_t>(r) * row, ne0);
    }
  };
  std::vector<std::thread> ts;
  for (int t = 1; t < n_threads; ++t) ts.emplace_back(work, t, n_threads);
  work(0, n_threads);
  for (auto& t : ts) t.join();
  return {};
}

void make_vector(Blob& b, int64_t n, float base, float jitter, uint64_t seed) {
  b.type = DType::F32;
  b.ne = {n};
  b.data.resize(static_cast<size_t>(n) * 4);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-jitter, jitter);
  float* p = reinterpret_cast<float*>(b.data.data());
  for (int64_t i = 0; i < n; ++i) p[i] = base + u(rng);
}

}  // namespace

Expected<std::vector<uint8_t>> synth_model_gguf(const SynthSpec& s) {
  const ArchDesc& a = arch_desc(s.arch);
  KESTREL_TRY_ASSIGN(DType wt, parse_type(s.weights));
  const bool km = s.weights == "q4_k_m";
  if (s.n_vocab < 259 || s.n_embd < 2 || s.n_layer < 1 || s.n_head < 1 || s.n_head_kv < 1 ||
      s.n_head % s.n_head_kv != 0 || s.n_ff < 1)
    return Status::invalid_argument("synthetic model shape is invalid");
  const int64_t hd = s.head_dim > 0 ? s.head_dim : s.n_embd / s.n_head;
  const int64_t n_rot = s.n_rot > 0 ? s.n_rot : hd;
  const float theta = s.rope_theta > 0.0f ? s.rope_theta : a.default_rope_theta;
  if (n_rot > hd || n_rot % 2 != 0) return Status::invalid_argument("synthetic rope dims %lld for head dim %lld",
                                                                    (long long)n_rot, (long long)hd);
  if ((s.rope_freqs && a.rope_factors != RopeFactors::freqs) ||
      (s.rope_long_short && a.rope_factors == RopeFactors::none))
    return Status::invalid_argument("%s has no rope frequency factors", a.name);
  if (s.rope_long_short && s.n_ctx < 8) return Status::invalid_argument("LongRoPE needs n_ctx >= 8");
  const int64_t E = s.n_embd, Q = s.n_head * hd, KV = s.n_head_kv * hd, F = s.n_ff, V = s.n_vocab;
  const int nt = s.n_threads < 1 ? 1 : s.n_threads;

  gguf::Writer w;
  w.set_string("general.architecture", a.name);
  w.set_string("general.name", std::string("synthetic ") + a.name + " " + s.weights);
  auto key = [&](const char* k) { return std::string(a.name) + "." + k; };
  w.set_u32(key("context_length"), static_cast<uint32_t>(s.n_ctx));
  w.set_u32(key("embedding_length"), static_cast<uint32_t>(E));
  w.set_u32(key("block_count"), static_cast<uint32_t>(s.n_layer));
  w.set_u32(key("feed_forward_length"), static_cast<uint32_t>(F));
  w.set_u32(key("attention.head_count"), static_cast<uint32_t>(s.n_head));
  w.set_u32(key("attention.head_count_kv"), static_cast<uint32_t>(s.n_head_kv));
  w.set_u32(key("attention.key_length"), static_cast<uint32_t>(hd));
  w.set_u32(key("attention.value_length"), static_cast<uint32_t>(hd));
  w.set_u32(key("rope.dimension_count"), static_cast<uint32_t>(n_rot));
  w.set_f32(key("attention.layer_norm_rms_epsilon"), a.default_rms_eps);
  w.set_f32(key("rope.freq_base"), theta);
  if (a.sliding_window && s.n_swa > 0) w.set_u32(key("attention.sliding_window"), static_cast<uint32_t>(s.n_swa));
  if (a.default_attn_softcap > 0.0f)
    w.set_f32(key("attn_logit_softcapping"), s.attn_softcap > 0.0f ? s.attn_softcap : a.default_attn_softcap);
  if (a.default_final_softcap > 0.0f)
    w.set_f32(key("final_logit_softcapping"), s.final_softcap > 0.0f ? s.final_softcap : a.default_final_softcap);
  const int64_t n_ctx_orig = s.n_ctx / 4;
  if (s.rope_long_short) {
    if (a.rope_factors == RopeFactors::freqs) w.set_string(key("rope.scaling.type"), "longrope");
    w.set_u32(key("rope.scaling.original_context_length"), static_cast<uint32_t>(n_ctx_orig));
    const double scale = static_cast<double>(s.n_ctx) / static_cast<double>(n_ctx_orig);
    w.set_f32(key("rope.scaling.attn_factor"),
              static_cast<float>(std::sqrt(1.0 + std::log(scale) / std::log(static_cast<double>(n_ctx_orig)))));
  }
  if (s.spec_mask_token >= 0) {
    w.set_u32("kestrel.spec.mask_token_id", static_cast<uint32_t>(s.spec_mask_token));
    if (s.spec_mask_n_predict > 0) w.set_u32("kestrel.spec.mask_n_predict", static_cast<uint32_t>(s.spec_mask_n_predict));
  }

  // Vocabulary: SPM-style, with byte fallback tokens so any text tokenizes.
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  tokens.reserve(static_cast<size_t>(V));
  tokens = {"<unk>", "<s>", "</s>"};
  scores = {0, 0, 0};
  types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    tokens.emplace_back(buf);
    scores.push_back(0);
    types.push_back(6);
  }
  for (int64_t i = static_cast<int64_t>(tokens.size()); i < V; ++i) {
    tokens.push_back("\xe2\x96\x81w" + std::to_string(i));
    scores.push_back(-static_cast<float>(i));
    types.push_back(1);
  }
  // Phi-3's vocabulary ends in added control tokens, and llama.cpp looks up
  // <|endoftext|> for a model named phi3.
  if (s.arch == ArchId::phi3) {
    tokens.back() = "<|endoftext|>";
    scores.back() = 0;
    types.back() = 3;
  }
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_string("tokenizer.ggml.pre", "default");
  w.set_string_array("tokenizer.ggml.tokens", tokens);
  w.set_f32_array("tokenizer.ggml.scores", scores);
  w.set_i32_array("tokenizer.ggml.token_type", types);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);

  std::vector<std::unique_ptr<Blob>> blobs;
  uint64_t seed = s.seed;
  auto add_matrix = [&](const std::string& name, DType t, int64_t ne0, int64_t ne1) -> Status {
    auto b = std::make_unique<Blob>();
    b->name = name;
    // Scale so activations keep a sane magnitude through the layers.
    KESTREL_TRY(make_matrix(*b, t, ne0, ne1, 1.0f / std::sqrt(static_cast<float>(ne0)), ++seed, nt));
    blobs.push_back(std::move(b));
    return {};
  };
  auto add_vector = [&](const std::string& name, int64_t n, float base, float jitter) {
    auto b = std::make_unique<Blob>();
    b->name = name;
    make_vector(*b, n, base, jitter, ++seed);
    blobs.push_back(std::move(b));
  };

  KESTREL_TRY(add_matrix("token_embd.weight", wt, E, V));
  add_vector("output_norm.weight", E, 1.0f, 0.1f);
  if (!s.tied_output && !a.tied_only) KESTREL_TRY(add_matrix("output.weight", km ? DType::Q6_K : wt, E, V));
  for (int64_t il = 0; il < s.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    const DType hi = km && quant_use_more_bits(il, s.n_layer) ? DType::Q6_K : wt;
    add_vector(p + "attn_norm.weight", E, 1.0f, 0.1f);
    if (a.fused_qkv) {  // q rows, then k, then v (what llama.cpp's phi3 reads)
      KESTREL_TRY(add_matrix(p + "attn_qkv.weight", wt, E, Q + 2 * KV));
    } else {
      KESTREL_TRY(add_matrix(p + "attn_q.weight", wt, E, Q));
      KESTREL_TRY(add_matrix(p + "attn_k.weight", wt, E, KV));
      KESTREL_TRY(add_matrix(p + "attn_v.weight", hi, E, KV));
    }
    KESTREL_TRY(add_matrix(p + "attn_output.weight", wt, Q, E));
    if (s.arch == ArchId::qwen2) {
      add_vector(p + "attn_q.bias", Q, 0.0f, 0.1f);
      add_vector(p + "attn_k.bias", KV, 0.0f, 0.1f);
      add_vector(p + "attn_v.bias", KV, 0.0f, 0.1f);
    }
    if (a.qk_norm) {
      add_vector(p + "attn_q_norm.weight", hd, 1.0f, 0.1f);
      add_vector(p + "attn_k_norm.weight", hd, 1.0f, 0.1f);
    }
    if (a.post_attn_norm) add_vector(p + "post_attention_norm.weight", E, 1.0f, 0.1f);
    add_vector(p + "ffn_norm.weight", E, 1.0f, 0.1f);
    if (a.fused_gate_up) {  // gate rows, then up rows
      KESTREL_TRY(add_matrix(p + "ffn_up.weight", wt, E, 2 * F));
    } else {
      KESTREL_TRY(add_matrix(p + "ffn_gate.weight", wt, E, F));
      KESTREL_TRY(add_matrix(p + "ffn_up.weight", wt, E, F));
    }
    KESTREL_TRY(add_matrix(p + "ffn_down.weight", hi, F, E));
    if (a.post_ffn_norm) add_vector(p + "post_ffw_norm.weight", E, 1.0f, 0.1f);
  }
  // Rope factors last, so the other tensors' seeds do not depend on them (a
  // test compares a model with factors against the same weights without).
  const int64_t n_pairs = n_rot / 2;
  if (s.rope_freqs) {
    // Llama 3.1's rule (as the HF -> GGUF converter computes rope_freqs).
    auto b = std::make_unique<Blob>();
    b->name = "rope_freqs.weight";
    make_vector(*b, n_pairs, 1.0f, 0.0f, 0);
    float* ff = reinterpret_cast<float*>(b->data.data());
    const double factor = 8.0, low = 1.0, high = 4.0, old_ctx = static_cast<double>(s.n_ctx);
    const double kPi = 3.14159265358979323846;
    for (int64_t i = 0; i < n_pairs; ++i) {
      const double freq = std::pow(static_cast<double>(theta), -2.0 * static_cast<double>(i) / static_cast<double>(n_rot));
      const double wavelen = 2.0 * kPi / freq;
      double f = 1.0;
      if (wavelen > old_ctx / low) {
        f = factor;
      } else if (wavelen >= old_ctx / high) {
        const double smooth = (old_ctx / wavelen - low) / (high - low);
        f = 1.0 / ((1.0 - smooth) / factor + smooth);
      }
      ff[i] = static_cast<float>(f);
    }
    blobs.push_back(std::move(b));
  }
  if (s.rope_long_short) {
    add_vector("rope_factors_long.weight", n_pairs, 8.5f, 7.5f);
    add_vector("rope_factors_short.weight", n_pairs, 1.5f, 0.5f);
  }
  for (const auto& b : blobs)
    KESTREL_TRY(w.add_tensor(b->name, b->type, std::span<const int64_t>(b->ne), b->data.data(), b->data.size()));
  return w.to_bytes();
}

Status write_synth_model(const SynthSpec& spec, const std::string& path) {
  KESTREL_TRY_ASSIGN(std::vector<uint8_t> bytes, synth_model_gguf(spec));
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return Status::io_error("cannot create '%s'", path.c_str());
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  if (std::fclose(f) != 0 || !ok) return Status::io_error("cannot write '%s'", path.c_str());
  return {};
}

}  // namespace kestrel
