#include "ops/tensor.h"

namespace kestrel {

bool Tensor::is_contiguous() const {
  const size_t ts = dtype_type_size(type);
  const int bs = dtype_block_size(type);
  if (nb[0] != ts) return false;
  if (nb[1] != nb[0] * static_cast<size_t>(ne[0] / bs)) return false;
  if (nb[2] != nb[1] * static_cast<size_t>(ne[1])) return false;
  if (nb[3] != nb[2] * static_cast<size_t>(ne[2])) return false;
  return true;
}

size_t Tensor::nbytes() const {
  if (nelements() == 0) return 0;
  size_t n = row_size();
  for (int i = 1; i < 4; ++i) n += static_cast<size_t>(ne[i] - 1) * nb[i];
  return n;
}

Tensor make_tensor(DType type, void* data, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3) {
  Tensor t;
  t.type = type;
  t.ne[0] = ne0;
  t.ne[1] = ne1;
  t.ne[2] = ne2;
  t.ne[3] = ne3;
  t.nb[0] = dtype_type_size(type);
  t.nb[1] = dtype_row_size(type, ne0);
  t.nb[2] = t.nb[1] * static_cast<size_t>(ne1);
  t.nb[3] = t.nb[2] * static_cast<size_t>(ne2);
  t.data = data;
  return t;
}

bool same_shape(const Tensor& a, const Tensor& b) {
  return a.ne[0] == b.ne[0] && a.ne[1] == b.ne[1] && a.ne[2] == b.ne[2] && a.ne[3] == b.ne[3];
}

}  // namespace kestrel
