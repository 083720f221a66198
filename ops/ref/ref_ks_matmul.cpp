// Reference Kronecker-sparse matmul: the oracle for the fast kernels.
//
// Deliberately independent of the kernels' block walk: it materializes the
// dense matrix D (a*b*d rows, a*c*d columns) one entry at a time from the
// support I_a (x) 1_(b x c) (x) I_d (see op_table.h),
//   D[(i*b + k)*d + j][(i'*c + l)*d + j'] = K[i, k, l, j] if i == i' and j == j', else 0,
// and computes y = D x for every token as a plain dense product in double,
// zeros included. Cost O(a*b*d * a*c*d) per token: for tests, not for speed.
#include "ops/half.h"
#include "ops/ref/ref_kernels.h"

namespace kestrel::ref {

namespace {

float weight(const Tensor& w, int64_t k, int64_t l, int64_t j, int64_t i) {
  const char* p = static_cast<const char*>(w.data) + k * w.nb[0] + l * w.nb[1] + j * w.nb[2] + i * w.nb[3];
  switch (w.type) {
    case DType::F16: return f16_to_f32(*reinterpret_cast<const uint16_t*>(p));
    case DType::BF16: return bf16_to_f32(*reinterpret_cast<const uint16_t*>(p));
    default: return *reinterpret_cast<const float*>(p);
  }
}

// Entry (row, col) of the materialized dense matrix.
float dense_entry(const Tensor& w, const KsMatmulParams& p, int64_t row, int64_t col) {
  const int64_t j = row % p.d, k = (row / p.d) % p.b, i = row / (int64_t(p.d) * p.b);
  const int64_t j2 = col % p.d, l = (col / p.d) % p.c, i2 = col / (int64_t(p.d) * p.c);
  if (i != i2 || j != j2) return 0.0f;
  return weight(w, k, l, j, i);
}

}  // namespace

// token_major: x [n_in, M], y [n_out, M]; batch_last: x [M, n_in], y [M, n_out].
void ks_matmul(const OpCall& call) {
  const Tensor& w = *call.src[0];
  const Tensor& x = *call.src[1];
  Tensor& y = *call.dst;
  const KsMatmulParams& p = call.p<KsMatmulParams>();
  const bool tm = p.layout == KsLayout::token_major;
  const int64_t n_in = int64_t(p.a) * p.c * p.d, n_out = int64_t(p.a) * p.b * p.d;
  const int64_t M = tm ? x.ne[1] : x.ne[0];
  // Feature f of token m, in either layout.
  auto xat = [&](int64_t f, int64_t m) -> float {
    return tm ? x.row<const float>(m)[f] : x.row<const float>(f)[m];
  };
  auto yat = [&](int64_t f, int64_t m) -> float& { return tm ? y.row<float>(m)[f] : y.row<float>(f)[m]; };
  for (int64_t m = 0; m < M; ++m)
    for (int64_t r = 0; r < n_out; ++r) {
      double acc = 0.0;
      for (int64_t col = 0; col < n_in; ++col) acc += double(dense_entry(w, p, r, col)) * xat(col, m);
      yat(r, m) = static_cast<float>(acc);
    }
}

}  // namespace kestrel::ref
