// ks_matmul on the cuda backend against the ref backend (which materializes the dense
// matrix): every pattern of the CPU test set in both layouts, random awkward patterns
// (odd b, c, d) at 1, 7, 33 and 1000 tokens with F32/F16/BF16 weights, every tile
// configuration on awkward shapes (and bitwise agreement between those of one kind),
// strided rows, chains of factors. Without a GPU every case prints a SKIP.
// Tolerances: CUDA-core tiles (F32 x) relative RMS 1e-6 against ref. Tensor-core tiles
// (BF16 weights, x rounded to BF16: 8 significant bits, unit roundoff u = 2^-8) per output
//   |y - ref| <= (2^-8 + c * 2^-21) * sum_l |w_l x_l|
// (u from x; products of BF16 values exact in F32; c * 2^-21 covers the F32 accumulation of
// both sides), with sum_l |w_l x_l| from ref on |w| and |x|.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/ks_patterns.h"
#include "ops/backend.h"
#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/cuda_ks.h"
#include "ops/half.h"
#include "runtime/ks/ks_chain.h"
#include "tests/reduced_sweep.h"

using namespace kestrel;

namespace {

std::unique_ptr<Backend> make_gpu() {
  auto b = backend_cuda().create(BackendOptions{});
  if (!b) return nullptr;
  return std::move(b).value();
}

std::unique_ptr<Backend> make_ref() {
  auto r = backend_ref().create({});
  REQUIRE(r);
  return std::move(*r);
}

std::vector<uint8_t> random_weights(DType type, const KsMatmulParams& p, std::mt19937& rng) {
  const int64_t n = int64_t(p.a) * p.b * p.c * p.d;
  const size_t es = type == DType::F32 ? 4 : 2;
  std::vector<uint8_t> bytes((size_t)n * es);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t e = 0; e < n; ++e) {
    const float v = u(rng);
    if (type == DType::F32) std::memcpy(&bytes[e * 4], &v, 4);
    else {
      const uint16_t h = type == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
      std::memcpy(&bytes[e * 2], &h, 2);
    }
  }
  return bytes;
}

std::vector<float> random_vec(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

// Relative RMS error sqrt(sum (y - r)^2 / sum r^2); a non-finite y gives +inf.
double rel_rms(const float* y, const float* r, size_t n) {
  double e = 0, s = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(y[i])) return INFINITY;
    e += (double(y[i]) - r[i]) * (double(y[i]) - r[i]);
    s += double(r[i]) * r[i];
  }
  return s > 0 ? std::sqrt(e / s) : std::sqrt(e);
}

// A device copy of host bytes (or an uninitialized area when host is null).
std::unique_ptr<Buffer> device(Backend& gpu, size_t bytes, const void* host) {
  auto b = gpu.alloc_buffer(std::max<size_t>(bytes, 4));
  REQUIRE(b.ok());
  if (host && bytes) REQUIRE(gpu.upload(**b, 0, host, bytes).ok());
  return std::move(*b);
}

double g_worst = 0;     // CUDA-core tiles: worst relative RMS error
double g_worst_tc = 0;  // tensor-core tiles: worst relative RMS error
double g_worst_ratio = 0;  // tensor-core tiles: worst |y - ref| / bound

// |w| elementwise (the sign bit cleared).
std::vector<uint8_t> abs_weights(DType type, std::vector<uint8_t> bytes) {
  if (type == DType::F32) {
    for (size_t e = 0; e + 4 <= bytes.size(); e += 4) bytes[e + 3] &= 0x7f;
  } else {
    for (size_t e = 0; e + 2 <= bytes.size(); e += 2) bytes[e + 1] &= 0x7f;
  }
  return bytes;
}

void print_worst(const char* what) {
  std::printf("cuda ks_matmul %s: worst relative RMS error vs ref %.2e (CUDA cores), %.2e (tensor cores, BF16 x); "
              "tensor cores worst |y - ref| / bound %.3f\n",
              what, g_worst, g_worst_tc, g_worst_ratio);
}

// One factor on the GPU. x and y rows are x_ld / y_ld floats apart (0: packed); y starts
// as NaN, so an output the kernel skips shows up. Checked against ref at `tokens` (all
// when empty): each token's features run through ref as a one-token token_major call.
// config >= 0 launches that tile configuration directly instead of backend.run().
void check(Backend& gpu, Backend& ref, const KsMatmulParams& p, DType wt, int64_t M, uint32_t seed,
           std::vector<int64_t> tokens = {}, int config = -1, std::vector<float>* out = nullptr, int64_t x_pad = 0,
           int64_t y_pad = 0) {
  std::mt19937 rng(seed);
  const int64_t n_in = int64_t(p.a) * p.c * p.d, n_out = int64_t(p.a) * p.b * p.d;
  const bool tm = p.layout == KsLayout::token_major;
  std::vector<uint8_t> wb = random_weights(wt, p, rng);
  const int64_t x_len = tm ? n_in : M, x_rows = tm ? M : n_in, y_len = tm ? n_out : M, y_rows = tm ? M : n_out;
  const int64_t x_ld = x_len + x_pad, y_ld = y_len + y_pad;
  std::vector<float> x = random_vec((size_t)(x_rows * x_ld), rng);
  std::vector<float> y((size_t)(y_rows * y_ld), NAN);
  auto dw = device(gpu, wb.size(), wb.data());
  auto dx = device(gpu, x.size() * 4, x.data());
  auto dy = device(gpu, y.size() * 4, y.data());
  Tensor tw = make_tensor(wt, dw->data(), p.b, p.c, p.d, p.a);
  Tensor tx = make_tensor(DType::F32, dx->data(), x_len, x_rows);
  Tensor ty = make_tensor(DType::F32, dy->data(), y_len, y_rows);
  tx.nb[1] = (size_t)x_ld * 4;
  ty.nb[1] = (size_t)y_ld * 4;
  INFO("pattern (" << p.a << "," << p.b << "," << p.c << "," << p.d << ") " << (tm ? "token_major" : "batch_last")
                   << " " << dtype_name(wt) << " M=" << M << " config " << config);
  if (config < 0) {
    const OpCall call{OpId::ks_matmul, &ty, {&tw, &tx}, 2, &p};
    REQUIRE(gpu.supports(call));
    REQUIRE(gpu.run(call).ok());
  } else {
    cuda::KsArgs k;
    k.w = tw.data;
    k.w_nb1 = tw.nb[1], k.w_nb2 = tw.nb[2], k.w_nb3 = tw.nb[3];
    k.x = static_cast<const float*>(tx.data), k.y = static_cast<float*>(ty.data);
    k.x_ld = x_ld, k.y_ld = y_ld, k.a = p.a, k.b = p.b, k.c = p.c, k.d = p.d, k.M = M;
    k.batch_last = !tm, k.wt = wt;
    REQUIRE(cuda::launch_ks_matmul(k, config, nullptr) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  }
  REQUIRE(gpu.download(y.data(), *dy, 0, y.size() * 4).ok());
  REQUIRE(gpu.synchronize().ok());
  if (tokens.empty())
    for (int64_t m = 0; m < M; ++m) tokens.push_back(m);
  Tensor hw = make_tensor(wt, wb.data(), p.b, p.c, p.d, p.a);
  KsMatmulParams rp = p;
  rp.layout = KsLayout::token_major;
  // The backend gives BF16 weights the tensor-core tiles (cuda_ks.h).
  const bool tc = config >= 0 ? cuda::ks_config_tensor_cores(config) : wt == DType::BF16;
  std::vector<uint8_t> wabs = abs_weights(wt, wb);
  Tensor haw = make_tensor(wt, wabs.data(), p.b, p.c, p.d, p.a);
  const double rel_bound = std::ldexp(1.0, -8) + p.c * std::ldexp(1.0, -21);
  std::vector<float> xin((size_t)n_in), r((size_t)n_out), got((size_t)n_out), xa((size_t)n_in), sa((size_t)n_out);
  double err = 0, ratio = 0;
  for (int64_t m : tokens) {
    for (int64_t f = 0; f < n_in; ++f) xin[f] = tm ? x[(size_t)(m * x_ld + f)] : x[(size_t)(f * x_ld + m)];
    for (int64_t f = 0; f < n_out; ++f) got[f] = tm ? y[(size_t)(m * y_ld + f)] : y[(size_t)(f * y_ld + m)];
    Tensor rx = make_tensor(DType::F32, xin.data(), n_in, 1), ry = make_tensor(DType::F32, r.data(), n_out, 1);
    const OpCall rc{OpId::ks_matmul, &ry, {&hw, &rx}, 2, &rp};
    REQUIRE(ref.run(rc).ok());
    err = std::max(err, rel_rms(got.data(), r.data(), r.size()));
    if (tc) {  // sum_l |w_l x_l| per output
      for (int64_t f = 0; f < n_in; ++f) xa[f] = std::fabs(xin[f]);
      Tensor ax = make_tensor(DType::F32, xa.data(), n_in, 1), as = make_tensor(DType::F32, sa.data(), n_out, 1);
      const OpCall ac{OpId::ks_matmul, &as, {&haw, &ax}, 2, &rp};
      REQUIRE(ref.run(ac).ok());
      for (int64_t f = 0; f < n_out; ++f) {
        const double e = std::fabs(double(got[f]) - r[f]), bound = rel_bound * sa[f];
        ratio = std::max(ratio, std::isfinite(got[f]) ? (bound > 0 ? e / bound : (e > 0 ? INFINITY : 0.0)) : INFINITY);
      }
    }
  }
  // Every output written (NaN gone) and the gaps between rows untouched (still NaN).
  size_t n_bad = 0, n_gap = 0;
  for (int64_t row = 0; row < y_rows; ++row)
    for (int64_t e = 0; e < y_ld; ++e) {
      const float v = y[(size_t)(row * y_ld + e)];
      if (e < y_len) n_bad += !std::isfinite(v);
      else n_gap += !std::isnan(v);
    }
  CHECK(n_bad == 0);
  CHECK(n_gap == 0);
  if (tc) {
    g_worst_tc = std::max(g_worst_tc, err);
    g_worst_ratio = std::max(g_worst_ratio, ratio);
    CHECK(ratio <= 1.0);
  } else {
    g_worst = std::max(g_worst, err);
    CHECK(err <= 1e-6);
  }
  if (out) *out = std::move(y);
}

}  // namespace

TEST_CASE("cuda ks_matmul: every pattern of the CPU test set", "[cuda][op][ks_matmul]") {
  auto gpu = make_gpu();
  if (!gpu) {
    WARN("SKIP: no CUDA device on this machine");
    return;
  }
  auto ref = make_ref();
  uint32_t seed = 1;
  const DType types[] = {DType::F32, DType::F16, DType::BF16};
  for (const bench::KsPattern& bp : bench::kKsPatterns) {
    const DType wt = types[seed % 3];
    KsMatmulParams p{bp.a, bp.b, bp.c, bp.d, KsLayout::token_major};
    check(*gpu, *ref, p, wt, 3, seed);
    p.layout = KsLayout::batch_last;
    check(*gpu, *ref, p, wt, 300, seed, {0, 128, 255, 299});
    ++seed;
  }
  print_worst("benchmark patterns");
}

TEST_CASE("cuda ks_matmul: awkward patterns, batch 1, 7, 33, 1000, all weight types", "[cuda][op][ks_matmul]") {
  auto gpu = make_gpu();
  if (!gpu) {
    WARN("SKIP: no CUDA device on this machine");
    return;
  }
  auto ref = make_ref();
  const int32_t odd[] = {1, 3, 5, 7, 9, 13, 17, 31, 33, 47, 65, 129};
  std::mt19937 pick(17);
  auto any = [&] { return odd[pick() % (sizeof odd / sizeof odd[0])]; };
  const int n_shapes = kestrel::test::reduced_sweep() ? 6 : 20;
  for (int n = 0; n < n_shapes; ++n) {
    const KsMatmulParams base{1 + (int32_t)(pick() % 4), any(), any(), 1 + 2 * (int32_t)(pick() % 3),
                              KsLayout::token_major};
    for (int64_t M : {1, 7, 33, 1000})
      for (DType wt : {DType::F32, DType::F16, DType::BF16})
        for (KsLayout lay : {KsLayout::token_major, KsLayout::batch_last}) {
          KsMatmulParams p = base;
          p.layout = lay;
          std::vector<int64_t> tokens;
          if (M == 33) tokens = {0, 7, 8, 31, 32};
          if (M == 1000) tokens = {0, 1, 127, 128, 999};
          check(*gpu, *ref, p, wt, M, 100 + n, tokens);
        }
  }
  // Even sizes that take the vector loads and stores, with tile edges inside b and M.
  for (DType wt : {DType::F32, DType::F16, DType::BF16})
    for (KsLayout lay : {KsLayout::token_major, KsLayout::batch_last}) {
      check(*gpu, *ref, {2, 200, 132, 1, lay}, wt, 1000, 7, {0, 63, 64, 127, 128, 999});
      check(*gpu, *ref, {3, 52, 36, 2, lay}, wt, 33, 8);
    }
  print_worst("awkward patterns");
}

TEST_CASE("cuda ks_matmul: every tile configuration, bitwise equal to the others of its kind", "[cuda][op][ks_matmul]") {
  auto gpu = make_gpu();
  if (!gpu) {
    WARN("SKIP: no CUDA device on this machine");
    return;
  }
  auto ref = make_ref();
  struct Shape {
    KsMatmulParams p;
    int64_t M;
  };
  const Shape shapes[] = {{{1, 1, 1, 1}, 1},      {{2, 7, 5, 3}, 7},    {{3, 33, 17, 1}, 33},  {{1, 130, 70, 2}, 129},
                          {{2, 64, 48, 1}, 1000}, {{1, 48, 64, 3}, 257}, {{5, 13, 129, 1}, 9}, {{1, 256, 256, 1}, 300}};
  for (const Shape& s : shapes)
    for (DType wt : {DType::F32, DType::BF16})
      for (KsLayout lay : {KsLayout::token_major, KsLayout::batch_last}) {
        KsMatmulParams p = s.p;
        p.layout = lay;
        std::vector<int64_t> tokens;
        if (s.M > 64) tokens = {0, 1, 63, 64, 127, 128, s.M - 1};
        std::vector<float> first[2], y;  // per kind: CUDA cores, tensor cores
        int first_cfg[2] = {-1, -1};
        for (int cfg = 0; cfg < cuda::ks_config_count(); ++cfg) {
          if (!cuda::ks_config_runs(cfg, wt)) continue;
          const int kind = cuda::ks_config_tensor_cores(cfg) ? 1 : 0;
          check(*gpu, *ref, p, wt, s.M, 31, tokens, cfg, &y);
          if (first_cfg[kind] < 0) {
            first[kind] = y;
            first_cfg[kind] = cfg;
          } else {
            INFO("config " << cuda::ks_config_name(cfg) << " against " << cuda::ks_config_name(first_cfg[kind]));
            CHECK(std::memcmp(first[kind].data(), y.data(), y.size() * 4) == 0);
          }
        }
        // BF16 weights ran both kinds; tensor-core tiles exist only for BF16.
        CHECK(first_cfg[0] == 0);
        CHECK((first_cfg[1] >= 0) == (wt == DType::BF16));
      }
  // An unknown configuration is an error, not a launch; so is a tensor-core one for F32 weights.
  cuda::KsArgs k;
  k.M = 1;
  CHECK(cuda::launch_ks_matmul(k, cuda::ks_config_count(), nullptr) == cudaErrorInvalidValue);
  CHECK(cuda::launch_ks_matmul(k, -1, nullptr) == cudaErrorInvalidValue);
  CHECK(cuda::launch_ks_matmul(k, cuda::ks_config_count() - 1, nullptr) == cudaErrorInvalidValue);
  print_worst("tile configurations");
}

TEST_CASE("cuda ks_matmul: strided rows", "[cuda][op][ks_matmul]") {
  auto gpu = make_gpu();
  if (!gpu) {
    WARN("SKIP: no CUDA device on this machine");
    return;
  }
  auto ref = make_ref();
  for (KsLayout lay : {KsLayout::token_major, KsLayout::batch_last})
    for (DType wt : {DType::F32, DType::F16, DType::BF16}) {
      check(*gpu, *ref, {2, 16, 12, 3, lay}, wt, 19, 11, {}, -1, nullptr, 5, 3);
      check(*gpu, *ref, {1, 64, 32, 1, lay}, wt, 70, 12, {}, -1, nullptr, 4, 8);  // aligned padding: vector path
    }
}

TEST_CASE("cuda ks_matmul: chains of factors", "[cuda][op][ks_matmul]") {
  auto gpu = make_gpu();
  if (!gpu) {
    WARN("SKIP: no CUDA device on this machine");
    return;
  }
  auto ref = make_ref();
  // 256 -> 256 -> 256 -> 1024 -> 512, as in the CPU test, with mixed weight types: once
  // all on CUDA cores (F32 x throughout), once with a BF16 factor on tensor cores. Its
  // inputs are rounded to BF16 (relative error up to 2^-8 each, about 2^-8 / 3 in RMS),
  // which moves the chain's output by about that much in relative RMS: bound 2^-8.
  const KsMatmulParams ps[] = {{4, 16, 16, 4}, {16, 16, 16, 1}, {1, 64, 16, 16}, {8, 16, 32, 4}};
  const DType kinds[2][4] = {{DType::F32, DType::F16, DType::F16, DType::F32},
                             {DType::F32, DType::BF16, DType::F16, DType::F32}};
  for (const auto& wts : kinds) {
  const bool bf16 = wts[1] == DType::BF16;
  std::mt19937 rng(5);
  std::vector<std::vector<uint8_t>> host_w;
  std::vector<std::unique_ptr<Buffer>> dev_w;
  Tensor hw[4], dw[4];
  KsFactor hf[4], df[4];
  for (int t = 0; t < 4; ++t) {
    host_w.push_back(random_weights(wts[t], ps[t], rng));
    dev_w.push_back(device(*gpu, host_w[t].size(), host_w[t].data()));
    hw[t] = make_tensor(wts[t], host_w[t].data(), ps[t].b, ps[t].c, ps[t].d, ps[t].a);
    dw[t] = make_tensor(wts[t], dev_w[t]->data(), ps[t].b, ps[t].c, ps[t].d, ps[t].a);
    hf[t] = {ps[t], &hw[t]};
    df[t] = {ps[t], &dw[t]};
  }
  for (KsLayout lay : {KsLayout::token_major, KsLayout::batch_last})
    for (int64_t M : {1, 5, 33}) {
      const bool tm = lay == KsLayout::token_major;
      std::vector<float> x = random_vec((size_t)(256 * M), rng);
      auto n = ks_chain_scratch_floats(hf, 4, M);
      REQUIRE(n);
      std::vector<float> scratch(*n), r((size_t)(512 * M)), y((size_t)(512 * M), NAN);
      Tensor tx = tm ? make_tensor(DType::F32, x.data(), 256, M) : make_tensor(DType::F32, x.data(), M, 256);
      Tensor tr = tm ? make_tensor(DType::F32, r.data(), 512, M) : make_tensor(DType::F32, r.data(), M, 512);
      REQUIRE(ks_chain_apply(*ref, hf, 4, lay, tx, tr, scratch.data(), scratch.size()).ok());
      auto dx = device(*gpu, x.size() * 4, x.data());
      auto dy = device(*gpu, y.size() * 4, y.data());
      auto ds = device(*gpu, *n * 4, nullptr);
      Tensor gx = tx, gy = tr;
      gx.data = dx->data();
      gy.data = dy->data();
      REQUIRE(ks_chain_apply(*gpu, df, 4, lay, gx, gy, static_cast<float*>(ds->data()), *n).ok());
      REQUIRE(gpu->download(y.data(), *dy, 0, y.size() * 4).ok());
      REQUIRE(gpu->synchronize().ok());
      INFO("M=" << M << (tm ? " token_major" : " batch_last"));
      INFO((bf16 ? "with a BF16 factor" : "F32 / F16 factors"));
      const double e = rel_rms(y.data(), r.data(), y.size());
      std::printf("cuda ks_matmul chain (%s), M=%lld %s: relative RMS error %.2e\n",
                  bf16 ? "BF16 factor" : "F32/F16", (long long)M, tm ? "token_major" : "batch_last", e);
      CHECK(e <= (bf16 ? std::ldexp(1.0, -8) : 1e-6));
    }
  }
}
