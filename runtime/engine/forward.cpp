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

// Hands out 64-byte aligned pieces of an arena: a first pass (base == nullptr)
// measures, a second hands out.
struct Carver {
  uint8_t* base = nullptr;
  size_t used = 0;
  template <typename T>
  T* take(size_t n) {
    const size_t bytes = (n * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    T* p = base ? reinterpret_cast<T*>(base + used) : nullptr;
    used += bytes;
    return p;
  }
};

}  // namespace

Status Forward::init(const Model& model, int64_t n_ubatch) {
  model_ = &model;
  n_ubatch_ = n_ubatch;
  const HParams& hp = model.hparams();
  const size_t B = static_cast<size_t>(n_ubatch);
  const size_t E = static_cast<size_t>(hp.n_embd), Q = static_cast<size_t>(hp.n_embd_q()),
               KV = static_cast<size_t>(hp.n_embd_kv()), F = static_cast<size_t>(hp.n_ff);
  for (int pass = 0; pass < 2; ++pass) {
    Carver c{arena_.get()};
    h_ = c.take<float>(E * B);
    q_ = c.take<float>(Q * B);
    k_ = c.take<float>(KV * B);
    v_ = c.take<float>(KV * B);
    att_ = c.take<float>(Q * B);
    o_ = c.take<float>(E * B);
    g_ = c.take<float>(F * B);
    u_ = c.take<float>(F * B);
    size_t ks_per_token = 0;
    for (const LayerWeights& L : model.layers)
      for (const KsLinear* ks : {&L.ks_q, &L.ks_k, &L.ks_v, &L.ks_o, &L.ks_gate, &L.ks_up, &L.ks_down})
        ks_per_token = std::max(ks_per_token, ks_scratch_floats_per_token(*ks));
    ks_scratch_floats_ = ks_per_token * B;
    ks_scratch_ = ks_scratch_floats_ ? c.take<float>(ks_scratch_floats_) : nullptr;
    xo_ = c.take<float>(E * B);
    x_ = c.take<float>(E * B);
    act_bytes_ = c.used;
    ids_ = c.take<int32_t>(B);
    pos_ = c.take<int32_t>(B);
    rows_ = c.take<int32_t>(B);
    rng_full_ = c.take<int32_t>(3 * B);
    rng_swa_ = c.take<int32_t>(3 * B);
    out_rows_ = c.take<int32_t>(B);
    draw_u_ = c.take<float>(B);
    if (pass == 0) {
      arena_bytes_ = c.used;
      arena_.reset(static_cast<uint8_t*>(aligned_alloc_bytes(arena_bytes_, kAlign)));
      if (!arena_) return Status::out_of_memory("activation arena of %zu bytes", arena_bytes_);
    }
  }
  return {};
}

void Forward::set_uniforms(const float* u, int64_t n, int64_t n_rows) {
  for (int64_t i = 0; i < n_rows && i < n_ubatch_; ++i) draw_u_[i] = i < n ? u[i] : 0.0f;
}

int32_t Forward::set_inputs(const BatchView& b, bool default_last, KvCache& kv, int64_t n_rows) {
  const HParams& hp = model_->hparams();
  const int32_t n = b.n_tokens;
  n_rows = std::max<int64_t>(n_rows, n);
  std::memcpy(ids_, b.tokens, static_cast<size_t>(n) * sizeof(int32_t));
  std::memcpy(pos_, b.pos, static_cast<size_t>(n) * sizeof(int32_t));
  kv.store(b, rows_);
  for (int32_t i = 0; i < n; ++i) {
    const int32_t seq = b.seq_id ? b.seq_id[i] : 0;
    kv.visible(seq, b.pos[i], rows_[i], 0, rng_full_ + 3 * i);
    if (hp.n_swa > 0) kv.visible(seq, b.pos[i], rows_[i], hp.n_swa, rng_swa_ + 3 * i);
  }
  int32_t n_out = 0;
  for (int32_t i = 0; i < n; ++i) {
    const bool want = b.logits ? b.logits[i] != 0 : default_last && i == n - 1;
    if (want) out_rows_[n_out++] = i;
  }
  for (int64_t i = n; i < n_rows; ++i) {
    ids_[i] = 0;
    pos_[i] = 0;
    rows_[i] = -1;  // set_rows skips it
    for (int32_t* r : {rng_full_ + 3 * i, rng_swa_ + 3 * i}) r[0] = r[1] = r[2] = 0;
    if (n_out == n) out_rows_[i] = static_cast<int32_t>(i);
  }
  return n_out;
}

// y = W x, through the projection's KS factor chain when the model stores one.
Status Forward::linear(OpSink& ops, Tensor* y, const Tensor& w, const KsLinear& ks, const Tensor& in) const {
  if (ks.n_factors) return ks_linear_apply(ops, ks, in, *y, ks_scratch_, ks_scratch_floats_);
  return ops.run(OpId::matmul, y, {&w, &in});
}

Expected<int> Forward::record(Plan& ops, int64_t n, int64_t n_out, const PassVariant& pv, const KvCache& kv,
                              float* logits, PassPart part, int32_t* out_ids) const {
  const Model& m = *model_;
  const HParams& hp = m.hparams();
  const ArchDesc& a = m.arch();
  const int64_t E = hp.n_embd, Q = hp.n_embd_q(), KV = hp.n_embd_kv(), F = hp.n_ff, D = hp.head_dim, V = hp.n_vocab;
  if (n < 1 || n > n_ubatch_ || n_out < 0 || n_out > n)
    return Status::internal("forward: %lld tokens, %lld outputs for a micro-batch of %lld", (long long)n,
                            (long long)n_out, (long long)n_ubatch_);
  if (pv.ids_out && !out_ids && (part == PassPart::whole || part == PassPart::head))
    return Status::internal("forward: ids out without their memory");
  if (pv.draw && (!pv.ids_out || pv.out_vocab > 0)) return Status::internal("forward: a draw needs ids out over the whole vocabulary");
  if (!pv.skip.empty() && pv.skip.size() != static_cast<size_t>(hp.n_layer))
    return Status::invalid_argument("skip mask of %zu layers for a %lld-layer model", pv.skip.size(), (long long)hp.n_layer);

  ops.clear();
  KESTREL_TRY(ops.reserve(static_cast<size_t>(hp.n_layer) * 32 + 8));
  uint8_t* const arena = arena_.get();
  const size_t xo_off = static_cast<size_t>(reinterpret_cast<uint8_t*>(xo_) - arena);
  const size_t row_bytes = static_cast<size_t>(E) * sizeof(float);
  int out_root = -1;
  if (part == PassPart::back) {
    // The residual stream comes up as a step input (the rows of this plan
    // only); the gathered rows go down as the output.
    ops.add_root(SlotRole::activation, arena, xo_off, "activations");
    out_root = ops.add_root(SlotRole::output, xo_, row_bytes * static_cast<size_t>(std::max<int64_t>(n_out, 1)),
                            "gathered rows");
    ops.add_root(SlotRole::input, x_, row_bytes * static_cast<size_t>(n), "residual stream");
  } else {
    ops.add_root(SlotRole::activation, arena, act_bytes_, "activations");
  }
  if (part != PassPart::head) ops.add_root(SlotRole::input, arena + act_bytes_, arena_bytes_ - act_bytes_, "step inputs");
  // The KV parts whose layers this plan runs.
  for (int p = 0; p < 2; ++p) {
    const bool runs = part == PassPart::whole || (part == PassPart::front && p == 0) || (part == PassPart::back && p == 1);
    if (!runs || kv.k_bytes(p) == 0) continue;
    ops.add_root(SlotRole::kv, kv.k_base(p), kv.k_bytes(p), p ? "kv k" : "kv k (front)");
    ops.add_root(SlotRole::kv, kv.v_base(p), kv.k_bytes(p), p ? "kv v" : "kv v (front)");
  }
  if (part == PassPart::whole || part == PassPart::head) {
    const size_t logits_bytes = static_cast<size_t>(std::max<int64_t>(n_out, 1) * V) * sizeof(float);
    if (pv.ids_out) {
      ops.add_root(SlotRole::activation, logits, logits_bytes, "logits");
      out_root = ops.add_root(SlotRole::output, out_ids, static_cast<size_t>(std::max<int64_t>(n_out, 1)) * sizeof(int32_t),
                              "greedy ids");
    } else {
      out_root = ops.add_root(SlotRole::output, logits, logits_bytes, "logits");
    }
  }
  const int l0 = part == PassPart::back ? kv.split() : 0;
  const int l1 = part == PassPart::front ? kv.split() : part == PassPart::head ? 0 : static_cast<int>(hp.n_layer);

  Tensor ids = make_tensor(DType::I32, ids_, n);
  Tensor pos = make_tensor(DType::I32, pos_, n);
  Tensor rows = make_tensor(DType::I32, rows_, n);
  Tensor rng_full = make_tensor(DType::I32, rng_full_, 3, n), rng_swa = make_tensor(DType::I32, rng_swa_, 3, n);
  Tensor x = f32(x_, E, n), h = f32(h_, E, n), o = f32(o_, E, n);
  Tensor q = f32(q_, Q, n), k = f32(k_, KV, n), v = f32(v_, KV, n), att = f32(att_, Q, n);
  Tensor q3 = f32(q_, D, hp.n_head, n), k3 = f32(k_, D, hp.n_head_kv, n), att3 = f32(att_, D, hp.n_head, n);
  Tensor g = f32(g_, F, n), u = f32(u_, F, n);

  if (part == PassPart::whole || part == PassPart::front) {
    KESTREL_TRY(ops.run(OpId::get_rows, &x, {&m.tok_embd, &ids}));
    if (a.scale_embeddings) {
      const ScaleParams sp{std::sqrt(static_cast<float>(E)), 0.0f};
      KESTREL_TRY(ops.run(OpId::scale, &x, {&x}, &sp));
    }
  }
  const RmsNormParams norm{hp.rms_eps, a.norm_one_plus_weight};
  // Rope frequency factors (Llama 3, LongRoPE) are chosen by the context's
  // cells per sequence, as llama.cpp chooses them by its n_ctx_seq.
  const Tensor* rope_ff = m.rope_factors(kv.n_ctx());
  const GeluParams gelu{GeluForm::tanh, exp_.gelu};
  const SiluParams silu{exp_.silu};

  for (int il = l0; il < l1; ++il) {
    if (!pv.skip.empty() && pv.skip[static_cast<size_t>(il)]) continue;
    const LayerWeights& L = m.layers[static_cast<size_t>(il)];
    const bool swa = hp.layer_is_swa.empty() ? false : hp.layer_is_swa[static_cast<size_t>(il)];

    KESTREL_TRY(ops.run(OpId::rms_norm, &h, {&x, &L.attn_norm}, &norm));
    KESTREL_TRY(linear(ops, &q, L.wq, L.ks_q, h));
    KESTREL_TRY(linear(ops, &k, L.wk, L.ks_k, h));
    KESTREL_TRY(linear(ops, &v, L.wv, L.ks_v, h));
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
    rope.freq_scale = swa ? hp.rope_freq_scale_swa : hp.rope_freq_scale;
    rope.attn_factor = hp.rope_attn_factor;
    if (rope_ff) {
      KESTREL_TRY(ops.run(OpId::rope, &q3, {&q3, &pos, rope_ff}, &rope));
      KESTREL_TRY(ops.run(OpId::rope, &k3, {&k3, &pos, rope_ff}, &rope));
    } else {
      KESTREL_TRY(ops.run(OpId::rope, &q3, {&q3, &pos}, &rope));
      KESTREL_TRY(ops.run(OpId::rope, &k3, {&k3, &pos}, &rope));
    }

    // This step's K and V into their cells, then attention over each token's own cells.
    Tensor kc = kv.k_rows(il), vc = kv.v_rows(il);
    KESTREL_TRY(ops.run(OpId::set_rows, &kc, {&k, &rows}));
    KESTREL_TRY(ops.run(OpId::set_rows, &vc, {&v, &rows}));
    Tensor kall = kv.k(il), vall = kv.v(il);
    const AttentionParams ap{hp.attn_scale, hp.attn_softcap, exp_.softmax};
    KESTREL_TRY(ops.run(OpId::attention, &att3, {&q3, &kall, &vall, swa ? &rng_swa : &rng_full}, &ap));
    KESTREL_TRY(linear(ops, &o, L.wo, L.ks_o, att));
    if (a.post_attn_norm) KESTREL_TRY(ops.run(OpId::rms_norm, &o, {&o, &L.post_attn_norm}, &norm));
    KESTREL_TRY(ops.run(OpId::add, &x, {&x, &o}));

    KESTREL_TRY(ops.run(OpId::rms_norm, &h, {&x, &L.ffn_norm}, &norm));
    KESTREL_TRY(linear(ops, &g, L.w_gate, L.ks_gate, h));
    KESTREL_TRY(linear(ops, &u, L.w_up, L.ks_up, h));
    if (a.ffn_act == FfnActivation::silu) {
      KESTREL_TRY(ops.run(OpId::swiglu, &g, {&g, &u}, &silu));
    } else {
      KESTREL_TRY(ops.run(OpId::geglu, &g, {&g, &u}, &gelu));
    }
    KESTREL_TRY(linear(ops, &o, L.w_down, L.ks_down, g));
    if (a.post_ffn_norm) KESTREL_TRY(ops.run(OpId::rms_norm, &o, {&o, &L.post_ffn_norm}, &norm));
    KESTREL_TRY(ops.run(OpId::add, &x, {&x, &o}));
  }
  if (part == PassPart::front || n_out == 0) return out_root;

  // Only the rows that asked for logits go through the output projection.
  Tensor sel = make_tensor(DType::I32, out_rows_, n_out);
  Tensor xo = f32(xo_, E, n_out), ho = f32(h_, E, n_out);
  if (part != PassPart::head) KESTREL_TRY(ops.run(OpId::get_rows, &xo, {&x, &sel}));
  if (part == PassPart::back) return out_root;
  KESTREL_TRY(ops.run(OpId::rms_norm, &ho, {&xo, &m.output_norm}, &norm));
  // A row subset multiplies by the first nv rows of W only (a zero-copy view)
  // and writes the first nv columns of each logits row.
  const int64_t nv = pv.out_vocab > 0 && pv.out_vocab < V ? pv.out_vocab : V;
  Tensor w = m.output;
  w.ne[1] = nv;
  Tensor out = f32(logits, nv, n_out);
  out.nb[1] = static_cast<size_t>(V) * sizeof(float);
  out.nb[2] = out.nb[3] = out.nb[1] * static_cast<size_t>(n_out);
  KESTREL_TRY(ops.run(OpId::matmul, &out, {&w, &ho}));
  if (hp.final_softcap > 0.0f) {
    const SoftcapParams sc{hp.final_softcap};
    KESTREL_TRY(ops.run(OpId::softcap, &out, {&out}, &sc));
  }
  if (nv < V) {
    Tensor rest = f32(logits + nv, V - nv, n_out);
    rest.nb[1] = out.nb[1];
    rest.nb[2] = rest.nb[3] = out.nb[2];
    const FillParams fill{-std::numeric_limits<float>::infinity()};
    KESTREL_TRY(ops.run(OpId::fill, &rest, {}, &fill));
  }
  if (pv.ids_out) {
    // Over the rows' first nv logits: the rest of a vocabulary subset is -inf.
    Tensor best = make_tensor(DType::I32, out_ids, n_out);
    if (pv.draw) {
      Tensor u = f32(draw_u_, n_out);
      KESTREL_TRY(ops.run(OpId::sample, &best, {&out, &u}, &pv.sample));
    } else {
      const ArgmaxParams strict{true};
      KESTREL_TRY(ops.run(OpId::argmax, &best, {&out}, &strict));
    }
  }
  return out_root;
}

}  // namespace kestrel
