// spec_verify benchmark: the fused verify op against an unfused baseline on the
// same backend, threads and inputs, timed interleaved in one run.
//
// Unfused baseline (what a straightforward implementation does): the cpu
// softmax op over all g+1 target rows and all g draft rows (two full
// probability matrices written), gather p_j(x_j) and q_j(x_j), the same accept
// loop, then a materialized residual row max(0, p - q) (or the bonus row) and a
// multinomial draw by a cumulative scan. Same uniforms, so both take the same
// path; the line checks that they agree on the outcome.
//
// Inputs: target logits uniform in [-4, 4], draft = target + uniform noise in
// [-1, 1], drafted ids drawn from the draft rows: a mix of acceptances and
// rejections as on a real model. Stochastic rule, temperature 1.
//
//   bench_spec_verify                       # V in {512, 32000, 151936, 262144}, g 1..8, 1 and 2 threads
//   bench_spec_verify -V 151936 -g 4 -t 2 --reps 31
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ops/backend.h"

using namespace kestrel;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Case {
  int64_t V, g;
  std::vector<float> target, draft, P, Q, resid;
  std::vector<int32_t> ids;
};

Case make_case(int64_t V, int64_t g, std::mt19937& rng) {
  Case c{V, g, {}, {}, {}, {}, {}, {}};
  std::uniform_real_distribution<float> u(-4.0f, 4.0f), nz(-1.0f, 1.0f);
  c.target.resize(size_t(V * (g + 1)));
  for (float& f : c.target) f = u(rng);
  c.draft.resize(size_t(V * g));
  for (size_t i = 0; i < c.draft.size(); ++i) c.draft[i] = c.target[i] + nz(rng);
  for (int64_t j = 0; j < g; ++j) {
    std::vector<double> w(static_cast<size_t>(V));
    for (int64_t i = 0; i < V; ++i) w[size_t(i)] = std::exp(double(c.draft[size_t(j * V + i)]));
    std::discrete_distribution<int32_t> dd(w.begin(), w.end());
    c.ids.push_back(dd(rng));
  }
  c.P.resize(c.target.size());
  c.Q.resize(c.draft.size());
  c.resid.resize(size_t(V));
  return c;
}

// The unfused baseline; returns {n_accepted, next}.
std::pair<int, int> unfused(Backend& be, Case& c, uint64_t seed) {
  const int64_t V = c.V, g = c.g;
  Tensor t = make_tensor(DType::F32, c.target.data(), V, g + 1), d = make_tensor(DType::F32, c.draft.data(), V, g);
  Tensor P = make_tensor(DType::F32, c.P.data(), V, g + 1), Q = make_tensor(DType::F32, c.Q.data(), V, g);
  SoftmaxParams sp;
  if (!be.run(OpCall{OpId::softmax, &P, {&t}, 1, &sp}).ok()) return {-1, -1};
  if (!be.run(OpCall{OpId::softmax, &Q, {&d}, 1, &sp}).ok()) return {-1, -1};
  auto multinomial = [&](const float* w, float u) {
    double total = 0;
    for (int64_t i = 0; i < V; ++i) total += w[i];
    const double target = double(u) * total;
    double cum = 0;
    for (int64_t i = 0; i < V; ++i) {
      cum += w[i];
      if (cum > target) return int(i);
    }
    return int(V - 1);
  };
  for (int64_t j = 0; j < g; ++j) {
    const float pj = c.P[size_t(j * V + c.ids[size_t(j)])], qj = c.Q[size_t(j * V + c.ids[size_t(j)])];
    if (spec_uniform(seed, int32_t(j), 0) * qj <= pj) continue;
    const float* pr = c.P.data() + j * V;
    const float* qr = c.Q.data() + j * V;
    for (int64_t i = 0; i < V; ++i) c.resid[size_t(i)] = std::max(0.0f, pr[i] - qr[i]);
    return {int(j), multinomial(c.resid.data(), spec_uniform(seed, int32_t(j), 1))};
  }
  return {int(g), multinomial(c.P.data() + g * V, spec_uniform(seed, int32_t(g), 1))};
}

std::pair<int, int> fused(Backend& be, Case& c, uint64_t seed) {
  Tensor t = make_tensor(DType::F32, c.target.data(), c.V, c.g + 1), d = make_tensor(DType::F32, c.draft.data(), c.V, c.g);
  Tensor x = make_tensor(DType::I32, c.ids.data(), c.g);
  int32_t out[2] = {-1, -1};
  Tensor o = make_tensor(DType::I32, out, 2);
  SpecVerifyParams p;
  p.seed = seed;
  if (!be.run(OpCall{OpId::spec_verify, &o, {&t, &x, &d}, 3, &p}).ok()) return {-1, -1};
  return {out[0], out[1]};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"spec_verify: fused verify op vs unfused baseline"};
  std::vector<int64_t> vs{512, 32000, 151936, 262144};
  std::vector<int64_t> gs{1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<int> threads{1, 2};
  int reps = 15;
  app.add_option("-V,--vocab", vs, "vocabulary sizes");
  app.add_option("-g,--draft", gs, "draft lengths");
  app.add_option("-t,--threads", threads, "thread counts");
  app.add_option("--reps", reps, "timed samples per variant (median reported)")->check(CLI::Range(1, 1000));
  CLI11_PARSE(app, argc, argv);

  std::printf("%-8s %2s %2s %10s %12s %12s %7s  %s\n", "V", "g", "t", "accepted", "fused_us", "unfused_us", "ratio",
              "agree");
  std::mt19937 rng(42);
  for (int nt : threads) {
    BackendOptions bo;
    bo.n_threads = nt;
    auto be = backend_cpu().create(bo);
    if (!be) {
      std::fprintf(stderr, "cpu backend: %s\n", be.status().to_string().c_str());
      return 1;
    }
    for (int64_t V : vs)
      for (int64_t g : gs) {
        Case c = make_case(V, g, rng);
        const uint64_t seed = uint64_t(V * 31 + g);
        const auto rf = fused(**be, c, seed), ru = unfused(**be, c, seed);
        // Calls per sample: about 5 ms of work.
        double t0 = now_s();
        fused(**be, c, seed);
        const int calls = std::clamp(int(5e-3 / std::max(now_s() - t0, 1e-7)), 1, 10000);
        std::vector<double> tf, tu;
        for (int r = 0; r < reps; ++r) {
          t0 = now_s();
          for (int k = 0; k < calls; ++k) fused(**be, c, seed);
          tf.push_back((now_s() - t0) / calls);
          t0 = now_s();
          for (int k = 0; k < calls; ++k) unfused(**be, c, seed);
          tu.push_back((now_s() - t0) / calls);
        }
        const double mf = median(tf) * 1e6, mu = median(tu) * 1e6;
        std::printf("%-8lld %2lld %2d %6d/%-3lld %12.1f %12.1f %6.2fx  %s\n", (long long)V, (long long)g, nt, rf.first,
                    (long long)g, mf, mu, mu / mf, rf == ru ? "yes" : "NO");
        std::fflush(stdout);
      }
  }
  return 0;
}
