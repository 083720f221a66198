// spec_verify on the cuda backend against the scalar reference: greedy, the
// exact softmax rule at several temperatures and the sigmoid ablation, at
// awkward vocabulary sizes (1 .. 151936) and g = 1..8, with drafts from close
// to far from the target; top-k / top-p report unsupported (the host kernels
// run them); bad ids give {-1, -1}. Without a GPU the cases print a SKIP.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "ops/backend.h"
#include "ops/cuda/cuda_backend.h"
#include "tests/spec_verify_case.h"

using namespace kestrel;

namespace {

std::unique_ptr<Backend> make_gpu() {
  auto b = backend_cuda().create(BackendOptions{});
  if (!b) return nullptr;
  return std::move(b).value();
}

using Case = testutil::VerifyCase;

// The case's tensors in device buffers; run() returns the op's status and its two outputs.
struct GpuCase {
  std::unique_ptr<Buffer> t, d, x, o;
  Tensor tt, dt, xt, ot;

  GpuCase(Backend& gpu, const Case& c) {
    auto alloc = [&](size_t bytes, const void* host) {
      auto b = gpu.alloc_buffer(bytes);
      REQUIRE(b.ok());
      if (host) REQUIRE(gpu.upload(**b, 0, host, bytes).ok());
      return std::move(*b);
    };
    t = alloc(c.target.size() * 4, c.target.data());
    d = alloc(c.draft.size() * 4, c.draft.data());
    x = alloc(c.ids.size() * 4, c.ids.data());
    o = alloc(8, nullptr);
    tt = make_tensor(DType::F32, t->data(), c.V, c.g + 1);
    dt = make_tensor(DType::F32, d->data(), c.V, c.g);
    xt = make_tensor(DType::I32, x->data(), c.g);
    ot = make_tensor(DType::I32, o->data(), 2);
    tt.buffer = t.get();
    dt.buffer = d.get();
    xt.buffer = x.get();
    ot.buffer = o.get();
  }
  // The op alone, queued (no transfer, no sync).
  Status launch(Backend& gpu, const SpecVerifyParams& p) {
    OpCall c{OpId::spec_verify, &ot, {&tt, &xt, &dt}, p.greedy ? 2 : 3, &p};
    return gpu.run(c);
  }
  Status run(Backend& gpu, const SpecVerifyParams& p, int32_t out[2]) {
    const int32_t poison[2] = {-7, -7};
    KESTREL_TRY(gpu.upload(*o, 0, poison, 8));
    OpCall c{OpId::spec_verify, &ot, {&tt, &xt, &dt}, p.greedy ? 2 : 3, &p};
    KESTREL_TRY(gpu.run(c));
    KESTREL_TRY(gpu.download(out, *o, 0, 8));
    return gpu.synchronize();
  }
};

}  // namespace

TEST_CASE("cuda spec_verify equals the reference", "[cuda][spec_verify]") {
  auto gpu = make_gpu();
  if (!gpu) {
    WARN("SKIP: no CUDA device on this machine");
    return;
  }
  auto ref = backend_ref().create(BackendOptions{});
  REQUIRE(ref);
  using testutil::verify_mode;
  const std::vector<testutil::VerifyMode> modes = {
      verify_mode("greedy", true),
      verify_mode("softmax T 1", false),
      verify_mode("softmax T 0.7", false, 0.7f),
      verify_mode("softmax T 1.6", false, 1.6f),
      verify_mode("sigmoid", false, 1.0f, 0, 1.0f, true),
  };
  std::mt19937 rng(4321);
  int n_cases = 0, n_mismatch = 0, n_all = 0, n_rej = 0;
  for (int64_t V : {1, 7, 33, 1000, 1025, 32001, 151936, 300007})
    for (int64_t g = 1; g <= 8; ++g)
      for (float noise : {0.05f, 1.0f, 4.0f}) {
        Case c = testutil::make_verify_case(V, g, noise, rng);
        GpuCase gc(*gpu, c);
        for (const testutil::VerifyMode& m : modes) {
          SpecVerifyParams p = m.p;
          p.seed = 77u + uint64_t(n_cases);
          int32_t got[2] = {-7, -7};
          REQUIRE(c.run(**ref, p).ok());
          const int32_t want[2] = {c.out[0], c.out[1]};
          const Status st = gc.run(*gpu, p, got);
          INFO("V " << V << " g " << g << " " << m.name << " noise " << noise << ": " << st.to_string());
          REQUIRE(st.ok());
          REQUIRE(want[0] >= 0);
          ++n_cases;
          if (want[0] == g) ++n_all;
          else ++n_rej;
          if (got[0] != want[0] || got[1] != want[1]) {
            ++n_mismatch;
            UNSCOPED_INFO("mismatch: got {" << got[0] << ", " << got[1] << "} want {" << want[0] << ", " << want[1]
                                            << "}");
          }
        }
      }
  std::printf("cuda spec_verify: %d cases (%d all accepted, %d with a rejection), %d mismatches vs ref\n", n_cases,
              n_all, n_rej, n_mismatch);
  CHECK(n_mismatch == 0);
  CHECK(n_all > 20);
  CHECK(n_rej > 20);
}

TEST_CASE("cuda spec_verify: unsupported rules and bad data", "[cuda][spec_verify]") {
  auto gpu = make_gpu();
  if (!gpu) {
    WARN("SKIP: no CUDA device on this machine");
    return;
  }
  std::mt19937 rng(5);
  Case c = testutil::make_verify_case(1000, 3, 1.0f, rng);
  GpuCase gc(*gpu, c);
  int32_t out[2];
  SpecVerifyParams p;
  p.top_k = 40;  // thresholds run on the host kernels
  CHECK(gc.run(*gpu, p, out).code() == StatusCode::unsupported);
  p = SpecVerifyParams{};
  p.top_p = 0.9f;
  CHECK(gc.run(*gpu, p, out).code() == StatusCode::unsupported);
  // A drafted id outside the vocabulary: {-1, -1}, as the reference.
  c.ids[1] = 1000;
  GpuCase bad(*gpu, c);
  for (bool greedy : {true, false}) {
    p = SpecVerifyParams{};
    p.greedy = greedy;
    REQUIRE(bad.run(*gpu, p, out).ok());
    CHECK(out[0] == -1);
    CHECK(out[1] == -1);
  }
  // A NaN in a row the rule reads.
  c.ids[1] = 5;
  c.target[3] = std::nanf("");
  GpuCase nan(*gpu, c);
  for (bool greedy : {true, false}) {
    p = SpecVerifyParams{};
    p.greedy = greedy;
    REQUIRE(nan.run(*gpu, p, out).ok());
    CHECK(out[0] == -1);
  }
}

TEST_CASE("cuda spec_verify timing", "[cuda][spec_verify][bench]") {
  auto gpu = make_gpu();
  if (!gpu) {
    WARN("SKIP: no CUDA device on this machine");
    return;
  }
  std::mt19937 rng(9);
  for (int64_t V : {32000, 151936, 262144})
    for (int64_t g : {1, 4, 8}) {
      Case c = testutil::make_verify_case(V, g, 0.05f, rng);  // close drafts: most rounds read every row
      GpuCase gc(*gpu, c);
      for (bool greedy : {true, false}) {
        SpecVerifyParams p;
        p.greedy = greedy;
        int32_t out[2];
        REQUIRE(gc.run(*gpu, p, out).ok());
        // 20 calls queued back to back, then one sync: the op's time on the device,
        // launches included; median over 11 such rounds.
        std::vector<double> us;
        for (int r = 0; r < 11; ++r) {
          const auto t0 = std::chrono::steady_clock::now();
          for (int k = 0; k < 20; ++k) REQUIRE(gc.launch(*gpu, p).ok());
          REQUIRE(gpu->synchronize().ok());
          us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / 20);
        }
        std::sort(us.begin(), us.end());
        std::printf("cuda spec_verify V %6lld g %lld %-7s: %8.1f us per call (median of 11 rounds of 20 queued calls)\n",
                    (long long)V, (long long)g, greedy ? "greedy" : "softmax", us[us.size() / 2]);
      }
    }
}
