// Test cases of the cross-backend op test, one generator per op of the op
// table (test_backend_ops.cpp checks at compile time that each op has one).
// Shapes are the awkward ones: 1, tile-1, tile, tile+1 and multiples for the
// SIMD widths 4/8/16 and block sizes 32/256, strided rows, non-contiguous
// views (dims 1 and 2 swapped in memory), broadcasts and in-place calls.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "tests/backend_ops/harness.h"

namespace kestrel::test {

// Row lengths around every SIMD width (4, 8, 16) and block size (32, 256).
inline const std::vector<int64_t>& awkward_sizes() {
  static const std::vector<int64_t> k = {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 64, 255, 256, 257};
  return k;
}

inline std::string dims(const TSpec& s) {
  char b[96];
  std::snprintf(b, sizeof b, "%s[%lld,%lld,%lld,%lld]%s%s", dtype_name(s.type), (long long)s.ne[0],
                (long long)s.ne[1], (long long)s.ne[2], (long long)s.ne[3], s.pad_bytes ? " strided" : "",
                s.swap12 ? " swap12" : "");
  return b;
}

inline Case& add_case(std::vector<Case>& out, OpId op, std::vector<TSpec> src, TSpec dst, Tol tol,
                      std::string row = "", std::string extra = "") {
  Case c;
  c.op = op;
  c.row = row.empty() ? op_name(op) : std::string(op_name(op)) + " " + row;
  c.src = std::move(src);
  c.dst = dst;
  c.tol = tol;
  c.seed = 1000u + (uint32_t)out.size() * 7919u;
  c.desc = std::string(op_name(op)) + " " + extra;
  for (const TSpec& s : c.src) c.desc += " " + dims(s);
  c.desc += " -> " + dims(dst);
  out.push_back(std::move(c));
  return out.back();
}

inline TSpec strided(TSpec s, size_t pad) {
  s.pad_bytes = pad;
  return s;
}
inline TSpec ranged(TSpec s, float lo, float hi) {
  s.lo = lo;
  s.hi = hi;
  return s;
}
inline TSpec filled(TSpec s, Fill f, int64_t id_range = 0) {
  s.fill = f;
  s.id_range = id_range;
  return s;
}

// ---- add, mul -------------------------------------------------------------
inline void binary_cases(OpId op, std::vector<Case>& out) {
  const Tol tol = tol_close(1e-6, 1e-6);
  for (int64_t k : awkward_sizes()) {
    add_case(out, op, {spec(DType::F32, k, 3), spec(DType::F32, k, 3)}, spec(DType::F32, k, 3), tol);
    add_case(out, op, {spec(DType::F32, k, 3, 2), spec(DType::F32, k, 1)}, spec(DType::F32, k, 3, 2), tol, "",
             "broadcast");
  }
  add_case(out, op, {spec(DType::F32, 33, 3, 2, 2), spec(DType::F32, 33, 1, 2, 1)}, spec(DType::F32, 33, 3, 2, 2),
           tol, "", "broadcast dims 1,3");
  add_case(out, op, {strided(spec(DType::F32, 17, 5, 2), 12), strided(spec(DType::F32, 17, 5, 1), 4)},
           strided(spec(DType::F32, 17, 5, 2), 8), tol);
  TSpec sw = spec(DType::F32, 9, 3, 4);
  sw.swap12 = true;
  add_case(out, op, {sw, spec(DType::F32, 9, 3, 4)}, sw, tol);
  add_case(out, op, {spec(DType::F32, 65, 4), spec(DType::F32, 65, 1)}, spec(DType::F32, 65, 4), tol).in_place = true;
}
inline void cases_add(std::vector<Case>& out) { binary_cases(OpId::add, out); }
inline void cases_mul(std::vector<Case>& out) { binary_cases(OpId::mul, out); }

// ---- scale ----------------------------------------------------------------
inline void cases_scale(std::vector<Case>& out) {
  const Tol tol = tol_close(1e-6, 1e-6);
  ScaleParams p{0.37f, -0.25f};
  for (int64_t k : awkward_sizes()) add_case(out, OpId::scale, {spec(DType::F32, k, 2)}, spec(DType::F32, k, 2), tol).with(p);
  add_case(out, OpId::scale, {strided(spec(DType::F32, 31, 3, 2), 20)}, strided(spec(DType::F32, 31, 3, 2), 4), tol).with(p);
  add_case(out, OpId::scale, {spec(DType::F32, 100, 3)}, spec(DType::F32, 100, 3), tol).with(ScaleParams{2.0f, 0.0f}).in_place = true;
}

// ---- unary / gated activations -------------------------------------------
inline void activation_cases(OpId op, int n_src, std::vector<Case>& out, const std::vector<uint8_t>& params,
                             const std::string& row) {
  const Tol tol = tol_close(2e-6, 4e-6);
  auto srcs = [&](TSpec s) {
    std::vector<TSpec> v(1, ranged(s, -10.0f, 10.0f));
    if (n_src == 2) v.push_back(ranged(s, -2.0f, 2.0f));
    return v;
  };
  for (int64_t k : awkward_sizes()) add_case(out, op, srcs(spec(DType::F32, k, 2)), spec(DType::F32, k, 2), tol, row).params = params;
  add_case(out, op, srcs(strided(spec(DType::F32, 19, 3, 2), 8)), strided(spec(DType::F32, 19, 3, 2), 16), tol, row)
      .params = params;
  Case& ip = add_case(out, op, srcs(spec(DType::F32, 40, 3)), spec(DType::F32, 40, 3), tol, row, "in place");
  ip.params = params;
  ip.in_place = true;
}
template <typename P>
std::vector<uint8_t> param_bytes(const P& p) {
  std::vector<uint8_t> b(sizeof(P));
  std::memcpy(b.data(), &p, sizeof(P));
  return b;
}
// An activation on each exp tier: the exact tier under `row`, a quake tier under
// "row quake2" etc. A quake tier's ref is the same float formula, so the tolerance
// is a few roundings of the quake fma's v (~1e-5 relative).
template <typename MakeParams>
inline void tier_activation_cases(OpId op, int n_src, std::vector<Case>& out, const std::string& row,
                                  MakeParams make) {
  for (ExpTier t : {ExpTier::exact, ExpTier::quake2, ExpTier::quake1}) {
    const size_t first = out.size();
    std::string r = row;
    if (t != ExpTier::exact) r = row.empty() ? exp_tier_name(t) : row + " " + exp_tier_name(t);
    activation_cases(op, n_src, out, make(t), r);
    if (t != ExpTier::exact)
      for (size_t i = first; i < out.size(); ++i) out[i].tol = tol_close(1e-7, 3e-5);
  }
}
inline void cases_silu(std::vector<Case>& out) {
  tier_activation_cases(OpId::silu, 1, out, "", [](ExpTier t) { return param_bytes(SiluParams{t}); });
}
inline void cases_swiglu(std::vector<Case>& out) {
  tier_activation_cases(OpId::swiglu, 2, out, "", [](ExpTier t) { return param_bytes(SiluParams{t}); });
}
// sigmoid on each exp tier. A quake tier's ref is the same float formula, so
// the tolerance is a few roundings of the quake fma's v (~1e-5 relative).
inline void cases_sigmoid(std::vector<Case>& out) {
  for (ExpTier t : {ExpTier::exact, ExpTier::quake2, ExpTier::quake1}) {
    const size_t first = out.size();
    activation_cases(OpId::sigmoid, 1, out, param_bytes(SigmoidParams{t}), exp_tier_name(t));
    if (t != ExpTier::exact)
      for (size_t i = first; i < out.size(); ++i) out[i].tol = tol_close(1e-7, 3e-5);
  }
}
inline void gelu_form_cases(OpId op, int n_src, std::vector<Case>& out) {
  for (GeluForm f : {GeluForm::tanh, GeluForm::erf, GeluForm::sigmoid}) {
    const char* name = f == GeluForm::tanh ? "tanh" : f == GeluForm::erf ? "erf" : "sigmoid";
    tier_activation_cases(op, n_src, out, name, [f](ExpTier t) { return param_bytes(GeluParams{f, t}); });
  }
}
inline void cases_gelu(std::vector<Case>& out) { gelu_form_cases(OpId::gelu, 1, out); }
inline void cases_geglu(std::vector<Case>& out) { gelu_form_cases(OpId::geglu, 2, out); }

// ---- rms_norm ---------------------------------------------------------------
inline void cases_rms_norm(std::vector<Case>& out) {
  const Tol tol = tol_close(2e-6, 4e-6);
  for (int64_t k : awkward_sizes()) {
    add_case(out, OpId::rms_norm, {spec(DType::F32, k, 3)}, spec(DType::F32, k, 3), tol).with(RmsNormParams{1e-5f, false});
    add_case(out, OpId::rms_norm, {spec(DType::F32, k, 3), spec(DType::F32, k)}, spec(DType::F32, k, 3), tol, "", "w")
        .with(RmsNormParams{1e-6f, false});
    add_case(out, OpId::rms_norm, {spec(DType::F32, k, 2, 2), spec(DType::F32, k)}, spec(DType::F32, k, 2, 2), tol, "",
             "1+w").with(RmsNormParams{1e-6f, true});
  }
  add_case(out, OpId::rms_norm, {strided(spec(DType::F32, 2048, 3), 64), spec(DType::F32, 2048)},
           strided(spec(DType::F32, 2048, 3), 32), tol).with(RmsNormParams{1e-5f, false});
  add_case(out, OpId::rms_norm, {spec(DType::F32, 96, 4), spec(DType::F32, 96)}, spec(DType::F32, 96, 4), tol, "",
           "in place").with(RmsNormParams{1e-5f, false}).in_place = true;
}

// ---- rope -------------------------------------------------------------------
inline void cases_rope(std::vector<Case>& out) {
  const Tol tol = tol_close(4e-6, 4e-6);
  struct Shape { int64_t head_dim, n_dims, n_head, n_tokens; };
  const Shape shapes[] = {{2, 2, 1, 1},   {4, 4, 3, 2},   {8, 8, 2, 3},    {16, 16, 1, 5}, {18, 18, 2, 2},
                          {34, 34, 2, 2}, {64, 32, 2, 3}, {64, 64, 4, 7},  {80, 80, 2, 2}, {128, 128, 3, 2},
                          {128, 64, 2, 2}, {256, 256, 1, 1}};
  for (RopeMode mode : {RopeMode::adjacent, RopeMode::neox}) {
    const std::string row = mode == RopeMode::neox ? "neox" : "adjacent";
    for (const Shape& s : shapes) {
      RopeParams p{mode, (int32_t)s.n_dims, 10000.0f, 1.0f};
      TSpec x = ranged(spec(DType::F32, s.head_dim, s.n_head, s.n_tokens), -2.0f, 2.0f);
      TSpec pos = filled(spec(DType::I32, s.n_tokens), Fill::positions, 0);
      add_case(out, OpId::rope, {x, pos}, spec(DType::F32, s.head_dim, s.n_head, s.n_tokens), tol, row).with(p);
    }
    // Long positions, a different base and scale, strided / swapped views, in place.
    RopeParams p{mode, 64, 1000000.0f, 0.25f};
    TSpec pos = filled(spec(DType::I32, 3), Fill::positions, 4000);
    add_case(out, OpId::rope, {spec(DType::F32, 64, 4, 3), pos}, spec(DType::F32, 64, 4, 3), tol, row, "pos 4000").with(p);
    TSpec sw = spec(DType::F32, 64, 4, 3);
    sw.swap12 = true;
    add_case(out, OpId::rope, {strided(spec(DType::F32, 64, 4, 3), 16), pos}, sw, tol, row).with(p);
    add_case(out, OpId::rope, {sw, pos}, sw, tol, row, "in place").with(p).in_place = true;
  }
  // Per-pair frequency factors (Llama 3 rope_freqs, Phi-3 long/short factors),
  // LongRoPE's attn_factor, partial rotary (n_dims < head_dim, the tail copied
  // unscaled), odd head counts; factors in [1, 40] as in real files.
  const Shape ff_shapes[] = {{2, 2, 1, 1}, {6, 6, 3, 2},   {18, 10, 3, 3}, {34, 34, 1, 5},
                             {64, 48, 3, 2}, {96, 64, 5, 3}, {128, 128, 2, 2}, {130, 66, 1, 4}};
  for (RopeMode mode : {RopeMode::adjacent, RopeMode::neox}) {
    const std::string row = mode == RopeMode::neox ? "neox freq factors" : "adjacent freq factors";
    for (const Shape& s : ff_shapes)
      for (float attn_factor : {1.0f, 1.19f}) {
        RopeParams p{mode, (int32_t)s.n_dims, 500000.0f, 1.0f, attn_factor};
        TSpec x = ranged(spec(DType::F32, s.head_dim, s.n_head, s.n_tokens), -2.0f, 2.0f);
        TSpec pos = filled(spec(DType::I32, s.n_tokens), Fill::positions, 0);
        TSpec ff = ranged(spec(DType::F32, s.n_dims / 2), 1.0f, 40.0f);
        add_case(out, OpId::rope, {x, pos, ff}, spec(DType::F32, s.head_dim, s.n_head, s.n_tokens), tol, row,
                 attn_factor != 1.0f ? "attn_factor" : "")
            .with(p);
      }
    RopeParams p{mode, 48, 10000.0f, 0.5f, 1.05f};
    TSpec pos = filled(spec(DType::I32, 3), Fill::positions, 3000);
    TSpec sw = spec(DType::F32, 64, 4, 3);
    sw.swap12 = true;
    TSpec ff = ranged(spec(DType::F32, 24), 0.5f, 8.0f);
    add_case(out, OpId::rope, {strided(spec(DType::F32, 64, 4, 3), 16), pos, ff}, sw, tol, (mode == RopeMode::neox ? "neox freq factors" : "adjacent freq factors"), "pos 3000")
        .with(p);
    add_case(out, OpId::rope, {sw, pos, ff}, sw, tol, (mode == RopeMode::neox ? "neox freq factors" : "adjacent freq factors"), "in place").with(p).in_place = true;
  }
}

// ---- softmax ----------------------------------------------------------------
inline void cases_softmax(std::vector<Case>& out) {
  const Tol tol = tol_close(1e-6, 1e-5);
  for (int64_t n : awkward_sizes()) {
    add_case(out, OpId::softmax, {ranged(spec(DType::F32, n, 3), -8.0f, 8.0f)}, spec(DType::F32, n, 3), tol)
        .with(SoftmaxParams{0.5f, 0.0f, false, 0, 0});
    add_case(out, OpId::softmax, {ranged(spec(DType::F32, n, 4), -8.0f, 8.0f), filled(spec(DType::F32, n, 4), Fill::mask_random)},
             spec(DType::F32, n, 4), tol, "", "mask").with(SoftmaxParams{1.0f, 0.0f, false, 0, 0});
    add_case(out, OpId::softmax, {ranged(spec(DType::F32, n, 5), -8.0f, 8.0f)}, spec(DType::F32, n, 5), tol, "",
             "causal").with(SoftmaxParams{1.0f, 0.0f, true, 0, (int32_t)(n > 3 ? n - 3 : 0)});
  }
  add_case(out, OpId::softmax, {ranged(spec(DType::F32, 70, 6), -30.0f, 30.0f)}, spec(DType::F32, 70, 6), tol, "",
           "soft cap").with(SoftmaxParams{2.0f, 20.0f, false, 0, 0});
  add_case(out, OpId::softmax, {ranged(spec(DType::F32, 40, 6), -4.0f, 4.0f)}, spec(DType::F32, 40, 6), tol, "",
           "causal window").with(SoftmaxParams{1.0f, 0.0f, true, 8, 30});
  add_case(out, OpId::softmax, {ranged(spec(DType::F32, 40, 6), -4.0f, 4.0f)}, spec(DType::F32, 40, 6), tol, "",
           "window only").with(SoftmaxParams{1.0f, 0.0f, false, 5, 20});
  add_case(out, OpId::softmax, {spec(DType::F32, 20, 3)}, spec(DType::F32, 20, 3), tol, "",
           "fully masked (pos_offset -1)").with(SoftmaxParams{1.0f, 0.0f, true, 0, -1});
  add_case(out, OpId::softmax, {ranged(strided(spec(DType::F32, 33, 3, 2, 2), 12), -5.0f, 5.0f)},
           strided(spec(DType::F32, 33, 3, 2, 2), 4), tol, "", "4-D causal").with(SoftmaxParams{1.0f, 0.0f, true, 0, 10});
  add_case(out, OpId::softmax, {ranged(spec(DType::F32, 32000, 2), -20.0f, 20.0f)}, spec(DType::F32, 32000, 2), tol, "",
           "vocab").with(SoftmaxParams{1.0f, 0.0f, false, 0, 0});
  // Quake tiers: the ref takes exp of (float)(s - max) through the same formula; the
  // kernels fold scale and max into the quake fma, a few roundings of v apart.
  const Tol qtol = tol_close(1e-7, 1e-4);
  for (ExpTier t : {ExpTier::quake2, ExpTier::quake1}) {
    const std::string row = exp_tier_name(t);
    for (int64_t n : awkward_sizes()) {
      SoftmaxParams p{0.5f, 0.0f, false, 0, 0};
      p.exp = t;
      add_case(out, OpId::softmax, {ranged(spec(DType::F32, n, 3), -8.0f, 8.0f)}, spec(DType::F32, n, 3), qtol, row).with(p);
      p.scale = 1.0f;
      p.causal = true;
      p.pos_offset = (int32_t)(n > 3 ? n - 3 : 0);
      add_case(out, OpId::softmax, {ranged(spec(DType::F32, n, 4), -8.0f, 8.0f), filled(spec(DType::F32, n, 4), Fill::mask_random)},
               spec(DType::F32, n, 4), qtol, row, "mask causal").with(p);
    }
    SoftmaxParams v{1.0f, 0.0f, false, 0, 0};
    v.exp = t;
    add_case(out, OpId::softmax, {ranged(spec(DType::F32, 32000, 2), -20.0f, 20.0f)}, spec(DType::F32, 32000, 2), qtol,
             row, "vocab").with(v);
  }
}

// ---- attention ----------------------------------------------------------------
inline void cases_attention_ranges(std::vector<Case>& out);

inline void cases_attention(std::vector<Case>& out) {
  struct Shape { int64_t D, Hq, Hkv, M, n_kv; };
  const Shape shapes[] = {{4, 1, 1, 1, 1},   {8, 2, 1, 1, 5},    {16, 4, 2, 3, 16},  {17, 2, 2, 2, 7},
                          {32, 4, 4, 1, 63}, {64, 8, 2, 1, 64},  {64, 4, 1, 5, 65},  {80, 2, 1, 3, 33},
                          {128, 4, 2, 2, 130}, {128, 2, 2, 1, 300}, {256, 2, 1, 2, 20}, {5, 3, 1, 4, 9}};
  for (DType kv : {DType::F32, DType::F16}) {
    const std::string row = std::string("kv ") + dtype_name(kv);
    const Tol tol = tol_close(2e-6, 2e-5);
    for (const Shape& s : shapes) {
      const float scale = 1.0f / std::sqrt((float)s.D);
      TSpec q = ranged(spec(DType::F32, s.D, s.Hq, s.M), -2.0f, 2.0f);
      TSpec k = spec(kv, s.D, s.Hkv, s.n_kv), v = spec(kv, s.D, s.Hkv, s.n_kv);
      TSpec d = spec(DType::F32, s.D, s.Hq, s.M);
      add_case(out, OpId::attention, {q, k, v}, d, tol, row).with(AttentionParams{scale, 0.0f});
      if (s.n_kv >= s.M)
        add_case(out, OpId::attention, {q, k, v, filled(spec(DType::F32, s.n_kv, s.M), Fill::mask_causal)}, d, tol, row,
                 "causal mask").with(AttentionParams{scale, 0.0f});
      add_case(out, OpId::attention, {q, k, v, filled(spec(DType::F32, s.n_kv, s.M), Fill::mask_random)}, d, tol, row,
               "random mask, query 0 fully masked").with(AttentionParams{scale, 0.0f});
    }
    // Soft cap with large scores; a KV cache view with capacity rows (strided).
    add_case(out, OpId::attention, {ranged(spec(DType::F32, 64, 4, 2), -4.0f, 4.0f), spec(kv, 64, 2, 40), spec(kv, 64, 2, 40)},
             spec(DType::F32, 64, 4, 2), tol, row, "soft cap").with(AttentionParams{1.0f, 5.0f});
    TSpec kc = spec(kv, 64, 2, 50);
    kc.swap12 = true;  // stored [D, n_kv, Hkv]: kv heads far apart
    add_case(out, OpId::attention, {strided(spec(DType::F32, 64, 4, 3), 32), strided(kc, 64), strided(kc, 64),
                                    filled(spec(DType::F32, 50, 3), Fill::mask_causal)},
             strided(spec(DType::F32, 64, 4, 3), 16), tol, row, "strided cache").with(AttentionParams{0.125f, 0.0f});
    // Quake tiers. The ref weighs each key by the tier's exp of (s - max); a kernel may
    // rescale online (exp(m_old - m_new) through the tier too), so the weights differ
    // from the ref's by up to about twice the tier's error: with |v| <= 1, that bounds
    // the output's error.
    for (ExpTier t : {ExpTier::quake2, ExpTier::quake1}) {
      const double e = 2.5 * exp_tier_max_rel_error(t);
      const std::string trow = row + " " + exp_tier_name(t);
      for (const Shape& s : {shapes[2], shapes[6], shapes[9]}) {
        TSpec q = ranged(spec(DType::F32, s.D, s.Hq, s.M), -2.0f, 2.0f);
        TSpec k = spec(kv, s.D, s.Hkv, s.n_kv), v = spec(kv, s.D, s.Hkv, s.n_kv);
        add_case(out, OpId::attention, {q, k, v, filled(spec(DType::F32, s.n_kv, s.M), Fill::mask_causal)},
                 spec(DType::F32, s.D, s.Hq, s.M), tol_close(e, e), trow, "causal")
            .with(AttentionParams{1.0f / std::sqrt((float)s.D), 0.0f, t});
      }
    }
  }
  cases_attention_ranges(out);
}

// Attention over a KV cache with one stream per sequence: per-query ranges.
inline void cases_attention_ranges(std::vector<Case>& out) {
  struct Shape { int64_t D, Hq, Hkv, M, n_kv, n_st; };
  const Shape shapes[] = {{4, 1, 1, 1, 1, 1},   {8, 2, 1, 7, 5, 2},     {16, 4, 2, 9, 16, 3},  {17, 2, 2, 8, 70, 2},
                          {64, 8, 2, 7, 129, 1}, {64, 4, 1, 14, 65, 4}, {128, 2, 2, 7, 300, 2}};
  for (DType kv : {DType::F32, DType::F16}) {
    const std::string row = std::string("kv ") + dtype_name(kv) + " ranges";
    for (const Shape& s : shapes) {
      const float scale = 1.0f / std::sqrt((float)s.D);
      TSpec q = ranged(spec(DType::F32, s.D, s.Hq, s.M), -2.0f, 2.0f);
      TSpec k = spec(kv, s.D, s.Hkv, s.n_kv, s.n_st), v = spec(kv, s.D, s.Hkv, s.n_kv, s.n_st);
      TSpec r = filled(spec(DType::I32, 3, s.M), Fill::kv_ranges, s.n_kv);
      r.n_streams = s.n_st;
      add_case(out, OpId::attention, {q, k, v, r}, spec(DType::F32, s.D, s.Hq, s.M), tol_close(2e-6, 2e-5), row)
          .with(AttentionParams{scale, 0.0f});
      add_case(out, OpId::attention, {q, k, v, r}, spec(DType::F32, s.D, s.Hq, s.M), tol_close(4e-6, 4e-5), row,
               "soft cap")
          .with(AttentionParams{scale, 3.0f});
    }
    // Quake tiers over ranges (an online softmax rescales through the tier too:
    // about twice the tier's error, as in cases_attention).
    for (ExpTier t : {ExpTier::quake2, ExpTier::quake1}) {
      const double e = 2.5 * exp_tier_max_rel_error(t);
      const Shape& s = shapes[5];
      TSpec q = ranged(spec(DType::F32, s.D, s.Hq, s.M), -2.0f, 2.0f);
      TSpec k = spec(kv, s.D, s.Hkv, s.n_kv, s.n_st), v = spec(kv, s.D, s.Hkv, s.n_kv, s.n_st);
      TSpec r = filled(spec(DType::I32, 3, s.M), Fill::kv_ranges, s.n_kv);
      r.n_streams = s.n_st;
      add_case(out, OpId::attention, {q, k, v, r}, spec(DType::F32, s.D, s.Hq, s.M), tol_close(e, e),
               row + " " + exp_tier_name(t))
          .with(AttentionParams{1.0f / std::sqrt((float)s.D), 0.0f, t});
    }
  }
}

// ---- set_rows, fill, softcap, transpose ----------------------------------------
inline void cases_set_rows(std::vector<Case>& out) {
  for (DType d : {DType::F32, DType::F16, DType::BF16}) {
    const std::string row = dtype_name(d);
    for (int64_t k : {1, 7, 8, 9, 64, 257})
      for (int64_t m : {1, 5, 33}) {
        const int64_t r = 2 * m + 3;
        add_case(out, OpId::set_rows, {ranged(spec(DType::F32, k, m), -50.0f, 50.0f), filled(spec(DType::I32, m), Fill::rows_sorted, r)},
                 spec(d, k, r), tol_exact(), row);
      }
    add_case(out, OpId::set_rows, {ranged(spec(DType::F32, 24, 9), -2.0f, 2.0f), filled(spec(DType::I32, 9), Fill::rows_repeat, 6)},
             spec(d, 24, 6), tol_exact(), row, "repeated rows");
    add_case(out, OpId::set_rows, {strided(spec(DType::F32, 48, 6), 8), filled(spec(DType::I32, 6), Fill::rows_sorted, 20)},
             strided(spec(d, 48, 20), 16), tol_exact(), row, "strided");
  }
}

inline void cases_fill(std::vector<Case>& out) {
  for (int64_t n : awkward_sizes()) add_case(out, OpId::fill, {}, spec(DType::F32, n, 3), tol_exact()).with(FillParams{-2.5f});
  add_case(out, OpId::fill, {}, strided(spec(DType::F32, 33, 4, 2), 12), tol_exact(), "", "strided")
      .with(FillParams{-INFINITY});
}

inline void cases_softcap(std::vector<Case>& out) {
  for (int64_t n : awkward_sizes())
    add_case(out, OpId::softcap, {ranged(spec(DType::F32, n, 3), -200.0f, 200.0f)}, spec(DType::F32, n, 3),
             tol_close(1e-5, 1e-6))
        .with(SoftcapParams{30.0f});
  Case& c = add_case(out, OpId::softcap, {strided(ranged(spec(DType::F32, 40, 5), -80.0f, 80.0f), 24)},
                     strided(spec(DType::F32, 40, 5), 24), tol_close(1e-5, 1e-6), "", "in place");
  c.in_place = true;
  c.with(SoftcapParams{15.0f});
}

inline void cases_transpose(std::vector<Case>& out) {
  for (int64_t k : {1, 7, 16, 17, 33})
    for (int64_t m : {1, 5, 16, 31})
      add_case(out, OpId::transpose, {spec(DType::F32, k, m)}, spec(DType::F32, m, k), tol_exact());
  add_case(out, OpId::transpose, {strided(spec(DType::F32, 20, 9), 12)}, strided(spec(DType::F32, 9, 20), 4), tol_exact(), "",
           "strided");
}

// ---- argmax -------------------------------------------------------------------
inline void cases_argmax(std::vector<Case>& out) {
  for (int64_t n : awkward_sizes()) {
    add_case(out, OpId::argmax, {spec(DType::F32, n, 3)}, spec(DType::I32, 3), tol_exact());
    add_case(out, OpId::argmax, {filled(spec(DType::F32, n, 4), Fill::argmax_hard)}, spec(DType::I32, 4), tol_exact(), "",
             "ties and NaN");
  }
  add_case(out, OpId::argmax, {strided(spec(DType::F32, 32000, 2), 8)}, spec(DType::I32, 2), tol_exact(), "", "vocab");
  // strict: -1 for the rows holding a NaN (most rows of argmax_hard), the argmax elsewhere.
  for (int64_t n : {1, 7, 33, 1000, 32001}) {
    add_case(out, OpId::argmax, {filled(spec(DType::F32, n, 4), Fill::argmax_hard)}, spec(DType::I32, 4), tol_exact(),
             "strict", "ties and NaN")
        .with(ArgmaxParams{true});
    add_case(out, OpId::argmax, {spec(DType::F32, n, 3)}, spec(DType::I32, 3), tol_exact(), "strict").with(ArgmaxParams{true});
  }
}

// ---- sample --------------------------------------------------------------------
// Ids, exact: a uniform within rounding of a boundary (tree vs ordered sums)
// could pick a neighbour, which random uniforms miss by orders of magnitude.
inline void cases_sample(std::vector<Case>& out) {
  const SampleParams ps[] = {{1.0f, 40, 1.0f, 0.0f}, {0.8f, 40, 0.95f, 0.05f}, {1.5f, 1024, 0.9f, 0.0f},
                             {0.5f, 1, 1.0f, 0.0f}, {1.0f, 7, 1.0f, 0.3f}};
  const char* names[] = {"top-k", "top-k top-p min-p", "top-k 1024 top-p", "top-k 1", "top-k min-p"};
  for (int64_t V : {1, 7, 33, 1000, 32001})
    for (int i = 0; i < 5; ++i)
      add_case(out, OpId::sample, {ranged(spec(DType::F32, V, 3), -6.0f, 6.0f), ranged(spec(DType::F32, 3), 0.0f, 0.999f)},
               spec(DType::I32, 3), tol_exact(), names[i])
          .with(ps[i]);
  add_case(out, OpId::sample,
           {strided(filled(spec(DType::F32, 2000, 4), Fill::argmax_hard), 8), ranged(spec(DType::F32, 4), 0.0f, 0.999f)},
           spec(DType::I32, 4), tol_exact(), "top-k", "ties, NaN rows, strided")
      .with(ps[0]);
}

// ---- copy ---------------------------------------------------------------------
inline void cases_copy(std::vector<Case>& out) {
  const DType types[] = {DType::F32, DType::F16, DType::BF16};
  for (DType a : types)
    for (DType d : types) {
      const std::string row = std::string(dtype_name(a)) + "->" + dtype_name(d);
      for (int64_t n : {1, 7, 8, 9, 16, 17, 64, 257})
        add_case(out, OpId::copy, {ranged(spec(a, n, 3), -100.0f, 100.0f)}, spec(d, n, 3), tol_exact(), row);
      TSpec sw = spec(d, 24, 3, 5);
      sw.swap12 = true;
      add_case(out, OpId::copy, {strided(ranged(spec(a, 24, 3, 5), -3.0f, 3.0f), 8)}, sw, tol_exact(), row, "gather view");
      add_case(out, OpId::copy, {ranged(spec(a, 33, 2, 2, 2), -1.0f, 1.0f)}, strided(spec(d, 33, 2, 2, 2), 6), tol_exact(), row,
               "into strided");
    }
}

// ---- get_rows, matmul (every weight type) ---------------------------------------
inline bool is_float_weight(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

inline void cases_get_rows(std::vector<Case>& out) {
  for (DType w : kWeightTypes) {
    const int64_t bs = dtype_block_size(w);
    const std::vector<int64_t> ks = bs == 1 ? std::vector<int64_t>{1, 7, 8, 17, 64, 257}
                                            : std::vector<int64_t>{bs, 2 * bs, 3 * bs};
    for (int64_t k : ks)
      for (int64_t m : {1, 5}) {
        const int64_t n = 7;
        add_case(out, OpId::get_rows, {spec(w, k, n), filled(spec(DType::I32, m), Fill::ids, n)}, spec(DType::F32, k, m),
                 tol_close(1e-6, 1e-6), dtype_name(w));
      }
    add_case(out, OpId::get_rows, {strided(spec(w, 2 * bs * (bs == 1 ? 16 : 1), 9), dtype_type_size(w) * 2),
                                   filled(spec(DType::I32, 4), Fill::ids, 9)},
             strided(spec(DType::F32, 2 * bs * (bs == 1 ? 16 : 1), 4), 16), tol_close(1e-6, 1e-6), dtype_name(w), "strided");
  }
}

inline void cases_matmul(std::vector<Case>& out) {
  for (DType w : kWeightTypes) {
    const int64_t bs = dtype_block_size(w);
    // Error bound per output relative to |w_n| |x_m| (see Tol::dot). Float
    // weights: float products and sums, ~1e-7. Quantized weights: the cpu
    // kernels quantize activations to 8 bits (error up to 1/254 of a block's
    // max per element), measured up to ~3e-3 of |w||x|; a wrong block or scale
    // is >= 1/(blocks per row) ~ 0.1. F16 weights: the cuda GEMM (8+ rows)
    // rounds x to F16, 2^-11 relative per element: |err| <= 2^-11 |w||x|.
    const Tol tol = w == DType::F16 ? tol_dot(6e-4)
                    : is_float_weight(w) ? tol_dot(w == DType::F32 ? 1e-6 : 1e-5)
                                         : tol_dot(2e-2);
    const std::vector<int64_t> ks = bs == 1 ? std::vector<int64_t>{1, 7, 8, 9, 16, 17, 64, 257}
                                            : bs == 32 ? std::vector<int64_t>{32, 64, 96, 256, 288}
                                                       : std::vector<int64_t>{256, 512, 768};
    const int64_t ns[] = {1, 3, 4, 5, 8, 16, 17, 33};
    const int64_t ms[] = {1, 2, 3, 4, 5, 8, 9, 17};
    size_t i = 0;
    for (int64_t k : ks)
      for (int64_t n : ns) {
        const int64_t m = ms[i++ % 8];
        add_case(out, OpId::matmul, {spec(w, k, n), spec(DType::F32, k, m)}, spec(DType::F32, n, m), tol, dtype_name(w));
      }
    const int64_t k = ks.back();
    add_case(out, OpId::matmul, {spec(w, k, 64), spec(DType::F32, k, 1)}, spec(DType::F32, 64, 1), tol, dtype_name(w), "matvec");
    add_case(out, OpId::matmul, {strided(spec(w, k, 12), dtype_type_size(w)), strided(spec(DType::F32, k, 6, 2), 16)},
             strided(spec(DType::F32, 12, 6, 2), 8), tol, dtype_name(w), "strided, batched");
    add_case(out, OpId::matmul, {spec(w, k, 40), spec(DType::F32, k, 32)}, spec(DType::F32, 40, 32), tol, dtype_name(w), "tile");
  }
}

// ---- ks_matmul ------------------------------------------------------------------
// Patterns (a, b, c, d) around the SIMD widths (b = 1, 7, 8, 9, 17, 33 outputs per block),
// the 6-output micro-kernel and 48-output chunks, d = 1 (contiguous) and d > 1 (strided),
// token counts 1..17 in both layouts, F32/F16/BF16 weights, strided x and y rows.
// BF16: the cuda backend rounds x to BF16 on tensor cores (unit roundoff u = 2^-8 per
// input); for independent zero-mean w and x, E[err^2] <= u^2 / 3 * sum_l (w_l x_l)^2 =
// u^2 / 3 * E[y^2], so NMSE <= 2^-16 / 3 in expectation: bound 2^-16 (1.5e-5).
inline void cases_ks_matmul(std::vector<Case>& out) {
  struct Pat { int32_t a, b, c, d; };
  const Pat pats[] = {{1, 1, 1, 1}, {1, 8, 8, 1},  {2, 7, 5, 3},  {1, 9, 4, 2},   {3, 17, 16, 1}, {2, 33, 9, 4},
                      {1, 48, 12, 1}, {4, 16, 64, 2}, {2, 64, 16, 3}, {1, 50, 20, 5}, {5, 3, 3, 7}};
  const int64_t ms[] = {1, 2, 3, 4, 5, 9, 16, 17};
  size_t n = 0;
  for (DType w : {DType::F32, DType::F16, DType::BF16}) {
    const Tol tol = tol_nmse(w == DType::F32 ? 1e-12 : w == DType::F16 ? 1e-10 : 1.5e-5);
    for (const Pat& p : pats)
      for (KsLayout lay : {KsLayout::token_major, KsLayout::batch_last}) {
        const int64_t M = ms[n++ % 8];
        const int64_t n_in = int64_t(p.a) * p.c * p.d, n_out = int64_t(p.a) * p.b * p.d;
        const bool tm = lay == KsLayout::token_major;
        const std::string row = std::string(dtype_name(w)) + (tm ? " token_major" : " batch_last");
        char extra[64];
        std::snprintf(extra, sizeof extra, "(%d,%d,%d,%d)", p.a, p.b, p.c, p.d);
        add_case(out, OpId::ks_matmul, {spec(w, p.b, p.c, p.d, p.a), tm ? spec(DType::F32, n_in, M) : spec(DType::F32, M, n_in)},
                 tm ? spec(DType::F32, n_out, M) : spec(DType::F32, M, n_out), tol, row, extra)
            .with(KsMatmulParams{p.a, p.b, p.c, p.d, lay});
      }
    const Pat p{2, 16, 8, 3};
    add_case(out, OpId::ks_matmul, {spec(w, 16, 8, 3, 2), strided(spec(DType::F32, 48, 5), 12)},
             strided(spec(DType::F32, 96, 5), 20), tol, std::string(dtype_name(w)) + " token_major", "strided rows")
        .with(KsMatmulParams{p.a, p.b, p.c, p.d, KsLayout::token_major});
    add_case(out, OpId::ks_matmul, {spec(w, 16, 8, 3, 2), strided(spec(DType::F32, 37, 48), 8)},
             strided(spec(DType::F32, 37, 96), 4), tol, std::string(dtype_name(w)) + " batch_last", "strided rows")
        .with(KsMatmulParams{p.a, p.b, p.c, p.d, KsLayout::batch_last});
  }
}

// ---- spec_verify -----------------------------------------------------------------
// Vocabularies around the SIMD widths, the 256-logit sampling blocks and the
// 2048-logit online blocks; g = 1..8 drafts; greedy, plain temperature, top-k,
// top-p and the sigmoid ablation; strided logit rows. Logits in [-4, 4] so that
// acceptances and rejections both occur. Outputs are token ids: exact.
inline void cases_spec_verify(std::vector<Case>& out) {
  const int64_t vs[] = {1, 7, 8, 9, 33, 255, 257, 1000, 2049, 32001};
  size_t n = 0;
  for (int64_t V : vs)
    for (int mode = 0; mode < 5; ++mode) {
      const int64_t g = 1 + (int64_t)(n++ % 8);
      SpecVerifyParams p;
      p.seed = 77u + n;
      const char* name = "stochastic";
      if (mode == 0) { p.greedy = true; name = "greedy"; }
      if (mode == 2) { p.temperature = 0.7f; p.top_k = 5; name = "top-k"; }
      if (mode == 3) { p.temperature = 1.3f; p.top_p = 0.8f; name = "top-p"; }
      if (mode == 4) { p.sigmoid = true; name = "sigmoid"; }
      std::vector<TSpec> src = {ranged(spec(DType::F32, V, g + 1), -4.0f, 4.0f), filled(spec(DType::I32, g), Fill::ids, V)};
      if (mode != 0) src.push_back(ranged(spec(DType::F32, V, g), -4.0f, 4.0f));
      add_case(out, OpId::spec_verify, src, spec(DType::I32, 2), tol_exact(), name).with(p);
    }
  SpecVerifyParams p;
  p.seed = 5;
  add_case(out, OpId::spec_verify,
           {strided(ranged(spec(DType::F32, 300, 5), -4.0f, 4.0f), 12), filled(spec(DType::I32, 4), Fill::ids, 300),
            strided(ranged(spec(DType::F32, 300, 4), -4.0f, 4.0f), 4)},
           spec(DType::I32, 2), tol_exact(), "stochastic", "strided rows")
      .with(p);
}

}  // namespace kestrel::test
