// The backend interface: what a device offers kestrel's runtime.
//
// A backend runs ops (after validate_op() has accepted them), allocates its
// buffers and says which ops it supports. Backends are registered explicitly:
// the program asks for backend_ref(), backend_cpu() or backend_cuda() and
// creates instances from them; nothing registers itself at static init.
//
//   auto cpu = backend_cpu().create(BackendOptions{.n_threads = 2});
//   if (!cpu) return cpu.status();
//   OpCall call{OpId::rms_norm, &y, {&x, &w}, 2, &params};
//   KESTREL_TRY((*cpu)->run(call));
#pragma once

#include <cstddef>
#include <memory>

#include "ops/op_table.h"
#include "platform/status.h"

namespace kestrel {

class ThreadPool;
class Backend;
class Plan;
class Executable;

// Memory owned by a backend (host memory for ref/cpu, device memory for cuda).
class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual void* data() = 0;  // device pointer for device buffers
  virtual size_t size() const = 0;
  virtual bool is_host() const = 0;
};

enum class CpuIsa : int32_t {
  auto_detect = -1,  // the best variant the CPU supports
  scalar = 0,        // no SIMD variant: every op falls back to "unsupported"
  sse42 = 1,
  avx2 = 2,
  avx512 = 3,
  neon = 4,
  neondot = 5,       // neon compiled with the dotprod extension (sdot / udot)
  avxvnni = 6,       // avx2 compiled with AVX-VNNI (vpdpbusd / vpdpwssd on ymm)
  neoni8mm = 7,      // neondot compiled with the i8mm extension too (smmla tiles)
};
const char* cpu_isa_name(CpuIsa isa);
// Whether variant isa is another one's source built with flags that add integer dot-product
// instructions only (avxvnni: avx2's; neondot, neoni8mm: neon's), so that its float kernels are
// that one's: tests of float-only ops run those once.
constexpr bool cpu_isa_int_twin(CpuIsa isa) {
  return isa == CpuIsa::avxvnni || isa == CpuIsa::neondot || isa == CpuIsa::neoni8mm;
}
// Every CPU variant, best first within an architecture (the order the backend picks in).
inline constexpr CpuIsa kCpuIsas[] = {CpuIsa::avx512,   CpuIsa::avxvnni, CpuIsa::avx2, CpuIsa::sse42,
                                      CpuIsa::neoni8mm, CpuIsa::neondot, CpuIsa::neon};

struct BackendOptions {
  int n_threads = 1;            // worker threads (cpu); >= 1
  ThreadPool* pool = nullptr;   // cpu: run on this pool (owned by the caller); else own one
  CpuIsa isa = CpuIsa::auto_detect;  // cpu: force a variant (tests, benches)
  int device = 0;               // cuda: device ordinal
  bool graphs = true;           // cuda: replay each prepared plan's step as a CUDA graph
  // cuda: GEMMs on F16 weights (prompts) keep ~22 bits of x (two tensor-core
  // GEMMs on x split into F16 hi + lo) instead of rounding x to F16 once.
  bool exact_f16_x = false;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;  // "ref", "cpu-avx2", "cuda"
  // True when run(call) can execute this op with these types and layouts.
  virtual bool supports(const OpCall& call) const = 0;
  // Runs one op. Tensors must live in memory this backend can read/write
  // (host memory for host backends, this backend's buffers otherwise).
  virtual Status run(const OpCall& call) = 0;
  // The same two for a call that validate_op() has already accepted (the runtime
  // validates each op once and then asks the backends in turn): a backend that
  // validates inside supports()/run() skips that here.
  virtual bool implements(const OpCall& validated) const { return supports(validated); }
  virtual Status run_validated(const OpCall& validated) { return run(validated); }
  virtual bool is_host() const = 0;
  virtual Expected<std::unique_ptr<Buffer>> alloc_buffer(size_t bytes) = 0;
  // Host <-> buffer copies (plain memcpy for host backends).
  virtual Status upload(Buffer& dst, size_t offset, const void* src, size_t bytes) = 0;
  virtual Status download(void* dst, Buffer& src, size_t offset, size_t bytes) = 0;
  virtual Status synchronize() { return {}; }
  // Prepares a plan (ops/plan.h) to run on this backend, with `fallback` (a
  // host backend, or nullptr) for the ops it lacks. Host backends default to
  // the eager executable; a device backend binds its own buffers.
  virtual Expected<std::unique_ptr<Executable>> prepare(const Plan& plan, Backend* fallback);
  virtual void set_n_threads(int n_threads) {}
  // Makes host memory that stays unchanged from now on (a model's weights)
  // resident: a device backend uploads it once, in its stored format, and
  // plans that read it use that copy. Host backends read it where it is.
  virtual Status make_resident(const void* host, size_t bytes) { return {}; }
  // Bytes made resident on the device (0 for host backends).
  virtual size_t resident_bytes() const { return 0; }
};

struct BackendInfo {
  const char* name;  // "ref", "cpu", "cuda"
  // Reports `unsupported` when the machine lacks what it needs (no GPU).
  Expected<std::unique_ptr<Backend>> (*create)(const BackendOptions& options);
};

// Scalar reference kernels: the oracle for every other backend. Single threaded.
const BackendInfo& backend_ref();
// SIMD CPU kernels (xsimd, one variant per ISA), threaded over rows.
const BackendInfo& backend_cpu();
// ISA variants compiled into this build and supported by this CPU, best first.
int cpu_isa_available(CpuIsa* out, int max);

// Shape / type checks shared by every backend: a Status naming the problem.
Status validate_op(const OpCall& call);

}  // namespace kestrel
