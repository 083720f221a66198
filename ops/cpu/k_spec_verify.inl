// CPU kernel: spec_verify, the fused verify step of speculative decoding
// (rules in ops/op_table.h; see isa_body.inl for how this is compiled per ISA).
//
// Algorithm, for g drafts over a vocabulary of V:
//   A. (threads) Row statistics. Large problems go position by position: the
//      (target j, draft j) pair is computed only when the accept loop reaches
//      j, so no row past the first rejection is ever read. The listed rows are
//      cut into C chunks, C = nth / gcd(rows, nth), so that rows x chunks
//      divides evenly over the threads: two rows on two threads run one per
//      thread, a single row (the bonus row) runs across the vocabulary. Small
//      problems (V x rows <= 65536) compute every row in one threaded pass.
//      Per chunk, one online pass in blocks of 2048 logits (8 KiB, L1-resident):
//      the block max (SIMD), rescale of the running sum when the max grows, then
//      the sum of exp((l - max) / T) over the kept set (exp_nonpos, 2 ulp).
//      Each logit is read once from memory. Greedy keeps the max and its first
//      index instead. A lane sum of l * 0 flags NaN/Inf.
//   B. (serial) Chunks combine into the row's (max, Z); probabilities only at
//      the drafted ids; accept while u * q <= p.
//   C. At the first rejection, one threaded pass over that pair: the residual
//      max(0, p - q) as sums of 256-logit blocks, then the serial sampler walks
//      the block sums and one block. When all pass, the bonus row's stats pass
//      records its 256-block sums, so its draw costs no second exp pass.
// Top-k / top-p need each row's logit threshold (spec_keep_threshold: a
// selection and, for top-p, a sort of a row copy) first; that path costs a
// sort per row and is not the fast path.
// Measured against ops/ref (double): identical n_accepted and next token over
// the test sweep (tests/test_spec_verify.cpp: 600 cases per variant and thread
// count, V 1..32001, g 1..8, five rule settings).
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

namespace kestrel::cpu::KESTREL_ISA_NS {
namespace specv {

constexpr int64_t kOnlineBlock = 2048;  // logits per online max/sum block
constexpr int64_t kSampleBlock = 256;   // logits per sampling block sum
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float vmax_all(fvec v) {
  alignas(64) float t[kLanes];
  v.store_aligned(t);
  float m = t[0];
  for (int i = 1; i < kLanes; ++i) m = t[i] > m ? t[i] : m;
  return m;
}

// exp(y) for y <= 0, the only exponents the stats and sampling passes take
// (y = (l - max) / T): n = nearest(y / ln2), r = y - n ln2 in [-ln2/2, ln2/2]
// (Cody-Waite, ln2 split in two), e^r by its degree-7 Taylor polynomial
// (truncation 5e-9), 2^n added to the exponent bits. n < -126 gives 0 (no
// subnormals; -inf gives 0). With no overflow side to guard it is cheaper
// than a general exp. NaN in y is not propagated: the passes flag NaN/Inf
// logits separately. Measured (avx2, 5e7 points of y in [-87, 0], against
// double exp): max relative error 7.9e-8 (1.3 ulp); y < -87.3 gives 0.
inline fvec exp_nonpos(fvec y) {
  using ivec = xsimd::batch<int32_t, Arch>;
  const fvec yc = xsimd::max(y, fvec(-88.0f));
  const fvec n = xsimd::nearbyint(yc * fvec(1.44269504088896341f));
  fvec r = xsimd::fma(n, fvec(-0.693359375f), yc);
  r = xsimd::fma(n, fvec(2.12194440e-4f), r);
  fvec p(1.9841269841269841e-4f);                      // 1/7!
  p = xsimd::fma(p, r, fvec(1.3888888888888889e-3f));  // 1/6!
  p = xsimd::fma(p, r, fvec(8.3333333333333333e-3f));
  p = xsimd::fma(p, r, fvec(4.1666666666666667e-2f));
  p = xsimd::fma(p, r, fvec(1.6666666666666667e-1f));
  p = xsimd::fma(p, r, fvec(0.5f));
  p = xsimd::fma(p, r, fvec(1.0f));
  p = xsimd::fma(p, r, fvec(1.0f));
  const ivec e = xsimd::batch_cast<int32_t>(n) << 23;
  const fvec res = xsimd::bitwise_cast<fvec>(xsimd::bitwise_cast<ivec>(p) + e);
  return xsimd::select(n < fvec(-126.0f), fvec(0.0f), res);
}

// One chunk's partial: running max m, sum s of exp((l - m) / T) over the kept
// set, chk (NaN when the chunk holds a NaN or Inf), first index of the max.
struct Partial {
  float m, s, chk;
  int32_t arg;
};

// Online (max, sum exp) over l[b, e) (stochastic rule); b is a multiple of
// kSampleBlock. With blk_s, the sum of each 256-logit block and the running
// max it was taken against go to blk_s[k], blk_m[k] (k = block index in the
// row): the bonus row can then be sampled without another exp pass.
inline Partial chunk_stats(const float* l, int64_t b, int64_t e, float thr, float inv_t, bool truncate,
                           float* blk_s, float* blk_m) {
  Partial r{kNegInf, 0.0f, 0.0f, -1};
  const fvec vinv(inv_t), vthr(thr), zero(0.0f);
  fvec vchk(0.0f);
  for (int64_t b0 = b; b0 < e; b0 += kOnlineBlock) {
    const int64_t e0 = std::min(e, b0 + kOnlineBlock);
    fvec vm(kNegInf);
    int64_t j = b0;
    for (; j + kLanes <= e0; j += kLanes) {
      const fvec x = fvec::load_unaligned(l + j);
      vchk = xsimd::fma(x, zero, vchk);
      vm = xsimd::max(vm, truncate ? xsimd::select(x >= vthr, x, fvec(kNegInf)) : x);
    }
    float bm = vmax_all(vm);
    for (int64_t t = j; t < e0; ++t) {
      r.chk += l[t] * 0.0f;
      if ((!truncate || l[t] >= thr) && l[t] > bm) bm = l[t];
    }
    if (bm > r.m) {
      r.s *= std::exp((r.m - bm) * inv_t);
      r.m = bm;
    }
    const fvec vm0(r.m);
    for (int64_t s0 = b0; s0 < e0; s0 += kSampleBlock) {
      const int64_t s1 = std::min(e0, s0 + kSampleBlock);
      float sb = 0.0f;
      if (r.m > kNegInf) {  // else nothing is kept yet: the block adds 0
        fvec vs(0.0f);
        for (j = s0; j + kLanes <= s1; j += kLanes) {
          const fvec x = fvec::load_unaligned(l + j);
          const fvec ex = exp_nonpos((x - vm0) * vinv);
          vs += truncate ? xsimd::select(x >= vthr, ex, zero) : ex;
        }
        sb = xsimd::hadd(vs);
        for (int64_t t = j; t < s1; ++t)
          if (!truncate || l[t] >= thr) sb += std::exp((l[t] - r.m) * inv_t);
      }
      if (blk_s) {
        blk_s[s0 / kSampleBlock] = sb;
        blk_m[s0 / kSampleBlock] = r.m;
      }
      r.s += sb;
    }
  }
  r.chk += xsimd::hadd(vchk);
  return r;
}

// Max and its first index over l[b, e) (greedy rule).
inline Partial chunk_argmax(const float* l, int64_t b, int64_t e) {
  Partial r{kNegInf, 0.0f, 0.0f, -1};
  const fvec zero(0.0f);
  fvec vchk(0.0f);
  int64_t best_block = -1;
  for (int64_t b0 = b; b0 < e; b0 += kOnlineBlock) {
    const int64_t e0 = std::min(e, b0 + kOnlineBlock);
    fvec vm(kNegInf);
    int64_t j = b0;
    for (; j + kLanes <= e0; j += kLanes) {
      const fvec x = fvec::load_unaligned(l + j);
      vchk = xsimd::fma(x, zero, vchk);
      vm = xsimd::max(vm, x);
    }
    float bm = vmax_all(vm);
    for (int64_t t = j; t < e0; ++t) {
      r.chk += l[t] * 0.0f;
      bm = l[t] > bm ? l[t] : bm;
    }
    if (bm > r.m || best_block < 0) {
      if (best_block < 0 || bm > r.m) best_block = b0;
      r.m = bm > r.m ? bm : r.m;
    }
  }
  r.chk += xsimd::hadd(vchk);
  if (best_block >= 0) {
    const int64_t e0 = std::min(e, best_block + kOnlineBlock);
    for (int64_t t = best_block; t < e0; ++t)
      if (l[t] == r.m) {
        r.arg = static_cast<int32_t>(t);
        break;
      }
    if (r.arg < 0) r.arg = static_cast<int32_t>(best_block);  // all -inf (flagged by chk anyway)
  }
  return r;
}

// A row's combined distribution.
struct Row {
  const float* l;
  float m, z, thr;
  int32_t arg;
  bool ok;
};

// Scalar weight functor interface: w(i) for the sampler's in-block walk, and
// wv(j) for SIMD block sums at offset j.
struct SoftmaxW {  // exp((l - m) / T) over the kept set (unnormalized p)
  const float* l;
  float m, inv_t, thr;
  bool truncate;
  float w(int64_t i) const { return (!truncate || l[i] >= thr) ? std::exp((l[i] - m) * inv_t) : 0.0f; }
  fvec wv(int64_t j) const {
    const fvec x = fvec::load_unaligned(l + j);
    const fvec e = exp_nonpos((x - fvec(m)) * fvec(inv_t));
    return truncate ? xsimd::select(x >= fvec(thr), e, fvec(0.0f)) : e;
  }
};
struct ResidualW {  // max(0, p - q), normalized p and q
  SoftmaxW p, q;
  float ip, iq;  // 1 / Z
  float w(int64_t i) const { return std::max(0.0f, p.w(i) * ip - q.w(i) * iq); }
  fvec wv(int64_t j) const { return xsimd::max(fvec(0.0f), p.wv(j) * fvec(ip) - q.wv(j) * fvec(iq)); }
};
struct SigmoidW {  // 1 / (1 + exp(-(a l + b)))
  const float* l;
  float a, b;
  float w(int64_t i) const { return 1.0f / (1.0f + std::exp(-(a * l[i] + b))); }
  fvec wv(int64_t j) const {
    const fvec x = fvec::load_unaligned(l + j);
    return fvec(1.0f) / (fvec(1.0f) + xsimd::exp(-xsimd::fma(x, fvec(a), fvec(b))));
  }
};
struct SigResidualW {
  SigmoidW p, q;
  float w(int64_t i) const { return std::max(0.0f, p.w(i) - q.w(i)); }
  fvec wv(int64_t j) const { return xsimd::max(fvec(0.0f), p.wv(j) - q.wv(j)); }
};

// Sample from weights W over [0, V) with uniform u: block sums in parallel,
// then a serial walk. -1 when the weights sum to 0.
template <typename W>
int32_t sample(Exec& exec, int n_threads, const W& w, int64_t V, float u, float* bsum) {
  const int64_t nb = (V + kSampleBlock - 1) / kSampleBlock;
  exec.parallel(static_cast<int>(std::min<int64_t>(nb, n_threads)), [&](int ith, int nth) {
    int64_t b0, b1;
    ThreadPool::split(nb, ith, nth, &b0, &b1);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t s = b * kSampleBlock, e = std::min(V, s + kSampleBlock);
      fvec acc(0.0f);
      int64_t j = s;
      for (; j + kLanes <= e; j += kLanes) acc += w.wv(j);
      float t = xsimd::hadd(acc);
      for (; j < e; ++j) t += w.w(j);
      bsum[b] = t;
    }
  });
  double total = 0.0;
  for (int64_t b = 0; b < nb; ++b) total += bsum[b];
  if (!(total > 0.0)) return -1;
  const double target = static_cast<double>(u) * total;
  double cum = 0.0;
  int64_t b = 0;
  for (; b < nb - 1 && cum + bsum[b] <= target; ++b) cum += bsum[b];
  int32_t last = -1;
  // The walk inside the block; rounding may leave the target past its end: the
  // last positive weight seen (in this block or, failing that, the earlier ones).
  for (int64_t bb = b; bb >= 0 && last < 0; --bb) {
    const int64_t s = bb * kSampleBlock, e = std::min(V, s + kSampleBlock);
    for (int64_t i = s; i < e; ++i) {
      const float wi = w.w(i);
      if (wi <= 0.0f) continue;
      last = static_cast<int32_t>(i);
      cum += wi;
      if (bb == b && cum > target) return last;
    }
  }
  return last;
}

// Walks recorded block sums (blk_s against running maxima blk_m, rescaled to
// the row max m) and then one block: the bonus draw without a second exp pass.
inline int32_t sample_recorded(const SoftmaxW& w, const float* blk_s, const float* blk_m, int64_t V, float u,
                               float* bsum) {
  const int64_t nb = (V + kSampleBlock - 1) / kSampleBlock;
  double total = 0.0;
  for (int64_t k = 0; k < nb; ++k) {
    bsum[k] = blk_m[k] > kNegInf ? blk_s[k] * std::exp((blk_m[k] - w.m) * w.inv_t) : 0.0f;
    total += bsum[k];
  }
  if (!(total > 0.0)) return -1;
  const double target = static_cast<double>(u) * total;
  double cum = 0.0;
  int64_t b = 0;
  for (; b < nb - 1 && cum + bsum[b] <= target; ++b) cum += bsum[b];
  int32_t last = -1;
  for (int64_t bb = b; bb >= 0 && last < 0; --bb) {
    const int64_t s = bb * kSampleBlock, e = std::min(V, s + kSampleBlock);
    for (int64_t i = s; i < e; ++i) {
      const float wi = w.w(i);
      if (wi <= 0.0f) continue;
      last = static_cast<int32_t>(i);
      cum += wi;
      if (bb == b && cum > target) return last;
    }
  }
  return last;
}

// Below this many logits in all rows together, every row runs in one threaded
// pass (a pass per row would cost more in hand-offs than it saves).
constexpr int64_t kEagerLogits = int64_t(1) << 16;

inline bool k_spec_verify(const OpCall& c, Exec& exec) {
  const SpecVerifyParams& p = c.p<SpecVerifyParams>();
  const Tensor& tl = *c.src[0];
  const Tensor& ids = *c.src[1];
  const Tensor* dl = c.opt_src(2);
  const int64_t V = tl.ne[0], g = ids.ne[0];
  int32_t* out = static_cast<int32_t*>(c.dst->data);
  out[0] = out[1] = -1;
  const int32_t* x = static_cast<const int32_t*>(ids.data);
  for (int64_t j = 0; j < g; ++j)
    if (x[j] < 0 || x[j] >= V) return true;

  const bool greedy = p.greedy;
  const bool truncate = !greedy && !p.sigmoid && (p.top_p < 1.0f || (p.top_k > 0 && p.top_k < V));
  const int64_t R = greedy ? g + 1 : 2 * g + 1;  // rows 0..g target, g+1..2g draft
  // Problems of up to 16384 logits run on the calling thread: a hand-off to
  // the workers costs more than the work (measured at V = 512).
  const int nth = V * R <= (int64_t(1) << 14) ? 1 : exec.n_threads();
  const int64_t nb = (V + kSampleBlock - 1) / kSampleBlock;
  // Scratch: partials (at most R rows x nth chunks), rows, row-done flags,
  // sampling block sums, recorded blocks (sums, maxima), row copies for top-k/p.
  auto al = [](size_t b) { return (b + 63) / 64 * 64; };
  const size_t part_bytes = al(static_cast<size_t>(R) * static_cast<size_t>(nth) * sizeof(Partial));
  const size_t row_bytes = al(static_cast<size_t>(R) * sizeof(Row));
  const size_t done_bytes = al(static_cast<size_t>(R));
  const size_t blk_bytes = al(static_cast<size_t>(nb) * sizeof(float));
  const size_t work_bytes = truncate ? static_cast<size_t>(nth) * static_cast<size_t>(V) * sizeof(float) : 0;
  char* scratch = static_cast<char*>(exec.scratch(part_bytes + row_bytes + done_bytes + 3 * blk_bytes + work_bytes));
  if (!scratch) return false;
  Partial* part = reinterpret_cast<Partial*>(scratch);
  Row* rows = reinterpret_cast<Row*>(scratch + part_bytes);
  bool* done = reinterpret_cast<bool*>(scratch + part_bytes + row_bytes);
  float* bsum = reinterpret_cast<float*>(scratch + part_bytes + row_bytes + done_bytes);
  float* blk_s = bsum + blk_bytes / sizeof(float);
  float* blk_m = blk_s + blk_bytes / sizeof(float);
  float* work = reinterpret_cast<float*>(scratch + part_bytes + row_bytes + done_bytes + 3 * blk_bytes);
  for (int64_t r = 0; r < R; ++r) {
    rows[r].l = r <= g ? tl.row<const float>(r) : dl->row<const float>(r - g - 1);
    rows[r].thr = kNegInf;
    done[r] = false;
  }
  const float inv_t = greedy ? 1.0f : 1.0f / p.temperature;

  // A: partials of the listed rows (one threaded pass), combined into rows[].
  // record: target row g, when listed, also records its 256-block sums.
  auto compute = [&](const int64_t* list, int64_t nr, bool record) {
    const int64_t C = nth / std::gcd<int64_t>(nr, nth);
    const int64_t chunk = ((V + C - 1) / C + kSampleBlock - 1) / kSampleBlock * kSampleBlock;
    const int64_t items = nr * C;
    exec.parallel(nth, [&](int ith, int nth_) {
      if (truncate) {
        for (int64_t k = ith; k < nr; k += nth_) {
          Row& row = rows[list[k]];
          row.thr = spec_keep_threshold(row.l, V, p.temperature, p.top_k, p.top_p,
                                        work + static_cast<size_t>(ith) * static_cast<size_t>(V));
        }
        exec.pool().barrier();
      }
      int64_t i0, i1;
      ThreadPool::split(items, ith, nth_, &i0, &i1);
      for (int64_t it = i0; it < i1; ++it) {
        const Row& row = rows[list[it / C]];
        const int64_t b = std::min(V, (it % C) * chunk), e = std::min(V, b + chunk);
        if (greedy) {
          part[it] = chunk_argmax(row.l, b, e);
        } else if (p.sigmoid) {
          // The logistic needs no normalizer: only the finiteness check.
          fvec vchk(0.0f);
          int64_t j = b;
          for (; j + kLanes <= e; j += kLanes) vchk = xsimd::fma(fvec::load_unaligned(row.l + j), fvec(0.0f), vchk);
          float chk = xsimd::hadd(vchk);
          for (; j < e; ++j) chk += row.l[j] * 0.0f;
          part[it] = Partial{0.0f, 1.0f, chk, -1};
        } else {
          part[it] = chunk_stats(row.l, b, e, row.thr, inv_t, truncate, record && &row == &rows[g] ? blk_s : nullptr, blk_m);
        }
      }
    });
    for (int64_t k = 0; k < nr; ++k) {
      Row& row = rows[list[k]];
      float m = kNegInf, chk = 0.0f;
      int32_t arg = -1;
      for (int64_t ci = 0; ci < C; ++ci) {
        const Partial& q = part[k * C + ci];
        chk += q.chk;
        if (q.m > m) {
          m = q.m;
          arg = q.arg;
        }
      }
      double z = 0.0;
      if (!greedy && !p.sigmoid)
        for (int64_t ci = 0; ci < C; ++ci) {
          const Partial& q = part[k * C + ci];
          if (q.m > kNegInf) z += static_cast<double>(q.s) * std::exp((q.m - m) * inv_t);
        }
      row.m = m;
      row.z = static_cast<float>(z);
      row.arg = arg < 0 ? 0 : arg;
      row.ok = chk == 0.0f && (greedy || p.sigmoid || (z > 0.0 && std::isfinite(z)));
      done[list[k]] = true;
    }
  };
  // Small problems: every row at once. Large ones: lazily, the (target, draft)
  // pair of each position in turn, so rows past the first rejection are never read.
  const bool eager = V * R <= kEagerLogits;
  int64_t all[17 * 2 + 1];
  if (eager) {
    for (int64_t r0 = 0; r0 < R; r0 += 35) {
      const int64_t nr = std::min<int64_t>(35, R - r0);
      for (int64_t k = 0; k < nr; ++k) all[k] = r0 + k;
      compute(all, nr, true);
    }
  }
  auto ensure_pair = [&](int64_t j) {  // target row j (and draft row j)
    if (done[j]) return;
    const int64_t list[2] = {j, g + 1 + j};
    compute(list, greedy || j == g ? 1 : 2, false);
  };

  if (greedy) {
    int64_t j = 0;
    for (;; ++j) {
      ensure_pair(j);
      if (!rows[j].ok) return true;  // dst stays {-1, -1}
      if (j == g || rows[j].arg != x[j]) break;
    }
    out[0] = static_cast<int32_t>(j);
    out[1] = rows[j].arg;
    return true;
  }
  auto softmax_w = [&](const Row& r) { return SoftmaxW{r.l, r.m, inv_t, r.thr, truncate}; };
  const float sa = p.sigmoid_scale * inv_t, sb = p.sigmoid_bias;
  for (int64_t j = 0; j < g; ++j) {
    ensure_pair(j);
    const Row& P = rows[j];
    const Row& Q = rows[g + 1 + j];
    if (!P.ok || !Q.ok) return true;
    float pj, qj;
    if (p.sigmoid) {
      pj = SigmoidW{P.l, sa, sb}.w(x[j]);
      qj = SigmoidW{Q.l, sa, sb}.w(x[j]);
    } else {
      pj = softmax_w(P).w(x[j]) / P.z;
      qj = softmax_w(Q).w(x[j]) / Q.z;
    }
    if (spec_uniform(p.seed, static_cast<int32_t>(j), 0) * qj <= pj) continue;
    // C: the residual of the first rejected row only.
    const float us = spec_uniform(p.seed, static_cast<int32_t>(j), 1);
    int32_t next;
    if (p.sigmoid) {
      next = sample(exec, nth, SigResidualW{SigmoidW{P.l, sa, sb}, SigmoidW{Q.l, sa, sb}}, V, us, bsum);
      if (next < 0) next = sample(exec, nth, SigmoidW{P.l, sa, sb}, V, us, bsum);
    } else {
      next = sample(exec, nth, ResidualW{softmax_w(P), softmax_w(Q), 1.0f / P.z, 1.0f / Q.z}, V, us, bsum);
      if (next < 0) next = sample(exec, nth, softmax_w(P), V, us, bsum);
    }
    out[0] = static_cast<int32_t>(j);
    out[1] = next;
    return true;
  }
  // All g accepted: the bonus token from target row g.
  const float ub = spec_uniform(p.seed, static_cast<int32_t>(g), 1);
  int32_t next;
  if (p.sigmoid) {
    ensure_pair(g);
    if (!rows[g].ok) return true;
    next = sample(exec, nth, SigmoidW{rows[g].l, sa, sb}, V, ub, bsum);
  } else {
    if (!done[g]) {
      const int64_t list[1] = {g};
      compute(list, 1, true);
    }
    if (!rows[g].ok) return true;
    next = sample_recorded(softmax_w(rows[g]), blk_s, blk_m, V, ub, bsum);
  }
  out[0] = static_cast<int32_t>(g);
  out[1] = next;
  return true;
}

}  // namespace specv

inline void register_spec_verify(KernelTable& table) { table[OpId::spec_verify].run = &specv::k_spec_verify; }

}  // namespace kestrel::cpu::KESTREL_ISA_NS
