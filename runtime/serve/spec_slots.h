// SpecSlots: speculative decoding with a draft model for the scheduler's
// slots (scheduler.h). The draft model has its own context with one sequence
// per slot; each speculating slot owns a draft-length policy (SpecPolicy,
// runtime/spec/spec_policy.h). Every step the scheduler asks each generating
// slot's policy for a draft length g; the slots with g > 0 are drafted here
// together (the draft context decodes one token per drafting slot per pass),
// then the scheduler puts every slot's [pending, drafts...] rows into its one
// target batch and verify() runs the spec_verify op on each slot's rows.
//
// Costs. A greedy slot's policy is not timed by the clock of its own rounds
// (which is the whole batch's, other slots' rows included) but given, each
// step, the costs of its share (spec_costs.h): its part of a plain step of
// every generating slot, and what its drafts add to the step's target batch
// and to the shared draft passes, from step-time curves by row count that
// every step without prompt rows and every draft pass feed. So with several
// slots drafting pays, or switches off, by what it adds to the step.
//
// What is speculated:
//   greedy   temperature <= 0, no repetition penalty: spec_verify's greedy rule,
//            the target's argmax with the lowest id on ties, which is what the
//            request's own greedy sampler picks: the tokens of plain serving.
//   sampled  temperature > 0 with top-k / top-p only (min-p 0, no repetition
//            penalty): spec_verify's exact rule, drafts drawn from the draft's
//            softmax at the request's temperature over its top-k / top-p set.
//            The output follows the target's distribution, but it is another
//            draw than plain serving's for the same seed (the uniforms come
//            from the request's seed and the round, not from its sampler).
//            Round lengths come from model sizes (SpecPolicy::fix_costs), not
//            clocks nor the other slots, so that a seed repeats its tokens.
// Anything else decodes plainly beside the speculating slots.
//
// Draft cache. The draft sequence of a slot holds the slot's target tokens
// below n_draft, at their positions. Before drafting, the tokens it lacks
// (after plain steps or a new prompt) and the pending token are fed in one
// batch; drafting then appends the drafts. After plain steps of a request
// whose prompt it was fed, a draft more than 16 tokens behind is fed only the
// last 16 (its cache then skips the ones between, as the single-sequence
// decoder's does): a probe round after G plain steps would otherwise cost a
// draft pass over G tokens. Drafts only steer acceptance, so the tokens are
// the same. After the target's verify the scheduler calls trim() with the
// slot's new token count, which drops the rejected drafts.
//
//   KESTREL_TRY_ASSIGN(auto spec, SpecSlots::create(target_ctx, draft_ctx, SpecSlotParams{}));
//   spec->start(seq, n_cached, request.sampling);
//   spec->begin_step(generating_seqs);
//   int32_t g = spec->choose(seq, room, cache.size());  // 0: a plain step; per generating slot in turn
//   SpecSlots::Job job{seq, cache, pending, g, drafts};
//   KESTREL_TRY(spec->draft(std::span(&job, 1)));  // job.n drafts in drafts[]
//   ... target decode of [pending, drafts[0..n)] with logits on every row ...
//   spec->step_timed(rows, ns);                  // a target step without prompt rows, verify included
//   KESTREL_TRY_ASSIGN(int32_t a, spec->verify(target_ctx, seq, first_row, drafts, job.n, &next));
//   spec->trim(seq, new_cache_size);
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "platform/status.h"
#include "runtime/engine/context.h"
#include "runtime/sampling/sampler.h"
#include "runtime/serve/spec_costs.h"
#include "runtime/spec/spec_policy.h"

namespace kestrel::serve {

struct SpecSlotParams {
  int32_t draft_max = 8;    // longest draft of a round, [1, 32] (default 8)
  float p_min = 0.0f;       // stop a round's drafting at a draft top-1 probability below this (0: off)
  int32_t draft_vocab = 0;  // > 0: the draft scores only ids [0, draft_vocab) (default 0: all)
  // > 0: a draft pass costs this fraction of a plain target step, for greedy
  // slots too, instead of the step clocks (and of the model-size ratio that
  // sampled slots use): round lengths then depend only on acceptance, so step
  // counts repeat run to run whatever the machine's timing (default 0: off).
  double pass_cost = 0.0;
};

class SpecSlots {
 public:
  // Checks the draft's vocabulary against the target's (check_vocab_compat),
  // its sequences (>= the target's) and cells per sequence (>= the target's).
  // Both contexts must outlive the object; the draft's cache is cleared.
  static Expected<std::unique_ptr<SpecSlots>> create(Context& target, Context& draft, const SpecSlotParams& p);

  enum class Mode { plain, greedy, sampled };
  // How a request sampling with p is decoded (see the top of this file).
  static Mode mode_for(const SamplerParams& p);

  // A request sampling with p starts in slot seq, whose target cache keeps its
  // first n_keep tokens. Returns whether it is speculated (a sampled request
  // whose draft rows cannot be allocated decodes plainly).
  bool start(int32_t seq, size_t n_keep, const SamplerParams& p);
  // The slot's target cache now holds only its first n tokens.
  void trim(int32_t seq, size_t n);
  bool speculating(int32_t seq) const { return slots_[static_cast<size_t>(seq)].mode != Mode::plain; }
  int32_t draft_max() const { return p_.draft_max; }

  // A step begins whose generating slots are gen, in the order their rows go
  // in the batch: choose() is then called for those that speculate, in that
  // order.
  void begin_step(std::span<const int32_t> gen);
  // The draft length of the slot's next step (0: a plain step), at most room;
  // n_cached: the slot's tokens in the target cache.
  int32_t choose(int32_t seq, int32_t room, size_t n_cached);
  // A target step of `rows` rows, every one a generating slot's pending token
  // or draft, took ns (its decode, verifying, sampling and emitting).
  void step_timed(int32_t rows, int64_t ns);

  struct Job {
    int32_t seq = 0;
    std::span<const int32_t> cache;  // the slot's tokens in the target cache
    int32_t pending = -1;            // sampled, decoded next at position cache.size()
    int32_t g = 0;                   // drafts wanted, >= 1
    int32_t* drafts = nullptr;       // [g] out
    int32_t n = 0;                   // out: drafts made, [1, g] (p_min may stop early)
  };
  // Drafts every job, batched across slots (each pass is timed into the
  // draft's step curve). On error the jobs' draft sequences
  // are emptied and their requests decode plainly from then on.
  Status draft(std::span<Job> jobs);

  // After the target decoded [pending, drafts[0..n)] of the slot with logits on
  // rows first_row .. first_row + n: the number of drafts accepted, and *next
  // the target's own token after them.
  Expected<int32_t> verify(Context& target, int32_t seq, int32_t first_row, const int32_t* drafts, int32_t n,
                           int32_t* next);

 private:
  struct Slot {
    Mode mode = Mode::plain;   // the current request's
    SamplerParams sampling;    // the current request's
    SpecPolicy policy{SpecPolicy::Config{}};
    size_t n_draft = 0;        // the draft sequence holds the slot's target tokens below this (but a skipped run)
    bool primed = false;       // the draft was fed the current request's prompt
    uint64_t rng = 0;          // sampled: splitmix64 state of the draft draws
    uint64_t n_rounds = 0;     // sampled: rounds verified (each has its own uniforms)
    std::vector<float> q;      // sampled: [draft_max][n_vocab] the rows the drafts were drawn from
  };
  SpecSlots(Context& draft, const SpecSlotParams& p) : draft_(draft), p_(p) {}
  // The draft token of a row (argmax, or a draw for a sampled slot, whose row
  // is kept in its q for the verify as draft j).
  int32_t pick(Slot& s, const float* row, int32_t j);
  // Draft probability of id in the row (spec_draft_prob at the slot's
  // temperature; the top-1 probability for greedy).
  float draft_prob(const Slot& s, const float* row, int32_t id) const;

  Context& draft_;
  SpecSlotParams p_;
  int64_t V_ = 0;   // the target's vocabulary (rows of its logits)
  int64_t dv_ = 0;  // ids the draft scores: [0, dv_)
  double pass_ratio_ = 1.0;  // a draft pass's cost in target steps, from the weights' sizes
  std::vector<float> work_;  // [V_] spec_keep_threshold's scratch
  PassVariant variant_;
  std::vector<Slot> slots_;
  StepCosts costs_{0, 1.0};  // step-time curves and the step's choices (set up by create())
  std::array<double, SpecPolicy::kMaxDraft + 1> round_ns_{};  // choose()'s scratch: costs by g,
  std::array<double, SpecPolicy::kMaxDraft + 1> best_ns_{};   // and at their cheapest
  // Scratch of draft(): the pass's batch, and which job each output row is.
  std::vector<int32_t> b_tok_, b_pos_, b_seq_;
  std::vector<int8_t> b_logits_;
  std::vector<size_t> b_job_;
  std::vector<uint8_t> open_;    // [jobs] still drafting
};

}  // namespace kestrel::serve
