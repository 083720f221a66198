// The "cpu" backend: SIMD kernels chosen once per ISA, threaded over rows.
// Ops without a kernel in the chosen variant report "unsupported"; the runtime
// routes those to the ref backend.
#include <new>

#include "ops/cpu/kernel_table.h"
#include "ops/cpu/matmul_variants.h"
#include "ops/host_buffer.h"
#include "platform/aligned_alloc.h"
#include "platform/cpu_features.h"

namespace kestrel {

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::auto_detect: return "auto";
    case CpuIsa::scalar: return "scalar";
    case CpuIsa::sse42: return "sse4.2";
    case CpuIsa::avx2: return "avx2";
    case CpuIsa::avx512: return "avx512";
    case CpuIsa::neon: return "neon";
    case CpuIsa::neondot: return "neondot";
    case CpuIsa::neoni8mm: return "neoni8mm";
    case CpuIsa::avxvnni: return "avxvnni";
  }
  return "unknown";
}

namespace cpu {

Exec::~Exec() { aligned_free(scratch_); }

void* Exec::scratch(size_t bytes) {
  if (bytes <= scratch_size_) return scratch_;
  void* p = aligned_alloc_bytes(bytes, 64);
  if (!p) return nullptr;
  aligned_free(scratch_);
  scratch_ = p;
  scratch_size_ = bytes;
  return p;
}

bool isa_runs_here(CpuIsa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case CpuIsa::sse42: return f.sse42;
    case CpuIsa::avx2: return f.avx2 && f.fma && f.f16c && f.bmi2;
    case CpuIsa::avxvnni: return f.avx2 && f.fma && f.f16c && f.bmi2 && f.avx_vnni;
    case CpuIsa::avx512:
      return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni && f.avx2 && f.fma && f.f16c;
    case CpuIsa::neon: return f.neon;
    case CpuIsa::neondot: return f.neon && f.dotprod;
    case CpuIsa::neoni8mm: return f.neon && f.dotprod && f.i8mm;
    case CpuIsa::scalar: return true;
    default: return false;
  }
}

}  // namespace cpu

namespace {

using cpu::isa_runs_here;

bool isa_compiled(CpuIsa isa) {
  switch (isa) {
#if defined(KESTREL_ISA_SSE42)
    case CpuIsa::sse42: return true;
#endif
#if defined(KESTREL_ISA_AVX2)
    case CpuIsa::avx2: return true;
#endif
#if defined(KESTREL_ISA_AVXVNNI)
    case CpuIsa::avxvnni: return true;
#endif
#if defined(KESTREL_ISA_AVX512)
    case CpuIsa::avx512: return true;
#endif
#if defined(KESTREL_ISA_NEON)
    case CpuIsa::neon: return true;
#endif
#if defined(KESTREL_ISA_NEONDOT)
    case CpuIsa::neondot: return true;
#endif
#if defined(KESTREL_ISA_NEONI8MM)
    case CpuIsa::neoni8mm: return true;
#endif
    case CpuIsa::scalar: return true;
    default: return false;
  }
}

void fill_table(CpuIsa isa, cpu::KernelTable& t) {
  switch (isa) {
#if defined(KESTREL_ISA_SSE42)
    case CpuIsa::sse42: cpu::fill_kernels_sse42(t); t.isa_name = "sse4.2"; break;
#endif
#if defined(KESTREL_ISA_AVX2)
    case CpuIsa::avx2: cpu::fill_kernels_avx2(t); t.isa_name = "avx2"; break;
#endif
#if defined(KESTREL_ISA_AVXVNNI)
    case CpuIsa::avxvnni: cpu::fill_kernels_avxvnni(t); t.isa_name = "avxvnni"; break;
#endif
#if defined(KESTREL_ISA_AVX512)
    case CpuIsa::avx512: cpu::fill_kernels_avx512(t); t.isa_name = "avx512"; break;
#endif
#if defined(KESTREL_ISA_NEON)
    case CpuIsa::neon: cpu::fill_kernels_neon(t); t.isa_name = "neon"; break;
#endif
#if defined(KESTREL_ISA_NEONDOT)
    case CpuIsa::neondot: cpu::fill_kernels_neondot(t); t.isa_name = "neondot"; break;
#endif
#if defined(KESTREL_ISA_NEONI8MM)
    case CpuIsa::neoni8mm: cpu::fill_kernels_neoni8mm(t); t.isa_name = "neoni8mm"; break;
#endif
    default: t.isa_name = "scalar"; break;
  }
}

class CpuBackend final : public HostBackend {
 public:
  CpuBackend(CpuIsa isa, ThreadPool* pool, std::unique_ptr<ThreadPool> owned, int n_threads)
      : isa_(isa), owned_pool_(std::move(owned)), exec_(pool, n_threads) {
    fill_table(isa, table_);
    name_ = std::string("cpu-") + table_.isa_name;
  }
  const char* name() const override { return name_.c_str(); }
  bool supports(const OpCall& call) const override { return validate_op(call).ok() && implements(call); }
  bool implements(const OpCall& call) const override {
    const cpu::KernelEntry& e = table_[call.op];
    return e.run && (!e.supports || e.supports(call));
  }
  Status run(const OpCall& call) override {
    KESTREL_TRY(validate_op(call));
    return run_validated(call);
  }
  Status run_validated(const OpCall& call) override {
    const cpu::KernelEntry& e = table_[call.op];
    if (!e.run || (e.supports && !e.supports(call)))
      return Status::unsupported("%s: no %s kernel for these types", op_name(call.op), name_.c_str());
    if (router_ && call.op == OpId::matmul) return run_routed(call, e, router_->route(call));
    if (!e.run(call, exec_)) return Status::out_of_memory("%s: scratch allocation failed", op_name(call.op));
    return {};
  }
  // Runs kernel fn on n_threads threads (0: as many as now; the pool caps the count).
  Status run_with(const OpCall& call, cpu::KernelFn fn, int n_threads, const char* what) {
    const int now = exec_.n_threads();
    const bool other = n_threads > 0 && n_threads != now;
    if (other) exec_.set_n_threads(n_threads);
    const bool ok = fn(call, exec_);
    if (other) exec_.set_n_threads(now);
    if (!ok) return Status::out_of_memory("%s: scratch allocation failed", what);
    return {};
  }
  void set_router(MatmulRouter* r) { router_ = r; }
  void set_n_threads(int n) override {
    if (owned_pool_) owned_pool_->set_n_threads(n);
    exec_.set_n_threads(n);
  }
  CpuIsa isa() const { return isa_; }
  cpu::Exec& exec() { return exec_; }

 private:
  Status run_routed(const OpCall& call, const cpu::KernelEntry& e, const MatmulRoute& r) {
    const MatmulVariant* v = r.variant;
    if (v && v->wtype == call.src[0]->type && v->run && v->available && v->available())
      return run_with(call, v->run, r.n_threads, v->name);
    return run_with(call, e.run, r.n_threads, op_name(call.op));
  }

  MatmulRouter* router_ = nullptr;
  CpuIsa isa_;
  std::unique_ptr<ThreadPool> owned_pool_;
  cpu::Exec exec_;
  cpu::KernelTable table_;
  std::string name_;
};

Expected<std::unique_ptr<Backend>> create_cpu(const BackendOptions& opt) {
  CpuIsa isa = opt.isa;
  if (isa == CpuIsa::auto_detect) {
    CpuIsa best[8];
    isa = cpu_isa_available(best, 8) > 0 ? best[0] : CpuIsa::scalar;
  } else if (!isa_compiled(isa)) {
    return Status::unsupported("cpu variant %s is not compiled into this build", cpu_isa_name(isa));
  } else if (!isa_runs_here(isa)) {
    return Status::unsupported("this CPU lacks the features of variant %s", cpu_isa_name(isa));
  }
  const int n = opt.n_threads < 1 ? 1 : opt.n_threads;
  std::unique_ptr<ThreadPool> owned;
  ThreadPool* pool = opt.pool;
  if (!pool) {
    owned.reset(new (std::nothrow) ThreadPool(n));
    if (!owned) return Status::out_of_memory("thread pool");
    pool = owned.get();
  }
  std::unique_ptr<Backend> b(new (std::nothrow) CpuBackend(isa, pool, std::move(owned), n));
  if (!b) return Status::out_of_memory("cpu backend");
  return b;
}

}  // namespace

int cpu_isa_available(CpuIsa* out, int max) {
  int n = 0;
  for (CpuIsa isa : kCpuIsas) {
    if (n < max && isa_compiled(isa) && isa_runs_here(isa)) out[n++] = isa;
  }
  return n;
}

bool cpu_backend_isa(const Backend& b, CpuIsa* isa) {
  const auto* cb = dynamic_cast<const CpuBackend*>(&b);
  if (!cb) return false;
  if (isa) *isa = cb->isa();
  return true;
}

bool cpu_set_matmul_router(Backend& b, MatmulRouter* router) {
  auto* cb = dynamic_cast<CpuBackend*>(&b);
  if (!cb) return false;
  cb->set_router(router);
  return true;
}

Status cpu_run_matmul_variant(Backend& b, const OpCall& call, const MatmulVariant& v, int n_threads) {
  auto* cb = dynamic_cast<CpuBackend*>(&b);
  if (!cb) return Status::invalid_argument("matmul variant %s: backend %s is not a cpu backend", v.name, b.name());
  if (call.op != OpId::matmul)
    return Status::invalid_argument("matmul variant %s: called for op %s", v.name, op_name(call.op));
  KESTREL_TRY(validate_op(call));
  if (call.src[0]->type != v.wtype)
    return Status::invalid_argument("matmul variant %s: weights are %s, the variant takes %s", v.name,
                                    dtype_name(call.src[0]->type), dtype_name(v.wtype));
  if (!v.available || !v.available() || !v.run)
    return Status::unsupported("matmul variant %s: not available on this machine", v.name);
  return cb->run_with(call, v.run, n_threads, v.name);
}

const BackendInfo& backend_cpu() {
  static constexpr BackendInfo kInfo{"cpu", &create_cpu};
  return kInfo;
}

}  // namespace kestrel
