// What the C API's opaque handles hold, and the boundary helpers every
// kestrel_* function uses: error recording and exception catching.
//
// Every handle starts with HandleBase (a magic number tells the kind and
// catches most wrong-type or freed pointers passed to kestrel_last_error).
// Errors of a call on a context or sampler live in that handle (one thread
// uses it at a time); errors of a call on a model, which threads share, live
// in a thread_local record keyed by the model; handle-less calls (load,
// create, convert) use the thread's own record.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "kestrel/kestrel.h"
#include "platform/status.h"
#include "runtime/engine/context.h"
#include "runtime/model/model.h"
#include "runtime/sampling/sampler.h"

namespace kestrel::capi {

enum : uint32_t {
  kMagicModel = 0x4b4d444cu,    // "KMDL"
  kMagicContext = 0x4b435458u,  // "KCTX"
  kMagicSampler = 0x4b534d50u,  // "KSMP"
  kMagicFreed = 0xdeadbeefu,
};

struct HandleBase {
  explicit HandleBase(uint32_t m) : magic(m) {}
  uint32_t magic;
  std::string last_error;  // contexts and samplers only
};

}  // namespace kestrel::capi

struct kestrel_model : kestrel::capi::HandleBase {
  kestrel_model() : HandleBase(kestrel::capi::kMagicModel) {}
  std::unique_ptr<kestrel::Model> model;
  double t_load_ms = 0.0;
};

struct kestrel_context : kestrel::capi::HandleBase {
  kestrel_context() : HandleBase(kestrel::capi::kMagicContext) {}
  kestrel_model* owner = nullptr;
  std::unique_ptr<kestrel::Context> ctx;
  uint32_t seed = 0x5eed;
  kestrel_timings timings{};
  std::vector<int32_t> scratch_tokens, scratch_pos;  // generate(): prompt batch
  kestrel_log_fn log_fn = nullptr;  // the caller's log callback (the context's sink calls it)
  void* log_user = nullptr;
};

struct kestrel_sampler : kestrel::capi::HandleBase {
  kestrel_sampler() : HandleBase(kestrel::capi::kMagicSampler) {}
  kestrel::Sampler sampler;
};

namespace kestrel::capi {

kestrel_status to_c(StatusCode code);

// Record a failure and return its code. The model variant stores it for the
// calling thread only.
kestrel_status fail_global(const Status& s);
kestrel_status fail_model(const kestrel_model* m, const Status& s);
kestrel_status fail_handle(HandleBase* h, const Status& s);
void clear_model_error(const kestrel_model* m);

// kestrel_exp_tier fields -> ExpTier (c_api_exp.cpp); invalid_argument naming
// the field for a value outside the enum.
Status exp_tier_from_c(int32_t value, const char* field, ExpTier* out);
Status exp_tiers_from_c(const kestrel_context_params& p, OpExpTiers* out);
// kestrel_sampler_params as SamplerParams (the exp tier is checked later by
// normalize_sampler_params). Shared by the sampler, generate and server calls.
inline SamplerParams sampler_from_c(const kestrel_sampler_params& p) {
  SamplerParams s;
  s.temperature = p.temperature;
  s.top_k = p.top_k;
  s.top_p = p.top_p;
  s.min_p = p.min_p;
  s.repeat_penalty = p.repeat_penalty;
  s.repeat_last_n = p.repeat_last_n;
  s.seed = p.seed;
  s.exp = static_cast<ExpTier>(p.exp_softmax);
  return s;
}

// A valid handle of the kind (non-NULL, right magic).
inline bool live(const kestrel_model* m) { return m && m->magic == kMagicModel && m->model; }
inline bool live(const kestrel_context* c) { return c && c->magic == kMagicContext && c->ctx; }
inline bool live(const kestrel_sampler* s) { return s && s->magic == kMagicSampler; }

// Runs fn (returning Status) and converts every escaping exception into a
// status: std::bad_alloc -> out_of_memory, anything else -> internal.
template <typename Fn>
Status guarded(Fn&& fn) noexcept {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("out of memory");
  } catch (const std::exception& e) {
    try {
      return Status::internal("unexpected exception: %s", e.what());
    } catch (...) {
      return Status(StatusCode::internal, std::string());
    }
  } catch (...) {
    return Status(StatusCode::internal, std::string());
  }
}

// snprintf-style copy: NUL-terminated, truncated; returns text.size().
int32_t copy_out(const std::string& text, char* buf, size_t buf_size);

}  // namespace kestrel::capi
