/* An outside program using an installed libkestrel.a through the public C API.
 *
 *   kestrel_consumer [model.gguf]
 *
 * Always: version and system info, and a failed load that must come back as a
 * status (not a crash). With a model path: load it, generate 16 tokens greedily
 * and print them. Exit 0 when everything answers as documented, 1 otherwise. */
#include <stdio.h>
#include <string.h>

#include <kestrel/kestrel.h>

static int print_piece(const char* text, size_t len, kestrel_token token, void* user_data) {
  (void)token;
  *(int*)user_data += 1;
  fwrite(text, 1, len, stdout);
  return 1;
}

static int generate(const char* path) {
  kestrel_model_params mp = kestrel_model_default_params();
  kestrel_model* model = NULL;
  kestrel_status st = kestrel_model_load(path, &mp, &model);
  if (st != KESTREL_OK) {
    fprintf(stderr, "consumer: loading %s: %s: %s\n", path, kestrel_status_name(st), kestrel_last_error(NULL));
    return 1;
  }
  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_threads = 2;
  kestrel_context* ctx = NULL;
  st = kestrel_context_create(model, &cp, &ctx);
  if (st != KESTREL_OK) {
    fprintf(stderr, "consumer: context: %s: %s\n", kestrel_status_name(st), kestrel_last_error(NULL));
    kestrel_model_free(model);
    return 1;
  }
  kestrel_sampler_params sp = kestrel_sampler_default_params();
  sp.temperature = 0.0f; /* greedy */
  int n_pieces = 0;
  printf("generated: ");
  st = kestrel_generate(ctx, "Once upon a time", 16, &sp, print_piece, &n_pieces);
  printf("\n");
  kestrel_timings t;
  kestrel_get_timings(ctx, &t);
  const int ok = st == KESTREL_OK && n_pieces > 0 && t.n_generated > 0;
  if (!ok) fprintf(stderr, "consumer: generate: %s: %s\n", kestrel_status_name(st), kestrel_last_error(ctx));
  else printf("prompt %d tokens, generated %d tokens\n", t.n_prompt_tokens, t.n_generated);
  kestrel_context_free(ctx);
  kestrel_model_free(model);
  return ok ? 0 : 1;
}

int main(int argc, char** argv) {
  const char* version = kestrel_version();
  const char* info = kestrel_system_info();
  if (version == NULL || info == NULL) {
    fprintf(stderr, "consumer: kestrel returned NULL\n");
    return 1;
  }
  printf("kestrel_version: %s\nkestrel_system_info: %s\n", version, info);
#ifdef KESTREL_EXPECT_VERSION
  if (strcmp(version, KESTREL_EXPECT_VERSION) != 0) {
    fprintf(stderr, "consumer: library says %s, package says %s\n", version, KESTREL_EXPECT_VERSION);
    return 1;
  }
#endif
  if (strstr(info, version) == NULL || strstr(info, "selected:") == NULL) {
    fprintf(stderr, "consumer: system info lacks the version or the selected variant\n");
    return 1;
  }

  /* A file that does not exist: a status and a message, no model, no abort. */
  kestrel_model_params mp = kestrel_model_default_params();
  kestrel_model* model = NULL;
  const kestrel_status st = kestrel_model_load("/nonexistent/kestrel-consumer.gguf", &mp, &model);
  const char* err = kestrel_last_error(NULL);
  if (st == KESTREL_OK || model != NULL || err == NULL || err[0] == '\0') {
    fprintf(stderr, "consumer: loading a missing file did not fail cleanly\n");
    return 1;
  }
  printf("missing file: %s: %s\n", kestrel_status_name(st), err);

  return argc > 1 ? generate(argv[1]) : 0;
}
