// Helpers shared by the model-level tests: loading the shared stories260K
// files, running batches, comparing logits.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "runtime/engine/context.h"
#include "runtime/model/model.h"

namespace kestrel::testutil {

// ../shared, or $KESTREL_SHARED_DIR when set (a copy of the tree run elsewhere).
inline std::string shared_path(const std::string& rel) {
  const char* env = std::getenv("KESTREL_SHARED_DIR");
  return std::string(env && *env ? env : KESTREL_SHARED_DIR) + "/" + rel;
}

inline bool file_exists(const std::string& p) {
  std::FILE* f = std::fopen(p.c_str(), "rb");
  if (!f) return false;
  std::fclose(f);
  return true;
}

// Normalized mean squared error of b against the reference a.
inline double nmse(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(a[i]) * a[i];
  }
  return den > 0 ? num / den : num;
}

inline double log_softmax_at(const float* logits, int64_t n, int32_t id) {
  double mx = logits[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(logits[i]) - mx);
  return static_cast<double>(logits[id]) - mx - std::log(s);
}

inline int32_t argmax(const float* x, int64_t n) {
  int32_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = static_cast<int32_t>(i);
  return best;
}

// Runs ids as one batch on sequence seq starting at pos0, keeping every logit row.
inline Status decode_all(Context& ctx, const std::vector<int32_t>& ids, int32_t pos0, int32_t seq,
                         std::vector<float>* logits) {
  const int32_t n = static_cast<int32_t>(ids.size());
  std::vector<int32_t> pos(ids.size()), seqs(ids.size(), seq);
  std::vector<int8_t> flags(ids.size(), 1);
  for (int32_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = pos0 + i;
  BatchView b{n, ids.data(), pos.data(), seqs.data(), flags.data()};
  KESTREL_TRY(ctx.decode(b));
  const int64_t V = ctx.model().hparams().n_vocab;
  logits->resize(static_cast<size_t>(n * V));
  for (int32_t i = 0; i < n; ++i)
    std::copy(ctx.logits(i), ctx.logits(i) + V, logits->begin() + static_cast<ptrdiff_t>(i * V));
  return {};
}

// Logits of a two-sequence trace (context of n_seq_max >= 2, n_ctx >= 32):
// a batch of 19 tokens of sequence 0 and 6 of sequence 1 with every row's
// logits, positions 4..8 of sequence 0 removed (its later KV cells move down),
// then three single-token steps on each sequence. Ids from `seed`.
inline std::vector<float> two_sequence_trace(Context& c, uint32_t seed) {
  const int64_t V = c.model().hparams().n_vocab;
  std::vector<int32_t> ids, pos, seq;
  for (int32_t i = 0; i < 25; ++i) {
    ids.push_back(static_cast<int32_t>((seed * 2654435761u + static_cast<uint32_t>(i) * 40503u) % static_cast<uint32_t>(V)));
    pos.push_back(i < 19 ? i : i - 19);
    seq.push_back(i < 19 ? 0 : 1);
  }
  std::vector<int8_t> want(ids.size(), 1);
  std::vector<float> out;
  if (!c.decode(BatchView{25, ids.data(), pos.data(), seq.data(), want.data()}).ok()) return out;
  out.assign(c.logits(0), c.logits(0) + V * 25);
  c.kv().seq_rm(0, 4, 9);
  std::vector<float> l;
  for (int32_t step = 0; step < 3; ++step) {
    if (!decode_all(c, {ids[static_cast<size_t>(step)]}, 19 + step, 0, &l).ok()) return {};
    out.insert(out.end(), l.begin(), l.end());
    if (!decode_all(c, {ids[static_cast<size_t>(step + 1)]}, 6 + step, 1, &l).ok()) return {};
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

}  // namespace kestrel::testutil
