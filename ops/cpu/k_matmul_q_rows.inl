// CPU matmul, part 4: decode tiles (included by k_matmul.inl). One activation row
// against 8 consecutive weight rows of Q4_0 / Q5_0 (4 of Q8_0), so per-block work that the
// single-row kernel repeats for every row is done once per 8 rows. Also, on AVX-512, the
// Q4_K / Q6_K row kernels for 2..4 activation rows on 512-bit vectors (at the end).
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

// A pair of Q8_K activation rows, one super-block, for the pair kernels (dot_q4K_pairs,
// dot_q6K_pairs below, AVX-512 VNNI).
struct alignas(64) ActQ8KPair {
  int8_t qs[8][64];  // qs[j]: elements 32j .. 32j + 31 of row 2p, then of row 2p + 1
  union {
    float bs2[16];      // Q4_K: bsum_2k + bsum_2k+1 (k = 0..7) of row 2p, then of row 2p + 1
    int16_t bsums[32];  // Q6_K: the 16 bsums of row 2p, then of row 2p + 1
  };
  float d[16];  // d_x of row 2p (8 times), then of row 2p + 1
};
static_assert(sizeof(ActQ8KPair) == 640);

// Super-blocks of rows r0 and r1 (the same row for an odd last one) into out[0..nb), with
// the bsums as weight type t's kernel reads them.
inline void pack_q8k_pair(DType t, const BlockQ8_K* r0, const BlockQ8_K* r1, int64_t nb, ActQ8KPair* out) {
  for (int64_t b = 0; b < nb; ++b) {
    ActQ8KPair& o = out[b];
    for (int j = 0; j < 8; ++j) {
      std::memcpy(o.qs[j], r0[b].qs + 32 * j, 32);
      std::memcpy(o.qs[j] + 32, r1[b].qs + 32 * j, 32);
    }
    if (t == DType::Q6_K) {
      std::memcpy(o.bsums, r0[b].bsums, 32);
      std::memcpy(o.bsums + 16, r1[b].bsums, 32);
    } else {
      for (int k = 0; k < 8; ++k) {
        o.bs2[k] = static_cast<float>(r0[b].bsums[2 * k] + r0[b].bsums[2 * k + 1]);
        o.bs2[8 + k] = static_cast<float>(r1[b].bsums[2 * k] + r1[b].bsums[2 * k + 1]);
      }
    }
    for (int k = 0; k < 8; ++k) {
      o.d[k] = r0[b].d;
      o.d[8 + k] = r1[b].d;
    }
  }
}

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
  [[maybe_unused]] const __m256i ones = _mm256_set1_epi16(1);  // vpmaddwd pair sums (not with AVX-VNNI)
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
#if defined(__AVXVNNI__)
      p[j] = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), _mm256_sign_epi8(xq, w));
#else
      p[j] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xq, w)), ones);
#endif
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
  [[maybe_unused]] const __m256i ones = _mm256_set1_epi16(1);  // vpmaddwd pair sums (not with AVX-VNNI)
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
#if defined(__AVXVNNI__)
      p[j] = _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), lo, xlo), hi, xhi);
#else
      // int16 sums of two pairs: at most 4 * 31 * 127 < 2^15.
      const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi));
      p[j] = _mm256_madd_epi16(s16, ones);
#endif
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

#if defined(__AVX512BW__) && defined(__AVX512VNNI__)

// Q4_K and Q6_K x RA (2..8) activation rows on 512-bit vectors: the integer work of
// dot_q45K / dot_q6K per activation row halved. Two 32-byte code vectors of a super-block
// share one zmm, paired with 64 contiguous activation bytes; vpmaddubsw then vpdpwssd
// (the sub-block scale multiply and the add in one) accumulate 16 int32 lanes, and the
// two 256-bit halves are added at the end of the super-block. Lane k of that sum holds
// exactly the elements lane k of the ymm kernels holds (4-byte groups at the same
// offsets), and the float operations that follow are theirs (same order, same per-lane
// fma / fnmadd, same final hsum_ps), so the results are bitwise equal to dot_q45K /
// dot_q6K (and dot_q4K_4) at every RA: a row's output does not depend on its group.
//
// kTotals (Q4_K where the AMX tiles run, see ops/cpu/amx/amx_matmul_kq.cpp): an output is
// summed super-block by super-block in one float chain instead, acc = fma(float(I),
// d * d_x, acc), acc = fnmadd(float(P), dmin * d_x, acc), y = acc, with I and P the
// super-block's exact integer totals (the 8 lanes summed as integers), which a tile
// product gives whole; bitwise dot_q4K_pairs<.., true> and the AMX kernel.
inline int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1)));
}
// One super-block of an output in the kTotals chain.
inline float q4K_total_step(float acc, int I, int P, float d, float dmin, float dx) {
  acc = __builtin_fmaf(static_cast<float>(I), d * dx, acc);
  return __builtin_fmaf(-static_cast<float>(P), dmin * dx, acc);
}

template <int RA, bool kTotals = false>
inline void dot_q4K_z(int64_t nb, const void* wv, const void* const* av, float* res) {
  const BlockQ8_K* a[RA];
  for (int r = 0; r < RA; ++r) a[r] = static_cast<const BlockQ8_K*>(av[r]);
  __m256 acc[RA];
  float tot[RA];
  for (int r = 0; r < RA; ++r) acc[r] = _mm256_setzero_ps(), tot[r] = 0.0f;
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t b = 0; b < nb; ++b) {
    const BlockQ4_K* w = static_cast<const BlockQ4_K*>(wv) + b;
    prefetch_block<sizeof(BlockQ4_K)>(w);
    alignas(16) uint8_t sc[16];
    k_scales(w->scales, sc);
    const __m512i sc16 =
        _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc))));
    __m512i isum[RA];
    for (int r = 0; r < RA; ++r) isum[r] = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      // Chunks c = 2h, 2h+1 (32 code bytes each): low nibbles are elements 64c..64c+31
      // (scale 2c), high nibbles 64c+32..64c+63 (scale 2c+1).
      const __m512i q = _mm512_loadu_si512(w->qs + 64 * h);
      const __m512i lo = _mm512_and_si512(q, m4);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
      const __m512i w0 = _mm512_shuffle_i64x2(lo, hi, 0x44);  // [lo(2h) | hi(2h)]: elements 128h..+63
      const __m512i w1 = _mm512_shuffle_i64x2(lo, hi, 0xEE);  // [lo(2h+1) | hi(2h+1)]: 128h+64..+127
      // int16 scale e in the low 256 bits, e + 1 in the high: byte pair (2e, 2e+1).
      auto scales = [&](int e) {
        return _mm512_shuffle_epi8(sc16, _mm512_mask_blend_epi64(0xF0, _mm512_set1_epi16(static_cast<short>(0x0100 + 0x0202 * e)),
                                                                 _mm512_set1_epi16(static_cast<short>(0x0100 + 0x0202 * (e + 1)))));
      };
      const __m512i s0 = scales(4 * h), s1 = scales(4 * h + 2);
      for (int r = 0; r < RA; ++r) {
        const int8_t* x = a[r][b].qs + 128 * h;
        isum[r] = _mm512_dpwssd_epi32(isum[r], _mm512_maddubs_epi16(w0, _mm512_loadu_si512(x)), s0);
        isum[r] = _mm512_dpwssd_epi32(isum[r], _mm512_maddubs_epi16(w1, _mm512_loadu_si512(x + 64)), s1);
      }
    }
    const float d = f16_scalar(w->d), dmin = f16_scalar(w->dmin);
    const __m128i m8 = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc + 8)));
    const __m256i mins = _mm256_set_m128i(_mm_unpackhi_epi16(m8, m8), _mm_unpacklo_epi16(m8, m8));
    for (int r = 0; r < RA; ++r) {
      const __m256i is = _mm256_add_epi32(_mm512_castsi512_si256(isum[r]), _mm512_extracti64x4_epi64(isum[r], 1));
      const __m256i pm = _mm256_madd_epi16(loadu256(a[r][b].bsums), mins);
      const float dx = a[r][b].d;
      if constexpr (kTotals) {
        tot[r] = q4K_total_step(tot[r], hsum_i32(is), hsum_i32(pm), d, dmin, dx);
      } else {
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_set1_ps(d * dx), acc[r]);
        acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(pm), _mm256_set1_ps(dmin * dx), acc[r]);
      }
    }
  }
  for (int r = 0; r < RA; ++r) res[r] = kTotals ? tot[r] : hsum_ps(acc[r]);
}

// The 8 lanes of each 256-bit half of v[0..3] summed, as [v0 lo, v1 lo, v2 lo, v3 lo, v0 hi,
// v1 hi, v2 hi, v3 hi]: a transposing tree of unpacks and adds within 128-bit lanes, then the
// 128-bit lanes of each half added.
template <class V, class Add, class Lo32, class Hi32, class Lo64, class Hi64, class Sw, class Pick>
inline auto sum_halves4(const V* v, Add add, Lo32 lo32, Hi32 hi32, Lo64 lo64, Hi64 hi64, Sw swap, Pick pick) {
  const V u = add(lo32(v[0], v[1]), hi32(v[0], v[1]));
  const V w = add(lo32(v[2], v[3]), hi32(v[2], v[3]));
  const V q = add(lo64(u, w), hi64(u, w));  // 128-bit lane L: the sums of lane L of v0..v3
  return pick(add(q, swap(q)));
}
inline __m256i sum_halves4_i32(const __m512i* v) {
  return sum_halves4(
      v, [](__m512i a, __m512i b) { return _mm512_add_epi32(a, b); },
      [](__m512i a, __m512i b) { return _mm512_unpacklo_epi32(a, b); },
      [](__m512i a, __m512i b) { return _mm512_unpackhi_epi32(a, b); },
      [](__m512i a, __m512i b) { return _mm512_unpacklo_epi64(a, b); },
      [](__m512i a, __m512i b) { return _mm512_unpackhi_epi64(a, b); },
      [](__m512i a) { return _mm512_shuffle_i32x4(a, a, 0xB1); },
      [](__m512i a) { return _mm512_castsi512_si256(_mm512_shuffle_i32x4(a, a, 0x08)); });
}
inline __m256 sum_halves4_ps(const __m512* v) {
  return sum_halves4(
      v, [](__m512 a, __m512 b) { return _mm512_add_ps(a, b); },
      [](__m512 a, __m512 b) { return _mm512_unpacklo_ps(a, b); },
      [](__m512 a, __m512 b) { return _mm512_unpackhi_ps(a, b); },
      [](__m512 a, __m512 b) { return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))); },
      [](__m512 a, __m512 b) { return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))); },
      [](__m512 a) { return _mm512_shuffle_f32x4(a, a, 0xB1); },
      [](__m512 a) { return _mm512_castps512_ps256(_mm512_shuffle_f32x4(a, a, 0x08)); });
}

// The kTotals pair kernels' rows as one vector: the np pairs' first rows, then their second.
inline __m256 pairs_dx(const ActQ8KPair* const* ap, int64_t b, int np) {
  alignas(32) float dxs[8] = {};
  for (int p = 0; p < np; ++p) dxs[p] = ap[p][b].d[0], dxs[4 + p] = ap[p][b].d[8];
  return _mm256_load_ps(dxs);
}
// tot = fma(float(I), d * d_x, tot) for those rows (vd: d in every lane, dx: pairs_dx).
inline __m256 pairs_total_step(__m256 tot, __m256i I, __m256 vd, __m256 dx) {
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(I), _mm256_mul_ps(vd, dx), tot);
}
inline void pairs_totals_out(__m256 tot, float* res, int np) {
  alignas(32) float t[8];
  _mm256_store_ps(t, tot);
  for (int p = 0; p < np; ++p) res[2 * p] = t[p], res[2 * p + 1] = t[4 + p];
}

// Q4_K x NP pairs of activation rows (1..8 pairs; 1..4 with kTotals), the prompt path. The
// activation rows of a matmul call are repacked in pairs once (ActQ8KPair), so each product
// below is one 512-bit instruction whose low half is row 2p and high half row 2p + 1, and the
// per-row float work runs on both rows at once.
//
// Algorithm, per super-block: lane k of dot_q45K's ymm sum is the integer
// I_k = sum_j sc_j * D(j, k), D(j, k) the dot product of elements 32j + 4k .. 32j + 4k + 3
// (sub-block j, dword k). Code vector j holds sub-block j's 32 codes in both halves. Two
// ways to the exact I_k of row 2p in lane k and of row 2p + 1 in lane 8 + k:
//   - up to 4 pairs: vpdpbusd against the pair's sub-block j gives D(j, k). Sub-blocks 2i
//     and 2i + 1 share one word pair: D(2i + 1) is summed from kBias in both words and
//     rotated by 16 bits (high word kBias + D(2i + 1)), then D(2i) is summed onto it (low
//     word kBias + D(2i): |D| <= 4 * 15 * 128 < kBias, so no borrow), and vpdpwssd against
//     the pair (sc_2i, sc_2i+1) adds sc_2i D(2i) + sc_2i+1 D(2i + 1) plus
//     kBias (sc_2i + sc_2i+1); the sum starts from -kBias * sum(sc), so it ends at I_k.
//   - 5 to 8 pairs: vpmaddubsw against sub-block j gives the int16 sums of element pairs (at
//     most 2 * 15 * 128 in size: no saturation) and vpdpwssd against sc_j in every word
//     (a 32-bit broadcast from memory) adds sc_j D(j, k): 2 instructions per pair and
//     sub-block where the first way takes 2.5, a register copy and a rotate that has one
//     port. With the sub-block loop outside the pair loop, the pairs' 8 vpdpwssd chains hide
//     each other's latency. At 1..4 pairs this way measured 6-8% slower (bench_matmul_variants
//     --rows 4 8), so those keep the first.
// The mins term m_k * (bsum_2k + bsum_2k+1) is formed as a float product of the two
// (exact: both factors and the product are integers below 2^24), equal to dot_q45K's
// converted integer. Then per lane dot_q45K's float operations in its order:
// acc = fma(I, d * d_x, acc); acc = fnmadd(P, dmin * d_x, acc), and its final hsum_ps; so
// every output is bitwise the one-row kernel's.
// res[2p], res[2p + 1]: the rows of pair p (p < NP) against the weight row wv. kTotals: the
// chain of dot_q4K_z<.., true>, for the pairs' 8 rows in one vector (lanes: the pairs' first
// rows, then their second rows): the lanes of each half summed as integers, the mins term's
// exact products summed as floats (every partial sum is an integer below 2^24, so exact).
template <int NP, bool kTotals = false>
inline void dot_q4K_pairs(int64_t nb, const void* wv, const ActQ8KPair* const* ap, float* res) {
  static_assert(NP >= 1 && NP <= (kTotals ? 4 : 8));
  constexpr int kBias = 8192;
  const __m512i bias2 = _mm512_set1_epi32(kBias * 65536 + kBias);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  __m512 acc[NP];
  for (int p = 0; p < NP; ++p) acc[p] = _mm512_setzero_ps();
  __m256 tot = _mm256_setzero_ps();
  __m512i isv[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
  __m512 pmv[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int64_t b = 0; b < nb; ++b) {
    const BlockQ4_K* w = static_cast<const BlockQ4_K*>(wv) + b;
    prefetch_block<sizeof(BlockQ4_K)>(w);
    alignas(16) uint8_t sc[16];
    k_scales(w->scales, sc);
    __m512i wq[8];  // sub-block j's codes in both halves
    for (int c = 0; c < 4; ++c) {
      const __m512i q = _mm512_broadcast_i64x4(loadu256(w->qs + 32 * c));
      wq[2 * c] = _mm512_and_si512(q, m4);
      wq[2 * c + 1] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
    }
    const __m128i s8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc));
    __m512i isum[NP];  // I_k of the pair's two rows
    if constexpr (NP <= 4) {
      // (sc_2i, sc_2i+1) as the low and high word of every lane: dword i of the 8 scales
      // widened to words.
      const __m512i sw = _mm512_zextsi128_si512(_mm_cvtepu8_epi16(s8));
      __m512i sp[4];
      for (int i = 0; i < 4; ++i) sp[i] = _mm512_permutexvar_epi32(_mm512_set1_epi32(i), sw);
      // -kBias * (sc_0 + ... + sc_7) in every lane (vpsadbw sums the 8 bytes).
      const __m512i start =
          _mm512_broadcastd_epi32(_mm_mullo_epi32(_mm_sad_epu8(s8, _mm_setzero_si128()), _mm_set1_epi32(-kBias)));
      for (int p = 0; p < NP; ++p) {
        const ActQ8KPair& x = ap[p][b];
        __m512i is = start;
        for (int i = 0; i < 4; ++i) {
          const __m512i hi = _mm512_rol_epi32(
              _mm512_dpbusd_epi32(bias2, wq[2 * i + 1], _mm512_load_si512(x.qs[2 * i + 1])), 16);
          is = _mm512_dpwssd_epi32(is, _mm512_dpbusd_epi32(hi, wq[2 * i], _mm512_load_si512(x.qs[2 * i])), sp[i]);
        }
        isum[p] = is;
      }
    } else {
      // sc_j in both words of dword j, for vpdpwssd's 32-bit broadcast.
      alignas(32) int32_t scw[8];
      const __m128i s16 = _mm_cvtepu8_epi16(s8);
      _mm_store_si128(reinterpret_cast<__m128i*>(scw), _mm_unpacklo_epi16(s16, s16));
      _mm_store_si128(reinterpret_cast<__m128i*>(scw + 4), _mm_unpackhi_epi16(s16, s16));
      for (int p = 0; p < NP; ++p) isum[p] = _mm512_setzero_si512();
      for (int j = 0; j < 8; ++j) {
        const __m512i s = _mm512_set1_epi32(scw[j]);
        for (int p = 0; p < NP; ++p)
          isum[p] = _mm512_dpwssd_epi32(isum[p], _mm512_maddubs_epi16(wq[j], _mm512_load_si512(ap[p][b].qs[j])), s);
      }
    }
    const __m512 mins = _mm512_cvtepi32_ps(
        _mm512_broadcast_i64x4(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc + 8)))));
    const __m512 vd = _mm512_set1_ps(f16_scalar(w->d)), vdmin = _mm512_set1_ps(f16_scalar(w->dmin));
    for (int p = 0; p < NP; ++p) {
      const ActQ8KPair& x = ap[p][b];
      if constexpr (kTotals) {
        isv[p] = isum[p];
        pmv[p] = _mm512_mul_ps(mins, _mm512_load_ps(x.bs2));
      } else {
        const __m512 dx = _mm512_load_ps(x.d);
        acc[p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[p]), _mm512_mul_ps(vd, dx), acc[p]);
        acc[p] = _mm512_fnmadd_ps(_mm512_mul_ps(mins, _mm512_load_ps(x.bs2)), _mm512_mul_ps(vdmin, dx), acc[p]);
      }
    }
    if constexpr (kTotals) {
      const __m256 dx = pairs_dx(ap, b, NP);
      tot = pairs_total_step(tot, sum_halves4_i32(isv), _mm512_castps512_ps256(vd), dx);
      tot = _mm256_fnmadd_ps(sum_halves4_ps(pmv), _mm256_mul_ps(_mm512_castps512_ps256(vdmin), dx), tot);
    }
  }
  if constexpr (kTotals) {
    pairs_totals_out(tot, res, NP);
    return;
  }
  for (int p = 0; p < NP; ++p) {
    res[2 * p] = hsum_ps(_mm512_extractf32x8_ps(acc[p], 0));
    res[2 * p + 1] = hsum_ps(_mm512_extractf32x8_ps(acc[p], 1));
  }
}

// Q6_K x NP pairs of activation rows (1..4), the prompt path, as dot_q4K_pairs: lane k of
// dot_q6K's ymm sum is -32 sum_j sc_j bsum_j over its two 16-element sub-blocks plus, over
// the 8 chunks c of 32 elements, sc[2c + (k >= 4)] D(c, k) (D: the dot product of elements
// 32c + 4k .. + 3). vpdpbusd gives D(c, k) of both rows (codes of chunk c in both halves);
// |D| <= 4 * 63 * 128 < 2^15, so chunks 2i and 2i + 1 share a word pair directly (the
// second shifted into the high words, a word blend) and one vpdpwssd applies both scales;
// the sum starts from the offset, vpmaddwd of the bsums and -32 * sc (exact). Then
// dot_q6K's fma per lane and its final hsum_ps: bitwise the one-row kernel's results.
// kTotals: the chain of dot_q6K_z<.., true>, the pairs' 8 rows in one vector as in
// dot_q4K_pairs.
template <int NP, bool kTotals = false>
inline void dot_q6K_pairs(int64_t nb, const void* wv, const ActQ8KPair* const* ap, float* res) {
  const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
  __m512 acc[NP];
  for (int p = 0; p < NP; ++p) acc[p] = _mm512_setzero_ps();
  __m256 tot = _mm256_setzero_ps();
  __m512i isv[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
  for (int64_t b = 0; b < nb; ++b) {
    const BlockQ6_K* w = static_cast<const BlockQ6_K*>(wv) + b;
    prefetch_block<sizeof(BlockQ6_K)>(w);
    __m512i wq[8];  // chunk c's codes in both halves
    for (int h = 0; h < 2; ++h) {
      const __m512i qa = _mm512_broadcast_i64x4(loadu256(w->ql + 64 * h));
      const __m512i qb = _mm512_broadcast_i64x4(loadu256(w->ql + 64 * h + 32));
      const __m512i qh = _mm512_broadcast_i64x4(loadu256(w->qh + 32 * h));
      wq[4 * h] = _mm512_or_si512(_mm512_and_si512(qa, m4), _mm512_and_si512(_mm512_slli_epi16(qh, 4), m30));
      wq[4 * h + 1] = _mm512_or_si512(_mm512_and_si512(qb, m4), _mm512_and_si512(_mm512_slli_epi16(qh, 2), m30));
      wq[4 * h + 2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(qa, 4), m4), _mm512_and_si512(qh, m30));
      wq[4 * h + 3] =
          _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(qb, 4), m4), _mm512_and_si512(_mm512_srli_epi16(qh, 2), m30));
    }
    // Chunks 2i (low word) and 2i + 1 (high word): scales 4i, 4i + 2 in lanes k < 4 of
    // each half, 4i + 1, 4i + 3 in lanes k >= 4. As words, dword 2i of sw is the first
    // pair, dword 2i + 1 the second.
    const __m128i sc8 = loadu128(w->scales);
    const __m512i sw = _mm512_zextsi256_si512(
        _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, _mm_setr_epi8(0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15))));
    __m512i sp[4];
    for (int i = 0; i < 4; ++i) {
      const int a = 2 * i, c = 2 * i + 1;
      sp[i] = _mm512_permutexvar_epi32(_mm512_setr_epi32(a, a, a, a, c, c, c, c, a, a, a, a, c, c, c, c), sw);
    }
    const __m512i scn = _mm512_broadcast_i64x4(_mm256_mullo_epi16(_mm256_cvtepi8_epi16(sc8), _mm256_set1_epi16(-32)));
    const __m512 vd = _mm512_set1_ps(f16_scalar(w->d));
    for (int p = 0; p < NP; ++p) {
      const ActQ8KPair& x = ap[p][b];
      __m512i is = _mm512_madd_epi16(_mm512_load_si512(x.bsums), scn);
      for (int i = 0; i < 4; ++i) {
        const __m512i z = _mm512_setzero_si512();
        const __m512i lo = _mm512_dpbusd_epi32(z, wq[2 * i], _mm512_load_si512(x.qs[2 * i]));
        const __m512i hi = _mm512_dpbusd_epi32(z, wq[2 * i + 1], _mm512_load_si512(x.qs[2 * i + 1]));
        is = _mm512_dpwssd_epi32(is, _mm512_mask_blend_epi16(0xAAAAAAAA, lo, _mm512_slli_epi32(hi, 16)), sp[i]);
      }
      if constexpr (kTotals) isv[p] = is;
      else acc[p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(vd, _mm512_load_ps(x.d)), acc[p]);
    }
    if constexpr (kTotals) tot = pairs_total_step(tot, sum_halves4_i32(isv), _mm512_castps512_ps256(vd), pairs_dx(ap, b, NP));
  }
  if constexpr (kTotals) {
    pairs_totals_out(tot, res, NP);
    return;
  }
  for (int p = 0; p < NP; ++p) {
    res[2 * p] = hsum_ps(_mm512_extractf32x8_ps(acc[p], 0));
    res[2 * p + 1] = hsum_ps(_mm512_extractf32x8_ps(acc[p], 1));
  }
}

// kTotals: acc = fma(float(I), d * d_x, acc) per super-block, I the lanes' exact integer
// total (ops/cpu/amx/amx_matmul_kq.cpp's chain).
template <int RA, bool kTotals = false>
inline void dot_q6K_z(int64_t nb, const void* wv, const void* const* av, float* res) {
  const BlockQ8_K* a[RA];
  for (int r = 0; r < RA; ++r) a[r] = static_cast<const BlockQ8_K*>(av[r]);
  __m256 acc[RA];
  float tot[RA];
  for (int r = 0; r < RA; ++r) acc[r] = _mm256_setzero_ps(), tot[r] = 0.0f;
  const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
  // The high bits of code vectors k = 0, 1 (low, high 256 bits) are qh << 4, << 2; of
  // k = 2, 3 they are qh, qh >> 2.
  const __m512i shl01 = _mm512_mask_blend_epi64(0xF0, _mm512_set1_epi16(4), _mm512_set1_epi16(2));
  const __m512i shr23 = _mm512_mask_blend_epi64(0xF0, _mm512_setzero_si512(), _mm512_set1_epi16(2));
  for (int64_t b = 0; b < nb; ++b) {
    const BlockQ6_K* w = static_cast<const BlockQ6_K*>(wv) + b;
    prefetch_block<sizeof(BlockQ6_K)>(w);
    const __m128i sc8 = loadu128(w->scales);
    const float d = f16_scalar(w->d);
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    __m512i isum[RA];
    for (int r = 0; r < RA; ++r) isum[r] = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m512i q = _mm512_loadu_si512(w->ql + 64 * h);  // [qa | qb]
      const __m512i qh = _mm512_broadcast_i64x4(loadu256(w->qh + 32 * h));
      // [wk0 | wk1] and [wk2 | wk3] of dot_q6K.
      const __m512i w01 = _mm512_or_si512(_mm512_and_si512(q, m4), _mm512_and_si512(_mm512_sllv_epi16(qh, shl01), m30));
      const __m512i w23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(q, 4), m4),
                                          _mm512_and_si512(_mm512_srlv_epi16(qh, shr23), m30));
      // Scales of sub-blocks 8h + 0..3 (w01) and 8h + 4..7 (w23), 16 elements each: as
      // int16, each repeated over its 8 lanes.
      auto scales = [&](int e) {
        const __m128i idx = _mm_setr_epi8(e, e, e, e, e, e, e, e, e + 1, e + 1, e + 1, e + 1, e + 1, e + 1, e + 1, e + 1);
        const __m128i idx2 = _mm_add_epi8(idx, _mm_set1_epi8(2));
        return _mm512_inserti64x4(_mm512_zextsi256_si512(_mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, idx))),
                                  _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, idx2)), 1);
      };
      const __m512i s01 = scales(8 * h), s23 = scales(8 * h + 4);
      for (int r = 0; r < RA; ++r) {
        const int8_t* x = a[r][b].qs + 128 * h;
        isum[r] = _mm512_dpwssd_epi32(isum[r], _mm512_maddubs_epi16(w01, _mm512_loadu_si512(x)), s01);
        isum[r] = _mm512_dpwssd_epi32(isum[r], _mm512_maddubs_epi16(w23, _mm512_loadu_si512(x + 64)), s23);
      }
    }
    for (int r = 0; r < RA; ++r) {
      // The -32 offset: 32 * sum_j sc_j * bsum_j, as dot_q6K starts its sum.
      const __m256i off = _mm256_sub_epi32(_mm256_setzero_si256(),
                                           _mm256_slli_epi32(_mm256_madd_epi16(loadu256(a[r][b].bsums), sc16), 5));
      const __m256i is = _mm256_add_epi32(off, _mm256_add_epi32(_mm512_castsi512_si256(isum[r]),
                                                                _mm512_extracti64x4_epi64(isum[r], 1)));
      if constexpr (kTotals) tot[r] = __builtin_fmaf(static_cast<float>(hsum_i32(is)), d * a[r][b].d, tot[r]);
      else acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_set1_ps(d * a[r][b].d), acc[r]);
    }
  }
  for (int r = 0; r < RA; ++r) res[r] = kTotals ? tot[r] : hsum_ps(acc[r]);
}

#endif

#else

template <DType T>
constexpr bool kHasRows8 = false;

#endif

}  // namespace mm
}  // namespace kestrel::cpu::KESTREL_ISA_NS
