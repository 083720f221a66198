// kestrel run --spec self|draft: speculative decoding flags and the run path
// that uses kestrel_generate_spec. Prints drafted, accepted, mean accepted
// length and tokens/s on stderr after the timing summary.
//
//   kestrel run -m target.gguf -p "..." --spec self --spec-skip auto
//   kestrel run -m target.gguf -md draft.gguf --spec draft --draft-max 8
#include <cstdio>
#include <memory>
#include <string>

#include "cli.h"
#include "step_trace.h"

namespace kcli {

namespace {

// "A-B" -> [A, B]; false with a message on anything else.
bool parse_skip(const std::string& text, int32_t* begin, int32_t* end, std::string& err) {
  if (text == "auto") {
    *begin = *end = -1;
    return true;
  }
  const size_t dash = text.find('-');
  try {
    size_t used = 0;
    if (dash == std::string::npos || dash == 0) throw std::invalid_argument("no range");
    const long a = std::stol(text.substr(0, dash), &used);
    if (used != dash) throw std::invalid_argument("trailing");
    const std::string rest = text.substr(dash + 1);
    const long b = std::stol(rest, &used);
    if (used != rest.size() || a < 0 || b < a || b > 100000) throw std::invalid_argument("range");
    *begin = static_cast<int32_t>(a);
    *end = static_cast<int32_t>(b);
    return true;
  } catch (const std::exception&) {
    err = "--spec-skip: '" + text + "' is not auto or a layer range A-B (0 <= A <= B)";
    return false;
  }
}

}  // namespace

void add_spec_flags(CLI::App* sub, SpecFlags& f) {
  sub->add_option("--spec", f.mode, "speculative decoding: self (skipped layers draft) or draft (-md model drafts)")
      ->check(CLI::IsMember({"self", "draft"}));
  sub->add_option("--model-draft", f.draft_model, "draft model for --spec draft (-md)");
  sub->add_option("--draft-max", f.draft_max, "longest draft (adaptive below it)")->check(CLI::Range(1, 32));
  sub->add_option("--spec-skip", f.skip, "self: skipped layers, auto or A-B (inclusive)");
  sub->add_flag("--spec-fixed", f.fixed, "always draft --draft-max tokens (no adaptation)");
  sub->add_flag("--spec-sigmoid", f.sigmoid, "verify with the logistic ablation (not exact)");
  sub->add_flag("--spec-logprob", f.logprob, "print the target's mean log-probability of the output (quality)");
  sub->add_option("--draft-vocab", f.draft_vocab, "draft scores only token ids [0, N) (0: all; output unchanged)")
      ->check(CLI::Range(0, 1 << 30));
  sub->add_option("--draft-p-min", f.p_min, "stop drafting at a draft probability below P (0: off)")
      ->check(CLI::Range(0.0f, 1.0f));
  sub->add_flag("--spec-autoregressive", f.autoregressive,
                "draft one token per pass even when the drafting model carries mask tokens");
}

int spec_generate(const SpecFlags& f, kestrel_context* ctx, const kestrel_context_params& cp, const char* prompt,
                  int32_t n_predict, const kestrel_sampler_params* sp, kestrel_text_fn on_text, void* user,
                  kestrel_status* status) {
  kestrel_spec_params p = kestrel_spec_default_params();
  p.mode = f.mode == "draft" ? KESTREL_SPEC_DRAFT : KESTREL_SPEC_SELF;
  p.draft_max = f.draft_max;
  p.adaptive = f.fixed ? 0 : 1;
  p.sigmoid = f.sigmoid ? 1 : 0;
  p.track_logprob = f.logprob ? 1 : 0;
  p.draft_vocab = f.draft_vocab;
  p.p_min = f.p_min;
  p.mask_drafting = f.autoregressive ? 0 : 1;
  std::string err;
  if (!parse_skip(f.skip, &p.skip_begin, &p.skip_end, err)) return usage_error(err);
  if (p.mode == KESTREL_SPEC_DRAFT && f.draft_model.empty()) return usage_error("--spec draft needs -md DRAFT.gguf");
  if (p.mode == KESTREL_SPEC_SELF && !f.draft_model.empty())
    return usage_error("-md is for --spec draft (self-speculation uses the target's own layers)");

  kestrel_model* draft = nullptr;
  kestrel_context* dctx = nullptr;
  std::unique_ptr<kestrel_model, void (*)(kestrel_model*)> draft_guard(nullptr, kestrel_model_free);
  std::unique_ptr<kestrel_context, void (*)(kestrel_context*)> dctx_guard(nullptr, kestrel_context_free);
  if (p.mode == KESTREL_SPEC_DRAFT) {
    kestrel_model_params mp = kestrel_model_default_params();
    mp.use_mmap = f.use_mmap ? 1 : 0;
    if (int rc = load_model(f.draft_model, mp, &draft); rc != kExitOk) return rc;
    draft_guard.reset(draft);
    kestrel_context_params dp = cp;
    StepTraceFile::detach(&dp);  // the trace is the target's steps
    if (kestrel_status s = kestrel_context_create(draft, &dp, &dctx); s != KESTREL_OK)
      return report(s, "cannot create the draft model's context", nullptr);
    dctx_guard.reset(dctx);
  }
  kestrel_spec_stats st;
  *status = kestrel_generate_spec(ctx, dctx, prompt, n_predict, sp, &p, on_text, user, &st);
  if (*status == KESTREL_OK || *status == KESTREL_ERR_CANCELLED) {
    const double tps = st.t_generate_ms > 0 ? 1000.0 * double(st.n_generated) / st.t_generate_ms : 0.0;
    if (p.mode == KESTREL_SPEC_SELF)
      std::fprintf(stderr, "\nkestrel: spec      self, layers %d-%d skipped\n", st.skip_begin, st.skip_end);
    else
      std::fprintf(stderr, "\nkestrel: spec      draft model %s\n", f.draft_model.c_str());
    std::fprintf(stderr,
                 "kestrel: spec      drafted %lld, accepted %lld (%.1f%%), mean accepted length %.2f tokens/verify, "
                 "%lld verifies\n",
                 (long long)st.n_drafted, (long long)st.n_accepted,
                 st.n_drafted ? 100.0 * double(st.n_accepted) / double(st.n_drafted) : 0.0, st.mean_accepted,
                 (long long)st.n_rounds);
    if (p.p_min > 0.0f || p.draft_vocab > 0)
      std::fprintf(stderr, "kestrel: spec      draft vocabulary %d (0: all), p-min %.2f cut %lld rounds short\n",
                   p.draft_vocab, p.p_min, (long long)st.n_pmin_stops);
    if (st.mask_token >= 0)
      std::fprintf(stderr, "kestrel: spec      simultaneous drafting (mask token %d): %lld draft passes\n",
                   st.mask_token, (long long)st.n_draft_passes);
    std::string by_g;
    for (int g = 1; g <= 32; ++g)
      if (st.n_rounds_by_g[g]) by_g += " g" + std::to_string(g) + ":" + std::to_string(st.n_rounds_by_g[g]);
    std::fprintf(stderr, "kestrel: spec      %lld plain steps; rounds by draft length:%s\n",
                 (long long)st.n_plain_steps, by_g.empty() ? " none" : by_g.c_str());
    std::fprintf(stderr, "kestrel: spec      draft %.2f ms, verify %.2f ms, %.2f tokens/s\n", st.t_draft_ms,
                 st.t_verify_ms, tps);
    if (f.logprob) std::fprintf(stderr, "kestrel: spec      mean target log-probability %.4f per token\n", st.mean_logprob);
  }
  return -1;  // the caller handles *status
}

}  // namespace kcli
