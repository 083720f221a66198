// KL divergence of a model's logits from a base model's stored log-probabilities
// (logits_file.h), with the statistics llama-perplexity --kl-divergence prints:
// PPL(Q) and PPL(base) with their correlation, ratio and difference; mean KLD
// and its percentiles; the change Δp of the target token's probability, its
// percentiles and RMS; and how often both put the same token on top.
//
// Per position, with base log-probabilities b_i = scale * q_i + floor (only
// those above -16 count, as llama.cpp does) and the model's log-softmax l_i:
//   KLD = sum_i exp(b_i) (b_i - l_i),  Δp = p(target) - p_base(target).
// Uncertainties are llama.cpp's: mean +/- sqrt(var / (count - 1)) with var the
// population variance (0 for 10 positions or fewer).
//
//   KlStats s;
//   for each scored position: s.add(kl_row(logits, n_vocab, base_row, target));
//   const KlSummary sum = s.summary();
#pragma once

#include <cstdint>
#include <vector>

namespace kestrel::eval {

struct KlRow {
  double nll = 0.0;       // the model's -log p(target)
  double nll_base = 0.0;  // the base's, from the stored row
  double kld = 0.0;
  double p_diff = 0.0;    // p(target) - p_base(target)
  bool same_top = false;  // the same argmax (the first of equal maxima in each)
};

// base_row: one stored row [logprob_row_u16(n_vocab)].
KlRow kl_row(const float* logits, int32_t n_vocab, const uint16_t* base_row, int32_t target);

// Percentile points reported, as fractions (1 = maximum, 0 = minimum).
inline constexpr double kKldPoints[11] = {1, 0.999, 0.99, 0.95, 0.90, 0.5, 0.10, 0.05, 0.01, 0.001, 0};
inline constexpr double kDpPoints[13] = {1, 0.999, 0.99, 0.95, 0.90, 0.75, 0.5, 0.25, 0.10, 0.05, 0.01, 0.001, 0};

struct KlSummary {
  int64_t count = 0;
  double ppl = 0, ppl_unc = 0;                // PPL(Q)
  double ppl_base = 0, ppl_base_unc = 0;      // PPL(base)
  double log_ppl_cor = 0;                     // Cor(ln PPL(Q), ln PPL(base))
  double log_ppl_ratio = 0, log_ppl_ratio_unc = 0;  // mean ln(PPL(Q)/PPL(base))
  double ppl_ratio = 0, ppl_ratio_unc = 0;
  double ppl_diff = 0, ppl_diff_unc = 0;
  double kld = 0, kld_unc = 0;                // mean KLD (nats)
  double kld_pct[11] = {};                    // at kKldPoints (median: the middle value)
  double p_diff = 0, p_diff_unc = 0;          // mean Δp (fraction, not %)
  double p_diff_pct[13] = {};                 // at kDpPoints
  double rms_p_diff = 0, rms_p_diff_unc = 0;
  double same_top = 0, same_top_unc = 0;      // fraction
};

class KlStats {
 public:
  void add(const KlRow& r);
  int64_t count() const { return count_; }
  // Means and uncertainties always; percentiles when with_percentiles (sorts a copy).
  KlSummary summary(bool with_percentiles = true) const;

 private:
  double sum_nll_ = 0, sum_nll2_ = 0, sum_nll_base_ = 0, sum_nll_base2_ = 0, sum_nll_nll_base_ = 0;
  double sum_kld_ = 0, sum_kld2_ = 0, sum_p_diff_ = 0, sum_p_diff2_ = 0, sum_p_diff4_ = 0;
  int64_t n_same_top_ = 0, count_ = 0;
  std::vector<float> kld_values_, p_diff_values_;
};

}  // namespace kestrel::eval
