// Speculative decoding for the scheduler's slots (see spec_slots.h).
#include "runtime/serve/spec_slots.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <new>

#include "ops/op_table.h"
#include "platform/timer.h"
#include "runtime/spec/speculative.h"

namespace kestrel::serve {

namespace {

// A draft behind the target by more than this many tokens when its round
// starts spends the round's draft time catching up, which says nothing about a
// draft pass's cost (the single-sequence decoder uses the same bound).
constexpr size_t kCatchUpTimed = 2;

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

int32_t argmax(const float* l, int64_t n) {
  int32_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (l[i] > l[best]) best = static_cast<int32_t>(i);
  return best;
}

}  // namespace

Expected<std::unique_ptr<SpecSlots>> SpecSlots::create(Context& target, Context& draft, const SpecSlotParams& p) {
  if (p.draft_max < 1 || p.draft_max > SpecPolicy::kMaxDraft)
    return Status::invalid_argument("draft_max %d outside [1, %d]", p.draft_max, SpecPolicy::kMaxDraft);
  if (p.draft_vocab < 0) return Status::invalid_argument("draft_vocab %d must be >= 0", p.draft_vocab);
  if (!(p.p_min >= 0.0f && p.p_min <= 1.0f)) return Status::invalid_argument("draft p_min must be in [0, 1]");
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
    s->slots_.resize(static_cast<size_t>(n_slots));
    s->work_.resize(static_cast<size_t>(s->V_));
    const size_t cap = static_cast<size_t>(std::max<int64_t>(draft.params().n_batch, n_slots));
    s->b_tok_.reserve(cap);
    s->b_pos_.reserve(cap);
    s->b_seq_.reserve(cap);
    s->b_logits_.reserve(cap);
    s->b_job_.reserve(static_cast<size_t>(n_slots));
    s->passes_.reserve(static_cast<size_t>(n_slots));
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
    s.policy.fix_costs(pass_ratio_, 0.25);
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

int32_t SpecSlots::choose(int32_t seq, int32_t room) {
  Slot& s = slots_[static_cast<size_t>(seq)];
  if (s.mode == Mode::plain) return 0;
  return std::max(0, std::min(s.policy.choose(), room));
}

int32_t SpecSlots::pick(Slot& s, const float* row, int32_t j) {
  if (s.mode != Mode::sampled) return argmax(row, dv_);
  // The draft's softmax at the request's temperature over its top-k / top-p
  // set: the distribution spec_verify computes from this very row.
  float* q = s.q.data() + static_cast<size_t>(j) * static_cast<size_t>(V_);
  std::copy(row, row + dv_, q);
  std::fill(q + dv_, q + V_, kAbsent);
  const SamplerParams& p = s.sampling;
  const float thr = spec_keep_threshold(q, V_, p.temperature, p.top_k, p.top_p, work_.data());
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < dv_; ++i)
    if (q[i] >= thr) m = std::max(m, static_cast<double>(q[i]));
  double z = 0.0;
  for (int64_t i = 0; i < dv_; ++i)
    if (q[i] >= thr) z += std::exp((static_cast<double>(q[i]) - m) / p.temperature);
  const double u = static_cast<double>(splitmix64(s.rng) >> 11) * 0x1.0p-53;
  const double target = u * z;
  double cum = 0.0;
  int32_t last = argmax(q, dv_);
  for (int64_t i = 0; i < dv_; ++i) {
    if (q[i] < thr) continue;
    cum += std::exp((static_cast<double>(q[i]) - m) / p.temperature);
    last = static_cast<int32_t>(i);
    if (cum > target) break;
  }
  return last;
}

float SpecSlots::draft_prob(const Slot& s, const float* row, int32_t id) const {
  // Entries more than 20 (in units of the temperature) below the id's logit
  // weigh under e^-20 each: left out (p_min is a length heuristic; exactness
  // does not depend on it).
  const float inv_t = s.mode == Mode::sampled ? 1.0f / s.sampling.temperature : 1.0f;
  const float ref = row[id];
  const float cut = ref - 20.0f / inv_t;
  double z = 0.0;
  for (int64_t i = 0; i < dv_; ++i)
    if (row[i] > cut) z += std::exp(static_cast<double>((row[i] - ref) * inv_t));
  return z > 0.0 ? static_cast<float>(1.0 / z) : 0.0f;
}

Status SpecSlots::draft(std::span<Job> jobs) {
  if (jobs.empty()) return {};
  const int64_t t0 = now_ns();
  bool timed = true;
  passes_.assign(jobs.size(), 1);
  open_.assign(jobs.size(), 1);
  auto fail = [&](Status st) {
    // The draft's cells of these sequences are no longer known: start them again.
    for (const Job& j : jobs) {
      slots_[static_cast<size_t>(j.seq)].n_draft = 0;
      slots_[static_cast<size_t>(j.seq)].mode = Mode::plain;
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
      Slot& s = slots_[static_cast<size_t>(j.seq)];
      if (j.cache.size() - s.n_draft > kCatchUpTimed) timed = false;
      for (size_t i = s.n_draft; i <= j.cache.size(); ++i) {
        b_tok_.push_back(i < j.cache.size() ? j.cache[i] : j.pending);
        b_pos_.push_back(static_cast<int32_t>(i));
        b_seq_.push_back(j.seq);
        b_logits_.push_back(i == j.cache.size() ? 1 : 0);
      }
    }
  } catch (const std::bad_alloc&) {
    return fail(Status::out_of_memory("draft catch-up batch of %zu tokens", b_tok_.size()));
  }
  if (Status st = run(); !st.ok()) return fail(st);
  for (size_t k = 0; k < jobs.size(); ++k) {
    Job& j = jobs[k];
    Slot& s = slots_[static_cast<size_t>(j.seq)];
    s.n_draft = j.cache.size() + 1;
    const float* row = draft_.logits(static_cast<int32_t>(k));
    if (!row) return fail(Status::internal("draft decode produced no logits"));
    j.drafts[0] = pick(s, row, 0);
    j.n = 1;
    // p_min: the first draft is always proposed (a two-row verify costs about one step).
    if (j.g == 1 || (p_.p_min > 0.0f && draft_prob(s, row, j.drafts[0]) < p_.p_min)) open_[k] = 0;
  }
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
    if (Status st = run(); !st.ok()) return fail(st);
    for (size_t r = 0; r < b_job_.size(); ++r) {
      const size_t k = b_job_[r];
      Job& j = jobs[k];
      Slot& s = slots_[static_cast<size_t>(j.seq)];
      s.n_draft = j.cache.size() + 1 + static_cast<size_t>(d);
      ++passes_[k];
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
  }
  // Every drafting slot waited for all of the passes: each policy gets the
  // call's whole time over the passes it took part in.
  const int64_t dt = now_ns() - t0;
  if (timed)
    for (size_t k = 0; k < jobs.size(); ++k) slots_[static_cast<size_t>(jobs[k].seq)].policy.drafted(passes_[k], dt);
  return {};
}

Expected<int32_t> SpecSlots::verify(Context& target, int32_t seq, int32_t first_row, const int32_t* drafts, int32_t n,
                                    int32_t* next, int64_t batch_ns) {
  const int64_t t0 = now_ns();
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
  // The slot's rows shared the batch with the other slots' rows and prompt
  // chunks: its policy is given the whole batch's time, which is what the slot
  // waited for its tokens (a plain step of the slot is timed the same way).
  SpecPolicy& pol = s.policy;
  pol.verified(n + 1, batch_ns + (now_ns() - t0));
  pol.accepted(n, out[0]);
  *next = out[1];
  return out[0];
}

void SpecSlots::plain_step(int32_t seq, int64_t batch_ns) {
  Slot& s = slots_[static_cast<size_t>(seq)];
  if (s.mode != Mode::plain) s.policy.plain_step(batch_ns);
}

}  // namespace kestrel::serve
