// Runs a perplexity measurement on a context: tokenizes the text, decodes each
// chunk from an empty cache (perplexity.h says which tokens and positions), and
// scores the positions; optionally
//   - writes llama.cpp's logits file of the run (kl_base_out, llama rule only),
//   - reads one and measures the KL divergence from it (kl_base_in: the chunks
//     and tokens come from the file; a text, when given, must tokenize to the
//     same tokens),
//   - decodes the same chunks on a reference context (another exp tier, say)
//     and compares top-1 tokens, KL and perplexity with it.
//
//   PplRunParams p;                    // llama-perplexity's rule, n_ctx 512
//   p.max_chunks = 4;
//   KESTREL_TRY_ASSIGN(PplRunResult r, run_perplexity(ctx, nullptr, text, p, on_chunk));
//   printf("%.4f +/- %.5f\n", r.stats.ppl(), r.stats.ppl_error());
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "platform/function_ref.h"
#include "platform/status.h"
#include "runtime/engine/context.h"
#include "runtime/eval/kl_divergence.h"
#include "runtime/eval/perplexity.h"

namespace kestrel::eval {

struct PplRunParams {
  PplRule rule = PplRule::llama;
  int32_t n_ctx = 512;        // tokens per chunk (ignored with kl_base_in: the file's)
  int32_t max_chunks = 0;     // <= 0: every chunk
  std::string kl_base_out;    // "": none; else the logits file to write
  std::string kl_base_in;     // "": none; else the logits file to compare with
};

// The reference context's view of the same positions.
struct RefCompare {
  PplStats stats;             // the reference's perplexity
  int64_t n_same_top = 0;     // positions whose argmax both agree on
  double sum_kl = 0.0;        // sum of KL(reference || context) per position (nats)
  int64_t n_flips = 0;        // positions with a different argmax
  int64_t n_flips_near_tie = 0;  // of those, reference top-2 logits within 0.1
};

struct PplRunResult {
  ChunkPlan plan;
  int64_t n_text_tokens = 0;  // tokens of the text (KL mode: of the file's list)
  int32_t chunks_done = 0;
  PplStats stats;
  double t_decode_s = 0.0;    // time in the context's decode calls
  int64_t n_decoded = 0;      // tokens decoded by the context
  bool has_ref = false;
  RefCompare ref;
  bool has_kl = false;
  KlStats kl;
};

// Called after each chunk with the results so far; return false to stop
// (the run ends with a cancelled status).
using PplChunkFn = FunctionRef<bool(const PplRunResult&)>;

// ctx (and ref_ctx, when not null) must have at least the chunk's n_ctx cells;
// their sequence 0 is cleared before each chunk. Errors: invalid_argument for
// bad parameters or a text too short; bad_file for a logits file that is not
// one, is truncated, or does not match the model or the text; runtime_error
// for NaN or Inf logits; cancelled when on_chunk returned false.
Expected<PplRunResult> run_perplexity(Context& ctx, Context* ref_ctx, std::string_view text, const PplRunParams& params,
                                      PplChunkFn on_chunk);

}  // namespace kestrel::eval
