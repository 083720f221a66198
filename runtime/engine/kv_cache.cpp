#include "runtime/engine/kv_cache.h"

#include <algorithm>
#include <new>

#include "platform/checked_math.h"

namespace kestrel {

Status KvCache::init(const HParams& hp, int64_t n_ctx, DType type, int32_t n_seq_max) {
  if (type != DType::F16 && type != DType::F32) return Status::invalid_argument("kv cache type must be f16 or f32");
  if (n_ctx < 1 || n_ctx > kMaxContext) return Status::invalid_argument("n_ctx %lld out of range", (long long)n_ctx);
  if (n_seq_max < 1 || n_seq_max > 256) return Status::invalid_argument("n_seq_max %d out of range [1, 256]", n_seq_max);
  n_ctx_ = n_ctx;
  head_dim_ = hp.head_dim;
  n_head_kv_ = hp.n_head_kv;
  n_layer_ = hp.n_layer;
  n_seq_max_ = n_seq_max;
  type_ = type;
  uint64_t per_layer = 0, total = 0;
  if (!checked_mul(static_cast<uint64_t>(hp.n_embd_kv()) * dtype_type_size(type), static_cast<uint64_t>(n_ctx),
                   per_layer) ||
      !checked_mul(per_layer, static_cast<uint64_t>(hp.n_layer), total) || total > (uint64_t(1) << 46))
    return Status::out_of_memory("kv cache size overflows");
  layer_bytes_ = per_layer;
  bytes_ = 2 * total;
  k_.reset(static_cast<uint8_t*>(aligned_alloc_bytes(total, 64)));
  v_.reset(static_cast<uint8_t*>(aligned_alloc_bytes(total, 64)));
  if (!k_ || !v_) return Status::out_of_memory("kv cache of %llu bytes", (unsigned long long)bytes_);
  try {
    pos_.assign(static_cast<size_t>(n_ctx), -1);
    seq_.assign(static_cast<size_t>(n_ctx), -1);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("kv cell table");
  }
  return {};
}

Status KvCache::find_slots(const BatchView& b, int32_t* cells) const {
  const int64_t n = b.n_tokens;
  // First choice: a contiguous free run, searched from the start so that the
  // used span stays short.
  int64_t run = 0;
  for (int64_t i = 0; i < n_ctx_; ++i) {
    run = seq_[static_cast<size_t>(i)] < 0 ? run + 1 : 0;
    if (run == n) {
      for (int64_t j = 0; j < n; ++j) cells[j] = static_cast<int32_t>(i - n + 1 + j);
      return {};
    }
  }
  int64_t k = 0;
  for (int64_t i = 0; i < n_ctx_ && k < n; ++i)
    if (seq_[static_cast<size_t>(i)] < 0) cells[k++] = static_cast<int32_t>(i);
  if (k < n)
    return Status::too_long("kv cache full: %lld tokens do not fit in a context of %lld", (long long)n,
                            (long long)n_ctx_);
  return {};
}

void KvCache::commit(const BatchView& b, const int32_t* cells) {
  for (int32_t i = 0; i < b.n_tokens; ++i) {
    pos_[static_cast<size_t>(cells[i])] = b.pos[i];
    seq_[static_cast<size_t>(cells[i])] = b.seq_id ? b.seq_id[i] : 0;
  }
}

void KvCache::seq_rm(int32_t seq, int32_t p0, int32_t p1) {
  for (size_t i = 0; i < seq_.size(); ++i) {
    if (seq_[i] < 0 || (seq >= 0 && seq_[i] != seq)) continue;
    if (pos_[i] >= p0 && (p1 < 0 || pos_[i] < p1)) {
      seq_[i] = -1;
      pos_[i] = -1;
    }
  }
}

void KvCache::clear() {
  std::fill(seq_.begin(), seq_.end(), -1);
  std::fill(pos_.begin(), pos_.end(), -1);
}

int32_t KvCache::seq_pos_max(int32_t seq) const {
  int32_t m = -1;
  for (size_t i = 0; i < seq_.size(); ++i)
    if (seq_[i] == seq) m = std::max(m, pos_[i]);
  return m;
}

int64_t KvCache::n_used_span() const {
  for (int64_t i = n_ctx_; i > 0; --i)
    if (seq_[static_cast<size_t>(i - 1)] >= 0) return i;
  return 0;
}

Tensor KvCache::view(const AlignedPtr<uint8_t>& base, int il, int64_t n) const {
  return make_tensor(type_, base.get() + static_cast<size_t>(il) * layer_bytes_, head_dim_, n_head_kv_, n);
}

Tensor KvCache::rows(const AlignedPtr<uint8_t>& base, int il, int64_t c0, int64_t n) const {
  const size_t row = static_cast<size_t>(head_dim_ * n_head_kv_) * dtype_type_size(type_);
  return make_tensor(type_, base.get() + static_cast<size_t>(il) * layer_bytes_ + static_cast<size_t>(c0) * row,
                     head_dim_ * n_head_kv_, n);
}

Tensor KvCache::k(int il, int64_t n) const { return view(k_, il, n); }
Tensor KvCache::v(int il, int64_t n) const { return view(v_, il, n); }
Tensor KvCache::k_rows(int il, int64_t c0, int64_t n) const { return rows(k_, il, c0, n); }
Tensor KvCache::v_rows(int il, int64_t c0, int64_t n) const { return rows(v_, il, c0, n); }

}  // namespace kestrel
