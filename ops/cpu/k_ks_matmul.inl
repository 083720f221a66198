// CPU kernel: Kronecker-sparse matmul (ks_matmul, see op_table.h for the pattern and
// layouts; compiled per ISA, see isa_body.inl).
//
// A pattern (a, b, c, d) is a*d independent dense blocks: block (i, j) maps the c inputs
// x[i, l, j] (feature (i*c + l)*d + j) to the b outputs y[i, k, j] (feature (i*b + k)*d + j)
// through the c x b weight block W_ij stored [l][k]. Both kernels read x and write y in
// place with stride d between a block's features: no permuted copies of the activations.
// Work items are (block, output chunk[, token chunk]) triples split over the threads in
// fixed contiguous ranges, so each y value is computed by one thread in one order and the
// result does not depend on the thread count.
//
// token_major (decode, M = 1..16 tokens, one row per token): SIMD over k.
//   For each item and group of up to 4 tokens: gather the block's c inputs of each token
//   (stride d) into scratch, then stream the weight rows 8 (one token) or 4 at a time,
//   acc_t[k..k+lanes) += sum_q W_ij[l+q][k..k+lanes) * x_t[l+q], with the tokens' partial
//   output rows (b floats each) in L1 scratch: the weights are read once per token group,
//   sequentially (several rows at once, as a column-major GEMV does), and the outputs go
//   to y contiguously when d = 1, with stride d otherwise. Whole blocks per item when
//   there are at least 2 per thread, else output chunks of 128. Outputs past the last
//   full vector run a scalar loop.
// batch_last (prompt, M tokens contiguous per feature row): SIMD over tokens, a
//   register-blocked GEMM per block, Y_ij[b x M] = W_ij^T X_ij, whose rows are the
//   feature rows of x and y (row stride d rows), read and written in place. Items are
//   (block, 192 outputs, 256 tokens); per panel of 256 inputs the item's weights are
//   packed as F32 into scratch per group of 6 outputs ([g][l][6], so a micro-kernel
//   call streams one contiguous block; F16/BF16 widened once per panel), and the
//   6 x (2 vectors of tokens) micro-kernel runs over each slab of 2 vectors of tokens
//   for every group. The slab's x rows (d rows apart in x, which can alias to a few
//   cache sets) are copied into contiguous scratch by the slab's first group inside its
//   FMA loop, and the next slab's lines are prefetched by the last group; later panels
//   add onto y. Tokens past the last full vector run a scalar loop. Measured at batch
//   128, 1 thread, AVX2 (Zen 3, FMA peak 102.6 GFLOP/s by a register-only loop): median
//   86-87 GFLOP/s over the 56 benchmark patterns (was 79 with [l][192] packing and a
//   separate copy pass).
// Error: float products and sums in l order per output (c terms; batch_last: per panel
// of 256, the panel sums added in order), weights widened exactly; measured worst
// relative RMS error vs the double reference 6e-7 over the benchmark patterns (c up to
// 1024) and awkward sizes (tests/test_ks_matmul.cpp).
#include <algorithm>

namespace kestrel::cpu::KESTREL_ISA_NS {
namespace ks {

struct Shape {
  int64_t a, b, c, d, M;
  size_t w_nb1, w_nb2, w_nb3;  // weight strides in bytes (l, j, i)
  size_t x_ld, y_ld;           // row strides of x and y in floats
};

inline const char* block_w(const Tensor& w, int64_t i, int64_t j) {
  return static_cast<const char*>(w.data) + j * w.nb[2] + i * w.nb[3];
}

// ---- token_major -------------------------------------------------------------------

// acc[t][k_lo, k_hi) += sum over 4 (or R) weight rows l of W_ij[l][k] * xg[t][l]: R rows
// streamed together (sequential reads), the T partial output rows stay in L1.
template <DType DT, int T, int R>
inline void tm_rows(const char* wb, size_t w_nb1, int64_t l, int64_t k_lo, int64_t k_hi, const float* const* xg,
                    float* const* acc) {
  const void* wr[R];
  for (int q = 0; q < R; ++q) wr[q] = wb + (l + q) * w_nb1;
  fvec xb[T][R];
  for (int t = 0; t < T; ++t)
    for (int q = 0; q < R; ++q) xb[t][q] = fvec(xg[t][l + q]);
  int64_t k = k_lo;
  for (; k + kLanes <= k_hi; k += kLanes) {
    fvec wv[R];
    for (int q = 0; q < R; ++q) wv[q] = mm::load_w<DT>(wr[q], k);
    for (int t = 0; t < T; ++t) {
      // Two fma chains (even and odd rows) halve the dependent latency per vector.
      fvec a = fvec::load_unaligned(acc[t] + k), a2(0.0f);
      for (int q = 0; q < R; q += 2) {
        a = xsimd::fma(wv[q], xb[t][q], a);
        if (q + 1 < R) a2 = xsimd::fma(wv[q + 1], xb[t][q + 1], a2);
      }
      (a + a2).store_unaligned(acc[t] + k);
    }
  }
  for (; k < k_hi; ++k)
    for (int t = 0; t < T; ++t) {
      float a = acc[t][k];
      for (int q = 0; q < R; ++q) a += mm::load_w1<DT>(wr[q], k) * xg[t][l + q];
      acc[t][k] = a;
    }
}

// Outputs [k_lo, k_hi) of block (i, j) for T tokens whose inputs are gathered in xg;
// acc: T rows of b floats of scratch.
template <DType DT, int T>
void tm_tokens(const Shape& s, const char* wb, int64_t i, int64_t j, int64_t k_lo, int64_t k_hi,
               const float* const* xg, float* const* acc, float* const* yrow) {
  for (int t = 0; t < T; ++t) std::fill(acc[t] + k_lo, acc[t] + k_hi, 0.0f);
  // Rows per sweep: 8 for one token (fewer partial-output loads and stores per weight
  // vector), 4 for more (the broadcast inputs take registers).
  constexpr int kR = T == 1 ? 8 : 4;
  int64_t l = 0;
  for (; l + kR <= s.c; l += kR) tm_rows<DT, T, kR>(wb, s.w_nb1, l, k_lo, k_hi, xg, acc);
  if (kR == 8 && l + 4 <= s.c) {
    tm_rows<DT, T, 4>(wb, s.w_nb1, l, k_lo, k_hi, xg, acc);
    l += 4;
  }
  for (; l < s.c; ++l) tm_rows<DT, T, 1>(wb, s.w_nb1, l, k_lo, k_hi, xg, acc);
  for (int t = 0; t < T; ++t) {
    float* y = yrow[t] + (i * s.b) * s.d + j;
    if (s.d == 1) std::copy(acc[t] + k_lo, acc[t] + k_hi, y + k_lo);
    else
      for (int64_t k = k_lo; k < k_hi; ++k) y[k * s.d] = acc[t][k];
  }
}

template <DType DT>
bool run_token_major(const OpCall& call, const Shape& s, Exec& exec) {
  const Tensor& w = *call.src[0];
  const float* x = static_cast<const float*>(call.src[1]->data);
  float* y = static_cast<float*>(call.dst->data);
  // Whole blocks per item when there are enough of them (each weight row read in one
  // sweep); else output chunks of 128 (a multiple of every SIMD width) to feed the threads.
  const int64_t n_blk = s.a * s.d;
  const int64_t chunk = n_blk >= 2 * exec.n_threads() ? s.b : 128;
  const int64_t n_kc = (s.b + chunk - 1) / chunk;
  const int64_t n_items = n_blk * n_kc;
  if (n_items == 0 || s.M == 0) return true;
  const int n_par = (int)std::min<int64_t>(n_items, exec.n_threads());
  const size_t per_thread = (size_t)(4 * (s.c + s.b) + 16);  // 4 tokens' gathered inputs and outputs
  float* scratch = static_cast<float*>(exec.scratch(per_thread * sizeof(float) * (size_t)n_par));
  if (!scratch) return false;
  exec.parallel(n_par, [&](int ith, int nth) {
    int64_t it0, it1;
    ThreadPool::split(n_items, ith, nth, &it0, &it1);
    float* xg_buf = scratch + per_thread * (size_t)ith;
    float* acc_buf = xg_buf + 4 * s.c;
    for (int64_t it = it0; it < it1; ++it) {
      const int64_t kc = it % n_kc, blk = it / n_kc;
      const int64_t i = blk / s.d, j = blk % s.d;
      const int64_t k_lo = kc * chunk, k_hi = std::min(s.b, k_lo + chunk);
      const char* wb = block_w(w, i, j);
      for (int64_t m0 = 0; m0 < s.M; m0 += 4) {
        const int T = (int)std::min<int64_t>(4, s.M - m0);
        const float* xg[4];
        float* acc[4];
        float* yrow[4];
        for (int t = 0; t < T; ++t) {
          const float* xr = x + (size_t)(m0 + t) * s.x_ld + (i * s.c) * s.d + j;
          float* g = xg_buf + t * s.c;
          for (int64_t l = 0; l < s.c; ++l) g[l] = xr[l * s.d];
          xg[t] = g;
          acc[t] = acc_buf + t * s.b;
          yrow[t] = y + (size_t)(m0 + t) * s.y_ld;
        }
        switch (T) {
          case 1: tm_tokens<DT, 1>(s, wb, i, j, k_lo, k_hi, xg, acc, yrow); break;
          case 2: tm_tokens<DT, 2>(s, wb, i, j, k_lo, k_hi, xg, acc, yrow); break;
          case 3: tm_tokens<DT, 3>(s, wb, i, j, k_lo, k_hi, xg, acc, yrow); break;
          default: tm_tokens<DT, 4>(s, wb, i, j, k_lo, k_hi, xg, acc, yrow); break;
        }
      }
    }
  });
  return true;
}
// ---- batch_last ----------------------------------------------------------------------

constexpr int kKR = 6;                  // outputs per micro-kernel
constexpr int64_t kBlChunk = 32 * kKR;  // outputs per work item
constexpr int64_t kBlTokens = 256;      // tokens per work item
constexpr int64_t kBlInputs = 256;      // inputs per packed panel (the l blocking)
constexpr int kPackSpan = (kKR + kLanes - 1) / kLanes * kLanes;  // floats per packing copy

// kKR outputs x NV vectors of tokens over inputs [0, lc) of a panel:
// y rows (+)= sum_l wp[l][r] * xp[l][tokens]. xp: the packed x slab, x_step floats per
// input; add: accumulate onto y (later panels). kCopy: the slab is filled on the way,
// read from the x rows at src (src_step floats apart) and stored into xp, so the copy's
// cache misses overlap the FMAs of the slab's first output group. kPrefetch: prefetch
// the lines of the next slab's x rows (pf, src_step floats apart) on the way, so that
// the next copy finds them in cache (rows d * M floats apart defeat the hardware
// prefetchers when that is a page or more).
template <int NV, bool kCopy, bool kPrefetch>
inline void bl_micro(int64_t lc, const float* wp, size_t w_step, float* xr0, size_t x_step, const float* src,
                     size_t src_step, const float* pf, float* const* yr, bool add) {
  fvec acc[kKR][NV];
  for (int r = 0; r < kKR; ++r)
    for (int n = 0; n < NV; ++n) acc[r][n] = fvec(0.0f);
  float* xr = xr0;
  for (int64_t l = 0; l < lc; ++l, xr += x_step, wp += w_step) {
    fvec xv[NV];
    if constexpr (kCopy) {
      for (int n = 0; n < NV; ++n) {
        xv[n] = fvec::load_unaligned(src + n * kLanes);
        xv[n].store_aligned(xr + n * kLanes);
      }
      src += src_step;
    } else
      for (int n = 0; n < NV; ++n) xv[n] = fvec::load_aligned(xr + n * kLanes);
    if constexpr (kPrefetch) {
      __builtin_prefetch(pf);
      __builtin_prefetch(pf + NV * kLanes - 1);
      pf += src_step;
    }
    for (int r = 0; r < kKR; ++r) {
      const fvec wb(wp[r]);
      for (int n = 0; n < NV; ++n) acc[r][n] = xsimd::fma(wb, xv[n], acc[r][n]);
    }
  }
  // Every row stored with compile-time indices (rows past a partial group point to a
  // scratch sink): a loop to a run-time row count made the compiler spill the 12
  // accumulators to the stack (10% of the time at c = 48).
  if (add)
    for (int r = 0; r < kKR; ++r)
      for (int n = 0; n < NV; ++n) acc[r][n] += fvec::load_unaligned(yr[r] + n * kLanes);
  for (int r = 0; r < kKR; ++r)
    for (int n = 0; n < NV; ++n) acc[r][n].store_unaligned(yr[r] + n * kLanes);
}

template <DType DT>
bool run_batch_last(const OpCall& call, const Shape& s, Exec& exec) {
  const Tensor& w = *call.src[0];
  const float* x = static_cast<const float*>(call.src[1]->data);
  float* y = static_cast<float*>(call.dst->data);
  const int64_t n_kc = (s.b + kBlChunk - 1) / kBlChunk;
  const int64_t n_mc = (s.M + kBlTokens - 1) / kBlTokens;
  const int64_t n_items = s.a * s.d * n_kc * n_mc;
  if (n_items == 0) return true;
  const int n_par = (int)std::min<int64_t>(n_items, exec.n_threads());
  const int64_t lc_max = std::min<int64_t>(s.c, kBlInputs);
  // Packed weights (kBlChunk / kKR groups of lc_max * kKR floats and kPackSpan of
  // padding), then the current token slab (lc_max inputs x 2 vectors), then a sink of 2
  // vectors for the rows past a partial output group.
  const size_t pack_floats = (size_t)(lc_max * kBlChunk + (kBlChunk / kKR) * kPackSpan);
  const size_t per_thread = pack_floats + (size_t)((lc_max + 1) * 2 * kLanes + 16);
  float* scratch = static_cast<float*>(exec.scratch(per_thread * sizeof(float) * (size_t)n_par));
  if (!scratch) return false;
  const size_t x_step = (size_t)s.d * s.x_ld;  // next input of the same block
  exec.parallel(n_par, [&](int ith, int nth) {
    int64_t it0, it1;
    ThreadPool::split(n_items, ith, nth, &it0, &it1);
    float* pack = scratch + per_thread * (size_t)ith;
    float* xpack = pack + pack_floats;
    float* sink = xpack + lc_max * 2 * kLanes;
    for (int64_t it = it0; it < it1; ++it) {
      const int64_t mc = it % n_mc, kc = (it / n_mc) % n_kc, blk = it / (n_mc * n_kc);
      const int64_t i = blk / s.d, j = blk % s.d;
      const int64_t k_lo = kc * kBlChunk, k_hi = std::min(s.b, k_lo + kBlChunk);
      const int64_t m_lo = mc * kBlTokens, m_hi = std::min(s.M, m_lo + kBlTokens);
      const int n_groups = (int)((k_hi - k_lo + kKR - 1) / kKR);
      const char* wb = block_w(w, i, j);
      // Panels of up to kBlInputs inputs: the panel's x rows (kBlInputs x 2 vectors of
      // tokens) stay in L1 across the output groups, the packed weights in L2.
      for (int64_t l0 = 0; l0 < s.c; l0 += kBlInputs) {
        const int64_t lc = std::min<int64_t>(kBlInputs, s.c - l0);
        const bool add = l0 > 0;
        const size_t g_stride = (size_t)(lc * kKR + kPackSpan);
        // Pack: group g's weights contiguous, pack[g * g_stride + l * kKR + r] =
        // W(k_lo + g * kKR + r, l0 + l) as F32 (zero past k_hi), so the micro-kernel
        // streams 24 bytes per input from one sequential block (a stride of a whole
        // chunk row per input touched a new cache line per input and thrashed the
        // slab out of L1: 15-20% at batch 128). Whole vectors copied per (input, group)
        // (kPackSpan floats: one vector of 8 or 16, two of 4): the floats past kKR spill
        // into the next input's slot, written next, or into the group's padding after
        // the last input. F16/BF16 widened here once.
        const int n_vec_groups = k_hi - k_lo < kPackSpan ? 0 : (int)((k_hi - k_lo - kPackSpan) / kKR) + 1;
        for (int64_t l = 0; l < lc; ++l) {
          const void* wr = wb + (l0 + l) * s.w_nb1;
          float* pr = pack + (size_t)(l * kKR);
          for (int g = 0; g < n_vec_groups; ++g, pr += g_stride)
            for (int v = 0; v < kPackSpan; v += kLanes)
              mm::load_w<DT>(wr, k_lo + g * kKR + v).store_unaligned(pr + v);
        }
        // Groups whose vector would run past k_hi (a scalar copy of these cost 5% at
        // b = 64): the vector ending at the group's end e = min(k_hi, k + kKR), stored
        // shifted back so that its last e - k floats land on rows [0, e - k); its first
        // floats clobber the end of the previous input's slot, so inputs go in
        // descending order (input 0 clobbers the previous group's padding). Rows past
        // k_hi are zeroed. Scalar when that vector would start before k_lo.
        for (int g = n_vec_groups; g < n_groups; ++g) {
          const int64_t k = k_lo + g * kKR;
          const int64_t e = std::min<int64_t>(k_hi, k + kKR);
          const int n_valid = (int)(e - k);
          float* pg = pack + (size_t)g * g_stride;
          if (e - kPackSpan >= k_lo) {
            const int64_t shift = k - (e - kPackSpan);  // in (0, kPackSpan)
            for (int64_t l = lc - 1; l >= 0; --l) {
              const void* wr = wb + (l0 + l) * s.w_nb1;
              float* pr = pg + l * kKR - shift;
              for (int v = 0; v < kPackSpan; v += kLanes) mm::load_w<DT>(wr, e - kPackSpan + v).store_unaligned(pr + v);
              for (int r = n_valid; r < kKR; ++r) pg[l * kKR + r] = 0.0f;
            }
          } else {
            for (int64_t l = 0; l < lc; ++l) {
              const void* wr = wb + (l0 + l) * s.w_nb1;
              for (int r = 0; r < kKR; ++r) pg[l * kKR + r] = r < n_valid ? mm::load_w1<DT>(wr, k + r) : 0.0f;
            }
          }
        }
        const float* xb = x + (size_t)((i * s.c + l0) * s.d + j) * s.x_ld;
        // Each slab of lc inputs x NV vectors of tokens is copied from x into contiguous
        // scratch by the slab's first output group (kCopy) and reused from there by the
        // others: its rows in x are d rows apart, and a power-of-two stride would map
        // the slab to a few cache sets, evicting it before the later groups reuse it.
        // (A copy pass of its own before the compute cost 8% at batch 128 in cache
        // misses that nothing overlapped.)
        auto groups = [&](auto nv_tag, int64_t m0, float* slab) {
          constexpr int NV = decltype(nv_tag)::value;
          for (int g = 0; g < n_groups; ++g) {
            const int64_t kg = k_lo + g * kKR;
            const int nr = (int)std::min<int64_t>(kKR, k_hi - kg);
            float* yr[kKR];
            for (int r = 0; r < kKR; ++r) yr[r] = r < nr ? y + (size_t)((i * s.b + kg + r) * s.d + j) * s.y_ld + m0 : sink;
            const float* wg = pack + (size_t)g * g_stride;
            const float* src = xb + m0;
            // The next slab's rows are prefetched by the last group (by the first when
            // it is the only one, after its own copy loads were issued).
            const bool pf = g == n_groups - 1 && m0 + NV * kLanes + kLanes <= m_hi;
            const float* pfp = src + NV * kLanes;
            if (g == 0) {
              if (pf) bl_micro<NV, true, true>(lc, wg, kKR, slab, NV * kLanes, src, x_step, pfp, yr, add);
              else bl_micro<NV, true, false>(lc, wg, kKR, slab, NV * kLanes, src, x_step, nullptr, yr, add);
            } else if (pf) {
              bl_micro<NV, false, true>(lc, wg, kKR, slab, NV * kLanes, nullptr, x_step, pfp, yr, add);
            } else {
              bl_micro<NV, false, false>(lc, wg, kKR, slab, NV * kLanes, nullptr, x_step, nullptr, yr, add);
            }
          }
        };
        int64_t m = m_lo;
        for (; m + 2 * kLanes <= m_hi; m += 2 * kLanes) groups(std::integral_constant<int, 2>{}, m, xpack);
        for (; m + kLanes <= m_hi; m += kLanes) groups(std::integral_constant<int, 1>{}, m, xpack);
        for (; m < m_hi; ++m)
          for (int64_t k = k_lo; k < k_hi; ++k) {
            const float* pw = pack + (size_t)((k - k_lo) / kKR) * g_stride + (k - k_lo) % kKR;
            float acc = 0.0f;
            for (int64_t l = 0; l < lc; ++l) acc += pw[l * kKR] * xb[l * x_step + m];
            float& yo = y[(size_t)((i * s.b + k) * s.d + j) * s.y_ld + m];
            yo = add ? yo + acc : acc;
          }
      }
    }
  });
  return true;
}
// ---- dispatch ------------------------------------------------------------------------

inline bool supports(const OpCall& call) {
  // x and y rows must be whole floats apart (validate_op allows any byte stride).
  return call.src[1]->nb[1] % sizeof(float) == 0 && call.dst->nb[1] % sizeof(float) == 0;
}

template <DType DT>
bool run_typed(const OpCall& call, const Shape& s, Exec& exec) {
  return call.p<KsMatmulParams>().layout == KsLayout::token_major ? run_token_major<DT>(call, s, exec)
                                                                  : run_batch_last<DT>(call, s, exec);
}

inline bool k_ks_matmul(const OpCall& call, Exec& exec) {
  const KsMatmulParams& p = call.p<KsMatmulParams>();
  const Tensor& w = *call.src[0];
  const Tensor& x = *call.src[1];
  Shape s{p.a, p.b, p.c, p.d, p.layout == KsLayout::token_major ? x.ne[1] : x.ne[0],
          w.nb[1], w.nb[2], w.nb[3], x.nb[1] / sizeof(float), call.dst->nb[1] / sizeof(float)};
  switch (w.type) {
    case DType::F16: return run_typed<DType::F16>(call, s, exec);
    case DType::BF16: return run_typed<DType::BF16>(call, s, exec);
    default: return run_typed<DType::F32>(call, s, exec);
  }
}

}  // namespace ks

inline void register_ks_matmul(KernelTable& table) { table[OpId::ks_matmul] = {&ks::k_ks_matmul, &ks::supports}; }

}  // namespace kestrel::cpu::KESTREL_ISA_NS
