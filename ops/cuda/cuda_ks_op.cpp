// ks_matmul on the cuda backend: OpCall -> KsArgs -> tuned launch (cuda_ks_op.h).
#include "ops/cuda/cuda_ks_op.h"

#include "ops/cuda/cuda_ks.h"
#include "platform/cuda/cuda_status.h"

namespace kestrel::cuda {

namespace {

KsArgs args_of(const OpCall& call) {
  const KsMatmulParams& p = call.p<KsMatmulParams>();
  const Tensor& w = *call.src[0];
  const Tensor& x = *call.src[1];
  const Tensor& y = *call.dst;
  KsArgs k;
  k.w = w.data;
  k.w_nb1 = w.nb[1], k.w_nb2 = w.nb[2], k.w_nb3 = w.nb[3];
  k.x = static_cast<const float*>(x.data);
  k.y = static_cast<float*>(y.data);
  k.x_ld = static_cast<int64_t>(x.nb[1] / sizeof(float));
  k.y_ld = static_cast<int64_t>(y.nb[1] / sizeof(float));
  k.a = p.a, k.b = p.b, k.c = p.c, k.d = p.d;
  k.batch_last = p.layout == KsLayout::batch_last;
  k.M = k.batch_last ? x.ne[0] : x.ne[1];
  k.wt = w.type;
  return k;
}

}  // namespace

bool ks_matmul_supported(const OpCall& call) {
  const Tensor& w = *call.src[0];
  const Tensor& x = *call.src[1];
  const Tensor& y = *call.dst;
  const size_t es = w.type == DType::F32 ? 4 : 2;
  if (w.type != DType::F32 && w.type != DType::F16 && w.type != DType::BF16) return false;
  if (w.nb[0] != es || x.nb[0] != sizeof(float) || y.nb[0] != sizeof(float)) return false;
  return x.nb[1] % sizeof(float) == 0 && y.nb[1] % sizeof(float) == 0;
}

Status run_ks_matmul(const OpCall& call, cudaStream_t s) {
  const KsArgs k = args_of(call);
  if (k.M == 0) return {};
  int config = 0;
  KESTREL_TRY(cuda_check(ks_pick_config(k, s, &config), "ks_matmul tile tuning"));
  return cuda_check(launch_ks_matmul(k, config, s), "ks_matmul");
}

}  // namespace kestrel::cuda
