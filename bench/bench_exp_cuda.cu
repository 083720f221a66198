// Exp tiers on the GPU: ns per element and GB/s of exp alone, softmax, GELU (tanh
// form) and SiLU with four exp implementations: expf (the exact tier), __expf (the
// hardware approximation, the usual fast baseline), quake2 and quake1 (the tier
// device code of ops/cuda/cuda_exp.cuh). Every variant runs the same kernel
// template, so a ratio measures the exp implementation alone; each row prints its
// speed-up over expf and over __expf, timed in the same run (cudaEvent, median of
// --reps launches, interleaved by variant). The library's softmax kernel
// (launch_softmax) is timed on each tier as well. Sizes: 4096 floats (one row;
// launch-bound) and 16M floats (4096 rows of 4096). GB/s counts 8 bytes per element.
//
//   bench_exp_cuda [--reps 51]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/cuda_exp.cuh"
#include "ops/cuda/cuda_kernels.h"

using namespace kestrel;
using namespace kestrel::cuda;

namespace {

enum class Impl { expf_, fast, quake2, quake1 };
constexpr Impl kImpls[] = {Impl::expf_, Impl::fast, Impl::quake2, Impl::quake1};
const char* impl_name(Impl i) {
  switch (i) {
    case Impl::expf_: return "expf (exact)";
    case Impl::fast: return "__expf";
    case Impl::quake2: return "quake2";
    case Impl::quake1: return "quake1";
  }
  return "?";
}

// exp(s * x) by implementation I.
template <Impl I>
__device__ __forceinline__ float ex(float x, double s) {
  if constexpr (I == Impl::expf_) return exp_scaled<ExpTier::exact>(x, s);
  else if constexpr (I == Impl::fast) return __expf(static_cast<float>(s) * x);
  else if constexpr (I == Impl::quake2) return exp_scaled<ExpTier::quake2>(x, s);
  else return exp_scaled<ExpTier::quake1>(x, s);
}

enum class Kind { exp, gelu, silu, softmax };

template <Impl I, Kind K>
__global__ void elementwise(const float* x, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float v = x[i];
    if constexpr (K == Kind::exp) {
      y[i] = ex<I>(v, 1.0);
    } else if constexpr (K == Kind::silu) {
      y[i] = v / (1.0f + ex<I>(v, -1.0));
    } else {  // GELU, tanh form through exp(2u)
      const float w = v * fmaf(v * v, 0.044715f, 1.0f);
      y[i] = v / (1.0f + ex<I>(w, -(double)(2.0f * 0.7978845608028654f)));
    }
  }
}

// Three-pass row softmax, one block per row (the library kernel's structure).
template <Impl I>
__global__ void softmax_rows(const float* x, float* y, int64_t n, int64_t rows) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, xr[j]);
    mx = block_max(mx, scratch);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) sum += ex<I>(xr[j] - mx, 1.0);
    sum = block_sum(sum, scratch);
    const float inv = 1.0f / sum;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = ex<I>(xr[j] - mx, 1.0) * inv;
    __syncthreads();
  }
}

#define CK(x)                                                                           \
  do {                                                                                  \
    cudaError_t e_ = (x);                                                               \
    if (e_ != cudaSuccess) {                                                            \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

template <Impl I>
void launch(Kind k, const float* x, float* y, int64_t n, int64_t row) {
  if (k == Kind::softmax) {
    const int64_t rows = n / row;
    softmax_rows<I><<<(unsigned)std::min<int64_t>(rows, 65535), 256>>>(x, y, row, rows);
    return;
  }
  const unsigned grid = (unsigned)std::min<int64_t>((n + 255) / 256, 65535);
  switch (k) {
    case Kind::exp: elementwise<I, Kind::exp><<<grid, 256>>>(x, y, n); break;
    case Kind::gelu: elementwise<I, Kind::gelu><<<grid, 256>>>(x, y, n); break;
    default: elementwise<I, Kind::silu><<<grid, 256>>>(x, y, n); break;
  }
}
void launch_impl(Impl i, Kind k, const float* x, float* y, int64_t n, int64_t row) {
  switch (i) {
    case Impl::expf_: launch<Impl::expf_>(k, x, y, n, row); break;
    case Impl::fast: launch<Impl::fast>(k, x, y, n, row); break;
    case Impl::quake2: launch<Impl::quake2>(k, x, y, n, row); break;
    case Impl::quake1: launch<Impl::quake1>(k, x, y, n, row); break;
  }
}

template <typename F>
std::vector<double> time_interleaved(int n_var, int reps, F&& run) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<std::vector<float>> ms(n_var);
  for (int w = 0; w < 3; ++w)
    for (int v = 0; v < n_var; ++v) run(v);
  CK(cudaDeviceSynchronize());
  for (int r = 0; r < reps; ++r)
    for (int v = 0; v < n_var; ++v) {
      CK(cudaEventRecord(a));
      run(v);
      CK(cudaEventRecord(b));
      CK(cudaEventSynchronize(b));
      float t = 0;
      CK(cudaEventElapsedTime(&t, a, b));
      ms[v].push_back(t);
    }
  std::vector<double> med(n_var);
  for (int v = 0; v < n_var; ++v) {
    std::sort(ms[v].begin(), ms[v].end());
    med[v] = ms[v][ms[v].size() / 2] * 1e-3;
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return med;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 51;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--reps") reps = std::max(3, std::atoi(argv[i + 1]));
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("GPU: %s, %d SMs; median of %d launches per variant, interleaved\n", prop.name,
              prop.multiProcessorCount, reps);
  const int64_t big = int64_t(16) << 20;
  std::vector<float> hx(big);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-10.0f, 10.0f);
  for (auto& v : hx) v = dist(rng);
  float *x = nullptr, *y = nullptr;
  CK(cudaMalloc(&x, big * sizeof(float)));
  CK(cudaMalloc(&y, big * sizeof(float)));
  CK(cudaMemcpy(x, hx.data(), big * sizeof(float), cudaMemcpyHostToDevice));

  std::printf("%-8s %9s %-13s %10s %8s %9s %9s\n", "kind", "n", "exp", "ns/elem", "GB/s", "vs expf", "vs __expf");
  const struct {
    const char* name;
    Kind k;
  } kinds[] = {{"exp", Kind::exp}, {"softmax", Kind::softmax}, {"gelu", Kind::gelu}, {"silu", Kind::silu}};
  for (int64_t n : {int64_t(4096), big}) {
    for (const auto& kd : kinds) {
      const auto t = time_interleaved(4, reps, [&](int v) { launch_impl(kImpls[v], kd.k, x, y, n, 4096); });
      CK(cudaGetLastError());
      for (int v = 0; v < 4; ++v)
        std::printf("%-8s %9lld %-13s %10.4f %8.1f %8.2fx %8.2fx\n", kd.name, (long long)n, impl_name(kImpls[v]),
                    t[v] * 1e9 / n, 8.0 * n / t[v] * 1e-9, t[0] / t[v], t[1] / t[v]);
    }
    // The library's softmax kernel (ops/cuda/k_softmax.cu) on each tier.
    TV tx, ty;
    tx.data = reinterpret_cast<char*>(x);
    ty.data = reinterpret_cast<char*>(y);
    tx.ne[0] = ty.ne[0] = 4096;
    tx.ne[1] = ty.ne[1] = n / 4096;
    tx.nb[0] = ty.nb[0] = 4;
    tx.nb[1] = ty.nb[1] = tx.nb[2] = ty.nb[2] = tx.nb[3] = ty.nb[3] = 4096 * 4;
    const ExpTier tiers[] = {ExpTier::exact, ExpTier::quake2, ExpTier::quake1};
    const auto t = time_interleaved(3, reps, [&](int v) {
      const SoftmaxArgs a{1.0f, 0.0f, false, 0, 0, tiers[v]};
      CK(launch_softmax(tx, TV{}, ty, a, nullptr));
    });
    for (int v = 0; v < 3; ++v)
      std::printf("%-8s %9lld %-13s %10.4f %8.1f %8.2fx %9s\n", "lib-smax", (long long)n, exp_tier_name(tiers[v]),
                  t[v] * 1e9 / n, 8.0 * n / t[v] * 1e-9, t[0] / t[v], "-");
  }
  CK(cudaFree(x));
  CK(cudaFree(y));
  return 0;
}
