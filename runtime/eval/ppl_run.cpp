#include "runtime/eval/ppl_run.h"

#include <chrono>
#include <cmath>
#include <memory>
#include <vector>

#include "runtime/eval/logits_file.h"
#include "runtime/tokenizer/tokenizer.h"

namespace kestrel::eval {

namespace {

// KL(reference || context) of one position, and whether the reference's top
// two logits are within 0.1 (a near tie) when the argmaxes differ.
void compare_row(const float* a, const float* b, int32_t n_vocab, RefCompare& c) {
  int32_t a1 = 0, b1 = 0;
  for (int32_t v = 1; v < n_vocab; ++v) {
    if (a[v] > a[a1]) a1 = v;
    if (b[v] > b[b1]) b1 = v;
  }
  double za = 0.0, zb = 0.0;
  for (int32_t v = 0; v < n_vocab; ++v) {
    za += std::exp(static_cast<double>(a[v]) - a[a1]);
    zb += std::exp(static_cast<double>(b[v]) - b[b1]);
  }
  const double lza = std::log(za) + a[a1], lzb = std::log(zb) + b[b1];
  double kl = 0.0;
  for (int32_t v = 0; v < n_vocab; ++v) {
    const double la = a[v] - lza, lb = b[v] - lzb;
    kl += std::exp(la) * (la - lb);
  }
  c.sum_kl += kl;
  if (a1 == b1) {
    c.n_same_top += 1;
    return;
  }
  float second = -INFINITY;
  for (int32_t v = 0; v < n_vocab; ++v)
    if (v != a1 && a[v] > second) second = a[v];
  c.n_flips += 1;
  c.n_flips_near_tie += a[a1] - second < 0.1f ? 1 : 0;
}

Status decode_chunk(Context& ctx, const std::vector<int32_t>& ids, const std::vector<int32_t>& pos,
                    const std::vector<int8_t>& want) {
  ctx.kv().seq_rm(-1, 0, -1);
  BatchView b;
  b.n_tokens = static_cast<int32_t>(ids.size());
  b.tokens = ids.data();
  b.pos = pos.data();
  b.logits = want.data();
  return ctx.decode(b);
}

}  // namespace

Expected<PplRunResult> run_perplexity(Context& ctx, Context* ref_ctx, std::string_view text, const PplRunParams& p,
                                      PplChunkFn on_chunk) {
  const Tokenizer& tok = ctx.model().tokenizer();
  const VocabData& vocab = tok.vocab();
  const int32_t n_vocab = tok.n_vocab();
  const bool llama_rule = p.rule == PplRule::llama;
  const bool kl_in = !p.kl_base_in.empty(), kl_out = !p.kl_base_out.empty();
  if ((kl_in || kl_out) && !llama_rule)
    return Status::invalid_argument("perplexity: KL divergence files use llama-perplexity's rule, not score-all");
  if (kl_in && kl_out) return Status::invalid_argument("perplexity: read a logits file or write one, not both");
  // llama-perplexity refuses vocabularies that append EOS; its chunks would differ.
  if (llama_rule && vocab.add_eos)
    return Status::unsupported("perplexity: the vocabulary appends EOS to the text, which llama-perplexity's rule does not allow");

  PplRunResult r;
  std::vector<int32_t> tokens;
  if (!text.empty() || !kl_in) KESTREL_TRY(tok.encode(text, llama_rule, false, tokens));
  std::unique_ptr<LogitsReader> reader;
  if (kl_in) {
    KESTREL_TRY_ASSIGN(reader, LogitsReader::open(p.kl_base_in, n_vocab));
    const LogitsHeader& h = reader->header();
    if (!tokens.empty()) {
      // The file's chunks must be this text's: compare the tokens it scored.
      if (tokens.size() < h.tokens.size())
        return Status::bad_file("logits file '%s' holds %zu tokens; the text has only %zu", p.kl_base_in.c_str(),
                                h.tokens.size(), tokens.size());
      for (size_t i = 0; i < h.tokens.size(); ++i)
        if (tokens[i] != h.tokens[i])
          return Status::bad_file("logits file '%s' was made from another text or tokenizer: token %zu is %d there, %d here",
                                  p.kl_base_in.c_str(), i, h.tokens[i], tokens[i]);
    }
    tokens = h.tokens;
    r.plan.rule = PplRule::llama;
    r.plan.n_ctx = h.n_ctx;
    r.plan.n_chunk = p.max_chunks > 0 && p.max_chunks < h.n_chunk ? p.max_chunks : h.n_chunk;
    r.plan.first = h.n_ctx / 2;
    r.plan.stride = h.n_ctx;
    r.plan.bos = tok.add_bos() ? tok.bos() : -1;
    r.has_kl = true;
  } else {
    KESTREL_TRY_ASSIGN(r.plan, plan_chunks(p.rule, static_cast<int64_t>(tokens.size()), p.n_ctx, p.max_chunks,
                                           tok.bos(), tok.add_bos()));
  }
  r.n_text_tokens = static_cast<int64_t>(tokens.size());
  const ChunkPlan& plan = r.plan;
  for (Context* c : {&ctx, ref_ctx})
    if (c && c->n_ctx() < plan.n_ctx)
      return Status::invalid_argument("perplexity: chunks of %d tokens need a context of as many cells (it has %lld)",
                                      plan.n_ctx, static_cast<long long>(c->n_ctx()));
  r.has_ref = ref_ctx != nullptr;

  std::unique_ptr<LogitsWriter> writer;
  if (kl_out) {
    LogitsHeader h;
    h.n_ctx = plan.n_ctx;
    h.n_vocab = n_vocab;
    h.n_chunk = plan.n_chunk;
    h.tokens.assign(tokens.begin(), tokens.begin() + static_cast<ptrdiff_t>(plan.n_chunk) * plan.n_ctx);
    KESTREL_TRY_ASSIGN(writer, LogitsWriter::create(p.kl_base_out, h));
  }

  const int32_t n_rows = plan.n_scored_per_chunk();
  const int64_t row_u16 = logprob_row_u16(n_vocab);
  std::vector<uint16_t> rows;
  if (kl_out) rows.resize(static_cast<size_t>(n_rows * row_u16));
  std::vector<int32_t> ids, pos(static_cast<size_t>(plan.n_ctx));
  std::vector<int8_t> want(static_cast<size_t>(plan.n_ctx), 0);
  for (int32_t i = 0; i < plan.n_ctx; ++i) {
    pos[static_cast<size_t>(i)] = i;
    // The last position predicts nothing inside the chunk.
    want[static_cast<size_t>(i)] = i >= plan.first && i + 1 < plan.n_ctx ? 1 : 0;
  }
  for (int32_t c = 0; c < plan.n_chunk; ++c) {
    chunk_tokens(plan, tokens, c, ids);
    const auto t0 = std::chrono::steady_clock::now();
    KESTREL_TRY(decode_chunk(ctx, ids, pos, want));
    r.t_decode_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.n_decoded += plan.n_ctx;
    if (ref_ctx) KESTREL_TRY(decode_chunk(*ref_ctx, ids, pos, want));
    if (reader) KESTREL_TRY(reader->read_chunk(rows));
    for (int32_t k = 0; k < n_rows; ++k) {
      const float* logits = ctx.logits(k);
      if (!logits) return Status::internal("perplexity: missing logits row %d", k);
      const int32_t target = ids[static_cast<size_t>(plan.first + k + 1)];
      const RowScore s = score_row(logits, n_vocab, target);
      if (!std::isfinite(s.nll))
        return Status::runtime_error("perplexity: NaN or Inf logits in chunk %d at position %d", c, plan.first + k);
      r.stats.add(s.nll);
      if (writer) (void)encode_logprob_row(logits, n_vocab, target, rows.data() + k * row_u16);
      if (reader) r.kl.add(kl_row(logits, n_vocab, rows.data() + k * row_u16, target));
      if (ref_ctx) {
        const float* ref = ref_ctx->logits(k);
        if (!ref) return Status::internal("perplexity: missing reference logits row %d", k);
        const RowScore rs = score_row(ref, n_vocab, target);
        if (!std::isfinite(rs.nll))
          return Status::runtime_error("perplexity: NaN or Inf reference logits in chunk %d at position %d", c,
                                       plan.first + k);
        r.ref.stats.add(rs.nll);
        compare_row(ref, logits, n_vocab, r.ref);
      }
    }
    if (writer) KESTREL_TRY(writer->write_rows(rows.data(), n_rows));
    r.chunks_done = c + 1;
    if (!on_chunk(r)) return Status::cancelled("perplexity: stopped after chunk %d", c + 1);
  }
  if (writer) KESTREL_TRY(writer->finish());
  return r;
}

}  // namespace kestrel::eval
