// The prepared plans of one context, by shape and variant: a micro-batch of
// n tokens with n_out logits rows under a PassVariant. A plan is recorded and
// prepared the first time its key is seen and reused after that; the least
// recently used one goes when the cache is full. A hit allocates nothing.
//
// Shapes are buckets (token_bucket): a micro-batch of n tokens runs the plan
// of token_bucket(n) rows, the rows past n padded (they write no KV cell and
// see none), so a server's varied prompt chunks share a few dozen plans and a
// device graph of a bucket can be replayed. The KV span is no part of the
// key: attention reads each token's cell range as a step input over the
// whole cache, so a plan survives the cache filling up.
//
//   KESTREL_TRY_ASSIGN(PlanCache::Entry* e, cache.get(n, n_out, variant, build));
//   KESTREL_TRY(e->exe->bind_output(e->output_root, logits));
//   KESTREL_TRY(e->exe->execute());
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "ops/plan.h"
#include "platform/function_ref.h"
#include "runtime/engine/forward.h"

namespace kestrel {

// Rows of the plan that runs n tokens (1 <= n <= cap): n itself up to 15
// (decode, speculative verify and small server batches run exact), above
// that n rounded up to an eighth of its power of two (16, 18, ..., 30, 32,
// 36, ..., 60, 64, 72, ...: at most 1/8 of the rows are padding), never
// above cap (the micro-batch size, which is its own bucket).
int64_t token_bucket(int64_t n, int64_t cap);

class PlanCache {
 public:
  struct Entry {
    int64_t n = 0, n_out = 0;
    PassVariant variant;
    std::unique_ptr<Executable> exe;
    int output_root = -1;
    // A model split between host and GPU (PassPart): exe runs the back part;
    // front and head run on the host before and after it.
    std::unique_ptr<Executable> front, head;
    int head_output_root = -1;
    uint64_t last_use = 0;
  };
  // Builds the executable of a key: records into the plan, prepares it, sets
  // exe and output_root.
  using BuildFn = FunctionRef<Status(Plan& plan, Entry& entry)>;

  explicit PlanCache(size_t capacity = 32) : capacity_(capacity) {}
  Expected<Entry*> get(int64_t n, int64_t n_out, const PassVariant& variant, BuildFn build);
  void clear() { entries_.clear(); }
  // Drops the plans of variants that keep step memory at the logits buffer's
  // address (PassVariant::ids_out), when that buffer moves.
  void drop_ids_plans() {
    std::erase_if(entries_, [](const std::unique_ptr<Entry>& e) { return e->variant.ids_out; });
  }
  // The entry of a key if it was built, else nullptr (benchmarks, tests).
  Entry* find(int64_t n, int64_t n_out, const PassVariant& variant) const {
    for (const auto& e : entries_)
      if (e->n == n && e->n_out == n_out && e->variant == variant) return e.get();
    return nullptr;
  }
  size_t size() const { return entries_.size(); }
  // Plans built since creation (misses), for tests and logs.
  uint64_t n_built() const { return n_built_; }
  // Plans whose executable replays a captured device graph (tests, logs).
  size_t n_replaying() const {
    size_t n = 0;
    for (const auto& e : entries_) n += e->exe && e->exe->replays_graph() ? 1 : 0;
    return n;
  }

 private:
  size_t capacity_;
  std::vector<std::unique_ptr<Entry>> entries_;
  Plan scratch_;  // recording space, reused
  uint64_t tick_ = 0, n_built_ = 0;
};

}  // namespace kestrel
