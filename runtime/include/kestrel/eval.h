/* kestrel/eval.h: measuring models the way llama.cpp does, and quantizing them.
 *
 * Perplexity by llama-perplexity's rule (the whole text tokenized once, chunks
 * of n_ctx tokens each starting with BOS where the model adds one, only the
 * second half of each chunk scored) or kestrel's older all-positions rule;
 * llama.cpp's logits file (--kl-divergence-base) written and read, with the
 * KL-divergence statistics llama-perplexity --kl-divergence prints; and
 * `kestrel quantize`: a GGUF model rewritten in another weight type with
 * llama-quantize's per-tensor choices.
 *
 * Errors of a call on a context: kestrel_last_error(ctx); of kestrel_quantize
 * and kestrel_logits_file_info: kestrel_last_error(NULL) on the calling thread.
 *
 * Usage:
 *   kestrel_context_params cp = kestrel_context_default_params();
 *   cp.n_ctx = cp.n_batch = 512;
 *   kestrel_context_create(model, &cp, &ctx);
 *   kestrel_ppl_params pp = kestrel_ppl_default_params();
 *   pp.n_chunks = 4;
 *   pp.kl_base_out = "base.kld";                      // optional
 *   kestrel_ppl_result res;
 *   kestrel_perplexity(ctx, NULL, text, text_len, &pp, on_chunk, user, &res);
 *   printf("PPL = %.4f +/- %.5f\n", res.ppl, res.ppl_error);
 *
 *   kestrel_quantize_params qp = kestrel_quantize_default_params();
 *   qp.type = "Q4_K_M";
 *   kestrel_quantize("model-f16.gguf", "model-q4_k_m.gguf", &qp, NULL, NULL);
 */
#ifndef KESTREL_EVAL_H
#define KESTREL_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "kestrel/kestrel.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- perplexity and KL divergence ---- */

typedef struct kestrel_ppl_params {
  int32_t n_ctx;           /* tokens per chunk, BOS included (default 512); with kl_base_in: the file's */
  int32_t n_chunks;        /* at most this many chunks; <= 0: all (default 0) */
  int32_t score_all;       /* 1: kestrel's older rule: the text without special tokens in chunks of
                              n_ctx - 1 tokens after a BOS, every position scored (default 0) */
  const char* kl_base_out; /* write llama.cpp's logits file of this run here (default NULL) */
  const char* kl_base_in;  /* compare with this logits file: its tokens and chunks are decoded, the
                              text (when not empty) must tokenize to the same tokens (default NULL) */
} kestrel_ppl_params;

/* KL-divergence statistics against a logits file, as llama-perplexity prints
 * them; probabilities and differences are fractions (not %). */
typedef struct kestrel_kl_stats {
  int64_t count;                       /* positions compared */
  double ppl, ppl_unc;                 /* PPL(Q), this model */
  double ppl_base, ppl_base_unc;       /* PPL(base), from the file */
  double log_ppl_cor;                  /* Cor(ln PPL(Q), ln PPL(base)) */
  double log_ppl_ratio, log_ppl_ratio_unc;
  double ppl_ratio, ppl_ratio_unc;
  double ppl_diff, ppl_diff_unc;
  double kld, kld_unc;                 /* mean KL divergence (nats) */
  /* at max, 99.9%, 99%, 95%, 90%, median, 10%, 5%, 1%, 0.1%, min (final result only) */
  double kld_pct[11];
  double p_diff, p_diff_unc;           /* mean change of the target token's probability */
  /* at max, 99.9%, 99%, 95%, 90%, 75%, median, 25%, 10%, 5%, 1%, 0.1%, min (final result only) */
  double p_diff_pct[13];
  double rms_p_diff, rms_p_diff_unc;
  double same_top, same_top_unc;       /* share of positions with the same top token */
} kestrel_kl_stats;

typedef struct kestrel_ppl_result {
  int64_t n_text_tokens;  /* tokens of the text (with kl_base_in: of the file's token list) */
  int32_t n_ctx;          /* tokens per chunk */
  int32_t n_chunks;       /* chunks planned */
  int32_t chunks_done;
  int64_t n_scored;       /* positions scored so far */
  double ppl, ppl_error;  /* llama-perplexity's "PPL = x +/- y" */
  double t_decode_ms;     /* time decoding chunks on ctx */
  int64_t n_decoded;      /* tokens decoded on ctx */
  int32_t has_ref;        /* a reference context ran the same chunks: */
  double ref_ppl;         /*   its perplexity */
  double top1_vs_ref;     /*   share of positions with the same argmax */
  double kl_vs_ref;       /*   mean KL(reference || ctx) per position (nats) */
  double flips_near_tie;  /*   of the changed argmaxes, the share with reference top-2 within 0.1 */
  int32_t has_kl;         /* kl_base_in was given: */
  kestrel_kl_stats kl;
} kestrel_ppl_result;

/* Called after every chunk with the results so far; return 0 to stop
 * (KESTREL_ERR_CANCELLED). */
typedef int (*kestrel_ppl_chunk_fn)(const kestrel_ppl_result* so_far, void* user_data);

kestrel_ppl_params kestrel_ppl_default_params(void);
/* Perplexity of ctx's model on text[0..text_len). ref_ctx (may be NULL): a
 * second context of the same model, e.g. on other exp tiers, run on the same
 * chunks for comparison. Contexts need n_ctx cells (n_batch = n_ctx is
 * fastest). Errors: KESTREL_ERR_INVALID_ARGUMENT (a text shorter than two
 * chunks under llama's rule, bad parameters), KESTREL_ERR_BAD_FILE (a logits
 * file that is not one, is truncated, or was made with another vocabulary or
 * text), KESTREL_ERR_IO, KESTREL_ERR_RUNTIME (NaN logits). out may be NULL. */
kestrel_status kestrel_perplexity(kestrel_context* ctx, kestrel_context* ref_ctx, const char* text, size_t text_len,
                                  const kestrel_ppl_params* params, kestrel_ppl_chunk_fn on_chunk, void* user_data,
                                  kestrel_ppl_result* out);
/* n_ctx, n_vocab and n_chunk of a logits file's header (any may be NULL). */
kestrel_status kestrel_logits_file_info(const char* path, int32_t* n_ctx, int32_t* n_vocab, int32_t* n_chunk);

/* ---- quantization ---- */

typedef struct kestrel_quantize_params {
  const char* type;          /* F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_M, Q5_K_M or Q6_K, any case (default "Q8_0") */
  int32_t n_threads;         /* <= 0: the hardware's threads (default 0) */
  int32_t allow_requantize;  /* 1: quantized input tensors are dequantized and quantized again (quality
                                suffers); 0: they are refused, as llama-quantize does (default 0) */
} kestrel_quantize_params;

/* Called per tensor as it is written: name, types and bytes before and after;
 * note is "" or why the type differs from the mix (a row length not a
 * multiple of the block). */
typedef void (*kestrel_quantize_tensor_fn)(const char* name, const char* from_type, const char* to_type,
                                           uint64_t from_bytes, uint64_t to_bytes, const char* note, void* user_data);

kestrel_quantize_params kestrel_quantize_default_params(void);
/* Writes out_path: in_path (F32, F16, BF16 or quantized weights) with its
 * weights in the chosen type, per tensor as llama-quantize chooses (norms and
 * other 1-D tensors as they are; the _M mixes' output / attn_v / ffn_down
 * upgrades; fallbacks for row lengths the block does not divide), every
 * metadata key copied, general.file_type and general.quantization_version
 * set. */
kestrel_status kestrel_quantize(const char* in_path, const char* out_path, const kestrel_quantize_params* params,
                                kestrel_quantize_tensor_fn on_tensor, void* user_data);

#ifdef __cplusplus
}
#endif

#endif /* KESTREL_EVAL_H */
