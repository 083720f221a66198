#include "runtime/ks/ks_rewrite.h"

#include <algorithm>
#include <map>

#include "ops/half.h"
#include "runtime/ks/ks_chain.h"
#include "runtime/ks/ks_model.h"

namespace kestrel {

namespace {

std::vector<uint8_t> encode(const std::vector<float>& v, DType type) {
  std::vector<uint8_t> out(v.size() * (type == DType::F32 ? 4 : 2));
  if (type == DType::F32) {
    std::copy_n(reinterpret_cast<const uint8_t*>(v.data()), out.size(), out.data());
  } else {
    uint16_t* h = reinterpret_cast<uint16_t*>(out.data());
    for (size_t i = 0; i < v.size(); ++i) h[i] = type == DType::F16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
  }
  return out;
}

}  // namespace

void ks_factor_apply(const KsMatmulParams& p, const float* w, const float* x, float* y) {
  for (int64_t i = 0; i < p.a; ++i)
    for (int64_t j = 0; j < p.d; ++j) {
      const float* wb = w + (size_t)((i * p.d + j) * p.c) * p.b;
      float* yb = y + (i * p.b) * p.d + j;
      const float* xb = x + (i * p.c) * p.d + j;
      for (int64_t k = 0; k < p.b; ++k) yb[k * p.d] = 0.0f;
      for (int64_t l = 0; l < p.c; ++l) {
        const float xv = xb[l * p.d];
        for (int64_t k = 0; k < p.b; ++k) yb[k * p.d] += wb[l * p.b + k] * xv;
      }
    }
}

std::vector<float> ks_chain_dense(const std::vector<KsMatmulParams>& pats, const std::vector<std::vector<float>>& f) {
  const int64_t n_in = ks_in_features(pats.front()), n_out = ks_out_features(pats.back());
  std::vector<float> dense((size_t)(n_in * n_out));
  int64_t widest = n_in;
  for (const auto& p : pats) widest = std::max(widest, ks_out_features(p));
  std::vector<float> a((size_t)widest), b((size_t)widest);
  // Column c of the product is the chain applied to the unit vector e_c.
  for (int64_t c = 0; c < n_in; ++c) {
    std::fill(a.begin(), a.end(), 0.0f);
    a[(size_t)c] = 1.0f;
    for (size_t t = 0; t < pats.size(); ++t) {
      ks_factor_apply(pats[t], f[t].data(), a.data(), b.data());
      std::swap(a, b);
    }
    for (int64_t r = 0; r < n_out; ++r) dense[(size_t)(r * n_in + c)] = a[(size_t)r];
  }
  return dense;
}

Status ks_rewrite_gguf(const gguf::File& in, const std::vector<KsProjFactors>& repl, DType type, KsWrite mode,
                       gguf::Writer& w) {
  if (type != DType::F32 && type != DType::F16 && type != DType::BF16)
    return Status::invalid_argument("ks rewrite: factors are written as F32, F16 or BF16");
  std::map<std::string, const KsProjFactors*> by_dense;
  for (const KsProjFactors& r : repl) {
    const std::string dense = "blk." + std::to_string(r.layer) + "." + r.proj + ".weight";
    const gguf::TensorInfo* t = in.find_tensor(dense);
    if (!t || t->n_dims != 2) return Status::invalid_argument("ks rewrite: no 2-D tensor '%s'", dense.c_str());
    if (r.patterns.empty() || r.patterns.size() != r.factors.size())
      return Status::invalid_argument("ks rewrite: '%s' needs one factor per pattern", dense.c_str());
    KESTREL_TRY(ks_check_chain(r.patterns.data(), (int)r.patterns.size(), t->ne[0], t->ne[1], dense));
    for (size_t k = 0; k < r.patterns.size(); ++k) {
      const KsMatmulParams& p = r.patterns[k];
      if (r.factors[k].size() != (size_t)p.a * p.b * p.c * p.d)
        return Status::invalid_argument("ks rewrite: '%s' factor %zu has %zu values", dense.c_str(), k,
                                        r.factors[k].size());
    }
    by_dense[dense] = &r;
  }
  for (size_t i = 0; i < in.n_keys(); ++i) {
    const gguf::KeyInfo ki = in.key_info(i);
    w.set_raw(ki.key, static_cast<uint32_t>(ki.type), in.raw_value(i));
  }
  for (const gguf::TensorInfo& t : in.tensors()) {
    auto it = by_dense.find(t.name);
    if (it == by_dense.end()) {
      KESTREL_TRY(w.add_tensor(t.name, t.type, std::span<const int64_t>(t.ne, (size_t)t.n_dims), t.data, t.nbytes));
      continue;
    }
    const KsProjFactors& r = *it->second;
    if (mode == KsWrite::dense) {
      const std::vector<uint8_t> bytes = encode(ks_chain_dense(r.patterns, r.factors), type);
      KESTREL_TRY(w.add_tensor_copy(t.name, type, std::span<const int64_t>(t.ne, 2), bytes.data(), bytes.size()));
      continue;
    }
    std::vector<int32_t> pv;
    for (size_t k = 0; k < r.patterns.size(); ++k) {
      const KsMatmulParams& p = r.patterns[k];
      pv.insert(pv.end(), {p.a, p.b, p.c, p.d});
      const int64_t ne[4] = {p.b, p.c, p.d, p.a};
      const std::vector<uint8_t> bytes = encode(r.factors[k], type);
      KESTREL_TRY(w.add_tensor_copy(ks_factor_name(r.layer, r.proj, (int)k), type, std::span<const int64_t>(ne, 4),
                                    bytes.data(), bytes.size()));
    }
    w.set_i32_array(ks_patterns_key(r.layer, r.proj), pv);
  }
  return {};
}

}  // namespace kestrel
