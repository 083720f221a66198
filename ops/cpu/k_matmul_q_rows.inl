// CPU matmul, part 4: decode tiles (included by k_matmul.inl). One activation row
// against 8 consecutive weight rows of Q4_0 / Q5_0 (4 of Q8_0), so per-block work that the
// single-row kernel repeats for every row is done once per 8 rows.
//
// Algorithm (AVX2), per 32-element block b:
//   - Two rows share one 256-bit register: row j's 16 code bytes in the low lane,
//     row j+1's in the high lane. One and/shift pair splits them into elements 0..15
//     (low nibbles) and 16..31 (high nibbles) of both rows, against the activation's
//     two halves broadcast to both lanes; vpmaddubsw twice, one 16-bit add, one
//     vpmaddwd: 4 int32 partial sums per row and lane. The int16 sum of two pairs
//     is at most 4 * 31 * 127 < 2^15, so nothing saturates.
//   - Three vphaddd over the four pair registers leave the 8 rows' exact block sums in
//     one vector (lanes: rows 0 2 4 6 | 1 3 5 7), converted once, scaled by the 8
//     rows' d_w (gathered from the block headers, one vcvtph2ps) times d_x, and
//     accumulated; the code offset is -d_w * c8 (Q4_0) or -2 * d_w * c8 (Q5_0).
// Every lane runs the same float operations (integer sums are exact), so a row's result
// does not depend on which tile or lane it lands in: rows past the end of a tail tile
// repeat the last row and are dropped. Error: as dot_q8w (activation rounding only);
// tests/test_matmul.cpp compares M = 1 against ops/ref at awkward N.
namespace kestrel::cpu::KESTREL_ISA_NS {
namespace mm {

#if defined(__AVX2__)

template <DType T>
constexpr bool kHasRows8 = T == DType::Q4_0 || T == DType::Q5_0;

inline int ld_u16(const char* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// Q8_0 (memory-bound: four weight streams, not eight): rows[0..3] against the
// activation (|w| times sign(x, w)), the block sums by one vphaddd tree, then per lane
// the same float operations as the Q4_0 tile without the offset.
inline void dot_rows4_q8(int64_t nb, const char* const* rows, const ActQ8* a, const char* next, float* res) {
  constexpr size_t kBytes = sizeof(BlockQ8_0);
  const __m256i ones = _mm256_set1_epi16(1);
  __m128 acc = _mm_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const size_t off = static_cast<size_t>(b) * kBytes;
    // The next tile (contiguous when rows are), at the rate this one is consumed.
    const char* pf = next + 4 * off;
    _mm_prefetch(pf, _MM_HINT_T0);
    _mm_prefetch(pf + 48, _MM_HINT_T0);
    _mm_prefetch(pf + 96, _MM_HINT_T0);
    const __m256i xq = loadu256(a[b].qs);
    __m256i p[4];
    for (int j = 0; j < 4; ++j) {
      const __m256i w = loadu256(rows[j] + off + 2);
      p[j] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xq, w)), ones);
    }
    // Lanes of h: rows 0..3 over the low 16 elements | over the high 16: add the halves.
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    const __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    __m128i dh = _mm_cvtsi32_si128(ld_u16(rows[0] + off));
    dh = _mm_insert_epi16(dh, ld_u16(rows[1] + off), 1);
    dh = _mm_insert_epi16(dh, ld_u16(rows[2] + off), 2);
    dh = _mm_insert_epi16(dh, ld_u16(rows[3] + off), 3);
    acc = _mm_fmadd_ps(_mm_cvtepi32_ps(sum), _mm_mul_ps(_mm_cvtph_ps(dh), _mm_set1_ps(a[b].d)), acc);
  }
  _mm_storeu_ps(res, acc);
}

// rows[0..7] (rows past the tile's end repeat its last row); res[0..7] in row order.
// next: where the next tile's rows start (only prefetched, never read).
template <DType T>
inline void dot_rows8(int64_t nb, const char* const* rows, const ActQ8* a, const char* next, float* res) {
  constexpr size_t kBytes = T == DType::Q4_0 ? sizeof(BlockQ4_0) : sizeof(BlockQ5_0);
  constexpr int kQs = T == DType::Q4_0 ? 2 : 6;
  constexpr float kOffset = T == DType::Q4_0 ? 1.0f : 2.0f;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  // Lane order of the block sums: rows 0 2 4 6 | 1 3 5 7.
  const char* r[8] = {rows[0], rows[2], rows[4], rows[6], rows[1], rows[3], rows[5], rows[7]};
  __m256 acc = _mm256_setzero_ps(), corr = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const size_t off = static_cast<size_t>(b) * kBytes;
    // The tile reads 8 short streams at once, which the hardware prefetchers follow
    // poorly on rows of a few KiB; fetch the next tile (contiguous when rows are) at the
    // rate this one is consumed: 8 blocks' bytes per block, a line every 48 bytes.
    const char* pf = next + 8 * off;
    _mm_prefetch(pf, _MM_HINT_T0);
    _mm_prefetch(pf + 48, _MM_HINT_T0);
    _mm_prefetch(pf + 96, _MM_HINT_T0);
    const __m256i xlo = _mm256_broadcastsi128_si256(loadu128(a[b].qs));
    const __m256i xhi = _mm256_broadcastsi128_si256(loadu128(a[b].qs + 16));
    __m256i p[4];
    for (int j = 0; j < 4; ++j) {
      const char* w0 = rows[2 * j] + off;
      const char* w1 = rows[2 * j + 1] + off;
      const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(loadu128(w0 + kQs)), loadu128(w1 + kQs), 1);
      __m256i lo = _mm256_and_si256(q, m4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (T == DType::Q5_0) {
        uint32_t h0, h1;
        std::memcpy(&h0, w0 + 2, 4);
        std::memcpy(&h1, w1 + 2, 4);
        // Fifth bits: elements 0..15 of both rows into lo, 16..31 into hi.
        const __m256i hb0 = q5_high_bits(h0), hb1 = q5_high_bits(h1);
        lo = _mm256_or_si256(lo, _mm256_permute2x128_si256(hb0, hb1, 0x20));
        hi = _mm256_or_si256(hi, _mm256_permute2x128_si256(hb0, hb1, 0x31));
      }
      const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi));
      p[j] = _mm256_madd_epi16(s16, ones);
    }
    const __m256i sum = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    __m128i dh = _mm_cvtsi32_si128(ld_u16(r[0] + off));
    dh = _mm_insert_epi16(dh, ld_u16(r[1] + off), 1);
    dh = _mm_insert_epi16(dh, ld_u16(r[2] + off), 2);
    dh = _mm_insert_epi16(dh, ld_u16(r[3] + off), 3);
    dh = _mm_insert_epi16(dh, ld_u16(r[4] + off), 4);
    dh = _mm_insert_epi16(dh, ld_u16(r[5] + off), 5);
    dh = _mm_insert_epi16(dh, ld_u16(r[6] + off), 6);
    dh = _mm_insert_epi16(dh, ld_u16(r[7] + off), 7);
    const __m256 dw = _mm256_cvtph_ps(dh);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(dw, _mm256_set1_ps(a[b].d)), acc);
    corr = _mm256_fmadd_ps(dw, _mm256_set1_ps(kOffset * a[b].c8), corr);
  }
  alignas(32) float out[8];
  _mm256_store_ps(out, _mm256_sub_ps(acc, corr));
  static constexpr int kLane[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // row -> lane
  for (int j = 0; j < 8; ++j) res[j] = out[kLane[j]];
}

#else

template <DType T>
constexpr bool kHasRows8 = false;

#endif

}  // namespace mm
}  // namespace kestrel::cpu::KESTREL_ISA_NS
