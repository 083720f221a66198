// What a cuda backend keeps on the device across the plans it prepares:
//   - weights: host memory a caller made resident once (Backend::make_resident,
//     e.g. a model's tensor data), uploaded once in its stored format; every
//     plan reading it uses that copy;
//   - step memory: the device buffers standing for a plan's activation, input
//     and output roots, shared by every plan whose root has the same host
//     address (a context's arena), since only one plan runs at a time and none
//     of them carries contents from one step to the next.
// A shared buffer that a later plan needs larger is replaced for that plan
// and later ones; plans prepared before keep the one they hold (shared_ptr),
// so no device address a prepared plan (or a captured graph) uses ever moves.
//
//   Residency r;
//   KESTREL_TRY(r.add_weights(host, bytes, device, stream));
//   const char* dev = r.weight_address(p, n);          // nullptr: not resident
//   KESTREL_TRY_ASSIGN(Residency::StepMemory m, r.step_memory(root.base, root.bytes, device));
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <vector>

#include "ops/backend.h"

namespace kestrel::cuda {

class Residency {
 public:
  // Uploads [host, host + bytes) (read-only from now on) unless an existing
  // resident range covers it. Overlapping ranges are each uploaded.
  Status add_weights(const void* host, size_t bytes, int device, cudaStream_t stream);
  // Device address of host memory [p, p + bytes) inside a resident range, or nullptr.
  char* weight_address(const void* p, size_t bytes) const;
  size_t weight_bytes() const;

  // Device memory standing for the host step memory [host, host + bytes) (a
  // root), shared with earlier requests for the same host address; `base` is
  // the device address of `host` (same alignment mod 256).
  struct StepMemory {
    std::shared_ptr<Buffer> buf;
    char* base = nullptr;
  };
  Expected<StepMemory> step_memory(const char* host, size_t bytes, int device);

 private:
  struct Range {
    const char* lo = nullptr;
    size_t bytes = 0;
    std::unique_ptr<Buffer> dev;
    char* base = nullptr;  // device address standing for lo
  };
  struct Step {
    const char* host = nullptr;
    size_t bytes = 0;
    StepMemory mem;
  };
  std::vector<Range> weights_;
  std::vector<Step> steps_;
};

// Device memory whose address offsets keep the host address's alignment mod
// 256 (the kernels' vector loads and the supports() alignment rules then see
// the same addresses mod 256 as on the host). Returns the buffer and the
// device address standing for `host`.
Expected<std::pair<std::unique_ptr<Buffer>, char*>> device_copy_of(const char* host, size_t bytes, int device);

}  // namespace kestrel::cuda
