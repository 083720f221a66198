// CPU matmul, part 5b: the 8-bit matrix-multiply tiles for Q4_0 / Q5_0 / Q8_0 and the K-quants
// on arm64 with the i8mm extension (the neoni8mm variant; included by k_matmul.inl after matmul_run).
// Prompts, batched decoding and draft verification multiply each weight row by several
// activation rows; the neon row kernel then unpacks a weight block once per group of 4
// rows and reduces every 32-element dot product across lanes. smmla (vmmlaq_s32) takes two
// 8-byte rows of each operand and adds their four dot products to a 2 x 2 int32 tile, so a
// block of 2 weight rows x 2 activation rows is 4 instructions and no reduction.
//
// Algorithm, per 32-element block b, 2 weight rows (n0, n1) x up to 4 pairs of activation
// rows (r0, r1):
//   - The weight block is unpacked to signed codes (Q4_0: nibble - 8, Q5_0: 5-bit code - 16,
//     Q8_0: as stored), and step k (0..3) takes bytes 8k..8k+7 of n0 then of n1 as one
//     vector; the activation pair is repacked once per call the same way (I8mmAct2).
//   - Four smmla from zero give the block's exact integer sums s in lanes
//     (n0 r0, n0 r1, n1 r0, n1 r1).
//   - Per lane, the row kernel's float operations: acc = fma(d_w * d_x, float(s), acc).
//     The integer sums are exact and the float operations per output the same in the same
//     order, so every output is bitwise the neon variant's row kernel's, at any M and
//     wherever a row falls; tests/test_matmul.cpp checks this under qemu-aarch64.
// K-quants (Q4_K, Q5_K, Q6_K): the row kernel's codes (decode_q45K / decode_q6K), per
// sub-block of 32 (Q6_K: 16) elements 4 (2) smmla, the sums times the sub-block scales in
// int32 lanes (exact, as the row kernel's isum), the mins / offset terms from the Q8_K
// 16-sums per output, then per output the row kernel's float expression, written the same.
// A last activation row without a partner is paired with itself; a last weight row without
// a partner too; both are computed and dropped.
namespace kestrel::cpu::KESTREL_ISA_NS {
namespace mm {

// Whether this ISA's table has the i8mm tile for weight type t.
constexpr bool has_i8mm_tiles(DType t) {
#if defined(__ARM_FEATURE_MATMUL_INT8) && defined(__aarch64__)
  return t == DType::Q4_0 || t == DType::Q5_0 || t == DType::Q8_0 || t == DType::Q4_K || t == DType::Q5_K ||
         t == DType::Q6_K;
#else
  (void)t;
  return false;
#endif
}

// The default policy's rows for the tile: from 2 (one row is the row kernel's work with half
// the tile's lanes wasted).
constexpr int64_t kI8mmMinRows = 2;
// Pairs of activation rows that share one unpacked weight block in the tile.
constexpr int kI8mmPairs = 4;

// One block of a pair of quantized activation rows, repacked for the tile.
struct alignas(16) I8mmAct2 {
  int8_t qs[4][16];  // qs[k]: bytes 8k..8k+7 of row 0, then of row 1
  float d[4];        // d_x of rows 0, 1, 0, 1 (the lanes' order)
};
static_assert(sizeof(I8mmAct2) == 80);

// One super-block of a pair of Q8_K activation rows, repacked for the K-quant tile.
struct alignas(16) I8mmActK2 {
  int8_t qs[kQKK / 8][16];  // qs[i]: bytes 8i..8i+7 of row 0, then of row 1
  float d[2];
  int16_t bsums[2][kQKK / 16];
};

template <DType T>
constexpr bool kIsKQuant = T == DType::Q4_K || T == DType::Q5_K || T == DType::Q6_K;

inline void pack_i8mm_act2(const ActQ8* r0, const ActQ8* r1, int64_t nb, I8mmAct2* out) {
  for (int64_t b = 0; b < nb; ++b) {
    I8mmAct2& o = out[b];
    for (int k = 0; k < 4; ++k) {
      std::memcpy(o.qs[k], r0[b].qs + 8 * k, 8);
      std::memcpy(o.qs[k] + 8, r1[b].qs + 8 * k, 8);
    }
    o.d[0] = o.d[2] = r0[b].d;
    o.d[1] = o.d[3] = r1[b].d;
  }
}

inline void pack_i8mm_act2(const BlockQ8_K* r0, const BlockQ8_K* r1, int64_t nb, I8mmActK2* out) {
  for (int64_t b = 0; b < nb; ++b) {
    I8mmActK2& o = out[b];
    for (int i = 0; i < kQKK / 8; ++i) {
      std::memcpy(o.qs[i], r0[b].qs + 8 * i, 8);
      std::memcpy(o.qs[i] + 8, r1[b].qs + 8 * i, 8);
    }
    o.d[0] = r0[b].d;
    o.d[1] = r1[b].d;
    std::memcpy(o.bsums[0], r0[b].bsums, sizeof(o.bsums[0]));
    std::memcpy(o.bsums[1], r1[b].bsums, sizeof(o.bsums[1]));
  }
}

#if defined(__ARM_FEATURE_MATMUL_INT8) && defined(__aarch64__)

// Step operands of 16 bytes of two rows: bytes 0..7 of u then of v, and 8..15 of both.
inline int8x16_t zip_lo(int8x16_t u, int8x16_t v) {
  return vreinterpretq_s8_s64(vzip1q_s64(vreinterpretq_s64_s8(u), vreinterpretq_s64_s8(v)));
}
inline int8x16_t zip_hi(int8x16_t u, int8x16_t v) {
  return vreinterpretq_s8_s64(vzip2q_s64(vreinterpretq_s64_s8(u), vreinterpretq_s64_s8(v)));
}

// Signed codes of a weight block: elements 0..15 to lo, 16..31 to hi (the row kernel's ws).
template <DType T>
inline void unpack_i8mm(const char* wb, int8x16_t* lo, int8x16_t* hi) {
  if constexpr (T == DType::Q8_0) {
    *lo = vld1q_s8(reinterpret_cast<const int8_t*>(wb + 2));
    *hi = vld1q_s8(reinterpret_cast<const int8_t*>(wb + 18));
  } else {
    constexpr int kQs = T == DType::Q5_0 ? 6 : 2;
    const uint8x16_t q = vld1q_u8(reinterpret_cast<const uint8_t*>(wb + kQs));
    uint8x16_t l = vandq_u8(q, vdupq_n_u8(0x0F));
    uint8x16_t h = vshrq_n_u8(q, 4);
    if constexpr (T == DType::Q5_0) {
      // Bit i of qh is the fifth bit of element i: bytes of the low / high 16 bits
      // tested against one bit per lane.
      uint32_t qh;
      std::memcpy(&qh, wb + 2, 4);
      static const uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
      const uint8x16_t bit = vld1q_u8(kBit);
      const uint8x16_t hl = vcombine_u8(vdup_n_u8(static_cast<uint8_t>(qh)), vdup_n_u8(static_cast<uint8_t>(qh >> 8)));
      const uint8x16_t hh =
          vcombine_u8(vdup_n_u8(static_cast<uint8_t>(qh >> 16)), vdup_n_u8(static_cast<uint8_t>(qh >> 24)));
      l = vorrq_u8(l, vandq_u8(vtstq_u8(hl, bit), vdupq_n_u8(0x10)));
      h = vorrq_u8(h, vandq_u8(vtstq_u8(hh, bit), vdupq_n_u8(0x10)));
    }
    const int8x16_t off = vdupq_n_s8(T == DType::Q5_0 ? 16 : 8);
    *lo = vsubq_s8(vreinterpretq_s8_u8(l), off);
    *hi = vsubq_s8(vreinterpretq_s8_u8(h), off);
  }
}

// Weight rows w0, w1 x NP activation pairs x[p]; res[4p + 2n + r] = y of weight row n and
// row r of pair p.
template <DType T, int NP>
inline void dot_i8mm2(int64_t nb, const char* w0, const char* w1, const I8mmAct2* const* x, float* res) {
  constexpr size_t kBytes = T == DType::Q4_0 ? sizeof(BlockQ4_0) : T == DType::Q5_0 ? sizeof(BlockQ5_0) : sizeof(BlockQ8_0);
  float32x4_t acc[NP];
  for (int p = 0; p < NP; ++p) acc[p] = vdupq_n_f32(0.0f);
  for (int64_t b = 0; b < nb; ++b) {
    const size_t off = static_cast<size_t>(b) * kBytes;
    int8x16_t lo0, hi0, lo1, hi1;
    unpack_i8mm<T>(w0 + off, &lo0, &hi0);
    unpack_i8mm<T>(w1 + off, &lo1, &hi1);
    // Step k: bytes 8k..8k+7 of n0 then of n1.
    const int8x16_t a0 = zip_lo(lo0, lo1), a1 = zip_hi(lo0, lo1), a2 = zip_lo(hi0, hi1), a3 = zip_hi(hi0, hi1);
    uint16_t h0, h1;
    std::memcpy(&h0, w0 + off, 2);
    std::memcpy(&h1, w1 + off, 2);
    const float d0 = f16_scalar(h0), d1 = f16_scalar(h1);
    const float32x4_t dw = vcombine_f32(vdup_n_f32(d0), vdup_n_f32(d1));
    for (int p = 0; p < NP; ++p) {
      const I8mmAct2& a = x[p][b];
      int32x4_t s = vmmlaq_s32(vdupq_n_s32(0), a0, vld1q_s8(a.qs[0]));
      s = vmmlaq_s32(s, a1, vld1q_s8(a.qs[1]));
      s = vmmlaq_s32(s, a2, vld1q_s8(a.qs[2]));
      s = vmmlaq_s32(s, a3, vld1q_s8(a.qs[3]));
      acc[p] = vfmaq_f32(acc[p], vmulq_f32(dw, vld1q_f32(a.d)), vcvtq_f32_s32(s));
    }
  }
  for (int p = 0; p < NP; ++p) vst1q_f32(res + 4 * p, acc[p]);
}

// K-quant weight rows w0, w1 x NP activation pairs x[p]; res as dot_i8mm2.
template <DType T, int NP>
inline void dot_i8mm2_k(int64_t nb, const char* w0, const char* w1, const I8mmActK2* const* x, float* res) {
  constexpr size_t kBytes = T == DType::Q4_K ? sizeof(BlockQ4_K) : T == DType::Q5_K ? sizeof(BlockQ5_K) : sizeof(BlockQ6_K);
  float acc[NP][4] = {};
  for (int64_t b = 0; b < nb; ++b) {
    const size_t off = static_cast<size_t>(b) * kBytes;
    uint8_t L[2][kQKK], sc[2][16];
    float d[2], dmin[2] = {0.0f, 0.0f};
    const char* w[2] = {w0 + off, w1 + off};
    for (int n = 0; n < 2; ++n) {
      if constexpr (T == DType::Q6_K) {
        const BlockQ6_K* q = reinterpret_cast<const BlockQ6_K*>(w[n]);
        decode_q6K(q, L[n]);
        d[n] = f16_scalar(q->d);
      } else {
        decode_q45K<T == DType::Q5_K>(w[n], L[n], sc[n], &d[n], &dmin[n]);
      }
    }
    // Sub-block scales of row n to lanes 2n, 2n + 1.
    auto scales = [&](int j) {
      if constexpr (T == DType::Q6_K) {
        const int s0 = reinterpret_cast<const BlockQ6_K*>(w[0])->scales[j];
        const int s1 = reinterpret_cast<const BlockQ6_K*>(w[1])->scales[j];
        return vcombine_s32(vdup_n_s32(s0), vdup_n_s32(s1));
      } else {
        return vcombine_s32(vdup_n_s32(sc[0][j]), vdup_n_s32(sc[1][j]));
      }
    };
    for (int p = 0; p < NP; ++p) {
      const I8mmActK2& a = x[p][b];
      int32x4_t is = vdupq_n_s32(0);
      if constexpr (T == DType::Q6_K) {
        for (int j = 0; j < kQKK / 16; ++j) {
          const int8x16_t u = vreinterpretq_s8_u8(vld1q_u8(L[0] + 16 * j));
          const int8x16_t v = vreinterpretq_s8_u8(vld1q_u8(L[1] + 16 * j));
          int32x4_t s = vmmlaq_s32(vdupq_n_s32(0), zip_lo(u, v), vld1q_s8(a.qs[2 * j]));
          s = vmmlaq_s32(s, zip_hi(u, v), vld1q_s8(a.qs[2 * j + 1]));
          is = vmlaq_s32(is, s, scales(j));
        }
      } else {
        for (int j = 0; j < kQKK / 32; ++j) {
          const int8x16_t u0 = vreinterpretq_s8_u8(vld1q_u8(L[0] + 32 * j));
          const int8x16_t v0 = vreinterpretq_s8_u8(vld1q_u8(L[1] + 32 * j));
          const int8x16_t u1 = vreinterpretq_s8_u8(vld1q_u8(L[0] + 32 * j + 16));
          const int8x16_t v1 = vreinterpretq_s8_u8(vld1q_u8(L[1] + 32 * j + 16));
          int32x4_t s = vmmlaq_s32(vdupq_n_s32(0), zip_lo(u0, v0), vld1q_s8(a.qs[4 * j]));
          s = vmmlaq_s32(s, zip_hi(u0, v0), vld1q_s8(a.qs[4 * j + 1]));
          s = vmmlaq_s32(s, zip_lo(u1, v1), vld1q_s8(a.qs[4 * j + 2]));
          s = vmmlaq_s32(s, zip_hi(u1, v1), vld1q_s8(a.qs[4 * j + 3]));
          is = vmlaq_s32(is, s, scales(j));
        }
      }
      int32_t sums[4];
      vst1q_s32(sums, is);
      for (int n = 0; n < 2; ++n)
        for (int r = 0; r < 2; ++r) {
          const float xd = a.d[r];
          if constexpr (T == DType::Q6_K) {
            const BlockQ6_K* q = reinterpret_cast<const BlockQ6_K*>(w[n]);
            int corr = 0;
            for (int j = 0; j < kQKK / 16; ++j) corr += q->scales[j] * a.bsums[r][j];
            const int isum = sums[2 * n + r] - 32 * corr;
            acc[p][2 * n + r] += d[n] * xd * static_cast<float>(isum);
          } else {
            int msum = 0;
            for (int j = 0; j < 8; ++j) msum += sc[n][8 + j] * (a.bsums[r][2 * j] + a.bsums[r][2 * j + 1]);
            const int isum = sums[2 * n + r];
            acc[p][2 * n + r] += d[n] * xd * static_cast<float>(isum) - dmin[n] * xd * static_cast<float>(msum);
          }
        }
    }
  }
  for (int p = 0; p < NP; ++p)
    for (int l = 0; l < 4; ++l) res[4 * p + l] = acc[p][l];
}

// The whole matmul through the tile: activation rows quantized (ActQ8) and repacked per
// pair into scratch, then each thread's weight rows in chunks of kNChunk, every group of
// up to kI8mmPairs pairs against each chunk while it is in cache.
template <DType T>
inline bool matmul_i8mm_t(const OpCall& c, Exec& exec) {
  const Tensor& W = *c.src[0];
  const Tensor& x = *c.src[1];
  const Tensor& y = *c.dst;
  const int64_t K = W.ne[0], N = W.ne[1], Mt = x.ne[1] * x.ne[2] * x.ne[3];
  if (N == 0 || Mt == 0) return true;
  using Act = std::conditional_t<kIsKQuant<T>, BlockQ8_K, ActQ8>;
  using Pair = std::conditional_t<kIsKQuant<T>, I8mmActK2, I8mmAct2>;
  const int64_t nb = K / (kIsKQuant<T> ? kQKK : kQK);
  const int64_t n_pairs = (Mt + 1) / 2;
  const size_t act_row = static_cast<size_t>(nb) * sizeof(Act);
  const size_t pair_bytes = static_cast<size_t>(nb) * sizeof(Pair);
  if (nb > 0 && static_cast<uint64_t>(n_pairs) > SIZE_MAX / 8 / (2 * act_row + pair_bytes)) return false;
  const size_t rows_bytes = (act_row * static_cast<size_t>(Mt) + 63) / 64 * 64;
  char* scratch = static_cast<char*>(exec.scratch(rows_bytes + pair_bytes * static_cast<size_t>(n_pairs) + 64));
  if (!scratch) return false;
  char* act = scratch;
  Pair* packed = reinterpret_cast<Pair*>(scratch + rows_bytes);
  const int64_t work = N * K * Mt;
  const int n_par = work < 64 * 1024 ? 1 : static_cast<int>(N < exec.n_threads() ? N : exec.n_threads());
  exec.parallel(n_par, [&](int ith, int nth) {
    // Whole pairs per thread: a pair is repacked by the thread that quantized its rows.
    int64_t p0, p1;
    ThreadPool::split(n_pairs, ith, nth, &p0, &p1);
    for (int64_t r = 2 * p0; r < 2 * p1 && r < Mt; ++r) {
      if constexpr (kIsKQuant<T>) quantize_act_q8K(row_at<const float>(x, r), reinterpret_cast<BlockQ8_K*>(act + r * act_row), K);
      else quantize_act_q8(row_at<const float>(x, r), reinterpret_cast<ActQ8*>(act + r * act_row), K);
    }
    for (int64_t p = p0; p < p1; ++p) {
      const Act* r0 = reinterpret_cast<const Act*>(act + 2 * p * act_row);
      const Act* r1 = 2 * p + 1 < Mt ? reinterpret_cast<const Act*>(act + (2 * p + 1) * act_row) : r0;
      pack_i8mm_act2(r0, r1, nb, packed + p * nb);
    }
    if (nth > 1) exec.pool().barrier();
    int64_t n0, n1;
    ThreadPool::split(N, ith, nth, &n0, &n1);
    for (int64_t nc = n0; nc < n1; nc += kNChunk) {
      const int64_t nc1 = nc + kNChunk < n1 ? nc + kNChunk : n1;
      for (int64_t p = 0; p < n_pairs; p += kI8mmPairs) {
        const int np = static_cast<int>(n_pairs - p < kI8mmPairs ? n_pairs - p : kI8mmPairs);
        const Pair* xp[kI8mmPairs];
        for (int i = 0; i < np; ++i) xp[i] = packed + (p + i) * nb;
        for (int64_t n = nc; n < nc1; n += 2) {
          const int rb = nc1 - n < 2 ? 1 : 2;
          const char* w0 = W.row<const char>(n);
          const char* w1 = W.row<const char>(n + rb - 1);
          float res[4 * kI8mmPairs];
          if constexpr (kIsKQuant<T>) {
            switch (np) {
              case 1: dot_i8mm2_k<T, 1>(nb, w0, w1, xp, res); break;
              case 2: dot_i8mm2_k<T, 2>(nb, w0, w1, xp, res); break;
              case 3: dot_i8mm2_k<T, 3>(nb, w0, w1, xp, res); break;
              default: dot_i8mm2_k<T, 4>(nb, w0, w1, xp, res); break;
            }
          } else {
            switch (np) {
              case 1: dot_i8mm2<T, 1>(nb, w0, w1, xp, res); break;
              case 2: dot_i8mm2<T, 2>(nb, w0, w1, xp, res); break;
              case 3: dot_i8mm2<T, 3>(nb, w0, w1, xp, res); break;
              default: dot_i8mm2<T, 4>(nb, w0, w1, xp, res); break;
            }
          }
          for (int i = 0; i < np; ++i)
            for (int r = 0; r < 2 && 2 * (p + i) + r < Mt; ++r) {
              float* yr = row_at<float>(y, 2 * (p + i) + r);
              for (int j = 0; j < rb; ++j) yr[n + j] = res[4 * i + 2 * j + r];
            }
        }
      }
    }
  });
  return true;
}

inline bool matmul_i8mm(const OpCall& c, Exec& exec) {
  switch (c.src[0]->type) {
    case DType::Q4_0: return matmul_i8mm_t<DType::Q4_0>(c, exec);
    case DType::Q5_0: return matmul_i8mm_t<DType::Q5_0>(c, exec);
    case DType::Q8_0: return matmul_i8mm_t<DType::Q8_0>(c, exec);
    case DType::Q4_K: return matmul_i8mm_t<DType::Q4_K>(c, exec);
    case DType::Q5_K: return matmul_i8mm_t<DType::Q5_K>(c, exec);
    case DType::Q6_K: return matmul_i8mm_t<DType::Q6_K>(c, exec);
    default: return false;
  }
}

#else

inline bool matmul_i8mm(const OpCall&, Exec&) { return false; }

#endif

}  // namespace mm
}  // namespace kestrel::cpu::KESTREL_ISA_NS
