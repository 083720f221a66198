// Kernel benchmark: matmul per weight type at decode (M = 1) and prompt (M = 128, or --batches) shapes,
// softmax and rms_norm, at 1 and 2 threads (or -t), on the cpu backend's best variant.
// The baseline is measured in the same run: the machine's streaming read bandwidth
// (1 and 2 threads, a buffer far larger than the LLC), and each decode matmul prints its
// fraction of it (weight bytes read per call / time / bandwidth). softmax and rms_norm
// print their speed-up over the ref backend.
//
//   bench_kernels                 # every case, 1 and 2 threads
//   bench_kernels -t 2 --filter q4_K --json
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "ops/backend.h"
#include "ops/ref/quant.h"
#include "bench/bench_weights.h"
#include "platform/aligned_alloc.h"
#include "platform/thread_pool.h"

using namespace kestrel;
using kestrel::bench::make_weight;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median seconds per call of fn over `reps` runs after `warm` warm-up runs; *best gets the
// fastest run (on a shared machine the median includes time slices given to others).
template <typename F>
double time_median(int warm, int reps, F&& fn, double* best = nullptr) {
  for (int i = 0; i < warm; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const double t0 = now_s();
    fn();
    t.push_back(now_s() - t0);
  }
  std::sort(t.begin(), t.end());
  if (best) *best = t[0];
  return t[t.size() / 2];
}

struct Opts {
  std::vector<int> threads{1, 2};
  bool json = false;
  std::string filter;
  int reps = 15;
  int mem_mb = 1024;
  int rotate_mb = 256;
  std::vector<int64_t> batches{1, 128};  // matmul activation rows
};

void emit(const Opts& o, const std::string& json, const std::string& text) {
  if (o.json) std::printf("%s\n", json.c_str());
  else std::printf("%s\n", text.c_str());
  std::fflush(stdout);
}

// Streaming read bandwidth in GB/s with n threads. The buffer (>> LLC) is read in 8 MiB
// chunks, each timed on its own, and the median chunk is reported: the same statistic and
// about the same duration as a decode matmul call, so a busy machine's time slicing
// affects both alike. Every chunk comes from DRAM (it was last read a full buffer ago).
double measure_bandwidth(ThreadPool& pool, int n, const uint64_t* buf, size_t words) {
  constexpr size_t kChunkWords = (size_t(8) << 20) / 8;
  const size_t n_chunks = words / kChunkWords;
  std::vector<uint64_t> sink(64 * 8);
  std::vector<double> times;
  for (int pass = 0; pass < 2; ++pass)
    for (size_t c = 0; c < n_chunks; ++c) {
      const uint64_t* base = buf + c * kChunkWords;
      const double t0 = now_s();
      pool.run(n, [&](int ith, int nth) {
        int64_t b, e;
        ThreadPool::split(static_cast<int64_t>(kChunkWords / 8), ith, nth, &b, &e);
#if defined(__SSE2__)
        // 128-bit loads (baseline on x86-64), 4 independent sums: the loop is load-bound.
        const __m128i* p = reinterpret_cast<const __m128i*>(base);
        __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t i = b * 4; i < e * 4; i += 4) {
          a0 = _mm_add_epi64(a0, _mm_load_si128(p + i));
          a1 = _mm_add_epi64(a1, _mm_load_si128(p + i + 1));
          a2 = _mm_add_epi64(a2, _mm_load_si128(p + i + 2));
          a3 = _mm_add_epi64(a3, _mm_load_si128(p + i + 3));
        }
        const __m128i s = _mm_add_epi64(_mm_add_epi64(a0, a1), _mm_add_epi64(a2, a3));
        sink[static_cast<size_t>(ith) * 8] = static_cast<uint64_t>(_mm_cvtsi128_si64(s));
#else
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (int64_t i = b * 8; i < e * 8; i += 4) {
          s0 += base[i]; s1 += base[i + 1]; s2 += base[i + 2]; s3 += base[i + 3];
        }
        sink[static_cast<size_t>(ith) * 8] = s0 + s1 + s2 + s3;
#endif
      });
      if (pass == 1) times.push_back(now_s() - t0);
    }
  std::sort(times.begin(), times.end());
  return static_cast<double>(kChunkWords * 8) / times[times.size() / 2] * 1e-9;
}

std::unique_ptr<Backend> make_backend(const BackendInfo& info, int threads) {
  auto b = info.create(BackendOptions{.n_threads = threads});
  if (!b) {
    std::fprintf(stderr, "cannot create backend %s: %s\n", info.name, b.status().to_string().c_str());
    return nullptr;
  }
  return std::move(b).value();
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

void bench_matmul(const Opts& o, Backend& cpu, int threads, double bw, DType type, int64_t M, int64_t K,
                  int64_t N) {
  const std::string name = fmt("matmul_%s_%ldx%ldx%ld", dtype_name(type), (long)M, (long)K, (long)N);
  if (!o.filter.empty() && name.find(o.filter) == std::string::npos) return;
  // Decode reads every weight from DRAM once per token: cycle through enough copies of W
  // (>= rotate_mb in all) that none is still in the LLC when it is used again.
  const auto w = make_weight(type, K, N);
  const size_t n_copies = std::max<size_t>(1, std::min<size_t>(64, (size_t(o.rotate_mb) << 20) / w.size() + 1));
  std::vector<uint8_t> copies(w.size() * n_copies);
  for (size_t i = 0; i < n_copies; ++i) std::memcpy(copies.data() + i * w.size(), w.data(), w.size());
  std::vector<float> x(static_cast<size_t>(K * M)), y(static_cast<size_t>(N * M));
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (auto& v : x) v = dist(rng);
  Tensor tw = make_tensor(type, copies.data(), K, N), tx = make_tensor(DType::F32, x.data(), K, M),
         ty = make_tensor(DType::F32, y.data(), N, M);
  OpCall call{OpId::matmul, &ty, {&tw, &tx}, 2, nullptr};
  if (!cpu.supports(call)) {
    emit(o, fmt("{\"case\":\"%s\",\"threads\":%d,\"status\":\"unsupported\"}", name.c_str(), threads),
         fmt("%-34s t%d  unsupported", name.c_str(), threads));
    return;
  }
  size_t next = 0;
  Status st;
  const int reps = M == 1 ? o.reps : std::max(3, o.reps / 4);
  double t_best = 0;
  const double t = time_median(
      2, reps,
      [&] {
        tw.data = copies.data() + (next++ % n_copies) * w.size();
        st = cpu.run(call);
      },
      &t_best);
  if (!st.ok()) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), st.to_string().c_str());
    return;
  }
  const double bytes = static_cast<double>(w.size()) + 4.0 * (x.size() + y.size());
  const double gbs = bytes / t * 1e-9, gflops = 2.0 * M * K * N / t * 1e-9;
  const double frac = gbs / bw;
  if (M == 1) {
    const double frac_best = bytes / t_best * 1e-9 / bw;
    emit(o,
         fmt("{\"case\":\"%s\",\"threads\":%d,\"isa\":\"%s\",\"us\":%.2f,\"best_us\":%.2f,\"gb_s\":%.2f,"
             "\"gflop_s\":%.2f,\"read_bw_gb_s\":%.2f,\"roofline_frac\":%.3f,\"roofline_frac_best\":%.3f}",
             name.c_str(), threads, cpu.name(), t * 1e6, t_best * 1e6, gbs, gflops, bw, frac, frac_best),
         fmt("%-34s t%d %10.1f us %7.2f GB/s %7.2f GFLOP/s  %5.1f%% of read bw (%.1f GB/s); best %.1f us %5.1f%%",
             name.c_str(), threads, t * 1e6, gbs, gflops, 100 * frac, bw, t_best * 1e6, 100 * frac_best));
  } else {
    emit(o,
         fmt("{\"case\":\"%s\",\"threads\":%d,\"isa\":\"%s\",\"us\":%.2f,\"best_us\":%.2f,\"gb_s\":%.2f,"
             "\"gflop_s\":%.2f}",
             name.c_str(), threads, cpu.name(), t * 1e6, t_best * 1e6, gbs, gflops),
         fmt("%-34s t%d %10.1f us %7.2f GB/s %7.2f GFLOP/s; best %.1f us", name.c_str(), threads, t * 1e6, gbs,
             gflops, t_best * 1e6));
  }
}

// One op (softmax or rms_norm) on cpu and on ref; prints cpu time and the ref/cpu ratio.
void bench_rowop(const Opts& o, Backend& cpu, Backend& ref, int threads, OpId op, int64_t n, int64_t rows) {
  const std::string name = fmt("%s_%ldx%ld", op_name(op), (long)n, (long)rows);
  if (!o.filter.empty() && name.find(o.filter) == std::string::npos) return;
  std::vector<float> x(static_cast<size_t>(n * rows)), y(x.size()), w(static_cast<size_t>(n), 1.1f);
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  for (auto& v : x) v = dist(rng);
  Tensor tx = make_tensor(DType::F32, x.data(), n, rows), ty = make_tensor(DType::F32, y.data(), n, rows),
         tw = make_tensor(DType::F32, w.data(), n);
  OpCall call{op, &ty, {&tx, &tw}, op == OpId::rms_norm ? 2 : 1, nullptr};
  if (!cpu.supports(call)) {
    emit(o, fmt("{\"case\":\"%s\",\"threads\":%d,\"status\":\"unsupported\"}", name.c_str(), threads),
         fmt("%-34s t%d  unsupported", name.c_str(), threads));
    return;
  }
  Status st;
  const double t = time_median(3, o.reps, [&] { st = cpu.run(call); });
  const double tr = time_median(1, std::max(3, o.reps / 5), [&] { (void)ref.run(call); });
  if (!st.ok()) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), st.to_string().c_str());
    return;
  }
  const double gbs = 8.0 * n * rows / t * 1e-9;
  emit(o,
       fmt("{\"case\":\"%s\",\"threads\":%d,\"isa\":\"%s\",\"us\":%.2f,\"gb_s\":%.2f,\"ref_us\":%.2f,"
           "\"speedup_vs_ref\":%.2f}",
           name.c_str(), threads, cpu.name(), t * 1e6, gbs, tr * 1e6, tr / t),
       fmt("%-34s t%d %10.1f us %7.2f GB/s   ref %9.1f us  x%.1f", name.c_str(), threads, t * 1e6, gbs, tr * 1e6,
           tr / t));
}

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  CLI::App app{"kestrel kernel benchmark"};
  app.add_option("-t,--threads", o.threads, "thread counts to run (default 1 2)");
  app.add_flag("--json", o.json, "one JSON object per case per line");
  app.add_option("--filter", o.filter, "only cases whose name contains this");
  app.add_option("--reps", o.reps, "timed repetitions per decode case (median reported)")->check(CLI::Range(1, 10000));
  app.add_option("--mem-mb", o.mem_mb, "bandwidth probe buffer size in MiB")->check(CLI::Range(64, 65536));
  app.add_option("--batches", o.batches, "matmul activation rows (default 1 128; e.g. 1 4 9 128)")
      ->check(CLI::Range(int64_t(1), int64_t(4096)));
  app.add_option("--rotate-mb", o.rotate_mb, "matmul weights cycle through copies totalling this many MiB")
      ->check(CLI::Range(0, 65536));
  CLI11_PARSE(app, argc, argv);
  for (int t : o.threads)
    if (t < 1 || t > 1024) {
      std::fprintf(stderr, "--threads: %d is not in [1, 1024]\n", t);
      return 2;
    }

  const size_t words = static_cast<size_t>(o.mem_mb) * (1u << 20) / 8;
  auto* buf = static_cast<uint64_t*>(aligned_alloc_bytes(words * 8, 64));
  if (!buf) {
    std::fprintf(stderr, "cannot allocate %d MiB for the bandwidth probe\n", o.mem_mb);
    return 1;
  }
  for (size_t i = 0; i < words; ++i) buf[i] = i;

  const DType types[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K,
                         DType::Q6_K, DType::Q8_0, DType::F16,  DType::BF16, DType::F32};
  struct MK {
    int64_t K, N;
  };
  const MK shapes[] = {{4096, 4096}, {2048, 5632}};

  for (int threads : o.threads) {
    ThreadPool pool(threads);
    const double bw = measure_bandwidth(pool, threads, buf, words);
    emit(o, fmt("{\"case\":\"read_bandwidth\",\"threads\":%d,\"gb_s\":%.2f,\"buffer_mib\":%d}", threads, bw, o.mem_mb),
         fmt("%-34s t%d %7.2f GB/s (streaming read, %d MiB)", "read_bandwidth", threads, bw, o.mem_mb));
    auto cpu = make_backend(backend_cpu(), threads);
    auto ref = make_backend(backend_ref(), 1);
    if (!cpu || !ref) return 1;
    for (int64_t m : o.batches)
      for (const MK& s : shapes)
        for (DType t : types) bench_matmul(o, *cpu, threads, bw, t, m, s.K, s.N);
    for (int64_t n : {32000, 262144}) bench_rowop(o, *cpu, *ref, threads, OpId::softmax, n, 1);
    for (int64_t rows : {1, 16, 128}) bench_rowop(o, *cpu, *ref, threads, OpId::rms_norm, 4096, rows);
  }
  aligned_free(buf);
  return 0;
}
