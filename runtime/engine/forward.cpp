#include "runtime/engine/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "runtime/ks/ks_model.h"

namespace kestrel {

namespace {

constexpr size_t kAlign = 64;

Tensor f32(float* p, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1) {
  return make_tensor(DType::F32, p, ne0, ne1, ne2);
}

}  // namespace

float* Forward::take(size_t n_floats) {
  const size_t bytes = (n_floats * sizeof(float) + kAlign - 1) / kAlign * kAlign;
  float* p = arena_ ? reinterpret_cast<float*>(arena_.get() + arena_used_) : nullptr;
  arena_used_ += bytes;
  return p;
}

Status Forward::init(const Model& model, int64_t n_ubatch, int64_t n_ctx) {
  model_ = &model;
  n_ubatch_ = n_ubatch;
  n_ctx_ = n_ctx;
  const HParams& hp = model.hparams();
  const size_t B = static_cast<size_t>(n_ubatch);
  const size_t E = static_cast<size_t>(hp.n_embd), Q = static_cast<size_t>(hp.n_embd_q()),
               KV = static_cast<size_t>(hp.n_embd_kv()), F = static_cast<size_t>(hp.n_ff);
  const bool swa = hp.n_swa > 0;
  // Two passes over the same plan: the first measures, the second hands out.
  for (int pass = 0; pass < 2; ++pass) {
    arena_used_ = 0;
    x_ = take(E * B);
    h_ = take(E * B);
    q_ = take(Q * B);
    k_ = take(KV * B);
    v_ = take(KV * B);
    att_ = take(Q * B);
    o_ = take(E * B);
    g_ = take(F * B);
    u_ = take(F * B);
    xo_ = take(E * B);
    mask_full_ = take(static_cast<size_t>(n_ctx) * B);
    mask_swa_ = swa ? take(static_cast<size_t>(n_ctx) * B) : nullptr;
    ids_ = reinterpret_cast<int32_t*>(take(B));
    pos_ = reinterpret_cast<int32_t*>(take(B));
    cells_ = reinterpret_cast<int32_t*>(take(B));
    out_rows_ = reinterpret_cast<int32_t*>(take(B));
    ks_scratch_floats_ = ks_scratch_floats_per_token(model.layers) * B;
    ks_scratch_ = ks_scratch_floats_ ? take(ks_scratch_floats_) : nullptr;
    if (pass == 0) {
      arena_bytes_ = arena_used_;
      arena_.reset(static_cast<uint8_t*>(aligned_alloc_bytes(arena_bytes_, kAlign)));
      if (!arena_) return Status::out_of_memory("activation arena of %zu bytes", arena_bytes_);
    }
  }
  return {};
}

void Forward::build_masks(const BatchView& b, const KvCache& kv, int64_t n_kv) {
  const HParams& hp = model_->hparams();
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int32_t i = 0; i < b.n_tokens; ++i) {
    const int32_t seq = b.seq_id ? b.seq_id[i] : 0;
    const int32_t p = b.pos[i];
    float* mf = mask_full_ + static_cast<size_t>(i) * static_cast<size_t>(n_kv);
    float* ms = mask_swa_ ? mask_swa_ + static_cast<size_t>(i) * static_cast<size_t>(n_kv) : nullptr;
    for (int64_t j = 0; j < n_kv; ++j) {
      const bool visible = kv.cell_seq(j) == seq && kv.cell_pos(j) <= p;
      mf[j] = visible ? 0.0f : ninf;
      if (ms) ms[j] = visible && p - kv.cell_pos(j) < hp.n_swa ? 0.0f : ninf;
    }
  }
}

Status Forward::run(const BatchView& b, bool default_last, KvCache& kv, OpRunner& ops, float* logits,
                    int32_t* n_out) {
  const Model& m = *model_;
  const HParams& hp = m.hparams();
  const ArchDesc& a = m.arch();
  const int64_t n = b.n_tokens;
  const int64_t E = hp.n_embd, Q = hp.n_embd_q(), KV = hp.n_embd_kv(), F = hp.n_ff, D = hp.head_dim;

  std::memcpy(ids_, b.tokens, static_cast<size_t>(n) * sizeof(int32_t));
  std::memcpy(pos_, b.pos, static_cast<size_t>(n) * sizeof(int32_t));
  KESTREL_TRY(kv.find_slots(b, cells_));
  // The batch's own cells must be visible to it: record them before attention.
  kv.commit(b, cells_);
  bool contiguous = true;
  for (int64_t i = 1; i < n; ++i) contiguous = contiguous && cells_[i] == cells_[0] + i;
  const int64_t n_kv = kv.n_used_span();
  build_masks(b, kv, n_kv);

  Tensor ids = make_tensor(DType::I32, ids_, n);
  Tensor pos = make_tensor(DType::I32, pos_, n);
  Tensor x = f32(x_, E, n), h = f32(h_, E, n), o = f32(o_, E, n);
  Tensor q = f32(q_, Q, n), k = f32(k_, KV, n), v = f32(v_, KV, n), att = f32(att_, Q, n);
  Tensor q3 = f32(q_, D, hp.n_head, n), k3 = f32(k_, D, hp.n_head_kv, n), att3 = f32(att_, D, hp.n_head, n);
  Tensor g = f32(g_, F, n), u = f32(u_, F, n);
  Tensor mask_full = f32(mask_full_, n_kv, n);
  Tensor mask_swa = mask_swa_ ? f32(mask_swa_, n_kv, n) : Tensor{};

  KESTREL_TRY(ops.run(OpId::get_rows, &x, {&m.tok_embd, &ids}));
  if (a.scale_embeddings) {
    const ScaleParams sp{std::sqrt(static_cast<float>(E)), 0.0f};
    KESTREL_TRY(ops.run(OpId::scale, &x, {&x}, &sp));
  }
  const RmsNormParams norm{hp.rms_eps, a.norm_one_plus_weight};
  const GeluParams gelu{GeluForm::tanh, exp_.gelu};
  const SiluParams silu{exp_.silu};

  // y = W x, through the projection's KS factor chain when the model stores one.
  auto linear = [&](Tensor* y, const Tensor& w, const KsLinear& ks, const Tensor& in) -> Status {
    if (ks.n_factors) return ks_linear_apply(ops, ks, in, *y, ks_scratch_, ks_scratch_floats_);
    return ops.run(OpId::matmul, y, {&w, &in});
  };

  for (int il = 0; il < hp.n_layer; ++il) {
    if (!skip_.empty() && skip_[static_cast<size_t>(il)]) continue;
    const LayerWeights& L = m.layers[static_cast<size_t>(il)];
    const bool swa = hp.layer_is_swa.empty() ? false : hp.layer_is_swa[static_cast<size_t>(il)];

    KESTREL_TRY(ops.run(OpId::rms_norm, &h, {&x, &L.attn_norm}, &norm));
    KESTREL_TRY(linear(&q, L.wq, L.ks_q, h));
    KESTREL_TRY(linear(&k, L.wk, L.ks_k, h));
    KESTREL_TRY(linear(&v, L.wv, L.ks_v, h));
    if (L.bq.data) KESTREL_TRY(ops.run(OpId::add, &q, {&q, &L.bq}));
    if (L.bk.data) KESTREL_TRY(ops.run(OpId::add, &k, {&k, &L.bk}));
    if (L.bv.data) KESTREL_TRY(ops.run(OpId::add, &v, {&v, &L.bv}));
    if (a.qk_norm) {
      KESTREL_TRY(ops.run(OpId::rms_norm, &q3, {&q3, &L.q_norm}, &norm));
      KESTREL_TRY(ops.run(OpId::rms_norm, &k3, {&k3, &L.k_norm}, &norm));
    }
    RopeParams rope;
    rope.mode = a.rope_mode;
    rope.n_dims = static_cast<int32_t>(hp.n_rot);
    rope.theta_base = swa ? hp.rope_theta_swa : hp.rope_theta;
    rope.freq_scale = swa ? 1.0f : hp.rope_freq_scale;
    KESTREL_TRY(ops.run(OpId::rope, &q3, {&q3, &pos}, &rope));
    KESTREL_TRY(ops.run(OpId::rope, &k3, {&k3, &pos}, &rope));

    // Store this batch's K and V in its cells.
    if (contiguous) {
      Tensor kc = kv.k_rows(il, cells_[0], n), vc = kv.v_rows(il, cells_[0], n);
      KESTREL_TRY(ops.run(OpId::copy, &kc, {&k}));
      KESTREL_TRY(ops.run(OpId::copy, &vc, {&v}));
    } else {
      for (int64_t i = 0; i < n; ++i) {
        Tensor kc = kv.k_rows(il, cells_[i], 1), vc = kv.v_rows(il, cells_[i], 1);
        Tensor ki = f32(k_ + i * KV, KV), vi = f32(v_ + i * KV, KV);
        KESTREL_TRY(ops.run(OpId::copy, &kc, {&ki}));
        KESTREL_TRY(ops.run(OpId::copy, &vc, {&vi}));
      }
    }
    Tensor kall = kv.k(il, n_kv), vall = kv.v(il, n_kv);
    const AttentionParams ap{hp.attn_scale, hp.attn_softcap, exp_.softmax};
    KESTREL_TRY(ops.run(OpId::attention, &att3, {&q3, &kall, &vall, swa ? &mask_swa : &mask_full}, &ap));
    KESTREL_TRY(linear(&o, L.wo, L.ks_o, att));
    if (a.post_attn_norm) KESTREL_TRY(ops.run(OpId::rms_norm, &o, {&o, &L.post_attn_norm}, &norm));
    KESTREL_TRY(ops.run(OpId::add, &x, {&x, &o}));

    KESTREL_TRY(ops.run(OpId::rms_norm, &h, {&x, &L.ffn_norm}, &norm));
    KESTREL_TRY(linear(&g, L.w_gate, L.ks_gate, h));
    KESTREL_TRY(linear(&u, L.w_up, L.ks_up, h));
    if (a.ffn_act == FfnActivation::silu) {
      KESTREL_TRY(ops.run(OpId::swiglu, &g, {&g, &u}, &silu));
    } else {
      KESTREL_TRY(ops.run(OpId::geglu, &g, {&g, &u}, &gelu));
    }
    KESTREL_TRY(linear(&o, L.w_down, L.ks_down, g));
    if (a.post_ffn_norm) KESTREL_TRY(ops.run(OpId::rms_norm, &o, {&o, &L.post_ffn_norm}, &norm));
    KESTREL_TRY(ops.run(OpId::add, &x, {&x, &o}));
  }

  // Only the rows that asked for logits go through the output projection.
  int32_t n_rows = 0;
  for (int32_t i = 0; i < n; ++i) {
    const bool want = b.logits ? b.logits[i] != 0 : default_last && i == n - 1;
    if (want) out_rows_[n_rows++] = i;
  }
  *n_out = n_rows;
  if (n_rows == 0) return {};
  Tensor sel = make_tensor(DType::I32, out_rows_, n_rows);
  Tensor xo = f32(xo_, E, n_rows), ho = f32(h_, E, n_rows);
  KESTREL_TRY(ops.run(OpId::get_rows, &xo, {&x, &sel}));
  KESTREL_TRY(ops.run(OpId::rms_norm, &ho, {&xo, &m.output_norm}, &norm));
  // A row subset (set_output_rows) multiplies by the first nv rows of W only,
  // writes the rows densely, then spreads them to stride n_vocab.
  const int64_t nv = out_vocab_ > 0 && out_vocab_ < hp.n_vocab ? out_vocab_ : hp.n_vocab;
  Tensor w = m.output;
  w.ne[1] = nv;
  Tensor out = f32(logits, nv, n_rows);
  KESTREL_TRY(ops.run(OpId::matmul, &out, {&w, &ho}));
  if (hp.final_softcap > 0.0f) {
    const float c = hp.final_softcap;
    for (int64_t i = 0; i < nv * n_rows; ++i) logits[i] = c * std::tanh(logits[i] / c);
  }
  if (nv < hp.n_vocab) {
    const float ninf = -std::numeric_limits<float>::infinity();
    for (int64_t r = n_rows - 1; r >= 0; --r) {  // last row first: each move goes up, never over an unmoved row
      float* dst = logits + r * hp.n_vocab;
      std::memmove(dst, logits + r * nv, static_cast<size_t>(nv) * sizeof(float));
      std::fill(dst + nv, dst + hp.n_vocab, ninf);
    }
  }
  return {};
}

}  // namespace kestrel
