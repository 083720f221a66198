// Exp tier selection end to end: the per-op tiers of ContextParams reach the
// ops of the forward (logits move by about the tier's error, the top-1 token
// mostly stays), each op's tier acts alone, the cpu kernels and the reference
// forward agree under a quake tier, the C API rejects unknown tiers, and the
// sampler's softmax stays within the documented error of each tier.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <sys/wait.h>

#include <catch2/catch.hpp>

#include "kestrel/kestrel.h"
#include "model_test_util.h"
#include "ops/backend.h"
#include "ops/half.h"
#include "runtime/model/synth.h"
#include "runtime/sampling/sampler.h"
#include "runtime/tokenizer/tokenizer.h"

using namespace kestrel;
using namespace kestrel::testutil;

namespace {

const std::string kStories = shared_path("models/stories260K/stories260K.gguf");
constexpr ExpTier kAllTiers[] = {ExpTier::exact, ExpTier::quake2, ExpTier::quake1};

std::unique_ptr<Context> make_ctx(const Model& m, const OpExpTiers& tiers, BackendChoice be = BackendChoice::cpu) {
  ContextParams cp;
  cp.n_ctx = 256;
  cp.n_batch = 256;
  cp.n_threads = 2;
  cp.kv_type = DType::F32;
  cp.backend = be;
  cp.exp = tiers;
  auto c = Context::create(m, cp);
  REQUIRE(c.status().to_string() == "ok");
  return std::move(c).value();
}

OpExpTiers all_ops(ExpTier t) { return {t, t, t, t}; }

std::vector<float> run(const Model& m, const OpExpTiers& tiers, const std::vector<int32_t>& ids,
                       BackendChoice be = BackendChoice::cpu) {
  auto ctx = make_ctx(m, tiers, be);
  std::vector<float> logits;
  REQUIRE(decode_all(*ctx, ids, 0, 0, &logits).to_string() == "ok");
  return logits;
}

double top1_agreement(const std::vector<float>& a, const std::vector<float>& b, int64_t V) {
  const size_t rows = a.size() / static_cast<size_t>(V);
  size_t same = 0;
  for (size_t r = 0; r < rows; ++r) same += argmax(&a[r * V], V) == argmax(&b[r * V], V) ? 1 : 0;
  return static_cast<double>(same) / static_cast<double>(rows);
}

// The first n tokens of the shipped perplexity text, BOS first.
std::vector<int32_t> text_ids(const Model& m, size_t n) {
  std::ifstream in(std::string(KESTREL_SOURCE_DIR) + "/tests/data/ppl_text.txt");
  REQUIRE(in);
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<int32_t> ids;
  REQUIRE(m.tokenizer().encode(ss.str(), true, false, ids).to_string() == "ok");
  REQUIRE(ids.size() >= n);
  ids.resize(n);
  return ids;
}

}  // namespace

TEST_CASE("exp tiers reach the forward of stories260K (softmax, silu)", "[exp][select][model]") {
  if (!file_exists(kStories)) {
    WARN("SKIP: " << kStories << " is missing");
    return;
  }
  auto lm = Model::load(kStories, ModelParams{});
  REQUIRE(lm.status().to_string() == "ok");
  const Model& m = **lm;
  const int64_t V = m.hparams().n_vocab;
  const std::vector<int32_t> ids = text_ids(m, 200);
  const std::vector<float> exact = run(m, all_ops(ExpTier::exact), ids);

  SECTION("every op on a quake tier: logits move a little, top-1 mostly stays") {
    for (ExpTier t : {ExpTier::quake2, ExpTier::quake1}) {
      const std::vector<float> q = run(m, all_ops(t), ids);
      const double e = nmse(exact.data(), q.data(), exact.size());
      const double agree = top1_agreement(exact, q, V);
      INFO(exp_tier_name(t) << ": logit NMSE " << e << ", top-1 agreement " << agree);
      std::printf("stories260K %s: logit NMSE %.3g, top-1 agreement %.3f\n", exp_tier_name(t), e, agree);
      CHECK(e > 0.0);  // the tier reached the ops
      CHECK(e < (t == ExpTier::quake2 ? 1e-4 : 1e-2));
      CHECK(agree >= (t == ExpTier::quake2 ? 0.97 : 0.85));
    }
  }
  SECTION("each op's tier acts alone") {
    OpExpTiers only_softmax, only_silu, only_gelu, only_sigmoid;
    only_softmax.softmax = ExpTier::quake1;
    only_silu.silu = ExpTier::quake1;
    only_gelu.gelu = ExpTier::quake1;
    only_sigmoid.sigmoid = ExpTier::quake1;
    CHECK(nmse(exact.data(), run(m, only_softmax, ids).data(), exact.size()) > 0.0);
    CHECK(nmse(exact.data(), run(m, only_silu, ids).data(), exact.size()) > 0.0);
    // llama has no GELU and no sigmoid: their tiers leave the logits bit-identical.
    CHECK(run(m, only_gelu, ids) == exact);
    CHECK(run(m, only_sigmoid, ids) == exact);
  }
  SECTION("the cpu kernels agree with the reference forward on a quake tier") {
    for (ExpTier t : {ExpTier::quake2, ExpTier::quake1}) {
      const std::vector<int32_t> few(ids.begin(), ids.begin() + 48);
      const std::vector<float> cpu = run(m, all_ops(t), few);
      const std::vector<float> ref = run(m, all_ops(t), few, BackendChoice::ref);
      const double e = nmse(ref.data(), cpu.data(), ref.size());
      INFO(exp_tier_name(t) << ": cpu vs ref NMSE " << e);
      CHECK(e < 1e-8);
    }
  }
}

TEST_CASE("exp tiers reach GeGLU and the softmax of a synthetic gemma3", "[exp][select][model]") {
  SynthSpec s;
  s.arch = ArchId::gemma3;
  s.n_embd = 256;
  s.n_ff = 512;
  s.n_head = 4;
  s.n_head_kv = 1;
  s.head_dim = 128;
  s.n_layer = 3;
  s.n_swa = 8;
  s.tied_output = true;
  auto bytes = synth_model_gguf(s);
  REQUIRE(bytes.status().to_string() == "ok");
  auto lm = Model::load_from_memory(bytes->data(), bytes->size(), ModelParams{});
  REQUIRE(lm.status().to_string() == "ok");
  const Model& m = **lm;
  const int64_t V = m.hparams().n_vocab;
  std::vector<int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back(3 + (i * 37) % 300);
  const std::vector<float> exact = run(m, all_ops(ExpTier::exact), ids);
  OpExpTiers only_gelu, only_silu;
  only_gelu.gelu = ExpTier::quake2;
  only_silu.silu = ExpTier::quake1;
  const std::vector<float> g = run(m, only_gelu, ids);
  const double e = nmse(exact.data(), g.data(), exact.size());
  INFO("gelu quake2 NMSE " << e << ", top-1 agreement " << top1_agreement(exact, g, V));
  CHECK(e > 0.0);
  CHECK(e < 1e-4);
  CHECK(run(m, only_silu, ids) == exact);  // gemma3 has no SiLU
  for (ExpTier t : {ExpTier::quake2, ExpTier::quake1}) {
    const std::vector<float> cpu = run(m, all_ops(t), ids);
    const std::vector<float> ref = run(m, all_ops(t), ids, BackendChoice::ref);
    INFO(exp_tier_name(t));
    CHECK(nmse(exact.data(), cpu.data(), exact.size()) > 0.0);
    CHECK(nmse(ref.data(), cpu.data(), ref.size()) < 1e-6);
  }
}

TEST_CASE("unknown exp tiers are rejected", "[exp][select][bad-input]") {
  SECTION("ContextParams") {
    SynthSpec s;
    auto bytes = synth_model_gguf(s);
    REQUIRE(bytes.status().to_string() == "ok");
    auto lm = Model::load_from_memory(bytes->data(), bytes->size(), ModelParams{});
    REQUIRE(lm.status().to_string() == "ok");
    ContextParams cp;
    cp.n_ctx = 32;
    cp.exp.gelu = static_cast<ExpTier>(7);
    auto c = Context::create(**lm, cp);
    CHECK(c.status().code() == StatusCode::invalid_argument);
    CHECK(c.status().message().find("gelu") != std::string::npos);
  }
  SECTION("C API context and sampler params") {
    if (!file_exists(kStories)) {
      WARN("SKIP: " << kStories << " is missing");
      return;
    }
    kestrel_model_params mp = kestrel_model_default_params();
    kestrel_model* model = nullptr;
    REQUIRE(kestrel_model_load(kStories.c_str(), &mp, &model) == KESTREL_OK);
    kestrel_context_params cp = kestrel_context_default_params();
    CHECK(cp.exp_softmax == KESTREL_EXP_EXACT);
    CHECK(cp.exp_gelu == KESTREL_EXP_EXACT);
    CHECK(cp.exp_silu == KESTREL_EXP_EXACT);
    CHECK(cp.exp_sigmoid == KESTREL_EXP_EXACT);
    cp.n_ctx = 64;
    kestrel_context* ctx = nullptr;
    for (int field = 0; field < 4; ++field) {
      kestrel_context_params bad = cp;
      int32_t* f[] = {&bad.exp_softmax, &bad.exp_gelu, &bad.exp_silu, &bad.exp_sigmoid};
      const char* names[] = {"exp_softmax", "exp_gelu", "exp_silu", "exp_sigmoid"};
      *f[field] = field == 0 ? -1 : 3;
      CHECK(kestrel_context_create(model, &bad, &ctx) == KESTREL_ERR_INVALID_ARGUMENT);
      CHECK(ctx == nullptr);
      CHECK(std::string(kestrel_last_error(nullptr)).find(names[field]) != std::string::npos);
    }
    cp.exp_softmax = KESTREL_EXP_QUAKE2;
    cp.exp_silu = KESTREL_EXP_QUAKE1;
    REQUIRE(kestrel_context_create(model, &cp, &ctx) == KESTREL_OK);
    kestrel_context_free(ctx);

    kestrel_sampler_params sp = kestrel_sampler_default_params();
    CHECK(sp.exp_softmax == KESTREL_EXP_EXACT);
    sp.exp_softmax = 9;
    kestrel_sampler* smp = nullptr;
    CHECK(kestrel_sampler_create(model, &sp, &smp) == KESTREL_ERR_INVALID_ARGUMENT);
    CHECK(smp == nullptr);
    sp.exp_softmax = KESTREL_EXP_QUAKE1;
    REQUIRE(kestrel_sampler_create(model, &sp, &smp) == KESTREL_OK);
    kestrel_sampler_free(smp);
    kestrel_model_free(model);
  }
}

TEST_CASE("the sampler's softmax stays within each tier's documented error", "[exp][select][sampling]") {
  // A gemma3-sized vocabulary of normal logits (sd 3), temperature 0.7, no
  // filters: every probability against the softmax computed in double.
  const int32_t V = 262144;
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> logits(V);
  for (float& l : logits) l = nd(rng);
  const float temp = 0.7f;
  std::vector<double> truth(V);
  const double mx = *std::max_element(logits.begin(), logits.end());
  double z = 0.0;
  for (int32_t i = 0; i < V; ++i) z += truth[i] = std::exp((logits[i] - mx) / temp);
  for (double& t : truth) t /= z;

  for (ExpTier t : {ExpTier::exact, ExpTier::quake2, ExpTier::quake1}) {
    SamplerParams p;
    p.temperature = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.exp = t;
    Sampler s;
    REQUIRE(s.init(V, p).to_string() == "ok");
    std::vector<float> probs(V);
    REQUIRE(s.distribution(logits.data(), probs.data()).to_string() == "ok");
    double max_rel = 0.0, sum = 0.0;
    for (int32_t i = 0; i < V; ++i) {
      sum += probs[i];
      if (truth[i] > 1e-30) max_rel = std::max(max_rel, std::fabs(probs[i] / truth[i] - 1.0));
    }
    // Normalized by the tier's own sum: each probability within about twice
    // the exp bound, plus the float rounding of x = (l - max) / T, which moves
    // exp(x) by up to |x| * 2^-23 relative (|x| < 60 here: 7e-6).
    const double bound = 2.0 * exp_tier_max_rel_error(t) + 1e-5;
    std::printf("sampler softmax %s: max relative error %.4g (bound %.4g), sum %.9f\n", exp_tier_name(t), max_rel,
                bound, sum);
    INFO(exp_tier_name(t) << " max relative error " << max_rel);
    CHECK(max_rel <= bound);
    CHECK(std::fabs(sum - 1.0) < 1e-4);
    if (t != ExpTier::exact) CHECK(max_rel > 10.0 * exp_tier_max_rel_error(ExpTier::exact));  // the tier applied
  }
  SECTION("min-p keeps the top token on every tier") {
    for (ExpTier t : {ExpTier::quake2, ExpTier::quake1}) {
      SamplerParams p;
      p.temperature = 1.0f;
      p.min_p = 1.0f;  // only tokens tied with the top one survive
      p.top_k = 0;
      p.exp = t;
      Sampler s;
      REQUIRE(s.init(V, p).to_string() == "ok");
      auto tok = s.sample(logits.data());
      REQUIRE(tok.status().to_string() == "ok");
      CHECK(*tok == argmax(logits.data(), V));
    }
  }
}

namespace {

// Runs a shell command line, returning its stdout+stderr and exit status.
std::string shell(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(p);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = pclose(p);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

}  // namespace

TEST_CASE("kestrel CLI: --exp flags and perplexity", "[exp][select][cli]") {
  const std::string bin = std::string(KESTREL_BINARY_DIR) + "/bin/kestrel";
  if (!file_exists(bin) || !file_exists(kStories)) {
    WARN("SKIP: " << bin << " (build the kestrel_cli target) or " << kStories << " is missing");
    return;
  }
  int st = 0;
  // A cross build run under qemu-user may not be able to exec a second target binary.
  if (shell(bin + " --version", &st).find("kestrel") == std::string::npos || st != 0) {
    WARN("SKIP: " << bin << " cannot run here");
    return;
  }
  const std::string text = std::string(KESTREL_SOURCE_DIR) + "/tests/data/ppl_text.txt";
  SECTION("an unknown tier is a usage error naming the flag") {
    for (const char* flag : {"--exp", "--exp-softmax", "--exp-gelu", "--exp-silu", "--exp-sigmoid"}) {
      const std::string out = shell(bin + " run -m " + kStories + " -n 2 " + flag + " quake3", &st);
      INFO(flag << ": " << out);
      CHECK(st == 2);
      CHECK(out.find(flag) != std::string::npos);
    }
  }
  SECTION("perplexity on the shipped text: quake1 stays close to exact") {
    const std::string out =
        shell(bin + " perplexity -m " + kStories + " -f " + text + " -c 128 --chunks 4 -t 1 --exp quake1 --score-all", &st);
    INFO(out);
    REQUIRE(st == 0);
    double ppl = 0, se = 0, top1 = 0, exact_ppl = 0;
    size_t n = 0;
    const size_t at = out.rfind("\nppl ");  // the summary line (not "exact_ppl ")
    REQUIRE(at != std::string::npos);
    REQUIRE(std::sscanf(out.c_str() + at + 1, "ppl %lf +- %lf | tokens %zu | %*f tokens/s | top1_vs_exact %lf | exact_ppl %lf",
                        &ppl, &se, &n, &top1, &exact_ppl) == 5);
    CHECK(n == 4 * 127);  // 4 chunks of BOS + 127 text tokens, each text token scored
    CHECK(se > 0.0);
    CHECK(top1 >= 0.9);
    CHECK(top1 < 1.0);  // quake1 moves some near-ties
    CHECK(std::fabs(ppl / exact_ppl - 1.0) < 0.02);
  }
}

namespace {

// q in [-2, 2], k and v in [-1, 1].
void fill_qkv(std::mt19937& rng, std::vector<float>& q, std::vector<float>& k, std::vector<float>& v) {
  std::uniform_real_distribution<float> uq(-2.0f, 2.0f), ukv(-1.0f, 1.0f);
  for (float& x : q) x = uq(rng);
  for (float& x : k) x = ukv(rng);
  for (float& x : v) x = ukv(rng);
}

// Attention of q over k, v with an F32 mask on backend b, into a fresh output shaped like q.
std::vector<float> run_attention(Backend& b, const AttentionParams& p, Tensor tq, Tensor tk, Tensor tv, Tensor tm) {
  std::vector<float> out(static_cast<size_t>(tq.ne[0] * tq.ne[1] * tq.ne[2]), std::nanf(""));
  Tensor td = make_tensor(DType::F32, out.data(), tq.ne[0], tq.ne[1], tq.ne[2]);
  OpCall c;
  c.op = OpId::attention;
  c.dst = &td;
  c.src[0] = &tq;
  c.src[1] = &tk;
  c.src[2] = &tv;
  c.src[3] = &tm;
  c.n_src = 4;
  c.params = &p;
  const Status s = b.run(c);
  INFO(b.name() << ": " << s.message());
  REQUIRE(s.ok());
  return out;
}

}  // namespace

TEST_CASE("attention on each exp tier: cpu variants against the reference", "[exp][select][attention]") {
  // D 64, 4 query heads on 2 kv heads, 5 queries over 150 keys (three blocks
  // of the cpu kernel's 64, so the running max rescales), every third key of
  // query 2 masked and query 4 fully masked; scores up to about +-20.
  const int64_t D = 64, Hq = 4, Hkv = 2, M = 5, n_kv = 150;
  std::mt19937 rng(7);
  std::vector<float> q(D * Hq * M), k(D * Hkv * n_kv), v(D * Hkv * n_kv), mask(n_kv * M, 0.0f);
  fill_qkv(rng, q, k, v);
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n_kv; ++j) {
    if (j % 3 == 0) mask[2 * n_kv + j] = ninf;
    mask[4 * n_kv + j] = ninf;
  }
  std::vector<uint16_t> k16(k.size()), v16(v.size());
  for (size_t i = 0; i < k.size(); ++i) k16[i] = f32_to_f16(k[i]), v16[i] = f32_to_f16(v[i]);

  auto run_attn = [&](Backend& b, ExpTier tier, bool f16) {
    AttentionParams p;
    p.scale = 0.5f;
    p.exp = tier;
    return run_attention(
        b, p, make_tensor(DType::F32, q.data(), D, Hq, M),
        f16 ? make_tensor(DType::F16, k16.data(), D, Hkv, n_kv) : make_tensor(DType::F32, k.data(), D, Hkv, n_kv),
        f16 ? make_tensor(DType::F16, v16.data(), D, Hkv, n_kv) : make_tensor(DType::F32, v.data(), D, Hkv, n_kv),
        make_tensor(DType::F32, mask.data(), n_kv, M));
  };
  auto max_abs = [](const std::vector<float>& a, const std::vector<float>& b) {
    double m = 0.0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, (double)std::fabs(a[i] - b[i]));
    return m;
  };

  auto ref = backend_ref().create({});
  REQUIRE(ref.ok());
  CpuIsa avail[8];
  const int n_isa = cpu_isa_available(avail, 8);
  for (CpuIsa isa : kCpuIsas) {
    bool runs = false;
    for (int i = 0; i < n_isa; ++i) runs = runs || avail[i] == isa;
    if (!runs) WARN("SKIP: cpu variant " << cpu_isa_name(isa) << " (not compiled in or not supported by this CPU)");
  }
  for (bool f16 : {false, true}) {
    const std::vector<float> exact = run_attn(**ref, ExpTier::exact, f16);
    for (ExpTier t : kAllTiers) {
      const std::vector<float> r = run_attn(**ref, t, f16);
      // A weighted mean of |v| <= 1 whose weights each carry a relative error
      // <= e moves by at most about 2e.
      const double dev = max_abs(exact, r);
      INFO(exp_tier_name(t) << (f16 ? " f16" : " f32") << ": ref deviation from exact " << dev);
      CHECK(dev <= 2.0 * exp_tier_max_rel_error(t) + 1e-6);
      if (t != ExpTier::exact) CHECK(dev > 0.0);
      for (int i = 0; i < 4 * D * Hq; ++i) CHECK_FALSE(std::isnan(r[(size_t)i]));
      for (int64_t i = 4 * D * Hq; i < M * D * Hq; ++i) CHECK(r[(size_t)i] == 0.0f);  // fully masked query
      for (int i = 0; i < n_isa; ++i) {
        BackendOptions o;
        o.isa = avail[i];
        o.n_threads = 2;
        auto cpu = backend_cpu().create(o);
        REQUIRE(cpu.ok());
        const std::vector<float> y = run_attn(**cpu, t, f16);
        // The cpu kernel's online softmax takes each weight's quake error
        // against its block's max (rescaled exactly), the reference against the
        // row max: both within the bound of exact, bitwise apart.
        const double e = max_abs(r, y), dev_cpu = max_abs(exact, y);
        INFO(cpu_isa_name(avail[i]) << " vs ref: " << e << ", vs exact: " << dev_cpu);
        if (t == ExpTier::exact) CHECK(e < 2e-6);
        else CHECK(dev_cpu <= 2.0 * exp_tier_max_rel_error(t) + 1e-6);
      }
    }
  }
}

TEST_CASE("attention: query heads grouped on their kv head give each head's bits alone", "[attention][gqa]") {
  // 8 query heads on 2 kv heads (groups of 4: the cpu kernel runs 4 heads per key pass
  // where the head is 4 vectors wide) against the same heads with K / V copied per head
  // (one query head per kv head: the kernel's one-head path); bitwise equal on every
  // available cpu variant, F32 and F16 K / V, D 16, 32, 64 (4 vectors on neon, avx2, avx512),
  // 7 queries over 150 keys, a causal mask shifted by 143 with query 3 fully masked.
  for (int64_t D : {16, 32, 64}) {
    const int64_t Hq = 8, Hkv = 2, M = 7, n_kv = 150, grp = Hq / Hkv;
    std::mt19937 rng(11);
    std::vector<float> q(D * Hq * M), k(D * Hkv * n_kv), v(D * Hkv * n_kv), mask(n_kv * M, 0.0f);
    fill_qkv(rng, q, k, v);
    const float ninf = -std::numeric_limits<float>::infinity();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t j = 0; j < n_kv; ++j)
        if (j > n_kv - M + m || m == 3) mask[m * n_kv + j] = ninf;
    // Expanded: kv head h of the copy = kv head h / grp of the original.
    std::vector<float> ke(D * Hq * n_kv), ve(D * Hq * n_kv);
    for (int64_t j = 0; j < n_kv; ++j)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t i = 0; i < D; ++i) {
          ke[(j * Hq + h) * D + i] = k[(j * Hkv + h / grp) * D + i];
          ve[(j * Hq + h) * D + i] = v[(j * Hkv + h / grp) * D + i];
        }
    auto to16 = [](const std::vector<float>& a) {
      std::vector<uint16_t> o(a.size());
      for (size_t i = 0; i < a.size(); ++i) o[i] = f32_to_f16(a[i]);
      return o;
    };
    std::vector<uint16_t> k16 = to16(k), v16 = to16(v), ke16 = to16(ke), ve16 = to16(ve);
    auto run_attn = [&](Backend& b, bool f16, bool expanded) {
      const int64_t hk = expanded ? Hq : Hkv;
      void* kd = f16 ? (void*)(expanded ? ke16.data() : k16.data()) : (void*)(expanded ? ke.data() : k.data());
      void* vd = f16 ? (void*)(expanded ? ve16.data() : v16.data()) : (void*)(expanded ? ve.data() : v.data());
      const DType kt = f16 ? DType::F16 : DType::F32;
      AttentionParams p;
      p.scale = 0.3f;
      return run_attention(b, p, make_tensor(DType::F32, q.data(), D, Hq, M), make_tensor(kt, kd, D, hk, n_kv),
                           make_tensor(kt, vd, D, hk, n_kv), make_tensor(DType::F32, mask.data(), n_kv, M));
    };
    CpuIsa avail[8];
    const int n_isa = cpu_isa_available(avail, 8);
    for (int i = 0; i < n_isa; ++i)
      for (bool f16 : {false, true})
        for (int threads : {1, 2}) {
          BackendOptions o;
          o.isa = avail[i];
          o.n_threads = threads;
          auto cpu = backend_cpu().create(o);
          REQUIRE(cpu.ok());
          const std::vector<float> g = run_attn(**cpu, f16, false), e = run_attn(**cpu, f16, true);
          INFO(cpu_isa_name(avail[i]) << " D " << D << (f16 ? " f16" : " f32") << " threads " << threads);
          int differ = 0;
          for (size_t j = 0; j < g.size(); ++j) differ += std::memcmp(&g[j], &e[j], sizeof(float)) != 0;
          CHECK(differ == 0);
          for (int64_t j = 3 * D * Hq; j < 4 * D * Hq; ++j) CHECK(g[(size_t)j] == 0.0f);  // fully masked
        }
  }
}
