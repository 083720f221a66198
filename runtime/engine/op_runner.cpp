#include "runtime/engine/op_runner.h"

namespace kestrel {

void OpRunner::set_n_threads(int n) {
  if (n == n_threads_) return;
  n_threads_ = n;
  for (Backend* b : backends_) b->set_n_threads(n);
}

Status OpRunner::run(OpId op, Tensor* dst, std::initializer_list<const Tensor*> src, const void* params) {
  OpCall call;
  call.op = op;
  call.dst = dst;
  call.params = params;
  for (const Tensor* t : src) {
    if (call.n_src == kMaxSrc) return Status::internal("%s: too many sources", op_name(op));
    call.src[call.n_src++] = t;
  }
  // Validated once here; the backends then only say whether they have a kernel.
  KESTREL_TRY(validate_op(call));
  for (Backend* b : backends_) {
    if (b->implements(call)) return b->run_validated(call);
  }
  return Status::unsupported("%s: no backend supports this call", op_name(op));
}

}  // namespace kestrel
