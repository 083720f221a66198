// What drafting costs a server slot in a shared batch (runtime/serve/spec_costs.h),
// and the choices of the slots' policies on synthetic machines: no timing, only
// step-time tables.
#include <catch2/catch.hpp>

#include <functional>
#include <vector>

#include "runtime/serve/spec_costs.h"

using kestrel::SpecPolicy;
using kestrel::serve::slot_round_costs;
using kestrel::serve::StepCosts;
using kestrel::serve::StepCurve;
using kestrel::serve::StepShape;

namespace {

// A machine: the time of a target step and of a draft pass by rows (ms).
struct Machine {
  std::function<double(int)> target;
  std::function<double(int)> draft;
};

int64_t ns(double ms) { return static_cast<int64_t>(ms * 1e6); }

struct Outcome {
  double ratio = 0.0;             // tokens per time over plain decoding's, all slots together
  std::vector<int> rounds;        // [slot] steps that drafted (after the warm-up)
  int steps = 0;                  // steps after the warm-up
};

// n slots generate together for `steps` steps, each slot's policy given its
// costs by StepCosts as the server's SpecSlots does, the curves fed with the
// machine's times; a slot's drafts 1..accept_len are accepted, later ones not.
// A draft pass has a row per drafting slot, the first also a row per token a
// slot's draft lacks (one after a round whose drafts were all accepted, one
// per plain step since it last drafted). The first `warm` steps are left out
// of the outcome.
Outcome serve(const Machine& m, int n, int accept_len, int steps, int warm = 60) {
  const int g_max = 8;
  StepCosts costs(n, m.draft(1) / m.target(1));
  std::vector<SpecPolicy> pol(static_cast<size_t>(n), SpecPolicy(SpecPolicy::Config{g_max, 1}));
  std::vector<int32_t> gen(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) gen[static_cast<size_t>(i)] = i;
  std::vector<double> rounds(static_cast<size_t>(g_max) + 1), best(rounds.size());
  std::vector<int> behind(static_cast<size_t>(n), 0);  // tokens each slot's draft lacks
  Outcome out;
  out.rounds.assign(static_cast<size_t>(n), 0);
  double tokens = 0.0, time = 0.0;
  for (int step = 0; step < steps; ++step) {
    costs.begin_step(gen);
    std::vector<int> g(static_cast<size_t>(n));
    int rows = n;
    for (int i = 0; i < n; ++i) {
      double plain = 0.0;
      // As SpecSlots: only the catch-up of a run of rounds is charged.
      const int charged = costs.drafted_last(i) ? std::min(behind[static_cast<size_t>(i)], 2) : 0;
      costs.round_costs(i, charged, &plain, rounds, best);
      pol[static_cast<size_t>(i)].set_costs(plain, rounds, best);
      g[static_cast<size_t>(i)] = pol[static_cast<size_t>(i)].choose();
      costs.chose(i, g[static_cast<size_t>(i)]);
      rows += g[static_cast<size_t>(i)];
    }
    double t = m.target(rows);
    costs.step_timed(rows, ns(m.target(rows)));
    for (int j = 1; j <= g_max; ++j) {
      int k = 0;
      for (int i = 0; i < n; ++i)
        if (g[static_cast<size_t>(i)] >= j) k += j == 1 ? 1 + behind[static_cast<size_t>(i)] : 1;
      if (k == 0) break;
      t += m.draft(k);
      costs.pass_timed(k, ns(m.draft(k)));
    }
    double toks = 0.0;
    for (int i = 0; i < n; ++i) {
      const int gi = g[static_cast<size_t>(i)];
      if (gi > 0) pol[static_cast<size_t>(i)].accepted(gi, std::min(gi, accept_len));
      int& b = behind[static_cast<size_t>(i)];
      b = gi == 0 ? b + 1 : (accept_len >= gi ? 1 : 0);
      toks += 1 + std::min(gi, accept_len);
      if (step >= warm && gi > 0) ++out.rounds[static_cast<size_t>(i)];
    }
    if (step >= warm) {
      tokens += toks;
      time += t;
      ++out.steps;
    }
  }
  out.ratio = (tokens / time) / (n / m.target(n));
  return out;
}

// Two cores: a step of two rows costs hardly more than one (the weights are read
// once), every row past that 45% of a step; a draft pass 35% of a step, 5% more
// per extra row. Drafts 1..3 accepted: one slot gains (g = 3: 4 tokens in
// B(4) + 3 D(1) = 305 ms against 100 each, 1.31x); two slots drafting 3 each would
// make 8 tokens in B(8) + 3 D(2) = 500 ms against 2 in 110 (0.88x).
const Machine kFewCores{[](int r) { return r == 1 ? 100.0 : 110.0 + 45.0 * (r - 2); },
                        [](int k) { return 35.0 + 5.0 * (k - 1); }};
// Rows nearly free (a GPU at small batches): drafting pays at any slot count.
const Machine kWide{[](int r) { return 100.0 + 2.0 * (r - 1); }, [](int k) { return 30.0 + 1.0 * (k - 1); }};

}  // namespace

TEST_CASE("step curve: the prior until measured, the first time of each row count dropped", "[serve][spec][costs]") {
  StepCurve c(0.25);
  CHECK_FALSE(c.measured());
  CHECK(c.at(1, 2.0) == Approx(2.0));
  CHECK(c.at(5, 2.0) == Approx(4.0));  // 2 x (1 + 0.25 x 4)
  c.record(3, ns(99));                 // the first of 3 rows: builds the plan, dropped
  CHECK_FALSE(c.measured());
  c.record(3, ns(30));
  REQUIRE(c.measured());
  CHECK(c.at(3, 2.0) == Approx(30e6));
  // Below the one count seen, the prior's shape through it; above, its slope.
  CHECK(c.at(1, 2.0) == Approx(30e6 / 1.5));
  CHECK(c.at(7, 2.0) == Approx(30e6 + 4 * 30e6 / 1.5 * 0.25));
  CHECK(c.at(0, 2.0) == Approx(c.at(1, 2.0)));
}

TEST_CASE("step curve: seen counts as averaged, lines between and past them, never falling", "[serve][spec][costs]") {
  StepCurve c;
  for (int k = 0; k < 2; ++k) {
    c.record(1, ns(100));
    c.record(2, ns(110));
    c.record(6, ns(150));
  }
  CHECK(c.at(1, 0) == Approx(100e6));
  CHECK(c.at(4, 0) == Approx(130e6));  // between 2 and 6
  // Past the last: the least-squares slope of (1, 100), (2, 110), (6, 150) is 10 ms per row.
  CHECK(c.at(10, 0) == Approx(190e6));
  // A slower time moves the average by a twentieth of the difference, a faster
  // one by three tenths (other work only slows a step).
  c.record(6, ns(200));
  CHECK(c.at(6, 0) == Approx(152.5e6));
  c.record(6, ns(102.5));
  CHECK(c.at(6, 0) == Approx(137.5e6));
  // A count measured faster than a smaller one does not make rows look free: the
  // curve holds the smaller count's time.
  c.record(3, ns(90));
  c.record(3, ns(90));
  CHECK(c.at(3, 0) == Approx(110e6));
  CHECK(c.at(3, 0) >= c.at(2, 0));
  // Past the rows tracked, the last slope.
  CHECK(c.at(StepCurve::kMaxRows + 10, 0) > c.at(StepCurve::kMaxRows, 0));
}

TEST_CASE("step curve: a step slowed by other work does not make the rows past it look free", "[serve][spec][costs]") {
  StepCurve c;
  for (int k = 0; k < 3; ++k)
    for (int r = 1; r <= 8; ++r) c.record(r, ns(100.0 + 15.0 * (r - 1)));
  c.record(4, ns(3 * 145.0));  // one four-row step at three times its time
  // Two rows past it still cost most of their 30 ms (an average that followed
  // the spike by a fifth would have lifted the four-row time above the six-row
  // one, and the curve, never falling, would have made them free).
  CHECK(c.at(6, 0) - c.at(4, 0) > 0.4 * 30e6);
}

TEST_CASE("slot round costs: one slot is the single-sequence model, two share the plain step", "[serve][spec][costs]") {
  StepCurve target, draft;
  for (int k = 0; k < 2; ++k) {
    for (int r = 1; r <= 12; ++r) target.record(r, ns(kFewCores.target(r)));
    for (int r = 1; r <= 4; ++r) draft.record(r, ns(kFewCores.draft(r)));
  }
  std::vector<double> round(9);
  double plain = 0.0;
  StepShape one;  // one generating slot
  slot_round_costs(target, draft, 0.35, one, &plain, round);
  CHECK(plain == Approx(100e6));
  for (int g = 1; g <= 8; ++g)
    CHECK(round[static_cast<size_t>(g)] == Approx((kFewCores.target(1 + g) + g * 35.0) * 1e6));
  // Two slots: each one's plain step is half of a two-row step; the first to
  // choose adds its rows to the two pending ones and pays whole passes when the
  // other is not expected to draft, half of a two-row pass when it is.
  StepShape two;
  two.n_gen = two.rows = 2;
  slot_round_costs(target, draft, 0.35, two, &plain, round);
  CHECK(plain == Approx(55e6));
  CHECK(round[3] == Approx((55.0 + 135.0 + 3 * 35.0) * 1e6));
  two.others_later = 1;  // the other drafted at its last step: in every pass
  slot_round_costs(target, draft, 0.35, two, &plain, round);
  CHECK(round[3] == Approx((55.0 + 135.0 + 3 * 20.0) * 1e6));
  CHECK(round[8] == Approx((55.0 + kFewCores.target(10) - 110.0 + 8 * 20.0) * 1e6));
  two.others_later = 0;
  two.others[1] = two.others[2] = 1;  // the other chose 2 drafts this step
  slot_round_costs(target, draft, 0.35, two, &plain, round);
  CHECK(round[3] == Approx((55.0 + 135.0 + 2 * 20.0 + 35.0) * 1e6));
  // A draft two tokens behind: the first pass has 2 + 2 rows, two of them its catch-up.
  two.catch_up = 2;
  slot_round_costs(target, draft, 0.35, two, &plain, round);
  CHECK(round[1] == Approx((55.0 + 45.0 + kFewCores.draft(4) * 3 / 4) * 1e6));
  two.catch_up = 0;
  // The second to choose, after the first drafted 3: its rows come after those.
  two.rows = 5;
  two.others = {};
  two.others[1] = two.others[2] = two.others[3] = 1;
  slot_round_costs(target, draft, 0.35, two, &plain, round);
  CHECK(round[2] == Approx((55.0 + 90.0 + 2 * 20.0) * 1e6));
  // A plain step of two rows neither measured nor between measured ones: no
  // plain time (it must be measured, not extrapolated).
  StepCurve only_one;
  for (int k = 0; k < 2; ++k) only_one.record(1, ns(100));
  slot_round_costs(only_one, draft, 0.35, two, &plain, round);
  CHECK(plain == 0.0);
  CHECK(round[0] == Approx(125e6 / 2));  // the share the prior's shape gives
  for (int k = 0; k < 2; ++k) only_one.record(4, ns(160));
  slot_round_costs(only_one, draft, 0.35, two, &plain, round);
  CHECK(plain == Approx(120e6 / 2));
  // Nothing measured: costs in plain steps, the draft's from the weights' ratio.
  StepCurve none_t, none_d;
  slot_round_costs(none_t, none_d, 0.35, one, &plain, round);
  CHECK(plain == 0.0);
  CHECK(round[0] == Approx(1.0));
  CHECK(round[2] == Approx(1.5 + 2 * 0.35));
  // The draft's measured times are not mixed with costs in plain steps.
  slot_round_costs(none_t, draft, 0.35, one, &plain, round);
  CHECK(round[2] == Approx(1.5 + 2 * 0.35));
}

TEST_CASE("step costs: the others' drafts are this step's choices, else the last step's", "[serve][spec][costs]") {
  StepCosts costs(3, 0.5);
  std::vector<double> round(5);
  double plain = 0.0;
  const std::vector<int32_t> gen = {0, 2};
  // Costs in plain steps (nothing measured): B(r) = 1 + (r - 1) / 4, D(k) = B(k) / 2.
  // Step 1: nobody drafted before; slot 0 chooses 3, then slot 2 sees it.
  costs.begin_step(gen);
  costs.round_costs(0, 0, &plain, round);
  CHECK(plain == 0.0);  // no plain step measured
  CHECK(round[0] == Approx(1.25 / 2));
  CHECK(round[1] == Approx(1.25 / 2 + 0.25 + 0.5));
  costs.chose(0, 3);
  costs.round_costs(2, 0, &plain, round);
  // Rows 2 + 3 so far; a pass shared with slot 0 costs half a two-row pass, a
  // fourth pass is its own.
  CHECK(round[1] == Approx(1.25 / 2 + 0.25 + 0.5 * 1.25 / 2));
  CHECK(round[4] == Approx(1.25 / 2 + 1.0 + 3 * 0.5 * 1.25 / 2 + 0.5));
  costs.chose(2, 1);
  // Step 2: slot 0 chooses first; slot 2 drafted at its last step, so it is
  // counted in every pass slot 0 would draft.
  costs.begin_step(gen);
  costs.round_costs(0, 0, &plain, round);
  CHECK(round[4] == Approx(1.25 / 2 + 1.0 + 4 * 0.5 * 1.25 / 2));
  costs.chose(0, 2);
  // Slot 2 now sees slot 0's choice: two shared passes, then its own.
  costs.round_costs(2, 0, &plain, round);
  CHECK(round[3] == Approx(1.25 / 2 + 3 * 0.25 + 2 * 0.5 * 1.25 / 2 + 0.5));
  costs.chose(2, 0);
  // A slot that drafted nothing, or starts a new request, is not counted.
  costs.begin_step(gen);
  costs.round_costs(0, 0, &plain, round);
  CHECK(round[1] == Approx(1.25 / 2 + 0.25 + 0.5));
  costs.chose(0, 1);
  costs.chose(2, 1);
  costs.reset(2);
  costs.begin_step(gen);
  std::vector<double> best(5);
  costs.round_costs(0, 0, &plain, round, best);
  CHECK(round[1] == Approx(1.25 / 2 + 0.25 + 0.5));
  // At their cheapest, slot 2 would draft along in every pass.
  CHECK(best[4] == Approx(1.25 / 2 + 1.0 + 4 * 0.5 * 1.25 / 2));
}

TEST_CASE("speculative serving: drafting pays for one slot, stays off where two would lose", "[serve][spec][costs]") {
  const Outcome one = serve(kFewCores, 1, 3, 400);
  CHECK(one.ratio > 1.25);
  CHECK(one.rounds[0] > one.steps * 9 / 10);
  const Outcome two = serve(kFewCores, 2, 3, 400);
  CHECK(two.ratio > 0.99);
  // Not even a probe round: with every draft accepted two slots would still lose.
  for (int r : two.rounds) CHECK(r == 0);
  // (A slot charged the whole step, as its own clock charges it, would see
  // plain = B(2) = 110 ms and a round of 3 = B(5) + 3 D(1) = 350 ms: 4 tokens
  // in 350 ms, 1.26x, and draft, at 0.88x for the two slots together.)
}

TEST_CASE("speculative serving: where rows are nearly free, every slot drafts", "[serve][spec][costs]") {
  for (int n : {1, 2, 4}) {
    const Outcome o = serve(kWide, n, 3, 400);
    INFO("slots " << n);
    CHECK(o.ratio > 1.5);
    for (int r : o.rounds) CHECK(r > o.steps * 9 / 10);
  }
}

TEST_CASE("speculative serving: rejected drafts switch every slot off", "[serve][spec][costs]") {
  for (int n : {1, 2}) {
    const Outcome o = serve(kWide, n, 0, 400);
    INFO("slots " << n);
    CHECK(o.ratio > 0.9);
    for (int r : o.rounds) CHECK(r < o.steps / 10);
  }
}
