// kestrel_perplexity and kestrel_logits_file_info (kestrel/eval.h): the C face
// of runtime/eval.
#include "kestrel/eval.h"

#include <cstring>
#include <string>

#include "runtime/c_api_internal.h"
#include "runtime/eval/logits_file.h"
#include "runtime/eval/ppl_run.h"

using namespace kestrel;
using namespace kestrel::capi;

namespace {

void copy_kl(const eval::KlSummary& s, kestrel_kl_stats* o) {
  o->count = s.count;
  o->ppl = s.ppl;
  o->ppl_unc = s.ppl_unc;
  o->ppl_base = s.ppl_base;
  o->ppl_base_unc = s.ppl_base_unc;
  o->log_ppl_cor = s.log_ppl_cor;
  o->log_ppl_ratio = s.log_ppl_ratio;
  o->log_ppl_ratio_unc = s.log_ppl_ratio_unc;
  o->ppl_ratio = s.ppl_ratio;
  o->ppl_ratio_unc = s.ppl_ratio_unc;
  o->ppl_diff = s.ppl_diff;
  o->ppl_diff_unc = s.ppl_diff_unc;
  o->kld = s.kld;
  o->kld_unc = s.kld_unc;
  std::memcpy(o->kld_pct, s.kld_pct, sizeof o->kld_pct);
  o->p_diff = s.p_diff;
  o->p_diff_unc = s.p_diff_unc;
  std::memcpy(o->p_diff_pct, s.p_diff_pct, sizeof o->p_diff_pct);
  o->rms_p_diff = s.rms_p_diff;
  o->rms_p_diff_unc = s.rms_p_diff_unc;
  o->same_top = s.same_top;
  o->same_top_unc = s.same_top_unc;
}

// final: the percentiles too (they sort every value, so not per chunk).
kestrel_ppl_result to_c(const eval::PplRunResult& r, bool final) {
  kestrel_ppl_result o;
  std::memset(&o, 0, sizeof o);
  o.n_text_tokens = r.n_text_tokens;
  o.n_ctx = r.plan.n_ctx;
  o.n_chunks = r.plan.n_chunk;
  o.chunks_done = r.chunks_done;
  o.n_scored = r.stats.count;
  o.ppl = r.stats.ppl();
  o.ppl_error = r.stats.ppl_error();
  o.t_decode_ms = r.t_decode_s * 1e3;
  o.n_decoded = r.n_decoded;
  o.has_ref = r.has_ref ? 1 : 0;
  if (r.has_ref && r.ref.stats.count > 0) {
    const double n = static_cast<double>(r.ref.stats.count);
    o.ref_ppl = r.ref.stats.ppl();
    o.top1_vs_ref = static_cast<double>(r.ref.n_same_top) / n;
    o.kl_vs_ref = r.ref.sum_kl / n;
    o.flips_near_tie =
        r.ref.n_flips ? static_cast<double>(r.ref.n_flips_near_tie) / static_cast<double>(r.ref.n_flips) : 0.0;
  }
  o.has_kl = r.has_kl ? 1 : 0;
  if (r.has_kl) copy_kl(r.kl.summary(final), &o.kl);
  return o;
}

}  // namespace

extern "C" kestrel_ppl_params kestrel_ppl_default_params(void) {
  kestrel_ppl_params p;
  p.n_ctx = 512;
  p.n_chunks = 0;
  p.score_all = 0;
  p.kl_base_out = nullptr;
  p.kl_base_in = nullptr;
  return p;
}

extern "C" kestrel_status kestrel_perplexity(kestrel_context* ctx, kestrel_context* ref_ctx, const char* text,
                                             size_t text_len, const kestrel_ppl_params* params,
                                             kestrel_ppl_chunk_fn on_chunk, void* user_data, kestrel_ppl_result* out) {
  const Status s = guarded([&]() -> Status {
    if (!live(ctx)) return Status::invalid_argument("kestrel_perplexity: context is NULL or not live");
    if (ref_ctx && !live(ref_ctx)) return Status::invalid_argument("kestrel_perplexity: ref_ctx is not live");
    if (ref_ctx && ref_ctx->owner != ctx->owner)
      return Status::invalid_argument("kestrel_perplexity: ref_ctx belongs to another model");
    if (!text && text_len > 0) return Status::invalid_argument("kestrel_perplexity: text is NULL");
    if (!params) return Status::invalid_argument("kestrel_perplexity: params is NULL");
    eval::PplRunParams p;
    p.rule = params->score_all ? eval::PplRule::score_all : eval::PplRule::llama;
    p.n_ctx = params->n_ctx;
    p.max_chunks = params->n_chunks;
    if (params->kl_base_out) p.kl_base_out = params->kl_base_out;
    if (params->kl_base_in) p.kl_base_in = params->kl_base_in;
    auto chunk_cb = [&](const eval::PplRunResult& r) -> bool {
      if (!on_chunk) return true;
      const kestrel_ppl_result so_far = to_c(r, false);
      return on_chunk(&so_far, user_data) != 0;
    };
    KESTREL_TRY_ASSIGN(eval::PplRunResult r,
                       eval::run_perplexity(*ctx->ctx, ref_ctx ? ref_ctx->ctx.get() : nullptr,
                                            std::string_view(text ? text : "", text_len), p, chunk_cb));
    if (out) *out = to_c(r, true);
    return {};
  });
  if (!s.ok()) return live(ctx) ? fail_handle(ctx, s) : fail_global(s);
  ctx->last_error.clear();
  return KESTREL_OK;
}

extern "C" kestrel_status kestrel_logits_file_info(const char* path, int32_t* n_ctx, int32_t* n_vocab,
                                                   int32_t* n_chunk) {
  const Status s = guarded([&]() -> Status {
    if (!path) return Status::invalid_argument("kestrel_logits_file_info: path is NULL");
    KESTREL_TRY_ASSIGN(eval::LogitsHeader h, eval::LogitsReader::peek(path));
    if (n_ctx) *n_ctx = h.n_ctx;
    if (n_vocab) *n_vocab = h.n_vocab;
    if (n_chunk) *n_chunk = h.n_chunk;
    return {};
  });
  return s.ok() ? KESTREL_OK : fail_global(s);
}
