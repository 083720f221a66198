// AMX-BF16 matmul for F16 / BF16 weights against F32 activations (see amx_matmul.h for
// the contract), in split precision.
//
// One bf16 product (8 significant bits per operand) would put an error of about 2^-8
// |w x| on each term, ~1e-5 NMSE on the logits: far more than the float prompt paths'
// rounding level that tests/test_batch_consistency.cpp holds f16 models to. So each
// operand is split into two bf16 parts, v = hi + lo (hi = v rounded to nearest even,
// lo = v - hi, exact in f32, then rounded to bf16), and the four products are summed:
//   w_hi x_hi + w_lo x_hi + w_hi x_lo + w_lo x_lo.
// F16 weights split exactly (11 significant bits fit in 8 + 8), BF16 weights have no lo
// part (two products), so the only rounding before the sum is x's lo part: per term
// |error| <= 2^-17 |w x|. tdpbf16ps accumulates in f32 (round to nearest even, denormals
// flushed). tests/test_matmul_amx_bf16.cpp checks |y - w.x| <= 2^-16 sum_k |w_k x_k|
// against a double product, and the shared matmul checks hold it to their float bound.
// F32 weights are not taken: their own split adds another 2^-17 |w x| per term, past the
// float kernels' bound, for a weight type no quantized model uses for its matmuls.
//
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "ops/cpu/amx/amx_matmul.h"
#include "ops/cpu/amx/amx_tiles.h"

#if defined(KESTREL_AMX_INT8_COMPILED) && defined(__AMX_BF16__)

namespace kestrel::cpu::amx {
namespace {

constexpr int kKb = 32;               // K elements per tile product
constexpr size_t kBf16Tile = 1024;    // one 16 x 64-byte A or B tile

// All eight tiles 16 rows x 64 bytes: A hi / lo in 0 / 1, B hi / lo of two m-tiles in
// 2 / 3 and 6 / 7, their C tiles in 4 and 5.
TileConfig tile_config_bf16() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) c.rows[t] = 16, c.colsb[t] = 64;
  return c;
}

// 16 floats -> their bf16 hi parts (round to nearest even) in 16-bit lanes, and the
// rounded lo parts; v = hi + lo + e with |e| <= 2^-17 |v|. NaN payloads are not kept
// (a NaN stays a NaN or becomes an infinity, which still poisons the sum).
inline __m512i round_bf16(__m512i bits) {
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  return _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), odd)), 16);
}
inline void split16(__m512 v, __m256i* hi, __m256i* lo) {
  const __m512i h = round_bf16(_mm512_castps_si512(v));
  const __m512 lo_f = _mm512_sub_ps(v, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)));
  *hi = _mm512_cvtepi32_epi16(h);
  *lo = _mm512_cvtepi32_epi16(round_bf16(_mm512_castps_si512(lo_f)));
}

// Up to 16 elements of a weight row from k (n valid, the rest zero) as f32.
template <DType T>
inline __m512 load_w16(const char* row, int64_t k, int n) {
  const __mmask16 m = static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1);
  const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(row) + k);
  if constexpr (T == DType::F16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Weight rows [n, n + rows), K blocks [kb0, kb0 + nb) -> per block an A hi tile and
// (kLo) an A lo tile.
template <DType T, bool kLo>
void convert_panel(const Tensor& W, int64_t n, int rows, int64_t K, int64_t kb0, int64_t nb, uint8_t* wa) {
  const size_t per_block = (kLo ? 2 : 1) * kBf16Tile;
  for (int r = 0; r < kTile; ++r) {
    const char* row = r < rows ? W.row<const char>(n + r) : nullptr;
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* a = wa + b * per_block + r * 64;
      const int64_t k0 = (kb0 + b) * kKb;
      __m256i h0 = _mm256_setzero_si256(), h1 = h0, l0 = h0, l1 = h0;
      if (row) {
        // The weights come from DRAM once per call: the conversion stalled on these
        // loads without a prefetch 16 lines ahead (past the row's end it is harmless).
        _mm_prefetch(row + (k0 + 16 * kKb) * 2, _MM_HINT_T0);
        const int64_t left = K - k0;
        const int n0 = static_cast<int>(left < 16 ? left : 16), n1 = static_cast<int>(left - 16 < 16 ? left - 16 : 16);
        split16(load_w16<T>(row, k0, n0), &h0, &l0);
        if (n1 > 0) split16(load_w16<T>(row, k0 + 16, n1), &h1, &l1);
      }
      _mm512_store_si512(a, _mm512_inserti64x4(_mm512_castsi256_si512(h0), h1, 1));
      if constexpr (kLo) _mm512_store_si512(a + kBf16Tile, _mm512_inserti64x4(_mm512_castsi256_si512(l0), l1, 1));
    }
  }
}

// Activation row x (K floats) -> column m of the B hi / lo tiles of its m-tile (xb: per
// K block a hi tile then a lo tile); a null x (a row past M) writes zeros.
void pack_act_row(const float* x, int64_t K, int64_t nkb, int m, uint8_t* xb) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(64));
  for (int64_t kb = 0; kb < nkb; ++kb) {
    __m256i h0 = _mm256_setzero_si256(), h1 = h0, l0 = h0, l1 = h0;
    if (x) {
      const int64_t k0 = kb * kKb, left = K - k0;
      const __mmask16 m0 = static_cast<__mmask16>(left >= 16 ? 0xFFFF : (1u << left) - 1);
      const __mmask16 m1 = static_cast<__mmask16>(left >= 32 ? 0xFFFF : left <= 16 ? 0 : (1u << (left - 16)) - 1);
      split16(_mm512_maskz_loadu_ps(m0, x + k0), &h0, &l0);
      split16(_mm512_maskz_loadu_ps(m1, x + k0 + 16), &h1, &l1);
    }
    // Dword kk of the 32 bf16 values is the pair (2 kk, 2 kk + 1): row kk, column m.
    uint8_t* t = xb + kb * 2 * kBf16Tile + 4 * m;
    _mm512_i32scatter_epi32(t, idx, _mm512_inserti64x4(_mm512_castsi256_si512(h0), h1, 1), 1);
    _mm512_i32scatter_epi32(t + kBf16Tile, idx, _mm512_inserti64x4(_mm512_castsi256_si512(l0), l1, 1), 1);
  }
}

// One K chunk (nb blocks) of one weight panel against one or two m-tiles (b1 null: one):
// the C tiles start from zero (first chunk) or from their partial sums at c0 / c1, and
// go back there. A round trip through memory is exact, so the chunking changes no bit.
template <bool kLo>
void tile_loop(const uint8_t* wa, const uint8_t* b0, const uint8_t* b1, int64_t nb, bool first, float* c0,
               float* c1) {
  const size_t wstep = (kLo ? 2 : 1) * kBf16Tile, xstep = 2 * kBf16Tile;
  if (first) {
    _tile_zero(4);
    _tile_zero(5);
  } else {
    _tile_loadd(4, c0, 64);
    if (b1) _tile_loadd(5, c1, 64);
  }
  for (int64_t kb = 0; kb < nb; ++kb) {
    const uint8_t* a = wa + kb * wstep;
    _tile_loadd(0, a, 64);
    if constexpr (kLo) _tile_loadd(1, a + kBf16Tile, 64);
    _tile_loadd(2, b0 + kb * xstep, 64);
    _tile_loadd(3, b0 + kb * xstep + kBf16Tile, 64);
    _tile_dpbf16ps(4, 0, 2);
    if constexpr (kLo) _tile_dpbf16ps(4, 1, 2);
    _tile_dpbf16ps(4, 0, 3);
    if constexpr (kLo) _tile_dpbf16ps(4, 1, 3);
    if (b1) {
      _tile_loadd(6, b1 + kb * xstep, 64);
      _tile_loadd(7, b1 + kb * xstep + kBf16Tile, 64);
      _tile_dpbf16ps(5, 0, 6);
      if constexpr (kLo) _tile_dpbf16ps(5, 1, 6);
      _tile_dpbf16ps(5, 0, 7);
      if constexpr (kLo) _tile_dpbf16ps(5, 1, 7);
    }
  }
  _tile_stored(4, c0, 64);
  if (b1) _tile_stored(5, c1, 64);
}

// y[m][n + r] = c[r][m] for the rows of m-tile t that exist.
void store_tile(const float* c, const Tensor& y, int64_t t, int64_t Mt, int64_t n, __mmask16 row_mask) {
  __m512 tr[kTile];
  transpose16(c, tr);
  for (int lane = 0; lane < kTile && t * kTile + lane < Mt; ++lane)
    _mm512_mask_storeu_ps(row_at<float>(y, t * kTile + lane) + n, row_mask, tr[lane]);
}

template <DType T>
bool matmul_f(const OpCall& c, Exec& exec) {
  constexpr bool kLo = T != DType::BF16;  // BF16 weights are their own hi part
  const Tensor& W = *c.src[0];
  const Tensor& x = *c.src[1];
  const Tensor& y = *c.dst;
  const int64_t K = W.ne[0], N = W.ne[1], Mt = x.ne[1] * x.ne[2] * x.ne[3];
  if (N == 0 || Mt == 0) return true;
  const int64_t nkb = (K + kKb - 1) / kKb, MT = (Mt + kTile - 1) / kTile, NT = (N + kTile - 1) / kTile;
  // Blocking: the K blocks run in chunks, outermost, so that one chunk of every
  // activation row's B tiles (<= kChunkBytes) stays in L2 while every weight panel of the
  // thread passes over it; streaming all of B once per panel made the kernel bound by
  // L3 / DRAM bandwidth at prompt sizes. The C tiles of each (panel, m-tile) wait in
  // memory between chunks.
  constexpr size_t kChunkBytes = size_t(1) << 19;
  const size_t unkb = static_cast<size_t>(nkb), xblock = 2 * kBf16Tile;  // B bytes per m-tile and block
  if (static_cast<uint64_t>(MT) > SIZE_MAX / 4 / (unkb * xblock)) return false;
  const int64_t kcb = std::max<int64_t>(1, std::min<int64_t>(nkb, static_cast<int64_t>(kChunkBytes / (MT * xblock))));
  const int64_t work = N * K * Mt;
  const int n_par = work < 64 * 1024 ? 1 : static_cast<int>(NT < exec.n_threads() ? NT : exec.n_threads());
  const int64_t max_panels = (NT + n_par - 1) / n_par;
  // Scratch: the activations' B tiles (hi + lo per block per m-tile), then per thread a
  // chunk of the weight panel's A tiles and the C tiles of its panels x m-tiles.
  const size_t xb_bytes = static_cast<size_t>(MT) * unkb * xblock;
  const size_t wa_bytes = static_cast<size_t>(kcb) * (kLo ? 2 : 1) * kBf16Tile;
  if (static_cast<uint64_t>(max_panels) > SIZE_MAX / 4 / (static_cast<size_t>(MT) * kCFloats * sizeof(float)))
    return false;
  const size_t cp_bytes = static_cast<size_t>(max_panels) * static_cast<size_t>(MT) * kCFloats * sizeof(float);
  const size_t per_thread = wa_bytes + cp_bytes;
  char* base = static_cast<char*>(exec.scratch(xb_bytes + per_thread * static_cast<size_t>(n_par)));
  if (!base) return false;
  uint8_t* xb = reinterpret_cast<uint8_t*>(base);
  const TileConfig cfg = tile_config_bf16();

  exec.parallel(n_par, [&](int ith, int nth) {
    char* mine = base + xb_bytes + per_thread * static_cast<size_t>(ith);
    uint8_t* wa = reinterpret_cast<uint8_t*>(mine);
    float* cp = reinterpret_cast<float*>(mine + wa_bytes);  // (panel, m-tile) -> 16 x 16 sums
    auto ctile = [&](int64_t p_local, int64_t t) { return cp + (static_cast<size_t>(p_local) * MT + t) * kCFloats; };

    // 1. Whole m-tiles of activation rows per thread, split and regrouped into B tiles.
    int64_t t0, t1;
    ThreadPool::split(MT, ith, nth, &t0, &t1);
    for (int64_t r = t0 * kTile; r < t1 * kTile; ++r)
      pack_act_row(r < Mt ? row_at<const float>(x, r) : nullptr, K, nkb, static_cast<int>(r % kTile),
                   xb + static_cast<size_t>(r / kTile) * unkb * xblock);
    if (nth > 1) exec.pool().barrier();

    // 2. Per K chunk, this thread's 16-row weight panels (each chunk converted once)
    //    against the m-tiles two at a time (one A load serves both).
    _tile_loadconfig(&cfg);
    int64_t p0, p1;
    ThreadPool::split(NT, ith, nth, &p0, &p1);
    for (int64_t kb0 = 0; kb0 < nkb; kb0 += kcb) {
      const int64_t nb = std::min(kcb, nkb - kb0);
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t n = p * kTile;
        const int rows = static_cast<int>(N - n < kTile ? N - n : kTile);
        convert_panel<T, kLo>(W, n, rows, K, kb0, nb, wa);
        for (int64_t t = 0; t < MT; t += 2) {
          const uint8_t* b0 = xb + (static_cast<size_t>(t) * unkb + static_cast<size_t>(kb0)) * xblock;
          const uint8_t* b1 = t + 1 < MT ? b0 + unkb * xblock : nullptr;
          tile_loop<kLo>(wa, b0, b1, nb, kb0 == 0, ctile(p - p0, t), b1 ? ctile(p - p0, t + 1) : nullptr);
        }
      }
    }
    _tile_release();
    // 3. The sums, transposed back to activation rows.
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p * kTile;
      const int rows = static_cast<int>(N - n < kTile ? N - n : kTile);
      const __mmask16 row_mask = static_cast<__mmask16>((1u << rows) - 1);
      for (int64_t t = 0; t < MT; ++t) store_tile(ctile(p - p0, t), y, t, Mt, n, row_mask);
    }
  });
  return true;
}

}  // namespace

bool matmul_float(const OpCall& c, Exec& exec) {
  switch (c.src[0]->type) {
    case DType::F16: return matmul_f<DType::F16>(c, exec);
    case DType::BF16: return matmul_f<DType::BF16>(c, exec);
    default: return false;
  }
}

}  // namespace kestrel::cpu::amx

#elif defined(KESTREL_AMX_INT8_COMPILED)

namespace kestrel::cpu::amx {
bool matmul_float(const OpCall&, Exec&) { return false; }
}  // namespace kestrel::cpu::amx

#endif
