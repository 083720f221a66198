// Step-time curves and a slot's round costs in a shared batch (spec_costs.h).
#include "runtime/serve/spec_costs.h"

#include <algorithm>

namespace kestrel::serve {

namespace {
// Weights of a new time in a row count's average: a step is slowed, never
// sped up, by other work on the machine, so a time below the average moves it
// more than one above it. (A spike that stayed in one count's average would
// also flatten the non-decreasing curve above it, so that rows past it looked
// free.)
constexpr double kWeightDown = 0.3;
constexpr double kWeightUp = 0.05;
}

void StepCurve::record(int32_t rows, int64_t ns) {
  if (rows < 1 || rows > kMaxRows || ns <= 0) return;
  const size_t r = static_cast<size_t>(rows);
  if (seen_[r]++ == 0) return;
  const double x = double(ns);
  ema_[r] = ema_[r] <= 0.0 ? x : ema_[r] + (x < ema_[r] ? kWeightDown : kWeightUp) * (x - ema_[r]);
  measured_ = true;
  refit();
}

void StepCurve::refit() {
  // The least-squares slope of the seen counts, for the rows past the last.
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  int32_t first = 0, last = 0;
  for (int32_t r = 1; r <= kMaxRows; ++r) {
    const double t = ema_[static_cast<size_t>(r)];
    if (t <= 0.0) continue;
    if (!first) first = r;
    last = r;
    n += 1;
    sx += r;
    sy += t;
    sxx += double(r) * r;
    sxy += r * t;
  }
  const double t_last = ema_[static_cast<size_t>(last)];
  double slope = t_last / (1.0 + extra_row_ * (last - 1)) * extra_row_;
  if (n >= 2) slope = std::max(0.0, (n * sxy - sx * sy) / (n * sxx - sx * sx));
  std::array<int32_t, kMaxRows + 2> next{};  // [r]: the first seen count >= r (0: none)
  for (int32_t r = kMaxRows; r >= 1; --r)
    next[static_cast<size_t>(r)] = ema_[static_cast<size_t>(r)] > 0.0 ? r : next[static_cast<size_t>(r + 1)];
  int32_t lo = 0;  // the last seen count below r
  for (int32_t r = 1; r <= kMaxRows; ++r) {
    const double t = ema_[static_cast<size_t>(r)];
    double v;
    if (t > 0.0) {
      v = t;
      lo = r;
    } else if (r < first) {
      v = ema_[static_cast<size_t>(first)] * (1.0 + extra_row_ * (r - 1)) / (1.0 + extra_row_ * (first - 1));
    } else if (r > last) {
      v = t_last + slope * (r - last);
    } else {
      const int32_t hi = next[static_cast<size_t>(r)];
      const double a = ema_[static_cast<size_t>(lo)], b = ema_[static_cast<size_t>(hi)];
      v = a + (b - a) * double(r - lo) / double(hi - lo);
    }
    fit_[static_cast<size_t>(r)] = r > 1 ? std::max(v, fit_[static_cast<size_t>(r - 1)]) : v;
  }
}

bool StepCurve::known(int32_t rows) const {
  if (rows < 1 || rows > kMaxRows) return false;
  bool below = false;
  for (int32_t r = 1; r <= kMaxRows; ++r) {
    if (ema_[static_cast<size_t>(r)] <= 0.0) continue;
    if (r == rows || (below && r > rows)) return true;
    below = below || r < rows;
  }
  return false;
}

double StepCurve::at(int32_t rows, double one_row) const {
  rows = std::max(rows, 1);
  if (!measured_) return prior(rows, one_row);
  if (rows <= kMaxRows) return fit_[static_cast<size_t>(rows)];
  const double tail = fit_[kMaxRows] - fit_[kMaxRows - 1];
  return fit_[kMaxRows] + tail * (rows - kMaxRows);
}

void slot_round_costs(const StepCurve& target, const StepCurve& draft, double pass_ratio, const StepShape& step,
                      double* plain_ns, std::span<double> round_ns) {
  const int32_t n_gen = std::max(step.n_gen, 1);
  const double one = target.at(1, 1.0);  // B(1): 1 until measured (costs then in plain steps)
  const double share = target.at(n_gen, 1.0) / n_gen;
  // The draft's measured times mean nothing beside target costs in plain steps.
  const double d1 = pass_ratio * one;
  auto D = [&](int32_t k) { return target.measured() ? draft.at(k, d1) : draft.prior(k, d1); };
  const double base = target.at(step.rows, 1.0);
  *plain_ns = target.known(n_gen) ? share : 0.0;
  if (round_ns.empty()) return;
  round_ns[0] = share;
  double drafting = 0.0;
  for (size_t g = 1; g < round_ns.size(); ++g) {
    const int32_t k = std::max(0, (g < step.others.size() ? step.others[g] : 0) + step.others_later);
    const int32_t own = g == 1 ? 1 + std::max(step.catch_up, 0) : 1;  // the first pass: its catch-up too
    drafting += D(k + own) * own / (k + own);
    round_ns[g] = share + (target.at(step.rows + static_cast<int32_t>(g), 1.0) - base) + drafting;
  }
}

StepCosts::StepCosts(int32_t n_slots, double pass_ratio)
    : pass_ratio_(pass_ratio),
      last_g_(static_cast<size_t>(std::max(n_slots, 0)), 0),
      pending_(static_cast<size_t>(std::max(n_slots, 0)), 0) {}

void StepCosts::begin_step(std::span<const int32_t> gen) {
  step_ = StepShape{};
  step_.n_gen = std::max<int32_t>(static_cast<int32_t>(gen.size()), 1);
  step_.rows = step_.n_gen;
  std::fill(pending_.begin(), pending_.end(), 0);
  later_ = 0;
  for (int32_t seq : gen) {
    pending_[static_cast<size_t>(seq)] = 1;
    later_ += last_g_[static_cast<size_t>(seq)] > 0;
  }
}

void StepCosts::round_costs(int32_t seq, int32_t catch_up, double* plain_ns, std::span<double> round_ns,
                            std::span<double> best_ns) {
  const size_t s = static_cast<size_t>(seq);
  step_.others_later = later_ - (pending_[s] && last_g_[s] > 0 ? 1 : 0);
  step_.catch_up = catch_up;
  slot_round_costs(target_, draft_, pass_ratio_, step_, plain_ns, round_ns);
  if (best_ns.empty()) return;
  StepShape all = step_;
  all.others = {};
  all.others_later = step_.n_gen - 1;
  all.catch_up = 0;
  double unused = 0.0;
  slot_round_costs(target_, draft_, pass_ratio_, all, &unused, best_ns);
}

void StepCosts::chose(int32_t seq, int32_t g) {
  g = std::clamp(g, 0, SpecPolicy::kMaxDraft);
  const size_t s = static_cast<size_t>(seq);
  if (pending_[s]) {
    later_ -= last_g_[s] > 0;
    pending_[s] = 0;
  }
  for (int32_t j = 1; j <= g; ++j) ++step_.others[static_cast<size_t>(j)];
  last_g_[s] = g;
  step_.rows += g;
}

void StepCosts::reset(int32_t seq) {
  const size_t s = static_cast<size_t>(seq);
  if (pending_[s] && last_g_[s] > 0) --later_;
  last_g_[s] = 0;
}

}  // namespace kestrel::serve
