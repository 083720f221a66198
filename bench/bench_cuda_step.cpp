// bench_cuda_step: a whole model on the GPU (the cuda context), step by step.
// Prints prompt and generation t/s (medians of --reps runs) with graphs and
// with node-by-node launches (their ratio is what launch gaps cost), and the
// time of one decode step and of one prompt step split by kernel (CUDA events
// around each node: op, weight type) against the step's wall time.
//
//   bench_cuda_step -m tinyllama-q4_0.gguf -p 512 -n 128 --reps 5
#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ops/cuda/cuda_backend.h"
#include "platform/timer.h"
#include "runtime/engine/context.h"

using namespace kestrel;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

std::unique_ptr<Context> make_ctx(const Model& m, int64_t n_ctx, int64_t n_batch, bool graphs) {
  ContextParams cp;
  cp.n_ctx = n_ctx;
  cp.n_batch = n_batch;
  cp.backend = BackendChoice::cuda;
  cp.gpu = &backend_cuda();
  cp.gpu_graphs = graphs;
  auto c = Context::create(m, cp);
  if (!c) {
    std::fprintf(stderr, "bench_cuda_step: %s\n", c.status().to_string().c_str());
    std::exit(1);
  }
  return std::move(c).value();
}

void check(const Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "bench_cuda_step: %s\n", s.to_string().c_str());
    std::exit(1);
  }
}

// Seconds for a prompt of n tokens (one decode call) from an empty cache.
double time_pp(Context& c, const std::vector<int32_t>& ids) {
  std::vector<int32_t> pos(ids.size());
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int32_t>(i);
  c.kv().clear();
  const int64_t t0 = now_ns();
  check(c.decode(BatchView{static_cast<int32_t>(ids.size()), ids.data(), pos.data(), nullptr, nullptr}));
  return (now_ns() - t0) / 1e9;
}

// Seconds for n one-token steps from an empty cache.
double time_tg(Context& c, int n) {
  c.kv().clear();
  int32_t tok = 1, pos = 0;
  const int64_t t0 = now_ns();
  for (int i = 0; i < n; ++i, ++pos) {
    check(c.decode(BatchView{1, &tok, &pos, nullptr, nullptr}));
    tok = (tok * 31 + 7) % static_cast<int32_t>(c.model().hparams().n_vocab);
  }
  return (now_ns() - t0) / 1e9;
}

// One step of the plan for n tokens, each node timed; printed by op and weight type.
void split(Context& c, int64_t n, double step_us) {
  PlanCache::Entry* e = c.plans().find(n, 1, PassVariant{});
  if (!e) return;
  std::vector<double> us;
  check(e->exe->time_nodes(us));
  // The executable alone (inputs up, graph replay, outputs down, sync)
  // against the context's whole step: the difference is host work per step.
  std::vector<double> ex;
  for (int r = 0; r < 25; ++r) {
    const int64_t t0 = now_ns();
    check(e->exe->execute());
    ex.push_back((now_ns() - t0) / 1e3);
  }
  const double exe_us = median(ex);
  Plan plan;
  std::vector<float> logits(static_cast<size_t>(c.model().hparams().n_vocab));
  check(c.forward().record(plan, n, 1, PassVariant{}, c.kv(), logits.data()).status());
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
  std::printf("\nstep of %lld token(s): %zu nodes, %.1f us in kernels (events), %.1f us wall per step (%.0f%% in kernels), "
              "%.1f us in the executable (inputs up, %s, outputs down)\n\n",
              (long long)n, us.size(), total, step_us, step_us > 0 ? 100.0 * total / step_us : 0.0, exe_us,
              e->exe->replays_graph() ? "graph replay" : "launches");
  std::printf("| node | count | us per step | share |\n|---|---|---|---|\n");
  for (const auto& [t, k] : rows)
    std::printf("| %s | %d | %.1f | %.1f%% |\n", k.c_str(), by[k].first, t, 100.0 * t / total);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"A whole model on the GPU: t/s with and without graphs, and each step split by kernel"};
  std::string path;
  int n_prompt = 512, n_gen = 128, reps = 5;
  app.add_option("-m,--model", path, "GGUF model")->required();
  app.add_option("-p", n_prompt, "prompt tokens")->check(CLI::Range(1, 8192));
  app.add_option("-n", n_gen, "generated tokens")->check(CLI::Range(1, 8192));
  app.add_option("--reps", reps, "repetitions (median)")->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);

  ModelParams mp;
  mp.use_mmap = false;
  auto m = Model::load(path, mp);
  if (!m) {
    std::fprintf(stderr, "bench_cuda_step: %s\n", m.status().to_string().c_str());
    return 1;
  }
  const Model& model = **m;
  const int64_t V = model.hparams().n_vocab;
  std::vector<int32_t> ids(static_cast<size_t>(n_prompt));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7919 + 13) % static_cast<size_t>(V));

  std::printf("model %s: %.1f MiB of weights\n\n", path.c_str(), model.weight_bytes() / 1048576.0);
  std::printf("| launch | pp%d t/s | tg%d t/s |\n|---|---|---|\n", n_prompt, n_gen);
  double tg_graph_us = 0, pp_us = 0;
  for (bool graphs : {true, false}) {
    auto c = make_ctx(model, n_prompt + n_gen + 1, n_prompt, graphs);
    std::vector<double> pp, tg;
    time_pp(*c, ids);  // warm-up: plans, graphs, cuBLAS
    time_tg(*c, 4);
    for (int r = 0; r < reps; ++r) pp.push_back(time_pp(*c, ids));
    for (int r = 0; r < reps; ++r) tg.push_back(time_tg(*c, n_gen));
    std::printf("| %s | %.1f | %.1f |\n", graphs ? "graphs" : "node by node", n_prompt / median(pp),
                n_gen / median(tg));
    if (graphs) {
      tg_graph_us = median(tg) / n_gen * 1e6;
      pp_us = median(pp) * 1e6;
      time_tg(*c, n_gen);  // the split's step sees the KV span the last timed step saw
      split(*c, 1, tg_graph_us);
      time_pp(*c, ids);
      split(*c, token_bucket(n_prompt, n_prompt), pp_us);
    }
  }
  return 0;
}
