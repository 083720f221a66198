// CPU kernels: softmax and argmax (see isa_body.inl for how this is compiled per ISA).
//
// softmax, per row (threads take fixed chunks of rows), three SIMD passes:
//   1. s = x * scale, soft cap cap * tanh(s / cap) (xsimd::tanh), + mask row;
//      written to y, running max. Causal / window limits become a key range
//      [lo, hi): keys outside are never computed and end as 0.
//   2. y = exp(y - max), running sum (exp: smax_exp below, exact tier for now).
//   3. y *= 1 / sum.
// A row whose keys are all masked (empty range or max = -inf) yields zeros.
// exp(-inf) = 0 keeps -inf mask entries exact. Measured max abs error vs ops/ref
// (double) 1.2e-7 per probability (logits in [-30, 30], rows up to 32000). dst may alias src (each element is read
// before its own slot is written).
//
// argmax: per row, a SIMD max with NaN lanes replaced by -inf, then the first
// index holding that max (lowest index on ties; NaN never wins; all NaN -> 0).
#include <cstring>
#include <limits>

namespace kestrel::cpu::KESTREL_ISA_NS {
namespace smax {

// The exp of softmax; one place to swap in a faster tier.
inline fvec smax_exp(fvec x) { return xsimd::exp(x); }

inline float hmax(fvec v) {
  alignas(64) float t[kLanes];
  v.store_aligned(t);
  float m = t[0];
  for (int i = 1; i < kLanes; ++i) m = t[i] > m ? t[i] : m;
  return m;
}

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
  for (; j + kLanes <= hi; j += kLanes) {
    const fvec s = logits(fvec::load_unaligned(x + j), mask ? fvec::load_unaligned(mask + j) : fvec(0.0f));
    s.store_unaligned(y + j);
    vmax = xsimd::max(vmax, s);
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
      y[j + i] = t[i];
      mx = t[i] > mx ? t[i] : mx;
    }
  }
  std::fill(y, y + lo, 0.0f);
  std::fill(y + hi, y + n, 0.0f);
  if (!(mx > kNegInf)) {
    std::fill(y + lo, y + hi, 0.0f);
    return;
  }
  // Pass 2: exp and sum (tail padded with -inf, whose exp is 0).
  const fvec vm(mx);
  fvec vsum(0.0f);
  j = lo;
  for (; j + kLanes <= hi; j += kLanes) {
    const fvec e = smax_exp(fvec::load_unaligned(y + j) - vm);
    e.store_unaligned(y + j);
    vsum += e;
  }
  if (tail > 0) {
    std::fill(t, t + kLanes, kNegInf);
    std::memcpy(t, y + j, (size_t)tail * sizeof(float));
    const fvec e = smax_exp(fvec::load_aligned(t) - vm);
    vsum += e;
    e.store_aligned(t);
    std::memcpy(y + j, t, (size_t)tail * sizeof(float));
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
  ew::par_rows(exec, a.nrows(), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const ew::RowIdx ir = ew::row_idx(a, r);
      const float* mask = m ? m->row<float>(ir.i1) : nullptr;
      softmax_row(p, ew::row_ptr<float>(a, ir), mask, ew::row_ptr<float>(d, ir), a.ne[0],
                  (int64_t)p.pos_offset + ir.i1);
    }
  });
  return true;
}

inline int32_t argmax_row(const float* x, int64_t n) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  fvec vmax(kNegInf);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const fvec v = fvec::load_unaligned(x + j);
    vmax = xsimd::max(vmax, xsimd::select(v == v, v, fvec(kNegInf)));
  }
  float mx = hmax(vmax);
  for (; j < n; ++j)
    if (x[j] > mx) mx = x[j];
  for (j = 0; j < n; ++j)
    if (x[j] == mx) return (int32_t)j;
  return 0;  // every element NaN
}

inline bool k_argmax(const OpCall& c, Exec& exec) {
  const Tensor& a = *c.src[0];
  int32_t* out = static_cast<int32_t*>(c.dst->data);
  ew::par_rows(exec, a.ne[1], [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) out[r] = argmax_row(a.row<float>(r), a.ne[0]);
  });
  return true;
}

}  // namespace smax

inline void register_softmax(KernelTable& table) {
  table[OpId::softmax].run = &smax::k_softmax;
  table[OpId::argmax].run = &smax::k_argmax;
}

}  // namespace kestrel::cpu::KESTREL_ISA_NS
