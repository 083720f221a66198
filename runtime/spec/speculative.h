// Speculative decoding (DESIGN.md 4.2, 4.3): a cheap draft proposes g tokens,
// the target model scores all of them in one batched forward, and the fused
// spec_verify op keeps the longest acceptable prefix plus one token of its own.
//
// Two drafts share one loop:
//   self   the target itself with a contiguous block of middle layers skipped
//          (S3D-style; no extra weights, one KV cache). `auto` picks the block
//          by measured agreement with the full model on a calibration prompt.
//   draft  a second, smaller model with a compatible vocabulary (its own
//          context and KV cache, kept in step with the target's).
// Drafting is autoregressive: one forward per drafted token. The draft length
// of each round (adaptive) comes from SpecPolicy (spec_policy.h): the g in
// [0, draft_max] with the most expected tokens per measured time, 0 being a
// plain decoding step when drafting does not pay (probed again now and then).
// Greedy rounds use measured times; stochastic ones (whose round lengths steer
// which uniforms are drawn) use costs from the model sizes, so a seed repeats.
// With p_min > 0 a round also stops drafting at the
// first token whose draft probability (top-1 for greedy) is below p_min (the
// token is not proposed; at least one draft is), as llama.cpp's --draft-p-min:
// a verify row costs about half a decode step on a compute-bound host, so
// unlikely drafts are not worth scoring. The choice depends on the draft alone,
// so the exact rule stays exact.
//
// Vocabulary-subset draft head (draft_vocab = N > 0): the draft scores only the
// first N rows of its output matrix (Forward::set_output_rows, a zero-copy
// view) and never proposes an id >= N. For BPE vocabularies ids follow merge
// order, so a prefix is a frequency-ranked subset (bench/spec_vocab_rank.sh
// measures the coverage on calibration text). The target always scores the
// whole vocabulary, so greedy output stays plain greedy's and the stochastic
// rule stays exact (q is 0 outside the subset, the residual covers the rest).
//
// KV state. Target positions [0, n_past) always hold full-model K/V. Self
// drafting writes the non-skipped layers' K/V of positions n_past.. (skipped
// layers write nothing; their cells of those positions hold stale data that
// no draft layer reads). Before verifying, every drafted position is removed
// (seq_rm) and the verify batch rewrites all layers for them; after it, the
// positions past the last accepted token are removed again. So after each
// round the target cache equals what plain decoding of the same tokens stores.
//
// Greedy mode (temperature <= 0) emits the target's greedy tokens as scored
// by the batched verify pass: identical to plain greedy decoding where batched
// and single-token logits agree (F32 models: NMSE ~1e-13), while quantized
// kernels differ more (gemma-3-270m Q4_K_M: NMSE ~1e-3), so there a near-tie
// can flip and the texts part. Stochastic mode uses the exact rule,
// so the output follows the target distribution under temperature / top-k /
// top-p (min-p and repetition penalties are not part of this rule).
//
// Simultaneous (mask-token) drafting: the drafting model's GGUF (the target's
// in self mode, the draft's in draft mode) may carry
//   kestrel.spec.mask_token_id  u32  the id whose trained embedding stands
//                                    for "a token to predict"
//   kestrel.spec.mask_n_predict u32  how many tokens one pass may predict
//                                    (0 or absent: up to draft_max)
// With them (and mask_drafting on), a round drafts in one pass: the batch
// [catch-up tokens.., pending, mask x (g - 1)] at consecutive positions; the
// pending token's row predicts draft 0 and mask row j draft j. The masks' K/V
// cells are removed right after the pass, so the draft cache then holds the
// real tokens up to the pending one. Each draft is drawn from its own row's
// distribution, which is all the exact rule needs (a proposal may ignore the
// earlier drafts), so greedy output and the stochastic rule are unchanged.
// Without the keys drafting is autoregressive: one pass per draft token.
//
//   SpecParams sp;  sp.mode = SpecMode::self;  sp.skip_auto = true;
//   KESTREL_TRY_ASSIGN(auto dec, SpecDecoder::create(*target_ctx, nullptr, sp));
//   KESTREL_TRY(dec->generate(prompt_ids, 128, [&](int32_t tok) { return true; }));
//   dec->stats().mean_accepted();
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "ops/backend.h"
#include "platform/function_ref.h"
#include "platform/status.h"
#include "runtime/engine/context.h"
#include "runtime/model/model.h"
#include "runtime/spec/spec_policy.h"

namespace kestrel {

enum class SpecMode { self, draft };

struct SpecParams {
  SpecMode mode = SpecMode::self;
  int32_t draft_max = 8;      // upper bound of the adaptive draft length, [1, 32]
  int32_t draft_init = 1;     // first draft length, clamped to [1, draft_max]
  bool adaptive = true;       // the draft-length policy (spec_policy.h); false: always draft_max
  // self: skipped layers [skip_begin, skip_end] (inclusive), or auto.
  bool skip_auto = true;
  int32_t skip_begin = -1, skip_end = -1;
  // Sampling: temperature <= 0 is greedy; else the exact stochastic rule.
  float temperature = 0.0f;
  int32_t top_k = 0;          // 0: off
  float top_p = 1.0f;         // 1: off
  uint64_t seed = 0x5eed;
  bool sigmoid = false;       // spec_verify's logistic ablation (not exact)
  bool track_logprob = false; // sum the target log-probability of each emitted token (quality)
  int32_t draft_vocab = 0;    // > 0: the draft scores only ids [0, draft_vocab) (0: all)
  float p_min = 0.0f;         // stop a round's drafting below this draft probability (0: off)
  bool mask_drafting = true;  // draft a round in one pass when the drafting model carries mask tokens
  int32_t seq_id = 0;         // the sequence generate() uses in both contexts' caches (others are untouched)
  // Greedy: > 0 prices a draft pass at this fraction of a target step instead of
  // timing it (as SpecSlotParams::pass_cost), for runs that must not follow the
  // clocks; 0: measured. Stochastic runs always price from model sizes.
  double pass_cost = 0.0;
};

struct SpecStats {
  int64_t n_rounds = 0;     // verify steps
  int64_t n_drafted = 0;    // draft tokens proposed
  int64_t n_accepted = 0;   // draft tokens accepted
  int64_t n_generated = 0;  // tokens emitted
  int64_t t_draft_ns = 0, t_verify_ns = 0, t_generate_ns = 0, t_prompt_ns = 0;
  double sum_logprob = 0.0;  // with track_logprob
  int64_t n_logprob = 0;
  int64_t n_pmin_stops = 0;  // rounds whose drafting p_min cut short
  int64_t n_draft_passes = 0;  // forward passes of the draft (one per round with mask tokens)
  int64_t n_plain_steps = 0;   // plain decoding steps (the policy found drafting not worth it, or no room)
  int64_t rounds_by_g[33] = {};  // verify rounds by the number of drafts they scored
  // Tokens emitted per verify step (accepted drafts + the op's own token).
  double mean_accepted() const { return n_rounds ? double(n_accepted + n_rounds) / double(n_rounds) : 0.0; }
  double acceptance() const { return n_drafted ? double(n_accepted) / double(n_drafted) : 0.0; }
};

// What the model file says about simultaneous drafting.
struct SpecInfo {
  bool has_mask_tokens = false;
  int32_t mask_token_id = -1;
  int32_t mask_n_predict = 0;
};
SpecInfo spec_info(const Model& model);

// Draft-model compatibility: same tokenizer type, vocabulary sizes within
// 128 entries, identical text for every shared id, same BOS/EOS. The error
// names the first difference.
Status check_vocab_compat(const Model& target, const Model& draft);

// One candidate block of the auto search.
struct SkipCandidate {
  int32_t begin = 0, end = 0;   // skipped layers, inclusive
  double agreement = 0.0;       // draft argmax == target argmax, calibration positions
  double est_speedup = 0.0;     // modelled tokens/s ratio at g = 4
};

// Measures contiguous middle blocks (lengths n_layer/8 .. n_layer/2, never
// the first or last layer) on the first 32 calibration tokens: one batched forward of
// the full model, one per candidate with the block skipped, and the fraction
// of positions where both argmaxes agree (the greedy acceptance rate a). The
// model of speed: a draft pass costs (n_layer - skipped) / n_layer of a full
// one, a verify pass one full pass; tokens per round (1 - a^(g+1)) / (1 - a).
// Clears the context's KV cache. The best candidate comes first.
Expected<std::vector<SkipCandidate>> search_skip_block(Context& ctx, const std::vector<int32_t>& calib);

class SpecDecoder {
 public:
  // target: the context generating. draft: the draft model's context (mode
  // draft) or nullptr (mode self). Both contexts must outlive the decoder.
  static Expected<std::unique_ptr<SpecDecoder>> create(Context& target, Context* draft, const SpecParams& params);

  // Decodes the prompt (clearing the caches), then generates until n_predict
  // tokens (< 0: until an end-of-generation token or a full context), an
  // end-of-generation token (not emitted), or on_token returning false.
  Status generate(const std::vector<int32_t>& prompt, int32_t n_predict, FunctionRef<bool(int32_t)> on_token);

  const SpecStats& stats() const { return stats_; }
  // The self mode's skipped block (after auto), inclusive.
  int32_t skip_begin() const { return skip_begin_; }
  int32_t skip_end() const { return skip_end_; }
  // Positions stored in the target cache after generate (for tests).
  int32_t n_past() const { return n_past_; }
  // The mask token id simultaneous drafting uses, -1 when it drafts autoregressively.
  int32_t mask_token() const { return mask_id_; }

 private:
  SpecDecoder(Context& t, Context* d, const SpecParams& p) : target_(t), draft_(d), p_(p), policy_(SpecPolicy::Config{}) {}
  Status prepare_self(const std::vector<int32_t>& prompt);
  // Feeds `n` tokens at positions pos0.. into the draft context (or the target
  // with layers skipped); copies the logits of the last n_rows rows into
  // rows[0..n_rows) (each padded to V).
  Status draft_step(const int32_t* toks, int32_t n, int32_t pos0, float* rows, int32_t n_rows = 1);
  // The round's drafts, up to g (p_min may end it sooner); returns the count and
  // sets *valid_end to the end of the positions the draft cache then holds correctly.
  Expected<int64_t> draft_round(const std::vector<int32_t>& hist, int32_t pending, int64_t g,
                                std::vector<int32_t>& drafts, int32_t* valid_end);
  int32_t pick(const float* row);
  // Probability of id in the draft's distribution (softmax at the sampling
  // temperature, 1 for greedy) over the ids the draft scores.
  float draft_prob(const float* row, int32_t id) const;
  float uniform();

  Context& target_;
  Context* draft_;
  SpecParams p_;
  SpecStats stats_;
  SpecPolicy policy_;
  PassVariant draft_variant_;  // the drafting pass: skipped layers (self), vocabulary subset
  int32_t skip_begin_ = -1, skip_end_ = -1;
  int32_t n_past_ = 0, n_past_draft_ = 0;
  int64_t V_ = 0;
  int64_t dv_ = 0;  // ids the draft scores: [0, dv_)
  std::vector<float> draft_logits_;  // [draft_max][V]
  std::vector<float> work_;          // [V]
  std::vector<int32_t> batch_tok_, batch_pos_, batch_seq_;
  std::vector<int8_t> batch_flags_;
  std::vector<int8_t> draft_flags_;  // logits flags of a draft pass
  int32_t mask_id_ = -1;             // simultaneous drafting: the mask token, -1: off
  int32_t mask_n_ = 0;               // most drafts one pass predicts
  std::mt19937_64 rng_;
  uint64_t verify_seed_ = 0;
};

}  // namespace kestrel
