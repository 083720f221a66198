#include "runtime/sched/cost_table.h"

#include <cmath>
#include <cstring>

namespace kestrel {

std::string candidate_label(const MatmulCandidate& c) {
  std::string s = "policy";
  if (c.variant) {
    // "<wtype>_matmul__<isa>_<kind><MR>x<NR>": the part after the ISA.
    const char* p = std::strrchr(c.variant->name, '_');
    s = p ? p + 1 : c.variant->name;
  }
  return s + "/t" + std::to_string(c.n_threads);
}

double cost_at(const ShapeCosts& c, size_t cand, int64_t m) {
  const size_t n = c.rows.size();
  if (n == 1 || m <= c.rows[0]) return c.at(cand, 0);
  for (size_t r = 1; r < n; ++r) {
    if (m > c.rows[r]) continue;
    const double x0 = static_cast<double>(c.rows[r - 1]), x1 = static_cast<double>(c.rows[r]);
    const double y0 = c.at(cand, r - 1), y1 = c.at(cand, r);
    return y0 + (y1 - y0) * (static_cast<double>(m) - x0) / (x1 - x0);
  }
  const double x0 = static_cast<double>(c.rows[n - 2]), x1 = static_cast<double>(c.rows[n - 1]);
  const double y0 = c.at(cand, n - 2), y1 = c.at(cand, n - 1);
  const double slope = (y1 - y0) / (x1 - x0);
  return y1 + (slope > 0 ? slope : 0.0) * (static_cast<double>(m) - x1);
}

bool cost_table_valid(const ShapeCosts& c) {
  if (c.cands.empty() || c.rows.empty()) return false;
  if (c.ns.size() != c.cands.size() * c.rows.size()) return false;
  for (size_t r = 0; r < c.rows.size(); ++r)
    if (c.rows[r] < 1 || (r > 0 && c.rows[r] <= c.rows[r - 1])) return false;
  for (double t : c.ns)
    if (!std::isfinite(t) || t <= 0) return false;
  for (const MatmulCandidate& k : c.cands)
    if (k.n_threads < 1) return false;
  return true;
}

}  // namespace kestrel
