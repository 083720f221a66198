#include "runtime/sched/calib_report.h"

#include <cstdarg>
#include <cstdio>

#include "runtime/sched/route.h"

namespace kestrel {

namespace {

void appendf(std::string& s, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void appendf(std::string& s, const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n > 0) s.append(buf, static_cast<size_t>(n < static_cast<int>(sizeof buf) ? n : sizeof buf - 1));
}

}  // namespace

std::string shape_label(const MatmulShape& s) {
  std::string out;
  appendf(out, "%s %lldx%lld", dtype_name(s.wtype), (long long)s.k, (long long)s.n);
  return out;
}

int static_candidate(const ShapeCosts& c, CpuIsa isa, int64_t m, int n_threads) {
  const MatmulVariant* v = cpu_matmul_policy_variant(isa, c.shape.wtype, m);
  for (size_t i = 0; i < c.cands.size(); ++i)
    if (c.cands[i].n_threads == n_threads && (c.cands[i].variant == v || !c.cands[i].variant))
      return static_cast<int>(i);
  return -1;
}

std::string calib_table_text(const std::vector<ShapeCosts>& tables, CpuIsa isa, int n_threads) {
  std::string s;
  for (const ShapeCosts& c : tables) {
    appendf(s, "%s (K x N): ms per call by rows M; best; fixed thresholds (%d thread%s) / best\n",
            shape_label(c.shape).c_str(), n_threads, n_threads == 1 ? "" : "s");
    appendf(s, "%6s", "M");
    for (const MatmulCandidate& k : c.cands) appendf(s, " %12s", candidate_label(k).c_str());
    appendf(s, "  %-12s %7s\n", "best", "static");
    for (size_t r = 0; r < c.rows.size(); ++r) {
      const int64_t m = c.rows[r];
      appendf(s, "%6lld", (long long)m);
      for (size_t i = 0; i < c.cands.size(); ++i) appendf(s, " %12.4f", c.at(i, r) * 1e-6);
      const int b = route_best(c, m), st = static_candidate(c, isa, m, n_threads);
      appendf(s, "  %-12s", candidate_label(c.cands[static_cast<size_t>(b)]).c_str());
      if (st >= 0) appendf(s, " %6.2fx", c.at(static_cast<size_t>(st), r) / c.at(static_cast<size_t>(b), r));
      s += "\n";
    }
    const std::vector<Crossover> x = route_crossovers(c);
    s += "  crossovers:";
    if (x.empty())
      appendf(s, " none (%s wins throughout)", candidate_label(c.cands[static_cast<size_t>(route_best(c, 1))]).c_str());
    for (const Crossover& k : x)
      appendf(s, " M %lld: %s -> %s;", (long long)k.m, candidate_label(c.cands[static_cast<size_t>(k.from)]).c_str(),
              candidate_label(c.cands[static_cast<size_t>(k.to)]).c_str());
    s += "\n\n";
  }
  return s;
}

std::string calib_curves_text(const std::vector<ShapeCosts>& tables) {
  std::string s;
  for (size_t t = 0; t < tables.size(); ++t) {
    const ShapeCosts& c = tables[t];
    if (t > 0) s += "\n\n";
    appendf(s, "# %s\nM", shape_label(c.shape).c_str());
    for (const MatmulCandidate& k : c.cands) appendf(s, " %s", candidate_label(k).c_str());
    s += "\n";
    for (size_t r = 0; r < c.rows.size(); ++r) {
      appendf(s, "%lld", (long long)c.rows[r]);
      for (size_t i = 0; i < c.cands.size(); ++i) appendf(s, " %.6g", c.at(i, r) * 1e-6);
      s += "\n";
    }
  }
  return s;
}

}  // namespace kestrel
