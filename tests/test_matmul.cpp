// matmul and get_rows: every CPU ISA variant this machine runs, against the ref kernels,
// for every weight type at awkward shapes, strided views, 1 and 2 threads, with guard
// bytes around the output (the helpers and the error bound are in tests/matmul_check.h).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "ops/backend.h"
#include "ops/cpu/matmul_variants.h"
#include "ops/ref/quant.h"
#include "ops/ref/ref_kernels.h"
#include "tests/matmul_check.h"
#include "tests/reduced_sweep.h"

using namespace kestrel;
using namespace kestrel::matmul_test;

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
        // Float K: 50 = one 32-element step of the AVX-512 one-row kernel, one vector of 16
        // and a scalar tail (not in the reduced sweep: emulated runs are aarch64).
        const std::vector<int64_t> Ks = bs == 1 ? (reduced ? std::vector<int64_t>{7, 67, 256}
                                                           : std::vector<int64_t>{1, 7, 33, 50, 67, 256})
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

TEST_CASE("matmul: f16 weights with long rows, every variant vs ref", "[op][matmul][cpu]") {
  // From 4096 elements per row the AVX-512 one-row kernels round the activation row to
  // F16 (dot_f16x in ops/cpu/k_matmul_f.inl), checked against ref on x rounded the same
  // way; every other path against ref on x. K at that edge, with scalar tails, 16-lane
  // steps and both; M 1 (the policy's row kernel) and more (dot1x1 takes each row alone).
  for (CpuIsa isa : isas_to_test()) {
    for (int threads : {1, 2}) {
      auto cpu = make_cpu(isa, threads);
      const MatmulVariant* vs[kMaxMatmulVariants];
      const int nv = std::min(cpu_matmul_variants(isa, DType::F16, vs, kMaxMatmulVariants), kMaxMatmulVariants);
      uint32_t seed = 7;
      for (int64_t K : {4095, 4096, 4097, 4096 + 16 + 3, 4096 + 48 + 15})
        for (int64_t N : {1, 17})
          for (int64_t M : {1, 2, 5}) {
            Shape s{K, N, M};
            s.x_pad = (M + N) % 3;
            s.y_pad = N % 2 ? 5 : 0;
            const bool f16x = isa == CpuIsa::avx512 && K >= 4096;
            INFO(cpu->name() << " threads " << threads << " K " << K << " N " << N << " M " << M);
            s.x_f16 = f16x && M == 1;
            check_matmul(*cpu, DType::F16, s, seed++);
            for (int i = 0; i < nv; ++i) {
              if (!vs[i]->available()) continue;
              const MatmulVariant& v = *vs[i];
              INFO(v.name);
              const std::string name = v.name;
              s.x_f16 = f16x && (name.find("_dot1x1") != std::string::npos ||
                                 (name.find("_dot4x1") != std::string::npos && M == 1));
              check_matmul([&](const OpCall& c) { return cpu_run_matmul_variant(*cpu, c, v); }, DType::F16, s, seed++);
            }
          }
    }
  }
}

// A row of values spanning F16's range and beyond (huge, tiny, zeros): the scaled F16
// activations neither overflow nor flush the row's largest values.
TEST_CASE("matmul: f16 weights, long rows, activations outside F16's range", "[op][matmul][cpu]") {
  const int64_t K = 5000, N = 3;
  const auto w = make_weights(DType::F16, K, N, 0, 3);
  for (float mag : {1e9f, 1e-9f, 3e-38f}) {
    std::vector<float> x(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) x[static_cast<size_t>(k)] = k % 7 == 0 ? 0.0f : mag * std::cos(0.1f * k);
    std::vector<float> want(N), got(N);
    Tensor xt = make_tensor(DType::F32, x.data(), K, 1);
    Tensor yw = make_tensor(DType::F32, want.data(), N, 1), yg = make_tensor(DType::F32, got.data(), N, 1);
    Tensor wt = w.t;
    OpCall rc{OpId::matmul, &yw, {&wt, &xt}, 2, nullptr};
    ref::matmul(rc);
    for (CpuIsa isa : isas_to_test()) {
      auto cpu = make_cpu(isa, 1);
      INFO(cpu->name() << " magnitude " << mag);
      REQUIRE(cpu->run(OpCall{OpId::matmul, &yg, {&wt, &xt}, 2, nullptr}).ok());
      for (int64_t n = 0; n < N; ++n) {
        double bound = 0;
        for (int64_t k = 0; k < K; ++k)
          bound += std::fabs(w.deq[static_cast<size_t>(n * K + k)] * x[static_cast<size_t>(k)]) * 1e-3;
        CHECK(std::isfinite(got[static_cast<size_t>(n)]));
        CHECK(std::fabs(got[static_cast<size_t>(n)] - want[static_cast<size_t>(n)]) <= bound);
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

namespace {

// Whether isas_to_test() has both variants.
bool have_isas(CpuIsa a, CpuIsa b) {
  bool ha = false, hb = false;
  for (CpuIsa isa : isas_to_test()) {
    ha = ha || isa == a;
    hb = hb || isa == b;
  }
  return ha && hb;
}

// Every weight type at the given activation rows, 19 weight rows, 3 blocks: the outputs of
// variant b bitwise those of variant a.
void check_same_bits(CpuIsa a, CpuIsa b, std::initializer_list<int64_t> rows, int threads) {
  auto ca = make_cpu(a, threads);
  auto cb = make_cpu(b, threads);
  for (DType type : kWeightTypes)
    for (int64_t M : rows) {
      INFO(dtype_name(type) << " M " << M << " threads " << threads);
      const int64_t K = dtype_block_size(type) == 1 ? 96 : 3 * dtype_block_size(type);
      std::vector<float> y1, y2;
      check_matmul(*ca, type, Shape{K, 19, M}, 7, &y1);
      check_matmul(*cb, type, Shape{K, 19, M}, 7, &y2);
      REQUIRE(y1.size() == y2.size());
      CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
    }
}

}  // namespace

TEST_CASE("matmul: the dotprod build of the neon kernels gives the neon bits", "[op][matmul][cpu]") {
  // neondot is the neon source compiled with sdot: the int8 dot products are
  // exact either way, so every output (float weights too) must be bitwise the same.
  if (!have_isas(CpuIsa::neon, CpuIsa::neondot)) {
    WARN("SKIP: needs the neon and neondot variants (an arm64 CPU with asimddp)");
    return;
  }
  check_same_bits(CpuIsa::neon, CpuIsa::neondot, {1, 3, 8}, 2);
}

TEST_CASE("matmul: the i8mm build of the neon kernels gives the neon bits", "[op][matmul][cpu][i8mm]") {
  // neoni8mm is the neon source compiled with i8mm (and dotprod): from 2 activation rows the
  // quantized types run its smmla tiles (ops/cpu/k_matmul_q_i8mm.inl), whose integer sums are
  // exact and whose float operations per output are the row kernel's, so every output must
  // be bitwise the neon variant's: every weight type, row counts around the tile's pairs and
  // groups of pairs, odd weight rows, one and two threads.
  if (!have_isas(CpuIsa::neon, CpuIsa::neoni8mm)) {
    WARN("SKIP: needs the neon and neoni8mm variants (an arm64 CPU with asimddp and i8mm)");
    return;
  }
  for (int threads : {1, 2}) check_same_bits(CpuIsa::neon, CpuIsa::neoni8mm, {1, 2, 3, 7, 8, 9, 17}, threads);
}

TEST_CASE("matmul: the AVX-VNNI build of the avx2 kernels gives the avx2 bits", "[op][matmul][cpu][avxvnni]") {
  // avxvnni is the avx2 source compiled with vpdpbusd / vpdpwssd where avx2 pairs vpmaddubsw
  // with vpmaddwd. No vpmaddubsw pair there reaches the int16 limit (|w| <= 128 or codes <= 63
  // against |x| <= 127), so the integer sums are exact either way and every output of every
  // variant (float weights too) must be bitwise the avx2 one's.
  if (!have_isas(CpuIsa::avx2, CpuIsa::avxvnni)) {
    WARN("SKIP: needs the avx2 and avxvnni variants (an x86-64 CPU with AVX-VNNI)");
    return;
  }
  for (int threads : {1, 2}) {
    auto plain = make_cpu(CpuIsa::avx2, threads);
    auto vnni = make_cpu(CpuIsa::avxvnni, threads);
    for (DType type : kWeightTypes) {
      const MatmulVariant* va[kMaxMatmulVariants];
      const MatmulVariant* vb[kMaxMatmulVariants];
      const int n = cpu_matmul_variants(CpuIsa::avx2, type, va, kMaxMatmulVariants);
      REQUIRE(cpu_matmul_variants(CpuIsa::avxvnni, type, vb, kMaxMatmulVariants) == n);
      const int bs = dtype_block_size(type);
      for (int64_t K : {bs == 1 ? int64_t{96} : int64_t{bs}, bs == 1 ? int64_t{67} : int64_t{7} * bs})
        for (int64_t N : {1, 19})
          for (int64_t M : {1, 3, 8}) {
            INFO(dtype_name(type) << " K " << K << " N " << N << " M " << M << " threads " << threads);
            std::vector<float> y1, y2;
            check_matmul(*plain, type, Shape{K, N, M}, 7, &y1);
            check_matmul(*vnni, type, Shape{K, N, M}, 7, &y2);
            REQUIRE(y1.size() == y2.size());
            CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
            for (int i = 0; i < n; ++i) {
              // The same kernel under the same name, "__avx2_" -> "__avxvnni_".
              std::string want = va[i]->name;
              want.replace(want.find("__avx2_"), 7, "__avxvnni_");
              INFO(va[i]->name);
              REQUIRE(want == vb[i]->name);
              if (!va[i]->available() || !vb[i]->available()) continue;
              check_matmul(MatmulRunner([&](const OpCall& c) { return cpu_run_matmul_variant(*plain, c, *va[i]); }),
                           type, Shape{K, N, M}, 7, &y1);
              check_matmul(MatmulRunner([&](const OpCall& c) { return cpu_run_matmul_variant(*vnni, c, *vb[i]); }),
                           type, Shape{K, N, M}, 7, &y2);
              REQUIRE(y1.size() == y2.size());
              CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
            }
          }
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
