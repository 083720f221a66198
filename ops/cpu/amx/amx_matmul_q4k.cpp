// AMX-INT8 matmul for Q4_K weights against Q8_K activations (see amx_matmul.h), bitwise
// equal to the avx512 (and avx2) Q4_K kernel.
//
// That kernel (dot_q45K / dot_q4K_4 in k_matmul_q.inl) keeps 8 lanes per output: lane l
// gathers the elements 4l .. 4l+3 of every 32-element sub-block j,
//   isum_l = sum_j sc_j * sum_{i<4} q[32 j + 4 l + i] x[32 j + 4 l + i]     (int32, exact)
//   pm_l   = m_l * (bsum_2l + bsum_2l+1)                                  (sub-block l's min)
//   acc_l  = fma(float(isum_l), d * d_x, acc_l);  acc_l = fnmadd(float(pm_l), dmin * d_x, acc_l)
// per super-block in order, and y = ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)).
// This kernel computes the same isum_l with tiles and then the same float operations.
//
// Lane group l is a tile product over its 32 elements (K = 32, ordered j-major). The
// scales are folded into the weights: sc_j = 8 a_j + b_j (a, b in 0..7), Hi = a_j * q and
// Lo = b_j * q are int8 (at most 105; one byte shuffle each from a table of multiples),
// and isum_l = 8 * (Hi . x) + (Lo . x).
//   A  Hi or Lo of lane group l: 16 weight rows x 32 bytes, lane groups 2q and 2q+1
//      interleaved per row (a tile is every other 32 bytes). Decoded once per panel of 16
//      rows: one byte permute (vpermt2b) of a super-block's 128 code bytes per lane pair,
//      the nibble picked by sub-block parity, times a_j / b_j by a 16-bit multiply.
//   B  lane group l of 16 activation rows: B[j][4 m + i] = x_m[32 j + 4 l + i].
//   C  16 x 16 exact sums, stored and finished in AVX-512 with the float accumulators of
//      one lane in 16 zmm registers (lane-major loop), then the lanes summed as above.
// float(pm_l) = float(m_l) * float(bsum pair): exact (|m_l * pair| <= 63 * 4096 < 2^24).
#include "ops/cpu/amx/amx_matmul.h"
#include "ops/cpu/amx/amx_tiles.h"

#if defined(KESTREL_AMX_INT8_COMPILED)

namespace kestrel::cpu::amx {

namespace {

constexpr int kLanes8 = 8;                           // lane groups per super-block
constexpr size_t kSuperBytes = kLanes8 * kTileBytes;  // 8 tiles of 512 bytes

// Decoded 6-bit scales (sc[0..7]) and mins (sc[8..15]) of a Q4_K super-block (the GGUF
// packing: 12 bytes, low 6 bits of bytes 0..7, high 2 bits spread over the rest).
inline void k_scales(const uint8_t* s12, uint8_t* sc16) {
  uint32_t u[3];
  std::memcpy(u, s12, 12);
  const uint32_t v[4] = {u[0] & 0x3f3f3f3fu, (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4),
                         u[1] & 0x3f3f3f3fu, ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4)};
  std::memcpy(sc16, v, 16);
}

// Byte indices for vpermt2b: output q (lane groups 2q, 2q+1; 64 bytes) position p takes
// the code byte of element 32 j + 4 l + i (l = 2q + p / 32, j = p % 32 / 4, i = p % 4),
// which is qs[32 (j / 2) + 4 l + i] (low nibble for even j, high for odd).
struct PermuteIdx {
  alignas(64) uint8_t idx[4][64];
  constexpr PermuteIdx() : idx{} {
    for (int q = 0; q < 4; ++q)
      for (int p = 0; p < 64; ++p) {
        const int l = 2 * q + p / 32, j = p % 32 / 4, i = p % 4;
        idx[q][p] = static_cast<uint8_t>(32 * (j / 2) + 4 * l + i);
      }
  }
};
constexpr PermuteIdx kPermute;
// Bytes of odd sub-blocks j (high nibbles) in an output: dwords 1, 3, 5, 7 of each half.
constexpr __mmask64 kOddJ = 0xF0F0F0F0F0F0F0F0ull;

// One panel of up to 16 weight rows, decoded (rows past `rows` are zero).
struct Panel {
  int8_t* hi;     // [nsb][4 lane pairs][16 rows][2 lanes][32]: a_j * q, the A tiles
  int8_t* lo;     // the same with b_j * q
  float* mins;    // [nsb][8 lanes][16 rows]: m_l
  float* d;       // [nsb][16]
  float* dmin;    // [nsb][16]
};
constexpr size_t kPairBytes = 2 * kTileBytes;  // a lane pair's 16 interleaved rows

void decode_panel(const Tensor& W, int64_t n, int rows, int64_t nsb, const Panel& p) {
  const BlockQ4_K* row[kTile];
  for (int r = 0; r < rows; ++r) row[r] = W.row<const BlockQ4_K>(n + r);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  // Row by row: the weights are read in memory order (a super-block-major walk over 16
  // rows at once missed the hardware prefetcher and waited on DRAM); every store is a
  // whole 64-byte line.
  for (int r = 0; r < kTile; ++r)
    for (int64_t s = 0; s < nsb; ++s) {
      int8_t* hi = p.hi + s * kSuperBytes + r * 64;
      int8_t* lo = p.lo + s * kSuperBytes + r * 64;
      float* mins = p.mins + s * kLanes8 * kTile + r;
      if (r >= rows) {
        for (int q = 0; q < 4; ++q) {
          _mm512_store_si512(hi + q * kPairBytes, _mm512_setzero_si512());
          _mm512_store_si512(lo + q * kPairBytes, _mm512_setzero_si512());
        }
        for (int l = 0; l < kLanes8; ++l) mins[l * kTile] = 0.0f;
        p.d[s * kTile + r] = p.dmin[s * kTile + r] = 0.0f;
        continue;
      }
      const BlockQ4_K& b = row[r][s];
      alignas(16) uint8_t sc[16];
      k_scales(b.scales, sc);
      // Per dword (sub-block j of its lane): a_j / b_j in both 16-bit halves, so one 16-bit
      // multiply scales both bytes of a half (each product is at most 105: no carry).
      const __m256i sc32 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc)));
      const __m256i a32 = _mm256_srli_epi32(sc32, 3), b32 = _mm256_and_si256(sc32, _mm256_set1_epi32(7));
      const __m512i fa = _mm512_broadcast_i64x4(_mm256_or_si256(a32, _mm256_slli_epi32(a32, 16)));
      const __m512i fb = _mm512_broadcast_i64x4(_mm256_or_si256(b32, _mm256_slli_epi32(b32, 16)));
      const __m512i q0 = _mm512_loadu_si512(b.qs), q1 = _mm512_loadu_si512(b.qs + 64);
      for (int q = 0; q < 4; ++q) {
        const __m512i v = _mm512_permutex2var_epi8(q0, _mm512_load_si512(kPermute.idx[q]), q1);
        const __m512i codes = _mm512_mask_blend_epi8(kOddJ, _mm512_and_si512(v, m4),
                                                     _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
        _mm512_store_si512(hi + q * kPairBytes, _mm512_mullo_epi16(codes, fa));
        _mm512_store_si512(lo + q * kPairBytes, _mm512_mullo_epi16(codes, fb));
      }
      for (int l = 0; l < kLanes8; ++l) mins[l * kTile] = static_cast<float>(sc[8 + l]);
      p.d[s * kTile + r] = _cvtsh_ss(b.d);
      p.dmin[s * kTile + r] = _cvtsh_ss(b.dmin);
    }
}

// One m-tile of activations: B tiles [nsb][8 lanes][512 bytes], d_x [nsb][16], and
// sub-block sums [nsb][8][16] as floats (exact).
struct ActTile {
  const int8_t* xq;
  const float* dx;
  const float* bs;
};

// Lane group l of super-block s into C tiles 4 + 2P (Hi) and 5 + 2P (Lo), stored to c.
template <int P>
[[gnu::always_inline]] inline void lane_product(const int8_t* hi, const int8_t* lo, const int8_t* xq, int32_t* c) {
  _tile_loadd(0, hi, 64);  // rows of a lane pair: every other 32 bytes
  _tile_loadd(1, lo, 64);
  _tile_loadd(2, xq, 64);
  // The tile intrinsics take literal register numbers.
  if constexpr (P == 0) {
    _tile_zero(4);
    _tile_zero(5);
    _tile_dpbssd(4, 0, 2);
    _tile_dpbssd(5, 1, 2);
    _tile_stored(4, c, 64);
    _tile_stored(5, c + kCFloats, 64);
  } else {
    _tile_zero(6);
    _tile_zero(7);
    _tile_dpbssd(6, 0, 2);
    _tile_dpbssd(7, 1, 2);
    _tile_stored(6, c, 64);
    _tile_stored(7, c + kCFloats, 64);
  }
}

// out[r * 16 + m] = y for weight row r of the panel and activation row m of the tile.
// sd / sm: [nsb][16 rows][16] the products d * d_x and dmin * d_x; lanes: [8][256].
void tile_loop(int64_t nsb, const Panel& p, const ActTile& a, float* sd, float* sm, int32_t* cbuf, float* lanes,
               float* out) {
  for (int64_t s = 0; s < nsb; ++s) {
    const __m512 dx = _mm512_load_ps(a.dx + s * kTile);
    for (int r = 0; r < kTile; ++r) {
      _mm512_store_ps(sd + (s * kTile + r) * kTile, _mm512_mul_ps(_mm512_set1_ps(p.d[s * kTile + r]), dx));
      _mm512_store_ps(sm + (s * kTile + r) * kTile, _mm512_mul_ps(_mm512_set1_ps(p.dmin[s * kTile + r]), dx));
    }
  }
#define KESTREL_AMX_ZERO(r) __m512 acc##r = _mm512_setzero_ps();
  KESTREL_AMX_ROWS(KESTREL_AMX_ZERO)
#undef KESTREL_AMX_ZERO
  // Product g = l * nsb + s: lane group l of super-block s, lane-major.
  auto a_at = [&](int64_t g) {
    const int64_t l = g / nsb;
    return static_cast<size_t>(g % nsb) * kSuperBytes + static_cast<size_t>(l / 2) * kPairBytes + (l % 2) * kQK;
  };
  auto b_at = [&](int64_t g) { return static_cast<size_t>((g % nsb) * kLanes8 + g / nsb) * kTileBytes; };
  auto finish = [&](int64_t g, const int32_t* c) __attribute__((always_inline)) {
    const int64_t s = g % nsb, l = g / nsb;
    const __m512 bs = _mm512_load_ps(a.bs + (s * kLanes8 + l) * kTile);
    const float* mins = p.mins + (s * kLanes8 + l) * kTile;
    const float* vsd = sd + s * kCFloats;
    const float* vsm = sm + s * kCFloats;
#define KESTREL_AMX_FINISH(r)                                                                          \
  {                                                                                                    \
    const __m512i is = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(c + kTile * r), 3),       \
                                        _mm512_load_si512(c + kCFloats + kTile * r));                  \
    acc##r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_load_ps(vsd + kTile * r), acc##r);         \
    const __m512 pm = _mm512_mul_ps(_mm512_set1_ps(mins[r]), bs);                                      \
    acc##r = _mm512_fnmadd_ps(pm, _mm512_load_ps(vsm + kTile * r), acc##r);                            \
  }
    KESTREL_AMX_ROWS(KESTREL_AMX_FINISH)
#undef KESTREL_AMX_FINISH
    if (s == nsb - 1) {  // lane l done
      float* dst = lanes + l * kCFloats;
#define KESTREL_AMX_PUT(r)                             \
  _mm512_store_ps(dst + kTile * r, acc##r);            \
  acc##r = _mm512_setzero_ps();
      KESTREL_AMX_ROWS(KESTREL_AMX_PUT)
#undef KESTREL_AMX_PUT
    }
  };
  const int64_t ng = kLanes8 * nsb;  // even
  int32_t* c0 = cbuf;
  int32_t* c1 = cbuf + 2 * kCFloats;
  lane_product<0>(p.hi + a_at(0), p.lo + a_at(0), a.xq + b_at(0), c0);
  for (int64_t g = 1; g < ng; g += 2) {
    lane_product<1>(p.hi + a_at(g), p.lo + a_at(g), a.xq + b_at(g), c1);
    finish(g - 1, c0);
    if (g + 1 < ng) lane_product<0>(p.hi + a_at(g + 1), p.lo + a_at(g + 1), a.xq + b_at(g + 1), c0);
    finish(g, c1);
  }
  // y = ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)), the avx512 kernel's sum.
  for (int r = 0; r < kTile; ++r) {
    auto L = [&](int l) { return _mm512_load_ps(lanes + l * kCFloats + kTile * r); };
    const __m512 s0 = _mm512_add_ps(L(0), L(4)), s1 = _mm512_add_ps(L(1), L(5)), s2 = _mm512_add_ps(L(2), L(6)),
                 s3 = _mm512_add_ps(L(3), L(7));
    _mm512_store_ps(out + kTile * r, _mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s1, s3)));
  }
}

// A: 16 x 32 (tiles 0 Hi, 1 Lo); B: 8 x 64 (tile 2); C: two sets (4 Hi, 5 Lo; 6 Hi, 7 Lo).
inline TileConfig tile_config_k() {
  TileConfig c;
  for (int t = 0; t < 2; ++t) c.rows[t] = 16, c.colsb[t] = 32;
  c.rows[2] = 8, c.colsb[2] = 64;
  for (int t = 4; t < 8; ++t) c.rows[t] = 16, c.colsb[t] = 64;
  return c;
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
  // Scratch: per m-tile the B tiles, d_x and sub-block sums; per thread a quantized row,
  // the decoded panel, the scale products, two C stores, the 8 lanes and the output tile.
  const size_t act_tile = usb * (kSuperBytes + kTile * sizeof(float) + kLanes8 * kTile * sizeof(float));
  if (static_cast<uint64_t>(MT) > SIZE_MAX / 4 / act_tile) return false;
  const size_t xq_bytes = static_cast<size_t>(MT) * usb * kSuperBytes;
  const size_t dx_bytes = round64(static_cast<size_t>(MT) * usb * kTile * sizeof(float));
  const size_t bs_bytes = static_cast<size_t>(MT) * usb * kLanes8 * kTile * sizeof(float);
  const size_t qrow_bytes = round64(usb * sizeof(BlockQ8_K));
  const size_t wq_bytes = usb * kSuperBytes;  // each of Hi, Lo
  const size_t mins_bytes = usb * kLanes8 * kTile * 4, d_bytes = round64(usb * kTile * 4);
  const size_t s_bytes = usb * kCFloats * 4;  // each of sd, sm
  const size_t per_thread =
      qrow_bytes + 2 * wq_bytes + mins_bytes + 2 * d_bytes + 2 * s_bytes + (4 + kLanes8 + 1) * kCFloats * 4;
  const int64_t work = N * K * Mt;
  const int n_par = work < 64 * 1024 ? 1 : static_cast<int>(NT < exec.n_threads() ? NT : exec.n_threads());
  char* base = static_cast<char*>(exec.scratch(xq_bytes + dx_bytes + bs_bytes + per_thread * static_cast<size_t>(n_par)));
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
    Panel p;
    p.hi = reinterpret_cast<int8_t*>(mine);
    p.lo = reinterpret_cast<int8_t*>(mine + wq_bytes);
    mine += 2 * wq_bytes;
    p.mins = reinterpret_cast<float*>(mine);
    mine += mins_bytes;
    p.d = reinterpret_cast<float*>(mine);
    p.dmin = reinterpret_cast<float*>(mine + d_bytes);
    mine += 2 * d_bytes;
    float* sd = reinterpret_cast<float*>(mine);
    float* sm = reinterpret_cast<float*>(mine + s_bytes);
    mine += 2 * s_bytes;
    int32_t* cbuf = reinterpret_cast<int32_t*>(mine);
    float* lanes = reinterpret_cast<float*>(cbuf + 4 * kCFloats);
    float* out = lanes + kLanes8 * kCFloats;

    // 1. Whole m-tiles per thread: quantize to Q8_K, regroup into lane-group B tiles,
    //    d_x and the sub-block sums; rows past Mt are zero.
    int64_t t0, t1;
    ThreadPool::split(MT, ith, nth, &t0, &t1);
    for (int64_t r = t0 * kTile; r < t1 * kTile; ++r) {
      const int64_t t = r / kTile, lane = r % kTile;
      const bool real = r < Mt;
      if (real) mm::quantize_act_q8K(row_at<const float>(x, r), qrow, K);
      for (int64_t s = 0; s < nsb; ++s) {
        const size_t ts = static_cast<size_t>(t) * usb + static_cast<size_t>(s);
        int8_t* bt = xq + ts * kSuperBytes + 4 * lane;
        for (int l = 0; l < kLanes8; ++l)
          for (int j = 0; j < kLanes8; ++j) {
            int8_t* dst = bt + l * kTileBytes + 64 * j;
            if (real) std::memcpy(dst, qrow[s].qs + kQK * j + 4 * l, 4);
            else std::memset(dst, 0, 4);
          }
        dxs[ts * kTile + lane] = real ? qrow[s].d : 0.0f;
        for (int l = 0; l < kLanes8; ++l)
          bss[(ts * kLanes8 + l) * kTile + lane] =
              real ? static_cast<float>(qrow[s].bsums[2 * l] + qrow[s].bsums[2 * l + 1]) : 0.0f;
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
        const ActTile a{xq + ts * kSuperBytes, dxs + ts * kTile, bss + ts * kLanes8 * kTile};
        tile_loop(nsb, p, a, sd, sm, cbuf, lanes, out);
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
