// KS layers in models (docs/ks-gguf.md): a small random llama whose projections are
// chains of Kronecker-sparse factors gives the logits of the same model with the
// factors multiplied out into dense weights (prompt batches run the batch_last path,
// single tokens the token_major one; cpu and ref backends), and malformed KS metadata
// or factor tensors are rejected at load with a status, never a crash.
#include <cmath>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "model_test_util.h"
#include "ops/half.h"
#include "runtime/ks/ks_factorize.h"
#include "runtime/ks/ks_model.h"
#include "runtime/ks/ks_rewrite.h"
#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/model/synth.h"

using namespace kestrel;
using namespace kestrel::testutil;

namespace {

// E = 64, Q = 64 (4 heads of 16), KV = 32 (2 kv heads), F = 128.
SynthSpec spec() {
  SynthSpec s;
  s.n_embd = 64;
  s.n_ff = 128;
  s.n_head = 4;
  s.n_head_kv = 2;
  s.n_layer = 2;
  s.weights = "f32";
  return s;
}

KsProjFactors factors(int layer, const std::string& proj, std::vector<KsMatmulParams> pats, std::mt19937& rng,
                      bool round_f16) {
  KsProjFactors r{layer, proj, pats, {}};
  for (const KsMatmulParams& p : pats) {
    // Scaled by 1/sqrt(c) so that activations keep their size through the chain.
    std::normal_distribution<float> nd(0.0f, 1.0f / std::sqrt((float)p.c));
    std::vector<float> w((size_t)p.a * p.b * p.c * p.d);
    for (float& v : w) v = round_f16 ? f16_to_f32(f32_to_f16(nd(rng))) : nd(rng);
    r.factors.push_back(std::move(w));
  }
  return r;
}

// Layer 0: every projection KS (chains of 1 to 3 factors, block-diagonal and strided);
// layer 1: two of them.
std::vector<KsProjFactors> chains(bool round_f16) {
  std::mt19937 rng(11);
  return {
      factors(0, "attn_q", {{4, 16, 16, 1}, {1, 16, 16, 4}}, rng, round_f16),
      factors(0, "attn_k", {{4, 8, 16, 1}, {2, 16, 16, 1}}, rng, round_f16),
      factors(0, "attn_v", {{2, 16, 32, 1}}, rng, round_f16),
      factors(0, "attn_output", {{2, 32, 32, 1}, {4, 16, 16, 1}, {1, 8, 8, 8}}, rng, round_f16),
      factors(0, "ffn_gate", {{4, 32, 16, 1}, {1, 32, 32, 4}}, rng, round_f16),
      factors(0, "ffn_up", {{1, 64, 32, 2}}, rng, round_f16),
      factors(0, "ffn_down", {{4, 16, 32, 1}, {1, 16, 16, 4}}, rng, round_f16),
      factors(1, "attn_q", {{1, 16, 16, 4}, {4, 16, 16, 1}}, rng, round_f16),
      factors(1, "ffn_up", {{2, 16, 16, 2}, {1, 32, 16, 4}}, rng, round_f16),
  };
}

std::vector<uint8_t> rewrite(const std::vector<uint8_t>& base, const std::vector<KsProjFactors>& repl, DType type,
                             KsWrite mode) {
  auto f = gguf::File::from_memory(base.data(), base.size());
  REQUIRE(f.status().to_string() == "ok");
  gguf::Writer w;
  REQUIRE(ks_rewrite_gguf(**f, repl, type, mode, w).to_string() == "ok");
  auto bytes = w.to_bytes();
  REQUIRE(bytes.status().to_string() == "ok");
  return std::move(bytes).value();
}

std::unique_ptr<Model> load(const std::vector<uint8_t>& bytes) {
  auto m = Model::load_from_memory(bytes.data(), bytes.size(), ModelParams{});
  REQUIRE(m.status().to_string() == "ok");
  return std::move(m).value();
}

// Logits of a 40-token prompt (one batch) followed by 3 single-token steps.
std::vector<float> run(const Model& m, BackendChoice be) {
  ContextParams cp;
  cp.n_ctx = 64;
  cp.n_batch = 64;
  cp.n_threads = 2;
  cp.backend = be;
  cp.kv_type = DType::F32;
  auto ctx = Context::create(m, cp);
  REQUIRE(ctx.status().to_string() == "ok");
  std::vector<int32_t> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back(3 + (i * 37) % 300);
  std::vector<float> all, step;
  REQUIRE(decode_all(**ctx, prompt, 0, 0, &all).to_string() == "ok");
  for (int i = 0; i < 3; ++i) {
    REQUIRE(decode_all(**ctx, {argmax(all.data() + all.size() - 320, 320)}, 40 + i, 0, &step).to_string() == "ok");
    all.insert(all.end(), step.begin(), step.end());
  }
  return all;
}

}  // namespace

TEST_CASE("KS model: factor chains give the logits of their multiplied-out dense model", "[model][ks]") {
  auto base = synth_model_gguf(spec());
  REQUIRE(base.status().to_string() == "ok");
  for (DType type : {DType::F32, DType::F16}) {
    const auto repl = chains(type == DType::F16);  // F16 factors: values exact in F16
    const auto ks_bytes = rewrite(*base, repl, type, KsWrite::factors);
    const auto dense_bytes = rewrite(*base, repl, DType::F32, KsWrite::dense);
    auto ks = load(ks_bytes), dense = load(dense_bytes);
    CHECK(ks->layers[0].ks_down.n_factors == 2);
    CHECK(ks->layers[0].w_down.data == nullptr);
    CHECK(ks->layers[1].ks_down.n_factors == 0);
    CHECK(ks->weight_bytes() < dense->weight_bytes());
    for (BackendChoice be : {BackendChoice::cpu, BackendChoice::ref}) {
      const std::vector<float> a = run(*dense, be), b = run(*ks, be);
      REQUIRE(a.size() == b.size());
      const double e = nmse(a.data(), b.data(), a.size());
      INFO("type " << dtype_name(type) << ", backend " << (be == BackendChoice::cpu ? "cpu" : "ref"));
      std::printf("KS model vs multiplied-out dense (%s factors, %s): logits NMSE %.2e\n", dtype_name(type),
                  be == BackendChoice::cpu ? "cpu" : "ref", e);
      CHECK(e < 1e-9);
    }
  }
}

TEST_CASE("KS model: malformed KS metadata and factors are rejected", "[model][ks][bad]") {
  auto base = synth_model_gguf(spec());
  REQUIRE(base.status().to_string() == "ok");
  const auto good = rewrite(*base, chains(false), DType::F32, KsWrite::factors);
  auto gf = gguf::File::from_memory(good.data(), good.size());
  REQUIRE(gf.status().to_string() == "ok");
  const gguf::File& f = **gf;
  const std::string key = ks_patterns_key(0, "ffn_down");  // {4,16,32,1}, {1,16,16,4}: 128 -> 64

  // A copy of the good file with `keys` applied after the metadata and tensors
  // filtered / added by `tensors`.
  using KeyFn = std::function<void(gguf::Writer&)>;
  using TensorFn = std::function<bool(const gguf::TensorInfo&, gguf::Writer&)>;  // false: drop
  std::vector<std::vector<float>> keep;
  auto variant = [&](const KeyFn& keys, const TensorFn& tensors) {
    gguf::Writer w;
    for (size_t i = 0; i < f.n_keys(); ++i)
      w.set_raw(f.key_info(i).key, static_cast<uint32_t>(f.key_info(i).type), f.raw_value(i));
    if (keys) keys(w);
    for (const gguf::TensorInfo& t : f.tensors()) {
      if (tensors && !tensors(t, w)) continue;
      REQUIRE(w.add_tensor(t.name, t.type, std::span<const int64_t>(t.ne, (size_t)t.n_dims), t.data, t.nbytes)
                  .to_string() == "ok");
    }
    auto bytes = w.to_bytes();
    REQUIRE(bytes.status().to_string() == "ok");
    return std::move(bytes).value();
  };
  auto set_pats = [&](std::vector<int32_t> v) { return [=](gguf::Writer& w) { w.set_i32_array(key, v); }; };
  auto add_f32 = [&](gguf::Writer& w, const std::string& name, std::vector<int64_t> ne) {
    size_t n = 1;
    for (int64_t d : ne) n *= (size_t)d;
    keep.emplace_back(n, 0.5f);
    REQUIRE(w.add_tensor(name, DType::F32, std::span<const int64_t>(ne), keep.back().data(), n * 4).to_string() ==
            "ok");
  };
  const std::string f0 = ks_factor_name(0, "ffn_down", 0), f1 = ks_factor_name(0, "ffn_down", 1);

  struct Bad {
    const char* what;
    std::vector<uint8_t> bytes;
    const char* expect;  // a piece of the error message
  };
  std::vector<Bad> bad;
  bad.push_back({"5 pattern values", variant(set_pats({4, 16, 32, 1, 1}), nullptr), "4 (a, b, c, d) per factor"});
  bad.push_back({"empty pattern array", variant(set_pats({}), nullptr), "per factor"});
  bad.push_back({"too many factors", variant(set_pats(std::vector<int32_t>(4 * 9, 1)), nullptr), "per factor"});
  bad.push_back({"zero in a pattern", variant(set_pats({4, 16, 32, 0, 1, 16, 16, 4}), nullptr), "pattern value 0"});
  bad.push_back({"negative pattern", variant(set_pats({-4, 16, 32, 1, 1, 16, 16, 4}), nullptr), "pattern value"});
  bad.push_back({"huge pattern", variant(set_pats({1 << 30, 16, 32, 1, 1, 16, 16, 4}), nullptr), "pattern value"});
  bad.push_back({"chain input width", variant(set_pats({4, 16, 16, 1, 1, 16, 16, 4}), nullptr), "expected"});
  bad.push_back({"chain between factors", variant(set_pats({4, 16, 32, 1, 1, 8, 8, 4}), nullptr), "expected"});
  bad.push_back({"chain output width", variant(set_pats({4, 16, 32, 1, 1, 32, 16, 4}), nullptr), "layer needs"});
  bad.push_back({"patterns as a string", variant([&](gguf::Writer& w) { w.set_string(key, "4,16,32,1"); }, nullptr),
                 key.c_str()});
  bad.push_back({"patterns as floats",
                 variant([&](gguf::Writer& w) { w.set_f32_array(key, std::vector<float>{4, 16, 32, 1}); }, nullptr),
                 key.c_str()});
  bad.push_back({"missing factor", variant(nullptr, [&](const gguf::TensorInfo& t, gguf::Writer&) { return t.name != f1; }),
                 "missing tensor"});
  bad.push_back({"factor shape", variant(nullptr,
                                         [&](const gguf::TensorInfo& t, gguf::Writer& w) {
                                           if (t.name != f0) return true;
                                           add_f32(w, f0, {32, 16, 1, 4});  // b and c swapped
                                           return false;
                                         }),
                 "shape"});
  bad.push_back({"factor type", variant(nullptr,
                                        [&](const gguf::TensorInfo& t, gguf::Writer& w) {
                                          if (t.name != f0) return true;
                                          keep.emplace_back(16 * 32 * 4, 0.0f);
                                          const int64_t ne[4] = {16, 32, 1, 4};
                                          REQUIRE(w.add_tensor(f0, DType::I32, std::span<const int64_t>(ne, 4),
                                                               keep.back().data(), 16 * 32 * 4 * 4)
                                                      .to_string() == "ok");
                                          return false;
                                        }),
                 "F32, F16 or BF16"});
  bad.push_back({"extra factor", variant(nullptr,
                                         [&](const gguf::TensorInfo& t, gguf::Writer& w) {
                                           if (t.name == f1) add_f32(w, ks_factor_name(0, "ffn_down", 2), {16, 16, 4, 1});
                                           return true;
                                         }),
                 "past the 2 factors"});
  bad.push_back({"dense weight beside factors", variant(nullptr,
                                                        [&](const gguf::TensorInfo& t, gguf::Writer& w) {
                                                          if (t.name == f1) add_f32(w, "blk.0.ffn_down.weight", {128, 64});
                                                          return true;
                                                        }),
                 "both"});
  bad.push_back({"factors without the key",
                 variant([&](gguf::Writer& w) { w.remove(key); }, nullptr), "has no pattern key"});
  bad.push_back({"key without factors, dense present",
                 variant(set_pats({1, 64, 128, 1}),
                         [&](const gguf::TensorInfo& t, gguf::Writer& w) {
                           if (t.name == f0) add_f32(w, "blk.0.ffn_down.weight", {128, 64});
                           return t.name != f0 && t.name != f1;
                         }),
                 "both"});

  for (const Bad& b : bad) {
    INFO(b.what);
    auto m = Model::load_from_memory(b.bytes.data(), b.bytes.size(), ModelParams{});
    REQUIRE_FALSE(m.ok());
    const std::string msg = m.status().to_string();
    CHECK(msg.find(b.expect) != std::string::npos);
    std::printf("  rejected (%s): %s\n", b.what, msg.c_str());
  }
  // The untouched copy loads (the variants differ from it only in the broken part).
  auto ok = variant(nullptr, nullptr);
  CHECK(Model::load_from_memory(ok.data(), ok.size(), ModelParams{}).ok());
}

TEST_CASE("ks_fit: alternating least squares recovers exact KS products", "[ks][factorize]") {
  std::mt19937 rng(5);
  // Two factors: a Monarch-shaped 64 -> 96 product; one factor: the projection.
  const std::vector<KsMatmulParams> two = {{4, 16, 16, 1}, {1, 24, 16, 4}};
  KsProjFactors truth = factors(0, "x", two, rng, false);
  const std::vector<float> W = ks_chain_dense(two, truth.factors);
  std::vector<std::vector<float>> fit;
  auto e0 = ks_fit(W.data(), 64, 96, two, 0, 1, &fit);
  auto e30 = ks_fit(W.data(), 64, 96, two, 30, 1, &fit);
  REQUIRE(e0.ok());
  REQUIRE(e30.ok());
  std::printf("ks_fit on an exact 2-factor product: relative error %.2e after the first solve, %.2e after 30 sweeps\n",
              *e0, *e30);
  CHECK(*e30 < 1e-3);
  CHECK(*e30 <= *e0);
  // The fitted factors reproduce the reported error.
  const std::vector<float> back = ks_chain_dense(two, fit);
  CHECK(std::sqrt(nmse(W.data(), back.data(), W.size())) == Approx(*e30).margin(1e-4));

  const std::vector<KsMatmulParams> one = {{2, 48, 32, 1}};
  KsProjFactors t1 = factors(0, "x", one, rng, false);
  const std::vector<float> W1 = ks_chain_dense(one, t1.factors);
  auto e1 = ks_fit(W1.data(), 64, 96, one, 0, 1, &fit);
  REQUIRE(e1.ok());
  CHECK(*e1 < 1e-6);

  // A random dense matrix: sweeps never increase the error.
  std::vector<float> R(64 * 96);
  std::normal_distribution<float> nd;
  for (float& v : R) v = nd(rng);
  double prev = 1e9;
  for (int it : {0, 1, 4, 12}) {
    auto e = ks_fit(R.data(), 64, 96, two, it, 3, &fit);
    REQUIRE(e.ok());
    CHECK(*e <= prev + 1e-6);
    prev = *e;
  }
  // Bad chains and shapes are statuses.
  CHECK_FALSE(ks_parse_chain("4,16,16").ok());
  CHECK_FALSE(ks_parse_chain("4,16,16,1:").ok());
  CHECK_FALSE(ks_parse_chain("4,16,16,0").ok());
  CHECK_FALSE(ks_parse_chain("4,16,x,1").ok());
  REQUIRE(ks_parse_chain("4,16,16,1:1,24,16,4").ok());
  CHECK(ks_parse_chain("4,16,16,1:1,24,16,4")->size() == 2);
  CHECK_FALSE(ks_monarch_chain(64, 96, 5).ok());
  CHECK_FALSE(ks_fit(W.data(), 64, 90, two, 1, 1, &fit).ok());
  CHECK_FALSE(ks_fit(W.data(), 64, 96, {{4, 16, 16, 1}, {1, 16, 16, 4}, {1, 24, 16, 4}}, 1, 1, &fit).ok());
}

TEST_CASE("ks_factorize_file: a factorized synthetic model loads and runs", "[ks][factorize][model]") {
  auto base = synth_model_gguf(spec());
  REQUIRE(base.status().to_string() == "ok");
  const std::string in = std::string(KESTREL_BINARY_DIR) + "/ks_factorize_in.gguf";
  const std::string out = std::string(KESTREL_BINARY_DIR) + "/ks_factorize_out.gguf";
  {
    std::FILE* f = std::fopen(in.c_str(), "wb");
    REQUIRE(f);
    REQUIRE(std::fwrite(base->data(), 1, base->size(), f) == base->size());
    std::fclose(f);
  }
  KsFactorizeOptions o;
  o.monarch_blocks = 4;
  o.chains["ffn_up"] = {{2, 64, 32, 1}};  // one factor: the projection
  o.layers = {1};
  o.iters = 2;
  std::vector<KsLayerReport> rep;
  REQUIRE(ks_factorize_file(in, out, o, &rep).to_string() == "ok");
  REQUIRE(rep.size() == 7);
  for (const KsLayerReport& r : rep) {
    CHECK(r.tensor.rfind("blk.1.", 0) == 0);
    CHECK(r.rel_error >= 0.0);
    CHECK(r.rel_error < 1.0);
    CHECK(r.ks_params < r.dense_params);
  }
  auto m = Model::load(out, ModelParams{});
  REQUIRE(m.status().to_string() == "ok");
  CHECK((*m)->layers[0].ks_q.n_factors == 0);
  CHECK((*m)->layers[1].ks_q.n_factors == 2);
  CHECK((*m)->layers[1].ks_up.n_factors == 1);
  CHECK((*m)->layers[1].ks_up.w[0].type == DType::F16);
  const std::vector<float> logits = run(**m, BackendChoice::cpu);
  for (float v : logits) REQUIRE(std::isfinite(v));
  // Options that name nothing or something unknown are statuses.
  KsFactorizeOptions bad = o;
  bad.projs = {"attn_qq"};
  CHECK_FALSE(ks_factorize_file(in, out, bad, nullptr).ok());
  bad = o;
  bad.layers = {99};
  CHECK_FALSE(ks_factorize_file(in, out, bad, nullptr).ok());
  bad = o;
  bad.monarch_blocks = 3;
  CHECK_FALSE(ks_factorize_file(in, out, bad, nullptr).ok());
  CHECK_FALSE(ks_factorize_file(in + ".missing", out, o, nullptr).ok());
}
