// Exp tier benchmark: ns per element and GB/s of exp alone (std::exp scalar,
// xsimd::exp = the exact tier, quake2, quake1) and of softmax, GELU (tanh form)
// and SiLU on each tier, at an in-cache size (4096 floats) and an out-of-cache
// size (16M floats), 1 and 2 threads, on the cpu backend's best variant (or
// --isa). Every row prints its speed-up over the exact tier measured in the
// same run: the tiers of one case are timed interleaved, sample by sample, and
// each reports the median (and the fastest) sample. GB/s counts 8 bytes per
// element (one float read, one written).
//
//   bench_exp                     # every case
//   bench_exp --filter softmax -t 1 --reps 31
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ops/backend.h"
#include "ops/cpu/exp_row.h"
#include "ops/exp_tier.h"
#include "platform/aligned_alloc.h"
#include "platform/thread_pool.h"

using namespace kestrel;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Opts {
  std::vector<int> threads{1, 2};
  std::vector<int64_t> sizes{4096, int64_t(16) << 20};
  std::string filter;
  std::string isa = "auto";
  int reps = 21;
};

// A float buffer, 64-byte aligned (freed on scope exit).
struct Buf {
  float* p = nullptr;
  explicit Buf(int64_t n) { p = static_cast<float*>(aligned_alloc_bytes((size_t)n * sizeof(float), 64)); }
  ~Buf() { aligned_free(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

struct Variant {
  std::string name;
  std::function<void()> run;  // one call over the whole case
  bool is_exact = false;
};

// Times the variants of one case interleaved; prints one line each with the
// ratio of the exact variant's median to this one's.
void time_case(const Opts& o, const std::string& what, int64_t n, int nth, std::vector<Variant>& vs) {
  // Calls per sample: about 2 ms of work so that the timer and a time slice
  // given to another process weigh little.
  std::vector<int> calls(vs.size(), 1);
  for (size_t k = 0; k < vs.size(); ++k) {
    vs[k].run();  // warm
    const double t0 = now_s();
    vs[k].run();
    const double dt = std::max(now_s() - t0, 1e-7);
    calls[k] = std::clamp((int)(2e-3 / dt), 1, 100000);
  }
  std::vector<std::vector<double>> samples(vs.size());
  for (int r = 0; r < o.reps; ++r)
    for (size_t k = 0; k < vs.size(); ++k) {
      const double t0 = now_s();
      for (int c = 0; c < calls[k]; ++c) vs[k].run();
      samples[k].push_back((now_s() - t0) / calls[k]);
    }
  double t_exact = 0;
  std::vector<double> med(vs.size()), best(vs.size());
  for (size_t k = 0; k < vs.size(); ++k) {
    std::sort(samples[k].begin(), samples[k].end());
    med[k] = samples[k][samples[k].size() / 2];
    best[k] = samples[k][0];
    if (vs[k].is_exact) t_exact = med[k];
  }
  for (size_t k = 0; k < vs.size(); ++k) {
    const double ns = med[k] * 1e9 / (double)n;
    const double gbs = 8.0 * (double)n / med[k] / 1e9;
    std::printf("%-8s %-14s %9lld %2d  %9.3f ns/elem  %8.2f GB/s  best %9.3f ns/elem  x%.2f vs exact\n",
                what.c_str(), vs[k].name.c_str(), (long long)n, nth, ns, gbs, best[k] * 1e9 / (double)n,
                t_exact / med[k]);
  }
  std::fflush(stdout);
}

CpuIsa parse_isa(const std::string& s) {
  if (s == "sse4.2" || s == "sse42") return CpuIsa::sse42;
  if (s == "avx2") return CpuIsa::avx2;
  if (s == "avxvnni") return CpuIsa::avxvnni;
  if (s == "avx512") return CpuIsa::avx512;
  if (s == "neon") return CpuIsa::neon;
  if (s == "neondot") return CpuIsa::neondot;
  if (s == "neoni8mm") return CpuIsa::neoni8mm;
  return CpuIsa::auto_detect;
}

constexpr ExpTier kTiers[] = {ExpTier::exact, ExpTier::quake2, ExpTier::quake1};

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  CLI::App app{"kestrel exp tier benchmark"};
  app.add_option("-t,--threads", o.threads, "thread counts (default 1 2)");
  app.add_option("-n,--sizes", o.sizes, "element counts (default 4096 16777216)");
  app.add_option("--filter", o.filter, "only cases whose name contains this (exp, softmax, gelu, silu)");
  app.add_option("--isa", o.isa, "cpu variant: auto, sse4.2, avx2, avx512, neon");
  app.add_option("--reps", o.reps, "timed samples per variant (median reported)")->check(CLI::Range(1, 1000));
  CLI11_PARSE(app, argc, argv);

  CpuIsa isa = parse_isa(o.isa);
  if (isa == CpuIsa::auto_detect) {
    CpuIsa best[8];
    if (cpu_isa_available(best, 8) == 0) {
      std::fprintf(stderr, "bench_exp: no SIMD cpu variant runs here\n");
      return 1;
    }
    isa = best[0];
  }
  std::printf("# bench_exp: cpu variant %s; ratios are exact-tier median time / this row's median time\n",
              cpu_isa_name(isa));
  std::printf("# %-6s %-14s %9s %2s\n", "case", "variant", "n", "th");

  const int max_threads = *std::max_element(o.threads.begin(), o.threads.end());
  ThreadPool pool(max_threads);
  std::mt19937 rng(1);
  for (int64_t n : o.sizes) {
    Buf x(n), y(n), xs(n);
    if (!x.p || !y.p || !xs.p) {
      std::fprintf(stderr, "bench_exp: out of memory for %lld elements\n", (long long)n);
      return 1;
    }
    std::uniform_real_distribution<float> u(-10.0f, 10.0f);
    for (int64_t i = 0; i < n; ++i) x.p[i] = u(rng);
    for (int nth : o.threads) {
      auto want = [&](const char* c) { return o.filter.empty() || std::string(c).find(o.filter) != std::string::npos; };
      // ---- exp alone: split into nth chunks on the pool.
      if (want("exp")) {
        auto chunks = [&](auto&& f) {
          pool.run(nth, [&](int ith, int nt) {
            int64_t b, e;
            ThreadPool::split(n, ith, nt, &b, &e);
            if (b < e) f(b, e);
          });
        };
        std::vector<Variant> vs;
        vs.push_back({"std::exp", [&] {
                        chunks([&](int64_t b, int64_t e) {
                          for (int64_t i = b; i < e; ++i) y.p[i] = std::exp(x.p[i]);
                        });
                      }});
        for (ExpTier t : kTiers) {
          const std::string name = t == ExpTier::exact ? "xsimd::exp" : exp_tier_name(t);
          vs.push_back({name,
                        [&, t] {
                          chunks([&](int64_t b, int64_t e) { (void)cpu_exp_row(isa, t, x.p + b, y.p + b, e - b); });
                        },
                        t == ExpTier::exact});
        }
        time_case(o, "exp", n, nth, vs);
      }
      // ---- the ops on the cpu backend (and the scalar ref backend as a
      // std::exp-class baseline where it is affordable).
      BackendOptions bo;
      bo.isa = isa;
      bo.n_threads = nth;
      bo.pool = &pool;
      auto cpu = backend_cpu().create(bo);
      auto ref = backend_ref().create({});
      if (!cpu || !ref) {
        std::fprintf(stderr, "bench_exp: cannot create the backends\n");
        return 1;
      }
      // softmax rows of 4096 (one row in cache, 4096 rows out of cache);
      // gelu / silu rows of 256 (in cache) or 4096, so 2 threads have rows to share.
      struct OpCase {
        const char* name;
        OpId op;
        int64_t row;
      };
      const OpCase ops[] = {{"softmax", OpId::softmax, std::min<int64_t>(n, 4096)},
                            {"gelu", OpId::gelu, std::min<int64_t>(n, n <= 4096 ? 256 : 4096)},
                            {"silu", OpId::silu, std::min<int64_t>(n, n <= 4096 ? 256 : 4096)}};
      for (const OpCase& oc : ops) {
        if (!want(oc.name)) continue;
        Tensor tx = make_tensor(DType::F32, x.p, oc.row, n / oc.row);
        Tensor ty = make_tensor(DType::F32, y.p, oc.row, n / oc.row);
        std::vector<SoftmaxParams> sp(3);
        std::vector<GeluParams> gp(3);
        std::vector<SiluParams> lp(3);
        for (int k = 0; k < 3; ++k) {
          sp[k].exp = gp[k].exp = lp[k].exp = kTiers[k];
        }
        auto call = [&](Backend& b, int k) {
          OpCall c;
          c.op = oc.op;
          c.dst = &ty;
          c.src[0] = &tx;
          c.n_src = 1;
          c.params = oc.op == OpId::softmax ? (const void*)&sp[k] : oc.op == OpId::gelu ? (const void*)&gp[k]
                                                                                       : (const void*)&lp[k];
          if (!b.run(c).ok()) std::fprintf(stderr, "bench_exp: %s failed on %s\n", oc.name, b.name());
        };
        std::vector<Variant> vs;
        if (n <= 4096 && nth == 1)  // the scalar reference (double exp): a baseline, too slow for 16M
          vs.push_back({"ref (scalar)", [&] { call(**ref, 0); }});
        for (int k = 0; k < 3; ++k)
          vs.push_back({exp_tier_name(kTiers[k]), [&, k] { call(**cpu, k); }, k == 0});
        time_case(o, oc.name, n, nth, vs);
      }
    }
  }
  return 0;
}
