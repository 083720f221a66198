// CPU matmul, part 5: the prompt path for float weights (F32 / F16 / BF16) at kGemmMt or
// more activation rows (included by k_matmul.inl).
//
// Outer-product blocking, as in a BLAS GEMM: each thread packs kGemmNR weight rows x kGemmKC
// elements of its output range into a panel of floats laid out k-major (dst[k][j]; F16 and
// BF16 widened on the way), so the panel (16 KiB on AVX2) stays in L1. A micro-tile then runs
// kGemmMR activation rows against the panel: per k, kGemmNV vector loads of the panel, one
// broadcast per activation row, and kGemmMR x kGemmNV fmas into accumulators that hold whole
// output vectors, so there is no horizontal sum and each output is stored once per K chunk.
// The dot-product tiles of k_matmul_f.inl needed a horizontal sum of 12 accumulators per
// 4 x 3 outputs per chunk and converted each F16 weight vector once per 4 activation rows.
//
// Arithmetic per output: within a K chunk one fma per k in k order into one float lane, then
// y = chunk sum (first chunk) or y += chunk sum. It depends neither on the tile an output
// falls in nor on the thread split nor on the batch size (for batches of kGemmMt+ rows), so
// results are reproducible. Error: a float sum of kGemmKC products per chunk, then of the
// chunks; measured worst relative RMS error vs ref in test_matmul (printed by the test).
namespace kestrel::cpu::KESTREL_ISA_NS {
namespace mm {

constexpr int kGemmMR = 6;                             // activation rows per micro-tile
constexpr int kGemmNV = 2;                             // output vectors per activation row
constexpr int kGemmNR = kGemmNV * kLanes;              // weight rows per panel
constexpr int64_t kGemmKC = 256;                       // K elements per panel
// Activation rows per block (their x chunk, MB x KC floats, stays in L2 while every weight
// panel of the thread's range passes; each panel is packed once per block): 576 with AVX-512
// (a 576 KB chunk; the AVX-512 CPUs kestrel targets have 1-2 MB of L2; on a Zen 4, TinyLlama-
// shape F16 pp512 1.06x / 1.03x at 1 / 2 threads over 144, which packed every panel four
// times), 144 elsewhere (147 KB, within a 512 KB L2).
#if defined(__AVX512F__)
constexpr int64_t kGemmMB = 576;
#else
constexpr int64_t kGemmMB = 144;
#endif
// Batches from kGemmMt rows take this path, fewer the 4 x 3 tiles: 48 with AVX2 / AVX-512
// lanes (on a Zen 4, TinyLlama-shape F16 prompts end to end: the tiles 1.70x this GEMM at 8
// rows, 1.31x at 16, 1.09x at 32, 1.01-1.03x at 40, even at 48; in bench_matmul_variants
// alone the GEMM catches up from ~24 rows on some shapes), 8 elsewhere (SSE4.2: even at 8-16).
#if defined(__AVX2__)
constexpr int64_t kGemmMt = 48;
#else
constexpr int64_t kGemmMt = 8;
#endif
constexpr size_t kGemmPanelFloats = static_cast<size_t>(kGemmKC) * kGemmNR;

#if defined(__AVX2__)
// 8 rows of 8 floats -> 8 columns: out[i] = {r0[i], ..., r7[i]}.
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}
#endif

#if defined(__AVX2__) && defined(__F16C__)
// 8 weights of row w from element k as floats, in one 256-bit register at any vector width
// (the same exact widening as load_w).
template <DType T>
inline __m256 load_w8(const char* w, int64_t k) {
  if constexpr (T == DType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(w + k * 4));
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k * 2));
    if constexpr (T == DType::F16) return _mm256_cvtph_ps(h);
    else return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}
#endif

// dst[k * kGemmNR + j] = W[n0 + j][k0 + k] as float for k < kn, j < rows; 0 for j >= rows.
// x86: 8 x 8 blocks by a register transpose, also on AVX-512 (32-row panels), where the
// element-by-element loop below made packing an F16 panel cost more than its products
// up to a few dozen activation rows.
template <DType T>
inline void pack_panel(const Tensor& W, int64_t n0, int rows, int64_t k0, int64_t kn, float* dst) {
  const char* wr[kGemmNR];
  for (int j = 0; j < kGemmNR; ++j) wr[j] = j < rows ? W.row<const char>(n0 + j) : nullptr;
  int64_t k = 0;
#if defined(__AVX2__) && defined(__F16C__)
  if constexpr (kGemmNR % 8 == 0) {
    for (; k + 8 <= kn; k += 8)
      for (int jb = 0; jb < kGemmNR; jb += 8) {
        __m256 r[8];
        for (int j = 0; j < 8; ++j) r[j] = wr[jb + j] ? load_w8<T>(wr[jb + j], k0 + k) : _mm256_setzero_ps();
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_store_ps(dst + (k + i) * kGemmNR + jb, r[i]);
      }
  }
#endif
  for (; k < kn; ++k)
    for (int j = 0; j < kGemmNR; ++j) dst[k * kGemmNR + j] = wr[j] ? load_w1<T>(wr[j], k0 + k) : 0.0f;
}

// MR activation rows (x[r] already offset to the chunk) against a packed panel of kn
// elements; outputs y[r][n .. n + nvalid) get the chunk sums (stored when `first`, added
// otherwise).
template <int MR>
inline void gemm_tile(int64_t kn, const float* panel, const float* const* x, float* const* y, int64_t n, int nvalid,
                      bool first) {
  fvec acc[MR][kGemmNV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < kGemmNV; ++v) acc[r][v] = fvec(0.0f);
  for (int64_t k = 0; k < kn; ++k) {
    fvec w[kGemmNV];
    for (int v = 0; v < kGemmNV; ++v) w[v] = fvec::load_aligned(panel + k * kGemmNR + v * kLanes);
    for (int r = 0; r < MR; ++r) {
      const fvec xb(x[r][k]);
      for (int v = 0; v < kGemmNV; ++v) acc[r][v] = xsimd::fma(w[v], xb, acc[r][v]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    float* out = y[r] + n;
    if (nvalid == kGemmNR) {
      for (int v = 0; v < kGemmNV; ++v) {
        fvec s = acc[r][v];
        if (!first) s += fvec::load_unaligned(out + v * kLanes);
        s.store_unaligned(out + v * kLanes);
      }
    } else {
      alignas(64) float tmp[kGemmNR];
      for (int v = 0; v < kGemmNV; ++v) acc[r][v].store_aligned(tmp + v * kLanes);
      for (int j = 0; j < nvalid; ++j) out[j] = first ? tmp[j] : out[j] + tmp[j];
    }
  }
}

using GemmTileFn = void (*)(int64_t kn, const float* panel, const float* const* x, float* const* y, int64_t n,
                            int nvalid, bool first);
inline constexpr GemmTileFn kGemmTiles[kGemmMR] = {&gemm_tile<1>, &gemm_tile<2>, &gemm_tile<3>,
                                                   &gemm_tile<4>, &gemm_tile<5>, &gemm_tile<6>};

// Output rows [n0, n1) of y for all Mt activation rows; panel: kGemmPanelFloats floats,
// 64-byte aligned, this thread's own.
template <DType T, typename RowX, typename RowY>
inline void matmul_float_gemm(const Tensor& W, RowX xrow, RowY yrow, int64_t n0, int64_t n1, int64_t Mt, float* panel) {
  const int64_t K = W.ne[0];
  for (int64_t mb = 0; mb < Mt; mb += kGemmMB) {
    const int64_t mb1 = mb + kGemmMB < Mt ? mb + kGemmMB : Mt;
    for (int64_t k0 = 0; k0 < K; k0 += kGemmKC) {
      const int64_t kn = K - k0 < kGemmKC ? K - k0 : kGemmKC;
      for (int64_t np = n0; np < n1; np += kGemmNR) {
        const int rows = static_cast<int>(n1 - np < kGemmNR ? n1 - np : kGemmNR);
        pack_panel<T>(W, np, rows, k0, kn, panel);
        // The next panel's rows are 16 separate streams that the hardware prefetcher does not
        // follow; fetch them while the tiles below compute.
        if (np + kGemmNR < n1) {
          const int64_t esize = static_cast<int64_t>(dtype_type_size(W.type));
          const int64_t bytes = kn * esize;
          for (int j = 0; j < kGemmNR && np + kGemmNR + j < n1; ++j) {
            const char* p = W.row<const char>(np + kGemmNR + j) + k0 * esize;
            for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o);
          }
        }
        for (int64_t m = mb; m < mb1; m += kGemmMR) {
          const int mr = static_cast<int>(mb1 - m < kGemmMR ? mb1 - m : kGemmMR);
          const float* xr[kGemmMR];
          float* yr[kGemmMR];
          for (int r = 0; r < mr; ++r) {
            xr[r] = xrow(m + r) + k0;
            yr[r] = yrow(m + r);
          }
          kGemmTiles[mr - 1](kn, panel, xr, yr, np, rows, k0 == 0);
        }
      }
    }
  }
}

}  // namespace mm
}  // namespace kestrel::cpu::KESTREL_ISA_NS
