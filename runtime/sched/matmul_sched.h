// The dynamic matmul scheduler of a cpu context: a MatmulRouter (ops/cpu/matmul_variants.h)
// that sends each weight-bearing matmul call to the candidate its shape's cost curves
// (cost_table.h) say wins at the call's number of activation rows M, with hysteresis
// (route.h). Calls of a shape it has no curves for run the default policy.
//
// State is per shape: every layer's projection of a shape sees the same M in a step, so
// the first call of a step decides and the others follow. Each change of choice is logged
// at info level (kestrel -v).
//
//   MatmulScheduler sched(std::move(cal.tables), 0.10, isa, n_threads, log);
//   cpu_set_matmul_router(*cpu, &sched);    // until the backend goes, or set back to nullptr
#pragma once

#include <cstdint>
#include <vector>

#include "ops/cpu/matmul_variants.h"
#include "platform/log.h"
#include "runtime/sched/cost_table.h"

namespace kestrel {

class MatmulScheduler final : public MatmulRouter {
 public:
  // margin: a candidate replaces the current one, or the fixed thresholds' choice (the
  // policy's variant of ISA `isa` on n_threads threads), only when it is cheaper at M by
  // more than this fraction of its time. log must outlive the scheduler.
  MatmulScheduler(std::vector<ShapeCosts> tables, double margin, CpuIsa isa, int n_threads, const Logger& log);

  MatmulRoute route(const OpCall& matmul) override;
  // The threads the fixed thresholds run on from now on (a context's n_threads for single
  // tokens, n_threads_batch for batches).
  void set_static_threads(int n_threads) { n_threads_ = n_threads; }

  // Changes of choice so far (tests, logs).
  int64_t n_switches() const { return n_switches_; }
  // The candidate index shape i runs now (-1 before its first call).
  int current(size_t i) const { return ops_[i].current; }
  size_t n_shapes() const { return ops_.size(); }
  const ShapeCosts& costs(size_t i) const { return ops_[i].costs; }

 private:
  struct Op {
    ShapeCosts costs;
    int current = -1;
    int64_t last_m = 0;
  };
  std::vector<Op> ops_;
  double margin_;
  CpuIsa isa_;
  int n_threads_;
  const Logger& log_;
  int64_t n_switches_ = 0;
};

}  // namespace kestrel
