// Routing one matmul shape by its cost curves (cost_table.h): the candidate that wins at
// the current number of activation rows M, with hysteresis, and where the winner changes.
// Pure functions of the table: no timing, no state beyond what the caller passes in.
//
//   int cur = -1;                                   // nothing ran yet
//   for (int64_t m : steps) {
//     cur = route_pick(costs, m, cur, 0.05);        // switches only for a 5% better one
//     run(costs.cands[cur]);
//   }
//
// Hysteresis: near a crossover two candidates cost about the same, so an M hovering there
// would flip between them at every step if the cheapest always won. route_pick keeps the
// candidate that ran last unless another is cheaper at this M by more than `margin` of
// its time; a step far from the crossover still switches at once. The same margin keeps
// the default policy's choice wherever no candidate beats it by more (calibration noise
// never moves a call off the default).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/sched/cost_table.h"

namespace kestrel {

// The cheapest candidate at m; ties go to the lowest index.
int route_best(const ShapeCosts& c, int64_t m);

// The candidate to run at m after `current` ran (-1, or out of range: none yet). The
// target is the cheapest candidate, or `preferred` (-1: none; the fixed thresholds' choice
// at m) when it costs at most (1 + margin) times the cheapest: a measured difference
// smaller than the margin is not worth leaving the default for. current stays when it
// costs at most (1 + margin) times the target (margin >= 0; 0 switches at every change).
int route_pick(const ShapeCosts& c, int64_t m, int current, double margin, int preferred = -1);

// A change of winner along M: from m on (up to the next crossover) `to` is the cheapest
// instead of `from`. Found at every integer M between the first and last measured count.
struct Crossover {
  int64_t m = 0;
  int from = 0, to = 0;
};
std::vector<Crossover> route_crossovers(const ShapeCosts& c);

}  // namespace kestrel
