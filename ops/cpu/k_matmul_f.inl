// CPU matmul, part 3: F32 / F16 / BF16 weight row x RA F32 activation rows (included by
// k_matmul.inl). Weights are widened to float in registers (F16: vcvtph2ps / vcvt_f32_f16,
// BF16: a 16-bit shift), then fused multiply-adds into float accumulators; the activations
// are used as they are (except by dot_f16x, the AVX-512 decode of long F16 rows). Error:
// float accumulation over K in kLanes partial sums (about K * 2^-24 relative in the worst
// case); measured worst relative RMS error vs ref 5.2e-7 over the test shapes.
namespace kestrel::cpu::KESTREL_ISA_NS {
namespace mm {

// kLanes weights starting at element k, as floats.
template <DType T>
inline fvec load_w(const void* w, int64_t k) {
  if constexpr (T == DType::F32) {
    return fvec::load_unaligned(static_cast<const float*>(w) + k);
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(w) + k;
#if defined(__AVX512F__)
    if constexpr (kLanes == 16) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      if constexpr (T == DType::F16) return fvec(_mm512_cvtph_ps(h));
      else return fvec(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
    }
    // #elif, not a second #if: an AVX-512 unit's fvec has 16 lanes, and clang checks the
    // non-dependent 8-lane casts below even inside a discarded `if constexpr` branch.
#elif defined(__AVX2__) && defined(__F16C__)
    if constexpr (kLanes == 8) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      if constexpr (T == DType::F16) return fvec(_mm256_cvtph_ps(h));
      else return fvec(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
    }
#endif
#if defined(__ARM_NEON) && defined(__aarch64__)
    if constexpr (kLanes == 4) {
      const uint16x4_t h = vld1_u16(p);
      if constexpr (T == DType::F16) return fvec(vcvt_f32_f16(vreinterpret_f16_u16(h)));
      else return fvec(vreinterpretq_f32_u32(vshll_n_u16(h, 16)));
    }
#endif
    alignas(64) float tmp[kLanes];
    for (int i = 0; i < kLanes; ++i) {
      uint16_t h;  // memcpy: a strided view's rows need not be 2-byte aligned
      std::memcpy(&h, reinterpret_cast<const char*>(p) + 2 * i, 2);
      tmp[i] = T == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
    return fvec::load_aligned(tmp);
  }
}

template <DType T>
inline float load_w1(const void* w, int64_t k) {
  // Weight rows of a strided view need not be aligned to their element size: memcpy loads.
  if constexpr (T == DType::F32) {
    float v;
    std::memcpy(&v, static_cast<const char*>(w) + k * 4, 4);
    return v;
  } else {
    uint16_t h;
    std::memcpy(&h, static_cast<const char*>(w) + k * 2, 2);
    return T == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
}

template <int RA, DType T>
inline void dot_float(int64_t K, const void* w, const void* const* av, float* res) {
  const float* x[RA];
  for (int r = 0; r < RA; ++r) x[r] = static_cast<const float*>(av[r]);
  // One activation row: independent accumulators hide the fma latency; more rows give
  // that independence by themselves. 32 elements a step for one row: 4 chains of 8 lanes
  // (AVX2) or 2 of 16 (AVX-512, where 4 chains of 16 streamed F16 weights from memory
  // measurably slower in decode).
  // No software prefetch here: 4 KiB-ahead prefetches (which help the quantized decode
  // kernels) made F16 decode of a 1.1B model 16% slower (tg64 6.9 vs 8.2 t/s, 1 thread,
  // alternating runs), and on an AVX-512 machine any distance from 512 B to 8 KiB did too.
  constexpr int kU = RA == 1 ? (kLanes == 16 ? 2 : 4) : RA == 2 ? 2 : 1;
  fvec acc[kU][RA];
  for (int u = 0; u < kU; ++u)
    for (int r = 0; r < RA; ++r) acc[u][r] = fvec(0.0f);
  int64_t k = 0;
  for (; k + kU * kLanes <= K; k += kU * kLanes) {
    for (int u = 0; u < kU; ++u) {
      const fvec wv = load_w<T>(w, k + u * kLanes);
      for (int r = 0; r < RA; ++r) acc[u][r] = xsimd::fma(wv, fvec::load_unaligned(x[r] + k + u * kLanes), acc[u][r]);
    }
  }
  for (; k + kLanes <= K; k += kLanes) {
    const fvec wv = load_w<T>(w, k);
    for (int r = 0; r < RA; ++r) acc[0][r] = xsimd::fma(wv, fvec::load_unaligned(x[r] + k), acc[0][r]);
  }
  for (int r = 0; r < RA; ++r) {
    fvec s = acc[0][r];
    for (int u = 1; u < kU; ++u) s += acc[u][r];
    float t = xsimd::hadd(s);
    for (int64_t j = k; j < K; ++j) t += load_w1<T>(w, j) * x[r][j];
    res[r] = t;
  }
}

#if defined(__AVX512F__)
// Decode of F16 weights with long rows (AVX-512): the activation row rounded to F16 once
// per call, then F16 x F16 products summed in float. An F32 row of K >= kF16xMinK
// elements (16 KiB and up) and the weight row streaming past it overflow a 32 KiB L1, so
// every activation load came from L2 and the weights streamed at about half the rate;
// at F16 the row takes half the room (llama.cpp rounds activations to F16 the same way).
// Scaling: the row is multiplied by s = 2^(15 - e), max|x| < 2^e, before rounding (exact,
// a power of two), so its largest values round with 11 significant bits and nothing
// overflows F16's 65504; the sum is multiplied by 1/s. Error per activation value: at
// most 2^-11 relative, plus 2^-25 / s absolute (F16 subnormals), that is under
// 2^-39 max|x|; the float sum then as in dot_float.
constexpr int64_t kF16xMinK = 4096;

// xh = F16(x * s) for the K values of x; returns 1 / s.
inline float act_row_f16(const float* x, int64_t K, uint16_t* xh) {
  __m512 m = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + k)));
  float amax = _mm512_reduce_max_ps(m);
  for (; k < K; ++k) amax = std::fmax(amax, std::fabs(x[k]));
  int e = 0;
  if (std::isfinite(amax) && amax > 0) std::frexp(amax, &e);  // NaN, inf: no scaling
  const int shift = std::clamp(15 - e, -120, 120);
  const float sc = std::ldexp(1.0f, shift);
  const __m512 sv = _mm512_set1_ps(sc);
  for (k = 0; k + 16 <= K; k += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(xh + k),
                        _mm512_cvtps_ph(_mm512_mul_ps(_mm512_loadu_ps(x + k), sv), _MM_FROUND_TO_NEAREST_INT));
  for (; k < K; ++k) xh[k] = f32_to_f16(x[k] * sc);
  return std::ldexp(1.0f, -shift);
}

// sum_k w[k] * xh[k] for an F16 weight row and an F16 activation row.
inline float dot_f16x(int64_t K, const void* w, const uint16_t* xh) {
  const uint16_t* wh = static_cast<const uint16_t*>(w);
  auto cvt = [](const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); };
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    a0 = _mm512_fmadd_ps(cvt(wh + k), cvt(xh + k), a0);
    a1 = _mm512_fmadd_ps(cvt(wh + k + 16), cvt(xh + k + 16), a1);
    a2 = _mm512_fmadd_ps(cvt(wh + k + 32), cvt(xh + k + 32), a2);
    a3 = _mm512_fmadd_ps(cvt(wh + k + 48), cvt(xh + k + 48), a3);
  }
  for (; k + 16 <= K; k += 16) a0 = _mm512_fmadd_ps(cvt(wh + k), cvt(xh + k), a0);
  float t = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  for (; k < K; ++k) {
    uint16_t h;  // memcpy: a strided view's rows need not be 2-byte aligned
    std::memcpy(&h, wh + k, 2);
    t += f16_to_f32(h) * f16_to_f32(xh[k]);
  }
  return t;
}
#endif

// Prompt tile: MR activation rows x NR weight rows over elements [k0, k1) (k1 - k0 a
// multiple of kLanes except for the call that ends at K, which finishes with scalars);
// out[r][j] = the partial dot product of x row r and weight row j. MR * NR vector
// accumulators stay in registers (4 x 3 = 12, plus 3 weight vectors and one activation:
// the 16 AVX2 registers), so each loaded vector feeds 3 or 4 fmas instead of one.
template <int MR, int NR, DType T>
inline void tile_float(int64_t k0, int64_t k1, const void* const* w, const float* const* x, float (*out)[3]) {
  fvec acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) acc[r][j] = fvec(0.0f);
  int64_t k = k0;
  for (; k + kLanes <= k1; k += kLanes) {
    fvec wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = load_w<T>(w[j], k);
    for (int r = 0; r < MR; ++r) {
      const fvec xv = fvec::load_unaligned(x[r] + k);
      for (int j = 0; j < NR; ++j) acc[r][j] = xsimd::fma(wv[j], xv, acc[r][j]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) {
      float t = xsimd::hadd(acc[r][j]);
      // An explicit fma: whether the compiler fuses `t += w * x` may differ between the
      // instantiations, and the F16 / BF16 tiles must give the same bits as the F32 tile
      // on the widened panel.
      for (int64_t i = k; i < k1; ++i) t = std::fma(load_w1<T>(w[j], i), x[r][i], t);
      out[r][j] = t;
    }
}

using TileFn = void (*)(int64_t k0, int64_t k1, const void* const* w, const float* const* x, float (*out)[3]);
struct TileKernels {
  TileFn fn[4][3];  // [MR - 1][NR - 1]
};
template <DType T>
constexpr TileKernels make_tiles() {
  return TileKernels{{{&tile_float<1, 1, T>, &tile_float<1, 2, T>, &tile_float<1, 3, T>},
                      {&tile_float<2, 1, T>, &tile_float<2, 2, T>, &tile_float<2, 3, T>},
                      {&tile_float<3, 1, T>, &tile_float<3, 2, T>, &tile_float<3, 3, T>},
                      {&tile_float<4, 1, T>, &tile_float<4, 2, T>, &tile_float<4, 3, T>}}};
}

}  // namespace mm
}  // namespace kestrel::cpu::KESTREL_ISA_NS
