#include "runtime/engine/plan_cache.h"

#include <algorithm>
#include <new>

namespace kestrel {

int64_t token_bucket(int64_t n, int64_t cap) {
  if (n < 16) return n;
  int64_t p2 = 16;
  while (p2 * 2 <= n) p2 *= 2;
  const int64_t g = p2 / 8;
  return std::min((n + g - 1) / g * g, std::max(cap, n));
}

Expected<PlanCache::Entry*> PlanCache::get(int64_t n, int64_t n_out, const PassVariant& variant, BuildFn build) {
  ++tick_;
  for (auto& e : entries_) {
    if (e->n == n && e->n_out == n_out && e->variant == variant) {
      e->last_use = tick_;
      return e.get();
    }
  }
  std::unique_ptr<Entry> e(new (std::nothrow) Entry());
  if (!e) return Status::out_of_memory("plan cache entry");
  e->n = n;
  e->n_out = n_out;
  try {
    e->variant = variant;
    if (entries_.size() >= capacity_) {
      size_t oldest = 0;
      for (size_t i = 1; i < entries_.size(); ++i)
        if (entries_[i]->last_use < entries_[oldest]->last_use) oldest = i;
      entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(oldest));
    }
    entries_.reserve(entries_.size() + 1);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("plan cache");
  }
  KESTREL_TRY(build(scratch_, *e));
  scratch_.clear();
  e->last_use = tick_;
  ++n_built_;
  entries_.push_back(std::move(e));
  return entries_.back().get();
}

}  // namespace kestrel
