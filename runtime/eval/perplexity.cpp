#include "runtime/eval/perplexity.h"

#include <algorithm>
#include <cmath>

namespace kestrel::eval {

Expected<ChunkPlan> plan_chunks(PplRule rule, int64_t n_tokens, int32_t n_ctx, int32_t max_chunks, int32_t bos,
                                bool add_bos) {
  if (n_ctx < 2) return Status::invalid_argument("perplexity: a chunk needs at least 2 tokens (n_ctx %d)", n_ctx);
  if (n_tokens < 0) return Status::invalid_argument("perplexity: negative token count");
  ChunkPlan p;
  p.rule = rule;
  p.n_ctx = n_ctx;
  int64_t n_chunk = 0;
  if (rule == PplRule::llama) {
    // llama-perplexity refuses texts shorter than two chunks.
    if (n_tokens < 2 * static_cast<int64_t>(n_ctx))
      return Status::invalid_argument(
          "perplexity: the text has %lld tokens; a context of %d needs at least %lld (two chunks)",
          static_cast<long long>(n_tokens), n_ctx, 2 * static_cast<long long>(n_ctx));
    p.first = n_ctx / 2;
    p.stride = n_ctx;
    p.bos = add_bos ? bos : -1;
    n_chunk = n_tokens / n_ctx;
  } else {
    p.first = 0;
    p.bos = bos;
    p.stride = bos >= 0 ? n_ctx - 1 : n_ctx;
    n_chunk = n_tokens / p.stride;
    if (n_chunk < 1)
      return Status::invalid_argument("perplexity: the text has %lld tokens, fewer than one chunk of %lld (-c %d)",
                                      static_cast<long long>(n_tokens), static_cast<long long>(p.stride), n_ctx);
  }
  if (max_chunks > 0) n_chunk = std::min<int64_t>(n_chunk, max_chunks);
  if (n_chunk > INT32_MAX) return Status::too_long("perplexity: more than 2^31 chunks");
  p.n_chunk = static_cast<int32_t>(n_chunk);
  return p;
}

void chunk_tokens(const ChunkPlan& plan, std::span<const int32_t> tokens, int32_t c, std::vector<int32_t>& ids) {
  const size_t off = static_cast<size_t>(c) * static_cast<size_t>(plan.stride);
  ids.clear();
  if (plan.rule == PplRule::llama) {
    ids.assign(tokens.begin() + static_cast<ptrdiff_t>(off),
               tokens.begin() + static_cast<ptrdiff_t>(off + static_cast<size_t>(plan.n_ctx)));
    if (plan.bos >= 0) ids[0] = plan.bos;
    return;
  }
  if (plan.bos >= 0) ids.push_back(plan.bos);
  ids.insert(ids.end(), tokens.begin() + static_cast<ptrdiff_t>(off),
             tokens.begin() + static_cast<ptrdiff_t>(off + static_cast<size_t>(plan.stride)));
}

RowScore score_row(const float* logits, int32_t n_vocab, int32_t target) {
  RowScore r;
  for (int32_t v = 1; v < n_vocab; ++v)
    if (logits[v] > logits[r.top1]) r.top1 = v;
  const double mx = logits[r.top1];
  double sum = 0.0;
  for (int32_t v = 0; v < n_vocab; ++v) sum += std::exp(static_cast<double>(logits[v]) - mx);
  r.nll = mx + std::log(sum) - static_cast<double>(logits[target]);
  return r;
}

double PplStats::ppl() const { return count > 0 ? std::exp(sum_nll / static_cast<double>(count)) : 0.0; }

double PplStats::ppl_error() const {
  if (count < 2) return 0.0;
  const double n = static_cast<double>(count);
  const double mean = sum_nll / n;
  const double var = sum_nll2 / n - mean * mean;
  return var > 0.0 ? ppl() * std::sqrt(var / (n - 1.0)) : 0.0;
}

}  // namespace kestrel::eval
