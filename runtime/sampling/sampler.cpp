#include "runtime/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

#include "ops/cpu/exp_row.h"
#include "ops/ref/ref_exp.h"

namespace kestrel {

namespace {

bool is_finite(float x) { return std::isfinite(x); }

}  // namespace

Expected<SamplerParams> normalize_sampler_params(const SamplerParams& in, int32_t n_vocab) {
  if (n_vocab < 1) return Status::invalid_argument("sampler: vocabulary of %d tokens", n_vocab);
  SamplerParams p = in;
  if (!is_finite(p.temperature)) return Status::invalid_argument("sampler: temperature is not a finite number");
  if (!is_finite(p.top_p)) return Status::invalid_argument("sampler: top_p is not a finite number");
  if (!is_finite(p.min_p)) return Status::invalid_argument("sampler: min_p is not a finite number");
  if (!is_finite(p.repeat_penalty)) return Status::invalid_argument("sampler: repeat_penalty is not a finite number");
  if (p.repeat_penalty <= 0.0f)
    return Status::invalid_argument("sampler: repeat_penalty %g must be > 0 (1 = off)", (double)p.repeat_penalty);
  if (p.repeat_last_n < 0 || p.repeat_last_n > kMaxRepeatLastN)
    return Status::invalid_argument("sampler: repeat_last_n %d outside [0, %d]", p.repeat_last_n, kMaxRepeatLastN);
  if (!exp_tier_valid(p.exp))
    return Status::invalid_argument("sampler: exp tier %d is not exact (0), quake2 (1) or quake1 (2)", (int)p.exp);
  if (p.temperature < 0.0f) p.temperature = 0.0f;
  if (p.top_k < 0 || p.top_k >= n_vocab) p.top_k = 0;
  p.top_p = std::clamp(p.top_p, 0.0f, 1.0f);
  p.min_p = std::clamp(p.min_p, 0.0f, 1.0f);
  return p;
}

bool Sampler::op_params(SampleParams* out) const {
  const SamplerParams& p = params_;
  const bool penalty = p.repeat_penalty != 1.0f && p.repeat_last_n > 0;
  if (p.temperature < 1e-6f || p.top_k < 1 || p.top_k > kSampleMaxK || p.top_p <= 0.0f || penalty ||
      p.exp != ExpTier::exact)
    return false;
  *out = SampleParams{p.temperature, p.top_k, p.top_p, p.min_p};
  return true;
}

Status Sampler::init(int32_t n_vocab, const SamplerParams& params) {
  KESTREL_TRY_ASSIGN(params_, normalize_sampler_params(params, n_vocab));
  n_vocab_ = 0;
  const size_t V = static_cast<size_t>(n_vocab);
  try {
    cand_.assign(V, Candidate{});
    row_.assign(V, 0.0f);
    seen_.assign(V, 0u);
    bin_mass_.assign(kTopPBins, 0.0);
    history_.assign(static_cast<size_t>(params_.repeat_last_n), 0);
  } catch (const std::bad_alloc&) {
    cand_.clear();
    row_.clear();
    seen_.clear();
    history_.clear();
    return Status::out_of_memory("sampler buffers for %d tokens", n_vocab);
  }
  n_vocab_ = n_vocab;
  stamp_ = 0;
  reset();
  return {};
}

void Sampler::reset() {
  history_head_ = 0;
  history_size_ = 0;
  rng_.seed(params_.seed);
}

void Sampler::accept(int32_t token) {
  if (history_.empty()) return;
  history_[history_head_] = token;
  history_head_ = (history_head_ + 1) % history_.size();
  history_size_ = std::min(history_size_ + 1, history_.size());
}

double Sampler::uniform() {
  // The top 53 bits as a fraction: exactly uniform on a 2^-53 grid in [0, 1).
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

void Sampler::mark_penalized() {
  // Each distinct id of the history is penalized once, however often it
  // occurs (as in llama.cpp): positive logits are divided, negative ones
  // multiplied, so a penalty > 1 always makes the token less likely. The
  // stamp marks the penalized ids for this call without clearing an array.
  penalized_ = false;
  if (params_.repeat_penalty == 1.0f || history_size_ == 0) return;
  if (++stamp_ == 0) {
    std::fill(seen_.begin(), seen_.end(), 0u);
    stamp_ = 1;
  }
  for (size_t i = 0; i < history_size_; ++i) {
    const int32_t t = history_[i];
    if (t >= 0 && t < n_vocab_) seen_[static_cast<size_t>(t)] = stamp_;
  }
  penalized_ = true;
}

// Keeps the smallest set of most probable candidates whose mass reaches
// top_p * sum (at least one), moved to the front. Sorted candidates: a scan.
// Unsorted (no top-k before it): a histogram of the scaled logits over
// kTopPBins bins gives the bin where the cumulative mass crosses the target;
// the candidates of the bins above are moved to the front unsorted, and only
// the crossing bin is sorted to find the exact cut. O(n_vocab) for 262144
// tokens, where a full or growing partial sort is O(n log n). The kept set is
// the one a full sort (descending logit, then ascending id) would keep.
size_t Sampler::apply_top_p(size_t n, double sum, bool sorted, float max_logit) {
  const auto desc = [](const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  const double target = static_cast<double>(params_.top_p) * sum;
  Candidate* c = cand_.data();
  double cum = 0.0;
  if (sorted) {
    for (size_t i = 0; i < n; ++i) {
      cum += static_cast<double>(c[i].prob);
      if (cum >= target) return i + 1;
    }
    return n;  // rounding left the mass just short of the target
  }

  // Bin of a candidate by its distance below the largest logit, linear over
  // [min, max] (temperature only rescales it): bin 0 holds the most probable
  // tokens. In double, so the span of any two finite floats stays finite;
  // computed once per candidate, so the histogram and the partition agree.
  float min_logit = c[0].logit;
  for (size_t i = 1; i < n; ++i) min_logit = std::min(min_logit, c[i].logit);
  const double span = static_cast<double>(max_logit) - static_cast<double>(min_logit);
  const double scale = span > 0.0 ? static_cast<double>(kTopPBins) / span : 0.0;
  const auto bin_of = [&](const Candidate& x) {
    const double b = (static_cast<double>(max_logit) - static_cast<double>(x.logit)) * scale;
    return std::min(static_cast<size_t>(b), kTopPBins - 1);
  };
  std::fill(bin_mass_.begin(), bin_mass_.end(), 0.0);
  for (size_t i = 0; i < n; ++i) {
    c[i].bin = static_cast<uint32_t>(bin_of(c[i]));
    bin_mass_[c[i].bin] += static_cast<double>(c[i].prob);
  }
  size_t cross = kTopPBins - 1;
  double above = 0.0;  // mass of the bins before `cross`
  for (size_t b = 0; b < kTopPBins; ++b) {
    if (above + bin_mass_[b] >= target) {
      cross = b;
      break;
    }
    above += bin_mass_[b];
  }
  const auto cross_bin = static_cast<uint32_t>(cross);
  Candidate* mid = std::partition(c, c + n, [&](const Candidate& x) { return x.bin < cross_bin; });
  Candidate* end = std::partition(mid, c + n, [&](const Candidate& x) { return x.bin == cross_bin; });
  std::sort(mid, end, desc);
  cum = above;
  for (Candidate* p = mid; p < end; ++p) {
    cum += static_cast<double>(p->prob);
    if (cum >= target) return static_cast<size_t>(p - c) + 1;
  }
  return static_cast<size_t>(end - c);  // rounding: keep the whole crossing bin
}

Expected<int32_t> Sampler::sample(const float* logits) {
  size_t n = 0;
  double sum = 0.0;
  KESTREL_TRY_ASSIGN(const int32_t greedy, filter(logits, &n, &sum));
  if (greedy >= 0) return greedy;
  const Candidate* c = cand_.data();
  const double u = uniform() * sum;
  double cum = 0.0;
  for (size_t i = 0; i < n; ++i) {
    cum += static_cast<double>(c[i].prob);
    if (u < cum) return c[i].id;
  }
  return c[n - 1].id;  // u landed in the rounding gap at the end
}

Status Sampler::distribution(const float* logits, float* probs) {
  if (!probs) return Status::invalid_argument("sampler: probs is NULL");
  size_t n = 0;
  double sum = 0.0;
  KESTREL_TRY_ASSIGN(const int32_t greedy, filter(logits, &n, &sum));
  std::fill(probs, probs + n_vocab_, 0.0f);
  if (greedy >= 0) {
    probs[greedy] = 1.0f;
    return {};
  }
  for (size_t i = 0; i < n; ++i) probs[cand_[i].id] = static_cast<float>(static_cast<double>(cand_[i].prob) / sum);
  return {};
}

Expected<int32_t> Sampler::filter(const float* logits, size_t* n_kept, double* kept_sum) {
  if (n_vocab_ == 0) return Status::invalid_argument("sampler is not initialized");
  if (!logits) return Status::invalid_argument("sampler: logits are NULL");
  const size_t V = static_cast<size_t>(n_vocab_);
  // NaN / Inf have an all-ones exponent: one branch-free pass over the bits,
  // then a second pass only to name the first bad id.
  uint32_t bad = 0;
  for (size_t i = 0; i < V; ++i) {
    uint32_t bits;
    std::memcpy(&bits, logits + i, sizeof bits);
    bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  if (bad) {
    for (size_t i = 0; i < V; ++i)
      if (!is_finite(logits[i]))
        return Status::runtime_error("logit of token %zu is %s", i, std::isnan(logits[i]) ? "NaN" : "infinite");
  }
  mark_penalized();
  const float r = params_.repeat_penalty;
  const uint32_t* seen = seen_.data();
  const uint32_t stamp = stamp_;
  const bool pen = penalized_;
  const auto value = [&](size_t i) {
    const float l = logits[i];
    if (!pen || seen[i] != stamp) return l;
    return l > 0.0f ? l / r : l * r;
  };

  if (params_.temperature <= 0.0f) {
    size_t best = 0;  // the lowest id wins ties, as the argmax op does
    float best_v = value(0);
    if (pen) {
      for (size_t i = 1; i < V; ++i) {
        const float v = value(i);
        if (v > best_v) best_v = v, best = i;
      }
    } else {
      for (size_t i = 1; i < V; ++i)
        if (logits[i] > best_v) best_v = logits[i], best = i;
    }
    return static_cast<int32_t>(best);
  }

  const auto desc = [](const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  Candidate* c = cand_.data();
  size_t n = V;
  bool sorted = false;
  if (params_.top_k > 0) {
    // normalize() made 0 < top_k < n_vocab. A min-heap (under desc, the
    // worst kept candidate on top) of the k best seen so far: one compare per
    // logit, and only about k * ln(V / k) heap updates on typical rows.
    n = static_cast<size_t>(params_.top_k);
    for (size_t i = 0; i < n; ++i) c[i] = Candidate{value(i), 0.0f, static_cast<int32_t>(i), 0};
    std::make_heap(c, c + n, desc);
    for (size_t i = n; i < V; ++i) {
      const Candidate x{value(i), 0.0f, static_cast<int32_t>(i), 0};
      if (desc(x, c[0])) {
        std::pop_heap(c, c + n, desc);
        c[n - 1] = x;
        std::push_heap(c, c + n, desc);
      }
    }
    std::sort(c, c + n, desc);
    sorted = true;
  } else {
    for (size_t i = 0; i < V; ++i) c[i] = Candidate{value(i), 0.0f, static_cast<int32_t>(i), 0};
  }

  // Temperature, then probabilities relative to the most probable token
  // (which gets exactly exp(0) = 1).
  float max_logit = c[0].logit;
  for (size_t i = 1; i < n; ++i) max_logit = std::max(max_logit, c[i].logit);
  // The scaled differences (l - max) / T, in float when they provably fit
  // (the common case), exponentiated by the exp tier's row kernel; else in
  // double with std::exp whatever the tier: a tiny temperature makes 1/T
  // overflow a float (0 * inf would make the top token's probability NaN),
  // and the difference of two extreme finite logits overflows a float too.
  float min_logit = max_logit;
  for (size_t i = 0; i < n; ++i) min_logit = std::min(min_logit, c[i].logit);
  const double inv_t = 1.0 / static_cast<double>(params_.temperature);
  const double widest = (static_cast<double>(max_logit) - static_cast<double>(min_logit)) * inv_t;
  double sum = 0.0;
  float p_top = 1.0f;  // the tier's exp(0): the top token's weight
  if (inv_t < 1e30 && widest < 1e30) {
    const float inv_t_f = static_cast<float>(inv_t);
    float* row = row_.data();
    for (size_t i = 0; i < n; ++i) row[i] = (c[i].logit - max_logit) * inv_t_f;
    if (!cpu_exp_row(CpuIsa::auto_detect, params_.exp, row, row, static_cast<int64_t>(n)).ok()) {
      // No SIMD variant runs here: the scalar reference of the same tier.
      for (size_t i = 0; i < n; ++i) row[i] = ref::exp_tier(params_.exp, row[i]);
    }
    p_top = 0.0f;
    for (size_t i = 0; i < n; ++i) {
      c[i].prob = row[i];
      p_top = std::max(p_top, row[i]);
      sum += static_cast<double>(row[i]);
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      c[i].prob = static_cast<float>(std::exp((static_cast<double>(c[i].logit) - max_logit) * inv_t));
      sum += static_cast<double>(c[i].prob);
    }
  }

  if (params_.top_p < 1.0f) {
    n = apply_top_p(n, sum, sorted, max_logit);
    sum = 0.0;
    for (size_t i = 0; i < n; ++i) sum += static_cast<double>(c[i].prob);
  }

  if (params_.min_p > 0.0f) {
    // p_i / p_max >= min_p, p_max = p_top (1 on the exact tier; a quake
    // tier's exp(0) is within its error of 1). Every tier is monotonic, so the
    // top token is kept.
    const float threshold = params_.min_p * p_top;
    size_t j = 0;
    sum = 0.0;
    for (size_t i = 0; i < n; ++i) {
      if (c[i].prob >= threshold) {
        c[j++] = c[i];
        sum += static_cast<double>(c[i].prob);
      }
    }
    n = j;  // >= 1: the most probable token has prob 1
  }

  *n_kept = n;
  *kept_sum = sum;
  return -1;
}

}  // namespace kestrel
