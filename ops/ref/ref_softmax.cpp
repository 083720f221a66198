// Reference kernels: softmax (scaled, soft-capped, masked, causal / sliding
// window) and argmax. Per row, three passes over the logits in double:
// max, sum of exp(s - max), write. No temporary row, so dst may even alias
// src (each element is read before it is written). A quake exp tier takes
// exp of (float)(s - max) through that tier (ops/ref/ref_exp.h); sum and
// division stay in double.
#include <cmath>
#include <cstring>
#include <limits>

#include "ops/ref/ref_exp.h"
#include "ops/ref/ref_kernels.h"

namespace kestrel::ref {

namespace {

// The masked, scaled, capped logit s_j of row (query position q); -inf when masked.
double softmax_logit(const SoftmaxParams& p, const float* x, const float* mask, int64_t q, int64_t j) {
  const double kNegInf = -std::numeric_limits<double>::infinity();
  if (p.causal && j > q) return kNegInf;
  if (p.window > 0 && q - j >= p.window) return kNegInf;
  double s = (double)x[j] * p.scale;
  if (p.soft_cap > 0.0f) s = p.soft_cap * std::tanh(s / p.soft_cap);
  if (mask) s += mask[j];
  return s;
}

}  // namespace

void softmax(const OpCall& call) {
  const SoftmaxParams& p = call.p<SoftmaxParams>();
  const Tensor& a = *call.src[0];
  const Tensor* m = call.opt_src(1);  // F32 [n, rows], only with a 2-D input
  Tensor& d = *call.dst;
  const int64_t n = a.ne[0];
  for (int64_t i3 = 0; i3 < a.ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < a.ne[2]; ++i2)
      for (int64_t i1 = 0; i1 < a.ne[1]; ++i1) {
        const float* x = a.row<float>(i1, i2, i3);
        const float* mask = m ? m->row<float>(i1) : nullptr;
        float* y = d.row<float>(i1, i2, i3);
        const int64_t q = (int64_t)p.pos_offset + i1;
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < n; ++j) mx = std::fmax(mx, softmax_logit(p, x, mask, q, j));
        if (mx == -std::numeric_limits<double>::infinity()) {  // fully masked row
          for (int64_t j = 0; j < n; ++j) y[j] = 0.0f;
          continue;
        }
        auto e = [&](int64_t j) -> double {
          const double s = softmax_logit(p, x, mask, q, j) - mx;
          return p.exp == ExpTier::exact ? std::exp(s) : exp_tier(p.exp, (float)s);
        };
        double sum = 0.0;
        for (int64_t j = 0; j < n; ++j) sum += e(j);
        for (int64_t j = 0; j < n; ++j) y[j] = (float)(e(j) / sum);
      }
}

// argmax: per row the index of the largest value; the lowest index on ties;
// NaN never wins (a row of NaNs gives 0); strict: a row with a NaN or an
// infinity gives -1.
void argmax(const OpCall& call) {
  const Tensor& a = *call.src[0];
  Tensor& d = *call.dst;
  const bool strict = call.p<ArgmaxParams>().strict;
  for (int64_t r = 0; r < a.ne[1]; ++r) {
    const float* x = a.row<float>(r);
    int64_t best = -1;
    bool finite = true;
    for (int64_t j = 0; j < a.ne[0]; ++j) {
      finite = finite && std::isfinite(x[j]);
      if (std::isnan(x[j])) continue;
      if (best < 0 || x[j] > x[best]) best = j;
    }
    const int32_t id = strict && !finite ? -1 : (int32_t)(best < 0 ? 0 : best);
    std::memcpy(static_cast<char*>(d.data) + r * d.nb[0], &id, sizeof(id));
  }
}

}  // namespace kestrel::ref
