// CPU matmul, part 4b: Q4_1 / Q5_1 weights against ActQ8 activation rows (included by
// k_matmul.inl after k_matmul_q.inl and k_matmul_q_rows.inl, whose helpers it uses).
//
// A weight block is x = d_w * q + m_w with unsigned codes q (4 or 5 bits, laid out as Q4_0 /
// Q5_0). Against an activation block x = d_x * s:
//   sum_j x_w[j] * x_a[j] = d_w * d_x * sum_j q[j] * s[j] + m_w * d_x * sum_j s[j].
// The first term is an exact integer dot product (codes as unsigned bytes times signed
// activations: vpmaddubsw + vpmaddwd, or vpdpbusd with AVX-512 VNNI; int32 loops in the
// portable path). The second is llama.cpp's Q8_1 "s" term; ActQ8 carries c8 = 8 * d_x *
// sum(s), so it is (m_w / 8) * c8 (the / 8 is exact). This is the pairing ggml uses
// (Q4_1 / Q5_1 with Q8_1), without a separate activation format.
//
// On AVX2 the types also have dot_q8w's two tiles (the decode tile, 8 weight rows x 1
// activation row, and the prompt tile, 2 x 4), and on AVX-512 VNNI the few-rows tile
// (k_matmul_q_vnni.inl), which all do the same float operations per output, so batched and
// one-token results agree bit for bit. The row kernel (dot_q1w, the only path off x86)
// keeps two accumulator chains whatever RA is. No AMX tile: amx_supports() refuses them.
namespace kestrel::cpu::KESTREL_ISA_NS {
namespace mm {

template <DType T>
constexpr bool kIsQ1 = T == DType::Q4_1 || T == DType::Q5_1;

#if defined(__AVX2__)

template <int RA, DType T>
inline void dot_q1w(int64_t nb, const void* wv, const void* const* av, float* res) {
  static_assert(kIsQ1<T>);
  const ActQ8* a[RA];
  for (int r = 0; r < RA; ++r) a[r] = static_cast<const ActQ8*>(av[r]);
  // Two independent chains (one would bound the loop by the fma latency).
  constexpr int kU = 2;
  __m256 acc[kU][RA];
  float mins[kU][RA] = {};
  for (int u = 0; u < kU; ++u)
    for (int r = 0; r < RA; ++r) acc[u][r] = _mm256_setzero_ps();
  const char* w = static_cast<const char*>(wv);
  constexpr size_t kBytes = T == DType::Q4_1 ? sizeof(BlockQ4_1) : sizeof(BlockQ5_1);
  constexpr int kQs = T == DType::Q4_1 ? 4 : 8;  // offset of the nibbles in the block
  auto block = [&](int64_t b, __m256* ac, float* mn) {
    const char* wb = w + b * kBytes;
    if constexpr (RA == 1) prefetch_block<kBytes>(wb);  // decode streams the weights
    uint16_t h[2];
    std::memcpy(h, wb, 4);
    const float dw = f16_scalar(h[0]);
    const float m8 = 0.125f * f16_scalar(h[1]);
    const __m128i q = loadu128(wb + kQs);
    __m256i wq = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
    if constexpr (T == DType::Q5_1) {
      uint32_t qh;
      std::memcpy(&qh, wb + 4, 4);
      wq = _mm256_or_si256(wq, q5_high_bits(qh));
    }
    for (int r = 0; r < RA; ++r) {
      const __m256i p = mul_sum_u8s8(wq, loadu256(a[r][b].qs));
      ac[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * a[r][b].d), ac[r]);
      mn[r] += m8 * a[r][b].c8;
    }
  };
  int64_t b = 0;
  for (; b + kU <= nb; b += kU)
    for (int u = 0; u < kU; ++u) block(b + u, acc[u], mins[u]);
  for (; b < nb; ++b) block(b, acc[0], mins[0]);
  for (int r = 0; r < RA; ++r) res[r] = hsum_ps(_mm256_add_ps(acc[0][r], acc[1][r])) + (mins[0][r] + mins[1][r]);
}

// Decode tile: one activation row x rows[0..7] (rows past a tail tile's end repeat its
// last row; res in row order), as dot_rows8 of k_matmul_q_rows.inl: two rows' codes share a
// register, three vphaddd leave the 8 exact block sums in one vector (lanes: rows 0 2 4 6 |
// 1 3 5 7), scaled by the 8 rows' d_w (one vcvtph2ps) times d_x; the min term is
// m_w * (c8 / 8) per lane. next: where the next tile starts (only prefetched).
template <DType T>
inline void dot_rows8_q1(int64_t nb, const char* const* rows, const ActQ8* a, const char* next, float* res) {
  constexpr size_t kBytes = T == DType::Q4_1 ? sizeof(BlockQ4_1) : sizeof(BlockQ5_1);
  constexpr int kQs = T == DType::Q4_1 ? 4 : 8;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  [[maybe_unused]] const __m256i ones = _mm256_set1_epi16(1);  // vpmaddwd pair sums (not with AVX-VNNI)
  const char* r[8] = {rows[0], rows[2], rows[4], rows[6], rows[1], rows[3], rows[5], rows[7]};
  __m256 acc = _mm256_setzero_ps(), mins = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const size_t off = static_cast<size_t>(b) * kBytes;
    const char* pf = next + 8 * off;
    _mm_prefetch(pf, _MM_HINT_T0);
    _mm_prefetch(pf + 48, _MM_HINT_T0);
    _mm_prefetch(pf + 96, _MM_HINT_T0);
    _mm_prefetch(pf + 144, _MM_HINT_T0);
    const __m256i xlo = _mm256_broadcastsi128_si256(loadu128(a[b].qs));
    const __m256i xhi = _mm256_broadcastsi128_si256(loadu128(a[b].qs + 16));
    __m256i p[4];
    for (int j = 0; j < 4; ++j) {
      const char* w0 = rows[2 * j] + off;
      const char* w1 = rows[2 * j + 1] + off;
      const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(loadu128(w0 + kQs)), loadu128(w1 + kQs), 1);
      __m256i lo = _mm256_and_si256(q, m4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (T == DType::Q5_1) {
        uint32_t h0, h1;
        std::memcpy(&h0, w0 + 4, 4);
        std::memcpy(&h1, w1 + 4, 4);
        const __m256i hb0 = q5_high_bits(h0), hb1 = q5_high_bits(h1);
        lo = _mm256_or_si256(lo, _mm256_permute2x128_si256(hb0, hb1, 0x20));
        hi = _mm256_or_si256(hi, _mm256_permute2x128_si256(hb0, hb1, 0x31));
      }
#if defined(__AVXVNNI__)
      p[j] = _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), lo, xlo), hi, xhi);
#else
      // int16 sums of two pairs: at most 4 * 31 * 127 < 2^15.
      const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi));
      p[j] = _mm256_madd_epi16(s16, ones);
#endif
    }
    const __m256i sum = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    // d_w of the 8 rows in the low 8 halves, m_w in the high 8 (from one 32-bit load each).
    uint32_t hdr[8];
    for (int j = 0; j < 8; ++j) std::memcpy(&hdr[j], r[j] + off, 4);
    // hdr[j] = d_j | m_j << 16: split into the two F16 vectors.
    const __m256i dm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hdr));
    // Per 128-bit lane (4 rows): their 4 d halves, then their 4 m halves.
    const __m256i split =
        _mm256_broadcastsi128_si256(_mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15));
    const __m256i dlo = _mm256_shuffle_epi8(dm, split);
    const __m256i dd = _mm256_permute4x64_epi64(dlo, 0xD8);  // d0..d7 | m0..m7
    const __m256 dw = _mm256_cvtph_ps(_mm256_castsi256_si128(dd));
    const __m256 mw = _mm256_cvtph_ps(_mm256_extracti128_si256(dd, 1));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(dw, _mm256_set1_ps(a[b].d)), acc);
    mins = _mm256_fmadd_ps(mw, _mm256_set1_ps(0.125f * a[b].c8), mins);
  }
  alignas(32) float out[8];
  _mm256_store_ps(out, _mm256_add_ps(acc, mins));
  static constexpr int kLane[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // row -> lane
  for (int j = 0; j < 8; ++j) res[j] = out[kLane[j]];
}

// Prompt tile: RB (1 or 2) weight rows x 4 activation rows, as dot_q8w_x4 of
// k_matmul_q.inl (the group's repacked quants qs4 and its d_x / c8 lanes hdr). Per lane
// the float operations of dot_rows8_q1, so a row's output does not depend on its batch.
template <int RB, DType T>
inline void dot_q1w_x4(int64_t nb, const char* const* w, const int8_t* qs4, const float* hdr, float* res) {
  constexpr size_t kBytes = T == DType::Q4_1 ? sizeof(BlockQ4_1) : sizeof(BlockQ5_1);
  constexpr int kQs = T == DType::Q4_1 ? 4 : 8;
  const __m256 eighth = _mm256_set1_ps(0.125f);
  [[maybe_unused]] const __m256i ones = _mm256_set1_epi16(1);  // vpmaddwd pair sums (not with AVX-VNNI)
  __m256 acc = _mm256_setzero_ps(), mins = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m256i wq[RB];
    uint32_t dbits = 0, mbits = 0;
    for (int j = 0; j < RB; ++j) {
      const char* wb = w[j] + b * kBytes;
      uint16_t h[2];
      std::memcpy(h, wb, 4);
      dbits |= static_cast<uint32_t>(h[0]) << (16 * j);
      mbits |= static_cast<uint32_t>(h[1]) << (16 * j);
      const __m128i q = loadu128(wb + kQs);
      wq[j] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
      if constexpr (T == DType::Q5_1) {
        uint32_t qh;
        std::memcpy(&qh, wb + 4, 4);
        wq[j] = _mm256_or_si256(wq[j], q5_high_bits(qh));
      }
    }
    __m256i hs[RB];
    for (int j = 0; j < RB; ++j) {
      __m256i p[4];
      for (int r = 0; r < 4; ++r) {
        const __m256i xq = _mm256_load_si256(reinterpret_cast<const __m256i*>(qs4 + (4 * b + r) * kQK));
#if defined(__AVXVNNI__)
        p[r] = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), wq[j], xq);
#else
        p[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(wq[j], xq), ones);
#endif
      }
      const __m256i t0 = _mm256_add_epi32(_mm256_unpacklo_epi32(p[0], p[1]), _mm256_unpackhi_epi32(p[0], p[1]));
      const __m256i t1 = _mm256_add_epi32(_mm256_unpacklo_epi32(p[2], p[3]), _mm256_unpackhi_epi32(p[2], p[3]));
      hs[j] = _mm256_add_epi32(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
    }
    const __m256 dx = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(hdr + 8 * b));
    const __m256 c8 = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(hdr + 8 * b + 4));
    const __m256i lanes = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m256 dw = _mm256_permutevar8x32_ps(
        _mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dbits)))), lanes);
    const __m256 mw = _mm256_permutevar8x32_ps(
        _mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(mbits)))), lanes);
    __m256 sf;
    if constexpr (RB == 2) {
      const __m256i sum = _mm256_add_epi32(_mm256_permute2x128_si256(hs[0], hs[1], 0x20),
                                           _mm256_permute2x128_si256(hs[0], hs[1], 0x31));
      sf = _mm256_cvtepi32_ps(sum);
    } else {
      const __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(hs[0]), _mm256_extracti128_si256(hs[0], 1));
      sf = _mm256_zextps128_ps256(_mm_cvtepi32_ps(sum));
    }
    acc = _mm256_fmadd_ps(sf, _mm256_mul_ps(dw, dx), acc);
    mins = _mm256_fmadd_ps(mw, _mm256_mul_ps(eighth, c8), mins);
  }
  alignas(32) float out[8];
  _mm256_store_ps(out, _mm256_add_ps(acc, mins));
  for (int i = 0; i < 4 * RB; ++i) res[i] = out[i];
}

#else  // portable (sse4.2, neon): the same formula with int32 sums (dot_u8i8)

template <int RA, DType T>
inline void dot_q1w(int64_t nb, const void* wv, const void* const* av, float* res) {
  static_assert(kIsQ1<T>);
  float acc[RA] = {};
  const char* w = static_cast<const char*>(wv);
  constexpr size_t kBytes = T == DType::Q4_1 ? sizeof(BlockQ4_1) : sizeof(BlockQ5_1);
  for (int64_t b = 0; b < nb; ++b) {
    const char* wb = w + b * kBytes;
    uint16_t h[2];
    std::memcpy(h, wb, 4);
    const float dw = f16_scalar(h[0]);
    const float m8 = 0.125f * f16_scalar(h[1]);
    uint8_t L[kQK];  // codes 0..31: valid int8 values for dot_u8i8
    if constexpr (T == DType::Q4_1) {
      const uint8_t* q = reinterpret_cast<const uint8_t*>(wb + 4);
      for (int l = 0; l < 16; ++l) {
        L[l] = q[l] & 0xF;
        L[l + 16] = q[l] >> 4;
      }
    } else {
      uint32_t qh;
      std::memcpy(&qh, wb + 4, 4);
      const uint8_t* q = reinterpret_cast<const uint8_t*>(wb + 8);
      for (int l = 0; l < 16; ++l) {
        L[l] = static_cast<uint8_t>((q[l] & 0xF) | (((qh >> l) & 1) << 4));
        L[l + 16] = static_cast<uint8_t>((q[l] >> 4) | (((qh >> (l + 16)) & 1) << 4));
      }
    }
    for (int r = 0; r < RA; ++r) {
      const ActQ8& x = static_cast<const ActQ8*>(av[r])[b];
      acc[r] += dw * x.d * static_cast<float>(dot_u8i8(L, x.qs, kQK)) + m8 * x.c8;
    }
  }
  for (int r = 0; r < RA; ++r) res[r] = acc[r];
}

#endif

}  // namespace mm
}  // namespace kestrel::cpu::KESTREL_ISA_NS
