// Internal to ops/cpu/amx: what the AMX kernels share (tile configuration, the
// activation quantizers, output helpers). Include only from the AMX translation units,
// which are compiled with the tile flags; KESTREL_AMX_INT8_COMPILED says whether they were.
#pragma once

#include <cstdint>
#include <cstring>

#include "ops/cpu/kernel_table.h"

#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__) && defined(__AVX512VBMI__) && defined(__F16C__)
#define KESTREL_AMX_INT8_COMPILED 1
#include <immintrin.h>
// The avx512 path's activation quantizers, compiled here in their own namespace: the
// same code and flags give the same ActQ8 / BlockQ8_K values.
#define KESTREL_ISA_NS amx
#include "ops/cpu/k_matmul_act.inl"
#undef KESTREL_ISA_NS
// GCC 12's AVX-512 intrinsics give unmasked results an undefined pass-through operand
// (`__m512 __Y = __Y;`), which its -Wmaybe-uninitialized and, where transpose16 is inlined
// into store_tile, -Wuninitialized report at every inlined use.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace kestrel::cpu::amx {

constexpr int kTile = 16;            // weight rows per A tile, activation rows per B tile
constexpr size_t kTileBytes = 512;   // one A tile (16 x 32) or B tile (8 x 64) of int8
constexpr size_t kCFloats = 256;     // one 16 x 16 C tile

// The 64-byte operand of ldtilecfg (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

// Two sets (even and odd blocks, so the tile unit can start block b + 1 while block b's
// sums are stored): A in tiles 0 / 1, B in 2 / 3, C in 4 / 5.
inline TileConfig tile_config() {
  TileConfig c;
  for (int t = 0; t < 2; ++t) c.rows[t] = 16, c.colsb[t] = 32;  // A: weights
  for (int t = 2; t < 4; ++t) c.rows[t] = 8, c.colsb[t] = 64;   // B: activations
  for (int t = 4; t < 6; ++t) c.rows[t] = 16, c.colsb[t] = 64;  // C: int32 sums
  return c;
}

// One 32-element block's product: A (16 weight rows x 32 codes at wq) times B (16
// activation rows at xq) into C tile 4 + P, stored to c (16 x 16 int32). Two tile sets
// (P = 0, 1) alternate so the tile unit can start the next block while this one's sums
// are stored and scaled (tile registers are not renamed).
template <int P>
[[gnu::always_inline]] inline void tile_product(const int8_t* wq, const int8_t* xq, int32_t* c) {
  // The tile intrinsics take literal register numbers.
  if constexpr (P == 0) {
    _tile_loadd(0, wq, 32);
    _tile_loadd(2, xq, 64);
    _tile_zero(4);
    _tile_dpbssd(4, 0, 2);
    _tile_stored(4, c, 64);
  } else {
    _tile_loadd(1, wq, 32);
    _tile_loadd(3, xq, 64);
    _tile_zero(5);
    _tile_dpbssd(5, 1, 3);
    _tile_stored(5, c, 64);
  }
}

// The 16 rows of a C tile, for per-row statements on named variables: GCC 12 keeps an
// array of 16 __m512 accumulators in memory (no scalarization), which made the block loop
// bound by L1 stores.
#define KESTREL_AMX_ROWS(X) \
  X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)

// The 16 x 16 floats of `out` (row r: weight row; lane m: activation row) transposed
// into 16 registers, t[m] lane r = out[r][m]: unpack, in-lane shuffle, then two 128-bit
// lane shuffles.
inline void transpose16(const float* out, __m512* t) {
  __m512 a[16], u[16];
  for (int i = 0; i < 8; ++i) {
    const __m512 x = _mm512_load_ps(out + 32 * i), y = _mm512_load_ps(out + 32 * i + 16);
    a[2 * i] = _mm512_unpacklo_ps(x, y);
    a[2 * i + 1] = _mm512_unpackhi_ps(x, y);
  }
  // u[4 i + j], 128-bit lane L: rows 4i .. 4i+3 of column 4 L + j.
  for (int i = 0; i < 4; ++i) {
    u[4 * i + 0] = _mm512_shuffle_ps(a[4 * i], a[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 1] = _mm512_shuffle_ps(a[4 * i], a[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * i + 2] = _mm512_shuffle_ps(a[4 * i + 1], a[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 3] = _mm512_shuffle_ps(a[4 * i + 1], a[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88), v1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);
    const __m512 w0 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88),
                 w1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
    t[j] = _mm512_shuffle_f32x4(v0, w0, 0x88);
    t[8 + j] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
    t[4 + j] = _mm512_shuffle_f32x4(v1, w1, 0x88);
    t[12 + j] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
  }
}

// Flattened activation row r -> its row of a [.., ne1, ne2, ne3] view.
template <typename E>
inline E* row_at(const Tensor& t, int64_t r) {
  const int64_t i1 = r % t.ne[1], i23 = r / t.ne[1];
  return t.row<E>(i1, i23 % t.ne[2], i23 / t.ne[2]);
}

inline size_t round64(size_t n) { return (n + 63) / 64 * 64; }

// Panels per group for decoded panels of panel_bytes each: up to 8 within 1 MiB (half this
// machine class's 2 MiB L2 per core; Q6_K at K = 5632, ~270 KB a panel, ran 0.65x with 8).
inline int panel_group(size_t panel_bytes) {
  const size_t g = (size_t{1} << 20) / (panel_bytes ? panel_bytes : 1);
  return g < 1 ? 1 : g > 8 ? 8 : static_cast<int>(g);
}

// The int8 kernels' step 2: this thread's 16-row weight panels, up to `group` at a time:
// decode(g, n, rows) puts each panel of a group in the thread's panel buffer g (rows: the
// panel's real rows), then for every m-tile t, tile(g, n, rows, t) runs the group's panels
// in order; the tile configuration stays loaded throughout. A group's output tiles of one
// m-tile land side by side (their 64-byte row stores share lines and pages) and each
// m-tile's activation tiles are read once per group: against one panel at a time, groups of
// panel_group() measured 1.10-1.15x on the Q4_0 kernel and 1.05-1.3x on the Q4_K / Q6_K
// kernels at 512 rows (bench_amx_matmul, 1 thread). Which thread computes a panel is
// unchanged, so outputs keep their bits.
template <class Decode, class Tile>
inline void for_each_panel_group(const TileConfig& cfg, int64_t N, int64_t MT, int group, int ith, int nth,
                                 Decode&& decode, Tile&& tile) {
  _tile_loadconfig(&cfg);
  int64_t p0, p1;
  ThreadPool::split((N + kTile - 1) / kTile, ith, nth, &p0, &p1);
  auto rows_at = [N](int64_t n) { return static_cast<int>(N - n < kTile ? N - n : kTile); };
  for (int64_t g0 = p0; g0 < p1; g0 += group) {
    const int ng = static_cast<int>(p1 - g0 < group ? p1 - g0 : group);
    for (int g = 0; g < ng; ++g) decode(g, (g0 + g) * kTile, rows_at((g0 + g) * kTile));
    for (int64_t t = 0; t < MT; ++t)
      for (int g = 0; g < ng; ++g) tile(g, (g0 + g) * kTile, rows_at((g0 + g) * kTile), t);
  }
  _tile_release();
}

// y[16 t + m][n + r] = out[16 r + m] for the activation rows below Mt and the panel's `rows`
// weight rows: an output tile transposed back to activation rows.
inline void store_tile(const float* out, const Tensor& y, int64_t t, int64_t Mt, int64_t n, int rows) {
  const __mmask16 row_mask = static_cast<__mmask16>((1u << rows) - 1);
  __m512 tr[kTile];
  transpose16(out, tr);
  for (int lane = 0; lane < kTile && t * kTile + lane < Mt; ++lane)
    _mm512_mask_storeu_ps(row_at<float>(y, t * kTile + lane) + n, row_mask, tr[lane]);
}

// Q4_K / Q6_K weights (amx_matmul_kq.cpp); the same contract as amx_matmul().
bool matmul_q4_K(const OpCall& c, Exec& exec);
bool matmul_q6_K(const OpCall& c, Exec& exec);
// F16 / BF16 weights on bf16 tiles (amx_matmul_bf16.cpp); false when this build
// lacks AMX-BF16 code generation.
bool matmul_float(const OpCall& c, Exec& exec);

}  // namespace kestrel::cpu::amx

#endif
