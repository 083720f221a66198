// The C API's samplers and kestrel_generate: prompt in one batch, then one
// token per step, text streamed through a StreamDecoder so a UTF-8 character
// split across tokens is never handed out in halves.
#include <algorithm>
#include <string>

#include "platform/timer.h"
#include "runtime/c_api_internal.h"
#include "runtime/tokenizer/tokenizer.h"

using namespace kestrel;
using namespace kestrel::capi;

namespace {

// The next token from the last decode's logits row 0.
Expected<int32_t> sample_logits(const Context& c, Sampler& sampler) {
  const float* logits = c.logits(0);
  if (!logits) return Status::internal("no logits after decode");
  return sampler.sample(logits);
}

// The next token the device picked (PassVariant::ids_out): the sampler's greedy
// rule or its top-k draw, including its refusal of rows with NaN or infinite logits.
Expected<int32_t> device_greedy(const Context& c) {
  const int32_t id = c.greedy_id(0);
  if (id == -1) return Status::runtime_error("sampler: the logits hold a NaN or an infinity");
  if (id < 0) return Status::internal("no greedy id after decode");
  return id;
}

}  // namespace

extern "C" {

kestrel_sampler_params kestrel_sampler_default_params(void) {
  const SamplerParams d;
  kestrel_sampler_params p;
  p.temperature = d.temperature;
  p.top_k = d.top_k;
  p.top_p = d.top_p;
  p.min_p = d.min_p;
  p.repeat_penalty = d.repeat_penalty;
  p.repeat_last_n = d.repeat_last_n;
  p.seed = static_cast<uint32_t>(d.seed);
  p.exp_softmax = static_cast<int32_t>(d.exp);
  return p;
}

kestrel_status kestrel_sampler_create(const kestrel_model* model, const kestrel_sampler_params* params,
                                      kestrel_sampler** out_sampler) {
  if (out_sampler) *out_sampler = nullptr;
  const Status s = guarded([&]() -> Status {
    if (!live(model)) return Status::invalid_argument("kestrel_sampler_create: model is NULL or not live");
    if (!out_sampler) return Status::invalid_argument("kestrel_sampler_create: out_sampler must not be NULL");
    const kestrel_sampler_params p = params ? *params : kestrel_sampler_default_params();
    std::unique_ptr<kestrel_sampler> h(new (std::nothrow) kestrel_sampler());
    if (!h) return Status::out_of_memory("sampler handle");
    KESTREL_TRY(h->sampler.init(model->model->tokenizer().n_vocab(), sampler_from_c(p)));
    *out_sampler = h.release();
    return {};
  });
  if (s.ok()) return KESTREL_OK;
  if (live(model)) fail_model(model, s);
  return fail_global(s);
}

void kestrel_sampler_free(kestrel_sampler* sampler) {
  if (!sampler || sampler->magic != kMagicSampler) return;
  sampler->magic = kMagicFreed;
  delete sampler;
}

kestrel_status kestrel_sampler_sample(kestrel_sampler* sampler, const float* logits, kestrel_token* out_token) {
  // Sampler::sample itself does not allocate, but its error statuses format
  // messages (std::string), so the whole call runs under the guard.
  const Status s = guarded([&]() -> Status {
    if (!live(sampler)) return Status::invalid_argument("kestrel_sampler_sample: sampler is NULL or not live");
    if (!out_token) return Status::invalid_argument("kestrel_sampler_sample: out_token is NULL");
    auto r = sampler->sampler.sample(logits);
    if (!r.ok()) return std::move(r).take_status();
    *out_token = *r;
    return {};
  });
  if (!s.ok()) return live(sampler) ? fail_handle(sampler, s) : fail_global(s);
  sampler->last_error.clear();
  return KESTREL_OK;
}

void kestrel_sampler_accept(kestrel_sampler* sampler, kestrel_token token) {
  if (live(sampler)) sampler->sampler.accept(token);
}

void kestrel_sampler_reset(kestrel_sampler* sampler) {
  if (live(sampler)) sampler->sampler.reset();
}

const char* kestrel_sampler_last_error(const kestrel_sampler* sampler) {
  if (!sampler) return "sampler is NULL";
  if (sampler->magic != kMagicSampler) return "not a live kestrel sampler";
  return sampler->last_error.c_str();
}

kestrel_status kestrel_generate(kestrel_context* ctx, const char* prompt, int32_t n_predict,
                                const kestrel_sampler_params* sampling, kestrel_text_fn on_text, void* user_data) {
  if (!live(ctx)) {
    return fail_global(guarded([]() -> Status {
      return Status::invalid_argument("kestrel_generate: context is NULL or not live");
    }));
  }
  kestrel_timings& tm = ctx->timings;
  tm = kestrel_timings{};
  tm.t_load_ms = ctx->owner->t_load_ms;
  bool stopped_by_callback = false;
  const Status s = guarded([&]() -> Status {
    Context& c = *ctx->ctx;
    const Model& model = c.model();
    const Tokenizer& tok = model.tokenizer();
    const int32_t n_vocab = tok.n_vocab();
    kestrel_sampler_params sp = sampling ? *sampling : kestrel_sampler_default_params();
    if (!sampling) sp.seed = ctx->seed;
    Sampler sampler;
    KESTREL_TRY(sampler.init(n_vocab, sampler_from_c(sp)));

    // Prompt: BOS per the model; an empty prompt is BOS alone.
    std::vector<int32_t>& ids = ctx->scratch_tokens;
    ids.clear();
    const char* text = prompt ? prompt : "";
    KESTREL_TRY(tok.encode(text, /*add_special=*/true, /*parse_special=*/false, ids));
    if (ids.empty()) {
      if (tok.bos() < 0) return Status::invalid_argument("empty prompt and the model has no BOS token");
      ids.push_back(tok.bos());
    }
    const int64_t n_ctx = c.n_ctx();
    if (static_cast<int64_t>(ids.size()) > n_ctx)
      return Status::too_long("the prompt has %zu tokens, the context holds %lld", ids.size(), (long long)n_ctx);
    std::vector<int32_t>& pos = ctx->scratch_pos;
    pos.resize(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) pos[i] = static_cast<int32_t>(i);
    for (int32_t id : ids) sampler.accept(id);

    c.kv().clear();
    tm.n_prompt_tokens = static_cast<int32_t>(ids.size());
    // On a GPU the device picks the token (greedy, or a top-k draw with the
    // sampler's next uniform) and only its id comes back.
    PassVariant pass;
    pass.draw = c.on_device() && sampler.op_params(&pass.sample);
    pass.ids_out = pass.draw || (c.on_device() && sampler.plain_greedy());
    float u = 0.0f;
    if (pass.draw) u = static_cast<float>(sampler.next_uniform());
    Stopwatch sw;
    BatchView b;
    b.n_tokens = static_cast<int32_t>(ids.size());
    b.tokens = ids.data();
    b.pos = pos.data();
    KESTREL_TRY(c.decode(b, pass, &u));
    tm.t_prompt_ms = sw.elapsed_ms();

    // Generation: sample from the last logits, emit, decode the new token.
    sw.reset();
    StreamDecoder stream(tok);
    std::string piece;
    int32_t n_past = static_cast<int32_t>(ids.size());
    int32_t last = -1;
    Status result;
    for (int32_t i = 0; n_predict < 0 || i < n_predict; ++i) {
      auto next = pass.ids_out ? device_greedy(c) : sample_logits(c, sampler);
      if (!next.ok()) {
        result = std::move(next).take_status();
        break;
      }
      const int32_t t = *next;
      sampler.accept(t);
      if (tok.is_eog(t)) break;
      ++tm.n_generated;
      last = t;
      piece.clear();
      KESTREL_TRY(stream.push(t, piece));
      if (on_text && !piece.empty() && on_text(piece.data(), piece.size(), t, user_data) == 0) {
        stopped_by_callback = true;
        break;
      }
      if (n_past >= n_ctx) break;  // context full: the token was emitted, it cannot be decoded
      if (n_predict >= 0 && i + 1 >= n_predict) break;  // no need to decode the last token
      BatchView one;
      one.n_tokens = 1;
      one.tokens = &t;
      one.pos = &n_past;
      if (pass.draw) u = static_cast<float>(sampler.next_uniform());
      KESTREL_TRY(c.decode(one, pass, &u));
      ++n_past;
    }
    piece.clear();
    stream.flush(piece);
    if (on_text && !piece.empty() && !stopped_by_callback) on_text(piece.data(), piece.size(), last, user_data);
    tm.t_generate_ms = sw.elapsed_ms();
    return result;
  });
  if (!s.ok()) return fail_handle(ctx, s);
  if (stopped_by_callback)
    return fail_handle(ctx, guarded([]() -> Status { return Status::cancelled("generation stopped by the text callback"); }));
  ctx->last_error.clear();
  return KESTREL_OK;
}

void kestrel_get_timings(const kestrel_context* ctx, kestrel_timings* out) {
  if (!out) return;
  if (!live(ctx)) {
    *out = kestrel_timings{};
    return;
  }
  *out = ctx->timings;
}

}  // extern "C"
