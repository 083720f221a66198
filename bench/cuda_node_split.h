// The GPU benches' shared pieces: a median, and one step of a context's plan
// timed node by node (CUDA events around each node), printed by op, weight
// type and shape against the step's wall time.
#pragma once

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "platform/timer.h"
#include "runtime/engine/context.h"

namespace kestrel::bench {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// The plan of (n, n_out, variant) that c built, one step of it timed node by
// node; wall_us is the caller's measure of the whole step. Returns false when
// c has no such plan or the timing failed (message on stderr).
inline bool print_node_split(Context& c, int64_t n, int64_t n_out, const PassVariant& variant, double wall_us) {
  PlanCache::Entry* e = c.plans().find(n, n_out, variant);
  if (!e) {
    std::fprintf(stderr, "no plan of %lld rows (%lld out) to split\n", (long long)n, (long long)n_out);
    return false;
  }
  std::vector<double> us;
  if (Status s = e->exe->time_nodes(us); !s.ok()) {
    std::fprintf(stderr, "time_nodes: %s\n", s.to_string().c_str());
    return false;
  }
  // The executable alone (inputs up, graph replay, outputs down, sync)
  // against the context's whole step: the difference is host work per step.
  std::vector<double> ex;
  for (int r = 0; r < 25; ++r) {
    const int64_t t0 = now_ns();
    if (Status s = e->exe->execute(); !s.ok()) {
      std::fprintf(stderr, "execute: %s\n", s.to_string().c_str());
      return false;
    }
    ex.push_back((now_ns() - t0) / 1e3);
  }
  // The same recording again, for the nodes' names (host buffers stand in).
  Plan plan;
  const auto V = static_cast<size_t>(c.model().hparams().n_vocab);
  std::vector<float> logits(V * static_cast<size_t>(n_out));
  std::vector<int32_t> ids(static_cast<size_t>(n_out));
  auto rec = c.forward().record(plan, n, n_out, variant, c.kv(), logits.data(), PassPart::whole, ids.data());
  if (!rec) {
    std::fprintf(stderr, "record: %s\n", rec.status().to_string().c_str());
    return false;
  }
  std::map<std::string, std::pair<int, double>> by;
  double total = 0;
  for (size_t i = 0; i < us.size() && i < plan.nodes().size(); ++i) {
    const PlanNode& node = plan.nodes()[i];
    std::string key = op_name(node.op);
    if (node.op == OpId::matmul || node.op == OpId::get_rows) key += std::string(" ") + dtype_name(node.src[0].type);
    if (node.op == OpId::matmul) key += " " + std::to_string(node.src[0].ne[1]) + "x" + std::to_string(node.src[0].ne[0]);
    by[key].first += 1;
    by[key].second += us[i];
    total += us[i];
  }
  std::vector<std::pair<double, std::string>> rows;
  for (const auto& [k, v] : by) rows.emplace_back(v.second, k);
  std::sort(rows.rbegin(), rows.rend());
  std::printf("\nstep of %lld token(s): %zu nodes, %.1f us in kernels (events), %.1f us wall per step (%.0f%% in "
              "kernels), %.1f us in the executable (inputs up, %s, outputs down)\n\n",
              (long long)n, us.size(), total, wall_us, wall_us > 0 ? 100.0 * total / wall_us : 0.0, median(ex),
              e->exe->replays_graph() ? "graph replay" : "launches");
  std::printf("| node | count | us per step | share |\n|---|---|---|---|\n");
  for (const auto& [t, k] : rows)
    std::printf("| %s | %d | %.1f | %.1f%% |\n", k.c_str(), by[k].first, t, 100.0 * t / total);
  return true;
}

}  // namespace kestrel::bench
