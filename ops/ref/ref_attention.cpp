// Reference kernel: scaled dot-product attention with grouped-query heads.
//
// q [D, Hq, M] F32, k/v [D, Hkv, n_kv, n_stream] F32|F16, optional mask
// [n_kv, M] F32 or ranges [3, M] I32 (stream, lo, hi), dst [D, Hq, M]. For query token m and head h (kv head h / (Hq/Hkv)):
//   s_j = scale * q.k_j; soft-capped: cap * tanh(s_j / cap); s_j += mask[m][j]
//   dst = sum_j softmax(s)_j v_j;   all keys masked -> zeros.
// Two passes over the keys (max, then weights and the weighted sum), all in
// double (a quake exp tier: each weight from ref::exp_tier, in float). No heap
// memory: the output is accumulated in chunks of kChunk dims
// (scores are recomputed per chunk, which only matters for D > kChunk).
#include <cmath>
#include <cstring>
#include <limits>

#include "ops/half.h"
#include "ops/ref/ref_exp.h"
#include "ops/ref/ref_kernels.h"

namespace kestrel::ref {

namespace {

constexpr int64_t kChunk = 256;

double kv_at(const Tensor& t, int64_t head, int64_t j, int64_t d) {
  const char* row = t.row<const char>(head, j);
  if (t.type == DType::F16) {
    uint16_t h;
    std::memcpy(&h, row + 2 * d, 2);
    return f16_to_f32(h);
  }
  float f;
  std::memcpy(&f, row + 4 * d, 4);
  return f;
}

}  // namespace

void attention(const OpCall& call) {
  const AttentionParams& p = call.p<AttentionParams>();
  const Tensor& q = *call.src[0];
  const Tensor& k = *call.src[1];
  const Tensor& v = *call.src[2];
  const Tensor* src3 = call.opt_src(3);
  const Tensor* mask = src3 && src3->type == DType::F32 ? src3 : nullptr;
  const Tensor* ranges = src3 && src3->type == DType::I32 ? src3 : nullptr;
  Tensor& dst = *call.dst;
  const int64_t D = q.ne[0], Hq = q.ne[1], M = q.ne[2];
  const int64_t Hkv = k.ne[1], n_kv = k.ne[2];
  const int64_t group = Hq / Hkv;
  const double kNegInf = -std::numeric_limits<double>::infinity();

  for (int64_t m = 0; m < M; ++m) {
    const float* mrow = mask ? mask->row<float>(m) : nullptr;
    // The keys this query sees: [lo, hi) of one stream (ranges), else all of stream 0.
    int64_t stream = 0, lo = 0, hi = n_kv;
    if (ranges) {
      int32_t r[3];
      for (int i = 0; i < 3; ++i) std::memcpy(&r[i], ranges->row<const char>(m) + i * ranges->nb[0], 4);
      stream = r[0];
      lo = r[1] < 0 ? 0 : r[1];
      hi = r[2] > n_kv ? n_kv : r[2];
      if (stream < 0 || stream >= k.ne[3]) hi = lo;  // no such stream: sees nothing
    }
    Tensor ks = k, vs = v;  // this query's stream
    ks.data = k.row<char>(0, 0, hi > lo ? stream : 0);
    vs.data = v.row<char>(0, 0, hi > lo ? stream : 0);
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t kvh = h / group;
      const float* qr = q.row<float>(h, m);
      float* out = dst.row<float>(h, m);
      auto score = [&](int64_t j) {
        if (j < lo || j >= hi) return kNegInf;
        if (mrow && mrow[j] == -std::numeric_limits<float>::infinity()) return kNegInf;
        double s = 0.0;
        for (int64_t d = 0; d < D; ++d) s += (double)qr[d] * kv_at(ks, kvh, j, d);
        s *= p.scale;
        if (p.soft_cap > 0.0f) s = p.soft_cap * std::tanh(s / p.soft_cap);
        if (mrow) s += mrow[j];
        return s;
      };
      double mx = kNegInf;
      for (int64_t j = 0; j < n_kv; ++j) mx = std::fmax(mx, score(j));
      if (mx == kNegInf) {  // every key masked (or no keys)
        for (int64_t d = 0; d < D; ++d) out[d] = 0.0f;
        continue;
      }
      for (int64_t d0 = 0; d0 < D; d0 += kChunk) {
        const int64_t nd = D - d0 < kChunk ? D - d0 : kChunk;
        double acc[kChunk] = {};
        double sum = 0.0;
        for (int64_t j = 0; j < n_kv; ++j) {
          const double sj = score(j);
          const double w = p.exp == ExpTier::exact ? std::exp(sj - mx) : exp_tier(p.exp, (float)(sj - mx));
          if (w == 0.0) continue;
          sum += w;
          for (int64_t d = 0; d < nd; ++d) acc[d] += w * kv_at(vs, kvh, j, d0 + d);
        }
        for (int64_t d = 0; d < nd; ++d) out[d0 + d] = (float)(acc[d] / sum);
      }
    }
  }
}

}  // namespace kestrel::ref
