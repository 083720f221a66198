// AMX matmul benchmark: ops/cpu/amx against the cpu backend's matmul without it (the
// policy's pick for M among its ISA's own variants, e.g. q4_0_matmul__avx512_tile4x2; the
// backend's run() takes AMX from amx_min_rows()), measured in the same run, alternating call by call, for
// Q8_0 / Q4_0 / Q5_0 / Q4_K / Q6_K weights (and F16 / BF16 / F32 on the bf16 tiles, against the
// avx512 GEMM) at the matmul shapes (N x K) of TinyLlama-1.1B (2048 x 2048,
// 5632 x 2048, 2048 x 5632) and Qwen2.5-0.5B (896 x 896, 4864 x 896) and activation rows
// M = 1 .. 512. Prints per case the median time of each, GFLOP/s and the speed-up
// (cpu time / amx time); then per type, shape and thread count the crossover: the
// smallest M of the list from which AMX is faster at every larger M. The fixed cost per
// call (the weight repack, which AMX pays once per call whatever M is) is estimated from
// the M = 16 and 32 times as 2 t(16) - t(32).
// Weights cycle through copies (>= --rotate-mb in all) so they come from DRAM as in a model.
//
//   flock /tmp/kestrel-timing.lock bench_amx_matmul            # every case, 1 and 2 threads
//   bench_amx_matmul -t 1 --types q4_0 --batches 16 128 --json
#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ops/backend.h"
#include "ops/cpu/amx/amx_matmul.h"
#include "ops/cpu/matmul_variants.h"
#include "ops/ref/quant.h"
#include "bench/bench_weights.h"
#include "platform/amx.h"
#include "platform/thread_pool.h"

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

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

struct Opts {
  std::vector<int> threads{1, 2};
  std::vector<std::string> types{"q8_0", "q4_0", "q5_0", "q4_K"};
  std::vector<int64_t> batches{1, 4, 8, 16, 32, 64, 128, 512};
  int reps = 5;
  int rotate_mb = 256;
  bool json = false;
};

struct ShapeNK {
  const char* model;
  int64_t N, K;
};
constexpr ShapeNK kShapes[] = {
    {"tinyllama", 2048, 2048}, {"tinyllama", 5632, 2048}, {"tinyllama", 2048, 5632},
    {"qwen0.5b", 896, 896},    {"qwen0.5b", 4864, 896},
};

struct Result {
  double t_amx, t_cpu;
};

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  CLI::App app{"AMX matmul vs the cpu backend's matmul"};
  app.add_option("-t,--threads", o.threads, "thread counts (default 1 2)");
  app.add_option("--types", o.types, "weight types (default q8_0 q4_0 q5_0 q4_K; also q6_K, and f16 bf16 f32: bf16 tiles)");
  app.add_option("--batches", o.batches, "activation rows M (default 1 4 8 16 32 64 128 512)")
      ->check(CLI::Range(int64_t(1), int64_t(4096)));
  app.add_option("--reps", o.reps, "timed calls of each kernel per case (median reported)")->check(CLI::Range(1, 1000));
  app.add_option("--rotate-mb", o.rotate_mb, "weights cycle through copies totalling this many MiB")
      ->check(CLI::Range(0, 65536));
  app.add_flag("--json", o.json, "one JSON object per case per line");
  CLI11_PARSE(app, argc, argv);

  if (!cpu::amx_available()) {
    std::printf("# bench_amx_matmul: AMX-INT8 not available (%s); nothing to measure\n", amx_state().reason);
    return 0;
  }
  std::printf("# bench_amx_matmul: amx vs the cpu backend's policy variant without amx; ratio = its median / amx median "
              "(> 1: amx faster)\n");
  std::map<std::string, std::map<int64_t, Result>> results;  // "type shape tN" -> M -> times
  for (const std::string& tname : o.types) {
    DType type{};
    bool found = false;
    for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q5_0, DType::Q4_K, DType::Q6_K, DType::F16, DType::BF16, DType::F32})
      if (tname == dtype_name(t)) type = t, found = true;
    if (!found) {
      std::fprintf(stderr, "--types: %s is not one of q8_0 q4_0 q5_0 q4_K q6_K f16 bf16 f32\n", tname.c_str());
      return 2;
    }
    for (const ShapeNK& s : kShapes) {
      if (s.K % dtype_block_size(type) != 0) {  // e.g. K = 896 has no whole 256-blocks
        std::printf("%-5s %-9s N=%-5ld K=%-5ld  skipped: K is not a multiple of the block size\n", tname.c_str(),
                    s.model, (long)s.N, (long)s.K);
        continue;
      }
      const auto w = make_weight(type, s.K, s.N);
      const size_t n_copies = std::max<size_t>(1, std::min<size_t>(64, (size_t(o.rotate_mb) << 20) / w.size() + 1));
      std::vector<uint8_t> copies(w.size() * n_copies);
      for (size_t i = 0; i < n_copies; ++i) std::memcpy(copies.data() + i * w.size(), w.data(), w.size());
      for (int threads : o.threads) {
        ThreadPool pool(threads);
        auto cpu_b = backend_cpu().create(BackendOptions{.n_threads = threads, .pool = &pool});
        if (!cpu_b) {
          std::fprintf(stderr, "cpu backend: %s\n", cpu_b.status().to_string().c_str());
          return 1;
        }
        Backend& cpu = **cpu_b;
        CpuIsa isa = CpuIsa::auto_detect;
        if (!cpu_backend_isa(cpu, &isa)) return 1;
        cpu::Exec exec(&pool, threads);
        for (int64_t M : o.batches) {
          std::vector<float> x(static_cast<size_t>(s.K * M)), y(static_cast<size_t>(s.N * M));
          std::mt19937 rng(2);
          std::normal_distribution<float> dist(0.0f, 1.0f);
          for (auto& v : x) v = dist(rng);
          Tensor tw = make_tensor(type, copies.data(), s.K, s.N), tx = make_tensor(DType::F32, x.data(), s.K, M),
                 ty = make_tensor(DType::F32, y.data(), s.N, M);
          OpCall call{OpId::matmul, &ty, {&tw, &tx}, 2, nullptr};
          size_t next = 0;
          bool ok = true;
          auto run_amx = [&] {
            tw.data = copies.data() + (next++ % n_copies) * w.size();
            ok = ok && cpu::amx_matmul(call, exec);
          };
          // The policy's pick among the ISA's own variants (the AMX ones come first).
          const MatmulVariant* base = nullptr;
          {
            const MatmulVariant* vs[kMaxMatmulVariants];
            const int nv = cpu_matmul_variants(isa, type, vs, kMaxMatmulVariants);
            const cpu::MatmulVariantList amx = cpu::matmul_variants_amx();
            for (int i = 0; i < nv && i < kMaxMatmulVariants && !base; ++i) {
              const bool is_amx = vs[i] >= amx.v && vs[i] < amx.v + amx.n;
              if (!is_amx && vs[i]->available() && M >= vs[i]->min_rows && M <= vs[i]->max_rows) base = vs[i];
            }
          }
          if (!base) return 1;
          auto run_cpu = [&] {
            tw.data = copies.data() + (next++ % n_copies) * w.size();
            ok = ok && cpu_run_matmul_variant(cpu, call, *base).ok();
          };
          run_amx();  // warm-up: scratch growth, page faults, tile state
          run_cpu();
          std::vector<double> ta, tc;
          for (int r = 0; r < o.reps; ++r) {  // alternating, so drift affects both alike
            double t0 = now_s();
            run_amx();
            ta.push_back(now_s() - t0);
            t0 = now_s();
            run_cpu();
            tc.push_back(now_s() - t0);
          }
          if (!ok) {
            std::fprintf(stderr, "%s M=%ld: a run failed\n", tname.c_str(), (long)M);
            return 1;
          }
          const double t_amx = median(ta), t_cpu = median(tc);
          const double flop = 2.0 * M * s.K * s.N;
          const std::string key = fmt("%s %ldx%ld t%d", tname.c_str(), (long)s.N, (long)s.K, threads);
          results[key][M] = {t_amx, t_cpu};
          if (o.json)
            std::printf("{\"type\":\"%s\",\"model\":\"%s\",\"N\":%ld,\"K\":%ld,\"M\":%ld,\"threads\":%d,"
                        "\"baseline\":\"%s\",\"amx_us\":%.2f,\"cpu_us\":%.2f,\"amx_gflop_s\":%.2f,"
                        "\"cpu_gflop_s\":%.2f,\"ratio\":%.3f}\n",
                        tname.c_str(), s.model, (long)s.N, (long)s.K, (long)M, threads, base->name, t_amx * 1e6,
                        t_cpu * 1e6, flop / t_amx * 1e-9, flop / t_cpu * 1e-9, t_cpu / t_amx);
          else
            std::printf("%-5s %-9s N=%-5ld K=%-5ld M=%-4ld t%d  amx %10.1f us %7.1f GFLOP/s   %-28s %10.1f us %7.1f "
                        "GFLOP/s   ratio %5.2fx\n",
                        tname.c_str(), s.model, (long)s.N, (long)s.K, (long)M, threads, t_amx * 1e6,
                        flop / t_amx * 1e-9, base->name, t_cpu * 1e6, flop / t_cpu * 1e-9, t_cpu / t_amx);
          std::fflush(stdout);
        }
      }
    }
  }
  // Crossover: the smallest listed M from which amx is faster at every larger listed M.
  std::printf("# crossover (smallest M with amx faster there and at every larger M) and fixed cost per call\n");
  for (const auto& [key, byM] : results) {
    int64_t cross = -1;
    for (auto it = byM.rbegin(); it != byM.rend() && it->second.t_amx < it->second.t_cpu; ++it) cross = it->first;
    std::string fixed = "n/a";
    if (byM.count(16) && byM.count(32))
      fixed = fmt("%.1f us", (2 * byM.at(16).t_amx - byM.at(32).t_amx) * 1e6);
    if (cross > 0) std::printf("# %-24s crossover M=%ld   amx fixed cost ~ %s\n", key.c_str(), (long)cross, fixed.c_str());
    else std::printf("# %-24s amx never faster at the largest M   amx fixed cost ~ %s\n", key.c_str(), fixed.c_str());
  }
  return 0;
}
