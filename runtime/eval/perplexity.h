// Perplexity scoring: how a text is cut into chunks, which positions of a
// chunk are scored, and the running statistic, by two rules.
//
// llama (default): the rule of llama.cpp's llama-perplexity, so that figures
//   compare. The whole text is tokenized once with the model's special tokens
//   (BOS first when the vocabulary adds one), cut into n_chunk = tokens / n_ctx
//   chunks of n_ctx tokens (the text must hold at least 2 * n_ctx tokens); the
//   first token of every chunk is replaced by BOS when the vocabulary adds one;
//   only the second half is scored: the logits at positions n_ctx/2 .. n_ctx-2
//   predict the tokens after them (n_ctx - 1 - n_ctx/2 per chunk).
// score_all: kestrel's earlier rule. The text is tokenized without special
//   tokens and cut into chunks of n_ctx - 1 tokens (n_ctx without a BOS), each
//   decoded as [BOS] + chunk; every position but the last is scored.
//
// Per scored position, nll = logsumexp(logits) - logits[target] (in double);
// ppl = exp(mean nll); its uncertainty, as llama-perplexity prints it,
// ppl * sqrt((mean(nll^2) - mean(nll)^2) / (count - 1)).
//
//   KESTREL_TRY_ASSIGN(ChunkPlan plan, plan_chunks(PplRule::llama, tokens.size(), 512, 4, bos, add_bos));
//   for (int32_t c = 0; c < plan.n_chunk; ++c) {
//     chunk_tokens(plan, tokens, c, ids);          // decode ids, logits at positions >= plan.first
//     for (int32_t p = plan.first; p < plan.n_ctx - 1; ++p)
//       stats.add(score_row(logits(p), n_vocab, ids[p + 1]).nll);
//   }
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "platform/status.h"

namespace kestrel::eval {

enum class PplRule { llama, score_all };

struct ChunkPlan {
  PplRule rule = PplRule::llama;
  int32_t n_ctx = 0;    // tokens decoded per chunk (BOS included)
  int32_t n_chunk = 0;  // chunks scored
  int32_t first = 0;    // first position whose logits are scored
  int64_t stride = 0;   // text tokens consumed per chunk
  int32_t bos = -1;     // the BOS put at a chunk's start, -1: none
  // Positions scored per chunk: first .. n_ctx - 2.
  int32_t n_scored_per_chunk() const { return n_ctx - 1 - first; }
};

// The chunking of n_tokens text tokens (tokenized as the rule says) into
// chunks of n_ctx; max_chunks <= 0: as many as fit. bos: the vocabulary's BOS
// id (-1: none); add_bos: whether the vocabulary adds it. Errors
// (invalid_argument): n_ctx < 2, or too few tokens for the rule (llama: at
// least 2 * n_ctx, as llama-perplexity requires; score_all: one chunk).
Expected<ChunkPlan> plan_chunks(PplRule rule, int64_t n_tokens, int32_t n_ctx, int32_t max_chunks, int32_t bos,
                                bool add_bos);

// ids = the n_ctx tokens decoded for chunk c (0 <= c < plan.n_chunk) of the
// text's tokens. The token scored at position p is ids[p + 1].
void chunk_tokens(const ChunkPlan& plan, std::span<const int32_t> tokens, int32_t c, std::vector<int32_t>& ids);

struct RowScore {
  double nll = 0.0;   // -log softmax(logits)[target]
  int32_t top1 = 0;   // argmax (the first of equal maxima)
};
// Scores one row of logits [n_vocab] against target (in [0, n_vocab)).
RowScore score_row(const float* logits, int32_t n_vocab, int32_t target);

// Running sums of the scored positions.
struct PplStats {
  double sum_nll = 0.0;
  double sum_nll2 = 0.0;
  int64_t count = 0;

  void add(double nll) {
    sum_nll += nll;
    sum_nll2 += nll * nll;
    ++count;
  }
  double ppl() const;    // exp(mean nll); 0 when nothing was scored
  // llama-perplexity's "+/-": ppl * sqrt(var / (count - 1)), var the
  // population variance of nll; 0 for fewer than two positions.
  double ppl_error() const;
};

}  // namespace kestrel::eval
