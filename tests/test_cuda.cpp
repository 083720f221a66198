// CUDA backend checks: device discovery, error statuses, device buffers, and
// every implemented op against a double-precision host reference at awkward
// shapes (1, 31/32/33, strided rows), with guard bytes around every output and
// poisoned outputs so an unwritten element shows up as NaN.
//
// Without a GPU (CI) only the discovery and error-mapping cases run; the rest
// print "SKIP: no CUDA device".
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ops/backend.h"
#include "ops/cuda/cuda_backend.h"
#include "ops/half.h"
#include "ops/ref/quant.h"
#include "platform/cuda/cuda_device.h"
#include "platform/cuda/cuda_status.h"

using namespace kestrel;

namespace {

constexpr size_t kGuard = 64;
constexpr uint8_t kGuardByte = 0xA5;

std::unique_ptr<Backend> make_gpu() {
  auto b = backend_cuda().create(BackendOptions{});
  if (!b) return nullptr;
  return std::move(b).value();
}

#define NEED_GPU(b)                                   \
  do {                                                \
    if (!(b)) {                                       \
      WARN("SKIP: no CUDA device on this machine");   \
      return;                                         \
    }                                                 \
  } while (0)

// ---- host encodings of rows (own quantizers; layouts as in ops/dtype.h) ----

void quantize_q8_0(const float* x, BlockQ8_0* b) {
  float amax = 0;
  for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  b->d = f32_to_f16(d);
  const float id = d ? 1.0f / d : 0.0f;
  for (int j = 0; j < kQK; ++j) b->qs[j] = static_cast<int8_t>(std::lround(x[j] * id));
}

void quantize_q4_0(const float* x, BlockQ4_0* b) {
  float amax = 0, mx = 0;
  for (int j = 0; j < kQK; ++j)
    if (std::fabs(x[j]) > amax) { amax = std::fabs(x[j]); mx = x[j]; }
  const float d = mx / -8.0f;
  b->d = f32_to_f16(d);
  const float id = d ? 1.0f / d : 0.0f;
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = std::min(15, static_cast<int>(x[j] * id + 8.5f));
    const int q1 = std::min(15, static_cast<int>(x[j + 16] * id + 8.5f));
    b->qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

bool is_k_quant(DType t) { return t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K; }

// Row of n floats -> bytes of `type` (K-quants through the ref quantizer).
std::vector<uint8_t> encode_row(DType type, const float* x, int64_t n) {
  std::vector<uint8_t> out(dtype_row_size(type, n));
  if (is_k_quant(type)) {
    ref::quantize_row(type, x, out.data(), n);
    return out;
  }
  for (int64_t i = 0; i < n; ++i) {
    switch (type) {
      case DType::F32: std::memcpy(out.data() + 4 * i, &x[i], 4); break;
      case DType::F16: { const uint16_t h = f32_to_f16(x[i]); std::memcpy(out.data() + 2 * i, &h, 2); } break;
      case DType::BF16: { const uint16_t h = f32_to_bf16(x[i]); std::memcpy(out.data() + 2 * i, &h, 2); } break;
      default: break;
    }
  }
  for (int64_t b = 0; type == DType::Q8_0 && b < n / kQK; ++b)
    quantize_q8_0(x + b * kQK, reinterpret_cast<BlockQ8_0*>(out.data()) + b);
  for (int64_t b = 0; type == DType::Q4_0 && b < n / kQK; ++b)
    quantize_q4_0(x + b * kQK, reinterpret_cast<BlockQ4_0*>(out.data()) + b);
  return out;
}

// Bytes of `type` -> the floats they stand for.
std::vector<double> decode_row(DType type, const uint8_t* p, int64_t n) {
  std::vector<double> out(static_cast<size_t>(n));
  if (is_k_quant(type)) {  // the ref dequantizer is the oracle for the K-quant layouts
    std::vector<float> f(static_cast<size_t>(n));
    ref::dequantize_row(type, p, f.data(), n);
    for (int64_t i = 0; i < n; ++i) out[i] = f[i];
    return out;
  }
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    switch (type) {
      case DType::F32: { float f; std::memcpy(&f, p + 4 * i, 4); out[i] = f; } break;
      case DType::F16: std::memcpy(&h, p + 2 * i, 2); out[i] = f16_to_f32(h); break;
      case DType::BF16: std::memcpy(&h, p + 2 * i, 2); out[i] = bf16_to_f32(h); break;
      case DType::Q8_0: {
        const auto* b = reinterpret_cast<const BlockQ8_0*>(p) + i / kQK;
        out[i] = f16_to_f32(b->d) * b->qs[i % kQK];
      } break;
      case DType::Q4_0: {
        const auto* b = reinterpret_cast<const BlockQ4_0*>(p) + i / kQK;
        const int j = static_cast<int>(i % kQK);
        const int q = j < 16 ? (b->qs[j] & 15) : (b->qs[j - 16] >> 4);
        out[i] = f16_to_f32(b->d) * (q - 8);
      } break;
      default: break;
    }
  }
  return out;
}

// ---- device tensors with guard bytes and optional row padding ----

struct DevTensor {
  std::unique_ptr<Buffer> buf;
  Tensor t;
  size_t bytes = 0;  // whole buffer, guards included
};

// Rows (ne[1..3] flattened) of `row_bytes` each, packed in `rows`, placed with
// a row stride of row_bytes + pad.
DevTensor to_device(Backend& gpu, DType type, const std::vector<uint8_t>& rows, int64_t ne0, int64_t ne1,
                    int64_t ne2 = 1, int64_t ne3 = 1, size_t pad = 0) {
  DevTensor d;
  const size_t rb = dtype_row_size(type, ne0);
  Tensor& t = d.t;
  t.type = type;
  t.ne[0] = ne0; t.ne[1] = ne1; t.ne[2] = ne2; t.ne[3] = ne3;
  t.nb[0] = dtype_type_size(type);
  t.nb[1] = rb + pad;
  t.nb[2] = t.nb[1] * ne1;
  t.nb[3] = t.nb[2] * ne2;
  d.bytes = kGuard + t.nb[3] * ne3 + kGuard;
  std::vector<uint8_t> img(d.bytes, kGuardByte);
  const int64_t nrows = ne1 * ne2 * ne3;
  for (int64_t r = 0; r < nrows; ++r) std::memcpy(img.data() + kGuard + r * t.nb[1], rows.data() + r * rb, rb);
  auto b = gpu.alloc_buffer(d.bytes);
  REQUIRE(b.ok());
  d.buf = std::move(b).value();
  REQUIRE(gpu.upload(*d.buf, 0, img.data(), d.bytes).ok());
  t.data = static_cast<char*>(d.buf->data()) + kGuard;
  t.buffer = d.buf.get();
  return d;
}

DevTensor f32_to_device(Backend& gpu, const std::vector<float>& v, int64_t ne0, int64_t ne1, int64_t ne2 = 1,
                        size_t pad = 0) {
  std::vector<uint8_t> bytes(v.size() * 4);
  std::memcpy(bytes.data(), v.data(), bytes.size());
  return to_device(gpu, DType::F32, bytes, ne0, ne1, ne2, 1, pad);
}

// An output full of NaN (0xFF bytes), so unwritten elements are caught.
DevTensor poisoned(Backend& gpu, DType type, int64_t ne0, int64_t ne1, int64_t ne2 = 1, size_t pad = 0) {
  std::vector<uint8_t> bytes(dtype_row_size(type, ne0) * ne1 * ne2, 0xFF);
  return to_device(gpu, type, bytes, ne0, ne1, ne2, 1, pad);
}

// Downloads the rows (packed) and checks the guards and row padding are untouched.
std::vector<uint8_t> from_device(Backend& gpu, DevTensor& d) {
  REQUIRE(gpu.synchronize().ok());
  std::vector<uint8_t> img(d.bytes);
  REQUIRE(gpu.download(img.data(), *d.buf, 0, d.bytes).ok());
  const size_t rb = d.t.row_size();
  const int64_t nrows = d.t.nrows();
  for (size_t i = 0; i < kGuard; ++i) {
    REQUIRE(img[i] == kGuardByte);
    REQUIRE(img[d.bytes - 1 - i] == kGuardByte);
  }
  std::vector<uint8_t> rows(rb * nrows);
  for (int64_t r = 0; r < nrows; ++r) {
    const uint8_t* src = img.data() + kGuard + r * d.t.nb[1];
    std::memcpy(rows.data() + r * rb, src, rb);
    for (size_t p = rb; p < d.t.nb[1]; ++p) REQUIRE(src[p] == kGuardByte);  // pad bytes untouched
  }
  return rows;
}

std::vector<float> f32_from_device(Backend& gpu, DevTensor& d) {
  auto bytes = from_device(gpu, d);
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

std::vector<float> randn(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

Status run_op(Backend& gpu, OpId op, Tensor& dst, std::initializer_list<const Tensor*> srcs, const void* params) {
  OpCall c;
  c.op = op;
  c.dst = &dst;
  for (const Tensor* s : srcs) c.src[c.n_src++] = s;
  c.params = params;
  return gpu.run(c);
}

void check_close(const std::vector<float>& got, const std::vector<double>& want, double atol, double rtol) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
    REQUIRE(std::isfinite(got[i]));
    REQUIRE(std::fabs(got[i] - want[i]) <= atol + rtol * std::fabs(want[i]));
  }
}

}  // namespace

TEST_CASE("cuda: create reports a missing GPU as unsupported", "[cuda]") {
  auto n = cuda_device_count();
  auto b = backend_cuda().create(BackendOptions{});
  REQUIRE(std::string(backend_cuda().name) == "cuda");
  if (!n.ok()) {
    REQUIRE(n.status().code() == StatusCode::unsupported);
    REQUIRE_FALSE(b.ok());
    REQUIRE(b.status().code() == StatusCode::unsupported);
    REQUIRE(b.status().message().find("no CUDA device") != std::string::npos);
    WARN("no GPU here: " << b.status().to_string());
  } else {
    REQUIRE(b.ok());
    REQUIRE(std::string((*b)->name()) == "cuda");
    REQUIRE_FALSE((*b)->is_host());
    auto info = cuda_device_info(0);
    REQUIRE(info.ok());
    WARN("GPU: " << info->name << " cc " << info->cc_major << "." << info->cc_minor << ", " << info->sm_count
                 << " SMs, " << (info->global_mem_bytes >> 20) << " MiB");
    auto bad = backend_cuda().create(BackendOptions{.device = *n});
    REQUIRE(bad.status().code() == StatusCode::invalid_argument);
  }
}

TEST_CASE("cuda: error codes map to statuses", "[cuda]") {
  REQUIRE(cuda_check(cudaSuccess, "x").ok());
  REQUIRE(cuda_check(cudaErrorMemoryAllocation, "alloc").code() == StatusCode::out_of_memory);
  REQUIRE(cuda_check(cudaErrorNoDevice, "count").code() == StatusCode::unsupported);
  REQUIRE(cuda_check(cudaErrorIllegalAddress, "kernel").code() == StatusCode::runtime_error);
  REQUIRE(cuda_check(cudaErrorLaunchFailure, "kernel").code() == StatusCode::runtime_error);
  const Status s = cuda_check(cudaErrorIllegalAddress, "softmax");
  REQUIRE(s.message().find("softmax") != std::string::npos);
  REQUIRE(s.message().find("cudaErrorIllegalAddress") != std::string::npos);
  REQUIRE(cublas_check(CUBLAS_STATUS_SUCCESS, "x").ok());
  REQUIRE(cublas_check(CUBLAS_STATUS_ALLOC_FAILED, "gemm").code() == StatusCode::out_of_memory);
  REQUIRE(cublas_check(CUBLAS_STATUS_EXECUTION_FAILED, "gemm").code() == StatusCode::runtime_error);
  REQUIRE(cublas_check(CUBLAS_STATUS_NOT_SUPPORTED, "gemm").message().find("CUBLAS_STATUS_NOT_SUPPORTED") !=
          std::string::npos);
}

TEST_CASE("cuda: device buffers round-trip and refuse bad ranges", "[cuda][buffer]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  std::vector<uint8_t> host(1000003);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<uint8_t>(i * 131 + 7);
  auto buf = gpu->alloc_buffer(host.size());
  REQUIRE(buf.ok());
  REQUIRE_FALSE((*buf)->is_host());
  REQUIRE((*buf)->size() == host.size());
  REQUIRE(gpu->upload(**buf, 0, host.data(), host.size()).ok());
  std::vector<uint8_t> back(host.size(), 0);
  REQUIRE(gpu->download(back.data(), **buf, 0, back.size()).ok());
  REQUIRE(back == host);
  // Offsets: overwrite a middle piece, read an odd slice.
  const uint8_t patch[5] = {1, 2, 3, 4, 5};
  REQUIRE(gpu->upload(**buf, 777, patch, 5).ok());
  uint8_t got[7];
  REQUIRE(gpu->download(got, **buf, 776, 7).ok());
  REQUIRE(got[0] == host[776]);
  REQUIRE(std::memcmp(got + 1, patch, 5) == 0);
  REQUIRE(got[6] == host[782]);

  SECTION("out of range") {
    REQUIRE(gpu->upload(**buf, host.size() - 2, patch, 5).code() == StatusCode::invalid_argument);
    REQUIRE(gpu->download(got, **buf, host.size() + 1, 0).code() == StatusCode::invalid_argument);
    REQUIRE(gpu->download(got, **buf, SIZE_MAX, 2).code() == StatusCode::invalid_argument);
  }
  SECTION("a host buffer is refused") {
    struct HostBytes final : Buffer {
      uint8_t b[16];
      void* data() override { return b; }
      size_t size() const override { return 16; }
      bool is_host() const override { return true; }
    } hb;
    REQUIRE(gpu->upload(hb, 0, patch, 5).code() == StatusCode::invalid_argument);
    REQUIRE(gpu->download(got, hb, 0, 5).code() == StatusCode::invalid_argument);
  }
  SECTION("an impossible allocation is out_of_memory, and the device stays usable") {
    auto huge = gpu->alloc_buffer(size_t{1} << 52);
    REQUIRE_FALSE(huge.ok());
    REQUIRE(huge.status().code() == StatusCode::out_of_memory);
    REQUIRE(gpu->download(back.data(), **buf, 0, 16).ok());
    REQUIRE(std::memcmp(back.data(), host.data(), 16) == 0);
  }
  SECTION("zero-byte buffer") {
    auto z = gpu->alloc_buffer(0);
    REQUIRE(z.ok());
    REQUIRE(gpu->upload(**z, 0, nullptr, 0).ok());
  }
}

TEST_CASE("cuda: ops on host memory are refused, not run", "[cuda]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  std::vector<float> x(64, 1.0f), y(64, 0.0f);
  Tensor tx = make_tensor(DType::F32, x.data(), 64);
  Tensor ty = make_tensor(DType::F32, y.data(), 64);
  const Status s = run_op(*gpu, OpId::silu, ty, {&tx}, nullptr);
  REQUIRE(s.code() == StatusCode::invalid_argument);
  REQUIRE(gpu->synchronize().ok());  // the context is not poisoned
  // A view running past its buffer is refused too.
  auto d = f32_to_device(*gpu, x, 64, 1);
  Tensor past = d.t;
  past.ne[1] = 4;
  past.nb[2] = past.nb[1] * 4;
  past.nb[3] = past.nb[2];
  Tensor out = past;
  REQUIRE(run_op(*gpu, OpId::silu, out, {&past}, nullptr).code() == StatusCode::invalid_argument);
}

TEST_CASE("cuda: rms_norm", "[cuda][op][rms_norm]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  for (int64_t K : {1, 31, 32, 33, 257, 4096}) {
    for (int mode = 0; mode < 3; ++mode) {  // 0 no weight, 1 w, 2 (1 + w)
      const int64_t rows = 5;
      const size_t pad = K % 2 ? 12 : 0;
      auto xv = randn(K * rows, 11 + K, 2.0f);
      auto wv = randn(K, 12 + K);
      auto x = f32_to_device(*gpu, xv, K, rows, 1, pad);
      auto w = f32_to_device(*gpu, wv, K, 1);
      auto y = poisoned(*gpu, DType::F32, K, rows, 1, pad);
      RmsNormParams p{1e-5f, mode == 2};
      Status s = mode == 0 ? run_op(*gpu, OpId::rms_norm, y.t, {&x.t}, &p)
                           : run_op(*gpu, OpId::rms_norm, y.t, {&x.t, &w.t}, &p);
      REQUIRE(s.ok());
      std::vector<double> want(K * rows);
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t i = 0; i < K; ++i) ss += double(xv[r * K + i]) * xv[r * K + i];
        const double inv = 1.0 / std::sqrt(ss / K + 1e-5);
        for (int64_t i = 0; i < K; ++i) {
          const double g = mode == 0 ? 1.0 : (mode == 1 ? wv[i] : 1.0 + wv[i]);
          want[r * K + i] = xv[r * K + i] * inv * g;
        }
      }
      INFO("K=" << K << " mode=" << mode);
      check_close(f32_from_device(*gpu, y), want, 1e-6, 2e-5);
    }
  }
}

TEST_CASE("cuda: softmax", "[cuda][op][softmax]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  struct Case { int64_t n, rows; SoftmaxParams p; bool mask; };
  const Case cases[] = {
      {1, 3, {}, false},
      {33, 4, {0.5f, 0.0f, false, 0, 0}, false},
      {257, 7, {1.0f, 5.0f, false, 0, 0}, false},          // soft cap
      {40, 9, {0.125f, 0.0f, true, 0, 31}, false},         // causal, offset
      {40, 9, {1.0f, 0.0f, true, 4, 3}, false},            // causal + window
      {64, 6, {1.0f, 0.0f, false, 0, 0}, true},            // mask (some rows fully masked)
      {5000, 2, {1.0f, 30.0f, true, 0, 4990}, true},
  };
  int ci = 0;
  for (const Case& c : cases) {
    INFO("case " << ci++);
    auto xv = randn(c.n * c.rows, 100 + ci, 3.0f);
    std::vector<float> mv(c.n * c.rows, 0.0f);
    std::mt19937 rng(7 + ci);
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t j = 0; j < c.n; ++j)
        mv[r * c.n + j] = (r == 1 || rng() % 3 == 0) ? -INFINITY : 0.25f * (rng() % 5);
    auto x = f32_to_device(*gpu, xv, c.n, c.rows, 1, 8);
    auto m = f32_to_device(*gpu, mv, c.n, c.rows);
    auto y = poisoned(*gpu, DType::F32, c.n, c.rows, 1, 4);
    REQUIRE((c.mask ? run_op(*gpu, OpId::softmax, y.t, {&x.t, &m.t}, &c.p)
                    : run_op(*gpu, OpId::softmax, y.t, {&x.t}, &c.p)).ok());
    std::vector<double> want(c.n * c.rows);
    for (int64_t r = 0; r < c.rows; ++r) {
      std::vector<double> s(c.n);
      double mx = -INFINITY;
      const int64_t q = c.p.pos_offset + r;
      for (int64_t j = 0; j < c.n; ++j) {
        double v = double(xv[r * c.n + j]) * c.p.scale;
        if (c.p.soft_cap > 0) v = c.p.soft_cap * std::tanh(v / c.p.soft_cap);
        if (c.mask) v += mv[r * c.n + j];
        if (c.p.causal && j > q) v = -INFINITY;
        if (c.p.window > 0 && q - j >= c.p.window) v = -INFINITY;
        s[j] = v;
        mx = std::max(mx, v);
      }
      double sum = 0;
      for (int64_t j = 0; j < c.n; ++j) sum += mx == -INFINITY ? 0 : std::exp(s[j] - mx);
      for (int64_t j = 0; j < c.n; ++j) want[r * c.n + j] = mx == -INFINITY ? 0.0 : std::exp(s[j] - mx) / sum;
    }
    check_close(f32_from_device(*gpu, y), want, 1e-7, 2e-5);
  }
}

namespace {

// matmul y[m][n] = sum_k W[n][k] x[m][k] for W of `type`, x/y with padded rows.
void check_matmul(Backend& gpu, DType type, int64_t K, int64_t N, int64_t M, int64_t B2, size_t xpad,
                  size_t wpad = 0, float xscale = 1.0f, bool exact_f16_x = false) {
  INFO(dtype_name(type) << " K=" << K << " N=" << N << " M=" << M << " B2=" << B2 << " xpad=" << xpad
                        << " wpad=" << wpad << " xscale=" << xscale);
  auto wf = randn(K * N, uint32_t(K * 7 + N), 0.5f);
  auto xv = randn(K * M * B2, uint32_t(M * 13 + K), xscale);
  std::vector<uint8_t> wbytes;
  std::vector<double> wd;
  for (int64_t n = 0; n < N; ++n) {
    auto row = encode_row(type, wf.data() + n * K, K);
    auto dec = decode_row(type, row.data(), K);
    wbytes.insert(wbytes.end(), row.begin(), row.end());
    wd.insert(wd.end(), dec.begin(), dec.end());
  }
  auto w = to_device(gpu, type, wbytes, K, N, 1, 1, wpad);
  auto x = f32_to_device(gpu, xv, K, M, B2, xpad);
  auto y = poisoned(gpu, DType::F32, N, M, B2, xpad ? 4 : 0);
  REQUIRE(run_op(gpu, OpId::matmul, y.t, {&w.t, &x.t}, nullptr).ok());
  auto got = f32_from_device(gpu, y);
  // Q4_0 / Q8_0 decode rows run on 8-bit activations (k_matvec_q8.cu), and so
  // do the rows below 8 of the warp-per-row kernels' quantized types (x staged
  // as 8-bit records, k_matvec.cu): each x element moves by at most max|x| / 254
  // of its 32-block.
  const bool q8 = ((type == DType::Q4_0 || type == DType::Q8_0) && M * B2 < 8 && wpad % 2 == 0) ||
                  (type == DType::Q4_K && M * B2 < 8 && wpad % 4 == 0) ||
                  (type == DType::Q6_K && M * B2 < 8 && wpad % 2 == 0);
  for (int64_t m = 0; m < M * B2; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double want = 0, mag = 0, q8_bound = 0;
      for (int64_t k = 0; k < K; ++k) {
        want += wd[n * K + k] * xv[m * K + k];
        mag += std::fabs(wd[n * K + k] * xv[m * K + k]);
        if (q8) {
          double amax = 0;
          for (int64_t j = k / 32 * 32; j < k / 32 * 32 + 32; ++j) amax = std::max(amax, (double)std::fabs(xv[m * K + j]));
          q8_bound += std::fabs(wd[n * K + k]) * amax / 254.0;
        }
      }
      const float g = got[m * N + n];
      INFO("m=" << m << " n=" << n << " got " << g << " want " << want);
      REQUIRE(std::isfinite(g));
      // Quantized and F16 weights from 8 activation rows on run on tensor
      // cores in F16 (cuda_matmul.cpp): each operand rounded to 11 bits,
      // unless the backend keeps x's 22 bits for F16 weights.
      const bool f16 = (dtype_block_size(type) > 1 || (type == DType::F16 && !exact_f16_x)) && M * B2 >= 8;
      REQUIRE(std::fabs(g - want) <= (f16 ? 0x1p-10 : 1e-5) * mag + q8_bound * 1.001 + 1e-6);
    }
  }
}

}  // namespace

TEST_CASE("cuda: matmul F32/F16/BF16 (direct and cuBLAS paths)", "[cuda][op][matmul]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    check_matmul(*gpu, t, 1, 1, 1, 1, 0);
    check_matmul(*gpu, t, 33, 5, 1, 1, 0);       // decode matvec, odd K
    check_matmul(*gpu, t, 31, 17, 3, 1, 8);      // direct, strided x
    check_matmul(*gpu, t, 129, 65, 8, 1, 0);     // cuBLAS
    check_matmul(*gpu, t, 257, 33, 17, 2, 12);   // cuBLAS, padded rows, batch dim
    check_matmul(*gpu, t, 4097, 3, 9, 1, 0);
  }
}

// F16 weights from 8 rows on: tensor cores on x scaled per row by a power of
// two and rounded to F16 (11 bits, F16's range never shows), or with
// exact_f16_x split into F16 hi + lo (FP32-level error).
TEST_CASE("cuda: matmul F16 on tensor cores at any activation scale", "[cuda][op][matmul]") {
  for (bool exact : {false, true}) {
    BackendOptions bo;
    bo.exact_f16_x = exact;
    auto b = backend_cuda().create(bo);
    std::unique_ptr<Backend> gpu = b ? std::move(b).value() : nullptr;
    NEED_GPU(gpu);
    INFO("exact_f16_x " << exact);
    for (float xscale : {1e-6f, 3e-3f, 1.0f, 7e4f, 1e9f}) {
      check_matmul(*gpu, DType::F16, 96, 40, 8, 1, 0, 0, xscale, exact);
      check_matmul(*gpu, DType::F16, 1000, 7, 33, 1, 4, 2, xscale, exact);  // strided x, padded W rows
    }
  }
}

TEST_CASE("cuda: matmul Q4_K/Q5_K/Q6_K", "[cuda][op][matmul]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  for (DType t : {DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    check_matmul(*gpu, t, 256, 1, 1, 1, 0);
    check_matmul(*gpu, t, 512, 7, 3, 1, 8);     // super-block matvec
    check_matmul(*gpu, t, 512, 5, 1, 1, 0, 2);  // W rows 2-byte aligned only: generic direct kernel
    check_matmul(*gpu, t, 768, 33, 9, 2, 0);    // dequantized chunks + cuBLAS
  }
}

TEST_CASE("cuda: matmul Q8_0/Q4_0", "[cuda][op][matmul]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    check_matmul(*gpu, t, 32, 1, 1, 1, 0);
    check_matmul(*gpu, t, 96, 7, 1, 1, 0);
    check_matmul(*gpu, t, 64, 33, 5, 1, 16);
    check_matmul(*gpu, t, 2048, 65, 16, 1, 0);
    check_matmul(*gpu, t, 4096, 9, 33, 2, 4);
  }
}

// A speculative verify's rows and a plain decode step's row: each row of a few-row
// quantized matvec is computed as that row alone (x rows staged separately, the
// same unit order per lane), so greedy speculation on the GPU keeps plain tokens.
TEST_CASE("cuda: quantized matvec rows equal their one-row results bit for bit", "[cuda][op][matmul]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K}) {
    const int64_t K = 768, N = 37;
    auto wf = randn(K * N, 5, 0.5f);
    std::vector<uint8_t> wbytes;
    for (int64_t n = 0; n < N; ++n) {
      auto row = encode_row(t, wf.data() + n * K, K);
      wbytes.insert(wbytes.end(), row.begin(), row.end());
    }
    auto w = to_device(*gpu, t, wbytes, K, N, 1, 1, 0);
    for (int64_t M : {2, 3, 7}) {
      INFO(dtype_name(t) << " M=" << M);
      auto xv = randn(K * M, uint32_t(M), 1.0f);
      auto x = f32_to_device(*gpu, xv, K, M, 1, 0);
      auto y = poisoned(*gpu, DType::F32, N, M, 1, 0);
      REQUIRE(run_op(*gpu, OpId::matmul, y.t, {&w.t, &x.t}, nullptr).ok());
      auto got = f32_from_device(*gpu, y);
      for (int64_t m = 0; m < M; ++m) {
        std::vector<float> one(xv.begin() + m * K, xv.begin() + (m + 1) * K);
        auto x1 = f32_to_device(*gpu, one, K, 1, 1, 0);
        auto y1 = poisoned(*gpu, DType::F32, N, 1, 1, 0);
        REQUIRE(run_op(*gpu, OpId::matmul, y1.t, {&w.t, &x1.t}, nullptr).ok());
        auto want = f32_from_device(*gpu, y1);
        INFO("row " << m);
        CHECK(std::memcmp(got.data() + m * N, want.data(), static_cast<size_t>(N) * sizeof(float)) == 0);
      }
    }
  }
}

TEST_CASE("cuda: elementwise ops", "[cuda][op][elementwise]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  const int64_t K = 67, R = 5;
  auto av = randn(K * R, 1, 2.0f), bv = randn(K * R, 2, 2.0f), brow = randn(K, 3);
  auto a = f32_to_device(*gpu, av, K, R, 1, 4);
  auto b = f32_to_device(*gpu, bv, K, R);
  auto bb = f32_to_device(*gpu, brow, K, 1);
  auto silu = [](double v) { return v / (1 + std::exp(-v)); };
  auto gtanh = [](double v) { return 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))); };
  auto gerf = [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); };
  auto check = [&](OpId op, const void* p, bool two, const DevTensor& second, auto f) {
    INFO(op_name(op));
    auto y = poisoned(*gpu, DType::F32, K, R, 1, 8);
    REQUIRE((two ? run_op(*gpu, op, y.t, {&a.t, &second.t}, p) : run_op(*gpu, op, y.t, {&a.t}, p)).ok());
    std::vector<double> want(K * R);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t i = 0; i < K; ++i) {
        const double bvv = second.t.ne[1] == 1 ? brow[i] : bv[r * K + i];
        want[r * K + i] = f(double(av[r * K + i]), bvv);
      }
    check_close(f32_from_device(*gpu, y), want, 1e-6, 1e-5);
  };
  ScaleParams sp{0.75f, -0.5f};
  GeluParams ge{GeluForm::erf}, gt{GeluForm::tanh};
  check(OpId::add, nullptr, true, b, [](double u, double v) { return u + v; });
  check(OpId::add, nullptr, true, bb, [](double u, double v) { return u + v; });  // broadcast row
  check(OpId::mul, nullptr, true, bb, [](double u, double v) { return u * v; });
  check(OpId::scale, &sp, false, b, [](double u, double) { return u * 0.75 - 0.5; });
  check(OpId::silu, nullptr, false, b, [&](double u, double) { return silu(u); });
  check(OpId::gelu, &gt, false, b, [&](double u, double) { return gtanh(u); });
  check(OpId::gelu, &ge, false, b, [&](double u, double) { return gerf(u); });
  check(OpId::swiglu, nullptr, true, b, [&](double u, double v) { return silu(u) * v; });
  check(OpId::geglu, &gt, true, b, [&](double u, double v) { return gtanh(u) * v; });
  check(OpId::geglu, &ge, true, b, [&](double u, double v) { return gerf(u) * v; });
  // In place (dst == a) for scale.
  auto c = f32_to_device(*gpu, av, K, R);
  REQUIRE(run_op(*gpu, OpId::scale, c.t, {&c.t}, &sp).ok());
  std::vector<double> want(av.begin(), av.end());
  for (auto& v : want) v = v * 0.75 - 0.5;
  check_close(f32_from_device(*gpu, c), want, 1e-6, 1e-6);
}

TEST_CASE("cuda: copy converts F32/F16/BF16", "[cuda][op][copy]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  const int64_t K = 45, R = 3;
  auto v = randn(K * R, 5, 10.0f);
  for (DType from : {DType::F32, DType::F16, DType::BF16})
    for (DType to : {DType::F32, DType::F16, DType::BF16})
      for (size_t xpad : {0, 6})
        for (size_t ypad : {0, 2, 3}) {
          // Odd paddings leave rows unaligned: copy must still take them.
          INFO(dtype_name(from) << " -> " << dtype_name(to) << ", row padding " << xpad << " / " << ypad);
          std::vector<uint8_t> in;
          for (int64_t r = 0; r < R; ++r) {
            auto row = encode_row(from, v.data() + r * K, K);
            in.insert(in.end(), row.begin(), row.end());
          }
          auto x = to_device(*gpu, from, in, K, R, 1, 1, xpad);
          auto y = poisoned(*gpu, to, K, R, 1, ypad);
          REQUIRE(run_op(*gpu, OpId::copy, y.t, {&x.t}, nullptr).ok());
          auto out = from_device(*gpu, y);
          // Expected: decode(from) re-encoded to `to` with the host's exact RNE conversions.
          for (int64_t r = 0; r < R; ++r) {
            auto mid = decode_row(from, in.data() + r * dtype_row_size(from, K), K);
            std::vector<float> midf(mid.begin(), mid.end());
            auto want = encode_row(to, midf.data(), K);
            std::string head;
            for (size_t i = 0; i < 8; ++i)
              head += std::to_string(out[r * want.size() + i]) + "/" + std::to_string(want[i]) + " ";
            INFO("row " << r << ", first bytes got/want: " << head);
            REQUIRE(std::memcmp(out.data() + r * want.size(), want.data(), want.size()) == 0);
          }
        }
}

TEST_CASE("cuda: argmax and get_rows", "[cuda][op][argmax][get_rows]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  SECTION("argmax: ties to the lowest index, NaN never wins") {
    const int64_t N = 1000, M = 4;
    auto v = randn(N * M, 9);
    v[0 * N + 500] = 50.0f; v[0 * N + 700] = 50.0f;       // tie -> 500
    v[1 * N + 3] = NAN; v[1 * N + 999] = 9.0f;            // NaN ignored -> 999
    for (int64_t j = 0; j < N; ++j) v[2 * N + j] = -INFINITY;  // all -inf -> 0
    auto x = f32_to_device(*gpu, v, N, M);
    auto y = poisoned(*gpu, DType::I32, M, 1);
    REQUIRE(run_op(*gpu, OpId::argmax, y.t, {&x.t}, nullptr).ok());
    auto bytes = from_device(*gpu, y);
    int32_t got[4];
    std::memcpy(got, bytes.data(), 16);
    REQUIRE(got[0] == 500);
    REQUIRE(got[1] == 999);
    REQUIRE(got[2] == 0);
    int32_t best = 0;
    for (int32_t j = 1; j < N; ++j)
      if (v[3 * N + j] > v[3 * N + best]) best = j;
    REQUIRE(got[3] == best);
    // strict: a row with a NaN or an infinity gives -1, the others their argmax.
    const ArgmaxParams strict{true};
    REQUIRE(run_op(*gpu, OpId::argmax, y.t, {&x.t}, &strict).ok());
    bytes = from_device(*gpu, y);
    std::memcpy(got, bytes.data(), 16);
    CHECK(got[0] == 500);
    CHECK(got[1] == -1);
    CHECK(got[2] == -1);
    CHECK(got[3] == best);
  }
  SECTION("get_rows of every supported table type") {
    const int64_t N = 10;
    const int32_t ids_v[] = {3, 0, 9, 3, 7};
    std::vector<uint8_t> idb(sizeof(ids_v));
    std::memcpy(idb.data(), ids_v, sizeof(ids_v));
    for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q5_K,
                    DType::Q6_K}) {
      INFO(dtype_name(t));
      const int64_t K = is_k_quant(t) ? 512 : 64;
      auto tf = randn(K * N, 21);
      std::vector<uint8_t> tb;
      std::vector<double> td;
      for (int64_t n = 0; n < N; ++n) {
        auto row = encode_row(t, tf.data() + n * K, K);
        auto dec = decode_row(t, row.data(), K);
        tb.insert(tb.end(), row.begin(), row.end());
        td.insert(td.end(), dec.begin(), dec.end());
      }
      auto table = to_device(*gpu, t, tb, K, N);
      auto ids = to_device(*gpu, DType::I32, idb, 5, 1);
      auto y = poisoned(*gpu, DType::F32, K, 5, 1, 8);
      REQUIRE(run_op(*gpu, OpId::get_rows, y.t, {&table.t, &ids.t}, nullptr).ok());
      std::vector<double> want;
      for (int32_t id : ids_v) want.insert(want.end(), td.begin() + id * K, td.begin() + (id + 1) * K);
      check_close(f32_from_device(*gpu, y), want, 0, 0);
    }
    // An id outside the table yields a row of zeros (as on cpu): the kernel
    // reads nothing out of bounds and nothing is read back to the host (a
    // plan checks the ids it uploads; see test_cuda_plan).
    const int32_t bad_v[] = {1, 10, -3};
    std::vector<uint8_t> bad(sizeof(bad_v));
    std::memcpy(bad.data(), bad_v, sizeof(bad_v));
    const int64_t K = 64;
    auto tv = randn(K * N, 5);
    std::vector<uint8_t> tb(tv.size() * 4);
    std::memcpy(tb.data(), tv.data(), tb.size());
    auto table = to_device(*gpu, DType::F32, tb, K, N);
    auto ids = to_device(*gpu, DType::I32, bad, 3, 1);
    auto y = poisoned(*gpu, DType::F32, K, 3);
    REQUIRE(run_op(*gpu, OpId::get_rows, y.t, {&table.t, &ids.t}, nullptr).ok());
    std::vector<double> want(3 * K, 0.0);
    for (int64_t k = 0; k < K; ++k) want[k] = tv[1 * K + k];
    check_close(f32_from_device(*gpu, y), want, 0, 0);
  }
}

TEST_CASE("cuda: rope adjacent and neox", "[cuda][op][rope]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  const int64_t D = 40, H = 3, T = 4;
  const int32_t pos_v[T] = {0, 1, 17, 4000};
  std::vector<uint8_t> pb(sizeof(pos_v));
  std::memcpy(pb.data(), pos_v, sizeof(pos_v));
  for (RopeMode mode : {RopeMode::adjacent, RopeMode::neox}) {
    for (int n_dims : {40, 32}) {
      INFO("mode " << int(mode) << " n_dims " << n_dims);
      auto xv = randn(D * H * T, 31);
      auto x = f32_to_device(*gpu, xv, D, H, T, 4);
      auto pos = to_device(*gpu, DType::I32, pb, T, 1);
      auto y = poisoned(*gpu, DType::F32, D, H, T);
      RopeParams p{mode, n_dims, 10000.0f, 0.5f};
      REQUIRE(run_op(*gpu, OpId::rope, y.t, {&x.t, &pos.t}, &p).ok());
      std::vector<double> want(xv.begin(), xv.end());
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h) {
          const int64_t base = (t * H + h) * D;
          for (int i = 0; i < n_dims / 2; ++i) {
            const double th = pos_v[t] * 0.5 * std::pow(10000.0, -2.0 * i / n_dims);
            const int64_t i0 = mode == RopeMode::neox ? i : 2 * i;
            const int64_t i1 = mode == RopeMode::neox ? i + n_dims / 2 : 2 * i + 1;
            const double x0 = xv[base + i0], x1 = xv[base + i1];
            want[base + i0] = x0 * std::cos(th) - x1 * std::sin(th);
            want[base + i1] = x0 * std::sin(th) + x1 * std::cos(th);
          }
        }
      check_close(f32_from_device(*gpu, y), want, 1e-6, 1e-6);
    }
  }
}

TEST_CASE("cuda: supports() reports what it cannot run", "[cuda]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  // Attention whose scores do not fit in a block's shared memory (400 KB at
  // n_kv = 100000): supports is false and run reports unsupported.
  const int64_t n_kv = 100000;
  auto q = f32_to_device(*gpu, randn(128, 1), 128, 1, 1);
  auto kv = to_device(*gpu, DType::F16, std::vector<uint8_t>(128 * n_kv * 2, 0), 128, 1, n_kv);
  auto y = poisoned(*gpu, DType::F32, 128, 1, 1);
  OpCall c;
  c.op = OpId::attention;
  c.dst = &y.t;
  c.src[0] = &q.t;
  c.src[1] = &kv.t;
  c.src[2] = &kv.t;
  c.n_src = 3;
  REQUIRE_FALSE(gpu->supports(c));
  REQUIRE(gpu->run(c).code() == StatusCode::unsupported);
  // An invalid call is invalid_argument, not a launch.
  Tensor bad = y.t;
  bad.ne[0] = 3;  // dst no longer matches q
  c.dst = &bad;
  REQUIRE(gpu->run(c).code() == StatusCode::invalid_argument);
}

// Timing, not a check: hidden from the default run ("[.]"); run with
// `test_cuda "[bench]"` on a GPU machine. Prints GB/s of weight bytes for the
// decode matvec (W larger than L2, so it streams from HBM) and GFLOP/s for a
// prompt-sized matmul.
TEST_CASE("cuda: matmul timing", "[.][bench][cuda]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  const int64_t K = 4096, N = 32000;
  auto wf = randn(static_cast<size_t>(K) * 64, 77, 0.05f);
  for (DType t : {DType::F32, DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K}) {
    std::vector<uint8_t> wb(dtype_row_size(t, K) * N);
    const size_t rb = dtype_row_size(t, K);
    for (int64_t n = 0; n < N; ++n) {  // 64 distinct rows, repeated (quantizing all is slow)
      if (n < 64) {
        auto row = encode_row(t, wf.data() + n * K, K);
        std::memcpy(wb.data() + n * rb, row.data(), rb);
      } else {
        std::memcpy(wb.data() + n * rb, wb.data() + (n % 64) * rb, rb);
      }
    }
    auto w = to_device(*gpu, t, wb, K, N);
    for (int64_t M : {1, 4, 512}) {
      auto x = f32_to_device(*gpu, randn(static_cast<size_t>(K) * M, 5), K, M);
      auto y = poisoned(*gpu, DType::F32, N, M);
      for (int i = 0; i < 3; ++i) REQUIRE(run_op(*gpu, OpId::matmul, y.t, {&w.t, &x.t}, nullptr).ok());
      REQUIRE(gpu->synchronize().ok());
      const int iters = M >= 512 ? 10 : 50;
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) REQUIRE(run_op(*gpu, OpId::matmul, y.t, {&w.t, &x.t}, nullptr).ok());
      REQUIRE(gpu->synchronize().ok());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
      std::printf("matmul %-5s K=%lld N=%lld M=%-4lld  %8.3f ms  %7.1f GB/s of W  %8.1f GFLOP/s\n", dtype_name(t),
                  (long long)K, (long long)N, (long long)M, s * 1e3, wb.size() / s / 1e9, 2.0 * K * N * M / s / 1e9);
    }
  }
}

TEST_CASE("cuda: attention (GQA, mask, soft cap, long KV in opted-in shared memory)", "[cuda][op][attention]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  struct Case { int64_t D, Hq, Hkv, M, n_kv; DType kv; float cap; bool mask; };
  const Case cases[] = {
      {5, 3, 1, 2, 1, DType::F32, 0.0f, false},
      {64, 4, 2, 3, 33, DType::F16, 0.0f, true},
      {128, 4, 2, 2, 20000, DType::F16, 0.0f, true},   // 80 KB of scores: above the 48 KB default
      {80, 2, 1, 1, 300, DType::F32, 5.0f, true},
  };
  int ci = 0;
  for (const Case& c : cases) {
    INFO("case " << ci++);
    const float scale = 1.0f / std::sqrt(float(c.D));
    auto qv = randn(c.D * c.Hq * c.M, 40 + ci);
    auto kf = randn(c.D * c.Hkv * c.n_kv, 50 + ci), vf = randn(c.D * c.Hkv * c.n_kv, 60 + ci);
    std::vector<float> mv(c.n_kv * c.M);
    std::mt19937 rng(70 + ci);
    for (int64_t m = 0; m < c.M; ++m)
      for (int64_t j = 0; j < c.n_kv; ++j)
        mv[m * c.n_kv + j] = (m == 0 && c.M > 1) || rng() % 4 == 0 ? -INFINITY : 0.0f;
    if (c.M > 1) mv[(c.M - 1) * c.n_kv] = 0.0f;  // the last query keeps at least one key
    auto kb = encode_row(c.kv, kf.data(), c.D * c.Hkv * c.n_kv), vb = encode_row(c.kv, vf.data(), c.D * c.Hkv * c.n_kv);
    auto kd = decode_row(c.kv, kb.data(), c.D * c.Hkv * c.n_kv), vd = decode_row(c.kv, vb.data(), c.D * c.Hkv * c.n_kv);
    auto q = f32_to_device(*gpu, qv, c.D, c.Hq, c.M);
    auto k = to_device(*gpu, c.kv, kb, c.D, c.Hkv, c.n_kv);
    auto v = to_device(*gpu, c.kv, vb, c.D, c.Hkv, c.n_kv);
    auto mk = f32_to_device(*gpu, mv, c.n_kv, c.M);
    auto y = poisoned(*gpu, DType::F32, c.D, c.Hq, c.M);
    AttentionParams p{scale, c.cap};
    REQUIRE((c.mask ? run_op(*gpu, OpId::attention, y.t, {&q.t, &k.t, &v.t, &mk.t}, &p)
                    : run_op(*gpu, OpId::attention, y.t, {&q.t, &k.t, &v.t}, &p)).ok());
    std::vector<double> want(c.D * c.Hq * c.M, 0.0);
    for (int64_t m = 0; m < c.M; ++m)
      for (int64_t h = 0; h < c.Hq; ++h) {
        const int64_t g = h / (c.Hq / c.Hkv);
        std::vector<double> s(c.n_kv);
        double mx = -INFINITY;
        for (int64_t j = 0; j < c.n_kv; ++j) {
          if (c.mask && mv[m * c.n_kv + j] == -INFINITY) { s[j] = -INFINITY; continue; }
          double dot = 0;
          for (int64_t d = 0; d < c.D; ++d) dot += double(qv[(m * c.Hq + h) * c.D + d]) * kd[(j * c.Hkv + g) * c.D + d];
          dot *= scale;
          if (c.cap > 0) dot = c.cap * std::tanh(dot / c.cap);
          s[j] = dot;
          mx = std::max(mx, dot);
        }
        if (mx == -INFINITY) continue;
        double sum = 0;
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (int64_t d = 0; d < c.D; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < c.n_kv; ++j) acc += s[j] * vd[(j * c.Hkv + g) * c.D + d];
          want[(m * c.Hq + h) * c.D + d] = acc / sum;
        }
      }
    check_close(f32_from_device(*gpu, y), want, 2e-6, 2e-5);
  }
}

// Prompt attention over per-query ranges with an F16 cache: the tensor-core
// kernel (k_attention_mma.cu) at head_dim 64 / 128 / 256, groups that do not
// divide its 64 rows (6), queries of several streams in one block, ranges with
// gaps (the cells between hold NaN: never read), empty ranges, sliding windows,
// a soft cap, and |q| ~ 3e4 (above F16's range before the kernel's scaling).
TEST_CASE("cuda: prompt attention over ranges on tensor cores", "[cuda][op][attention]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  // atol: at |q| ~ 3e4 (case 3) a score is a sum of 256 products of ~2e4 each,
  // so its float rounding alone is ~1e-3 before the soft cap; the case checks
  // the kernel's scaling against F16 overflow (errors of order 1), not rounding.
  struct Case { int64_t D, Hq, Hkv, M, n_kv, n_st; int kind; float q_sd, cap; double atol = 2e-6; };
  // kind 0: causal after 20 cached tokens; 1: sliding window of 16; 2: three
  // streams in runs, gaps, empty and invalid ranges.
  const Case cases[] = {
      {64, 32, 4, 100, 120, 1, 0, 1.0f, 0.0f},  {128, 12, 2, 37, 60, 1, 1, 1.0f, 0.0f},
      {256, 4, 1, 21, 41, 1, 0, 1.0f, 0.0f},    {256, 4, 1, 21, 41, 1, 0, 3e4f, 30.0f, 1e-3},
      {64, 8, 8, 70, 48, 3, 2, 1.0f, 0.0f},     {128, 6, 1, 29, 48, 3, 2, 1.0f, 5.0f},
  };
  int ci = 0;
  for (const Case& c : cases) {
    INFO("case " << ci++);
    std::vector<int32_t> rg(3 * c.M);
    std::vector<bool> in_range(c.n_kv * c.n_st, false);
    for (int64_t m = 0; m < c.M; ++m) {
      int32_t st = 0, lo = 0, hi = static_cast<int32_t>(20 + m + 1);
      if (c.kind == 1) lo = std::max<int32_t>(0, hi - 16);
      if (c.kind == 2) {
        st = static_cast<int32_t>(m * c.n_st / c.M);
        const int64_t i = m % 7;
        lo = i % 2 ? 30 : 0, hi = i % 2 ? 40 : 10;  // two disjoint ranges per stream: a gap
        if (i == 3) lo = hi = 5;                     // empty
        if (i == 5) st = -1;                          // no stream: sees nothing
        if (i == 6) lo = 2, hi = 9;
      }
      rg[3 * m] = st, rg[3 * m + 1] = lo, rg[3 * m + 2] = hi;
      if (st >= 0)
        for (int32_t j = lo; j < hi; ++j) in_range[st * c.n_kv + j] = true;
    }
    const int64_t n_rows = c.Hkv * c.n_kv * c.n_st;
    auto qv = randn(c.D * c.Hq * c.M, 80 + ci, c.q_sd);
    auto kf = randn(c.D * n_rows, 90 + ci), vf = randn(c.D * n_rows, 100 + ci);
    auto kb = encode_row(DType::F16, kf.data(), c.D * n_rows), vb = encode_row(DType::F16, vf.data(), c.D * n_rows);
    auto kd = decode_row(DType::F16, kb.data(), c.D * n_rows), vd = decode_row(DType::F16, vb.data(), c.D * n_rows);
    const uint16_t nan16 = 0x7E00;
    for (int64_t st = 0; st < c.n_st; ++st)
      for (int64_t j = 0; j < c.n_kv; ++j)
        for (int64_t h = 0; h < c.Hkv && !in_range[st * c.n_kv + j]; ++h)
          for (int64_t d = 0; d < c.D; ++d) {
            const size_t e = static_cast<size_t>(((st * c.n_kv + j) * c.Hkv + h) * c.D + d) * 2;
            std::memcpy(kb.data() + e, &nan16, 2);
            std::memcpy(vb.data() + e, &nan16, 2);
          }
    std::vector<uint8_t> rb(rg.size() * 4);
    std::memcpy(rb.data(), rg.data(), rb.size());
    auto q = f32_to_device(*gpu, qv, c.D, c.Hq, c.M);
    auto k = to_device(*gpu, DType::F16, kb, c.D, c.Hkv, c.n_kv, c.n_st);
    auto v = to_device(*gpu, DType::F16, vb, c.D, c.Hkv, c.n_kv, c.n_st);
    auto r = to_device(*gpu, DType::I32, rb, 3, c.M);
    auto y = poisoned(*gpu, DType::F32, c.D, c.Hq, c.M);
    const float scale = 1.0f / std::sqrt(float(c.D));
    AttentionParams p{scale, c.cap};
    REQUIRE(run_op(*gpu, OpId::attention, y.t, {&q.t, &k.t, &v.t, &r.t}, &p).ok());
    std::vector<double> want(c.D * c.Hq * c.M, 0.0);
    const int64_t G = c.Hq / c.Hkv;
    for (int64_t m = 0; m < c.M; ++m) {
      const int32_t st = rg[3 * m], lo = rg[3 * m + 1], hi = rg[3 * m + 2];
      if (st < 0 || lo >= hi) continue;
      for (int64_t h = 0; h < c.Hq; ++h) {
        std::vector<double> s(hi - lo);
        double mx = -INFINITY;
        for (int32_t j = lo; j < hi; ++j) {
          const int64_t row = (st * c.n_kv + j) * c.Hkv + h / G;
          double dot = 0;
          for (int64_t d = 0; d < c.D; ++d) dot += double(qv[(m * c.Hq + h) * c.D + d]) * kd[row * c.D + d];
          dot *= scale;
          if (c.cap > 0) dot = c.cap * std::tanh(dot / c.cap);
          mx = std::max(mx, s[j - lo] = dot);
        }
        double sum = 0;
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (int64_t d = 0; d < c.D; ++d) {
          double acc = 0;
          for (int32_t j = lo; j < hi; ++j) acc += s[j - lo] * vd[((st * c.n_kv + j) * c.Hkv + h / G) * c.D + d];
          want[(m * c.Hq + h) * c.D + d] = acc / sum;
        }
      }
    }
    check_close(f32_from_device(*gpu, y), want, c.atol, 2e-5);
  }
}

// One query over per-query ranges (decode): the decode kernel, split over the
// KV span (flash-decoding: up to 16 slices of the cache's cells, merged by the
// block that finishes last). Caches of 100 to 4100 cells per stream (1 to 16
// slices), ranges from the start, under a sliding window, shorter than the
// slice count (most slices empty), empty, and in the second of two streams,
// F16 and F32 cells, a soft cap; each op runs three times (the per-pair
// counters must be back at zero for the next launch) with the same output.
TEST_CASE("cuda: decode attention split over the KV span", "[cuda][op][attention]") {
  auto gpu = make_gpu();
  NEED_GPU(gpu);
  struct Case { int64_t D, Hq, Hkv, n_kv, n_st; DType kv; int32_t st, lo, hi; float cap; };
  const Case cases[] = {
      {64, 8, 2, 100, 1, DType::F16, 0, 0, 77, 0.0f},      {128, 8, 2, 2000, 1, DType::F16, 0, 0, 1999, 0.0f},
      {128, 8, 8, 4100, 2, DType::F16, 1, 2000, 4100, 0.0f}, {64, 4, 1, 2000, 1, DType::F32, 0, 1500, 1530, 5.0f},
      {64, 8, 2, 3000, 1, DType::F16, 0, 5, 12, 0.0f},     {64, 8, 2, 3000, 1, DType::F16, 0, 9, 9, 0.0f},
      {256, 4, 1, 1000, 1, DType::F16, 0, 0, 1000, 30.0f},
  };
  int ci = 0;
  for (const Case& c : cases) {
    INFO("case " << ci++);
    const int64_t n_rows = c.Hkv * c.n_kv * c.n_st;
    auto qv = randn(c.D * c.Hq, 110 + ci);
    auto kf = randn(c.D * n_rows, 120 + ci), vf = randn(c.D * n_rows, 130 + ci);
    auto kb = encode_row(c.kv, kf.data(), c.D * n_rows), vb = encode_row(c.kv, vf.data(), c.D * n_rows);
    auto kd = decode_row(c.kv, kb.data(), c.D * n_rows), vd = decode_row(c.kv, vb.data(), c.D * n_rows);
    const int32_t rg[3] = {c.st, c.lo, c.hi};
    std::vector<uint8_t> rb(12);
    std::memcpy(rb.data(), rg, 12);
    auto q = f32_to_device(*gpu, qv, c.D, c.Hq, 1);
    auto k = to_device(*gpu, c.kv, kb, c.D, c.Hkv, c.n_kv, c.n_st);
    auto v = to_device(*gpu, c.kv, vb, c.D, c.Hkv, c.n_kv, c.n_st);
    auto r = to_device(*gpu, DType::I32, rb, 3, 1);
    const float scale = 1.0f / std::sqrt(float(c.D));
    AttentionParams p{scale, c.cap};
    std::vector<double> want(c.D * c.Hq, 0.0);
    const int64_t G = c.Hq / c.Hkv;
    for (int64_t h = 0; h < c.Hq && c.lo < c.hi; ++h) {
      std::vector<double> s(c.hi - c.lo);
      double mx = -INFINITY;
      for (int32_t j = c.lo; j < c.hi; ++j) {
        const int64_t row = (c.st * c.n_kv + j) * c.Hkv + h / G;
        double dot = 0;
        for (int64_t d = 0; d < c.D; ++d) dot += double(qv[h * c.D + d]) * kd[row * c.D + d];
        dot *= scale;
        if (c.cap > 0) dot = c.cap * std::tanh(dot / c.cap);
        mx = std::max(mx, s[j - c.lo] = dot);
      }
      double sum = 0;
      for (auto& e : s) sum += (e = std::exp(e - mx));
      for (int64_t d = 0; d < c.D; ++d) {
        double acc = 0;
        for (int32_t j = c.lo; j < c.hi; ++j) acc += s[j - c.lo] * vd[((c.st * c.n_kv + j) * c.Hkv + h / G) * c.D + d];
        want[h * c.D + d] = acc / sum;
      }
    }
    std::vector<float> first;
    for (int rep = 0; rep < 3; ++rep) {
      auto y = poisoned(*gpu, DType::F32, c.D, c.Hq, 1);
      REQUIRE(run_op(*gpu, OpId::attention, y.t, {&q.t, &k.t, &v.t, &r.t}, &p).ok());
      const auto got = f32_from_device(*gpu, y);
      check_close(got, want, 2e-6, 2e-5);
      if (rep == 0) first = got;
      CHECK(got == first);
    }
  }
}
