// ks_matmul on the cpu backend against the ref backend (which materializes the dense
// matrix): every pattern of the benchmark set, awkward sizes, both layouts, F32/F16/BF16
// weights, 1 and 2 threads, every ISA variant this machine runs (the others are SKIPs);
// chains of factors; invalid calls.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench/ks_patterns.h"
#include "ops/backend.h"
#include "ops/half.h"
#include "runtime/ks/ks_chain.h"
#include "tests/reduced_sweep.h"

using namespace kestrel;

namespace {

struct Weights {
  DType type;
  std::vector<uint8_t> bytes;
  Tensor t;
};

Weights make_weights(DType type, const KsMatmulParams& p, std::mt19937& rng) {
  Weights w;
  w.type = type;
  const int64_t n = int64_t(p.a) * p.b * p.c * p.d;
  const size_t es = type == DType::F32 ? 4 : 2;
  w.bytes.resize((size_t)n * es);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t e = 0; e < n; ++e) {
    const float v = u(rng);
    if (type == DType::F32) std::memcpy(&w.bytes[e * 4], &v, 4);
    else {
      const uint16_t h = type == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
      std::memcpy(&w.bytes[e * 2], &h, 2);
    }
  }
  w.t = make_tensor(type, w.bytes.data(), p.b, p.c, p.d, p.a);
  return w;
}

std::vector<float> random_vec(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

// Relative RMS error sqrt(sum (y - r)^2 / sum r^2); NaN anywhere gives +inf.
double rel_rms(const float* y, const float* r, size_t n) {
  double e = 0, s = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(y[i])) return INFINITY;
    e += (double(y[i]) - r[i]) * (double(y[i]) - r[i]);
    s += double(r[i]) * r[i];
  }
  return s > 0 ? std::sqrt(e / s) : std::sqrt(e);
}

double g_worst_f32 = 0, g_worst_half = 0;

// Runs one call on `be` and on ref. Token-major tensors are [features, M]; batch-last
// [M, features]. ref_tokens: for batch_last, check only these token columns (the ref is
// O(n_in * n_out) per token).
void check(Backend& be, Backend& ref, const KsMatmulParams& p, DType wt, int64_t M, uint32_t seed,
           const std::vector<int64_t>& ref_tokens = {}) {
  std::mt19937 rng(seed);
  const int64_t n_in = int64_t(p.a) * p.c * p.d, n_out = int64_t(p.a) * p.b * p.d;
  Weights w = make_weights(wt, p, rng);
  std::vector<float> x = random_vec((size_t)(n_in * M), rng);
  std::vector<float> y((size_t)(n_out * M), NAN);
  const bool tm = p.layout == KsLayout::token_major;
  Tensor tx = tm ? make_tensor(DType::F32, x.data(), n_in, M) : make_tensor(DType::F32, x.data(), M, n_in);
  Tensor ty = tm ? make_tensor(DType::F32, y.data(), n_out, M) : make_tensor(DType::F32, y.data(), M, n_out);
  const OpCall call{OpId::ks_matmul, &ty, {&w.t, &tx}, 2, &p};
  const Status st = be.run(call);
  INFO(be.name() << " pattern (" << p.a << "," << p.b << "," << p.c << "," << p.d << ") "
                 << (tm ? "token_major" : "batch_last") << " " << dtype_name(wt) << " M=" << M);
  REQUIRE(st.ok());
  double err = 0;
  if (tm || ref_tokens.empty()) {
    std::vector<float> r((size_t)(n_out * M), NAN);
    Tensor tr = tm ? make_tensor(DType::F32, r.data(), n_out, M) : make_tensor(DType::F32, r.data(), M, n_out);
    const OpCall rc{OpId::ks_matmul, &tr, {&w.t, &tx}, 2, &p};
    REQUIRE(ref.run(rc).ok());
    err = rel_rms(y.data(), r.data(), r.size());
  } else {
    // Views of single token columns of x and y (batch_last: token m is element m of each row).
    for (int64_t m : ref_tokens) {
      std::vector<float> r((size_t)n_out, NAN), got((size_t)n_out);
      Tensor vx = tx;
      vx.data = x.data() + m;
      vx.ne[0] = 1;
      Tensor tr = make_tensor(DType::F32, r.data(), 1, n_out);
      const OpCall rc{OpId::ks_matmul, &tr, {&w.t, &vx}, 2, &p};
      REQUIRE(ref.run(rc).ok());
      for (int64_t f = 0; f < n_out; ++f) got[f] = y[(size_t)(f * M + m)];
      err = std::max(err, rel_rms(got.data(), r.data(), r.size()));
    }
    size_t n_bad = 0;  // every output written (y started as NaN)
    for (float v : y) n_bad += !std::isfinite(v);
    REQUIRE(n_bad == 0);
  }
  double& worst = wt == DType::F32 ? g_worst_f32 : g_worst_half;
  worst = std::max(worst, err);
  CHECK(err <= 1e-6);
}

struct Variant {
  std::unique_ptr<Backend> be;
  std::string name;
};

// Every ISA variant this machine runs, at 1 and 2 threads; SKIPs for the others.
std::vector<Variant> variants() {
  std::vector<Variant> v;
  for (CpuIsa isa : kCpuIsas)
    for (int nt : {1, 2}) {
      if (cpu_isa_int_twin(isa)) continue;  // float kernels: its base variant's
      auto b = backend_cpu().create(BackendOptions{nt, nullptr, isa, 0});
      if (!b) {
        if (nt == 1) WARN("SKIP: cpu variant " << cpu_isa_name(isa) << ": " << b.status().to_string());
        continue;
      }
      v.push_back({std::move(*b), std::string(cpu_isa_name(isa)) + " x" + std::to_string(nt)});
    }
  return v;
}

std::unique_ptr<Backend> ref_backend() {
  auto r = backend_ref().create({});
  REQUIRE(r);
  return std::move(*r);
}

}  // namespace

TEST_CASE("ks_matmul: every pattern of the benchmark set", "[op][ks_matmul][cpu]") {
  auto ref = ref_backend();
  auto vs = variants();
  REQUIRE(!vs.empty());
  uint32_t seed = 1;
  // Reduced (sanitizers, emulators): every third pattern; the dense reference is
  // what takes the time, and the kernels' code paths repeat across patterns.
  const size_t pattern_step = kestrel::test::reduced_sweep() ? 3 : 1;
  size_t pattern_index = 0;
  for (const bench::KsPattern& bp : bench::kKsPatterns) {
    if (pattern_index++ % pattern_step != 0) continue;
    for (size_t vi = 0; vi < vs.size(); ++vi) {
      // Both layouts on every variant would repeat the slow oracle; alternate the thread
      // counts between patterns and check both layouts everywhere.
      if ((vi % 2) != (seed % 2)) continue;
      KsMatmulParams p{bp.a, bp.b, bp.c, bp.d, KsLayout::token_major};
      check(*vs[vi].be, *ref, p, DType::F32, 3, seed);
      p.layout = KsLayout::batch_last;
      check(*vs[vi].be, *ref, p, DType::F32, 37, seed, {0, 15, 33, 36});
    }
    ++seed;
  }
  std::printf("ks_matmul benchmark patterns: worst relative RMS error vs ref %.2e (F32 weights)\n", g_worst_f32);
}

TEST_CASE("ks_matmul: awkward sizes, layouts, weight types, threads", "[op][ks_matmul][cpu]") {
  auto ref = ref_backend();
  auto vs = variants();
  REQUIRE(!vs.empty());
  const int32_t sizes[] = {1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 31, 33, 50};
  std::mt19937 pick(7);
  auto any = [&] { return sizes[pick() % (sizeof sizes / sizeof sizes[0])]; };
  const int64_t ms[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33};
  // Reduced (sanitizers, emulators): the first 20 of the 60 random shapes.
  const int n_shapes = kestrel::test::reduced_sweep() ? 20 : 60;
  for (int n = 0; n < n_shapes; ++n) {
    const KsMatmulParams base{1 + (int32_t)(pick() % 4), any(), any(), 1 + (int32_t)(pick() % 5), KsLayout::token_major};
    const int64_t M = ms[pick() % 12];
    for (DType wt : {DType::F32, DType::F16, DType::BF16})
      for (KsLayout lay : {KsLayout::token_major, KsLayout::batch_last})
        for (auto& v : vs) {
          KsMatmulParams p = base;
          p.layout = lay;
          check(*v.be, *ref, p, wt, M, 100 + n);
        }
  }
  // Output chunks past one work item (token_major: 128 outputs, batch_last: 192), more
  // than one token chunk (batch_last: 256 tokens) and more than one input panel
  // (batch_last: 256 inputs), with a last output chunk that is not a whole micro-tile.
  for (auto& v : vs) {
    check(*v.be, *ref, {2, 300, 20, 3, KsLayout::token_major}, DType::F32, 6, 3);
    check(*v.be, *ref, {2, 100, 20, 3, KsLayout::batch_last}, DType::F16, 530, 4, {0, 255, 256, 511, 529});
    check(*v.be, *ref, {1, 400, 300, 2, KsLayout::batch_last}, DType::BF16, 37, 5, {0, 15, 33, 36});
    // batch_last packing edges: b = 64 ends in a group of 4 rows whose weights are packed
    // by a shifted vector copy (and the rows past it store into the sink); c = 300 gives a
    // second panel of 44 inputs; M = 37: two 2-vector slabs, a 1-vector slab (AVX2) and
    // scalar tokens; b = 5 is below one packing vector (scalar packing).
    check(*v.be, *ref, {1, 64, 300, 3, KsLayout::batch_last}, DType::F32, 37, 6, {0, 16, 31, 32, 36});
    check(*v.be, *ref, {3, 64, 20, 1, KsLayout::batch_last}, DType::F16, 37, 7);
    check(*v.be, *ref, {2, 5, 9, 3, KsLayout::batch_last}, DType::F32, 40, 8);
  }
  std::printf("ks_matmul awkward sizes: worst relative RMS error vs ref %.2e (F32), %.2e (F16/BF16)\n",
              g_worst_f32, g_worst_half);
}

TEST_CASE("ks_matmul: strided rows", "[op][ks_matmul][cpu]") {
  auto ref = ref_backend();
  auto vs = variants();
  REQUIRE(!vs.empty());
  std::mt19937 rng(11);
  const KsMatmulParams pt{2, 16, 12, 3, KsLayout::token_major};
  Weights w = make_weights(DType::F32, pt, rng);
  for (KsLayout lay : {KsLayout::token_major, KsLayout::batch_last}) {
    KsMatmulParams p = pt;
    p.layout = lay;
    const bool tm = lay == KsLayout::token_major;
    const int64_t M = 19, n_in = 72, n_out = 96;
    const int64_t x_rows = tm ? M : n_in, x_len = tm ? n_in : M, y_rows = tm ? M : n_out, y_len = tm ? n_out : M;
    const int64_t x_ld = x_len + 5, y_ld = y_len + 3;
    std::vector<float> x = random_vec((size_t)(x_rows * x_ld), rng);
    std::vector<float> y((size_t)(y_rows * y_ld), -7.0f), r((size_t)(y_rows * y_ld), -7.0f);
    Tensor tx = make_tensor(DType::F32, x.data(), x_len, x_rows);
    tx.nb[1] = x_ld * 4;
    Tensor ty = make_tensor(DType::F32, y.data(), y_len, y_rows), tr = ty;
    ty.nb[1] = tr.nb[1] = y_ld * 4;
    tr.data = r.data();
    const OpCall rc{OpId::ks_matmul, &tr, {&w.t, &tx}, 2, &p};
    REQUIRE(ref.get()->run(rc).ok());
    for (auto& v : vs) {
      std::fill(y.begin(), y.end(), -7.0f);
      const OpCall c{OpId::ks_matmul, &ty, {&w.t, &tx}, 2, &p};
      REQUIRE(v.be->run(c).ok());
      INFO(v.name << (tm ? " token_major" : " batch_last"));
      CHECK(rel_rms(y.data(), r.data(), y.size()) <= 1e-6);  // the gaps keep -7 in both
    }
  }
}

TEST_CASE("ks_matmul: chains of factors", "[op][ks_matmul][cpu]") {
  auto ref = ref_backend();
  auto vs = variants();
  REQUIRE(!vs.empty());
  std::mt19937 rng(5);
  // 256 -> 256 -> 256 -> 1024 -> 512: a butterfly-like product plus a widening and a narrowing factor.
  const KsMatmulParams ps[] = {{4, 16, 16, 4}, {16, 16, 16, 1}, {1, 64, 16, 16}, {8, 16, 32, 4}};
  std::vector<Weights> ws;
  for (const auto& p : ps) ws.push_back(make_weights(DType::F32, p, rng));
  KsFactor f[4];
  for (int t = 0; t < 4; ++t) f[t] = {ps[t], &ws[t].t};
  for (KsLayout lay : {KsLayout::token_major, KsLayout::batch_last})
    for (int64_t M : {1, 5, 20}) {
      const bool tm = lay == KsLayout::token_major;
      std::vector<float> x = random_vec((size_t)(256 * M), rng);
      Tensor tx = tm ? make_tensor(DType::F32, x.data(), 256, M) : make_tensor(DType::F32, x.data(), M, 256);
      auto n = ks_chain_scratch_floats(f, 4, M);
      REQUIRE(n);
      CHECK(*n == (size_t)(2 * 1024 * M));
      std::vector<float> scratch(*n), r((size_t)(512 * M)), y((size_t)(512 * M));
      Tensor tr = tm ? make_tensor(DType::F32, r.data(), 512, M) : make_tensor(DType::F32, r.data(), M, 512);
      Tensor ty = tr;
      ty.data = y.data();
      REQUIRE(ks_chain_apply(*ref, f, 4, lay, tx, tr, scratch.data(), scratch.size()).ok());
      for (auto& v : vs) {
        std::fill(y.begin(), y.end(), NAN);
        REQUIRE(ks_chain_apply(*v.be, f, 4, lay, tx, ty, scratch.data(), scratch.size()).ok());
        INFO(v.name << " M=" << M << (tm ? " token_major" : " batch_last"));
        CHECK(rel_rms(y.data(), r.data(), y.size()) <= 1e-6);
      }
      // A single factor needs no scratch; too little scratch and mismatched widths are errors.
      auto one = ks_chain_scratch_floats(f, 1, M);
      REQUIRE(one);
      CHECK(*one == 0);
      CHECK(ks_chain_apply(*ref, f, 4, lay, tx, tr, scratch.data(), scratch.size() - 1).code() ==
            StatusCode::invalid_argument);
      KsFactor bad[2] = {f[0], f[3]};
      CHECK(!ks_chain_scratch_floats(bad, 2, M));
    }
}

TEST_CASE("ks_matmul: invalid calls are errors", "[op][ks_matmul][cpu]") {
  auto vs = variants();
  REQUIRE(!vs.empty());
  Backend& be = *vs[0].be;
  std::mt19937 rng(3);
  KsMatmulParams p{2, 8, 4, 3, KsLayout::token_major};
  Weights w = make_weights(DType::F32, p, rng);
  std::vector<float> x(24 * 2), y(48 * 2);
  Tensor tx = make_tensor(DType::F32, x.data(), 24, 2), ty = make_tensor(DType::F32, y.data(), 48, 2);
  OpCall c{OpId::ks_matmul, &ty, {&w.t, &tx}, 2, &p};
  REQUIRE(be.run(c).ok());
  KsMatmulParams q = p;
  q.a = 0;
  c.params = &q;
  CHECK(!be.run(c).ok());
  q = p;
  q.b = 4;  // weights say b = 8
  CHECK(!be.run(c).ok());
  q = p;
  q.layout = static_cast<KsLayout>(7);
  CHECK(!be.run(c).ok());
  q = {1 << 30, 1 << 30, 1 << 30, 1 << 30, KsLayout::token_major};  // widths overflow
  CHECK(!be.run(c).ok());
  c.params = &p;
  Tensor ty_bad = make_tensor(DType::F32, y.data(), 47, 2);
  c.dst = &ty_bad;
  CHECK(!be.run(c).ok());
  Tensor ty_m = make_tensor(DType::F32, y.data(), 48, 1);  // token count differs
  c.dst = &ty_m;
  CHECK(!be.run(c).ok());
}
