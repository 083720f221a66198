// CPU matmul, part 2: quantized weight row x RA 8-bit activation rows (included by
// k_matmul.inl). Each kernel reads one weight row once and reuses every decoded block
// for RA (1..4) activation rows, so prompt processing is compute- rather than load-bound.
//
// Algorithm: integer dot products per block (x86: vpmaddubsw + vpmaddwd, or vpdpbusd
// with AVX-512 VNNI or AVX-VNNI; portable: int32 loops), converted to float once per block (Q4_0,
// Q8_0) or per super-block (K-quants, whose 6/8-bit sub-block scales are applied in
// the integer domain by vpmaddwd), times d_w * d_x. The integer sums are exact, so
// the only error against ops/ref is the activation rounding (<= d_x/2 per value) and
// float accumulation order; the tests bound it as a normalized error.
//   Q4_0:      unsigned nibbles q times x; the -8 offset is -dw * c8 per block, with
//              c8 = 8 * d_x * sum(x) stored by the activation quantizer.
//   Q5_0:      as Q4_0 with 5-bit codes (the fifth bit spread from qh to bytes by a
//              shuffle and compare) and a -16 offset, i.e. -2 * dw * c8.
//   Q8_0:      signed weight bytes w; |w| as unsigned times sign(x, w).
//   Q4_K/Q5_K: unsigned codes times x, scaled per sub-block; the mins term uses the
//              Q8_K 16-sums: dmin * d_x * sum_j m_j * (bsum_2j + bsum_2j+1).
//   Q6_K:      unsigned codes 0..63 times x; the -32 offset is 32 * sum_j sc_j * bsum_j.
// Measured (tests/test_matmul.cpp, K up to 7 blocks, N up to 65, M up to 13): worst
// relative RMS error of y vs ref q8_0 0.036, q4_0 0.025, q5_0 0.032, q4_K 0.0155, q5_K 0.015,
// q6_K 0.014 (worst at K = one block, where a single output can nearly cancel); every
// output within the activation-rounding bound stated there.
// Speed (avx2, one core of the EPYC dev VM, weights in cache, M = 1): ns per 256 weights
// q4_0 11.5, q8_0 10.2, q4_K 12.2, q5_K 14.4, q6_K 12.4; a decode matvec is therefore
// compute-bound near 10-12 GB/s of weights per core for the 4/5-bit types.
namespace kestrel::cpu::KESTREL_ISA_NS {
namespace mm {

// Decoded 6-bit scales (sc[0..7]) and mins (sc[8..15]) of a Q4_K / Q5_K super-block.
inline void k_scales(const uint8_t* s12, uint8_t* sc16) {
  uint32_t u[3];
  std::memcpy(u, s12, 12);
  const uint32_t sc_lo = u[0] & 0x3f3f3f3fu;
  const uint32_t sc_hi = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
  const uint32_t m_lo = u[1] & 0x3f3f3f3fu;
  const uint32_t m_hi = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
  const uint32_t v[4] = {sc_lo, sc_hi, m_lo, m_hi};
  std::memcpy(sc16, v, 16);
}

#if defined(__AVX2__)

inline __m256i mul_sum_u8s8(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#elif defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}
inline float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// Decode reads consecutive weight rows as one stream; its kernels prefetch kPrefetchAhead
// bytes ahead of the block they read (harmless past the end: prefetches never fault),
// which the hardware prefetchers alone do not sustain at full rate on rows of a few KiB.
constexpr size_t kPrefetchAhead = 4096;
template <size_t kBytes>
inline void prefetch_block(const void* block) {
  const char* p = static_cast<const char*>(block) + kPrefetchAhead;
  for (size_t o = 0; o < kBytes; o += 48) _mm_prefetch(p + o, _MM_HINT_T0);
}
inline __m256i loadu256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m128i loadu128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }

// Byte j of the result is 0x10 where bit j of the 32-bit qh is set, else 0: the fifth bit
// of each Q5_0 code, in element order (lane 0 bytes 0..15, lane 1 bytes 16..31).
inline __m256i q5_high_bits(uint32_t qh) {
  const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(qh)),
                                        _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL,
                                                           0x0303030303030303LL));
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit), _mm256_set1_epi8(0x10));
}

// Q4_0, Q5_0 or Q8_0 weights x ActQ8 rows.
template <int RA, DType T>
inline void dot_q8w(int64_t nb, const void* wv, const void* const* av, float* res) {
  const ActQ8* a[RA];
  for (int r = 0; r < RA; ++r) a[r] = static_cast<const ActQ8*>(av[r]);
  // kU independent accumulator chains (and correction chains): one would bound the loop
  // by the fma latency.
  constexpr int kU = RA == 1 ? 4 : 2;
  __m256 acc[kU][RA];
  float corr[kU][RA] = {};
  for (int u = 0; u < kU; ++u)
    for (int r = 0; r < RA; ++r) acc[u][r] = _mm256_setzero_ps();
  const char* w = static_cast<const char*>(wv);
  constexpr size_t kBytes = T == DType::Q4_0 ? sizeof(BlockQ4_0) : T == DType::Q5_0 ? sizeof(BlockQ5_0) : sizeof(BlockQ8_0);
  // The code offset (8 or 16) in units of the activation's c8 = 8 * d_x * sum(x).
  constexpr float kOffset = T == DType::Q4_0 ? 1.0f : 2.0f;
  auto block = [&](int64_t b, __m256* ac, float* co) {
    const char* wb = w + b * kBytes;
    if constexpr (RA == 1) prefetch_block<kBytes>(wb);
    uint16_t dh;
    std::memcpy(&dh, wb, 2);
    const float dw = f16_scalar(dh);
    if constexpr (T == DType::Q4_0 || T == DType::Q5_0) {
      constexpr int kQs = T == DType::Q4_0 ? 2 : 6;
      const __m128i q = loadu128(wb + kQs);
      __m256i wq = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
      if constexpr (T == DType::Q5_0) {
        uint32_t qh;
        std::memcpy(&qh, wb + 2, 4);
        wq = _mm256_or_si256(wq, q5_high_bits(qh));
      }
      const float dwo = kOffset * dw;
      for (int r = 0; r < RA; ++r) {
        const __m256i p = mul_sum_u8s8(wq, loadu256(a[r][b].qs));
        ac[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * a[r][b].d), ac[r]);
        co[r] += dwo * a[r][b].c8;
      }
    } else {
      const __m256i ws = loadu256(wb + 2);
      const __m256i wabs = _mm256_sign_epi8(ws, ws);
      for (int r = 0; r < RA; ++r) {
        const __m256i p = mul_sum_u8s8(wabs, _mm256_sign_epi8(loadu256(a[r][b].qs), ws));
        ac[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * a[r][b].d), ac[r]);
      }
    }
  };
  int64_t b = 0;
  for (; b + kU <= nb; b += kU)
    for (int u = 0; u < kU; ++u) block(b + u, acc[u], corr[u]);
  for (; b < nb; ++b) block(b, acc[0], corr[0]);
  for (int r = 0; r < RA; ++r) {
    __m256 s = acc[0][r];
    float c = corr[0][r];
    for (int u = 1; u < kU; ++u) {
      s = _mm256_add_ps(s, acc[u][r]);
      c += corr[u][r];
    }
    res[r] = hsum_ps(s) - c;
  }
}

// Prompt tile for Q4_0 / Q5_0 / Q8_0: RB (1 or 2) weight rows x 4 activation rows. The
// single-row kernel above converts and scales every block's integer sum on its own (cvt,
// scalar multiply, broadcast, fma, correction: about 6 of its 8 instructions per pair);
// here the 4 (8) per-pair int32 vectors of a block are reduced together by a vphaddd
// tree into one vector of block sums, then converted and scaled as one vector against
// the group's d_x / c8 lanes (hdr: 8 floats per block, d_x of rows 0..3 then c8). About
// 6 instructions per 32-element block pair instead of 11. Lane (j, r) does exactly the
// same float operations whether RB is 1 or 2, so which rows get paired (it depends on
// the thread's row range) never changes a result.
//
// The group's activations come repacked (qs4: per block the 4 rows' 32 quants, 128 bytes,
// 32-byte aligned): ActQ8 rows are 40 bytes apart, so half of the direct 32-byte loads
// crossed a cache line.
template <int RB, DType T>
inline void dot_q8w_x4(int64_t nb, const char* const* w, const int8_t* qs4, const float* hdr, float* res) {
  constexpr size_t kBytes = T == DType::Q4_0 ? sizeof(BlockQ4_0) : T == DType::Q5_0 ? sizeof(BlockQ5_0) : sizeof(BlockQ8_0);
  constexpr float kOffset = T == DType::Q4_0 ? 8.0f : T == DType::Q5_0 ? 16.0f : 0.0f;
  // c8 = 8 * d_x * sum(x); the offset term is kOffset * d_x * sum(x) = (kOffset / 8) * c8.
  const __m256 off = _mm256_set1_ps(kOffset / 8.0f);
  [[maybe_unused]] const __m256i ones = _mm256_set1_epi16(1);  // vpmaddwd pair sums (not with AVX-VNNI)
  // lanes: row 0 x act 0..3 | row 1 x act 0..3. Per lane, the float operations of the
  // decode tile (dot_rows8): acc += s * (d_w * d_x), corr += d_w * (offset * c8), y =
  // acc - corr, block by block; so a row's output does not depend on the batch it is in
  // (a rounding difference would flip the next layer's 8-bit activation rounding, and
  // batched and one-token logits would drift apart by ~1e-3 NMSE).
  __m256 acc = _mm256_setzero_ps(), corr = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m256i wq[RB], wsgn[RB];
    uint32_t dbits = 0;
    for (int j = 0; j < RB; ++j) {
      const char* wb = w[j] + b * kBytes;
      uint16_t dh;
      std::memcpy(&dh, wb, 2);
      dbits |= static_cast<uint32_t>(dh) << (16 * j);
      if constexpr (T == DType::Q4_0 || T == DType::Q5_0) {
        const __m128i q = loadu128(wb + (T == DType::Q4_0 ? 2 : 6));
        wq[j] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
        if constexpr (T == DType::Q5_0) {
          uint32_t qh;
          std::memcpy(&qh, wb + 2, 4);
          wq[j] = _mm256_or_si256(wq[j], q5_high_bits(qh));
        }
      } else {
        wsgn[j] = loadu256(wb + 2);
        wq[j] = _mm256_sign_epi8(wsgn[j], wsgn[j]);
      }
    }
    __m256i h[RB];
    for (int j = 0; j < RB; ++j) {
      __m256i p[4];
      for (int r = 0; r < 4; ++r) {
        __m256i xq = _mm256_load_si256(reinterpret_cast<const __m256i*>(qs4 + (4 * b + r) * kQK));
        if constexpr (T == DType::Q8_0) xq = _mm256_sign_epi8(xq, wsgn[j]);
#if defined(__AVXVNNI__)
        p[r] = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), wq[j], xq);
#else
        p[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(wq[j], xq), ones);
#endif
      }
      // Per 128-bit lane: [sum4(p0) sum4(p1) sum4(p2) sum4(p3)] over that lane's elements,
      // by a 4x4 transpose-add (unpacks and adds: single-uop instructions, where vphaddd
      // is several).
      const __m256i t0 = _mm256_add_epi32(_mm256_unpacklo_epi32(p[0], p[1]), _mm256_unpackhi_epi32(p[0], p[1]));
      const __m256i t1 = _mm256_add_epi32(_mm256_unpacklo_epi32(p[2], p[3]), _mm256_unpackhi_epi32(p[2], p[3]));
      h[j] = _mm256_add_epi32(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
    }
    const __m256 dx = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(hdr + 8 * b));
    const __m256 dw = _mm256_permutevar8x32_ps(
        _mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dbits)))),
        _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
    __m256 sf;
    if constexpr (RB == 2) {
      const __m256i sum = _mm256_add_epi32(_mm256_permute2x128_si256(h[0], h[1], 0x20),
                                           _mm256_permute2x128_si256(h[0], h[1], 0x31));
      sf = _mm256_cvtepi32_ps(sum);
    } else {
      const __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(h[0]), _mm256_extracti128_si256(h[0], 1));
      sf = _mm256_castps128_ps256(_mm_cvtepi32_ps(sum));
    }
    acc = _mm256_fmadd_ps(sf, _mm256_mul_ps(dw, dx), acc);
    if constexpr (T != DType::Q8_0) {
      const __m256 c8 = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(hdr + 8 * b + 4));
      corr = _mm256_fmadd_ps(dw, _mm256_mul_ps(off, c8), corr);
    }
  }
  alignas(32) float out[8];
  _mm256_store_ps(out, _mm256_sub_ps(acc, corr));
  for (int i = 0; i < 4 * RB; ++i) res[i] = out[i];
}
template <DType T>
constexpr bool kHasX4 = T == DType::Q4_0 || T == DType::Q5_0 || T == DType::Q8_0;

// Q4_K (kQ5 = false) or Q5_K weights x BlockQ8_K rows.
template <int RA, bool kQ5>
inline void dot_q45K(int64_t nb, const void* wv, const void* const* av, float* res) {
  const BlockQ8_K* a[RA];
  for (int r = 0; r < RA; ++r) a[r] = static_cast<const BlockQ8_K*>(av[r]);
  __m256 acc[RA];
  for (int r = 0; r < RA; ++r) acc[r] = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* qs;
    const uint8_t* scales;
    uint16_t dh, dmh;
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kQ5) {
      const BlockQ5_K* w = static_cast<const BlockQ5_K*>(wv) + b;
      qs = w->qs;
      scales = w->scales;
      dh = w->d;
      dmh = w->dmin;
      qh = loadu256(w->qh);
    } else {
      const BlockQ4_K* w = static_cast<const BlockQ4_K*>(wv) + b;
      qs = w->qs;
      scales = w->scales;
      dh = w->d;
      dmh = w->dmin;
    }
    if constexpr (RA == 1) prefetch_block<kQ5 ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K)>(scales);
    alignas(16) uint8_t sc[16];
    k_scales(scales, sc);
    const float d = f16_scalar(dh), dmin = f16_scalar(dmh);
    // mins as [m0 m0 m1 m1 ... m7 m7] int16, against the 16 bsums.
    const __m128i m8 = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc + 8)));
    const __m256i mins = _mm256_set_m128i(_mm_unpackhi_epi16(m8, m8), _mm_unpacklo_epi16(m8, m8));
    // The 8 scales as int16 in both lanes; scale k to every lane by one byte shuffle
    // (bytes 2k, 2k+1), not a byte extract and broadcast through a general register.
    const __m256i sc16 =
        _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc))));
    __m256i isum[RA];
    for (int r = 0; r < RA; ++r) isum[r] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = loadu256(qs + 32 * c);
      __m256i lo = _mm256_and_si256(q, m4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (kQ5) {
        const __m256i one = _mm256_set1_epi8(1);
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
      }
      const __m256i s0 = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16(static_cast<short>(0x0100 + 0x0404 * c)));
      const __m256i s1 = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16(static_cast<short>(0x0302 + 0x0404 * c)));
      for (int r = 0; r < RA; ++r) {
        const int8_t* x = a[r][b].qs + 64 * c;
#if defined(__AVXVNNI__)
        // The scale multiply and both adds in vpdpwssd: the same int32 sum (adds wrap alike).
        isum[r] = _mm256_dpwssd_avx_epi32(isum[r], _mm256_maddubs_epi16(lo, loadu256(x)), s0);
        isum[r] = _mm256_dpwssd_avx_epi32(isum[r], _mm256_maddubs_epi16(hi, loadu256(x + 32)), s1);
#else
        const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, loadu256(x)), s0);
        const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, loadu256(x + 32)), s1);
        isum[r] = _mm256_add_epi32(isum[r], _mm256_add_epi32(p0, p1));
#endif
        __asm__("" : "+x"(isum[r]));  // keep the chain: see dot_q4K_4
      }
    }
    for (int r = 0; r < RA; ++r) {
      const __m256i pm = _mm256_madd_epi16(loadu256(a[r][b].bsums), mins);
      const float dx = a[r][b].d;
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_set1_ps(d * dx), acc[r]);
      acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(pm), _mm256_set1_ps(dmin * dx), acc[r]);
    }
  }
  for (int r = 0; r < RA; ++r) res[r] = hsum_ps(acc[r]);
}

// Q4_K x 4 activation rows (the prompt path): the operations of dot_q45K<4, false>
// per output lane, in the same order (so the same bits), arranged for registers:
// the float accumulators live in memory (touched once per super-block) and the
// mins are formed after the integer loop, so the 4 integer sums, the unpacked
// codes and the two scales fit the 16 ymm registers without spills.
inline void dot_q4K_4(int64_t nb, const void* wv, const void* const* av, float* res) {
  const BlockQ8_K* a[4];
  for (int r = 0; r < 4; ++r) a[r] = static_cast<const BlockQ8_K*>(av[r]);
  alignas(32) float acc[4][8] = {};
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  for (int64_t b = 0; b < nb; ++b) {
    const BlockQ4_K* w = static_cast<const BlockQ4_K*>(wv) + b;
    alignas(16) uint8_t sc[16];
    k_scales(w->scales, sc);
    const __m256i sc16 =
        _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc))));
    __m256i i0 = _mm256_setzero_si256(), i1 = i0, i2 = i0, i3 = i0;
    for (int c = 0; c < 4; ++c) {
      const __m256i q = loadu256(w->qs + 32 * c);
      const __m256i lo = _mm256_and_si256(q, m4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      const __m256i s0 = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16(static_cast<short>(0x0100 + 0x0404 * c)));
      const __m256i s1 = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16(static_cast<short>(0x0302 + 0x0404 * c)));
      auto step = [&](const BlockQ8_K* ar, __m256i& is) {
        const int8_t* x = ar[b].qs + 64 * c;
#if defined(__AVXVNNI__)
        is = _mm256_dpwssd_avx_epi32(is, _mm256_maddubs_epi16(lo, loadu256(x)), s0);
        is = _mm256_dpwssd_avx_epi32(is, _mm256_maddubs_epi16(hi, loadu256(x + 32)), s1);
#else
        const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, loadu256(x)), s0);
        const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, loadu256(x + 32)), s1);
        is = _mm256_add_epi32(is, _mm256_add_epi32(p0, p1));
#endif
        // Integer adds reassociate freely: without this the compiler sums each row's
        // 8 products as a tree after forming them all, and spills half of them.
        __asm__("" : "+x"(is));
      };
      step(a[0], i0);
      step(a[1], i1);
      step(a[2], i2);
      step(a[3], i3);
    }
    const float d = f16_scalar(w->d), dmin = f16_scalar(w->dmin);
    const __m128i m8 = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc + 8)));
    const __m256i mins = _mm256_set_m128i(_mm_unpackhi_epi16(m8, m8), _mm_unpacklo_epi16(m8, m8));
    const __m256i is[4] = {i0, i1, i2, i3};
    for (int r = 0; r < 4; ++r) {
      const __m256i pm = _mm256_madd_epi16(loadu256(a[r][b].bsums), mins);
      const float dx = a[r][b].d;
      __m256 ac = _mm256_load_ps(acc[r]);
      ac = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[r]), _mm256_set1_ps(d * dx), ac);
      ac = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(pm), _mm256_set1_ps(dmin * dx), ac);
      _mm256_store_ps(acc[r], ac);
    }
  }
  for (int r = 0; r < 4; ++r) res[r] = hsum_ps(_mm256_load_ps(acc[r]));
}

template <int RA>
inline void dot_q6K(int64_t nb, const void* wv, const void* const* av, float* res) {
  const BlockQ8_K* a[RA];
  for (int r = 0; r < RA; ++r) a[r] = static_cast<const BlockQ8_K*>(av[r]);
  __m256 acc[RA];
  for (int r = 0; r < RA; ++r) acc[r] = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
  for (int64_t b = 0; b < nb; ++b) {
    const BlockQ6_K* w = static_cast<const BlockQ6_K*>(wv) + b;
    if constexpr (RA == 1) prefetch_block<sizeof(BlockQ6_K)>(w);
    const __m128i sc8 = loadu128(w->scales);
    const float d = f16_scalar(w->d);
    __m256i isum[RA];
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    for (int r = 0; r < RA; ++r)  // the -32 offset: 32 * sum_j sc_j * bsum_j
      isum[r] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                 _mm256_slli_epi32(_mm256_madd_epi16(loadu256(a[r][b].bsums), sc16), 5));
    for (int h = 0; h < 2; ++h) {
      const __m256i qa = loadu256(w->ql + 64 * h), qb = loadu256(w->ql + 64 * h + 32);
      const __m256i qh = loadu256(w->qh + 32 * h);
      __m256i wk[4];
      wk[0] = _mm256_or_si256(_mm256_and_si256(qa, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
      wk[1] = _mm256_or_si256(_mm256_and_si256(qb, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
      wk[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qa, 4), m4), _mm256_and_si256(qh, m30));
      wk[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qb, 4), m4),
                              _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
      for (int k = 0; k < 4; ++k) {
        // Scales of sub-blocks e (elements 0..15 of this vector) and e+1 (16..31).
        const long long e = 8 * h + 2 * k;
        const __m128i idx = _mm_set_epi64x(static_cast<long long>(0x0101010101010101ULL * (e + 1)),
                                           static_cast<long long>(0x0101010101010101ULL * e));
        const __m256i scv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, idx));
        for (int r = 0; r < RA; ++r) {
          const __m256i p = _mm256_maddubs_epi16(wk[k], loadu256(a[r][b].qs + 128 * h + 32 * k));
#if defined(__AVXVNNI__)
          isum[r] = _mm256_dpwssd_avx_epi32(isum[r], p, scv);
#else
          isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(p, scv));
#endif
          // Keep the chain (see dot_q4K_4); one row has no spills to avoid, and its
          // decode ran 6% slower with the chain fixed.
          if constexpr (RA > 1) __asm__("" : "+x"(isum[r]));
        }
      }
    }
    for (int r = 0; r < RA; ++r)
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_set1_ps(d * a[r][b].d), acc[r]);
  }
  for (int r = 0; r < RA; ++r) res[r] = hsum_ps(acc[r]);
}

#else  // portable integer kernels (sse4.2, neon): exact int32 sums, the same formulas;
       // the int8 dot products use NEON where available

// Exact int8 dot product of n values (n a multiple of 16 on NEON). NEON: sdot with the
// dotprod extension, else widening multiplies (vmull_s8) with pairwise accumulation.
inline int dot_i8(const int8_t* w, const int8_t* x, int n) {
#if defined(__ARM_NEON) && defined(__aarch64__)
  int32x4_t acc = vdupq_n_s32(0);
  for (int l = 0; l < n; l += 16) {
    const int8x16_t a = vld1q_s8(w + l), b = vld1q_s8(x + l);
#if defined(__ARM_FEATURE_DOTPROD)
    acc = vdotq_s32(acc, a, b);
#else
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    acc = vpadalq_s16(acc, vmull_high_s8(a, b));
#endif
  }
  return vaddvq_s32(acc);
#else
  int s = 0;
  for (int l = 0; l < n; ++l) s += w[l] * x[l];
  return s;
#endif
}
inline int dot32_i8(const int8_t* w, const int8_t* x) { return dot_i8(w, x, 32); }
// Codes are at most 63, so they are valid int8 values.
inline int dot_u8i8(const uint8_t* w, const int8_t* x, int n) {
  return dot_i8(reinterpret_cast<const int8_t*>(w), x, n);
}

template <int RA, DType T>
inline void dot_q8w(int64_t nb, const void* wv, const void* const* av, float* res) {
  float acc[RA] = {};
  const char* w = static_cast<const char*>(wv);
  constexpr size_t kBytes = T == DType::Q4_0 ? sizeof(BlockQ4_0) : T == DType::Q5_0 ? sizeof(BlockQ5_0) : sizeof(BlockQ8_0);
  for (int64_t b = 0; b < nb; ++b) {
    const char* wb = w + b * kBytes;
    uint16_t dh;
    std::memcpy(&dh, wb, 2);
    const float dw = f16_scalar(dh);
    int8_t ws[32];
    if constexpr (T == DType::Q4_0) {
      const uint8_t* q = reinterpret_cast<const uint8_t*>(wb + 2);
      for (int l = 0; l < 16; ++l) {
        ws[l] = static_cast<int8_t>((q[l] & 0xF) - 8);
        ws[l + 16] = static_cast<int8_t>((q[l] >> 4) - 8);
      }
    } else if constexpr (T == DType::Q5_0) {
      uint32_t qh;
      std::memcpy(&qh, wb + 2, 4);
      const uint8_t* q = reinterpret_cast<const uint8_t*>(wb + 6);
      for (int l = 0; l < 16; ++l) {
        ws[l] = static_cast<int8_t>(((q[l] & 0xF) | (((qh >> l) & 1) << 4)) - 16);
        ws[l + 16] = static_cast<int8_t>(((q[l] >> 4) | (((qh >> (l + 16)) & 1) << 4)) - 16);
      }
    } else {
      std::memcpy(ws, wb + 2, 32);
    }
    for (int r = 0; r < RA; ++r) {
      const ActQ8& x = static_cast<const ActQ8*>(av[r])[b];
      acc[r] += dw * x.d * static_cast<float>(dot32_i8(ws, x.qs));
    }
  }
  for (int r = 0; r < RA; ++r) res[r] = acc[r];
}

// A Q4_K / Q5_K super-block: its codes L (0..31), scales sc[0..7] and mins sc[8..15], and
// its two factors (the row kernel below and the i8mm tile share it).
template <bool kQ5>
inline void decode_q45K(const void* wv, uint8_t* L, uint8_t* sc, float* d, float* dmin) {
  if constexpr (kQ5) {
    const BlockQ5_K* w = static_cast<const BlockQ5_K*>(wv);
    k_scales(w->scales, sc);
    *d = f16_scalar(w->d);
    *dmin = f16_scalar(w->dmin);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        L[64 * c + l] = static_cast<uint8_t>((w->qs[32 * c + l] & 0xF) | (((w->qh[l] >> (2 * c)) & 1) << 4));
        L[64 * c + 32 + l] = static_cast<uint8_t>((w->qs[32 * c + l] >> 4) | (((w->qh[l] >> (2 * c + 1)) & 1) << 4));
      }
  } else {
    const BlockQ4_K* w = static_cast<const BlockQ4_K*>(wv);
    k_scales(w->scales, sc);
    *d = f16_scalar(w->d);
    *dmin = f16_scalar(w->dmin);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        L[64 * c + l] = w->qs[32 * c + l] & 0xF;
        L[64 * c + 32 + l] = w->qs[32 * c + l] >> 4;
      }
  }
}

template <int RA, bool kQ5>
inline void dot_q45K(int64_t nb, const void* wv, const void* const* av, float* res) {
  float acc[RA] = {};
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t L[kQKK], sc[16];
    float d, dmin;
    decode_q45K<kQ5>(static_cast<const char*>(wv) + b * (kQ5 ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K)), L, sc, &d,
                     &dmin);
    for (int r = 0; r < RA; ++r) {
      const BlockQ8_K& x = static_cast<const BlockQ8_K*>(av[r])[b];
      int isum = 0, msum = 0;
      for (int j = 0; j < 8; ++j) {
        isum += sc[j] * dot_u8i8(L + 32 * j, x.qs + 32 * j, 32);
        msum += sc[8 + j] * (x.bsums[2 * j] + x.bsums[2 * j + 1]);
      }
      acc[r] += d * x.d * static_cast<float>(isum) - dmin * x.d * static_cast<float>(msum);
    }
  }
  for (int r = 0; r < RA; ++r) res[r] = acc[r];
}

// The codes (0..63) of a Q6_K super-block (the row kernel below and the i8mm tile share it).
inline void decode_q6K(const BlockQ6_K* w, uint8_t* L) {
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const uint8_t* ql = w->ql + 64 * h;
      const uint8_t qh = w->qh[32 * h + l];
      L[128 * h + l] = static_cast<uint8_t>((ql[l] & 0xF) | ((qh & 3) << 4));
      L[128 * h + l + 32] = static_cast<uint8_t>((ql[l + 32] & 0xF) | (((qh >> 2) & 3) << 4));
      L[128 * h + l + 64] = static_cast<uint8_t>((ql[l] >> 4) | (((qh >> 4) & 3) << 4));
      L[128 * h + l + 96] = static_cast<uint8_t>((ql[l + 32] >> 4) | (((qh >> 6) & 3) << 4));
    }
}

template <int RA>
inline void dot_q6K(int64_t nb, const void* wv, const void* const* av, float* res) {
  float acc[RA] = {};
  for (int64_t b = 0; b < nb; ++b) {
    const BlockQ6_K* w = static_cast<const BlockQ6_K*>(wv) + b;
    uint8_t L[kQKK];
    decode_q6K(w, L);
    const float d = f16_scalar(w->d);
    for (int r = 0; r < RA; ++r) {
      const BlockQ8_K& x = static_cast<const BlockQ8_K*>(av[r])[b];
      int isum = 0;
      for (int j = 0; j < 16; ++j)
        isum += w->scales[j] * (dot_u8i8(L + 16 * j, x.qs + 16 * j, 16) - 32 * x.bsums[j]);
      acc[r] += d * x.d * static_cast<float>(isum);
    }
  }
  for (int r = 0; r < RA; ++r) res[r] = acc[r];
}

#endif

}  // namespace mm
}  // namespace kestrel::cpu::KESTREL_ISA_NS
