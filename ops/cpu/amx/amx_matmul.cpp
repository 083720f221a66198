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
// A thread decodes a group of 16-row weight panels at a time and runs every m-tile against
// each of them (amx_tiles.h, for_each_panel_group).
// Per (panel, m-tile) the block loop keeps the 16 x 16 float accumulators in 16 zmm
// registers: with them in memory the loop was bound by L1 store bandwidth (the tile
// stores plus two accumulator stores per row). The offset term `corr` does not depend on
// the tile product, so it runs as a second register pass over the blocks.
// Threads own fixed ranges of 16-row weight panels (ThreadPool::split), so which thread
// computes an output never changes its value.
#include "ops/cpu/amx/amx_matmul.h"

#include <cstdint>
#include <cstring>

#include "ops/cpu/amx/amx_tiles.h"

#if defined(KESTREL_AMX_INT8_COMPILED)
#include <cpuid.h>
#endif

namespace kestrel::cpu {

bool amx_supports(const OpCall& c) {
  if (c.op != OpId::matmul || c.n_src < 2 || !c.src[0] || !c.src[1] || !c.dst) return false;
  const Tensor& W = *c.src[0];
  if (W.type == DType::F16 || W.type == DType::BF16)
    return c.src[1]->type == DType::F32 && c.dst->type == DType::F32 && W.ne[0] > 0;
  const bool legacy = W.type == DType::Q4_0 || W.type == DType::Q5_0 || W.type == DType::Q8_0;
  const int64_t block = legacy ? kQK : W.type == DType::Q4_K || W.type == DType::Q6_K ? kQKK : 0;
  return block > 0 && c.src[1]->type == DType::F32 && c.dst->type == DType::F32 && W.ne[0] > 0 &&
         W.ne[0] % block == 0;
}

#if defined(KESTREL_AMX_INT8_COMPILED)

namespace amx {
namespace {

using mm::ActQ8;

template <DType T>
constexpr size_t kBlockBytes = T == DType::Q4_0 ? sizeof(BlockQ4_0) : T == DType::Q5_0 ? sizeof(BlockQ5_0)
                                                                                        : sizeof(BlockQ8_0);

// Weight rows [n, n + rows) (rows <= 16) -> wq: per block, a 16 x 32 A tile of codes
// (rows past `rows` are zero); dw: per block, the 16 rows' d_w.
template <DType T>
void decode_panel(const Tensor& W, int64_t n, int rows, int64_t nb, int8_t* wq, float* dw) {
  const char* row[kTile];
  for (int r = 0; r < rows; ++r) row[r] = W.row<const char>(n + r);
  // Two rows at a time, block by block: the weights are read as two sequential streams
  // (a block-major walk over 16 rows missed the hardware prefetcher), and each pair of
  // 32-byte stores fills one 64-byte line (one row alone left lines half written).
  for (int r0 = 0; r0 < kTile; r0 += 2) {
    for (int64_t b = 0; b < nb; ++b) {
      int8_t* tile = wq + b * kTileBytes;
      for (int r = r0; r < r0 + 2; ++r) {
        __m256i q = _mm256_setzero_si256();
        float d = 0.0f;
        if (r < rows) {
          const char* blk = row[r] + b * kBlockBytes<T>;
          uint16_t dh;
          std::memcpy(&dh, blk, 2);
          d = _cvtsh_ss(dh);
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
        }
        dw[b * kTile + r] = d;
        _mm256_store_si256(reinterpret_cast<__m256i*>(tile + r * kQK), q);
      }
    }
  }
}

// What the block loop reads for one (weight panel, m-tile) pair.
struct Operands {
  int64_t nb;
  const int8_t* wq;   // A tiles: nb x 512 bytes
  const float* dw;    // nb x 16 weight scales
  const int8_t* xq;   // B tiles: nb x 512 bytes
  const float* dx;    // nb x 16 activation scales
  const float* c8o;   // nb x 16: offset * c8
};

// out[r * 16 + m] = acc - corr for one (panel, m-tile); cbuf: two 16 x 16 int32 tiles.
// acc_r (weight row r; lanes: activation rows) += float(C[r]) * (d_w[r] * d_x) per block.
// The tile product of block b is issued before the float work of block b - 1 (tile
// registers are not renamed: alternating two sets lets the tile unit run ahead).
template <bool kCorr>
void tile_loop(const Operands& o, int32_t* cbuf, float* out) {
#define KESTREL_AMX_ZERO(r) __m512 acc##r = _mm512_setzero_ps();
  KESTREL_AMX_ROWS(KESTREL_AMX_ZERO)
#undef KESTREL_AMX_ZERO
  auto scale = [&](int64_t b, const int32_t* c) __attribute__((always_inline)) {
    // Block b + 4's B tile on its way to L1 (its 8 lines; past the end harmless: a
    // prefetch does not fault): 1.03-1.08x on the kernel at 512 rows.
    const char* next = reinterpret_cast<const char*>(o.xq + (b + 4) * kTileBytes);
    for (int l = 0; l < 8; ++l) _mm_prefetch(next + 64 * l, _MM_HINT_T0);
    const __m512 vdx = _mm512_load_ps(o.dx + b * kTile);
    const float* dw = o.dw + b * kTile;
#define KESTREL_AMX_SCALE(r)                                                   \
  acc##r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + kTile * r)), \
                           _mm512_mul_ps(_mm512_set1_ps(dw[r]), vdx), acc##r);
    KESTREL_AMX_ROWS(KESTREL_AMX_SCALE)
#undef KESTREL_AMX_SCALE
  };
  int32_t* c0 = cbuf;
  int32_t* c1 = cbuf + kCFloats;
  tile_product<0>(o.wq, o.xq, c0);
  int64_t b = 1;
  for (; b + 1 < o.nb; b += 2) {
    tile_product<1>(o.wq + b * kTileBytes, o.xq + b * kTileBytes, c1);
    scale(b - 1, c0);
    tile_product<0>(o.wq + (b + 1) * kTileBytes, o.xq + (b + 1) * kTileBytes, c0);
    scale(b, c1);
  }
  if (b < o.nb) {
    tile_product<1>(o.wq + b * kTileBytes, o.xq + b * kTileBytes, c1);
    scale(b - 1, c0);
    scale(b, c1);
  } else {
    scale(b - 1, c0);
  }
#define KESTREL_AMX_STORE(r) _mm512_store_ps(out + kTile * r, acc##r);
  KESTREL_AMX_ROWS(KESTREL_AMX_STORE)
#undef KESTREL_AMX_STORE
  if constexpr (kCorr) {
    // corr_r = fma(d_w[r], offset * c8, corr_r) over the blocks, then out = acc - corr.
#define KESTREL_AMX_ZERO(r) __m512 corr##r = _mm512_setzero_ps();
    KESTREL_AMX_ROWS(KESTREL_AMX_ZERO)
#undef KESTREL_AMX_ZERO
    for (int64_t k = 0; k < o.nb; ++k) {
      const __m512 vc8 = _mm512_load_ps(o.c8o + k * kTile);
      const float* dw = o.dw + k * kTile;
#define KESTREL_AMX_CORR(r) corr##r = _mm512_fmadd_ps(_mm512_set1_ps(dw[r]), vc8, corr##r);
      KESTREL_AMX_ROWS(KESTREL_AMX_CORR)
#undef KESTREL_AMX_CORR
    }
#define KESTREL_AMX_SUB(r) _mm512_store_ps(out + kTile * r, _mm512_sub_ps(_mm512_load_ps(out + kTile * r), corr##r));
    KESTREL_AMX_ROWS(KESTREL_AMX_SUB)
#undef KESTREL_AMX_SUB
  }
}

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
  // per thread a quantized row, the decoded weight panel, two C stores and the output tile.
  const size_t unb = static_cast<size_t>(nb);
  if (static_cast<uint64_t>(MT) > SIZE_MAX / 8 / (unb * (kTileBytes + 2 * kTile * sizeof(float)))) return false;
  const size_t xq_bytes = static_cast<size_t>(MT) * unb * kTileBytes;
  const size_t xh_bytes = round64(static_cast<size_t>(MT) * unb * kTile * sizeof(float));
  const size_t qrow_bytes = round64(unb * sizeof(ActQ8));
  const size_t wq_bytes = unb * kTileBytes, dw_bytes = round64(unb * kTile * sizeof(float));
  const size_t tile_f32 = kCFloats * sizeof(float);
  const size_t panel_bytes = wq_bytes + dw_bytes;
  const int group = panel_group(panel_bytes);
  const size_t per_thread = qrow_bytes + static_cast<size_t>(group) * panel_bytes + 3 * tile_f32;  // + 2 C stores, out
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
    char* panels = mine + qrow_bytes;  // group x (A tiles, d_w)
    int32_t* cbuf = reinterpret_cast<int32_t*>(panels + static_cast<size_t>(group) * panel_bytes);
    float* out = reinterpret_cast<float*>(cbuf + 2 * kCFloats);

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

    // 2. This thread's 16-row weight panels, decoded once a group, against every m-tile.
    auto wq = [&](int g) { return reinterpret_cast<int8_t*>(panels + static_cast<size_t>(g) * panel_bytes); };
    auto dw = [&](int g) { return reinterpret_cast<float*>(panels + static_cast<size_t>(g) * panel_bytes + wq_bytes); };
    for_each_panel_group(
        cfg, N, MT, group, ith, nth, [&](int g, int64_t n, int rows) { decode_panel<T>(W, n, rows, nb, wq(g), dw(g)); },
        [&](int g, int64_t n, int rows, int64_t t) {
          const size_t at = static_cast<size_t>(t) * unb;
          const Operands o{nb, wq(g), dw(g), xq + at * kTileBytes, dx + at * kTile, c8o + at * kTile};
          tile_loop<kCorr>(o, cbuf, out);
          store_tile(out, y, t, Mt, n, rows);
        });
  });
  return true;
}

}  // namespace
}  // namespace amx

bool amx_available() {
  // The tile unit, and the vector ISA this translation unit is compiled for: the avx512
  // variant's set plus VBMI (every AMX CPU so far has them; checked all the same).
  static const bool kVectorIsa = [] {
    unsigned a, b, c, d;
    const bool vbmi = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c >> 1) & 1;
    return vbmi && isa_runs_here(CpuIsa::avx512);
  }();
  return kVectorIsa && amx_state().int8_usable();
}

bool amx_bf16_available() {
#if defined(__AMX_BF16__)
  return amx_available() && amx_state().bf16_usable();
#else
  return false;
#endif
}

namespace {

bool amx_variant_run(const OpCall& call, Exec& exec) { return amx_matmul(call, exec); }

// The crossovers (bench_amx_matmul --batches 8 12 16 24 32 48, 1 and 2 threads, against the
// avx512 policy kernel in the same run, on a 2-core AMX Xeon): Q4_K from 24 rows (since its
// super-block totals, abc75f6: AMX at 16 0.90-1.13x, 24 1.06-1.31x, 32 1.35-1.65x, 48
// 1.51-1.94x on the TinyLlama shapes; the weight repack per call is its fixed cost); Q6_K
// from 32 (AMX at 24 0.85-1.01x, 32 1.17-1.36x, 512 2.86-3.15x); Q4_0 / Q5_0 / Q8_0 from 16 against the few-rows
// VNNI tile: the crossover depends on K (Qwen-0.5B's K = 896: AMX 0.86-1.40x at 12, 1.13-1.72x at
// 16; TinyLlama's K = 2048 / 5632: 0.69-0.85x at 12, 0.78-1.13x at 16, 0.85-1.25x at 24).
constexpr int32_t kMinRowsQ8 = 16, kMinRowsQ4K = 24, kMinRowsQ6K = 32;
// F16 / BF16 weights (split bf16 tiles, amx_matmul_bf16.cpp) against the avx512 GEMM:
// bench_amx_matmul --types f16 bf16 at 1 and 2 threads on the TinyLlama and Qwen-0.5B
// shapes; F16 (four tile products per block) wins from 8-32 rows by shape, BF16 (two)
// from 8-16.
constexpr int32_t kMinRowsF16 = 32, kMinRowsBF16 = 16;
// Their own bits group: each output summed in one order at any M, not the avx512 float
// kernels' order.
constexpr int32_t kBitsFloatAmx = 5;

// Named variants: 16 activation rows x 16 weight rows per tile; bits group 1 is that of
// the avx512 variants they equal (the Q4_0 / Q5_0 / Q8_0 decode and prompt tiles, the
// K-quant row kernels). Their policy rows start at the crossover; the table lists them
// ahead of the avx512 variants, so they are the policy's pick there when available.
constexpr MatmulVariant kAmxVariants[] = {
    {"q4_0_matmul__avx512_amx16x16", DType::Q4_0, kMinRowsQ8, kRowsUnbounded, &amx_available, &amx_variant_run, 1},
    {"q5_0_matmul__avx512_amx16x16", DType::Q5_0, kMinRowsQ8, kRowsUnbounded, &amx_available, &amx_variant_run, 1},
    {"q8_0_matmul__avx512_amx16x16", DType::Q8_0, kMinRowsQ8, kRowsUnbounded, &amx_available, &amx_variant_run, 1},
    {"q4_K_matmul__avx512_amx16x16", DType::Q4_K, kMinRowsQ4K, kRowsUnbounded, &amx_available, &amx_variant_run, 1},
    {"q6_K_matmul__avx512_amx16x16", DType::Q6_K, kMinRowsQ6K, kRowsUnbounded, &amx_available, &amx_variant_run, 1},
    {"f16_matmul__avx512_amx16x16", DType::F16, kMinRowsF16, kRowsUnbounded, &amx_bf16_available, &amx_variant_run,
     kBitsFloatAmx},
    {"bf16_matmul__avx512_amx16x16", DType::BF16, kMinRowsBF16, kRowsUnbounded, &amx_bf16_available,
     &amx_variant_run, kBitsFloatAmx},
};

}  // namespace

MatmulVariantList matmul_variants_amx() {
  return MatmulVariantList{kAmxVariants, static_cast<int>(sizeof(kAmxVariants) / sizeof(kAmxVariants[0]))};
}

bool amx_matmul(const OpCall& call, Exec& exec, const AmxState& state) {
  // The given state can only narrow the process's: a tile instruction without the
  // granted permission would fault.
  if (!state.int8_usable() || !amx_available() || !amx_supports(call)) return false;
  switch (call.src[0]->type) {
    case DType::F16:
    case DType::BF16: return state.bf16_usable() && amx_bf16_available() && amx::matmul_float(call, exec);
    case DType::Q4_0: return amx::matmul<DType::Q4_0>(call, exec);
    case DType::Q5_0: return amx::matmul<DType::Q5_0>(call, exec);
    case DType::Q8_0: return amx::matmul<DType::Q8_0>(call, exec);
    case DType::Q4_K: return amx::matmul_q4_K(call, exec);
    case DType::Q6_K: return amx::matmul_q6_K(call, exec);
    default: return false;
  }
}

#else  // built without the AMX flags (another architecture or compiler)

bool amx_available() { return false; }
bool amx_bf16_available() { return false; }
MatmulVariantList matmul_variants_amx() { return {}; }
bool amx_matmul(const OpCall&, Exec&, const AmxState&) { return false; }

#endif

bool amx_matmul(const OpCall& call, Exec& exec) { return amx_matmul(call, exec, amx_state()); }

int64_t amx_min_rows(DType w) {
  const MatmulVariantList l = matmul_variants_amx();
  for (int i = 0; i < l.n; ++i)
    if (l.v[i].wtype == w) return l.v[i].min_rows;
  return 0;
}

}  // namespace kestrel::cpu
