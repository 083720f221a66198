// bench_cuda_first_use: what a new batch shape costs a whole model on the GPU
// (the cuda context) before its steps reach their steady time. For each row
// count n (speculative verifies score every row of n = drafts + 1 tokens, a
// draft model catching up feeds up to 17), the wall time of the 1st use of
// the shape (the plan recorded, prepared and launched node by node), the 2nd
// (its graph captured and instantiated), and the median of uses 3..7 (graph
// replays), with every row's greedy id picked on the device (PassVariant::ids_out)
// and only the last row's logits otherwise. Shapes run in the order given after
// a 32-token prompt; each use decodes at the same positions (the cells are
// removed again), so only the shape's plan state differs between uses.
// CUDA_MODULE_LOADING=EAGER in the environment loads every kernel at start-up
// instead of at its first launch: the difference of the 1st-use column is what
// lazy loading costs there.
//
//   bench_cuda_first_use -m tinyllama-f16.gguf --rows 1 2 3 4 5 6 7 8 9 17
#include <algorithm>
#include <cstdio>
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

void check(const Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "bench_cuda_first_use: %s\n", s.to_string().c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"first-use cost of batch shapes of a whole model on the GPU"};
  std::string path;
  std::vector<int> rows{1, 2, 3, 4, 5, 6, 7, 8, 9, 17};
  bool ids = true;
  std::vector<int> split_rows;
  app.add_option("-m,--model", path, "GGUF model")->required();
  app.add_option("--rows", rows, "batch sizes, in this order")->check(CLI::Range(1, 256));
  app.add_option("--split", split_rows, "after the table: these row counts' steady step split by kernel")
      ->check(CLI::Range(1, 256));
  app.add_option("--ids", ids, "1: every row's greedy id on the device; 0: the last row's logits");
  CLI11_PARSE(app, argc, argv);

  const int64_t t_load = now_ns();
  ModelParams mp;
  mp.use_mmap = false;
  auto m = Model::load(path, mp);
  if (!m) {
    std::fprintf(stderr, "bench_cuda_first_use: %s\n", m.status().to_string().c_str());
    return 1;
  }
  const Model& model = **m;
  ContextParams cp;
  cp.n_ctx = 512;
  cp.n_batch = 256;
  cp.backend = BackendChoice::cuda;
  cp.gpu = &backend_cuda();
  auto c = Context::create(model, cp);
  if (!c) {
    std::fprintf(stderr, "bench_cuda_first_use: %s\n", c.status().to_string().c_str());
    return 1;
  }
  Context& ctx = **c;
  const int64_t V = model.hparams().n_vocab;
  std::printf("model %s: load + context %.1f ms\n", path.c_str(), (now_ns() - t_load) / 1e6);

  const int32_t n_prompt = 32;
  std::vector<int32_t> tok(256), pos(256);
  std::vector<int8_t> all(256, 1);
  for (size_t i = 0; i < tok.size(); ++i) tok[i] = static_cast<int32_t>((i * 7919 + 13) % static_cast<size_t>(V));
  for (int32_t i = 0; i < n_prompt; ++i) pos[static_cast<size_t>(i)] = i;
  int64_t t0 = now_ns();
  check(ctx.decode(BatchView{n_prompt, tok.data(), pos.data(), nullptr, nullptr}));
  std::printf("prompt of %d tokens (first use): %.2f ms\n\n", n_prompt, (now_ns() - t0) / 1e6);

  PassVariant pv;
  pv.ids_out = ids;
  std::printf("| rows | 1st use ms | 2nd use ms | uses 3-7 ms (median) | plans built | replaying |\n");
  std::printf("|---|---|---|---|---|---|\n");
  std::vector<double> steady;
  for (int n : rows) {
    for (int i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = n_prompt + i;
    BatchView b{n, tok.data() + n_prompt, pos.data(), nullptr, ids ? all.data() : nullptr};
    std::vector<double> ms;
    for (int use = 0; use < 7; ++use) {
      t0 = now_ns();
      check(ctx.decode(b, pv));
      ms.push_back((now_ns() - t0) / 1e6);
      ctx.kv().seq_rm(0, n_prompt, -1);
    }
    steady.push_back(median(std::vector<double>(ms.begin() + 2, ms.end())));
    std::printf("| %d | %.2f | %.2f | %.3f | %llu | %zu |\n", n, ms[0], ms[1], steady.back(),
                (unsigned long long)ctx.plans().n_built(), ctx.plans().n_replaying());
  }
  for (int n : split_rows) {
    const auto at = std::find(rows.begin(), rows.end(), n);
    if (at == rows.end()) continue;
    // The cells of the last use are gone: the split's step sees the prompt's span.
    const int64_t n_out = ids ? n : 1;
    if (!bench::print_node_split(ctx, n, n_out, pv, 1e3 * steady[static_cast<size_t>(at - rows.begin())])) return 1;
  }
  return 0;
}
