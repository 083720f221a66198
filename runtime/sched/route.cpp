#include "runtime/sched/route.h"

namespace kestrel {

int route_best(const ShapeCosts& c, int64_t m) {
  int best = 0;
  double best_ns = cost_at(c, 0, m);
  for (size_t i = 1; i < c.cands.size(); ++i) {
    const double t = cost_at(c, i, m);
    if (t < best_ns) {
      best = static_cast<int>(i);
      best_ns = t;
    }
  }
  return best;
}

int route_pick(const ShapeCosts& c, int64_t m, int current, double margin, int preferred) {
  const double slack = 1.0 + (margin > 0 ? margin : 0.0);
  const int n = static_cast<int>(c.cands.size());
  int target = route_best(c, m);
  const double t_best = cost_at(c, static_cast<size_t>(target), m);
  if (preferred >= 0 && preferred < n && cost_at(c, static_cast<size_t>(preferred), m) <= t_best * slack)
    target = preferred;
  if (current < 0 || current >= n || current == target) return target;
  const double t_cur = cost_at(c, static_cast<size_t>(current), m);
  return t_cur <= cost_at(c, static_cast<size_t>(target), m) * slack ? current : target;
}

std::vector<Crossover> route_crossovers(const ShapeCosts& c) {
  std::vector<Crossover> out;
  if (c.rows.empty()) return out;
  // Between two measured counts every curve is a line, but the lowest of several lines
  // can change more than once there: every integer M is checked (a table spans at most
  // kMaxCalibRows rows).
  int prev = route_best(c, c.rows.front());
  for (int64_t m = c.rows.front() + 1; m <= c.rows.back(); ++m) {
    const int w = route_best(c, m);
    if (w != prev) out.push_back(Crossover{m, prev, w});
    prev = w;
  }
  return out;
}

}  // namespace kestrel
