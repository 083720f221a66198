// Sampler: picks the next token from a row of logits with a fixed chain
//   repetition penalty -> top-k -> temperature -> top-p -> min-p -> draw
// or, when temperature <= 0, repetition penalty -> argmax (greedy).
//
// Seeded and reproducible: the sampler owns its RNG (mt19937_64, with the
// uniform variate built from its raw bits, so the draws do not depend on the
// standard library's distribution classes) and the same seed, parameters and
// logits give the same tokens on every run of the same build.
//
// Buffers are sized once for the vocabulary in init(): sampling a token never
// touches the heap. top-k keeps a k-entry heap in one pass over the logits
// (O(n_vocab), no sort of the vocabulary); top-p without top-k
// uses a histogram of the logits and sorts only the bin where the cut falls.
//
// Parameter rule (../shared/BAD-INPUTS.md row 19), applied by normalize():
//   - NaN or infinite temperature / top_p / min_p / repeat_penalty: invalid_argument.
//   - temperature <= 0: greedy.
//   - top_k <= 0: off; top_k >= n_vocab: off (clamped to the vocabulary).
//   - top_p >= 1: off; top_p <= 0: clamped to 0, i.e. only the most probable
//     token survives (top-p always keeps at least one token).
//   - min_p <= 0: off; min_p > 1: clamped to 1 (only tokens tied with the most
//     probable one survive).
//   - repeat_penalty < 0: invalid_argument; 0 is invalid too (it would divide
//     by zero); 1 is off. repeat_last_n < 0 or > kMaxRepeatLastN: invalid_argument;
//     0 turns the penalty off.
// Logits with NaN or Inf are a runtime_error, never a silent token.
//
// The softmax's exp over the candidates runs on the tiered row kernels
// (ops/cpu/exp_row.h) with params.exp (default exact; an unknown tier is
// invalid_argument): quake2 changes each probability by at most about 0.53%
// relative (twice the tier's 0.27% exp bound, after normalization), quake1 by
// about 6%. Probabilities are relative to the top token's exp(0) of the tier.
//
//   Sampler s;
//   KESTREL_TRY(s.init(n_vocab, params));
//   KESTREL_TRY_ASSIGN(int32_t tok, s.sample(logits));
//   s.accept(tok);
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "ops/exp_tier.h"
#include "ops/op_table.h"
#include "platform/status.h"

namespace kestrel {

inline constexpr int32_t kMaxRepeatLastN = 1 << 20;

struct SamplerParams {
  float temperature = 0.8f;    // <= 0: greedy
  int32_t top_k = 40;          // <= 0: off
  float top_p = 0.95f;         // 1: off
  float min_p = 0.05f;         // 0: off
  float repeat_penalty = 1.0f; // 1: off
  int32_t repeat_last_n = 64;  // tokens of history the penalty looks at
  uint64_t seed = 0x5eed;
  ExpTier exp = ExpTier::exact;  // exp tier of the softmax over the vocabulary
};

// Applies the parameter rule above for a vocabulary of n_vocab tokens.
Expected<SamplerParams> normalize_sampler_params(const SamplerParams& p, int32_t n_vocab);

class Sampler {
 public:
  // Sizes the buffers for n_vocab (out_of_memory when that fails) and seeds
  // the RNG. Errors: n_vocab < 1, parameters outside the rule.
  Status init(int32_t n_vocab, const SamplerParams& params);

  // Picks a token from logits[n_vocab]. Errors: not initialized
  // (invalid_argument), NaN/Inf logits (runtime_error, naming the first id).
  Expected<int32_t> sample(const float* logits);
  // The distribution sample() draws from: probs[n_vocab] gets each token's
  // probability after the whole chain (0 for filtered tokens; greedy: one-hot).
  // Does not draw or touch the RNG. Same errors as sample().
  Status distribution(const float* logits, float* probs);

  // Records a generated (or prompt) token in the penalty's history. Ids
  // outside the vocabulary are recorded but never penalize anything.
  void accept(int32_t token);
  // Clears the history and reseeds the RNG with the original seed.
  void reset();

  const SamplerParams& params() const { return params_; }
  int32_t n_vocab() const { return n_vocab_; }
  // Greedy without a repetition penalty: the token is the logits' argmax alone
  // (lowest id on ties), which the backend that computed them can pick
  // (PassVariant::ids_out).
  bool plain_greedy() const {
    return params_.temperature <= 0.0f && (params_.repeat_penalty == 1.0f || params_.repeat_last_n == 0);
  }
  // Whether the sample op (ops/op_table.h) draws as sample() does: top-k on
  // (at most kSampleMaxK), the exact exp tier, no repetition penalty, a
  // temperature whose inverse a float holds. Then *out gets its parameters and
  // a backend can draw where it computed the logits, with next_uniform().
  bool op_params(SampleParams* out) const;
  // The uniform sample() would draw next, advancing the generator as it does.
  double next_uniform() { return uniform(); }

 private:
  struct Candidate {
    float logit;
    float prob;  // exp((logit - max) / temperature), unnormalized
    int32_t id;
    uint32_t bin;  // top-p histogram bin (unsorted path only)
  };

  // The chain up to the draw: the greedy token, or -1 with the n_kept
  // surviving candidates (unnormalized prob) at the front of cand_ and their sum.
  Expected<int32_t> filter(const float* logits, size_t* n_kept, double* kept_sum);
  void mark_penalized();
  size_t apply_top_p(size_t n, double sum, bool sorted, float max_logit);
  double uniform();  // in [0, 1)

  SamplerParams params_;
  int32_t n_vocab_ = 0;
  std::mt19937_64 rng_;
  std::vector<Candidate> cand_;     // [n_vocab] working set
  std::vector<float> row_;          // [n_vocab] scaled logits, then their exp (one row kernel call)
  static constexpr size_t kTopPBins = 4096;
  std::vector<double> bin_mass_;    // [kTopPBins] top-p histogram
  std::vector<uint32_t> seen_;      // [n_vocab] stamp per id: dedups the penalty history
  uint32_t stamp_ = 0;
  bool penalized_ = false;          // this call applies the penalty to the stamped ids
  std::vector<int32_t> history_;    // ring of the last repeat_last_n tokens
  size_t history_head_ = 0, history_size_ = 0;
};

}  // namespace kestrel
