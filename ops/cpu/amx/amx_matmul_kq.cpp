// AMX-INT8 matmul for the K-quants Q4_K and Q6_K against Q8_K activations (see
// amx_matmul.h), bitwise equal to the avx512 variant's kernels of those types on a machine
// where this kernel runs.
//
// There, every avx512 Q4_K / Q6_K kernel (dot_q4K_z, dot_q4K_pairs, dot_q6K_z,
// dot_q6K_pairs with kTotals in k_matmul_q_rows.inl) sums an output super-block by
// super-block in one float chain on exact integer totals:
//   Q4_K  I = sum_j sc_j * sum_{i<32} q[32 j + i] x[32 j + i],  P = sum_j m_j * (bsum_2j + bsum_2j+1)
//         acc = fma(float(I), d * d_x, acc);  acc = fnmadd(float(P), dmin * d_x, acc)
//   Q6_K  I = sum_j sc_j * sum_{i<16} (q[16 j + i] - 32) x[16 j + i]
//         acc = fma(float(I), d * d_x, acc)
// and y = acc. (Elsewhere they keep 8 lanes per output, which a tile product cannot give
// cheaply: 16 products and 2 KB of tile stores per 16 x 16 x 256 block, and the float work
// for each lane.) Here I is a whole tile product over a super-block, two or three planes of
// int8 weights each against the same activation tiles:
//   Q4_K  sc_j = 8 a_j + b_j (a, b in 0..7): Hi = a_j q and Lo = b_j q (at most 105) and
//         I = 8 (Hi . x) + (Lo . x); P in floats from the activations' sub-block sums (8
//         exact products and sums per output: cheaper than 4 more tile products).
//   Q6_K  sc_j = 64 a_j + 8 b_j + c_j with digits in -3..4 (every int8 has such digits), w =
//         q - 32 in -32..31: a_j w, b_j w and c_j w are int8 (the
//         products lie in -128..124) and I = 64 (A . x) + 8 (B . x) + (C . x).
//   A  a plane of 16 weight rows x 64 elements (chunk c of a super-block: elements
//      64c .. 64c + 63), decoded once per panel of 16 rows.
//   B  chunk c of 16 activation rows: B[kk][4 m + i] = x_m[64 c + 4 kk + i].
//   C  16 x 16 exact sums of each plane over the super-block's 4 chunks (8 or 12 products),
//      stored once per super-block and finished in AVX-512 with one float accumulator per
//      weight row in 16 zmm registers.
#include "ops/cpu/amx/amx_matmul.h"
#include "ops/cpu/amx/amx_tiles.h"

#if defined(KESTREL_AMX_INT8_COMPILED)

namespace kestrel::cpu::amx {

namespace {

constexpr int kChunks = 4;                             // 64-element chunks per super-block
constexpr size_t kChunkBytes = 1024;                   // one 16 x 64 tile of int8
constexpr size_t kSuperBytes = kChunks * kChunkBytes;  // a super-block's A (or B) tiles

// Decoded 6-bit scales (sc[0..7]) and mins (sc[8..15]) of a Q4_K super-block (the GGUF
// packing: 12 bytes, low 6 bits of bytes 0..7, high 2 bits spread over the rest).
inline void k_scales(const uint8_t* s12, uint8_t* sc16) {
  uint32_t u[3];
  std::memcpy(u, s12, 12);
  const uint32_t v[4] = {u[0] & 0x3f3f3f3fu, (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4),
                         u[1] & 0x3f3f3f3fu, ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4)};
  std::memcpy(sc16, v, 16);
}

// One panel of up to 16 weight rows, decoded (rows past `rows` are zero).
struct Panel {
  int8_t* plane[3];  // [nsb][4 chunks][16 rows][64] each: Q4_K Hi, Lo; Q6_K A, B, C
  float* d;          // [nsb][16]
  float* dmin;       // [nsb][16] (Q4_K)
  float* mins;       // [nsb][8][16]: m_j of each row (Q4_K)
};

// Planes (tile products per chunk) of a type: Q4_K's mins term is summed in floats from the
// activations' sub-block sums instead (8 exact products a row, as cheap as 4 more tiles).
template <DType T>
constexpr int kPlanes = T == DType::Q4_K ? 2 : 3;

// Q6_K scales as three digits in -3..4 (sc = 64 a + 8 b + c), by the scale's byte.
struct Digits6 {
  int8_t a[256], b[256], c[256];
  constexpr Digits6() : a{}, b{}, c{} {
    for (int u = 0; u < 256; ++u) {
      const int sc = u < 128 ? u : u - 256;
      int t = sc;
      int8_t* out[3] = {c, b, a};
      for (int k = 0; k < 3; ++k) {
        const int dg = ((t + 3) % 8 + 8) % 8 - 3;
        out[k][u] = static_cast<int8_t>(dg);
        t = (t - dg) / 8;
      }
    }
  }
};
constexpr Digits6 kDigits6;
static_assert(64 * kDigits6.a[127] + 8 * kDigits6.b[127] + kDigits6.c[127] == 127 &&
                  64 * kDigits6.a[128] + 8 * kDigits6.b[128] + kDigits6.c[128] == -128,
              "every int8 scale has digits in -3..4");

// 16-bit lanes of value v in the low 256 bits and w in the high.
inline __m512i halves16(int v, int w) {
  return _mm512_inserti64x4(_mm512_set1_epi16(static_cast<short>(v)), _mm256_set1_epi16(static_cast<short>(w)), 1);
}

// Super-block s of weight row r of the panel (row: its blocks, null past the panel's
// rows: zeros) into its planes at byte `at` (the row's 64 bytes of chunk 0).
template <DType T>
void decode_super(const void* row, int64_t s, int r, size_t at, const Panel& p);

template <>
void decode_super<DType::Q4_K>(const void* row, int64_t s, int r, size_t at, const Panel& p) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const BlockQ4_K& b = static_cast<const BlockQ4_K*>(row)[s];
  alignas(16) uint8_t sc[16];
  k_scales(b.scales, sc);
  for (int c = 0; c < kChunks; ++c) {
    // Elements 64c .. 64c + 31: low nibbles of qs[32c ..], then the high nibbles.
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * c));
    const __m512i qq = _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1);
    const __m512i codes = _mm512_and_si512(qq, m4);
    const int j0 = 2 * c, j1 = 2 * c + 1;
    // A 16-bit multiply scales both bytes of a lane (each product is at most 105: no carry).
    _mm512_store_si512(p.plane[0] + at + c * kChunkBytes, _mm512_mullo_epi16(codes, halves16(sc[j0] >> 3, sc[j1] >> 3)));
    _mm512_store_si512(p.plane[1] + at + c * kChunkBytes, _mm512_mullo_epi16(codes, halves16(sc[j0] & 7, sc[j1] & 7)));
  }
  for (int j = 0; j < 8; ++j) p.mins[(s * 8 + j) * kTile + r] = static_cast<float>(sc[8 + j]);
  p.d[s * kTile + r] = _cvtsh_ss(b.d);
  p.dmin[s * kTile + r] = _cvtsh_ss(b.dmin);
}

// Q6_K: elements 128h + 32k + l (h half, k = 0..3, l < 32) are (ql[64h + l + 32 (k & 1)]
// nibble k >> 1) | (qh[32h + l] bits 2k, 2k + 1) << 4, minus 32, with scale sc[8h + 2k +
// l / 16]; chunk c = 2h + k / 2 holds k = 2 (c % 2), + 1.
template <>
void decode_super<DType::Q6_K>(const void* row, int64_t s, int r, size_t at, const Panel& p) {
  const BlockQ6_K& b = static_cast<const BlockQ6_K*>(row)[s];
  const __m512i m4 = _mm512_set1_epi8(0x0F), m3 = _mm512_set1_epi8(3), off = _mm512_set1_epi8(32);
  for (int c = 0; c < kChunks; ++c) {
    const int h = c / 2, k0 = 2 * (c % 2);
    // ql bytes l (k even) / l + 32 (k odd), for k0 and k0 + 1 in the two halves.
    const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * h));
    const __m256i qb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * h + 32));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * h));
    // k = k0: ql (k0 = 0: qa, 2: qa) nibble k0 / 2; k = k0 + 1: qb nibble k0 / 2.
    const __m512i ql = _mm512_inserti64x4(_mm512_castsi256_si512(qa), qb, 1);
    const __m512i nib = k0 == 0 ? _mm512_and_si512(ql, m4) : _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4);
    const __m512i hb = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_srli_epi16(qh, 2 * k0)),
                                          _mm256_srli_epi16(qh, 2 * k0 + 2), 1);
    const __m512i w = _mm512_sub_epi8(_mm512_or_si512(nib, _mm512_slli_epi16(_mm512_and_si512(hb, m3), 4)), off);
    // Scales of the chunk's four 16-element sub-blocks, each over its 16 bytes.
    const int j = 8 * h + 2 * k0;  // sub-blocks j .. j + 3
    const uint8_t* su = reinterpret_cast<const uint8_t*>(b.scales) + j;
    // int8 products (|w * digit| <= 128 only at 4 * -32 = -128): the low bytes of 16-bit
    // products of the sign-extended even and odd bytes.
    const __m512i w_even = _mm512_srai_epi16(_mm512_slli_epi16(w, 8), 8), w_odd = _mm512_srai_epi16(w, 8);
    for (int pl = 0; pl < 3; ++pl) {
      const int8_t* dg = pl == 0 ? kDigits6.a : pl == 1 ? kDigits6.b : kDigits6.c;
      const __m512i f = _mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_setr_m128i(_mm_set1_epi8(dg[su[0]]), _mm_set1_epi8(dg[su[1]]))),
          _mm256_setr_m128i(_mm_set1_epi8(dg[su[2]]), _mm_set1_epi8(dg[su[3]])), 1);
      const __m512i lo = _mm512_mullo_epi16(w_even, _mm512_srai_epi16(_mm512_slli_epi16(f, 8), 8));
      const __m512i hi = _mm512_mullo_epi16(w_odd, _mm512_srai_epi16(f, 8));
      _mm512_store_si512(p.plane[pl] + at + c * kChunkBytes,
                         _mm512_mask_blend_epi8(0xAAAAAAAAAAAAAAAAull, lo, _mm512_slli_epi16(hi, 8)));
    }
  }
  p.d[s * kTile + r] = _cvtsh_ss(b.d);
}

template <DType T>
void decode_panel(const Tensor& W, int64_t n, int rows, int64_t nsb, const Panel& p) {
  using Block = std::conditional_t<T == DType::Q4_K, BlockQ4_K, BlockQ6_K>;
  // Row by row: the weights are read in memory order (a super-block-major walk over 16
  // rows at once missed the hardware prefetcher and waited on DRAM); every store is a
  // whole 64-byte line.
  for (int r = 0; r < kTile; ++r) {
    const Block* row = r < rows ? W.row<const Block>(n + r) : nullptr;
    for (int64_t s = 0; s < nsb; ++s) {
      const size_t at = static_cast<size_t>(s) * kSuperBytes + static_cast<size_t>(r) * 64;
      if (!row) {
        for (int c = 0; c < kChunks; ++c)
          for (int pl = 0; pl < kPlanes<T>; ++pl)
            _mm512_store_si512(p.plane[pl] + at + c * kChunkBytes, _mm512_setzero_si512());
        p.d[s * kTile + r] = p.dmin[s * kTile + r] = 0.0f;
        for (int j = 0; j < 8; ++j) p.mins[(s * 8 + j) * kTile + r] = 0.0f;
        continue;
      }
      decode_super<T>(row, s, r, at, p);
    }
  }
}

// One m-tile of activations: B tiles [nsb][4 chunks][1024 bytes] and d_x [nsb][16].
struct ActTile {
  const int8_t* xq;
  const float* dx;
  const float* bs;  // [nsb][8][16]: bsum_2j + bsum_2j+1 of each row (Q4_K)
};

// Super-block s's sums of NP planes (C tiles 4, 5, 6 of the planes in A tiles 0, 1, 2; B in
// 3), stored to c.
template <int NP>
[[gnu::always_inline]] inline void super_product(const Panel& p, const int8_t* xq, int64_t s, int32_t* c) {
  const size_t at = static_cast<size_t>(s) * kSuperBytes;
  _tile_zero(4);
  _tile_zero(5);
  if constexpr (NP == 3) _tile_zero(6);
  for (int k = 0; k < kChunks; ++k) {
    const size_t o = at + k * kChunkBytes;
    _tile_loadd(3, xq + o, 64);
    _tile_loadd(0, p.plane[0] + o, 64);
    _tile_loadd(1, p.plane[1] + o, 64);
    if constexpr (NP == 3) _tile_loadd(2, p.plane[2] + o, 64);
    _tile_dpbssd(4, 0, 3);
    _tile_dpbssd(5, 1, 3);
    if constexpr (NP == 3) _tile_dpbssd(6, 2, 3);
  }
  _tile_stored(4, c, 64);
  _tile_stored(5, c + kCFloats, 64);
  if constexpr (NP == 3) _tile_stored(6, c + 2 * kCFloats, 64);
}

// out[r * 16 + m] = y for weight row r of the panel and activation row m of the tile.
// cbuf: two sets of three C tiles. The products d * d_x and dmin * d_x are formed where
// they are used (a broadcast operand of vmulps), not stored per (panel, m-tile) first.
template <DType T>
void tile_loop(int64_t nsb, const Panel& p, const ActTile& a, int32_t* cbuf, float* out) {
#define KESTREL_AMX_ZERO(r) __m512 acc##r = _mm512_setzero_ps();
  KESTREL_AMX_ROWS(KESTREL_AMX_ZERO)
#undef KESTREL_AMX_ZERO
  auto finish = [&](int64_t s, const int32_t* c) __attribute__((always_inline)) {
    const __m512 dx = _mm512_load_ps(a.dx + s * kTile);
    const float* dd = p.d + s * kTile;
    [[maybe_unused]] const float* dm = p.dmin + s * kTile;
    [[maybe_unused]] __m512 bs[8];
    [[maybe_unused]] const float* mins = p.mins + s * 8 * kTile;
    if constexpr (T == DType::Q4_K)
      for (int j = 0; j < 8; ++j) bs[j] = _mm512_load_ps(a.bs + (s * 8 + j) * kTile);
#define KESTREL_AMX_FINISH(r)                                                                            \
  {                                                                                                      \
    const __m512i c0 = _mm512_load_si512(c + kTile * r), c1 = _mm512_load_si512(c + kCFloats + kTile * r); \
    if constexpr (T == DType::Q4_K) {                                                                    \
      const __m512i is = _mm512_add_epi32(_mm512_slli_epi32(c0, 3), c1);                                 \
      acc##r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(_mm512_set1_ps(dd[r]), dx), acc##r); \
      /* P: exact integers below 2^24 at every step */                                                   \
      __m512 pm = _mm512_mul_ps(_mm512_set1_ps(mins[r]), bs[0]);                                         \
      for (int j = 1; j < 8; ++j) pm = _mm512_fmadd_ps(_mm512_set1_ps(mins[j * kTile + r]), bs[j], pm);   \
      acc##r = _mm512_fnmadd_ps(pm, _mm512_mul_ps(_mm512_set1_ps(dm[r]), dx), acc##r);                  \
    } else {                                                                                             \
      const __m512i c2 = _mm512_load_si512(c + 2 * kCFloats + kTile * r);                                \
      const __m512i is = _mm512_add_epi32(_mm512_slli_epi32(_mm512_add_epi32(_mm512_slli_epi32(c0, 3), c1), 3), c2); \
      acc##r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(_mm512_set1_ps(dd[r]), dx), acc##r); \
    }                                                                                                    \
  }
    KESTREL_AMX_ROWS(KESTREL_AMX_FINISH)
#undef KESTREL_AMX_FINISH
  };
  // The tile unit runs super-block s + 1 while super-block s is finished from memory.
  int32_t* c[2] = {cbuf, cbuf + 3 * kCFloats};
  super_product<kPlanes<T>>(p, a.xq, 0, c[0]);
  for (int64_t s = 0; s < nsb; ++s) {
    if (s + 1 < nsb) super_product<kPlanes<T>>(p, a.xq, s + 1, c[(s + 1) % 2]);
    finish(s, c[s % 2]);
  }
#define KESTREL_AMX_PUT(r) _mm512_store_ps(out + kTile * r, acc##r);
  KESTREL_AMX_ROWS(KESTREL_AMX_PUT)
#undef KESTREL_AMX_PUT
}

// A: 16 x 64 (tiles 0, 1, 2: the planes); B: 16 x 64 (tile 3); C: 16 x 16 int32 (4, 5, 6).
inline TileConfig tile_config_k() {
  TileConfig c;
  for (int t = 0; t < 7; ++t) c.rows[t] = 16, c.colsb[t] = 64;
  return c;
}

template <DType T>
bool matmul_kq(const OpCall& c, Exec& exec) {
  const Tensor& W = *c.src[0];
  const Tensor& x = *c.src[1];
  const Tensor& y = *c.dst;
  const int64_t K = W.ne[0], N = W.ne[1], Mt = x.ne[1] * x.ne[2] * x.ne[3];
  if (N == 0 || Mt == 0) return true;
  const int64_t nsb = K / kQKK, MT = (Mt + kTile - 1) / kTile, NT = (N + kTile - 1) / kTile;
  const size_t usb = static_cast<size_t>(nsb);
  // Scratch: per m-tile the B tiles, d_x and the sub-block sums; per thread a quantized
  // row, the decoded panel, two sets of C stores and the output tile.
  const size_t act_tile = usb * (kSuperBytes + 9 * kTile * sizeof(float));
  if (static_cast<uint64_t>(MT) > SIZE_MAX / 4 / act_tile) return false;
  const size_t xq_bytes = static_cast<size_t>(MT) * usb * kSuperBytes;
  const size_t dx_bytes = round64(static_cast<size_t>(MT) * usb * kTile * sizeof(float));
  const size_t bs_bytes = static_cast<size_t>(MT) * usb * 8 * kTile * sizeof(float);
  const size_t qrow_bytes = round64(usb * sizeof(BlockQ8_K));
  const size_t wq_bytes = usb * kSuperBytes;  // each plane
  const size_t d_bytes = round64(usb * kTile * 4);
  const size_t mins_bytes = usb * 8 * kTile * 4;
  const size_t panel_bytes = kPlanes<T> * wq_bytes + 2 * d_bytes + mins_bytes;
  const int group = panel_group(panel_bytes);
  const size_t per_thread = qrow_bytes + static_cast<size_t>(group) * panel_bytes + (6 + 1) * kCFloats * 4;
  const int64_t work = N * K * Mt;
  const int n_par = work < 64 * 1024 ? 1 : static_cast<int>(NT < exec.n_threads() ? NT : exec.n_threads());
  char* base =
      static_cast<char*>(exec.scratch(xq_bytes + dx_bytes + bs_bytes + per_thread * static_cast<size_t>(n_par)));
  if (!base) return false;
  int8_t* xq = reinterpret_cast<int8_t*>(base);
  float* dxs = reinterpret_cast<float*>(base + xq_bytes);
  float* bss = reinterpret_cast<float*>(base + xq_bytes + dx_bytes);
  char* thread_base = base + xq_bytes + dx_bytes + bs_bytes;
  const TileConfig cfg = tile_config_k();

  exec.parallel(n_par, [&](int ith, int nth) {
    char* mine = thread_base + per_thread * static_cast<size_t>(ith);
    BlockQ8_K* qrow = reinterpret_cast<BlockQ8_K*>(mine);
    mine += qrow_bytes;
    char* panels = mine;  // group x (planes, d, dmin, mins)
    auto panel = [&](int g) {
      char* at = panels + static_cast<size_t>(g) * panel_bytes;
      Panel p;
      for (int pl = 0; pl < 3; ++pl) p.plane[pl] = pl < kPlanes<T> ? reinterpret_cast<int8_t*>(at + pl * wq_bytes) : nullptr;
      at += kPlanes<T> * wq_bytes;
      p.d = reinterpret_cast<float*>(at);
      p.dmin = reinterpret_cast<float*>(at + d_bytes);
      p.mins = reinterpret_cast<float*>(at + 2 * d_bytes);
      return p;
    };
    mine += static_cast<size_t>(group) * panel_bytes;
    int32_t* cbuf = reinterpret_cast<int32_t*>(mine);
    float* out = reinterpret_cast<float*>(cbuf + 6 * kCFloats);

    // 1. Whole m-tiles per thread: quantize to Q8_K, regroup into the chunks' B tiles, d_x
    //    and the sub-block sums (exact as floats); rows past Mt are zero.
    int64_t t0, t1;
    ThreadPool::split(MT, ith, nth, &t0, &t1);
    for (int64_t r = t0 * kTile; r < t1 * kTile; ++r) {
      const int64_t t = r / kTile, lane = r % kTile;
      const bool real = r < Mt;
      if (real) mm::quantize_act_q8K(row_at<const float>(x, r), qrow, K);
      for (int64_t s = 0; s < nsb; ++s) {
        const size_t ts = static_cast<size_t>(t) * usb + static_cast<size_t>(s);
        int8_t* bt = xq + ts * kSuperBytes + 4 * lane;
        for (int k = 0; k < kQKK / 4; ++k) {  // chunk k / 16, row k % 16 of its B tile
          int8_t* dst = bt + 64 * k;
          if (real) std::memcpy(dst, qrow[s].qs + 4 * k, 4);
          else std::memset(dst, 0, 4);
        }
        dxs[ts * kTile + lane] = real ? qrow[s].d : 0.0f;
        for (int j = 0; j < 8; ++j)
          bss[(ts * 8 + j) * kTile + lane] =
              real ? static_cast<float>(qrow[s].bsums[2 * j] + qrow[s].bsums[2 * j + 1]) : 0.0f;
      }
    }
    if (nth > 1) exec.pool().barrier();

    // 2. This thread's 16-row weight panels, decoded once a group, against every m-tile.
    for_each_panel_group(
        cfg, N, MT, group, ith, nth, [&](int g, int64_t n, int rows) { decode_panel<T>(W, n, rows, nsb, panel(g)); },
        [&](int g, int64_t n, int rows, int64_t t) {
          const size_t ts = static_cast<size_t>(t) * usb;
          const ActTile a{xq + ts * kSuperBytes, dxs + ts * kTile, bss + ts * 8 * kTile};
          tile_loop<T>(nsb, panel(g), a, cbuf, out);
          store_tile(out, y, t, Mt, n, rows);
        });
  });
  return true;
}

}  // namespace

bool matmul_q4_K(const OpCall& c, Exec& exec) { return matmul_kq<DType::Q4_K>(c, exec); }
bool matmul_q6_K(const OpCall& c, Exec& exec) { return matmul_kq<DType::Q6_K>(c, exec); }

}  // namespace kestrel::cpu::amx

#endif
