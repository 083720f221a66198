// CPU matmul, part 1: activation rows quantized to 8 bits once per call (included by
// k_matmul.inl). Two scratch formats:
//   ActQ8   32 values, d = amax / 127 rounded to F16 (as ggml's block_q8_0 stores it;
//           the codes come from the unrounded 127 / amax), |q| <= 127 (never -128, so
//           kernels may use |q| as an unsigned byte), and c8 = 8 * d * sum(q), which folds
//           Q4_0's -8 (Q5_0's -16) offset into one multiply-add per block. Paired with
//           Q4_0, Q5_0, Q8_0 weights.
//   BlockQ8_K (ops/dtype.h): 256 values, float d, q in [-127, 127] (ggml's convention: the
//           first value of largest magnitude maps to -127), 16-element sums. Paired with
//           Q4_K, Q5_K, Q6_K weights.
// Both follow ggml's activation quantizers value for value, so kestrel's quantized products
// are llama.cpp's up to the order of float sums (top-1 agreement of the two runtimes' logits
// on quantized models hangs on it: bench/ppl_compare.sh).
// Rounding is to nearest even in both the SIMD and the portable path. The quantization
// error per value is at most d/2 (plus the F16 rounding of d, 2^-11 relative), i.e. about
// amax/254 of each 32- or 256-block.
#include <cmath>
#include <cstring>
#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif
#if defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#include "ops/half.h"
#include "ops/ref/quant.h"

namespace kestrel::cpu::KESTREL_ISA_NS {
namespace mm {

struct ActQ8 {
  float d;
  float c8;  // 8 * d * sum(qs)
  int8_t qs[kQK];
};
static_assert(sizeof(ActQ8) == 40);

inline float f16_scalar(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return f16_to_f32(h);
#endif
}

// x rounded to the nearest F16 value (ties to even), back as a float.
inline float round_f16(float x) {
#if defined(__F16C__)
  return _cvtsh_ss(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
#else
  return f16_to_f32(f32_to_f16(x));
#endif
}

#if defined(__AVX2__)
inline float hmax_ps(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
inline float hmin_ps(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
inline int hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}
// 4 x 8 int32 (each within int8 range) -> 32 int8 in element order.
inline __m256i pack_i32x32_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_packs_epi32(a, b);  // lane-interleaved: a0 b0 | a1 b1
  const __m256i cd = _mm256_packs_epi32(c, d);
  const __m256i q = _mm256_packs_epi16(ab, cd);  // a0 b0 c0 d0 | a1 b1 c1 d1 (4-byte groups)
  return _mm256_permutevar8x32_epi32(q, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
#endif

// One row of K floats (K % 32 == 0) -> K/32 ActQ8 blocks.
inline void quantize_act_q8(const float* x, ActQ8* out, int64_t K) {
  for (int64_t b = 0; b < K / kQK; ++b, x += kQK) {
#if defined(__AVX2__)
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(x + 8 * i);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
    }
    const float am = hmax_ps(amax);
    const float id = am > 0 ? 127.0f / am : 0.0f;
    out[b].d = round_f16(am / 127.0f);
    const __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int i = 0; i < 4; ++i)
      q[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs), pack_i32x32_i8(q[0], q[1], q[2], q[3]));
    const int sum = hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    out[b].c8 = 8.0f * out[b].d * static_cast<float>(sum);
#else
    float am = 0;
    for (int j = 0; j < kQK; ++j) am = std::fmax(am, std::fabs(x[j]));
    const float id = am > 0 ? 127.0f / am : 0.0f;
    out[b].d = round_f16(am / 127.0f);
    for (int j = 0; j < kQK; ++j) {
      const float v = std::nearbyint(x[j] * id);
      out[b].qs[j] = static_cast<int8_t>(v > 127.0f ? 127 : v < -127.0f ? -127 : v);
    }
    int sum = 0;
    for (int j = 0; j < kQK; ++j) sum += out[b].qs[j];
    out[b].c8 = 8.0f * out[b].d * static_cast<float>(sum);
#endif
  }
}

// One row of K floats (K % 256 == 0) -> K/256 BlockQ8_K, ggml's convention (the first
// value of largest magnitude maps to -127).
inline void quantize_act_q8K(const float* x, BlockQ8_K* out, int64_t K) {
#if defined(__AVX2__)
  for (int64_t b = 0; b < K / kQKK; ++b, x += kQKK) {
    __m256 vmax = _mm256_set1_ps(-INFINITY), vmin = _mm256_set1_ps(INFINITY);
    for (int i = 0; i < kQKK; i += 8) {
      const __m256 v = _mm256_loadu_ps(x + i);
      vmax = _mm256_max_ps(vmax, v);
      vmin = _mm256_min_ps(vmin, v);
    }
    const float mx = hmax_ps(vmax), mn = hmin_ps(vmin);
    float max = -mn > mx ? mn : mx;
    if (-mn == mx) {  // a tie of magnitudes: the first of them, as ggml scans
      for (int i = 0; i < kQKK; ++i)
        if (x[i] == mx || x[i] == mn) {
          max = x[i];
          break;
        }
    }
    if (!(max != 0.0f) || !std::isfinite(max)) {
      std::memset(&out[b], 0, sizeof(BlockQ8_K));
      continue;
    }
    const float iscale = -127.0f / max;
    const __m256 vis = _mm256_set1_ps(iscale);
    for (int g = 0; g < kQKK; g += 32) {
      __m256i q[4];
      for (int i = 0; i < 4; ++i)
        q[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + g + 8 * i), vis),
                                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs + g), pack_i32x32_i8(q[0], q[1], q[2], q[3]));
      // Sums of the stored (saturated) codes, 16 at a time.
      const __m256i s = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(out[b].qs + g)));
      const __m256i t = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(out[b].qs + g + 16)));
      out[b].bsums[g / 16] = static_cast<int16_t>(hsum_epi32(_mm256_madd_epi16(s, _mm256_set1_epi16(1))));
      out[b].bsums[g / 16 + 1] = static_cast<int16_t>(hsum_epi32(_mm256_madd_epi16(t, _mm256_set1_epi16(1))));
    }
    out[b].d = 1.0f / iscale;
  }
#else
  ref::quantize_row_q8_K(x, out, K);
#endif
}

}  // namespace mm
}  // namespace kestrel::cpu::KESTREL_ISA_NS
