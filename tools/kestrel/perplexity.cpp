// kestrel perplexity: perplexity of a model on a text file, and how often the
// chosen exp tiers keep the exact tier's top-1 token.
//
// The text is tokenized once (no BOS) and cut into chunks of -c tokens; each
// chunk runs from an empty cache as one batch of [BOS] + its first c - 1
// tokens (c without BOS), every position keeping its logits, and every token
// after the first is scored: nll = logsumexp(logits) - logit[target], the
// log-sum-exp in double. ppl = exp(mean nll); its standard error by the delta
// method, ppl * stddev(nll) / sqrt(N). tokens/s counts the decode time only.
//
// When a tier other than exact is chosen, a second context with every op on
// the exact tier runs the same chunks: top-1 agreement is the fraction of
// scored positions whose argmax equals the exact run's argmax; the exact
// run's ppl is printed beside it, with the mean KL(exact || tier) per
// position (nats) and, of the positions whose argmax changed, the share whose
// exact top-2 logits were within 0.1 of each other (near ties).
//
// stdout: one line per chunk, then a summary line
//   ppl 9.1234 +- 0.1234 | tokens 3584 | 1234.5 tokens/s | top1_vs_exact 0.9876 | exact_ppl 9.1200
//   [| kl_vs_exact 1.2e-05 | flips_near_tie 0.85]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli.h"
#include "device_flags.h"

namespace kcli {
namespace {

struct PplOptions {
  std::string model, file, tokenizer;
  int32_t n_ctx = 512;
  int32_t threads = 0;  // 0: the library's default
  int32_t max_chunks = 0;  // 0: all
  bool no_mmap = false;
  ExpFlags exp;
  DeviceFlags device;
};

using Clock = std::chrono::steady_clock;
using CtxPtr = std::unique_ptr<kestrel_context, void (*)(kestrel_context*)>;

// Per scored position: the negative log-likelihood of the target and the argmax.
struct Scored {
  std::vector<double> nll;
  std::vector<int32_t> top1;
  double t_decode_s = 0.0;
  int64_t n_decoded = 0;
};

kestrel_status make_context(kestrel_model* model, const PplOptions& o, bool exact, kestrel_context** out) {
  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = o.n_ctx;
  cp.n_batch = o.n_ctx;
  if (o.threads > 0) cp.n_threads = o.threads;
  cp.n_threads_batch = 0;
  if (!exact) apply_exp_flags(o.exp, &cp, nullptr);
  apply_device_flags(o.device, &cp);
  return kestrel_context_create(model, &cp, out);
}

// Runs chunk `tokens` (BOS first when the model has one) and appends the
// scores of positions 1.. to s. Returns a status; the caller reports it.
kestrel_status score_chunk(kestrel_context* ctx, int32_t n_vocab, const std::vector<kestrel_token>& tokens,
                           std::vector<int32_t>& pos, std::vector<int8_t>& want, Scored& s) {
  const int32_t n = static_cast<int32_t>(tokens.size());
  if (kestrel_status st = kestrel_kv_seq_rm(ctx, -1, 0, -1); st != KESTREL_OK) return st;
  pos.resize(static_cast<size_t>(n));
  want.assign(static_cast<size_t>(n), 1);
  for (int32_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = i;
  want[static_cast<size_t>(n - 1)] = 0;  // the last token predicts nothing scored
  const kestrel_batch b{n, tokens.data(), pos.data(), nullptr, want.data()};
  const auto t0 = Clock::now();
  if (kestrel_status st = kestrel_decode(ctx, &b); st != KESTREL_OK) return st;
  s.t_decode_s += std::chrono::duration<double>(Clock::now() - t0).count();
  s.n_decoded += n;
  for (int32_t i = 0; i + 1 < n; ++i) {
    const float* l = kestrel_get_logits(ctx, i);
    if (!l) return KESTREL_ERR_INTERNAL;
    int32_t best = 0;
    for (int32_t v = 1; v < n_vocab; ++v)
      if (l[v] > l[best]) best = v;
    double sum = 0.0;
    const double mx = l[best];
    for (int32_t v = 0; v < n_vocab; ++v) sum += std::exp(static_cast<double>(l[v]) - mx);
    const kestrel_token target = tokens[static_cast<size_t>(i + 1)];
    s.nll.push_back(mx + std::log(sum) - static_cast<double>(l[target]));
    s.top1.push_back(best);
  }
  return KESTREL_OK;
}

// KL(exact || tier) per position and the exact margins at changed argmaxes,
// from the logits both contexts hold after decoding the same chunk.
struct Compare {
  double kl_sum = 0.0;
  int64_t n = 0, flips = 0, flips_near_tie = 0;
};

void compare_chunk(kestrel_context* tier, kestrel_context* exact, int32_t n_scored, int32_t n_vocab, Compare& c) {
  for (int32_t i = 0; i < n_scored; ++i) {
    const float* b = kestrel_get_logits(tier, i);
    const float* a = kestrel_get_logits(exact, i);
    if (!a || !b) return;
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
    c.kl_sum += kl;
    c.n += 1;
    if (a1 != b1) {
      float second = -INFINITY;
      for (int32_t v = 0; v < n_vocab; ++v)
        if (v != a1 && a[v] > second) second = a[v];
      c.flips += 1;
      c.flips_near_tie += a[a1] - second < 0.1f ? 1 : 0;
    }
  }
}

struct Summary {
  double ppl, se;
};

Summary summarize(const std::vector<double>& nll, size_t n) {
  double mean = 0.0, var = 0.0;
  for (size_t i = 0; i < n; ++i) mean += nll[i];
  mean /= static_cast<double>(n);
  for (size_t i = 0; i < n; ++i) var += (nll[i] - mean) * (nll[i] - mean);
  var = n > 1 ? var / static_cast<double>(n - 1) : 0.0;
  const double ppl = std::exp(mean);
  return {ppl, ppl * std::sqrt(var / static_cast<double>(n))};
}

int perplexity(const PplOptions& o) {
  std::ifstream in(o.file, std::ios::binary);
  if (!in) return usage_error("-f/--file: cannot open '" + o.file + "'");
  std::stringstream text_buf;
  text_buf << in.rdbuf();
  const std::string text = text_buf.str();

  kestrel_model_params mp = kestrel_model_default_params();
  mp.use_mmap = o.no_mmap ? 0 : 1;
  if (!o.tokenizer.empty()) mp.llama2c_tokenizer = o.tokenizer.c_str();
  kestrel_model* model = nullptr;
  if (int rc = load_model(o.model, mp, &model); rc != kExitOk) return rc;
  std::unique_ptr<kestrel_model, void (*)(kestrel_model*)> model_guard(model, kestrel_model_free);
  const int32_t n_vocab = kestrel_model_n_vocab(model);

  int32_t n_tok = 0;
  kestrel_status st = kestrel_tokenize(model, text.data(), text.size(), 0, 0, nullptr, 0, &n_tok);
  if (st != KESTREL_OK && st != KESTREL_ERR_TOO_LONG) return report(st, "cannot tokenize the text", model);
  std::vector<kestrel_token> all(static_cast<size_t>(n_tok));
  st = kestrel_tokenize(model, text.data(), text.size(), 0, 0, all.data(), n_tok, &n_tok);
  if (st != KESTREL_OK) return report(st, "cannot tokenize the text", model);

  const kestrel_token bos = kestrel_token_bos(model);
  const int32_t per_chunk = bos >= 0 ? o.n_ctx - 1 : o.n_ctx;  // text tokens per chunk
  int32_t n_chunks = n_tok / per_chunk;
  if (o.max_chunks > 0 && n_chunks > o.max_chunks) n_chunks = o.max_chunks;
  if (n_chunks < 1)
    return usage_error("the text has " + std::to_string(n_tok) + " tokens, fewer than one chunk of " +
                       std::to_string(per_chunk) + " (-c " + std::to_string(o.n_ctx) + ")");

  const bool compare = exp_flags_any_quake(o.exp);
  kestrel_context* raw = nullptr;
  if (kestrel_status s = make_context(model, o, false, &raw); s != KESTREL_OK)
    return report(s, "cannot create a context", nullptr);
  CtxPtr ctx(raw, kestrel_context_free);
  CtxPtr ctx_exact(nullptr, kestrel_context_free);
  if (compare) {
    if (kestrel_status s = make_context(model, o, true, &raw); s != KESTREL_OK)
      return report(s, "cannot create the exact-tier context", nullptr);
    ctx_exact.reset(raw);
  }
  std::fprintf(stderr, "kestrel: perplexity of %s: %d tokens, %d chunks of %d, exp tiers: %s\n", o.file.c_str(), n_tok,
               n_chunks, o.n_ctx, exp_flags_summary(o.exp).c_str());

  Scored tier, exact;
  Compare cmp;
  std::vector<kestrel_token> chunk;
  std::vector<int32_t> pos;
  std::vector<int8_t> want;
  for (int32_t c = 0; c < n_chunks; ++c) {
    chunk.clear();
    if (bos >= 0) chunk.push_back(bos);
    const size_t off = static_cast<size_t>(c) * static_cast<size_t>(per_chunk);
    chunk.insert(chunk.end(), all.begin() + static_cast<ptrdiff_t>(off),
                 all.begin() + static_cast<ptrdiff_t>(off + static_cast<size_t>(per_chunk)));
    if (kestrel_status s = score_chunk(ctx.get(), n_vocab, chunk, pos, want, tier); s != KESTREL_OK)
      return report(s, "decode failed", ctx.get());
    if (compare) {
      if (kestrel_status s = score_chunk(ctx_exact.get(), n_vocab, chunk, pos, want, exact); s != KESTREL_OK)
        return report(s, "decode failed (exact tier)", ctx_exact.get());
      compare_chunk(ctx.get(), ctx_exact.get(), static_cast<int32_t>(chunk.size()) - 1, n_vocab, cmp);
    }
    if (stop_requested()) {
      std::fprintf(stderr, "kestrel: interrupted\n");
      return kExitInterrupted;
    }
    const Summary so_far = summarize(tier.nll, tier.nll.size());
    std::printf("[%d/%d] ppl %.4f\n", c + 1, n_chunks, so_far.ppl);
    std::fflush(stdout);
  }

  const size_t n = tier.nll.size();
  const Summary s = summarize(tier.nll, n);
  const double tps = tier.t_decode_s > 0.0 ? static_cast<double>(tier.n_decoded) / tier.t_decode_s : 0.0;
  std::printf("ppl %.4f +- %.4f | tokens %zu | %.1f tokens/s", s.ppl, s.se, n, tps);
  if (compare) {
    size_t agree = 0;
    for (size_t i = 0; i < n; ++i) agree += tier.top1[i] == exact.top1[i] ? 1 : 0;
    const Summary se = summarize(exact.nll, n);
    std::printf(" | top1_vs_exact %.4f | exact_ppl %.4f", static_cast<double>(agree) / static_cast<double>(n), se.ppl);
    std::printf(" | kl_vs_exact %.3g | flips_near_tie %.2f", cmp.n ? cmp.kl_sum / static_cast<double>(cmp.n) : 0.0,
                cmp.flips ? static_cast<double>(cmp.flips_near_tie) / static_cast<double>(cmp.flips) : 0.0);
  } else {
    std::printf(" | top1_vs_exact 1.0000 | exact_ppl %.4f", s.ppl);
  }
  std::printf("\n");
  return std::fflush(stdout) == 0 ? kExitOk : kExitRuntime;
}

}  // namespace

Command add_perplexity(CLI::App& app) {
  auto o = std::make_shared<PplOptions>();
  CLI::App* sub = app.add_subcommand("perplexity", "perplexity on a text file, and top-1 agreement of exp tiers");
  sub->add_option("-m,--model", o->model, "model file (GGUF, or llama2.c .bin with --tokenizer)")->required();
  sub->add_option("-f,--file", o->file, "text file")->required();
  sub->add_option("-c,--ctx-size", o->n_ctx, "tokens per chunk, BOS included (default 512)")
      ->check(CLI::Range(2, 1 << 16));
  sub->add_option("-t,--threads", o->threads, "threads")->check(CLI::Range(1, 1024));
  sub->add_option("--chunks", o->max_chunks, "at most this many chunks (0: all)")->check(CLI::Range(0, 1 << 20));
  sub->add_option("--tokenizer", o->tokenizer, "tokenizer.bin for a llama2.c .bin model");
  sub->add_flag("--no-mmap", o->no_mmap, "read the model into memory instead of mapping it");
  add_device_flags(sub, o->device);
  add_exp_flags(sub, o->exp);
  return {sub, [o] { return perplexity(*o); }};
}

}  // namespace kcli
