// A calibration as text: the table `kestrel calibrate` prints (each shape's curves, the
// winner per row count against the fixed thresholds, the crossovers) and the curves as
// columns for gnuplot.
//
//   std::fputs(calib_table_text(tables, isa, n_threads).c_str(), stdout);
#pragma once

#include <string>
#include <vector>

#include "ops/backend.h"
#include "runtime/sched/cost_table.h"

namespace kestrel {

// Per shape: a header, one line per measured M with every candidate's time (ms), the
// cheapest one and the fixed thresholds' time over it (the policy's variant on
// n_threads threads), then the crossovers.
std::string calib_table_text(const std::vector<ShapeCosts>& tables, CpuIsa isa, int n_threads);

// Per shape a gnuplot data block: "# <shape>" and a header line of candidate labels,
// then "M t_1 ... t_C" in ms; blocks separated by two blank lines (gnuplot's `index`).
std::string calib_curves_text(const std::vector<ShapeCosts>& tables);

// "q4_K 1536x8960".
std::string shape_label(const MatmulShape& s);

// The candidate the fixed thresholds run at m rows on n_threads: the policy's variant
// there on n_threads, or the policy candidate on n_threads; -1 when the table has neither.
int static_candidate(const ShapeCosts& c, CpuIsa isa, int64_t m, int n_threads);

}  // namespace kestrel
