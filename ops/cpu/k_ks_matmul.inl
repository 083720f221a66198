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
//   For each item, each group of up to 4 tokens: gather the block's c inputs of each token
//   (stride d) into scratch, then for V vectors of outputs at a time,
//   acc[t][v] += W_ij[l][k..k+lanes) * x_t[l] over l (weights loaded once per token
//   group, inputs broadcast), and store the outputs to y (contiguous when d = 1,
//   scattered with stride d otherwise). Outputs past the last full vector run a scalar
//   loop.
// batch_last (prompt, M tokens contiguous per feature row): SIMD over tokens, a
//   register-blocked GEMM per block, Y_ij[b x M] = W_ij^T X_ij, whose rows are the
//   feature rows of x and y (row stride d rows). Per item the weight chunk (up to 48
//   outputs) is packed as F32 into scratch, [k-group of 6][l][6] (zero-padded), so the
//   6 x (2 vectors of tokens) micro-kernel reads it sequentially and F16/BF16 weights are
//   widened once per item rather than once per use. Tokens past the last full vector run
//   a scalar loop.
// Error: float products and sums in l order per output (c terms), weights widened
// exactly; measured max relative RMS error vs the double reference ~1e-7 (F32 weights,
// tests/test_ks_matmul.cpp).
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

// T tokens x V vectors of outputs starting at k0, over all c inputs. xg[t] holds token t's
// gathered inputs; y[t] points at token t's output feature (i*b + k0)*d + j.
template <DType DT, int T, int V>
inline void tm_micro(int64_t c, const char* wb, size_t w_nb1, int64_t k0, const float* const* xg, float* const* y,
                     int64_t d) {
  fvec acc[T][V];
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < V; ++v) acc[t][v] = fvec(0.0f);
  for (int64_t l = 0; l < c; ++l) {
    const void* wr = wb + l * w_nb1;
    fvec xb[T];
    for (int t = 0; t < T; ++t) xb[t] = fvec(xg[t][l]);
    for (int v = 0; v < V; ++v) {
      const fvec wv = mm::load_w<DT>(wr, k0 + v * kLanes);
      for (int t = 0; t < T; ++t) acc[t][v] = xsimd::fma(wv, xb[t], acc[t][v]);
    }
  }
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < V; ++v) {
      if (d == 1) {
        acc[t][v].store_unaligned(y[t] + v * kLanes);
      } else {
        alignas(64) float tmp[kLanes];
        acc[t][v].store_aligned(tmp);
        float* yo = y[t] + v * kLanes * d;
        for (int e = 0; e < kLanes; ++e) yo[e * d] = tmp[e];
      }
    }
}

// Largest vector count per micro-kernel call for T tokens: about 8 accumulators.
template <int T>
constexpr int kTmMaxV = T == 1 ? 8 : T == 2 ? 4 : 2;

template <DType DT, int T, int V>
inline void tm_micro_v(int nv, int64_t c, const char* wb, size_t w_nb1, int64_t k0, const float* const* xg,
                       float* const* y, int64_t d) {
  if constexpr (V >= 1) {
    if (nv == V) return tm_micro<DT, T, V>(c, wb, w_nb1, k0, xg, y, d);
    return tm_micro_v<DT, T, V - 1>(nv, c, wb, w_nb1, k0, xg, y, d);
  }
}

// Outputs [k_lo, k_hi) of block (i, j) for T tokens whose inputs are gathered in xg.
template <DType DT, int T>
void tm_tokens(const Shape& s, const char* wb, int64_t i, int64_t j, int64_t k_lo, int64_t k_hi,
               const float* const* xg, float* const* yrow) {
  constexpr int kMaxV = kTmMaxV<T>;
  int64_t k = k_lo;
  while (k + kLanes <= k_hi) {
    const int nv = (int)std::min<int64_t>(kMaxV, (k_hi - k) / kLanes);
    float* y[T];
    for (int t = 0; t < T; ++t) y[t] = yrow[t] + ((i * s.b + k) * s.d + j);
    tm_micro_v<DT, T, kMaxV>(nv, s.c, wb, s.w_nb1, k, xg, y, s.d);
    k += nv * kLanes;
  }
  for (; k < k_hi; ++k)
    for (int t = 0; t < T; ++t) {
      float acc = 0.0f;
      for (int64_t l = 0; l < s.c; ++l) acc += mm::load_w1<DT>(wb + l * s.w_nb1, k) * xg[t][l];
      yrow[t][(i * s.b + k) * s.d + j] = acc;
    }
}

// Output chunk per work item: a multiple of every SIMD width.
constexpr int64_t kTmChunk = 128;

template <DType DT>
bool run_token_major(const OpCall& call, const Shape& s, Exec& exec) {
  const Tensor& w = *call.src[0];
  const float* x = static_cast<const float*>(call.src[1]->data);
  float* y = static_cast<float*>(call.dst->data);
  const int64_t n_kc = (s.b + kTmChunk - 1) / kTmChunk;
  const int64_t n_items = s.a * s.d * n_kc;
  if (n_items == 0 || s.M == 0) return true;
  const int n_par = (int)std::min<int64_t>(n_items, exec.n_threads());
  const size_t per_thread = (size_t)(4 * s.c + 16);  // 4 gathered token inputs, padded
  float* scratch = static_cast<float*>(exec.scratch(per_thread * sizeof(float) * (size_t)n_par));
  if (!scratch) return false;
  exec.parallel(n_par, [&](int ith, int nth) {
    int64_t it0, it1;
    ThreadPool::split(n_items, ith, nth, &it0, &it1);
    float* xg_buf = scratch + per_thread * (size_t)ith;
    for (int64_t it = it0; it < it1; ++it) {
      const int64_t kc = it % n_kc, blk = it / n_kc;
      const int64_t i = blk / s.d, j = blk % s.d;
      const int64_t k_lo = kc * kTmChunk, k_hi = std::min(s.b, k_lo + kTmChunk);
      const char* wb = block_w(w, i, j);
      for (int64_t m0 = 0; m0 < s.M; m0 += 4) {
        const int T = (int)std::min<int64_t>(4, s.M - m0);
        const float* xg[4];
        float* yrow[4];
        for (int t = 0; t < T; ++t) {
          const float* xr = x + (size_t)(m0 + t) * s.x_ld + (i * s.c) * s.d + j;
          float* g = xg_buf + t * s.c;
          for (int64_t l = 0; l < s.c; ++l) g[l] = xr[l * s.d];
          xg[t] = g;
          yrow[t] = y + (size_t)(m0 + t) * s.y_ld;
        }
        switch (T) {
          case 1: tm_tokens<DT, 1>(s, wb, i, j, k_lo, k_hi, xg, yrow); break;
          case 2: tm_tokens<DT, 2>(s, wb, i, j, k_lo, k_hi, xg, yrow); break;
          case 3: tm_tokens<DT, 3>(s, wb, i, j, k_lo, k_hi, xg, yrow); break;
          default: tm_tokens<DT, 4>(s, wb, i, j, k_lo, k_hi, xg, yrow); break;
        }
      }
    }
  });
  return true;
}

// ---- batch_last ----------------------------------------------------------------------

constexpr int kKR = 6;                   // outputs per micro-kernel
constexpr int64_t kBlChunk = 8 * kKR;    // outputs per work item (packed weights)
constexpr int64_t kBlTokens = 256;       // tokens per work item

// kKR outputs x NV vectors of tokens: y rows += sum_l wp[l][r] * x row l.
// xr0: token m0 of input feature row l = 0; x_step: floats between rows l and l + 1.
template <int NV>
inline void bl_micro(int64_t c, const float* wp, const float* xr0, size_t x_step, float* const* yr, int nr) {
  fvec acc[kKR][NV];
  for (int r = 0; r < kKR; ++r)
    for (int n = 0; n < NV; ++n) acc[r][n] = fvec(0.0f);
  const float* xr = xr0;
  for (int64_t l = 0; l < c; ++l, xr += x_step, wp += kKR) {
    fvec xv[NV];
    for (int n = 0; n < NV; ++n) xv[n] = fvec::load_unaligned(xr + n * kLanes);
    for (int r = 0; r < kKR; ++r) {
      const fvec wb(wp[r]);
      for (int n = 0; n < NV; ++n) acc[r][n] = xsimd::fma(wb, xv[n], acc[r][n]);
    }
  }
  for (int r = 0; r < nr; ++r)
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
  const size_t per_thread = (size_t)(s.c * kBlChunk + 16);
  float* scratch = static_cast<float*>(exec.scratch(per_thread * sizeof(float) * (size_t)n_par));
  if (!scratch) return false;
  const size_t x_step = (size_t)s.d * s.x_ld;  // next input of the same block
  exec.parallel(n_par, [&](int ith, int nth) {
    int64_t it0, it1;
    ThreadPool::split(n_items, ith, nth, &it0, &it1);
    float* pack = scratch + per_thread * (size_t)ith;
    for (int64_t it = it0; it < it1; ++it) {
      const int64_t mc = it % n_mc, kc = (it / n_mc) % n_kc, blk = it / (n_mc * n_kc);
      const int64_t i = blk / s.d, j = blk % s.d;
      const int64_t k_lo = kc * kBlChunk, k_hi = std::min(s.b, k_lo + kBlChunk);
      const int64_t m_lo = mc * kBlTokens, m_hi = std::min(s.M, m_lo + kBlTokens);
      const int n_groups = (int)((k_hi - k_lo + kKR - 1) / kKR);
      // Pack: pack[g][l][r] = W(k_lo + g*kKR + r, l), zero past k_hi.
      const char* wb = block_w(w, i, j);
      for (int g = 0; g < n_groups; ++g) {
        float* pg = pack + (size_t)g * s.c * kKR;
        const int64_t kg = k_lo + g * kKR;
        const int nr = (int)std::min<int64_t>(kKR, k_hi - kg);
        for (int64_t l = 0; l < s.c; ++l) {
          const void* wr = wb + l * s.w_nb1;
          for (int r = 0; r < kKR; ++r) pg[l * kKR + r] = r < nr ? mm::load_w1<DT>(wr, kg + r) : 0.0f;
        }
      }
      const float* xb = x + (size_t)((i * s.c) * s.d + j) * s.x_ld;
      int64_t m = m_lo;
      auto groups = [&](auto nv_tag, int64_t m0) {
        constexpr int NV = decltype(nv_tag)::value;
        for (int g = 0; g < n_groups; ++g) {
          const int64_t kg = k_lo + g * kKR;
          const int nr = (int)std::min<int64_t>(kKR, k_hi - kg);
          float* yr[kKR];
          for (int r = 0; r < nr; ++r) yr[r] = y + (size_t)((i * s.b + kg + r) * s.d + j) * s.y_ld + m0;
          bl_micro<NV>(s.c, pack + (size_t)g * s.c * kKR, xb + m0, x_step, yr, nr);
        }
      };
      for (; m + 2 * kLanes <= m_hi; m += 2 * kLanes) groups(std::integral_constant<int, 2>{}, m);
      for (; m + kLanes <= m_hi; m += kLanes) groups(std::integral_constant<int, 1>{}, m);
      for (; m < m_hi; ++m)
        for (int64_t k = k_lo; k < k_hi; ++k) {
          const float* pw = pack + (size_t)((k - k_lo) / kKR) * s.c * kKR + (k - k_lo) % kKR;
          float acc = 0.0f;
          for (int64_t l = 0; l < s.c; ++l) acc += pw[l * kKR] * xb[l * x_step + m];
          y[(size_t)((i * s.b + k) * s.d + j) * s.y_ld + m] = acc;
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
