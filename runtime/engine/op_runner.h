// OpRunner: sends each op to the first backend that supports it (the cpu
// backend, then the ref backend as the fallback that supports everything).
// The model code never knows which one ran. The scheduler of a later issue
// replaces the fixed order with measured choices.
#pragma once

#include <initializer_list>
#include <memory>
#include <vector>

#include "ops/backend.h"
#include "ops/plan.h"

namespace kestrel {

class OpRunner final : public OpSink {
 public:
  // Backends in order of preference; the runner does not own them.
  void set_backends(std::vector<Backend*> backends) { backends_ = std::move(backends); }
  void set_n_threads(int n);

  Status run(OpId op, Tensor* dst, std::initializer_list<const Tensor*> src, const void* params = nullptr) override;

 private:
  std::vector<Backend*> backends_;
  int n_threads_ = 0;
};

}  // namespace kestrel
