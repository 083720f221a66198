/* kestrel: an embeddable LLM inference runtime. The C API.
 *
 * Every function returns a kestrel_status (or a value with a documented
 * failure value) and never throws, aborts or exits. After a failure, the
 * message is available from kestrel_last_error(handle) for the handle the
 * call was made on (model or context; NULL handle: the calling thread's
 * last error of a handle-less call).
 *
 * Threading: a model may be shared read-only by several contexts used on
 * several threads; one context must not be used by two threads at once.
 *
 * Usage:
 *   kestrel_model_params mp = kestrel_model_default_params();
 *   kestrel_model* model = NULL;
 *   if (kestrel_model_load("model.gguf", &mp, &model) != KESTREL_OK) { ... }
 *   kestrel_context_params cp = kestrel_context_default_params();
 *   kestrel_context* ctx = NULL;
 *   kestrel_context_create(model, &cp, &ctx);
 *   kestrel_sampler_params sp = kestrel_sampler_default_params();
 *   kestrel_generate(ctx, "Once upon a time", 64, &sp, on_text, user_data);
 *   kestrel_context_free(ctx);
 *   kestrel_model_free(model);
 */
#ifndef KESTREL_KESTREL_H
#define KESTREL_KESTREL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kestrel_status {
  KESTREL_OK = 0,
  KESTREL_ERR_INVALID_ARGUMENT = 1, /* a parameter is out of range or NULL */
  KESTREL_ERR_BAD_FILE = 2,         /* a model/tokenizer file is malformed or unsupported */
  KESTREL_ERR_UNSUPPORTED = 3,      /* valid, but this build or backend cannot do it */
  KESTREL_ERR_OUT_OF_MEMORY = 4,
  KESTREL_ERR_IO = 5,               /* the OS refused (open, read, mmap) */
  KESTREL_ERR_TOO_LONG = 6,         /* input above a configured cap, context full */
  KESTREL_ERR_CANCELLED = 7,        /* a callback asked to stop */
  KESTREL_ERR_RUNTIME = 8,          /* NaN logits, backend failure */
  KESTREL_ERR_INTERNAL = 9          /* a kestrel bug */
} kestrel_status;

typedef int32_t kestrel_token;
typedef struct kestrel_model kestrel_model;
typedef struct kestrel_context kestrel_context;
typedef struct kestrel_sampler kestrel_sampler;

/* "0.1.0" */
const char* kestrel_version(void);
/* CPU features and the kernel variant chosen, e.g. "avx2 fma f16c | cpu kernels: avx2". */
const char* kestrel_system_info(void);
const char* kestrel_status_name(kestrel_status status);
/* Message of the last failed call on this handle (model or context); "" if none.
 * NULL: the calling thread's last failure of a call without a handle (load, create).
 * A model may be shared by threads, so for a model it is the calling thread's last
 * failure on that model. The string stays valid until the next call on the handle. */
const char* kestrel_last_error(const void* handle);

/* ---- models ---- */

/* Progress in [0, 1]; return 0 to cancel the load (KESTREL_ERR_CANCELLED). */
typedef int (*kestrel_progress_fn)(float progress, void* user_data);

typedef struct kestrel_model_params {
  int use_mmap;                     /* 1: map the file (default); 0: read it into memory */
  int vocab_only;                   /* 1: tokenizer only (vocabulary GGUF files); default 0 */
  kestrel_progress_fn progress;     /* NULL: none (default) */
  void* progress_user_data;
  const char* llama2c_tokenizer;    /* llama2.c checkpoints: path of tokenizer.bin; NULL for GGUF */
} kestrel_model_params;

kestrel_model_params kestrel_model_default_params(void);
kestrel_status kestrel_model_load(const char* path, const kestrel_model_params* params, kestrel_model** out_model);
void kestrel_model_free(kestrel_model* model); /* NULL is a no-op */

int32_t kestrel_model_n_vocab(const kestrel_model* model);
int32_t kestrel_model_n_ctx_train(const kestrel_model* model);
int32_t kestrel_model_n_embd(const kestrel_model* model);
int32_t kestrel_model_n_layer(const kestrel_model* model);
kestrel_token kestrel_token_bos(const kestrel_model* model); /* -1 if none */
kestrel_token kestrel_token_eos(const kestrel_model* model);
int kestrel_token_is_eog(const kestrel_model* model, kestrel_token token);
/* Writes a one-line description (architecture, sizes) into buf; returns the needed length. */
int32_t kestrel_model_desc(const kestrel_model* model, char* buf, size_t buf_size);
/* Elements and bytes of all weight tensors; 0 for NULL or a vocabulary-only model. */
uint64_t kestrel_model_n_params(const kestrel_model* model);
uint64_t kestrel_model_size(const kestrel_model* model);

/* ---- inspection: the model file's metadata and tensor table ---- */

/* Metadata entries; -1 for NULL. */
int32_t kestrel_model_meta_count(const kestrel_model* model);
/* Key of entry i into buf (NUL-terminated, truncated to buf_size); returns the length
 * needed without the NUL, or -1 when i is out of range. */
int32_t kestrel_model_meta_key_by_index(const kestrel_model* model, int32_t i, char* buf, size_t buf_size);
/* Value of entry i as text: numbers printed, strings as stored, arrays as
 * "[N x type: a, b, c, ...]" (the first 8 elements); same return rule. */
int32_t kestrel_model_meta_val_str_by_index(const kestrel_model* model, int32_t i, char* buf, size_t buf_size);
/* Value of the entry named key as text; -1 when absent. */
int32_t kestrel_model_meta_val_str(const kestrel_model* model, const char* key, char* buf, size_t buf_size);

typedef struct kestrel_tensor_info {
  const char* name;      /* valid while the model lives */
  const char* type_name; /* "f32", "q4_K", ... */
  int32_t type;          /* GGUF / ggml type id */
  int32_t n_dims;
  int64_t ne[4];         /* elements per dimension (1 past n_dims) */
  uint64_t n_bytes;
} kestrel_tensor_info;

/* Tensors in the file; -1 for NULL. */
int32_t kestrel_model_tensor_count(const kestrel_model* model);
kestrel_status kestrel_model_tensor_info(const kestrel_model* model, int32_t i, kestrel_tensor_info* out);

/* ---- tokenizer ---- */

/* Tokenizes text[0..text_len). add_special: BOS/EOS as the model wants; parse_special:
 * recognise special-token texts. Writes up to max_tokens ids; *n_tokens gets the number
 * needed (KESTREL_ERR_TOO_LONG with *n_tokens set when max_tokens is too small). */
kestrel_status kestrel_tokenize(const kestrel_model* model, const char* text, size_t text_len, int add_special,
                                int parse_special, kestrel_token* tokens, int32_t max_tokens, int32_t* n_tokens);
/* Detokenizes; writes up to buf_size bytes (not NUL-terminated); *n_bytes gets the length needed
 * (KESTREL_ERR_TOO_LONG when buf_size is smaller). */
kestrel_status kestrel_detokenize(const kestrel_model* model, const kestrel_token* tokens, int32_t n_tokens,
                                  int render_special, char* buf, size_t buf_size, size_t* n_bytes);
/* Bytes of one token as it appears in text; *n_bytes gets the length needed
 * (KESTREL_ERR_TOO_LONG when buf_size is smaller). */
kestrel_status kestrel_token_to_piece(const kestrel_model* model, kestrel_token token, int render_special, char* buf,
                                      size_t buf_size, size_t* n_bytes);

/* ---- chat templates ---- */

/* One message of a conversation: NUL-terminated UTF-8. */
typedef struct kestrel_chat_message {
  const char* role;    /* "system", "user", "assistant", ... */
  const char* content;
} kestrel_chat_message;

/* The chat template argument tmpl of the functions below: NULL or "": the GGUF's
 * tokenizer.chat_template, else the built-in template of the model's architecture;
 * a built-in name ("chatml", "gemma", "llama3", "llama2", "phi3"); or the Jinja
 * source of a template. Templates are rendered as Hugging Face renders them
 * (jinja2, trim_blocks, lstrip_blocks); a construct kestrel's interpreter does not
 * support is KESTREL_ERR_UNSUPPORTED naming it; a template error (raise_exception,
 * an undefined attribute) is KESTREL_ERR_INVALID_ARGUMENT with its message. */

/* Renders messages[0..n_messages) (with the assistant's generation prompt when
 * add_generation_prompt) into buf, NUL-terminated when it fits; *n_bytes gets the
 * length without the NUL (KESTREL_ERR_TOO_LONG when buf_size <= that). */
kestrel_status kestrel_chat_apply_template(const kestrel_model* model, const char* tmpl,
                                           const kestrel_chat_message* messages, size_t n_messages,
                                           int add_generation_prompt, char* buf, size_t buf_size, size_t* n_bytes);
/* The token ids of that prompt: the template's own markup is parsed for special
 * tokens, message content never is (a user who types "<|im_end|>" gets text); BOS
 * first when the vocabulary adds one and the template did not. Same buffer rule as
 * kestrel_tokenize. */
kestrel_status kestrel_chat_tokenize(const kestrel_model* model, const char* tmpl,
                                     const kestrel_chat_message* messages, size_t n_messages,
                                     int add_generation_prompt, kestrel_token* tokens, int32_t max_tokens,
                                     int32_t* n_tokens);
/* Which template tmpl selects: origin gets a description ("the GGUF's
 * tokenizer.chat_template", "built-in 'gemma' (the GGUF has no ...)"), source its
 * Jinja text; each NUL-terminated and truncated to its size (either may be NULL with
 * size 0); *source_len gets the source's full length. */
kestrel_status kestrel_chat_template_info(const kestrel_model* model, const char* tmpl, char* origin,
                                          size_t origin_size, char* source, size_t source_size, size_t* source_len);

/* ---- contexts ---- */

/* How exactly exp() is computed inside softmax, GELU, SiLU and sigmoid (see the
 * README's exp tiers): exact (polynomial, <= 2 ulp), quake2 (IEEE-754 bit trick
 * with a quadratic mantissa, <= 0.27% relative), quake1 (first-order bit trick,
 * <= 3% relative). */
typedef enum kestrel_exp_tier {
  KESTREL_EXP_EXACT = 0,
  KESTREL_EXP_QUAKE2 = 1,
  KESTREL_EXP_QUAKE1 = 2
} kestrel_exp_tier;

/* Levels of the messages a context sends to its log callback. */
typedef enum kestrel_log_level {
  KESTREL_LOG_DEBUG = 0,
  KESTREL_LOG_INFO = 1,
  KESTREL_LOG_WARN = 2,
  KESTREL_LOG_ERROR = 3,
  KESTREL_LOG_NONE = 4 /* as log_level: nothing */
} kestrel_log_level;

/* Receives a context's messages (message without a trailing newline, valid
 * during the call; called on the thread that decodes). */
typedef void (*kestrel_log_fn)(void* user_data, int32_t level, const char* message);

/* Where a context runs its forward pass. */
typedef enum kestrel_device {
  KESTREL_DEVICE_CPU = 0,  /* the cpu kernels (default) */
  KESTREL_DEVICE_CUDA = 1, /* the GPU backend given as gpu_backend: weights, KV cache and every step on
                              the device; KESTREL_ERR_UNSUPPORTED when there is none or no GPU */
  KESTREL_DEVICE_AUTO = 2  /* the GPU when gpu_backend is given and a GPU is present, else the cpu */
} kestrel_device;

/* How a context on the cpu picks each weight-bearing matmul's kernel variant and thread count. Both give
 * the same output bits: the candidates are only kernels that compute every output the same way. */
typedef enum kestrel_sched {
  KESTREL_SCHED_STATIC = 0, /* the default policy's fixed row thresholds (default) */
  KESTREL_SCHED_DYNAMIC = 1 /* per step and shape, the candidate whose calibrated cost is lowest at the step's rows,
                               with hysteresis; calibrated on first use (seconds, see kestrel_calibrate) and cached */
} kestrel_sched;

/* A GPU backend: kestrel_backend_cuda() from <kestrel/kestrel_cuda.h> (the kestrel::cuda archive). */
typedef struct kestrel_backend kestrel_backend;

typedef struct kestrel_context_params {
  int32_t n_ctx;           /* KV cache cells per sequence; 0 = min(training context, 4096) (default 0) */
  int32_t n_batch;         /* tokens per micro-batch (default 512) */
  int32_t n_seq_max;       /* distinct sequence ids, each with its own n_ctx cells (default 1) */
  int32_t n_threads;       /* threads for generation (default: 1 per core, at most 8) */
  int32_t n_threads_batch; /* threads for prompt batches; 0 = n_threads (default 0) */
  uint32_t seed;           /* sampling seed (default 0x5eed) */
  int kv_f32;              /* 1: KV cache in f32; 0: f16 (default) */
  int reference_kernels;   /* 1: run every op on the scalar reference kernels (slow; for checks) */
  /* Exp tier per op, a kestrel_exp_tier value (default KESTREL_EXP_EXACT = 0);
   * other values: KESTREL_ERR_INVALID_ARGUMENT from kestrel_context_create. */
  int32_t exp_softmax;     /* the attention softmax */
  int32_t exp_gelu;        /* GELU / GeGLU feed-forward activations */
  int32_t exp_silu;        /* SiLU / SwiGLU feed-forward activations */
  int32_t exp_sigmoid;     /* sigmoid */
  kestrel_log_fn log_callback; /* where the context's messages go; NULL: nowhere (default NULL) */
  void* log_user_data;     /* passed back to log_callback (default NULL) */
  int32_t log_level;       /* least kestrel_log_level delivered (default KESTREL_LOG_WARN) */
  int32_t device;          /* a kestrel_device (default KESTREL_DEVICE_CPU) */
  const kestrel_backend* gpu_backend; /* for KESTREL_DEVICE_CUDA / AUTO (default NULL: none) */
  int gpu_graphs;          /* 1: replay each decode step as a device graph (default 1) */
  int32_t sched;           /* a kestrel_sched (default KESTREL_SCHED_STATIC); dynamic applies to the cpu device */
  /* Layers on the GPU (llama.cpp's -ngl): the last n_gpu_layers layers; n_layer + 1 or more, or -1, the
   * whole model (default -1); fewer keep the embedding, the first layers, their KV cells and the output
   * head on the host (cpu kernels); 0: the GPU runs nothing. */
  int32_t n_gpu_layers;
  int gpu_exact_f16;       /* 1: prompt GEMMs on F16 weights keep ~22 bits of the activations (two
                            * tensor-core passes) instead of rounding them to F16 (default 0) */
  /* Called after each micro-batch the context runs (a prompt longer than n_batch is several)
   * with its tokens and the tokens that kept logits: a per-step trace of the rows every
   * weight-bearing matmul saw, for schedulers and metrics. On the decoding thread; it must not
   * call into the context. NULL: none (default). */
  void (*step_callback)(void* user_data, int32_t n_tokens, int32_t n_outputs);
  void* step_user_data;    /* passed back to step_callback (default NULL) */
} kestrel_context_params;

kestrel_context_params kestrel_context_default_params(void);
kestrel_status kestrel_context_create(kestrel_model* model, const kestrel_context_params* params,
                                      kestrel_context** out_ctx);
void kestrel_context_free(kestrel_context* ctx); /* NULL is a no-op */
int32_t kestrel_context_n_ctx(const kestrel_context* ctx);
/* The backend that runs the context's forward pass: "cuda", "cpu-avx512", "ref", ...; "" for NULL. */
const char* kestrel_context_backend(const kestrel_context* ctx);

/* A batch of tokens: each with a position, a sequence id and whether to keep its logits. */
typedef struct kestrel_batch {
  int32_t n_tokens;
  const kestrel_token* tokens;
  const int32_t* pos;
  const int32_t* seq_id; /* NULL: all sequence 0 */
  const int8_t* logits;  /* NULL: only the last token */
} kestrel_batch;

kestrel_status kestrel_decode(kestrel_context* ctx, const kestrel_batch* batch);
/* Logits [n_vocab] of the i-th token that kept logits in the last decode; NULL if out of
 * range, or when the last decode returned token ids only (kestrel_generate on a GPU). */
const float* kestrel_get_logits(kestrel_context* ctx, int32_t i);
/* Removes sequence seq's cells with p0 <= pos < p1 (p1 < 0: to the end; seq < 0: every sequence). */
kestrel_status kestrel_kv_seq_rm(kestrel_context* ctx, int32_t seq, int32_t p0, int32_t p1);
/* Largest position stored for seq, -1 if none. */
int32_t kestrel_kv_seq_pos_max(kestrel_context* ctx, int32_t seq);

/* ---- sampling ---- */

typedef struct kestrel_sampler_params {
  float temperature;     /* <= 0: greedy (default 0.8) */
  int32_t top_k;         /* <= 0: off (default 40); values > n_vocab are clamped */
  float top_p;           /* in (0, 1]; 1 = off (default 0.95) */
  float min_p;           /* in [0, 1); 0 = off (default 0.05) */
  float repeat_penalty;  /* >= 0; 1 = off (default 1.0) */
  int32_t repeat_last_n; /* tokens the penalty looks back over (default 64) */
  uint32_t seed;         /* default 0x5eed */
  int32_t exp_softmax;   /* exp tier of the softmax over the vocabulary, a kestrel_exp_tier
                            (default KESTREL_EXP_EXACT); other values: KESTREL_ERR_INVALID_ARGUMENT */
} kestrel_sampler_params;

kestrel_sampler_params kestrel_sampler_default_params(void);
kestrel_status kestrel_sampler_create(const kestrel_model* model, const kestrel_sampler_params* params,
                                      kestrel_sampler** out_sampler);
void kestrel_sampler_free(kestrel_sampler* sampler);
/* Samples from logits [n_vocab]. NaN/Inf logits -> KESTREL_ERR_RUNTIME. */
kestrel_status kestrel_sampler_sample(kestrel_sampler* sampler, const float* logits, kestrel_token* out_token);
/* Records a token in the sampler's history (repetition penalty). */
void kestrel_sampler_accept(kestrel_sampler* sampler, kestrel_token token);
void kestrel_sampler_reset(kestrel_sampler* sampler);
const char* kestrel_sampler_last_error(const kestrel_sampler* sampler);

/* ---- generation ---- */

/* Receives generated text as complete UTF-8 pieces; return 0 to stop after this piece. */
typedef int (*kestrel_text_fn)(const char* text, size_t len, kestrel_token token, void* user_data);

typedef struct kestrel_timings {
  double t_load_ms;
  int32_t n_prompt_tokens;
  double t_prompt_ms;
  int32_t n_generated;
  double t_generate_ms;
} kestrel_timings;

/* Tokenizes the prompt (BOS per the model; an empty prompt starts from BOS), runs it,
 * and generates up to n_predict tokens (stopping at end-of-generation tokens), calling
 * on_text with each complete piece. Continues the context's sequence 0 from its start:
 * the cache is cleared first. n_predict < 0: until end of generation or a full context.
 * sampling NULL: the defaults with the context's seed. on_text may be NULL.
 * Returns KESTREL_OK when generation ends (n_predict reached, end-of-generation token,
 * context full), KESTREL_ERR_CANCELLED when on_text returned 0, KESTREL_ERR_TOO_LONG when
 * the prompt does not fit the context. Timings are filled in every case.
 * On a GPU context the device picks the tokens where the sampler allows (greedy without a
 * repetition penalty; top_k in 1..1024 with the exact exp tier and no penalty: the same
 * draw as on the host from the sampler's uniform, but for a uniform within rounding of a
 * boundary): only the ids come back, and kestrel_get_logits returns NULL afterwards. */
kestrel_status kestrel_generate(kestrel_context* ctx, const char* prompt, int32_t n_predict,
                                const kestrel_sampler_params* sampling, kestrel_text_fn on_text, void* user_data);
void kestrel_get_timings(const kestrel_context* ctx, kestrel_timings* out);

/* ---- speculative decoding (runtime/spec/speculative.h) ---- */

typedef enum kestrel_spec_mode {
  KESTREL_SPEC_SELF = 0,  /* the target with a block of middle layers skipped drafts */
  KESTREL_SPEC_DRAFT = 1, /* a second model (its own context) drafts */
} kestrel_spec_mode;

typedef struct kestrel_spec_params {
  int32_t mode;        /* a kestrel_spec_mode (default KESTREL_SPEC_SELF) */
  int32_t draft_max;   /* longest draft, [1, 32] (default 8) */
  int32_t adaptive;    /* 1: draft length adapts within [1, draft_max] (default 1) */
  int32_t skip_begin;  /* self: first skipped layer; -1: auto, by measured acceptance (default -1) */
  int32_t skip_end;    /* self: last skipped layer, inclusive (default -1) */
  int32_t sigmoid;     /* 1: the verify op's logistic ablation (not exact; default 0) */
  int32_t track_logprob; /* 1: measure the target's mean log-probability of the output (default 0) */
  int32_t draft_vocab;   /* > 0: the draft scores only token ids [0, draft_vocab), a prefix of its
                            output matrix (BPE ids follow merge order); the target still scores all,
                            so the output is unchanged (default 0: the whole vocabulary) */
  float p_min;           /* > 0: a round stops drafting at a draft token whose draft probability is
                            below p_min (default 0: off) */
  int32_t mask_drafting; /* 1: when the drafting model's GGUF carries kestrel.spec.mask_token_id, draft
                            a round in one pass with mask tokens; 0: always one pass per draft token
                            (default 1) */
} kestrel_spec_params;

typedef struct kestrel_spec_stats {
  int64_t n_rounds;    /* verify steps */
  int64_t n_drafted;   /* tokens drafted */
  int64_t n_accepted;  /* drafted tokens accepted */
  int64_t n_generated; /* tokens emitted */
  double mean_accepted;  /* tokens emitted per verify step */
  double t_prompt_ms, t_draft_ms, t_verify_ms, t_generate_ms;
  int32_t skip_begin, skip_end;  /* self: the skipped block used */
  double mean_logprob;           /* with track_logprob: mean target log-probability per emitted token */
  int64_t n_pmin_stops;          /* rounds whose drafting p_min cut short */
  int64_t n_draft_passes;        /* forward passes of the draft */
  int32_t mask_token;            /* the mask token of simultaneous drafting, -1: autoregressive */
  int64_t n_plain_steps;         /* plain decoding steps (drafting did not pay, or no room left) */
  int64_t n_rounds_by_g[33];     /* verify rounds by the number of drafts they scored */
} kestrel_spec_stats;

kestrel_spec_params kestrel_spec_default_params(void);
/* kestrel_generate with speculative decoding. draft_ctx: a context of the draft model
 * (mode DRAFT; its vocabulary must match the target's, else KESTREL_ERR_INVALID_ARGUMENT
 * naming the difference) or NULL (mode SELF). Temperature <= 0: greedy, token-identical
 * to kestrel_generate's greedy output; else the exact speculative rule under temperature,
 * top_k and top_p (min_p and the repetition penalty do not apply). stats may be NULL.
 * Timings are filled as by kestrel_generate. */
kestrel_status kestrel_generate_spec(kestrel_context* ctx, kestrel_context* draft_ctx, const char* prompt,
                                     int32_t n_predict, const kestrel_sampler_params* sampling,
                                     const kestrel_spec_params* spec, kestrel_text_fn on_text, void* user_data,
                                     kestrel_spec_stats* stats);

/* ---- conversion ---- */

/* Writes a GGUF file equivalent to a llama.cpp conversion of a llama2.c checkpoint
 * (model .bin + tokenizer.bin). Errors go to kestrel_last_error(NULL). */
kestrel_status kestrel_convert_llama2c(const char* model_path, const char* tokenizer_path, const char* out_path);

/* ---- matmul calibration (KESTREL_SCHED_DYNAMIC) ---- */

/* The model's matmul cost curves on this machine's cpu: for each weight-bearing matmul shape, each
 * candidate's time (kernel variant x 1..n_threads threads) at 1, 2, 4, ..., 512 rows. Read from the cache
 * ($KESTREL_CALIB_DIR, else $XDG_CACHE_HOME/kestrel/calibration, else ~/.cache/kestrel/calibration) when it
 * holds them for this machine, build and model shape; else measured and cached (force = 1: always measured).
 * A context with KESTREL_SCHED_DYNAMIC and n_threads threads uses the same curves. */
typedef struct kestrel_calibration kestrel_calibration;

typedef enum kestrel_calib_text {
  KESTREL_CALIB_TABLE = 0,  /* per shape: ms per call by rows and candidate, the best, the fixed thresholds' ratio
                               to it, and the crossovers */
  KESTREL_CALIB_CURVES = 1, /* per shape a block "# shape", a header of candidate labels, rows "M ms ms ...";
                               blocks apart by two blank lines (gnuplot's index) */
  KESTREL_CALIB_SOURCE = 2  /* one line: where the curves came from (the cache file, or measured and why) */
} kestrel_calib_text;

kestrel_status kestrel_calibrate(kestrel_model* model, int32_t n_threads, int32_t force, kestrel_calibration** out);
void kestrel_calibration_free(kestrel_calibration* cal); /* NULL is a no-op */
/* A kestrel_calib_text of the calibration, valid until it is freed; "" for NULL or an unknown kind. */
const char* kestrel_calibration_text(const kestrel_calibration* cal, int32_t kind);
/* Seconds spent measuring (0 when read from the cache); -1 for NULL. */
double kestrel_calibration_seconds(const kestrel_calibration* cal);

/* ---- Kronecker-sparse factorization (docs/ks-gguf.md) ---- */

typedef struct kestrel_ks_factorize_params {
  const char* layers;   /* "0,3,5"; NULL or "": every layer (default NULL) */
  const char* projs;    /* comma list of attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up,
                           ffn_down; NULL or "": all seven (default NULL) */
  const char* pattern;  /* "monarchN" (2 factors of N blocks for every shape) and/or
                           "proj=a,b,c,d:a,b,c,d" items, ';'-separated (default "monarch4") */
  int32_t iters;        /* alternating least-squares sweeps after the first solve (default 4) */
  int32_t factor_type;  /* storage of the factors as a GGUF type id: 0 F32, 1 F16 (default), 30 BF16 */
  uint32_t seed;        /* initial values of the first factor (default 1) */
} kestrel_ks_factorize_params;

/* Called once per fitted tensor: its name, chain "a,b,c,d:a,b,c,d", parameter counts,
 * relative Frobenius error of the fit and seconds spent. */
typedef void (*kestrel_ks_layer_fn)(const char* tensor, const char* chain, uint64_t dense_params, uint64_t ks_params,
                                    double rel_error, double seconds, void* user_data);

kestrel_ks_factorize_params kestrel_ks_factorize_default_params(void);
/* Writes out_path: in_path with the chosen dense projections replaced by fitted KS factor
 * chains (quantized weights are dequantized for the fit). Errors go to kestrel_last_error(NULL). */
kestrel_status kestrel_ks_factorize(const char* in_path, const char* out_path, const kestrel_ks_factorize_params* params,
                                    kestrel_ks_layer_fn on_layer, void* user_data);

#ifdef __cplusplus
}
#endif

#endif /* KESTREL_KESTREL_H */
