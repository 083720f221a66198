// Speculative decoding for the scheduler's slots (see spec_slots.h).
#include "runtime/serve/spec_slots.h"

#include <algorithm>
#include <new>

#include "ops/op_table.h"
#include "platform/timer.h"
#include "runtime/spec/spec_draw.h"
#include "runtime/spec/speculative.h"

namespace kestrel::serve {

namespace {

// Tokens a draft behind after plain steps is fed before a round (spec_slots.h).
constexpr size_t kCatchUpWindow = 16;

// Tokens of a draft's catch-up charged to a round (spec_costs.h): rounds in a
// run carry one after a round whose drafts were all accepted.
constexpr size_t kCatchUpCharged = 2;

// Logit of the ids a draft row does not score (beyond the draft's vocabulary or
// --draft-vocab): finite, so the verify does not take it for bad data, yet its
// exp() is 0.
constexpr float kAbsent = -1e30f;

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

Expected<std::unique_ptr<SpecSlots>> SpecSlots::create(Context& target, Context& draft, const SpecSlotParams& p) {
  if (p.draft_max < 1 || p.draft_max > SpecPolicy::kMaxDraft)
    return Status::invalid_argument("draft_max %d outside [1, %d]", p.draft_max, SpecPolicy::kMaxDraft);
  if (p.draft_vocab < 0) return Status::invalid_argument("draft_vocab %d must be >= 0", p.draft_vocab);
  if (!(p.p_min >= 0.0f && p.p_min <= 1.0f)) return Status::invalid_argument("draft p_min must be in [0, 1]");
  if (!(p.pass_cost >= 0.0 && p.pass_cost <= 1e6)) return Status::invalid_argument("draft pass_cost must be in [0, 1e6]");
  if (&draft == &target) return Status::invalid_argument("the draft context must be a second context");
  KESTREL_TRY(check_vocab_compat(target.model(), draft.model()));
  const int32_t n_slots = target.params().n_seq_max;
  if (draft.params().n_seq_max < n_slots)
    return Status::invalid_argument("the draft context has %d sequences, the target's %d slots need one each",
                                    draft.params().n_seq_max, n_slots);
  if (draft.n_ctx() < target.n_ctx())
    return Status::invalid_argument("the draft context holds %lld tokens per sequence, below the target's %lld",
                                    static_cast<long long>(draft.n_ctx()), static_cast<long long>(target.n_ctx()));
  std::unique_ptr<SpecSlots> s(new (std::nothrow) SpecSlots(draft, p));
  if (!s) return Status::out_of_memory("speculative slots");
  s->V_ = target.model().hparams().n_vocab;
  s->dv_ = std::min<int64_t>(s->V_, draft.model().hparams().n_vocab);
  const double tw = static_cast<double>(target.model().weight_bytes());
  if (tw > 0) s->pass_ratio_ = static_cast<double>(draft.model().weight_bytes()) / tw;
  if (p.draft_vocab > 0) {
    s->dv_ = std::min<int64_t>(s->dv_, p.draft_vocab);
    s->variant_.out_vocab = s->dv_;
  }
  try {
    s->costs_ = StepCosts(n_slots, s->pass_ratio_);
    s->slots_.resize(static_cast<size_t>(n_slots));
    s->work_.resize(static_cast<size_t>(s->V_));
    const size_t cap = static_cast<size_t>(std::max<int64_t>(draft.params().n_batch, n_slots));
    s->b_tok_.reserve(cap);
    s->b_pos_.reserve(cap);
    s->b_seq_.reserve(cap);
    s->b_logits_.reserve(cap);
    s->b_job_.reserve(static_cast<size_t>(n_slots));
    s->open_.reserve(static_cast<size_t>(n_slots));
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("speculative slots scratch");
  }
  draft.kv().clear();
  return s;
}

SpecSlots::Mode SpecSlots::mode_for(const SamplerParams& p) {
  // A repetition penalty moves the target's distribution in a way spec_verify
  // does not model. Greedy: top-k, top-p and min-p keep the argmax, so they
  // change nothing; sampled: min-p is not part of the exact rule.
  if (p.repeat_penalty != 1.0f) return Mode::plain;
  if (p.temperature <= 0.0f) return Mode::greedy;
  return p.min_p > 0.0f ? Mode::plain : Mode::sampled;
}

bool SpecSlots::start(int32_t seq, size_t n_keep, const SamplerParams& p) {
  Slot& s = slots_[static_cast<size_t>(seq)];
  s.mode = mode_for(p);
  s.sampling = p;
  s.primed = false;
  costs_.reset(seq);
  SpecPolicy::Config c;
  c.g_max = p_.draft_max;
  c.g_init = std::min(c.g_init, p_.draft_max);
  // A new policy per request: acceptance is a property of the text being written.
  s.policy = SpecPolicy(c);
  if (s.mode == Mode::sampled) {
    try {
      s.q.resize(static_cast<size_t>(p_.draft_max) * static_cast<size_t>(V_));
    } catch (const std::bad_alloc&) {
      s.mode = Mode::plain;
    }
    s.rng = p.seed;
    s.n_rounds = 0;
    // The round lengths steer which uniforms are drawn: from model sizes, so a
    // seed repeats (a verify row past the first costs a quarter of a step, as
    // the single-sequence decoder assumes).
    s.policy.fix_costs(p_.pass_cost > 0.0 ? p_.pass_cost : pass_ratio_, 0.25);
  } else if (s.mode == Mode::greedy && p_.pass_cost > 0.0) {
    s.policy.fix_costs(p_.pass_cost, 0.25);
  }
  trim(seq, n_keep);
  return s.mode != Mode::plain;
}

void SpecSlots::trim(int32_t seq, size_t n) {
  Slot& s = slots_[static_cast<size_t>(seq)];
  if (s.n_draft <= n) return;
  s.n_draft = n;
  draft_.kv().seq_rm(seq, static_cast<int32_t>(n), -1);
}

void SpecSlots::begin_step(std::span<const int32_t> gen) { costs_.begin_step(gen); }

int32_t SpecSlots::choose(int32_t seq, int32_t room, size_t n_cached) {
  Slot& s = slots_[static_cast<size_t>(seq)];
  if (s.mode == Mode::plain) return 0;
  if (s.mode == Mode::greedy && p_.pass_cost <= 0.0) {
    double plain = 0.0;
    const std::span<double> rounds(round_ns_.data(), static_cast<size_t>(p_.draft_max) + 1);
    // A draft behind by the tokens of plain steps catches up once for the
    // rounds that follow, not for this one alone: a round is charged only the
    // catch-up of a run of rounds (after one whose drafts were all accepted).
    const size_t behind = n_cached > s.n_draft ? n_cached - s.n_draft : 0;
    const size_t charged = costs_.drafted_last(seq) ? std::min(behind, kCatchUpCharged) : 0;
    const std::span<double> best(best_ns_.data(), rounds.size());
    costs_.round_costs(seq, static_cast<int32_t>(charged), &plain, rounds, best);
    s.policy.set_costs(plain, rounds, best);
  }
  const int32_t g = std::max(0, std::min(s.policy.choose(), room));
  costs_.chose(seq, g);
  return g;
}

void SpecSlots::step_timed(int32_t rows, int64_t ns) { costs_.step_timed(rows, ns); }

int32_t SpecSlots::pick(Slot& s, const float* row, int32_t j) {
  if (s.mode != Mode::sampled) return spec_argmax(row, dv_);
  // The row as spec_verify will see it (every target id; those the draft does
  // not score weigh nothing), kept for the verify as draft j.
  float* q = s.q.data() + static_cast<size_t>(j) * static_cast<size_t>(V_);
  std::copy(row, row + dv_, q);
  std::fill(q + dv_, q + V_, kAbsent);
  const SamplerParams& p = s.sampling;
  const double u = static_cast<double>(splitmix64(s.rng) >> 11) * 0x1.0p-53;
  return spec_draw(q, V_, dv_, p.temperature, p.top_k, p.top_p, u, work_.data());
}

float SpecSlots::draft_prob(const Slot& s, const float* row, int32_t id) const {
  return spec_draft_prob(row, dv_, id, s.mode == Mode::sampled ? s.sampling.temperature : 0.0f);
}

Status SpecSlots::draft(std::span<Job> jobs) {
  if (jobs.empty()) return {};
  open_.assign(jobs.size(), 1);
  auto fail = [&](Status st) {
    // The draft's cells of these sequences are no longer known: start them again.
    for (const Job& j : jobs) {
      slots_[static_cast<size_t>(j.seq)].n_draft = 0;
      slots_[static_cast<size_t>(j.seq)].mode = Mode::plain;
      costs_.reset(j.seq);
      draft_.kv().seq_rm(j.seq, 0, -1);
    }
    return st;
  };
  auto run = [&]() -> Status {
    BatchView b;
    b.n_tokens = static_cast<int32_t>(b_tok_.size());
    b.tokens = b_tok_.data();
    b.pos = b_pos_.data();
    b.seq_id = b_seq_.data();
    b.logits = b_logits_.data();
    return draft_.decode(b, variant_);
  };
  b_tok_.clear();
  b_pos_.clear();
  b_seq_.clear();
  b_logits_.clear();
  // First pass: each job's missing tokens and its pending token; the pending
  // token's row gives the first draft.
  try {
    for (const Job& j : jobs) {
      const Slot& s = slots_[static_cast<size_t>(j.seq)];
      size_t from = s.n_draft;
      if (s.primed && j.cache.size() > from + kCatchUpWindow) from = j.cache.size() - kCatchUpWindow;
      for (size_t i = from; i <= j.cache.size(); ++i) {
        b_tok_.push_back(i < j.cache.size() ? j.cache[i] : j.pending);
        b_pos_.push_back(static_cast<int32_t>(i));
        b_seq_.push_back(j.seq);
        b_logits_.push_back(i == j.cache.size() ? 1 : 0);
      }
    }
  } catch (const std::bad_alloc&) {
    return fail(Status::out_of_memory("draft catch-up batch of %zu tokens", b_tok_.size()));
  }
  // Each pass is timed with its picks (argmax, or a draw and its threshold).
  int64_t t0 = now_ns();
  if (Status st = run(); !st.ok()) return fail(st);
  for (size_t k = 0; k < jobs.size(); ++k) {
    Job& j = jobs[k];
    Slot& s = slots_[static_cast<size_t>(j.seq)];
    s.n_draft = j.cache.size() + 1;
    s.primed = true;
    const float* row = draft_.logits(static_cast<int32_t>(k));
    if (!row) return fail(Status::internal("draft decode produced no logits"));
    j.drafts[0] = pick(s, row, 0);
    j.n = 1;
    // p_min: the first draft is always proposed (a two-row verify costs about one step).
    if (j.g == 1 || (p_.p_min > 0.0f && draft_prob(s, row, j.drafts[0]) < p_.p_min)) open_[k] = 0;
  }
  costs_.pass_timed(static_cast<int32_t>(b_tok_.size()), now_ns() - t0);
  // Then one pass per further draft, one token per job still drafting.
  for (int32_t d = 1;; ++d) {
    b_tok_.clear();
    b_pos_.clear();
    b_seq_.clear();
    b_logits_.clear();
    b_job_.clear();
    for (size_t k = 0; k < jobs.size(); ++k) {
      if (!open_[k]) continue;
      const Job& j = jobs[k];
      b_tok_.push_back(j.drafts[d - 1]);
      b_pos_.push_back(static_cast<int32_t>(j.cache.size()) + d);
      b_seq_.push_back(j.seq);
      b_logits_.push_back(1);
      b_job_.push_back(k);
    }
    if (b_tok_.empty()) break;
    t0 = now_ns();
    if (Status st = run(); !st.ok()) return fail(st);
    for (size_t r = 0; r < b_job_.size(); ++r) {
      const size_t k = b_job_[r];
      Job& j = jobs[k];
      Slot& s = slots_[static_cast<size_t>(j.seq)];
      s.n_draft = j.cache.size() + 1 + static_cast<size_t>(d);
      const float* row = draft_.logits(static_cast<int32_t>(r));
      if (!row) return fail(Status::internal("draft decode produced no logits"));
      const int32_t t = pick(s, row, d);
      if (p_.p_min > 0.0f && draft_prob(s, row, t) < p_.p_min) {
        open_[k] = 0;  // not proposed
        continue;
      }
      j.drafts[d] = t;
      j.n = d + 1;
      if (j.n == j.g) open_[k] = 0;
    }
    costs_.pass_timed(static_cast<int32_t>(b_job_.size()), now_ns() - t0);
  }
  return {};
}

Expected<int32_t> SpecSlots::verify(Context& target, int32_t seq, int32_t first_row, const int32_t* drafts, int32_t n,
                                    int32_t* next) {
  Slot& s = slots_[static_cast<size_t>(seq)];
  Tensor tl = target.logits_tensor(first_row, n + 1);
  Tensor ids = make_tensor(DType::I32, const_cast<int32_t*>(drafts), n);
  int32_t out[2] = {-1, -1};
  Tensor ot = make_tensor(DType::I32, out, 2);
  SpecVerifyParams vp;
  vp.greedy = s.mode != Mode::sampled;
  Tensor ql;
  if (!vp.greedy) {
    vp.temperature = s.sampling.temperature;
    vp.top_k = s.sampling.top_k;
    vp.top_p = s.sampling.top_p;
    // Each round its own uniforms, from the request's seed.
    vp.seed = (s.sampling.seed ^ 0x9E3779B97F4A7C15ull) + s.n_rounds++ * 0xD1B54A32D192ED03ull;
    ql = make_tensor(DType::F32, s.q.data(), V_, n);
  }
  KESTREL_TRY(target.run_op(OpCall{OpId::spec_verify, &ot, {&tl, &ids, &ql}, vp.greedy ? 2 : 3, &vp}));
  if (out[0] < 0) return Status::runtime_error("speculative verify: NaN or Inf in the logits");
  // Only the acceptance: the costs come from the step curves (choose()).
  s.policy.accepted(n, out[0]);
  *next = out[1];
  return out[0];
}

}  // namespace kestrel::serve
