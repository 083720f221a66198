// matmul on the GPU: y[m][n] = sum_k W[n][k] * x[m][k].
//
// Path choice, per call:
//   - M (all activation rows) < kGemmMinRows, or a layout cuBLAS cannot take:
//     Q4_0 / Q8_0 on 8-bit activations with dp4a (k_matvec_q8.cu, the cpu
//     kernels' scheme), other types matmul_direct, which reads W in its
//     stored type (decode path).
//   - F16 weights: tensor cores on W as stored. x is scaled per row by a
//     power of two into F16's range and rounded to F16 (hi), and one
//     cublasGemmEx with FP32 accumulation multiplies W hi, then the rows are
//     scaled back: the quantized paths' 11 bits of x at any activation scale.
//     With BackendOptions::exact_f16_x the remainder x - hi (lo) goes through
//     a second GEMM (W lo added): the products keep ~22 bits of x, the FP32
//     paths' error level, at twice the tensor-core time;
//   - other float weights (F32, BF16): cuBLAS SGEMM in plain FP32 (default
//     math mode, no TF32): W F32 in place, BF16 dequantized in row
//     chunks of at most kScratchBytes into scratch, one SGEMM per chunk;
//   - quantized weights: tensor cores. The chunk is dequantized to F16, x is
//     rounded to F16 once, and cublasGemmEx multiplies with FP32 accumulation
//     into the F32 output.
// Error: FP32 paths ~1e-6 * sqrt(K) relative to a double reference on random
// data (test_cuda checks 1e-5 of sum |w x|). The F16 path rounds each operand
// to 11 significant bits: |err| <= 2^-10 sum |w x| (test_cuda checks it), far
// inside the 8-bit activation error the cpu kernels have on quantized weights.
#include <climits>

#include "ops/cuda/cuda_context.h"
#include "ops/cuda/matvec.h"
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
  bool f16 = false;         // tensor-core GEMM on F16 copies (quantized W)
  bool f16_split = false;   // tensor-core GEMMs on F16 W as stored, x as hi + lo
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
  p.f16_split = w.type == DType::F16 && w.nb[1] % 2 == 0 && (N == 1 || w.nb[1] / 2 >= static_cast<size_t>(K)) &&
                fits_int(static_cast<int64_t>(w.nb[1] / 2));
  p.f16 = !p.w_in_place && !p.f16_split && dtype_block_size(w.type) > 1;  // quantized weights
  if (!p.w_in_place && !p.f16_split) {
    const size_t row_bytes = static_cast<size_t>(K) * (p.f16 ? 2 : sizeof(float));
    p.chunk = static_cast<int64_t>(kScratchBytes / row_bytes);
    if (p.chunk < 1) p.chunk = 1;
    if (p.chunk > N) p.chunk = N;
  }
  return p;
}

}  // namespace

// Scratch of the F16 path: the W chunk, then x in F16 (256-byte aligned).
size_t f16_x_offset(const MatmulPath& p, int64_t K) {
  return (static_cast<size_t>(p.chunk) * static_cast<size_t>(K) * 2 + 255) / 256 * 256;
}

// Scratch of the split path: x hi, x lo (F16 [M][K] each), the rows' scales.
size_t align256(size_t b) { return (b + 255) / 256 * 256; }
size_t split_lo_offset(int64_t K, int64_t M) { return align256(static_cast<size_t>(K) * static_cast<size_t>(M) * 2); }
size_t split_inv_offset(int64_t K, int64_t M) { return 2 * split_lo_offset(K, M); }

size_t matmul_scratch_bytes(const OpCall& call) {
  const MatmulPath p = matmul_path(call);
  const int64_t K = call.src[0]->ne[0];
  const Tensor& x = *call.src[1];
  if (!p.gemm && matvec_fits(call.src[0]->type, view(*call.src[0]), view(x)))
    return matvec_scratch_bytes(call.src[0]->type, view(x));
  if (!p.gemm && matvec_q8_fits(call.src[0]->type, view(*call.src[0])))
    return matvec_q8_scratch_bytes(K, x.ne[1] * x.ne[2] * x.ne[3]);
  const int64_t M = x.ne[1] * x.ne[2] * x.ne[3];
  if (p.f16_split) return split_inv_offset(K, M) + static_cast<size_t>(M) * sizeof(float);
  if (p.f16) {
    return f16_x_offset(p, K) + static_cast<size_t>(K) * static_cast<size_t>(x.ne[1] * x.ne[2] * x.ne[3]) * 2;
  }
  return static_cast<size_t>(p.chunk) * static_cast<size_t>(K) * sizeof(float);
}

bool matmul_quantizes_x(const OpCall& call) {
  const Tensor& x = *call.src[1];
  return call.src[0]->ne[1] > 0 && x.ne[1] * x.ne[2] * x.ne[3] > 0 && !matmul_path(call).gemm &&
         !matvec_fits(call.src[0]->type, view(*call.src[0]), view(x)) &&
         matvec_q8_fits(call.src[0]->type, view(*call.src[0]));
}

bool matmul_uses_matvec(const OpCall& call) {
  const Tensor& x = *call.src[1];
  return call.src[0]->ne[1] > 0 && x.ne[1] * x.ne[2] * x.ne[3] > 0 && !matmul_path(call).gemm &&
         matvec_fits(call.src[0]->type, view(*call.src[0]), view(x));
}

Status run_matmul_quantized_x(Context& ctx, const OpCall& call) {
  const Tensor& w = *call.src[0];
  const Tensor& x = *call.src[1];
  const int64_t M = x.ne[1] * x.ne[2] * x.ne[3];
  KESTREL_TRY_ASSIGN(void* scratch, ctx.get_scratch(matvec_q8_scratch_bytes(w.ne[0], M)));
  return cuda_check(launch_matvec_q8(w.type, view(w), view(x), view(*call.dst), scratch, ctx.stream, false),
                    "matvec_q8");
}

Status run_matmul(Context& ctx, const OpCall& call) {
  const Tensor& w = *call.src[0];
  const Tensor& x = *call.src[1];
  Tensor& y = *call.dst;
  const int64_t K = w.ne[0], N = w.ne[1];
  const int64_t M = x.ne[1] * x.ne[2] * x.ne[3];
  if (N == 0 || M == 0) return {};
  const MatmulPath path = matmul_path(call);
  if (!path.gemm && matvec_fits(w.type, view(w), view(x))) {
    MatvecSegs segs;
    segs.add(view(w), view(y));
    void* scratch = nullptr;
    if (const size_t bytes = matvec_scratch_bytes(w.type, view(x))) {
      KESTREL_TRY_ASSIGN(scratch, ctx.get_scratch(bytes));
    }
    return cuda_check(launch_matvec(w.type, segs, view(x), scratch, ctx.stream), "matvec");
  }
  if (!path.gemm && matvec_q8_fits(w.type, view(w))) {
    KESTREL_TRY_ASSIGN(void* scratch, ctx.get_scratch(matvec_q8_scratch_bytes(K, M)));
    return cuda_check(launch_matvec_q8(w.type, view(w), view(x), view(y), scratch, ctx.stream), "matvec_q8");
  }
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

  KESTREL_TRY_ASSIGN(void* scratch, ctx.get_scratch(matmul_scratch_bytes(call)));
  if (path.f16_split) {
    char* sb = static_cast<char*>(scratch);
    void* hi = sb;
    void* lo = ctx.exact_f16_x ? sb + split_lo_offset(K, M) : nullptr;
    float* inv = reinterpret_cast<float*>(sb + split_inv_offset(K, M));
    TV xv{};
    xv.data = static_cast<char*>(x.data);
    xv.ne[0] = K;
    xv.ne[1] = M;
    xv.ne[2] = xv.ne[3] = 1;
    xv.nb[0] = 4;
    xv.nb[1] = path.xs;
    xv.nb[2] = xv.nb[3] = path.xs * M;
    KESTREL_TRY(cuda_check(launch_split_f16(xv, hi, lo, inv, ctx.stream), "matmul: x to f16 hi + lo"));
    const int lda = N == 1 ? static_cast<int>(K) : static_cast<int>(w.nb[1] / 2);
    for (int part = 0; part < (ctx.exact_f16_x ? 2 : 1); ++part) {
      KESTREL_TRY(cublas_check(cublasGemmEx(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N),
                                            static_cast<int>(M), static_cast<int>(K), &one, w.data, CUDA_R_16F, lda,
                                            part ? lo : hi, CUDA_R_16F, static_cast<int>(K), part ? &one : &zero, yp,
                                            CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                               "matmul: cublasGemmEx (f16 split)"));
    }
    return cuda_check(launch_scale_rows(yp, ldy, inv, N, M, ctx.stream), "matmul: row scales");
  }
  const int64_t chunk = path.chunk;
  if (path.f16) {
    // x [K, M] (rows path.xs apart) -> F16 [K, M] contiguous, once.
    void* xh = static_cast<char*>(scratch) + f16_x_offset(path, K);
    TV xv{}, hv{};
    xv.data = static_cast<char*>(x.data);
    hv.data = static_cast<char*>(xh);
    xv.ne[0] = hv.ne[0] = K;
    xv.ne[1] = hv.ne[1] = M;
    xv.ne[2] = hv.ne[2] = xv.ne[3] = hv.ne[3] = 1;
    xv.nb[0] = 4;
    xv.nb[1] = path.xs;
    xv.nb[2] = xv.nb[3] = path.xs * M;
    hv.nb[0] = 2;
    hv.nb[1] = 2 * K;
    hv.nb[2] = hv.nb[3] = 2 * K * M;
    KESTREL_TRY(cuda_check(launch_copy(DType::F32, xv, DType::F16, hv, ctx.stream), "matmul: x to f16"));
    const TV wv = view(w);
    for (int64_t n0 = 0; n0 < N; n0 += chunk) {
      const int64_t nc = N - n0 < chunk ? N - n0 : chunk;
      KESTREL_TRY(cuda_check(launch_dequant_rows_f16(w.type, wv, n0, nc, scratch, ctx.stream), "matmul: dequant_rows"));
      KESTREL_TRY(cublas_check(cublasGemmEx(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(nc),
                                            static_cast<int>(M), static_cast<int>(K), &one, scratch, CUDA_R_16F,
                                            static_cast<int>(K), xh, CUDA_R_16F, static_cast<int>(K), &zero, yp + n0,
                                            CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                               "matmul: cublasGemmEx"));
    }
    return {};
  }
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
