// kestrel serve --spec draft (see cmd_serve_spec.h).
#include "cmd_serve_spec.h"

#include <CLI/CLI.hpp>
#include <cstdio>

namespace kcli::serve {

void add_serve_spec_flags(CLI::App* sub, ServeSpecOptions& o) {
  sub->add_option("--spec", o.mode, "speculative decoding: draft (the -md model drafts for greedy and top-k/top-p requests)")
      ->check(CLI::IsMember({"draft"}));
  sub->add_option("--model-draft", o.draft_model, "draft model for --spec draft (-md)");
  sub->add_option("--draft-max", o.draft_max, "longest draft (adaptive below it, per slot)")->check(CLI::Range(1, 32));
  sub->add_option("--draft-p-min", o.p_min, "stop drafting at a draft probability below P (0: off)")
      ->check(CLI::Range(0.0f, 1.0f));
  sub->add_option("--draft-vocab", o.draft_vocab, "draft scores only token ids [0, N) (0: all; output unchanged)")
      ->check(CLI::Range(0, 1 << 30));
}

bool load_draft(const ServeSpecOptions& o, const kestrel_model_params& mp, const kestrel_context_params& cp,
                DraftHandles* out, kestrel_scheduler_params* sp, std::string* err) {
  if (o.mode.empty()) {
    if (!o.draft_model.empty()) *err = "-md needs --spec draft";
    return o.draft_model.empty();
  }
  if (o.draft_model.empty()) {
    *err = "--spec draft needs -md DRAFT.gguf";
    return false;
  }
  if (kestrel_model_load(o.draft_model.c_str(), &mp, &out->model) != KESTREL_OK) {
    *err = std::string("cannot load the draft model: ") + kestrel_last_error(nullptr);
    return false;
  }
  if (kestrel_context_create(out->model, &cp, &out->ctx) != KESTREL_OK) {
    *err = std::string("cannot create the draft model's context: ") + kestrel_last_error(nullptr);
    return false;
  }
  sp->draft = out->ctx;
  sp->draft_max = o.draft_max;
  sp->draft_p_min = o.p_min;
  sp->draft_vocab = o.draft_vocab;
  return true;
}

void free_draft(DraftHandles* d) {
  kestrel_context_free(d->ctx);
  kestrel_model_free(d->model);
  *d = DraftHandles{};
}

void spec_metrics(const kestrel_scheduler_stats& st, const MetricFn& metric) {
  metric("spec_requests_total", "counter", "Requests decoded speculatively (greedy, or sampled without min-p and repetition penalty).",
         static_cast<double>(st.n_spec_requests));
  metric("spec_rounds_total", "counter", "Slot rounds that verified drafts.", static_cast<double>(st.n_spec_rounds));
  metric("spec_draft_tokens_total", "counter", "Draft tokens proposed.", static_cast<double>(st.n_spec_drafted));
  metric("spec_accepted_tokens_total", "counter", "Draft tokens accepted.", static_cast<double>(st.n_spec_accepted));
  metric("spec_plain_steps_total", "counter", "Steps of speculated requests that drafted nothing.",
         static_cast<double>(st.n_spec_plain_steps));
  for (int g = 1; g <= 32; ++g) {
    if (st.spec_rounds_by_g[g] == 0) continue;
    // One series per draft length seen, as a name suffix (the format here has no labels).
    char name[64];
    std::snprintf(name, sizeof name, "spec_rounds_g%d_total", g);
    metric(name, "counter", "Slot rounds that verified this many drafts.", static_cast<double>(st.spec_rounds_by_g[g]));
  }
}

std::string spec_summary(const kestrel_scheduler_stats& st) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "kestrel serve: spec  %lld requests speculated, %lld rounds drafted, %lld plain steps; drafted %lld, "
                "accepted %lld (%.1f%%)\nkestrel serve: spec  rounds by draft length:",
                static_cast<long long>(st.n_spec_requests), static_cast<long long>(st.n_spec_rounds),
                static_cast<long long>(st.n_spec_plain_steps), static_cast<long long>(st.n_spec_drafted),
                static_cast<long long>(st.n_spec_accepted),
                st.n_spec_drafted ? 100.0 * static_cast<double>(st.n_spec_accepted) / static_cast<double>(st.n_spec_drafted)
                                  : 0.0);
  std::string out = buf;
  bool any = false;
  for (int g = 1; g <= 32; ++g) {
    if (st.spec_rounds_by_g[g] == 0) continue;
    std::snprintf(buf, sizeof buf, " g=%d:%lld", g, static_cast<long long>(st.spec_rounds_by_g[g]));
    out += buf;
    any = true;
  }
  if (!any) out += " none";
  return out + "\n";
}

}  // namespace kcli::serve
