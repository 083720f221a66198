// Kronecker-sparse matmul benchmark: the ks_matmul kernel (cpu backend) against the two
// baselines, measured in the same run on the same inputs, for every pattern of
// bench/ks_patterns.h at batch sizes 1, 16 (token_major layout) and 128, 4096
// (batch_last layout):
//   bmm:   the prior method: permute x so that each block's inputs are contiguous, one
//          Eigen GEMM per block (a*d of them, threads over blocks), permute the outputs
//          back, on the kernel's weights as they are stored (a GEMM operand either way,
//          no copy). Measured twice at batch_last sizes: in the token-major layout that a
//          model's activations have without the layout change ("bmm" column: element
//          gathers and scatters, as the prior method runs), and in the kernel's own
//          batch_last layout ("bmm_bl" column: the permutes become row copies; the strict
//          same-layout comparison). At token_major sizes both are the same run.
//   dense: one Eigen GEMM with the materialized (a*b*d) x (a*c*d) matrix (zeros included),
//          threads inside Eigen.
// Methods run interleaved, round after round, so a noisy machine slows all alike; each
// time is the median over rounds of a run that follows an untimed run of the same method
// (caches warm for each method alike; --stat min takes the best round instead). Cases
// over --max-gflop (KS work) or --dense-gflop (dense work) are skipped and marked in the
// CSV. F32 weights and activations throughout.
//
//   bench_ks_matmul                              # all patterns, 1 thread, ks_matmul.csv
//   bench_ks_matmul -t 2 --batches 1,128 --csv out.csv --isa avx512
//   gnuplot -e "csv='ks_matmul.csv'; png='ks_matmul.png'" bench/ks_plot.gp
//
// This translation unit targets AVX2+FMA on x86-64: the bench target gets no ISA flags,
// and Eigen picks its SIMD code from the predefined ISA macros, so without this the
// baselines would run SSE2 code against the kernel's AVX2 variant. It checks the CPU
// before running.
#if defined(__x86_64__) && !defined(__AVX2__)
#pragma GCC target("avx2,fma,f16c")
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <eigen3/Eigen/Dense>  // the bench target has no Eigen include dir of its own

#include "bench/ks_patterns.h"
#include "ops/backend.h"

using namespace kestrel;

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ColMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
using RowMap = Eigen::Map<RowMat>;
using CRowMap = Eigen::Map<const RowMat>;
using CColMap = Eigen::Map<const ColMat>;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Case {
  bench::KsPattern p;
  int64_t M;
  bool tm;  // token_major (else batch_last)
  int64_t n_in() const { return int64_t(p.a) * p.c * p.d; }
  int64_t n_out() const { return int64_t(p.a) * p.b * p.d; }
  int64_t nnz() const { return int64_t(p.a) * p.b * p.c * p.d; }
};

// The prior method: permute, one GEMM per block, permute back (threads over blocks).
struct Bmm {
  std::vector<float> xp, yp;
  void run(const Case& cs, const float* w, const float* x, float* y, int threads) {
    const int64_t a = cs.p.a, b = cs.p.b, c = cs.p.c, d = cs.p.d, M = cs.M, n_in = cs.n_in(), n_out = cs.n_out();
    const int64_t nblk = a * d;
    xp.resize((size_t)(n_in * M));
    yp.resize((size_t)(n_out * M));
    float* xpp = xp.data();
    float* ypp = yp.data();
    if (cs.tm) {
      // x[m][(i*c + l)*d + j] -> xp[(i*d + j)][m][l]; Yp_ij (M x b) = Xp_ij (M x c) W_ij (c x b).
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int64_t blk = 0; blk < nblk; ++blk) {
        const int64_t i = blk / d, j = blk % d;
        for (int64_t m = 0; m < M; ++m)
          for (int64_t l = 0; l < c; ++l) xpp[(blk * M + m) * c + l] = x[m * n_in + (i * c + l) * d + j];
        RowMap(ypp + blk * M * b, M, b).noalias() =
            CRowMap(xpp + blk * M * c, M, c) * CRowMap(w + blk * c * b, c, b);
        for (int64_t m = 0; m < M; ++m)
          for (int64_t k = 0; k < b; ++k) y[m * n_out + (i * b + k) * d + j] = ypp[(blk * M + m) * b + k];
      }
    } else {
      // Rows (features) of M tokens: x row (i*c + l)*d + j -> xp row blk*c + l;
      // Yp_ij (b x M) = W_ij^T (b x c, the [l][k] storage read column-major) Xp_ij (c x M).
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int64_t blk = 0; blk < nblk; ++blk) {
        const int64_t i = blk / d, j = blk % d;
        for (int64_t l = 0; l < c; ++l)
          std::memcpy(xpp + (blk * c + l) * M, x + ((i * c + l) * d + j) * M, (size_t)M * sizeof(float));
        RowMap(ypp + blk * b * M, b, M).noalias() =
            CColMap(w + blk * c * b, b, c) * CRowMap(xpp + blk * c * M, c, M);
        for (int64_t k = 0; k < b; ++k)
          std::memcpy(y + ((i * b + k) * d + j) * M, ypp + (blk * b + k) * M, (size_t)M * sizeof(float));
      }
    }
  }
};

// Dense GEMM with the materialized matrix D (n_out x n_in, row-major).
void dense_run(const Case& cs, const RowMat& D, const float* x, float* y) {
  if (cs.tm) RowMap(y, cs.M, cs.n_out()).noalias() = CRowMap(x, cs.M, cs.n_in()) * D.transpose();
  else RowMap(y, cs.n_out(), cs.M).noalias() = D * CRowMap(x, cs.n_in(), cs.M);
}

double rel_rms(const std::vector<float>& y, const std::vector<float>& r) {
  double e = 0, s = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    e += (double(y[i]) - r[i]) * (double(y[i]) - r[i]);
    s += double(r[i]) * r[i];
  }
  return s > 0 ? std::sqrt(e / s) : std::sqrt(e);
}

struct Options {
  int threads = 1;
  std::vector<int64_t> batches{1, 16, 128, 4096};
  double min_time_s = 0.1;  // per method per case
  int min_rounds = 3, max_rounds = 25;
  double max_gflop = 4.0, dense_gflop = 2.0;
  std::string csv = "ks_matmul.csv";
  int limit = 0;  // patterns (0 = all)
  std::vector<int> only;  // one pattern a,b,c,d (empty = all)
  // The kernel's ISA variant: avx2 by default, the ISA the Eigen baselines are compiled
  // for here, so that an AVX-512 machine does not compare 512-bit kernels to 256-bit GEMMs.
  std::string isa = "avx2";
  // Per-method statistic over the rounds: median (default), or min, the best round,
  // for a loaded machine where calls longer than a scheduler slice are preempted at
  // random (the median of a 2 ms call there can be twice its min, for any method).
  std::string stat = "median";
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"kestrel Kronecker-sparse matmul benchmark: kernel vs permute+bmm vs dense"};
  app.add_option("-t,--threads", o.threads, "threads for every method")->check(CLI::Range(1, 256));
  app.add_option("--batches", o.batches, "batch sizes (1..16: token_major, more: batch_last)")->delimiter(',');
  app.add_option("--min-time", o.min_time_s, "seconds per method per case (more rounds until reached)");
  app.add_option("--max-gflop", o.max_gflop, "skip cases whose KS work exceeds this (GFLOP per call)");
  app.add_option("--dense-gflop", o.dense_gflop, "skip the dense baseline above this (GFLOP per call)");
  app.add_option("--csv", o.csv, "CSV output path");
  app.add_option("--limit", o.limit, "only the first N patterns");
  app.add_option("--max-rounds", o.max_rounds, "most rounds per case (default 25)")->check(CLI::Range(1, 1000000));
  app.add_option("--pattern", o.only, "only this pattern: a,b,c,d (for profiling)")->delimiter(',')->expected(4);
  app.add_option("--stat", o.stat, "per-method statistic over rounds: median or min (best round)")
      ->check(CLI::IsMember({"median", "min"}));
  app.add_option("--isa", o.isa, "kernel variant: auto, sse42, avx2 (default: the baselines' ISA), avx512, neon");
  CLI11_PARSE(app, argc, argv);
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    std::fprintf(stderr, "bench_ks_matmul: this build of the benchmark needs AVX2 and FMA\n");
    return 2;
  }
#endif
  CpuIsa isa = CpuIsa::auto_detect;
  for (CpuIsa v : kCpuIsas)
    if (o.isa == cpu_isa_name(v)) isa = v;
  if (o.isa == "sse42") isa = CpuIsa::sse42;
#if !defined(__x86_64__)
  if (o.isa == "avx2") isa = CpuIsa::auto_detect;  // the default names an x86 variant
#endif
  auto cpu = backend_cpu().create(BackendOptions{o.threads, nullptr, isa, 0});
  if (!cpu) {
    std::fprintf(stderr, "cpu backend: %s\n", cpu.status().to_string().c_str());
    return 1;
  }
  Eigen::setNbThreads(o.threads);
  FILE* csv = std::fopen(o.csv.c_str(), "w");
  if (!csv) {
    std::fprintf(stderr, "cannot write %s\n", o.csv.c_str());
    return 1;
  }
  std::fprintf(csv, "a,b,c,d,batch,layout,h,density,t_kernel_us,t_bmm_us,t_dense_us,speedup_bmm,speedup_dense,"
                    "kernel_gflops,max_rel_err,t_bmm_bl_us,speedup_bmm_bl\n");
  std::printf("backend %s, %d thread(s); times are %ss in microseconds\n", (*cpu)->name(), o.threads, o.stat.c_str());
  std::printf("%-20s %5s %-11s %7s %7s %9s %9s %9s %9s %6s %6s %7s %7s\n", "pattern(a,b,c,d)", "batch", "layout",
              "h", "density", "kernel", "bmm", "bmm_bl", "dense", "x bmm", "x bmmbl", "x dense", "GFLOP/s");

  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  struct Ratio {
    std::vector<double> bmm, bmm_bl, dense;
    int sparse_total = 0, sparse_wins = 0;  // density <= 1/4 vs dense
  };
  std::vector<Ratio> ratios(o.batches.size());
  int n_pat = 0;
  for (const bench::KsPattern& bp : bench::kKsPatterns) {
    if (o.limit > 0 && n_pat >= o.limit) break;
    if (!o.only.empty() && (o.only[0] != bp.a || o.only[1] != bp.b || o.only[2] != bp.c || o.only[3] != bp.d)) continue;
    ++n_pat;
    // Weights [i][j][l][k] and the dense matrix they define.
    Case base{bp, 1, true};
    std::vector<float> w((size_t)base.nnz());
    for (float& v : w) v = u(rng);
    RowMat D;
    bool have_dense = false;
    Tensor tw = make_tensor(DType::F32, w.data(), bp.b, bp.c, bp.d, bp.a);
    for (size_t bi = 0; bi < o.batches.size(); ++bi) {
      const int64_t M = o.batches[bi];
      const Case cs{bp, M, M <= 16};
      const double ks_gflop = 2e-9 * double(cs.nnz()) * double(M);
      const double dense_gflop = 2e-9 * double(cs.n_in()) * double(cs.n_out()) * double(M);
      const double h = double(bp.b + bp.c) / (double(bp.b) * bp.c);
      const double density = 1.0 / (double(bp.a) * bp.d);
      char name[48];
      std::snprintf(name, sizeof name, "(%d,%d,%d,%d)", bp.a, bp.b, bp.c, bp.d);
      const char* layout = cs.tm ? "token_major" : "batch_last";
      if (ks_gflop > o.max_gflop) {
        std::printf("%-20s %5lld %-11s skipped: %.1f GFLOP > --max-gflop\n", name, (long long)M, layout, ks_gflop);
        std::fprintf(csv, "%d,%d,%d,%d,%lld,%s,%.6g,%.6g,,,,,,,,,\n", bp.a, bp.b, bp.c, bp.d, (long long)M, layout, h,
                     density);
        continue;
      }
      const bool run_dense = dense_gflop <= o.dense_gflop;
      if (run_dense && !have_dense) {
        D = RowMat::Zero(cs.n_out(), cs.n_in());
        for (int64_t i = 0; i < bp.a; ++i)
          for (int64_t j = 0; j < bp.d; ++j)
            for (int64_t l = 0; l < bp.c; ++l)
              for (int64_t k = 0; k < bp.b; ++k)
                D((i * bp.b + k) * bp.d + j, (i * bp.c + l) * bp.d + j) = w[(((i * bp.d + j) * bp.c + l) * bp.b + k)];
        have_dense = true;
      }
      std::vector<float> x((size_t)(cs.n_in() * M)), yk((size_t)(cs.n_out() * M)), yb(yk.size()), yd(yk.size());
      for (float& v : x) v = u(rng);
      Tensor tx = cs.tm ? make_tensor(DType::F32, x.data(), cs.n_in(), M) : make_tensor(DType::F32, x.data(), M, cs.n_in());
      Tensor ty = cs.tm ? make_tensor(DType::F32, yk.data(), cs.n_out(), M)
                        : make_tensor(DType::F32, yk.data(), M, cs.n_out());
      const KsMatmulParams kp{bp.a, bp.b, bp.c, bp.d, cs.tm ? KsLayout::token_major : KsLayout::batch_last};
      const OpCall call{OpId::ks_matmul, &ty, {&tw, &tx}, 2, &kp};
      Bmm bmm, bmm_tm;
      // The token-major copy of x the prior method starts from at batch_last sizes.
      std::vector<float> x_tm, y_tm;
      const Case cs_tm{bp, M, true};
      if (!cs.tm) {
        x_tm.resize(x.size());
        y_tm.resize(yk.size());
        for (int64_t f = 0; f < cs.n_in(); ++f)
          for (int64_t m = 0; m < M; ++m) x_tm[(size_t)(m * cs.n_in() + f)] = x[(size_t)(f * M + m)];
      }
      // Warm-up (first touch of every buffer) and a correctness check between methods.
      if (!(*cpu)->run(call).ok()) {
        std::fprintf(stderr, "ks_matmul failed on %s\n", name);
        return 1;
      }
      bmm.run(cs, w.data(), x.data(), yb.data(), o.threads);
      double err = rel_rms(yk, yb);
      if (!cs.tm) {
        bmm_tm.run(cs_tm, w.data(), x_tm.data(), y_tm.data(), o.threads);
        std::vector<float> back(yk.size());
        for (int64_t f = 0; f < cs.n_out(); ++f)
          for (int64_t m = 0; m < M; ++m) back[(size_t)(f * M + m)] = y_tm[(size_t)(m * cs.n_out() + f)];
        err = std::max(err, rel_rms(back, yk));
      }
      if (run_dense) {
        dense_run(cs, D, x.data(), yd.data());
        err = std::max(err, rel_rms(yd, yb));
      }
      std::vector<double> tk, tb, tbt, td;
      // Each timed run follows an untimed run of the same method, so every method is
      // timed with its own data warm in the caches (what it would find when called
      // back to back), not evicted by the method before it (the dense matrix alone is
      // up to 64 MiB).
      auto timed = [](auto&& fn) {
        fn();
        const double t0 = now_s();
        fn();
        return now_s() - t0;
      };
      double spent = 0;
      for (int r = 0; r < o.max_rounds && (r < o.min_rounds || spent < o.min_time_s); ++r) {
        tk.push_back(timed([&] { (void)(*cpu)->run(call); }));
        tb.push_back(timed([&] { bmm.run(cs, w.data(), x.data(), yb.data(), o.threads); }));
        if (!cs.tm) tbt.push_back(timed([&] { bmm_tm.run(cs_tm, w.data(), x_tm.data(), y_tm.data(), o.threads); }));
        if (run_dense) td.push_back(timed([&] { dense_run(cs, D, x.data(), yd.data()); }));
        spent += tk.back();
      }
      // bmm: the prior method in its token-major layout; bmm_bl: in the kernel's layout.
      auto stat = [&](const std::vector<double>& v) {
        return o.stat == "min" ? *std::min_element(v.begin(), v.end()) : median(v);
      };
      const double mk = stat(tk), md = run_dense ? stat(td) : 0.0;
      const double mbl = stat(tb), mb = cs.tm ? mbl : stat(tbt);
      ratios[bi].bmm.push_back(mb / mk);
      ratios[bi].bmm_bl.push_back(mbl / mk);
      if (run_dense) {
        ratios[bi].dense.push_back(md / mk);
        if (density <= 0.25) {
          ratios[bi].sparse_total++;
          ratios[bi].sparse_wins += mk < md;
        }
      }
      char dense_s[32] = "-", xd[16] = "-";
      if (run_dense) {
        std::snprintf(dense_s, sizeof dense_s, "%.1f", md * 1e6);
        std::snprintf(xd, sizeof xd, "%.2f", md / mk);
      }
      std::printf("%-20s %5lld %-11s %7.4f %7.4f %9.1f %9.1f %9.1f %9s %6.2f %6.2f %7s %7.1f%s\n", name, (long long)M,
                  layout, h, density, mk * 1e6, mb * 1e6, mbl * 1e6, dense_s, mb / mk, mbl / mk, xd, ks_gflop / mk,
                  err > 1e-5 ? "  MISMATCH" : "");
      std::fprintf(csv, "%d,%d,%d,%d,%lld,%s,%.6g,%.6g,%.3f,%.3f,%s,%.4f,%s,%.3f,%.3g,%.3f,%.4f\n", bp.a, bp.b, bp.c,
                   bp.d, (long long)M, layout, h, density, mk * 1e6, mb * 1e6, run_dense ? dense_s : "", mb / mk,
                   run_dense ? xd : "", ks_gflop / mk, err, mbl * 1e6, mbl / mk);
      std::fflush(stdout);
      if (err > 1e-5) {
        std::fprintf(stderr, "results differ between methods (relative RMS %.3g)\n", err);
        return 1;
      }
    }
  }
  std::fclose(csv);
  std::printf("\nsummary (%d patterns): median speedup of the kernel over each baseline\n", n_pat);
  for (size_t bi = 0; bi < o.batches.size(); ++bi) {
    const Ratio& r = ratios[bi];
    auto med = [](const std::vector<double>& v) { return v.empty() ? 0.0 : median(v); };
    std::printf("  batch %5lld: x bmm %.2f, x bmm_bl %.2f over %zu cases; x dense %.2f over %zu cases",
                (long long)o.batches[bi], med(r.bmm), med(r.bmm_bl), r.bmm.size(), med(r.dense), r.dense.size());
    std::printf("; faster than dense at density <= 1/4: %d of %d\n", r.sparse_wins, r.sparse_total);
  }
  std::printf("CSV: %s\n", o.csv.c_str());
  return 0;
}
