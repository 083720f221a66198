// Forward pass of every supported architecture over one micro-batch, reading
// the ArchDesc for what differs. Activations live in buffers sized once from
// the model and the largest micro-batch (no allocation per token).
//
// Per layer (norm placement etc. switched by the ArchDesc):
//   h = rms_norm(x) ; q,k,v = W h (+b) ; [q,k = rms_norm per head] ; rope(q,k)
//   K/V cells <- k,v ; a = attention(q, K, V, mask) ; o = Wo a ; [o = rms_norm(o)]
//   x += o ; h = rms_norm(x) ; f = Wdown act(Wgate h) * (Wup h) ; [f = rms_norm(f)]
//   x += f
// then logits = Wout rms_norm(x) for the tokens that asked for them.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/exp_tier.h"
#include "platform/aligned_alloc.h"
#include "platform/status.h"
#include "runtime/engine/batch.h"
#include "runtime/engine/kv_cache.h"
#include "runtime/engine/op_runner.h"
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

class Forward {
 public:
  // Plans and allocates every activation buffer for micro-batches of up to
  // n_ubatch tokens over a cache of n_ctx cells.
  Status init(const Model& model, int64_t n_ubatch, int64_t n_ctx);

  // One micro-batch (n_tokens <= n_ubatch, already validated). Writes the
  // logits of the flagged tokens, in batch order, to logits [n_out][n_vocab];
  // without flags, of the last token when default_last.
  Status run(const BatchView& batch, bool default_last, KvCache& kv, OpRunner& ops, float* logits,
             int32_t* n_out);

  // Layers to skip (self-speculative drafting); empty = none.
  void set_skip_layers(std::vector<bool> skip) { skip_ = std::move(skip); }
  // Output rows scored (a speculative draft head's vocabulary subset): the
  // first n rows of the output matrix, a zero-copy view; the other logits of
  // each row are -inf. 0 (or >= n_vocab) = every row.
  void set_output_rows(int64_t n) { out_vocab_ = n; }
  int64_t output_rows() const { return out_vocab_; }
  // Exp tiers the ops of the following runs use (validated by the caller).
  void set_exp_tiers(const OpExpTiers& tiers) { exp_ = tiers; }
  const OpExpTiers& exp_tiers() const { return exp_; }
  size_t arena_bytes() const { return arena_bytes_; }

 private:
  float* take(size_t n_floats);
  void build_masks(const BatchView& batch, const KvCache& kv, int64_t n_kv);

  const Model* model_ = nullptr;
  int64_t n_ubatch_ = 0, n_ctx_ = 0;
  AlignedPtr<uint8_t> arena_;
  size_t arena_bytes_ = 0, arena_used_ = 0;
  float *x_ = nullptr, *h_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *att_ = nullptr;
  float *o_ = nullptr, *g_ = nullptr, *u_ = nullptr, *xo_ = nullptr;
  float *mask_full_ = nullptr, *mask_swa_ = nullptr;
  int32_t *ids_ = nullptr, *pos_ = nullptr, *cells_ = nullptr, *out_rows_ = nullptr;
  float* ks_scratch_ = nullptr;  // KS projections' intermediates (runtime/ks/ks_model.h)
  size_t ks_scratch_floats_ = 0;
  std::vector<bool> skip_;
  int64_t out_vocab_ = 0;
  OpExpTiers exp_;
};

}  // namespace kestrel
