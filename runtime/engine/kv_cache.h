// KV cache of one context: one stream of n_ctx cells per sequence id, per
// layer K and V. A stream holds its sequence's tokens in position order in
// cells [0, n_used): a token of sequence s at cell c sees cells [lo, c] of
// stream s, lo > 0 only under a sliding window. Attention therefore reads
// per-query cell ranges (ops/op_table.h: attention ranges), never a mask over
// every cell of every sequence.
//
// Truncating a sequence's tail (rejected drafts) only moves its used count;
// removing positions from the middle moves the later cells down.
//
// Layout per layer: K, V as [head_dim, n_head_kv, n_ctx, n_seq] in F16 or F32:
// cell c of stream s is row s * n_ctx + c of the [n_embd_kv, n_ctx * n_seq] view.
// The layers' storage may be split in two parts on two backends (layers
// [0, split) on one, [split, n_layer) on the other: -ngl), each part one K and
// one V buffer; the cells are the same in both.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/backend.h"
#include "ops/tensor.h"
#include <memory>
#include "platform/status.h"
#include "runtime/engine/batch.h"
#include "runtime/model/hparams.h"

namespace kestrel {

class KvCache {
 public:
  // n_ctx cells per sequence, n_seq_max sequences, K and V in buffers of
  // `backend` (the one whose plans read them).
  Status init(const HParams& hp, int64_t n_ctx, DType type, int32_t n_seq_max, Backend& backend);
  // Layers [0, split) in buffers of `front`, [split, n_layer) in buffers of
  // `back` (0 <= split <= n_layer; an empty part allocates nothing).
  Status init(const HParams& hp, int64_t n_ctx, DType type, int32_t n_seq_max, Backend& front, Backend& back,
              int split);
  // The same in host memory (a cache for host backends, tests).
  Status init(const HParams& hp, int64_t n_ctx, DType type, int32_t n_seq_max);

  int64_t n_ctx() const { return n_ctx_; }
  int32_t n_seq_max() const { return n_seq_max_; }
  DType type() const { return type_; }
  size_t bytes() const { return bytes_; }

  // Checks that the batch fits (each sequence's new tokens after its stored ones).
  Status check_room(const BatchView& batch) const;
  // Cells for the batch's tokens, as rows of the [n_embd_kv, n_ctx * n_seq]
  // view (stream * n_ctx + cell), and records the tokens there. Call
  // check_room() first.
  void store(const BatchView& batch, int32_t* rows);
  // Frees the cells of seq with p0 <= pos < p1 (p1 < 0: to the end); seq < 0: all.
  void seq_rm(int32_t seq, int32_t p0, int32_t p1);
  void clear();
  // Largest position stored for seq, or -1.
  int32_t seq_pos_max(int32_t seq) const;
  // Cells in use by seq.
  int64_t seq_n_cells(int32_t seq) const;
  // The cells a token of seq at position pos stored in `row` sees: writes
  // {seq, lo, hi} (attention ranges). window > 0: only positions > pos - window.
  void visible(int32_t seq, int32_t pos, int32_t row, int32_t window, int32_t out[3]) const;

  // Flat cell i in [0, n_ctx * n_seq): its position / sequence, or -1 when free.
  int32_t cell_pos(int64_t i) const;
  int32_t cell_seq(int64_t i) const;

  // Layer il's whole K (or V): [head_dim, n_head_kv, n_ctx, n_seq].
  Tensor k(int il) const;
  Tensor v(int il) const;
  // Layer il's K (or V) as rows: [n_embd_kv, n_ctx * n_seq] (set_rows' destination).
  Tensor k_rows(int il) const;
  Tensor v_rows(int il) const;
  // The memory holding the K (or V) of the layers of part p (0: layers
  // [0, split), 1: the rest; plan roots); k_bytes(p) == 0 for an empty part.
  void* k_base(int p = 1) const { return part_[p].k; }
  void* v_base(int p = 1) const { return part_[p].v; }
  size_t k_bytes(int p = 1) const { return layer_bytes_ * static_cast<size_t>(part_[p].n_layer); }
  // The part holding layer il; the first layer of part 1.
  int part_of(int il) const { return il < split_ ? 0 : 1; }
  int split() const { return split_; }

 private:
  struct Part {
    Backend* backend = nullptr;  // owns the buffers' memory; runs the moves of seq_rm
    std::unique_ptr<Buffer> k_buf, v_buf;
    uint8_t *k = nullptr, *v = nullptr;  // their data
    int first = 0, n_layer = 0;          // layers [first, first + n_layer)
  };
  Status alloc_part(Part& part, Backend& backend, int first, int n_layer);
  Tensor view(bool k, int il) const;
  Tensor rows(bool k, int il) const;
  uint8_t* layer_data(bool k, int il) const;

  int64_t n_ctx_ = 0, head_dim_ = 0, n_head_kv_ = 0, n_layer_ = 0;
  int32_t n_seq_max_ = 1;
  DType type_ = DType::F16;
  size_t layer_bytes_ = 0, row_bytes_ = 0, bytes_ = 0;
  int split_ = 0;  // layers [0, split_) in part_[0]
  Part part_[2];
  std::vector<int32_t> pos_;    // [n_seq][n_ctx]: position of each used cell, increasing
  std::vector<int64_t> n_used_;  // [n_seq]
  mutable std::vector<int64_t> batch_count_;  // [n_seq] check_room's tally
};

}  // namespace kestrel
