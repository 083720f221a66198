// matmul and get_rows: every CPU ISA variant this machine runs, against the ref kernels,
// for every weight type at awkward shapes, strided views, 1 and 2 threads, with guard
// bytes around the output.
//
// Tolerance. The quantized kernels round each activation to 8 bits (ActQ8: at most
// amax/254 per value for 32-blocks; Q8_K: at most amax/128 per value for 256-blocks,
// since the value mapped to +128 saturates to 127). So every output must satisfy
//   |y - y_ref| <= sum_k |W[n][k]| * e_k + 1e-5 * sum_k |W[n][k] * x[k]| + 1e-6,
// with e_k that bound for x's block (0 for F32/F16/BF16 weights, which use x as is) and
// the second term for float accumulation order. This can only fail on a real error.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "ops/backend.h"
#include "ops/ref/quant.h"
#include "ops/ref/ref_kernels.h"
#include "tests/reduced_sweep.h"

using namespace kestrel;

namespace {

constexpr uint32_t kGuard = 0x7FC0DEADu;  // a NaN pattern no kernel would write

std::vector<float> gaussian(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

int act_block(DType t) {
  if (t == DType::Q4_0 || t == DType::Q5_0 || t == DType::Q8_0) return kQK;
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

Weights make_weights(DType type, int64_t K, int64_t N, size_t w_pad, uint32_t seed) {
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
Tensor strided_view(std::vector<float>& buf, int64_t K, int64_t M, int64_t B2, int64_t B3, int64_t pad,
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
};

// Runs one case on `cpu` and checks it against ref; returns the relative RMS error.
double check_matmul(Backend& cpu, DType type, const Shape& s, uint32_t seed, std::vector<float>* out_y = nullptr) {
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

  // Oracle: ref::matmul into a packed y.
  std::vector<float> yref(static_cast<size_t>(s.N * rows));
  Tensor yr = make_tensor(DType::F32, yref.data(), s.N, s.M, s.B2, s.B3);
  OpCall rc{OpId::matmul, &yr, {&W.t, &x}, 2, nullptr};
  REQUIRE(validate_op(rc).ok());
  ref::matmul(rc);

  OpCall call{OpId::matmul, &y, {&W.t, &x}, 2, nullptr};
  REQUIRE(cpu.supports(call));
  const Status st = cpu.run(call);
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
    const float* xr = xv.data() + r * s.K;
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

std::vector<CpuIsa> isas_to_test() {
  CpuIsa avail[8];
  const int n = cpu_isa_available(avail, 8);
  std::vector<CpuIsa> out(avail, avail + n);
  for (CpuIsa isa : {CpuIsa::avx512, CpuIsa::avx2, CpuIsa::sse42, CpuIsa::neon}) {
    bool found = false;
    for (int i = 0; i < n; ++i) found |= avail[i] == isa;
    if (!found) WARN("SKIP: cpu variant " << cpu_isa_name(isa) << " is not compiled in or not supported by this CPU");
  }
  return out;
}

std::unique_ptr<Backend> make_cpu(CpuIsa isa, int threads) {
  auto b = backend_cpu().create(BackendOptions{.n_threads = threads, .isa = isa});
  REQUIRE(b.ok());
  return std::move(b).value();
}

}  // namespace

TEST_CASE("matmul: every cpu variant and weight type vs ref at awkward shapes", "[op][matmul][cpu]") {
  // Reduced (sanitizers, emulators): the tile edges of N (8 - 1, 8, 8 + 1, 16, 16 + 1) and
  // M (1, 4 - 1, 4, 4 + 1, 13) and three K for float weights; about 40% of the cases.
  const bool reduced = kestrel::test::reduced_sweep();
  const std::vector<int64_t> Ns = reduced ? std::vector<int64_t>{1, 7, 8, 9, 16, 17, 65}
                                          : std::vector<int64_t>{1, 7, 8, 9, 15, 16, 17, 33, 65};
  const std::vector<int64_t> Ms = reduced ? std::vector<int64_t>{1, 3, 4, 5, 13}
                                          : std::vector<int64_t>{1, 2, 3, 4, 5, 8, 13};
  for (CpuIsa isa : isas_to_test()) {
    for (int threads : {1, 2}) {
      auto cpu = make_cpu(isa, threads);
      for (DType type : kWeightTypes) {
        const int bs = dtype_block_size(type);
        const std::vector<int64_t> Ks = bs == 1 ? (reduced ? std::vector<int64_t>{7, 67, 256}
                                                           : std::vector<int64_t>{1, 7, 33, 67, 256})
                                                : std::vector<int64_t>{bs, 2 * bs, 7 * bs};
        double worst = 0;
        uint32_t seed = 1;
        for (int64_t K : Ks)
          for (int64_t N : Ns)
            for (int64_t M : Ms) {
              INFO(cpu->name() << " threads " << threads << " " << dtype_name(type) << " K " << K << " N " << N
                               << " M " << M);
              Shape s{K, N, M};
              s.x_pad = (M + N) % 3;  // a mix of packed and strided views
              s.y_pad = N % 2 ? 5 : 0;
              worst = std::fmax(worst, check_matmul(*cpu, type, s, seed++));
            }
        WARN(cpu->name() << " t" << threads << " " << dtype_name(type) << ": worst relative RMS error vs ref "
                         << worst);
      }
    }
  }
}

TEST_CASE("matmul: batch dims, strided views, padded weight rows", "[op][matmul][cpu]") {
  for (CpuIsa isa : isas_to_test()) {
    auto cpu = make_cpu(isa, 2);
    for (DType type : kWeightTypes) {
      INFO(cpu->name() << " " << dtype_name(type));
      const int64_t K = dtype_block_size(type) == 1 ? 96 : 2 * dtype_block_size(type);
      Shape s{K, 19, 3, 2, 2};
      s.x_pad = 5;
      s.y_pad = 2;
      s.w_pad = 6;
      check_matmul(*cpu, type, s, 99);
    }
  }
}

TEST_CASE("matmul: results do not depend on the thread count", "[op][matmul][cpu]") {
  for (CpuIsa isa : isas_to_test()) {
    for (DType type : kWeightTypes) {
      INFO(cpu_isa_name(isa) << " " << dtype_name(type));
      const int64_t K = dtype_block_size(type) == 1 ? 512 : 4 * dtype_block_size(type);
      Shape s{K, 257, 6};
      std::vector<float> y1, y2;
      auto c1 = make_cpu(isa, 1);
      auto c2 = make_cpu(isa, 2);
      check_matmul(*c1, type, s, 5, &y1);
      check_matmul(*c2, type, s, 5, &y2);
      CHECK(y1 == y2);
    }
  }
}

TEST_CASE("matmul: float weights over several K chunks and panels, and the same bits at any prompt batch", "[op][matmul][cpu]") {
  // K beyond the 256- and 1024-element chunks of the two float prompt paths with a partial
  // last chunk, N beyond their panels with a partial last panel, and M below, at and above
  // the batch (8) from which the packed path runs, with partial 6-row micro-tiles. Each must
  // match the reference; in the packed path a row's result must not depend on the batch.
  for (CpuIsa isa : isas_to_test()) {
    for (int threads : {1, 2}) {
      auto cpu = make_cpu(isa, threads);
      for (DType type : {DType::F16, DType::BF16, DType::F32}) {
        INFO(cpu->name() << " t" << threads << " " << dtype_name(type));
        std::vector<float> y5, y8, y13;
        check_matmul(*cpu, type, Shape{1100, 101, 5}, 21, &y5);
        check_matmul(*cpu, type, Shape{1100, 101, 8}, 21, &y8);
        check_matmul(*cpu, type, Shape{1100, 101, 13}, 21, &y13);
        REQUIRE(y13.size() >= y8.size());
        CHECK(std::memcmp(y8.data(), y13.data(), y8.size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST_CASE("get_rows: every cpu variant and weight type equals ref", "[op][get_rows][cpu]") {
  for (CpuIsa isa : isas_to_test()) {
    for (int threads : {1, 2}) {
      auto cpu = make_cpu(isa, threads);
      for (DType type : kWeightTypes) {
        const int bs = dtype_block_size(type);
        for (int64_t K : {int64_t(bs == 1 ? 13 : bs), int64_t(bs == 1 ? 300 : 3 * bs)}) {
          INFO(cpu->name() << " " << dtype_name(type) << " K " << K);
          const int64_t N = 17;
          Weights W = make_weights(type, K, N, 4, 11);
          const std::vector<int32_t> ids = {3, 0, 16, 3, 9, -1, 17, 1, 12};  // -1, 17: out of range
          Tensor it = make_tensor(DType::I32, const_cast<int32_t*>(ids.data()), static_cast<int64_t>(ids.size()));
          const int64_t M = static_cast<int64_t>(ids.size());
          std::vector<float> got(static_cast<size_t>(K * M) + 8), want(static_cast<size_t>(K * M));
          for (auto& v : got) std::memcpy(&v, &kGuard, 4);
          Tensor d = make_tensor(DType::F32, got.data() + 4, K, M);
          Tensor dr = make_tensor(DType::F32, want.data(), K, M);
          OpCall call{OpId::get_rows, &d, {&W.t, &it}, 2, nullptr};
          OpCall rcall{OpId::get_rows, &dr, {&W.t, &it}, 2, nullptr};
          REQUIRE(validate_op(rcall).ok());
          ref::get_rows(rcall);
          REQUIRE(cpu->run(call).ok());
          CHECK(std::memcmp(got.data() + 4, want.data(), want.size() * 4) == 0);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t k = 0; k < K; ++k) {
              const int32_t id = ids[static_cast<size_t>(m)];
              const float expect = id >= 0 && id < N ? W.deq[static_cast<size_t>(id * K + k)] : 0.0f;
              if (want[static_cast<size_t>(m * K + k)] != expect) FAIL("ref get_rows wrong at " << m << "," << k);
            }
          for (int i = 0; i < 4; ++i) {
            uint32_t a, b;
            std::memcpy(&a, &got[i], 4);
            std::memcpy(&b, &got[got.size() - 1 - i], 4);
            CHECK(a == kGuard);
            CHECK(b == kGuard);
          }
        }
      }
    }
  }
}
