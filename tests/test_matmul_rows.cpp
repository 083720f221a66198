// The few-rows matmul tile (ops/cpu/k_matmul_q_vnni.inl, "<w>_matmul__avx512_vnni4x4"):
// one unpacked block of 4 weight rows applied to 4 activation rows, for batched decoding.
// At awkward shapes (activation rows 1..9 around its groups of 4, weight rows around its
// tile of 4 and the 16-row chunk, odd block counts) it is checked against ops/ref within
// the activation-rounding bound of tests/matmul_check.h, and each output row is checked
// bitwise against the same token computed alone (M = 1, the decode tile of the default
// policy): a sequence's logits must not depend on how many others share its step.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "ops/cpu/matmul_variants.h"
#include "tests/matmul_check.h"
#include "tests/reduced_sweep.h"

using namespace kestrel;
using namespace kestrel::matmul_test;

namespace {

constexpr DType kTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0};

bool have_avx512() {
  for (CpuIsa isa : isas_to_test())
    if (isa == CpuIsa::avx512) return true;
  return false;
}

const MatmulVariant* rows_tile(DType w) {
  const std::string name = std::string(dtype_name(w)) + "_matmul__avx512_vnni4x4";
  const MatmulVariant* v = cpu_matmul_find_variant(name.c_str());
  return v && v->available() ? v : nullptr;
}

}  // namespace

TEST_CASE("few-rows tile against ref at awkward shapes", "[op][matmul][cpu][rows]") {
  const bool reduced = kestrel::test::reduced_sweep();
  if (!have_avx512()) {
    WARN("SKIP: no AVX-512 variant on this CPU or build");
    return;
  }
  auto cpu = make_cpu(CpuIsa::avx512, 2);
  bool ran = false;
  for (DType w : kTypes) {
    const MatmulVariant* v = rows_tile(w);
    if (!v) continue;
    ran = true;
    // Up to 4 groups of 4 rows share a weight block (kVnniGroups): 13..22 rows take
    // 4 groups, then 1 or 2 more, with partial and lone last groups.
    const std::vector<int64_t> Ms = reduced ? std::vector<int64_t>{1, 2, 4, 5, 7, 17}
                                            : std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 17, 18, 22};
    const std::vector<int64_t> Ns = reduced ? std::vector<int64_t>{1, 5, 17} : std::vector<int64_t>{1, 3, 4, 5, 15, 16, 17, 33};
    uint32_t seed = 7;
    double worst = 0;
    for (int64_t nb : {1, 3, 7})
      for (int64_t N : Ns)
        for (int64_t M : Ms) {
          INFO(v->name << " blocks " << nb << " N " << N << " M " << M);
          Shape s{nb * kQK, N, M};
          s.x_pad = M % 2 ? 3 : 0;
          s.y_pad = N % 3 ? 1 : 0;
          s.w_pad = N % 2 ? 6 : 0;  // weight rows not at block-multiple strides
          worst = std::max(worst, check_matmul(
                                      [&](const OpCall& c) { return cpu_run_matmul_variant(*cpu, c, *v); }, w, s, seed++));
        }
    WARN(v->name << ": worst relative RMS error vs ref " << worst);
  }
  if (!ran) WARN("SKIP: no AVX-512 VNNI few-rows tile on this CPU or build");
}

TEST_CASE("few-rows tile: each row bitwise the token computed alone", "[op][matmul][cpu][rows]") {
  const bool reduced = kestrel::test::reduced_sweep();
  if (!have_avx512()) {
    WARN("SKIP: no AVX-512 variant on this CPU or build");
    return;
  }
  bool ran = false;
  for (int threads : {1, 2}) {
    auto cpu = make_cpu(CpuIsa::avx512, threads);
    for (DType w : kTypes) {
      const MatmulVariant* v = rows_tile(w);
      if (!v) continue;
      ran = true;
      for (int64_t nb : {1, 5}) {
        const int64_t K = nb * kQK, N = 21, Mmax = reduced ? 9 : 22;
        // x is drawn row by row from one seed, so a smaller M is a prefix of the batch:
        // row r sits in other groups and positions (a lone last row takes the decode tile).
        std::vector<float> batch;
        check_matmul([&](const OpCall& c) { return cpu_run_matmul_variant(*cpu, c, *v); }, w, Shape{K, N, Mmax}, 3,
                     &batch);
        for (int64_t M = 2; M <= Mmax; ++M) {
          INFO(v->name << " t" << threads << " blocks " << nb << " M " << M);
          std::vector<float> part;
          check_matmul([&](const OpCall& c) { return cpu_run_matmul_variant(*cpu, c, *v); }, w, Shape{K, N, M}, 3,
                       &part);
          REQUIRE(part.size() == static_cast<size_t>(M * N));
          CHECK(std::memcmp(part.data(), batch.data(), part.size() * sizeof(float)) == 0);
        }
        // Row 0 alone through the backend's policy (M = 1: the decode tile).
        std::vector<float> alone;
        check_matmul(*cpu, w, Shape{K, N, 1}, 3, &alone);
        INFO(v->name << " t" << threads << " blocks " << nb << " against M = 1");
        CHECK(std::memcmp(alone.data(), batch.data(), alone.size() * sizeof(float)) == 0);
      }
    }
  }
  if (!ran) WARN("SKIP: no AVX-512 VNNI few-rows tile on this CPU or build");
}

TEST_CASE("K-quant row kernels for a few rows: ref and bitwise the token alone", "[op][matmul][cpu][rows]") {
  // Q4_K / Q6_K take the row kernel for groups of up to 4 activation rows (8 on AVX-512
  // VNNI, k_matmul_q_rows.inl: groups of 2 or 3 rows on 512-bit row kernels, groups of 4..8
  // through the pair kernels on rows repacked in pairs, an odd last row paired with itself):
  // each row must get the bits the one-row kernel gives it, whatever its group. Where the
  // pair kernels go to 8 pairs, rows go in groups of 16 (k_matmul.inl, kPairGroup). M runs
  // past two groups of 16, so tails of 1, 2, 3 and 4+ rows all occur.
  const bool reduced = kestrel::test::reduced_sweep();
  for (CpuIsa isa : isas_to_test()) {
    auto cpu = make_cpu(isa, 2);
    for (DType w : {DType::Q4_K, DType::Q6_K}) {
      for (int64_t nb : reduced ? std::vector<int64_t>{1, 3} : std::vector<int64_t>{1, 3, 7}) {
        const int64_t K = nb * kQKK, N = reduced ? 9 : 17, Mmax = 38;
        INFO(cpu->name() << " " << dtype_name(w) << " super-blocks " << nb);
        std::vector<float> batch;
        check_matmul(*cpu, w, Shape{K, N, Mmax}, 5, &batch);
        for (int64_t M = 1; M < Mmax; ++M) {
          INFO("M " << M);
          std::vector<float> part;
          Shape s{K, N, M};
          s.x_pad = M % 2 ? 3 : 0;
          check_matmul(*cpu, w, s, 5, &part);
          REQUIRE(part.size() == static_cast<size_t>(M * N));
          CHECK(std::memcmp(part.data(), batch.data(), part.size() * sizeof(float)) == 0);
        }
      }
    }
  }
}
