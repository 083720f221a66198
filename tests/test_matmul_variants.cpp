// Named matmul kernel variants (ops/cpu/matmul_variants.h): every variant of every ISA
// variant this machine runs, run on its own through cpu_run_matmul_variant, against the
// ref backend at its tile edges (rows M, weight rows N, odd block counts of K) within the
// bound of tests/matmul_check.h; the table agrees with the default policy (run() gives
// bitwise what the variant whose row range holds M gives); and the batch-consistency
// property per variant: a quantized variant (and the float GEMM) gives a token's output
// row bitwise the same whatever M, and all variants of a quantized type agree bitwise.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ops/cpu/matmul_variants.h"
#include "tests/matmul_check.h"
#include "tests/reduced_sweep.h"

using namespace kestrel;
using namespace kestrel::matmul_test;

namespace {

// The variants this machine runs (a table may list some, e.g. AMX, that it cannot).
std::vector<const MatmulVariant*> variants_of(CpuIsa isa, DType w) {
  const MatmulVariant* v[kMaxMatmulVariants];
  const int n = cpu_matmul_variants(isa, w, v, kMaxMatmulVariants);
  REQUIRE(n <= kMaxMatmulVariants);
  std::vector<const MatmulVariant*> out;
  for (int i = 0; i < n; ++i)
    if (v[i]->available()) out.push_back(v[i]);
  return out;
}

// The micro-tile MR x NR from a name's "<kind><MR>x<NR>" tail.
void tile_of(const char* name, int* mr, int* nr) {
  const std::string s(name);
  const size_t x = s.rfind('x');
  size_t d = x;
  while (d > 0 && s[d - 1] >= '0' && s[d - 1] <= '9') --d;
  REQUIRE(x != std::string::npos);
  REQUIRE(d < x);
  *mr = std::stoi(s.substr(d, x - d));
  *nr = std::stoi(s.substr(x + 1));
}

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// Sorted, de-duplicated values >= 1.
std::vector<int64_t> edges(std::vector<int64_t> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](int64_t x) { return x < 1; }), v.end());
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

MatmulRunner variant_runner(Backend& cpu, const MatmulVariant& v) {
  return [&cpu, &v](const OpCall& call) { return cpu_run_matmul_variant(cpu, call, v); };
}

}  // namespace

TEST_CASE("matmul variants: names, lookup and policy ranges", "[op][matmul][cpu][variants]") {
  std::set<std::string> names;
  for (CpuIsa isa : isas_to_test()) {
    auto cpu = make_cpu(isa, 1);
    CpuIsa got = CpuIsa::auto_detect;
    REQUIRE(cpu_backend_isa(*cpu, &got));
    CHECK(got == isa);
    // The ISA tag of the names: cpu_isa_name without its dot ("sse4.2" -> "sse42").
    std::string tag = cpu_isa_name(isa);
    tag.erase(std::remove(tag.begin(), tag.end(), '.'), tag.end());
    for (DType w : kWeightTypes) {
      INFO(cpu_isa_name(isa) << " " << dtype_name(w));
      const auto vs = variants_of(isa, w);
      REQUIRE(!vs.empty());
      for (const MatmulVariant* v : vs) {
        INFO(v->name);
        CHECK(std::string(v->name).rfind(std::string(dtype_name(w)) + "_matmul__" + tag + "_", 0) == 0);
        CHECK(v->wtype == w);
        CHECK(v->run != nullptr);
        CHECK(cpu_matmul_find_variant(v->name) == v);
        CHECK(names.insert(v->name).second);  // unique over all ISAs
        int mr = 0, nr = 0;
        tile_of(v->name, &mr, &nr);
        CHECK(mr >= 1);
        CHECK(nr >= 1);
      }
      // Every row count has a policy variant: the first available one whose range holds
      // it (ranges may overlap where a variant listed earlier is preferred when available).
      for (int64_t m : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{4}, int64_t{5}, int64_t{7}, int64_t{8},
                        int64_t{9}, int64_t{64}, int64_t{4096}, int64_t{kRowsUnbounded}}) {
        const MatmulVariant* first = nullptr;
        for (const MatmulVariant* v : vs)
          if (!first && m >= v->min_rows && m <= v->max_rows) first = v;
        CHECK(first != nullptr);
        CHECK(cpu_matmul_policy_variant(isa, w, m) == first);
      }
      CHECK(cpu_matmul_policy_variant(isa, w, 0) == nullptr);
    }
    CHECK(variants_of(isa, DType::I32).empty());
  }
  CHECK(cpu_matmul_find_variant("no_such_matmul__avx2_dot4x1") == nullptr);
}

TEST_CASE("matmul variants: each against ref at tile edges", "[op][matmul][cpu][variants]") {
  const bool reduced = kestrel::test::reduced_sweep();
  for (CpuIsa isa : isas_to_test()) {
    auto cpu = make_cpu(isa, 2);
    for (DType w : kWeightTypes) {
      const int bs = dtype_block_size(w);
      // Odd block counts (1, 3, 7); for float weights K around the SIMD widths and past
      // the GEMM's 256-element K chunk.
      const std::vector<int64_t> Ks = bs == 1 ? std::vector<int64_t>{7, 67, 300} : std::vector<int64_t>{bs, 3 * bs, 7 * bs};
      for (const MatmulVariant* v : variants_of(isa, w)) {
        int mr = 0, nr = 0;
        tile_of(v->name, &mr, &nr);
        // The micro-tile's edges, the 4-row groups, the policy thresholds.
        const auto Ms = reduced ? edges({1, mr - 1, mr + 1, 2 * mr + 1, 4, 8})
                                : edges({1, 2, mr - 1, mr, mr + 1, 2 * mr + 1, 3, 4, 5, 7, 8, 9});
        // The tile's edges, the decode tile (8) and the 16-row N chunk.
        const auto Ns = reduced ? edges({1, nr - 1, nr + 1, 9, 17})
                                : edges({1, nr - 1, nr, nr + 1, 2 * nr + 1, 7, 8, 9, 17});
        double worst = 0;
        uint32_t seed = 1;
        for (int64_t K : Ks)
          for (int64_t N : Ns)
            for (int64_t M : Ms) {
              INFO(v->name << " K " << K << " N " << N << " M " << M);
              Shape s{K, N, M};
              s.x_pad = (M + N) % 3;  // a mix of packed and strided views
              s.y_pad = N % 2 ? 5 : 0;
              worst = std::max(worst, check_matmul(variant_runner(*cpu, *v), w, s, seed++));
            }
        WARN(v->name << ": worst relative RMS error vs ref " << worst);
      }
    }
  }
}

TEST_CASE("matmul variants: Q4_1 / Q5_1 at awkward shapes", "[op][matmul][cpu][variants]") {
  // The min term (m_w * d_x * sum(q_x)) is the new part of these kernels: one block, three
  // blocks, and a long row (129 blocks, past the 4-block unroll and the prefetch distance),
  // activation rows around the 4-row groups and odd weight rows around the 8-row tile.
  const bool reduced = kestrel::test::reduced_sweep();
  for (CpuIsa isa : isas_to_test()) {
    auto cpu = make_cpu(isa, 2);
    for (DType w : {DType::Q4_1, DType::Q5_1})
      for (const MatmulVariant* v : variants_of(isa, w)) {
        double worst = 0;
        uint32_t seed = 3;
        for (int64_t K : {int64_t{32}, int64_t{96}, int64_t{4096 + 32}})
          for (int64_t N : reduced ? std::vector<int64_t>{1, 9} : std::vector<int64_t>{1, 9, 33})
            for (int64_t M : reduced ? std::vector<int64_t>{1, 7} : std::vector<int64_t>{1, 3, 7, 17}) {
              INFO(v->name << " K " << K << " N " << N << " M " << M);
              Shape s{K, N, M};
              s.x_pad = M % 2;
              s.w_pad = N % 3;
              worst = std::max(worst, check_matmul(variant_runner(*cpu, *v), w, s, seed++));
            }
        WARN(v->name << ": worst relative RMS error vs ref " << worst);
      }
  }
}

TEST_CASE("matmul variants: batch dims and strided views", "[op][matmul][cpu][variants]") {
  for (CpuIsa isa : isas_to_test()) {
    auto cpu = make_cpu(isa, 2);
    for (DType w : kWeightTypes)
      for (const MatmulVariant* v : variants_of(isa, w)) {
        INFO(v->name);
        const int64_t K = dtype_block_size(w) == 1 ? 96 : 2 * dtype_block_size(w);
        Shape s{K, 19, 3, 2, 2};
        s.x_pad = 5;
        s.y_pad = 2;
        s.w_pad = 6;
        check_matmul(variant_runner(*cpu, *v), w, s, 99);
      }
  }
}

TEST_CASE("matmul variants: run() is the policy variant, bit for bit", "[op][matmul][cpu][variants]") {
  for (CpuIsa isa : isas_to_test())
    for (int threads : {1, 2}) {
      auto cpu = make_cpu(isa, threads);
      for (DType w : kWeightTypes) {
        const int64_t K = dtype_block_size(w) == 1 ? 300 : 3 * dtype_block_size(w);
        for (int64_t M : {1, 2, 3, 4, 5, 7, 8, 9, 13}) {
          const MatmulVariant* v = cpu_matmul_policy_variant(isa, w, M);
          REQUIRE(v != nullptr);
          INFO(cpu->name() << " t" << threads << " " << v->name << " M " << M);
          std::vector<float> by_run, by_variant;
          check_matmul(*cpu, w, Shape{K, 37, M}, 7, &by_run);
          check_matmul(variant_runner(*cpu, *v), w, Shape{K, 37, M}, 7, &by_variant);
          CHECK(by_run == by_variant);
        }
      }
    }
}

TEST_CASE("matmul variants: a token's output row does not depend on the batch", "[op][matmul][cpu][variants]") {
  // A variant with a nonzero bits_group gives row r bitwise the same at any M, and the
  // variants of one type and bits_group give the same bits, so a scheduler may switch
  // between them from step to step without changing a token's result. For quantized
  // weights every policy variant is in one group: the backend's run() has the property
  // tests/test_batch_consistency.cpp checks end to end.
  const std::vector<int64_t> Ms = {1, 2, 3, 4, 5, 6, 7, 8, 9, 12};
  const int64_t Mmax = 13, N = 41;
  for (CpuIsa isa : isas_to_test()) {
    auto cpu = make_cpu(isa, 2);
    for (DType w : kWeightTypes) {
      const int64_t K = dtype_block_size(w) == 1 ? 300 : 3 * dtype_block_size(w);
      std::vector<std::pair<int32_t, std::vector<float>>> by_group;  // first output of each group
      std::set<int32_t> policy_groups;
      for (const MatmulVariant* v : variants_of(isa, w)) {
        if (v->max_rows >= 1) policy_groups.insert(v->bits_group);
        if (v->bits_group == 0) continue;
        INFO(v->name);
        std::vector<float> full;
        check_matmul(variant_runner(*cpu, *v), w, Shape{K, N, Mmax}, 11, &full);
        for (int64_t M : Ms) {
          INFO("M " << M);
          std::vector<float> part;
          check_matmul(variant_runner(*cpu, *v), w, Shape{K, N, M}, 11, &part);
          REQUIRE(part.size() == static_cast<size_t>(M * N));
          CHECK(std::memcmp(part.data(), full.data(), part.size() * sizeof(float)) == 0);
        }
        bool seen = false;
        for (const auto& [g, y] : by_group)
          if (g == v->bits_group) {
            CHECK(full == y);
            seen = true;
          }
        if (!seen) by_group.emplace_back(v->bits_group, std::move(full));
      }
      if (!is_float(w)) {
        INFO(cpu_isa_name(isa) << " " << dtype_name(w));
        CHECK(policy_groups.size() == 1);
        CHECK(policy_groups.count(0) == 0);
      }
    }
  }
}

TEST_CASE("matmul variants: bad calls are refused", "[op][matmul][cpu][variants]") {
  auto cpu = make_cpu(CpuIsa::auto_detect, 1);
  CpuIsa isa;
  REQUIRE(cpu_backend_isa(*cpu, &isa));
  const auto vs = variants_of(isa, DType::Q8_0);
  REQUIRE(!vs.empty());
  Weights W = make_weights(DType::Q4_0, 64, 4, 0, 3);
  std::vector<float> xv(64 * 2, 1.0f), yv(4 * 2);
  Tensor x = make_tensor(DType::F32, xv.data(), 64, 2), y = make_tensor(DType::F32, yv.data(), 4, 2);
  OpCall call{OpId::matmul, &y, {&W.t, &x}, 2, nullptr};
  // Weights of another type than the variant's.
  CHECK(cpu_run_matmul_variant(*cpu, call, *vs[0]).code() == StatusCode::invalid_argument);
  // Not a matmul.
  OpCall add{OpId::add, &y, {&y, &y}, 2, nullptr};
  CHECK(cpu_run_matmul_variant(*cpu, add, *vs[0]).code() == StatusCode::invalid_argument);
  // Shapes validate_op() rejects.
  Tensor y_bad = make_tensor(DType::F32, yv.data(), 3, 2);
  const auto q4 = variants_of(isa, DType::Q4_0);
  OpCall bad{OpId::matmul, &y_bad, {&W.t, &x}, 2, nullptr};
  CHECK(cpu_run_matmul_variant(*cpu, bad, *q4[0]).code() == StatusCode::invalid_argument);
  // Not a cpu backend.
  auto ref = backend_ref().create(BackendOptions{});
  REQUIRE(ref.ok());
  CpuIsa none;
  CHECK(!cpu_backend_isa(*ref.value(), &none));
  CHECK(cpu_run_matmul_variant(*ref.value(), call, *q4[0]).code() == StatusCode::invalid_argument);
  // The right variant runs.
  CHECK(cpu_run_matmul_variant(*cpu, call, *q4[0]).ok());
}
