// The AMX matmul (ops/cpu/amx): Q4_0 / Q5_0 / Q8_0 / Q4_K / Q6_K weights at tile edges (M of 1,
// 15, 16, 17, 33, 100, N of 1, 15, 16, 17, 33; K of odd block counts), strided x / y views
// with batch dims, 1 and 2 threads, against the ref backend within the activation-rounding
// bound (the one tests/test_matmul.cpp states), bitwise against the cpu backend's avx512
// matmul (the property amx_matmul.h claims) and across batch sizes; the platform probe and a
// refused tile permission, which must leave dst untouched so the caller falls back.
// Skipped where the CPU (or the OS, or this build) has no AMX-INT8.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "ops/backend.h"
#include "ops/cpu/amx/amx_matmul.h"
#include "ops/ref/quant.h"
#include "platform/amx.h"
#include "platform/thread_pool.h"
#include "tests/reduced_sweep.h"

using namespace kestrel;

namespace {

constexpr uint32_t kGuard = 0x7FC0DEADu;  // a NaN pattern no kernel writes

std::vector<float> gaussian(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<float> deq;  // N x K
  Tensor t;
};

// [K, N] of `type`, each row padded by 6 bytes (row starts unaligned).
Weights make_weights(DType type, int64_t K, int64_t N, uint32_t seed) {
  Weights w;
  const size_t stride = dtype_row_size(type, K) + 6;
  w.bytes.assign(stride * static_cast<size_t>(N) + 1, 0xAB);
  w.deq.resize(static_cast<size_t>(K * N));
  const auto src = gaussian(static_cast<size_t>(K * N), seed);
  for (int64_t n = 0; n < N; ++n) {
    ref::quantize_row(type, src.data() + n * K, w.bytes.data() + n * stride, K);
    ref::dequantize_row(type, w.bytes.data() + n * stride, w.deq.data() + n * K, K);
  }
  w.t = make_tensor(type, w.bytes.data(), K, N);
  w.t.nb[1] = stride;
  w.t.nb[2] = w.t.nb[3] = stride * static_cast<size_t>(N);
  return w;
}

// A strided F32 view [K, M, B2] in `buf`: rows padded by `pad` elements, a gap between batches.
Tensor strided_view(std::vector<float>& buf, int64_t K, int64_t M, int64_t B2, int64_t pad) {
  Tensor t = make_tensor(DType::F32, nullptr, K, M, B2);
  t.nb[1] = static_cast<size_t>(K + pad) * 4;
  t.nb[2] = t.nb[1] * static_cast<size_t>(M) + 4 * static_cast<size_t>(pad);
  t.nb[3] = t.nb[2] * static_cast<size_t>(B2);
  buf.assign(t.nb[3] / 4 + 16, 0.0f);
  t.data = buf.data() + 3;
  return t;
}

float* row(const Tensor& t, int64_t r) { return t.row<float>(r % t.ne[1], r / t.ne[1]); }

struct Case {
  DType type;
  int64_t K, N, M, B2 = 1, pad = 0;
};

// One case: y by amx_matmul at 1 and 2 threads; checks guards, the ref bound and the
// bits of the cpu backend's result (cpu: the avx512 variant, or nullptr).
void check_case(const Case& c, Backend* cpu, uint32_t seed) {
  INFO(dtype_name(c.type) << " K=" << c.K << " N=" << c.N << " M=" << c.M << " B2=" << c.B2 << " pad=" << c.pad);
  Weights W = make_weights(c.type, c.K, c.N, seed);
  std::vector<float> xbuf, ybuf, y2buf;
  Tensor x = strided_view(xbuf, c.K, c.M, c.B2, c.pad);
  Tensor y = strided_view(ybuf, c.N, c.M, c.B2, c.pad + 1);
  Tensor y2 = strided_view(y2buf, c.N, c.M, c.B2, c.pad + 1);
  std::fill(xbuf.begin(), xbuf.end(), NAN);  // read past a row: a NaN result
  const int64_t rows = c.M * c.B2;
  const auto xv = gaussian(static_cast<size_t>(c.K * rows), seed + 1);
  for (int64_t r = 0; r < rows; ++r) std::memcpy(row(x, r), xv.data() + r * c.K, static_cast<size_t>(c.K) * 4);
  for (auto* b : {&ybuf, &y2buf})
    for (auto& v : *b) std::memcpy(&v, &kGuard, 4);

  std::vector<float> yref(static_cast<size_t>(c.N * rows));
  Tensor yr = make_tensor(DType::F32, yref.data(), c.N, c.M, c.B2);
  {
    OpCall rc{OpId::matmul, &yr, {&W.t, &x}, 2, nullptr};
    REQUIRE(validate_op(rc).ok());
    auto ref = backend_ref().create({});
    REQUIRE(ref.ok());
    REQUIRE((*ref)->run(rc).ok());
  }
  OpCall call{OpId::matmul, &y, {&W.t, &x}, 2, nullptr};
  REQUIRE(cpu::amx_supports(call));
  ThreadPool pool1(1), pool2(2);
  cpu::Exec exec1(&pool1, 1), exec2(&pool2, 2);
  REQUIRE(cpu::amx_matmul(call, exec1));
  OpCall call2{OpId::matmul, &y2, {&W.t, &x}, 2, nullptr};
  REQUIRE(cpu::amx_matmul(call2, exec2));

  // Guards: nothing outside the N values of each row is written.
  std::vector<char> written(ybuf.size(), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t n = 0; n < c.N; ++n) written[static_cast<size_t>(row(y, r) - ybuf.data()) + n] = 1;
  size_t bad_guard = 0;
  for (size_t i = 0; i < ybuf.size(); ++i) {
    uint32_t b;
    std::memcpy(&b, &ybuf[i], 4);
    if (!written[i] && b != kGuard) ++bad_guard;
  }
  CHECK(bad_guard == 0);
  // The thread count changes nothing.
  CHECK(std::memcmp(ybuf.data(), y2buf.data(), ybuf.size() * 4) == 0);

  // |y - y_ref| <= sum_k |W[n][k]| * e_k + 1e-5 * sum_k |W[n][k] x[k]| + 1e-6, e_k the
  // activation rounding bound of x's block: amax/254 of a 32-block (ActQ8), amax/128 of
  // a 256-block (Q8_K, whose +128 saturates to 127).
  size_t bad = 0;
  std::vector<float> ek(static_cast<size_t>(c.K));
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xv.data() + r * c.K;
    const int ab = c.type == DType::Q4_K || c.type == DType::Q6_K ? kQKK : kQK;
    for (int64_t b0 = 0; b0 < c.K; b0 += ab) {
      float am = 0;
      for (int k = 0; k < ab; ++k) am = std::fmax(am, std::fabs(xr[b0 + k]));
      for (int k = 0; k < ab; ++k) ek[static_cast<size_t>(b0 + k)] = am / (ab == kQK ? 254 : 128) * 1.0001f;
    }
    for (int64_t n = 0; n < c.N; ++n) {
      const float* wn = W.deq.data() + n * c.K;
      double bound = 1e-6;
      for (int64_t k = 0; k < c.K; ++k)
        bound += std::fabs(wn[k]) * ek[static_cast<size_t>(k)] + 1e-5 * std::fabs(wn[k] * xr[k]);
      const double err = std::fabs(static_cast<double>(row(y, r)[n]) - yref[static_cast<size_t>(r * c.N + n)]);
      if (!(err <= bound)) ++bad;
    }
  }
  CHECK(bad == 0);

  if (cpu) {  // bitwise equal to the avx512 matmul
    std::vector<float> ycbuf;
    Tensor yc = strided_view(ycbuf, c.N, c.M, c.B2, c.pad + 1);
    OpCall cc{OpId::matmul, &yc, {&W.t, &x}, 2, nullptr};
    REQUIRE(cpu->run(cc).ok());
    size_t diff = 0;
    for (int64_t r = 0; r < rows; ++r)
      diff += std::memcmp(row(y, r), row(yc, r), static_cast<size_t>(c.N) * 4) != 0;
    CHECK(diff == 0);
  }
}

// The avx512 variant of the cpu backend, or nullptr where it does not run.
std::unique_ptr<Backend> avx512_backend() {
  auto b = backend_cpu().create(BackendOptions{.n_threads = 1, .isa = CpuIsa::avx512});
  return b.ok() ? std::move(*b) : nullptr;
}

}  // namespace

TEST_CASE("amx probe: cpu, os and permission", "[op][matmul][amx][platform]") {
  const AmxState refused = amx_probe(true);
  CHECK_FALSE(refused.permitted);
  CHECK_FALSE(refused.int8_usable());
  CHECK(std::strlen(refused.reason) > 0);
  const AmxState s = amx_probe(false);
  if (!s.int8_usable()) {
    WARN("SKIP: no AMX-INT8 here: " << s.reason);
    CHECK(std::strlen(s.reason) > 0);
    return;
  }
  CHECK(std::strlen(s.reason) == 0);
  // Requesting again (the cached process state did so too) is granted again.
  CHECK(amx_state().int8_usable() == (std::getenv("KESTREL_AMX") == nullptr));
  CHECK(amx_probe(false).permitted);
}

TEST_CASE("amx matmul: a refused permission leaves dst untouched", "[op][matmul][amx]") {
  Weights W = make_weights(DType::Q8_0, 64, 17, 5);
  std::vector<float> xv = gaussian(64 * 20, 6), yv(17 * 20);
  Tensor x = make_tensor(DType::F32, xv.data(), 64, 20), y = make_tensor(DType::F32, yv.data(), 17, 20);
  for (auto& v : yv) std::memcpy(&v, &kGuard, 4);
  OpCall call{OpId::matmul, &y, {&W.t, &x}, 2, nullptr};
  CHECK(cpu::amx_supports(call));
  ThreadPool pool(2);
  cpu::Exec exec(&pool, 2);
  CHECK_FALSE(cpu::amx_matmul(call, exec, amx_probe(true)));
  size_t touched = 0;
  for (float v : yv) {
    uint32_t b;
    std::memcpy(&b, &v, 4);
    touched += b != kGuard;
  }
  CHECK(touched == 0);
  // Not a type it handles: false as well, whatever the CPU.
  Weights F = make_weights(DType::Q5_K, 256, 4, 7);
  std::vector<float> x2v = gaussian(256 * 2, 8), y2v(4 * 2);
  Tensor x2 = make_tensor(DType::F32, x2v.data(), 256, 2), y2 = make_tensor(DType::F32, y2v.data(), 4, 2);
  OpCall kq{OpId::matmul, &y2, {&F.t, &x2}, 2, nullptr};
  CHECK_FALSE(cpu::amx_supports(kq));
  CHECK_FALSE(cpu::amx_matmul(kq, exec));
  // Q4_1 / Q5_1 have no AMX tile: the avx512 path runs them (and no row range is listed).
  for (DType t : {DType::Q4_1, DType::Q5_1}) {
    INFO(dtype_name(t));
    Weights Q = make_weights(t, 64, 17, 9);
    OpCall q1{OpId::matmul, &y, {&Q.t, &x}, 2, nullptr};
    CHECK_FALSE(cpu::amx_supports(q1));
    CHECK_FALSE(cpu::amx_matmul(q1, exec));
    CHECK(cpu::amx_min_rows(t) == 0);
  }
}

TEST_CASE("amx matmul vs ref and avx512 at tile edges", "[op][matmul][amx]") {
  if (!cpu::amx_available()) {
    WARN("SKIP: AMX-INT8 not available: " << amx_state().reason);
    return;
  }
  auto cpu = avx512_backend();
  if (!cpu) WARN("no avx512 cpu variant here: the bitwise comparison is skipped");
  const bool reduced = test::reduced_sweep();
  const std::vector<int64_t> Ms = reduced ? std::vector<int64_t>{1, 16, 17, 33} : std::vector<int64_t>{1, 15, 16, 17, 33, 100};
  const std::vector<int64_t> Ns = reduced ? std::vector<int64_t>{1, 16, 17} : std::vector<int64_t>{1, 15, 16, 17, 33};
  uint32_t seed = 100;
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q5_0})
    for (int64_t K : {32, 96, 224, 4096})
      for (int64_t M : Ms)
        for (int64_t N : Ns) {
          if (reduced && K == 4096 && M > 17) continue;
          check_case({t, K, N, M, 1, 0}, cpu.get(), seed++);
        }
  for (DType t : {DType::Q4_K, DType::Q6_K})
    for (int64_t K : {256, 768})
      for (int64_t M : Ms)
        for (int64_t N : Ns) check_case({t, K, N, M, 1, 0}, cpu.get(), seed++);
  // Strided views with a batch dim (rows of x and y padded, gaps between batches).
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q5_0, DType::Q4_K, DType::Q6_K}) {
    const bool kq = t == DType::Q4_K || t == DType::Q6_K;
    const int64_t k1 = kq ? 256 : 96, k2 = kq ? 512 : 224;
    check_case({t, k1, 33, 7, 3, 5}, cpu.get(), seed++);
    check_case({t, k2, 17, 17, 2, 1}, cpu.get(), seed++);
  }
}

TEST_CASE("amx matmul: a row's result does not depend on the batch", "[op][matmul][amx]") {
  if (!cpu::amx_available()) {
    WARN("SKIP: AMX-INT8 not available: " << amx_state().reason);
    return;
  }
  ThreadPool pool(2);
  cpu::Exec exec(&pool, 2);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q5_0, DType::Q4_K, DType::Q6_K}) {
    INFO(dtype_name(t));
    const int64_t K = t == DType::Q4_K || t == DType::Q6_K ? 512 : 288, N = 40, M = 70;
    Weights W = make_weights(t, K, N, 11);
    std::vector<float> xv = gaussian(static_cast<size_t>(K * M), 12), yall(static_cast<size_t>(N * M));
    Tensor x = make_tensor(DType::F32, xv.data(), K, M), y = make_tensor(DType::F32, yall.data(), N, M);
    OpCall call{OpId::matmul, &y, {&W.t, &x}, 2, nullptr};
    REQUIRE(cpu::amx_matmul(call, exec));
    size_t diff = 0;
    for (int64_t m0 : {0, 5, 31}) {
      for (int64_t len : {1, 3, 16, 17}) {
        std::vector<float> ypart(static_cast<size_t>(N * len));
        Tensor xs = make_tensor(DType::F32, xv.data() + m0 * K, K, len);
        Tensor ys = make_tensor(DType::F32, ypart.data(), N, len);
        OpCall part{OpId::matmul, &ys, {&W.t, &xs}, 2, nullptr};
        REQUIRE(cpu::amx_matmul(part, exec));
        diff += std::memcmp(ypart.data(), yall.data() + m0 * N, ypart.size() * 4) != 0;
      }
    }
    CHECK(diff == 0);
  }
}
