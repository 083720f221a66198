// Execution plans: the op sequence of one pass, recorded once, prepared once
// per backend and executed many times with new step inputs.
//
// A plan is model-free. It holds nodes (op, parameters, destination and
// source tensor views) over memory in registered roots:
//   activation  the pass's intermediates (an arena sized once);
//   input       per-step inputs the caller writes before each execute
//               (token ids, positions, KV cells, visibility ranges, rows);
//   kv          the KV cache (persists across steps);
//   output      bound anew before each execute (Executable::bind_output):
//               the logits go straight to where the caller wants them.
// Memory outside every root is a weight: read-only, shared, resident where
// the backend reads it.
//
// Recording has the call shape of running eagerly, so a forward pass is
// written once against OpSink and either runs (OpRunner) or records (Plan):
//
//   Plan plan;
//   plan.add_root(SlotRole::activation, arena, arena_bytes, "activations");
//   plan.add_root(SlotRole::input, inputs, input_bytes, "step inputs");
//   const int out = plan.add_root(SlotRole::output, logits_base, logits_bytes, "logits");
//   KESTREL_TRY(plan.run(OpId::rms_norm, &h, {&x, &w}, &norm));      // recorded
//   KESTREL_TRY_ASSIGN(auto exe, cpu->prepare(plan, ref));
//   ... write this step's inputs ...
//   KESTREL_TRY(exe->bind_output(out, logits));
//   KESTREL_TRY(exe->execute());
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

#include "ops/op_table.h"
#include "platform/status.h"

namespace kestrel {

// Where ops are sent: run now (OpRunner) or record (Plan).
class OpSink {
 public:
  virtual ~OpSink() = default;
  virtual Status run(OpId op, Tensor* dst, std::initializer_list<const Tensor*> src,
                     const void* params = nullptr) = 0;
};

enum class SlotRole : uint8_t { weight, activation, kv, input, output };
const char* slot_role_name(SlotRole role);

struct PlanRoot {
  SlotRole role = SlotRole::activation;
  char* base = nullptr;
  size_t bytes = 0;
  const char* name = "";
};

// One recorded op: the tensors are held by value, so a node outlives the
// views it was recorded from; call() rebuilds the OpCall over them.
struct PlanNode {
  OpId op{};
  int32_t n_src = 0;
  bool has_params = false;
  Tensor dst;
  Tensor src[kMaxSrc];
  alignas(8) unsigned char params[kMaxParamsSize] = {};

  // The call over this node's own tensors (valid while the node lives and does not move).
  OpCall call();
};

class Plan final : public OpSink {
 public:
  // Registers [base, base + bytes) as a root; returns its index (-1 when out of
  // memory: reserve() first). Roots must not overlap.
  int add_root(SlotRole role, void* base, size_t bytes, const char* name);
  // Records the op (checked when a backend prepares the plan).
  Status run(OpId op, Tensor* dst, std::initializer_list<const Tensor*> src, const void* params = nullptr) override;
  void clear();
  Status reserve(size_t n_nodes);

  const std::vector<PlanNode>& nodes() const { return nodes_; }
  const std::vector<PlanRoot>& roots() const { return roots_; }
  // The root holding p, or -1 (weights and other external memory).
  int root_of(const void* p) const;
  // A role for any tensor of the plan (external memory reads as weight).
  SlotRole role_of(const Tensor& t) const;

 private:
  std::vector<PlanRoot> roots_;
  std::vector<PlanNode> nodes_;
};

// A plan prepared for one backend (plus its host fallback): validated once,
// bound to its buffers, ready to run a step at a time.
class Executable {
 public:
  virtual ~Executable() = default;
  // Where output root `root` lives for the following execute() calls: host
  // memory of at least the root's size.
  virtual Status bind_output(int root, void* host) = 0;
  // Runs every node in order, reading the inputs written to the input roots.
  virtual Status execute() = 0;
  // Name of the backend that runs node i (tests, logs).
  virtual const char* node_backend(size_t i) const = 0;
  virtual size_t n_nodes() const = 0;
  // Nodes that launch work of their own: n_nodes() less those a device plan
  // runs inside another node's launch (fused; tests, logs).
  virtual size_t n_launches() const { return n_nodes(); }
  // True once execute() replays a captured device graph instead of launching
  // node by node (tests, logs).
  virtual bool replays_graph() const { return false; }
  // Runs one step node by node, timing each (device events on a GPU):
  // us[i] = microseconds of node i. For benchmarks; unsupported by default.
  virtual Status time_nodes(std::vector<double>& us) {
    (void)us;
    return Status::unsupported("this executable does not time its nodes");
  }
};

class Backend;
// The eager executable: validates each node at prepare, picks the first
// backend of `chain` that implements it (all of them host backends), then
// each execute() is one run_validated() per node: no checks, no allocation.
Expected<std::unique_ptr<Executable>> prepare_eager(const Plan& plan, std::initializer_list<Backend*> chain);

}  // namespace kestrel
