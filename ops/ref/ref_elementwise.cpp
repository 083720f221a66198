// Reference kernels: elementwise ops (add, mul, scale, gelu, silu, sigmoid,
// swiglu, geglu, copy, set_rows, fill, softcap). Scalar, one element at a time, computed in double where the
// function is transcendental so the oracle is exact to float rounding. The
// activations with a quake exp tier follow that tier's float formula
// (ops/ref/ref_exp.h), the exact tier the double oracle.
// Every tensor is addressed through its byte strides nb[1..3]; rows of the
// destination may alias rows of src0 for the ops that allow it in place.
#include <cmath>
#include <cstring>

#include "ops/half.h"
#include "ops/ref/ref_exp.h"
#include "ops/ref/ref_kernels.h"

namespace kestrel::ref {

namespace {

// Calls f(i1, i2, i3) for every row of t (rows in memory order of the indices).
template <typename F>
void for_each_row(const Tensor& t, F&& f) {
  for (int64_t i3 = 0; i3 < t.ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < t.ne[2]; ++i2)
      for (int64_t i1 = 0; i1 < t.ne[1]; ++i1) f(i1, i2, i3);
}

double gelu_d(double x, GeluForm form) {
  if (form == GeluForm::erf) return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  if (form == GeluForm::sigmoid) return x / (1.0 + std::exp(-1.702 * x));
  const double k = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

double silu_d(double x) { return x / (1.0 + std::exp(-x)); }

// dst = f(a, b) with b broadcast over rows (b.ne[i] == 1 repeats its row).
template <typename F>
void binary_broadcast(const OpCall& call, F&& f) {
  const Tensor& a = *call.src[0];
  const Tensor& b = *call.src[1];
  Tensor& d = *call.dst;
  for_each_row(a, [&](int64_t i1, int64_t i2, int64_t i3) {
    const float* x = a.row<float>(i1, i2, i3);
    const float* y = b.row<float>(i1 % b.ne[1], i2 % b.ne[2], i3 % b.ne[3]);
    float* out = d.row<float>(i1, i2, i3);
    for (int64_t i0 = 0; i0 < a.ne[0]; ++i0) out[i0] = f(x[i0], y[i0]);
  });
}

// dst = f(src0) elementwise.
template <typename F>
void unary(const OpCall& call, F&& f) {
  const Tensor& a = *call.src[0];
  Tensor& d = *call.dst;
  for_each_row(a, [&](int64_t i1, int64_t i2, int64_t i3) {
    const float* x = a.row<float>(i1, i2, i3);
    float* out = d.row<float>(i1, i2, i3);
    for (int64_t i0 = 0; i0 < a.ne[0]; ++i0) out[i0] = f(x[i0]);
  });
}

float load_plain(DType t, const char* p) {
  switch (t) {
    case DType::F16: { uint16_t h; std::memcpy(&h, p, 2); return f16_to_f32(h); }
    case DType::BF16: { uint16_t h; std::memcpy(&h, p, 2); return bf16_to_f32(h); }
    default: { float f; std::memcpy(&f, p, 4); return f; }
  }
}

void store_plain(DType t, char* p, float v) {
  switch (t) {
    case DType::F16: { const uint16_t h = f32_to_f16(v); std::memcpy(p, &h, 2); break; }
    case DType::BF16: { const uint16_t h = f32_to_bf16(v); std::memcpy(p, &h, 2); break; }
    default: std::memcpy(p, &v, 4); break;
  }
}

}  // namespace

void add(const OpCall& call) {
  binary_broadcast(call, [](float x, float y) { return x + y; });
}

void mul(const OpCall& call) {
  binary_broadcast(call, [](float x, float y) { return x * y; });
}

void scale(const OpCall& call) {
  const ScaleParams& p = call.p<ScaleParams>();
  // One rounding, as a fused multiply-add would give.
  unary(call, [&](float x) { return (float)((double)x * p.scale + p.bias); });
}

void gelu(const OpCall& call) {
  const GeluParams& p = call.p<GeluParams>();
  if (p.exp != ExpTier::exact) return unary(call, [&](float x) { return gelu_tier(p.exp, p.form, x); });
  unary(call, [&](float x) { return (float)gelu_d(x, p.form); });
}

void silu(const OpCall& call) {
  const ExpTier t = call.p<SiluParams>().exp;
  if (t != ExpTier::exact) return unary(call, [&](float x) { return silu_tier(t, x); });
  unary(call, [](float x) { return (float)silu_d(x); });
}

void sigmoid(const OpCall& call) {
  const ExpTier t = call.p<SigmoidParams>().exp;
  unary(call, [&](float x) { return sigmoid_tier(t, x); });
}

// The gated forms: same shapes for gate, up and dst (no broadcast).
void swiglu(const OpCall& call) {
  const ExpTier t = call.p<SiluParams>().exp;
  if (t != ExpTier::exact) return binary_broadcast(call, [&](float g, float u) { return silu_tier(t, g) * u; });
  binary_broadcast(call, [](float g, float u) { return (float)(silu_d(g) * u); });
}

void geglu(const OpCall& call) {
  const GeluParams& p = call.p<GeluParams>();
  if (p.exp != ExpTier::exact)
    return binary_broadcast(call, [&](float g, float u) { return gelu_tier(p.exp, p.form, g) * u; });
  binary_broadcast(call, [&](float g, float u) { return (float)(gelu_d(g, p.form) * u); });
}

// copy: element by element through float (exact for every F32/F16/BF16 pair
// except the rounding when narrowing); identical types copy the bits.
void copy(const OpCall& call) {
  const Tensor& a = *call.src[0];
  Tensor& d = *call.dst;
  const size_t sa = a.nb[0], sd = d.nb[0];
  for_each_row(a, [&](int64_t i1, int64_t i2, int64_t i3) {
    const char* x = a.row<const char>(i1, i2, i3);
    char* out = d.row<char>(i1, i2, i3);
    if (a.type == d.type) {
      std::memmove(out, x, a.row_size());
      return;
    }
    for (int64_t i0 = 0; i0 < a.ne[0]; ++i0) store_plain(d.type, out + i0 * sd, load_plain(a.type, x + i0 * sa));
  });
}

// set_rows: dst row ids[m] = x row m, converted as copy does; ids outside
// [0, R) are skipped.
void set_rows(const OpCall& call) {
  const Tensor& x = *call.src[0];
  const Tensor& ids = *call.src[1];
  Tensor& d = *call.dst;
  for (int64_t m = 0; m < x.ne[1]; ++m) {
    int32_t id;
    std::memcpy(&id, static_cast<const char*>(ids.data) + m * ids.nb[0], sizeof(id));
    if (id < 0 || id >= d.ne[1]) continue;
    const char* in = x.row<const char>(m);
    char* out = d.row<char>(id);
    for (int64_t i0 = 0; i0 < x.ne[0]; ++i0) store_plain(d.type, out + i0 * d.nb[0], load_plain(DType::F32, in + i0 * 4));
  }
}

void fill(const OpCall& call) {
  const float v = call.p<FillParams>().value;
  Tensor& d = *call.dst;
  for_each_row(d, [&](int64_t i1, int64_t i2, int64_t i3) {
    float* out = d.row<float>(i1, i2, i3);
    for (int64_t i0 = 0; i0 < d.ne[0]; ++i0) out[i0] = v;
  });
}

void softcap(const OpCall& call) {
  const double c = call.p<SoftcapParams>().cap;
  unary(call, [&](float x) { return (float)(c * std::tanh(x / c)); });
}

void transpose(const OpCall& call) {
  const Tensor& a = *call.src[0];
  Tensor& d = *call.dst;
  for (int64_t m = 0; m < a.ne[1]; ++m)
    for (int64_t k = 0; k < a.ne[0]; ++k) d.row<float>(k)[m] = a.row<const float>(m)[k];
}

}  // namespace kestrel::ref
