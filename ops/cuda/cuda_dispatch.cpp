// The CUDA backend's dispatch: one validated OpCall -> its kernel launch on
// the context's stream. Shared by CudaBackend::run() (after its checks) and
// the plan executable (ops/cuda/cuda_plan.h), which checked everything once
// at prepare.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <new>

#include "ops/cuda/cuda_context.h"
#include "ops/cuda/cuda_ks_op.h"
#include "platform/cuda/cuda_status.h"

namespace kestrel::cuda {

TV view(const Tensor& t) {
  TV v;
  v.data = static_cast<char*>(t.data);
  for (int i = 0; i < 4; ++i) {
    v.ne[i] = t.ne[i];
    v.nb[i] = static_cast<int64_t>(t.nb[i]);
  }
  return v;
}

Expected<void*> Context::get_scratch(size_t bytes) {
  if (bytes <= scratch_size) return scratch;
  try {
    retired.reserve(retired.size() + 1);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("cuda scratch table");
  }
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return Status::out_of_memory("cuda scratch of %zu bytes: %s", bytes, cudaGetErrorName(err));
  }
  if (scratch) retired.push_back(scratch);
  scratch = p;
  scratch_size = bytes;
  return p;
}

void Context::release() {
  if (scratch) (void)cudaFree(scratch);
  if (attn_ws.counters) (void)cudaFree(attn_ws.counters);
  attn_ws = AttnSplitWs{};
  for (void* p : retired) (void)cudaFree(p);
  if (cublas_workspace) (void)cudaFree(cublas_workspace);
  retired.clear();
  scratch = cublas_workspace = nullptr;
  scratch_size = 0;
  resident = Residency();
}

size_t dispatch_scratch_bytes(const OpCall& c) {
  switch (c.op) {
    case OpId::matmul: return matmul_scratch_bytes(c);
    case OpId::spec_verify: return spec_verify_scratch_bytes(c.src[1]->ne[0], c.src[0]->ne[0]);
    default: return 0;
  }
}

Status dispatch(Context& ctx, const OpCall& c) {
  const cudaStream_t s = ctx.stream;
  const Tensor& a = c.n_src > 0 ? *c.src[0] : *c.dst;
  const Tensor& d = *c.dst;
  const char* what = op_name(c.op);
  switch (c.op) {
    case OpId::rms_norm: {
      const RmsNormParams& p = c.p<RmsNormParams>();
      const Tensor* w = c.opt_src(1);
      return cuda_check(launch_rms_norm(view(a), w ? static_cast<const float*>(w->data) : nullptr, view(d), p.eps,
                                        p.one_plus_weight, s),
                        what);
    }
    case OpId::softmax: {
      const SoftmaxParams& p = c.p<SoftmaxParams>();
      const Tensor* m = c.opt_src(1);
      const SoftmaxArgs args{p.scale, p.soft_cap, p.causal, p.window, p.pos_offset, p.exp};
      return cuda_check(launch_softmax(view(a), m ? view(*m) : TV{}, view(d), args, s), what);
    }
    case OpId::scale: {
      const ScaleParams& p = c.p<ScaleParams>();
      return cuda_check(launch_unary(Unary::scale, ExpTier::exact, view(a), view(d), p.scale, p.bias, s), what);
    }
    case OpId::softcap:
      return cuda_check(
          launch_unary(Unary::softcap, ExpTier::exact, view(a), view(d), c.p<SoftcapParams>().cap, 0, s), what);
    case OpId::silu:
      return cuda_check(launch_unary(Unary::silu, c.p<SiluParams>().exp, view(a), view(d), 0, 0, s), what);
    case OpId::sigmoid:
      return cuda_check(launch_unary(Unary::sigmoid, c.p<SigmoidParams>().exp, view(a), view(d), 0, 0, s), what);
    case OpId::gelu: {
      const GeluParams& p = c.p<GeluParams>();
      const auto op = p.form == GeluForm::erf       ? Unary::gelu_erf
                      : p.form == GeluForm::sigmoid ? Unary::gelu_sigmoid
                                                    : Unary::gelu_tanh;
      return cuda_check(launch_unary(op, p.exp, view(a), view(d), 0, 0, s), what);
    }
    case OpId::add:
      return cuda_check(launch_binary(Binary::add, ExpTier::exact, view(a), view(*c.src[1]), view(d), s), what);
    case OpId::mul:
      return cuda_check(launch_binary(Binary::mul, ExpTier::exact, view(a), view(*c.src[1]), view(d), s), what);
    case OpId::swiglu:
      return cuda_check(launch_binary(Binary::swiglu, c.p<SiluParams>().exp, view(a), view(*c.src[1]), view(d), s),
                        what);
    case OpId::geglu: {
      const GeluParams& p = c.p<GeluParams>();
      const auto op = p.form == GeluForm::erf       ? Binary::geglu_erf
                      : p.form == GeluForm::sigmoid ? Binary::geglu_sigmoid
                                                    : Binary::geglu_tanh;
      return cuda_check(launch_binary(op, p.exp, view(a), view(*c.src[1]), view(d), s), what);
    }
    case OpId::copy: return cuda_check(launch_copy(a.type, view(a), d.type, view(d), s), what);
    case OpId::argmax: return cuda_check(launch_argmax(view(a), view(d), c.p<ArgmaxParams>().strict, s), what);
    case OpId::sample: {
      static_assert(kSampleThreads == kSampleMaxK, "one thread per kept candidate");
      const SampleParams& p = c.p<SampleParams>();
      const SampleArgs args{p.top_k, static_cast<float>(1.0 / static_cast<double>(p.temperature)), p.top_p, p.min_p};
      return cuda_check(launch_sample(view(a), view(*c.src[1]), view(d), args, s), what);
    }
    case OpId::rope: {
      const RopeParams& p = c.p<RopeParams>();
      const RopeArgs args{p.mode == RopeMode::neox ? 1 : 0, p.n_dims, p.theta_base, p.freq_scale};
      return cuda_check(launch_rope(view(a), static_cast<const int32_t*>(c.src[1]->data), view(d), args, s), what);
    }
    // ids outside the table yield zero rows (nothing is read out of bounds); a
    // plan checks the ids it uploads on the host, so nothing is read back here.
    case OpId::get_rows:
      return cuda_check(launch_get_rows(a.type, view(a), static_cast<const int32_t*>(c.src[1]->data), view(d), s),
                        what);
    case OpId::set_rows:
      return cuda_check(launch_set_rows(view(a), static_cast<const int32_t*>(c.src[1]->data), d.type, view(d), s),
                        what);
    case OpId::fill: return cuda_check(launch_fill(view(d), c.p<FillParams>().value, s), what);
    case OpId::transpose: return cuda_check(launch_transpose(view(a), view(d), s), what);
    case OpId::matmul: return run_matmul(ctx, c);
    case OpId::attention: {
      const AttentionParams& p = c.p<AttentionParams>();
      const Tensor* m = c.opt_src(3);
      const bool ranges = m && m->type == DType::I32;
      return cuda_check(launch_attention(c.src[1]->type, view(a), view(*c.src[1]), view(*c.src[2]),
                                         m && !ranges ? view(*m) : TV{}, ranges ? view(*m) : TV{}, view(d),
                                         {p.scale, p.soft_cap, p.exp}, s, ctx.attn_ws),
                        what);
    }
    case OpId::ks_matmul: return run_ks_matmul(c, s);
    case OpId::spec_verify: {
      const SpecVerifyParams& p = c.p<SpecVerifyParams>();
      const int64_t g = c.src[1]->ne[0];
      KESTREL_TRY_ASSIGN(void* scratch, ctx.get_scratch(spec_verify_scratch_bytes(g, a.ne[0])));
      const Tensor* dl = c.opt_src(2);
      const SpecVerifyArgs args{p.greedy, p.sigmoid, p.temperature, p.sigmoid_scale, p.sigmoid_bias, p.seed};
      return cuda_check(launch_spec_verify(view(a), dl ? view(*dl) : TV{}, static_cast<const int32_t*>(c.src[1]->data),
                                           g, args, scratch, static_cast<int32_t*>(d.data), s),
                        what);
    }
  }
  return Status::unsupported("%s: not implemented on cuda", what);
}

}  // namespace kestrel::cuda
