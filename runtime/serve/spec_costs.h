// What drafting costs a server slot when the slots share one target batch per
// step and their drafts share the draft model's passes (spec_slots.h), so that
// each slot's draft-length policy (SpecPolicy) weighs what its own rows add.
//
// StepCurve: the time of a decode step by its number of rows, learned as steps
// run (an exponential average per row count that follows faster times more
// than slower ones, as other work on the machine only slows a step; the first
// time of each count is dropped, as it pays for building that shape's plan). A count not seen comes
// from the seen ones: between two, a line; past the last, the least-squares
// slope of the seen ones (with one seen, the prior's); below the first, the
// prior's shape through it. The prior: one row's time x (1 + extra_row x
// (rows - 1)). The curve is made non-decreasing in rows.
//
// Round costs (slot_round_costs). In a step with n_gen generating slots, plain
// decoding costs B(n_gen) for n_gen tokens: a slot's plain step is its share,
// B(n_gen) / n_gen. A slot that drafts g tokens adds g rows to the target
// batch, B(R + g) - B(R) (R: the rows the step holds so far, every generating
// slot's pending token and the drafts of the slots that chose before it), and
// joins g draft passes; pass j holds k_j + 1 rows (k_j: the other slots
// drafting a j-th token) and costs it its share, D(k_j + 1) / (k_j + 1). Over
// the slots these shares add up to the step's time, so when every drafting
// slot's E(g) tokens per round beat one token per plain share, the step's
// tokens per second beat plain decoding of every slot; and slots that draft
// together split the draft passes (one row more in a pass costs far less than
// a pass). The first pass also feeds the tokens the slot's draft has not seen
// (c, one after a round whose drafts were all accepted): the slot's share of
// it is (1 + c) of its k_1 + 1 + c rows. k_j counts the slots that chose
// before it this step by their choice, and those yet to choose that drafted
// at their last step as drafting every pass it does: slots drafting together
// settle on like lengths, and counting them by their last length would make
// every pass past it look like a pass of its own, so that no slot ever
// lengthens its drafts (costs where followers draft less are corrected at the
// next step, by the choices made). The step's time B counts what follows the
// decode per row too (verifying, sampling, emitting). One slot alone gets the
// single-sequence decoder's model, B(1 + g) + g D(1). Until the target's curve
// has a measurement, costs are in units of B(1) and D comes from the weights'
// ratio (pass_ratio). SpecPolicy skips first and probe rounds while not even
// drafts that were all accepted would pay at the cheapest costs (every other
// generating slot drafting along), so where slots batched already use the
// machine, speculation costs nothing but the bookkeeping.
//
// StepCosts keeps the two curves and the step being planned:
//
//   StepCosts costs(n_slots, pass_ratio);
//   costs.begin_step(generating_seqs);            // in batch order
//   for each speculating seq among them:
//     costs.round_costs(seq, catch_up, &plain, round, best);  // round[g], g in [1, size)
//     policy.set_costs(plain, round, best);
//     costs.chose(seq, g = policy.choose());
//   ... costs.step_timed(rows, ns) after each step without prompt rows,
//       costs.pass_timed(rows, ns) after each draft pass.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "runtime/spec/spec_policy.h"

namespace kestrel::serve {

class StepCurve {
 public:
  static constexpr int32_t kMaxRows = 256;  // rows the curve tracks; beyond, its last slope
  explicit StepCurve(double extra_row = 0.25) : extra_row_(extra_row) {}

  // A step of `rows` rows took ns (rows outside [1, kMaxRows] are ignored).
  void record(int32_t rows, int64_t ns);
  // The time of a step of `rows` rows (>= 1), in ns once measured; before,
  // the prior from one_row (any unit).
  double at(int32_t rows, double one_row) const;
  bool measured() const { return measured_; }
  // Measured at `rows`, or at counts both below and above it (a line between
  // measurements, not an extrapolation).
  bool known(int32_t rows) const;
  double prior(int32_t rows, double one_row) const { return one_row * (1.0 + extra_row_ * (rows - 1)); }

 private:
  void refit();
  double extra_row_;
  bool measured_ = false;
  std::array<double, kMaxRows + 1> ema_{};    // ns by rows, 0 = unseen
  std::array<int64_t, kMaxRows + 1> seen_{};  // times offered by rows
  std::array<double, kMaxRows + 1> fit_{};    // ns by rows, non-decreasing (index 0 unused)
};

// The step as the next slot to choose sees it.
struct StepShape {
  int32_t n_gen = 1;  // generating slots in the step (>= 1)
  int32_t rows = 1;   // target rows so far: the n_gen pending tokens and the drafts chosen
  std::array<int32_t, SpecPolicy::kMaxDraft + 1> others{};  // [j]: other slots that chose a j-th draft
  int32_t others_later = 0;  // other slots yet to choose that drafted at their last step (counted in
                             // every pass)
  int32_t catch_up = 0;      // tokens the slot's draft lacks before its pending one
};

// The costs of the next slot to choose in `step`: *plain_ns its plain step
// (0 while the target's curve does not know n_gen rows: what drafting
// competes with must be measured, not guessed), round_ns[g] a round that drafts g, for g in
// [1, round_ns.size() - 1] (index 0 is set to the plain share, measured or
// not). pass_ratio: a draft pass of one row over a target step of one row,
// until the draft's curve has measurements.
void slot_round_costs(const StepCurve& target, const StepCurve& draft, double pass_ratio, const StepShape& step,
                      double* plain_ns, std::span<double> round_ns);

// The curves, and each step's choices as the slots make them.
class StepCosts {
 public:
  // n_slots: sequences; pass_ratio: as for slot_round_costs.
  StepCosts(int32_t n_slots, double pass_ratio);

  // A step begins whose generating slots are gen (sequence ids), in the order
  // their rows go in the batch and their choices are made.
  void begin_step(std::span<const int32_t> gen);
  // The costs of slot seq's next round (see slot_round_costs), whose draft
  // lacks catch_up tokens before the pending one; best_ns (if not empty): the
  // same with every other generating slot drafting along in every pass (the
  // cheapest its rounds can be, for SpecPolicy's probes: while every slot is
  // off, each would otherwise see passes of its own).
  void round_costs(int32_t seq, int32_t catch_up, double* plain_ns, std::span<double> round_ns,
                   std::span<double> best_ns = {});
  // Slot seq drafts g this step (0: a plain step).
  void chose(int32_t seq, int32_t g);
  // Slot seq starts a request, or stops drafting: it drafted nothing so far.
  void reset(int32_t seq);
  // Whether slot seq drafted at its last generating step.
  bool drafted_last(int32_t seq) const { return last_g_[static_cast<size_t>(seq)] > 0; }

  void step_timed(int32_t rows, int64_t ns) { target_.record(rows, ns); }
  void pass_timed(int32_t rows, int64_t ns) { draft_.record(rows, ns); }
  const StepCurve& target() const { return target_; }
  const StepCurve& draft() const { return draft_; }

 private:
  StepCurve target_;  // a target step's time by rows (steps of generating slots only)
  StepCurve draft_;   // a draft pass's time by rows
  double pass_ratio_;
  std::vector<int32_t> last_g_;    // [n_slots] drafts chosen at the slot's last generating step
  std::vector<uint8_t> pending_;   // [n_slots] in this step and yet to choose
  int32_t later_ = 0;              // slots yet to choose with last_g_ > 0
  StepShape step_;  // the step as the next slot to choose sees it
};

}  // namespace kestrel::serve
