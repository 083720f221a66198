// The C API: errors, models, tokenizer and contexts. Sampling and generation
// are in c_api_generate.cpp, file inspection in c_api_inspect.cpp.
// Nothing escapes into C: every entry point catches exceptions (guarded())
// and reports failures as a kestrel_status plus a message.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "platform/timer.h"
#include "runtime/c_api_internal.h"
#include "runtime/model/gguf.h"
#include "runtime/tokenizer/tokenizer.h"

namespace kestrel::capi {
namespace {

// Handle-less calls and per-thread model errors (a model is shared by
// threads, so its errors cannot live in the model without a race).
thread_local std::string tl_error;
thread_local const kestrel_model* tl_model = nullptr;
thread_local std::string tl_model_error;

void store(std::string& dst, const Status& s) noexcept {
  try {
    if (s.message().empty()) dst.assign(status_code_name(s.code()));
    else dst.assign(s.message());
  } catch (...) {
    // Only an allocation can fail here. 13 characters fit the string's inline
    // buffer, so this assignment cannot allocate, and the caller still gets a message.
    dst.assign("out of memory");
  }
}

}  // namespace

kestrel_status to_c(StatusCode code) { return static_cast<kestrel_status>(static_cast<int>(code)); }

kestrel_status fail_global(const Status& s) {
  store(tl_error, s);
  return to_c(s.code());
}

kestrel_status fail_model(const kestrel_model* m, const Status& s) {
  tl_model = m;
  store(tl_model_error, s);
  return to_c(s.code());
}

kestrel_status fail_handle(HandleBase* h, const Status& s) {
  store(h->last_error, s);
  return to_c(s.code());
}

void clear_model_error(const kestrel_model* m) {
  if (tl_model == m) tl_model_error.clear();
}

int32_t copy_out(const std::string& text, char* buf, size_t buf_size) {
  if (buf && buf_size > 0) {
    const size_t n = std::min(text.size(), buf_size - 1);
    std::memcpy(buf, text.data(), n);
    buf[n] = '\0';
  }
  return static_cast<int32_t>(std::min<size_t>(text.size(), INT32_MAX));
}

}  // namespace kestrel::capi

using namespace kestrel;
using namespace kestrel::capi;

extern "C" {

const char* kestrel_status_name(kestrel_status status) {
  if (static_cast<int>(status) < 0 || static_cast<int>(status) > static_cast<int>(StatusCode::internal))
    return "unknown";
  return status_code_name(static_cast<StatusCode>(status));
}

const char* kestrel_last_error(const void* handle) {
  if (!handle) return tl_error.c_str();
  const auto* h = static_cast<const HandleBase*>(handle);
  switch (h->magic) {
    case kMagicModel:
      return tl_model == handle ? tl_model_error.c_str() : "";
    case kMagicContext:
    case kMagicSampler:
      return h->last_error.c_str();
    default:
      return "not a live kestrel handle";
  }
}

// ---- models ----

kestrel_model_params kestrel_model_default_params(void) {
  kestrel_model_params p;
  p.use_mmap = 1;
  p.vocab_only = 0;
  p.progress = nullptr;
  p.progress_user_data = nullptr;
  p.llama2c_tokenizer = nullptr;
  return p;
}

namespace {
struct ProgressBridge {
  kestrel_progress_fn fn;
  void* user;
};
bool progress_bridge(float fraction, void* user) {
  auto* b = static_cast<ProgressBridge*>(user);
  return b->fn(fraction, b->user) != 0;
}
}  // namespace

kestrel_status kestrel_model_load(const char* path, const kestrel_model_params* params, kestrel_model** out_model) {
  if (out_model) *out_model = nullptr;
  const Status s = guarded([&]() -> Status {
    if (!path || !out_model) return Status::invalid_argument("kestrel_model_load: path and out_model must not be NULL");
    const kestrel_model_params p = params ? *params : kestrel_model_default_params();
    ModelParams mp;
    mp.use_mmap = p.use_mmap != 0;
    mp.vocab_only = p.vocab_only != 0;
    ProgressBridge bridge{p.progress, p.progress_user_data};
    if (p.progress) {
      mp.progress = progress_bridge;
      mp.progress_user = &bridge;
    }
    if (p.llama2c_tokenizer) mp.llama2c_tokenizer_path = p.llama2c_tokenizer;
    Stopwatch sw;
    std::unique_ptr<kestrel_model> m(new (std::nothrow) kestrel_model());
    if (!m) return Status::out_of_memory("model handle");
    auto loaded = Model::load(path, mp);
    if (!loaded.ok()) {
      // The file layers name the path in their own messages ("cannot open 'p'",
      // "'p': not a GGUF file"); later checks (hyperparameters, tokenizer) may not.
      Status e = std::move(loaded).take_status();
      if (e.message().find(path) == std::string::npos) e.with_context(std::string(path) + ": ");
      return e;
    }
    m->model = std::move(loaded).value();
    m->t_load_ms = sw.elapsed_ms();
    *out_model = m.release();
    return {};
  });
  return s.ok() ? KESTREL_OK : fail_global(s);
}

void kestrel_model_free(kestrel_model* model) {
  if (!model || model->magic != kMagicModel) return;
  clear_model_error(model);
  model->magic = kMagicFreed;
  delete model;
}

int32_t kestrel_model_n_vocab(const kestrel_model* model) {
  return live(model) ? model->model->tokenizer().n_vocab() : -1;
}
int32_t kestrel_model_n_ctx_train(const kestrel_model* model) {
  return live(model) ? static_cast<int32_t>(model->model->hparams().n_ctx_train) : -1;
}
int32_t kestrel_model_n_embd(const kestrel_model* model) {
  return live(model) ? static_cast<int32_t>(model->model->hparams().n_embd) : -1;
}
int32_t kestrel_model_n_layer(const kestrel_model* model) {
  return live(model) ? static_cast<int32_t>(model->model->hparams().n_layer) : -1;
}
kestrel_token kestrel_token_bos(const kestrel_model* model) { return live(model) ? model->model->tokenizer().bos() : -1; }
kestrel_token kestrel_token_eos(const kestrel_model* model) { return live(model) ? model->model->tokenizer().eos() : -1; }
int kestrel_token_is_eog(const kestrel_model* model, kestrel_token token) {
  return live(model) && model->model->tokenizer().is_eog(token) ? 1 : 0;
}

uint64_t kestrel_model_n_params(const kestrel_model* model) {
  if (!live(model) || model->model->vocab_only()) return 0;
  uint64_t n = 0;
  for (const auto& t : model->model->file().tensors()) n += static_cast<uint64_t>(t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3]);
  return n;
}

uint64_t kestrel_model_size(const kestrel_model* model) {
  if (!live(model) || model->model->vocab_only()) return 0;
  uint64_t n = 0;
  for (const auto& t : model->model->file().tensors()) n += t.nbytes;
  return n;
}

int32_t kestrel_model_desc(const kestrel_model* model, char* buf, size_t buf_size) {
  if (buf && buf_size) buf[0] = '\0';
  if (!live(model)) return -1;
  int32_t out = -1;
  const Status s = guarded([&]() -> Status {
    const Model& m = *model->model;
    char tmp[512];
    if (m.vocab_only()) {
      std::snprintf(tmp, sizeof tmp, "vocabulary only: %d tokens", m.tokenizer().n_vocab());
    } else {
      const HParams& hp = m.hparams();
      const double params_m = static_cast<double>(kestrel_model_n_params(model)) * 1e-6;
      const double mib = static_cast<double>(kestrel_model_size(model)) / (1024.0 * 1024.0);
      std::snprintf(tmp, sizeof tmp,
                    "%s: n_embd %lld, n_layer %lld, n_head %lld, n_head_kv %lld, head_dim %lld, n_ff %lld, "
                    "n_vocab %lld, n_ctx_train %lld, %.2fM params, %.2f MiB",
                    m.arch().name, (long long)hp.n_embd, (long long)hp.n_layer, (long long)hp.n_head,
                    (long long)hp.n_head_kv, (long long)hp.head_dim, (long long)hp.n_ff, (long long)hp.n_vocab,
                    (long long)hp.n_ctx_train, params_m, mib);
    }
    out = copy_out(tmp, buf, buf_size);
    return {};
  });
  if (!s.ok()) {
    fail_model(model, s);
    return -1;
  }
  return out;
}

// ---- tokenizer ----

kestrel_status kestrel_tokenize(const kestrel_model* model, const char* text, size_t text_len, int add_special,
                                int parse_special, kestrel_token* tokens, int32_t max_tokens, int32_t* n_tokens) {
  if (n_tokens) *n_tokens = 0;
  const Status s = guarded([&]() -> Status {
    if (!live(model)) return Status::invalid_argument("kestrel_tokenize: model is NULL or not live");
    if (!n_tokens) return Status::invalid_argument("kestrel_tokenize: n_tokens must not be NULL");
    if (!text && text_len > 0) return Status::invalid_argument("kestrel_tokenize: text is NULL but text_len is %zu", text_len);
    if (max_tokens < 0) return Status::invalid_argument("kestrel_tokenize: max_tokens %d < 0", max_tokens);
    if (!tokens && max_tokens > 0) return Status::invalid_argument("kestrel_tokenize: tokens is NULL but max_tokens is %d", max_tokens);
    std::vector<int32_t> ids;
    KESTREL_TRY(model->model->tokenizer().encode(std::string_view(text ? text : "", text_len), add_special != 0,
                                                 parse_special != 0, ids));
    if (ids.size() > static_cast<size_t>(INT32_MAX)) return Status::too_long("%zu tokens", ids.size());
    *n_tokens = static_cast<int32_t>(ids.size());
    const size_t n = std::min(ids.size(), static_cast<size_t>(max_tokens));
    if (n) std::memcpy(tokens, ids.data(), n * sizeof(int32_t));
    if (ids.size() > static_cast<size_t>(max_tokens))
      return Status::too_long("the text has %zu tokens, the buffer holds %d", ids.size(), max_tokens);
    return {};
  });
  if (!s.ok()) return live(model) ? fail_model(model, s) : fail_global(s);
  clear_model_error(model);
  return KESTREL_OK;
}

}  // extern "C"

// Helpers (C++ linkage: they return a Status).
namespace {
Status check_ids(const Tokenizer& tok, const kestrel_token* ids, int32_t n) {
  for (int32_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= tok.n_vocab())
      return Status::invalid_argument("token id %d at index %d is outside [0, %d)", ids[i], i, tok.n_vocab());
  return {};
}

Status copy_bytes(const std::string& text, char* buf, size_t buf_size, size_t* n_bytes) {
  *n_bytes = text.size();
  const size_t n = std::min(text.size(), buf_size);
  if (n) std::memcpy(buf, text.data(), n);
  if (text.size() > buf_size) return Status::too_long("the text has %zu bytes, the buffer holds %zu", text.size(), buf_size);
  return {};
}
}  // namespace

extern "C" {

kestrel_status kestrel_detokenize(const kestrel_model* model, const kestrel_token* tokens, int32_t n_tokens,
                                  int render_special, char* buf, size_t buf_size, size_t* n_bytes) {
  if (n_bytes) *n_bytes = 0;
  const Status s = guarded([&]() -> Status {
    if (!live(model)) return Status::invalid_argument("kestrel_detokenize: model is NULL or not live");
    if (!n_bytes) return Status::invalid_argument("kestrel_detokenize: n_bytes must not be NULL");
    if (n_tokens < 0) return Status::invalid_argument("kestrel_detokenize: n_tokens %d < 0", n_tokens);
    if (!tokens && n_tokens > 0) return Status::invalid_argument("kestrel_detokenize: tokens is NULL");
    if (!buf && buf_size > 0) return Status::invalid_argument("kestrel_detokenize: buf is NULL but buf_size is %zu", buf_size);
    const Tokenizer& tok = model->model->tokenizer();
    KESTREL_TRY(check_ids(tok, tokens, n_tokens));
    std::vector<int32_t> ids(tokens, tokens + n_tokens);
    std::string text;
    KESTREL_TRY(tok.decode(ids, render_special != 0, text));
    return copy_bytes(text, buf, buf_size, n_bytes);
  });
  if (!s.ok()) return live(model) ? fail_model(model, s) : fail_global(s);
  clear_model_error(model);
  return KESTREL_OK;
}

kestrel_status kestrel_token_to_piece(const kestrel_model* model, kestrel_token token, int render_special, char* buf,
                                      size_t buf_size, size_t* n_bytes) {
  if (n_bytes) *n_bytes = 0;
  const Status s = guarded([&]() -> Status {
    if (!live(model)) return Status::invalid_argument("kestrel_token_to_piece: model is NULL or not live");
    if (!n_bytes) return Status::invalid_argument("kestrel_token_to_piece: n_bytes must not be NULL");
    if (!buf && buf_size > 0) return Status::invalid_argument("kestrel_token_to_piece: buf is NULL but buf_size is %zu", buf_size);
    const Tokenizer& tok = model->model->tokenizer();
    KESTREL_TRY(check_ids(tok, &token, 1));
    std::string piece;
    KESTREL_TRY(tok.token_to_piece(token, render_special != 0, piece));
    return copy_bytes(piece, buf, buf_size, n_bytes);
  });
  if (!s.ok()) return live(model) ? fail_model(model, s) : fail_global(s);
  clear_model_error(model);
  return KESTREL_OK;
}

// ---- contexts ----

kestrel_context_params kestrel_context_default_params(void) {
  kestrel_context_params p;
  p.n_ctx = 0;
  p.n_batch = 512;
  p.n_seq_max = 1;
  const unsigned hc = std::thread::hardware_concurrency();
  p.n_threads = static_cast<int32_t>(std::clamp<unsigned>(hc == 0 ? 1 : hc, 1, 8));
  p.n_threads_batch = 0;
  p.seed = 0x5eed;
  p.kv_f32 = 0;
  p.reference_kernels = 0;
  p.exp_softmax = p.exp_gelu = p.exp_silu = p.exp_sigmoid = KESTREL_EXP_EXACT;
  p.log_callback = nullptr;
  p.log_user_data = nullptr;
  p.log_level = KESTREL_LOG_WARN;
  p.device = KESTREL_DEVICE_CPU;
  p.gpu_backend = nullptr;
  p.gpu_graphs = 1;
  p.sched = KESTREL_SCHED_STATIC;
  p.n_gpu_layers = -1;
  p.gpu_exact_f16 = 0;
  p.step_callback = nullptr;
  p.step_user_data = nullptr;
  return p;
}

kestrel_status kestrel_context_create(kestrel_model* model, const kestrel_context_params* params,
                                      kestrel_context** out_ctx) {
  if (out_ctx) *out_ctx = nullptr;
  const Status s = guarded([&]() -> Status {
    if (!live(model)) return Status::invalid_argument("kestrel_context_create: model is NULL or not live");
    if (!out_ctx) return Status::invalid_argument("kestrel_context_create: out_ctx must not be NULL");
    const kestrel_context_params p = params ? *params : kestrel_context_default_params();
    if (p.n_ctx < 0) return Status::invalid_argument("n_ctx %d < 0", p.n_ctx);
    if (p.n_batch < 1) return Status::invalid_argument("n_batch %d < 1", p.n_batch);
    if (p.n_seq_max < 1 || p.n_seq_max > 256) return Status::invalid_argument("n_seq_max %d outside [1, 256]", p.n_seq_max);
    if (p.n_threads < 1) return Status::invalid_argument("n_threads %d < 1", p.n_threads);
    if (p.n_threads_batch < 0) return Status::invalid_argument("n_threads_batch %d < 0", p.n_threads_batch);
    ContextParams cp;
    KESTREL_TRY(exp_tiers_from_c(p, &cp.exp));
    cp.n_ctx = p.n_ctx;
    cp.n_batch = p.n_batch;
    cp.n_seq_max = p.n_seq_max;
    cp.n_threads = p.n_threads;
    cp.n_threads_batch = p.n_threads_batch;
    cp.kv_type = p.kv_f32 ? DType::F32 : DType::F16;
    if (p.device < KESTREL_DEVICE_CPU || p.device > KESTREL_DEVICE_AUTO)
      return Status::invalid_argument("device %d is not a kestrel_device", p.device);
    if (p.reference_kernels && p.device != KESTREL_DEVICE_CPU)
      return Status::invalid_argument("reference_kernels runs on the host: device must be KESTREL_DEVICE_CPU");
    cp.backend = p.reference_kernels               ? BackendChoice::ref
                 : p.device == KESTREL_DEVICE_CUDA ? BackendChoice::cuda
                 : p.device == KESTREL_DEVICE_AUTO ? BackendChoice::auto_select
                                                   : BackendChoice::cpu;
    // The handle is the BackendInfo of the kestrel::cuda archive (kestrel_cuda.h).
    cp.gpu = reinterpret_cast<const BackendInfo*>(p.gpu_backend);
    cp.gpu_graphs = p.gpu_graphs != 0;
    if (p.n_gpu_layers < -1) return Status::invalid_argument("n_gpu_layers %d < -1", p.n_gpu_layers);
    cp.n_gpu_layers = p.n_gpu_layers;
    cp.gpu_exact_f16 = p.gpu_exact_f16 != 0;
    cp.on_step = p.step_callback;
    cp.on_step_user = p.step_user_data;
    if (p.sched != KESTREL_SCHED_STATIC && p.sched != KESTREL_SCHED_DYNAMIC)
      return Status::invalid_argument("sched %d is not a kestrel_sched", p.sched);
    cp.sched = p.sched == KESTREL_SCHED_DYNAMIC ? SchedMode::dynamic : SchedMode::fixed_thresholds;
    if (p.log_level < KESTREL_LOG_DEBUG || p.log_level > KESTREL_LOG_NONE)
      return Status::invalid_argument("log_level %d outside [%d, %d]", p.log_level, KESTREL_LOG_DEBUG, KESTREL_LOG_NONE);
    std::unique_ptr<kestrel_context> c(new (std::nothrow) kestrel_context());
    if (!c) return Status::out_of_memory("context handle");
    // The C callback takes the level as an int32_t: a small trampoline per context.
    c->log_fn = p.log_callback;
    c->log_user = p.log_user_data;
    if (p.log_callback) {
      cp.log.fn = [](void* user, LogLevel level, const char* msg) {
        auto* h = static_cast<kestrel_context*>(user);
        h->log_fn(h->log_user, static_cast<int32_t>(level), msg);
      };
      cp.log.user = c.get();
      cp.log.min_level = static_cast<LogLevel>(p.log_level);
    }
    KESTREL_TRY_ASSIGN(c->ctx, Context::create(*model->model, cp));
    c->owner = model;
    c->seed = p.seed;
    c->timings.t_load_ms = model->t_load_ms;
    *out_ctx = c.release();
    return {};
  });
  if (s.ok()) return KESTREL_OK;
  if (live(model)) fail_model(model, s);
  return fail_global(s);
}

void kestrel_context_free(kestrel_context* ctx) {
  if (!ctx || ctx->magic != kMagicContext) return;
  ctx->magic = kMagicFreed;
  delete ctx;
}

const char* kestrel_context_backend(const kestrel_context* ctx) {
  if (!ctx || ctx->magic != kMagicContext) return "";
  return ctx->ctx->backend_name();
}

int32_t kestrel_context_n_ctx(const kestrel_context* ctx) {
  return live(ctx) ? static_cast<int32_t>(ctx->ctx->n_ctx()) : -1;
}

kestrel_status kestrel_decode(kestrel_context* ctx, const kestrel_batch* batch) {
  const Status s = guarded([&]() -> Status {
    if (!live(ctx)) return Status::invalid_argument("kestrel_decode: context is NULL or not live");
    if (!batch) return Status::invalid_argument("kestrel_decode: batch is NULL");
    BatchView b;
    b.n_tokens = batch->n_tokens;
    b.tokens = batch->tokens;
    b.pos = batch->pos;
    b.seq_id = batch->seq_id;
    b.logits = batch->logits;
    return ctx->ctx->decode(b);
  });
  if (!s.ok()) return live(ctx) ? fail_handle(ctx, s) : fail_global(s);
  ctx->last_error.clear();
  return KESTREL_OK;
}

const float* kestrel_get_logits(kestrel_context* ctx, int32_t i) {
  if (!live(ctx)) return nullptr;
  const float* p = ctx->ctx->logits(i);
  if (!p) {
    fail_handle(ctx, guarded([&]() -> Status {
                  return Status::invalid_argument("no logits for output %d (the last decode kept %d)", i,
                                                  ctx->ctx->n_outputs());
                }));
  }
  return p;
}

kestrel_status kestrel_kv_seq_rm(kestrel_context* ctx, int32_t seq, int32_t p0, int32_t p1) {
  const Status s = guarded([&]() -> Status {
    if (!live(ctx)) return Status::invalid_argument("kestrel_kv_seq_rm: context is NULL or not live");
    if (seq >= ctx->ctx->kv().n_seq_max())
      return Status::invalid_argument("kestrel_kv_seq_rm: sequence id %d outside [0, %d) (or < 0 for every sequence)",
                                      seq, ctx->ctx->kv().n_seq_max());
    if (p0 < 0) return Status::invalid_argument("kestrel_kv_seq_rm: p0 %d < 0", p0);
    if (p1 >= 0 && p1 < p0) return Status::invalid_argument("kestrel_kv_seq_rm: p1 %d < p0 %d", p1, p0);
    ctx->ctx->kv().seq_rm(seq, p0, p1);
    return {};
  });
  if (!s.ok()) return live(ctx) ? fail_handle(ctx, s) : fail_global(s);
  ctx->last_error.clear();
  return KESTREL_OK;
}

int32_t kestrel_kv_seq_pos_max(kestrel_context* ctx, int32_t seq) {
  if (!live(ctx) || seq < 0 || seq >= ctx->ctx->kv().n_seq_max()) return -1;
  return ctx->ctx->kv().seq_pos_max(seq);
}

}  // extern "C"
