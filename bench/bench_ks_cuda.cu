// Kronecker-sparse matmul on the GPU: kestrel's ks_matmul kernel (ops/cuda/k_ks_matmul.cu,
// tile picked by its tuner) against two cuBLAS baselines, timed in the same run on the
// same inputs (CUDA events, median over --reps rounds; the methods run interleaved in
// each round, after one untimed round; at batch <= 128 each timing covers 20 runs back to
// back):
//   bmm:   permute x so that each block's c x M inputs are contiguous, one strided
//          batched GEMM over the a*d blocks (cublasGemmStridedBatched / ...Ex), permute
//          the outputs back. Measured in both layouts: batch_last (rows of M tokens: the
//          permutes are row copies) and token_major (rows of features: element-wise
//          permute kernels with coalesced writes). With d = 1 no permute is needed and
//          none is run (the GEMM reads x and writes y in place).
//   dense: one cuBLAS GEMM with the materialized (a*b*d) x (a*c*d) matrix, zeros included.
// Pattern set: a in {1, 4, 16, 32, 64}; b, c in {48, ..., 1024} with b = c, b = 4c or
// c = 4b; d in {1, ..., 128}; restricted to input and output widths 768 .. 4096 that
// occur in transformers (129 patterns). Batches 1, 16, 128, 4096, 25088.
// dtypes: fp32 (everything F32; cuBLAS without TF32) and bf16 (BF16 weights; kestrel's
// activations are F32 by the op's definition; the baselines get x already converted to
// BF16, untimed, and run the GEMM on tensor cores with F32 output and accumulation).
// Output: one CSV line per (pattern, batch, dtype), then per (dtype, batch) the median
// speedups, the share below 1x and the dense check (every pattern of density <= 1/4
// should beat the dense GEMM). rel_err: kestrel vs the batch_last bmm output.
//
//   bench_ks_cuda [--reps 15] [--batches 1,16,128,4096,25088] [--dtypes f32,bf16] > ks_cuda.csv
//   bench_ks_cuda --only "4,1024,1024,1;16,64,256,1"      (these patterns of the set only)
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ops/cuda/cuda_ks.h"

using namespace kestrel;
using namespace kestrel::cuda;

namespace {

#define CK(x)                                                                        \
  do {                                                                               \
    cudaError_t e_ = (x);                                                            \
    if (e_ != cudaSuccess) {                                                         \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)
#define CB(x)                                                                          \
  do {                                                                                 \
    cublasStatus_t s_ = (x);                                                           \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                 \
      std::fprintf(stderr, "%s:%d %s: cublas status %d\n", __FILE__, __LINE__, #x, (int)s_); \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

struct Pattern {
  int a, b, c, d;
};

std::vector<Pattern> patterns() {
  const int as[] = {1, 4, 16, 32, 64};
  const int sizes[] = {48, 64, 96, 128, 192, 256, 384, 512, 768, 1024};
  const int ds[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128};
  auto width = [](long w) { return w == 768 || w == 1024 || w == 1536 || w == 2048 || w == 3072 || w == 4096; };
  std::vector<Pattern> out;
  for (int a : as)
    for (int b : sizes)
      for (int c : sizes) {
        if (!(b == c || b == 4 * c || c == 4 * b)) continue;
        for (int d : ds)
          if (width((long)a * b * d) && width((long)a * c * d)) out.push_back({a, b, c, d});
      }
  return out;
}

__device__ __forceinline__ float hash_uniform(uint64_t i, uint32_t seed) {
  uint64_t z = i * 0x9E3779B97F4A7C15ull + seed;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

__global__ void fill_f32(float* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    p[i] = hash_uniform(i, seed);
}
__global__ void fill_bf16(__nv_bfloat16* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    p[i] = __float2bfloat16(hash_uniform(i, seed));
}
__global__ void to_bf16(const float* x, __nv_bfloat16* y, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = __float2bfloat16(x[i]);
}

// Dense D [n_out][n_in] from the KS weights W {b, c, d, a} (zeros off the support).
template <typename T>
__global__ void materialize(const T* w, T* dense, int a, int b, int c, int d) {
  const int64_t n_in = (int64_t)a * c * d, n_out = (int64_t)a * b * d;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n_in * n_out;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t row = e / n_in, col = e % n_in;
    const int64_t j = row % d, k = (row / d) % b, i = row / ((int64_t)d * b);
    const int64_t j2 = col % d, l = (col / d) % c, i2 = col / ((int64_t)d * c);
    dense[e] = (i == i2 && j == j2) ? w[((i * d + j) * c + l) * b + k] : T(0.0f);
  }
}

// Rows of M elements: in row (i, p, q) of dims (a, P, Q) -> out row (i, q, p).
template <typename T>
__global__ void permute_rows(const T* in, T* out, uint32_t P, uint32_t Q, uint32_t M) {
  const uint32_t ro = blockIdx.y;  // (i*Q + q)*P + p
  const uint32_t p = ro % P, iq = ro / P, q = iq % Q, i = iq / Q;
  const uint32_t ri = (i * P + p) * Q + q;
  for (uint32_t m = blockIdx.x * blockDim.x + threadIdx.x; m < M; m += gridDim.x * blockDim.x)
    out[(size_t)ro * M + m] = in[(size_t)ri * M + m];
}

// Token rows: in (m, i, p, q) of dims (M, a, P, Q) -> out (i, q, m, p); one thread per
// output element (writes coalesced).
template <typename T>
__global__ void permute_tm_in(const T* in, T* out, uint32_t a, uint32_t P, uint32_t Q, uint32_t M) {
  const uint32_t n = a * P * Q * M;
  for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x) {
    const uint32_t p = e % P, r = e / P, m = r % M, r2 = r / M, q = r2 % Q, i = r2 / Q;
    out[e] = in[(size_t)m * a * P * Q + (i * P + p) * Q + q];
  }
}
// The inverse: in (i, q, m, p) -> out (m, i, p, q).
__global__ void permute_tm_out(const float* in, float* out, uint32_t a, uint32_t P, uint32_t Q, uint32_t M) {
  const uint32_t n = a * P * Q * M;
  for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x) {
    const uint32_t q = e % Q, r = e / Q, p = r % P, r2 = r / P, i = r2 % a, m = r2 / a;
    out[e] = in[(((size_t)i * Q + q) * M + m) * P + p];
  }
}

__global__ void err_sums(const float* y, const float* r, int64_t n, double* sums) {
  double e = 0, s = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const double dv = (double)y[i] - r[i];
    e += dv * dv;
    s += (double)r[i] * r[i];
  }
  atomicAdd(&sums[0], e);
  atomicAdd(&sums[1], s);
}

unsigned blocks_for(int64_t n) { return (unsigned)std::min<int64_t>((n + 255) / 256, 65535); }

struct Buffers {
  float *x, *y, *y2, *yp, *dense;
  void *w, *xp, *xb;  // weights (F32 or BF16), permuted x, x as BF16
  double* sums;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

struct Row {
  Pattern p;
  int64_t M;
  bool bf16;
  double t_bl, t_tm, t_heur_bl, t_bmm_bl, t_bmm_tm, t_dense, err;
  int cfg_bl, cfg_tm, heur_bl;
};

std::vector<int64_t> parse_list(const char* s) {
  std::vector<int64_t> v;
  for (const char* q = s; *q;) {
    v.push_back(std::strtoll(q, nullptr, 10));
    q = std::strchr(q, ',');
    if (!q) break;
    ++q;
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 15;
  std::vector<int64_t> batches = {1, 16, 128, 4096, 25088};
  bool run_f32 = true, run_bf16 = true;
  std::string only;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batches")) batches = parse_list(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--dtypes")) {
      run_f32 = std::strstr(argv[i + 1], "f32") != nullptr;
      run_bf16 = std::strstr(argv[i + 1], "bf16") != nullptr;
    } else if (!std::strcmp(argv[i], "--only")) {
      only = std::string(";") + argv[i + 1] + ";";
    } else {
      std::fprintf(stderr, "usage: bench_ks_cuda [--reps N] [--batches 1,16,...] [--dtypes f32,bf16] [--only \"a,b,c,d;...\"]\n");
      return 2;
    }
  }
  std::vector<Pattern> pats = patterns();
  if (!only.empty()) {
    std::vector<Pattern> keep;
    for (const Pattern& p : pats) {
      const std::string key = ";" + std::to_string(p.a) + "," + std::to_string(p.b) + "," + std::to_string(p.c) + "," +
                              std::to_string(p.d) + ";";
      if (only.find(key) != std::string::npos) keep.push_back(p);
    }
    pats = keep;
  }
  int64_t max_w = 0, max_wt = 0, max_dense = 0, max_m = 0;
  for (const Pattern& p : pats) {
    max_w = std::max<int64_t>(max_w, std::max((int64_t)p.a * p.b * p.d, (int64_t)p.a * p.c * p.d));
    max_wt = std::max<int64_t>(max_wt, (int64_t)p.a * p.b * p.c * p.d);
    max_dense = std::max<int64_t>(max_dense, (int64_t)p.a * p.b * p.d * p.a * p.c * p.d);
  }
  for (int64_t m : batches) max_m = std::max(max_m, m);
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::fprintf(stderr, "device %s, %zu patterns, reps %d\n", prop.name, pats.size(), reps);
  Buffers B;
  const size_t act = (size_t)(max_w * max_m);
  CK(cudaMalloc(&B.x, act * 4));
  CK(cudaMalloc(&B.y, act * 4));
  CK(cudaMalloc(&B.y2, act * 4));
  CK(cudaMalloc(&B.yp, act * 4));
  CK(cudaMalloc(&B.xp, act * 4));
  CK(cudaMalloc(&B.xb, act * 2));
  CK(cudaMalloc(&B.w, (size_t)max_wt * 4));
  CK(cudaMalloc(&B.dense, (size_t)max_dense * 4));
  CK(cudaMalloc(&B.sums, 16));
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cublasHandle_t h;
  CB(cublasCreate(&h));
  CB(cublasSetStream(h, st));
  CB(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));  // FP32 without TF32
  void* ws = nullptr;
  CK(cudaMalloc(&ws, 32 << 20));
  CB(cublasSetWorkspace(h, ws, 32 << 20));
  cudaEvent_t ev[16];
  for (cudaEvent_t& e : ev) CK(cudaEventCreate(&e));

  std::printf("a,b,c,d,batch,dtype,h,density,t_ks_bl_us,t_ks_tm_us,t_bmm_bl_us,t_bmm_tm_us,t_dense_us,"
              "speedup_bmm_bl,speedup_bmm_tm,speedup_dense,cfg_bl,cfg_tm,t_heuristic_bl_us,rel_err\n");
  std::vector<Row> rows;
  const float one = 1.0f, zero = 0.0f;
  for (int dt = 0; dt < 2; ++dt) {
    const bool bf = dt == 1;
    if ((bf && !run_bf16) || (!bf && !run_f32)) continue;
    for (int64_t M : batches)
      for (const Pattern& p : pats) {
        const int64_t n_in = (int64_t)p.a * p.c * p.d, n_out = (int64_t)p.a * p.b * p.d;
        const int64_t nw = (int64_t)p.a * p.b * p.c * p.d, nd = n_in * n_out;
        fill_f32<<<blocks_for(n_in * M), 256, 0, st>>>(B.x, n_in * M, 11);
        if (bf) {
          fill_bf16<<<blocks_for(nw), 256, 0, st>>>((__nv_bfloat16*)B.w, nw, 7);
          to_bf16<<<blocks_for(n_in * M), 256, 0, st>>>(B.x, (__nv_bfloat16*)B.xb, n_in * M);
          materialize<<<blocks_for(nd), 256, 0, st>>>((const __nv_bfloat16*)B.w, (__nv_bfloat16*)B.dense, p.a, p.b,
                                                      p.c, p.d);
        } else {
          fill_f32<<<blocks_for(nw), 256, 0, st>>>((float*)B.w, nw, 7);
          materialize<<<blocks_for(nd), 256, 0, st>>>((const float*)B.w, B.dense, p.a, p.b, p.c, p.d);
        }
        CK(cudaGetLastError());
        const size_t es = bf ? 2 : 4;
        KsArgs k;
        k.w = B.w;
        k.w_nb1 = (size_t)p.b * es, k.w_nb2 = k.w_nb1 * p.c, k.w_nb3 = k.w_nb2 * p.d;
        k.x = B.x, k.y = B.y, k.a = p.a, k.b = p.b, k.c = p.c, k.d = p.d, k.M = M;
        k.wt = bf ? DType::BF16 : DType::F32;
        KsArgs kbl = k, ktm = k;
        kbl.batch_last = true, kbl.x_ld = M, kbl.y_ld = M;
        ktm.batch_last = false, ktm.x_ld = n_in, ktm.y_ld = n_out;
        int cfg_bl = 0, cfg_tm = 0;
        CK(ks_pick_config(kbl, st, &cfg_bl));
        CK(ks_pick_config(ktm, st, &cfg_tm));
        const int heur_bl = ks_heuristic_config(kbl);
        const cudaDataType_t gt = bf ? CUDA_R_16BF : CUDA_R_32F;
        const void* xin = bf ? B.xb : (const void*)B.x;
        const int a_d = p.a * p.d;
        // bmm, batch_last: X_ij row-major c x M = column-major M x c (ld M); Y_ij^T = X^T W.
        auto bmm_bl = [&] {
          const void* xs = xin;
          float* ys = B.y2;
          if (p.d > 1) {
            if (bf)
              permute_rows<<<dim3((unsigned)std::min<int64_t>((M + 255) / 256, 64), (unsigned)n_in), 256, 0, st>>>(
                  (const __nv_bfloat16*)xin, (__nv_bfloat16*)B.xp, p.c, p.d, (uint32_t)M);
            else
              permute_rows<<<dim3((unsigned)std::min<int64_t>((M + 255) / 256, 64), (unsigned)n_in), 256, 0, st>>>(
                  (const float*)xin, (float*)B.xp, p.c, p.d, (uint32_t)M);
            xs = B.xp;
            ys = B.yp;
          }
          CB(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_T, (int)M, p.b, p.c, &one, xs, gt, (int)M,
                                        (long long)p.c * M, B.w, gt, p.b, (long long)p.b * p.c, &zero, ys, CUDA_R_32F,
                                        (int)M, (long long)p.b * M, a_d, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
          if (p.d > 1)
            permute_rows<<<dim3((unsigned)std::min<int64_t>((M + 255) / 256, 64), (unsigned)n_out), 256, 0, st>>>(
                B.yp, B.y2, p.d, p.b, (uint32_t)M);
        };
        // bmm, token_major: X_ij row-major M x c = column-major c x M; Y (b x M) = A X with A
        // the column-major b x c view of W_ij.
        auto bmm_tm = [&] {
          const void* xs = xin;
          float* ys = B.y2;
          int ldx = (int)n_in, ldy = (int)n_out;
          long long sx = p.c, sy = p.b;
          if (p.d > 1) {
            const int64_t n = n_in * M;
            if (bf)
              permute_tm_in<<<blocks_for(n), 256, 0, st>>>((const __nv_bfloat16*)xin, (__nv_bfloat16*)B.xp, p.a,
                                                           p.c, p.d, (uint32_t)M);
            else
              permute_tm_in<<<blocks_for(n), 256, 0, st>>>((const float*)xin, (float*)B.xp, p.a, p.c, p.d,
                                                           (uint32_t)M);
            xs = B.xp, ys = B.yp, ldx = p.c, ldy = p.b, sx = (long long)p.c * M, sy = (long long)p.b * M;
          }
          CB(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, p.b, (int)M, p.c, &one, B.w, gt, p.b,
                                        (long long)p.b * p.c, xs, gt, ldx, sx, &zero, ys, CUDA_R_32F, ldy, sy,
                                        p.d > 1 ? a_d : p.a, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
          if (p.d > 1) permute_tm_out<<<blocks_for(n_out * M), 256, 0, st>>>(B.yp, B.y2, p.a, p.b, p.d, (uint32_t)M);
        };
        // dense, batch_last: Y^T (M x n_out) = X^T (M x n_in) D^T; D row-major = column-major D^T.
        auto dense = [&] {
          CB(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)M, (int)n_out, (int)n_in, &one, xin, gt, (int)M, B.dense,
                          gt, (int)n_in, &zero, B.y2, CUDA_R_32F, (int)M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        };
        // Small cases run `inner` times back to back per timing (the time per run is
        // reported): one launch of a few microseconds alone measures mostly the launch
        // and the event, and the first method of a round paid for the idle GPU.
        const int inner = M <= 128 ? 20 : 1;
        std::vector<double> t[6];
        for (int r = -1; r < reps; ++r) {
          int e = 0;
          auto timed = [&](auto&& fn) {
            CK(cudaEventRecord(ev[e], st));
            for (int q = 0; q < inner; ++q) fn();
            CK(cudaEventRecord(ev[e + 1], st));
            e += 2;
          };
          timed([&] { CK(launch_ks_matmul(kbl, cfg_bl, st)); });
          timed([&] { CK(launch_ks_matmul(ktm, cfg_tm, st)); });
          timed([&] { CK(launch_ks_matmul(kbl, heur_bl, st)); });
          timed(bmm_bl);
          timed(bmm_tm);
          timed(dense);
          CK(cudaGetLastError());
          CK(cudaEventSynchronize(ev[e - 1]));
          if (r < 0) continue;
          for (int v = 0; v < 6; ++v) {
            float ms = 0;
            CK(cudaEventElapsedTime(&ms, ev[2 * v], ev[2 * v + 1]));
            t[v].push_back(ms * 1e3 / inner);
          }
        }
        // Accuracy: kestrel (batch_last) against the batch_last bmm output.
        CK(launch_ks_matmul(kbl, cfg_bl, st));
        bmm_bl();
        CK(cudaMemsetAsync(B.sums, 0, 16, st));
        err_sums<<<blocks_for(n_out * M), 256, 0, st>>>(B.y, B.y2, n_out * M, B.sums);
        double sums[2];
        CK(cudaMemcpyAsync(sums, B.sums, 16, cudaMemcpyDeviceToHost, st));
        CK(cudaStreamSynchronize(st));
        Row row{p, M, bf, median(t[0]), median(t[1]), median(t[2]), median(t[3]), median(t[4]), median(t[5]),
                sums[1] > 0 ? std::sqrt(sums[0] / sums[1]) : 0.0, cfg_bl, cfg_tm, heur_bl};
        rows.push_back(row);
        const double hbc = double(p.b + p.c) / (double(p.b) * p.c), density = 1.0 / (double(p.a) * p.d);
        std::printf("%d,%d,%d,%d,%lld,%s,%.5f,%.5f,%.2f,%.2f,%.2f,%.2f,%.2f,%.3f,%.3f,%.3f,%s,%s,%.2f,%.2e\n", p.a, p.b,
                    p.c, p.d, (long long)M, bf ? "bf16" : "fp32", hbc, density, row.t_bl, row.t_tm, row.t_bmm_bl,
                    row.t_bmm_tm, row.t_dense, row.t_bmm_bl / row.t_bl, row.t_bmm_tm / row.t_tm,
                    row.t_dense / std::min(row.t_bl, row.t_tm), ks_config_name(cfg_bl), ks_config_name(cfg_tm),
                    row.t_heur_bl, row.err);
        std::fflush(stdout);
      }
  }
  // Summary per (dtype, batch), on stderr so that stdout stays one CSV.
  std::fprintf(stderr, "\n| dtype | batch | median speedup vs bmm (batch_last) | below 1x | median vs bmm (token_major) | "
                       "below 1x | median vs dense | density <= 1/4 slower than dense | tuned vs heuristic (median) |\n"
                       "|---|---|---|---|---|---|---|---|---|\n");
  for (int dt = 0; dt < 2; ++dt)
    for (int64_t M : batches) {
      std::vector<double> s_bl, s_tm, s_d, s_h;
      int below_bl = 0, below_tm = 0, n = 0, dense_fail = 0, n_sparse = 0;
      for (const Row& r : rows) {
        if (r.bf16 != (dt == 1) || r.M != M) continue;
        ++n;
        s_bl.push_back(r.t_bmm_bl / r.t_bl);
        s_tm.push_back(r.t_bmm_tm / r.t_tm);
        const double best = std::min(r.t_bl, r.t_tm);
        s_d.push_back(r.t_dense / best);
        s_h.push_back(r.t_heur_bl / r.t_bl);
        below_bl += r.t_bmm_bl < r.t_bl;
        below_tm += r.t_bmm_tm < r.t_tm;
        if (r.p.a * r.p.d >= 4) {
          ++n_sparse;
          dense_fail += r.t_dense < best;
        }
      }
      if (!n) continue;
      std::fprintf(stderr, "| %s | %lld | %.2fx | %d/%d | %.2fx | %d/%d | %.2fx | %d/%d | %.2fx |\n", dt ? "bf16" : "fp32",
                   (long long)M, median(s_bl), below_bl, n, median(s_tm), below_tm, n, median(s_d), dense_fail,
                   n_sparse, median(s_h));
    }
  return 0;
}
