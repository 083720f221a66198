// The "ref" backend: every op, every type, scalar, host memory.
#include <cstdlib>
#include <cstring>
#include <new>

#include "ops/backend.h"
#include "ops/host_buffer.h"
#include "ops/ref/ref_kernels.h"

namespace kestrel {

namespace {

using RefFn = void (*)(const OpCall&);
constexpr RefFn kRef[] = {
#define KESTREL_REF_ENTRY(name, P, lo, hi) &ref::name,
    KESTREL_OPS(KESTREL_REF_ENTRY)
#undef KESTREL_REF_ENTRY
};

class RefBackend final : public HostBackend {
 public:
  const char* name() const override { return "ref"; }
  bool supports(const OpCall& call) const override { return validate_op(call).ok(); }
  Status run(const OpCall& call) override {
    KESTREL_TRY(validate_op(call));
    return run_validated(call);
  }
  bool implements(const OpCall&) const override { return true; }
  Status run_validated(const OpCall& call) override {
    kRef[static_cast<int>(call.op)](call);
    return {};
  }
};

Expected<std::unique_ptr<Backend>> create_ref(const BackendOptions&) {
  std::unique_ptr<Backend> b(new (std::nothrow) RefBackend());
  if (!b) return Status::out_of_memory("ref backend");
  return b;
}

}  // namespace

const BackendInfo& backend_ref() {
  static constexpr BackendInfo kInfo{"ref", &create_ref};
  return kInfo;
}

}  // namespace kestrel
