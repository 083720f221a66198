/* The C API from C: load stories260K, tokenize / detokenize, decode, greedy
 * generation against the reference ids of ../shared/models/README.md (section 1),
 * and bad calls (NULL handles, bad ids, bad parameters, missing files, a
 * directory) returning the documented status with a message.
 * Exit 0: all passed; 1: a check failed; 77: the model file is missing (skipped). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kestrel/kestrel.h>

static int g_failures = 0;

#define CHECK(cond)                                                 \
  do {                                                              \
    if (!(cond)) {                                                  \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                 \
    }                                                               \
  } while (0)

/* A failed call: the expected status and a non-empty message. */
#define CHECK_ERR(call, expected, handle)                                                   \
  do {                                                                                      \
    kestrel_status st_ = (call);                                                            \
    const char* msg_ = kestrel_last_error(handle);                                          \
    if (st_ != (expected) || msg_ == NULL || msg_[0] == '\0') {                             \
      fprintf(stderr, "%s:%d: %s -> %s (\"%s\"), expected %s with a message\n", __FILE__, __LINE__, #call, \
              kestrel_status_name(st_), msg_ ? msg_ : "(null)", kestrel_status_name(expected)); \
      ++g_failures;                                                                         \
    }                                                                                       \
  } while (0)

static const kestrel_token kReference[32] = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315,
                                             421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408,
                                             419, 292, 411, 322, 265, 282, 295, 433, 426, 385};

struct collect {
  char text[4096];
  size_t len;
  int calls;
  int stop_after;
};

static int on_text(const char* text, size_t len, kestrel_token token, void* user) {
  struct collect* c = (struct collect*)user;
  (void)token;
  if (c->len + len < sizeof c->text) {
    memcpy(c->text + c->len, text, len);
    c->len += len;
    c->text[c->len] = '\0';
  }
  ++c->calls;
  return c->stop_after > 0 && c->calls >= c->stop_after ? 0 : 1;
}

static void test_tokenizer(kestrel_model* model) {
  const char* text = "Once upon a time, there was a little girl named Lily.";
  kestrel_token ids[64];
  int32_t n = 0;
  CHECK(kestrel_tokenize(model, text, strlen(text), 1, 0, ids, 64, &n) == KESTREL_OK);
  CHECK(n > 5 && n < 64);
  CHECK(ids[0] == kestrel_token_bos(model));
  char buf[256];
  size_t nb = 0;
  /* Round trip of the text's own tokens (as llama.cpp, a leading BOS would take
   * the removal of the SPM space prefix and leave the space in place). */
  CHECK(kestrel_detokenize(model, ids + 1, n - 1, 0, buf, sizeof buf, &nb) == KESTREL_OK);
  CHECK(nb == strlen(text) && memcmp(buf, text, nb) == 0);
  CHECK(kestrel_detokenize(model, ids, n, 0, buf, sizeof buf, &nb) == KESTREL_OK);
  CHECK(nb == strlen(text) + 1 && buf[0] == ' ' && memcmp(buf + 1, text, nb - 1) == 0);

  /* Too small buffers report the size needed. */
  int32_t n2 = 0;
  CHECK_ERR(kestrel_tokenize(model, text, strlen(text), 1, 0, ids, 3, &n2), KESTREL_ERR_TOO_LONG, model);
  CHECK(n2 == n);
  CHECK(kestrel_tokenize(model, text, strlen(text), 1, 0, NULL, 0, &n2) == KESTREL_ERR_TOO_LONG && n2 == n);
  size_t nb2 = 0;
  CHECK_ERR(kestrel_detokenize(model, ids, n, 0, buf, 4, &nb2), KESTREL_ERR_TOO_LONG, model);
  CHECK(nb2 == strlen(text) + 1);

  /* Bad ids and arguments. */
  kestrel_token bad[2] = {1, 512};
  CHECK_ERR(kestrel_detokenize(model, bad, 2, 0, buf, sizeof buf, &nb), KESTREL_ERR_INVALID_ARGUMENT, model);
  bad[1] = -1;
  CHECK_ERR(kestrel_detokenize(model, bad, 2, 0, buf, sizeof buf, &nb), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_token_to_piece(model, 100000, 0, buf, sizeof buf, &nb), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_tokenize(model, NULL, 5, 1, 0, ids, 64, &n), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_tokenize(model, text, 4, 1, 0, ids, -1, &n), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_tokenize(NULL, text, 4, 1, 0, ids, 64, &n), KESTREL_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(kestrel_detokenize(NULL, ids, 1, 0, buf, sizeof buf, &nb), KESTREL_ERR_INVALID_ARGUMENT, NULL);
  /* A successful call clears the model's message for this thread. */
  CHECK(kestrel_token_to_piece(model, 403, 0, buf, sizeof buf, &nb) == KESTREL_OK && nb > 0);
  CHECK(strcmp(kestrel_last_error(model), "") == 0);
}

/* Greedy decoding through decode + sampler, token by token. */
static void test_decode_greedy(kestrel_model* model, kestrel_context* ctx) {
  kestrel_sampler_params sp = kestrel_sampler_default_params();
  sp.temperature = 0.0f;
  kestrel_sampler* smpl = NULL;
  CHECK(kestrel_sampler_create(model, &sp, &smpl) == KESTREL_OK && smpl != NULL);
  if (!smpl) return;
  CHECK(kestrel_kv_seq_rm(ctx, -1, 0, -1) == KESTREL_OK);
  kestrel_token tok = kestrel_token_bos(model);
  int ok = 1;
  for (int32_t i = 0; i < 32 && ok; ++i) {
    kestrel_batch b = {1, &tok, &i, NULL, NULL};
    if (kestrel_decode(ctx, &b) != KESTREL_OK) {
      fprintf(stderr, "decode failed at %d: %s\n", i, kestrel_last_error(ctx));
      ok = 0;
      break;
    }
    const float* logits = kestrel_get_logits(ctx, 0);
    CHECK(logits != NULL);
    if (!logits) break;
    CHECK(kestrel_get_logits(ctx, 1) == NULL);
    CHECK(kestrel_sampler_sample(smpl, logits, &tok) == KESTREL_OK);
    kestrel_sampler_accept(smpl, tok);
    if (tok != kReference[i]) {
      fprintf(stderr, "greedy step %d: got %d, reference %d\n", i, tok, kReference[i]);
      ++g_failures;
      ok = 0;
    }
  }
  CHECK(kestrel_kv_seq_pos_max(ctx, 0) == 31);

  /* NaN logits are a runtime error with a message on the sampler. */
  float nan_logits[512];
  for (int i = 0; i < 512; ++i) nan_logits[i] = 0.0f;
  nan_logits[7] = NAN;
  CHECK(kestrel_sampler_sample(smpl, nan_logits, &tok) == KESTREL_ERR_RUNTIME);
  CHECK(kestrel_sampler_last_error(smpl)[0] != '\0');
  CHECK(kestrel_last_error(smpl)[0] != '\0');
  kestrel_sampler_free(smpl);
}

/* The step callback sees each micro-batch: its tokens and the tokens that kept logits. */
typedef struct {
  int n;
  int32_t tokens[8], outputs[8];
} step_log;
static void on_step(void* user, int32_t n_tokens, int32_t n_outputs) {
  step_log* l = (step_log*)user;
  if (l->n < 8) l->tokens[l->n] = n_tokens, l->outputs[l->n] = n_outputs;
  ++l->n;
}

static void test_step_callback(kestrel_model* model) {
  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = 64;
  cp.n_batch = 4;
  cp.n_threads = 1;
  step_log log = {0, {0}, {0}};
  cp.step_callback = on_step;
  cp.step_user_data = &log;
  kestrel_context* ctx = NULL;
  CHECK(kestrel_context_create(model, &cp, &ctx) == KESTREL_OK);
  if (!ctx) return;
  /* 10 tokens in micro-batches of 4, 4 and 2, logits of tokens 5 and 9; then one token. */
  kestrel_token toks[10];
  int32_t pos[10];
  int8_t keep[10] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 1};
  for (int32_t i = 0; i < 10; ++i) toks[i] = kReference[i], pos[i] = i;
  kestrel_batch b = {10, toks, pos, NULL, keep};
  CHECK(kestrel_decode(ctx, &b) == KESTREL_OK);
  kestrel_batch one = {1, toks, pos + 9, NULL, NULL};
  CHECK(kestrel_kv_seq_rm(ctx, 0, 9, -1) == KESTREL_OK);
  CHECK(kestrel_decode(ctx, &one) == KESTREL_OK);
  CHECK(log.n == 4);
  const int32_t want_tokens[4] = {4, 4, 2, 1}, want_outputs[4] = {0, 1, 1, 1};
  for (int i = 0; i < 4 && i < log.n; ++i) CHECK(log.tokens[i] == want_tokens[i] && log.outputs[i] == want_outputs[i]);
  kestrel_context_free(ctx);
}

static void test_generate(kestrel_model* model, kestrel_context* ctx) {
  /* Expected text: the reference ids' pieces, as a stream emits them. */
  char expect[1024];
  size_t elen = 0;
  for (int i = 0; i < 32; ++i) {
    size_t nb = 0;
    CHECK(kestrel_token_to_piece(model, kReference[i], 0, expect + elen, sizeof expect - elen, &nb) == KESTREL_OK);
    elen += nb;
  }
  expect[elen] = '\0';

  kestrel_sampler_params sp = kestrel_sampler_default_params();
  sp.temperature = 0.0f;
  struct collect c;
  memset(&c, 0, sizeof c);
  CHECK(kestrel_generate(ctx, "", 32, &sp, on_text, &c) == KESTREL_OK);
  if (c.len != elen || memcmp(c.text, expect, elen) != 0) {
    fprintf(stderr, "generate from BOS:\n  got      '%s'\n  expected '%s'\n", c.text, expect);
    ++g_failures;
  }
  kestrel_timings t;
  kestrel_get_timings(ctx, &t);
  CHECK(t.n_prompt_tokens == 1);
  CHECK(t.n_generated == 32);
  CHECK(t.t_prompt_ms >= 0.0 && t.t_generate_ms > 0.0 && t.t_load_ms > 0.0);

  /* The same again (the cache is cleared first), and seeded sampling is reproducible. */
  struct collect c2;
  memset(&c2, 0, sizeof c2);
  CHECK(kestrel_generate(ctx, "", 32, &sp, on_text, &c2) == KESTREL_OK);
  CHECK(c2.len == c.len && memcmp(c2.text, c.text, c.len) == 0);
  sp = kestrel_sampler_default_params();
  sp.seed = 99;
  struct collect r1, r2;
  memset(&r1, 0, sizeof r1);
  memset(&r2, 0, sizeof r2);
  CHECK(kestrel_generate(ctx, "Once upon a time", 40, &sp, on_text, &r1) == KESTREL_OK);
  CHECK(kestrel_generate(ctx, "Once upon a time", 40, &sp, on_text, &r2) == KESTREL_OK);
  CHECK(r1.len > 0 && r1.len == r2.len && memcmp(r1.text, r2.text, r1.len) == 0);

  /* The callback stops generation after its piece. */
  struct collect s;
  memset(&s, 0, sizeof s);
  s.stop_after = 3;
  CHECK_ERR(kestrel_generate(ctx, "Once", 32, &sp, on_text, &s), KESTREL_ERR_CANCELLED, ctx);
  CHECK(s.calls == 3);

  /* Bad sampling parameters. */
  sp = kestrel_sampler_default_params();
  sp.temperature = NAN;
  CHECK_ERR(kestrel_generate(ctx, "Once", 4, &sp, NULL, NULL), KESTREL_ERR_INVALID_ARGUMENT, ctx);
  sp = kestrel_sampler_default_params();
  sp.repeat_penalty = -1.0f;
  CHECK_ERR(kestrel_generate(ctx, "Once", 4, &sp, NULL, NULL), KESTREL_ERR_INVALID_ARGUMENT, ctx);
  kestrel_sampler* smpl = NULL;
  CHECK_ERR(kestrel_sampler_create(model, &sp, &smpl), KESTREL_ERR_INVALID_ARGUMENT, NULL);
  CHECK(smpl == NULL);
  /* Out-of-range values with a clamping rule are accepted. */
  sp = kestrel_sampler_default_params();
  sp.top_k = 100000;
  sp.top_p = 3.0f;
  sp.min_p = -1.0f;
  CHECK(kestrel_generate(ctx, "Once", 4, &sp, NULL, NULL) == KESTREL_OK);
}

static int count_occurrences(const char* text, const char* what) {
  int n = 0;
  for (const char* p = strstr(text, what); p; p = strstr(p + strlen(what), what)) ++n;
  return n;
}

static void test_bad_calls(kestrel_model* model, kestrel_context* ctx) {
  kestrel_model* m = (kestrel_model*)0x1;
  CHECK_ERR(kestrel_model_load(NULL, NULL, &m), KESTREL_ERR_INVALID_ARGUMENT, NULL);
  CHECK(m == NULL);
  CHECK_ERR(kestrel_model_load("/nonexistent/kestrel/model.gguf", NULL, &m), KESTREL_ERR_IO, NULL);
  CHECK(count_occurrences(kestrel_last_error(NULL), "/nonexistent/kestrel/model.gguf") == 1);
  {
    kestrel_status st = kestrel_model_load(KESTREL_SHARED_DIR "/models", NULL, &m);
    CHECK(st == KESTREL_ERR_IO || st == KESTREL_ERR_BAD_FILE);
    CHECK(kestrel_last_error(NULL)[0] != '\0');
    CHECK(m == NULL);
  }
  /* A file that is not a model: a tokenizer test input. The message names it once. */
  CHECK_ERR(kestrel_model_load(KESTREL_SHARED_DIR "/models/llama.cpp-vocab/ggml-vocab-gpt-2.gguf.inp", NULL, &m),
            KESTREL_ERR_BAD_FILE, NULL);
  CHECK(count_occurrences(kestrel_last_error(NULL), "ggml-vocab-gpt-2.gguf.inp") == 1);

  kestrel_context* c = NULL;
  kestrel_context_params cp = kestrel_context_default_params();
  CHECK_ERR(kestrel_context_create(NULL, &cp, &c), KESTREL_ERR_INVALID_ARGUMENT, NULL);
  cp.n_threads = 0;
  CHECK_ERR(kestrel_context_create(model, &cp, &c), KESTREL_ERR_INVALID_ARGUMENT, NULL);
  cp = kestrel_context_default_params();
  cp.n_ctx = -5;
  CHECK_ERR(kestrel_context_create(model, &cp, &c), KESTREL_ERR_INVALID_ARGUMENT, NULL);
  CHECK(c == NULL);
  /* Layers on the GPU: -1 (the default) is the whole model; below -1 is refused. */
  cp = kestrel_context_default_params();
  CHECK(cp.n_gpu_layers == -1 && cp.gpu_exact_f16 == 0);
  cp.n_gpu_layers = -2;
  CHECK_ERR(kestrel_context_create(model, &cp, &c), KESTREL_ERR_INVALID_ARGUMENT, NULL);
  CHECK(c == NULL);

  kestrel_token toks[2] = {1, 600};
  int32_t pos[2] = {0, 1};
  kestrel_batch b = {2, toks, pos, NULL, NULL};
  CHECK_ERR(kestrel_decode(ctx, &b), KESTREL_ERR_INVALID_ARGUMENT, ctx);
  toks[1] = -3;
  CHECK_ERR(kestrel_decode(ctx, &b), KESTREL_ERR_INVALID_ARGUMENT, ctx);
  toks[1] = 5;
  pos[1] = -1;
  CHECK_ERR(kestrel_decode(ctx, &b), KESTREL_ERR_INVALID_ARGUMENT, ctx);
  b.n_tokens = 0;
  CHECK_ERR(kestrel_decode(ctx, &b), KESTREL_ERR_INVALID_ARGUMENT, ctx);
  CHECK_ERR(kestrel_decode(ctx, NULL), KESTREL_ERR_INVALID_ARGUMENT, ctx);
  CHECK_ERR(kestrel_decode(NULL, &b), KESTREL_ERR_INVALID_ARGUMENT, NULL);
  CHECK(kestrel_get_logits(NULL, 0) == NULL);
  CHECK_ERR(kestrel_kv_seq_rm(ctx, 5, 0, -1), KESTREL_ERR_INVALID_ARGUMENT, ctx);
  CHECK(kestrel_kv_seq_pos_max(NULL, 0) == -1);
  CHECK_ERR(kestrel_generate(NULL, "x", 4, NULL, NULL, NULL), KESTREL_ERR_INVALID_ARGUMENT, NULL);

  kestrel_sampler_params sp = kestrel_sampler_default_params();
  kestrel_sampler* s = NULL;
  CHECK_ERR(kestrel_sampler_create(NULL, &sp, &s), KESTREL_ERR_INVALID_ARGUMENT, NULL);
  kestrel_token t;
  CHECK_ERR(kestrel_sampler_sample(NULL, NULL, &t), KESTREL_ERR_INVALID_ARGUMENT, NULL);

  /* A prompt longer than the context. */
  cp = kestrel_context_default_params();
  cp.n_ctx = 8;
  cp.n_threads = 1;
  CHECK(kestrel_context_create(model, &cp, &c) == KESTREL_OK);
  if (c) {
    CHECK(kestrel_context_n_ctx(c) == 8);
    CHECK_ERR(kestrel_generate(c, "Once upon a time, there was a little girl named Lily.", 4, NULL, NULL, NULL),
              KESTREL_ERR_TOO_LONG, c);
    /* Generation stops cleanly when the context is full. */
    struct collect col;
    memset(&col, 0, sizeof col);
    CHECK(kestrel_generate(c, "", -1, NULL, on_text, &col) == KESTREL_OK);
    kestrel_timings tm;
    kestrel_get_timings(c, &tm);
    CHECK(tm.n_generated >= 1 && tm.n_generated <= 8);
    kestrel_context_free(c);
  }

  /* NULL frees are no-ops; getters on NULL return their failure values. */
  kestrel_model_free(NULL);
  kestrel_context_free(NULL);
  kestrel_sampler_free(NULL);
  CHECK(kestrel_model_n_vocab(NULL) == -1);
  CHECK(kestrel_token_bos(NULL) == -1);
  CHECK(kestrel_context_n_ctx(NULL) == -1);
  CHECK(strcmp(kestrel_status_name(KESTREL_ERR_BAD_FILE), "bad_file") == 0);
}

/* Every entry point with NULL handles, a handle of the wrong kind and NULL
 * out-pointers: a status with a message (or the documented failure value),
 * never a crash. A context cast to a model and the like is caught by the
 * handle's magic number. */
static void test_every_entry_point_rejects_bad_handles(kestrel_model* model, kestrel_context* ctx) {
  kestrel_model* wrong_model = (kestrel_model*)(void*)ctx;
  kestrel_context* wrong_ctx = (kestrel_context*)(void*)model;
  kestrel_sampler* wrong_smpl = (kestrel_sampler*)(void*)model;
  char buf[64];
  size_t nb = 7;
  int32_t n = 7;
  kestrel_token t = 5;

  CHECK(kestrel_version() != NULL && kestrel_version()[0] != '\0');
  CHECK(kestrel_system_info() != NULL && strstr(kestrel_system_info(), "kestrel") != NULL);
  CHECK(strcmp(kestrel_status_name((kestrel_status)-1), "unknown") == 0);
  CHECK(strcmp(kestrel_status_name((kestrel_status)99), "unknown") == 0);
  {
    int junk = 0x12345678;
    CHECK(strcmp(kestrel_last_error(&junk), "not a live kestrel handle") == 0);
  }

  /* Model getters: -1 / 0 / empty for NULL and for a context passed as a model. */
  kestrel_model* bad_models[2] = {NULL, wrong_model};
  for (int i = 0; i < 2; ++i) {
    kestrel_model* m = bad_models[i];
    CHECK(kestrel_model_n_vocab(m) == -1);
    CHECK(kestrel_model_n_ctx_train(m) == -1);
    CHECK(kestrel_model_n_embd(m) == -1);
    CHECK(kestrel_model_n_layer(m) == -1);
    CHECK(kestrel_token_bos(m) == -1 && kestrel_token_eos(m) == -1);
    CHECK(kestrel_token_is_eog(m, 2) == 0);
    CHECK(kestrel_model_n_params(m) == 0 && kestrel_model_size(m) == 0);
    buf[0] = 'x';
    CHECK(kestrel_model_desc(m, buf, sizeof buf) == -1 && buf[0] == '\0');
    CHECK(kestrel_model_meta_count(m) == -1);
    CHECK(kestrel_model_meta_key_by_index(m, 0, buf, sizeof buf) == -1);
    CHECK(kestrel_model_meta_val_str_by_index(m, 0, buf, sizeof buf) == -1);
    CHECK(kestrel_model_meta_val_str(m, "general.architecture", buf, sizeof buf) == -1);
    CHECK(kestrel_model_tensor_count(m) == -1);
    kestrel_tensor_info ti;
    CHECK_ERR(kestrel_model_tensor_info(m, 0, &ti), KESTREL_ERR_INVALID_ARGUMENT, NULL);
    CHECK_ERR(kestrel_tokenize(m, "a", 1, 1, 0, &t, 1, &n), KESTREL_ERR_INVALID_ARGUMENT, NULL);
    CHECK(n == 0);
    CHECK_ERR(kestrel_detokenize(m, &t, 1, 0, buf, sizeof buf, &nb), KESTREL_ERR_INVALID_ARGUMENT, NULL);
    CHECK(nb == 0);
    CHECK_ERR(kestrel_token_to_piece(m, 5, 0, buf, sizeof buf, &nb), KESTREL_ERR_INVALID_ARGUMENT, NULL);
    kestrel_context* c = (kestrel_context*)0x1;
    CHECK_ERR(kestrel_context_create(m, NULL, &c), KESTREL_ERR_INVALID_ARGUMENT, NULL);
    CHECK(c == NULL);
    kestrel_sampler* s = (kestrel_sampler*)0x1;
    CHECK_ERR(kestrel_sampler_create(m, NULL, &s), KESTREL_ERR_INVALID_ARGUMENT, NULL);
    CHECK(s == NULL);
  }
  /* Freeing a handle of the wrong kind is ignored (the magic number does not match). */
  kestrel_model_free(wrong_model);
  kestrel_context_free(wrong_ctx);
  kestrel_sampler_free(wrong_smpl);
  CHECK(kestrel_model_n_vocab(model) == 512);
  CHECK(kestrel_context_n_ctx(ctx) > 0);

  /* NULL out-pointers and buffers on a live model. */
  kestrel_tensor_info ti;
  CHECK_ERR(kestrel_model_tensor_info(model, 0, NULL), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_model_tensor_info(model, -1, &ti), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK(kestrel_model_meta_val_str(model, NULL, buf, sizeof buf) == -1);
  CHECK(kestrel_model_meta_val_str_by_index(model, -1, buf, sizeof buf) == -1);
  CHECK(kestrel_model_meta_val_str_by_index(model, 0, NULL, 0) > 0); /* length only */
  CHECK(kestrel_model_desc(model, NULL, 0) > 0);
  CHECK_ERR(kestrel_tokenize(model, "a", 1, 1, 0, &t, 1, NULL), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_tokenize(model, "a", 1, 1, 0, NULL, 4, &n), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_tokenize(model, "a", 1, 1, 0, &t, -1, &n), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_detokenize(model, &t, 1, 0, buf, sizeof buf, NULL), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_detokenize(model, NULL, 1, 0, buf, sizeof buf, &nb), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_detokenize(model, &t, -1, 0, buf, sizeof buf, &nb), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_detokenize(model, &t, 1, 0, NULL, 8, &nb), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_token_to_piece(model, 5, 0, buf, sizeof buf, NULL), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_token_to_piece(model, 5, 0, NULL, 8, &nb), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_token_to_piece(model, 512, 0, buf, sizeof buf, &nb), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK_ERR(kestrel_context_create(model, NULL, NULL), KESTREL_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(kestrel_sampler_create(model, NULL, NULL), KESTREL_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(kestrel_model_load("x.gguf", NULL, NULL), KESTREL_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(kestrel_convert_llama2c(NULL, "t.bin", "o.gguf"), KESTREL_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(kestrel_convert_llama2c("/nonexistent/kestrel/m.bin", "/nonexistent/kestrel/t.bin", "/nonexistent/kestrel/o.gguf"),
            KESTREL_ERR_IO, NULL);

  /* Context calls: NULL and a model passed as a context. */
  kestrel_context* bad_ctxs[2] = {NULL, wrong_ctx};
  for (int i = 0; i < 2; ++i) {
    kestrel_context* c = bad_ctxs[i];
    kestrel_batch b = {1, &t, &n, NULL, NULL};
    CHECK(kestrel_context_n_ctx(c) == -1);
    CHECK_ERR(kestrel_decode(c, &b), KESTREL_ERR_INVALID_ARGUMENT, NULL);
    CHECK(kestrel_get_logits(c, 0) == NULL);
    CHECK_ERR(kestrel_kv_seq_rm(c, 0, 0, -1), KESTREL_ERR_INVALID_ARGUMENT, NULL);
    CHECK(kestrel_kv_seq_pos_max(c, 0) == -1);
    CHECK_ERR(kestrel_generate(c, "x", 1, NULL, NULL, NULL), KESTREL_ERR_INVALID_ARGUMENT, NULL);
    kestrel_timings tm;
    tm.n_generated = 99;
    kestrel_get_timings(c, &tm);
    CHECK(tm.n_generated == 0);
  }
  kestrel_get_timings(ctx, NULL); /* no-op */
  CHECK_ERR(kestrel_kv_seq_rm(ctx, 0, -1, -1), KESTREL_ERR_INVALID_ARGUMENT, ctx);
  CHECK_ERR(kestrel_kv_seq_rm(ctx, 0, 5, 2), KESTREL_ERR_INVALID_ARGUMENT, ctx);
  CHECK(kestrel_kv_seq_rm(ctx, -1, 0, -1) == KESTREL_OK); /* every sequence */
  CHECK(kestrel_kv_seq_pos_max(ctx, 7) == -1);
  CHECK(kestrel_get_logits(ctx, -1) == NULL && kestrel_last_error(ctx)[0] != '\0');

  /* Sampler calls: NULL and a model passed as a sampler. */
  kestrel_sampler* bad_smpls[2] = {NULL, wrong_smpl};
  float logits[4] = {0, 1, 2, 3};
  for (int i = 0; i < 2; ++i) {
    kestrel_sampler* s = bad_smpls[i];
    CHECK_ERR(kestrel_sampler_sample(s, logits, &t), KESTREL_ERR_INVALID_ARGUMENT, NULL);
    kestrel_sampler_accept(s, 1); /* no-ops */
    kestrel_sampler_reset(s);
    CHECK(kestrel_sampler_last_error(s) != NULL && kestrel_sampler_last_error(s)[0] != '\0');
  }
  kestrel_sampler* s = NULL;
  CHECK(kestrel_sampler_create(model, NULL, &s) == KESTREL_OK && s != NULL);
  if (s) {
    CHECK_ERR(kestrel_sampler_sample(s, logits, NULL), KESTREL_ERR_INVALID_ARGUMENT, s);
    CHECK(strstr(kestrel_sampler_last_error(s), "out_token") != NULL);
    CHECK_ERR(kestrel_sampler_sample(s, NULL, &t), KESTREL_ERR_INVALID_ARGUMENT, s);
    kestrel_sampler_reset(s);
    kestrel_sampler_free(s);
  }
}

/* The context's log callback: at debug level, building a plan says so. */
struct log_tally {
  int n_plan, n_below;
  int32_t least;
};
static void on_log(void* user, int32_t level, const char* message) {
  struct log_tally* t = (struct log_tally*)user;
  if (strstr(message, "plan for 1 tokens")) ++t->n_plan;
  if (level < t->least) ++t->n_below;
}
static void test_log_callback(kestrel_model* model) {
  struct log_tally tally = {0, 0, KESTREL_LOG_DEBUG};
  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = 64;
  cp.n_threads = 1;
  cp.log_callback = on_log;
  cp.log_user_data = &tally;
  cp.log_level = KESTREL_LOG_DEBUG;
  kestrel_context* ctx = NULL;
  CHECK(kestrel_context_create(model, &cp, &ctx) == KESTREL_OK);
  if (!ctx) return;
  kestrel_token tok = kestrel_token_bos(model);
  for (int32_t i = 0; i < 3; ++i) {
    kestrel_batch b = {1, &tok, &i, NULL, NULL};
    CHECK(kestrel_decode(ctx, &b) == KESTREL_OK);
  }
  CHECK(tally.n_plan == 1); /* built once, reused for the next steps */
  kestrel_context_free(ctx);
  /* Above the level nothing arrives; a level outside the enum is refused. */
  tally.n_plan = 0;
  cp.log_level = KESTREL_LOG_WARN;
  tally.least = KESTREL_LOG_WARN;
  CHECK(kestrel_context_create(model, &cp, &ctx) == KESTREL_OK);
  if (ctx) {
    kestrel_batch b = {1, &tok, &(int32_t){0}, NULL, NULL};
    CHECK(kestrel_decode(ctx, &b) == KESTREL_OK);
    CHECK(tally.n_plan == 0 && tally.n_below == 0);
    kestrel_context_free(ctx);
  }
  cp.log_level = 9;
  ctx = NULL;
  CHECK(kestrel_context_create(model, &cp, &ctx) == KESTREL_ERR_INVALID_ARGUMENT && ctx == NULL);
}

static void test_inspect(kestrel_model* model) {
  char buf[256];
  CHECK(kestrel_model_desc(model, buf, sizeof buf) > 0 && strstr(buf, "llama") != NULL);
  CHECK(kestrel_model_meta_val_str(model, "general.architecture", buf, sizeof buf) == 5 && strcmp(buf, "llama") == 0);
  CHECK(kestrel_model_meta_val_str(model, "llama.block_count", buf, sizeof buf) > 0 && strcmp(buf, "5") == 0);
  CHECK(kestrel_model_meta_val_str(model, "no.such.key", buf, sizeof buf) == -1);
  const int32_t nk = kestrel_model_meta_count(model);
  CHECK(nk > 5);
  CHECK(kestrel_model_meta_key_by_index(model, nk, buf, sizeof buf) == -1);
  CHECK(kestrel_model_tensor_count(model) == 48);
  kestrel_tensor_info ti;
  CHECK(kestrel_model_tensor_info(model, 0, &ti) == KESTREL_OK && ti.name && ti.name[0]);
  CHECK_ERR(kestrel_model_tensor_info(model, 48, &ti), KESTREL_ERR_INVALID_ARGUMENT, model);
  CHECK(kestrel_model_n_params(model) > 200000 && kestrel_model_n_params(model) < 400000);
  CHECK(kestrel_model_size(model) == 4 * kestrel_model_n_params(model)); /* all F32 */
}

/* One model shared read-only by two contexts on two threads: both generate
 * the reference text, and each thread's model errors stay its own. */
struct thread_job {
  kestrel_model* model;
  int ok;
  char text[1024];
};

static void* thread_main(void* arg) {
  struct thread_job* job = (struct thread_job*)arg;
  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = 64;
  cp.n_threads = 1;
  kestrel_context* ctx = NULL;
  job->ok = 0;
  if (kestrel_context_create(job->model, &cp, &ctx) != KESTREL_OK) return NULL;
  kestrel_sampler_params sp = kestrel_sampler_default_params();
  sp.temperature = 0.0f;
  struct collect c;
  int ok = 1;
  for (int rep = 0; rep < 5 && ok; ++rep) {
    memset(&c, 0, sizeof c);
    ok = kestrel_generate(ctx, "", 32, &sp, on_text, &c) == KESTREL_OK;
    kestrel_token bad = 9999;
    size_t nb = 0;
    char buf[8];
    ok = ok && kestrel_token_to_piece(job->model, bad, 0, buf, sizeof buf, &nb) == KESTREL_ERR_INVALID_ARGUMENT;
    ok = ok && strstr(kestrel_last_error(job->model), "9999") != NULL;
  }
  memcpy(job->text, c.text, c.len + 1);
  job->ok = ok;
  kestrel_context_free(ctx);
  return NULL;
}

static void test_threads(kestrel_model* model, const char* expect) {
  struct thread_job jobs[2];
  pthread_t th[2];
  for (int i = 0; i < 2; ++i) {
    memset(&jobs[i], 0, sizeof jobs[i]);
    jobs[i].model = model;
    CHECK(pthread_create(&th[i], NULL, thread_main, &jobs[i]) == 0);
  }
  for (int i = 0; i < 2; ++i) {
    pthread_join(th[i], NULL);
    CHECK(jobs[i].ok);
    CHECK(strcmp(jobs[i].text, expect) == 0);
  }
  /* This thread made no failing call on the model since its last success. */
  size_t nb = 0;
  char buf[8];
  CHECK(kestrel_token_to_piece(model, 5, 0, buf, sizeof buf, &nb) == KESTREL_OK);
  CHECK(kestrel_last_error(model)[0] == '\0');
}

int main(void) {
  const char* path = KESTREL_SHARED_DIR "/models/stories260K/stories260K.gguf";
  FILE* f = fopen(path, "rb");
  if (!f) {
    printf("SKIP: %s not found\n", path);
    return 77;
  }
  fclose(f);

  kestrel_model_params mp = kestrel_model_default_params();
  kestrel_model* model = NULL;
  if (kestrel_model_load(path, &mp, &model) != KESTREL_OK) {
    fprintf(stderr, "load failed: %s\n", kestrel_last_error(NULL));
    return 1;
  }
  CHECK(kestrel_model_n_vocab(model) == 512);
  CHECK(kestrel_model_n_embd(model) == 64);
  CHECK(kestrel_model_n_layer(model) == 5);
  CHECK(kestrel_token_bos(model) == 1 && kestrel_token_eos(model) == 2);
  CHECK(kestrel_token_is_eog(model, 2) == 1 && kestrel_token_is_eog(model, 403) == 0);

  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = 256;
  cp.n_threads = 1;
  kestrel_context* ctx = NULL;
  if (kestrel_context_create(model, &cp, &ctx) != KESTREL_OK) {
    fprintf(stderr, "context failed: %s\n", kestrel_last_error(NULL));
    kestrel_model_free(model);
    return 1;
  }

  test_tokenizer(model);
  test_decode_greedy(model, ctx);
  test_generate(model, ctx);
  test_bad_calls(model, ctx);
  test_every_entry_point_rejects_bad_handles(model, ctx);
  test_inspect(model);
  test_log_callback(model);
  test_step_callback(model);
  {
    char expect[1024];
    size_t elen = 0;
    for (int i = 0; i < 32; ++i) {
      size_t nb = 0;
      if (kestrel_token_to_piece(model, kReference[i], 0, expect + elen, sizeof expect - elen - 1, &nb) == KESTREL_OK)
        elen += nb;
    }
    expect[elen] = '\0';
    test_threads(model, expect);
  }

  kestrel_context_free(ctx);
  kestrel_model_free(model);
  if (g_failures) {
    fprintf(stderr, "test_c_api: %d check(s) failed\n", g_failures);
    return 1;
  }
  printf("test_c_api: all checks passed\n");
  return 0;
}
