// Draft tokens from a row of logits (see spec_draw.h).
#include "runtime/spec/spec_draw.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/op_table.h"

namespace kestrel {

int32_t spec_argmax(const float* row, int64_t n) {
  int32_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (row[i] > row[best]) best = static_cast<int32_t>(i);
  return best;
}

int32_t spec_draw(const float* row, int64_t n, int64_t n_scored, float temperature, int32_t top_k, float top_p,
                  double u, float* work) {
  const float thr = spec_keep_threshold(row, n, temperature, top_k, top_p, work);
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n_scored; ++i)
    if (row[i] >= thr) m = std::max(m, static_cast<double>(row[i]));
  double z = 0.0;
  for (int64_t i = 0; i < n_scored; ++i)
    if (row[i] >= thr) z += std::exp((static_cast<double>(row[i]) - m) / temperature);
  const double target = u * z;
  double cum = 0.0;
  int32_t last = spec_argmax(row, n_scored);
  for (int64_t i = 0; i < n_scored; ++i) {
    if (row[i] < thr) continue;
    cum += std::exp((static_cast<double>(row[i]) - m) / temperature);
    last = static_cast<int32_t>(i);
    if (cum > target) break;
  }
  return last;
}

float spec_draft_prob(const float* row, int64_t n_scored, int32_t id, float temperature) {
  const float inv_t = temperature > 0.0f ? 1.0f / temperature : 1.0f;
  const float ref = row[id];
  const float cut = ref - 20.0f / inv_t;
  double z = 0.0;
  for (int64_t i = 0; i < n_scored; ++i)
    if (row[i] > cut) z += std::exp(static_cast<double>((row[i] - ref) * inv_t));
  return z > 0.0 ? static_cast<float>(1.0 / z) : 0.0f;
}

}  // namespace kestrel
