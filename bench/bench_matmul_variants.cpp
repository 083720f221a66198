// Named matmul variants against the default policy: for each weight type and activation
// row count M, the median time of every variant of the cpu backend's ISA
// (ops/cpu/matmul_variants.h) and its speed relative to backend.run() (the default
// policy), both measured in the same run with the calls alternating, so drift and other
// load hit both alike. The summary gives, per type, the fastest variant at each M and
// where it changes (the crossovers a scheduler would use).
//
//   bench_matmul_variants                       # every type, M 1 2 3 4 5 8 16 32 64 128, 1 thread
//   bench_matmul_variants -t 2 --types q4_0 f16 --rows 1 4 64 -K 2048 -N 5632
//   bench_matmul_variants --list                # names, policy row ranges, bits groups
//   bench_matmul_variants --isa avx2            # another ISA variant this CPU runs
// Timing runs on a shared machine: flock /tmp/kestrel-timing.lock bench_matmul_variants
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ops/backend.h"
#include "ops/cpu/matmul_variants.h"
#include "ops/ref/quant.h"
#include "bench/bench_weights.h"

using namespace kestrel;
using kestrel::bench::make_weight;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double fastest(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

struct Opts {
  std::vector<int> threads{1};
  std::vector<std::string> types;
  std::vector<int64_t> rows{1, 2, 3, 4, 5, 8, 16, 32, 64, 128};
  int64_t K = 2048, N = 2048;
  int reps = 7;
  int rotate_mb = 256;
  bool list = false;
  std::string isa;  // "" = the best this CPU runs
};

std::vector<const MatmulVariant*> variants_of(CpuIsa isa, DType w) {
  const MatmulVariant* v[kMaxMatmulVariants];
  const int n = std::min(cpu_matmul_variants(isa, w, v, kMaxMatmulVariants), kMaxMatmulVariants);
  std::vector<const MatmulVariant*> out;
  for (int i = 0; i < n; ++i)
    if (v[i]->available()) out.push_back(v[i]);
  return out;
}

struct Best {
  int64_t M;
  const MatmulVariant* v;
  double speed;  // default time / its time
};

void print_best(const char* what, const std::vector<Best>& best) {
  std::printf("  fastest per M (%s):", what);
  for (const Best& b : best) std::printf(" %ld:%s(%.2fx)", (long)b.M, std::strrchr(b.v->name, '_') + 1, b.speed);
  std::printf("\n");
}

void bench_type(const Opts& o, Backend& cpu, CpuIsa isa, int threads, DType type) {
  const auto vs = variants_of(isa, type);
  if (vs.empty()) return;
  const int64_t K = o.K / dtype_block_size(type) * dtype_block_size(type), N = o.N;
  if (K == 0) return;
  // Cycle through copies of W (>= rotate_mb in all) so that, as in a model's forward pass,
  // a weight matrix is not still in the LLC when it is used again.
  const auto w = make_weight(type, K, N);
  const size_t n_copies = std::max<size_t>(1, std::min<size_t>(64, (size_t(o.rotate_mb) << 20) / w.size() + 1));
  std::vector<uint8_t> copies(w.size() * n_copies);
  for (size_t i = 0; i < n_copies; ++i) std::memcpy(copies.data() + i * w.size(), w.data(), w.size());
  size_t next = 0;
  std::vector<Best> best, best_b;
  for (int64_t M : o.rows) {
    std::vector<float> x(static_cast<size_t>(K * M)), y(static_cast<size_t>(N * M));
    std::mt19937 rng(2);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (auto& v : x) v = dist(rng);
    Tensor xt = make_tensor(DType::F32, x.data(), K, M), yt = make_tensor(DType::F32, y.data(), N, M);
    // One call: variant i, or the default policy for i < 0. Returns seconds.
    auto call = [&](int i) {
      Tensor wt = make_tensor(type, copies.data() + (next++ % n_copies) * w.size(), K, N);
      OpCall c{OpId::matmul, &yt, {&wt, &xt}, 2, nullptr};
      const double t0 = now_s();
      const Status st = i < 0 ? cpu.run(c) : cpu_run_matmul_variant(cpu, c, *vs[static_cast<size_t>(i)]);
      const double t = now_s() - t0;
      if (!st.ok()) {
        std::fprintf(stderr, "matmul failed: %s\n", st.to_string().c_str());
        std::exit(1);
      }
      return t;
    };
    const int nv = static_cast<int>(vs.size());
    for (int i = -1; i < nv; ++i) call(i);  // warm-up
    // Alternate: each repetition times the default and every variant once, in a fresh
    // random order, so no one always runs right after the same other (a call after one that
    // used the same unit, e.g. AMX tiles, finds it warm).
    std::vector<double> t_def;
    std::vector<std::vector<double>> t_var(vs.size());
    std::vector<int> order;
    for (int i = -1; i < nv; ++i) order.push_back(i);
    std::mt19937 shuffle_rng(3);
    for (int r = 0; r < o.reps; ++r) {
      std::shuffle(order.begin(), order.end(), shuffle_rng);
      for (int i : order) {
        const double t = call(i);
        if (i < 0) t_def.push_back(t);
        else t_var[static_cast<size_t>(i)].push_back(t);
      }
    }
    const double d = median(t_def), db = fastest(t_def);
    const MatmulVariant* pick = cpu_matmul_policy_variant(isa, type, M);
    Best b{M, nullptr, 0}, bb{M, nullptr, 0};
    std::printf("%-5s M %4ld  %-34s %9.3f ms %5s  best %9.3f ms\n", dtype_name(type), (long)M, "default", d * 1e3, "",
                db * 1e3);
    for (int i = 0; i < nv; ++i) {
      const double t = median(t_var[static_cast<size_t>(i)]), tb = fastest(t_var[static_cast<size_t>(i)]);
      const MatmulVariant* v = vs[static_cast<size_t>(i)];
      std::printf("              %-34s %9.3f ms %5.2fx best %9.3f ms %5.2fx%s\n", v->name, t * 1e3, d / t, tb * 1e3,
                  db / tb, v == pick ? "  (policy)" : "");
      if (d / t > b.speed) b = Best{M, v, d / t};
      if (db / tb > bb.speed) bb = Best{M, v, db / tb};
    }
    best.push_back(b);
    best_b.push_back(bb);
    std::fflush(stdout);
  }
  std::printf("%s, %d thread%s, K %ld N %ld\n", dtype_name(type), threads, threads > 1 ? "s" : "", (long)K, (long)N);
  print_best("medians", best);
  print_best("best runs", best_b);
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  CLI::App app{"kestrel matmul variants against the default policy"};
  app.add_option("-t,--threads", o.threads, "thread counts to run (default 1)");
  app.add_option("--types", o.types, "weight types (default all), e.g. q4_0 q4_K f16");
  app.add_option("--rows", o.rows, "activation rows M")->check(CLI::Range(int64_t(1), int64_t(4096)));
  app.add_option("-K", o.K, "elements per weight row (rounded down to the type's block)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  app.add_option("-N", o.N, "weight rows")->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  app.add_option("--reps", o.reps, "timed repetitions (median reported)")->check(CLI::Range(1, 10000));
  app.add_option("--rotate-mb", o.rotate_mb, "weights cycle through copies totalling this many MiB")
      ->check(CLI::Range(0, 65536));
  app.add_option("--isa", o.isa, "ISA variant: sse4.2, avx2, avx512, neon (default: the best here)");
  app.add_flag("--list", o.list, "print the variants of the ISA and exit");
  CLI11_PARSE(app, argc, argv);

  std::vector<DType> types;
  for (DType t : kWeightTypes)
    if (o.types.empty() || std::find(o.types.begin(), o.types.end(), dtype_name(t)) != o.types.end())
      types.push_back(t);

  CpuIsa want = CpuIsa::auto_detect;
  for (CpuIsa i : kCpuIsas)
    if (o.isa == cpu_isa_name(i)) want = i;
  if (!o.isa.empty() && want == CpuIsa::auto_detect) {
    std::fprintf(stderr, "unknown ISA %s\n", o.isa.c_str());
    return 1;
  }
  for (int threads : o.threads) {
    auto cpu = backend_cpu().create(BackendOptions{.n_threads = threads, .isa = want});
    if (!cpu) {
      std::fprintf(stderr, "cannot create the cpu backend: %s\n", cpu.status().to_string().c_str());
      return 1;
    }
    CpuIsa isa = CpuIsa::scalar;
    cpu_backend_isa(*cpu.value(), &isa);
    if (o.list) {
      std::printf("%-34s %-9s %s\n", "variant", "rows", "bits group");
      for (DType t : types)
        for (const MatmulVariant* v : variants_of(isa, t)) {
          char range[32] = "-";
          if (v->max_rows >= 1) {
            if (v->max_rows == kRowsUnbounded) std::snprintf(range, sizeof range, "%d+", v->min_rows);
            else std::snprintf(range, sizeof range, "%d-%d", v->min_rows, v->max_rows);
          }
          std::printf("%-34s %-9s %d\n", v->name, range, v->bits_group);
        }
      return 0;
    }
    std::printf("%s, %d thread%s, K %ld N %ld, median and best of %d alternating runs; speed = default time / variant time\n\n",
                cpu.value()->name(), threads, threads > 1 ? "s" : "", (long)o.K, (long)o.N, o.reps);
    for (DType t : types) bench_type(o, *cpu.value(), isa, threads, t);
  }
  return 0;
}
