// Per-step row traces for bench_sched_trace: the rows N of each step's weight-bearing
// matmuls and the rows that go through the output head, as a server, speculative
// decoding and prompt processing produce them. Generated from a seed (the same trace
// every run), or read from a file of "N [out]" lines.
#pragma once

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace kestrel::bench {

struct Step {
  int64_t rows = 1;  // activation rows of every layer's matmuls
  int64_t out = 1;   // rows through the output head (0: none)
};

// A server with 1..8 clients arriving and finishing at random: each step decodes one token
// per client; a client that arrives brings a prompt of 16..48 tokens in the same step (one
// output row for it).
inline std::vector<Step> trace_server(int n_steps, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::uniform_int_distribution<int> prompt(16, 48);
  std::vector<Step> t;
  int clients = 1;
  for (int i = 0; i < n_steps; ++i) {
    int64_t extra = 0;
    if (clients < 8 && u(rng) < 0.12) {
      ++clients;
      extra = prompt(rng) - 1;  // the new client's prompt, its last token counted with the decoders
    }
    if (clients > 1 && u(rng) < 0.10) --clients;
    t.push_back(Step{clients + extra, clients});
  }
  return t;
}

// Speculative decoding with adaptive drafts: each step verifies g + 1 rows (g drafted
// tokens and the pending one), every row with logits; g follows a random walk in 0..8 as
// acceptance rises and falls.
inline std::vector<Step> trace_spec(int n_steps, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> walk(-2, 2);
  std::vector<Step> t;
  int g = 3;
  for (int i = 0; i < n_steps; ++i) {
    g = std::clamp(g + walk(rng), 0, 8);
    t.push_back(Step{g + 1, g + 1});
  }
  return t;
}

// Prompts in chunks: a prompt of 96..160 tokens in chunks of up to 64 rows (one output
// row, on the last chunk), then 12 decoding steps; repeated.
inline std::vector<Step> trace_prompts(int n_steps, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> len(96, 160);
  std::vector<Step> t;
  while (static_cast<int>(t.size()) < n_steps) {
    for (int left = len(rng); left > 0 && static_cast<int>(t.size()) < n_steps; left -= 64)
      t.push_back(Step{std::min(left, 64), left <= 64 ? 1 : 0});
    for (int i = 0; i < 12 && static_cast<int>(t.size()) < n_steps; ++i) t.push_back(Step{1, 1});
  }
  return t;
}

// "N" or "N out" per line ('#' comments); empty on a malformed line.
inline std::vector<Step> trace_file(const std::string& path, std::string* error) {
  std::ifstream f(path);
  std::vector<Step> t;
  if (!f) {
    *error = "cannot open " + path;
    return {};
  }
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    Step s;
    if (!(ss >> s.rows) || s.rows < 1 || s.rows > 4096) {
      *error = "bad line: " + line;
      return {};
    }
    int64_t out = 0;
    s.out = ss >> out ? out : s.rows;
    if (s.out < 0 || s.out > s.rows) {
      *error = "bad output rows: " + line;
      return {};
    }
    t.push_back(s);
  }
  return t;
}

}  // namespace kestrel::bench
