#include "runtime/eval/kl_divergence.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

namespace kestrel::eval {

KlRow kl_row(const float* logits, int32_t n_vocab, const uint16_t* base_row, int32_t target) {
  int32_t imax = 0;
  for (int32_t i = 1; i < n_vocab; ++i)
    if (logits[i] > logits[imax]) imax = i;
  const double max_logit = logits[imax];
  double sum_exp = 0.0;
  for (int32_t i = 0; i < n_vocab; ++i) sum_exp += std::exp(static_cast<double>(logits[i]) - max_logit);
  const double log_z = max_logit + std::log(sum_exp);  // log-softmax l_i = logits[i] - log_z
  float scale, floor;
  std::memcpy(&scale, base_row, 4);
  std::memcpy(&floor, base_row + 2, 4);
  const uint16_t* q = base_row + 4;

  KlRow r;
  r.nll = log_z - logits[target];
  r.nll_base = -(static_cast<double>(scale) * q[target] + floor);
  double kld = 0.0;
  int32_t imax_base = 0;
  for (int32_t i = 0; i < n_vocab; ++i) {
    if (q[i] > q[imax_base]) imax_base = i;
    const double b = static_cast<double>(scale) * q[i] + floor;
    if (b > -16.0) kld += std::exp(b) * (b - (logits[i] - log_z));
  }
  r.kld = kld;
  r.same_top = imax == imax_base;
  r.p_diff = std::exp(-r.nll) - std::exp(-r.nll_base);
  return r;
}

void KlStats::add(const KlRow& r) {
  sum_nll_ += r.nll;
  sum_nll2_ += r.nll * r.nll;
  sum_nll_base_ += r.nll_base;
  sum_nll_base2_ += r.nll_base * r.nll_base;
  sum_nll_nll_base_ += r.nll * r.nll_base;
  sum_kld_ += r.kld;
  sum_kld2_ += r.kld * r.kld;
  sum_p_diff_ += r.p_diff;
  const double d2 = r.p_diff * r.p_diff;
  sum_p_diff2_ += d2;
  sum_p_diff4_ += d2 * d2;
  n_same_top_ += r.same_top ? 1 : 0;
  ++count_;
  kld_values_.push_back(static_cast<float>(r.kld));
  p_diff_values_.push_back(static_cast<float>(r.p_diff));
}

namespace {

std::pair<double, double> mean_and_uncertainty(double sum, double sum2, int64_t count) {
  if (count < 1) return {0.0, 0.0};
  const double n = static_cast<double>(count);
  const double f = sum / n;
  const double var = sum2 / n - f * f;
  return {f, var > 0 && count > 10 ? std::sqrt(var / (n - 1)) : 0.0};
}

double covariance(double a, double b, double ab, int64_t count) {
  if (count < 10) return 0.0;
  const double n = static_cast<double>(count);
  return (ab / n - (a / n) * (b / n)) / (n - 1);
}

// llama.cpp's interpolated percentile of sorted values; fraction 0.5 is the median.
double percentile(const std::vector<float>& v, double fraction) {
  if (v.empty()) return 0.0;
  if (fraction == 0.5)
    return v.size() % 2 == 0 ? 0.5 * (static_cast<double>(v[v.size() / 2]) + v[v.size() / 2 - 1]) : v[v.size() / 2];
  if (fraction <= 0) return v.front();
  if (fraction >= 1) return v.back();
  double p = fraction * static_cast<double>(v.size() - 1);
  const size_t ip = static_cast<size_t>(p);
  p -= static_cast<double>(ip);
  return (1 - p) * v[ip] + p * v[std::min(ip + 1, v.size() - 1)];
}

}  // namespace

KlSummary KlStats::summary(bool with_percentiles) const {
  KlSummary s;
  s.count = count_;
  if (count_ == 0) return s;
  const auto lp = mean_and_uncertainty(sum_nll_, sum_nll2_, count_);
  const auto lpb = mean_and_uncertainty(sum_nll_base_, sum_nll_base2_, count_);
  const double cov = covariance(sum_nll_, sum_nll_base_, sum_nll_nll_base_, count_);
  s.ppl = std::exp(lp.first);
  s.ppl_unc = s.ppl * lp.second;
  s.ppl_base = std::exp(lpb.first);
  s.ppl_base_unc = s.ppl_base * lpb.second;
  s.log_ppl_cor = lp.second > 0 && lpb.second > 0 ? cov / (lp.second * lpb.second) : 0.0;
  s.log_ppl_ratio = lp.first - lpb.first;
  s.log_ppl_ratio_unc = std::sqrt(std::max(0.0, lp.second * lp.second + lpb.second * lpb.second - 2.0 * cov));
  s.ppl_ratio = std::exp(s.log_ppl_ratio);
  s.ppl_ratio_unc = s.ppl_ratio * s.log_ppl_ratio_unc;
  s.ppl_diff = s.ppl - s.ppl_base;
  s.ppl_diff_unc = std::sqrt(
      std::max(0.0, s.ppl_unc * s.ppl_unc + s.ppl_base_unc * s.ppl_base_unc - 2.0 * s.ppl * s.ppl_base * cov));
  const auto kl = mean_and_uncertainty(sum_kld_, sum_kld2_, count_);
  s.kld = kl.first;
  s.kld_unc = kl.second;
  const auto dp = mean_and_uncertainty(sum_p_diff_, sum_p_diff2_, count_);
  s.p_diff = dp.first;
  s.p_diff_unc = dp.second;
  const auto mse = mean_and_uncertainty(sum_p_diff2_, sum_p_diff4_, count_);
  s.rms_p_diff = std::sqrt(mse.first);
  s.rms_p_diff_unc = s.rms_p_diff > 0 ? 0.5 / s.rms_p_diff * mse.second : 0.0;
  s.same_top = static_cast<double>(n_same_top_) / static_cast<double>(count_);
  s.same_top_unc = count_ > 1 ? std::sqrt(s.same_top * (1 - s.same_top) / static_cast<double>(count_ - 1)) : 0.0;
  if (with_percentiles) {
    std::vector<float> k = kld_values_, d = p_diff_values_;
    std::sort(k.begin(), k.end());
    std::sort(d.begin(), d.end());
    for (int i = 0; i < 11; ++i) s.kld_pct[i] = percentile(k, kKldPoints[i]);
    for (int i = 0; i < 13; ++i) s.p_diff_pct[i] = percentile(d, kDpPoints[i]);
  }
  return s;
}

}  // namespace kestrel::eval
