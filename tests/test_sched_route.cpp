// Routing of the dynamic matmul scheduler from synthetic cost tables (no timing): the
// cheapest candidate at every M, on and between the measured row counts and past them;
// ties; hysteresis around a crossover; the crossovers found; the scheduler's per-shape
// choice for matmul calls of known and unknown shapes, and the fixed thresholds' choice on
// their thread count where nothing beats it.
#include <catch2/catch.hpp>

#include <vector>

#include "ops/cpu/matmul_variants.h"
#include "platform/log.h"
#include "runtime/sched/calibrate.h"
#include "runtime/sched/cost_table.h"
#include "runtime/sched/matmul_sched.h"
#include "runtime/sched/route.h"

using namespace kestrel;

namespace {

// Two candidates: a (flat-ish, wins at small M) and b (cheaper per row, wins at large M).
// a: 10 + 2 M, b: 30 + 0.5 M at M = 1, 2, 4, ..., 64: equal at M = 13.33.
ShapeCosts two_lines() {
  ShapeCosts c;
  c.shape = {DType::Q4_K, 256, 512};
  c.cands = {MatmulCandidate{nullptr, 1}, MatmulCandidate{nullptr, 2}};
  c.rows = {1, 2, 4, 8, 16, 32, 64};
  for (double k : {2.0, 0.5})
    for (int64_t m : c.rows) c.ns.push_back(k == 2.0 ? 10 + 2.0 * m : 30 + 0.5 * m);
  REQUIRE(cost_table_valid(c));
  return c;
}

}  // namespace

TEST_CASE("cost_at reads the curve on, between and past the measured counts", "[sched][route]") {
  const ShapeCosts c = two_lines();
  CHECK(cost_at(c, 0, 1) == 12.0);
  CHECK(cost_at(c, 0, 3) == Approx(16.0));   // on the line between 2 and 4
  CHECK(cost_at(c, 1, 48) == Approx(54.0));
  CHECK(cost_at(c, 0, 128) == Approx(266.0));  // past 64: the last segment's slope
  CHECK(cost_at(c, 0, 0) == 12.0);             // below the first: its time
}

TEST_CASE("route_best picks the cheapest candidate at each M, ties to the lowest index", "[sched][route]") {
  const ShapeCosts c = two_lines();
  for (int64_t m = 1; m <= 13; ++m) CHECK(route_best(c, m) == 0);
  for (int64_t m = 14; m <= 200; ++m) CHECK(route_best(c, m) == 1);

  ShapeCosts t = c;
  t.cands.push_back(MatmulCandidate{nullptr, 3});
  for (int64_t m : t.rows) t.ns.push_back(10 + 2.0 * m);  // the same curve as candidate 0
  REQUIRE(cost_table_valid(t));
  CHECK(route_best(t, 1) == 0);  // tie between 0 and 2
  CHECK(route_best(t, 64) == 1);

  // Three candidates, each cheapest in one range.
  ShapeCosts three;
  three.shape = c.shape;
  three.cands = {MatmulCandidate{nullptr, 1}, MatmulCandidate{nullptr, 2}, MatmulCandidate{nullptr, 3}};
  three.rows = {1, 8, 64};
  three.ns = {1, 10, 100,  // best at 1
              5, 5, 50,    // best at 8
              9, 9, 9};    // best at 64
  REQUIRE(cost_table_valid(three));
  CHECK(route_best(three, 1) == 0);
  CHECK(route_best(three, 8) == 1);
  CHECK(route_best(three, 64) == 2);
  const std::vector<Crossover> x = route_crossovers(three);
  REQUIRE(x.size() == 2);
  CHECK(x[0].from == 0);
  CHECK(x[0].to == 1);
  CHECK(x[1].from == 1);
  CHECK(x[1].to == 2);
  CHECK(x[0].m < x[1].m);
  CHECK(route_best(three, x[0].m - 1) == 0);
  CHECK(route_best(three, x[0].m) == 1);
  CHECK(route_best(three, x[1].m) == 2);
}

TEST_CASE("route_crossovers finds where the winner changes", "[sched][route]") {
  const std::vector<Crossover> x = route_crossovers(two_lines());
  REQUIRE(x.size() == 1);
  CHECK(x[0].m == 14);
  CHECK(x[0].from == 0);
  CHECK(x[0].to == 1);
}

TEST_CASE("route_pick keeps the current candidate near a crossover and switches far from it", "[sched][route]") {
  const ShapeCosts c = two_lines();
  // Nothing ran yet: the cheapest.
  CHECK(route_pick(c, 12, -1, 0.05) == 0);
  CHECK(route_pick(c, 15, -1, 0.05) == 1);
  // M hovering at the crossover (12 .. 15): no flip with a 10% margin.
  int cur = route_pick(c, 12, -1, 0.10);
  for (int64_t m : {14, 13, 15, 12, 13, 14}) {
    cur = route_pick(c, m, cur, 0.10);
    CHECK(cur == 0);
  }
  // Far past it (M 64: a costs 138, b 62): switches, and stays near the crossover.
  cur = route_pick(c, 64, cur, 0.10);
  CHECK(cur == 1);
  for (int64_t m : {13, 14, 12, 15}) {
    cur = route_pick(c, m, cur, 0.10);
    CHECK(cur == 1);
  }
  // Well below: back to a (M 1: a 12, b 30.5).
  cur = route_pick(c, 1, cur, 0.10);
  CHECK(cur == 0);
  // Margin 0: every change of winner switches.
  CHECK(route_pick(c, 14, 0, 0.0) == 1);
  CHECK(route_pick(c, 13, 1, 0.0) == 0);
  // An out-of-range current counts as none.
  CHECK(route_pick(c, 64, 7, 0.10) == 1);
}

TEST_CASE("route_pick keeps the fixed thresholds' choice unless another beats it by the margin", "[sched][route]") {
  const ShapeCosts c = two_lines();
  // M 15: b (37.5) is 6% cheaper than a (40), within a 10% margin: a, the preferred, stays.
  CHECK(route_pick(c, 15, -1, 0.10, 0) == 0);
  CHECK(route_pick(c, 15, -1, 0.10, -1) == 1);
  // M 20: b (40) is 20% cheaper than a (50): leaves the preferred.
  CHECK(route_pick(c, 20, -1, 0.10, 0) == 1);
  // M 13: a is cheapest by 1.4%: b, the preferred, runs.
  CHECK(route_pick(c, 13, -1, 0.10, 1) == 1);
  // After b ran at M 15 (preferred a, within the margin of b): b stays, no flip.
  CHECK(route_pick(c, 15, 1, 0.10, 0) == 1);
  // An out-of-range preferred counts as none.
  CHECK(route_pick(c, 15, -1, 0.10, 9) == 1);
}

TEST_CASE("cost_table_valid rejects malformed tables", "[sched][route]") {
  ShapeCosts c = two_lines();
  ShapeCosts bad = c;
  bad.ns[3] = 0;
  CHECK_FALSE(cost_table_valid(bad));
  bad = c;
  bad.ns[3] = -1;
  CHECK_FALSE(cost_table_valid(bad));
  bad = c;
  bad.rows[2] = bad.rows[1];
  CHECK_FALSE(cost_table_valid(bad));
  bad = c;
  bad.ns.pop_back();
  CHECK_FALSE(cost_table_valid(bad));
  bad = c;
  bad.cands[0].n_threads = 0;
  CHECK_FALSE(cost_table_valid(bad));
  bad = c;
  bad.cands.clear();
  CHECK_FALSE(cost_table_valid(bad));
}

TEST_CASE("the scheduler routes each shape's calls by their rows with hysteresis", "[sched][route]") {
  ShapeCosts c = two_lines();
  const MatmulVariant* v[kMaxMatmulVariants];
  const int n = cpu_matmul_variants(CpuIsa::auto_detect, DType::Q4_K, v, kMaxMatmulVariants);
  if (n < 2) {
    WARN("SKIP: fewer than two Q4_K matmul variants here");
    return;
  }
  c.cands = {MatmulCandidate{v[0], 2}, MatmulCandidate{v[1], 1}};
  Logger log;
  MatmulScheduler sched({c}, 0.10, CpuIsa::scalar, 2, log);
  REQUIRE(sched.n_shapes() == 1);
  std::vector<float> w_dummy(1), x(256 * 64), y(512 * 64);
  auto call_at = [&](int64_t m, int64_t k, int64_t nn) {
    Tensor w = make_tensor(DType::Q4_K, w_dummy.data(), k, nn);
    Tensor xt = make_tensor(DType::F32, x.data(), k, m), yt = make_tensor(DType::F32, y.data(), nn, m);
    OpCall call{OpId::matmul, &yt, {&w, &xt}, 2, nullptr};
    return sched.route(call);
  };
  MatmulRoute r = call_at(1, 256, 512);
  CHECK(r.variant == v[0]);
  CHECK(r.n_threads == 2);
  for (int64_t m : {14, 13, 15, 12}) CHECK(call_at(m, 256, 512).variant == v[0]);
  CHECK(sched.n_switches() == 0);
  r = call_at(64, 256, 512);
  CHECK(r.variant == v[1]);
  CHECK(r.n_threads == 1);
  CHECK(sched.n_switches() == 1);
  CHECK(sched.current(0) == 1);
  // Another shape: the default policy (no variant, the backend's threads).
  r = call_at(64, 256, 1024);
  CHECK(r.variant == nullptr);
  CHECK(r.n_threads == 0);
}

TEST_CASE("where candidates tie, the scheduler runs the fixed thresholds' choice on their threads", "[sched][route]") {
  auto cpu = backend_cpu().create(BackendOptions{.n_threads = 1});
  REQUIRE(cpu.status().to_string() == "ok");
  CpuIsa isa = CpuIsa::scalar;
  REQUIRE(cpu_backend_isa(**cpu, &isa));
  ShapeCosts c;
  c.shape = {DType::Q4_K, 256, 512};
  c.cands = matmul_candidates(isa, DType::Q4_K, 2);
  if (c.cands.empty()) {
    WARN("SKIP: no Q4_K matmul kernels here");
    return;
  }
  c.rows = {1, 64};
  c.ns.assign(c.cands.size() * c.rows.size(), 100.0);
  std::vector<float> w_dummy(1), x(256 * 64), y(512 * 64);
  auto route_at = [&](MatmulScheduler& s, int64_t m) {
    Tensor w = make_tensor(DType::Q4_K, w_dummy.data(), 256, 512);
    Tensor xt = make_tensor(DType::F32, x.data(), 256, m), yt = make_tensor(DType::F32, y.data(), 512, m);
    return s.route(OpCall{OpId::matmul, &yt, {&w, &xt}, 2, nullptr});
  };
  Logger log;
  for (int threads : {1, 2})
    for (int64_t m : {1, 64}) {
      MatmulScheduler s({c}, 0.10, isa, 1, log);
      s.set_static_threads(threads);
      const MatmulRoute r = route_at(s, m);
      CHECK(r.variant == cpu_matmul_policy_variant(isa, DType::Q4_K, m));
      CHECK(r.n_threads == threads);
    }
}
