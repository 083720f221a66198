#include "runtime/ks/ks_model.h"

#include <algorithm>

#include "ops/dtype.h"
#include "runtime/ks/ks_chain.h"
#include "runtime/model/gguf.h"

namespace kestrel {

namespace {

// Largest a, b, c or d a file may give: keeps every product below 2^62 before the
// checked widths are compared with the model's (which are far smaller anyway).
constexpr int32_t kMaxPatternValue = 1 << 20;

// The chain's intermediates plus, for the batch_last path, the transposed input and
// output: per token in + out + 2 x widest intermediate.
size_t scratch_per_token(const KsLinear& ks) {
  if (ks.n_factors == 0) return 0;
  int64_t widest = 0;
  for (int t = 0; t + 1 < ks.n_factors; ++t) widest = std::max(widest, ks_out_features(ks.pattern[t]));
  return (size_t)(ks_in_features(ks.pattern[0]) + ks_out_features(ks.pattern[ks.n_factors - 1]) + 2 * widest);
}

}  // namespace

std::string ks_patterns_key(int il, const std::string& proj) {
  return "kestrel.ks.blk." + std::to_string(il) + "." + proj + ".patterns";
}

std::string ks_factor_name(int il, const std::string& proj, int t) {
  return "blk." + std::to_string(il) + "." + proj + ".ks." + std::to_string(t) + ".weight";
}

Status ks_check_chain(const KsMatmulParams* p, int n, int64_t n_in, int64_t n_out, const std::string& what) {
  if (n < 1 || n > kKsMaxFactors)
    return Status::bad_file("%s: %d factors (1 to %d allowed)", what.c_str(), n, kKsMaxFactors);
  for (int t = 0; t < n; ++t) {
    for (int32_t v : {p[t].a, p[t].b, p[t].c, p[t].d})
      if (v < 1 || v > kMaxPatternValue)
        return Status::bad_file("%s: factor %d has pattern value %d (1 to %d allowed)", what.c_str(), t, (int)v,
                                (int)kMaxPatternValue);
    const int64_t in = ks_in_features(p[t]), out = ks_out_features(p[t]);
    const int64_t want_in = t == 0 ? n_in : ks_out_features(p[t - 1]);
    if (in != want_in)
      return Status::bad_file("%s: factor %d (%d,%d,%d,%d) takes %lld features, %lld expected", what.c_str(), t,
                              (int)p[t].a, (int)p[t].b, (int)p[t].c, (int)p[t].d, (long long)in, (long long)want_in);
    if (t == n - 1 && out != n_out)
      return Status::bad_file("%s: the chain gives %lld features, the layer needs %lld", what.c_str(),
                              (long long)out, (long long)n_out);
  }
  return {};
}

Status ks_bind_linear(const gguf::File& f, int il, const std::string& proj, int64_t n_in, int64_t n_out,
                      KsLinear* out, uint64_t* bytes) {
  *out = KsLinear{};
  const std::string key = ks_patterns_key(il, proj);
  if (!f.has(key)) {
    if (f.find_tensor(ks_factor_name(il, proj, 0)))
      return Status::bad_file("tensor '%s' has no pattern key '%s'", ks_factor_name(il, proj, 0).c_str(),
                              key.c_str());
    return {};
  }
  // Length first: a huge array is rejected before it is read.
  KESTREL_TRY_ASSIGN(const uint64_t len, f.get_array_size(key));
  if (len == 0 || len % 4 != 0 || len > 4 * (uint64_t)kKsMaxFactors)
    return Status::bad_file("'%s' has %llu values: 4 (a, b, c, d) per factor, 1 to %d factors", key.c_str(),
                            (unsigned long long)len, kKsMaxFactors);
  KESTREL_TRY_ASSIGN(const std::vector<int32_t> v, f.get_i32_array(key));
  if (v.size() != len) return Status::bad_file("'%s': array length changed while reading", key.c_str());
  const int n = (int)(len / 4);
  KsLinear ks;
  ks.n_factors = n;
  for (int t = 0; t < n; ++t) ks.pattern[t] = KsMatmulParams{v[4 * t], v[4 * t + 1], v[4 * t + 2], v[4 * t + 3]};
  KESTREL_TRY(ks_check_chain(ks.pattern, n, n_in, n_out, "'" + key + "'"));
  const std::string dense = "blk." + std::to_string(il) + "." + proj + ".weight";
  if (f.find_tensor(dense))
    return Status::bad_file("layer has both '%s' and KS factors ('%s')", dense.c_str(), key.c_str());
  uint64_t sum = 0;
  for (int t = 0; t < n; ++t) {
    const std::string name = ks_factor_name(il, proj, t);
    const gguf::TensorInfo* ti = f.find_tensor(name);
    if (!ti) return Status::bad_file("missing tensor '%s' (factor %d of '%s')", name.c_str(), t, key.c_str());
    const KsMatmulParams& p = ks.pattern[t];
    const int64_t want[4] = {p.b, p.c, p.d, p.a};
    if (ti->ne[0] != want[0] || ti->ne[1] != want[1] || ti->ne[2] != want[2] || ti->ne[3] != want[3])
      return Status::bad_file("tensor '%s' has shape [%lld, %lld, %lld, %lld], the pattern needs {b, c, d, a} = "
                              "[%lld, %lld, %lld, %lld]",
                              name.c_str(), (long long)ti->ne[0], (long long)ti->ne[1], (long long)ti->ne[2],
                              (long long)ti->ne[3], (long long)want[0], (long long)want[1], (long long)want[2],
                              (long long)want[3]);
    if (ti->type != DType::F32 && ti->type != DType::F16 && ti->type != DType::BF16)
      return Status::unsupported("tensor '%s': KS factors must be F32, F16 or BF16", name.c_str());
    ks.w[t] = make_tensor(ti->type, const_cast<void*>(ti->data), p.b, p.c, p.d, p.a);
    sum += ti->nbytes;
  }
  if (f.find_tensor(ks_factor_name(il, proj, n)))
    return Status::bad_file("tensor '%s' is past the %d factors of '%s'", ks_factor_name(il, proj, n).c_str(), n,
                            key.c_str());
  *out = ks;
  *bytes += sum;
  return {};
}

size_t ks_scratch_floats_per_token(const KsLinear& ks) { return scratch_per_token(ks); }

Status ks_linear_apply(OpSink& ops, const KsLinear& ks, const Tensor& x, Tensor& y, float* scratch,
                       size_t scratch_floats) {
  const int n = ks.n_factors;
  if (n < 1) return Status::invalid_argument("ks linear: no factors");
  const int64_t M = x.ne[1], n_in = ks_in_features(ks.pattern[0]), n_out = ks_out_features(ks.pattern[n - 1]);
  if (x.type != DType::F32 || y.type != DType::F32 || x.ne[0] != n_in || y.ne[0] != n_out || y.ne[1] != M ||
      x.nb[0] != sizeof(float) || y.nb[0] != sizeof(float))
    return Status::invalid_argument("ks linear: x must be F32 [%lld, M] and y F32 [%lld, M]", (long long)n_in,
                                    (long long)n_out);
  if (scratch_floats < (size_t)M * scratch_per_token(ks))
    return Status::invalid_argument("ks linear: scratch of %zu floats, %zu needed", scratch_floats,
                                    (size_t)M * scratch_per_token(ks));
  const bool bl = M >= kKsBatchLastMinTokens;
  const KsLayout layout = bl ? KsLayout::batch_last : KsLayout::token_major;
  auto act = [&](float* p, int64_t features) {
    return bl ? make_tensor(DType::F32, p, M, features) : make_tensor(DType::F32, p, features, M);
  };
  // Scratch: [x^T: M*n_in][y^T: M*n_out] (batch_last only), then two intermediates.
  float* xt = scratch;
  float* yt = bl ? xt + (size_t)M * n_in : xt;
  float* mid = bl ? yt + (size_t)M * n_out : scratch;
  int64_t widest = 0;
  for (int t = 0; t + 1 < n; ++t) widest = std::max(widest, ks_out_features(ks.pattern[t]));
  Tensor in_t, out_t, buf[2];
  if (bl) {
    in_t = act(xt, n_in);
    out_t = act(yt, n_out);
    KESTREL_TRY(ops.run(OpId::transpose, &in_t, {&x}));
  }
  const Tensor* in = bl ? &in_t : &x;
  Tensor* last = bl ? &out_t : &y;
  for (int t = 0; t < n; ++t) {
    KsMatmulParams p = ks.pattern[t];
    p.layout = layout;
    Tensor* out = last;
    if (t + 1 < n) {
      buf[t % 2] = act(mid + (size_t)(t % 2) * (size_t)(widest * M), ks_out_features(p));
      out = &buf[t % 2];
    }
    KESTREL_TRY(ops.run(OpId::ks_matmul, out, {&ks.w[t], in}, &p));
    in = out;
  }
  if (bl) KESTREL_TRY(ops.run(OpId::transpose, &y, {&out_t}));
  return {};
}

}  // namespace kestrel
