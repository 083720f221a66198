// The ks_matmul tile tuner (cuda_ks.h): the first call for a shape on a device times
// every candidate configuration on the call's own tensors and remembers the fastest.
//
// The cache is one table for the process, in memory only (so one build: nothing is read
// back from an earlier run), keyed by the physical device (PCI domain, bus and device
// ids) and the shape (pattern, tokens, layout, weight type, alignment): the
// fastest tile is a property of the GPU, the build and the shape, not of a backend
// instance, and sharing it spares each new context the tuning pauses. A failed insertion
// (out of memory) only means the shape is tuned again next time.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <new>
#include <tuple>

#include "ops/cuda/cuda_ks.h"

namespace kestrel::cuda {

namespace {

// Timed launches per candidate after one untimed warm-up; the minimum is kept.
constexpr int kTuneReps = 3;

using Key = std::tuple<int, int, int, int32_t, int32_t, int32_t, int32_t, int64_t, bool, int, int>;

struct Cache {
  std::mutex mu;
  std::map<Key, int> best;
};

Cache& cache() {
  static Cache c;
  return c;
}

int align_class(const KsArgs& k) {
  auto al = [](const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; };
  return (al(k.w, 16) ? 1 : 0) | (al(k.x, 16) && k.x_ld % 4 == 0 ? 2 : 0) | (al(k.y, 16) && k.y_ld % 4 == 0 ? 4 : 0);
}

cudaError_t device_key(int* domain, int* bus, int* dev) {
  int ordinal = 0;
  cudaError_t e = cudaGetDevice(&ordinal);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(domain, cudaDevAttrPciDomainId, ordinal);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(bus, cudaDevAttrPciBusId, ordinal);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(dev, cudaDevAttrPciDeviceId, ordinal);
  return e;
}

// Times every candidate; *best = the fastest (the heuristic when none is a candidate).
cudaError_t tune(const KsArgs& k, cudaStream_t s, int* best) {
  *best = ks_heuristic_config(k);
  cudaEvent_t ev[2] = {nullptr, nullptr};
  cudaError_t e = cudaEventCreate(&ev[0]);
  if (e == cudaSuccess) e = cudaEventCreate(&ev[1]);
  float best_ms = 0.0f;
  bool have = false;
  for (int cfg = 0; cfg < ks_config_count() && e == cudaSuccess; ++cfg) {
    if (!ks_config_candidate(cfg, k)) continue;
    e = launch_ks_matmul(k, cfg, s);
    if (e == cudaSuccess) e = cudaEventRecord(ev[0], s);
    for (int r = 0; r < kTuneReps && e == cudaSuccess; ++r) e = launch_ks_matmul(k, cfg, s);
    if (e == cudaSuccess) e = cudaEventRecord(ev[1], s);
    if (e == cudaSuccess) e = cudaEventSynchronize(ev[1]);
    float ms = 0.0f;
    if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, ev[0], ev[1]);
    if (e == cudaSuccess && (!have || ms < best_ms)) {
      best_ms = ms;
      *best = cfg;
      have = true;
    }
  }
  for (cudaEvent_t x : ev)
    if (x) (void)cudaEventDestroy(x);
  return e;
}

}  // namespace

cudaError_t ks_pick_config(const KsArgs& k, cudaStream_t s, int* config) {
  *config = ks_heuristic_config(k);
  int domain = 0, bus = 0, dev = 0;
  cudaError_t e = device_key(&domain, &bus, &dev);
  if (e != cudaSuccess) return e;
  const Key key{domain, bus, dev, k.a, k.b, k.c, k.d, k.M, k.batch_last, static_cast<int>(k.wt), align_class(k)};
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.best.find(key);
    if (it != c.best.end()) {
      *config = it->second;
      return cudaSuccess;
    }
  }
  // A graph being captured cannot be synchronized or timed: the heuristic, not cached.
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  e = cudaStreamIsCapturing(s, &cap);
  if (e != cudaSuccess) return e;
  if (cap != cudaStreamCaptureStatusNone) return cudaSuccess;
  int best = *config;
  e = tune(k, s, &best);
  if (e != cudaSuccess) return e;
  *config = best;
  std::lock_guard<std::mutex> lock(c.mu);
  try {
    c.best.emplace(key, best);
  } catch (const std::bad_alloc&) {
    // Not cached: the next call tunes again.
  }
  return cudaSuccess;
}

}  // namespace kestrel::cuda
