// A spec_verify problem shared by the verify op tests (host and cuda): target
// and draft logits, drafted ids, and a run on a host backend.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "ops/backend.h"

namespace kestrel::testutil {

struct VerifyCase {
  std::vector<float> target, draft;  // [g+1][V], [g][V]
  std::vector<int32_t> ids;
  int64_t V = 0, g = 0;
  int32_t out[2] = {-7, -7};

  // Runs the op on a host backend; the result lands in out.
  Status run(Backend& b, const SpecVerifyParams& p, bool with_draft = true) {
    Tensor t = make_tensor(DType::F32, target.data(), V, g + 1);
    Tensor d = make_tensor(DType::F32, draft.data(), V, g);
    Tensor x = make_tensor(DType::I32, ids.data(), g);
    Tensor o = make_tensor(DType::I32, out, 2);
    OpCall c{OpId::spec_verify, &o, {&t, &x, &d}, with_draft ? 3 : 2, &p};
    return b.run(c);
  }
};

// Target logits in [-4, 4]; draft = target + noise of the given size, so that
// acceptance runs from almost always (small noise) to rare (large noise).
// Drafted ids are draws from the draft rows (through a plain softmax), as a
// real draft would make them.
inline VerifyCase make_verify_case(int64_t V, int64_t g, float noise, std::mt19937& rng) {
  VerifyCase v;
  v.V = V;
  v.g = g;
  std::uniform_real_distribution<float> u(-4.0f, 4.0f), nz(-noise, noise);
  v.target.resize(static_cast<size_t>(V * (g + 1)));
  for (float& f : v.target) f = u(rng);
  v.draft.resize(static_cast<size_t>(V * g));
  for (int64_t j = 0; j < g; ++j)
    for (int64_t i = 0; i < V; ++i)
      v.draft[static_cast<size_t>(j * V + i)] = v.target[static_cast<size_t>(j * V + i)] + nz(rng);
  for (int64_t j = 0; j < g; ++j) {
    std::vector<double> w(static_cast<size_t>(V));
    for (int64_t i = 0; i < V; ++i) w[static_cast<size_t>(i)] = std::exp(double(v.draft[static_cast<size_t>(j * V + i)]));
    std::discrete_distribution<int32_t> dd(w.begin(), w.end());
    v.ids.push_back(dd(rng));
  }
  return v;
}

// A named rule setting of the sweeps.
struct VerifyMode {
  const char* name;
  SpecVerifyParams p;
};
inline VerifyMode verify_mode(const char* name, bool greedy, float temperature = 1.0f, int32_t top_k = 0,
                              float top_p = 1.0f, bool sigmoid = false) {
  VerifyMode m{name, {}};
  m.p.greedy = greedy;
  m.p.temperature = temperature;
  m.p.top_k = top_k;
  m.p.top_p = top_p;
  m.p.sigmoid = sigmoid;
  return m;
}

}  // namespace kestrel::testutil
