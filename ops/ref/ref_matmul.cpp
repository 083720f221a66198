// Reference matmul and get_rows: dequantize weight rows block by block to float and
// accumulate in double, so the result is the exact product of the stored weights and
// the F32 activations up to one final rounding. The oracle for every other backend.
#include <cstring>

#include "ops/ref/quant.h"
#include "ops/ref/ref_kernels.h"

namespace kestrel::ref {

namespace {

// Elements dequantized at a time: one K-quant super-block, or 256 plain values.
constexpr int64_t kChunk = kQKK;

// sum_k W_row[k] * x[k] over K elements of a weight row of `type`.
double dot_row(DType type, const char* w_row, const float* x, int64_t K) {
  const int bs = dtype_block_size(type);
  const size_t ts = dtype_type_size(type);
  float w[kChunk];
  double acc = 0;
  for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
    const int64_t n = K - k0 < kChunk ? K - k0 : kChunk;  // a multiple of bs (K is)
    dequantize_row(type, w_row + (k0 / bs) * ts, w, n);
    for (int64_t k = 0; k < n; ++k) acc += static_cast<double>(w[k]) * x[k0 + k];
  }
  return acc;
}

}  // namespace

// y[n, m, i2, i3] = sum_k W[k, n] * x[k, m, i2, i3]; x and y may be strided in dims 1..3.
void matmul(const OpCall& call) {
  const Tensor& W = *call.src[0];
  const Tensor& x = *call.src[1];
  Tensor& y = *call.dst;
  const int64_t K = W.ne[0], N = W.ne[1];
  for (int64_t i3 = 0; i3 < x.ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < x.ne[2]; ++i2)
      for (int64_t m = 0; m < x.ne[1]; ++m) {
        const float* xr = x.row<const float>(m, i2, i3);
        float* yr = y.row<float>(m, i2, i3);
        for (int64_t n = 0; n < N; ++n)
          yr[n] = static_cast<float>(dot_row(W.type, W.row<const char>(n), xr, K));
      }
}

// dst row m = table row ids[m], dequantized. An id outside [0, N) yields a row of zeros
// (validate_op cannot read ids that may live in device memory; nothing is read out of
// bounds).
void get_rows(const OpCall& call) {
  const Tensor& table = *call.src[0];
  const Tensor& ids = *call.src[1];
  Tensor& dst = *call.dst;
  const int64_t K = table.ne[0], N = table.ne[1];
  const int bs = dtype_block_size(table.type);
  const size_t ts = dtype_type_size(table.type);
  for (int64_t m = 0; m < ids.ne[0]; ++m) {
    int32_t id;
    std::memcpy(&id, static_cast<const char*>(ids.data) + m * ids.nb[0], sizeof(id));
    float* out = dst.row<float>(m);
    if (id < 0 || id >= N) {
      std::memset(out, 0, static_cast<size_t>(K) * sizeof(float));
      continue;
    }
    const char* row = table.row<const char>(id);
    for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
      const int64_t n = K - k0 < kChunk ? K - k0 : kChunk;
      dequantize_row(table.type, row + (k0 / bs) * ts, out + k0, n);
    }
  }
}

}  // namespace kestrel::ref
