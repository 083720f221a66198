// AMX-INT8 matmul for Q4_K weights against Q8_K activations (see amx_matmul.h).
//
// A Q4_K super-block is 8 sub-blocks of 32 codes q (0..15) with 6-bit scales sc_j and
// mins m_j; a Q8_K activation block has one d_x, 256 codes and 16-element sums. Per
// output and super-block:
//   y += d * d_x * sum_j sc_j * (q_j . x_j)  -  dmin * d_x * sum_j m_j * bsum_j
// The sub-block scales are folded into the weights, so a tile product spans 64 elements
// (two sub-blocks) and sums over the whole super-block stay in the tile: with the 6-bit
// scale split sc_j = 8 a_j + b_j (a, b in 0..7), Hi = a_j * q and Lo = b_j * q are int8
// (at most 105; one byte shuffle each from a table of multiples); per super-block and
// 16 x 16 outputs, C_hi = sum Hi . x and C_lo = sum Lo . x over 4 chunks of 64 (8
// tdpbssd), then isum = 8 * C_hi + C_lo = sum_j sc_j (q_j . x_j) exactly (|isum| <=
// 256 * 945 * 128 < 2^31). One store of two C tiles per super-block instead of one per
// 32 elements, and no integer multiply per sub-block.
//   A  Hi or Lo: 16 weight rows x 64 bytes, decoded once per panel of 16 rows.
//   B  16 activation rows x 64 Q8_K codes in 4-byte columns, regrouped once per call.
// Float work per output and super-block: acc = fma(float(isum), d * d_x, acc); the mins
// term is its own chain from the activation 16-sums (vpmaddwd of m_j pairs against bsum
// pairs): corr = fma(float(msum), dmin * d_x, corr); y = acc - corr.
// The integer sums equal the avx512 kernel's; its float operations differ (it converts
// 8 partial lanes per super-block and sums them at the end), so outputs match it only to
// rounding (test_matmul_amx bounds both against ref). Within this kernel an output's
// operations depend on neither M, its tile, nor the thread count.
#include "ops/cpu/amx/amx_matmul.h"
#include "ops/cpu/amx/amx_tiles.h"

#if defined(KESTREL_AMX_INT8_COMPILED)

namespace kestrel::cpu::amx {

namespace {

constexpr int kSub = kQKK / kQK;     // 8 sub-blocks of 32 per super-block
constexpr int kChunks = kQKK / 64;   // 4 tile products of 64 elements per super-block
constexpr size_t kTile64 = 1024;     // a 16 x 64 int8 tile (A) or 16 x 64 B tile
constexpr size_t kSuperTileBytes = kChunks * kTile64;

// A: 16 x 64 (tiles 0 Hi, 1 Lo); B: 16 rows of 4-byte groups (tile 2); C: two sets
// (4 Hi, 5 Lo; 6 Hi, 7 Lo) for even and odd super-blocks.
inline TileConfig tile_config_k() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) c.rows[t] = 16, c.colsb[t] = 64;
  c.rows[3] = 0, c.colsb[3] = 0;  // unused
  return c;
}

// Decoded 6-bit scales (sc[0..7]) and mins (sc[8..15]) of a Q4_K super-block (the
// GGUF packing: 12 bytes, low 6 bits of bytes 0..7, high 2 bits spread over the rest).
inline void k_scales(const uint8_t* s12, uint8_t* sc16) {
  uint32_t u[3];
  std::memcpy(u, s12, 12);
  const uint32_t v[4] = {u[0] & 0x3f3f3f3fu, (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4),
                         u[1] & 0x3f3f3f3fu, ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4)};
  std::memcpy(sc16, v, 16);
}

// One panel of up to 16 weight rows, decoded (rows past `rows` are zero).
struct Panel {
  int8_t* hi;     // [nsb][4 chunks][16 rows][64]: (sc_j >> 3) * q, the A tiles
  int8_t* lo;     // [nsb][4 chunks][16 rows][64]: (sc_j & 7) * q
  int32_t* mp;    // [nsb][4][16]: m_2p | m_2p+1 << 16 per row (int16 pairs for vpmaddwd)
  float* d;       // [nsb][16]
  float* dmin;    // [nsb][16]
};

// kMultiples[f][v] = f * v: a byte shuffle multiplies 32 codes by f.
struct Multiples {
  alignas(16) uint8_t t[8][16];
  constexpr Multiples() : t{} {
    for (int f = 0; f < 8; ++f)
      for (int v = 0; v < 16; ++v) t[f][v] = static_cast<uint8_t>(f * v);
  }
};
constexpr Multiples kMultiplesTable;
constexpr const uint8_t (&kMultiples)[8][16] = kMultiplesTable.t;

void decode_panel(const Tensor& W, int64_t n, int rows, int64_t nsb, const Panel& p) {
  for (int r = 0; r < kTile; ++r) {
    const BlockQ4_K* row = r < rows ? W.row<const BlockQ4_K>(n + r) : nullptr;
    for (int64_t s = 0; s < nsb; ++s) {
      int8_t* hi = p.hi + s * kSuperTileBytes + r * 64;
      int8_t* lo = p.lo + s * kSuperTileBytes + r * 64;
      if (!row) {
        for (int c = 0; c < kChunks; ++c) {
          _mm512_store_si512(hi + c * kTile64, _mm512_setzero_si512());
          _mm512_store_si512(lo + c * kTile64, _mm512_setzero_si512());
        }
        for (int q = 0; q < 4; ++q) p.mp[(s * 4 + q) * kTile + r] = 0;
        p.d[s * kTile + r] = p.dmin[s * kTile + r] = 0.0f;
        continue;
      }
      const BlockQ4_K& b = row[s];
      uint8_t sc[16];
      k_scales(b.scales, sc);
      // qs: 4 groups of 32 bytes; low nibbles are sub-block 2c, high nibbles 2c + 1: the
      // 64 elements of chunk c in order.
      for (int c = 0; c < kChunks; ++c) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * c));
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        const __m256i q0 = _mm256_and_si256(q, m4), q1 = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        auto times = [&](int f, __m256i v) {  // f * v for codes v in 0..15, f in 0..7
          return _mm256_shuffle_epi8(
              _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(kMultiples[f]))), v);
        };
        const int s0 = sc[2 * c], s1 = sc[2 * c + 1];
        __m256i* h = reinterpret_cast<__m256i*>(hi + c * kTile64);
        __m256i* l = reinterpret_cast<__m256i*>(lo + c * kTile64);
        _mm256_store_si256(h, times(s0 >> 3, q0));
        _mm256_store_si256(h + 1, times(s1 >> 3, q1));
        _mm256_store_si256(l, times(s0 & 7, q0));
        _mm256_store_si256(l + 1, times(s1 & 7, q1));
      }
      for (int q = 0; q < 4; ++q)
        p.mp[(s * 4 + q) * kTile + r] = static_cast<int32_t>(sc[8 + 2 * q] | (uint32_t{sc[9 + 2 * q]} << 16));
      p.d[s * kTile + r] = _cvtsh_ss(b.d);
      p.dmin[s * kTile + r] = _cvtsh_ss(b.dmin);
    }
  }
}

// One m-tile of activations: B tiles [nsb][4][1024 bytes], d_x [nsb][16], and the
// sub-block sums as int16 pairs [nsb][4][16 rows][2] (pair q: sub-blocks 2q, 2q + 1).
struct ActTile {
  const int8_t* xq;
  const float* dx;
  const int16_t* bsp;
};

// Super-block s's products into C set P (tiles 4 + 2P Hi, 5 + 2P Lo), stored to c
// (Hi then Lo, 16 x 16 int32 each).
template <int P>
[[gnu::always_inline]] inline void super_product(const int8_t* hi, const int8_t* lo, const int8_t* xq, int32_t* c) {
  // The tile intrinsics take literal register numbers.
  if constexpr (P == 0) {
    _tile_zero(4);
    _tile_zero(5);
  } else {
    _tile_zero(6);
    _tile_zero(7);
  }
  for (int k = 0; k < kChunks; ++k) {
    _tile_loadd(0, hi + k * kTile64, 64);
    _tile_loadd(1, lo + k * kTile64, 64);
    _tile_loadd(2, xq + k * kTile64, 64);
    if constexpr (P == 0) {
      _tile_dpbssd(4, 0, 2);
      _tile_dpbssd(5, 1, 2);
    } else {
      _tile_dpbssd(6, 0, 2);
      _tile_dpbssd(7, 1, 2);
    }
  }
  if constexpr (P == 0) {
    _tile_stored(4, c, 64);
    _tile_stored(5, c + kCFloats, 64);
  } else {
    _tile_stored(6, c, 64);
    _tile_stored(7, c + kCFloats, 64);
  }
}

// out[r * 16 + m] = y for weight row r of the panel and activation row m of the tile.
// Super-block s + 1's products are issued before s's float work.
void tile_loop(int64_t nsb, const Panel& p, const ActTile& a, int32_t* cbuf, float* out) {
#define KESTREL_AMX_ZERO(r) __m512 acc##r = _mm512_setzero_ps();
  KESTREL_AMX_ROWS(KESTREL_AMX_ZERO)
#undef KESTREL_AMX_ZERO
  auto scale = [&](int64_t s, const int32_t* c) __attribute__((always_inline)) {
    const __m512 dx = _mm512_load_ps(a.dx + s * kTile);
    const float* d = p.d + s * kTile;
#define KESTREL_AMX_SCALE(r)                                                                             \
  {                                                                                                       \
    const __m512i is = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(c + kTile * r), 3),          \
                                        _mm512_load_si512(c + kCFloats + kTile * r));                    \
    acc##r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(_mm512_set1_ps(d[r]), dx), acc##r); \
  }
    KESTREL_AMX_ROWS(KESTREL_AMX_SCALE)
#undef KESTREL_AMX_SCALE
  };
  int32_t* c0 = cbuf;
  int32_t* c1 = cbuf + 2 * kCFloats;
  auto at = [&](int64_t s) { return static_cast<size_t>(s) * kSuperTileBytes; };
  super_product<0>(p.hi, p.lo, a.xq, c0);
  int64_t s = 1;
  for (; s + 1 < nsb; s += 2) {
    super_product<1>(p.hi + at(s), p.lo + at(s), a.xq + at(s), c1);
    scale(s - 1, c0);
    super_product<0>(p.hi + at(s + 1), p.lo + at(s + 1), a.xq + at(s + 1), c0);
    scale(s, c1);
  }
  if (s < nsb) {
    super_product<1>(p.hi + at(s), p.lo + at(s), a.xq + at(s), c1);
    scale(s - 1, c0);
    scale(s, c1);
  } else {
    scale(s - 1, c0);
  }
#define KESTREL_AMX_STORE(r) _mm512_store_ps(out + kTile * r, acc##r);
  KESTREL_AMX_ROWS(KESTREL_AMX_STORE)
#undef KESTREL_AMX_STORE
  // The mins: corr_r = fma(float(sum_j m_j bsum_j), dmin_r * d_x, corr_r); y = acc - corr.
#define KESTREL_AMX_ZERO(r) __m512 corr##r = _mm512_setzero_ps();
  KESTREL_AMX_ROWS(KESTREL_AMX_ZERO)
#undef KESTREL_AMX_ZERO
  for (int64_t s = 0; s < nsb; ++s) {
    const __m512i* bs = reinterpret_cast<const __m512i*>(a.bsp + s * 4 * 2 * kTile);
    const __m512i b0 = _mm512_load_si512(bs), b1 = _mm512_load_si512(bs + 1), b2 = _mm512_load_si512(bs + 2),
                  b3 = _mm512_load_si512(bs + 3);
    const __m512 dx = _mm512_load_ps(a.dx + s * kTile);
    const int32_t* mp = p.mp + s * 4 * kTile;
    const float* dmin = p.dmin + s * kTile;
#define KESTREL_AMX_MINS(r)                                                                              \
  {                                                                                                      \
    const __m512i ms = _mm512_add_epi32(                                                                 \
        _mm512_add_epi32(_mm512_madd_epi16(b0, _mm512_set1_epi32(mp[r])),                                 \
                         _mm512_madd_epi16(b1, _mm512_set1_epi32(mp[kTile + r]))),                       \
        _mm512_add_epi32(_mm512_madd_epi16(b2, _mm512_set1_epi32(mp[2 * kTile + r])),                    \
                         _mm512_madd_epi16(b3, _mm512_set1_epi32(mp[3 * kTile + r]))));                  \
    corr##r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ms), _mm512_mul_ps(_mm512_set1_ps(dmin[r]), dx), corr##r); \
  }
    KESTREL_AMX_ROWS(KESTREL_AMX_MINS)
#undef KESTREL_AMX_MINS
  }
#define KESTREL_AMX_SUB(r) _mm512_store_ps(out + kTile * r, _mm512_sub_ps(_mm512_load_ps(out + kTile * r), corr##r));
  KESTREL_AMX_ROWS(KESTREL_AMX_SUB)
#undef KESTREL_AMX_SUB
}

}  // namespace

bool matmul_q4_K(const OpCall& c, Exec& exec) {
  const Tensor& W = *c.src[0];
  const Tensor& x = *c.src[1];
  const Tensor& y = *c.dst;
  const int64_t K = W.ne[0], N = W.ne[1], Mt = x.ne[1] * x.ne[2] * x.ne[3];
  if (N == 0 || Mt == 0) return true;
  const int64_t nsb = K / kQKK, MT = (Mt + kTile - 1) / kTile, NT = (N + kTile - 1) / kTile;
  const size_t usb = static_cast<size_t>(nsb);
  // Scratch: per m-tile the B tiles, d_x and bsum pairs; per thread a quantized row, the
  // decoded panel, two C stores and the output tile.
  const size_t act_tile = usb * (kSuperTileBytes + kTile * sizeof(float) + 4 * 2 * kTile * sizeof(int16_t));
  if (static_cast<uint64_t>(MT) > SIZE_MAX / 4 / act_tile) return false;
  const size_t xq_bytes = static_cast<size_t>(MT) * usb * kSuperTileBytes;
  const size_t dx_bytes = round64(static_cast<size_t>(MT) * usb * kTile * sizeof(float));
  const size_t bsp_bytes = round64(static_cast<size_t>(MT) * usb * 4 * 2 * kTile * sizeof(int16_t));
  const size_t qrow_bytes = round64(usb * sizeof(BlockQ8_K));
  const size_t wq_bytes = usb * kSuperTileBytes;  // each of Hi, Lo
  const size_t mp_bytes = round64(usb * 4 * kTile * 4), d_bytes = round64(usb * kTile * 4);
  const size_t per_thread = qrow_bytes + 2 * wq_bytes + mp_bytes + 2 * d_bytes + 5 * kCFloats * 4;  // 4 C, out
  const int64_t work = N * K * Mt;
  const int n_par = work < 64 * 1024 ? 1 : static_cast<int>(NT < exec.n_threads() ? NT : exec.n_threads());
  char* base = static_cast<char*>(exec.scratch(xq_bytes + dx_bytes + bsp_bytes + per_thread * static_cast<size_t>(n_par)));
  if (!base) return false;
  int8_t* xq = reinterpret_cast<int8_t*>(base);
  float* dxs = reinterpret_cast<float*>(base + xq_bytes);
  int16_t* bsp = reinterpret_cast<int16_t*>(base + xq_bytes + dx_bytes);
  char* thread_base = base + xq_bytes + dx_bytes + bsp_bytes;
  const TileConfig cfg = tile_config_k();

  exec.parallel(n_par, [&](int ith, int nth) {
    char* mine = thread_base + per_thread * static_cast<size_t>(ith);
    BlockQ8_K* qrow = reinterpret_cast<BlockQ8_K*>(mine);
    mine += qrow_bytes;
    Panel p;
    p.hi = reinterpret_cast<int8_t*>(mine);
    p.lo = reinterpret_cast<int8_t*>(mine + wq_bytes);
    mine += 2 * wq_bytes;
    p.mp = reinterpret_cast<int32_t*>(mine);
    mine += mp_bytes;
    p.d = reinterpret_cast<float*>(mine);
    p.dmin = reinterpret_cast<float*>(mine + d_bytes);
    mine += 2 * d_bytes;
    int32_t* cbuf = reinterpret_cast<int32_t*>(mine);
    float* out = reinterpret_cast<float*>(cbuf + 4 * kCFloats);

    // 1. Whole m-tiles per thread: quantize to Q8_K, regroup into B tiles, d_x and the
    //    sub-block sum pairs; rows past Mt are zero.
    int64_t t0, t1;
    ThreadPool::split(MT, ith, nth, &t0, &t1);
    for (int64_t r = t0 * kTile; r < t1 * kTile; ++r) {
      const int64_t t = r / kTile, lane = r % kTile;
      if (r < Mt) mm::quantize_act_q8K(row_at<const float>(x, r), qrow, K);
      for (int64_t s = 0; s < nsb; ++s) {
        const size_t ts = static_cast<size_t>(t) * usb + static_cast<size_t>(s);
        int8_t* bt = xq + ts * kSuperTileBytes + 4 * lane;
        int16_t* bp = bsp + ts * 4 * 2 * kTile + 2 * lane;
        if (r < Mt) {
          for (int k = 0; k < kChunks; ++k)
            for (int kk = 0; kk < 16; ++kk) std::memcpy(bt + k * kTile64 + 64 * kk, qrow[s].qs + 64 * k + 4 * kk, 4);
          dxs[ts * kTile + lane] = qrow[s].d;
          for (int j = 0; j < kSub; ++j)  // sum of sub-block j: two 16-sums (|.| <= 4096)
            bp[(j / 2) * 2 * kTile + (j % 2)] = static_cast<int16_t>(qrow[s].bsums[2 * j] + qrow[s].bsums[2 * j + 1]);
        } else {
          for (int k = 0; k < kChunks; ++k)
            for (int kk = 0; kk < 16; ++kk) std::memset(bt + k * kTile64 + 64 * kk, 0, 4);
          dxs[ts * kTile + lane] = 0.0f;
          for (int j = 0; j < kSub; ++j) bp[(j / 2) * 2 * kTile + (j % 2)] = 0;
        }
      }
    }
    if (nth > 1) exec.pool().barrier();

    // 2. This thread's 16-row weight panels, each decoded once, against every m-tile.
    _tile_loadconfig(&cfg);
    int64_t p0, p1;
    ThreadPool::split(NT, ith, nth, &p0, &p1);
    for (int64_t pi = p0; pi < p1; ++pi) {
      const int64_t n = pi * kTile;
      const int rows = static_cast<int>(N - n < kTile ? N - n : kTile);
      decode_panel(W, n, rows, nsb, p);
      const __mmask16 row_mask = static_cast<__mmask16>((1u << rows) - 1);
      for (int64_t t = 0; t < MT; ++t) {
        const size_t ts = static_cast<size_t>(t) * usb;
        const ActTile a{xq + ts * kSuperTileBytes, dxs + ts * kTile, bsp + ts * 4 * 2 * kTile};
        tile_loop(nsb, p, a, cbuf, out);
        __m512 tr[kTile];
        transpose16(out, tr);
        for (int lane = 0; lane < kTile && t * kTile + lane < Mt; ++lane)
          _mm512_mask_storeu_ps(row_at<float>(y, t * kTile + lane) + n, row_mask, tr[lane]);
      }
    }
    _tile_release();
  });
  return true;
}

}  // namespace kestrel::cpu::amx

#endif
