#include "runtime/ks/ks_chain.h"

#include "platform/checked_math.h"

namespace kestrel {

namespace {

int64_t features(const KsMatmulParams& p, int32_t bc) {
  uint64_t ad = 0, r = 0;
  if (p.a < 1 || p.d < 1 || bc < 1) return 0;
  if (!checked_mul((uint64_t)p.a, (uint64_t)p.d, ad) || !checked_mul(ad, (uint64_t)bc, r)) return 0;
  return (int64_t)r;
}

}  // namespace

int64_t ks_in_features(const KsMatmulParams& p) { return features(p, p.c); }
int64_t ks_out_features(const KsMatmulParams& p) { return features(p, p.b); }

Expected<size_t> ks_chain_scratch_floats(const KsFactor* f, int n, int64_t M) {
  if (!f || n < 1) return Status::invalid_argument("ks chain: no factors");
  if (M < 0) return Status::invalid_argument("ks chain: negative token count");
  uint64_t widest = 0;
  for (int t = 0; t < n; ++t) {
    const int64_t in = ks_in_features(f[t].pattern), out = ks_out_features(f[t].pattern);
    if (in == 0 || out == 0) return Status::invalid_argument("ks chain: factor %d has a bad pattern", t);
    if (!f[t].weights) return Status::invalid_argument("ks chain: factor %d has no weights", t);
    if (t > 0 && in != ks_out_features(f[t - 1].pattern))
      return Status::invalid_argument("ks chain: factor %d takes %lld inputs, factor %d gives %lld", t,
                                      (long long)in, t - 1, (long long)ks_out_features(f[t - 1].pattern));
    if (t + 1 < n && (uint64_t)out > widest) widest = (uint64_t)out;
  }
  uint64_t per = 0, total = 0;
  if (!checked_mul(widest, (uint64_t)M, per) || !checked_mul(per, n > 2 ? 2 : 1, total) ||
      total > SIZE_MAX / sizeof(float))
    return Status::invalid_argument("ks chain: scratch size overflows");
  return (size_t)total;
}

Status ks_chain_apply(Backend& backend, const KsFactor* f, int n, KsLayout layout, const Tensor& x, Tensor& y,
                      float* scratch, size_t scratch_floats) {
  const bool tm = layout == KsLayout::token_major;
  const int64_t M = tm ? x.ne[1] : x.ne[0];
  KESTREL_TRY_ASSIGN(const size_t need, ks_chain_scratch_floats(f, n, M));
  if (scratch_floats < need || (need > 0 && !scratch))
    return Status::invalid_argument("ks chain: scratch of %zu floats, %zu needed", scratch_floats, need);
  const size_t half = n > 2 ? need / 2 : need;
  const Tensor* in = &x;
  Tensor buf[2];
  for (int t = 0; t < n; ++t) {
    KsMatmulParams p = f[t].pattern;
    p.layout = layout;
    Tensor* out = &y;
    if (t + 1 < n) {
      const int64_t w = ks_out_features(p);
      buf[t % 2] = tm ? make_tensor(DType::F32, scratch + (t % 2) * half, w, M)
                      : make_tensor(DType::F32, scratch + (t % 2) * half, M, w);
      out = &buf[t % 2];
    }
    const OpCall call{OpId::ks_matmul, out, {f[t].weights, in}, 2, &p};
    KESTREL_TRY(backend.run(call));
    in = out;
  }
  return {};
}

}  // namespace kestrel
