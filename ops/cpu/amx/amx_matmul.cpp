// AMX-INT8 matmul for Q4_0 / Q5_0 / Q8_0 weights (see amx_matmul.h for the contract).
//
// Layout (tdpbssd computes C[16][16] int32 += A[16][64 bytes] . B[16][64 bytes] with B in
// 4-byte column groups; here one block per product, so A is 16 x 32 and B 8 x 64):
//   A  16 weight rows x one block of 32 int8 codes, the decoded weights (Q4_0 / Q5_0:
//      unsigned codes 0..15 / 0..31, the offset folded into `corr` as the avx512 path
//      does; Q8_0: the stored signed codes). Decoded once per panel of 16 rows.
//   B  one block of 16 activation rows: B[kk][4 m + i] = q_m[4 kk + i], the ActQ8 codes
//      of row m regrouped once per call.
//   C  16 weight rows x 16 activation rows of exact block sums, stored to L1 and scaled
//      in AVX-512: acc[n][m] = fma(float(C), d_w[n] * d_x[m], acc), corr[n][m] =
//      fma(d_w[n], offset * c8[m], corr), the same operations per output as the avx512
//      tiles (dot_q8w_x4 / dot_rows8), hence the same bits.
// A thread holds 2 weight panels x 2 activation tiles (tiles 0-1 A, 2-3 B, 4-7 C) per
// block; its float accumulators (4 x 16 x 16 x 2) stay in L1 over the block loop.
// Threads own fixed ranges of 16-row weight panels (ThreadPool::split), so which thread
// computes an output never changes its value.
#include "ops/cpu/amx/amx_matmul.h"

#include <cstdint>
#include <cstring>

#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__) && defined(__F16C__)
#define KESTREL_AMX_INT8_COMPILED 1
#include <immintrin.h>
// The avx512 path's activation quantizer, compiled here in its own namespace: the same
// code and flags give the same ActQ8 values.
#define KESTREL_ISA_NS amx
#include "ops/cpu/k_matmul_act.inl"
#undef KESTREL_ISA_NS
#endif

namespace kestrel::cpu {

bool amx_supports(const OpCall& c) {
  if (c.op != OpId::matmul || c.n_src < 2 || !c.src[0] || !c.src[1] || !c.dst) return false;
  const Tensor& W = *c.src[0];
  const bool type_ok = W.type == DType::Q4_0 || W.type == DType::Q5_0 || W.type == DType::Q8_0;
  return type_ok && c.src[1]->type == DType::F32 && c.dst->type == DType::F32 && W.ne[0] > 0 &&
         W.ne[0] % kQK == 0;
}

#if defined(KESTREL_AMX_INT8_COMPILED)

namespace amx {
namespace {

using mm::ActQ8;

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

TileConfig tile_config() {
  TileConfig c;
  for (int t = 0; t < 2; ++t) c.rows[t] = 16, c.colsb[t] = 32;  // A: weights
  for (int t = 2; t < 4; ++t) c.rows[t] = 8, c.colsb[t] = 64;   // B: activations
  for (int t = 4; t < 8; ++t) c.rows[t] = 16, c.colsb[t] = 64;  // C: int32 sums
  return c;
}

template <DType T>
constexpr size_t kBlockBytes = T == DType::Q4_0 ? sizeof(BlockQ4_0) : T == DType::Q5_0 ? sizeof(BlockQ5_0)
                                                                                        : sizeof(BlockQ8_0);

// Weight rows [n, n + rows) (rows <= 16) -> wq: per block, a 16 x 32 A tile of codes
// (rows past `rows` are zero); dw: per block, the 16 rows' d_w.
template <DType T>
void decode_panel(const Tensor& W, int64_t n, int rows, int64_t nb, int8_t* wq, float* dw) {
  for (int r = 0; r < kTile; ++r) {
    if (r >= rows) {
      for (int64_t b = 0; b < nb; ++b) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(wq + (b * kTile + r) * kQK), _mm256_setzero_si256());
        dw[b * kTile + r] = 0.0f;
      }
      continue;
    }
    const char* row = W.row<const char>(n + r);
    for (int64_t b = 0; b < nb; ++b) {
      const char* blk = row + b * kBlockBytes<T>;
      uint16_t dh;
      std::memcpy(&dh, blk, 2);
      dw[b * kTile + r] = _cvtsh_ss(dh);
      __m256i q;
      if constexpr (T == DType::Q8_0) {
        q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
      } else {
        // Element j in the low nibble of byte j, element j + 16 in its high nibble.
        const __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + (T == DType::Q4_0 ? 2 : 6)));
        q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(p, 4), p), _mm256_set1_epi8(0x0F));
        if constexpr (T == DType::Q5_0) {
          uint32_t qh;  // bit j: the fifth bit of element j
          std::memcpy(&qh, blk + 2, 4);
          q = _mm256_or_si256(q, _mm256_maskz_mov_epi8(qh, _mm256_set1_epi8(0x10)));
        }
      }
      _mm256_store_si256(reinterpret_cast<__m256i*>(wq + (b * kTile + r) * kQK), q);
    }
  }
}

// One C tile's block sums into its accumulators (rows: weight n, lanes: activation m).
template <bool kCorr>
inline void scale_tile(const int32_t* c, const float* dw, const float* dx, const float* c8o, float* acc,
                       float* corr) {
  const __m512 vdx = _mm512_load_ps(dx);
  const __m512 vc8 = kCorr ? _mm512_load_ps(c8o) : _mm512_setzero_ps();
  for (int r = 0; r < kTile; ++r) {
    const __m512 w = _mm512_set1_ps(dw[r]);
    // maskz with every lane set: vcvtdq2ps itself; the unmasked intrinsic's undefined
    // pass-through trips GCC 12's -Wmaybe-uninitialized.
    const __m512 s = _mm512_maskz_cvtepi32_ps(0xFFFF, _mm512_load_si512(c + kTile * r));
    _mm512_store_ps(acc + kTile * r, _mm512_fmadd_ps(s, _mm512_mul_ps(w, vdx), _mm512_load_ps(acc + kTile * r)));
    if constexpr (kCorr)
      _mm512_store_ps(corr + kTile * r, _mm512_fmadd_ps(w, vc8, _mm512_load_ps(corr + kTile * r)));
  }
}

// What the block loop reads: NA (1, 2) weight panels and MB (1, 2) activation tiles.
struct Operands {
  int64_t nb;
  const int8_t* wq[2];  // A tiles of panel i: nb x 512 bytes
  const float* dw[2];   // nb x 16
  const int8_t* xq[2];  // B tiles of activation tile j: nb x 512 bytes
  const float* dx[2];   // nb x 16
  const float* c8o[2];  // nb x 16: offset * c8
};

// acc / corr / cbuf: C tile (i, j) at (2 i + j) * 256.
template <int NA, int MB, bool kCorr>
void block_loop(const Operands& o, float* acc, float* corr, int32_t* cbuf) {
  for (int64_t b = 0; b < o.nb; ++b) {
    const size_t at = static_cast<size_t>(b) * kTileBytes;
    _tile_loadd(0, o.wq[0] + at, kQK);
    if constexpr (NA == 2) _tile_loadd(1, o.wq[1] + at, kQK);
    _tile_loadd(2, o.xq[0] + at, 64);
    if constexpr (MB == 2) _tile_loadd(3, o.xq[1] + at, 64);
    _tile_zero(4);
    _tile_dpbssd(4, 0, 2);
    if constexpr (MB == 2) {
      _tile_zero(5);
      _tile_dpbssd(5, 0, 3);
    }
    if constexpr (NA == 2) {
      _tile_zero(6);
      _tile_dpbssd(6, 1, 2);
      if constexpr (MB == 2) {
        _tile_zero(7);
        _tile_dpbssd(7, 1, 3);
      }
    }
    _tile_stored(4, cbuf, 64);
    if constexpr (MB == 2) _tile_stored(5, cbuf + kCFloats, 64);
    if constexpr (NA == 2) {
      _tile_stored(6, cbuf + 2 * kCFloats, 64);
      if constexpr (MB == 2) _tile_stored(7, cbuf + 3 * kCFloats, 64);
    }
    const size_t h = static_cast<size_t>(b) * kTile;
    for (int i = 0; i < NA; ++i)
      for (int j = 0; j < MB; ++j) {
        const size_t t = (2 * i + j) * kCFloats;
        scale_tile<kCorr>(cbuf + t, o.dw[i] + h, o.dx[j] + h, o.c8o[j] + h, acc + t, corr + t);
      }
  }
}

template <bool kCorr>
void run_block_loop(int na, int mb, const Operands& o, float* acc, float* corr, int32_t* cbuf) {
  if (na == 2) {
    if (mb == 2) block_loop<2, 2, kCorr>(o, acc, corr, cbuf);
    else block_loop<2, 1, kCorr>(o, acc, corr, cbuf);
  } else {
    if (mb == 2) block_loop<1, 2, kCorr>(o, acc, corr, cbuf);
    else block_loop<1, 1, kCorr>(o, acc, corr, cbuf);
  }
}

// Flattened activation row r -> its row of a [.., ne1, ne2, ne3] view.
template <typename E>
inline E* row_at(const Tensor& t, int64_t r) {
  const int64_t i1 = r % t.ne[1], i23 = r / t.ne[1];
  return t.row<E>(i1, i23 % t.ne[2], i23 / t.ne[2]);
}

inline size_t round64(size_t n) { return (n + 63) / 64 * 64; }

template <DType T>
bool matmul(const OpCall& c, Exec& exec) {
  constexpr bool kCorr = T != DType::Q8_0;
  // The code offset (8 or 16) in units of c8 = 8 * d_x * sum(q_x), as the avx512 path.
  constexpr float kOffsetC8 = T == DType::Q4_0 ? 1.0f : 2.0f;
  const Tensor& W = *c.src[0];
  const Tensor& x = *c.src[1];
  const Tensor& y = *c.dst;
  const int64_t K = W.ne[0], N = W.ne[1], Mt = x.ne[1] * x.ne[2] * x.ne[3];
  if (N == 0 || Mt == 0) return true;
  const int64_t nb = K / kQK, MT = (Mt + kTile - 1) / kTile, NT = (N + kTile - 1) / kTile;
  // Scratch: the activation tiles (B tiles, d_x, offset * c8 per m-tile and block), then
  // per thread a quantized row, two decoded weight panels, accumulators and C stores.
  const size_t unb = static_cast<size_t>(nb);
  if (static_cast<uint64_t>(MT) > SIZE_MAX / 8 / (unb * (kTileBytes + 2 * kTile * sizeof(float)))) return false;
  const size_t xq_bytes = static_cast<size_t>(MT) * unb * kTileBytes;
  const size_t xh_bytes = round64(static_cast<size_t>(MT) * unb * kTile * sizeof(float));
  const size_t qrow_bytes = round64(unb * sizeof(ActQ8));
  const size_t wq_bytes = 2 * unb * kTileBytes, dw_bytes = round64(2 * unb * kTile * sizeof(float));
  const size_t acc_bytes = 4 * kCFloats * sizeof(float);
  const size_t per_thread = qrow_bytes + wq_bytes + dw_bytes + 3 * acc_bytes;
  const int64_t work = N * K * Mt;
  const int n_par = work < 64 * 1024 ? 1 : static_cast<int>(NT < exec.n_threads() ? NT : exec.n_threads());
  char* base = static_cast<char*>(exec.scratch(xq_bytes + 2 * xh_bytes + per_thread * static_cast<size_t>(n_par)));
  if (!base) return false;
  int8_t* xq = reinterpret_cast<int8_t*>(base);
  float* dx = reinterpret_cast<float*>(base + xq_bytes);
  float* c8o = reinterpret_cast<float*>(base + xq_bytes + xh_bytes);
  char* thread_base = base + xq_bytes + 2 * xh_bytes;
  const TileConfig cfg = tile_config();

  exec.parallel(n_par, [&](int ith, int nth) {
    char* mine = thread_base + per_thread * static_cast<size_t>(ith);
    ActQ8* qrow = reinterpret_cast<ActQ8*>(mine);
    int8_t* wq = reinterpret_cast<int8_t*>(mine + qrow_bytes);
    float* dw = reinterpret_cast<float*>(mine + qrow_bytes + wq_bytes);
    float* acc = reinterpret_cast<float*>(mine + qrow_bytes + wq_bytes + dw_bytes);
    float* corr = acc + 4 * kCFloats;
    int32_t* cbuf = reinterpret_cast<int32_t*>(corr + 4 * kCFloats);

    // 1. Activation rows of whole m-tiles per thread: quantize, regroup into B tiles;
    //    the rows past Mt of the last tile are zero (their outputs are never written).
    int64_t t0, t1;
    ThreadPool::split(MT, ith, nth, &t0, &t1);
    for (int64_t r = t0 * kTile; r < t1 * kTile; ++r) {
      const int64_t t = r / kTile, lane = r % kTile;
      int8_t* tiles = xq + static_cast<size_t>(t) * unb * kTileBytes;
      float* tdx = dx + static_cast<size_t>(t) * unb * kTile;
      float* tc8 = c8o + static_cast<size_t>(t) * unb * kTile;
      if (r < Mt) mm::quantize_act_q8(row_at<const float>(x, r), qrow, K);
      for (int64_t b = 0; b < nb; ++b) {
        int8_t* bt = tiles + b * kTileBytes + 4 * lane;
        if (r < Mt) {
          for (int kk = 0; kk < kQK / 4; ++kk) std::memcpy(bt + 64 * kk, qrow[b].qs + 4 * kk, 4);
          tdx[b * kTile + lane] = qrow[b].d;
          tc8[b * kTile + lane] = kOffsetC8 * qrow[b].c8;
        } else {
          for (int kk = 0; kk < kQK / 4; ++kk) std::memset(bt + 64 * kk, 0, 4);
          tdx[b * kTile + lane] = 0.0f;
          tc8[b * kTile + lane] = 0.0f;
        }
      }
    }
    if (nth > 1) exec.pool().barrier();

    // 2. This thread's 16-row weight panels, two at a time, against every m-tile pair.
    _tile_loadconfig(&cfg);
    int64_t p0, p1;
    ThreadPool::split(NT, ith, nth, &p0, &p1);
    for (int64_t p = p0; p < p1; p += 2) {
      const int na = p1 - p >= 2 ? 2 : 1;
      Operands o{};
      o.nb = nb;
      for (int i = 0; i < na; ++i) {
        const int64_t n = (p + i) * kTile;
        const int rows = static_cast<int>(N - n < kTile ? N - n : kTile);
        int8_t* pq = wq + static_cast<size_t>(i) * unb * kTileBytes;
        float* pd = dw + static_cast<size_t>(i) * unb * kTile;
        decode_panel<T>(W, n, rows, nb, pq, pd);
        o.wq[i] = pq;
        o.dw[i] = pd;
      }
      for (int64_t t = 0; t < MT; t += 2) {
        const int mb = MT - t >= 2 ? 2 : 1;
        for (int j = 0; j < mb; ++j) {
          o.xq[j] = xq + static_cast<size_t>(t + j) * unb * kTileBytes;
          o.dx[j] = dx + static_cast<size_t>(t + j) * unb * kTile;
          o.c8o[j] = c8o + static_cast<size_t>(t + j) * unb * kTile;
        }
        std::memset(acc, 0, 2 * acc_bytes);  // acc and corr
        run_block_loop<kCorr>(na, mb, o, acc, corr, cbuf);
        // y[m][n] = acc - corr, C tiles transposed back to activation rows.
        for (int j = 0; j < mb; ++j)
          for (int lane = 0; lane < kTile; ++lane) {
            const int64_t m = (t + j) * kTile + lane;
            if (m >= Mt) break;
            float* yr = row_at<float>(y, m);
            for (int i = 0; i < na; ++i) {
              const int64_t n = (p + i) * kTile;
              const size_t ct = (2 * i + j) * kCFloats;
              for (int r = 0; r < kTile && n + r < N; ++r)
                yr[n + r] = acc[ct + kTile * r + lane] - corr[ct + kTile * r + lane];
            }
          }
      }
    }
    _tile_release();
  });
  return true;
}

}  // namespace
}  // namespace amx

bool amx_available() { return amx_state().int8_usable(); }

bool amx_matmul(const OpCall& call, Exec& exec, const AmxState& state) {
  // The given state can only narrow the process's: a tile instruction without the
  // granted permission would fault.
  if (!state.int8_usable() || !amx_available() || !amx_supports(call)) return false;
  switch (call.src[0]->type) {
    case DType::Q4_0: return amx::matmul<DType::Q4_0>(call, exec);
    case DType::Q5_0: return amx::matmul<DType::Q5_0>(call, exec);
    case DType::Q8_0: return amx::matmul<DType::Q8_0>(call, exec);
    default: return false;
  }
}

#else  // built without the AMX flags (another architecture or compiler)

bool amx_available() { return false; }
bool amx_matmul(const OpCall&, Exec&, const AmxState&) { return false; }

#endif

bool amx_matmul(const OpCall& call, Exec& exec) { return amx_matmul(call, exec, amx_state()); }

}  // namespace kestrel::cpu
