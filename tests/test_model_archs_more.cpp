// The architectures beyond llama / qwen2 / gemma3 (qwen3, Llama 3 rope
// factors, phi3, gemma2), each as a small random-weight model in the tensor
// layout llama.cpp reads: the cpu path agrees with the reference forward, a
// prompt in one batch agrees with token-by-token decoding, greedy speculative
// decoding equals plain greedy decoding, the rope factors are used and chosen
// by context length, and contradictory files are refused with a clear status
// (../shared/BAD-INPUTS.md row 10).
#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"
#include "tests/reduced_sweep.h"
#include "tests/spec_test_util.h"

using namespace kestrel;
using namespace kestrel::testutil;

namespace {

struct Variant {
  const char* name;
  SynthSpec spec;
};

// 4 heads; n_embd 256 (head_dim 64) so that every K-quant applies, or 64
// (head_dim 16) where only speed matters.
SynthSpec base(ArchId arch, int64_t n_embd) {
  SynthSpec s;
  s.arch = arch;
  s.n_embd = n_embd;
  s.n_ff = 2 * n_embd;
  s.n_head = 4;
  s.n_head_kv = 2;
  return s;
}

std::vector<Variant> variants(int64_t n_embd = 256) {
  std::vector<Variant> v;
  v.push_back({"qwen3", base(ArchId::qwen3, n_embd)});
  SynthSpec l3 = base(ArchId::llama, n_embd);
  l3.rope_freqs = true;
  l3.rope_theta = 500000.0f;
  l3.n_ctx = 64;  // Llama 3.1's rule with a 64-token "original" context: factors 1 .. 8 over the pairs
  v.push_back({"llama3", l3});
  l3.tied_output = true;
  v.push_back({"llama3 tied", l3});
  SynthSpec phi = base(ArchId::phi3, n_embd);
  phi.rope_long_short = true;
  phi.n_rot = n_embd / 4 * 3 / 4;  // partial rotary: 3/4 of each head
  phi.n_head_kv = 4;
  v.push_back({"phi3", phi});
  SynthSpec g2 = base(ArchId::gemma2, n_embd);
  g2.n_layer = 4;  // sliding, global, sliding, global
  g2.n_swa = 6;    // window shorter than the prompts
  g2.attn_softcap = 1.5f;  // small caps so that tanh bends the scores and logits
  g2.final_softcap = 2.0f;
  v.push_back({"gemma2", g2});
  return v;
}

std::unique_ptr<Model> load_bytes(const std::vector<uint8_t>& bytes) {
  auto m = Model::load_from_memory(bytes.data(), bytes.size(), ModelParams{});
  REQUIRE(m.status().to_string() == "ok");
  return std::move(m).value();
}

std::unique_ptr<Model> build(const SynthSpec& s) {
  auto bytes = synth_model_gguf(s);
  REQUIRE(bytes.status().to_string() == "ok");
  return load_bytes(*bytes);
}

std::unique_ptr<Context> ctx_for(const Model& m, BackendChoice be, int threads, int64_t n_ctx = 128,
                                 DType kv = DType::F32) {
  ContextParams cp;
  cp.n_ctx = n_ctx;
  cp.n_batch = 32;
  cp.n_threads = threads;
  cp.backend = be;
  cp.kv_type = kv;
  auto c = Context::create(m, cp);
  REQUIRE(c.status().to_string() == "ok");
  return std::move(c).value();
}

const std::vector<int32_t> kIds = {1, 300, 17, 260, 299, 45, 261, 310, 5, 270, 301, 11, 290, 3, 280, 318, 7};

bool is_quant(const std::string& w) { return w != "f32" && w != "f16" && w != "bf16"; }

}  // namespace

TEST_CASE("new architectures: cpu path agrees with the reference forward and with itself token by token",
          "[model][arch]") {
  const std::vector<const char*> all = {"f32", "f16", "q8_0", "q4_0", "q5_0", "q4_k", "q6_k", "q4_k_m"};
  const std::vector<const char*> quick = {"f16", "q4_k_m"};
  for (const Variant& var : variants()) {
    for (const char* wt : kestrel::test::reduced_sweep() ? quick : all) {
      SynthSpec s = var.spec;
      s.weights = wt;
      auto m = build(s);
      INFO(var.name << " " << wt);
      auto ref = ctx_for(*m, BackendChoice::ref, 1);
      auto cpu = ctx_for(*m, BackendChoice::cpu, 2);
      std::vector<float> lr, lc;
      REQUIRE(decode_all(*ref, kIds, 0, 0, &lr).to_string() == "ok");
      REQUIRE(decode_all(*cpu, kIds, 0, 0, &lc).to_string() == "ok");
      const double e = nmse(lr.data(), lc.data(), lr.size());
      INFO("logit NMSE " << e);
      // Quantized weights: the cpu path also quantizes activations to 8 bits.
      CHECK(e < (is_quant(wt) ? 2e-3 : 1e-6));
      auto inc = ctx_for(*m, BackendChoice::cpu, 1);
      const int64_t V = m->hparams().n_vocab;
      for (size_t i = 0; i < kIds.size(); ++i) {
        std::vector<float> l;
        REQUIRE(decode_all(*inc, {kIds[i]}, static_cast<int32_t>(i), 0, &l).to_string() == "ok");
        INFO("token " << i);
        // A KV-cache, window or rope-position bug shows as NMSE near 1.
        CHECK(nmse(&lc[i * V], l.data(), static_cast<size_t>(V)) < (is_quant(wt) ? 1e-3 : 1e-8));
      }
    }
  }
}

TEST_CASE("new architectures: a token's logits do not depend on its batch (quantized: bitwise)", "[model][batch]") {
  const bool reduced = kestrel::test::reduced_sweep();
  for (const Variant& var : variants()) {
    for (const char* wt : {"q8_0", "q4_k_m"}) {
      if (reduced && std::string(wt) != "q8_0") continue;
      SynthSpec s = var.spec;
      s.weights = wt;
      auto m = build(s);
      const int64_t V = m->hparams().n_vocab;
      for (DType kv : {DType::F16, DType::F32}) {
        if (reduced && kv == DType::F32) continue;
        INFO(var.name << " " << wt << " kv " << dtype_name(kv));
        auto a = ctx_for(*m, BackendChoice::cpu, 2, 64, kv);
        auto b = ctx_for(*m, BackendChoice::cpu, 2, 64, kv);
        std::vector<float> batched;
        REQUIRE(decode_all(*a, kIds, 0, 0, &batched).to_string() == "ok");
        for (size_t i = 0; i < kIds.size(); ++i) {
          std::vector<float> one;
          REQUIRE(decode_all(*b, {kIds[i]}, static_cast<int32_t>(i), 0, &one).to_string() == "ok");
          int64_t diff = 0;
          for (int64_t j = 0; j < V; ++j) diff += batched[i * static_cast<size_t>(V) + static_cast<size_t>(j)] != one[j];
          INFO("token " << i);
          CHECK(diff == 0);
        }
      }
    }
  }
}

TEST_CASE("new architectures: greedy speculative decoding equals plain greedy decoding", "[model][spec]") {
  using namespace kestrel::spectest;
  const std::vector<const char*> prompts = kestrel::test::reduced_sweep()
                                              ? std::vector<const char*>{"Once upon a time"}
                                              : std::vector<const char*>{"Once upon a time", "w300 w301 w302"};
  // Small models (n_embd 64): the property is about the decoding loop, not the shapes.
  for (const Variant& var : variants(64)) {
    SynthSpec ts = var.spec, ds = var.spec;
    ts.n_layer = 4;
    ts.seed = 11;
    ds.n_layer = 2;
    ds.seed = 12;
    auto target = build(ts);
    auto draft = build(ds);
    auto tctx = make_ctx(*target), rctx = make_ctx(*target), dctx = make_ctx(*draft, 1);
    SpecParams sp;
    sp.mode = SpecMode::draft;
    sp.draft_max = 5;
    auto dec = SpecDecoder::create(*tctx, dctx.get(), sp);
    REQUIRE(dec.ok());
    for (const char* prompt : prompts) {
      const auto ids = encode(*target, prompt);
      INFO(var.name << " draft model, prompt " << prompt);
      CHECK(spec_run(**dec, ids, 32) == plain_greedy(*rctx, ids, 32));
    }
    SpecParams ss;
    ss.mode = SpecMode::self;
    ss.skip_auto = false;
    ss.skip_begin = 1;
    ss.skip_end = 2;
    auto sdec = SpecDecoder::create(*tctx, nullptr, ss);
    REQUIRE(sdec.ok());
    for (const char* prompt : prompts) {
      const auto ids = encode(*target, prompt);
      INFO(var.name << " self, prompt " << prompt);
      CHECK(spec_run(**sdec, ids, 32) == plain_greedy(*rctx, ids, 32));
    }
  }
}

TEST_CASE("rope frequency factors are read, used, and chosen by the context length", "[model][arch][rope]") {
  SECTION("Llama 3 rope_freqs: the same weights without them give other logits") {
    SynthSpec s = variants()[1].spec;
    auto with = build(s);
    REQUIRE(with->rope_freqs.data);
    CHECK(with->rope_factors(16) == &with->rope_freqs);
    CHECK(with->rope_factors(1 << 20) == &with->rope_freqs);
    s.rope_freqs = false;  // the factors are the file's last tensor: the other weights stay identical
    auto without = build(s);
    REQUIRE_FALSE(without->rope_factors(128));
    auto a = ctx_for(*with, BackendChoice::cpu, 2), b = ctx_for(*without, BackendChoice::cpu, 2);
    std::vector<float> la, lb;
    REQUIRE(decode_all(*a, kIds, 0, 0, &la).to_string() == "ok");
    REQUIRE(decode_all(*b, kIds, 0, 0, &lb).to_string() == "ok");
    // Token 0 sits at position 0 (no rotation), the later ones differ.
    const int64_t V = with->hparams().n_vocab;
    CHECK(nmse(la.data(), lb.data(), static_cast<size_t>(V)) < 1e-10);
    CHECK(nmse(la.data() + V, lb.data() + V, la.size() - static_cast<size_t>(V)) > 1e-6);
  }
  SECTION("LongRoPE (phi3): long factors past the original context, short within it") {
    SynthSpec s = variants()[3].spec;
    s.n_ctx = 1024;  // original context 256
    auto m = build(s);
    REQUIRE(m->hparams().n_ctx_orig == 256);
    CHECK(m->hparams().rope_attn_factor > 1.0f);
    // llama.cpp's rule: the context rounded up to a multiple of 256 against the original one.
    CHECK(m->rope_factors(64) == &m->rope_short);
    CHECK(m->rope_factors(256) == &m->rope_short);
    CHECK(m->rope_factors(257) == &m->rope_long);
    auto shrt = ctx_for(*m, BackendChoice::cpu, 2, 64), lng = ctx_for(*m, BackendChoice::cpu, 2, 300);
    auto shrt_ref = ctx_for(*m, BackendChoice::ref, 1, 64);
    std::vector<float> ls, ll, lr;
    REQUIRE(decode_all(*shrt, kIds, 0, 0, &ls).to_string() == "ok");
    REQUIRE(decode_all(*lng, kIds, 0, 0, &ll).to_string() == "ok");
    REQUIRE(decode_all(*shrt_ref, kIds, 0, 0, &lr).to_string() == "ok");
    CHECK(nmse(lr.data(), ls.data(), lr.size()) < 1e-6);
    CHECK(nmse(ls.data(), ll.data(), ls.size()) > 1e-6);
  }
}

namespace {

// A copy of a GGUF file with its keys edited and tensors replaced, dropped or
// (a name the file lacks) added.
struct TensorEdit {
  std::string name;
  bool drop = false;
  DType type = DType::F32;
  std::vector<int64_t> ne;
  std::vector<float> values;  // F32 data of the replacement
};

std::vector<uint8_t> rebuild(const std::vector<uint8_t>& good, const std::function<void(gguf::Writer&)>& edit_keys,
                             const std::vector<TensorEdit>& edits) {
  auto parsed = gguf::File::from_memory(good.data(), good.size());
  REQUIRE(parsed.ok());
  const gguf::File& f = **parsed;
  gguf::Writer w;
  for (size_t i = 0; i < f.n_keys(); ++i) {
    const gguf::KeyInfo k = f.key_info(i);
    w.set_raw(k.key, static_cast<uint32_t>(k.type), f.raw_value(i));
  }
  // The writer keeps pointers to tensor data until to_bytes(): replacements live here.
  std::deque<std::vector<uint8_t>> keep;
  auto add = [&](const TensorEdit& e) {
    std::vector<uint8_t>& data = keep.emplace_back();
    if (e.type == DType::F16) {
      data.assign(e.values.size() * 2, 0x3c);  // f16 1.0 in every element: 0x3c00
      for (size_t i = 0; i < e.values.size(); ++i) data[2 * i] = 0;
    } else {
      data.resize(e.values.size() * 4);
      std::memcpy(data.data(), e.values.data(), data.size());
    }
    REQUIRE(w.add_tensor(e.name, e.type, std::span<const int64_t>(e.ne), data.data(), data.size()).ok());
  };
  std::vector<bool> used(edits.size(), false);
  for (const auto& t : f.tensors()) {
    size_t hit = edits.size();
    for (size_t i = 0; i < edits.size(); ++i)
      if (edits[i].name == t.name) hit = i;
    if (hit == edits.size()) {
      REQUIRE(w.add_tensor(t.name, t.type, std::span<const int64_t>(t.ne, static_cast<size_t>(t.n_dims)), t.data,
                           t.nbytes)
                  .ok());
      continue;
    }
    used[hit] = true;
    if (!edits[hit].drop) add(edits[hit]);
  }
  for (size_t i = 0; i < edits.size(); ++i)
    if (!used[i] && !edits[i].drop) add(edits[i]);
  if (edit_keys) edit_keys(w);
  auto bytes = w.to_bytes();
  REQUIRE(bytes.ok());
  return std::move(*bytes);
}

TensorEdit f32_tensor(const std::string& name, std::vector<int64_t> ne, float value = 0.01f) {
  TensorEdit e;
  e.name = name;
  e.ne = std::move(ne);
  int64_t n = 1;
  for (int64_t d : e.ne) n *= d;
  e.values.assign(static_cast<size_t>(n), value);
  return e;
}

}  // namespace

TEST_CASE("new architectures: contradictory files are refused with a clear status", "[model][arch][bad-input]") {
  const auto vs = variants();
  std::vector<std::vector<uint8_t>> goods;  // each variant's file, in vs order
  for (const Variant& v : vs) {
    auto b = synth_model_gguf(v.spec);
    REQUIRE(b.ok());
    goods.push_back(std::move(*b));
  }
  auto good_of = [&](const char* name) -> const std::vector<uint8_t>& {
    size_t i = 0;
    while (i + 1 < vs.size() && std::string(vs[i].name) != name) ++i;
    REQUIRE(std::string(vs[i].name) == name);
    return goods[i];
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const int64_t E = 256, D = 64, F = 512;
  struct Case {
    const char* what;
    const char* variant;
    std::function<void(gguf::Writer&)> keys;
    std::vector<TensorEdit> tensors;
    const char* message;
  };
  std::vector<Case> cases = {
      {"phi3 rope dims > head dim", "phi3", [](gguf::Writer& w) { w.set_u32("phi3.rope.dimension_count", 66); }, {},
       "rope dimension count"},
      {"phi3 odd rope dims", "phi3", [](gguf::Writer& w) { w.set_u32("phi3.rope.dimension_count", 47); }, {},
       "rope dimension count"},
      {"qwen3 partial rotary", "qwen3", [](gguf::Writer& w) { w.set_u32("qwen3.rope.dimension_count", 32); }, {},
       "must equal head dim"},
      {"llama partial rotary", "llama3", [](gguf::Writer& w) { w.set_u32("llama.rope.dimension_count", 32); }, {},
       "must equal head dim"},
      {"gemma2 attention soft-cap 0", "gemma2", [](gguf::Writer& w) { w.set_f32("gemma2.attn_logit_softcapping", 0); },
       {}, "attn_logit_softcapping"},
      {"gemma2 final soft-cap 0", "gemma2", [](gguf::Writer& w) { w.set_f32("gemma2.final_logit_softcapping", 0); },
       {}, "final_logit_softcapping"},
      {"gemma2 negative soft-cap", "gemma2",
       [](gguf::Writer& w) { w.set_f32("gemma2.attn_logit_softcapping", -50); }, {}, "soft-cap"},
      {"gemma2 absurd soft-cap", "gemma2",
       [](gguf::Writer& w) { w.set_f32("gemma2.final_logit_softcapping", 3e38f); }, {}, "soft-cap"},
      {"gemma2 NaN soft-cap", "gemma2",
       [nan](gguf::Writer& w) { w.set_f32("gemma2.final_logit_softcapping", nan); }, {}, "not finite"},
      {"gemma2 soft-cap as a string", "gemma2",
       [](gguf::Writer& w) { w.set_string("gemma2.attn_logit_softcapping", "50"); }, {}, "attn_logit_softcapping"},
      {"phi3 fused qkv of the wrong shape", "phi3", nullptr,
       {f32_tensor("blk.0.attn_qkv.weight", {E, 2 * E})}, "attn_qkv"},
      {"phi3 ffn_up with n_ff rows, not 2 n_ff", "phi3", nullptr, {f32_tensor("blk.1.ffn_up.weight", {E, F})},
       "ffn_up"},
      {"phi3 without its fused qkv", "phi3", nullptr, {{"blk.1.attn_qkv.weight", true}}, "attn_q"},
      {"phi3 fused qkv bias", "phi3", nullptr, {f32_tensor("blk.0.attn_qkv.bias", {3 * E})}, "attn_qkv.bias"},
      {"phi3 long factors without short", "phi3", nullptr, {{"rope_factors_short.weight", true}}, "come together"},
      {"phi3 long factors of the wrong length", "phi3", nullptr,
       {f32_tensor("rope_factors_long.weight", {23}, 2.0f)}, "rope_factors_long"},
      {"phi3 attn_factor 0", "phi3", [](gguf::Writer& w) { w.set_f32("phi3.rope.scaling.attn_factor", 0); }, {},
       "attn_factor"},
      {"phi3 original context 0", "phi3",
       [](gguf::Writer& w) { w.set_u32("phi3.rope.scaling.original_context_length", 0); }, {},
       "original_context_length"},
      {"rope_freqs of the wrong length", "llama3", nullptr, {f32_tensor("rope_freqs.weight", {D / 2 - 1}, 1.0f)},
       "rope_freqs"},
      {"rope_freqs with a zero factor", "llama3", nullptr, {f32_tensor("rope_freqs.weight", {D / 2}, 0.0f)},
       "rope_freqs"},
      {"rope_freqs with a NaN factor", "llama3", nullptr, {f32_tensor("rope_freqs.weight", {D / 2}, nan)},
       "rope_freqs"},
      {"rope_freqs in f16", "llama3", nullptr, {{"rope_freqs.weight", false, DType::F16, {D / 2}, std::vector<float>(32, 1.0f)}},
       "rope_freqs"},
      {"yarn rope scaling", "llama3", [](gguf::Writer& w) { w.set_string("llama.rope.scaling.type", "yarn"); }, {},
       "rope scaling type"},
      {"qwen3 without its k norm", "qwen3", nullptr, {{"blk.0.attn_k_norm.weight", true}}, "attn_k_norm"},
      {"qwen3 q norm of the wrong length", "qwen3", nullptr, {f32_tensor("blk.1.attn_q_norm.weight", {D + 2})},
       "attn_q_norm"},
      {"gemma2 without its post-ffn norm", "gemma2", nullptr, {{"blk.2.post_ffw_norm.weight", true}},
       "post_ffw_norm"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    const std::vector<uint8_t> bytes = rebuild(good_of(c.variant), c.keys, c.tensors);
    auto m = Model::load_from_memory(bytes.data(), bytes.size(), ModelParams{});
    REQUIRE_FALSE(m.ok());
    INFO(m.status().to_string());
    CHECK((m.status().code() == StatusCode::bad_file || m.status().code() == StatusCode::unsupported));
    CHECK(m.status().message().find(c.message) != std::string::npos);
  }
  // The unedited files load (the edits above are what is refused).
  for (size_t i = 0; i < vs.size(); ++i) {
    INFO(vs[i].name);
    CHECK(Model::load_from_memory(goods[i].data(), goods[i].size(), ModelParams{}).ok());
  }
}
