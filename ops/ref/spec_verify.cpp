// Reference kernel: spec_verify (the speculative-decoding verify step, see
// ops/op_table.h for the rules), plus the top-k / top-p threshold that every
// host kernel shares. Readable and single-threaded: each row's max and sum in
// double, probabilities at the drafted ids, then the residual or bonus row is
// walked in double for the sample.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "ops/ref/ref_kernels.h"

namespace kestrel {

float spec_keep_threshold(const float* l, int64_t n, float temperature, int32_t top_k, float top_p, float* work) {
  const float ninf = -std::numeric_limits<float>::infinity();
  const bool use_k = top_k > 0 && top_k < n;
  const bool use_p = top_p < 1.0f;
  if (!use_k && !use_p) return ninf;
  // NaN would break the orderings below; it becomes -inf here and is reported
  // as bad data by the caller's finiteness check.
  for (int64_t i = 0; i < n; ++i) work[i] = std::isnan(l[i]) ? ninf : l[i];
  const int64_t k = use_k ? top_k : n;
  if (k < n) std::nth_element(work, work + (k - 1), work + n, std::greater<float>());
  if (!use_p) return work[k - 1];
  std::sort(work, work + k, std::greater<float>());
  const double inv_t = 1.0 / temperature;
  double z = 0.0;
  for (int64_t i = 0; i < k; ++i) z += std::exp(((double)work[i] - work[0]) * inv_t);
  double cum = 0.0;
  for (int64_t i = 0; i < k; ++i) {
    cum += std::exp(((double)work[i] - work[0]) * inv_t);
    if (cum >= (double)top_p * z) return work[i];
  }
  return work[k - 1];
}

namespace ref {

namespace {

// One row's distribution: softmax(l / T) over {l >= thr}, or the logistic.
struct RowDist {
  const float* l = nullptr;
  double m = 0.0, z = 1.0;
  float thr = 0.0f;
  bool ok = true;
};

bool row_finite(const float* l, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(l[i])) return false;
  return true;
}

RowDist make_dist(const float* l, int64_t n, const SpecVerifyParams& p, std::vector<float>& work) {
  RowDist d;
  d.l = l;
  if (!row_finite(l, n)) {
    d.ok = false;
    return d;
  }
  if (p.sigmoid) return d;
  d.thr = spec_keep_threshold(l, n, p.temperature, p.top_k, p.top_p, work.data());
  d.m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i)
    if (l[i] >= d.thr) d.m = std::max(d.m, (double)l[i]);
  d.z = 0.0;
  for (int64_t i = 0; i < n; ++i)
    if (l[i] >= d.thr) d.z += std::exp(((double)l[i] - d.m) / p.temperature);
  return d;
}

// Probability (or logistic weight) of token x under row d.
double prob(const RowDist& d, int64_t x, const SpecVerifyParams& p) {
  const double l = d.l[x];
  if (p.sigmoid) return 1.0 / (1.0 + std::exp(-((double)p.sigmoid_scale * l / p.temperature + p.sigmoid_bias)));
  if (l < d.thr) return 0.0;
  return std::exp((l - d.m) / p.temperature) / d.z;
}

// First index whose running sum of w exceeds u * sum(w); -1 when sum(w) == 0.
template <typename W>
int32_t sample(int64_t n, W w, float u) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += w(i);
  if (!(total > 0.0)) return -1;
  const double target = (double)u * total;
  double cum = 0.0;
  int32_t last = -1;
  for (int64_t i = 0; i < n; ++i) {
    const double wi = w(i);
    if (wi <= 0.0) continue;
    last = static_cast<int32_t>(i);
    cum += wi;
    if (cum > target) return last;
  }
  return last;  // rounding left the target just past the sum: the last positive weight
}

int32_t argmax_row(const float* l, int64_t n) {
  int32_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (l[i] > l[best]) best = static_cast<int32_t>(i);
  return best;
}

}  // namespace

void spec_verify(const OpCall& c) {
  const SpecVerifyParams& p = c.p<SpecVerifyParams>();
  const Tensor& tl = *c.src[0];
  const Tensor& ids = *c.src[1];
  const Tensor* dl = c.opt_src(2);
  const int64_t V = tl.ne[0];
  const int64_t g = ids.ne[0];
  int32_t* out = static_cast<int32_t*>(c.dst->data);
  out[0] = out[1] = -1;
  const int32_t* x = static_cast<const int32_t*>(ids.data);
  for (int64_t j = 0; j < g; ++j)
    if (x[j] < 0 || x[j] >= V) return;

  if (p.greedy) {
    int64_t j = 0;
    for (;; ++j) {
      if (!row_finite(tl.row<const float>(j), V)) return;
      if (j == g || argmax_row(tl.row<const float>(j), V) != x[j]) break;
    }
    out[0] = static_cast<int32_t>(j);
    out[1] = argmax_row(tl.row<const float>(j), V);
    return;
  }

  // Rows are formed as the rule reaches them (a row past the decision is not read).
  std::vector<float> work(static_cast<size_t>(V));
  auto usable = [](const RowDist& d) { return d.ok && d.z > 0.0 && std::isfinite(d.z); };
  for (int64_t j = 0; j < g; ++j) {
    const RowDist P = make_dist(tl.row<const float>(j), V, p, work);
    const RowDist Q = make_dist(dl->row<const float>(j), V, p, work);
    if (!usable(P) || !usable(Q)) return;
    const double pj = prob(P, x[j], p), qj = prob(Q, x[j], p);
    const double u = spec_uniform(p.seed, static_cast<int32_t>(j), 0);
    if (u * qj <= pj) continue;  // accepted (u <= p/q without dividing by q = 0)
    // First rejection: the residual max(0, p - q), normalized by the sampler.
    const float us = spec_uniform(p.seed, static_cast<int32_t>(j), 1);
    int32_t next = sample(V, [&](int64_t i) { return std::max(0.0, prob(P, i, p) - prob(Q, i, p)); }, us);
    // p == q up to rounding leaves no residual mass: p itself is then the law.
    if (next < 0) next = sample(V, [&](int64_t i) { return prob(P, i, p); }, us);
    out[0] = static_cast<int32_t>(j);
    out[1] = next;
    return;
  }
  const RowDist P = make_dist(tl.row<const float>(g), V, p, work);
  if (!usable(P)) return;
  out[0] = static_cast<int32_t>(g);
  out[1] = sample(V, [&](int64_t i) { return prob(P, i, p); }, spec_uniform(p.seed, static_cast<int32_t>(g), 1));
}

}  // namespace ref
}  // namespace kestrel
