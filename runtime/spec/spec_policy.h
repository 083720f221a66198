// The draft length of each speculative round, from measured costs and
// acceptance (DESIGN.md 4.2-4.5): speculation that pays, or stays off.
//
// A round that drafts g tokens and verifies g + 1 rows emits E(g) tokens on
// average, E(g) = 1 + sum_{j=1..g} prod_{i<=j} alpha_i, where alpha_i is the
// probability that draft i is accepted once drafts 1..i-1 were (estimated per
// position from the rounds seen with exponential forgetting, each position
// shrunk toward the estimate of the one before it, the first toward a prior).
// It costs T(g) = draft(g) + verify(g + 1): a draft pass's measured time (one
// pass per draft token, or one per round with mask-token drafting) and the
// measured time of verifying that many rows (rows not yet seen: the line
// between the measured sizes around it; past the largest, its time plus at
// most a tenth of a plain step per row, so a longer draft that may pay gets
// tried and measured; with nothing around it, a prior of one plain step plus a
// quarter step per extra row; the first time of each shape is dropped, as it pays
// for building that shape's plan). Until a cost is measured it comes from a
// prior: a draft pass `prior_pass` plain steps (the draft's share of the
// target's weights), a verify row past the first a quarter step, so a first
// round whose draft was rejected can end drafting at once, without a second
// round to measure the costs. Plain decoding emits one token per plain step. The
// policy picks the g in [1, g_max] with the best tokens per time and drafts
// when that beats plain decoding by a margin (hysteresis: it stops drafting
// only when drafting falls below plain by the same margin, and not before a
// few rounds were seen). While off, probe rounds keep the acceptance current:
// the first after `probe_first` plain steps, the gap doubling while they fail
// up to `probe_every`. A caller that knows the costs better (the server,
// where slots share batched steps) gives them per round with set_costs().
//
//   SpecPolicy pol(SpecPolicy::Config{8});
//   int g = pol.choose();                  // 0: a plain step this round
//   ... pol.plain_step(ns) | pol.drafted(passes, ns); pol.verified(g + 1, ns); pol.accepted(g, a);
#pragma once

#include <array>
#include <cstdint>
#include <span>

namespace kestrel {

class SpecPolicy {
 public:
  static constexpr int kMaxDraft = 32;
  struct Config {
    int g_max = 8;             // [1, kMaxDraft]
    int g_init = 1;            // the first round's g (nothing measured or seen yet)
    double prior_pass = 0.0;   // a draft pass in plain steps until one is measured (0: none;
                               // the rounds then draft g_init until the costs are measured)
    bool one_pass_draft = false;  // mask-token drafting: a round drafts in one pass
    double margin = 0.05;      // hysteresis: on above (1 + margin) x plain, off below (1 - margin) x
    int probe_first = 32;      // plain steps before the first probe round once off,
    int probe_every = 128;     // doubling per failed probe up to this
    double min_evidence = 1;   // rounds (decayed) seen before drafting may switch off
    double forget = 0.05;      // weight of a new observation in the running estimates
    double prior_accept = 0.6; // acceptance of the first draft before any round
    double prior_weight = 2.0; // pseudo-rounds of each position's prior
  };

  explicit SpecPolicy(const Config& c);

  // The draft length of the next round, 0 for a plain decoding step.
  int choose();

  // Costs from a model instead of clocks (relative to a plain step: a draft
  // pass, and each verify row past the first): the choices then depend only on
  // the acceptance seen, so a seeded stochastic run repeats its rounds and its
  // tokens. The measurements below are then ignored.
  void fix_costs(double pass_ratio, double extra_row_ratio);

  // Costs given from outside for the next choose(), replacing the model
  // above: plain_ns the time of a plain step, round_ns[g] the time of a round
  // that drafts g (g in [1, g_max]; index 0 unused; a g past the span's end is
  // not chosen). The server sets them every step from its shared step-time
  // curves (serve/spec_costs.h): a slot's share of a batched step. The
  // measurements below are then ignored. plain_ns <= 0: a plain step's time
  // is not measured yet; after the first round choose() then returns 0 (a
  // plain step, which measures it) and decides nothing. The first round, and
  // while drafting is off a probe round, is skipped when not even drafts that
  // were all accepted would pay at the costs best_ns[g] (the rounds at their
  // cheapest, e.g. sharing the draft passes with every other slot; empty:
  // round_ns).
  void set_costs(double plain_ns, std::span<const double> round_ns, std::span<const double> best_ns = {});

  // Measurements of the round just run.
  void plain_step(int64_t ns);
  void drafted(int passes, int64_t ns);  // the round's draft passes and their time
  void verified(int rows, int64_t ns);   // a verify of `rows` rows (drafts + 1)
  void accepted(int g, int a);           // g drafts proposed, the first a accepted

  // The model behind choose(), for tests and summaries.
  double expected_tokens(int g) const;  // E(g)
  double round_ns(int g) const;         // T(g); 0 when nothing is measured
  double plain_ns() const;              // one plain step; 0 when unknown
  double accept_at(int j) const;        // alpha_j, j in [1, g_max]
  bool drafting() const { return on_; }

  // Rounds by chosen g (index 0: plain steps), for the stderr summary.
  const std::array<int64_t, kMaxDraft + 1>& histogram() const { return hist_; }

 private:
  double verify_ns(int rows) const;
  double pass_ns() const;  // measured, else the prior
  double unit_ns() const;  // a plain step: measured, else from the verify times, else 1 (costs in steps)
  int best_g(double* rate) const;
  bool pays_if_all_accepted(double plain_rate) const;  // g + 1 tokens per round beat plain_rate for some g

  Config c_;
  bool on_ = true;
  bool fixed_ = false;  // fix_costs or set_costs: the clocks' measurements are ignored
  bool given_ = false;  // set_costs: round_ns() is given_ns_
  std::array<double, kMaxDraft + 1> given_ns_{};  // set_costs' round times by g, 0 = not given
  std::array<double, kMaxDraft + 1> best_ns_{};   // set_costs' cheapest round times by g (probes)
  int since_probe_ = 0;
  int64_t rounds_ = 0;  // rounds whose acceptance was seen
  int probe_gap_ = 32;
  double plain_ns_ = 0.0;                           // EMA, 0 = unseen
  double pass_ns_ = 0.0;                            // EMA per draft pass, 0 = unseen
  std::array<double, kMaxDraft + 2> verify_ns_{};   // EMA by rows, 0 = unseen
  std::array<double, kMaxDraft + 1> reach_{};       // decayed rounds that reached position j
  std::array<double, kMaxDraft + 1> pass_{};        // ... and accepted draft j
  std::array<int64_t, kMaxDraft + 1> hist_{};
  int64_t seen_plain_ = 0, seen_pass_ = 0;          // samples offered (the first is dropped)
  std::array<int64_t, kMaxDraft + 2> seen_verify_{};
};

}  // namespace kestrel
