// Device residency of a cuda backend (see cuda_residency.h).
#include "ops/cuda/cuda_residency.h"

#include <cstdint>
#include <new>

#include "ops/cuda/cuda_buffer.h"
#include "platform/cuda/cuda_status.h"

namespace kestrel::cuda {

namespace {
constexpr uintptr_t kKeepAlign = 256;
}  // namespace

Expected<std::pair<std::unique_ptr<Buffer>, char*>> device_copy_of(const char* host, size_t bytes, int device) {
  const size_t pad = reinterpret_cast<uintptr_t>(host) % kKeepAlign;
  KESTREL_TRY_ASSIGN(std::unique_ptr<Buffer> b, alloc_cuda_buffer(bytes + pad, device));
  char* base = static_cast<char*>(b->data()) + pad;
  return std::make_pair(std::move(b), base);
}

Status Residency::add_weights(const void* host, size_t bytes, int device, cudaStream_t stream) {
  if (!host || !bytes) return Status::invalid_argument("make_resident: empty range");
  if (weight_address(host, bytes)) return {};
  const char* lo = static_cast<const char*>(host);
  KESTREL_TRY_ASSIGN(auto copy, device_copy_of(lo, bytes, device));
  const cudaError_t err = cudaMemcpyAsync(copy.second, lo, bytes, cudaMemcpyHostToDevice, stream);
  const cudaError_t sync = cudaStreamSynchronize(stream);
  KESTREL_TRY(cuda_check(err != cudaSuccess ? err : sync, "make_resident: upload weights"));
  try {
    weights_.push_back(Range{lo, bytes, std::move(copy.first), copy.second});
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("resident weight table");
  }
  return {};
}

char* Residency::weight_address(const void* p, size_t bytes) const {
  const char* c = static_cast<const char*>(p);
  for (const Range& r : weights_)
    if (c >= r.lo && static_cast<size_t>(c - r.lo) <= r.bytes && bytes <= r.bytes - static_cast<size_t>(c - r.lo))
      return r.base + (c - r.lo);
  return nullptr;
}

size_t Residency::weight_bytes() const {
  size_t n = 0;
  for (const Range& r : weights_) n += r.bytes;
  return n;
}

Expected<Residency::StepMemory> Residency::step_memory(const char* host, size_t bytes, int device) {
  Step* slot = nullptr;
  for (Step& s : steps_)
    if (s.host == host) slot = &s;
  if (slot && slot->bytes >= bytes) return slot->mem;
  KESTREL_TRY_ASSIGN(auto copy, device_copy_of(host, bytes, device));
  StepMemory mem;
  try {
    mem.buf = std::shared_ptr<Buffer>(std::move(copy.first));
    mem.base = copy.second;
    if (!slot) {
      steps_.push_back(Step{host, 0, {}});
      slot = &steps_.back();
    }
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("step memory table");
  }
  slot->bytes = bytes;
  slot->mem = mem;
  return mem;
}

}  // namespace kestrel::cuda
