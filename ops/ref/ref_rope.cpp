// Reference kernel: rotary position embedding.
//
// x [head_dim, n_head, n_tokens], pos [n_tokens] I32, optional freq factors
// ff [n_dims/2] F32. For token t, pair i in [0, n_dims/2) is rotated by
// theta = pos[t] * freq_scale * base^(-2i/n_dims) / ff[i], then scaled by
// attn_factor:
//   adjacent (llama):  (x[2i], x[2i+1])
//   neox (qwen2/gemma): (x[i], x[i + n_dims/2])
// Angles, sines and cosines are computed in double (a float angle loses
// ~pos * 2^-24 radians, visible past a few thousand positions).
// Elements past n_dims are copied. In place allowed: each pair is read before
// it is written.
#include <cmath>

#include "ops/ref/ref_kernels.h"

namespace kestrel::ref {

void rope(const OpCall& call) {
  const RopeParams& p = call.p<RopeParams>();
  const Tensor& x = *call.src[0];
  const int32_t* pos = static_cast<const int32_t*>(call.src[1]->data);
  const Tensor* ff = call.opt_src(2);
  Tensor& d = *call.dst;
  const int64_t head_dim = x.ne[0], n_head = x.ne[1], n_tokens = x.ne[2];
  const int64_t half = p.n_dims / 2;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t h = 0; h < n_head; ++h) {
      const float* in = x.row<float>(h, t);
      float* out = d.row<float>(h, t);
      for (int64_t i = 0; i < half; ++i) {
        const double factor = ff ? (double)ff->row<const float>(0)[i] : 1.0;
        const double theta =
            (double)pos[t] * p.freq_scale * std::pow((double)p.theta_base, -2.0 * i / p.n_dims) / factor;
        const double c = std::cos(theta) * p.attn_factor, s = std::sin(theta) * p.attn_factor;
        const int64_t i0 = p.mode == RopeMode::neox ? i : 2 * i;
        const int64_t i1 = p.mode == RopeMode::neox ? i + half : 2 * i + 1;
        const double x0 = in[i0], x1 = in[i1];
        out[i0] = (float)(x0 * c - x1 * s);
        out[i1] = (float)(x0 * s + x1 * c);
      }
      for (int64_t i = p.n_dims; i < head_dim; ++i) out[i] = in[i];
    }
  }
}

}  // namespace kestrel::ref
