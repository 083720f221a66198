// CPU matmul, part 5: the few-rows tile for Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 on AVX-512 VNNI (included by
// k_matmul.inl after matmul_run). Batched decoding (a few sequences, one token each) and
// short draft verifications multiply every weight row by 2..7 activation rows; the decode
// tile (k_matmul_q_rows.inl) then reads and unpacks each weight block once per activation
// row, and the prompt tile reduces its int32 partial sums lane by lane. Here a weight block
// of 4 rows is unpacked once and applied to 4 activation rows at once, with 512-bit
// vpdpbusd and no horizontal reduction.
//
// Algorithm, per 32-element block b and tile of 4 weight rows n x 4 activation rows m:
//   - Lane k = 4n + m of one zmm accumulates the block's exact integer dot product of
//     (n, m): step j (0..7) adds dword j of weight row n (4 codes, unsigned) times dword j
//     of activation row m (4 int8) by one vpdpbusd. The weight operand of step j is one
//     vpermd of the unpacked codes (4 rows x 16 nibbles per zmm for Q4_0 / Q5_0, two zmm
//     of 32 bytes for Q8_0); the activation operand is [x0_j x1_j x2_j x3_j] broadcast to
//     the four 128-bit lanes, read from a per-call repacking (VnniAct4).
//   - Q8_0's signed weights go in as w + 128 (xor 0x80), so the sum is started from
//     -128 * sum(x) (stored per activation row and block).
//   - Then per lane the float operations of the decode tile dot_rows8 / dot_rows4_q8:
//     acc = fma(float(s), d_w * d_x, acc); corr = fma(d_w, offset * c8, corr) for the
//     offset types; y = acc - corr (Q8_0: y = acc). Q4_1 / Q5_1 (k_matmul_q1.inl) have no
//     offset but a min: mins = fma(m_w, c8 / 8, mins), y = acc + mins, as dot_rows8_q1.
//     The integer sums are exact, so every
//     output is bitwise the decode tile's, whatever M and the tile or lanes it falls in;
//     tests/test_matmul_rows.cpp checks this and the error against ops/ref.
// Activation rows past the end of a group of 4 repeat its last row; weight rows past the
// end of a tile repeat the tile's last row; both are computed and dropped.
namespace kestrel::cpu::KESTREL_ISA_NS {
namespace mm {

// Whether this ISA's table has the few-rows tile for weight type t.
constexpr bool has_vnni_tiles(DType t) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  return t == DType::Q4_0 || t == DType::Q5_0 || t == DType::Q8_0 || t == DType::Q4_1 || t == DType::Q5_1;
#else
  (void)t;
  return false;
#endif
}

// The default policy's rows for the tile: from 2 (one row takes the decode tile, which does
// the same operations per output with fewer wasted lanes).
constexpr int64_t kVnniMinRows = 2;
// Groups of 4 activation rows that share one unpacked weight block in the tile.
constexpr int kVnniGroups = 4;

// One block of a group of 4 quantized activation rows, repacked for the tile.
struct alignas(16) VnniAct4 {
  int8_t qs[8][16];  // qs[j]: dword j (elements 4j..4j+3) of rows 0..3, in row order
  float d[4];        // d_x of rows 0..3
  float c8[4];       // offset * c8 of rows 0..3 (Q4_0: 1 x c8, Q5_0: 2 x c8, Q4_1 / Q5_1: c8 / 8;
                     // Q8_0: unused)
  int32_t sx[4];     // -128 * sum(x) of rows 0..3 (Q8_0's start value; others: unused)
};
static_assert(sizeof(VnniAct4) == 176);

template <DType T>
inline void pack_vnni_act4(const ActQ8* const* rows, int64_t nb, VnniAct4* out) {
  constexpr float kOffset = T == DType::Q4_0 ? 1.0f : kIsQ1<T> ? 0.125f : 2.0f;
  for (int64_t b = 0; b < nb; ++b) {
    VnniAct4& o = out[b];
    for (int r = 0; r < 4; ++r) {
      const ActQ8& a = rows[r][b];
      for (int j = 0; j < 8; ++j) std::memcpy(&o.qs[j][4 * r], a.qs + 4 * j, 4);
      o.d[r] = a.d;
      o.c8[r] = kOffset * a.c8;  // the decode tile's set1(kOffset * c8) (or 0.125f * c8), the same product
      int s = 0;
      for (int l = 0; l < kQK; ++l) s += a.qs[l];
      o.sx[r] = -128 * s;
    }
  }
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)

// rows[0..3]: the tile's weight rows; x[g] (g < NG): groups of 4 activation rows;
// res[16 g + 4n + m] = y of weight row n, activation row m of group g. A weight block is
// unpacked once for the NG groups. next: where the next tile starts (only prefetched).
template <DType T, int NG>
inline void dot_vnni4x4(int64_t nb, const char* const* rows, const VnniAct4* const* x, const char* next, float* res) {
  constexpr size_t kBytes = T == DType::Q4_0   ? sizeof(BlockQ4_0)
                            : T == DType::Q5_0 ? sizeof(BlockQ5_0)
                            : T == DType::Q4_1 ? sizeof(BlockQ4_1)
                            : T == DType::Q5_1 ? sizeof(BlockQ5_1)
                                               : sizeof(BlockQ8_0);
  constexpr int kQs = T == DType::Q5_0 ? 6 : T == DType::Q4_1 ? 4 : T == DType::Q5_1 ? 8 : 2;
  constexpr int kQh = T == DType::Q5_1 ? 4 : 2;  // offset of the fifth bits (Q5_0 / Q5_1)
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  // d_w of row n to lanes 4n..4n+3.
  const __m512i dw_idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  // Step j's weight dwords: Q4_0 / Q5_0 row n's codes at dwords 4n..4n+3 of one zmm (lo
  // for steps 0..3, hi for 4..7); Q8_0 rows 0, 1 in one zmm and rows 2, 3 in another
  // (indices 16.. select the second).
  const __m512i base4 = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12);
  const __m512i base8 = _mm512_setr_epi32(0, 0, 0, 0, 8, 8, 8, 8, 16, 16, 16, 16, 24, 24, 24, 24);
  __m512 acc[NG], corr[NG];
  for (int g = 0; g < NG; ++g) acc[g] = _mm512_setzero_ps(), corr[g] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const size_t off = static_cast<size_t>(b) * kBytes;
    // The next tile (contiguous when rows are), at the rate this one is consumed.
    const char* pf = next + 4 * off;
    _mm_prefetch(pf, _MM_HINT_T0);
    _mm_prefetch(pf + 64, _MM_HINT_T0);
    if constexpr (4 * kBytes > 128) _mm_prefetch(pf + 128, _MM_HINT_T0);
    __m512i wj[8];  // step j's weight operand
    if constexpr (T == DType::Q8_0) {
      const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
      const __m512i w01 = _mm512_xor_si512(
          _mm512_inserti64x4(_mm512_zextsi256_si512(loadu256(rows[0] + off + kQs)), loadu256(rows[1] + off + kQs), 1),
          flip);
      const __m512i w23 = _mm512_xor_si512(
          _mm512_inserti64x4(_mm512_zextsi256_si512(loadu256(rows[2] + off + kQs)), loadu256(rows[3] + off + kQs), 1),
          flip);
      for (int j = 0; j < 8; ++j)
        wj[j] = _mm512_permutex2var_epi32(w01, _mm512_add_epi32(base8, _mm512_set1_epi32(j)), w23);
    } else {
      __m512i q = _mm512_zextsi128_si512(loadu128(rows[0] + off + kQs));
      q = _mm512_inserti32x4(q, loadu128(rows[1] + off + kQs), 1);
      q = _mm512_inserti32x4(q, loadu128(rows[2] + off + kQs), 2);
      q = _mm512_inserti32x4(q, loadu128(rows[3] + off + kQs), 3);
      __m512i lo = _mm512_and_si512(q, m4);
      __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
      if constexpr (T == DType::Q5_0 || T == DType::Q5_1) {
        // Fifth bits: bit i of row n's qh is element i, at byte 16n + i of lo (i < 16) or
        // of hi (i >= 16).
        uint64_t mlo = 0, mhi = 0;
        for (int n = 0; n < 4; ++n) {
          uint32_t h;
          std::memcpy(&h, rows[n] + off + kQh, 4);
          mlo |= static_cast<uint64_t>(h & 0xFFFFu) << (16 * n);
          mhi |= static_cast<uint64_t>(h >> 16) << (16 * n);
        }
        const __m512i b4 = _mm512_set1_epi8(0x10);
        lo = _mm512_mask_add_epi8(lo, _cvtu64_mask64(mlo), lo, b4);  // bit 4 is clear: add = or
        hi = _mm512_mask_add_epi8(hi, _cvtu64_mask64(mhi), hi, b4);
      }
      for (int j = 0; j < 8; ++j)
        wj[j] = _mm512_permutexvar_epi32(_mm512_add_epi32(base4, _mm512_set1_epi32(j & 3)), j < 4 ? lo : hi);
    }
    __m128i dh = _mm_cvtsi32_si128(ld_u16(rows[0] + off));
    dh = _mm_insert_epi16(dh, ld_u16(rows[1] + off), 1);
    dh = _mm_insert_epi16(dh, ld_u16(rows[2] + off), 2);
    dh = _mm_insert_epi16(dh, ld_u16(rows[3] + off), 3);
    const __m512 dw = _mm512_permutexvar_ps(dw_idx, _mm512_zextps128_ps512(_mm_cvtph_ps(dh)));
    __m512 mw = dw;
    if constexpr (kIsQ1<T>) {
      __m128i mh = _mm_cvtsi32_si128(ld_u16(rows[0] + off + 2));
      mh = _mm_insert_epi16(mh, ld_u16(rows[1] + off + 2), 1);
      mh = _mm_insert_epi16(mh, ld_u16(rows[2] + off + 2), 2);
      mh = _mm_insert_epi16(mh, ld_u16(rows[3] + off + 2), 3);
      mw = _mm512_permutexvar_ps(dw_idx, _mm512_zextps128_ps512(_mm_cvtph_ps(mh)));
    }
    for (int g = 0; g < NG; ++g) {
      const VnniAct4& a = x[g][b];
      __m512i s = T == DType::Q8_0 ? _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(a.sx)))
                                   : _mm512_setzero_si512();
      for (int j = 0; j < 8; ++j)
        s = _mm512_dpbusd_epi32(s, wj[j], _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(a.qs[j]))));
      const __m512 dx = _mm512_broadcast_f32x4(_mm_load_ps(a.d));
      acc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, dx), acc[g]);
      // Q4_1 / Q5_1: corr holds the mins, fma(m_w, c8 / 8, mins), added at the end.
      if constexpr (T != DType::Q8_0) corr[g] = _mm512_fmadd_ps(mw, _mm512_broadcast_f32x4(_mm_load_ps(a.c8)), corr[g]);
    }
  }
  for (int g = 0; g < NG; ++g)
    _mm512_storeu_ps(res + 16 * g, T == DType::Q8_0 ? acc[g]
                                   : kIsQ1<T>       ? _mm512_add_ps(acc[g], corr[g])
                                                    : _mm512_sub_ps(acc[g], corr[g]));
}

// The whole matmul through the tile: activation rows quantized (ActQ8) and repacked per
// group of 4 into scratch, then each thread's weight rows in chunks of kNChunk, every group
// against each chunk while it is in L1 / L2. A lone last activation row takes the decode
// tile (the same bits at a quarter of the tile's work).
template <DType T>
inline bool matmul_vnni_t(const OpCall& c, Exec& exec) {
  const Tensor& W = *c.src[0];
  const Tensor& x = *c.src[1];
  const Tensor& y = *c.dst;
  const int64_t K = W.ne[0], N = W.ne[1], Mt = x.ne[1] * x.ne[2] * x.ne[3];
  if (N == 0 || Mt == 0) return true;
  const int64_t nb = K / kQK;
  const int64_t n_groups = (Mt + 3) / 4;
  const size_t act_row = static_cast<size_t>(nb) * sizeof(ActQ8);
  const size_t group_bytes = static_cast<size_t>(nb) * sizeof(VnniAct4);
  if (nb > 0 && static_cast<uint64_t>(n_groups) > SIZE_MAX / 8 / (4 * act_row + group_bytes)) return false;
  const size_t rows_bytes = (act_row * static_cast<size_t>(Mt) + 63) / 64 * 64;
  char* scratch = static_cast<char*>(exec.scratch(rows_bytes + group_bytes * static_cast<size_t>(n_groups) + 64));
  if (!scratch) return false;
  char* act = scratch;
  VnniAct4* packed = reinterpret_cast<VnniAct4*>(scratch + rows_bytes);
  const int64_t work = N * K * Mt;
  const int n_par = work < 64 * 1024 ? 1 : static_cast<int>(N < exec.n_threads() ? N : exec.n_threads());
  exec.parallel(n_par, [&](int ith, int nth) {
    // Whole groups per thread: a group is repacked by the thread that quantized its rows.
    int64_t g0, g1;
    ThreadPool::split(n_groups, ith, nth, &g0, &g1);
    for (int64_t r = 4 * g0; r < 4 * g1 && r < Mt; ++r)
      quantize_act_q8(row_at<const float>(x, r), reinterpret_cast<ActQ8*>(act + r * act_row), K);
    for (int64_t g = g0; g < g1; ++g) {
      const ActQ8* rows[4];
      for (int r = 0; r < 4; ++r) {
        const int64_t m = 4 * g + r < Mt ? 4 * g + r : Mt - 1;
        rows[r] = reinterpret_cast<const ActQ8*>(act + m * act_row);
      }
      pack_vnni_act4<T>(rows, nb, packed + g * nb);
    }
    if (nth > 1) exec.pool().barrier();
    int64_t n0, n1;
    ThreadPool::split(N, ith, nth, &n0, &n1);
    for (int64_t nc = n0; nc < n1; nc += kNChunk) {
      const int64_t nc1 = nc + kNChunk < n1 ? nc + kNChunk : n1;
      for (int64_t g = 0; g < n_groups; ++g) {
        if (Mt - 4 * g == 1) {  // only a last group of one row
          float* y0 = row_at<float>(y, 4 * g);
          const ActQ8* a = reinterpret_cast<const ActQ8*>(act + (4 * g) * act_row);
          constexpr int64_t tn = T == DType::Q8_0 ? 4 : 8;
          for (int64_t nt = nc; nt < nc1; nt += tn) {
            const int64_t rb = nc1 - nt < tn ? nc1 - nt : tn;
            const char* wr[8];
            for (int64_t j = 0; j < tn; ++j) wr[j] = W.row<const char>(nt + (j < rb ? j : rb - 1));
            float res[8];
            const char* next = static_cast<const char*>(W.data) + (nt + tn) * W.nb[1];
            if constexpr (T == DType::Q8_0) dot_rows4_q8(nb, wr, a, next, res);
            else if constexpr (kIsQ1<T>) dot_rows8_q1<T>(nb, wr, a, next, res);
            else dot_rows8<T>(nb, wr, a, next, res);
            for (int64_t j = 0; j < rb; ++j) y0[nt + j] = res[j];
          }
          continue;
        }
        // Up to kVnniGroups groups of rows >= 2 share each unpacked weight block (a last
        // group of one row takes the branch above on its own).
        int ng = 1;
        while (ng < kVnniGroups && g + ng < n_groups && Mt - 4 * (g + ng) >= 2) ++ng;
        const VnniAct4* xg[kVnniGroups];
        for (int i = 0; i < ng; ++i) xg[i] = packed + (g + i) * nb;
        for (int64_t nt = nc; nt < nc1; nt += 4) {
          const int64_t rb = nc1 - nt < 4 ? nc1 - nt : 4;
          const char* wr[4];
          for (int64_t j = 0; j < 4; ++j) wr[j] = W.row<const char>(nt + (j < rb ? j : rb - 1));
          alignas(64) float res[16 * kVnniGroups];
          const char* next = static_cast<const char*>(W.data) + (nt + 4) * W.nb[1];
          switch (ng) {
            case 1: dot_vnni4x4<T, 1>(nb, wr, xg, next, res); break;
            case 2: dot_vnni4x4<T, 2>(nb, wr, xg, next, res); break;
            case 3: dot_vnni4x4<T, 3>(nb, wr, xg, next, res); break;
            default: dot_vnni4x4<T, 4>(nb, wr, xg, next, res); break;
          }
          for (int i = 0; i < ng; ++i) {
            const int64_t m0 = 4 * (g + i);
            const int rai = static_cast<int>(Mt - m0 < 4 ? Mt - m0 : 4);
            for (int64_t j = 0; j < rb; ++j)
              for (int r = 0; r < rai; ++r) row_at<float>(y, m0 + r)[nt + j] = res[16 * i + 4 * j + r];
          }
        }
        g += ng - 1;
      }
    }
  });
  return true;
}

inline bool matmul_vnni(const OpCall& c, Exec& exec) {
  switch (c.src[0]->type) {
    case DType::Q4_0: return matmul_vnni_t<DType::Q4_0>(c, exec);
    case DType::Q5_0: return matmul_vnni_t<DType::Q5_0>(c, exec);
    case DType::Q8_0: return matmul_vnni_t<DType::Q8_0>(c, exec);
    case DType::Q4_1: return matmul_vnni_t<DType::Q4_1>(c, exec);
    case DType::Q5_1: return matmul_vnni_t<DType::Q5_1>(c, exec);
    default: return false;
  }
}

#else

inline bool matmul_vnni(const OpCall&, Exec&) { return false; }

#endif

}  // namespace mm
}  // namespace kestrel::cpu::KESTREL_ISA_NS
