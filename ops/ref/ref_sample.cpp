// sample (ops/op_table.h): the host sampler's top-k draw, one row at a time,
// sums in order.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/ref/ref_kernels.h"

namespace kestrel::ref {

void sample(const OpCall& call) {
  const Tensor& l = *call.src[0];
  const Tensor& u = *call.src[1];
  Tensor& d = *call.dst;
  const SampleParams& p = call.p<SampleParams>();
  const int64_t V = l.ne[0];
  const int64_t k = std::min<int64_t>(p.top_k, V);
  const float t = static_cast<float>(1.0 / static_cast<double>(p.temperature));
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::vector<float> prob(static_cast<size_t>(k));
  for (int64_t r = 0; r < l.ne[1]; ++r) {
    const float* x = l.row<float>(r);
    int32_t id = -1;
    bool finite = true;
    for (int64_t i = 0; i < V; ++i) finite = finite && std::isfinite(x[i]);
    if (finite) {
      for (int64_t i = 0; i < V; ++i) order[static_cast<size_t>(i)] = static_cast<int32_t>(i);
      const auto desc = [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), desc);
      const float top = x[order[0]];
      double sum = 0.0;
      for (int64_t i = 0; i < k; ++i) {
        prob[static_cast<size_t>(i)] = std::exp((x[order[static_cast<size_t>(i)]] - top) * t);
        sum += prob[static_cast<size_t>(i)];
      }
      int64_t n = k;
      if (p.top_p < 1.0f) {
        const double target = static_cast<double>(p.top_p) * sum;
        double cum = 0.0;
        for (int64_t i = 0; i < k; ++i) {
          cum += prob[static_cast<size_t>(i)];
          if (cum >= target) {
            n = i + 1;
            break;
          }
        }
      }
      if (p.min_p > 0.0f) {
        int64_t m = 1;  // p_0 = 1 >= min_p
        while (m < n && prob[static_cast<size_t>(m)] >= p.min_p) ++m;
        n = m;
      }
      double kept = 0.0;
      for (int64_t i = 0; i < n; ++i) kept += prob[static_cast<size_t>(i)];
      const double target = static_cast<double>(u.row<float>(0)[r]) * kept;
      int64_t pick = n - 1;
      double cum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        cum += prob[static_cast<size_t>(i)];
        if (target < cum) {
          pick = i;
          break;
        }
      }
      id = order[static_cast<size_t>(pick)];
    }
    std::memcpy(static_cast<char*>(d.data) + r * d.nb[0], &id, sizeof(id));
  }
}

}  // namespace kestrel::ref
