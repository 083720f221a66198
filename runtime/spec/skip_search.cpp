// Self-speculative decoding: choosing the block of layers to skip (see
// search_skip_block in speculative.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/spec/speculative.h"

namespace kestrel {

namespace {

// Argmax (lowest index on ties) of each of the n logit rows of the last decode.
void argmax_rows(const Context& ctx, int32_t n, int64_t V, std::vector<int32_t>& out) {
  out.assign(static_cast<size_t>(n), 0);
  for (int32_t i = 0; i < n; ++i) {
    const float* l = ctx.logits(i);
    int32_t best = 0;
    for (int64_t v = 1; v < V; ++v)
      if (l[v] > l[best]) best = static_cast<int32_t>(v);
    out[static_cast<size_t>(i)] = best;
  }
}

Status decode_all(Context& ctx, const std::vector<int32_t>& ids, std::vector<int32_t>& pos,
                  std::vector<int8_t>& flags, const PassVariant& variant = {}) {
  ctx.kv().seq_rm(0, 0, -1);
  BatchView b;
  b.n_tokens = static_cast<int32_t>(ids.size());
  b.tokens = ids.data();
  b.pos = pos.data();
  b.logits = flags.data();
  return ctx.decode(b, variant);
}

}  // namespace

Expected<std::vector<SkipCandidate>> search_skip_block(Context& ctx, const std::vector<int32_t>& calib_in) {
  const int32_t N = static_cast<int32_t>(ctx.model().hparams().n_layer);
  const int64_t V = ctx.model().hparams().n_vocab;
  if (N < 3) return Status::unsupported("self-speculation needs at least 3 layers (the model has %d)", N);
  std::vector<int32_t> calib(calib_in.begin(),
                             calib_in.begin() + std::min<int64_t>((int64_t)calib_in.size(), std::min<int64_t>(32, ctx.n_ctx())));
  if (calib.size() < 4) return Status::invalid_argument("calibration text of %zu tokens (at least 4)", calib.size());
  const int32_t n = static_cast<int32_t>(calib.size());
  std::vector<int32_t> pos(calib.size());
  for (int32_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = i;
  std::vector<int8_t> flags(calib.size(), 1);

  KESTREL_TRY(decode_all(ctx, calib, pos, flags));
  std::vector<int32_t> ref, got;
  argmax_rows(ctx, n, V, ref);

  // Blocks [s, s + L - 1] inside [1, N - 2], L from N/8 to N/2 in steps of
  // N/8, starts in steps of N/6: about 17 candidates for 18 layers.
  const int32_t step = std::max(1, N / 8), sstep = std::max(1, N / 6);
  std::vector<SkipCandidate> out;
  for (int32_t L = step; L <= std::max(1, N / 2); L += step)
    for (int32_t s = 1; s + L - 1 <= N - 2; s += sstep) {
      PassVariant skip;
      skip.skip.assign(static_cast<size_t>(N), false);
      for (int32_t l = s; l < s + L; ++l) skip.skip[static_cast<size_t>(l)] = true;
      KESTREL_TRY(decode_all(ctx, calib, pos, flags, skip));
      argmax_rows(ctx, n, V, got);
      int32_t agree = 0;
      for (int32_t i = 0; i < n; ++i) agree += got[static_cast<size_t>(i)] == ref[static_cast<size_t>(i)] ? 1 : 0;
      SkipCandidate c;
      c.begin = s;
      c.end = s + L - 1;
      c.agreement = double(agree) / n;
      // Tokens per round at g = 4 over the cost of 4 draft passes and 1 verify.
      const double a = std::min(c.agreement, 0.999);
      const int g = 4;
      const double per_round = (1.0 - std::pow(a, g + 1)) / (1.0 - a);
      const double draft_cost = double(N - L) / N;
      c.est_speedup = per_round / (g * draft_cost + 1.0);
      out.push_back(c);
    }
  ctx.kv().seq_rm(0, 0, -1);
  if (out.empty()) return Status::unsupported("no layer block to skip in a %d-layer model", N);
  std::stable_sort(out.begin(), out.end(),
                   [](const SkipCandidate& x, const SkipCandidate& y) { return x.est_speedup > y.est_speedup; });
  return out;
}

}  // namespace kestrel
