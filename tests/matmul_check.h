// Shared by the matmul tests: random weights of any type with their dequantized floats,
// strided activation views, and check_matmul(), which runs one case (on a backend or
// through any runner, e.g. a named kernel variant) and checks every output against the
// ref backend within the bound below, guard bytes around the output included.
//
//   Shape s{K, N, M};
//   std::vector<float> y;
//   check_matmul(*cpu, DType::Q4_0, s, /*seed=*/1, &y);
//
// Tolerance. The quantized kernels round each activation to 8 bits (ActQ8: at most
// amax/254 per value for 32-blocks; Q8_K: at most amax/128 per value for 256-blocks,
// since the value mapped to +128 saturates to 127). So every output must satisfy
//   |y - y_ref| <= sum_k |W[n][k]| * e_k + 1e-5 * sum_k |W[n][k] * x[k]| + 1e-6,
// with e_k that bound for x's block (0 for F32/F16/BF16 weights, which use x as is) and
// the second term for float accumulation order. This can only fail on a real error.
// Kernels that round x to F16 (Shape::x_f16) are checked the same way against ref on x
// rounded as they document it, e_k = 0.
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "ops/backend.h"
#include "ops/half.h"
#include "ops/ref/quant.h"
#include "ops/ref/ref_kernels.h"

namespace kestrel::matmul_test {

inline constexpr uint32_t kGuard = 0x7FC0DEADu;  // a NaN pattern no kernel would write

inline std::vector<float> gaussian(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline int act_block(DType t) {
  if (t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q5_0 || t == DType::Q5_1 || t == DType::Q8_0) return kQK;
  if (t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K) return kQKK;
  return 0;
}

// A weight matrix [K, N] of type t with row stride row_size + w_pad bytes, and its
// dequantized floats.
struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<float> deq;  // N x K
  Tensor t;
};

inline Weights make_weights(DType type, int64_t K, int64_t N, size_t w_pad, uint32_t seed) {
  Weights w;
  const size_t rs = dtype_row_size(type, K), stride = rs + w_pad;
  w.bytes.assign(stride * N + 1, 0xAB);
  w.deq.resize(static_cast<size_t>(K * N));
  const auto src = gaussian(static_cast<size_t>(K * N), seed);
  for (int64_t n = 0; n < N; ++n) {
    ref::quantize_row(type, src.data() + n * K, w.bytes.data() + n * stride, K);
    ref::dequantize_row(type, w.bytes.data() + n * stride, w.deq.data() + n * K, K);
  }
  w.t = make_tensor(type, w.bytes.data(), K, N);
  w.t.nb[1] = stride;
  w.t.nb[2] = w.t.nb[3] = stride * N;
  return w;
}

// A strided F32 view [K, M, B2, B3] inside `buf`, rows padded by `pad` elements.
inline Tensor strided_view(std::vector<float>& buf, int64_t K, int64_t M, int64_t B2, int64_t B3, int64_t pad,
                    int64_t offset) {
  Tensor t = make_tensor(DType::F32, nullptr, K, M, B2, B3);
  t.nb[1] = static_cast<size_t>(K + pad) * 4;
  t.nb[2] = t.nb[1] * static_cast<size_t>(M) + 4 * static_cast<size_t>(pad);  // a gap between batches too
  t.nb[3] = t.nb[2] * static_cast<size_t>(B2);
  buf.assign(static_cast<size_t>(offset) + t.nb[3] * static_cast<size_t>(B3) / 4 + 64, 0.0f);
  t.data = buf.data() + offset;
  return t;
}

struct Shape {
  int64_t K, N, M, B2 = 1, B3 = 1;
  int64_t x_pad = 0, y_pad = 0;
  size_t w_pad = 0;
  // The kernel rounds each x row to F16 after scaling it by s = 2^(15 - e), max|x| < 2^e
  // (the AVX-512 long-row F16 decode, ops/cpu/k_matmul_f.inl).
  bool x_f16 = false;
};

// x rounded as Shape::x_f16 says, back in F32.
inline void round_row_f16(float* x, int64_t K) {
  float am = 0;
  for (int64_t k = 0; k < K; ++k) am = std::fmax(am, std::fabs(x[k]));
  int e = 0;
  if (std::isfinite(am) && am > 0) std::frexp(am, &e);
  const int shift = std::min(std::max(15 - e, -120), 120);
  for (int64_t k = 0; k < K; ++k) x[k] = std::ldexp(f16_to_f32(f32_to_f16(std::ldexp(x[k], shift))), -shift);
}

// Runs one matmul call: cpu.run(), or a chosen kernel variant.
using MatmulRunner = std::function<Status(const OpCall&)>;

// Runs one case through `run` and checks it against ref; returns the relative RMS error.
// out_y gets the outputs row by row (rows of the flattened batch, N values each).
inline double check_matmul(const MatmulRunner& run, DType type, const Shape& s, uint32_t seed,
                           std::vector<float>* out_y = nullptr) {
  Weights W = make_weights(type, s.K, s.N, s.w_pad, seed);
  std::vector<float> xbuf, ybuf;
  Tensor x = strided_view(xbuf, s.K, s.M, s.B2, s.B3, s.x_pad, 3);
  Tensor y = strided_view(ybuf, s.N, s.M, s.B2, s.B3, s.y_pad, 16);
  // NaN in x's padding: a kernel reading past a row poisons its result.
  std::fill(xbuf.begin(), xbuf.end(), NAN);
  const auto xv = gaussian(static_cast<size_t>(s.K * s.M * s.B2 * s.B3), seed + 1);
  const int64_t rows = s.M * s.B2 * s.B3;
  auto xrow = [&](int64_t r) { return x.row<float>(r % s.M, (r / s.M) % s.B2, r / (s.M * s.B2)); };
  auto yrow = [&](Tensor& t, int64_t r) { return t.row<float>(r % s.M, (r / s.M) % s.B2, r / (s.M * s.B2)); };
  for (int64_t r = 0; r < rows; ++r) std::memcpy(xrow(r), xv.data() + r * s.K, static_cast<size_t>(s.K) * 4);
  for (auto& v : ybuf) std::memcpy(&v, &kGuard, 4);

  // Oracle: ref::matmul into a packed y (on a packed copy of x rounded to F16 for x_f16).
  std::vector<float> yref(static_cast<size_t>(s.N * rows));
  Tensor yr = make_tensor(DType::F32, yref.data(), s.N, s.M, s.B2, s.B3);
  std::vector<float> xq;
  if (s.x_f16) {
    xq = xv;
    for (int64_t r = 0; r < rows; ++r) round_row_f16(xq.data() + r * s.K, s.K);
  }
  Tensor xqt = make_tensor(DType::F32, xq.data(), s.K, s.M, s.B2, s.B3);
  OpCall rc{OpId::matmul, &yr, {&W.t, s.x_f16 ? &xqt : &x}, 2, nullptr};
  REQUIRE(validate_op(rc).ok());
  ref::matmul(rc);

  OpCall call{OpId::matmul, &y, {&W.t, &x}, 2, nullptr};
  const Status st = run(call);
  INFO(st.to_string());
  REQUIRE(st.ok());

  // Guard bytes: everything outside the N values of each row is untouched.
  std::vector<char> written(ybuf.size(), 0);
  for (int64_t r = 0; r < rows; ++r) {
    const size_t off = static_cast<size_t>(yrow(y, r) - ybuf.data());
    for (int64_t n = 0; n < s.N; ++n) written[off + n] = 1;
  }
  size_t bad_guard = 0;
  for (size_t i = 0; i < ybuf.size(); ++i) {
    uint32_t b;
    std::memcpy(&b, &ybuf[i], 4);
    if (!written[i] && b != kGuard) ++bad_guard;
  }
  CHECK(bad_guard == 0);

  const int ab = act_block(type);
  const float e_scale = ab == kQK ? 1.0f / 254 : ab == kQKK ? 1.0f / 128 : 0.0f;
  double num = 0, den = 0;
  size_t bad = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = (s.x_f16 ? xq.data() : xv.data()) + r * s.K;
    std::vector<float> ek(static_cast<size_t>(s.K), 0.0f);
    if (ab)
      for (int64_t b0 = 0; b0 < s.K; b0 += ab) {
        float am = 0;
        for (int k = 0; k < ab; ++k) am = std::fmax(am, std::fabs(xr[b0 + k]));
        for (int k = 0; k < ab; ++k) ek[b0 + k] = am * e_scale * 1.0001f;
      }
    for (int64_t n = 0; n < s.N; ++n) {
      const float* wn = W.deq.data() + n * s.K;
      double bound = 1e-6;
      for (int64_t k = 0; k < s.K; ++k) bound += std::fabs(wn[k]) * (ek[k] + 1e-5 * std::fabs(xr[k]));
      const double got = yrow(y, r)[n], want = yref[static_cast<size_t>(r * s.N + n)];
      if (!(std::fabs(got - want) <= bound)) {
        if (bad < 3) UNSCOPED_INFO("row " << r << " n " << n << ": got " << got << " want " << want << " bound " << bound);
        ++bad;
      }
      num += (got - want) * (got - want);
      den += want * want;
      if (out_y) out_y->push_back(static_cast<float>(got));
    }
  }
  CHECK(bad == 0);
  return den > 0 ? std::sqrt(num / den) : 0.0;
}

// The same on a backend's run().
inline double check_matmul(Backend& cpu, DType type, const Shape& s, uint32_t seed,
                           std::vector<float>* out_y = nullptr) {
  auto run = [&](const OpCall& call) {
    REQUIRE(cpu.supports(call));
    return cpu.run(call);
  };
  return check_matmul(MatmulRunner(run), type, s, seed, out_y);
}

inline std::vector<CpuIsa> isas_to_test() {
  CpuIsa avail[8];
  const int n = cpu_isa_available(avail, 8);
  std::vector<CpuIsa> out(avail, avail + n);
  for (CpuIsa isa : kCpuIsas) {
    bool found = false;
    for (int i = 0; i < n; ++i) found |= avail[i] == isa;
    if (!found) WARN("SKIP: cpu variant " << cpu_isa_name(isa) << " is not compiled in or not supported by this CPU");
  }
  return out;
}

inline std::unique_ptr<Backend> make_cpu(CpuIsa isa, int threads) {
  auto b = backend_cpu().create(BackendOptions{.n_threads = threads, .isa = isa});
  REQUIRE(b.ok());
  return std::move(b).value();
}

}  // namespace kestrel::matmul_test
