// Harness of the cross-backend op test: test case descriptions, tensor
// storage with guard bytes, input generation, backend variants, comparison.
// Included only from tests/test_backend_ops.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ops/backend.h"
#include "ops/half.h"
#include "ops/ref/quant.h"

namespace kestrel::test {

// How a source tensor is filled.
enum class Fill {
  uniform,      // uniform floats in [lo, hi]
  ids,          // I32 in [0, id_range)
  positions,    // I32 token positions, increasing from id_range with gaps
  mask_causal,  // [n_kv, M]: 0 for key j <= n_kv - M + m, else -inf
  mask_random,  // 0 or -inf at random, about one in four masked; row 0 fully masked
  argmax_hard,  // uniform with repeated maxima (ties) and NaN sprinkled in
  kv_ranges,    // I32 [3, M]: per query (stream, lo, hi) over id_range keys and n_streams
                // streams: mostly causal prefixes and windows, some empty, clipped or bad
  rows_sorted,  // I32 [M]: increasing distinct rows in [0, id_range), some -1 (skipped)
  rows_repeat,  // I32 [M]: rows in [-1, id_range + 1] with repeats (last write wins)
};

struct TSpec {
  DType type = DType::F32;
  int64_t ne[4] = {1, 1, 1, 1};
  size_t pad_bytes = 0;  // extra bytes after each row: a strided view
  bool swap12 = false;   // dims 1 and 2 swapped in memory: a non-contiguous view
  Fill fill = Fill::uniform;
  float lo = -1.0f, hi = 1.0f;
  int64_t id_range = 0;
  int64_t n_streams = 1;  // kv_ranges
};

inline TSpec spec(DType t, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1, int64_t ne3 = 1) {
  TSpec s;
  s.type = t;
  s.ne[0] = ne0;
  s.ne[1] = ne1;
  s.ne[2] = ne2;
  s.ne[3] = ne3;
  return s;
}

// Error measure of a case.
struct Tol {
  // dot: |y_i - ref_i| <= rtol * scale_i, scale_i = |w_n|_2 |x_m|_2 for a
  // matmul output (n, m): the error a relative perturbation rtol of the inputs
  // can cause. Stable where y is small by cancellation, unlike a relative or
  // mean-squared bound; activation quantization to 8 bits is ~4e-3 relative.
  enum Kind { exact, close, nmse, dot } kind = close;
  double atol = 0.0, rtol = 0.0;  // close: |y - ref| <= atol + rtol * |ref|
  double max_nmse = 0.0;          // nmse: sum (y - ref)^2 / sum ref^2
};
inline Tol tol_exact() { return {Tol::exact, 0, 0, 0}; }
inline Tol tol_close(double atol, double rtol = 0.0) { return {Tol::close, atol, rtol, 0}; }
inline Tol tol_nmse(double v) { return {Tol::nmse, 0, 0, v}; }
inline Tol tol_dot(double rtol) { return {Tol::dot, 0, rtol, 0}; }

struct Case {
  OpId op{};
  std::string row;   // support-matrix row: op name plus a type tag where relevant
  std::string desc;  // shape / parameters, for failure messages
  std::vector<TSpec> src;
  TSpec dst;
  bool in_place = false;  // dst is src0's storage
  std::vector<uint8_t> params;
  Tol tol;
  uint32_t seed = 1;

  template <typename P>
  Case& with(const P& p) {
    params.resize(sizeof(P));
    std::memcpy(params.data(), &p, sizeof(P));
    return *this;
  }
};

// ---- Layout and storage ---------------------------------------------------

constexpr size_t kGuard = 64;       // bytes before and after every tensor
constexpr uint8_t kSentinel = 0xCD;  // fill of guards and of output storage
constexpr uint8_t kInputPad = 0xFF;  // row padding of inputs (NaN as F32)

// The view described by s with data at nullptr; *span = bytes it covers.
inline Tensor layout(const TSpec& s, size_t* span) {
  Tensor t;
  t.type = s.type;
  for (int i = 0; i < 4; ++i) t.ne[i] = s.ne[i];
  t.nb[0] = dtype_type_size(s.type);
  const size_t row = dtype_row_size(s.type, s.ne[0]) + s.pad_bytes;
  if (!s.swap12) {
    t.nb[1] = row;
    t.nb[2] = row * (size_t)s.ne[1];
  } else {
    t.nb[2] = row;
    t.nb[1] = row * (size_t)s.ne[2];
  }
  t.nb[3] = row * (size_t)(s.ne[1] * s.ne[2]);
  *span = t.nbytes();
  return t;
}

// Byte image of one tensor: [guard][span][guard], plus which bytes are elements.
struct Image {
  Tensor view;  // data relative to bytes.data() + kGuard once placed
  std::vector<uint8_t> bytes;
  std::vector<uint8_t> is_elem;  // 1 where a byte belongs to an element

  uint8_t* base() { return bytes.data() + kGuard; }
};

inline Image make_image(const TSpec& s, uint8_t fill) {
  Image im;
  size_t span = 0;
  im.view = layout(s, &span);
  im.bytes.assign(span + 2 * kGuard, kSentinel);
  std::memset(im.bytes.data() + kGuard, fill, span);
  im.is_elem.assign(im.bytes.size(), 0);
  const size_t rs = im.view.row_size();
  for (int64_t i3 = 0; i3 < s.ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < s.ne[2]; ++i2)
      for (int64_t i1 = 0; i1 < s.ne[1]; ++i1) {
        const size_t off = kGuard + i1 * im.view.nb[1] + i2 * im.view.nb[2] + i3 * im.view.nb[3];
        std::memset(im.is_elem.data() + off, 1, rs);
      }
  return im;
}

// Writes one row of logical values (ne0 of them) at p in type t.
inline void store_row(DType t, const float* v, int64_t n, uint8_t* p) {
  switch (t) {
    case DType::F32: std::memcpy(p, v, n * 4); break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) { const uint16_t h = f32_to_f16(v[i]); std::memcpy(p + 2 * i, &h, 2); }
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) { const uint16_t h = f32_to_bf16(v[i]); std::memcpy(p + 2 * i, &h, 2); }
      break;
    case DType::I32:
      for (int64_t i = 0; i < n; ++i) { const int32_t x = (int32_t)v[i]; std::memcpy(p + 4 * i, &x, 4); }
      break;
    default: ref::quantize_row(t, v, p, n); break;
  }
}

// Logical element values of an image (F32/F16/BF16/I32), rows in index order.
inline std::vector<double> read_values(Image& im) {
  const Tensor& t = im.view;
  std::vector<double> out;
  out.reserve(t.nelements());
  for (int64_t i3 = 0; i3 < t.ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < t.ne[2]; ++i2)
      for (int64_t i1 = 0; i1 < t.ne[1]; ++i1) {
        const uint8_t* p = im.base() + i1 * t.nb[1] + i2 * t.nb[2] + i3 * t.nb[3];
        for (int64_t i0 = 0; i0 < t.ne[0]; ++i0) {
          switch (t.type) {
            case DType::F32: { float f; std::memcpy(&f, p + 4 * i0, 4); out.push_back(f); break; }
            case DType::I32: { int32_t x; std::memcpy(&x, p + 4 * i0, 4); out.push_back(x); break; }
            case DType::F16: { uint16_t h; std::memcpy(&h, p + 2 * i0, 2); out.push_back(f16_to_f32(h)); break; }
            case DType::BF16: { uint16_t h; std::memcpy(&h, p + 2 * i0, 2); out.push_back(bf16_to_f32(h)); break; }
            default: out.push_back(NAN); break;
          }
        }
      }
  return out;
}

// Matmul error scales: |w_n|_2 * |x_m|_2 for every output (n, m, batch), in
// the output's element order (n fastest). W rows are dequantized by ops/ref.
inline std::vector<double> matmul_scales(Image& w, Image& x) {
  const int64_t K = w.view.ne[0], N = w.view.ne[1];
  std::vector<double> wn((size_t)N);
  std::vector<float> row((size_t)K);
  for (int64_t n = 0; n < N; ++n) {
    ref::dequantize_row(w.view.type, w.base() + n * w.view.nb[1], row.data(), K);
    double s = 0.0;
    for (float v : row) s += (double)v * v;
    wn[(size_t)n] = std::sqrt(s);
  }
  const std::vector<double> xv = read_values(x);
  const int64_t n_xrows = x.view.nrows();
  std::vector<double> out;
  out.reserve((size_t)(N * n_xrows));
  for (int64_t r = 0; r < n_xrows; ++r) {
    double s = 0.0;
    for (int64_t k = 0; k < K; ++k) s += xv[(size_t)(r * K + k)] * xv[(size_t)(r * K + k)];
    for (int64_t n = 0; n < N; ++n) out.push_back(wn[(size_t)n] * std::sqrt(s));
  }
  return out;
}

// Fills the elements of an input image as s.fill says.
inline void fill_image(Image& im, const TSpec& s, std::mt19937& rng) {
  const Tensor& t = im.view;
  std::uniform_real_distribution<float> uni(s.lo, s.hi);
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  std::vector<float> row((size_t)t.ne[0]);
  int64_t flat_row = 0;
  int32_t pos = (int32_t)s.id_range;
  int32_t next_row = 0;  // rows_sorted
  for (int64_t i3 = 0; i3 < t.ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < t.ne[2]; ++i2)
      for (int64_t i1 = 0; i1 < t.ne[1]; ++i1, ++flat_row) {
        for (int64_t i0 = 0; i0 < t.ne[0]; ++i0) {
          float v = 0.0f;
          switch (s.fill) {
            case Fill::uniform: v = uni(rng); break;
            case Fill::ids: v = (float)std::uniform_int_distribution<int64_t>(0, s.id_range - 1)(rng); break;
            case Fill::positions: v = (float)pos; pos += 1 + (int32_t)(rng() % 3); break;
            case Fill::mask_causal: v = i0 <= t.ne[0] - t.ne[1] + i1 ? 0.0f : -INFINITY; break;
            case Fill::mask_random: v = (flat_row == 0 || u01(rng) < 0.25f) ? -INFINITY : 0.0f; break;
            case Fill::kv_ranges: {
              const int64_t n_kv = s.id_range, q = flat_row, kind = q % 7;
              const int64_t hi = n_kv - (int64_t)(rng() % (uint32_t)(n_kv / 2 + 1));
              int64_t r[3] = {(int64_t)(q % s.n_streams), 0, hi};  // a causal prefix
              if (kind == 1) r[1] = hi / 2;                            // a sliding window
              if (kind == 2) r[1] = r[2];                              // sees nothing
              if (kind == 3) r[1] = -5, r[2] = n_kv + 9;               // clipped to [0, n_kv)
              if (kind == 4) r[0] = s.n_streams;                       // no such stream
              if (kind == 5) r[1] = n_kv - 1, r[2] = n_kv;             // the last key alone
              v = (float)r[i0 % 3];
              break;
            }
            case Fill::rows_sorted:
              if (rng() % 4 == 0) {
                v = -1.0f;
              } else {
                next_row += 1 + (int32_t)(rng() % 3);
                v = (float)(next_row - 1);
                if (next_row - 1 >= s.id_range) v = -1.0f;
              }
              break;
            case Fill::rows_repeat: v = (float)((int64_t)(rng() % (uint32_t)(s.id_range / 2 + 3)) - 1); break;
            case Fill::argmax_hard: {
              const float r = u01(rng);
              v = r < 0.1f ? NAN : r < 0.3f ? s.hi : uni(rng);
              break;
            }
          }
          row[(size_t)i0] = v;
        }
        uint8_t* p = im.base() + i1 * t.nb[1] + i2 * t.nb[2] + i3 * t.nb[3];
        store_row(t.type, row.data(), t.ne[0], p);
      }
}

// ---- Backend variants -------------------------------------------------------

struct Variant {
  std::string column;  // support-matrix column: "cpu-avx2"
  int n_threads = 1;
  std::unique_ptr<Backend> backend;  // null when unavailable here
  std::string why_not;                // reason when unavailable
};

// ---- Running one case on one backend ----------------------------------------

// Result of running a case: the dst image after the run, plus all source
// images (to check that sources were left untouched).
struct RunResult {
  Status status;
  bool supported = true;
  std::vector<Image> images;  // sources..., then dst (absent when in place)
};

inline OpCall make_call(const Case& c, std::vector<Tensor>& views) {
  OpCall call;
  call.op = c.op;
  call.n_src = (int)c.src.size();
  for (int i = 0; i < call.n_src; ++i) call.src[i] = &views[(size_t)i];
  call.dst = c.in_place ? &views[0] : &views.back();
  call.params = c.params.empty() ? nullptr : c.params.data();
  return call;
}

// Runs c on backend b with the given input images (copied, never modified).
inline RunResult run_case(const Case& c, const std::vector<Image>& inputs, const Image& dst_init, Backend& b) {
  RunResult r;
  r.images = inputs;
  if (!c.in_place) r.images.push_back(dst_init);
  std::vector<Tensor> views;
  std::vector<std::unique_ptr<Buffer>> bufs;
  for (Image& im : r.images) {
    Tensor v = im.view;
    if (b.is_host()) {
      v.data = im.base();
    } else {
      auto buf = b.alloc_buffer(im.bytes.size());
      if (!buf) { r.status = buf.status(); return r; }
      r.status = b.upload(**buf, 0, im.bytes.data(), im.bytes.size());
      if (!r.status.ok()) return r;
      v.data = static_cast<uint8_t*>((*buf)->data()) + kGuard;
      v.buffer = buf->get();
      bufs.push_back(std::move(*buf));
    }
    views.push_back(v);
  }
  const OpCall call = make_call(c, views);
  if (!b.supports(call)) {
    r.supported = false;
    return r;
  }
  r.status = b.run(call);
  if (r.status.ok()) r.status = b.synchronize();
  if (!b.is_host() && r.status.ok()) {
    for (size_t i = 0; i < bufs.size() && r.status.ok(); ++i)
      r.status = b.download(r.images[i].bytes.data(), *bufs[i], 0, r.images[i].bytes.size());
  }
  return r;
}

// ---- Comparison -------------------------------------------------------------

// "" when y matches ref within tol, else a description of the worst mismatch.
inline std::string compare(const std::vector<double>& y, const std::vector<double>& ref, const Tol& tol,
                           const std::vector<double>* scale = nullptr) {
  if (y.size() != ref.size()) return "size mismatch";
  if (tol.kind == Tol::dot && (!scale || scale->size() != y.size())) return "dot tolerance without scales";
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < y.size(); ++i) {
    const bool fy = std::isfinite(y[i]), fr = std::isfinite(ref[i]);
    if (fy != fr || (!fr && !(std::isnan(y[i]) && std::isnan(ref[i])) && y[i] != ref[i]))
      return "non-finite mismatch at " + std::to_string(i) + ": " + std::to_string(y[i]) + " vs ref " +
             std::to_string(ref[i]);
    if (!fr) continue;
    const double e = std::fabs(y[i] - ref[i]);
    if (tol.kind == Tol::exact && e != 0.0)
      return "element " + std::to_string(i) + ": " + std::to_string(y[i]) + " vs ref " + std::to_string(ref[i]);
    if (tol.kind == Tol::close && e > tol.atol + tol.rtol * std::fabs(ref[i]))
      return "element " + std::to_string(i) + ": " + std::to_string(y[i]) + " vs ref " + std::to_string(ref[i]) +
             " (|err| " + std::to_string(e) + ")";
    if (tol.kind == Tol::dot && e > tol.rtol * (*scale)[i])
      return "element " + std::to_string(i) + ": " + std::to_string(y[i]) + " vs ref " + std::to_string(ref[i]) +
             " (|err| / (|w| |x|) = " + std::to_string(e / (*scale)[i]) + ")";
    num += e * e;
    den += ref[i] * ref[i];
  }
  if (tol.kind == Tol::nmse) {
    const double nmse = den > 0.0 ? num / den : num;
    if (!(nmse <= tol.max_nmse)) return "nmse " + std::to_string(nmse) + " > " + std::to_string(tol.max_nmse);
  }
  return "";
}

// Error statistics of y against ref over the finite reference elements.
struct ErrStats {
  double max_abs = 0.0;  // max |y - ref|
  double nmse = 0.0;     // sum (y - ref)^2 / sum ref^2
  double max_dot = 0.0;  // max |y - ref| / scale (matmul: scale = |w_n| |x_m|)
};
inline ErrStats error_stats(const std::vector<double>& y, const std::vector<double>& ref,
                            const std::vector<double>* scale = nullptr) {
  ErrStats st;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < y.size() && i < ref.size(); ++i) {
    if (!std::isfinite(ref[i]) || !std::isfinite(y[i])) continue;
    const double e = std::fabs(y[i] - ref[i]);
    st.max_abs = std::max(st.max_abs, e);
    if (scale && i < scale->size() && (*scale)[i] > 0.0) st.max_dot = std::max(st.max_dot, e / (*scale)[i]);
    num += e * e;
    den += ref[i] * ref[i];
  }
  st.nmse = den > 0.0 ? num / den : num;
  return st;
}

// "" when every non-element byte of `after` equals `before` (guards, row
// padding) and, for a source, every byte is unchanged.
inline std::string check_bytes(const Image& before, const Image& after, bool is_output) {
  for (size_t i = 0; i < before.bytes.size(); ++i) {
    if (is_output && before.is_elem[i]) continue;
    if (before.bytes[i] != after.bytes[i]) {
      const bool guard = i < kGuard || i >= before.bytes.size() - kGuard;
      return std::string(is_output ? (guard ? "guard byte" : "row padding byte") : "source byte") + " " +
             std::to_string(i) + " overwritten";
    }
  }
  return "";
}

}  // namespace kestrel::test
