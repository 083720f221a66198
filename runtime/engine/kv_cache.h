// KV cache of one context: per layer K and V of n_ctx cells, each cell
// holding one (sequence, position). Truncating a sequence (rejected drafts,
// edits) only marks cells free: O(n_ctx), no data moves.
//
// Layout per layer: K, V as [head_dim, n_head_kv, n_ctx] in F16 or F32, so the
// cells of a batch are one strided copy when contiguous.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/tensor.h"
#include "platform/aligned_alloc.h"
#include "platform/status.h"
#include "runtime/engine/batch.h"
#include "runtime/model/hparams.h"

namespace kestrel {

class KvCache {
 public:
  Status init(const HParams& hp, int64_t n_ctx, DType type, int32_t n_seq_max);

  int64_t n_ctx() const { return n_ctx_; }
  int32_t n_seq_max() const { return n_seq_max_; }
  DType type() const { return type_; }
  size_t bytes() const { return bytes_; }

  // Picks cells for the batch's tokens (a contiguous run when one is free,
  // else any free cells) into cells[0..n). Fails when the cache is full.
  Status find_slots(const BatchView& batch, int32_t* cells) const;
  // Records the batch's tokens in the chosen cells (after their K/V are written).
  void commit(const BatchView& batch, const int32_t* cells);
  // Frees the cells of seq with p0 <= pos < p1 (p1 < 0: to the end); seq < 0: all.
  void seq_rm(int32_t seq, int32_t p0, int32_t p1);
  void clear();
  // Largest position stored for seq, or -1.
  int32_t seq_pos_max(int32_t seq) const;
  // One past the highest used cell: attention reads cells [0, n_used_span()).
  int64_t n_used_span() const;

  int32_t cell_pos(int64_t i) const { return pos_[static_cast<size_t>(i)]; }
  int32_t cell_seq(int64_t i) const { return seq_[static_cast<size_t>(i)]; }

  // Views of layer il over the first n cells: [head_dim, n_head_kv, n].
  Tensor k(int il, int64_t n) const;
  Tensor v(int il, int64_t n) const;
  // View of layer il's K (or V) cells [c0, c0 + n) as [n_embd_kv, n].
  Tensor k_rows(int il, int64_t c0, int64_t n) const;
  Tensor v_rows(int il, int64_t c0, int64_t n) const;

 private:
  Tensor view(const AlignedPtr<uint8_t>& base, int il, int64_t n) const;
  Tensor rows(const AlignedPtr<uint8_t>& base, int il, int64_t c0, int64_t n) const;

  int64_t n_ctx_ = 0, head_dim_ = 0, n_head_kv_ = 0, n_layer_ = 0;
  int32_t n_seq_max_ = 1;
  DType type_ = DType::F16;
  size_t layer_bytes_ = 0, bytes_ = 0;
  AlignedPtr<uint8_t> k_, v_;
  std::vector<int32_t> pos_, seq_;  // seq_ -1 = free
};

}  // namespace kestrel
