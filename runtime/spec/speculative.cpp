// The speculative decoding loop (see speculative.h for the design).
#include "runtime/spec/speculative.h"

#include <algorithm>
#include <cmath>
#include <new>

#include "platform/timer.h"
#include "runtime/spec/spec_draw.h"
#include "runtime/tokenizer/tokenizer.h"

namespace kestrel {

namespace {

// Logit of draft-vocabulary entries the target lacks (and vice versa): finite,
// so the verify op does not take it for bad data, yet exp() of it is 0.
constexpr float kAbsent = -1e30f;
constexpr int32_t kCatchUpWindow = 16;  // tokens a lagging draft model is fed before a round (draft_round)

// A general English paragraph: the default calibration text of --spec-skip auto.
constexpr const char* kCalibration =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
    "friends. One day, she saw a big red ball under a tree. She ran to the ball and picked it up. The sun was "
    "warm and the birds were singing. Lily smiled and said, \"Let's play together!\" Her mother called her "
    "home for dinner, and they ate soup and bread at the kitchen table.";

double log_prob(const float* l, int64_t n, int32_t id) {
  double m = l[0];
  for (int64_t i = 1; i < n; ++i) m = std::max(m, double(l[i]));
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(double(l[i]) - m);
  return double(l[id]) - m - std::log(s);
}

}  // namespace

Expected<std::unique_ptr<SpecDecoder>> SpecDecoder::create(Context& target, Context* draft, const SpecParams& p) {
  if (p.draft_max < 1 || p.draft_max > 32) return Status::invalid_argument("draft_max %d outside [1, 32]", p.draft_max);
  if (p.draft_vocab < 0) return Status::invalid_argument("draft_vocab %d must be >= 0", p.draft_vocab);
  if (!(p.p_min >= 0.0f && p.p_min <= 1.0f)) return Status::invalid_argument("p_min must be in [0, 1]");
  if (!(p.pass_cost >= 0.0 && p.pass_cost <= 1e6)) return Status::invalid_argument("pass_cost must be in [0, 1e6]");
  if (p.mode == SpecMode::draft && !draft) return Status::invalid_argument("draft mode needs a draft model context");
  if (p.mode == SpecMode::self && draft) return Status::invalid_argument("self mode takes no draft model");
  if (draft == &target) return Status::invalid_argument("the draft context must be a second context");
  if (p.temperature > 0.0f) {
    if (!std::isfinite(p.temperature)) return Status::invalid_argument("temperature must be finite");
    if (p.top_k < 0) return Status::invalid_argument("top_k must be >= 0");
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return Status::invalid_argument("top_p must be in (0, 1]");
    if (p.sigmoid && (p.top_k > 0 || p.top_p < 1.0f))
      return Status::invalid_argument("the sigmoid ablation takes no top-k / top-p");
  }
  const Model& tm = target.model();
  if (draft) KESTREL_TRY(check_vocab_compat(tm, draft->model()));
  std::unique_ptr<SpecDecoder> d(new (std::nothrow) SpecDecoder(target, draft, p));
  if (!d) return Status::out_of_memory("speculative decoder");
  d->V_ = tm.hparams().n_vocab;
  d->dv_ = std::min<int64_t>(d->V_, draft ? draft->model().hparams().n_vocab : d->V_);
  if (p.draft_vocab > 0) d->dv_ = std::min<int64_t>(d->dv_, p.draft_vocab);
  d->rng_.seed(p.seed);
  d->verify_seed_ = p.seed ^ 0x9E3779B97F4A7C15ull;
  if (p.seq_id < 0 || p.seq_id >= target.kv().n_seq_max() || (draft && p.seq_id >= draft->kv().n_seq_max()))
    return Status::invalid_argument("sequence id %d outside the contexts' sequences", p.seq_id);
  if (p.draft_vocab > 0) d->draft_variant_.out_vocab = d->dv_;
  try {
    d->draft_logits_.assign(static_cast<size_t>(p.draft_max) * static_cast<size_t>(d->V_), 0.0f);
    d->work_.assign(static_cast<size_t>(d->V_), 0.0f);
    // A draft pass feeds at most the accepted tokens it has not seen, the
    // pending one and draft_max - 1 masks.
    d->batch_tok_.reserve(2 * static_cast<size_t>(p.draft_max) + 2);
    d->batch_pos_.reserve(2 * static_cast<size_t>(p.draft_max) + 2);
    d->batch_seq_.assign(2 * static_cast<size_t>(p.draft_max) + 2, p.seq_id);
    d->batch_flags_.assign(static_cast<size_t>(p.draft_max) + 1, 1);
    d->draft_flags_.reserve(2 * static_cast<size_t>(p.draft_max) + 2);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("speculative decoder buffers for %d drafts of %lld logits", p.draft_max,
                                 (long long)d->V_);
  }
  if (p.mask_drafting) {
    const SpecInfo info = spec_info(draft ? draft->model() : tm);
    if (info.has_mask_tokens) {
      d->mask_id_ = info.mask_token_id;
      d->mask_n_ = info.mask_n_predict > 0 ? std::min(info.mask_n_predict, p.draft_max) : p.draft_max;
    }
  }
  if (p.mode == SpecMode::self) {
    const int32_t N = static_cast<int32_t>(tm.hparams().n_layer);
    if (p.skip_auto) {
      std::vector<int32_t> calib;
      KESTREL_TRY(tm.tokenizer().encode(kCalibration, true, false, calib));
      KESTREL_TRY_ASSIGN(auto cands, search_skip_block(target, calib));
      d->skip_begin_ = cands[0].begin;
      d->skip_end_ = cands[0].end;
    } else {
      if (p.skip_begin < 0 || p.skip_end < p.skip_begin || p.skip_end >= N)
        return Status::invalid_argument("skip range %d-%d outside the model's layers 0-%d", p.skip_begin, p.skip_end,
                                        N - 1);
      if (p.skip_end - p.skip_begin + 1 >= N) return Status::invalid_argument("the skip range leaves no layer");
      d->skip_begin_ = p.skip_begin;
      d->skip_end_ = p.skip_end;
    }
    d->draft_variant_.skip.assign(static_cast<size_t>(N), false);
    for (int32_t l = d->skip_begin_; l <= d->skip_end_; ++l) d->draft_variant_.skip[static_cast<size_t>(l)] = true;
  }
  return d;
}

float SpecDecoder::uniform() { return static_cast<float>(rng_() >> 40) * (1.0f / 16777216.0f); }

// Greedy: argmax. Else a draw from softmax(l / T) over the top-k / top-p set,
// the very distribution spec_verify computes for the same row (spec_draw.h).
// (The sigmoid ablation draws drafts from this softmax too; only the verify rule changes.)
int32_t SpecDecoder::pick(const float* row) {
  if (p_.temperature <= 0.0f) return spec_argmax(row, V_);  // (a draft row's ids >= dv_ hold kAbsent)
  return spec_draw(row, V_, V_, p_.temperature, p_.top_k, p_.top_p, double(uniform()), work_.data());
}

float SpecDecoder::draft_prob(const float* row, int32_t id) const {
  return spec_draft_prob(row, dv_, id, p_.temperature);
}

Status SpecDecoder::draft_step(const int32_t* toks, int32_t n, int32_t pos0, float* rows, int32_t n_rows) {
  Context& dc = draft_ ? *draft_ : target_;
  // A draft model catching up after plain steps feeds all of them at once.
  if (batch_seq_.size() < static_cast<size_t>(n)) {
    try {
      batch_seq_.resize(static_cast<size_t>(n), p_.seq_id);
    } catch (const std::bad_alloc&) {
      return Status::out_of_memory("draft batch of %d tokens", n);
    }
  }
  batch_pos_.resize(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) batch_pos_[static_cast<size_t>(i)] = pos0 + i;
  draft_flags_.assign(static_cast<size_t>(n), 0);
  for (int32_t i = n - n_rows; i < n; ++i) draft_flags_[static_cast<size_t>(i)] = 1;
  BatchView b;
  b.n_tokens = n;
  b.tokens = toks;
  b.pos = batch_pos_.data();
  b.logits = draft_flags_.data();
  b.seq_id = batch_seq_.data();
  KESTREL_TRY(dc.decode(b, draft_variant_));
  ++stats_.n_draft_passes;
  const int64_t nc = dv_;  // <= both vocabularies
  for (int32_t r = 0; r < n_rows; ++r) {
    const float* l = dc.logits(r);
    if (!l) return Status::internal("draft decode produced no logits");
    float* row = rows + r * V_;
    std::copy(l, l + nc, row);
    std::fill(row + nc, row + V_, kAbsent);
  }
  return {};
}

Expected<int64_t> SpecDecoder::draft_round(const std::vector<int32_t>& hist, int32_t pending, int64_t g,
                                           std::vector<int32_t>& drafts, int32_t* valid_end) {
  const bool self = p_.mode == SpecMode::self;
  int32_t dstart = self ? n_past_ : n_past_draft_;  // the draft cache holds [0, dstart)
  // A draft model behind by more than kCatchUpWindow tokens (plain steps while
  // drafting was off) is fed only the last kCatchUpWindow of them, at their
  // own positions: its cache then skips the ones before. A probe round after
  // G plain steps would otherwise cost a draft pass over G tokens (about a
  // tenth of a target step each with a third-size draft), which made probing
  // cost as much as it could win. Drafts only steer acceptance: the verify
  // decides every token, so the output is the same; the draft's view of the
  // skipped tokens is lost until the end of the generation.
  if (!self && n_past_ - dstart > kCatchUpWindow) dstart = n_past_ - kCatchUpWindow;
  // p_min: a draft below it ends the round's drafting; the first draft is
  // kept (a verify of two rows costs about one decode step), later ones not.
  auto confident = [&](int64_t j) {
    if (p_.p_min <= 0.0f) return true;
    const float* row = draft_logits_.data() + j * V_;
    if (draft_prob(row, drafts[static_cast<size_t>(j)]) >= p_.p_min) return true;
    ++stats_.n_pmin_stops;
    return false;
  };
  batch_tok_.assign(hist.begin() + dstart, hist.end());
  batch_tok_.push_back(pending);
  if (mask_id_ >= 0 && g > 1) {
    // Simultaneous: one pass over [.., pending, mask x (g - 1)].
    g = std::min<int64_t>(g, mask_n_);
    batch_tok_.insert(batch_tok_.end(), static_cast<size_t>(g - 1), mask_id_);
    KESTREL_TRY(draft_step(batch_tok_.data(), static_cast<int32_t>(batch_tok_.size()), dstart, draft_logits_.data(),
                           static_cast<int32_t>(g)));
    // The masks' cells go: the draft cache keeps the real tokens only.
    Context& dc = draft_ ? *draft_ : target_;
    dc.kv().seq_rm(p_.seq_id, n_past_ + 1, -1);
    *valid_end = n_past_ + 1;
    for (int64_t j = 0; j < g; ++j) {
      drafts[static_cast<size_t>(j)] = pick(draft_logits_.data() + j * V_);
      if (!confident(j)) return j > 0 ? j : 1;
    }
    return g;
  }
  KESTREL_TRY(draft_step(batch_tok_.data(), static_cast<int32_t>(batch_tok_.size()), dstart, draft_logits_.data()));
  drafts[0] = pick(draft_logits_.data());
  *valid_end = n_past_ + 1;
  if (g > 1 && !confident(0)) return 1;
  for (int64_t j = 1; j < g; ++j) {
    float* row = draft_logits_.data() + j * V_;
    KESTREL_TRY(draft_step(&drafts[static_cast<size_t>(j - 1)], 1, n_past_ + static_cast<int32_t>(j), row));
    *valid_end = n_past_ + static_cast<int32_t>(j) + 1;
    drafts[static_cast<size_t>(j)] = pick(row);
    if (!confident(j)) return j;  // drafts[j] is not proposed
  }
  return g;
}

// Whether ctx ran a step since n_cold() was `mark` that built a plan or
// captured a graph, on a device: there a new batch shape costs its first two
// uses several steps (plan prepare, then graph capture), and the policy leaves
// such steps out of its clocks (it drops the first time of each kind itself,
// which covers a host plan's build and its cold caches).
static bool cold_since(const Context& ctx, uint64_t mark) { return ctx.on_device() && ctx.n_cold() != mark; }

Status SpecDecoder::generate(const std::vector<int32_t>& prompt, int32_t n_predict, FunctionRef<bool(int32_t)> on_token) {
  stats_ = SpecStats{};
  rng_.seed(p_.seed);  // the same seed and prompt give the same tokens
  const Tokenizer& tok = target_.model().tokenizer();
  const int64_t n_ctx = draft_ ? std::min(target_.n_ctx(), draft_->n_ctx()) : target_.n_ctx();
  if (prompt.empty()) return Status::invalid_argument("empty prompt");
  if (static_cast<int64_t>(prompt.size()) > n_ctx)
    return Status::too_long("the prompt has %zu tokens, the context holds %lld", prompt.size(), (long long)n_ctx);
  const bool self = p_.mode == SpecMode::self;
  const int32_t seq = p_.seq_id;
  target_.kv().seq_rm(seq, 0, -1);
  if (draft_) draft_->kv().seq_rm(seq, 0, -1);
  std::vector<int32_t> prompt_seq;
  try {
    prompt_seq.assign(prompt.size(), seq);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("prompt of %zu tokens", prompt.size());
  }

  std::vector<int32_t> hist(prompt);  // tokens stored in the target cache, in order
  std::vector<int32_t> pos(prompt.size());
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int32_t>(i);
  Stopwatch sw;
  BatchView pb;
  pb.n_tokens = static_cast<int32_t>(prompt.size());
  pb.tokens = prompt.data();
  pb.pos = pos.data();
  pb.seq_id = prompt_seq.data();
  // Greedy with the target on a GPU: the device picks each row's token and only
  // the ids come back (the verify compares them with the drafts).
  PassVariant tpass;
  tpass.ids_out = p_.temperature <= 0.0f && !p_.sigmoid && !p_.track_logprob && target_.on_device();
  KESTREL_TRY(target_.decode(pb, tpass));
  if (draft_) KESTREL_TRY(draft_->decode(pb));
  n_past_ = static_cast<int32_t>(prompt.size());
  n_past_draft_ = n_past_;
  stats_.t_prompt_ns = sw.elapsed_ns();
  sw.reset();

  bool stop = false;
  auto emit = [&](int32_t t, const float* row) {
    if (tok.is_eog(t)) {
      stop = true;
      return;
    }
    if (p_.track_logprob && row) {
      stats_.sum_logprob += log_prob(row, V_, t);
      ++stats_.n_logprob;
    }
    ++stats_.n_generated;
    if (!on_token(t) || (n_predict >= 0 && stats_.n_generated >= n_predict)) stop = true;
  };

  if (n_predict == 0) {
    stats_.t_generate_ns = sw.elapsed_ns();
    return {};
  }
  // The target's token after logits row i (-1: a NaN or infinite logit on the device).
  auto target_pick = [&](int32_t i) { return tpass.ids_out ? target_.greedy_id(i) : pick(target_.logits(i)); };
  int32_t pending = target_pick(0);
  if (pending < 0) return Status::runtime_error("speculative: NaN or Inf in the logits");
  emit(pending, target_.logits(0));
  // A draft pass's share of a target step, from the model sizes: the draft's
  // share of the target's weights (self: of its layers). Greedy rounds use it
  // only until a pass is measured; stochastic rounds keep it (below).
  const double tw = static_cast<double>(target_.model().weight_bytes());
  double pass_ratio = 1.0;
  if (draft_) {
    pass_ratio = tw > 0 ? static_cast<double>(draft_->model().weight_bytes()) / tw : 1.0;
  } else {
    const double n = static_cast<double>(target_.model().hparams().n_layer);
    pass_ratio = n > 0 ? (n - (skip_end_ - skip_begin_ + 1)) / n : 1.0;
  }
  SpecPolicy::Config pc;
  pc.g_max = p_.draft_max;
  pc.g_init = p_.draft_init;
  pc.prior_pass = pass_ratio;
  pc.one_pass_draft = mask_id_ >= 0;
  policy_ = SpecPolicy(pc);
  // Stochastic: the rounds' lengths steer which uniforms are drawn, so they
  // come from model sizes, not clocks (the same seed gives the same tokens):
  // a draft pass costs pass_ratio, a verify row past the first a quarter of a
  // plain step.
  if (p_.temperature > 0.0f) policy_.fix_costs(pass_ratio, 0.25);
  else if (p_.pass_cost > 0.0) policy_.fix_costs(p_.pass_cost, 0.25);
  std::vector<int32_t> drafts(static_cast<size_t>(p_.draft_max));
  SpecVerifyParams vp;
  vp.greedy = p_.temperature <= 0.0f;
  vp.temperature = vp.greedy ? 1.0f : p_.temperature;
  vp.top_k = p_.top_k;
  vp.top_p = p_.top_p;
  vp.sigmoid = p_.sigmoid;
  Status result;
  while (!stop) {
    if (n_past_ >= n_ctx) break;  // no room for the pending token
    int64_t g = std::min<int64_t>(p_.adaptive ? policy_.choose() : p_.draft_max, n_ctx - n_past_ - 1);
    // The round's last emitted token is the op's own (never fed), as in plain
    // decoding, so the cache ends as plain decoding's does.
    if (n_predict >= 0) g = std::min<int64_t>(g, n_predict - stats_.n_generated - 1);
    if (g <= 0) {
      // One plain step (the context or the token budget is nearly used up).
      BatchView one;
      one.n_tokens = 1;
      one.tokens = &pending;
      one.pos = &n_past_;
      one.seq_id = &seq;
      const int64_t tp = now_ns();
      const uint64_t cold = target_.n_cold();
      KESTREL_TRY(target_.decode(one, tpass));
      if (!cold_since(target_, cold)) policy_.plain_step(now_ns() - tp);
      ++stats_.n_plain_steps;
      hist.push_back(pending);
      ++n_past_;
      pending = target_pick(0);
      if (pending < 0) return Status::runtime_error("speculative: NaN or Inf in the logits");
      emit(pending, target_.logits(0));
      continue;
    }
    // Draft g tokens: first catch the draft up to the pending token.
    Context& dc = draft_ ? *draft_ : target_;
    const uint64_t dcold = dc.n_cold();
    const int64_t t0 = now_ns();
    const int64_t passes0 = stats_.n_draft_passes;
    // A draft model behind by plain steps feeds them first: that round's time is no draft pass's.
    const bool catching_up = !self && static_cast<int64_t>(hist.size()) - n_past_draft_ > 2;
    int32_t valid_end = 0;
    Expected<int64_t> drafted = draft_round(hist, pending, g, drafts, &valid_end);
    // Self: drafted positions leave the cache: verify rewrites them with every layer.
    if (self) target_.kv().seq_rm(seq, n_past_, -1);
    KESTREL_TRY(drafted.status());
    g = *drafted;
    const int64_t t1 = now_ns();
    stats_.t_draft_ns += t1 - t0;
    if (!catching_up && !cold_since(dc, dcold)) policy_.drafted(static_cast<int>(stats_.n_draft_passes - passes0), t1 - t0);

    // Verify: [pending, d_0 .. d_(g-1)] at n_past .. n_past + g, every row scored.
    batch_tok_.assign(1, pending);
    batch_tok_.insert(batch_tok_.end(), drafts.begin(), drafts.begin() + g);
    batch_pos_.resize(static_cast<size_t>(g + 1));
    for (int64_t i = 0; i <= g; ++i) batch_pos_[static_cast<size_t>(i)] = n_past_ + static_cast<int32_t>(i);
    BatchView vb;
    vb.n_tokens = static_cast<int32_t>(g + 1);
    vb.tokens = batch_tok_.data();
    vb.pos = batch_pos_.data();
    vb.logits = batch_flags_.data();
    vb.seq_id = batch_seq_.data();
    const uint64_t tcold = target_.n_cold();
    KESTREL_TRY(target_.decode(vb, tpass));
    const bool verify_cold = cold_since(target_, tcold);
    int32_t out[2] = {-1, -1};
    if (tpass.ids_out) {
      // spec_verify's greedy rule on the device's ids.
      int32_t acc = 0;
      while (acc < g && target_.greedy_id(acc) == drafts[static_cast<size_t>(acc)]) ++acc;  // drafts are ids >= 0
      if (target_.greedy_id(acc) >= 0) out[0] = acc, out[1] = target_.greedy_id(acc);
    } else {
      Tensor tl = target_.logits_tensor(0, static_cast<int32_t>(g + 1));
      Tensor ql = make_tensor(DType::F32, draft_logits_.data(), V_, g);
      Tensor ids = make_tensor(DType::I32, drafts.data(), g);
      Tensor ot = make_tensor(DType::I32, out, 2);
      vp.seed = verify_seed_ + static_cast<uint64_t>(stats_.n_rounds) * 0xD1B54A32D192ED03ull;
      KESTREL_TRY(target_.run_op(OpCall{OpId::spec_verify, &ot, {&tl, &ids, &ql}, vp.greedy ? 2 : 3, &vp}));
    }
    if (out[0] < 0) return Status::runtime_error("speculative verify: NaN or Inf in the logits");
    const int32_t a = out[0];
    const int64_t t_verify = now_ns() - t1;
    stats_.t_verify_ns += t_verify;
    if (!verify_cold) policy_.verified(static_cast<int>(g + 1), t_verify);
    policy_.accepted(static_cast<int>(g), a);
    ++stats_.rounds_by_g[std::min<int64_t>(g, 32)];
    ++stats_.n_rounds;
    stats_.n_drafted += g;
    stats_.n_accepted += a;

    // Keep pending + the a accepted drafts; drop the rest from both caches.
    target_.kv().seq_rm(seq, n_past_ + a + 1, -1);
    hist.push_back(pending);
    hist.insert(hist.end(), drafts.begin(), drafts.begin() + a);
    if (draft_) {
      n_past_draft_ = std::min<int32_t>(valid_end, n_past_ + a + 1);
      draft_->kv().seq_rm(seq, n_past_draft_, -1);
    } else {
      n_past_draft_ = n_past_ + a + 1;
    }
    const int32_t round_start = n_past_;
    n_past_ += a + 1;
    for (int32_t i = 0; i < a && !stop; ++i) {
      emit(drafts[static_cast<size_t>(i)], target_.logits(i));
      if (stop) {
        // Stopped at draft i (end of generation, budget or callback): like plain
        // decoding, the caches keep only the tokens before it.
        n_past_ = round_start + i + 1;
        hist.resize(static_cast<size_t>(n_past_));
        target_.kv().seq_rm(seq, n_past_, -1);
        if (draft_) {
          n_past_draft_ = std::min(n_past_draft_, n_past_);
          draft_->kv().seq_rm(seq, n_past_draft_, -1);
        }
      }
    }
    pending = out[1];
    if (!stop) emit(pending, target_.logits(a));
  }
  stats_.t_generate_ns = sw.elapsed_ns();
  return result;
}

}  // namespace kestrel
