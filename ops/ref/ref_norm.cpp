// Reference kernel: rms_norm. Per row of K elements:
//   y = x / sqrt(mean(x^2) + eps) * w      (or * (1 + w) for gemma)
// The sum of squares is accumulated in double. In place allowed: the row is
// read completely before it is written.
#include <cmath>

#include "ops/ref/ref_kernels.h"

namespace kestrel::ref {

void rms_norm(const OpCall& call) {
  const RmsNormParams& p = call.p<RmsNormParams>();
  const Tensor& a = *call.src[0];
  const Tensor* w = call.opt_src(1);  // [K] F32, optional
  Tensor& d = *call.dst;
  const int64_t K = a.ne[0];
  const float* wp = w ? static_cast<const float*>(w->data) : nullptr;
  for (int64_t i3 = 0; i3 < a.ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < a.ne[2]; ++i2)
      for (int64_t i1 = 0; i1 < a.ne[1]; ++i1) {
        const float* x = a.row<float>(i1, i2, i3);
        float* y = d.row<float>(i1, i2, i3);
        double ss = 0.0;
        for (int64_t k = 0; k < K; ++k) ss += (double)x[k] * x[k];
        const double inv = K > 0 ? 1.0 / std::sqrt(ss / (double)K + p.eps) : 0.0;
        for (int64_t k = 0; k < K; ++k) {
          double g = 1.0;
          if (wp) g = p.one_plus_weight ? 1.0 + wp[k] : wp[k];
          y[k] = (float)(x[k] * inv * g);
        }
      }
}

}  // namespace kestrel::ref
