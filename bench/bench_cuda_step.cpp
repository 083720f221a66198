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

#include "bench/cuda_node_split.h"
#include "ops/cuda/cuda_backend.h"
#include "platform/timer.h"
#include "runtime/engine/context.h"

using namespace kestrel;
using bench::median;

namespace {

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
      bench::print_node_split(*c, 1, 1, PassVariant{}, tg_graph_us);
      time_pp(*c, ids);
      bench::print_node_split(*c, token_bucket(n_prompt, n_prompt), 1, PassVariant{}, pp_us);
    }
  }
  return 0;
}
