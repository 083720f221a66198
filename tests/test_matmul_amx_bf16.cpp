// The AMX float-weight matmul (ops/cpu/amx/amx_matmul_bf16.cpp, split bf16 tiles): F16 /
// BF16 weights at tile edges (M of 1, 15, 16, 17, 33, 100; N of 1, 15, 16, 17, 33; K of
// 1, 31, 32, 33 and past: whole and partial 32-element blocks), strided views with a batch
// dim, against a double-precision product within the stated bound
// |y - w.x| <= 2^-16 sum_k |w_k x_k| (the split's 2^-17 plus f32 accumulation); the thread
// count and the batch change no bit (its own bits group: not the avx512 float kernels'
// bits); a refused tile permission leaves dst untouched. A synthetic f16 model's prompt
// long enough for these tiles keeps each token's logits at the float paths' property of
// tests/test_batch_consistency.cpp (NMSE < 1e-8 against decoding it alone), which that
// test's short prompts never reach. Skipped without AMX-BF16.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "model_test_util.h"
#include "ops/backend.h"
#include "ops/cpu/amx/amx_matmul.h"
#include "ops/ref/quant.h"
#include "platform/amx.h"
#include "platform/thread_pool.h"
#include "runtime/model/synth.h"
#include "tests/matmul_check.h"
#include "tests/reduced_sweep.h"

using namespace kestrel;

namespace {

using matmul_test::gaussian;
using matmul_test::kGuard;
using matmul_test::Weights;

// [K, N] of `type`, each row padded by 6 bytes (row starts unaligned).
Weights make_weights(DType type, int64_t K, int64_t N, uint32_t seed) {
  return matmul_test::make_weights(type, K, N, 6, seed);
}

// A strided F32 view [K, M, B2] in `buf`: rows padded by `pad` elements, a gap between batches.
Tensor strided_view(std::vector<float>& buf, int64_t K, int64_t M, int64_t B2, int64_t pad) {
  return matmul_test::strided_view(buf, K, M, B2, 1, pad, 3);
}

float* row(const Tensor& t, int64_t r) { return t.row<float>(r % t.ne[1], r / t.ne[1]); }

struct Case {
  DType type;
  int64_t K, N, M, B2 = 1, pad = 0;
};

// One case at 1 and 2 threads; returns the worst |err| / sum|w x|.
double check_case(const Case& c, uint32_t seed) {
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

  OpCall call{OpId::matmul, &y, {&W.t, &x}, 2, nullptr};
  REQUIRE(validate_op(call).ok());
  REQUIRE(cpu::amx_supports(call));
  ThreadPool pool1(1), pool2(2);
  cpu::Exec exec1(&pool1, 1), exec2(&pool2, 2);
  REQUIRE(cpu::amx_matmul(call, exec1));
  OpCall call2{OpId::matmul, &y2, {&W.t, &x}, 2, nullptr};
  REQUIRE(cpu::amx_matmul(call2, exec2));

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
  CHECK(std::memcmp(ybuf.data(), y2buf.data(), ybuf.size() * 4) == 0);

  size_t bad = 0;
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xv.data() + r * c.K;
    for (int64_t n = 0; n < c.N; ++n) {
      const float* wn = W.deq.data() + n * c.K;
      double dot = 0, mag = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        dot += static_cast<double>(wn[k]) * xr[k];
        mag += std::fabs(static_cast<double>(wn[k]) * xr[k]);
      }
      const double err = std::fabs(row(y, r)[n] - dot);
      if (!(err <= std::ldexp(mag, -16) + 1e-30)) ++bad;
      if (mag > 0) worst = std::max(worst, err / mag);
    }
  }
  CHECK(bad == 0);
  return worst;
}

}  // namespace

TEST_CASE("amx bf16 matmul: a refused permission leaves dst untouched", "[op][matmul][amx]") {
  Weights W = make_weights(DType::F16, 64, 17, 5);
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
  if (!cpu::amx_bf16_available()) CHECK_FALSE(cpu::amx_matmul(call, exec));
  // F32 weights are not taken (see amx_matmul_bf16.cpp): the caller's own kernel runs.
  Weights F = make_weights(DType::F32, 64, 17, 7);
  OpCall f32{OpId::matmul, &y, {&F.t, &x}, 2, nullptr};
  CHECK_FALSE(cpu::amx_supports(f32));
  CHECK_FALSE(cpu::amx_matmul(f32, exec));
}

TEST_CASE("amx bf16 matmul vs a double product at tile edges", "[op][matmul][amx]") {
  if (!cpu::amx_bf16_available()) {
    WARN("SKIP: AMX-BF16 not available: " << amx_state().reason);
    return;
  }
  const bool reduced = test::reduced_sweep();
  const std::vector<int64_t> Ms = reduced ? std::vector<int64_t>{1, 16, 17, 33} : std::vector<int64_t>{1, 15, 16, 17, 33, 100};
  const std::vector<int64_t> Ns = reduced ? std::vector<int64_t>{1, 16, 17} : std::vector<int64_t>{1, 15, 16, 17, 33};
  uint32_t seed = 300;
  for (DType t : {DType::F16, DType::BF16}) {
    double worst = 0;
    for (int64_t K : {1, 31, 32, 33, 67, 300, 2048})
      for (int64_t M : Ms)
        for (int64_t N : Ns) {
          if (reduced && K == 2048 && M > 17) continue;
          worst = std::max(worst, check_case({t, K, N, M, 1, 0}, seed++));
        }
    worst = std::max(worst, check_case({t, 67, 33, 7, 3, 5}, seed++));
    worst = std::max(worst, check_case({t, 300, 17, 17, 2, 1}, seed++));
    WARN(dtype_name(t) << ": worst |err| / sum|w x| = " << worst << " (bound 2^-16 = " << std::ldexp(1.0, -16) << ")");
  }
}

TEST_CASE("amx bf16 matmul: a row's result does not depend on the batch", "[op][matmul][amx]") {
  if (!cpu::amx_bf16_available()) {
    WARN("SKIP: AMX-BF16 not available: " << amx_state().reason);
    return;
  }
  ThreadPool pool(2);
  cpu::Exec exec(&pool, 2);
  for (DType t : {DType::F16, DType::BF16}) {
    INFO(dtype_name(t));
    const int64_t K = 300, N = 40, M = 70;
    Weights W = make_weights(t, K, N, 11);
    std::vector<float> xv = gaussian(static_cast<size_t>(K * M), 12), yall(static_cast<size_t>(N * M));
    Tensor x = make_tensor(DType::F32, xv.data(), K, M), y = make_tensor(DType::F32, yall.data(), N, M);
    OpCall call{OpId::matmul, &y, {&W.t, &x}, 2, nullptr};
    REQUIRE(cpu::amx_matmul(call, exec));
    size_t diff = 0;
    for (int64_t m0 : {0, 5, 31})
      for (int64_t len : {1, 3, 16, 17, 33}) {
        std::vector<float> ypart(static_cast<size_t>(N * len));
        Tensor xs = make_tensor(DType::F32, xv.data() + m0 * K, K, len);
        Tensor ys = make_tensor(DType::F32, ypart.data(), N, len);
        OpCall part{OpId::matmul, &ys, {&W.t, &xs}, 2, nullptr};
        REQUIRE(cpu::amx_matmul(part, exec));
        diff += std::memcmp(ypart.data(), yall.data() + m0 * N, ypart.size() * 4) != 0;
      }
    CHECK(diff == 0);
  }
}

TEST_CASE("amx bf16 matmul: an f16 model's prompt keeps the float batch property", "[model][batch][amx]") {
  if (!cpu::amx_bf16_available()) {
    WARN("SKIP: AMX-BF16 not available: " << amx_state().reason);
    return;
  }
  const int32_t n_tok = 80;  // > amx_min_rows(F16): the prompt's matmuls run on the tiles
  REQUIRE(cpu::amx_min_rows(DType::F16) <= n_tok);
  SynthSpec s;
  s.arch = ArchId::llama;
  s.weights = "f16";
  s.n_embd = 256;
  s.n_ff = 512;
  auto bytes = synth_model_gguf(s);
  REQUIRE(bytes.status().to_string() == "ok");
  auto mr = Model::load_from_memory(bytes.value().data(), bytes.value().size(), ModelParams{});
  REQUIRE(mr.status().to_string() == "ok");
  const Model& m = *mr.value();
  const int64_t V = m.hparams().n_vocab;
  std::vector<int32_t> ids(static_cast<size_t>(n_tok));
  for (int32_t i = 0; i < n_tok; ++i) ids[static_cast<size_t>(i)] = 1 + (i * 37) % static_cast<int32_t>(V - 1);
  auto make = [&](int threads) {
    ContextParams cp;
    cp.n_ctx = 128;
    cp.n_batch = 128;
    cp.n_threads = threads;
    auto c = Context::create(m, cp);
    REQUIRE(c.status().to_string() == "ok");
    return std::move(c).value();
  };
  for (int threads : {1, 2}) {
    INFO("threads " << threads);
    auto a = make(threads), b = make(threads);
    std::vector<float> batched;
    REQUIRE(testutil::decode_all(*a, ids, 0, 0, &batched).to_string() == "ok");
    double worst = 0;
    for (int32_t i = 0; i < n_tok; ++i) {
      std::vector<float> one;
      REQUIRE(testutil::decode_all(*b, {ids[static_cast<size_t>(i)]}, i, 0, &one).to_string() == "ok");
      worst = std::max(worst, testutil::nmse(batched.data() + static_cast<size_t>(i) * V, one.data(), static_cast<size_t>(V)));
    }
    CHECK(worst < 1e-8);
    WARN("threads " << threads << ": worst logits NMSE, " << n_tok << "-token batch vs one at a time: " << worst);
  }
}
