// CPU kernels: softmax and argmax (see isa_body.inl for how this is compiled per ISA).
//
// softmax, per row (threads take fixed chunks of rows), three SIMD passes:
//   1. s = x * scale, soft cap cap * tanh(s / cap) (xsimd::tanh), + mask row;
//      running max. With a cap or a mask s is written to y; without them
//      (the common case) nothing is written and pass 2 recomputes x * scale.
//      Causal / window limits become a key range [lo, hi): keys outside are
//      never computed and end as 0.
//   2. y = exp(s - max) on the op's exp tier, running sum. Exact tier:
//      xsimd::exp(s - max). Quake tiers: (s - max) folded into the quake fma,
//      v = x * (a * scale) + (b - a * max) (or y * a + (b - a * max)), one fma
//      per element; when |max| > 88 the fold would round b - a * max too
//      coarsely, so s - max is formed first.
//   3. y *= 1 / sum.
// A row whose keys are all masked (empty range or max = -inf) yields zeros.
// exp(-inf) = 0 on every tier keeps -inf mask entries exact. Measured max abs error vs ops/ref
// (double) 1.2e-7 per probability (exact tier, logits in [-30, 30], rows up to 32000); quake
// tiers: relative error per probability within twice the tier's exp bound, rows sum to 1
// (tests/test_exp.cpp). dst may alias src (each element is read before its own slot is written).
//
// argmax: per row, a SIMD max with NaN lanes replaced by -inf, then the first
// index holding that max (lowest index on ties; NaN never wins; all NaN -> 0).
#include <cmath>
#include <cstring>
#include <limits>

namespace kestrel::cpu::KESTREL_ISA_NS {
namespace smax {

inline float hmax(fvec v) {
  alignas(64) float t[kLanes];
  v.store_aligned(t);
  float m = t[0];
  for (int i = 1; i < kLanes; ++i) m = t[i] > m ? t[i] : m;
  return m;
}

template <ExpTier T>
inline void softmax_row(const SoftmaxParams& p, const float* x, const float* mask, float* y, int64_t n,
                        int64_t q) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  int64_t lo = 0, hi = n;
  if (p.causal) hi = std::min<int64_t>(n, std::max<int64_t>(q + 1, 0));
  if (p.window > 0) lo = std::max<int64_t>(0, q - p.window + 1);
  if (lo >= hi) {
    std::fill(y, y + n, 0.0f);
    return;
  }
  const bool cap = p.soft_cap > 0.0f;
  // direct: the logits are x * scale, recomputed in pass 2 rather than stored.
  const bool direct = !cap && !mask;
  const fvec vscale(p.scale), vcap(p.soft_cap), vinvcap(cap ? 1.0f / p.soft_cap : 0.0f);
  // Pass 1: logits and max. The tail (fewer than kLanes keys) runs through
  // the same vector code on a zero-padded lane array.
  auto logits = [&](fvec x, fvec m) {
    fvec s = x * vscale;
    if (cap) s = vcap * xsimd::tanh(s * vinvcap);
    return mask ? s + m : s;
  };
  fvec vmax(kNegInf);
  int64_t j = lo;
  if (direct) {
    for (; j + kLanes <= hi; j += kLanes) vmax = xsimd::max(vmax, fvec::load_unaligned(x + j) * vscale);
  } else {
    for (; j + kLanes <= hi; j += kLanes) {
      const fvec s = logits(fvec::load_unaligned(x + j), mask ? fvec::load_unaligned(mask + j) : fvec(0.0f));
      s.store_unaligned(y + j);
      vmax = xsimd::max(vmax, s);
    }
  }
  float mx = hmax(vmax);
  const int64_t tail = hi - j;
  alignas(64) float t[kLanes];
  if (tail > 0) {
    alignas(64) float tm[kLanes] = {};
    std::fill(t, t + kLanes, 0.0f);
    std::memcpy(t, x + j, (size_t)tail * sizeof(float));
    if (mask) std::memcpy(tm, mask + j, (size_t)tail * sizeof(float));
    logits(fvec::load_aligned(t), fvec::load_aligned(tm)).store_aligned(t);
    for (int64_t i = 0; i < tail; ++i) {
      if (!direct) y[j + i] = t[i];
      mx = t[i] > mx ? t[i] : mx;
    }
  }
  std::fill(y, y + lo, 0.0f);
  std::fill(y + hi, y + n, 0.0f);
  if (!(mx > kNegInf)) {
    std::fill(y + lo, y + hi, 0.0f);
    return;
  }
  // Pass 2: exp and sum. src holds what the exp's input is computed from.
  const float* src = direct ? x : y;
  const fvec vm(mx);
  // Runs exp over [lo, hi) with ex(vector of src), storing into y; the sum.
  auto pass2 = [&](auto&& ex) {
    fvec vsum(0.0f);
    int64_t j = lo;
    for (; j + kLanes <= hi; j += kLanes) {
      const fvec e = ex(fvec::load_unaligned(src + j));
      e.store_unaligned(y + j);
      vsum += e;
    }
    if (tail > 0) {
      // The lanes past the tail must add 0: exp(-inf) when src holds logits;
      // with direct input (x, any scale sign) they are zeroed after the exp.
      std::fill(t, t + kLanes, direct ? 0.0f : kNegInf);
      std::memcpy(t, src + j, (size_t)tail * sizeof(float));
      ex(fvec::load_aligned(t)).store_aligned(t);
      std::fill(t + tail, t + kLanes, 0.0f);
      vsum += fvec::load_aligned(t);
      std::memcpy(y + j, t, (size_t)tail * sizeof(float));
    }
    return vsum;
  };
  fvec vsum;
  if constexpr (T == ExpTier::exact) {
    if (direct) vsum = pass2([&](fvec v) { return vexp::exact(v * vscale - vm); });
    else vsum = pass2([&](fvec v) { return vexp::exact(v - vm); });
  } else if (std::fabs(mx) <= 88.0f) {
    const vexp::Quake<T> qf(direct ? (double)p.scale : 1.0, -(double)mx);  // the folded map
    vsum = pass2([&](fvec v) { return qf(v); });
  } else {
    const vexp::Quake<T> q1(1.0, 0.0);  // s - max formed first
    if (direct) vsum = pass2([&](fvec v) { return q1(v * vscale - vm); });
    else vsum = pass2([&](fvec v) { return q1(v - vm); });
  }
  const float sum = xsimd::hadd(vsum);
  // Pass 3: normalize.
  const float inv = 1.0f / sum;
  const fvec vinv(inv);
  j = lo;
  for (; j + kLanes <= hi; j += kLanes) (fvec::load_unaligned(y + j) * vinv).store_unaligned(y + j);
  for (; j < hi; ++j) y[j] *= inv;
}

inline bool k_softmax(const OpCall& c, Exec& exec) {
  const SoftmaxParams& p = c.p<SoftmaxParams>();
  const Tensor& a = *c.src[0];
  const Tensor* m = c.opt_src(1);
  const Tensor& d = *c.dst;
  vexp::with_tier(p.exp, [&](auto tc) {
    ew::par_rows(exec, a.nrows(), 4 * a.ne[0], [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const ew::RowIdx ir = ew::row_idx(a, r);
        const float* mask = m ? m->row<float>(ir.i1) : nullptr;
        softmax_row<decltype(tc)::value>(p, ew::row_ptr<float>(a, ir), mask, ew::row_ptr<float>(d, ir), a.ne[0],
                                         (int64_t)p.pos_offset + ir.i1);
      }
    });
    return 0;
  });
  return true;
}

// strict: -1 when the row holds a NaN or an infinity.
inline int32_t argmax_row(const float* x, int64_t n, bool strict) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  fvec vmax(kNegInf);
  auto bad = fvec(0.0f) != fvec(0.0f);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const fvec v = fvec::load_unaligned(x + j);
    vmax = xsimd::max(vmax, xsimd::select(v == v, v, fvec(kNegInf)));
    bad = bad | !xsimd::isfinite(v);
  }
  if (strict && xsimd::any(bad)) return -1;
  float mx = hmax(vmax);
  for (; j < n; ++j) {
    if (strict && !std::isfinite(x[j])) return -1;
    if (x[j] > mx) mx = x[j];
  }
  for (j = 0; j < n; ++j)
    if (x[j] == mx) return (int32_t)j;
  return 0;  // every element NaN
}

inline bool k_argmax(const OpCall& c, Exec& exec) {
  const Tensor& a = *c.src[0];
  const Tensor& d = *c.dst;
  const bool strict = c.p<ArgmaxParams>().strict;
  ew::par_rows(exec, a.ne[1], a.ne[0], [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int32_t id = argmax_row(a.row<float>(r), a.ne[0], strict);
      std::memcpy(static_cast<char*>(d.data) + r * d.nb[0], &id, sizeof(id));
    }
  });
  return true;
}

}  // namespace smax

inline void register_softmax(KernelTable& table) {
  table[OpId::softmax].run = &smax::k_softmax;
  table[OpId::argmax].run = &smax::k_argmax;
}

}  // namespace kestrel::cpu::KESTREL_ISA_NS
