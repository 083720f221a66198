// The C API of speculative decoding: kestrel_generate_spec wraps a
// SpecDecoder (runtime/spec/speculative.h) the way kestrel_generate wraps the
// plain loop: prompt tokenization, streamed UTF-8 pieces, timings.
#include <string>
#include <vector>

#include "runtime/c_api_internal.h"
#include "runtime/spec/speculative.h"
#include "runtime/tokenizer/tokenizer.h"

using namespace kestrel;
using namespace kestrel::capi;

extern "C" {

kestrel_spec_params kestrel_spec_default_params(void) {
  const SpecParams d;
  kestrel_spec_params p;
  p.mode = KESTREL_SPEC_SELF;
  p.draft_max = d.draft_max;
  p.adaptive = d.adaptive ? 1 : 0;
  p.skip_begin = -1;
  p.skip_end = -1;
  p.sigmoid = 0;
  p.track_logprob = 0;
  p.draft_vocab = 0;
  p.p_min = 0.0f;
  p.mask_drafting = 1;
  return p;
}

kestrel_status kestrel_generate_spec(kestrel_context* ctx, kestrel_context* draft_ctx, const char* prompt,
                                     int32_t n_predict, const kestrel_sampler_params* sampling,
                                     const kestrel_spec_params* spec, kestrel_text_fn on_text, void* user_data,
                                     kestrel_spec_stats* stats) {
  if (stats) {
    *stats = kestrel_spec_stats{};
    stats->mask_token = -1;
  }
  if (!live(ctx)) {
    return fail_global(guarded([]() -> Status {
      return Status::invalid_argument("kestrel_generate_spec: context is NULL or not live");
    }));
  }
  kestrel_timings& tm = ctx->timings;
  tm = kestrel_timings{};
  tm.t_load_ms = ctx->owner->t_load_ms;
  bool stopped_by_callback = false;
  const Status s = guarded([&]() -> Status {
    const kestrel_spec_params sp = spec ? *spec : kestrel_spec_default_params();
    if (sp.mode != KESTREL_SPEC_SELF && sp.mode != KESTREL_SPEC_DRAFT)
      return Status::invalid_argument("kestrel_generate_spec: unknown mode %d", sp.mode);
    if (sp.mode == KESTREL_SPEC_DRAFT && !live(draft_ctx))
      return Status::invalid_argument("kestrel_generate_spec: draft mode needs a live draft context");
    if (sp.mode == KESTREL_SPEC_SELF && draft_ctx)
      return Status::invalid_argument("kestrel_generate_spec: self mode takes no draft context");
    Context& c = *ctx->ctx;
    const Tokenizer& tok = c.model().tokenizer();
    kestrel_sampler_params smp = sampling ? *sampling : kestrel_sampler_default_params();
    if (!sampling) smp.seed = ctx->seed;
    SpecParams p;
    p.mode = sp.mode == KESTREL_SPEC_DRAFT ? SpecMode::draft : SpecMode::self;
    p.draft_max = sp.draft_max;
    p.adaptive = sp.adaptive != 0;
    p.skip_auto = sp.skip_begin < 0;
    p.skip_begin = sp.skip_begin;
    p.skip_end = sp.skip_end;
    p.sigmoid = sp.sigmoid != 0;
    p.track_logprob = sp.track_logprob != 0;
    p.draft_vocab = sp.draft_vocab;
    p.p_min = sp.p_min;
    p.mask_drafting = sp.mask_drafting != 0;
    p.temperature = smp.temperature;
    p.top_k = smp.top_k > 0 ? smp.top_k : 0;
    p.top_p = smp.top_p < 1.0f ? smp.top_p : 1.0f;
    p.seed = smp.seed;
    KESTREL_TRY_ASSIGN(auto dec, SpecDecoder::create(c, draft_ctx ? draft_ctx->ctx.get() : nullptr, p));

    std::vector<int32_t> ids;
    KESTREL_TRY(tok.encode(prompt ? prompt : "", /*add_special=*/true, /*parse_special=*/false, ids));
    if (ids.empty()) {
      if (tok.bos() < 0) return Status::invalid_argument("empty prompt and the model has no BOS token");
      ids.push_back(tok.bos());
    }
    tm.n_prompt_tokens = static_cast<int32_t>(ids.size());
    StreamDecoder stream(tok);
    std::string piece;
    int32_t last = -1;
    Status push_error;
    const Status gs = dec->generate(ids, n_predict, [&](int32_t t) {
      last = t;
      piece.clear();
      push_error = stream.push(t, piece);
      if (!push_error.ok()) return false;
      if (on_text && !piece.empty() && on_text(piece.data(), piece.size(), t, user_data) == 0) {
        stopped_by_callback = true;
        return false;
      }
      return true;
    });
    const SpecStats& st = dec->stats();
    tm.n_generated = static_cast<int32_t>(st.n_generated);
    tm.t_prompt_ms = st.t_prompt_ns * 1e-6;
    tm.t_generate_ms = st.t_generate_ns * 1e-6;
    if (stats) {
      stats->n_rounds = st.n_rounds;
      stats->n_drafted = st.n_drafted;
      stats->n_accepted = st.n_accepted;
      stats->n_generated = st.n_generated;
      stats->mean_accepted = st.mean_accepted();
      stats->t_prompt_ms = st.t_prompt_ns * 1e-6;
      stats->t_draft_ms = st.t_draft_ns * 1e-6;
      stats->t_verify_ms = st.t_verify_ns * 1e-6;
      stats->t_generate_ms = st.t_generate_ns * 1e-6;
      stats->skip_begin = dec->skip_begin();
      stats->skip_end = dec->skip_end();
      stats->mean_logprob = st.n_logprob ? st.sum_logprob / double(st.n_logprob) : 0.0;
      stats->n_pmin_stops = st.n_pmin_stops;
      stats->n_draft_passes = st.n_draft_passes;
      stats->mask_token = dec->mask_token();
      stats->n_plain_steps = st.n_plain_steps;
      for (int g = 0; g <= 32; ++g) stats->n_rounds_by_g[g] = st.rounds_by_g[g];
    }
    KESTREL_TRY(gs);
    KESTREL_TRY(push_error);
    piece.clear();
    stream.flush(piece);
    if (on_text && !piece.empty() && !stopped_by_callback) on_text(piece.data(), piece.size(), last, user_data);
    return {};
  });
  if (!s.ok()) return fail_handle(ctx, s);
  if (stopped_by_callback)
    return fail_handle(ctx, guarded([]() -> Status { return Status::cancelled("generation stopped by the text callback"); }));
  ctx->last_error.clear();
  return KESTREL_OK;
}

}  // extern "C"
