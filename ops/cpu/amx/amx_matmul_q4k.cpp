// AMX-INT8 matmul for Q4_K weights against Q8_K activations (see amx_matmul.h).
//
// A Q4_K super-block is 8 sub-blocks of 32 codes q (0..15) with 6-bit scales sc_j and
// mins m_j; a Q8_K activation block has one d_x, 256 codes and 16-element sums. Per
// output and super-block:
//   y += d * d_x * sum_j sc_j * (q_j . x_j)  -  dmin * d_x * sum_j m_j * bsum_j
// Layout: one tdpbssd per sub-block (A: 16 weight rows x 32 codes, B: 16 activation rows
// regrouped in 4-byte columns, C: 16 x 16 exact sums), as for Q4_0 (amx_matmul.cpp).
// The scales are applied in the integer domain (vpmulld by sc_j per weight row, summed
// over the 8 sub-blocks in int32: at most 8 * 63 * 32 * 15 * 128, exact), converted once
// per super-block: acc = fma(float(isum), d * d_x, acc). The mins term is its own chain
// from the activation 16-sums (vpmaddwd of m_j pairs against bsum pairs), corr =
// fma(float(msum), dmin * d_x, corr), and y = acc - corr.
// The integer sums equal the avx512 kernel's; its float operations differ (it converts
// 8 partial lanes per super-block and sums them at the end), so outputs match it only to
// rounding (test_matmul_amx bounds both against ref). Within this kernel an output's
// operations depend on neither M, its tile, nor the thread count.
#include "ops/cpu/amx/amx_matmul.h"
#include "ops/cpu/amx/amx_tiles.h"

#if defined(KESTREL_AMX_INT8_COMPILED)

namespace kestrel::cpu::amx {

namespace {

constexpr int kSub = kQKK / kQK;  // 8 sub-blocks of 32 per super-block
constexpr size_t kSuperTileBytes = kSub * kTileBytes;

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
  int8_t* wq;     // [nsb][8][16 rows][32 codes]: the A tiles
  int32_t* sc;    // [nsb][8][16]: sc_j per row
  int32_t* mp;    // [nsb][4][16]: m_2p | m_2p+1 << 16 per row (int16 pairs for vpmaddwd)
  float* d;       // [nsb][16]
  float* dmin;    // [nsb][16]
};

void decode_panel(const Tensor& W, int64_t n, int rows, int64_t nsb, const Panel& p) {
  for (int r = 0; r < kTile; ++r) {
    const BlockQ4_K* row = r < rows ? W.row<const BlockQ4_K>(n + r) : nullptr;
    for (int64_t s = 0; s < nsb; ++s) {
      int8_t* wq = p.wq + s * kSuperTileBytes + r * kQK;
      if (!row) {
        for (int j = 0; j < kSub; ++j) {
          _mm256_store_si256(reinterpret_cast<__m256i*>(wq + j * kTileBytes), _mm256_setzero_si256());
          p.sc[(s * kSub + j) * kTile + r] = 0;
        }
        for (int q = 0; q < 4; ++q) p.mp[(s * 4 + q) * kTile + r] = 0;
        p.d[s * kTile + r] = p.dmin[s * kTile + r] = 0.0f;
        continue;
      }
      const BlockQ4_K& b = row[s];
      // qs: 4 groups of 32 bytes; low nibbles are sub-block 2c, high nibbles 2c + 1.
      for (int c = 0; c < 4; ++c) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * c));
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        _mm256_store_si256(reinterpret_cast<__m256i*>(wq + (2 * c) * kTileBytes), _mm256_and_si256(q, m4));
        _mm256_store_si256(reinterpret_cast<__m256i*>(wq + (2 * c + 1) * kTileBytes),
                           _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
      }
      uint8_t sc[16];
      k_scales(b.scales, sc);
      for (int j = 0; j < kSub; ++j) p.sc[(s * kSub + j) * kTile + r] = sc[j];
      for (int q = 0; q < 4; ++q)
        p.mp[(s * 4 + q) * kTile + r] = static_cast<int32_t>(sc[8 + 2 * q] | (uint32_t{sc[9 + 2 * q]} << 16));
      p.d[s * kTile + r] = _cvtsh_ss(b.d);
      p.dmin[s * kTile + r] = _cvtsh_ss(b.dmin);
    }
  }
}

// One m-tile of activations: B tiles [nsb][8][512 bytes], d_x [nsb][16], and the
// sub-block sums as int16 pairs [nsb][4][16 rows][2] (pair q: sub-blocks 2q, 2q + 1).
struct ActTile {
  const int8_t* xq;
  const float* dx;
  const int16_t* bsp;
};

// out[r * 16 + m] = y for weight row r of the panel and activation row m of the tile.
void tile_loop(int64_t nsb, const Panel& p, const ActTile& a, int32_t* cbuf, float* out) {
  std::memset(out, 0, kCFloats * sizeof(float));
#define KESTREL_AMX_ZERO(r) __m512i is##r = _mm512_setzero_si512();
  KESTREL_AMX_ROWS(KESTREL_AMX_ZERO)
#undef KESTREL_AMX_ZERO
  // Sub-block g's sums times sc_j into the integer accumulators; after the 8th, the
  // super-block goes to the float accumulators in `out`.
  auto scale = [&](int64_t g, const int32_t* c) __attribute__((always_inline)) {
    const int32_t* sc = p.sc + g * kTile;
#define KESTREL_AMX_MUL(r) \
  is##r = _mm512_add_epi32(is##r, _mm512_mullo_epi32(_mm512_load_si512(c + kTile * r), _mm512_set1_epi32(sc[r])));
    KESTREL_AMX_ROWS(KESTREL_AMX_MUL)
#undef KESTREL_AMX_MUL
    if (g % kSub == kSub - 1) {
      const int64_t s = g / kSub;
      const __m512 dx = _mm512_load_ps(a.dx + s * kTile);
      const float* d = p.d + s * kTile;
#define KESTREL_AMX_FLUSH(r)                                                                               \
  _mm512_store_ps(out + kTile * r, _mm512_fmadd_ps(_mm512_cvtepi32_ps(is##r), _mm512_mul_ps(_mm512_set1_ps(d[r]), dx), \
                                                   _mm512_load_ps(out + kTile * r)));                        \
  is##r = _mm512_setzero_si512();
      KESTREL_AMX_ROWS(KESTREL_AMX_FLUSH)
#undef KESTREL_AMX_FLUSH
    }
  };
  const int64_t ng = nsb * kSub;  // even
  int32_t* c0 = cbuf;
  int32_t* c1 = cbuf + kCFloats;
  tile_product<0>(p.wq, a.xq, c0);
  for (int64_t g = 1; g < ng; g += 2) {
    tile_product<1>(p.wq + g * kTileBytes, a.xq + g * kTileBytes, c1);
    scale(g - 1, c0);
    if (g + 1 < ng) tile_product<0>(p.wq + (g + 1) * kTileBytes, a.xq + (g + 1) * kTileBytes, c0);
    scale(g, c1);
  }
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
  const size_t wq_bytes = usb * kSuperTileBytes;
  const size_t sc_bytes = round64(usb * kSub * kTile * 4), mp_bytes = round64(usb * 4 * kTile * 4),
               d_bytes = round64(usb * kTile * 4);
  const size_t per_thread = qrow_bytes + wq_bytes + sc_bytes + mp_bytes + 2 * d_bytes + 3 * kCFloats * 4;
  const int64_t work = N * K * Mt;
  const int n_par = work < 64 * 1024 ? 1 : static_cast<int>(NT < exec.n_threads() ? NT : exec.n_threads());
  char* base = static_cast<char*>(exec.scratch(xq_bytes + dx_bytes + bsp_bytes + per_thread * static_cast<size_t>(n_par)));
  if (!base) return false;
  int8_t* xq = reinterpret_cast<int8_t*>(base);
  float* dxs = reinterpret_cast<float*>(base + xq_bytes);
  int16_t* bsp = reinterpret_cast<int16_t*>(base + xq_bytes + dx_bytes);
  char* thread_base = base + xq_bytes + dx_bytes + bsp_bytes;
  const TileConfig cfg = tile_config();

  exec.parallel(n_par, [&](int ith, int nth) {
    char* mine = thread_base + per_thread * static_cast<size_t>(ith);
    BlockQ8_K* qrow = reinterpret_cast<BlockQ8_K*>(mine);
    mine += qrow_bytes;
    Panel p;
    p.wq = reinterpret_cast<int8_t*>(mine);
    mine += wq_bytes;
    p.sc = reinterpret_cast<int32_t*>(mine);
    mine += sc_bytes;
    p.mp = reinterpret_cast<int32_t*>(mine);
    mine += mp_bytes;
    p.d = reinterpret_cast<float*>(mine);
    p.dmin = reinterpret_cast<float*>(mine + d_bytes);
    mine += 2 * d_bytes;
    int32_t* cbuf = reinterpret_cast<int32_t*>(mine);
    float* out = reinterpret_cast<float*>(cbuf + 2 * kCFloats);

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
          for (int j = 0; j < kSub; ++j)
            for (int kk = 0; kk < kQK / 4; ++kk) std::memcpy(bt + j * kTileBytes + 64 * kk, qrow[s].qs + kQK * j + 4 * kk, 4);
          dxs[ts * kTile + lane] = qrow[s].d;
          for (int j = 0; j < kSub; ++j)  // sum of sub-block j: two 16-sums (|.| <= 4096)
            bp[(j / 2) * 2 * kTile + (j % 2)] = static_cast<int16_t>(qrow[s].bsums[2 * j] + qrow[s].bsums[2 * j + 1]);
        } else {
          for (int j = 0; j < kSub; ++j)
            for (int kk = 0; kk < kQK / 4; ++kk) std::memset(bt + j * kTileBytes + 64 * kk, 0, 4);
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
