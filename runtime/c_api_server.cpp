// The C API of the request scheduler (kestrel/server.h) over
// runtime/serve/scheduler.h: parameter conversion, and events translated into
// C structs on the inference thread.
#include "kestrel/server.h"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "runtime/c_api_internal.h"
#include "runtime/serve/scheduler.h"

using namespace kestrel;
using namespace kestrel::capi;

namespace {
constexpr uint32_t kMagicScheduler = 0x4b534348u;  // "KSCH"

// What one request's trampoline needs: the caller's callback, and scratch for
// the C view of the event's log-probabilities (the inference thread alone uses it).
struct RequestTrampoline {
  kestrel_request_fn fn;
  void* user;
  std::vector<kestrel_token_logprob> lp;
  std::vector<kestrel_token> top_tokens;
  std::vector<float> top_logprobs;
};

bool on_event(const serve::Event& e, void* user) {
  auto* t = static_cast<RequestTrampoline*>(user);
  kestrel_request_event c{};
  c.id = e.id;
  c.text = e.text.data() ? e.text.data() : "";
  c.text_len = e.text.size();
  size_t n_top = 0;
  for (const serve::TokenLogprob& l : e.logprobs) n_top += l.top.size();
  int keep_going = 1;
  try {
    t->lp.resize(e.logprobs.size());
    t->top_tokens.resize(n_top);
    t->top_logprobs.resize(n_top);
  } catch (const std::bad_alloc&) {
    t->lp.clear();
    keep_going = 0;  // cannot describe the tokens: stop the request
  }
  if (keep_going) {
    size_t at = 0;
    for (size_t i = 0; i < e.logprobs.size(); ++i) {
      const serve::TokenLogprob& l = e.logprobs[i];
      kestrel_token_logprob& o = t->lp[i];
      o.token = l.token;
      o.logprob = l.logprob;
      o.n_top = static_cast<int32_t>(l.top.size());
      o.top_tokens = t->top_tokens.data() + at;
      o.top_logprobs = t->top_logprobs.data() + at;
      for (const serve::TopLogprob& tl : l.top) {
        t->top_tokens[at] = tl.token;
        t->top_logprobs[at] = tl.logprob;
        ++at;
      }
    }
    c.logprobs = t->lp.data();
    c.n_logprobs = static_cast<int32_t>(t->lp.size());
  }
  c.done = e.done ? 1 : 0;
  c.finish_reason = static_cast<int32_t>(e.finish);
  c.status = e.status.ok() ? KESTREL_OK : to_c(e.status.code());
  c.message = e.status.message().c_str();
  c.usage.n_prompt = e.usage.n_prompt;
  c.usage.n_cached = e.usage.n_cached;
  c.usage.n_generated = e.usage.n_generated;
  c.usage.t_queue_ms = static_cast<double>(e.usage.t_queue_ns) * 1e-6;
  c.usage.t_prompt_ms = static_cast<double>(e.usage.t_prompt_ns) * 1e-6;
  c.usage.t_generate_ms = static_cast<double>(e.usage.t_generate_ns) * 1e-6;
  c.slot = e.slot;
  const int r = t->fn(&c, t->user);
  if (e.done) delete t;
  return r != 0 && keep_going;
}

}  // namespace

struct kestrel_scheduler : kestrel::capi::HandleBase {
  kestrel_scheduler() : HandleBase(kMagicScheduler) {}
  kestrel_context* owner = nullptr;
  std::unique_ptr<serve::Scheduler> sched;
};

namespace {
bool live(const kestrel_scheduler* s) { return s && s->magic == kMagicScheduler && s->sched; }
}  // namespace

static_assert(static_cast<int>(serve::FinishReason::none) == KESTREL_FINISH_NONE);
static_assert(static_cast<int>(serve::FinishReason::stop) == KESTREL_FINISH_STOP);
static_assert(static_cast<int>(serve::FinishReason::length) == KESTREL_FINISH_LENGTH);
static_assert(static_cast<int>(serve::FinishReason::cancelled) == KESTREL_FINISH_CANCELLED);
static_assert(static_cast<int>(serve::FinishReason::error) == KESTREL_FINISH_ERROR);

extern "C" {

kestrel_scheduler_params kestrel_scheduler_default_params(void) {
  const serve::SchedulerParams d;
  kestrel_scheduler_params p;
  p.n_batch = d.n_batch;
  p.n_chunk = d.n_chunk;
  p.max_queue = d.max_queue;
  p.draft = nullptr;
  p.draft_max = d.spec.draft_max;
  p.draft_p_min = d.spec.p_min;
  p.draft_vocab = d.spec.draft_vocab;
  return p;
}

kestrel_request_params kestrel_request_default_params(void) {
  kestrel_request_params p;
  std::memset(&p, 0, sizeof p);
  p.max_tokens = -1;
  p.sampling = kestrel_sampler_default_params();
  p.n_top_logprobs = -1;
  return p;
}

kestrel_status kestrel_scheduler_create(kestrel_context* ctx, const kestrel_scheduler_params* params,
                                        kestrel_scheduler** out_scheduler) {
  if (out_scheduler) *out_scheduler = nullptr;
  const Status s = guarded([&]() -> Status {
    if (!live(ctx)) return Status::invalid_argument("kestrel_scheduler_create: context is NULL or not live");
    if (!out_scheduler) return Status::invalid_argument("kestrel_scheduler_create: out_scheduler must not be NULL");
    const kestrel_scheduler_params p = params ? *params : kestrel_scheduler_default_params();
    serve::SchedulerParams sp;
    sp.n_batch = p.n_batch;
    sp.n_chunk = p.n_chunk;
    sp.max_queue = p.max_queue;
    if (p.draft) {
      if (!live(p.draft)) return Status::invalid_argument("kestrel_scheduler_create: draft context is not live");
      if (p.draft == ctx) return Status::invalid_argument("kestrel_scheduler_create: the draft context is the target's");
      sp.draft = p.draft->ctx.get();
    }
    sp.spec.draft_max = p.draft_max;
    sp.spec.p_min = p.draft_p_min;
    sp.spec.draft_vocab = p.draft_vocab;
    std::unique_ptr<kestrel_scheduler> h(new (std::nothrow) kestrel_scheduler());
    if (!h) return Status::out_of_memory("scheduler handle");
    KESTREL_TRY_ASSIGN(h->sched, serve::Scheduler::create(*ctx->ctx, sp));
    h->owner = ctx;
    *out_scheduler = h.release();
    return {};
  });
  return s.ok() ? KESTREL_OK : fail_global(s);
}

void kestrel_scheduler_free(kestrel_scheduler* scheduler) {
  if (!scheduler || scheduler->magic != kMagicScheduler) return;
  scheduler->magic = kMagicFreed;
  delete scheduler;
}

kestrel_status kestrel_scheduler_submit(kestrel_scheduler* scheduler, const kestrel_request_params* params,
                                        uint64_t* out_id) {
  if (out_id) *out_id = 0;
  const Status s = guarded([&]() -> Status {
    if (!live(scheduler)) return Status::invalid_argument("kestrel_scheduler_submit: scheduler is NULL or not live");
    if (!params) return Status::invalid_argument("kestrel_scheduler_submit: params is NULL");
    if (!params->on_event) return Status::invalid_argument("kestrel_scheduler_submit: on_event is NULL");
    if (params->n_prompt < 1 || !params->prompt)
      return Status::invalid_argument("kestrel_scheduler_submit: empty prompt (n_prompt %d)", params->n_prompt);
    if (params->n_stop < 0 || (params->n_stop > 0 && !params->stop))
      return Status::invalid_argument("kestrel_scheduler_submit: n_stop %d without stop strings", params->n_stop);
    serve::Request r;
    r.prompt.assign(params->prompt, params->prompt + params->n_prompt);
    r.max_tokens = params->max_tokens;
    r.sampling = sampler_from_c(params->sampling);
    for (int32_t i = 0; i < params->n_stop; ++i) {
      if (!params->stop[i]) return Status::invalid_argument("kestrel_scheduler_submit: stop[%d] is NULL", i);
      r.stop.emplace_back(params->stop[i]);
    }
    r.ignore_eos = params->ignore_eos != 0;
    r.n_top_logprobs = params->n_top_logprobs;
    std::unique_ptr<RequestTrampoline> t(new RequestTrampoline{params->on_event, params->user_data, {}, {}, {}});
    r.on_event = on_event;
    r.user = t.get();
    auto id = scheduler->sched->submit(std::move(r));
    if (!id.ok()) return std::move(id).take_status();  // the callback is never called: t goes
    t.release();  // deleted by on_event with the request's last event
    if (out_id) *out_id = *id;
    return {};
  });
  return s.ok() ? KESTREL_OK : fail_global(s);
}

void kestrel_scheduler_cancel(kestrel_scheduler* scheduler, uint64_t id) {
  if (!live(scheduler)) return;
  (void)guarded([&]() -> Status {
    scheduler->sched->cancel(id);
    return {};
  });
}

void kestrel_scheduler_get_stats(const kestrel_scheduler* scheduler, kestrel_scheduler_stats* out) {
  if (!out) return;
  std::memset(out, 0, sizeof *out);
  if (!live(scheduler)) return;
  const serve::SchedulerStats s = scheduler->sched->stats();
  out->n_requests = s.n_requests;
  out->n_requests_done = s.n_requests_done;
  out->n_requests_cancelled = s.n_requests_cancelled;
  out->n_prompt_tokens = s.n_prompt_tokens;
  out->n_cached_tokens = s.n_cached_tokens;
  out->n_generated_tokens = s.n_generated_tokens;
  out->n_steps = s.n_steps;
  out->t_prompt_ms = static_cast<double>(s.t_prompt_ns) * 1e-6;
  out->t_generate_ms = static_cast<double>(s.t_generate_ns) * 1e-6;
  out->n_spec_requests = s.n_spec_requests;
  out->n_spec_rounds = s.n_spec_rounds;
  out->n_spec_drafted = s.n_spec_drafted;
  out->n_spec_accepted = s.n_spec_accepted;
  out->n_spec_plain_steps = s.n_spec_plain_steps;
  static_assert(sizeof out->spec_rounds_by_g == sizeof s.spec_rounds_by_g);
  std::memcpy(out->spec_rounds_by_g, s.spec_rounds_by_g, sizeof out->spec_rounds_by_g);
  out->n_queued = s.n_queued;
  out->n_slots_busy = s.n_slots_busy;
  out->n_slots = s.n_slots;
}

int32_t kestrel_scheduler_n_slots(const kestrel_scheduler* scheduler) {
  return live(scheduler) ? scheduler->sched->n_slots() : -1;
}

int32_t kestrel_scheduler_n_ctx(const kestrel_scheduler* scheduler) {
  return live(scheduler) ? static_cast<int32_t>(scheduler->sched->n_ctx()) : -1;
}

const char* kestrel_finish_reason_name(int32_t reason) {
  switch (reason) {
    case KESTREL_FINISH_STOP: return "stop";
    case KESTREL_FINISH_LENGTH: return "length";
    case KESTREL_FINISH_CANCELLED: return "cancelled";
    case KESTREL_FINISH_ERROR: return "error";
    default: return "none";
  }
}

}  // extern "C"
