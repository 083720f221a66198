/* kestrel/server.h: continuous batching for embedders. A scheduler takes over a
 * context whose n_seq_max sequences become slots (each with its own n_ctx KV
 * cells), runs one inference thread, and serves many requests at once: every
 * step decodes one token of each generating request together with bounded
 * chunks of the prompts still being read. Each request has its own sampler,
 * stop strings, token limit and optional log-probabilities, and can be
 * cancelled. A slot keeps its tokens after a request ends; a new request goes
 * to the idle slot sharing the longest prompt prefix (when it covers at least
 * half of the prompt; else the least recently used) and decodes only the rest.
 * With quantized weights a greedy request's tokens do not depend on what else
 * is running. `kestrel serve` (an OpenAI-compatible HTTP server) is built on it.
 *
 * Threading: submit, cancel and get_stats may be called from any thread. Events
 * arrive on the inference thread: a callback must return quickly (hand the
 * event to another thread) and may call only kestrel_scheduler_cancel.
 * Errors of a failed call: kestrel_last_error(NULL) on the calling thread.
 *
 * Usage:
 *   kestrel_context_params cp = kestrel_context_default_params();
 *   cp.n_seq_max = 4;                                   // four slots
 *   kestrel_context_create(model, &cp, &ctx);
 *   kestrel_scheduler_params sp = kestrel_scheduler_default_params();
 *   sp.draft = draft_ctx;   // optional: a draft model's context (n_seq_max as ctx) speculates
 *   kestrel_scheduler* sched = NULL;
 *   kestrel_scheduler_create(ctx, &sp, &sched);
 *   kestrel_request_params rp = kestrel_request_default_params();
 *   rp.prompt = ids; rp.n_prompt = n_ids; rp.max_tokens = 64;
 *   rp.on_event = on_event; rp.user_data = my_state;    // text, then one event with done = 1
 *   uint64_t id = 0;
 *   kestrel_scheduler_submit(sched, &rp, &id);
 *   ...
 *   kestrel_scheduler_free(sched);                      // cancels what is left
 *   kestrel_context_free(ctx);
 */
#ifndef KESTREL_SERVER_H
#define KESTREL_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "kestrel/kestrel.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kestrel_scheduler kestrel_scheduler;

typedef struct kestrel_scheduler_params {
  int32_t n_batch;   /* tokens per step, all slots together, >= the slots; 0 = the context's n_batch (default 0) */
  int32_t n_chunk;   /* prompt tokens per slot per step; 0 = n_batch (default 0) */
  int32_t max_queue; /* requests that may wait when every slot is busy (default 64) */
  /* Speculative decoding with a draft model: its context (at least as many
   * sequences and cells per sequence as ctx; a compatible vocabulary, else
   * KESTREL_ERR_INVALID_ARGUMENT), taken over like ctx; NULL: none (default).
   * Speculated: greedy requests without a repetition penalty (the tokens of
   * plain decoding) and sampled ones with min_p 0 and no repetition penalty
   * (the exact rule: the target's distribution, another draw than plain
   * decoding's for the same seed); the others decode plainly. */
  kestrel_context* draft;
  int32_t draft_max;   /* longest draft of a round, [1, 32] (default 8) */
  float draft_p_min;   /* stop drafting below this draft probability (default 0: off) */
  int32_t draft_vocab; /* > 0: the draft scores only ids [0, draft_vocab) (default 0: all) */
} kestrel_scheduler_params;

typedef enum kestrel_finish_reason {
  KESTREL_FINISH_NONE = 0,      /* not finished: a text event */
  KESTREL_FINISH_STOP = 1,      /* end-of-generation token or a stop string */
  KESTREL_FINISH_LENGTH = 2,    /* max_tokens reached or the slot's context full */
  KESTREL_FINISH_CANCELLED = 3, /* kestrel_scheduler_cancel, the callback returned 0, or shutdown */
  KESTREL_FINISH_ERROR = 4      /* decoding or sampling failed: status and message say why */
} kestrel_finish_reason;

/* A generated token's log-probability (log-softmax of the raw logits, before
 * the sampler's filters) and the most probable alternatives, most probable first. */
typedef struct kestrel_token_logprob {
  kestrel_token token;
  float logprob;
  int32_t n_top;
  const kestrel_token* top_tokens; /* [n_top] */
  const float* top_logprobs;       /* [n_top] */
} kestrel_token_logprob;

typedef struct kestrel_request_usage {
  int32_t n_prompt;    /* prompt tokens */
  int32_t n_cached;    /* of those, reused from the slot's cache instead of decoded */
  int32_t n_generated; /* tokens sampled (an end-of-generation token counts) */
  double t_queue_ms;   /* submitted to started in a slot */
  double t_prompt_ms;  /* started to the first sampled token */
  double t_generate_ms; /* first sampled token to the end */
} kestrel_request_usage;

/* Everything points into the scheduler's memory and is valid during the call only. */
typedef struct kestrel_request_event {
  uint64_t id;
  const char* text; /* released text: whole UTF-8 characters, never a part of a stop string */
  size_t text_len;
  const kestrel_token_logprob* logprobs; /* with n_top_logprobs >= 0: the tokens whose text this
                                            event completes (a token held back comes later) */
  int32_t n_logprobs;
  int32_t done;          /* 1: the request's last event (no more calls for this id) */
  int32_t finish_reason; /* a kestrel_finish_reason */
  kestrel_status status; /* KESTREL_OK, or why it ended (cancelled, an error) */
  const char* message;   /* the status's message, "" when ok */
  kestrel_request_usage usage; /* complete on the last event */
  int32_t slot;          /* the slot (sequence id) serving it; -1 if it never started */
} kestrel_request_event;

/* Return 0 to cancel the request (its last event still follows). */
typedef int (*kestrel_request_fn)(const kestrel_request_event* event, void* user_data);

typedef struct kestrel_request_params {
  const kestrel_token* prompt; /* [n_prompt] ids, copied by submit; 1 <= n_prompt <= n_ctx */
  int32_t n_prompt;
  int32_t max_tokens;          /* tokens to sample; < 0: until the context is full; 0: prompt only (default -1) */
  kestrel_sampler_params sampling; /* default kestrel_sampler_default_params() */
  const char* const* stop;     /* [n_stop] NUL-terminated stop strings, copied (default NULL) */
  int32_t n_stop;
  int32_t ignore_eos;          /* 1: end-of-generation tokens do not end the request (default 0) */
  int32_t n_top_logprobs;      /* < 0: no logprobs (default -1); 0: the chosen token's; n <= 64: and n alternatives */
  kestrel_request_fn on_event; /* required */
  void* user_data;
} kestrel_request_params;

/* Counters since the scheduler was created, and its state now. */
typedef struct kestrel_scheduler_stats {
  int64_t n_requests;           /* accepted by submit */
  int64_t n_requests_done;      /* their last event delivered */
  int64_t n_requests_cancelled; /* of those, cancelled */
  int64_t n_prompt_tokens;      /* prompt tokens decoded */
  int64_t n_cached_tokens;      /* prompt tokens reused from slot caches */
  int64_t n_generated_tokens;   /* tokens sampled */
  int64_t n_steps;              /* batches decoded */
  double t_prompt_ms;           /* decode time attributed to prompt tokens (by their share of each batch) */
  double t_generate_ms;         /* decode time attributed to generated tokens */
  /* Speculative decoding (all slots together; 0 without a draft model). */
  int64_t n_spec_requests;      /* requests decoded speculatively */
  int64_t n_spec_rounds;        /* slot rounds that verified drafts */
  int64_t n_spec_drafted;       /* draft tokens proposed */
  int64_t n_spec_accepted;      /* of those, accepted */
  int64_t n_spec_plain_steps;   /* steps of speculated requests that drafted nothing */
  int64_t spec_rounds_by_g[33]; /* rounds by the number of drafts verified (index 0 unused) */
  int32_t n_queued;             /* waiting for a slot now */
  int32_t n_slots_busy;         /* running now */
  int32_t n_slots;
} kestrel_scheduler_stats;

kestrel_scheduler_params kestrel_scheduler_default_params(void);
kestrel_request_params kestrel_request_default_params(void);

/* Takes over ctx (its cache is cleared; it must outlive the scheduler and must not
 * be used by anything else meanwhile) and starts the inference thread. */
kestrel_status kestrel_scheduler_create(kestrel_context* ctx, const kestrel_scheduler_params* params,
                                        kestrel_scheduler** out_scheduler);
/* Cancels every request (each gets its last event), stops the thread. NULL is a no-op. */
void kestrel_scheduler_free(kestrel_scheduler* scheduler);

/* Queues a request; *out_id gets its id (> 0). KESTREL_ERR_INVALID_ARGUMENT: no callback,
 * empty prompt, ids outside the vocabulary, bad sampling parameters;
 * KESTREL_ERR_TOO_LONG: a prompt above the slot's n_ctx, or max_queue requests already
 * waiting. On error the callback is never called. */
kestrel_status kestrel_scheduler_submit(kestrel_scheduler* scheduler, const kestrel_request_params* params,
                                        uint64_t* out_id);
/* Asks a request to stop; its last event follows. Unknown or finished ids are ignored. */
void kestrel_scheduler_cancel(kestrel_scheduler* scheduler, uint64_t id);

void kestrel_scheduler_get_stats(const kestrel_scheduler* scheduler, kestrel_scheduler_stats* out);
int32_t kestrel_scheduler_n_slots(const kestrel_scheduler* scheduler); /* -1 for NULL */
int32_t kestrel_scheduler_n_ctx(const kestrel_scheduler* scheduler);   /* KV cells per slot; -1 for NULL */
/* "stop", "length", "cancelled", "error"; "none" for KESTREL_FINISH_NONE and unknown values. */
const char* kestrel_finish_reason_name(int32_t reason);

#ifdef __cplusplus
}
#endif

#endif /* KESTREL_SERVER_H */
