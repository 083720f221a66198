#include "runtime/engine/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "platform/checked_math.h"

namespace kestrel {

Status KvCache::init(const HParams& hp, int64_t n_ctx, DType type, int32_t n_seq_max, Backend& backend) {
  return init(hp, n_ctx, type, n_seq_max, backend, backend, 0);
}

Status KvCache::alloc_part(Part& part, Backend& backend, int first, int n_layer) {
  part = Part{};
  part.backend = &backend;
  part.first = first;
  part.n_layer = n_layer;
  if (n_layer == 0) return {};
  const size_t total = layer_bytes_ * static_cast<size_t>(n_layer);
  auto kb = backend.alloc_buffer(total);
  if (!kb) return Status::out_of_memory("kv cache of %llu bytes on %s", (unsigned long long)(2 * total), backend.name());
  auto vb = backend.alloc_buffer(total);
  if (!vb) return Status::out_of_memory("kv cache of %llu bytes on %s", (unsigned long long)(2 * total), backend.name());
  part.k_buf = std::move(*kb);
  part.v_buf = std::move(*vb);
  part.k = static_cast<uint8_t*>(part.k_buf->data());
  part.v = static_cast<uint8_t*>(part.v_buf->data());
  return {};
}

Status KvCache::init(const HParams& hp, int64_t n_ctx, DType type, int32_t n_seq_max, Backend& front, Backend& back,
                     int split) {
  if (split < 0 || split > hp.n_layer)
    return Status::invalid_argument("kv cache split at layer %d of %lld", split, (long long)hp.n_layer);
  if (type != DType::F16 && type != DType::F32) return Status::invalid_argument("kv cache type must be f16 or f32");
  if (n_ctx < 1 || n_ctx > kMaxContext) return Status::invalid_argument("n_ctx %lld out of range", (long long)n_ctx);
  if (n_seq_max < 1 || n_seq_max > 256) return Status::invalid_argument("n_seq_max %d out of range [1, 256]", n_seq_max);
  n_ctx_ = n_ctx;
  head_dim_ = hp.head_dim;
  n_head_kv_ = hp.n_head_kv;
  n_layer_ = hp.n_layer;
  n_seq_max_ = n_seq_max;
  type_ = type;
  row_bytes_ = static_cast<size_t>(hp.n_embd_kv()) * dtype_type_size(type);
  uint64_t cells = 0, per_layer = 0, total = 0;
  if (!checked_mul(static_cast<uint64_t>(n_ctx), static_cast<uint64_t>(n_seq_max), cells) ||
      !checked_mul(static_cast<uint64_t>(row_bytes_), cells, per_layer) ||
      !checked_mul(per_layer, static_cast<uint64_t>(hp.n_layer), total) || total > (uint64_t(1) << 46))
    return Status::out_of_memory("kv cache size overflows");
  layer_bytes_ = per_layer;
  bytes_ = 2 * total;
  split_ = split;
  KESTREL_TRY(alloc_part(part_[0], front, 0, split));
  KESTREL_TRY(alloc_part(part_[1], back, split, static_cast<int>(hp.n_layer) - split));
  try {
    pos_.assign(static_cast<size_t>(cells), -1);
    n_used_.assign(static_cast<size_t>(n_seq_max), 0);
    batch_count_.assign(static_cast<size_t>(n_seq_max), 0);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("kv cell table");
  }
  return {};
}

Status KvCache::init(const HParams& hp, int64_t n_ctx, DType type, int32_t n_seq_max) {
  auto ref = backend_ref().create(BackendOptions{});
  if (!ref) return ref.status();
  return init(hp, n_ctx, type, n_seq_max, **ref);  // host buffers outlive the backend object
}

Status KvCache::check_room(const BatchView& b) const {
  std::fill(batch_count_.begin(), batch_count_.end(), 0);
  for (int32_t i = 0; i < b.n_tokens; ++i) ++batch_count_[static_cast<size_t>(b.seq_id ? b.seq_id[i] : 0)];
  for (int32_t s = 0; s < n_seq_max_; ++s) {
    const int64_t used = n_used_[static_cast<size_t>(s)], n = batch_count_[static_cast<size_t>(s)];
    if (used + n > n_ctx_)
      return Status::too_long("kv cache full: sequence %d holds %lld of %lld cells, %lld more do not fit", s,
                              (long long)used, (long long)n_ctx_, (long long)n);
  }
  return {};
}

void KvCache::store(const BatchView& b, int32_t* rows) {
  for (int32_t i = 0; i < b.n_tokens; ++i) {
    const int32_t s = b.seq_id ? b.seq_id[i] : 0;
    int64_t& used = n_used_[static_cast<size_t>(s)];
    const int64_t row = s * n_ctx_ + used;
    pos_[static_cast<size_t>(row)] = b.pos[i];
    rows[i] = static_cast<int32_t>(row);
    ++used;
  }
}

void KvCache::seq_rm(int32_t seq, int32_t p0, int32_t p1) {
  const int32_t s0 = seq < 0 ? 0 : seq, s1 = seq < 0 ? n_seq_max_ : seq + 1;
  for (int32_t s = s0; s < s1; ++s) {
    int32_t* pos = pos_.data() + s * n_ctx_;
    const int64_t used = n_used_[static_cast<size_t>(s)];
    // Positions increase along the stream: the removed cells are one run [a, e).
    const int64_t a = std::lower_bound(pos, pos + used, p0) - pos;
    const int64_t e = p1 < 0 ? used : std::lower_bound(pos, pos + used, p1) - pos;
    if (a >= e) continue;
    if (e < used) {
      // Later cells move down, in every layer, K and V: a memmove on the host;
      // elsewhere copy ops in chunks of e - a rows (a chunk never overlaps its
      // destination).
      for (int64_t il = 0; il < n_layer_; ++il)
        for (bool is_k : {true, false}) {
          const Tensor all = rows(is_k, static_cast<int>(il));
          const Part& part = part_[part_of(static_cast<int>(il))];
          if (part.k_buf->is_host()) {
            std::memmove(all.row<uint8_t>(s * n_ctx_ + a), all.row<uint8_t>(s * n_ctx_ + e),
                         static_cast<size_t>(used - e) * row_bytes_);
            continue;
          }
          for (int64_t c = e; c < used; c += e - a) {
            const int64_t n = std::min(e - a, used - c);
            Tensor src = all, dst = all;
            src.data = all.row<uint8_t>(s * n_ctx_ + c);
            dst.data = all.row<uint8_t>(s * n_ctx_ + c - (e - a));
            src.ne[1] = dst.ne[1] = n;
            (void)part.backend->run(OpCall{OpId::copy, &dst, {&src}, 1, nullptr});
          }
        }
      std::memmove(pos + a, pos + e, static_cast<size_t>(used - e) * sizeof(int32_t));
    }
    const int64_t n_new = used - (e - a);
    std::fill(pos + n_new, pos + used, -1);
    n_used_[static_cast<size_t>(s)] = n_new;
  }
}

void KvCache::clear() {
  std::fill(pos_.begin(), pos_.end(), -1);
  std::fill(n_used_.begin(), n_used_.end(), 0);
}

int32_t KvCache::seq_pos_max(int32_t seq) const {
  if (seq < 0 || seq >= n_seq_max_) return -1;
  const int64_t used = n_used_[static_cast<size_t>(seq)];
  return used > 0 ? pos_[static_cast<size_t>(seq * n_ctx_ + used - 1)] : -1;
}

int64_t KvCache::seq_n_cells(int32_t seq) const {
  return seq < 0 || seq >= n_seq_max_ ? 0 : n_used_[static_cast<size_t>(seq)];
}

void KvCache::visible(int32_t seq, int32_t pos, int32_t row, int32_t window, int32_t out[3]) const {
  const int64_t c = row - seq * n_ctx_;
  int64_t lo = 0;
  if (window > 0) {
    const int32_t* p = pos_.data() + seq * n_ctx_;
    lo = std::upper_bound(p, p + c + 1, pos - window) - p;  // first position > pos - window
  }
  out[0] = seq;
  out[1] = static_cast<int32_t>(lo);
  out[2] = static_cast<int32_t>(c + 1);
}

int32_t KvCache::cell_pos(int64_t i) const {
  return i < 0 || i >= static_cast<int64_t>(pos_.size()) ? -1 : pos_[static_cast<size_t>(i)];
}

int32_t KvCache::cell_seq(int64_t i) const {
  if (i < 0 || i >= static_cast<int64_t>(pos_.size())) return -1;
  const int64_t s = i / n_ctx_;
  return i % n_ctx_ < n_used_[static_cast<size_t>(s)] ? static_cast<int32_t>(s) : -1;
}

uint8_t* KvCache::layer_data(bool k, int il) const {
  const Part& p = part_[part_of(il)];
  return (k ? p.k : p.v) + static_cast<size_t>(il - p.first) * layer_bytes_;
}

Tensor KvCache::view(bool k, int il) const {
  Tensor t = make_tensor(type_, layer_data(k, il), head_dim_, n_head_kv_, n_ctx_, n_seq_max_);
  const Part& p = part_[part_of(il)];
  t.buffer = k ? p.k_buf.get() : p.v_buf.get();
  return t;
}

Tensor KvCache::rows(bool k, int il) const {
  Tensor t = make_tensor(type_, layer_data(k, il), head_dim_ * n_head_kv_, n_ctx_ * n_seq_max_);
  const Part& p = part_[part_of(il)];
  t.buffer = k ? p.k_buf.get() : p.v_buf.get();
  return t;
}

Tensor KvCache::k(int il) const { return view(true, il); }
Tensor KvCache::v(int il) const { return view(false, il); }
Tensor KvCache::k_rows(int il) const { return rows(true, il); }
Tensor KvCache::v_rows(int il) const { return rows(false, il); }

}  // namespace kestrel
