// Draft length per round from measured costs and acceptance (spec_policy.h).
#include "runtime/spec/spec_policy.h"

#include <algorithm>

namespace kestrel {
namespace {

constexpr double kCostWeight = 0.2;   // weight of a new time in the cost estimates
constexpr double kExtraRow = 0.25;    // prior: a verify row past the first costs a quarter plain step
constexpr double kExploreRow = 0.1;   // at most this many plain steps per row past the largest measured size

double ema(double old, double x, double w) { return old <= 0.0 ? x : old + w * (x - old); }

}  // namespace

SpecPolicy::SpecPolicy(const Config& c) : c_(c) {
  c_.g_max = std::clamp(c_.g_max, 1, kMaxDraft);
  c_.g_init = std::clamp(c_.g_init, 1, c_.g_max);
  c_.probe_every = std::max(1, c_.probe_every);
  c_.probe_first = std::clamp(c_.probe_first, 1, c_.probe_every);
  probe_gap_ = c_.probe_first;
  c_.forget = std::clamp(c_.forget, 0.0, 1.0);
  c_.prior_accept = std::clamp(c_.prior_accept, 0.0, 1.0);
  c_.prior_weight = std::max(1e-3, c_.prior_weight);
  c_.margin = std::clamp(c_.margin, 0.0, 0.9);
  c_.prior_pass = std::max(0.0, c_.prior_pass);
}

// Position j's estimate leans on position j - 1's (the first on the
// configured prior): a position the rounds rarely reach is assumed to accept
// as the one before it does, so longer drafts get tried when acceptance is
// high, and a position that stops being reached drifts back to its neighbour.
double SpecPolicy::accept_at(int j) const {
  if (j < 1 || j > c_.g_max) return 0.0;
  double a = c_.prior_accept;
  for (int i = 1; i <= j; ++i)
    a = (pass_[static_cast<size_t>(i)] + a * c_.prior_weight) / (reach_[static_cast<size_t>(i)] + c_.prior_weight);
  return a;
}

double SpecPolicy::expected_tokens(int g) const {
  double e = 1.0, p = 1.0, a = c_.prior_accept;
  for (int j = 1; j <= std::min(g, c_.g_max); ++j) {
    const size_t i = static_cast<size_t>(j);
    a = (pass_[i] + a * c_.prior_weight) / (reach_[i] + c_.prior_weight);
    p *= a;
    e += p;
  }
  return e;
}

double SpecPolicy::plain_ns() const { return plain_ns_; }

// Measured rows as they are. Between two measured sizes (a plain step counts
// as one row): the line between them. Past the largest measured size: its
// time plus, per extra row, the least-squares slope of the measured sizes but
// at most kExploreRow plain steps - an optimistic guess, so that a longer
// draft that may pay is tried once (its time is then measured and replaces
// the guess) instead of being ruled out by a line through noisy small sizes.
// Below the smallest measured size, or with nothing measured: the prior shape
// (a quarter step per extra row) through what is known.
double SpecPolicy::verify_ns(int rows) const {
  if (rows < 1 || rows > kMaxDraft + 1) return 0.0;
  auto at = [&](int r) {
    const double t = verify_ns_[static_cast<size_t>(r)];
    return t > 0.0 ? t : (r == 1 ? plain_ns_ : 0.0);
  };
  if (at(rows) > 0.0) return at(rows);
  int lo = 0, hi = 0, lowest = 0;
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (int r = 1; r <= kMaxDraft + 1; ++r) {
    const double t = at(r);
    if (t <= 0.0) continue;
    if (!lowest) lowest = r;
    if (r < rows) lo = r;
    if (r > rows && !hi) hi = r;
    n += 1;
    sx += r;
    sy += t;
    sxx += double(r) * r;
    sxy += r * t;
  }
  if (lo && hi) return at(lo) + (at(hi) - at(lo)) * double(rows - lo) / double(hi - lo);
  if (lo) {
    // One row's time without recursing into unit_ns(): plain, else the prior
    // shape through the smallest measured size.
    const double unit = plain_ns_ > 0.0 ? plain_ns_ : at(lowest) / (1.0 + kExtraRow * (lowest - 1));
    double slope = kExploreRow * unit;
    if (n >= 2) slope = std::min(slope, std::max(0.0, (n * sxy - sx * sy) / (n * sxx - sx * sx)));
    return at(lo) + slope * (rows - lo);
  }
  double base = plain_ns_;  // the time of one row
  if (hi) base = at(hi) / (1.0 + kExtraRow * (hi - 1.0));
  if (base <= 0.0 && c_.prior_pass > 0.0) base = 1.0;  // nothing measured: costs in plain steps
  return base > 0.0 ? base * (1.0 + kExtraRow * (rows - 1)) : 0.0;
}

// A plain step's time: measured, else the one-row time the verify rows imply
// (the prior's shape through the measured ones), else 1: every cost is then a
// prior in plain steps, and only their ratios matter.
double SpecPolicy::unit_ns() const {
  if (plain_ns_ > 0.0) return plain_ns_;
  const double v2 = verify_ns(2);
  return v2 > 0.0 ? v2 / (1.0 + kExtraRow) : 1.0;
}

double SpecPolicy::pass_ns() const {
  if (pass_ns_ > 0.0) return pass_ns_;
  return c_.prior_pass > 0.0 ? c_.prior_pass * unit_ns() : 0.0;
}

double SpecPolicy::round_ns(int g) const {
  if (given_) return g >= 1 && g <= c_.g_max ? given_ns_[static_cast<size_t>(g)] : 0.0;
  const double v = verify_ns(g + 1);
  const double p = pass_ns();
  if (v <= 0.0 || p <= 0.0) return 0.0;
  return v + p * (c_.one_pass_draft ? 1.0 : double(g));
}

bool SpecPolicy::pays_if_all_accepted(double plain_rate) const {
  for (int g = 1; g <= c_.g_max; ++g) {
    const double t = best_ns_[static_cast<size_t>(g)];
    if (t > 0.0 && double(g + 1) / t > plain_rate) return true;
  }
  return false;
}

int SpecPolicy::best_g(double* rate) const {
  // Measured clocks: a draft at most one token longer than the largest
  // verify measured, so the optimistic guess past it is tested one size at a
  // time (a guess several sizes out would be tried before the sizes between
  // were measured, and a slow one would then discredit them all).
  int g_hi = c_.g_max;
  if (!fixed_) {
    int largest = plain_ns_ > 0.0 ? 1 : 0;
    for (int r = 1; r <= kMaxDraft + 1; ++r)
      if (verify_ns_[static_cast<size_t>(r)] > 0.0) largest = r;
    if (largest > 0) g_hi = std::min(g_hi, largest);
  }
  int best = 0;
  double br = 0.0;
  for (int g = 1; g <= g_hi; ++g) {
    const double t = round_ns(g);
    if (t <= 0.0) continue;
    const double r = expected_tokens(g) / t;
    if (r > br) {
      br = r;
      best = g;
    }
  }
  *rate = br;
  return best;
}

int SpecPolicy::choose() {
  double r = 0.0;
  const int g = best_g(&r);
  int pick;
  if (g == 0 || rounds_ == 0) {
    pick = c_.g_init;  // no round seen (or no cost known yet): draft to see and measure one
    // With given costs, not when even drafts that were all accepted would not
    // pay: the round would only cost (a server slot's first round also feeds
    // the draft the whole prompt).
    if (given_ && plain_ns_ > 0.0 && !pays_if_all_accepted(1.0 / plain_ns_)) pick = 0;
  } else if (given_ && plain_ns_ <= 0.0) {
    pick = 0;  // what drafting competes with is not measured yet: a plain step measures it
  } else {
    const double plain_rate = 1.0 / unit_ns();
    // A few rounds of evidence before giving up on drafting: the prior alone
    // must not switch it off.
    const bool evidence = reach_[1] >= c_.min_evidence;
    if (on_ && evidence && r < plain_rate * (1.0 - c_.margin)) {
      on_ = false;
      since_probe_ = 0;
      probe_gap_ = std::min(c_.probe_first, c_.probe_every);
    } else if (!on_ && r > plain_rate * (1.0 + c_.margin)) {
      on_ = true;
    }
    pick = g;
    if (on_ && plain_ns_ <= 0.0) {
      pick = 0;  // drafting looks worth it: a plain step measures what it competes with
    } else if (!on_) {
      // Off: plain steps, and now and then a probe round to see whether
      // acceptance came back; the gap doubles while probes fail.
      pick = 0;
      if (++since_probe_ >= probe_gap_) {
        since_probe_ = 0;
        probe_gap_ = std::min(2 * probe_gap_, c_.probe_every);
        // With given costs a probe is skipped when not even drafts that were
        // all accepted would pay: the costs keep drafting off, and what the
        // probe would learn about acceptance changes nothing (a server probe
        // also pays for the draft catching up on every token since it last
        // drafted).
        if (!given_ || pays_if_all_accepted(plain_rate)) pick = g;
      }
    }
  }
  ++hist_[static_cast<size_t>(pick)];
  return pick;
}

void SpecPolicy::fix_costs(double pass_ratio, double extra_row_ratio) {
  fixed_ = true;
  given_ = false;
  plain_ns_ = 1e6;  // the unit: any scale gives the same choices
  pass_ns_ = std::max(1e-6, pass_ratio) * plain_ns_;
  for (int r = 1; r <= kMaxDraft + 1; ++r)
    verify_ns_[static_cast<size_t>(r)] = plain_ns_ * (1.0 + std::max(0.0, extra_row_ratio) * (r - 1));
}

void SpecPolicy::set_costs(double plain_ns, std::span<const double> round_ns, std::span<const double> best_ns) {
  fixed_ = true;
  given_ = true;
  plain_ns_ = plain_ns > 0.0 ? plain_ns : 0.0;
  if (best_ns.empty()) best_ns = round_ns;
  given_ns_.fill(0.0);
  best_ns_.fill(0.0);
  for (size_t g = 1; g < std::min(round_ns.size(), given_ns_.size()); ++g)
    given_ns_[g] = round_ns[g] > 0.0 ? round_ns[g] : 0.0;
  for (size_t g = 1; g < std::min(best_ns.size(), best_ns_.size()); ++g)
    best_ns_[g] = best_ns[g] > 0.0 ? best_ns[g] : 0.0;
}

// The first time of each kind is dropped: it includes building the plan of
// that shape (and a cold cache), which later steps never pay.
void SpecPolicy::plain_step(int64_t ns) {
  if (!fixed_ && ns > 0 && seen_plain_++ > 0) plain_ns_ = ema(plain_ns_, double(ns), kCostWeight);
}

void SpecPolicy::drafted(int passes, int64_t ns) {
  if (!fixed_ && passes > 0 && ns > 0 && seen_pass_++ > 0) pass_ns_ = ema(pass_ns_, double(ns) / passes, kCostWeight);
}

void SpecPolicy::verified(int rows, int64_t ns) {
  if (fixed_ || rows < 1 || rows > kMaxDraft + 1 || ns <= 0) return;
  if (seen_verify_[static_cast<size_t>(rows)]++ == 0) return;
  double& v = verify_ns_[static_cast<size_t>(rows)];
  v = ema(v, double(ns), kCostWeight);
}

void SpecPolicy::accepted(int g, int a) {
  ++rounds_;
  g = std::clamp(g, 0, c_.g_max);
  a = std::clamp(a, 0, g);
  const double keep = 1.0 - c_.forget;
  for (int j = 1; j <= c_.g_max; ++j) {
    reach_[static_cast<size_t>(j)] *= keep;
    pass_[static_cast<size_t>(j)] *= keep;
  }
  // Drafts 1..a accepted; draft a + 1 (if proposed) reached and rejected.
  for (int j = 1; j <= std::min(a + 1, g); ++j) reach_[static_cast<size_t>(j)] += 1.0;
  for (int j = 1; j <= a; ++j) pass_[static_cast<size_t>(j)] += 1.0;
}

}  // namespace kestrel
