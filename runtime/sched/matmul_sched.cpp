#include "runtime/sched/matmul_sched.h"

#include "runtime/sched/calib_report.h"
#include "runtime/sched/route.h"

namespace kestrel {

MatmulScheduler::MatmulScheduler(std::vector<ShapeCosts> tables, double margin, CpuIsa isa, int n_threads,
                                 const Logger& log)
    : margin_(margin), isa_(isa), n_threads_(n_threads), log_(log) {
  ops_.reserve(tables.size());
  for (ShapeCosts& c : tables)
    if (cost_table_valid(c)) ops_.push_back(Op{std::move(c), -1, 0});
}

MatmulRoute MatmulScheduler::route(const OpCall& call) {
  const Tensor& w = *call.src[0];
  const int64_t m = call.src[1]->nrows();
  for (Op& op : ops_) {
    if (op.costs.shape.wtype != w.type || op.costs.shape.k != w.ne[0] || op.costs.shape.n != w.ne[1]) continue;
    if (m != op.last_m || op.current < 0) {
      const int pick = route_pick(op.costs, m, op.current, margin_, static_candidate(op.costs, isa_, m, n_threads_));
      if (pick != op.current) {
        if (log_.enabled(LogLevel::info)) {
          const ShapeCosts& c = op.costs;
          const std::string to = candidate_label(c.cands[static_cast<size_t>(pick)]);
          const double t_to = cost_at(c, static_cast<size_t>(pick), m) * 1e-6;
          if (op.current < 0)
            log_.info("sched: %s at M %lld: %s (%.3f ms)", shape_label(c.shape).c_str(), (long long)m, to.c_str(),
                      t_to);
          else
            log_.info("sched: %s at M %lld: %s -> %s (%.3f ms -> %.3f ms)", shape_label(c.shape).c_str(), (long long)m,
                      candidate_label(c.cands[static_cast<size_t>(op.current)]).c_str(), to.c_str(),
                      cost_at(c, static_cast<size_t>(op.current), m) * 1e-6, t_to);
        }
        if (op.current >= 0) ++n_switches_;
        op.current = pick;
      }
      op.last_m = m;
    }
    const MatmulCandidate& c = op.costs.cands[static_cast<size_t>(op.current)];
    return MatmulRoute{c.variant, c.n_threads};
  }
  return MatmulRoute{};
}

}  // namespace kestrel
