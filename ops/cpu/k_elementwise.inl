// CPU kernels: elementwise family (see isa_body.inl for how this is compiled per ISA).
//
// add, mul (b broadcast over rows), scale, silu, sigmoid, gelu (tanh, erf and
// sigmoid forms), swiglu, geglu, copy (F32/F16/BF16 any strides). Threads take
// fixed chunks of rows (ThreadPool::split); each row is a SIMD loop, the tail
// through the same vector code on a padded lane array.
//
// The activations run on the op's exp tier (ops/exp_tier.h, ops/cpu/k_exp.inl),
// chosen once per call (vexp::with_tier), never per element.
// Exact tier (unchanged formulas): silu = x / (1 + exp(-x)), sigmoid = 1 / (1 + exp(-x)),
//   gelu tanh = x / (1 + exp(-2u)), u = sqrt(2/pi)(x + 0.044715x^3), the identity
//   0.5(1 + tanh(u)) = sigmoid(2u); gelu erf = 0.5x(1 + erf(x/sqrt2)) with xsimd::erf;
//   gelu sigmoid form = x / (1 + exp(-1.702x)). Measured max abs error over
//   x in [-10, 10]: silu 9.5e-7, gelu (tanh, erf) 4.8e-7, swiglu/geglu 1.9e-6 / 9.5e-7
//   with |up| <= 2 (a few ulp of the result).
// Quake tiers: the same logistic forms with the affine (-x, -1.702x, -2 sqrt(2/pi) w)
//   folded into the quake fma; the erf form as x (1 - h) / x h with
//   h = t exp(-z^2 + P(t)) / 2, z = |x|/sqrt2, t = 1/(1 + z/2) (erfc with relative
//   error < 1.2e-7 before the exp), so no cancellation for negative x. Relative
//   error of each activation is within the tier's exp bound (a logistic
//   1/(1 + e(1 + eps)) moves by at most |eps|): measured in tests/test_exp.cpp.
//   Overflow: exp(-x) = inf for very negative x gives x / inf = -0, the right limit.
//   copy: F32->F16 rounds to nearest even (F16C / NEON / ops/half.h, bit-identical).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "ops/half.h"
#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
// GCC 12's AVX-512 intrinsic headers start vectors from _mm512_undefined_*(),
// which -Wmaybe-uninitialized reports once inlined (GCC bug 105593): a false
// positive on every xsimd math call, silenced for this ISA's translation unit.
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace kestrel::cpu::KESTREL_ISA_NS {
namespace ew {

// Below this much work (row_cost units, about one multiply-add each) per thread, waking
// another thread costs more than it saves: decode-time ops of small models run on the
// calling thread alone.
constexpr int64_t kMinWorkPerThread = 32 * 1024;

// Runs f(begin, end) -- or f(ith, begin, end) when f takes the thread index,
// for per-thread scratch slots -- over fixed chunks of [0, n_rows), one per thread.
// row_cost: the work of one row, to size the thread count.
template <typename F>
inline void par_rows(Exec& exec, int64_t n_rows, int64_t row_cost, F&& f) {
  if (n_rows <= 0) return;
  const int64_t by_work = std::max<int64_t>(1, n_rows * std::max<int64_t>(row_cost, 1) / kMinWorkPerThread);
  const int want = (int)std::min<int64_t>(std::min<int64_t>(exec.n_threads(), n_rows), by_work);
  exec.parallel(want, [&](int ith, int nth) {
    int64_t begin, end;
    ThreadPool::split(n_rows, ith, nth, &begin, &end);
    if (begin >= end) return;
    if constexpr (std::is_invocable_v<F&, int, int64_t, int64_t>) f(ith, begin, end);
    else f(begin, end);
  });
}

// Flat row index r of t -> (i1, i2, i3).
struct RowIdx {
  int64_t i1, i2, i3;
};
inline RowIdx row_idx(const Tensor& t, int64_t r) {
  RowIdx x;
  x.i1 = r % t.ne[1];
  r /= t.ne[1];
  x.i2 = r % t.ne[2];
  x.i3 = r / t.ne[2];
  return x;
}
template <typename T>
inline T* row_ptr(const Tensor& t, const RowIdx& r) {
  return t.row<T>(r.i1, r.i2, r.i3);
}

// Half <-> float rows of n elements.
inline void f16_to_f32_row(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#elif defined(__aarch64__)
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
#endif
  for (; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

inline void f32_to_f16_row(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#elif defined(__aarch64__)
  for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
#endif
  for (; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}

// One fvec of halves (F16C / NEON conversion, or scalar into a lane array).
// A template so that the branches for other vector widths are never instantiated.
template <typename V = fvec>
inline V load_f16(const uint16_t* p) {
#if defined(__AVX512F__)
  if constexpr (V::size == 16) return V(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#endif
#if defined(__F16C__)
  if constexpr (V::size == 8) return V(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#endif
#if defined(__aarch64__)
  if constexpr (V::size == 4) return V(vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))));
#endif
  alignas(64) float tmp[V::size];
  for (size_t i = 0; i < V::size; ++i) tmp[i] = f16_to_f32(p[i]);
  return V::load_aligned(tmp);
}

// dst row = fv(a row, b row) over n elements. The tail goes through the same
// vector function on a zero-padded lane array, so every element sees the same
// math (matters once exp tiers are approximations).
template <typename FV>
inline void binary_row(const float* a, const float* b, float* d, int64_t n, FV&& fv) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    fv(fvec::load_unaligned(a + i), fvec::load_unaligned(b + i)).store_unaligned(d + i);
  if (i < n) {
    alignas(64) float ta[kLanes] = {}, tb[kLanes] = {};
    std::memcpy(ta, a + i, (size_t)(n - i) * sizeof(float));
    std::memcpy(tb, b + i, (size_t)(n - i) * sizeof(float));
    fv(fvec::load_aligned(ta), fvec::load_aligned(tb)).store_aligned(ta);
    std::memcpy(d + i, ta, (size_t)(n - i) * sizeof(float));
  }
}

template <typename FV>
inline void unary_row(const float* a, float* d, int64_t n, FV&& fv) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) fv(fvec::load_unaligned(a + i)).store_unaligned(d + i);
  if (i < n) {
    alignas(64) float t[kLanes] = {};
    std::memcpy(t, a + i, (size_t)(n - i) * sizeof(float));
    fv(fvec::load_aligned(t)).store_aligned(t);
    std::memcpy(d + i, t, (size_t)(n - i) * sizeof(float));
  }
}

// Binary op over every row, b broadcast (b.ne[i] == 1 repeats its row).
template <typename FV>
inline bool run_binary(const OpCall& call, Exec& exec, FV&& fv) {
  const Tensor& a = *call.src[0];
  const Tensor& b = *call.src[1];
  const Tensor& d = *call.dst;
  par_rows(exec, a.nrows(), a.ne[0], [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const RowIdx ia = row_idx(a, r);
      const float* y = b.row<float>(ia.i1 % b.ne[1], ia.i2 % b.ne[2], ia.i3 % b.ne[3]);
      binary_row(row_ptr<float>(a, ia), y, row_ptr<float>(d, ia), a.ne[0], fv);
    }
  });
  return true;
}

template <typename FV>
inline bool run_unary(const OpCall& call, Exec& exec, FV&& fv) {
  const Tensor& a = *call.src[0];
  const Tensor& d = *call.dst;
  par_rows(exec, a.nrows(), a.ne[0], [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const RowIdx ia = row_idx(a, r);
      unary_row(row_ptr<float>(a, ia), row_ptr<float>(d, ia), a.ne[0], fv);
    }
  });
  return true;
}

// The activations of tier T. The exact branches are the formulas this file
// has always used (same results); the quake ones fold the input's affine map.
template <ExpTier T>
inline fvec silu_v(fvec x) {
  if constexpr (T == ExpTier::exact) return x / (fvec(1.0f) + xsimd::exp(-x));
  else return x / (fvec(1.0f) + vexp::quake_scaled<T>(x, -1.0));
}

template <ExpTier T>
inline fvec sigmoid_v(fvec x) {
  if constexpr (T == ExpTier::exact) return fvec(1.0f) / (fvec(1.0f) + xsimd::exp(-x));
  else return fvec(1.0f) / (fvec(1.0f) + vexp::quake_scaled<T>(x, -1.0));
}

// gelu tanh form through the logistic: 0.5(1 + tanh(u)) = 1 / (1 + exp(-2u)).
constexpr float kGeluK2 = 2.0f * 0.7978845608028654f;  // 2 * sqrt(2/pi)
constexpr float kGeluCubic = 0.044715f;
constexpr float kGeluSigmoidK = 1.702f;
template <ExpTier T>
inline fvec gelu_tanh_v(fvec x) {
  if constexpr (T == ExpTier::exact) {
    const fvec u2 = x * fvec(kGeluK2) * xsimd::fma(x * x, fvec(kGeluCubic), fvec(1.0f));
    return x / (fvec(1.0f) + xsimd::exp(-u2));
  } else {
    const fvec w = x * xsimd::fma(x * x, fvec(kGeluCubic), fvec(1.0f));
    return x / (fvec(1.0f) + vexp::quake_scaled<T>(w, -(double)kGeluK2));
  }
}

template <ExpTier T>
inline fvec gelu_sigmoid_v(fvec x) {
  if constexpr (T == ExpTier::exact) return x / (fvec(1.0f) + xsimd::exp(x * fvec(-kGeluSigmoidK)));
  else return x / (fvec(1.0f) + vexp::quake_scaled<T>(x, -(double)kGeluSigmoidK));
}

constexpr float kInvSqrt2 = 0.7071067811865476f;
// erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2): the Chebyshev-fitted form
// with relative error < 1.2e-7 for z >= 0; P's coefficients c0..c9.
constexpr float kErfcP[10] = {-1.26551223f, 1.00002368f, 0.37409196f,  0.09678418f, -0.18628806f,
                              0.27886807f,  -1.13520398f, 1.48851587f, -0.82215223f, 0.17087277f};
template <ExpTier T>
inline fvec gelu_erf_v(fvec x) {
  if constexpr (T == ExpTier::exact) {
    return fvec(0.5f) * x * (fvec(1.0f) + xsimd::erf(x * fvec(kInvSqrt2)));
  } else {
    const fvec z = xsimd::abs(x) * fvec(kInvSqrt2);
    const fvec t = fvec(1.0f) / xsimd::fma(fvec(0.5f), z, fvec(1.0f));
    fvec p(kErfcP[9]);
    for (int i = 8; i >= 0; --i) p = xsimd::fma(p, t, fvec(kErfcP[i]));
    const fvec h = fvec(0.5f) * t * vexp::quake_scaled<T>(xsimd::fma(-z, z, p), 1.0);
    return x * xsimd::select(x < fvec(0.0f), h, fvec(1.0f) - h);
  }
}

// Runs the unary / gated gelu of `form` on tier T.
template <ExpTier T, typename Run>
inline bool with_gelu_form(GeluForm form, Run&& run) {
  switch (form) {
    case GeluForm::erf: return run([](fvec x) { return gelu_erf_v<T>(x); });
    case GeluForm::sigmoid: return run([](fvec x) { return gelu_sigmoid_v<T>(x); });
    case GeluForm::tanh: break;
  }
  return run([](fvec x) { return gelu_tanh_v<T>(x); });
}

inline bool k_add(const OpCall& c, Exec& e) { return run_binary(c, e, [](fvec x, fvec y) { return x + y; }); }
inline bool k_mul(const OpCall& c, Exec& e) { return run_binary(c, e, [](fvec x, fvec y) { return x * y; }); }
inline bool k_scale(const OpCall& c, Exec& e) {
  const ScaleParams& p = c.p<ScaleParams>();
  const fvec s(p.scale), b(p.bias);
  return run_unary(c, e, [&](fvec x) { return xsimd::fma(x, s, b); });
}
inline bool k_silu(const OpCall& c, Exec& e) {
  return vexp::with_tier(c.p<SiluParams>().exp, [&](auto tc) {
    return run_unary(c, e, [](fvec x) { return silu_v<decltype(tc)::value>(x); });
  });
}
inline bool k_sigmoid(const OpCall& c, Exec& e) {
  return vexp::with_tier(c.p<SigmoidParams>().exp, [&](auto tc) {
    return run_unary(c, e, [](fvec x) { return sigmoid_v<decltype(tc)::value>(x); });
  });
}
inline bool k_gelu(const OpCall& c, Exec& e) {
  const GeluParams& p = c.p<GeluParams>();
  return vexp::with_tier(p.exp, [&](auto tc) {
    return with_gelu_form<decltype(tc)::value>(p.form, [&](auto g) { return run_unary(c, e, g); });
  });
}
inline bool k_swiglu(const OpCall& c, Exec& e) {
  return vexp::with_tier(c.p<SiluParams>().exp, [&](auto tc) {
    return run_binary(c, e, [](fvec g, fvec u) { return silu_v<decltype(tc)::value>(g) * u; });
  });
}
inline bool k_geglu(const OpCall& c, Exec& e) {
  const GeluParams& p = c.p<GeluParams>();
  return vexp::with_tier(p.exp, [&](auto tc) {
    return with_gelu_form<decltype(tc)::value>(
        p.form, [&](auto g) { return run_binary(c, e, [g](fvec x, fvec u) { return g(x) * u; }); });
  });
}

// copy: rows of any strides; conversions through float.
inline void copy_row(DType ta, const void* src, DType td, void* dst, int64_t n) {
  if (ta == td) {
    std::memmove(dst, src, dtype_row_size(ta, n));
    return;
  }
  // The op allows any byte strides: a row that does not start at a multiple of its
  // element size goes through aligned chunks, its bytes moved with memcpy.
  if (reinterpret_cast<uintptr_t>(src) % dtype_type_size(ta) != 0 ||
      reinterpret_cast<uintptr_t>(dst) % dtype_type_size(td) != 0) {
    alignas(64) float in[256], out[256];  // raw bytes of up to 256 elements of 2 or 4 bytes
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
      const int64_t m = std::min<int64_t>(256, n - i0);
      std::memcpy(in, static_cast<const char*>(src) + dtype_row_size(ta, i0), dtype_row_size(ta, m));
      copy_row(ta, in, td, out, m);
      std::memcpy(static_cast<char*>(dst) + dtype_row_size(td, i0), out, dtype_row_size(td, m));
    }
    return;
  }
  if (ta == DType::F32 && td == DType::F16) return f32_to_f16_row(static_cast<const float*>(src), static_cast<uint16_t*>(dst), n);
  if (ta == DType::F16 && td == DType::F32) return f16_to_f32_row(static_cast<const uint16_t*>(src), static_cast<float*>(dst), n);
  // Remaining pairs involve BF16: plain loops the compiler vectorizes.
  alignas(64) float tmp[256];
  for (int64_t i0 = 0; i0 < n; i0 += 256) {
    const int64_t m = std::min<int64_t>(256, n - i0);
    if (ta == DType::F32) std::memcpy(tmp, static_cast<const float*>(src) + i0, m * 4);
    else if (ta == DType::F16) f16_to_f32_row(static_cast<const uint16_t*>(src) + i0, tmp, m);
    else for (int64_t i = 0; i < m; ++i) tmp[i] = bf16_to_f32(static_cast<const uint16_t*>(src)[i0 + i]);
    if (td == DType::F32) std::memcpy(static_cast<float*>(dst) + i0, tmp, m * 4);
    else if (td == DType::F16) f32_to_f16_row(tmp, static_cast<uint16_t*>(dst) + i0, m);
    else for (int64_t i = 0; i < m; ++i) static_cast<uint16_t*>(dst)[i0 + i] = f32_to_bf16(tmp[i]);
  }
}

inline bool k_copy(const OpCall& c, Exec& e) {
  const Tensor& a = *c.src[0];
  const Tensor& d = *c.dst;
  par_rows(e, a.nrows(), a.ne[0], [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const RowIdx ia = row_idx(a, r);
      copy_row(a.type, row_ptr<const char>(a, ia), d.type, row_ptr<char>(d, ia), a.ne[0]);
    }
  });
  return true;
}

}  // namespace ew

inline void register_elementwise(KernelTable& table) {
  table[OpId::add].run = &ew::k_add;
  table[OpId::mul].run = &ew::k_mul;
  table[OpId::scale].run = &ew::k_scale;
  table[OpId::silu].run = &ew::k_silu;
  table[OpId::sigmoid].run = &ew::k_sigmoid;
  table[OpId::gelu].run = &ew::k_gelu;
  table[OpId::swiglu].run = &ew::k_swiglu;
  table[OpId::geglu].run = &ew::k_geglu;
  table[OpId::copy].run = &ew::k_copy;
}

}  // namespace kestrel::cpu::KESTREL_ISA_NS
