#include "ops/plan.h"

#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "ops/backend.h"

namespace kestrel {

const char* slot_role_name(SlotRole role) {
  switch (role) {
    case SlotRole::weight: return "weight";
    case SlotRole::activation: return "activation";
    case SlotRole::kv: return "kv";
    case SlotRole::input: return "input";
    case SlotRole::output: return "output";
  }
  return "unknown";
}

OpCall PlanNode::call() {
  OpCall c;
  c.op = op;
  c.dst = &dst;
  c.n_src = n_src;
  for (int i = 0; i < n_src; ++i) c.src[i] = &src[i];
  c.params = has_params ? params : nullptr;
  return c;
}

int Plan::add_root(SlotRole role, void* base, size_t bytes, const char* name) {
  PlanRoot r;
  r.role = role;
  r.base = static_cast<char*>(base);
  r.bytes = bytes;
  r.name = name;
  try {
    roots_.push_back(r);
  } catch (const std::bad_alloc&) {
    return -1;
  }
  return static_cast<int>(roots_.size()) - 1;
}

void Plan::clear() {
  roots_.clear();
  nodes_.clear();
}

Status Plan::reserve(size_t n_nodes) {
  try {
    nodes_.reserve(n_nodes);
    roots_.reserve(8);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("plan of %zu nodes", n_nodes);
  }
  return {};
}

Status Plan::run(OpId op, Tensor* dst, std::initializer_list<const Tensor*> src, const void* params) {
  const int i = static_cast<int>(op);
  if (i < 0 || i >= kOpCount) return Status::invalid_argument("plan: unknown op %d", i);
  if (!dst) return Status::invalid_argument("plan: %s has no destination", op_name(op));
  if (src.size() > static_cast<size_t>(kMaxSrc)) return Status::internal("plan: %s: too many sources", op_name(op));
  try {
    nodes_.emplace_back();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("plan node");
  }
  PlanNode& n = nodes_.back();
  n.op = op;
  n.dst = *dst;
  for (const Tensor* t : src) {
    if (!t) {
      nodes_.pop_back();
      return Status::invalid_argument("plan: %s: source %d is null", op_name(op), n.n_src);
    }
    n.src[n.n_src++] = *t;
  }
  const size_t ps = op_params_size(op);
  if (params && ps > 0) {
    std::memcpy(n.params, params, ps);
    n.has_params = true;
  }
  return {};
}

int Plan::root_of(const void* p) const {
  const char* c = static_cast<const char*>(p);
  for (size_t i = 0; i < roots_.size(); ++i) {
    const PlanRoot& r = roots_[i];
    if (c >= r.base && c < r.base + r.bytes) return static_cast<int>(i);
  }
  return -1;
}

SlotRole Plan::role_of(const Tensor& t) const {
  const int r = root_of(t.data);
  return r < 0 ? SlotRole::weight : roots_[static_cast<size_t>(r)].role;
}

namespace {

class EagerExecutable final : public Executable {
 public:
  Status prepare(const Plan& plan, std::initializer_list<Backend*> chain) {
    try {
      nodes_ = plan.nodes();
      roots_ = plan.roots();
      calls_.resize(nodes_.size());
      backends_.resize(nodes_.size());
    } catch (const std::bad_alloc&) {
      return Status::out_of_memory("executable of %zu nodes", plan.nodes().size());
    }
    for (size_t i = 0; i < nodes_.size(); ++i) {
      calls_[i] = nodes_[i].call();
      Status v = validate_op(calls_[i]);
      if (!v.ok()) return std::move(v.with_context("plan node " + std::to_string(i) + ": "));
      for (Backend* b : chain) {
        if (b && b->implements(calls_[i])) {
          backends_[i] = b;
          break;
        }
      }
      if (!backends_[i]) return Status::unsupported("plan node %zu: no backend runs %s", i, op_name(nodes_[i].op));
      // Tensors in an output root are rebased by bind_output().
      auto note = [&](Tensor& t) -> Status {
        const int r = plan.root_of(t.data);
        if (r < 0 || roots_[static_cast<size_t>(r)].role != SlotRole::output) return {};
        try {
          patches_.push_back({&t, r, static_cast<size_t>(static_cast<char*>(t.data) - roots_[static_cast<size_t>(r)].base)});
        } catch (const std::bad_alloc&) {
          return Status::out_of_memory("executable patches");
        }
        return {};
      };
      KESTREL_TRY(note(nodes_[i].dst));
      for (int s = 0; s < nodes_[i].n_src; ++s) KESTREL_TRY(note(nodes_[i].src[s]));
    }
    return {};
  }

  Status bind_output(int root, void* host) override {
    if (root < 0 || static_cast<size_t>(root) >= roots_.size() || roots_[static_cast<size_t>(root)].role != SlotRole::output)
      return Status::invalid_argument("bind_output: root %d is not an output", root);
    if (!host) return Status::invalid_argument("bind_output: null memory");
    for (const Patch& p : patches_)
      if (p.root == root) p.t->data = static_cast<char*>(host) + p.offset;
    bound_ = true;
    return {};
  }

  Status execute() override {
    if (!patches_.empty() && !bound_) return Status::invalid_argument("execute: output not bound");
    for (size_t i = 0; i < calls_.size(); ++i) {
      const Status s = backends_[i]->run_validated(calls_[i]);
      if (!s.ok()) return s;
    }
    return {};
  }

  const char* node_backend(size_t i) const override { return i < backends_.size() ? backends_[i]->name() : ""; }
  size_t n_nodes() const override { return nodes_.size(); }

 private:
  struct Patch {
    Tensor* t;
    int root;
    size_t offset;
  };
  std::vector<PlanNode> nodes_;
  std::vector<PlanRoot> roots_;
  std::vector<OpCall> calls_;
  std::vector<Backend*> backends_;
  std::vector<Patch> patches_;
  bool bound_ = false;
};

}  // namespace

Expected<std::unique_ptr<Executable>> prepare_eager(const Plan& plan, std::initializer_list<Backend*> chain) {
  for (Backend* b : chain)
    if (b && !b->is_host()) return Status::invalid_argument("prepare_eager: %s is not a host backend", b->name());
  std::unique_ptr<EagerExecutable> e(new (std::nothrow) EagerExecutable());
  if (!e) return Status::out_of_memory("executable");
  KESTREL_TRY(e->prepare(plan, chain));
  return std::unique_ptr<Executable>(std::move(e));
}

Expected<std::unique_ptr<Executable>> Backend::prepare(const Plan& plan, Backend* fallback) {
  if (!is_host()) return Status::unsupported("%s: no plan support", name());
  return prepare_eager(plan, {this, fallback});
}

}  // namespace kestrel
