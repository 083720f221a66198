// Dynamic scheduling never changes an output's bits: every candidate the calibration
// offers for a weight type (matmul_candidates: the policy's bits group on 1 or 2 threads,
// or the policy itself on 1 or 2 threads) gives bitwise what the default policy gives, at
// row counts on and around the kernels' tiles, run through the cpu backend's matmul router
// as a context runs it; and a context with --sched dynamic gives bitwise the logits of one
// with fixed thresholds, for a prompt batch and single-token steps.
#include <catch2/catch.hpp>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "model_test_util.h"
#include "tests/reduced_sweep.h"
#include "spec_test_util.h"
#include "ops/cpu/matmul_variants.h"
#include "runtime/sched/calibrate.h"

using namespace kestrel;

namespace {

// Routes every matmul to one candidate.
struct FixedRouter final : MatmulRouter {
  MatmulRoute r;
  MatmulRoute route(const OpCall&) override { return r; }
};

// The synthetic llama of the other model tests (seed 1, 2 layers) with 256-wide rows.
std::unique_ptr<Model> synth(const char* weights) { return spectest::synth(ArchId::llama, 1, 2, weights, 256); }

}  // namespace

TEST_CASE("every scheduling candidate gives the default policy's bits", "[sched][bits]") {
  auto cpu = backend_cpu().create(BackendOptions{.n_threads = 2});
  REQUIRE(cpu.status().to_string() == "ok");
  CpuIsa isa = CpuIsa::scalar;
  REQUIRE(cpu_backend_isa(**cpu, &isa));
  FixedRouter router;
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (const char* w : {"q4_k_m", "q5_k", "q8_0", "q4_0", "q5_1", "f16", "bf16", "f32"}) {
    const auto model = synth(w);
    for (const ShapeWeights& sw : model_matmul_weights(*model)) {
      const std::vector<MatmulCandidate> cands = matmul_candidates(isa, sw.shape.wtype, 2);
      const int64_t K = sw.shape.k, N = sw.shape.n;
      for (int64_t M : {1, 2, 3, 4, 5, 7, 8, 9, 17, 33}) {
        std::vector<float> x(static_cast<size_t>(K * M)), want(static_cast<size_t>(N * M)), got(want.size());
        for (float& v : x) v = dist(rng);
        Tensor xt = make_tensor(DType::F32, x.data(), K, M);
        Tensor wt = sw.weights[0];
        Tensor yw = make_tensor(DType::F32, want.data(), N, M), yg = make_tensor(DType::F32, got.data(), N, M);
        REQUIRE(cpu_set_matmul_router(**cpu, nullptr));
        REQUIRE((*cpu)->run(OpCall{OpId::matmul, &yw, {&wt, &xt}, 2, nullptr}).to_string() == "ok");
        for (const MatmulCandidate& c : cands) {
          INFO(w << " " << dtype_name(sw.shape.wtype) << " " << K << "x" << N << " M " << M << " "
                 << candidate_label(c));
          std::fill(got.begin(), got.end(), -1.0f);
          router.r = MatmulRoute{c.variant, c.n_threads};
          REQUIRE(cpu_set_matmul_router(**cpu, &router));
          REQUIRE((*cpu)->run(OpCall{OpId::matmul, &yg, {&wt, &xt}, 2, nullptr}).to_string() == "ok");
          CHECK(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) == 0);
        }
      }
    }
  }
  REQUIRE(cpu_set_matmul_router(**cpu, nullptr));
}

TEST_CASE("a context with dynamic scheduling gives the logits of fixed thresholds bitwise", "[sched][bits][model]") {
  const std::vector<int32_t> ids = {1, 300, 17, 260, 299, 45, 261, 310, 5, 270, 301};
  // Each dynamic context calibrates every shape (no cache): under emulation or
  // sanitizers one weight type (87 s for three under qemu); the candidates'
  // bits for every type are the test case above.
  const std::vector<const char*> types =
      kestrel::test::reduced_sweep() ? std::vector<const char*>{"q4_k_m"} : std::vector<const char*>{"q4_k_m", "q8_0", "f16"};
  for (const char* w : types) {
    INFO(w);
    const auto model = synth(w);
    const int64_t V = model->hparams().n_vocab;
    std::vector<float> logits[2];
    for (int dyn = 0; dyn < 2; ++dyn) {
      ContextParams cp;
      cp.n_ctx = 64;
      cp.n_batch = 32;
      cp.n_threads = 2;
      cp.sched = dyn ? SchedMode::dynamic : SchedMode::fixed_thresholds;
      cp.calib_dir = "";  // measured, not cached
      auto c = Context::create(*model, cp);
      REQUIRE(c.status().to_string() == "ok");
      Context& ctx = *c.value();
      CHECK((ctx.sched() != nullptr) == (dyn == 1));
      if (dyn) CHECK(ctx.sched()->n_shapes() == model_matmul_weights(*model).size());
      // A prompt batch, then single tokens, then a batch of 3 (a verify-sized step).
      std::vector<int32_t> first(ids.begin(), ids.begin() + 6);
      REQUIRE(testutil::decode_all(ctx, first, 0, 0, &logits[dyn]).to_string() == "ok");
      for (size_t i = 6; i < 8; ++i) {
        std::vector<float> one;
        REQUIRE(testutil::decode_all(ctx, {ids[i]}, static_cast<int32_t>(i), 0, &one).to_string() == "ok");
        logits[dyn].insert(logits[dyn].end(), one.begin(), one.end());
      }
      std::vector<float> rest;
      REQUIRE(testutil::decode_all(ctx, {ids.begin() + 8, ids.end()}, 8, 0, &rest).to_string() == "ok");
      logits[dyn].insert(logits[dyn].end(), rest.begin(), rest.end());
    }
    REQUIRE(logits[0].size() == ids.size() * static_cast<size_t>(V));
    REQUIRE(logits[1].size() == logits[0].size());
    CHECK(std::memcmp(logits[0].data(), logits[1].data(), logits[0].size() * sizeof(float)) == 0);
  }
}
