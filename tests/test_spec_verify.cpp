// spec_verify: the cpu kernel (every ISA variant this machine runs, 1 and 2
// threads) against the scalar reference at awkward vocabulary sizes and g =
// 1..8; the exact stochastic rule reproducing the target distribution (a
// chi-square test that a broken residual fails); bad data.
#include <catch2/catch.hpp>

#include <cstdlib>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ops/backend.h"
#include "tests/spec_verify_case.h"

using namespace kestrel;

namespace {

using Verify = testutil::VerifyCase;

std::vector<std::pair<std::string, std::unique_ptr<Backend>>> cpu_variants(int n_threads) {
  std::vector<std::pair<std::string, std::unique_ptr<Backend>>> out;
  for (CpuIsa isa : kCpuIsas) {
    if (cpu_isa_int_twin(isa)) continue;  // float kernels: its base variant's
    BackendOptions o;
    o.isa = isa;
    o.n_threads = n_threads;
    auto b = backend_cpu().create(o);
    if (!b) {
      WARN("SKIP: cpu variant " << cpu_isa_name(isa) << ": " << b.status().to_string());
      continue;
    }
    out.emplace_back(cpu_isa_name(isa), std::move(*b));
  }
  return out;
}

std::unique_ptr<Backend> make_ref() {
  auto r = backend_ref().create(BackendOptions{});
  REQUIRE(r);
  return std::move(*r);
}

}  // namespace

TEST_CASE("spec_verify: cpu kernels equal the reference", "[op][spec_verify][cpu]") {
  auto ref = make_ref();
  // Reduced sweep (emulator, sanitizers): V 32001 and the middle noise level drop out.
  // (KESTREL_TEST_EMULATED: the aarch64 preset under qemu; KESTREL_TEST_REDUCED: sanitizer runs.)
  const bool reduced = std::getenv("KESTREL_TEST_EMULATED") != nullptr || std::getenv("KESTREL_TEST_REDUCED") != nullptr;
  const std::vector<int64_t> vs = reduced ? std::vector<int64_t>{1, 7, 33, 1000} : std::vector<int64_t>{1, 7, 33, 1000, 32001};
  const std::vector<float> noises = reduced ? std::vector<float>{0.05f, 4.0f} : std::vector<float>{0.05f, 1.0f, 4.0f};
  using testutil::verify_mode;
  const std::vector<testutil::VerifyMode> modes = {
      verify_mode("greedy", true),
      verify_mode("stochastic", false),
      verify_mode("top-k 40, T 0.8", false, 0.8f, 40),
      verify_mode("top-p 0.9, T 1.2", false, 1.2f, 0, 0.9f),
      verify_mode("sigmoid", false, 1.0f, 0, 1.0f, true),
  };
  for (int nt : {1, 2}) {
    auto variants = cpu_variants(nt);
    for (auto& [isa, be] : variants) {
      int n_cases = 0, n_mismatch = 0, n_all_accepted = 0, n_rejected = 0;
      std::mt19937 rng(1234);
      for (int64_t V : vs)
        for (int64_t g = 1; g <= 8; ++g)
          for (const testutil::VerifyMode& m : modes)
            for (float noise : noises) {
              Verify c = testutil::make_verify_case(V, g, noise, rng);
              SpecVerifyParams p = m.p;
              p.seed = 1000u + uint64_t(n_cases);
              REQUIRE(c.run(*ref, p).ok());
              const int32_t want[2] = {c.out[0], c.out[1]};
              REQUIRE(c.run(*be, p).ok());
              ++n_cases;
              INFO(isa << " " << nt << " threads, V " << V << " g " << g << " " << m.name << " noise " << noise);
              REQUIRE(want[0] >= 0);
              REQUIRE(want[0] <= g);
              REQUIRE(want[1] >= 0);
              REQUIRE(want[1] < V);
              if (c.out[0] != want[0] || c.out[1] != want[1]) {
                ++n_mismatch;
                UNSCOPED_INFO("mismatch: got {" << c.out[0] << ", " << c.out[1] << "} want {" << want[0] << ", "
                                                << want[1] << "}");
              }
              if (want[0] == g) ++n_all_accepted;
              else ++n_rejected;
            }
      std::printf("spec_verify %s %d thread(s): %d cases, %d all accepted, %d with a rejection, %d mismatches\n",
                  isa.c_str(), nt, n_cases, n_all_accepted, n_rejected, n_mismatch);
      CHECK(n_mismatch == 0);
      // The sweep exercises both outcomes (else it would prove little).
      CHECK(n_all_accepted > 20);
      CHECK(n_rejected > 20);
    }
  }
}

TEST_CASE("spec_verify: greedy rule", "[op][spec_verify]") {
  auto ref = make_ref();
  for (int nt : {1, 2}) {
    std::vector<std::pair<std::string, std::unique_ptr<Backend>>> bs;
    bs.emplace_back("ref", make_ref());
    for (auto& v : cpu_variants(nt)) bs.push_back(std::move(v));
    for (auto& [name, be] : bs) {
      INFO(name << " " << nt << " threads");
      // V = 5000, g = 4; target row j's argmax is 10 + j, with a tie at 4000 + j
      // (lowest index wins).
      Verify c;
      c.V = 5000;
      c.g = 4;
      c.target.assign(size_t(c.V * 5), 0.0f);
      c.draft.assign(size_t(c.V * 4), 0.0f);
      for (int j = 0; j < 5; ++j) {
        c.target[size_t(j * c.V + 10 + j)] = 3.0f;
        c.target[size_t(j * c.V + 4000 + j)] = 3.0f;
      }
      SpecVerifyParams p;
      p.greedy = true;
      c.ids = {10, 11, 12, 13};
      REQUIRE(c.run(*be, p, false).ok());
      CHECK(c.out[0] == 4);
      CHECK(c.out[1] == 14);
      c.ids = {10, 11, 4002, 13};
      REQUIRE(c.run(*be, p, false).ok());
      CHECK(c.out[0] == 2);
      CHECK(c.out[1] == 12);
      c.ids = {9, 11, 12, 13};
      REQUIRE(c.run(*be, p, false).ok());
      CHECK(c.out[0] == 0);
      CHECK(c.out[1] == 10);
    }
  }
}

namespace {

// Softmax of logits / T restricted to the top-k set.
std::vector<double> dist(const float* l, int n, float t, int top_k) {
  std::vector<float> s(l, l + n);
  std::sort(s.begin(), s.end(), std::greater<float>());
  const float thr = top_k > 0 && top_k < n ? s[size_t(top_k - 1)] : -INFINITY;
  std::vector<double> p(static_cast<size_t>(n));
  double z = 0;
  for (int i = 0; i < n; ++i) z += p[size_t(i)] = l[i] >= thr ? std::exp(double(l[i]) / t) : 0.0;
  for (double& v : p) v /= z;
  return p;
}

double chi_square(const std::vector<int>& counts, const std::vector<double>& p) {
  int n = 0;
  for (int c : counts) n += c;
  double x2 = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0.0) {
      if (counts[i] > 0) return INFINITY;  // a token the target can never emit
      continue;
    }
    const double e = n * p[i];
    x2 += (counts[i] - e) * (counts[i] - e) / e;
  }
  return x2;
}

}  // namespace

// The emitted token at position 0 (x_0 if accepted, else the residual sample)
// must follow p_0; given position 0 was accepted, position 1 must follow p_1.
// 30000 trials, V = 6, g = 3, drafts drawn from q. Chi-square with 5 degrees
// of freedom (4 with top-k 5): the 0.001 critical values are 20.52 (18.47).
// The same trials with the residual replaced by p itself (a common mistake)
// are biased towards q and must fail the same test.
TEST_CASE("spec_verify: exact rule reproduces the target distribution", "[op][spec_verify][stat]") {
  const int V = 6, g = 3, trials = 30000;
  const float tl[4][V] = {{2.0f, 1.0f, 0.0f, -1.0f, 0.5f, -2.0f},
                          {0.0f, 1.5f, -0.5f, 0.3f, 1.0f, -1.0f},
                          {1.0f, 1.0f, 1.0f, -1.0f, 0.0f, 2.0f},
                          {-1.0f, 0.0f, 1.0f, 2.0f, 0.0f, 0.5f}};
  const float dl[3][V] = {{-1.0f, 0.0f, 2.0f, 1.0f, 0.0f, 0.0f},
                          {1.0f, -1.0f, 0.5f, 0.5f, 2.0f, 0.0f},
                          {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f}};
  struct Setting {
    float t;
    int top_k;
    double crit;
  };
  for (const Setting st : {Setting{1.0f, 0, 20.52}, Setting{0.7f, 5, 18.47}}) {
    std::vector<std::pair<std::string, std::unique_ptr<Backend>>> bs;
    bs.emplace_back("ref", make_ref());
    for (auto& v : cpu_variants(2)) bs.push_back(std::move(v));
    for (auto& [name, be] : bs) {
      INFO(name << ", T " << st.t << ", top-k " << st.top_k);
      std::vector<std::vector<double>> P, Q;
      for (int j = 0; j <= g; ++j) P.push_back(dist(tl[j], V, st.t, st.top_k));
      for (int j = 0; j < g; ++j) Q.push_back(dist(dl[j], V, st.t, st.top_k));
      Verify c;
      c.V = V;
      c.g = g;
      for (int j = 0; j <= g; ++j) c.target.insert(c.target.end(), tl[j], tl[j] + V);
      for (int j = 0; j < g; ++j) c.draft.insert(c.draft.end(), dl[j], dl[j] + V);
      c.ids.assign(g, 0);
      std::mt19937_64 rng(99);
      std::vector<int> pos0(V, 0), pos1(V, 0), broken0(V, 0);
      SpecVerifyParams p;
      p.temperature = st.t;
      p.top_k = st.top_k;
      for (int t = 0; t < trials; ++t) {
        for (int j = 0; j < g; ++j) {
          std::discrete_distribution<int32_t> dq(Q[size_t(j)].begin(), Q[size_t(j)].end());
          c.ids[size_t(j)] = dq(rng);
        }
        p.seed = 0x5eedull * uint64_t(t + 1);
        REQUIRE(c.run(*be, p).ok());
        const int a = c.out[0], next = c.out[1];
        REQUIRE(a >= 0);
        const int tok0 = a >= 1 ? c.ids[0] : next;
        pos0[size_t(tok0)]++;
        if (a >= 1) pos1[size_t(a >= 2 ? c.ids[1] : next)]++;
        // Broken residual: on a rejection at row 0, sample p_0 instead of
        // norm(max(0, p_0 - q_0)).
        if (a >= 1) {
          broken0[size_t(c.ids[0])]++;
        } else {
          std::discrete_distribution<int32_t> dp(P[0].begin(), P[0].end());
          broken0[size_t(dp(rng))]++;
        }
      }
      const double x0 = chi_square(pos0, P[0]), x1 = chi_square(pos1, P[1]), xb = chi_square(broken0, P[0]);
      std::printf("spec_verify chi-square (%s, T %.1f, top-k %d): position 0 %.2f, position 1 %.2f, broken residual %.1f "
                  "(critical %.2f)\n",
                  name.c_str(), st.t, st.top_k, x0, x1, xb, st.crit);
      CHECK(x0 < st.crit);
      CHECK(x1 < st.crit);
      CHECK(xb > st.crit);
    }
  }
}

TEST_CASE("spec_verify: bad data and bad parameters", "[op][spec_verify][bad]") {
  std::vector<std::pair<std::string, std::unique_ptr<Backend>>> bs;
  bs.emplace_back("ref", make_ref());
  for (auto& v : cpu_variants(2)) bs.push_back(std::move(v));
  std::mt19937 rng(5);
  for (auto& [name, be] : bs) {
    INFO(name);
    for (bool greedy : {false, true}) {
      SpecVerifyParams p;
      p.greedy = greedy;
      Verify c = testutil::make_verify_case(3000, 3, 1.0f, rng);
      c.target[1234] = NAN;
      REQUIRE(c.run(*be, p).ok());
      CHECK(c.out[0] == -1);
      CHECK(c.out[1] == -1);
      // The bonus row is read only when every draft passes: the target itself
      // as the draft (greedy: its argmaxes) accepts all.
      c = testutil::make_verify_case(3000, 3, 1.0f, rng);
      for (int j = 0; j < 3; ++j) {
        std::copy(c.target.begin() + j * 3000, c.target.begin() + (j + 1) * 3000, c.draft.begin() + j * 3000);
        c.ids[size_t(j)] = int32_t(std::max_element(c.target.begin() + j * 3000, c.target.begin() + (j + 1) * 3000) -
                                   (c.target.begin() + j * 3000));
      }
      c.target[size_t(3 * 3000 + 17)] = INFINITY;
      REQUIRE(c.run(*be, p).ok());
      CHECK(c.out[0] == -1);
      c.target[size_t(3 * 3000 + 17)] = 0.0f;
      REQUIRE(c.run(*be, p).ok());
      CHECK(c.out[0] == 3);
      // A NaN past the first rejection is never read.
      c.ids[0] = (c.ids[0] + 1) % 3000;
      if (greedy) {
        c.target[size_t(2 * 3000 + 5)] = NAN;
        REQUIRE(c.run(*be, p).ok());
        CHECK(c.out[0] == 0);
      }
      c = testutil::make_verify_case(3000, 3, 1.0f, rng);
      c.ids[1] = 3000;
      REQUIRE(c.run(*be, p).ok());
      CHECK(c.out[0] == -1);
      if (!greedy) {
        c = testutil::make_verify_case(3000, 3, 1.0f, rng);
        c.draft[size_t(0 * 3000 + 5)] = NAN;
        REQUIRE(c.run(*be, p).ok());
        CHECK(c.out[0] == -1);
      }
    }
    Verify c = testutil::make_verify_case(50, 2, 1.0f, rng);
    SpecVerifyParams p;
    CHECK(c.run(*be, p, false).code() == StatusCode::invalid_argument);  // stochastic without draft logits
    p.temperature = 0.0f;
    CHECK(!c.run(*be, p).ok());
    p.temperature = 1.0f;
    p.top_p = 1.5f;
    CHECK(!c.run(*be, p).ok());
    p.top_p = 1.0f;
    p.top_k = -1;
    CHECK(!c.run(*be, p).ok());
    p.top_k = 5;
    p.sigmoid = true;
    CHECK(!c.run(*be, p).ok());
  }
}
