// Reference (de)quantization for every block type of ops/dtype.h.
//
// Layouts are ggml's (the GGUF data a real model file carries):
//   Q4_0  x = d * (q - 8);    qs[j] low nibble = element j, high nibble = element j + 16.
//   Q5_0  x = d * (q - 16); q's low 4 bits as Q4_0, bit 4 of element j is bit j of the
//         little-endian 32-bit qh.
//   Q4_1  x = d * q + m; nibbles as Q4_0.
//   Q5_1  x = d * q + m; 5-bit codes laid out as Q5_0's.
//   Q8_0  x = d * q.
//   Q4_K  256 = 8 sub-blocks of 32; x = d*sc[j]*q - dmin*m[j]; 6-bit sc/m packed in 12 bytes
//         (sub-blocks 0..3: low 6 bits of bytes 0..3 / 4..7; 4..7: a nibble of bytes 8..11
//         plus the top 2 bits of bytes 0..3 / 4..7). qs: 4 chunks of 32 bytes, low nibbles =
//         sub-block 2c, high nibbles = sub-block 2c+1.
//   Q5_K  as Q4_K; the 5th bit of element l of sub-block 2c / 2c+1 is bit 2c / 2c+1 of qh[l].
//   Q6_K  16 sub-blocks of 16, int8 scales; x = d*sc*(q - 32). Per 128-element half: element
//         l + 32k (l < 32) takes ql[l + 32(k&1)]'s low (k < 2) or high (k >= 2) nibble and
//         bits 2k..2k+1 of qh[l].
//   Q8_K  float d, x = d * q, bsums[i] = sum of qs[16i .. 16i+15].
//
// The weight quantizers (all but Q8_K) follow ggml's reference quantizers step for step (the
// ones llama-quantize runs without an importance matrix): the same float operations in the
// same order, so that both tools write byte-identical tensors. The K-quants
// search per-sub-block scales by weighted least squares over a few candidate grids, quantize
// those scales against the super-block scale, and re-pick every code with the stored scales.
#include "ops/ref/quant.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "ops/half.h"

namespace kestrel::ref {

namespace {

// Rounds to nearest and clamps to [lo, hi]; NaN goes to lo (never UB on the cast).
inline int clamp_round(float v, int lo, int hi) {
  if (!(v >= static_cast<float>(lo))) return lo;
  if (v >= static_cast<float>(hi)) return hi;
  return static_cast<int>(std::nearbyint(v));
}

// 6-bit scale j and min j of a Q4_K / Q5_K super-block.
inline void k_scale_min(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

inline void k_pack_scale_min(const uint8_t* sc, const uint8_t* m, uint8_t* q) {
  for (int j = 0; j < 4; ++j) {
    q[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    q[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    q[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

// Round half to even, as ggml rounds scales and codes (it adds 1.5 * 2^23 and reads the
// mantissa, which equals round-half-even for |v| < 2^22). Beyond that range this
// saturates, and NaN gives 0 (ggml's trick also yields 0 for NaN).
inline int round_even(float v) {
  if (!(std::fabs(v) <= 4194303.0f)) return v > 0 ? 4194303 : (v < 0 ? -4194303 : 0);
  return static_cast<int>(std::nearbyint(v));
}

// Q4_K / Q5_K sub-block fit, ggml's reference search step for step (every sum in float, in
// element order, so the chosen codes and scales are the ones llama-quantize writes):
// x ~ scale * L - min with L in [0, nmax], min >= 0, under weights w. Start from the
// min/max fit (lo = min(x, 0), scale = (hi - lo) / nmax); then for each of nstep + 1
// inverse scales (nmax + rmin + rdelta * k) / (hi - off) take the codes L = round(inv * (x - off)),
// where off is the best offset so far (lo until a candidate wins: ggml's search moves its
// origin with each win, and so must this for the same codes), solve the weighted
// least-squares scale and offset for them (offset clipped to <= 0 by refitting the scale
// alone), and keep the candidate only if its weighted squared error is strictly lower.
// codes[0..n) receives the winner's codes; returns the scale, *min_out the min (>= 0).
float search_scale_min(const float* x, const float* w, int n, int nmax, float rmin, float rdelta, int nstep,
                       uint8_t* codes, float* min_out) {
  float lo = x[0], hi = x[0];
  float sum_w = w[0], sum_x = w[0] * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < lo) lo = x[i];
    if (x[i] > hi) hi = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (lo > 0) lo = 0;
  if (hi == lo) {
    std::memset(codes, 0, static_cast<size_t>(n));
    *min_out = -lo;
    return 0.0f;
  }
  const float nmax_f = static_cast<float>(nmax);
  float inv = nmax_f / (hi - lo);
  float scale = 1.0f / inv, off = lo;  // off: the best offset so far, which later grids start from
  float best_err = 0;
  for (int i = 0; i < n; ++i) {
    codes[i] = static_cast<uint8_t>(std::clamp(round_even(inv * (x[i] - lo)), 0, nmax));
    const float e = scale * static_cast<float>(codes[i]) + off - x[i];
    best_err += w[i] * (e * e);
  }
  uint8_t trial[kQKK];
  for (int k = 0; k <= nstep; ++k) {
    inv = (rmin + rdelta * static_cast<float>(k) + nmax_f) / (hi - off);
    float sl = 0, sl2 = 0, sxl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(round_even(inv * (x[i] - off)), 0, nmax);
      trial[i] = static_cast<uint8_t>(l);
      const float wl = w[i] * static_cast<float>(l);
      sl += wl;
      sl2 += wl * static_cast<float>(l);
      sxl += wl * x[i];
    }
    const float det = sum_w * sl2 - sl * sl;
    if (!(det > 0)) continue;
    float s = (sum_w * sxl - sum_x * sl) / det;
    float o = (sl2 * sum_x - sl * sxl) / det;
    if (o > 0) {
      o = 0;
      s = sxl / sl2;
    }
    float err = 0;
    for (int i = 0; i < n; ++i) {
      const float e = s * static_cast<float>(trial[i]) + o - x[i];
      err += w[i] * (e * e);
    }
    if (err < best_err) {
      std::memcpy(codes, trial, static_cast<size_t>(n));
      best_err = err;
      scale = s;
      off = o;
    }
  }
  *min_out = -off;
  return scale;
}

// Q6_K sub-block fit, ggml's reference search for it: x ~ scale * L, L in [-nmax, nmax - 1],
// weights x^2. Inverse scales -(nmax + 0.1 k) / max for k = 0, -9..9 (max: the first element
// of largest magnitude, signed); a candidate replaces the best when it explains more
// weighted energy, sxl^2 / sl2 (compared without dividing). codes[0..n) receives L + nmax.
// A sub-block below 1e-15 in magnitude gets scale 0 and codes 0.
float search_scale_sym(const float* x, int n, int nmax, uint8_t* codes) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  if (!(amax >= 1e-15f)) {
    std::memset(codes, 0, static_cast<size_t>(n));
    return 0.0f;
  }
  const float nmax_f = static_cast<float>(nmax);
  // Codes and the weighted sums for one inverse scale.
  auto trial = [&](float inv, uint8_t* out, float* sxl, float* sl2) {
    *sxl = 0;
    *sl2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(round_even(inv * x[i]), -nmax, nmax - 1);
      if (out) out[i] = static_cast<uint8_t>(l + nmax);
      const float w = x[i] * x[i];
      *sxl += w * x[i] * static_cast<float>(l);
      *sl2 += w * static_cast<float>(l) * static_cast<float>(l);
    }
  };
  float sxl, sl2;
  trial(-nmax_f / max, codes, &sxl, &sl2);
  float scale = sl2 != 0 ? sxl / sl2 : 0.0f;
  float best = scale * sxl;
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    const float inv = -(nmax_f + 0.1f * static_cast<float>(k)) / max;
    trial(inv, nullptr, &sxl, &sl2);
    if (sl2 > 0 && sxl * sxl > best * sl2) {
      trial(inv, codes, &sxl, &sl2);
      scale = sxl / sl2;
      best = scale * sxl;
    }
  }
  return scale;
}

// ---- dequantize ---------------------------------------------------------------------------

void deq_q4_0(const BlockQ4_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = d * ((b[i].qs[j] & 0xF) - 8);
      y[j + kQK / 2] = d * ((b[i].qs[j] >> 4) - 8);
    }
  }
}

void deq_q5_0(const BlockQ5_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
    uint32_t qh;
    std::memcpy(&qh, b[i].qh, 4);
    for (int j = 0; j < kQK / 2; ++j) {
      const int h0 = (qh >> j) & 1, h1 = (qh >> (j + kQK / 2)) & 1;
      y[j] = d * (((b[i].qs[j] & 0xF) | (h0 << 4)) - 16);
      y[j + kQK / 2] = d * (((b[i].qs[j] >> 4) | (h1 << 4)) - 16);
    }
  }
}

void deq_q4_1(const BlockQ4_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = d * (b[i].qs[j] & 0xF) + m;
      y[j + kQK / 2] = d * (b[i].qs[j] >> 4) + m;
    }
  }
}

void deq_q5_1(const BlockQ5_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
    uint32_t qh;
    std::memcpy(&qh, b[i].qh, 4);
    for (int j = 0; j < kQK / 2; ++j) {
      const int h0 = (qh >> j) & 1, h1 = (qh >> (j + kQK / 2)) & 1;
      y[j] = d * ((b[i].qs[j] & 0xF) | (h0 << 4)) + m;
      y[j + kQK / 2] = d * ((b[i].qs[j] >> 4) | (h1 << 4)) + m;
    }
  }
}

void deq_q8_0(const BlockQ8_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = d * b[i].qs[j];
  }
}

void deq_q4_K(const BlockQ4_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int c = 0; c < 4; ++c, q += 32, y += 64) {
      int sc0, m0, sc1, m1;
      k_scale_min(2 * c, b[i].scales, &sc0, &m0);
      k_scale_min(2 * c + 1, b[i].scales, &sc1, &m1);
      for (int l = 0; l < 32; ++l) {
        y[l] = d * sc0 * (q[l] & 0xF) - dmin * m0;
        y[l + 32] = d * sc1 * (q[l] >> 4) - dmin * m1;
      }
    }
  }
}

void deq_q5_K(const BlockQ5_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int c = 0; c < 4; ++c, q += 32, y += 64) {
      int sc0, m0, sc1, m1;
      k_scale_min(2 * c, b[i].scales, &sc0, &m0);
      k_scale_min(2 * c + 1, b[i].scales, &sc1, &m1);
      for (int l = 0; l < 32; ++l) {
        const int h0 = (b[i].qh[l] >> (2 * c)) & 1, h1 = (b[i].qh[l] >> (2 * c + 1)) & 1;
        y[l] = d * sc0 * ((q[l] & 0xF) | (h0 << 4)) - dmin * m0;
        y[l + 32] = d * sc1 * ((q[l] >> 4) | (h1 << 4)) - dmin * m1;
      }
    }
  }
}

void deq_q6_K(const BlockQ6_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int h = 0; h < 2; ++h, y += 128) {
      const uint8_t* ql = b[i].ql + 64 * h;
      const uint8_t* qh = b[i].qh + 32 * h;
      const int8_t* sc = b[i].scales + 8 * h;
      for (int l = 0; l < 32; ++l) {
        const int s = l / 16;
        const int q0 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q1 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[s + 0] * q0;
        y[l + 32] = d * sc[s + 2] * q1;
        y[l + 64] = d * sc[s + 4] * q2;
        y[l + 96] = d * sc[s + 6] * q3;
      }
    }
  }
}

void deq_q8_K(const BlockQ8_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQKK)
    for (int j = 0; j < kQKK; ++j) y[j] = b[i].d * b[i].qs[j];
}

// ---- quantize -----------------------------------------------------------------------------

// The element of largest magnitude, with its sign (the first one on ties).
float signed_absmax(const float* x, int n) {
  float amax = 0, max = 0;
  for (int j = 0; j < n; ++j)
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  return max;
}

// A code from v already biased by + 0.5 (and the zero point): truncated toward zero as a
// float -> int cast does, capped at nmax. NaN and negatives give 0, so a non-finite input
// never reaches an out-of-range cast (for finite input the low clamp never binds below 0).
inline int code_trunc(float r, int nmax) {
  if (!(r >= 0.0f)) return 0;
  if (r >= static_cast<float>(nmax)) return nmax;
  return static_cast<int>(r);
}

// Q4_0 / Q5_0 / Q8_0 as ggml's reference quantizers (see Q4_1 below): the codes come from
// the unrounded d = max / -8 (-16) and its reciprocal, biased and truncated ((int)(v + 8.5)),
// while the stored d is its F16 rounding.
void quant_q4_0(const float* x, BlockQ4_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    // The value of largest magnitude maps to code 0 (-8 * d), using the full range.
    const float d = signed_absmax(x, kQK) / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = code_trunc(x[j] * id + 8.5f, 15);
      const int q1 = code_trunc(x[j + kQK / 2] * id + 8.5f, 15);
      b[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void quant_q5_0(const float* x, BlockQ5_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    // As Q4_0: the value of largest magnitude maps to code 0 (-16 * d).
    const float d = signed_absmax(x, kQK) / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = code_trunc(x[j] * id + 16.5f, 31);
      const int q1 = code_trunc(x[j + kQK / 2] * id + 16.5f, 31);
      b[i].qs[j] = static_cast<uint8_t>((q0 & 0xF) | ((q1 & 0xF) << 4));
      qh |= static_cast<uint32_t>(q0 >> 4) << j;
      qh |= static_cast<uint32_t>(q1 >> 4) << (j + kQK / 2);
    }
    std::memcpy(b[i].qh, &qh, 4);
  }
}

// Q4_1 / Q5_1 (nmax 15 / 31), as llama.cpp's reference quantizer (the one llama-quantize
// runs without an importance matrix), so both write the same bytes from the same floats:
// d = (max - min) / nmax and min are stored as F16, but the codes come from the unrounded
// min and 1 / d, rounded half up by truncating v + 0.5. A block with no ordered min/max
// (all NaN) is treated as zeros.
inline int code_half_up(float v, int nmax) { return code_trunc(v + 0.5f, nmax); }

void minmax_scale(const float* x, int nmax, float* min_out, float* d_out, float* id_out) {
  float min = FLT_MAX, max = -FLT_MAX;
  for (int j = 0; j < kQK; ++j) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
  if (!(max >= min)) min = max = 0.0f;
  const float d = (max - min) / static_cast<float>(nmax);
  *min_out = min;
  *d_out = d;
  *id_out = d != 0.0f ? 1.0f / d : 0.0f;
}

void quant_q4_1(const float* x, BlockQ4_1* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float min, d, id;
    minmax_scale(x, 15, &min, &d, &id);
    b[i].d = f32_to_f16(d);
    b[i].m = f32_to_f16(min);
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = code_half_up((x[j] - min) * id, 15);
      const int q1 = code_half_up((x[j + kQK / 2] - min) * id, 15);
      b[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void quant_q5_1(const float* x, BlockQ5_1* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float min, d, id;
    minmax_scale(x, 31, &min, &d, &id);
    b[i].d = f32_to_f16(d);
    b[i].m = f32_to_f16(min);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = code_half_up((x[j] - min) * id, 31);
      const int q1 = code_half_up((x[j + kQK / 2] - min) * id, 31);
      b[i].qs[j] = static_cast<uint8_t>((q0 & 0xF) | ((q1 & 0xF) << 4));
      qh |= static_cast<uint32_t>(q0 >> 4) << j;
      qh |= static_cast<uint32_t>(q1 >> 4) << (j + kQK / 2);
    }
    std::memcpy(b[i].qh, &qh, 4);
  }
}

// Symmetric, |q| <= 127 (never -128), so SIMD kernels may take |q| as an unsigned byte.
// Codes are x / d rounded half away from zero with the unrounded d = amax / 127 (ggml's
// reference quantizer); the stored d is its F16 rounding. NaN gives code 0.
void quant_q8_0(const float* x, BlockQ8_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0;
    for (int j = 0; j < kQK; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK; ++j) {
      const float v = x[j] * id;
      b[i].qs[j] = static_cast<int8_t>(std::isnan(v) ? 0 : static_cast<int>(std::clamp(std::round(v), -127.0f, 127.0f)));
    }
  }
}

// Q4_K (nmax 15) and Q5_K (nmax 31): ggml's reference quantizer, so llama-quantize (which
// runs it when given no importance matrix) and kestrel write the same bytes. Per sub-block
// of 32, weights rms(x) + |x_i| and the scale / min search; the 6-bit scales and mins are
// round-half-even of 63 * s / max(s) (wrapped to a byte, then capped at 63) while the F16
// d / dmin are max / 63; every code is then re-picked against the stored d * sc and
// dmin * m, except in a sub-block whose d * sc is 0, which keeps the search's codes.
// `codes` receives 256 codes.
void quant_k_super(const float* x, int nmax, float rmin, int nstep, f16_bits* d_out, f16_bits* dmin_out,
                   uint8_t* scales, uint8_t* codes) {
  float sc[8], mn[8], max_sc = 0, max_mn = 0;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float rms = std::sqrt(sum_x2 / 32);
    float w[32];
    for (int l = 0; l < 32; ++l) w[l] = rms + std::fabs(xs[l]);
    sc[j] = search_scale_min(xs, w, 32, nmax, rmin, 0.1f, nstep, codes + 32 * j, &mn[j]);
    if (sc[j] > max_sc) max_sc = sc[j];
    if (mn[j] > max_mn) max_mn = mn[j];
  }
  const float inv_sc = max_sc > 0 ? 63.0f / max_sc : 0.0f;
  const float inv_mn = max_mn > 0 ? 63.0f / max_mn : 0.0f;
  uint8_t qsc[8], qmn[8];
  for (int j = 0; j < 8; ++j) {
    qsc[j] = std::min<uint8_t>(63, static_cast<uint8_t>(round_even(inv_sc * sc[j])));
    qmn[j] = std::min<uint8_t>(63, static_cast<uint8_t>(round_even(inv_mn * mn[j])));
  }
  k_pack_scale_min(qsc, qmn, scales);
  *d_out = f32_to_f16(max_sc / 63.0f);
  *dmin_out = f32_to_f16(max_mn / 63.0f);
  const float d = f16_to_f32(*d_out), dmin = f16_to_f32(*dmin_out);
  for (int j = 0; j < 8; ++j) {
    const float ds = d * static_cast<float>(qsc[j]);
    if (ds == 0) continue;
    const float dm = dmin * static_cast<float>(qmn[j]);
    for (int l = 0; l < 32; ++l)
      codes[32 * j + l] = static_cast<uint8_t>(std::clamp(round_even((x[32 * j + l] + dm) / ds), 0, nmax));
  }
}

void quant_q4_K(const float* x, BlockQ4_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    uint8_t L[kQKK];
    quant_k_super(x, 15, -1.0f, 20, &b[i].d, &b[i].dmin, b[i].scales, L);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        b[i].qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
  }
}

void quant_q5_K(const float* x, BlockQ5_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    uint8_t L[kQKK];
    quant_k_super(x, 31, -0.5f, 15, &b[i].d, &b[i].dmin, b[i].scales, L);
    std::memset(b[i].qh, 0, sizeof(b[i].qh));
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        const int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
        b[i].qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
        b[i].qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
  }
}

// Q6_K: ggml's reference quantizer (see quant_k_super for why). Per sub-block of 16 the
// symmetric search; the int8 scales are round-half-even of -128 * s / s_max (s_max: the
// first scale of largest magnitude, signed), capped at 127, so -128 occurs; d = F16 of
// -s_max / 128. Codes are re-picked against d * sc except where that is 0. A super-block
// whose scales are all below 1e-15 is all zero bytes.
void quant_q6_K(const float* x, BlockQ6_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float sc[16], max_abs = 0, max_sc = 0;
    uint8_t L[kQKK];
    for (int j = 0; j < 16; ++j) {
      sc[j] = search_scale_sym(x + 16 * j, 16, 32, L + 16 * j);
      if (std::fabs(sc[j]) > max_abs) {
        max_abs = std::fabs(sc[j]);
        max_sc = sc[j];
      }
    }
    if (!(max_abs >= 1e-15f)) {
      std::memset(&b[i], 0, sizeof(b[i]));
      continue;
    }
    const float inv = -128.0f / max_sc;
    b[i].d = f32_to_f16(1.0f / inv);
    for (int j = 0; j < 16; ++j) b[i].scales[j] = static_cast<int8_t>(std::min(127, round_even(inv * sc[j])));
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < 16; ++j) {
      const float ds = d * static_cast<float>(b[i].scales[j]);
      if (ds == 0) continue;
      for (int l = 0; l < 16; ++l)
        L[16 * j + l] = static_cast<uint8_t>(std::clamp(round_even(x[16 * j + l] / ds), -32, 31) + 32);
    }
    for (int h = 0; h < 2; ++h) {
      uint8_t* ql = b[i].ql + 64 * h;
      uint8_t* qh = b[i].qh + 32 * h;
      const uint8_t* q = L + 128 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<uint8_t>((q[l] & 0xF) | ((q[l + 64] & 0xF) << 4));
        ql[l + 32] = static_cast<uint8_t>((q[l + 32] & 0xF) | ((q[l + 96] & 0xF) << 4));
        qh[l] = static_cast<uint8_t>((q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) |
                                     ((q[l + 96] >> 4) << 6));
      }
    }
  }
}

// ggml's Q8_K convention: the first value of largest magnitude maps to -127, so the code
// range is [-127, 127] and d may be negative.
void quant_q8_K(const float* x, BlockQ8_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float amax = 0, max = 0;
    for (int j = 0; j < kQKK; ++j)
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    if (!(amax > 0) || !std::isfinite(amax)) {
      std::memset(&b[i], 0, sizeof(b[i]));
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQKK; ++j) b[i].qs[j] = static_cast<int8_t>(clamp_round(iscale * x[j], -127, 127));
    for (int g = 0; g < kQKK / 16; ++g) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += b[i].qs[16 * g + l];
      b[i].bsums[g] = static_cast<int16_t>(s);
    }
    b[i].d = 1.0f / iscale;
  }
}

}  // namespace

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
  switch (type) {
    case DType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); break;
    case DType::F16: {
      const auto* s = static_cast<const f16_bits*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      break;
    }
    case DType::BF16: {
      const auto* s = static_cast<const bf16_bits*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      break;
    }
    case DType::Q4_0: deq_q4_0(static_cast<const BlockQ4_0*>(src), dst, n / kQK); break;
    case DType::Q5_0: deq_q5_0(static_cast<const BlockQ5_0*>(src), dst, n / kQK); break;
    case DType::Q4_1: deq_q4_1(static_cast<const BlockQ4_1*>(src), dst, n / kQK); break;
    case DType::Q5_1: deq_q5_1(static_cast<const BlockQ5_1*>(src), dst, n / kQK); break;
    case DType::Q8_0: deq_q8_0(static_cast<const BlockQ8_0*>(src), dst, n / kQK); break;
    case DType::Q4_K: deq_q4_K(static_cast<const BlockQ4_K*>(src), dst, n / kQKK); break;
    case DType::Q5_K: deq_q5_K(static_cast<const BlockQ5_K*>(src), dst, n / kQKK); break;
    case DType::Q6_K: deq_q6_K(static_cast<const BlockQ6_K*>(src), dst, n / kQKK); break;
    case DType::Q8_K: deq_q8_K(static_cast<const BlockQ8_K*>(src), dst, n / kQKK); break;
    default: break;  // not a row type (I8/I16/I32): nothing to do
  }
}

void quantize_row(DType type, const float* src, void* dst, int64_t n) {
  switch (type) {
    case DType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); break;
    case DType::F16: {
      auto* d = static_cast<f16_bits*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      break;
    }
    case DType::BF16: {
      auto* d = static_cast<bf16_bits*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      break;
    }
    case DType::Q4_0: quant_q4_0(src, static_cast<BlockQ4_0*>(dst), n / kQK); break;
    case DType::Q5_0: quant_q5_0(src, static_cast<BlockQ5_0*>(dst), n / kQK); break;
    case DType::Q4_1: quant_q4_1(src, static_cast<BlockQ4_1*>(dst), n / kQK); break;
    case DType::Q5_1: quant_q5_1(src, static_cast<BlockQ5_1*>(dst), n / kQK); break;
    case DType::Q8_0: quant_q8_0(src, static_cast<BlockQ8_0*>(dst), n / kQK); break;
    case DType::Q4_K: quant_q4_K(src, static_cast<BlockQ4_K*>(dst), n / kQKK); break;
    case DType::Q5_K: quant_q5_K(src, static_cast<BlockQ5_K*>(dst), n / kQKK); break;
    case DType::Q6_K: quant_q6_K(src, static_cast<BlockQ6_K*>(dst), n / kQKK); break;
    case DType::Q8_K: quant_q8_K(src, static_cast<BlockQ8_K*>(dst), n / kQKK); break;
    default: break;
  }
}

void quantize_row_q8_0(const float* src, BlockQ8_0* dst, int64_t n) { quant_q8_0(src, dst, n / kQK); }
void quantize_row_q8_K(const float* src, BlockQ8_K* dst, int64_t n) { quant_q8_K(src, dst, n / kQKK); }

}  // namespace kestrel::ref
