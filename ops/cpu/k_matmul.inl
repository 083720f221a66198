// CPU kernels: matmul and get_rows (see isa_body.inl for how this is compiled per ISA).
//
// matmul y[m][n] = sum_k W[n][k] * x[m][k] for every weight type:
//   1. Quantized W: the activation rows are quantized once per call into Exec scratch
//      (ActQ8 for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, Q8_K for the K-quants; rows split over the
//      threads), then a barrier.
//   2. Threads split the N output rows into fixed contiguous ranges (ThreadPool::split),
//      so each y value is computed by one thread in one order: results do not depend on
//      the thread count or timing.
//   3. Within its range a thread walks chunks of kNChunk weight rows (they stay in L2);
//      for each group of up to 4 activation rows (8 for the K-quants on AVX-512 VNNI) it runs the row kernel, which
//      decodes each weight block once and uses it for the whole group (Q4_K / Q6_K on
//      AVX-512 VNNI, groups of kPairMinRows+: the pair kernel on the group's rows, repacked
//      in pairs in step 1).
// x and y may be strided views with batch dims ne[2], ne[3] (flattened to Mt rows).
// Step 3 has several paths (row kernel, decode and prompt tiles, float tiles and GEMM);
// each is a named variant callable on its own at any Mt (k_matmul_variants.inl,
// ops/cpu/matmul_variants.h), and k_matmul below is the default policy choosing by Mt.
#include "ops/cpu/k_matmul_act.inl"
#include "ops/cpu/k_matmul_q.inl"
#include "ops/cpu/k_matmul_f.inl"
#include "ops/cpu/k_matmul_q_rows.inl"
#include "ops/cpu/k_matmul_q1.inl"
#include "ops/cpu/k_matmul_gemm.inl"
#if defined(KESTREL_HAVE_AMX) && defined(__AVX512F__)
#include "ops/cpu/amx/amx_matmul.h"
#endif

namespace kestrel::cpu::KESTREL_ISA_NS {
namespace mm {

// Row kernel: nb blocks (or K elements for float types) of one weight row against RA
// activation rows; res[r] = the dot product with row r.
using RowFn = void (*)(int64_t nb, const void* w, const void* const* a, float* res);

struct Kernels {
  RowFn fn[8];  // for RA = 1..8; fn[4..7] null where the group is 4 rows
  int group() const { return fn[7] ? 8 : 4; }
};

template <template <int> class K>
constexpr Kernels make_kernels() {
  return Kernels{{&K<1>::run, &K<2>::run, &K<3>::run, &K<4>::run}};
}
// Groups of up to 8 activation rows: kernels whose registers hold 8 rows'
// sums (the 512-bit K-quant kernels), so a weight super-block is decoded once
// per 8 rows (verifying 5..8 drafted tokens, batches of 5..8 sequences).
template <template <int> class K>
constexpr Kernels make_kernels8() {
  return Kernels{{&K<1>::run, &K<2>::run, &K<3>::run, &K<4>::run, &K<5>::run, &K<6>::run, &K<7>::run, &K<8>::run}};
}
template <int RA> struct KQ4_0 { static void run(int64_t n, const void* w, const void* const* a, float* r) { dot_q8w<RA, DType::Q4_0>(n, w, a, r); } };
template <int RA> struct KQ5_0 { static void run(int64_t n, const void* w, const void* const* a, float* r) { dot_q8w<RA, DType::Q5_0>(n, w, a, r); } };
template <int RA> struct KQ4_1 { static void run(int64_t n, const void* w, const void* const* a, float* r) { dot_q1w<RA, DType::Q4_1>(n, w, a, r); } };
template <int RA> struct KQ5_1 { static void run(int64_t n, const void* w, const void* const* a, float* r) { dot_q1w<RA, DType::Q5_1>(n, w, a, r); } };
template <int RA> struct KQ8_0 { static void run(int64_t n, const void* w, const void* const* a, float* r) { dot_q8w<RA, DType::Q8_0>(n, w, a, r); } };
template <int RA> struct KQ4_K {
  static void run(int64_t n, const void* w, const void* const* a, float* r) {
#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
    if constexpr (RA > 1) {  // the same bits as the ymm kernels (k_matmul_q_rows.inl)
      dot_q4K_z<RA>(n, w, a, r);
      return;
    }
#endif
#if defined(__AVX2__)
    if constexpr (RA == 4) {
      dot_q4K_4(n, w, a, r);
      return;
    }
#endif
    dot_q45K<RA, false>(n, w, a, r);
  }
};
#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
// Where the AMX tiles run, every Q4_K and Q6_K kernel of this variant sums an output in the
// super-block chain the tiles can give (kTotals in k_matmul_q_rows.inl), so that a row's
// result is the same at any batch size; elsewhere the 8-lane chains above (decided once per
// process: amx_available() does not change).
template <int RA> struct KQ4_KT { static void run(int64_t n, const void* w, const void* const* a, float* r) { dot_q4K_z<RA, true>(n, w, a, r); } };
template <int RA> struct KQ6_KT { static void run(int64_t n, const void* w, const void* const* a, float* r) { dot_q6K_z<RA, true>(n, w, a, r); } };
inline bool kquant_totals() { return amx_available(); }
#endif
template <int RA> struct KQ5_K { static void run(int64_t n, const void* w, const void* const* a, float* r) { dot_q45K<RA, true>(n, w, a, r); } };
template <int RA> struct KQ6_K {
  static void run(int64_t n, const void* w, const void* const* a, float* r) {
#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
    if constexpr (RA > 1) {
      dot_q6K_z<RA>(n, w, a, r);
      return;
    }
#endif
    dot_q6K<RA>(n, w, a, r);
  }
};
template <int RA> struct KF32 { static void run(int64_t n, const void* w, const void* const* a, float* r) { dot_float<RA, DType::F32>(n, w, a, r); } };
template <int RA> struct KF16 { static void run(int64_t n, const void* w, const void* const* a, float* r) { dot_float<RA, DType::F16>(n, w, a, r); } };
template <int RA> struct KBF16 { static void run(int64_t n, const void* w, const void* const* a, float* r) { dot_float<RA, DType::BF16>(n, w, a, r); } };

enum class Act { f32, q8, q8k };

// Prompt tile kernel for 1 or 2 weight rows x 4 quantized activation rows (x86 AVX2:
// dot_q8w_x4), or nullptr; hdr holds the group's per-block d_x and c8 lanes.
using X4Fn = void (*)(int64_t nb, const char* const* w, const int8_t* qs4, const float* hdr, float* res);

// Decode tile: one activation row x rows_n consecutive weight rows (dot_rows8 for
// Q4_0 / Q5_0, dot_rows8_q1 for Q4_1 / Q5_1, dot_rows4_q8 for Q8_0), or nullptr. next:
// where the next tile starts.
using RowsFn = void (*)(int64_t nb, const char* const* rows, const ActQ8* a, const char* next, float* res);

// Pair kernel: one weight row x np (1..4, or 1..8) pairs of repacked activation rows
// (ActQ8KPair), res[0 .. 2 np); bitwise the row kernel's results (dot_q4K_pairs,
// dot_q6K_pairs), or nullptr.
using PairFn = void (*)(int64_t nb, const void* w, const ActQ8KPair* const* ap, float* res);
// Groups of fewer rows take the row kernel: at 2 or 3 rows the pair kernel's per-super-block
// weight unpacking (8 vectors, for 2 pairs at most) costs more than it saves.
constexpr int kPairMinRows = 4;
// Where a type has pair kernels up to 8 pairs, prompt rows go in groups of this many: each
// weight super-block is unpacked once per 16 rows instead of 8 (the unpacking and scale
// decoding took about a fifth of the Q4_K prompt matmul at 8 rows).
constexpr int kPairGroup = 16;

struct TypeKernel {
  Act act;
  Kernels k;
  PairFn pairs[8] = {};  // np = 1..8 (pairs[4..7] null where a group of pairs is 4 at most)
  X4Fn x4[2] = {nullptr, nullptr};  // RB = 1, 2
  RowsFn rows = nullptr;
  int rows_n = 0;  // weight rows per decode tile (at most 8)
};

template <DType T>
inline void set_x4(TypeKernel* tk) {
#if defined(__AVX2__)
  if constexpr (kIsQ1<T>) {
    tk->x4[0] = &dot_q1w_x4<1, T>;
    tk->x4[1] = &dot_q1w_x4<2, T>;
    tk->rows = &dot_rows8_q1<T>;
    tk->rows_n = 8;
    return;
  } else {
    tk->x4[0] = &dot_q8w_x4<1, T>;
    tk->x4[1] = &dot_q8w_x4<2, T>;
  }
  if constexpr (kHasRows8<T>) {
    tk->rows = &dot_rows8<T>;
    tk->rows_n = 8;
  } else if constexpr (T == DType::Q8_0) {
    tk->rows = &dot_rows4_q8;
    tk->rows_n = 4;
  }
#else
  (void)tk;
#endif
}

// Activation rows per row-kernel group for weight type t (type_kernel's Kernels::group()).
constexpr int row_group(DType t) {
#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
  return t == DType::Q4_K || t == DType::Q6_K ? 8 : 4;
#else
  (void)t;
  return 4;
#endif
}

inline bool type_kernel(DType t, TypeKernel* out) {
  switch (t) {
    case DType::Q4_0: *out = {Act::q8, make_kernels<KQ4_0>()}; set_x4<DType::Q4_0>(out); return true;
    case DType::Q5_0: *out = {Act::q8, make_kernels<KQ5_0>()}; set_x4<DType::Q5_0>(out); return true;
    case DType::Q8_0: *out = {Act::q8, make_kernels<KQ8_0>()}; set_x4<DType::Q8_0>(out); return true;
    case DType::Q4_1: *out = {Act::q8, make_kernels<KQ4_1>()}; set_x4<DType::Q4_1>(out); return true;
    case DType::Q5_1: *out = {Act::q8, make_kernels<KQ5_1>()}; set_x4<DType::Q5_1>(out); return true;
#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
    case DType::Q4_K:
      if (kquant_totals())
        *out = {Act::q8k, make_kernels8<KQ4_KT>(),
                {&dot_q4K_pairs<1, true>, &dot_q4K_pairs<2, true>, &dot_q4K_pairs<3, true>, &dot_q4K_pairs<4, true>}};
      else
        *out = {Act::q8k, make_kernels8<KQ4_K>(),
                {&dot_q4K_pairs<1>, &dot_q4K_pairs<2>, &dot_q4K_pairs<3>, &dot_q4K_pairs<4>, &dot_q4K_pairs<5>,
                 &dot_q4K_pairs<6>, &dot_q4K_pairs<7>, &dot_q4K_pairs<8>}};
      return true;
    case DType::Q6_K:
      if (kquant_totals())
        *out = {Act::q8k, make_kernels8<KQ6_KT>(),
                {&dot_q6K_pairs<1, true>, &dot_q6K_pairs<2, true>, &dot_q6K_pairs<3, true>, &dot_q6K_pairs<4, true>}};
      else
        *out = {Act::q8k, make_kernels8<KQ6_K>(),
                {&dot_q6K_pairs<1>, &dot_q6K_pairs<2>, &dot_q6K_pairs<3>, &dot_q6K_pairs<4>}};
      return true;
#else
    case DType::Q4_K: *out = {Act::q8k, make_kernels<KQ4_K>()}; return true;
    case DType::Q6_K: *out = {Act::q8k, make_kernels<KQ6_K>()}; return true;
#endif
    case DType::Q5_K: *out = {Act::q8k, make_kernels<KQ5_K>()}; return true;
    case DType::F32: *out = {Act::f32, make_kernels<KF32>()}; return true;
    case DType::F16: *out = {Act::f32, make_kernels<KF16>()}; return true;
    case DType::BF16: *out = {Act::f32, make_kernels<KBF16>()}; return true;
    default: return false;
  }
}

// Flattened activation row r -> (i1, i2, i3) of a [.., ne1, ne2, ne3] tensor.
template <typename T>
inline T* row_at(const Tensor& t, int64_t r) {
  const int64_t i1 = r % t.ne[1], i23 = r / t.ne[1];
  return t.row<T>(i1, i23 % t.ne[2], i23 / t.ne[2]);
}

constexpr int64_t kNChunk = 16;

// Small-batch path for float weights (2 to kGemmMt - 1 activation rows, e.g. verifying a
// few drafted tokens; larger batches take matmul_float_gemm). K runs in chunks of kKC elements so
// a tile's 4 activation rows (4 x kKC floats, 8 KiB) stay in L1 while the thread's current
// panel of kNPanel weight rows (at most 96 KiB of F32 per chunk) stays in L2; without the
// chunks every fma's activation operand came from L2 and the loop was bound by L2
// bandwidth. y accumulates the chunks in order: each output's arithmetic does not depend
// on the tile it falls in or on the thread split, so results are reproducible.
constexpr int64_t kKC = 1024;
constexpr int64_t kNPanel = 48;

inline const TileKernels* float_tiles(DType t) {
  static constexpr TileKernels f32 = make_tiles<DType::F32>(), f16 = make_tiles<DType::F16>(),
                               bf16 = make_tiles<DType::BF16>();
  return t == DType::F32 ? &f32 : t == DType::F16 ? &f16 : t == DType::BF16 ? &bf16 : nullptr;
}

inline void matmul_float_rows(const Tensor& W, const Tensor& x, const Tensor& y, const TileKernels& tk, int64_t n0,
                              int64_t n1, int64_t Mt) {
  const int64_t K = W.ne[0];
  for (int64_t np = n0; np < n1; np += kNPanel) {
    const int64_t np1 = np + kNPanel < n1 ? np + kNPanel : n1;
    for (int64_t k0 = 0; k0 < K; k0 += kKC) {
      const int64_t k1 = k0 + kKC < K ? k0 + kKC : K;
      for (int64_t m = 0; m < Mt; m += 4) {
        const int ra = static_cast<int>(Mt - m < 4 ? Mt - m : 4);
        const float* xr[4];
        float* yr[4];
        for (int r = 0; r < ra; ++r) {
          xr[r] = row_at<const float>(x, m + r);
          yr[r] = row_at<float>(y, m + r);
        }
        for (int64_t n = np; n < np1; n += 3) {
          const int rb = static_cast<int>(np1 - n < 3 ? np1 - n : 3);
          const void* wr[3];
          for (int j = 0; j < rb; ++j) wr[j] = W.row<const char>(n + j);
          float out[4][3];
          tk.fn[ra - 1][rb - 1](k0, k1, wr, xr, out);
          for (int r = 0; r < ra; ++r)
            for (int j = 0; j < rb; ++j) {
              if (k0 == 0) yr[r][n + j] = out[r][j];
              else yr[r][n + j] += out[r][j];
            }
        }
      }
    }
  }
}

// The ways to compute a matmul (each a named variant, k_matmul_variants.inl). Each is
// correct at any number of activation rows; the default policy (k_matmul) picks one by
// the row count and weight type.
enum class Path {
  dot1,   // row kernel, one activation row at a time
  dot4,   // row kernel, groups of up to 4 activation rows (every type; the only path off x86)
  rows,   // decode tile for every activation row (Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 on AVX2+)
  x4,     // prompt tile per group of 4 rows, the decode tile for the rest (same types)
  ftile,  // float weights: K-chunked 4 x 3 dot-product tiles
  gemm,   // float weights: packed-panel GEMM
  vnni,   // few-rows tile, 4 weight x 4 activation rows (the same types on AVX-512 VNNI)
  i8mm,   // 8-bit matrix-multiply tile, 2 weight x 8 activation rows (Q4_0 / Q5_0 / Q8_0, K-quants; arm64 i8mm)
};

// The x4 prompt tile from this many activation rows (below: the decode tile only).
constexpr int64_t kX4MinRows = 4;

// Whether this ISA's table has the decode and prompt tiles for weight type t.
constexpr bool has_q8_tiles(DType t) {
#if defined(__AVX2__)
  return t == DType::Q4_0 || t == DType::Q5_0 || t == DType::Q8_0 || t == DType::Q4_1 || t == DType::Q5_1;
#else
  (void)t;
  return false;
#endif
}

template <Path P>
inline bool matmul_run(const OpCall& c, Exec& exec) {
  const Tensor& W = *c.src[0];
  const Tensor& x = *c.src[1];
  const Tensor& y = *c.dst;
  TypeKernel tk;
  if (!type_kernel(W.type, &tk)) return false;
  if constexpr (P == Path::rows || P == Path::x4) {
    if (!tk.rows || !tk.x4[0]) return false;
  }
  if constexpr (P == Path::ftile || P == Path::gemm) {
    if (tk.act != Act::f32) return false;
  }
  const int64_t K = W.ne[0], N = W.ne[1], Mt = x.ne[1] * x.ne[2] * x.ne[3];
  if (N == 0 || Mt == 0) return true;
  // Quantized activations: Mt rows of act_row bytes in scratch.
  size_t act_row = 0;
  if (tk.act == Act::q8) act_row = static_cast<size_t>(K / kQK) * sizeof(ActQ8);
  if (tk.act == Act::q8k) act_row = static_cast<size_t>(K / kQKK) * sizeof(BlockQ8_K);
  const int64_t nb = tk.act == Act::q8 ? K / kQK : tk.act == Act::q8k ? K / kQKK : K;
  // F16 weights, one activation row at a time, long rows (AVX-512): each activation row
  // as F16 (dot_f16x), 64 bytes holding its 1 / scale then the K values.
#if defined(__AVX512F__)
  const bool f16x = W.type == DType::F16 && K >= kF16xMinK && (P == Path::dot1 || (P == Path::dot4 && Mt == 1));
#else
  constexpr bool f16x = false;
#endif
  if (f16x) act_row = 64 + static_cast<size_t>((K * 2 + 63) / 64 * 64);
  // With a tile kernel, each full group of 4 rows also gets a header: per block the 4
  // rows' d_x then their c8 (8 floats), after the rows.
  // It also gets its rows' quants repacked block by block (4 x 32 bytes per block).
  const bool use_x4 = P == Path::x4 && Mt >= kX4MinRows;
  const size_t hdr_group = use_x4 ? static_cast<size_t>(nb) * 8 * sizeof(float) : 0;
  const size_t qs_group = use_x4 ? static_cast<size_t>(nb) * 4 * kQK : 0;
  // With a pair kernel (kPairMinRows+ rows), the rows also go repacked in pairs (an odd
  // last row paired with itself): nb ActQ8KPair per pair, after the rest.
  const bool use_pairs = P == Path::dot4 && tk.pairs[0] && Mt >= kPairMinRows;
  const size_t pair_bytes = use_pairs ? static_cast<size_t>(nb) * sizeof(ActQ8KPair) : 0;
  char* act = nullptr;
  float* hdr = nullptr;
  int8_t* qs4 = nullptr;
  ActQ8KPair* pairs = nullptr;
  if (act_row > 0 && K > 0) {
    if (static_cast<uint64_t>(Mt) > SIZE_MAX / 4 / (act_row + hdr_group + qs_group + pair_bytes)) return false;
    const size_t rows_bytes = act_row * static_cast<size_t>(Mt);
    const size_t hdr_bytes = hdr_group * static_cast<size_t>(Mt / 4);
    const size_t qs_at = (rows_bytes + hdr_bytes + 63) / 64 * 64;  // scratch is 64-byte aligned
    const size_t pairs_at = (qs_at + qs_group * static_cast<size_t>(Mt / 4) + 63) / 64 * 64;
    act = static_cast<char*>(exec.scratch(pairs_at + pair_bytes * static_cast<size_t>((Mt + 1) / 2)));
    if (!act) return false;
    if (use_x4) {
      hdr = reinterpret_cast<float*>(act + rows_bytes);  // rows_bytes is a multiple of 4
      qs4 = reinterpret_cast<int8_t*>(act + qs_at);
    }
    if (use_pairs) pairs = reinterpret_cast<ActQ8KPair*>(act + pairs_at);
  }
  // Small problems are not worth waking a second thread.
  const int64_t work = N * K * Mt;
  const int n_par = work < 64 * 1024 ? 1 : static_cast<int>(N < exec.n_threads() ? N : exec.n_threads());
  float* panels = nullptr;
  if constexpr (P == Path::gemm) {
    panels = static_cast<float*>(exec.scratch(kGemmPanelFloats * sizeof(float) * static_cast<size_t>(n_par)));
    if (!panels) return false;
  }
  exec.parallel(n_par, [&](int ith, int nth) {
    if (act) {
      // Whole groups of 4 rows per thread, so a group's header is written by the thread
      // that quantized its rows.
      int64_t g0, g1;
      ThreadPool::split((Mt + 3) / 4, ith, nth, &g0, &g1);
      const int64_t r0 = 4 * g0, r1 = 4 * g1 < Mt ? 4 * g1 : Mt;
      for (int64_t r = r0; r < r1; ++r) {
        const float* xr = row_at<const float>(x, r);
#if defined(__AVX512F__)
        if (f16x) {
          const float inv = act_row_f16(xr, K, reinterpret_cast<uint16_t*>(act + r * act_row + 64));
          std::memcpy(act + r * act_row, &inv, sizeof(inv));
          continue;
        }
#endif
        if (tk.act == Act::q8) quantize_act_q8(xr, reinterpret_cast<ActQ8*>(act + r * act_row), K);
        else quantize_act_q8K(xr, reinterpret_cast<BlockQ8_K*>(act + r * act_row), K);
      }
      if (pairs)  // r0 is even: the thread's pairs are its own rows
        for (int64_t r = r0; r < r1; r += 2) {
          const BlockQ8_K* q0 = reinterpret_cast<const BlockQ8_K*>(act + r * act_row);
          const BlockQ8_K* q1 = r + 1 < Mt ? reinterpret_cast<const BlockQ8_K*>(act + (r + 1) * act_row) : q0;
          pack_q8k_pair(W.type, q0, q1, nb, pairs + (r / 2) * nb);
        }
      if (hdr)
        for (int64_t g = g0; g < g1 && 4 * g + 4 <= Mt; ++g) {
          const ActQ8* rows = reinterpret_cast<const ActQ8*>(act + 4 * g * act_row);
          const size_t stride = act_row / sizeof(ActQ8);
          float* h = hdr + g * nb * 8;
          int8_t* q = qs4 + g * nb * 4 * kQK;
          for (int64_t b = 0; b < nb; ++b)
            for (int r = 0; r < 4; ++r) {
              h[8 * b + r] = rows[r * stride + b].d;
              h[8 * b + 4 + r] = rows[r * stride + b].c8;
              std::memcpy(q + (4 * b + r) * kQK, rows[r * stride + b].qs, kQK);
            }
        }
      if (nth > 1) exec.pool().barrier();
    }
    int64_t n0, n1;
    ThreadPool::split(N, ith, nth, &n0, &n1);
    if constexpr (P == Path::gemm) {
      float* panel = panels + kGemmPanelFloats * ith;
      auto xrow = [&](int64_t r) { return row_at<const float>(x, r); };
      auto yrow = [&](int64_t r) { return row_at<float>(y, r); };
      if (W.type == DType::F32) matmul_float_gemm<DType::F32>(W, xrow, yrow, n0, n1, Mt, panel);
      else if (W.type == DType::F16) matmul_float_gemm<DType::F16>(W, xrow, yrow, n0, n1, Mt, panel);
      else matmul_float_gemm<DType::BF16>(W, xrow, yrow, n0, n1, Mt, panel);
      return;
    } else if constexpr (P == Path::ftile) {
      matmul_float_rows(W, x, y, *float_tiles(W.type), n0, n1, Mt);
      return;
    }
    // Activation rows per group: the row kernel serves 1 to 4 (or 8) at once, the pair
    // kernels up to 16 where they go to 8 pairs (groups of 1..3 rows left over take the row
    // kernel; a row's bits do not depend on its group).
    const int64_t kGroup = P == Path::dot1 ? 1 : pairs && tk.pairs[7] ? kPairGroup : tk.k.group();
    for (int64_t nc = n0; nc < n1; nc += kNChunk) {
      const int64_t nc1 = nc + kNChunk < n1 ? nc + kNChunk : n1;
      for (int64_t m = 0; m < Mt; m += kGroup) {
        const int ra = static_cast<int>(Mt - m < kGroup ? Mt - m : kGroup);
        const void* a[kPairGroup];
        float* yr[kPairGroup];
        for (int r = 0; r < ra; ++r) {
          a[r] = act ? static_cast<const void*>(act + (m + r) * act_row) : row_at<const float>(x, m + r);
          yr[r] = row_at<float>(y, m + r);
        }
        int64_t n = nc;
        if (P == Path::x4 && ra == 4 && hdr) {
          const int8_t* q4 = qs4 + (m / 4) * nb * 4 * kQK;
          const float* h = hdr + (m / 4) * nb * 8;
          for (; n < nc1; n += 2) {
            const int rb = nc1 - n < 2 ? 1 : 2;
            const char* wr[2] = {W.row<const char>(n), W.row<const char>(n + rb - 1)};
            float res[8];
            tk.x4[rb - 1](nb, wr, q4, h, res);
            for (int j = 0; j < rb; ++j)
              for (int r = 0; r < 4; ++r) yr[r][n + j] = res[4 * j + r];
          }
        }
        if ((P == Path::rows || P == Path::x4) && n < nc1) {
          // Rows outside a full group of 4 go one by one through the decode tile (tails
          // repeat their last row). Its float operations per output equal the x4 tile's,
          // so a result depends neither on where the thread ranges fall nor on the batch.
          const int64_t tn = tk.rows_n;
          for (int r = 0; r < ra; ++r)
            for (int64_t nt = n; nt < nc1; nt += tn) {
              const int64_t rb = nc1 - nt < tn ? nc1 - nt : tn;
              const char* wr[8];
              for (int64_t j = 0; j < tn; ++j) wr[j] = W.row<const char>(nt + (j < rb ? j : rb - 1));
              float res[8];
              const char* next = static_cast<const char*>(W.data) + (nt + tn) * W.nb[1];
              tk.rows(nb, wr, static_cast<const ActQ8*>(a[r]), next, res);
              for (int64_t j = 0; j < rb; ++j) yr[r][nt + j] = res[j];
            }
          n = nc1;
        }
#if defined(__AVX512F__)
        if (f16x) {  // one row per group here (dot1, or dot4 at one row)
          const char* ar = static_cast<const char*>(a[0]);
          float inv;
          std::memcpy(&inv, ar, sizeof(inv));
          for (; n < nc1; ++n)
            yr[0][n] = dot_f16x(K, W.row<const char>(n), reinterpret_cast<const uint16_t*>(ar + 64)) * inv;
        }
#endif
        if (pairs && ra >= kPairMinRows) {  // m is a multiple of the group (8 or 16): pairs from m / 2
          const int np = (ra + 1) / 2;
          const ActQ8KPair* ap[kPairGroup / 2];
          for (int p = 0; p < np; ++p) ap[p] = pairs + (m / 2 + p) * nb;
          for (; n < nc1; ++n) {
            float res[kPairGroup];
            tk.pairs[np - 1](nb, W.row<const char>(n), ap, res);
            for (int r = 0; r < ra; ++r) yr[r][n] = res[r];
          }
        }
        if (n < nc1) {  // groups over 8 rows went whole through the pair kernel above
          const RowFn fn = tk.k.fn[ra - 1];
          for (; n < nc1; ++n) {
            float res[8];
            fn(nb, W.row<const char>(n), a, res);
            for (int r = 0; r < ra; ++r) yr[r][n] = res[r];
          }
        }
      }
    }
  });
  return true;
}

}  // namespace mm
}  // namespace kestrel::cpu::KESTREL_ISA_NS

#include "ops/cpu/k_matmul_q_vnni.inl"
#include "ops/cpu/k_matmul_q_i8mm.inl"

namespace kestrel::cpu::KESTREL_ISA_NS {
namespace mm {

// The default policy (the thresholds the variant table's row ranges repeat): float weights
// take the row kernel for one activation row, the 4 x 3 tiles below kGemmMt rows and the
// GEMM from there; Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 with tiles take the decode tile below
// kX4MinRows rows and the prompt tile from there (with AVX-512 VNNI: the few-rows tile from
// kVnniMinRows, AMX where it starts; with arm64 i8mm, Q4_0 / Q5_0 / Q8_0 and the K-quants the i8mm tile from
// kI8mmMinRows); every other case the row kernel in groups of 4.
inline bool k_matmul(const OpCall& c, Exec& exec) {
  const DType t = c.src[0]->type;
  const int64_t Mt = c.src[1]->ne[1] * c.src[1]->ne[2] * c.src[1]->ne[3];
#if defined(KESTREL_HAVE_AMX) && defined(__AVX512F__)
  // AMX tiles (ops/cpu/amx; the variant table lists them ahead of this ISA's own, rows
  // from amx_min_rows()) when this process may use them: for quantized weights the same
  // bits as the paths below, for float weights bf16x3 tiles (their own bits group).
  if (amx_min_rows(t) > 0 && Mt >= amx_min_rows(t) && amx_available() && amx_matmul(c, exec)) return true;
#endif
  if (t == DType::F32 || t == DType::F16 || t == DType::BF16) {
    if (Mt >= kGemmMt) return matmul_run<Path::gemm>(c, exec);
    if (Mt > 1) return matmul_run<Path::ftile>(c, exec);
    return matmul_run<Path::dot4>(c, exec);
  }
  if (has_vnni_tiles(t) && Mt >= kVnniMinRows && matmul_vnni(c, exec)) return true;
  if (has_i8mm_tiles(t) && Mt >= kI8mmMinRows && matmul_i8mm(c, exec)) return true;
  if (has_q8_tiles(t)) return Mt >= kX4MinRows ? matmul_run<Path::x4>(c, exec) : matmul_run<Path::rows>(c, exec);
  return matmul_run<Path::dot4>(c, exec);
}

// get_rows: dst row m = table row ids[m] as F32; rows split over threads. An id outside
// [0, N) yields zeros, as in ops/ref (nothing is read out of bounds).
inline bool k_get_rows(const OpCall& c, Exec& exec) {
  const Tensor& table = *c.src[0];
  const Tensor& ids = *c.src[1];
  const Tensor& dst = *c.dst;
  const int64_t K = table.ne[0], N = table.ne[1], M = ids.ne[0];
  const int bs = dtype_block_size(table.type);
  const size_t ts = dtype_type_size(table.type);
  const int n_par = M * K < 16 * 1024 ? 1 : exec.n_threads();
  exec.parallel(n_par, [&](int ith, int nth) {
    int64_t m0, m1;
    ThreadPool::split(M, ith, nth, &m0, &m1);
    for (int64_t m = m0; m < m1; ++m) {
      int32_t id;
      std::memcpy(&id, static_cast<const char*>(ids.data) + m * ids.nb[0], sizeof(id));
      float* out = dst.row<float>(m);
      if (id < 0 || id >= N) {
        std::memset(out, 0, static_cast<size_t>(K) * sizeof(float));
        continue;
      }
      const char* row = table.row<const char>(id);
      if (table.type == DType::F16 || table.type == DType::BF16) {
        int64_t k = 0;
        for (; k + kLanes <= K; k += kLanes)
          (table.type == DType::F16 ? load_w<DType::F16>(row, k) : load_w<DType::BF16>(row, k)).store_unaligned(out + k);
        if (k < K) ref::dequantize_row(table.type, row + k * 2, out + k, K - k);
      } else {
        // Block by block keeps the converted data in L1 while it is written.
        for (int64_t k0 = 0; k0 < K; k0 += kQKK) {
          const int64_t n = K - k0 < kQKK ? K - k0 : kQKK;
          ref::dequantize_row(table.type, row + (k0 / bs) * ts, out + k0, n);
        }
      }
    }
  });
  return true;
}

inline bool supports_weight_table(const OpCall& c) {
  TypeKernel tk;
  return type_kernel(c.src[0]->type, &tk);
}

}  // namespace mm

inline void register_matmul(KernelTable& table) {
  table[OpId::matmul] = {&mm::k_matmul, &mm::supports_weight_table};
  table[OpId::get_rows] = {&mm::k_get_rows, &mm::supports_weight_table};
}

}  // namespace kestrel::cpu::KESTREL_ISA_NS

#include "ops/cpu/k_matmul_variants.inl"
