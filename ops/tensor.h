// Tensor view: a plain struct that describes memory it does not own.
//
// ne[0] is the innermost (contiguous) dimension, as in GGUF/ggml: a weight
// matrix with N output rows of K inputs has ne = {K, N, 1, 1}. nb[] are byte
// strides; nb[0] is the size of one element (or block) and rows need not be
// packed (strided views). For quantized types ne[0] counts elements and a row
// holds ne[0] / block_size blocks.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/dtype.h"

namespace kestrel {

class Buffer;  // ops/backend.h

struct Tensor {
  DType type = DType::F32;
  int64_t ne[4] = {1, 1, 1, 1};
  size_t nb[4] = {0, 0, 0, 0};
  void* data = nullptr;
  Buffer* buffer = nullptr;  // owning buffer (host memory when nullptr)

  int64_t nelements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t nrows() const { return ne[1] * ne[2] * ne[3]; }
  size_t row_size() const { return dtype_row_size(type, ne[0]); }
  // True when rows are packed back to back with no gaps.
  bool is_contiguous() const;
  // Byte size spanned from data to the end of the last element.
  size_t nbytes() const;
  template <typename T = void>
  T* row(int64_t i1, int64_t i2 = 0, int64_t i3 = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(data) + i1 * nb[1] + i2 * nb[2] + i3 * nb[3]);
  }
};

// A contiguous view of `data` with the given shape (trailing dims default to 1).
Tensor make_tensor(DType type, void* data, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1,
                   int64_t ne3 = 1);

// Same shape; true when both describe the same element counts.
bool same_shape(const Tensor& a, const Tensor& b);

}  // namespace kestrel
