// The "cuda" backend: validation and residency checks before the dispatch
// (ops/cuda/cuda_dispatch.cpp) to the kernels of ops/cuda/k_*.cu, and plans
// prepared into device executables (ops/cuda/cuda_plan.h). See cuda_backend.h
// for the contract.
#include "ops/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>

#include "ops/cuda/cuda_context.h"
#include "ops/cuda/cuda_ks_op.h"
#include "ops/cuda/cuda_plan.h"
#include "ops/cuda/cuda_buffer.h"
#include "platform/cuda/cuda_device.h"
#include "platform/cuda/cuda_status.h"
#include "platform/cuda/cuda_stream.h"

namespace kestrel {

namespace {

// Alignment the kernels' loads need: 4 bytes for 32-bit elements, 2 for
// 16-bit elements and for the Q8_0 / Q4_0 blocks (their f16 scale).
size_t elem_align(DType t) {
  switch (t) {
    case DType::F32:
    case DType::I32: return 4;
    default: return 2;
  }
}

bool aligned(const Tensor& t) {
  const size_t a = elem_align(t.type);
  if (reinterpret_cast<uintptr_t>(t.data) % a != 0) return false;
  for (int i = 1; i < 4; ++i)
    if (t.nb[i] % a != 0) return false;
  return true;
}

bool plain_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

bool op_implemented(const OpCall& c) {
  switch (c.op) {
    case OpId::rms_norm:
    case OpId::add:
    case OpId::mul:
    case OpId::scale:
    case OpId::argmax:
    case OpId::sample: return true;
    // No cuda kernel reads rope's freq factors (src2) or attn_factor yet.
    case OpId::rope: return c.n_src < 3 && c.p<RopeParams>().attn_factor == 1.0f;
    // Every exp tier and GELU form has a cuda kernel (ops/cuda/cuda_exp.cuh).
    case OpId::softmax:
    case OpId::silu:
    case OpId::swiglu:
    case OpId::sigmoid:
    case OpId::gelu:
    case OpId::geglu: return true;
    case OpId::copy: return plain_float(c.src[0]->type) && plain_float(c.dst->type);
    case OpId::get_rows: return cuda::weight_type_supported(c.src[0]->type);
    case OpId::matmul: return cuda::matmul_supported(c);
    case OpId::attention: return true;  // mask or per-query ranges; plus the shared-memory bound (supports())
    case OpId::set_rows: return plain_float(c.dst->type);
    case OpId::fill:
    case OpId::softcap:
    case OpId::transpose: return true;
    case OpId::ks_matmul: return cuda::ks_matmul_supported(c);
    case OpId::spec_verify: {
      // Greedy, softmax and sigmoid rules; the top-k / top-p thresholds run on the host kernels.
      const SpecVerifyParams& p = c.p<SpecVerifyParams>();
      return p.greedy || p.sigmoid || (p.top_k <= 0 && p.top_p >= 1.0f);
    }
  }
  return false;
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, bool graphs, bool exact_f16_x) {
    ctx_.device = device;
    ctx_.graphs = graphs;
    ctx_.exact_f16_x = exact_f16_x;
  }
  ~CudaBackend() override {
    // A backend held in a static dies after the CUDA runtime has unloaded:
    // then the handles are already gone with the process's context, and
    // touching them (cublasDestroy above all) could crash the exit.
    if (cudaSetDevice(ctx_.device) == cudaErrorCudartUnloading) {
      ctx_.cublas = nullptr;
      ctx_.scratch = nullptr;
      stream_.release();
      return;
    }
    if (ctx_.stream) (void)cudaStreamSynchronize(ctx_.stream);
    if (ctx_.cublas) (void)cublasDestroy(ctx_.cublas);  // before its workspace goes
    ctx_.release();
  }

  Status init() {
    KESTREL_TRY(cuda_select_device(ctx_.device));
    KESTREL_TRY_ASSIGN(stream_, CudaStream::create());
    ctx_.stream = stream_.get();
    KESTREL_TRY_ASSIGN(const CudaDeviceInfo info, cuda_device_info(ctx_.device));
    smem_optin_ = info.smem_per_block_optin;
    KESTREL_TRY(cublas_check(cublasCreate(&ctx_.cublas), "cublasCreate"));
    KESTREL_TRY(cublas_check(cublasSetStream(ctx_.cublas, ctx_.stream), "cublasSetStream"));
    // Plain FP32 SGEMM: no TF32 tensor-core rounding behind the caller's back.
    KESTREL_TRY(cublas_check(cublasSetMathMode(ctx_.cublas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode"));
    // cuBLAS's workspace up front, so that a step captured as a graph never
    // asks it to allocate (32 MiB: what cuBLAS recommends for Hopper).
    constexpr size_t kWorkspace = size_t(32) << 20;
    const cudaError_t err = cudaMalloc(&ctx_.cublas_workspace, kWorkspace);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      ctx_.cublas_workspace = nullptr;
      return Status::out_of_memory("cuBLAS workspace of %zu bytes: %s", kWorkspace, cudaGetErrorName(err));
    }
    KESTREL_TRY(cublas_check(cublasSetWorkspace(ctx_.cublas, ctx_.cublas_workspace, kWorkspace), "cublasSetWorkspace"));
    // The split decode attention's counters (zero between launches) and partials.
    constexpr size_t kCounters = cuda::kAttnSplitPairs * sizeof(unsigned);
    void* ws = nullptr;
    const cudaError_t werr = cudaMalloc(&ws, kCounters + cuda::kAttnSplitFloats * sizeof(float));
    if (werr != cudaSuccess) {
      (void)cudaGetLastError();
      return Status::out_of_memory("attention workspace: %s", cudaGetErrorName(werr));
    }
    ctx_.attn_ws.counters = static_cast<unsigned*>(ws);
    ctx_.attn_ws.partials = reinterpret_cast<float*>(static_cast<char*>(ws) + kCounters);
    KESTREL_TRY(cuda_check(cudaMemsetAsync(ws, 0, kCounters, ctx_.stream), "attention workspace"));
    KESTREL_TRY(cuda_check(cudaStreamSynchronize(ctx_.stream), "attention workspace"));
    return {};
  }

  const char* name() const override { return "cuda"; }
  bool is_host() const override { return false; }

  bool supports(const OpCall& call) const override {
    if (!validate_op(call).ok() || !op_implemented(call)) return false;
    if (call.op == OpId::copy) return true;  // copy reads and writes any byte strides
    if (call.op == OpId::attention) {
      const Tensor& q = *call.src[0];
      const Tensor& k = *call.src[1];
      const Tensor* m = call.opt_src(3);
      const bool mask = m && m->type != DType::I32;
      const bool tiled = cuda::attention_uses_tiled(q.ne[0], q.ne[1], k.ne[1], q.ne[2], mask);
      // A tiled call may run on tensor cores (F16 KV, attention_mma_fits): the larger of the two.
      const size_t smem = tiled ? std::max(cuda::attention_tiled_smem_bytes(q.ne[0], q.ne[1] / k.ne[1]),
                                           k.type == DType::F16 ? cuda::attention_mma_smem_bytes(q.ne[0]) : 0)
                                : cuda::attention_smem_bytes(q.ne[0], k.ne[2]);
      // One query (decode) keeps every score in shared memory: ~56k keys at D = 128.
      if (smem > smem_optin_) return false;
    }
    if (!aligned(*call.dst)) return false;
    for (int i = 0; i < call.n_src; ++i)
      if (!aligned(*call.src[i])) return false;
    return true;
  }

  Status run(const OpCall& call) override {
    KESTREL_TRY(validate_op(call));
    if ((call.op == OpId::matmul || call.op == OpId::get_rows) && call.n_src > 0 && call.src[0] &&
        !cuda::weight_type_supported(call.src[0]->type))
      return Status::unsupported("%s: the cuda backend has no kernel for %s weights", op_name(call.op),
                                 dtype_name(call.src[0]->type));
    if (!supports(call))
      return Status::unsupported("%s: the cuda backend has no kernel for these types or this alignment",
                                 op_name(call.op));
    KESTREL_TRY(cuda_check(cudaSetDevice(ctx_.device), "cudaSetDevice"));
    KESTREL_TRY(check_resident(*call.dst, "dst", call));
    for (int i = 0; i < call.n_src; ++i) KESTREL_TRY(check_resident(*call.src[i], "source", call));
    return cuda::dispatch(ctx_, call);
  }

  Expected<std::unique_ptr<Buffer>> alloc_buffer(size_t bytes) override {
    KESTREL_TRY(cuda_check(cudaSetDevice(ctx_.device), "cudaSetDevice"));
    return alloc_cuda_buffer(bytes, ctx_.device);
  }
  Status upload(Buffer& dst, size_t offset, const void* src, size_t bytes) override {
    KESTREL_TRY(cuda_check(cudaSetDevice(ctx_.device), "cudaSetDevice"));
    return cuda_buffer_upload(dst, offset, src, bytes, ctx_.stream);
  }
  Status download(void* dst, Buffer& src, size_t offset, size_t bytes) override {
    KESTREL_TRY(cuda_check(cudaSetDevice(ctx_.device), "cudaSetDevice"));
    return cuda_buffer_download(dst, src, offset, bytes, ctx_.stream);
  }
  Status synchronize() override {
    KESTREL_TRY(cuda_check(cudaSetDevice(ctx_.device), "cudaSetDevice"));
    return stream_.synchronize();
  }
  // A device executable (ops/cuda/cuda_plan.h): no host fallback, so `fallback`
  // is not used; a node this backend cannot run fails the prepare.
  Expected<std::unique_ptr<Executable>> prepare(const Plan& plan, Backend* fallback) override {
    (void)fallback;
    return cuda::prepare_plan(ctx_, *this, plan);
  }
  Status make_resident(const void* host, size_t bytes) override {
    KESTREL_TRY(cuda_check(cudaSetDevice(ctx_.device), "cudaSetDevice"));
    return ctx_.resident.add_weights(host, bytes, ctx_.device, ctx_.stream);
  }
  size_t resident_bytes() const override { return ctx_.resident.weight_bytes(); }

 private:
  // A kernel handed a host pointer would fault and poison the whole CUDA
  // context, so every tensor is checked to be device memory of this device,
  // and inside its buffer when it names one.
  Status check_resident(const Tensor& t, const char* role, const OpCall& call) const {
    if (t.nelements() == 0) return {};
    if (t.buffer && t.buffer->is_host())
      return Status::invalid_argument("%s: %s lives in a host buffer; the cuda backend needs device buffers",
                                      op_name(call.op), role);
    cudaPointerAttributes attr{};
    const cudaError_t err = cudaPointerGetAttributes(&attr, t.data);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      return Status::invalid_argument("%s: %s pointer is not CUDA memory (%s)", op_name(call.op), role,
                                      cudaGetErrorName(err));
    }
    if (attr.type != cudaMemoryTypeDevice || attr.device != ctx_.device)
      return Status::invalid_argument("%s: %s is not device memory of CUDA device %d", op_name(call.op), role,
                                      ctx_.device);
    if (auto* cb = dynamic_cast<CudaBuffer*>(t.buffer)) {
      const char* lo = static_cast<const char*>(cb->data());
      const char* p = static_cast<const char*>(t.data);
      const size_t n = t.nbytes();
      if (p < lo || static_cast<size_t>(p - lo) > cb->size() || n > cb->size() - static_cast<size_t>(p - lo))
        return Status::invalid_argument("%s: %s spans past its %zu-byte device buffer", op_name(call.op), role,
                                        cb->size());
    }
    return {};
  }

  cuda::Context ctx_;
  CudaStream stream_;
  size_t smem_optin_ = 48 * 1024;  // largest dynamic shared memory per block
};

Expected<std::unique_ptr<Backend>> create_cuda(const BackendOptions& opt) {
  KESTREL_TRY_ASSIGN(const int n, cuda_device_count());
  if (opt.device < 0 || opt.device >= n)
    return Status::invalid_argument("CUDA device %d out of range (%d devices)", opt.device, n);
  std::unique_ptr<CudaBackend> b(new (std::nothrow) CudaBackend(opt.device, opt.graphs, opt.exact_f16_x));
  if (!b) return Status::out_of_memory("cuda backend");
  KESTREL_TRY(b->init());
  return std::unique_ptr<Backend>(std::move(b));
}

}  // namespace

const BackendInfo& backend_cuda() {
  static constexpr BackendInfo kInfo{"cuda", &create_cuda};
  return kInfo;
}

}  // namespace kestrel
