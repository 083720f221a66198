// kestrel bench: llama-bench style throughput. For each thread count:
//   pp<N>: one batch of N seeded random token ids, cache cleared each repetition;
//   tg<N>: N single-token decodes after clearing the cache.
// One untimed warm-up run per test (two on a GPU, whose plans run eagerly
// once and are captured as graphs on their second step), then r timed
// repetitions: mean +- stddev tokens/s, as a markdown table or JSON (one
// object per test).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "device_flags.h"

namespace kcli {
namespace {

struct BenchOptions {
  std::string model;
  int32_t n_prompt = 512;
  int32_t n_gen = 128;
  std::string threads;  // "1,2"; empty: the library's default
  int32_t reps = 5;
  std::string output = "md";
  bool no_mmap = false;  // read the weights into process memory
  ExpFlags exp;
  DeviceFlags device;
};

struct Result {
  std::string test;
  int threads;
  int n_prompt, n_gen;
  std::vector<double> samples_ts;
  double mean = 0, stddev = 0;
  std::string backend;
};

using Clock = std::chrono::steady_clock;

kestrel_status timed_pp(kestrel_context* ctx, const std::vector<kestrel_token>& ids, double* seconds) {
  std::vector<int32_t> pos(ids.size());
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int32_t>(i);
  if (kestrel_status s = kestrel_kv_seq_rm(ctx, -1, 0, -1); s != KESTREL_OK) return s;
  const kestrel_batch b{static_cast<int32_t>(ids.size()), ids.data(), pos.data(), nullptr, nullptr};
  const auto t0 = Clock::now();
  const kestrel_status s = kestrel_decode(ctx, &b);
  *seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return s;
}

kestrel_status timed_tg(kestrel_context* ctx, const std::vector<kestrel_token>& ids, double* seconds) {
  if (kestrel_status s = kestrel_kv_seq_rm(ctx, -1, 0, -1); s != KESTREL_OK) return s;
  const auto t0 = Clock::now();
  for (int32_t i = 0; i < static_cast<int32_t>(ids.size()); ++i) {
    const kestrel_batch b{1, &ids[static_cast<size_t>(i)], &i, nullptr, nullptr};
    if (kestrel_status s = kestrel_decode(ctx, &b); s != KESTREL_OK) return s;
    if (stop_requested()) return KESTREL_ERR_CANCELLED;
  }
  *seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return KESTREL_OK;
}

std::string model_label(const kestrel_model* m) {
  char arch[64] = "?";
  kestrel_model_meta_val_str(m, "general.architecture", arch, sizeof arch);
  // The weight type holding the most bytes names the file's precision.
  std::string main_type = "?";
  uint64_t best = 0;
  std::vector<std::pair<std::string, uint64_t>> bytes;
  for (int32_t i = 0; i < kestrel_model_tensor_count(m); ++i) {
    kestrel_tensor_info ti;
    if (kestrel_model_tensor_info(m, i, &ti) != KESTREL_OK) continue;
    bool found = false;
    for (auto& [name, n] : bytes)
      if (name == ti.type_name) n += ti.n_bytes, found = true;
    if (!found) bytes.emplace_back(ti.type_name, ti.n_bytes);
  }
  for (auto& [name, n] : bytes)
    if (n > best) best = n, main_type = name;
  char buf[128];
  const double p = static_cast<double>(kestrel_model_n_params(m));
  if (p >= 1e9) std::snprintf(buf, sizeof buf, "%s %.1fB %s", arch, p * 1e-9, main_type.c_str());
  else std::snprintf(buf, sizeof buf, "%s %.1fM %s", arch, p * 1e-6, main_type.c_str());
  return buf;
}

int bench(const BenchOptions& o) {
  if (o.output != "md" && o.output != "json") return usage_error("-o/--output: '" + o.output + "' is not md or json");
  std::vector<int> thread_counts;
  if (o.threads.empty()) {
    thread_counts.push_back(kestrel_context_default_params().n_threads);
  } else {
    std::string err;
    if (!parse_int_list(o.threads, "-t/--threads", thread_counts, err)) return usage_error(err);
  }
  if (o.n_prompt == 0 && o.n_gen == 0) return usage_error("-p and -n are both 0: nothing to measure");

  kestrel_model* model = nullptr;
  kestrel_model_params mp = kestrel_model_default_params();
  mp.use_mmap = o.no_mmap ? 0 : 1;
  if (int rc = load_model(o.model, mp, &model); rc != kExitOk) return rc;
  std::unique_ptr<kestrel_model, void (*)(kestrel_model*)> model_guard(model, kestrel_model_free);
  const int32_t n_vocab = kestrel_model_n_vocab(model);
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> pick(0, n_vocab - 1);
  std::vector<kestrel_token> pp_ids(static_cast<size_t>(o.n_prompt)), tg_ids(static_cast<size_t>(o.n_gen));
  for (auto& t : pp_ids) t = pick(rng);
  for (auto& t : tg_ids) t = pick(rng);

  std::vector<Result> results;
  for (int threads : thread_counts) {
    for (int kind = 0; kind < 2; ++kind) {
      const bool pp = kind == 0;
      const int n = pp ? o.n_prompt : o.n_gen;
      if (n == 0) continue;
      // A context per test, of the test's tokens (as llama-bench sizes its
      // contexts): tg runs over a KV cache of n_gen cells.
      kestrel_context_params cp = kestrel_context_default_params();
      cp.n_ctx = n;
      cp.n_batch = pp ? n : 1;
      cp.n_threads = threads;
      cp.n_threads_batch = threads;
      apply_exp_flags(o.exp, &cp, nullptr);
      apply_device_flags(o.device, &cp);
      kestrel_context* ctx = nullptr;
      if (kestrel_status s = kestrel_context_create(model, &cp, &ctx); s != KESTREL_OK)
        return report(s, "cannot create a context", nullptr);
      std::unique_ptr<kestrel_context, void (*)(kestrel_context*)> ctx_guard(ctx, kestrel_context_free);
      Result r{(pp ? "pp" : "tg") + std::to_string(n), threads, pp ? n : 0, pp ? 0 : n, {}, 0, 0,
               kestrel_context_backend(ctx)};
      const int warmups = std::string(kestrel_context_backend(ctx)) == "cuda" ? 2 : 1;
      for (int rep = -warmups; rep < o.reps; ++rep) {  // rep < 0: warm-up
        double sec = 0;
        const kestrel_status s = pp ? timed_pp(ctx, pp_ids, &sec) : timed_tg(ctx, tg_ids, &sec);
        if (s == KESTREL_ERR_CANCELLED || stop_requested()) {
          std::fprintf(stderr, "kestrel: interrupted\n");
          return kExitInterrupted;
        }
        if (s != KESTREL_OK) return report(s, "decode failed", ctx);
        if (rep >= 0) r.samples_ts.push_back(n / sec);
      }
      for (double v : r.samples_ts) r.mean += v;
      r.mean /= static_cast<double>(r.samples_ts.size());
      for (double v : r.samples_ts) r.stddev += (v - r.mean) * (v - r.mean);
      r.stddev = r.samples_ts.size() > 1 ? std::sqrt(r.stddev / static_cast<double>(r.samples_ts.size() - 1)) : 0.0;
      results.push_back(std::move(r));
    }
  }

  const std::string label = model_label(model);
  const uint64_t size = kestrel_model_size(model), n_params = kestrel_model_n_params(model);
  if (o.output == "json") {
    nlohmann::json arr = nlohmann::json::array();
    for (const Result& r : results)
      arr.push_back({{"model", label},         {"model_size", size},     {"model_n_params", n_params},
                     {"n_threads", r.threads}, {"test", r.test},         {"n_prompt", r.n_prompt},
                     {"n_gen", r.n_gen},       {"avg_ts", r.mean},       {"stddev_ts", r.stddev},
                     {"samples_ts", r.samples_ts}, {"build", kestrel_version()},
                     {"exp_tiers", exp_flags_summary(o.exp)}, {"backend", r.backend}});
    std::printf("%s\n", arr.dump(2).c_str());
  } else {
    char size_s[32], params_s[32];
    std::snprintf(size_s, sizeof size_s, "%.2f MiB", size / 1048576.0);
    if (n_params >= 1000000000ull) std::snprintf(params_s, sizeof params_s, "%.2f B", n_params * 1e-9);
    else std::snprintf(params_s, sizeof params_s, "%.2f M", n_params * 1e-6);
    std::printf("| %-24s | %12s | %10s | %-10s | %7s | %8s | %20s |\n", "model", "size", "params", "backend", "threads",
                "test", "t/s");
    std::printf("| %-24s | %12s | %10s | %-10s | %7s | %8s | %20s |\n", "------------------------", "-----------:",
                "---------:", "----------", "------:", "-------:", "-------------------:");
    for (const Result& r : results) {
      char ts[64];
      std::snprintf(ts, sizeof ts, "%.2f ± %.2f", r.mean, r.stddev);
      std::printf("| %-24s | %12s | %10s | %-10s | %7d | %8s | %20s |\n", label.c_str(), size_s, params_s,
                  r.backend.c_str(), r.threads, r.test.c_str(), ts);
    }
    std::printf("\nbuild: kestrel %s; exp tiers: %s\n", kestrel_version(), exp_flags_summary(o.exp).c_str());
  }
  return std::fflush(stdout) == 0 ? kExitOk : kExitRuntime;
}

}  // namespace

Command add_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* sub = app.add_subcommand("bench", "measure prompt (pp) and generation (tg) throughput");
  sub->add_option("-m,--model", o->model, "model file")->required();
  sub->add_option("-p,--n-prompt", o->n_prompt, "prompt tokens per pp test (0: skip)")->check(CLI::Range(0, 1 << 16));
  sub->add_option("-n,--n-gen", o->n_gen, "generated tokens per tg test (0: skip)")->check(CLI::Range(0, 1 << 16));
  sub->add_option("-t,--threads", o->threads, "comma-separated thread counts, e.g. 1,2,4");
  sub->add_option("-r,--repetitions", o->reps, "timed repetitions per test")->check(CLI::Range(1, 1000));
  sub->add_option("-o,--output", o->output, "md or json");
  sub->add_flag("--no-mmap", o->no_mmap, "read the weights into process memory instead of mapping the file");
  add_device_flags(sub, o->device);
  add_exp_flags(sub, o->exp);
  return {sub, [o] { return bench(*o); }};
}

}  // namespace kcli
