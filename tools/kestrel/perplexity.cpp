// kestrel perplexity: perplexity of a model on a text file by llama-perplexity's
// rule (or every position with --score-all), llama.cpp's logits file written
// (--kl-divergence-base FILE) or compared with (--kl-divergence), and, when an
// exp tier other than exact is chosen, how that tier compares with the exact one.
// The rules and statistics live in the library (kestrel/eval.h); this file
// parses flags and prints.
//
// stdout, perplexity: llama-perplexity's running values and final estimate, then
// kestrel's summary line
//   [1]9.1234,[2]9.4321,...,
//   Final estimate: PPL = 9.1234 +/- 0.12345
//   ppl 9.1234 +- 0.1234 | tokens 1020 | 1234.5 tokens/s | top1_vs_exact 0.9876 | exact_ppl 9.1200
//   [| kl_vs_exact 1.2e-05 | flips_near_tie 0.85]
// (top1_vs_exact: share of scored positions whose argmax equals the exact
// tier's; kl_vs_exact: mean KL(exact || tier) in nats; flips_near_tie: of the
// changed argmaxes, the share whose exact top-2 logits were within 0.1.)
// stdout, --kl-divergence: llama-perplexity's per-chunk table and its
// perplexity, KL divergence and token probability statistics.
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <kestrel/eval.h>

#include "cli.h"
#include "device_flags.h"

namespace kcli {
namespace {

struct PplOptions {
  std::string model, file, tokenizer;
  int32_t n_ctx = 512;
  int32_t threads = 0;     // 0: the library's default
  int32_t max_chunks = 0;  // 0: all
  bool no_mmap = false;
  bool score_all = false;
  std::string kl_base;     // --kl-divergence-base
  bool kl_divergence = false;
  bool ctx_given = false;
  ExpFlags exp;
  DeviceFlags device;
};

using CtxPtr = std::unique_ptr<kestrel_context, void (*)(kestrel_context*)>;

kestrel_status make_context(kestrel_model* model, const PplOptions& o, int32_t n_ctx, bool exact,
                            kestrel_context** out) {
  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = n_ctx;
  cp.n_batch = n_ctx;
  if (o.threads > 0) cp.n_threads = o.threads;
  cp.n_threads_batch = 0;
  if (!exact) apply_exp_flags(o.exp, &cp, nullptr);
  apply_device_flags(o.device, &cp);
  return kestrel_context_create(model, &cp, out);
}

// The per-chunk row of llama-perplexity --kl-divergence.
void print_kl_row(const kestrel_ppl_result& r) {
  const kestrel_kl_stats& k = r.kl;
  std::printf("%4d", r.chunks_done);
  std::printf("    %9.4lf ± %9.4lf", k.ppl, k.ppl_unc);
  std::printf("    %10.5lf ± %10.5lf", k.log_ppl_ratio, k.log_ppl_ratio_unc);
  std::printf("    %10.5lf ± %10.5lf", k.kld, k.kld_unc);
  std::printf("    %6.3lf ± %6.3lf %%", 100.0 * k.rms_p_diff, 100.0 * k.rms_p_diff_unc);
  std::printf("    %6.3lf ± %6.3lf %%\n", 100.0 * k.same_top, 100.0 * k.same_top_unc);
}

void print_kl_summary(const kestrel_kl_stats& k) {
  std::printf("\n====== Perplexity statistics ======\n");
  std::printf("Mean PPL(Q)                   : %10.6lf ± %10.6lf\n", k.ppl, k.ppl_unc);
  std::printf("Mean PPL(base)                : %10.6lf ± %10.6lf\n", k.ppl_base, k.ppl_base_unc);
  std::printf("Cor(ln(PPL(Q)), ln(PPL(base))): %6.2lf%%\n", 100.0 * k.log_ppl_cor);
  std::printf("Mean ln(PPL(Q)/PPL(base))     : %10.6lf ± %10.6lf\n", k.log_ppl_ratio, k.log_ppl_ratio_unc);
  std::printf("Mean PPL(Q)/PPL(base)         : %10.6lf ± %10.6lf\n", k.ppl_ratio, k.ppl_ratio_unc);
  std::printf("Mean PPL(Q)-PPL(base)         : %10.6lf ± %10.6lf\n", k.ppl_diff, k.ppl_diff_unc);
  std::printf("\n====== KL divergence statistics ======\n");
  std::printf("Mean    KLD: %10.6lf ± %10.6lf\n", k.kld, k.kld_unc);
  static const char* kKldNames[11] = {"Maximum KLD", "99.9%   KLD", "99.0%   KLD", "95.0%   KLD",
                                      "90.0%   KLD", "Median  KLD", "10.0%   KLD", " 5.0%   KLD",
                                      " 1.0%   KLD", " 0.1%   KLD", "Minimum KLD"};
  for (int i = 0; i < 11; ++i) std::printf("%s: %10.6f\n", kKldNames[i], k.kld_pct[i]);
  std::printf("\n====== Token probability statistics ======\n");
  std::printf("Mean    Δp: %6.3lf ± %5.3lf %%\n", 100.0 * k.p_diff, 100.0 * k.p_diff_unc);
  static const char* kDpNames[13] = {"Maximum Δp", "99.9%   Δp", "99.0%   Δp", "95.0%   Δp", "90.0%   Δp",
                                     "75.0%   Δp", "Median  Δp", "25.0%   Δp", "10.0%   Δp", " 5.0%   Δp",
                                     " 1.0%   Δp", " 0.1%   Δp", "Minimum Δp"};
  for (int i = 0; i < 13; ++i) std::printf("%s: %6.3lf%%\n", kDpNames[i], 100.0 * k.p_diff_pct[i]);
  std::printf("RMS Δp    : %6.3lf ± %5.3lf %%\n", 100.0 * k.rms_p_diff, 100.0 * k.rms_p_diff_unc);
  std::printf("Same top p: %6.3lf ± %5.3lf %%\n", 100.0 * k.same_top, 100.0 * k.same_top_unc);
}

int on_chunk(const kestrel_ppl_result* r, void* user) {
  const bool kl = *static_cast<const bool*>(user);
  if (kl) {
    if (r->chunks_done == 1)
      std::printf("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p\n");
    print_kl_row(*r);
  } else {
    std::printf("[%d]%.4lf,", r->chunks_done, r->ppl);
  }
  std::fflush(stdout);
  return stop_requested() ? 0 : 1;
}

int perplexity(const PplOptions& o) {
  if (o.kl_divergence && o.kl_base.empty())
    return usage_error("--kl-divergence: give the base logits file with --kl-divergence-base FILE");
  if (o.score_all && !o.kl_base.empty())
    return usage_error("--score-all: logits files follow llama-perplexity's rule; drop --score-all");
  if (o.file.empty() && !o.kl_divergence) return usage_error("-f/--file: a text file is required");
  std::string text;
  if (!o.file.empty()) {
    std::ifstream in(o.file, std::ios::binary);
    if (!in) return usage_error("-f/--file: cannot open '" + o.file + "'");
    std::stringstream text_buf;
    text_buf << in.rdbuf();
    text = text_buf.str();
  }
  int32_t n_ctx = o.n_ctx;
  if (o.kl_divergence) {
    int32_t file_ctx = 0;
    if (kestrel_status s = kestrel_logits_file_info(o.kl_base.c_str(), &file_ctx, nullptr, nullptr); s != KESTREL_OK)
      return report(s, "cannot read the logits file", nullptr);
    if (o.ctx_given && file_ctx != o.n_ctx)
      return usage_error("-c " + std::to_string(o.n_ctx) + ": the logits file was made with -c " +
                         std::to_string(file_ctx));
    n_ctx = file_ctx;
  }

  kestrel_model_params mp = kestrel_model_default_params();
  mp.use_mmap = o.no_mmap ? 0 : 1;
  if (!o.tokenizer.empty()) mp.llama2c_tokenizer = o.tokenizer.c_str();
  kestrel_model* model = nullptr;
  if (int rc = load_model(o.model, mp, &model); rc != kExitOk) return rc;
  std::unique_ptr<kestrel_model, void (*)(kestrel_model*)> model_guard(model, kestrel_model_free);

  const bool compare = exp_flags_any_quake(o.exp) && !o.kl_divergence;
  kestrel_context* raw = nullptr;
  if (kestrel_status s = make_context(model, o, n_ctx, false, &raw); s != KESTREL_OK)
    return report(s, "cannot create a context", nullptr);
  CtxPtr ctx(raw, kestrel_context_free);
  CtxPtr ctx_exact(nullptr, kestrel_context_free);
  if (compare) {
    if (kestrel_status s = make_context(model, o, n_ctx, true, &raw); s != KESTREL_OK)
      return report(s, "cannot create the exact-tier context", nullptr);
    ctx_exact.reset(raw);
  }
  std::fprintf(stderr, "kestrel: perplexity of %s: chunks of %d, %s, exp tiers: %s\n",
               o.kl_divergence ? o.kl_base.c_str() : o.file.c_str(), n_ctx,
               o.score_all ? "every position scored" : "llama-perplexity's rule (second half scored)",
               exp_flags_summary(o.exp).c_str());

  kestrel_ppl_params pp = kestrel_ppl_default_params();
  pp.n_ctx = n_ctx;
  pp.n_chunks = o.max_chunks;
  pp.score_all = o.score_all ? 1 : 0;
  if (!o.kl_base.empty()) (o.kl_divergence ? pp.kl_base_in : pp.kl_base_out) = o.kl_base.c_str();
  kestrel_ppl_result r;
  bool kl_mode = o.kl_divergence;
  const kestrel_status st = kestrel_perplexity(ctx.get(), ctx_exact.get(), text.data(), text.size(), &pp, on_chunk,
                                               &kl_mode, &r);
  if (st == KESTREL_ERR_CANCELLED && stop_requested()) {
    std::fprintf(stderr, "\nkestrel: interrupted\n");
    return kExitInterrupted;
  }
  if (st != KESTREL_OK) return report(st, "perplexity failed", ctx.get());

  if (o.kl_divergence) {
    print_kl_summary(r.kl);
  } else {
    std::printf("\nFinal estimate: PPL = %.4lf +/- %.5lf\n", r.ppl, r.ppl_error);
    const double tps = r.t_decode_ms > 0.0 ? static_cast<double>(r.n_decoded) / (r.t_decode_ms * 1e-3) : 0.0;
    std::printf("ppl %.4f +- %.4f | tokens %lld | %.1f tokens/s", r.ppl, r.ppl_error, static_cast<long long>(r.n_scored),
                tps);
    if (compare)
      std::printf(" | top1_vs_exact %.4f | exact_ppl %.4f | kl_vs_exact %.3g | flips_near_tie %.2f", r.top1_vs_ref,
                  r.ref_ppl, r.kl_vs_ref, r.flips_near_tie);
    else
      std::printf(" | top1_vs_exact 1.0000 | exact_ppl %.4f", r.ppl);
    std::printf("\n");
    if (!o.kl_base.empty()) std::fprintf(stderr, "kestrel: wrote the logits of %d chunks to %s\n", r.n_chunks, o.kl_base.c_str());
  }
  return std::fflush(stdout) == 0 ? kExitOk : kExitRuntime;
}

}  // namespace

Command add_perplexity(CLI::App& app) {
  auto o = std::make_shared<PplOptions>();
  CLI::App* sub = app.add_subcommand(
      "perplexity", "perplexity on a text file (llama-perplexity's rule), KL divergence against a logits file");
  sub->add_option("-m,--model", o->model, "model file (GGUF, or llama2.c .bin with --tokenizer)")->required();
  sub->add_option("-f,--file", o->file, "text file (optional with --kl-divergence: checked against the file's tokens)");
  sub->add_option("-c,--ctx-size", o->n_ctx, "tokens per chunk, BOS included (default 512)")
      ->check(CLI::Range(2, 1 << 16))
      ->each([o](const std::string&) { o->ctx_given = true; });
  sub->add_option("-t,--threads", o->threads, "threads")->check(CLI::Range(1, 1024));
  sub->add_option("--chunks", o->max_chunks, "at most this many chunks (0: all)")->check(CLI::Range(0, 1 << 20));
  sub->add_flag("--score-all", o->score_all,
                "kestrel's older rule: the text without BOS in chunks of c-1 tokens after a BOS, every position scored");
  sub->add_option("--kl-divergence-base", o->kl_base,
                  "llama.cpp logits file: written by this run, or read with --kl-divergence");
  sub->add_flag("--kl-divergence", o->kl_divergence,
                "compare with the --kl-divergence-base file (its tokens and chunks) and print KL statistics");
  sub->add_option("--tokenizer", o->tokenizer, "tokenizer.bin for a llama2.c .bin model");
  sub->add_flag("--no-mmap", o->no_mmap, "read the model into memory instead of mapping it");
  add_device_flags(sub, o->device);
  add_exp_flags(sub, o->exp);
  return {sub, [o] { return perplexity(*o); }};
}

}  // namespace kcli
