// Forward pass of every supported architecture, recorded as an execution plan
// (ops/plan.h) for a micro-batch shape, reading the ArchDesc for what differs.
// Activations and step inputs live in one arena sized once from the model and
// the largest micro-batch; nothing is allocated per step.
//
// Per layer (norm placement etc. switched by the ArchDesc):
//   h = rms_norm(x) ; q,k,v = W h (+b) ; [q,k = rms_norm per head] ;
//   rope(q,k) [with per-pair frequency factors, partial rotary]
//   K/V rows <- k,v (set_rows at the step's cells) ;
//   a = attention(q, K, V, ranges) [scores soft-capped] ; o = Wo a ; [o = rms_norm(o)]
//   x += o ; h = rms_norm(x) ; f = Wdown act(Wgate h) * (Wup h) ; [f = rms_norm(f)]
//   x += f
// then logits = Wout rms_norm(x) for the rows that asked for them
//   [; soft-capped ; the columns past a vocabulary subset filled with -inf].
//
// A step: set_inputs() writes ids, positions, KV rows, visibility ranges and
// output rows into the arena (and records the tokens in the KV cache); the
// plan recorded for (n_tokens, n_outputs, variant) then runs unchanged.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/exp_tier.h"
#include "ops/plan.h"
#include "platform/aligned_alloc.h"
#include "platform/status.h"
#include "runtime/engine/batch.h"
#include "runtime/engine/kv_cache.h"
#include "runtime/model/model.h"

namespace kestrel {

// The exp tier (ops/exp_tier.h) of each exp-based op of the forward: the
// attention softmax, GELU/GeGLU, SiLU/SwiGLU and the sigmoid. Default exact.
struct OpExpTiers {
  ExpTier softmax = ExpTier::exact;
  ExpTier gelu = ExpTier::exact;
  ExpTier silu = ExpTier::exact;
  ExpTier sigmoid = ExpTier::exact;
};

// A variant of the pass: each distinct variant is its own plan.
struct PassVariant {
  // Layers skipped (self-speculative drafting: no compute, no KV written for
  // them); empty = none. Size n_layer when set.
  std::vector<bool> skip;
  // Logits over the first out_vocab rows of the output matrix only (a
  // speculative draft head's vocabulary subset); the other columns are -inf.
  // 0 (or >= n_vocab) = every row.
  int64_t out_vocab = 0;
  // Greedy on the backend that computes the logits: the step's output is each
  // logits row's argmax id (strict: -1 for a row holding a NaN or an
  // infinity), and the logits stay where they were computed (on a GPU they
  // are not copied back).
  bool ids_out = false;
  // With ids_out: each row's token drawn by the sample op with these
  // parameters and the uniforms of Forward::set_uniforms(), not the argmax.
  bool draw = false;
  SampleParams sample;

  bool operator==(const PassVariant& o) const {
    return out_vocab == o.out_vocab && ids_out == o.ids_out && draw == o.draw && (!draw || sample == o.sample) &&
           skip == o.skip;
  }
};

// The part of the pass a plan records. A model split between the host and a
// device (-ngl: the KV cache split at kv.split()) runs three plans per step:
// front (host): the embedding and layers [0, split), leaving the residual
// stream in the arena; back (device): layers [split, n_layer), reading that
// stream as a step input, ending with the rows that want logits gathered
// into an output root (gathered_rows()); head (host): the output norm and
// projection of those rows.
enum class PassPart { whole, front, back, head };

class Forward {
 public:
  // Sizes the arena for micro-batches of up to n_ubatch tokens.
  Status init(const Model& model, int64_t n_ubatch);

  // Writes one micro-batch's step inputs (n_tokens <= n_ubatch, validated,
  // kv.check_room() passed) and stores its tokens in kv. Logits rows: the
  // flagged tokens, in batch order; without flags the last one when
  // default_last. Returns the number of logits rows.
  // n_rows > n_tokens pads the step to a plan of n_rows (a bucket, see
  // plan_cache.h): padded rows read token 0 at position 0, write no KV cell
  // (row -1) and see none (empty range); when every token asked for logits,
  // the padded rows are logits rows too (output_rows() says how many).
  int32_t set_inputs(const BatchView& batch, bool default_last, KvCache& kv, int64_t n_rows = 0);
  // The uniforms in [0, 1) of a draw (PassVariant::draw), one per logits row
  // for the next execution: u[0, n), then 0 for the padded rows up to n_rows.
  void set_uniforms(const float* u, int64_t n, int64_t n_rows);
  // Logits rows of a plan of n_rows for a micro-batch of n tokens of which
  // n_out asked for logits.
  static int64_t output_rows(int64_t n, int64_t n_out, int64_t n_rows) { return n_out == n ? n_rows : n_out; }

  // Records the pass over n tokens with n_out logits rows into plan (cleared
  // first). logits: host memory of n_out * n_vocab floats that stands for the
  // output root while the plan is prepared (bind_output() moves it per step).
  // Returns the output root's index.
  // part: see PassPart; front returns -1 (no output root), back the gathered rows' root.
  // variant.ids_out: ids (host memory of n_out int32) stands for the output root
  // instead, and logits for step memory the plan keeps to itself.
  Expected<int> record(Plan& plan, int64_t n, int64_t n_out, const PassVariant& variant, const KvCache& kv,
                       float* logits, PassPart part = PassPart::whole, int32_t* ids = nullptr) const;
  // Host memory of the rows back gathers (head's input): n_out * n_embd floats.
  float* gathered_rows() const { return xo_; }

  void set_exp_tiers(const OpExpTiers& tiers) { exp_ = tiers; }
  const OpExpTiers& exp_tiers() const { return exp_; }
  size_t arena_bytes() const { return arena_bytes_; }
  int64_t n_ubatch() const { return n_ubatch_; }

 private:
  Status linear(OpSink& ops, Tensor* y, const Tensor& w, const KsLinear& ks, const Tensor& in) const;

  const Model* model_ = nullptr;
  int64_t n_ubatch_ = 0;
  AlignedPtr<uint8_t> arena_;
  // Activations first (the residual stream x and the gathered rows xo last,
  // x just before the step inputs), then the step inputs.
  size_t arena_bytes_ = 0, act_bytes_ = 0;
  // Activations, B = n_ubatch:
  float* x_ = nullptr;    // (n_embd, B) residual stream
  float* h_ = nullptr;    // (n_embd, B) normed input of a block; the output rows' norm
  float* q_ = nullptr;    // (n_embd_q, B)
  float* k_ = nullptr;    // (n_embd_kv, B)
  float* v_ = nullptr;    // (n_embd_kv, B)
  float* att_ = nullptr;  // (n_embd_q, B) attention output
  float* o_ = nullptr;    // (n_embd, B) block output
  float* g_ = nullptr;    // (n_ff, B) gate
  float* u_ = nullptr;    // (n_ff, B) up
  float* xo_ = nullptr;   // (n_embd, B) residual rows that want logits
  float* ks_scratch_ = nullptr;  // KS projections' intermediates (runtime/ks/ks_model.h)
  size_t ks_scratch_floats_ = 0;
  // Step inputs:
  int32_t* ids_ = nullptr;       // (B) token ids
  int32_t* pos_ = nullptr;       // (B) positions
  int32_t* rows_ = nullptr;      // (B) KV rows (stream * n_ctx + cell) written
  int32_t* rng_full_ = nullptr;  // (3, B) cells seen (stream, lo, hi), full attention
  int32_t* rng_swa_ = nullptr;   // (3, B) the same under the sliding window
  int32_t* out_rows_ = nullptr;  // (B) batch rows that want logits
  float* draw_u_ = nullptr;      // (B) uniforms of a draw, per logits row
  OpExpTiers exp_;
};

}  // namespace kestrel
