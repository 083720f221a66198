// Scheduler: continuous batching of many requests over one Context. Each of
// the context's n_seq_max sequences is a slot with its own n_ctx KV cells; a
// request runs in one slot from its prompt to its last token. One inference
// thread owns the context: every step it packs one token per generating slot
// and bounded chunks of the prompts still being read into one batch, decodes
// it, and samples each slot's next token with that request's own sampler.
//
// With quantized weights a token's logits do not depend on the batch it is
// decoded in (tests/test_batch_consistency.cpp), so a greedy request produces
// the same tokens whatever else is running.
//
// A slot keeps its tokens in the cache after its request ends. A new request
// goes to the idle slot whose cached tokens share the longest prefix with its
// prompt, when that prefix covers at least half of the prompt (else to the
// least recently used idle slot), and only the rest of the prompt is decoded.
//
// With a draft model (SchedulerParams::draft) greedy requests, and sampled
// ones within the exact rule (temperature, top-k, top-p), are decoded
// speculatively (spec_slots.h): the slots' drafts share the step's one target
// batch; greedy tokens stay those of plain decoding.
//
// Events are delivered on the inference thread, so a callback must not block
// (hand the event to another thread) and must not call into the scheduler
// except cancel().
//
//   KESTREL_TRY_ASSIGN(auto sched, Scheduler::create(*ctx, SchedulerParams{}));
//   Request r;
//   r.prompt = ids;
//   r.max_tokens = 64;
//   r.on_event = [](const Event& e, void* user) { ...; return true; };
//   KESTREL_TRY_ASSIGN(uint64_t id, sched->submit(std::move(r)));
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "platform/status.h"
#include "runtime/engine/context.h"
#include "runtime/sampling/sampler.h"
#include "runtime/serve/spec_slots.h"

namespace kestrel::serve {

enum class FinishReason {
  none,       // not finished (text events)
  stop,       // end-of-generation token or a stop string
  length,     // max_tokens reached or the slot's context full
  cancelled,  // cancel(), a callback returning false, or the scheduler shutting down
  error,      // decoding or sampling failed (Event::status says why)
};
const char* finish_reason_name(FinishReason r);  // "stop", "length", ...

struct TopLogprob {
  int32_t token;
  float logprob;
};

// One generated token's log-probability under the model (log-softmax of the
// raw logits, before the sampler's filters) and the most probable alternatives.
struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
  std::vector<TopLogprob> top;  // n_top_logprobs entries, most probable first
};

struct Usage {
  int32_t n_prompt = 0;     // prompt tokens of the request
  int32_t n_cached = 0;     // of those, reused from the slot's cache (not decoded again)
  int32_t n_generated = 0;  // tokens sampled (an end-of-generation token counts)
  int64_t t_queue_ns = 0;   // submit to slot
  int64_t t_prompt_ns = 0;  // slot to first sampled token
  int64_t t_generate_ns = 0;  // first sampled token to the end
};

struct Event {
  uint64_t id = 0;
  // Released text: complete UTF-8 characters that cannot be part of a stop string.
  std::string_view text;
  // With logprobs asked for: the tokens whose text ends inside what has been
  // released up to this event (a token whose text is held back comes later).
  std::span<const TokenLogprob> logprobs;
  bool done = false;  // the request's last event (no more calls for this id)
  FinishReason finish = FinishReason::none;
  Status status;  // error: why
  Usage usage;    // set on the last event
  int32_t slot = -1;
};

// Returns false to cancel the request (its last event still follows).
using EventFn = bool (*)(const Event& event, void* user);

struct Request {
  std::vector<int32_t> prompt;  // token ids, at least one, at most n_ctx
  int32_t max_tokens = -1;      // tokens to sample; < 0: until the context is full; 0: prompt only
  SamplerParams sampling;
  std::vector<std::string> stop;  // stop strings (the text ends before the first match)
  bool ignore_eos = false;        // true: end-of-generation tokens do not end the request
  int32_t n_top_logprobs = -1;    // < 0: no logprobs; 0: the chosen token's; n: and n alternatives
  EventFn on_event = nullptr;
  void* user = nullptr;
};

struct SchedulerParams {
  int32_t n_batch = 0;      // tokens per step, all slots together; 0 = the context's n_batch
  int32_t n_chunk = 0;      // prompt tokens per slot per step; 0 = n_batch
  int32_t max_queue = 64;   // requests waiting for a slot; submit() beyond is too_long
  // Speculative decoding: the draft model's context (one sequence per slot, at
  // least the target's cells per sequence; taken over like the target's), or
  // nullptr (default) for none.
  Context* draft = nullptr;
  SpecSlotParams spec;
};

// Counters since create(); a consistent snapshot under the scheduler's lock.
struct SchedulerStats {
  int64_t n_requests = 0;           // submitted and accepted
  int64_t n_requests_done = 0;
  int64_t n_requests_cancelled = 0;
  int64_t n_prompt_tokens = 0;      // prompt tokens decoded
  int64_t n_cached_tokens = 0;      // prompt tokens reused from slot caches
  int64_t n_generated_tokens = 0;   // tokens sampled
  int64_t n_steps = 0;              // decode calls
  int64_t t_prompt_ns = 0;          // decode time attributed to prompt tokens
  int64_t t_generate_ns = 0;        // decode time attributed to generated tokens
  // Speculative decoding (all slots together; zero without a draft model).
  int64_t n_spec_requests = 0;      // requests decoded speculatively (the others plainly)
  int64_t n_spec_rounds = 0;        // slot rounds that verified drafts
  int64_t n_spec_drafted = 0;       // draft tokens proposed
  int64_t n_spec_accepted = 0;      // of those, accepted
  int64_t n_spec_plain_steps = 0;   // steps of speculated requests that drafted nothing (policy or room)
  int64_t spec_rounds_by_g[SpecPolicy::kMaxDraft + 1] = {};  // rounds by drafts verified (index 0 unused)
  int32_t n_queued = 0;             // waiting now
  int32_t n_slots_busy = 0;         // running now
  int32_t n_slots = 0;
};

class Scheduler {
 public:
  // Takes over ctx (it must outlive the scheduler and nobody else may use it
  // meanwhile) and starts the inference thread. Its cache is cleared.
  static Expected<std::unique_ptr<Scheduler>> create(Context& ctx, const SchedulerParams& params);
  // Cancels every request (each gets its last event) and joins the thread.
  ~Scheduler();

  // Queues a request and returns its id (> 0). Errors: invalid_argument (no
  // callback, empty prompt, ids outside the vocabulary, bad sampling
  // parameters), too_long (prompt longer than a slot's context, or max_queue
  // requests already waiting). On error the callback is never called.
  Expected<uint64_t> submit(Request&& request);
  // Asks the request to stop; its last event (cancelled, or done otherwise if it
  // ended first) follows on the inference thread. Unknown ids are ignored.
  void cancel(uint64_t id);

  SchedulerStats stats() const;
  int32_t n_slots() const { return n_slots_; }
  int64_t n_ctx() const { return n_ctx_; }
  const Context& context() const { return ctx_; }

 private:
  struct Slot;
  struct Queued {
    uint64_t id;
    Request req;
    int64_t t_submit_ns;
  };

  Scheduler(Context& ctx, const SchedulerParams& params);
  void run();
  // Moves cancellations and queued requests into slots; true when there is work.
  bool admit(std::unique_lock<std::mutex>& lock, std::vector<Queued>& dropped);
  void start(Slot& slot, Queued&& q);
  void step();
  void on_logits(Slot& slot, const float* logits);
  // Emits token t (logits: the row it came from) through the per-token path.
  void on_token(Slot& slot, int32_t t, const float* logits);
  // Draft lengths for the generating slots and their drafts; returns the rows they add.
  int64_t draft_step(int64_t budget);
  // Verifies a slot's drafts at output rows [row, row + g] and emits the tokens.
  void spec_round(Slot& slot, int32_t row);
  void release_text(Slot& slot, size_t end, bool final);
  void finish(Slot& slot, FinishReason reason, Status status = {});
  // A text event; false when the callback asked to cancel.
  bool emit_text(Slot& slot, std::string_view text);
  static void finish_unstarted(Queued& q, FinishReason reason, const Status& status);

  Context& ctx_;
  std::unique_ptr<SpecSlots> spec_;  // with a draft model
  int32_t n_slots_ = 0;
  int64_t n_ctx_ = 0;
  int32_t n_batch_ = 0, n_chunk_ = 0, max_queue_ = 0;
  int32_t n_vocab_ = 0;

  mutable std::mutex mu_;  // guards everything below up to the thread
  std::condition_variable cv_;
  std::deque<Queued> queue_;
  std::vector<uint64_t> cancels_;
  uint64_t next_id_ = 1;
  bool stopping_ = false;
  SchedulerStats stats_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::thread thread_;

  // Inference-thread scratch: the step's batch.
  std::vector<int32_t> b_tokens_, b_pos_, b_seq_;
  std::vector<int8_t> b_logits_;
  std::vector<Slot*> b_out_slot_;  // [outputs] which slot each logits row belongs to
  std::vector<Slot*> b_reading_;   // slots reading their prompt, oldest request first
  std::vector<std::pair<Slot*, size_t>> b_chunks_;  // prompt tokens each of those adds to the step
  std::vector<SpecSlots::Job> b_jobs_;              // the step's drafting slots
  std::vector<int32_t> b_gen_;                      // the step's generating slots, in batch order
  uint64_t use_clock_ = 0;
};

// Log-softmax of logits[n_vocab] at token, and the n most probable tokens
// (ties: lower id first) into out->top.
void token_logprob(const float* logits, int32_t n_vocab, int32_t token, int32_t n_top, TokenLogprob* out);

}  // namespace kestrel::serve
