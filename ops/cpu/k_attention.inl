// CPU kernels: attention (see isa_body.inl for how this is compiled per ISA).
//
// Online softmax (flash-attention style) per (query token, head) pair; threads
// take fixed chunks of the M * Hq pairs. Keys are visited in blocks of kBlock:
//   scores s_j = scale * q.k_j (SIMD dot; F16 keys converted by F16C / NEON
//   per vector), soft cap, + mask; keys whose mask is -inf are skipped without
//   a dot product. Block max m_b; if it raises the running max m, the output
//   accumulator and the running sum are rescaled by exp(m_old - m_new) once.
//   w_j = exp(s_j - m) for the whole block with one vector exp of the params'
//   exp tier (the quake tiers fold the -m into their one multiply-add), then
//   acc += w_j * v_j, sum += w_j.
// Output acc / sum; a query whose keys are all masked yields zeros.
// Memory: one D-float accumulator per thread from Exec::scratch (no n_kv-sized
// allocation). Measured max abs error vs ops/ref (double) 1.9e-7 (F32 K/V) and
// 1.5e-7 (F16 K/V) for D up to 256, n_kv up to 300, q in [-2, 2], k, v in [-1, 1].
namespace kestrel::cpu::KESTREL_ISA_NS {
namespace attn {

constexpr int kBlock = 64;

// exp(x - m) of tier T, the softmax's exp.
template <ExpTier T>
inline fvec attn_exp(fvec x, float m) {
  if constexpr (T == ExpTier::exact) return vexp::exact(x - fvec(m));
  else return vexp::Quake<T>(1.0, -(double)m)(x);
}
// The rescale factor exp(m_old - m_new) is exact on every tier: a quake
// factor would multiply into the weights of every earlier block and its error
// would compound with each rise of the max. So each weight carries one quake
// error (at most the tier's bound, relative), whatever the number of blocks;
// it is quake(s_j - m_block) * exp(m_block - m), not the reference's
// quake(s_j - m), so the two agree within twice the bound, not bit for bit.
inline float attn_exp1(float x) {
  alignas(64) float t[kLanes];
  vexp::exact(fvec(x)).store_aligned(t);
  return t[0];
}

// Elements [i, i + n) of a row, n < kLanes, as one vector padded with zeros
// (AVX-512 masked loads): the tail of a row, or the whole row when the head is
// narrower than a vector (head_dim 8 on AVX-512). Other ISAs take scalar tails.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
constexpr bool kMaskedTails = true;
template <bool kF16>
inline fvec tail_vec(const void* row, int64_t i, int64_t n) {
  const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
  if constexpr (kF16) return fvec(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(row) + i)));
  else return fvec(_mm512_maskz_loadu_ps(m, static_cast<const float*>(row) + i));
}
inline void tail_store(float* p, int64_t n, fvec v) {
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), v);
}
#else
constexpr bool kMaskedTails = false;
template <bool kF16>
inline fvec tail_vec(const void*, int64_t, int64_t) { return fvec(0.0f); }
inline void tail_store(float*, int64_t, fvec) {}
#endif

template <bool kF16>
inline float dot_row(const float* q, const void* krow, int64_t D) {
  fvec acc0(0.0f), acc1(0.0f);
  int64_t i = 0;
  if constexpr (kF16) {
    const uint16_t* k = static_cast<const uint16_t*>(krow);
    for (; i + 2 * kLanes <= D; i += 2 * kLanes) {
      acc0 = xsimd::fma(fvec::load_unaligned(q + i), ew::load_f16(k + i), acc0);
      acc1 = xsimd::fma(fvec::load_unaligned(q + i + kLanes), ew::load_f16(k + i + kLanes), acc1);
    }
    for (; i + kLanes <= D; i += kLanes) acc0 = xsimd::fma(fvec::load_unaligned(q + i), ew::load_f16(k + i), acc0);
    if (kMaskedTails && i < D) {
      acc1 = xsimd::fma(tail_vec<false>(q, i, D - i), tail_vec<true>(k, i, D - i), acc1);
      i = D;
    }
    float s = xsimd::hadd(acc0 + acc1);
    for (; i < D; ++i) s += q[i] * f16_to_f32(k[i]);
    return s;
  } else {
    const float* k = static_cast<const float*>(krow);
    for (; i + 2 * kLanes <= D; i += 2 * kLanes) {
      acc0 = xsimd::fma(fvec::load_unaligned(q + i), fvec::load_unaligned(k + i), acc0);
      acc1 = xsimd::fma(fvec::load_unaligned(q + i + kLanes), fvec::load_unaligned(k + i + kLanes), acc1);
    }
    for (; i + kLanes <= D; i += kLanes) acc0 = xsimd::fma(fvec::load_unaligned(q + i), fvec::load_unaligned(k + i), acc0);
    if (kMaskedTails && i < D) {
      acc1 = xsimd::fma(tail_vec<false>(q, i, D - i), tail_vec<false>(k, i, D - i), acc1);
      i = D;
    }
    float s = xsimd::hadd(acc0 + acc1);
    for (; i < D; ++i) s += q[i] * k[i];
    return s;
  }
}

// acc[0..D) += w * v
template <bool kF16>
inline void axpy_row(float* acc, float w, const void* vrow, int64_t D) {
  const fvec vw(w);
  int64_t i = 0;
  if constexpr (kF16) {
    const uint16_t* v = static_cast<const uint16_t*>(vrow);
    for (; i + kLanes <= D; i += kLanes)
      xsimd::fma(vw, ew::load_f16(v + i), fvec::load_unaligned(acc + i)).store_unaligned(acc + i);
    if (kMaskedTails && i < D) {
      tail_store(acc + i, D - i, xsimd::fma(vw, tail_vec<true>(v, i, D - i), tail_vec<false>(acc, i, D - i)));
      i = D;
    }
    for (; i < D; ++i) acc[i] += w * f16_to_f32(v[i]);
  } else {
    const float* v = static_cast<const float*>(vrow);
    for (; i + kLanes <= D; i += kLanes)
      xsimd::fma(vw, fvec::load_unaligned(v + i), fvec::load_unaligned(acc + i)).store_unaligned(acc + i);
    if (kMaskedTails && i < D) {
      tail_store(acc + i, D - i, xsimd::fma(vw, tail_vec<false>(v, i, D - i), tail_vec<false>(acc, i, D - i)));
      i = D;
    }
    for (; i < D; ++i) acc[i] += w * v[i];
  }
}

inline void scale_row(float* x, float s, int64_t D) {
  const fvec vs(s);
  int64_t i = 0;
  for (; i + kLanes <= D; i += kLanes) (fvec::load_unaligned(x + i) * vs).store_unaligned(x + i);
  for (; i < D; ++i) x[i] *= s;
}

// The keys [lo, hi) of the query's stream; k and v are that stream's 3-D views.
template <bool kF16, ExpTier T>
inline void attend_one(const AttentionParams& p, const float* q, const Tensor& k, const Tensor& v, int64_t kvh,
                       const float* mrow, int64_t lo, int64_t hi, float* out, float* acc) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t D = k.ne[0];
  const bool cap = p.soft_cap > 0.0f;
  std::fill(acc, acc + D, 0.0f);
  float m = kNegInf, sum = 0.0f;
  alignas(64) float s[kBlock];
  for (int64_t j0 = lo; j0 < hi; j0 += kBlock) {
    const int nb = (int)std::min<int64_t>(kBlock, hi - j0);
    float bmax = kNegInf;
    for (int jj = 0; jj < kBlock; ++jj) {
      const int64_t j = j0 + jj;
      if (jj >= nb || (mrow && mrow[j] == kNegInf)) {
        s[jj] = kNegInf;
        continue;
      }
      float x = dot_row<kF16>(q, k.row<const void>(kvh, j), D) * p.scale;
      if (cap) x = p.soft_cap * std::tanh(x / p.soft_cap);
      if (mrow) x += mrow[j];
      s[jj] = x;
      bmax = x > bmax ? x : bmax;
    }
    if (!(bmax > kNegInf)) continue;
    if (bmax > m) {
      const float corr = m == kNegInf ? 0.0f : attn_exp1(m - bmax);
      scale_row(acc, corr, D);
      sum *= corr;
      m = bmax;
    }
    for (int jj = 0; jj < kBlock; jj += kLanes) attn_exp<T>(fvec::load_aligned(s + jj), m).store_aligned(s + jj);
    for (int jj = 0; jj < nb; ++jj) {
      if (s[jj] == 0.0f) continue;
      sum += s[jj];
      axpy_row<kF16>(acc, s[jj], v.row<const void>(kvh, j0 + jj), D);
    }
  }
  if (sum > 0.0f) {
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < D; ++i) out[i] = acc[i] * inv;
  } else {
    std::fill(out, out + D, 0.0f);
  }
}

// attend_one for D = NV * kLanes (NV even): q and the output accumulator in
// registers instead of memory. The same operations in the same order (dot_row's
// two chains, axpy_row's and scale_row's per-lane multiply-adds), so the same bits.
template <bool kF16, ExpTier T, int NV>
inline void attend_regs(const AttentionParams& p, const float* q, const Tensor& k, const Tensor& v, int64_t kvh,
                        const float* mrow, int64_t lo, int64_t hi, float* out) {
  static_assert(NV % 2 == 0);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const bool cap = p.soft_cap > 0.0f;
  auto load = [](const void* row, int i) {
    if constexpr (kF16) return ew::load_f16(static_cast<const uint16_t*>(row) + i * kLanes);
    else return fvec::load_unaligned(static_cast<const float*>(row) + i * kLanes);
  };
  fvec qv[NV], acc[NV];
  for (int i = 0; i < NV; ++i) qv[i] = fvec::load_unaligned(q + i * kLanes), acc[i] = fvec(0.0f);
  float m = kNegInf, sum = 0.0f;
  alignas(64) float s[kBlock];
  for (int64_t j0 = lo; j0 < hi; j0 += kBlock) {
    const int nb = (int)std::min<int64_t>(kBlock, hi - j0);
    float bmax = kNegInf;
    for (int jj = 0; jj < kBlock; ++jj) {
      const int64_t j = j0 + jj;
      if (jj >= nb || (mrow && mrow[j] == kNegInf)) {
        s[jj] = kNegInf;
        continue;
      }
      const void* kr = k.row<const void>(kvh, j);
      fvec a0(0.0f), a1(0.0f);
      for (int i = 0; i < NV; i += 2) {
        a0 = xsimd::fma(qv[i], load(kr, i), a0);
        a1 = xsimd::fma(qv[i + 1], load(kr, i + 1), a1);
      }
      float x = xsimd::hadd(a0 + a1) * p.scale;
      if (cap) x = p.soft_cap * std::tanh(x / p.soft_cap);
      if (mrow) x += mrow[j];
      s[jj] = x;
      bmax = x > bmax ? x : bmax;
    }
    if (!(bmax > kNegInf)) continue;
    if (bmax > m) {
      const float corr = m == kNegInf ? 0.0f : attn_exp1(m - bmax);
      for (int i = 0; i < NV; ++i) acc[i] = acc[i] * fvec(corr);
      sum *= corr;
      m = bmax;
    }
    for (int jj = 0; jj < kBlock; jj += kLanes) attn_exp<T>(fvec::load_aligned(s + jj), m).store_aligned(s + jj);
    for (int jj = 0; jj < nb; ++jj) {
      if (s[jj] == 0.0f) continue;
      sum += s[jj];
      const fvec w(s[jj]);
      const void* vr = v.row<const void>(kvh, j0 + jj);
      for (int i = 0; i < NV; ++i) acc[i] = xsimd::fma(w, load(vr, i), acc[i]);
    }
  }
  const fvec inv(sum > 0.0f ? 1.0f / sum : 0.0f);
  for (int i = 0; i < NV; ++i) (sum > 0.0f ? acc[i] * inv : fvec(0.0f)).store_unaligned(out + i * kLanes);
}

// attend_regs for G query heads of one kv head and one query position (the same keys,
// mask and range): each key and value row is loaded and converted once for the G heads;
// every head's operations are attend_regs', in the same order, so the same bits.
template <bool kF16, ExpTier T, int NV, int G>
inline void attend_regs_g(const AttentionParams& p, const float* const* q, const Tensor& k, const Tensor& v,
                          int64_t kvh, const float* mrow, int64_t lo, int64_t hi, float* const* out) {
  static_assert(NV % 2 == 0);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const bool cap = p.soft_cap > 0.0f;
  auto load = [](const void* row, int i) {
    if constexpr (kF16) return ew::load_f16(static_cast<const uint16_t*>(row) + i * kLanes);
    else return fvec::load_unaligned(static_cast<const float*>(row) + i * kLanes);
  };
  fvec acc[G][NV];
  for (int g = 0; g < G; ++g)
    for (int i = 0; i < NV; ++i) acc[g][i] = fvec(0.0f);
  float m[G], sum[G], bmax[G];
  for (int g = 0; g < G; ++g) m[g] = kNegInf, sum[g] = 0.0f;
  alignas(64) float s[G][kBlock];
  for (int64_t j0 = lo; j0 < hi; j0 += kBlock) {
    const int nb = (int)std::min<int64_t>(kBlock, hi - j0);
    for (int g = 0; g < G; ++g) bmax[g] = kNegInf;
    for (int jj = 0; jj < kBlock; ++jj) {
      const int64_t j = j0 + jj;
      if (jj >= nb || (mrow && mrow[j] == kNegInf)) {
        for (int g = 0; g < G; ++g) s[g][jj] = kNegInf;
        continue;
      }
      const void* kr = k.row<const void>(kvh, j);
      fvec kv[NV];
      for (int i = 0; i < NV; ++i) kv[i] = load(kr, i);
      for (int g = 0; g < G; ++g) {
        fvec a0(0.0f), a1(0.0f);
        for (int i = 0; i < NV; i += 2) {
          a0 = xsimd::fma(fvec::load_unaligned(q[g] + i * kLanes), kv[i], a0);
          a1 = xsimd::fma(fvec::load_unaligned(q[g] + (i + 1) * kLanes), kv[i + 1], a1);
        }
        float x = xsimd::hadd(a0 + a1) * p.scale;
        if (cap) x = p.soft_cap * std::tanh(x / p.soft_cap);
        if (mrow) x += mrow[j];
        s[g][jj] = x;
        bmax[g] = x > bmax[g] ? x : bmax[g];
      }
    }
    bool any = false;
    for (int g = 0; g < G; ++g) {
      if (!(bmax[g] > kNegInf)) continue;
      any = true;
      if (bmax[g] > m[g]) {
        const float corr = m[g] == kNegInf ? 0.0f : attn_exp1(m[g] - bmax[g]);
        for (int i = 0; i < NV; ++i) acc[g][i] = acc[g][i] * fvec(corr);
        sum[g] *= corr;
        m[g] = bmax[g];
      }
      for (int jj = 0; jj < kBlock; jj += kLanes)
        attn_exp<T>(fvec::load_aligned(s[g] + jj), m[g]).store_aligned(s[g] + jj);
    }
    if (!any) continue;
    for (int jj = 0; jj < nb; ++jj) {
      const void* vr = nullptr;
      fvec vv[NV];
      for (int g = 0; g < G; ++g) {
        // A head whose block was all masked has no weights this block (its s stay -inf
        // as attend_regs' `continue` leaves them unused).
        if (!(bmax[g] > kNegInf) || s[g][jj] == 0.0f) continue;
        if (!vr) {
          vr = v.row<const void>(kvh, j0 + jj);
          for (int i = 0; i < NV; ++i) vv[i] = load(vr, i);
        }
        sum[g] += s[g][jj];
        const fvec w(s[g][jj]);
        for (int i = 0; i < NV; ++i) acc[g][i] = xsimd::fma(w, vv[i], acc[g][i]);
      }
    }
  }
  for (int g = 0; g < G; ++g) {
    const fvec inv(sum[g] > 0.0f ? 1.0f / sum[g] : 0.0f);
    for (int i = 0; i < NV; ++i) (sum[g] > 0.0f ? acc[g][i] * inv : fvec(0.0f)).store_unaligned(out[g] + i * kLanes);
  }
}

inline bool k_attention(const OpCall& c, Exec& exec) {
  const AttentionParams& p = c.p<AttentionParams>();
  const Tensor& q = *c.src[0];
  const Tensor& k = *c.src[1];
  const Tensor& v = *c.src[2];
  const Tensor* src3 = c.opt_src(3);
  const Tensor* mask = src3 && src3->type == DType::F32 ? src3 : nullptr;
  const Tensor* ranges = src3 && src3->type == DType::I32 ? src3 : nullptr;
  const Tensor& dst = *c.dst;
  const int64_t D = q.ne[0], Hq = q.ne[1], M = q.ne[2], n_kv = k.ne[2];
  const int64_t group = Hq / k.ne[1];
  const size_t slot = ((size_t)D * sizeof(float) + 63) & ~(size_t)63;
  char* scratch = static_cast<char*>(exec.scratch(slot * (size_t)exec.n_threads()));
  if (!scratch && D > 0) return false;
  const bool f16 = k.type == DType::F16;
  // Query m sees keys [lo, hi) of stream st (clipped; a bad stream sees nothing).
  auto range = [&](int64_t m, int64_t* st, int64_t* lo, int64_t* hi) {
    *st = 0, *lo = 0, *hi = n_kv;
    if (!ranges) return;
    int32_t r[3];
    std::memcpy(r, ranges->row<const char>(m), sizeof(r));  // validated: ne[0] == 3, nb[0] == 4
    *st = r[0];
    *lo = r[1] < 0 ? 0 : r[1];
    *hi = r[2] > n_kv ? n_kv : r[2];
    if (*st < 0 || *st >= k.ne[3]) *hi = *lo;
  };
  // Query m's keys [lo, hi) and its stream's K / V views.
  auto stream_views = [&](int64_t m, int64_t* lo, int64_t* hi, Tensor* ks, Tensor* vs) {
    int64_t st;
    range(m, &st, lo, hi);
    *ks = k, *vs = v;
    if (*hi > *lo) {
      ks->data = k.row<char>(0, 0, st);
      vs->data = v.row<char>(0, 0, st);
    }
  };
  // Threads only when the keys actually visited are worth it.
  int64_t keys = M * n_kv;
  if (ranges) {
    keys = 0;
    for (int64_t m = 0; m < M; ++m) {
      int64_t st, lo, hi;
      range(m, &st, &lo, &hi);
      keys += hi > lo ? hi - lo : 0;
    }
  }
  const int64_t row_cost = M > 0 ? 2 * D * (keys / M + 1) : 0;
  return vexp::with_tier(p.exp, [&](auto tc) {
    constexpr ExpTier T = decltype(tc)::value;
    // Heads of D = 4 vectors whose kv head serves a multiple of 4 query heads (GQA): 4 query
    // heads at a time, each key and value row loaded once for them (attend_regs_g, the same
    // bits). pp512 of a TinyLlama-shape Q4_0 model (D 64, 32 query heads on 4 kv heads) on a
    // 2-core AVX-512 Xeon: 1.04-1.13x at 1 thread, 1.04-1.09x at 2; the 2-head grouping for
    // D = 8 vectors measured no gain (Qwen2.5-1.5B, D 128) and is not used.
    constexpr int kG = 4;
    if (D == 4 * kLanes && group % kG == 0) {
      const int64_t Hg = Hq / kG;
      ew::par_rows(exec, M * Hg, kG * row_cost, [&](int, int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t mz = r / Hg, h0 = (r % Hg) * kG;
          const int64_t m = mz % 2 == 0 ? mz / 2 : M - 1 - mz / 2;
          const float* qs[kG];
          float* outs[kG];
          for (int g = 0; g < kG; ++g) qs[g] = q.row<float>(h0 + g, m), outs[g] = dst.row<float>(h0 + g, m);
          const float* mrow = mask ? mask->row<float>(m) : nullptr;
          int64_t lo, hi;
          Tensor ks, vs;
          stream_views(m, &lo, &hi, &ks, &vs);
          if (f16) attend_regs_g<true, T, 4, kG>(p, qs, ks, vs, h0 / group, mrow, lo, hi, outs);
          else attend_regs_g<false, T, 4, kG>(p, qs, ks, vs, h0 / group, mrow, lo, hi, outs);
        }
      });
      return true;
    }
    ew::par_rows(exec, M * Hq, row_cost, [&](int ith, int64_t r0, int64_t r1) {
      float* acc = reinterpret_cast<float*>(scratch + slot * (size_t)ith);
      for (int64_t r = r0; r < r1; ++r) {
        // Query positions in zigzag order (0, M-1, 1, M-2, ...): under a causal mask a
        // later position attends to more keys, so contiguous ranges of positions gave the
        // last thread most of the work. Each row is computed the same way wherever it falls.
        const int64_t mz = r / Hq, h = r % Hq;
        const int64_t m = mz % 2 == 0 ? mz / 2 : M - 1 - mz / 2;
        const float* qr = q.row<float>(h, m);
        const float* mrow = mask ? mask->row<float>(m) : nullptr;
        float* out = dst.row<float>(h, m);
        int64_t lo, hi;
        Tensor ks, vs;
        stream_views(m, &lo, &hi, &ks, &vs);
        if (f16 && D == 4 * kLanes) attend_regs<true, T, 4>(p, qr, ks, vs, h / group, mrow, lo, hi, out);
        else if (f16 && D == 8 * kLanes) attend_regs<true, T, 8>(p, qr, ks, vs, h / group, mrow, lo, hi, out);
        else if (!f16 && D == 4 * kLanes) attend_regs<false, T, 4>(p, qr, ks, vs, h / group, mrow, lo, hi, out);
        else if (!f16 && D == 8 * kLanes) attend_regs<false, T, 8>(p, qr, ks, vs, h / group, mrow, lo, hi, out);
        else if (f16) attend_one<true, T>(p, qr, ks, vs, h / group, mrow, lo, hi, out, acc);
        else attend_one<false, T>(p, qr, ks, vs, h / group, mrow, lo, hi, out, acc);
      }
    });
    return true;
  });
}

}  // namespace attn

inline void register_attention(KernelTable& table) { table[OpId::attention].run = &attn::k_attention; }

}  // namespace kestrel::cpu::KESTREL_ISA_NS
