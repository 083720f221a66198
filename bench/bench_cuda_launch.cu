// Launch gaps on this GPU: what a CUDA graph of N dependent kernels costs per
// kernel when the kernels themselves do (almost) nothing, for the grid shapes a
// decode step launches. This is the floor under a step of N launches: a decode
// step of kestrel's plan is ~8 launches per layer, so per-kernel cost x launches
// against the measured step time says how much of a step is launch gap and how
// much is kernel work.
//
// Shapes (each kernel reads and writes a few floats so it cannot be elided):
//   empty     1 block of 32 threads
//   matvec    the grid of a 2048 x 2048 decode matvec (256 blocks of 128 threads)
//   norm      1 block of 1024 threads with a block reduction over 2048 floats
// each as a chain of N kernels in one graph, replayed --reps times (median of
// the per-replay times, CUDA events), plain and with programmatic dependent
// launch (each kernel waits on cudaGridDependencySynchronize, the next one is
// scheduled while it runs).
//
//   bench_cuda_launch [--n 176] [--reps 51]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

__global__ void k_empty(float* p, int pdl) {
  if (pdl) cudaGridDependencySynchronize();
  if (threadIdx.x == 0 && blockIdx.x == 0) p[0] += 1.0f;
}

__global__ void k_matvec_shape(float* p, int pdl) {
  if (pdl) cudaGridDependencySynchronize();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  p[i] = p[i] * 0.5f + 1.0f;
}

__global__ void k_norm_shape(float* p, int pdl) {
  __shared__ float s[32];
  if (pdl) cudaGridDependencySynchronize();
  float v = p[threadIdx.x] + p[threadIdx.x + 1024];
  v *= v;
  for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) s[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = s[threadIdx.x];
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) s[0] = v;
  }
  __syncthreads();
  p[threadIdx.x] = p[threadIdx.x] * rsqrtf(s[0] / 2048.0f + 1e-6f);
}

bool ok(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::fprintf(stderr, "bench_cuda_launch: %s: %s\n", what, cudaGetErrorString(e));
  return false;
}

struct Shape {
  const char* name;
  void (*k)(float*, int);
  unsigned grid, block;
};

// Median microseconds per kernel of a graph of n launches of s.
double per_kernel_us(const Shape& s, int n, int reps, bool pdl, float* buf, cudaStream_t st) {
  cudaGraph_t g = nullptr;
  cudaGraphExec_t ge = nullptr;
  if (!ok(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), "capture")) return -1;
  for (int i = 0; i < n; ++i) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(s.grid);
    cfg.blockDim = dim3(s.block);
    cfg.stream = st;
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = pdl ? &attr : nullptr;
    cfg.numAttrs = pdl ? 1 : 0;
    (void)cudaLaunchKernelEx(&cfg, s.k, buf, pdl ? 1 : 0);
  }
  if (!ok(cudaStreamEndCapture(st, &g), "end capture") || !ok(cudaGraphInstantiate(&ge, g, 0), "instantiate"))
    return -1;
  cudaEvent_t a, b;
  (void)cudaEventCreate(&a);
  (void)cudaEventCreate(&b);
  std::vector<double> t;
  for (int r = 0; r < reps + 3; ++r) {
    (void)cudaEventRecord(a, st);
    (void)cudaGraphLaunch(ge, st);
    (void)cudaEventRecord(b, st);
    if (!ok(cudaEventSynchronize(b), "replay")) return -1;
    float ms = 0;
    (void)cudaEventElapsedTime(&ms, a, b);
    if (r >= 3) t.push_back(ms * 1e3 / n);
  }
  (void)cudaEventDestroy(a);
  (void)cudaEventDestroy(b);
  (void)cudaGraphExecDestroy(ge);
  (void)cudaGraphDestroy(g);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int n = 176, reps = 51;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--n")) n = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
  }
  if (n < 1 || reps < 1) {
    std::fprintf(stderr, "usage: bench_cuda_launch [--n N] [--reps R]\n");
    return 2;
  }
  cudaDeviceProp prop{};
  if (!ok(cudaGetDeviceProperties(&prop, 0), "device")) return 1;
  float* buf = nullptr;
  if (!ok(cudaMalloc(&buf, 256 * 128 * sizeof(float)), "cudaMalloc")) return 1;
  (void)cudaMemset(buf, 0, 256 * 128 * sizeof(float));
  cudaStream_t st;
  (void)cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
  const Shape shapes[] = {{"empty", k_empty, 1, 32}, {"matvec", k_matvec_shape, 256, 128}, {"norm", k_norm_shape, 1, 1024}};
  std::printf("%s, graph of %d dependent kernels, median of %d replays\n", prop.name, n, reps);
  std::printf("| kernel shape | grid x block | us per kernel | with PDL |\n|---|---|---|---|\n");
  for (const Shape& s : shapes) {
    const double plain = per_kernel_us(s, n, reps, false, buf, st);
    const double pdl = per_kernel_us(s, n, reps, true, buf, st);
    if (plain < 0 || pdl < 0) return 1;
    std::printf("| %s | %u x %u | %.2f | %.2f |\n", s.name, s.grid, s.block, plain, pdl);
  }
  (void)cudaFree(buf);
  return 0;
}
