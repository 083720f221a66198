// Exp tiers (ops/exp_tier.h): measured accuracy of each tier against exp in
// double, asserted against the documented bounds; the activations and softmax
// on each tier; every cpu ISA variant against the scalar reference of the same
// tier. Prints the accuracy tables it measures.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ops/backend.h"
#include "ops/cpu/exp_row.h"
#include "ops/exp_tier.h"
#include "ops/ref/ref_exp.h"

using namespace kestrel;

namespace {

constexpr ExpTier kTiers[] = {ExpTier::exact, ExpTier::quake2, ExpTier::quake1};
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<CpuIsa> isas() {
  CpuIsa v[8];
  const int n = cpu_isa_available(v, 8);
  return std::vector<CpuIsa>(v, v + n);
}

// The compiled variants this CPU cannot run (reported as skipped).
void report_skipped_isas() {
  static bool once = false;
  if (once) return;
  once = true;
  const std::vector<CpuIsa> have = isas();
  for (CpuIsa isa : kCpuIsas) {
    if (cpu_isa_int_twin(isa)) continue;  // the same exp row as its base variant (ops/cpu/exp_row.cpp)
    bool ok = false;
    for (CpuIsa h : have) ok = ok || h == isa;
    if (!ok) {
      std::printf("SKIP: cpu variant %s (not compiled in or not supported by this CPU)\n", cpu_isa_name(isa));
      WARN("SKIP: cpu variant " << cpu_isa_name(isa) << " (not compiled in or not supported by this CPU)");
    }
  }
}

std::vector<float> grid(double lo, double hi, int64_t n) {
  std::vector<float> x((size_t)n);
  for (int64_t i = 0; i < n; ++i) x[(size_t)i] = (float)(lo + (hi - lo) * (double)i / (double)(n - 1));
  return x;
}

// Max and RMS of |y / ref - 1| over points with |ref| >= floor, and max abs error.
struct ErrStats {
  double max_rel = 0, sum_sq = 0, max_abs = 0;
  int64_t n = 0;
  void add(double y, double ref, double floor = 1e-30) {
    const double e = std::fabs(y - ref);
    max_abs = std::max(max_abs, e);
    if (std::fabs(ref) < floor) return;
    const double r = e / std::fabs(ref);
    max_rel = std::max(max_rel, r);
    sum_sq += r * r;
    ++n;
  }
  double rms() const { return n ? std::sqrt(sum_sq / (double)n) : 0.0; }
};

// ulp of a float value (the spacing at |r|).
double ulp_of(double r) {
  const float f = std::fabs((float)r);
  return (double)std::nextafter(f, kInf) - (double)f;
}

struct Backends {
  std::unique_ptr<Backend> ref;
  std::vector<std::unique_ptr<Backend>> cpu;  // one per runnable ISA variant
};
Backends& backends() {
  static Backends b = [] {
    Backends r;
    auto rb = backend_ref().create({});
    if (rb) r.ref = std::move(*rb);
    for (CpuIsa isa : isas()) {
      BackendOptions o;
      o.isa = isa;
      o.n_threads = 2;
      auto cb = backend_cpu().create(o);
      if (cb) r.cpu.push_back(std::move(*cb));
    }
    return r;
  }();
  return b;
}

// Runs a one- or two-source elementwise / softmax op over [n, rows] on backend b.
std::vector<float> run_op(Backend& b, OpId op, const void* params, const std::vector<float>& x,
                          const std::vector<float>* x2, int64_t n, int64_t rows) {
  std::vector<float> y(x.size(), std::nanf(""));
  std::vector<float> a = x, a2 = x2 ? *x2 : std::vector<float>();
  Tensor ta = make_tensor(DType::F32, a.data(), n, rows);
  Tensor tb = make_tensor(DType::F32, a2.data(), n, rows);
  Tensor td = make_tensor(DType::F32, y.data(), n, rows);
  OpCall c;
  c.op = op;
  c.dst = &td;
  c.src[0] = &ta;
  c.n_src = 1;
  if (x2) {
    c.src[1] = &tb;
    c.n_src = 2;
  }
  c.params = params;
  const Status s = b.run(c);
  INFO(b.name() << " " << op_name(op) << ": " << s.message());
  REQUIRE(s.ok());
  return y;
}

// Largest |y - r| / (atol + rtol |r|) ratio; <= 1 passes. Also checks NaN parity.
double worst_ratio(const std::vector<float>& y, const std::vector<float>& r, double atol, double rtol,
                   size_t* at = nullptr) {
  double w = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (std::isnan(r[i]) || std::isnan(y[i])) {
      if (std::isnan(r[i]) != std::isnan(y[i])) return 1e30;
      continue;
    }
    if (y[i] == r[i]) continue;
    const double q = std::fabs((double)y[i] - r[i]) / (atol + rtol * std::fabs((double)r[i]));
    if (q > w) {
      w = q;
      if (at) *at = i;
    }
  }
  return w;
}

}  // namespace

TEST_CASE("exp tiers: max and RMS relative error over [-87, 88], scalar reference and every ISA variant",
          "[exp]") {
  report_skipped_isas();
  const std::vector<float> x = grid(-87.0, 88.0, 1 << 22);
  std::printf("\nexp over [-87, 88], %zu points: relative error vs exp in double\n", x.size());
  std::printf("%-8s %-8s %12s %12s %10s %12s\n", "tier", "impl", "max rel", "rms rel", "max ulp", "bound");
  for (ExpTier t : kTiers) {
    auto check = [&](const char* impl, const std::vector<float>& y) {
      ErrStats st;
      double max_ulp = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        const double r = std::exp((double)x[i]);
        st.add(y[i], r, 0.0);  // exp(-87) = 1.6e-38 is still a normal float
        max_ulp = std::max(max_ulp, std::fabs(y[i] - r) / ulp_of(r));
      }
      std::printf("%-8s %-8s %12.4e %12.4e %10.1f %12.4e\n", exp_tier_name(t), impl, st.max_rel, st.rms(), max_ulp,
                  exp_tier_max_rel_error(t));
      INFO(exp_tier_name(t) << " " << impl);
      CHECK(st.n == (int64_t)x.size());
      CHECK(st.max_rel <= exp_tier_max_rel_error(t));
      if (t == ExpTier::exact) CHECK(max_ulp <= 2.0);
      // The quake tiers are balanced approximations: the RMS is well below the max.
      if (t != ExpTier::exact) CHECK(st.rms() < 0.75 * st.max_rel);
    };
    std::vector<float> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = ref::exp_tier(t, x[i]);
    if (t != ExpTier::exact) check("ref", y);  // exact's reference is exp in double itself
    for (CpuIsa isa : isas()) {
      REQUIRE(cpu_exp_row(isa, t, x.data(), y.data(), (int64_t)x.size()).ok());
      check(cpu_isa_name(isa), y);
    }
  }
}

TEST_CASE("exp tiers: clamping (underflow to 0, overflow to inf, NaN passes) on every variant", "[exp]") {
  const std::vector<float> x = {-kInf, -1000.0f, -104.0f, -88.1f, 88.8f, 100.0f, 1e30f, kInf, std::nanf("")};
  for (ExpTier t : kTiers) {
    std::vector<std::vector<float>> outs;
    std::vector<std::string> names;
    std::vector<float> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = ref::exp_tier(t, x[i]);
    outs.push_back(y);
    names.push_back("ref");
    for (CpuIsa isa : isas()) {
      REQUIRE(cpu_exp_row(isa, t, x.data(), y.data(), (int64_t)x.size()).ok());
      outs.push_back(y);
      names.push_back(cpu_isa_name(isa));
    }
    for (size_t k = 0; k < outs.size(); ++k) {
      INFO(exp_tier_name(t) << " " << names[k]);
      const std::vector<float>& o = outs[k];
      CHECK(o[0] == 0.0f);
      CHECK(o[1] == 0.0f);
      CHECK(o[2] == 0.0f);
      CHECK(o[3] < 1.2e-38f);
      CHECK(o[3] >= 0.0f);
      CHECK(o[4] == kInf);
      CHECK(o[5] == kInf);
      CHECK(o[6] == kInf);
      CHECK(o[7] == kInf);
      CHECK(std::isnan(o[8]));
    }
  }
  // The quake2 tier never returns a subnormal; its values are continuous
  // across a power of two (p(2) = 2 p(1)).
  for (float v : {-87.5f, -87.4f, -87.34f}) CHECK((ref::exp_tier(ExpTier::quake2, v) == 0.0f ||
                                                   std::fpclassify(ref::exp_tier(ExpTier::quake2, v)) == FP_NORMAL));
  const float at_two = std::log(2.0f);
  for (ExpTier t : {ExpTier::quake2, ExpTier::quake1}) {
    const float lo = ref::exp_tier(t, std::nextafter(at_two, -kInf)), hi = ref::exp_tier(t, at_two);
    INFO(exp_tier_name(t));
    CHECK(std::fabs(hi - lo) <= 1e-5f * hi);
  }
}

TEST_CASE("exp tiers: every ISA variant matches the scalar reference of its tier", "[exp]") {
  report_skipped_isas();
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-90.0f, 90.0f);
  std::vector<float> x(100003);
  for (float& v : x) v = u(rng);
  for (ExpTier t : {ExpTier::quake2, ExpTier::quake1}) {
    std::vector<float> r(x.size()), y(x.size());
    for (size_t i = 0; i < x.size(); ++i) r[i] = ref::exp_tier(t, x[i]);
    for (CpuIsa isa : isas()) {
      REQUIRE(cpu_exp_row(isa, t, x.data(), y.data(), (int64_t)x.size()).ok());
      // Same float operations; sse4.2 has no fused multiply-add (one more rounding of v).
      INFO(exp_tier_name(t) << " " << cpu_isa_name(isa));
      CHECK(worst_ratio(y, r, 1e-38, 2e-5) <= 1.0);
    }
  }
}

namespace {

struct Act {
  const char* name;
  OpId op;
  GeluForm form;
  std::function<double(double)> truth;
};

const std::vector<Act>& acts() {
  static const std::vector<Act> k = {
      {"sigmoid", OpId::sigmoid, GeluForm::tanh, [](double x) { return 1.0 / (1.0 + std::exp(-x)); }},
      {"silu", OpId::silu, GeluForm::tanh, [](double x) { return x / (1.0 + std::exp(-x)); }},
      {"gelu tanh", OpId::gelu, GeluForm::tanh,
       // 0.5x(1 + tanh(u)) as x / (1 + exp(-2u)): the tanh form cancels in double for x < -6.
       [](double x) { return x / (1.0 + std::exp(-2.0 * std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }},
      {"gelu erf", OpId::gelu, GeluForm::erf, [](double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }},
      {"gelu sigm", OpId::gelu, GeluForm::sigmoid, [](double x) { return x / (1.0 + std::exp(-1.702 * x)); }},
  };
  return k;
}

// The op's parameter struct for tier t (kept alive in `store`).
const void* act_params(const Act& a, ExpTier t, std::vector<uint8_t>& store) {
  store.assign(16, 0);
  if (a.op == OpId::gelu || a.op == OpId::geglu) {
    const GeluParams p{a.form, t};
    std::memcpy(store.data(), &p, sizeof p);
  } else if (a.op == OpId::sigmoid) {
    const SigmoidParams p{t};
    std::memcpy(store.data(), &p, sizeof p);
  } else {
    const SiluParams p{t};
    std::memcpy(store.data(), &p, sizeof p);
  }
  return store.data();
}

}  // namespace

TEST_CASE("exp tiers: sigmoid, SiLU and GELU (tanh, erf, sigmoid forms) accuracy over [-20, 20]", "[exp]") {
  report_skipped_isas();
  Backends& b = backends();
  REQUIRE(b.ref);
  const int64_t n = 4001, rows = 100;  // 400100 points
  const std::vector<float> x = grid(-20.0, 20.0, n * rows);
  std::printf("\nactivations over [-20, 20], %zu points: error vs the function in double\n"
              "(relative where |f(x)| >= 1e-30; abs: max absolute error)\n", x.size());
  std::printf("%-10s %-8s %-8s %12s %12s %12s\n", "op", "tier", "impl", "max rel", "rms rel", "max abs");
  for (const Act& a : acts())
    for (ExpTier t : kTiers) {
      std::vector<uint8_t> ps;
      const void* params = act_params(a, t, ps);
      auto measure = [&](Backend& be) {
        const std::vector<float> y = run_op(be, a.op, params, x, nullptr, n, rows);
        ErrStats st;
        for (size_t i = 0; i < x.size(); ++i) st.add(y[i], a.truth(x[i]));
        std::printf("%-10s %-8s %-8s %12.4e %12.4e %12.4e\n", a.name, exp_tier_name(t), be.name(), st.max_rel,
                    st.rms(), st.max_abs);
        INFO(a.name << " " << exp_tier_name(t) << " " << be.name());
        if (t == ExpTier::exact) {
          // The exact tier's formulas: a few ulp, except where float itself
          // loses the value (1 + erf(x/sqrt2) cancels for x < -3; exp(-2u)
          // overflows for x < -10 in the tanh form): bounded in absolute terms.
          CHECK(st.max_abs <= 2e-6);
          if (a.form != GeluForm::erf || a.op != OpId::gelu) CHECK(st.max_rel <= (a.op == OpId::gelu ? 1e-4 : 1e-6));
        } else {
          // A logistic 1 / (1 + e (1 + eps)) is off by at most |eps| / (1 - |eps|)
          // relative; erfc's fitted form adds 1.2e-7, float evaluation of the
          // argument (|u| up to ~90 before the exp saturates) about 2e-5.
          const double eps = exp_tier_max_rel_error(t);
          CHECK(st.max_rel <= eps / (1.0 - eps) + 1e-4);
        }
      };
      if (t != ExpTier::exact) measure(*b.ref);
      for (auto& c : b.cpu) measure(*c);
    }
}

TEST_CASE("exp tiers: activations, GeGLU and SwiGLU on every ISA variant match the reference of the same tier",
          "[exp]") {
  report_skipped_isas();
  Backends& b = backends();
  REQUIRE(b.ref);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-20.0f, 20.0f), up(-2.0f, 2.0f);
  for (int64_t n : {1, 7, 8, 9, 16, 17, 33, 1000}) {
    const int64_t rows = 3;
    std::vector<float> x((size_t)(n * rows)), x2(x.size());
    for (float& v : x) v = u(rng);
    for (float& v : x2) v = up(rng);
    if (n == 1000) {  // specials
      x[0] = -kInf;
      x[1] = kInf;
      x[2] = std::nanf("");
      x[3] = 0.0f;
      x[4] = -0.0f;
    }
    for (const Act& a : acts())
      for (ExpTier t : kTiers)
        for (bool gated : {false, true}) {
          if (gated && a.op == OpId::sigmoid) continue;
          Act g = a;
          if (gated) g.op = a.op == OpId::silu ? OpId::swiglu : OpId::geglu;
          std::vector<uint8_t> ps;
          const void* params = act_params(g, t, ps);
          const std::vector<float> r = run_op(*b.ref, g.op, params, x, gated ? &x2 : nullptr, n, rows);
          for (auto& c : b.cpu) {
            const std::vector<float> y = run_op(*c, g.op, params, x, gated ? &x2 : nullptr, n, rows);
            size_t at = 0;
            const double w = t == ExpTier::exact ? worst_ratio(y, r, 2e-6, 4e-6, &at)
                                                 : worst_ratio(y, r, 1e-30, 3e-5, &at);
            INFO(op_name(g.op) << " " << a.name << " " << exp_tier_name(t) << " " << c->name() << " n=" << n
                               << " x=" << x[at] << " y=" << y[at] << " ref=" << r[at]);
            CHECK(w <= 1.0);
          }
        }
  }
}

namespace {

// Softmax of `rows` rows of n logits on backend b with params p.
std::vector<float> softmax(Backend& b, const SoftmaxParams& p, const std::vector<float>& x, int64_t n, int64_t rows,
                           const std::vector<float>* mask = nullptr) {
  return run_op(b, OpId::softmax, &p, x, mask, n, rows);
}

}  // namespace

TEST_CASE("exp tiers: softmax rows sum to 1, probabilities within the tier's bound, every ISA variant vs the "
          "reference of the same tier",
          "[exp]") {
  report_skipped_isas();
  Backends& b = backends();
  REQUIRE(b.ref);
  std::mt19937 rng(3);
  std::printf("\nsoftmax, logits uniform in [-15, 15] (scale 1.3): error per probability vs exp in double\n");
  std::printf("%-8s %8s %-12s %12s %12s %12s\n", "tier", "n", "impl", "max rel", "rms rel", "|sum - 1|");
  for (int64_t n : {64, 1000, 4096, 32000, 262144}) {
    const int64_t rows = n >= 32000 ? 1 : 3;
    std::uniform_real_distribution<float> u(-15.0f, 15.0f);
    std::vector<float> x((size_t)(n * rows));
    for (float& v : x) v = u(rng);
    // The truth: softmax of x * 1.3 in double.
    std::vector<double> truth(x.size());
    for (int64_t r = 0; r < rows; ++r) {
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j < n; ++j) mx = std::max(mx, (double)x[r * n + j] * 1.3f);
      for (int64_t j = 0; j < n; ++j) sum += std::exp((double)x[r * n + j] * 1.3f - mx);
      for (int64_t j = 0; j < n; ++j) truth[r * n + j] = std::exp((double)x[r * n + j] * 1.3f - mx) / sum;
    }
    for (ExpTier t : kTiers) {
      SoftmaxParams p;
      p.scale = 1.3f;
      p.exp = t;
      const std::vector<float> r = softmax(*b.ref, p, x, n, rows);
      auto check = [&](const char* impl, const std::vector<float>& y) {
        ErrStats st;
        double worst_sum = 0;
        for (int64_t row = 0; row < rows; ++row) {
          double s = 0;
          for (int64_t j = 0; j < n; ++j) {
            s += y[row * n + j];
            st.add(y[row * n + j], truth[row * n + j], 1e-37);
          }
          worst_sum = std::max(worst_sum, std::fabs(s - 1.0));
        }
        std::printf("%-8s %8lld %-12s %12.4e %12.4e %12.4e\n", exp_tier_name(t), (long long)n, impl, st.max_rel,
                    st.rms(), worst_sum);
        INFO(exp_tier_name(t) << " " << impl << " n=" << n);
        // Each probability e_j (1 + eps_j) / sum_k e_k (1 + eps_k): within 2 eps / (1 - eps).
        const double eps = exp_tier_max_rel_error(t);
        // Float rounding of the logit s = 1.3x (|s| <= 20: 2.4e-6 relative on exp(s - max)) plus
        // the float sum of n terms (one accumulator per lane, ~1.2e-10 n).
        CHECK(st.max_rel <= (t == ExpTier::exact ? 0.0 : 2.0 * eps / (1.0 - eps)) + 5e-6 + 1.2e-10 * (double)n);
        CHECK(worst_sum <= 1e-4);
      };
      check("ref", r);
      for (auto& c : b.cpu) {
        const std::vector<float> y = softmax(*c, p, x, n, rows);
        check(c->name(), y);
        INFO(exp_tier_name(t) << " " << c->name() << " n=" << n << " vs ref");
        CHECK(worst_ratio(y, r, 1e-30, (t == ExpTier::exact ? 5e-6 : 3e-5) + 1.2e-10 * (double)n) <= 1.0);
      }
    }
  }
}

TEST_CASE("exp tiers: softmax with mask, causal window, soft cap, large logits and in place, per tier", "[exp]") {
  Backends& b = backends();
  REQUIRE(b.ref);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-8.0f, 8.0f);
  const int64_t n = 67, rows = 5;
  std::vector<float> x((size_t)(n * rows)), mask(x.size());
  for (float& v : x) v = u(rng);
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = (i % 5 == 0) ? -kInf : 0.0f;
  std::vector<float> big(x.size());
  for (size_t i = 0; i < big.size(); ++i) big[i] = 900.0f + x[i];  // |max| > 88: s - max formed first
  for (ExpTier t : kTiers) {
    struct Cfg {
      const char* name;
      SoftmaxParams p;
      const std::vector<float>* x;
      bool mask;
    };
    const Cfg cfgs[] = {
        {"plain", SoftmaxParams{0.7f, 0.0f, false, 0, 0, t}, &x, false},
        {"negative scale", SoftmaxParams{-2.0f, 0.0f, false, 0, 0, t}, &x, false},
        {"mask", SoftmaxParams{1.0f, 0.0f, false, 0, 0, t}, &x, true},
        {"causal window", SoftmaxParams{1.0f, 0.0f, true, 9, 30, t}, &x, false},
        {"soft cap", SoftmaxParams{2.0f, 5.0f, false, 0, 0, t}, &x, false},
        {"large logits", SoftmaxParams{1.0f, 0.0f, false, 0, 0, t}, &big, false},
        {"fully masked", SoftmaxParams{1.0f, 0.0f, true, 0, -1, t}, &x, false},
    };
    for (const Cfg& cfg : cfgs) {
      const std::vector<float> r = softmax(*b.ref, cfg.p, *cfg.x, n, rows, cfg.mask ? &mask : nullptr);
      for (auto& c : b.cpu) {
        const std::vector<float> y = softmax(*c, cfg.p, *cfg.x, n, rows, cfg.mask ? &mask : nullptr);
        INFO(cfg.name << " " << exp_tier_name(t) << " " << c->name());
        CHECK(worst_ratio(y, r, 1e-30, t == ExpTier::exact ? 2e-5 : 5e-5) <= 1.0);
        if (cfg.mask)
          for (size_t i = 0; i < y.size(); ++i)
            if (mask[i] == -kInf) REQUIRE(y[i] == 0.0f);
      }
    }
    // In place (dst == src) gives the same as out of place.
    for (auto& c : b.cpu) {
      SoftmaxParams p{0.7f, 0.0f, false, 0, 0, t};
      const std::vector<float> r = softmax(*c, p, x, n, rows);
      std::vector<float> io = x;
      Tensor tio = make_tensor(DType::F32, io.data(), n, rows);
      OpCall call;
      call.op = OpId::softmax;
      call.dst = &tio;
      call.src[0] = &tio;
      call.n_src = 1;
      call.params = &p;
      REQUIRE(c->run(call).ok());
      INFO(exp_tier_name(t) << " " << c->name() << " in place");
      CHECK(io == r);
    }
  }
}

TEST_CASE("exp tiers: an unknown tier or gelu form is rejected, not run", "[exp]") {
  Backends& b = backends();
  REQUIRE(b.ref);
  std::vector<float> x(8, 1.0f), y(8);
  Tensor tx = make_tensor(DType::F32, x.data(), 8), ty = make_tensor(DType::F32, y.data(), 8);
  SoftmaxParams sp;
  sp.exp = static_cast<ExpTier>(7);
  GeluParams gp;
  gp.form = static_cast<GeluForm>(9);
  SiluParams lp;
  lp.exp = static_cast<ExpTier>(-1);
  const std::pair<OpId, const void*> calls[] = {{OpId::softmax, &sp}, {OpId::gelu, &gp}, {OpId::silu, &lp}};
  for (const auto& [op, params] : calls) {
    OpCall c;
    c.op = op;
    c.dst = &ty;
    c.src[0] = &tx;
    c.n_src = 1;
    c.params = params;
    CHECK(b.ref->run(c).code() == StatusCode::invalid_argument);
    for (auto& cb : b.cpu) CHECK(cb->run(c).code() == StatusCode::invalid_argument);
  }
  CHECK(cpu_exp_row(CpuIsa::auto_detect, static_cast<ExpTier>(5), x.data(), y.data(), 8).code() ==
        StatusCode::invalid_argument);
}
