// validate_op: the backend-independent contract of every op (see op_table.h).
#include "ops/backend.h"
#include "platform/checked_math.h"

namespace kestrel {

namespace {

bool is_float_act(DType t) { return t == DType::F32; }
bool is_plain_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

bool rows_ok(const Tensor& t) {
  if (!dtype_traits(t.type)) return false;
  for (int i = 0; i < 4; ++i)
    if (t.ne[i] < 0) return false;
  if (t.ne[0] % dtype_block_size(t.type) != 0) return false;
  return t.nb[0] == dtype_type_size(t.type);
}

Status need(bool cond, const OpCall& c, const char* what) {
  if (cond) return {};
  return Status::invalid_argument("%s: %s", op_name(c.op), what);
}

// The exp tier (and GELU form) of the activations that take one; scale has none.
Status exp_params_ok(const OpCall& c) {
  switch (c.op) {
    case OpId::gelu:
    case OpId::geglu: {
      const GeluParams& p = c.p<GeluParams>();
      KESTREL_TRY(need(p.form == GeluForm::tanh || p.form == GeluForm::erf || p.form == GeluForm::sigmoid, c,
                       "unknown gelu form"));
      return need(exp_tier_valid(p.exp), c, "unknown exp tier");
    }
    case OpId::silu:
    case OpId::swiglu: return need(exp_tier_valid(c.p<SiluParams>().exp), c, "unknown exp tier");
    case OpId::sigmoid: return need(exp_tier_valid(c.p<SigmoidParams>().exp), c, "unknown exp tier");
    default: return {};
  }
}

bool broadcastable(const Tensor& a, const Tensor& b) {
  if (b.ne[0] != a.ne[0]) return false;
  for (int i = 1; i < 4; ++i)
    if (b.ne[i] != a.ne[i] && b.ne[i] != 1) return false;
  return true;
}

}  // namespace

Status validate_op(const OpCall& c) {
  const int op = static_cast<int>(c.op);
  if (op < 0 || op >= kOpCount) return Status::invalid_argument("unknown op %d", op);
  if (!c.dst) return Status::invalid_argument("%s: no destination", op_name(c.op));
  if (c.n_src < op_min_src(c.op) || c.n_src > op_max_src(c.op))
    return Status::invalid_argument("%s: %d sources, expected %d..%d", op_name(c.op), c.n_src,
                                    op_min_src(c.op), op_max_src(c.op));
  for (int i = 0; i < c.n_src; ++i) {
    if (!c.src[i]) return Status::invalid_argument("%s: source %d is null", op_name(c.op), i);
    KESTREL_TRY(need(rows_ok(*c.src[i]), c, "source has a bad type, shape or element stride"));
    if (c.src[i]->nelements() > 0 && !c.src[i]->data)
      return Status::invalid_argument("%s: source %d has no data", op_name(c.op), i);
  }
  const Tensor& d = *c.dst;
  KESTREL_TRY(need(rows_ok(d), c, "destination has a bad type, shape or element stride"));
  if (d.nelements() > 0 && !d.data) return Status::invalid_argument("%s: dst has no data", op_name(c.op));
  if (c.op == OpId::fill) return need(is_float_act(d.type), c, "dst must be F32");
  const Tensor& a = *c.src[0];

  switch (c.op) {
    case OpId::get_rows:
      KESTREL_TRY(need(dtype_traits(a.type)->is_weight, c, "table type is not a weight type"));
      KESTREL_TRY(need(c.src[1]->type == DType::I32, c, "ids must be I32"));
      KESTREL_TRY(need(is_float_act(d.type), c, "dst must be F32"));
      KESTREL_TRY(need(d.ne[0] == a.ne[0] && d.ne[1] == c.src[1]->ne[0] && d.ne[2] == 1 && d.ne[3] == 1,
                       c, "dst must be [K, n_ids]"));
      KESTREL_TRY(need(c.src[1]->ne[1] == 1 && c.src[1]->ne[2] == 1 && c.src[1]->ne[3] == 1, c,
                       "ids must be 1-D"));
      break;
    case OpId::add:
    case OpId::mul:
      KESTREL_TRY(need(is_float_act(a.type) && is_float_act(c.src[1]->type) && is_float_act(d.type), c,
                       "F32 only"));
      KESTREL_TRY(need(broadcastable(a, *c.src[1]), c, "b must match a or broadcast over rows"));
      KESTREL_TRY(need(same_shape(a, d), c, "dst shape must equal a"));
      break;
    case OpId::scale:
    case OpId::gelu:
    case OpId::silu:
    case OpId::sigmoid:
      KESTREL_TRY(need(is_float_act(a.type) && is_float_act(d.type), c, "F32 only"));
      KESTREL_TRY(need(same_shape(a, d), c, "dst shape must equal src"));
      KESTREL_TRY(exp_params_ok(c));
      break;
    case OpId::swiglu:
    case OpId::geglu:
      KESTREL_TRY(need(is_float_act(a.type) && is_float_act(c.src[1]->type) && is_float_act(d.type), c,
                       "F32 only"));
      KESTREL_TRY(need(same_shape(a, *c.src[1]) && same_shape(a, d), c, "gate, up and dst must match"));
      KESTREL_TRY(exp_params_ok(c));
      break;
    case OpId::rms_norm:
      KESTREL_TRY(need(is_float_act(a.type) && is_float_act(d.type), c, "F32 only"));
      KESTREL_TRY(need(same_shape(a, d), c, "dst shape must equal src"));
      if (c.n_src > 1) {
        const Tensor& w = *c.src[1];
        KESTREL_TRY(need(w.type == DType::F32 && w.ne[0] == a.ne[0] && w.nrows() == 1, c,
                         "weight must be F32 [K]"));
      }
      KESTREL_TRY(need(c.p<RmsNormParams>().eps >= 0.0f, c, "eps must be >= 0"));
      break;
    case OpId::rope: {
      const RopeParams& p = c.p<RopeParams>();
      const Tensor& pos = *c.src[1];
      KESTREL_TRY(need(is_float_act(a.type) && is_float_act(d.type), c, "F32 only"));
      KESTREL_TRY(need(same_shape(a, d), c, "dst shape must equal src"));
      KESTREL_TRY(need(pos.type == DType::I32 && pos.ne[0] == a.ne[2] && pos.nrows() == 1, c,
                       "positions must be I32 [n_tokens]"));
      KESTREL_TRY(need(p.n_dims > 0 && p.n_dims % 2 == 0 && p.n_dims <= a.ne[0], c,
                       "n_dims must be even and within head_dim"));
      KESTREL_TRY(need(p.mode == RopeMode::adjacent || p.mode == RopeMode::neox, c, "unknown mode"));
      KESTREL_TRY(need(p.theta_base > 0.0f && p.freq_scale > 0.0f, c, "theta and freq_scale must be > 0"));
      KESTREL_TRY(need(p.attn_factor > 0.0f && p.attn_factor < 1e30f, c, "attn_factor must be > 0 and finite"));
      KESTREL_TRY(need(a.ne[3] == 1, c, "x must be 3-D"));
      if (c.n_src > 2) {
        const Tensor& ff = *c.src[2];
        KESTREL_TRY(need(ff.type == DType::F32 && ff.ne[0] == p.n_dims / 2 && ff.nrows() == 1, c,
                         "freq factors must be F32 [n_dims/2]"));
      }
      break;
    }
    case OpId::matmul: {
      const Tensor& x = *c.src[1];
      KESTREL_TRY(need(dtype_traits(a.type)->is_weight, c, "W type is not a weight type"));
      KESTREL_TRY(need(a.ne[2] == 1 && a.ne[3] == 1, c, "W must be 2-D"));
      KESTREL_TRY(need(is_float_act(x.type) && is_float_act(d.type), c, "x and y must be F32"));
      KESTREL_TRY(need(x.ne[0] == a.ne[0], c, "x rows must have W's K elements"));
      KESTREL_TRY(need(d.ne[0] == a.ne[1] && d.ne[1] == x.ne[1] && d.ne[2] == x.ne[2] && d.ne[3] == x.ne[3],
                       c, "y must be [N, M]"));
      break;
    }
    case OpId::softmax: {
      const SoftmaxParams& p = c.p<SoftmaxParams>();
      KESTREL_TRY(need(is_float_act(a.type) && is_float_act(d.type), c, "F32 only"));
      KESTREL_TRY(need(same_shape(a, d), c, "dst shape must equal src"));
      KESTREL_TRY(need(p.soft_cap >= 0.0f && p.window >= 0, c, "soft_cap and window must be >= 0"));
      KESTREL_TRY(need(exp_tier_valid(p.exp), c, "unknown exp tier"));
      if (c.n_src > 1) {
        const Tensor& m = *c.src[1];
        KESTREL_TRY(need(m.type == DType::F32 && m.ne[0] == a.ne[0] && m.ne[1] == a.ne[1] &&
                             m.ne[2] == 1 && m.ne[3] == 1 && a.ne[2] == 1 && a.ne[3] == 1,
                         c, "mask must be F32 [n, rows] over a 2-D input"));
      }
      break;
    }
    case OpId::attention: {
      const Tensor& k = *c.src[1];
      const Tensor& v = *c.src[2];
      KESTREL_TRY(need(is_float_act(a.type) && is_float_act(d.type), c, "q and dst must be F32"));
      KESTREL_TRY(need(exp_tier_valid(c.p<AttentionParams>().exp), c, "unknown exp tier"));
      KESTREL_TRY(need((k.type == DType::F32 || k.type == DType::F16) && k.type == v.type, c,
                       "k and v must both be F32 or both F16"));
      KESTREL_TRY(need(k.ne[0] == a.ne[0] && v.ne[0] == a.ne[0], c, "head dims must agree"));
      KESTREL_TRY(need(same_shape(k, v), c, "k and v shapes must agree"));
      KESTREL_TRY(need(k.ne[1] > 0 && a.ne[1] % k.ne[1] == 0, c, "q heads must be a multiple of kv heads"));
      KESTREL_TRY(need(same_shape(a, d) && a.ne[3] == 1, c, "dst must be [D, Hq, M]"));
      const Tensor* m = c.opt_src(3);
      if (m && m->type == DType::I32) {
        KESTREL_TRY(need(m->ne[0] == 3 && m->ne[1] == a.ne[2] && m->ne[2] == 1 && m->ne[3] == 1, c,
                         "ranges must be I32 [3, M]"));
      } else {
        KESTREL_TRY(need(k.ne[3] == 1, c, "k and v with several streams need per-query ranges"));
        if (m)
          KESTREL_TRY(need(m->type == DType::F32 && m->ne[0] == k.ne[2] && m->ne[1] == a.ne[2] && m->ne[2] == 1 &&
                               m->ne[3] == 1,
                           c, "mask must be F32 [n_kv, M]"));
      }
      KESTREL_TRY(need(c.p<AttentionParams>().soft_cap >= 0.0f, c, "soft_cap must be >= 0"));
      break;
    }
    case OpId::argmax:
      KESTREL_TRY(need(is_float_act(a.type) && d.type == DType::I32, c, "F32 in, I32 out"));
      KESTREL_TRY(need(a.ne[0] > 0 && d.ne[0] == a.ne[1] && d.nrows() == 1 && a.ne[2] == 1 && a.ne[3] == 1, c,
                       "dst must be [M] for src [N, M], N > 0"));
      break;
    case OpId::sample: {
      const SampleParams& p = c.p<SampleParams>();
      const Tensor& u = *c.src[1];
      KESTREL_TRY(need(a.type == DType::F32 && a.ne[0] > 0 && a.ne[2] == 1 && a.ne[3] == 1, c, "logits must be F32 [V, M]"));
      KESTREL_TRY(need(u.type == DType::F32 && u.ne[0] == a.ne[1] && u.nrows() == 1, c, "uniforms must be F32 [M]"));
      KESTREL_TRY(need(d.type == DType::I32 && d.ne[0] == a.ne[1] && d.nrows() == 1, c, "dst must be I32 [M]"));
      KESTREL_TRY(need(p.temperature > 0.0f && p.temperature < 1e30f, c, "temperature must be > 0 and finite"));
      KESTREL_TRY(need(p.top_k >= 1 && p.top_k <= kSampleMaxK, c, "top_k must be in [1, 1024]"));
      KESTREL_TRY(need(p.top_p > 0.0f && p.top_p <= 1.0f, c, "top_p must be in (0, 1]"));
      KESTREL_TRY(need(p.min_p >= 0.0f && p.min_p <= 1.0f, c, "min_p must be in [0, 1]"));
      break;
    }
    case OpId::copy:
      KESTREL_TRY(need(is_plain_float(a.type) && is_plain_float(d.type), c, "F32/F16/BF16 only"));
      KESTREL_TRY(need(same_shape(a, d), c, "dst shape must equal src"));
      break;
    case OpId::ks_matmul: {
      const KsMatmulParams& p = c.p<KsMatmulParams>();
      const Tensor& x = *c.src[1];
      KESTREL_TRY(need(p.a >= 1 && p.b >= 1 && p.c >= 1 && p.d >= 1, c, "pattern (a, b, c, d) must be >= 1"));
      KESTREL_TRY(need(p.layout == KsLayout::token_major || p.layout == KsLayout::batch_last, c, "unknown layout"));
      KESTREL_TRY(need(is_plain_float(a.type), c, "weights must be F32, F16 or BF16"));
      KESTREL_TRY(need(a.ne[0] == p.b && a.ne[1] == p.c && a.ne[2] == p.d && a.ne[3] == p.a, c,
                       "weights must be {b, c, d, a}"));
      KESTREL_TRY(need(is_float_act(x.type) && is_float_act(d.type), c, "x and y must be F32"));
      // Feature counts: a*c*d and a*b*d, checked (the pattern is caller data).
      uint64_t ad = 0, n_in = 0, n_out = 0;
      KESTREL_TRY(need(checked_mul((uint64_t)p.a, (uint64_t)p.d, ad) && checked_mul(ad, (uint64_t)p.c, n_in) &&
                           checked_mul(ad, (uint64_t)p.b, n_out),
                       c, "pattern sizes overflow"));
      const int feat = p.layout == KsLayout::token_major ? 0 : 1;  // the feature dim of x and y
      KESTREL_TRY(need(x.ne[feat] == (int64_t)n_in && d.ne[feat] == (int64_t)n_out, c,
                       "x must have a*c*d features and y a*b*d"));
      KESTREL_TRY(need(x.ne[1 - feat] == d.ne[1 - feat], c, "x and y must have the same token count"));
      KESTREL_TRY(need(x.ne[2] == 1 && x.ne[3] == 1 && d.ne[2] == 1 && d.ne[3] == 1, c, "x and y must be 2-D"));
      break;
    }
    case OpId::set_rows: {
      const Tensor& ids = *c.src[1];
      KESTREL_TRY(need(is_float_act(a.type) && is_plain_float(d.type), c, "x must be F32, dst F32, F16 or BF16"));
      KESTREL_TRY(need(ids.type == DType::I32 && ids.ne[0] == a.ne[1] && ids.nrows() == 1, c, "ids must be I32 [M]"));
      KESTREL_TRY(need(d.ne[0] == a.ne[0] && a.ne[2] == 1 && a.ne[3] == 1 && d.ne[2] == 1 && d.ne[3] == 1, c,
                       "x must be [K, M] and dst [K, R]"));
      break;
    }
    case OpId::fill: break;  // checked above
    case OpId::transpose:
      KESTREL_TRY(need(is_float_act(a.type) && is_float_act(d.type), c, "F32 only"));
      KESTREL_TRY(need(a.ne[2] == 1 && a.ne[3] == 1 && d.ne[0] == a.ne[1] && d.ne[1] == a.ne[0] && d.ne[2] == 1 &&
                           d.ne[3] == 1,
                       c, "dst must be [M, K] for src [K, M]"));
      break;
    case OpId::softcap:
      KESTREL_TRY(need(is_float_act(a.type) && is_float_act(d.type), c, "F32 only"));
      KESTREL_TRY(need(same_shape(a, d), c, "dst shape must equal src"));
      KESTREL_TRY(need(c.p<SoftcapParams>().cap > 0.0f && c.p<SoftcapParams>().cap < 1e30f, c,
                       "cap must be > 0 and finite"));
      break;
    case OpId::spec_verify: {
      const SpecVerifyParams& p = c.p<SpecVerifyParams>();
      const Tensor& ids = *c.src[1];
      KESTREL_TRY(need(is_float_act(a.type) && a.ne[0] >= 1 && a.ne[2] == 1 && a.ne[3] == 1, c,
                       "target logits must be F32 [V, g+1]"));
      KESTREL_TRY(need(ids.type == DType::I32 && ids.ne[0] >= 1 && ids.nrows() == 1, c, "ids must be I32 [g], g >= 1"));
      KESTREL_TRY(need(a.ne[1] == ids.ne[0] + 1, c, "target logits must have g+1 rows"));
      KESTREL_TRY(need(d.type == DType::I32 && d.ne[0] == 2 && d.nrows() == 1, c, "dst must be I32 [2]"));
      if (c.n_src > 2) {
        const Tensor& q = *c.src[2];
        KESTREL_TRY(need(is_float_act(q.type) && q.ne[0] == a.ne[0] && q.ne[1] == ids.ne[0] && q.ne[2] == 1 &&
                             q.ne[3] == 1,
                         c, "draft logits must be F32 [V, g]"));
      }
      if (!p.greedy) {
        KESTREL_TRY(need(c.n_src > 2, c, "the stochastic rule needs the draft logits"));
        KESTREL_TRY(need(p.temperature > 0.0f && p.temperature < 1e30f, c, "temperature must be > 0 and finite"));
        KESTREL_TRY(need(p.top_k >= 0, c, "top_k must be >= 0"));
        KESTREL_TRY(need(p.top_p > 0.0f && p.top_p <= 1.0f, c, "top_p must be in (0, 1]"));
        KESTREL_TRY(need(!p.sigmoid || (p.top_k == 0 && p.top_p == 1.0f), c, "sigmoid takes no top-k / top-p"));
        KESTREL_TRY(need(!p.sigmoid || (p.sigmoid_scale > -1e30f && p.sigmoid_scale < 1e30f &&
                                        p.sigmoid_bias > -1e30f && p.sigmoid_bias < 1e30f),
                         c, "sigmoid constants must be finite"));
      }
      break;
    }
  }
  return {};
}

}  // namespace kestrel
