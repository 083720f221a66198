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
// The K-quant quantizers search, for each sub-block, the (scale, min) pair that minimises
// the squared error of the 4/5-bit codes (a grid of candidate scales, each refined by a
// closed-form least-squares fit), then quantize those scales to 6 bits against the
// super-block scale and re-pick every code with the final, rounded scales.
#include "ops/ref/quant.h"

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

// Asymmetric fit x ~ scale * L - min, L in [0, nmax], scale >= 0, min >= 0 (the K-quant
// form). Tries 21 candidate inverse scales around nmax / range; for each, the codes are
// fixed and (scale, offset) solved by least squares; the best squared error wins.
void fit_scale_min(const float* x, int n, int nmax, float* scale_out, float* min_out) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::fmin(lo, x[i]);
    hi = std::fmax(hi, x[i]);
  }
  if (lo > 0) lo = 0;  // the offset only ever lowers values (min >= 0)
  if (!(hi > lo)) {    // all equal (or NaN): represent with the min alone
    *scale_out = 0;
    *min_out = std::isfinite(lo) ? -lo : 0.0f;
    return;
  }
  double sum_x = 0;
  for (int i = 0; i < n; ++i) sum_x += x[i];
  float best_scale = (hi - lo) / nmax, best_off = lo;
  double best_err = HUGE_VAL;
  for (int step = 0; step <= 20; ++step) {
    const float iscale = (static_cast<float>(nmax) - 1.0f + 0.1f * step) / (hi - lo);
    double sl = 0, sl2 = 0, sxl = 0;
    int L[kQKK];
    for (int i = 0; i < n; ++i) {
      L[i] = clamp_round(iscale * (x[i] - lo), 0, nmax);
      sl += L[i];
      sl2 += static_cast<double>(L[i]) * L[i];
      sxl += static_cast<double>(L[i]) * x[i];
    }
    const double det = n * sl2 - sl * sl;
    if (det <= 0) continue;
    double scale = (n * sxl - sl * sum_x) / det;
    double off = (sl2 * sum_x - sl * sxl) / det;
    if (off > 0) {  // min must be >= 0: refit the scale alone with offset 0
      off = 0;
      scale = sl2 > 0 ? sxl / sl2 : 0;
    }
    if (scale < 0) continue;
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const double e = scale * L[i] + off - x[i];
      err += e * e;
    }
    if (err < best_err) {
      best_err = err;
      best_scale = static_cast<float>(scale);
      best_off = static_cast<float>(off);
    }
  }
  *scale_out = best_scale;
  *min_out = -best_off;
}

// Symmetric fit x ~ scale * L, L in [-nmax, nmax - 1] (Q6_K form, scale may be negative).
float fit_scale_sym(const float* x, int n, int nmax) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  if (!(amax > 0)) return 0;
  float best = -max / nmax;
  double best_err = HUGE_VAL;
  for (int step = -9; step <= 9; ++step) {
    const float iscale = -(static_cast<float>(nmax) + 0.1f * step) / max;
    double sxl = 0, sl2 = 0;
    int L[16];
    for (int i = 0; i < n; ++i) {
      L[i] = clamp_round(iscale * x[i], -nmax, nmax - 1);
      sxl += static_cast<double>(L[i]) * x[i];
      sl2 += static_cast<double>(L[i]) * L[i];
    }
    if (sl2 <= 0) continue;
    const double scale = sxl / sl2;
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const double e = scale * L[i] - x[i];
      err += e * e;
    }
    if (err < best_err) {
      best_err = err;
      best = static_cast<float>(scale);
    }
  }
  return best;
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

void quant_q4_0(const float* x, BlockQ4_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    // The value of largest magnitude maps to code 0 (-8 * d), using the full range.
    const float max = signed_absmax(x, kQK);
    b[i].d = f32_to_f16(max / -8.0f);
    const float d = f16_to_f32(b[i].d);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = clamp_round(x[j] * id + 8.0f, 0, 15);
      const int q1 = clamp_round(x[j + kQK / 2] * id + 8.0f, 0, 15);
      b[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void quant_q5_0(const float* x, BlockQ5_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    // As Q4_0: the value of largest magnitude maps to code 0 (-16 * d).
    const float max = signed_absmax(x, kQK);
    b[i].d = f32_to_f16(max / -16.0f);
    const float d = f16_to_f32(b[i].d);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = clamp_round(x[j] * id + 16.0f, 0, 31);
      const int q1 = clamp_round(x[j + kQK / 2] * id + 16.0f, 0, 31);
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
// min and 1 / d, rounded half up by truncating v + 0.5. Non-finite input must not reach
// an out-of-range cast: a block with no ordered min/max (all NaN) is treated as zeros and
// every code is clamped to [0, nmax] (for finite input the clamp never binds below; above,
// Q4_1's cap of 15 is llama.cpp's own).
inline int code_half_up(float v, int nmax) {
  const float r = v + 0.5f;
  if (!(r >= 0.0f)) return 0;
  if (r >= static_cast<float>(nmax)) return nmax;
  return static_cast<int>(r);
}

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
void quant_q8_0(const float* x, BlockQ8_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0;
    for (int j = 0; j < kQK; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    b[i].d = f32_to_f16(amax / 127.0f);
    const float d = f16_to_f32(b[i].d);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < kQK; ++j) b[i].qs[j] = static_cast<int8_t>(clamp_round(x[j] * id, -127, 127));
  }
}

// Q4_K (nmax 15) and Q5_K (nmax 31) share the scale search; `codes` receives 256 codes.
void quant_k_super(const float* x, int nmax, f16_bits* d_out, f16_bits* dmin_out, uint8_t* scales,
                   uint8_t* codes) {
  float sc[8], mn[8], max_sc = 0, max_mn = 0;
  for (int j = 0; j < 8; ++j) {
    fit_scale_min(x + 32 * j, 32, nmax, &sc[j], &mn[j]);
    max_sc = std::fmax(max_sc, sc[j]);
    max_mn = std::fmax(max_mn, mn[j]);
  }
  *d_out = f32_to_f16(max_sc / 63.0f);
  *dmin_out = f32_to_f16(max_mn / 63.0f);
  const float d = f16_to_f32(*d_out), dmin = f16_to_f32(*dmin_out);
  uint8_t qsc[8], qmn[8];
  for (int j = 0; j < 8; ++j) {
    qsc[j] = static_cast<uint8_t>(d > 0 ? clamp_round(sc[j] / d, 0, 63) : 0);
    qmn[j] = static_cast<uint8_t>(dmin > 0 ? clamp_round(mn[j] / dmin, 0, 63) : 0);
  }
  k_pack_scale_min(qsc, qmn, scales);
  // Re-pick every code against the rounded scales actually stored.
  for (int j = 0; j < 8; ++j) {
    const float ds = d * qsc[j], dm = dmin * qmn[j];
    for (int l = 0; l < 32; ++l)
      codes[32 * j + l] = static_cast<uint8_t>(ds > 0 ? clamp_round((x[32 * j + l] + dm) / ds, 0, nmax) : 0);
  }
}

void quant_q4_K(const float* x, BlockQ4_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    uint8_t L[kQKK];
    quant_k_super(x, 15, &b[i].d, &b[i].dmin, b[i].scales, L);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        b[i].qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
  }
}

void quant_q5_K(const float* x, BlockQ5_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    uint8_t L[kQKK];
    quant_k_super(x, 31, &b[i].d, &b[i].dmin, b[i].scales, L);
    std::memset(b[i].qh, 0, sizeof(b[i].qh));
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        const int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
        b[i].qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
        b[i].qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
  }
}

void quant_q6_K(const float* x, BlockQ6_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float sc[16], amax = 0;
    for (int j = 0; j < 16; ++j) {
      sc[j] = fit_scale_sym(x + 16 * j, 16, 32);
      amax = std::fmax(amax, std::fabs(sc[j]));
    }
    b[i].d = f32_to_f16(amax / 127.0f);
    const float d = f16_to_f32(b[i].d);
    uint8_t L[kQKK];
    for (int j = 0; j < 16; ++j) {
      b[i].scales[j] = static_cast<int8_t>(d > 0 ? clamp_round(sc[j] / d, -127, 127) : 0);
      const float ds = d * b[i].scales[j];
      for (int l = 0; l < 16; ++l)
        L[16 * j + l] = static_cast<uint8_t>((ds != 0 ? clamp_round(x[16 * j + l] / ds, -32, 31) : 0) + 32);
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
