// Reference (de)quantization: hand-built blocks with known values for every block type
// (the GGUF layouts), round-trip error bounds, and Q8_K block sums.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ops/half.h"
#include "ops/ref/quant.h"

using namespace kestrel;

namespace {

constexpr uint16_t kHalfOne = 0x3C00, kHalfHalf = 0x3800, kHalfQuarter = 0x3400;

std::vector<float> gaussian(int64_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<float> deq(DType t, const void* src, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  ref::dequantize_row(t, src, y.data(), n);
  return y;
}

double rel_rms(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  return std::sqrt(num / den);
}

// Q4_K / Q5_K scale bytes whose decoded 6-bit scales and mins were worked out by hand
// from the packing rule (sub-blocks 4..7 take a nibble of bytes 8..11 and the top two
// bits of bytes 0..3 / 4..7).
const uint8_t kKScales[12] = {0x41, 0x02, 0x03, 0xC4, 0x05, 0x46, 0x07, 0x08, 0x19, 0x2A, 0x3B, 0x4C};
const int kKSc[8] = {1, 2, 3, 4, 25, 10, 11, 60};
const int kKMin[8] = {5, 6, 7, 8, 1, 18, 3, 4};

}  // namespace

TEST_CASE("f16 and bf16 rows convert exactly", "[quant]") {
  const uint16_t h[4] = {kHalfOne, 0xC000 /* -2 */, 0x7BFF /* 65504 */, 0x0001 /* 2^-24 */};
  const auto y = deq(DType::F16, h, 4);
  CHECK(y[0] == 1.0f);
  CHECK(y[1] == -2.0f);
  CHECK(y[2] == 65504.0f);
  CHECK(y[3] == std::ldexp(1.0f, -24));
  const uint16_t b[2] = {0x3F80 /* 1 */, 0xC0A0 /* -5 */};
  const auto z = deq(DType::BF16, b, 2);
  CHECK(z[0] == 1.0f);
  CHECK(z[1] == -5.0f);
}

TEST_CASE("q4_0 hand-built block", "[quant]") {
  BlockQ4_0 b;
  b.d = kHalfHalf;  // 0.5
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const auto y = deq(DType::Q4_0, &b, 32);
  for (int j = 0; j < 16; ++j) {
    CHECK(y[j] == 0.5f * (j - 8));          // low nibble of byte j: element j
    CHECK(y[j + 16] == 0.5f * (15 - j - 8));  // high nibble: element j + 16
  }
  // Element 17 is the high nibble of byte 1.
  std::memset(b.qs, 0x88, sizeof(b.qs));
  b.qs[1] = 0xF8;
  const auto z = deq(DType::Q4_0, &b, 32);
  for (int j = 0; j < 32; ++j) CHECK(z[j] == (j == 17 ? 3.5f : 0.0f));
}

TEST_CASE("q5_0 hand-built block", "[quant]") {
  BlockQ5_0 b;
  b.d = kHalfQuarter;  // 0.25
  // Codes: element j = j for j < 16 (fifth bit clear), element j + 16 = 31 - j (fifth bit set).
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const uint32_t qh = 0xFFFF0000u;  // little-endian: bit j is element j's fifth bit
  std::memcpy(b.qh, &qh, 4);
  const auto y = deq(DType::Q5_0, &b, 32);
  for (int j = 0; j < 16; ++j) {
    CHECK(y[j] == 0.25f * (j - 16));
    CHECK(y[j + 16] == 0.25f * (31 - j - 16));
  }
  // Only element 9's fifth bit (byte 1, bit 1 of qh) and element 20's nibble (high of qs[4]).
  std::memset(b.qs, 0x00, sizeof(b.qs));
  const uint8_t qh2[4] = {0x00, 0x02, 0x00, 0x00};
  std::memcpy(b.qh, qh2, 4);
  b.qs[4] = 0x70;
  const auto z = deq(DType::Q5_0, &b, 32);
  for (int j = 0; j < 32; ++j) CHECK(z[j] == (j == 9 ? 0.0f : j == 20 ? 0.25f * (7 - 16) : -4.0f));
  // quantize: the value of largest magnitude takes code 0, so -16 * d equals it.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = 0.1f * (j - 10);
  x[5] = -3.2f;
  ref::quantize_row(DType::Q5_0, x.data(), &b, 32);
  const auto r = deq(DType::Q5_0, &b, 32);
  CHECK(f16_to_f32(b.d) > 0.0f);
  CHECK(r[5] == -16.0f * f16_to_f32(b.d));
  for (int j = 0; j < 32; ++j) CHECK(std::fabs(r[j] - x[j]) <= f16_to_f32(b.d) * 0.5001f + 1e-3f);
}

TEST_CASE("q8_0 hand-built block", "[quant]") {
  BlockQ8_0 b;
  b.d = kHalfQuarter;
  for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(j * 8 - 128);
  const auto y = deq(DType::Q8_0, &b, 32);
  for (int j = 0; j < 32; ++j) CHECK(y[j] == 0.25f * (j * 8 - 128));
}

TEST_CASE("q4_K hand-built block", "[quant]") {
  BlockQ4_K b;
  b.d = kHalfOne;
  b.dmin = kHalfHalf;
  std::memcpy(b.scales, kKScales, 12);
  for (int i = 0; i < 128; ++i) b.qs[i] = static_cast<uint8_t>((i % 16) | (((i * 7) % 16) << 4));
  const auto y = deq(DType::Q4_K, &b, 256);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      const int lo = b.qs[32 * c + l] & 0xF, hi = b.qs[32 * c + l] >> 4;
      CHECK(y[64 * c + l] == 1.0f * kKSc[2 * c] * lo - 0.5f * kKMin[2 * c]);
      CHECK(y[64 * c + 32 + l] == 1.0f * kKSc[2 * c + 1] * hi - 0.5f * kKMin[2 * c + 1]);
    }
  // Element 100 = chunk 1, high nibble of byte 32 + 4, sub-block 3.
  std::memset(b.qs, 0, sizeof(b.qs));
  b.qs[36] = 0x50;
  const auto z = deq(DType::Q4_K, &b, 256);
  CHECK(z[100] == 4.0f * 5 - 0.5f * 8);
  CHECK(z[99] == -0.5f * 8);
  CHECK(z[36] == -0.5f * 6);
}

TEST_CASE("q5_K hand-built block", "[quant]") {
  BlockQ5_K b;
  b.d = kHalfOne;
  b.dmin = kHalfHalf;
  std::memcpy(b.scales, kKScales, 12);
  for (int i = 0; i < 128; ++i) b.qs[i] = static_cast<uint8_t>((i % 16) | (((i * 5) % 16) << 4));
  for (int l = 0; l < 32; ++l) b.qh[l] = static_cast<uint8_t>(l * 37 + 11);
  const auto y = deq(DType::Q5_K, &b, 256);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      const int lo = (b.qs[32 * c + l] & 0xF) + 16 * ((b.qh[l] >> (2 * c)) & 1);
      const int hi = (b.qs[32 * c + l] >> 4) + 16 * ((b.qh[l] >> (2 * c + 1)) & 1);
      CHECK(y[64 * c + l] == 1.0f * kKSc[2 * c] * lo - 0.5f * kKMin[2 * c]);
      CHECK(y[64 * c + 32 + l] == 1.0f * kKSc[2 * c + 1] * hi - 0.5f * kKMin[2 * c + 1]);
    }
  // Element 100 (sub-block 3, l = 4): its fifth bit is bit 3 of qh[4].
  std::memset(b.qs, 0, sizeof(b.qs));
  std::memset(b.qh, 0, sizeof(b.qh));
  b.qh[4] = 0x08;
  const auto z = deq(DType::Q5_K, &b, 256);
  CHECK(z[100] == 4.0f * 16 - 0.5f * 8);
  CHECK(z[68] == -0.5f * 7);  // same qh byte, sub-block 2: bit 2 not set
}

TEST_CASE("q6_K hand-built block", "[quant]") {
  BlockQ6_K b;
  b.d = kHalfHalf;
  for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<int8_t>(j - 8);
  for (int i = 0; i < 128; ++i) b.ql[i] = static_cast<uint8_t>(i * 3 + 1);
  for (int i = 0; i < 64; ++i) b.qh[i] = static_cast<uint8_t>(i * 5 + 1);
  const auto y = deq(DType::Q6_K, &b, 256);
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        const int e = 128 * h + 32 * k + l;
        const uint8_t ql = b.ql[64 * h + l + 32 * (k & 1)];
        const int low = k < 2 ? (ql & 0xF) : (ql >> 4);
        const int high = (b.qh[32 * h + l] >> (2 * k)) & 3;
        CHECK(y[e] == 0.5f * b.scales[e / 16] * ((low | (high << 4)) - 32));
      }
  // Element 200 = half 1, k = 2, l = 8: high nibble of ql[72], bits 4..5 of qh[40],
  // scale 12. Codes 0 elsewhere decode to -32 * d * scale.
  std::memset(b.ql, 0, sizeof(b.ql));
  std::memset(b.qh, 0, sizeof(b.qh));
  b.ql[72] = 0xA0;
  b.qh[40] = 0x20;
  const auto z = deq(DType::Q6_K, &b, 256);
  CHECK(z[200] == 0.5f * 4 * (42 - 32));
  CHECK(z[72] == 0.5f * (4 - 8) * -32);
  CHECK(z[201] == 0.5f * 4 * -32);
}

TEST_CASE("q8_K hand-built block", "[quant]") {
  BlockQ8_K b{};
  b.d = 0.125f;
  for (int j = 0; j < 256; ++j) b.qs[j] = static_cast<int8_t>((j % 200) - 100);
  const auto y = deq(DType::Q8_K, &b, 256);
  for (int j = 0; j < 256; ++j) CHECK(y[j] == 0.125f * ((j % 200) - 100));
}

TEST_CASE("q4_1 hand-built block", "[quant]") {
  BlockQ4_1 b;
  b.d = kHalfHalf;   // 0.5
  b.m = kHalfOne;    // 1.0
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const auto y = deq(DType::Q4_1, &b, 32);
  for (int j = 0; j < 16; ++j) {
    CHECK(y[j] == 0.5f * j + 1.0f);              // low nibble of byte j: element j
    CHECK(y[j + 16] == 0.5f * (15 - j) + 1.0f);  // high nibble: element j + 16
  }
  // The layout is d, m, qs (20 bytes): swapping d and m shows in the values.
  const uint8_t raw[20] = {0x00, 0x3C, 0x00, 0x38, 0x21};  // d = 1, m = 0.5, element 0 = 1, 16 = 2
  const auto z = deq(DType::Q4_1, raw, 32);
  CHECK(z[0] == 1.5f);
  CHECK(z[16] == 2.5f);
  CHECK(z[1] == 0.5f);
}

TEST_CASE("q5_1 hand-built block", "[quant]") {
  BlockQ5_1 b;
  b.d = kHalfQuarter;  // 0.25
  b.m = 0xBC00;        // -1.0
  // Element j = j for j < 16 (fifth bit clear), element j + 16 = 31 - j (fifth bit set).
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const uint32_t qh = 0xFFFF0000u;
  std::memcpy(b.qh, &qh, 4);
  const auto y = deq(DType::Q5_1, &b, 32);
  for (int j = 0; j < 16; ++j) {
    CHECK(y[j] == 0.25f * j - 1.0f);
    CHECK(y[j + 16] == 0.25f * (31 - j) - 1.0f);
  }
  // Byte offsets as ggml's block_q5_1: d 0, m 2, qh 4..7, qs 8..23. Only element 9's fifth
  // bit (qh byte 1, bit 1) and element 20's nibble (high nibble of qs[4], byte 12).
  uint8_t raw[24] = {0x00, 0x3C, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00};  // d = 1, m = 0
  raw[12] = 0x70;
  const auto z = deq(DType::Q5_1, raw, 32);
  for (int j = 0; j < 32; ++j) CHECK(z[j] == (j == 9 ? 16.0f : j == 20 ? 7.0f : 0.0f));
}

// llama.cpp's reference Q4_1 / Q5_1 quantizer, worked by hand on fixed blocks: d = (max -
// min) / nmax and m = min in F16; codes from the unrounded min and 1 / d, rounded half up
// (where nearest-even would differ).
TEST_CASE("q4_1 / q5_1 quantizers match llama.cpp's reference rounding", "[quant]") {
  SECTION("q5_1: d = 1, half-way codes round up") {
    std::vector<float> x(32);
    for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j);  // min 0, max 31: d = 1
    x[3] = 2.5f;    // half-up 3 (nearest-even: 2)
    x[17] = 0.5f;   // 1 (nearest-even: 0)
    x[20] = 19.5f;  // 20 (fifth bit set)
    BlockQ5_1 b;
    ref::quantize_row(DType::Q5_1, x.data(), &b, 32);
    CHECK(b.d == kHalfOne);
    CHECK(b.m == 0);
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    int code[32];
    for (int j = 0; j < 16; ++j) {
      code[j] = (b.qs[j] & 0xF) | (((qh >> j) & 1) << 4);
      code[j + 16] = (b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    }
    for (int j = 0; j < 32; ++j) {
      const int want = j == 3 ? 3 : j == 17 ? 1 : j == 20 ? 20 : j;
      INFO("element " << j);
      CHECK(code[j] == want);
    }
  }
  SECTION("q4_1: the codes use the unrounded 1 / d") {
    std::vector<float> x(32, 0.0f);
    x[1] = 1.0f;    // max: d = 1/15, stored as F16 0.066650390625 (0x2C44)
    x[2] = 0.5f;    // 0.5 * 14.999999 (the float 1 / d) = 7.4999995: code 7 (from the F16 d: 8)
    x[18] = 0.2f;   // 2.9999998: code 3
    BlockQ4_1 b;
    ref::quantize_row(DType::Q4_1, x.data(), &b, 32);
    CHECK(b.d == f32_to_f16(1.0f / 15.0f));
    CHECK(b.m == 0);
    CHECK((b.qs[1] & 0xF) == 15);
    CHECK((b.qs[2] & 0xF) == 7);
    CHECK((b.qs[2] >> 4) == 3);
    CHECK((b.qs[0] & 0xF) == 0);
  }
  SECTION("all values equal: d = 0, m = the value, every code 0") {
    for (DType t : {DType::Q4_1, DType::Q5_1}) {
      std::vector<float> x(64, -2.75f);
      std::vector<uint8_t> q(dtype_row_size(t, 64), 0xFF);
      ref::quantize_row(t, x.data(), q.data(), 64);
      for (float v : deq(t, q.data(), 64)) CHECK(v == -2.75f);
      for (int blk = 0; blk < 2; ++blk) {
        const uint8_t* p = q.data() + blk * dtype_type_size(t);
        uint16_t d, m;
        std::memcpy(&d, p, 2);
        std::memcpy(&m, p + 2, 2);
        CHECK(d == 0);
        CHECK(m == f32_to_f16(-2.75f));
        for (size_t i = 4; i < dtype_type_size(t); ++i) CHECK(p[i] == 0);
      }
    }
  }
  SECTION("max - min: both ends are exact when d and min are F16 values") {
    std::vector<float> x(32);
    for (int j = 0; j < 32; ++j) x[j] = -4.0f + 0.25f * ((j * 7) % 32);  // -4 .. 3.75, step 0.25
    BlockQ5_1 b;
    ref::quantize_row(DType::Q5_1, x.data(), &b, 32);
    const auto r = deq(DType::Q5_1, &b, 32);
    for (int j = 0; j < 32; ++j) CHECK(r[j] == x[j]);  // d = 7.75 / 31 = 0.25 exactly
  }
}

TEST_CASE("q4_0 / q5_0 / q8_0 quantizers match llama.cpp's reference rounding", "[quant]") {
  // d = 1 in each (max -8, -16 and amax 127): ties show the rounding rule.
  auto codes = [](DType t, const std::vector<float>& x) {
    std::vector<uint8_t> q(dtype_row_size(t, 32));
    ref::quantize_row(t, x.data(), q.data(), 32);
    std::vector<int> c(32);
    if (t == DType::Q8_0) {
      for (int j = 0; j < 32; ++j) c[j] = static_cast<int8_t>(q[2 + j]);
      return c;
    }
    const uint8_t* qs = q.data() + (t == DType::Q5_0 ? 6 : 2);
    uint32_t qh = 0;
    if (t == DType::Q5_0) std::memcpy(&qh, q.data() + 2, 4);
    for (int j = 0; j < 16; ++j) {
      c[j] = (qs[j] & 0xF) | (((qh >> j) & 1) << 4);
      c[j + 16] = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    }
    return c;
  };
  SECTION("q4_0: (int)(x / d + 8.5), capped at 15") {
    std::vector<float> x(32, 0.0f);
    x[0] = -8.0f;   // max: d = 1, code 0
    x[1] = 0.5f;    // 9 (nearest-even of 8.5: 8)
    x[2] = -0.5f;   // 8
    x[3] = 7.6f;    // 16.1: capped at 15
    x[17] = 2.5f;   // 11 (nearest-even of 10.5: 10)
    const auto c = codes(DType::Q4_0, x);
    CHECK(c[0] == 0);
    CHECK(c[1] == 9);
    CHECK(c[2] == 8);
    CHECK(c[3] == 15);
    CHECK(c[17] == 11);
    CHECK(c[4] == 8);
  }
  SECTION("q5_0: (int)(x / d + 16.5), capped at 31") {
    std::vector<float> x(32, 0.0f);
    x[0] = -16.0f;
    x[1] = 0.5f;    // 17
    x[2] = -1.5f;   // 15 (nearest-even of 14.5: 14)
    x[20] = 15.5f;  // 32: capped at 31
    const auto c = codes(DType::Q5_0, x);
    CHECK(c[0] == 0);
    CHECK(c[1] == 17);
    CHECK(c[2] == 15);
    CHECK(c[20] == 31);
    CHECK(c[5] == 16);
  }
  SECTION("q8_0: x / d rounded half away from zero") {
    std::vector<float> x(32, 0.0f);
    x[0] = 127.0f;
    x[1] = 2.5f;    // 3 (nearest-even: 2)
    x[2] = -2.5f;   // -3
    x[3] = 0.5f;    // 1
    const auto c = codes(DType::Q8_0, x);
    CHECK(c[0] == 127);
    CHECK(c[1] == 3);
    CHECK(c[2] == -3);
    CHECK(c[3] == 1);
  }
}

TEST_CASE("round trip error bounds per type", "[quant]") {
  // One Gaussian row of 2048 (8 super-blocks), sigma 1.
  struct Case {
    DType type;
    double bound;  // relative RMS error; measured values are in the comments
  };
  const Case cases[] = {
      {DType::F16, 3e-4},    // measured 2.05e-4
      {DType::BF16, 2.5e-3}, // measured 1.69e-3
      {DType::Q8_0, 0.0075}, // measured 0.0055
      {DType::Q4_0, 0.11},   // measured 0.0895
      {DType::Q5_0, 0.055},  // measured 0.0442
      {DType::Q4_1, 0.095},  // measured 0.0773
      {DType::Q5_1, 0.047},  // measured 0.0383
      {DType::Q6_K, 0.022},  // measured 0.0180
      {DType::Q5_K, 0.045},  // measured 0.0367
      {DType::Q4_K, 0.085},  // measured 0.0723
  };
  const int64_t n = 2048;
  const auto x = gaussian(n, 42);
  for (const Case& c : cases) {
    DYNAMIC_SECTION(dtype_name(c.type)) {
      std::vector<uint8_t> q(dtype_row_size(c.type, n));
      ref::quantize_row(c.type, x.data(), q.data(), n);
      const double e = rel_rms(x, deq(c.type, q.data(), n));
      INFO(dtype_name(c.type) << " rel rms " << e);
      CHECK(e < c.bound);
      CHECK(e > 0.0);
    }
  }
}

TEST_CASE("k-quant scale search beats plain min/max scaling", "[quant]") {
  // A min/max Q4_K-style quantizer (scale = range / 15, no search) on the same data:
  // the searched scales must do clearly better.
  const int64_t n = 4096;
  const auto x = gaussian(n, 7);
  double naive_num = 0, den = 0;
  for (int64_t s = 0; s < n; s += 32) {
    float lo = 0, hi = x[s];
    for (int l = 0; l < 32; ++l) {
      lo = std::fmin(lo, x[s + l]);
      hi = std::fmax(hi, x[s + l]);
    }
    const float d = (hi - lo) / 15;
    for (int l = 0; l < 32; ++l) {
      const float q = std::nearbyint((x[s + l] - lo) / d);
      const double e = d * q + lo - x[s + l];
      naive_num += e * e;
      den += double(x[s + l]) * x[s + l];
    }
  }
  const double naive = std::sqrt(naive_num / den);
  std::vector<BlockQ4_K> q(n / 256);
  ref::quantize_row(DType::Q4_K, x.data(), q.data(), n);
  const double searched = rel_rms(x, deq(DType::Q4_K, q.data(), n));
  INFO("naive " << naive << " searched " << searched);
  CHECK(searched < 0.95 * naive);  // measured 0.0705 vs 0.0771
}

namespace {

// 512 values that take every branch of the K-quant searches: mixed signs, an all-positive
// sub-block (offset clipped to 0), an all-negative one, zeros, a sub-block so small that its
// 6-bit scale rounds to 0 (it keeps the search's codes), an outlier, a constant, and a second
// super-block on a grid of eighths (ties for the rounding). Integer arithmetic and exact
// float divisions only, so the input is the same on every platform.
std::vector<float> k_quant_known_input() {
  uint32_t s = 12345;
  auto step = [&] { return s = s * 1664525u + 1013904223u; };
  auto next = [&] { return static_cast<float>((step() >> 8) & 0xFFFF) / 65535.0f * 2.0f - 1.0f; };  // [-1, 1]
  std::vector<float> x(512);
  for (int l = 0; l < 32; ++l) {
    x[0 + l] = next();
    x[32 + l] = 0.7f + 0.5f * next();
    x[64 + l] = -0.7f + 0.5f * next();
    x[96 + l] = 0.0f;
    x[128 + l] = 1e-4f * next();
    x[160 + l] = 0.05f * next();
    x[192 + l] = 0.5f;
    x[224 + l] = 3.0f * next();
  }
  x[170] = 8.0f;
  for (int l = 0; l < 256; ++l) x[256 + l] = static_cast<float>(static_cast<int>(step() >> 27) - 16) / 8.0f;
  return x;
}

std::vector<uint8_t> from_hex(const char* h) {
  std::vector<uint8_t> out;
  for (; h[0] && h[1]; h += 2) out.push_back(static_cast<uint8_t>(std::stoi(std::string(h, 2), nullptr, 16)));
  return out;
}

// The bytes llama.cpp's reference quantizers (quantize_row_q{4,5,6}_K_ref, the path
// llama-quantize takes without an importance matrix) write for k_quant_known_input().
const char* const kQ4_KBytes =
    "a520cd290ec9088015001ac0000f04fd537fd4ef78ccaf5dc0b5e43b5e53a981"
    "bc795a4ce13e377b49657462edb3df75000801050c0605080d0d000d0201040a"
    "0006080d0b020308060106040a04040907080c0d0b090203060fe80005020701"
    "050b030e0804020b0c0505080a0a0d04be6e9eee4e5eee6ede6e9e6eae3eae8e"
    "3ede7e9eee3e2e0e0e9e1e4e7e3e6ebe0e1cee27fdfefdfcf9fefafaefefffef"
    "d486dbabb1b9ff70d305ad0ed6188693e22a9bcde426259f71589f8bb4944a55"
    "5d027b515725c4d022724fb423eecc0dd4027d992eb171c16697d49af43d6606"
    "a94da47f5700c62a84cda308cf2dde08fea637b75d3cca793709fa0df078e890"
    "cf01f47b80073eb0a946f67d8be37e1b9aa3333668844562cbff4ab0ee454c04"
    ;
const char* const kQ5_KBytes =
    "321ced290fc90780160019c0000f04fec057d2d35553c345c656f245c140c3c6"
    "43d145d5d641405755c04050575253c6c80fd8eff2b96faba19bf877bda76412"
    "89f4b59af37f7f0894eceae5fc86cf0b0003020c0d0e0c030f0f000f05020809"
    "000f040f0c05060500010d09080a09050f00090c070404060c0ff0000b040e03"
    "0b07060d000804080a0a0a0205040c089fdf4fff9fafffefdfdf4fef6f8f6f2f"
    "6fcfff3fef7f5f0f0f3f3fafff6fef8f10181028fbfff8faf6fff7fbffffffff"
    "f612a75386036b98e230a759f29d7e56faa1072f5698301bc0dd7b9fea167120"
    "a80ba6467263efe0a50a5a1dbb311b25c455368ac74b5a2ee2a03f06672894ba"
    "bb03e8b2b05a99c043f4af7847dd9a1cb813fc235e81e2a2dc20b845f96cdc0c"
    "529b59efbe018c54199a46109e5aad11ec4d7f6ebb7994e36f02f41be0e1d021"
    "9e13e8e6100e7c60438dfdea16c6fc372446677cd0199bd596ee8460dd8a9918"
    ;
const char* const kQ6_KBytes =
    "1e0d20ae73c1ad0491a6009d492e78440fd918ad7a546312da29bd863984811b"
    "0400020000030905040600090405090e08010507000909000702020200080400"
    "0e0c0b070005020e04010c0a05020f04060e00010c0c040c070709080203040b"
    "d0607010e0a0003040607040200030c0e99f0b7fda02b61f1b87775ae0d3e40e"
    "0417010316030317101101160704021000051514130406150506060710030016"
    "0989480889890b8a0a88418b4acb494b02c08784c54a0f04088a064949054cc6"
    "10f0eeed1313000000008001f8f8d13000186c86f1610958311d83a8f915e6ac"
    "468316a361981ff6d9d27a0e1041ef6d75796410c4686ebc1c7c94e04ac29696"
    "1234512de84bb1ffcd3ba5405860e0dba20dcc690fc104cf88086faba540c3cb"
    "85ee88caee8c062268a6cec48806a04220022a22cacc2600e0ca8202e8c2228a"
    "e4624c98bedca62e12ac3ce0fed2ccfc1a047e0a6d496b19dcc70f4278900ef1"
    "fa3bf33d459002be7ef46badf499e6066d2af904da6486133e81aa5cdb72acc0"
    "7c21af89011967935e46e1f22e83fc167e187b7780628c6b85887b8080808080"
    "80880090"
    ;

}  // namespace

TEST_CASE("k-quant quantizers write ggml's reference bytes", "[quant]") {
  const auto x = k_quant_known_input();
  const struct {
    DType type;
    const char* hex;
  } cases[] = {{DType::Q4_K, kQ4_KBytes}, {DType::Q5_K, kQ5_KBytes}, {DType::Q6_K, kQ6_KBytes}};
  for (const auto& c : cases) {
    DYNAMIC_SECTION(dtype_name(c.type)) {
      const std::vector<uint8_t> want = from_hex(c.hex);
      std::vector<uint8_t> got(dtype_row_size(c.type, 512));
      REQUIRE(got.size() == want.size());
      ref::quantize_row(c.type, x.data(), got.data(), 512);
      for (size_t i = 0; i < got.size(); ++i) {
        INFO("byte " << i);
        CHECK(int(got[i]) == int(want[i]));
      }
    }
  }
}

TEST_CASE("q8_K activation quantizer: bsums and rounding", "[quant]") {
  const int64_t n = 512;
  auto x = gaussian(n, 3, 2.0f);
  x[300] = -9.0f;  // the largest magnitude maps to code -127 (ggml's convention)
  std::vector<BlockQ8_K> b(2);
  ref::quantize_row_q8_K(x.data(), b.data(), n);
  for (int i = 0; i < 2; ++i) {
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += b[i].qs[16 * g + l];
      CHECK(b[i].bsums[g] == s);
    }
    for (int j = 0; j < 256; ++j) CHECK(std::fabs(b[i].d * b[i].qs[j] - x[256 * i + j]) <= std::fabs(b[i].d) * 0.5001f);
  }
  CHECK(b[1].qs[300 - 256] == -127);
  // quantize_row(Q8_K) is the same quantizer.
  std::vector<BlockQ8_K> c(2);
  ref::quantize_row(DType::Q8_K, x.data(), c.data(), n);
  CHECK(std::memcmp(b.data(), c.data(), sizeof(BlockQ8_K) * 2) == 0);
}

TEST_CASE("q8_0 quantizer stays within half a step and never uses -128", "[quant]") {
  // The codes are within half a step of the unrounded step amax / 127 (the stored F16 d
  // may be off by its rounding, up to 2^-11 relative, which 127 codes amplify).
  const int64_t n = 256;
  const auto x = gaussian(n, 5, 3.0f);
  std::vector<BlockQ8_0> b(n / 32);
  ref::quantize_row_q8_0(x.data(), b.data(), n);
  for (int64_t i = 0; i < n / 32; ++i) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[32 * i + j]));
    const float step = amax / 127.0f;
    CHECK(b[i].d == f32_to_f16(step));
    for (int j = 0; j < 32; ++j) {
      CHECK(b[i].qs[j] >= -127);
      CHECK(std::fabs(step * b[i].qs[j] - x[32 * i + j]) <= step * 0.5001f);
    }
  }
}

TEST_CASE("zero rows and non-finite inputs are safe", "[quant]") {
  const int64_t n = 256;
  std::vector<float> zero(n, 0.0f), bad(n, 1.0f);
  bad[3] = NAN;
  bad[77] = INFINITY;
  for (DType t : kWeightTypes) {
    std::vector<uint8_t> q(dtype_row_size(t, n));
    ref::quantize_row(t, zero.data(), q.data(), n);
    for (float v : deq(t, q.data(), n)) CHECK(v == 0.0f);
    ref::quantize_row(t, bad.data(), q.data(), n);  // must not crash; values unspecified
  }
  std::vector<BlockQ8_K> k(1);
  ref::quantize_row_q8_K(zero.data(), k.data(), n);
  CHECK(k[0].d == 0.0f);
}
