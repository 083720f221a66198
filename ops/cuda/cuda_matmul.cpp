// matmul on the GPU: y[m][n] = sum_k W[n][k] * x[m][k].
//
// Path choice, per call:
//   - M (all activation rows) < kGemmMinRows, or a layout cuBLAS cannot take:
//     matmul_direct, which reads W in its stored type (decode path).
//   - otherwise cuBLAS SGEMM in plain FP32 (default math mode, no TF32): W F32
//     in place; other weight types dequantized in row chunks of at most
//     kScratchBytes into scratch, one SGEMM per chunk.
// Error: FP32 accumulation either way; relative error vs a double reference is
// ~1e-6 * sqrt(K) on random data (test_cuda checks 1e-5 of sum |w x| at K up to 4097).
#include <climits>

#include "ops/cuda/cuda_context.h"
#include "platform/cuda/cuda_status.h"

namespace kestrel::cuda {
namespace {

constexpr int64_t kGemmMinRows = 8;
constexpr size_t kScratchBytes = size_t{64} << 20;

// When every activation row r of t sits at data + r * stride (rows flattened
// over ne[1..3]), sets *stride and returns true.
bool uniform_rows(const Tensor& t, int64_t* stride_bytes) {
  int64_t s = -1, span = 1;
  for (int i = 1; i < 4; ++i) {
    if (t.ne[i] == 1) continue;
    const int64_t nb = static_cast<int64_t>(t.nb[i]);
    if (s < 0) {
      s = nb;
    } else if (nb != s * span) {
      return false;
    }
    span *= t.ne[i];
  }
  *stride_bytes = s < 0 ? static_cast<int64_t>(t.row_size()) : s;
  return true;
}

bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

}  // namespace

bool matmul_supported(const OpCall& call) { return weight_type_supported(call.src[0]->type); }

namespace {

// The path run_matmul takes for a call, and the rows per dequantized chunk.
struct MatmulPath {
  bool gemm = false;        // cuBLAS (else the direct kernel)
  bool w_in_place = false;  // gemm on W as stored (F32)
  int64_t xs = 0, ys = 0;   // row strides of x and y in bytes (gemm)
  int64_t chunk = 0;        // W rows dequantized per SGEMM (gemm, not in place)
};

MatmulPath matmul_path(const OpCall& call) {
  const Tensor& w = *call.src[0];
  const Tensor& x = *call.src[1];
  const Tensor& y = *call.dst;
  const int64_t K = w.ne[0], N = w.ne[1];
  const int64_t M = x.ne[1] * x.ne[2] * x.ne[3];
  MatmulPath p;
  if (N == 0 || M == 0) return p;
  p.gemm = M >= kGemmMinRows && K > 0 && uniform_rows(x, &p.xs) && uniform_rows(y, &p.ys) && p.xs % 4 == 0 &&
           p.ys % 4 == 0 && p.xs / 4 >= K && p.ys / 4 >= N && fits_int(K) && fits_int(N) && fits_int(M) &&
           fits_int(p.xs / 4) && fits_int(p.ys / 4);
  if (!p.gemm) return p;  // K == 0 included: the direct kernel writes zeros
  p.w_in_place = w.type == DType::F32 && w.nb[1] % 4 == 0 && (N == 1 || w.nb[1] / 4 >= static_cast<size_t>(K)) &&
                 fits_int(static_cast<int64_t>(w.nb[1] / 4));
  if (!p.w_in_place) {
    const size_t row_bytes = static_cast<size_t>(K) * sizeof(float);
    p.chunk = static_cast<int64_t>(kScratchBytes / row_bytes);
    if (p.chunk < 1) p.chunk = 1;
    if (p.chunk > N) p.chunk = N;
  }
  return p;
}

}  // namespace

size_t matmul_scratch_bytes(const OpCall& call) {
  const MatmulPath p = matmul_path(call);
  return static_cast<size_t>(p.chunk) * static_cast<size_t>(call.src[0]->ne[0]) * sizeof(float);
}

Status run_matmul(Context& ctx, const OpCall& call) {
  const Tensor& w = *call.src[0];
  const Tensor& x = *call.src[1];
  Tensor& y = *call.dst;
  const int64_t K = w.ne[0], N = w.ne[1];
  const int64_t M = x.ne[1] * x.ne[2] * x.ne[3];
  if (N == 0 || M == 0) return {};
  const MatmulPath path = matmul_path(call);
  if (!path.gemm)
    return cuda_check(launch_matmul_direct(w.type, view(w), view(x), view(y), ctx.stream), "matmul_direct");

  const float one = 1.0f, zero = 0.0f;
  const float* xp = static_cast<const float*>(x.data);
  float* yp = static_cast<float*>(y.data);
  const int ldx = static_cast<int>(path.xs / 4), ldy = static_cast<int>(path.ys / 4);
  if (path.w_in_place) {
    const int lda = N == 1 ? static_cast<int>(K) : static_cast<int>(w.nb[1] / 4);
    // Column-major view: W is K x N (lda), x is K x M (ldb), y is N x M (ldc).
    return cublas_check(cublasSgemm(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
                                    static_cast<int>(K), &one, static_cast<const float*>(w.data), lda, xp, ldx, &zero,
                                    yp, ldy),
                        "matmul: cublasSgemm");
  }

  const int64_t chunk = path.chunk;
  KESTREL_TRY_ASSIGN(void* scratch, ctx.get_scratch(matmul_scratch_bytes(call)));
  float* wf = static_cast<float*>(scratch);
  const TV wv = view(w);
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t nc = N - n0 < chunk ? N - n0 : chunk;
    KESTREL_TRY(cuda_check(launch_dequant_rows(w.type, wv, n0, nc, wf, ctx.stream), "matmul: dequant_rows"));
    KESTREL_TRY(cublas_check(cublasSgemm(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(nc),
                                         static_cast<int>(M), static_cast<int>(K), &one, wf, static_cast<int>(K), xp,
                                         ldx, &zero, yp + n0, ldy),
                             "matmul: cublasSgemm"));
  }
  return {};
}

}  // namespace kestrel::cuda
