// The speculative draft-length policy (runtime/spec/spec_policy.h) on
// synthetic costs and acceptance: no timing, only its decisions.
#include <catch2/catch.hpp>

#include "runtime/spec/spec_policy.h"

using kestrel::SpecPolicy;

namespace {

constexpr int64_t kMs = 1000000;

// Costs of a machine: a plain step, a draft pass, verify(rows) = plain * (1 + per_row * (rows - 1)).
struct Costs {
  int64_t plain = 10 * kMs;
  int64_t pass = 3 * kMs;
  double per_row = 0.3;
  int64_t verify(int rows) const { return static_cast<int64_t>(plain * (1.0 + per_row * (rows - 1))); }
};

// Runs n rounds of the policy on a synthetic model: a draft at position j is
// accepted while j <= accept_len. Returns the rounds' g (0: plain).
std::vector<int> simulate(SpecPolicy& pol, const Costs& c, int n, int accept_len) {
  std::vector<int> gs;
  for (int r = 0; r < n; ++r) {
    const int g = pol.choose();
    gs.push_back(g);
    if (g == 0) {
      pol.plain_step(c.plain);
      continue;
    }
    pol.drafted(g, g * c.pass);
    pol.verified(g + 1, c.verify(g + 1));
    pol.accepted(g, std::min(g, accept_len));
  }
  return gs;
}

int count(const std::vector<int>& v, int from, int x) {
  int n = 0;
  for (size_t i = static_cast<size_t>(from); i < v.size(); ++i) n += v[i] == x;
  return n;
}

}  // namespace

TEST_CASE("spec policy: the first rounds draft g_init and one plain step measures plain decoding", "[spec][policy]") {
  SpecPolicy pol(SpecPolicy::Config{8, 4});
  Costs c;
  REQUIRE(pol.choose() == 4);  // nothing measured
  pol.drafted(4, 4 * c.pass);  // dropped: the first of its kind builds plans
  pol.verified(5, c.verify(5));
  pol.accepted(4, 4);
  REQUIRE(pol.round_ns(4) == 0.0);
  REQUIRE(pol.choose() == 4);  // still nothing kept
  pol.drafted(4, 4 * c.pass);
  pol.verified(5, c.verify(5));
  pol.accepted(4, 4);
  REQUIRE(pol.round_ns(4) > 0.0);
  REQUIRE(pol.choose() == 0);  // plain time unknown: one plain step (dropped), then another
  pol.plain_step(c.plain);
  REQUIRE(pol.choose() == 0);
  pol.plain_step(c.plain);
  CHECK(pol.plain_ns() == Approx(double(c.plain)));
  CHECK(pol.choose() > 0);
}

TEST_CASE("spec policy: with a cost prior, one rejected first round ends drafting", "[spec][policy]") {
  Costs c;
  SpecPolicy::Config cfg{8, 1};
  cfg.prior_pass = 0.4;  // a draft pass at 0.4 plain steps until one is measured
  cfg.probe_first = 16;
  SpecPolicy pol(cfg);
  REQUIRE(pol.choose() == 1);  // nothing seen: the first round explores with g_init
  pol.drafted(1, c.pass);      // dropped (cold), the prior stands in
  pol.verified(2, c.verify(2));
  pol.accepted(1, 0);
  CHECK(pol.round_ns(1) == Approx(0.4 + 1.25));  // in plain steps: nothing measured
  // Rejected: (1 + alpha) / (0.4 + 1.25) with alpha shrunk to 0.4 is ~0.85 of plain.
  for (int i = 0; i < 15; ++i) {
    REQUIRE(pol.choose() == 0);
    pol.plain_step(c.plain);
  }
  CHECK_FALSE(pol.drafting());
  CHECK(pol.choose() > 0);  // the first probe, after probe_first plain steps

  // Accepted instead: drafting stays on; two plain steps measure plain decoding
  // (the first is dropped), then the rounds draft again.
  SpecPolicy on(cfg);
  REQUIRE(on.choose() == 1);
  on.drafted(1, c.pass);
  on.verified(2, c.verify(2));
  on.accepted(1, 1);
  REQUIRE(on.choose() == 0);
  on.plain_step(c.plain);
  REQUIRE(on.choose() == 0);
  on.plain_step(c.plain);
  CHECK(on.drafting());
  CHECK(on.choose() >= 1);
  // Without a prior the costs must be measured first: a second g_init round.
  SpecPolicy none(SpecPolicy::Config{8, 1});
  REQUIRE(none.choose() == 1);
  none.drafted(1, c.pass);
  none.verified(2, c.verify(2));
  none.accepted(1, 0);
  CHECK(none.choose() == 1);
}

TEST_CASE("spec policy: no drafting when drafts are rejected, probes now and then", "[spec][policy]") {
  SpecPolicy::Config cfg{8, 4};
  cfg.probe_first = 2;
  cfg.probe_every = 10;
  SpecPolicy pol(cfg);
  const std::vector<int> gs = simulate(pol, Costs{}, 400, 0);
  // After the warm-up the policy settles on plain steps with a probe round every 10
  // (the gaps 2, 4, 8 first).
  const int plain = count(gs, 100, 0);
  CHECK(plain >= 260);
  CHECK(plain <= 280);
  CHECK_FALSE(pol.drafting());
  CHECK(pol.accept_at(1) < 0.1);
  CHECK(pol.histogram()[0] == count(gs, 0, 0));
}

TEST_CASE("spec policy: long drafts when every draft is accepted and verify rows are cheap", "[spec][policy]") {
  SpecPolicy pol(SpecPolicy::Config{8, 2});
  Costs c;
  c.pass = 1 * kMs;
  c.per_row = 0.1;
  const std::vector<int> gs = simulate(pol, c, 200, 100);
  CHECK(count(gs, 100, 8) == 100);
  CHECK(pol.drafting());
  CHECK(pol.accept_at(8) > 0.9);
  CHECK(pol.expected_tokens(8) > 7.5);  // alpha ~0.96 per position at a forget rate of 0.05
}

TEST_CASE("spec policy: a draft length near the acceptance edge, not past it", "[spec][policy]") {
  // Drafts 1..3 always pass, draft 4 never: g = 3 gets 4 tokens per round, more drafts only cost.
  // Position 4's estimate drifts back toward position 3's while unreached, so g = 4 is re-tried
  // now and then (about one round in eight at a forget rate of 0.05).
  SpecPolicy pol(SpecPolicy::Config{8, 4});
  const std::vector<int> gs = simulate(pol, Costs{}, 300, 3);
  CHECK(count(gs, 200, 3) >= 75);
  CHECK(count(gs, 200, 3) + count(gs, 200, 4) == 100);
  CHECK(pol.accept_at(3) > 0.9);
}

TEST_CASE("spec policy: hysteresis keeps the state inside the margin", "[spec][policy]") {
  SpecPolicy::Config cfg{1, 1};
  cfg.margin = 0.2;
  cfg.prior_weight = 1e-3;
  cfg.forget = 0.0;
  // g is 1: a round emits 1 + alpha tokens in pass + verify(2). With pass 2 ms and
  // verify(2) 12 ms a round costs 1.4 plain steps: drafting pays above alpha 0.4.
  Costs c;
  c.pass = 2 * kMs;
  c.per_row = 0.2;
  auto feed = [&](SpecPolicy& p, int rounds, int accept_every) {
    for (int r = 0; r < rounds; ++r) {
      p.drafted(1, c.pass);
      p.verified(2, c.verify(2));
      p.accepted(1, r % accept_every == 0 ? 1 : 0);
    }
    p.plain_step(c.plain);
    p.plain_step(c.plain);
  };
  // alpha 0.5: 1.5 tokens per 1.4 steps = 1.07x plain, inside (0.8, 1.2).
  SpecPolicy on(cfg);
  feed(on, 40, 2);
  CHECK(on.drafting());
  CHECK(on.choose() == 1);  // stays on
  SpecPolicy off(cfg);
  feed(off, 40, 40);        // alpha 0.025: off
  CHECK(off.choose() == 0);
  CHECK_FALSE(off.drafting());
  for (int r = 0; r < 40; ++r) off.accepted(1, r % 2 == 0 ? 1 : 0);  // alpha 21 of 80: 0.9x plain
  CHECK(off.choose() == 0);  // inside the margin: still off
  CHECK_FALSE(off.drafting());
  for (int r = 0; r < 400; ++r) off.accepted(1, 1);  // alpha 421 of 480: 1.88 / 1.4 = 1.34x
  CHECK(off.choose() == 1);
  CHECK(off.drafting());
}

TEST_CASE("spec policy: unmeasured verify sizes come from the measured ones", "[spec][policy]") {
  SpecPolicy pol(SpecPolicy::Config{8, 4});
  Costs c;
  for (int rows : {3, 5})
    for (int k = 0; k < 2; ++k) pol.verified(rows, c.verify(rows));  // the first of each dropped
  pol.drafted(1, c.pass);
  pol.drafted(1, c.pass);
  CHECK(pol.round_ns(2) == Approx(c.verify(3) + 2.0 * c.pass).epsilon(1e-9));
  // Between (3, 16 ms) and (5, 22 ms): the line, 4 rows -> 19 ms.
  CHECK(pol.round_ns(3) == Approx(19.0 * kMs + 3.0 * c.pass).epsilon(1e-9));
  // Past 5 rows: 22 ms plus at most a tenth of a plain step per row (the
  // measured slope, 3 ms a row, is steeper). No plain step is measured: one
  // row is the prior shape through 3 rows, 16 / 1.5 ms.
  const double unit = 16.0 * kMs / 1.5;
  CHECK(pol.round_ns(8) == Approx(22.0 * kMs + 4 * 0.1 * unit + 8.0 * c.pass).epsilon(1e-9));
  // Below the smallest measured size: the prior shape through it.
  CHECK(pol.round_ns(1) == Approx(unit * 1.25 + c.pass).epsilon(1e-9));
}

TEST_CASE("spec policy: a longer draft is tried when it may pay and left when measured slow", "[spec][policy]") {
  // A machine where a verify of 2..4 rows costs about the same and a fifth row
  // a whole step more; a draft pass 0.38 of a step; every draft accepted.
  struct Cliff {
    int64_t plain = 10 * kMs;
    int64_t verify(int rows) const {
      const double r = rows <= 4 ? 1.39 + 0.05 * (rows - 2) : 1.49 + 1.0 * (rows - 4);
      return static_cast<int64_t>(plain * r);
    }
  } c;
  SpecPolicy::Config cfg{8, 1};
  cfg.prior_pass = 0.4;
  SpecPolicy pol(cfg);
  std::vector<int> gs;
  for (int r = 0; r < 60; ++r) {
    const int g = pol.choose();
    gs.push_back(g);
    if (g == 0) {
      pol.plain_step(c.plain);
      continue;
    }
    pol.drafted(g, g * int64_t(0.38 * c.plain));
    pol.verified(g + 1, c.verify(g + 1));
    pol.accepted(g, g);
  }
  // Best: g = 3 (4 tokens for 1.14 + 1.49 steps: 1.52x), not g = 1 (1.13x) or 4 (1.32x).
  CHECK(pol.drafting());
  CHECK(count(gs, 40, 3) >= 18);
  CHECK(count(gs, 0, 4) >= 1);   // tried and measured
  CHECK(count(gs, 0, 0) <= 3);   // the plain steps that measure plain decoding
}

TEST_CASE("spec policy: one-pass drafting costs one pass per round", "[spec][policy]") {
  SpecPolicy::Config cfg{8, 4};
  cfg.one_pass_draft = true;
  SpecPolicy pol(cfg);
  Costs c;
  for (int k = 0; k < 2; ++k) {
    pol.drafted(1, c.pass);
    pol.verified(5, c.verify(5));
  }
  CHECK(pol.round_ns(4) == Approx(double(c.verify(5) + c.pass)));
}

TEST_CASE("spec policy: fixed costs ignore the clock, so equal acceptance gives equal choices", "[spec][policy]") {
  auto run = [](int64_t noise) {
    SpecPolicy pol(SpecPolicy::Config{8, 4});
    pol.fix_costs(0.35, 0.25);
    std::vector<int> gs;
    for (int r = 0; r < 60; ++r) {
      const int g = pol.choose();
      gs.push_back(g);
      if (g == 0) {
        pol.plain_step(noise * (r + 1));
        continue;
      }
      pol.drafted(g, noise * 3 * (r % 7 + 1));
      pol.verified(g + 1, noise * (r % 5 + 1));
      pol.accepted(g, r < 30 ? g : 0);  // all accepted, then none
    }
    return gs;
  };
  const std::vector<int> a = run(1000), b = run(7919000);
  CHECK(a == b);
  CHECK(a[0] > 0);     // drafting pays at these costs with the prior
  CHECK(a.back() == 0);  // and stops once nothing is accepted
}

TEST_CASE("spec policy: given costs replace the clocks and drive the choice", "[spec][policy]") {
  // Every draft accepted; a plain step 10 ms. Rounds at 10 + 3 g ms pay (g = 8:
  // 9 tokens in 34 ms, 2.6x plain), rounds at 10 + 13 g ms do not (g = 1: 2 tokens
  // in 23 ms, 0.87x; g = 8: 9 in 114 ms, 0.79x).
  auto rounds = [](double per_draft) {
    std::vector<double> r(9);
    for (size_t g = 1; g < r.size(); ++g) r[g] = 10.0 + per_draft * double(g);
    return r;
  };
  const std::vector<double> cheap = rounds(3.0), dear = rounds(13.0);
  SpecPolicy pol(SpecPolicy::Config{8, 1});
  pol.set_costs(10.0, cheap);
  CHECK(pol.round_ns(3) == Approx(10.0 + 3 * 3.0));
  CHECK(pol.plain_ns() == Approx(10.0));
  int last = -1;
  for (int r = 0; r < 40; ++r) {
    pol.set_costs(10.0, cheap);
    last = pol.choose();
    if (last > 0) pol.accepted(last, last);
    pol.plain_step(1);  // the clock's times are ignored: plain 1 ns would make any round a loss
    pol.verified(last + 1, 1000 * kMs);
  }
  CHECK(last == 8);
  CHECK(pol.drafting());
  // The same acceptance at the dear costs switches drafting off.
  for (int r = 0; r < 5; ++r) {
    pol.set_costs(10.0, dear);
    last = pol.choose();
    if (last > 0) pol.accepted(last, last);
  }
  CHECK(last == 0);
  CHECK_FALSE(pol.drafting());
  // A g past the given span is never chosen.
  SpecPolicy short_span(SpecPolicy::Config{8, 1});
  const std::vector<double> two = {0.0, 15.0, 17.0};
  for (int r = 0; r < 20; ++r) {
    short_span.set_costs(10.0, two);
    const int g = short_span.choose();
    CHECK(g <= 2);
    if (g > 0) short_span.accepted(g, g);
  }
  CHECK(short_span.round_ns(3) == 0.0);
  CHECK(short_span.round_ns(2) == Approx(17.0));
  // No plain time given: the first round drafts g_init to see acceptance, then
  // plain steps (to measure what drafting competes with) and no decision.
  SpecPolicy unmeasured(SpecPolicy::Config{8, 1});
  unmeasured.set_costs(0.0, cheap);
  REQUIRE(unmeasured.choose() == 1);
  unmeasured.accepted(1, 0);
  for (int r = 0; r < 40; ++r) {
    unmeasured.set_costs(0.0, dear);
    CHECK(unmeasured.choose() == 0);
    unmeasured.accepted(1, 0);
  }
  CHECK(unmeasured.drafting());  // rejected drafts, dear rounds: yet nothing decided
  unmeasured.set_costs(10.0, dear);
  CHECK(unmeasured.choose() == 0);
  CHECK_FALSE(unmeasured.drafting());
}

TEST_CASE("spec policy: with given costs, no probe rounds where even accepted drafts would not pay", "[spec][policy]") {
  // Drafts rejected: drafting goes off. At rounds of 10 + 3 g ms against a 10 ms
  // plain step, drafts that were all accepted would pay: probes come (the gap
  // doubling from 32 to 128). At 10 + 13 g ms they would not: no probe, unless
  // the rounds at their cheapest (best_ns) would.
  auto run = [](double per_draft, double best_per_draft) {
    SpecPolicy pol(SpecPolicy::Config{8, 1});
    std::vector<double> r(9), best(9);
    for (size_t g = 1; g < r.size(); ++g) {
      r[g] = 10.0 + per_draft * double(g);
      best[g] = 10.0 + best_per_draft * double(g);
    }
    int probes = 0;
    for (int step = 0; step < 400; ++step) {
      pol.set_costs(10.0, r, best);
      const int g = pol.choose();
      if (g > 0) {
        pol.accepted(g, 0);
        probes += step > 0;
      }
    }
    return probes;
  };
  CHECK(run(3.0, 3.0) >= 3);
  CHECK(run(13.0, 13.0) == 0);
  CHECK(run(13.0, 3.0) >= 3);
  // Nor a first round: at costs where no acceptance would pay it is skipped
  // until the costs change.
  SpecPolicy first(SpecPolicy::Config{8, 1});
  std::vector<double> dear(9), cheap(9);
  for (size_t g = 1; g < dear.size(); ++g) {
    dear[g] = 10.0 + 13.0 * double(g);
    cheap[g] = 10.0 + 3.0 * double(g);
  }
  for (int step = 0; step < 10; ++step) {
    first.set_costs(10.0, dear);
    CHECK(first.choose() == 0);
  }
  first.set_costs(10.0, cheap);
  CHECK(first.choose() == 1);
}
