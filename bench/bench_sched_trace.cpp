// Dynamic matmul scheduling against fixed mappings on traces of per-step row counts: each
// step runs every weight-bearing matmul of a real model (each layer's projections at the
// step's N rows, the output head at its output rows) on the cpu backend, routed by
//   static     the default policy's fixed row thresholds (what kestrel does without --sched);
//   static/tK  the fixed thresholds on K of the threads;
//   <cand>     one candidate for every step and shape ("dot8x1/t1": that kernel on 1 thread),
//              where every shape has it;
//   dynamic    the scheduler of --sched dynamic (the calibration cache, hysteresis, the
//              fixed thresholds' choice kept where nothing beats it by the margin);
//   oracle     per step and shape the candidate measured fastest at that N in this run.
// Attention and the other ops run the same under every policy and are left out. The
// policies alternate within each repetition in a fresh order; medians over repetitions.
//
//   bench_sched_trace -m qwen2.5-coder-1.5b.gguf -t 2                # the three built-in traces
//   bench_sched_trace -m model.gguf --traces spec --steps 40 --reps 5
//   bench_sched_trace -m model.gguf --trace-file steps.txt          # "N [out]" per line
//   bench_sched_trace -m model.gguf --trace-file steps.txt --picks  # and each (shape, N)'s picks
// Timing runs on a shared machine: flock -x /tmp/kestrel-timing.lock bench_sched_trace ...
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/sched_traces.h"
#include "ops/cpu/matmul_variants.h"
#include "platform/timer.h"
#include "runtime/model/model.h"
#include "runtime/sched/calib_cache.h"
#include "runtime/sched/calib_report.h"
#include "runtime/sched/calibration.h"
#include "runtime/sched/matmul_sched.h"

using namespace kestrel;
using kestrel::bench::Step;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The matmuls of one step in forward order: (weight, shape index, rows).
struct Call {
  Tensor w;
  size_t shape;
  bool head;
};

// Routes each call by (shape, rows) through a table; calls not in it get the default policy.
struct TableRouter final : MatmulRouter {
  const std::vector<ShapeCosts>* shapes = nullptr;
  std::map<std::pair<size_t, int64_t>, MatmulRoute> table;
  MatmulRoute route(const OpCall& call) override {
    const Tensor& w = *call.src[0];
    for (size_t s = 0; s < shapes->size(); ++s) {
      const MatmulShape& sh = (*shapes)[s].shape;
      if (sh.wtype != w.type || sh.k != w.ne[0] || sh.n != w.ne[1]) continue;
      auto it = table.find({s, call.src[1]->nrows()});
      return it == table.end() ? MatmulRoute{} : it->second;
    }
    return {};
  }
};

// Every candidate for every shape in one route each: the same for any rows.
struct LabelRouter final : MatmulRouter {
  std::vector<MatmulRoute> by_shape;  // (variant nullptr, threads 0) where the shape lacks the label
  const std::vector<ShapeCosts>* shapes = nullptr;
  MatmulRoute route(const OpCall& call) override {
    const Tensor& w = *call.src[0];
    for (size_t s = 0; s < shapes->size(); ++s) {
      const MatmulShape& sh = (*shapes)[s].shape;
      if (sh.wtype == w.type && sh.k == w.ne[0] && sh.n == w.ne[1]) return by_shape[s];
    }
    return {};
  }
};

struct Bench {
  Backend* cpu = nullptr;
  CpuIsa isa = CpuIsa::scalar;
  int n_threads = 1;
  double margin = 0.10;  // the dynamic scheduler's (the context's kSchedMargin)
  std::vector<Call> calls;            // one step's matmuls
  std::vector<ShapeCosts> shapes;     // calibration: candidates per shape
  std::vector<float> x, y;

  // Runs one step's matmuls; returns seconds.
  double step(const Step& s) {
    const double t0 = static_cast<double>(now_ns());
    for (const Call& c : calls) {
      const int64_t m = c.head ? s.out : s.rows;
      if (m == 0) continue;
      Tensor w = c.w;
      Tensor xt = make_tensor(DType::F32, x.data(), w.ne[0], m);
      Tensor yt = make_tensor(DType::F32, y.data(), w.ne[1], m);
      const Status st = cpu->run(OpCall{OpId::matmul, &yt, {&w, &xt}, 2, nullptr});
      if (!st.ok()) {
        std::fprintf(stderr, "matmul failed: %s\n", st.to_string().c_str());
        std::exit(1);
      }
    }
    return (static_cast<double>(now_ns()) - t0) * 1e-9;
  }
};

size_t shape_index(const std::vector<ShapeCosts>& shapes, const Tensor& w) {
  for (size_t s = 0; s < shapes.size(); ++s)
    if (shapes[s].shape == MatmulShape{w.type, w.ne[0], w.ne[1]}) return s;
  return shapes.size();
}

// The oracle's table: for each (shape, rows) the trace uses, every candidate timed on the
// model's weights of that shape (cycling layers), alternating, median of reps.
using Medians = std::map<std::pair<size_t, int64_t>, std::vector<double>>;  // (shape, rows) -> ns per candidate

void measure_oracle(Bench& b, const std::vector<Step>& trace, int reps, TableRouter& oracle, Medians& med) {
  std::map<std::pair<size_t, int64_t>, bool> pairs;
  for (const Step& s : trace)
    for (const Call& c : b.calls)
      if ((c.head ? s.out : s.rows) > 0) pairs[{c.shape, c.head ? s.out : s.rows}] = true;
  TableRouter one;
  one.shapes = &b.shapes;
  for (const auto& [key, unused] : pairs) {
    const auto [si, m] = key;
    const ShapeCosts& sc = b.shapes[si];
    std::vector<const Call*> ws;
    for (const Call& c : b.calls)
      if (c.shape == si) ws.push_back(&c);
    std::vector<std::vector<double>> t(sc.cands.size());
    size_t next = 0;
    std::vector<size_t> order;
    for (size_t ci = 0; ci < sc.cands.size(); ++ci) order.push_back(ci);
    std::mt19937 rng(5);
    // As the calibration times them: each timed call after an untimed one of the same
    // candidate, candidates in a fresh order per repetition.
    for (int r = 0; r < reps; ++r) {
      std::shuffle(order.begin(), order.end(), rng);
      for (size_t ci : order) {
        const MatmulCandidate& k = sc.cands[ci];
        for (int timed = 0; timed < 2; ++timed) {
          Tensor w = ws[next++ % ws.size()]->w;
          Tensor xt = make_tensor(DType::F32, b.x.data(), w.ne[0], m);
          Tensor yt = make_tensor(DType::F32, b.y.data(), w.ne[1], m);
          const MatmulVariant* v = k.variant ? k.variant : cpu_matmul_policy_variant(b.isa, w.type, m);
          const double t0 = static_cast<double>(now_ns());
          const Status st = cpu_run_matmul_variant(*b.cpu, OpCall{OpId::matmul, &yt, {&w, &xt}, 2, nullptr}, *v,
                                                   k.n_threads);
          if (!st.ok()) {
            std::fprintf(stderr, "matmul failed: %s\n", st.to_string().c_str());
            std::exit(1);
          }
          if (timed) t[ci].push_back(static_cast<double>(now_ns()) - t0);
        }
      }
    }
    size_t best = 0;
    for (size_t ci = 1; ci < t.size(); ++ci)
      if (median(t[ci]) < median(t[best])) best = ci;
    oracle.table[key] = MatmulRoute{sc.cands[best].variant, sc.cands[best].n_threads};
    for (const auto& tc : t) med[key].push_back(median(tc));
  }
}

// Per (shape, rows) of the trace: each candidate's time in the oracle's measurement, and
// which one the fixed thresholds, a fresh dynamic scheduler (no history: the calibration's
// pick after the margin) and the oracle take.
void print_picks(Bench& b, const Medians& med, TableRouter& oracle) {
  Logger quiet;
  for (const auto& [key, ns] : med) {
    const auto [si, m] = key;
    const ShapeCosts& sc = b.shapes[si];
    Tensor w;
    for (const Call& c : b.calls)
      if (c.shape == si) w = c.w;
    Tensor xt = make_tensor(DType::F32, b.x.data(), w.ne[0], m);
    Tensor yt = make_tensor(DType::F32, b.y.data(), w.ne[1], m);
    const OpCall call{OpId::matmul, &yt, {&w, &xt}, 2, nullptr};
    MatmulScheduler fresh(b.shapes, b.margin, b.isa, b.n_threads, quiet);
    const MatmulRoute dyn = fresh.route(call), orc = oracle.route(call);
    const MatmulVariant* fixed = cpu_matmul_policy_variant(b.isa, w.type, m);
    std::printf("  %s %lldx%lld M %3lld:", dtype_name(sc.shape.wtype), (long long)sc.shape.k, (long long)sc.shape.n,
                (long long)m);
    for (size_t ci = 0; ci < sc.cands.size(); ++ci) {
      const MatmulCandidate& k = sc.cands[ci];
      std::string tags;
      if (k.variant == fixed && k.n_threads == b.n_threads) tags += "S";
      if (dyn.variant ? k.variant == dyn.variant && k.n_threads == dyn.n_threads
                      : k.variant == fixed && k.n_threads == (dyn.n_threads ? dyn.n_threads : b.n_threads))
        tags += "D";
      if (k.variant == orc.variant && k.n_threads == orc.n_threads) tags += "O";
      std::printf("  %s=%.0f%s%s%s", candidate_label(k).c_str(), ns[ci] / 1e3, tags.empty() ? "" : "[", tags.c_str(),
                  tags.empty() ? "" : "]");
    }
    std::printf("\n");
  }
}

void run_trace(Bench& b, const char* name, const std::vector<Step>& trace, int reps, bool picks) {
  int64_t rows = 0, lo = trace[0].rows, hi = trace[0].rows;
  for (const Step& s : trace) {
    rows += s.rows;
    lo = std::min(lo, s.rows);
    hi = std::max(hi, s.rows);
  }
  TableRouter oracle;
  oracle.shapes = &b.shapes;
  const double t0 = static_cast<double>(now_ns());
  Medians med;
  measure_oracle(b, trace, 5, oracle, med);
  std::printf("trace %s: %zu steps, N %lld..%lld, %lld rows; oracle table measured in %.1f s\n", name, trace.size(),
              (long long)lo, (long long)hi, (long long)rows, (static_cast<double>(now_ns()) - t0) * 1e-9);
  if (picks) {
    std::printf("  per shape and M: candidate=us per call in the oracle's measurement, [S] the fixed thresholds' "
                "pick, [D] dynamic's (no history), [O] the oracle's\n");
    print_picks(b, med, oracle);
  }

  // Policies: static, dynamic, oracle, then the fixed thresholds on fewer threads
  // ("static/t1") and each candidate every shape has, on every step.
  std::vector<std::string> labels;
  std::vector<LabelRouter> fixed;
  for (int t = 1; t < b.n_threads; ++t) {
    labels.push_back("static/t" + std::to_string(t));
    fixed.emplace_back();
    fixed.back().shapes = &b.shapes;
    fixed.back().by_shape.assign(b.shapes.size(), MatmulRoute{nullptr, t});
  }
  for (const MatmulCandidate& c : b.shapes[0].cands) {
    const std::string l = candidate_label(c);
    bool everywhere = true;
    for (const ShapeCosts& sc : b.shapes) {
      bool has = false;
      for (const MatmulCandidate& k : sc.cands) has = has || candidate_label(k) == l;
      everywhere = everywhere && has;
    }
    if (!everywhere) continue;
    labels.push_back(l);
    fixed.emplace_back();
    fixed.back().shapes = &b.shapes;
    for (const ShapeCosts& sc : b.shapes) {
      MatmulRoute r;
      for (const MatmulCandidate& k : sc.cands)
        if (candidate_label(k) == l) r = MatmulRoute{k.variant, k.n_threads};
      fixed.back().by_shape.push_back(r);
    }
  }
  const int n_pol = 3 + static_cast<int>(labels.size());  // 0 static, 1 dynamic, 2 oracle, 3.. fixed
  std::vector<std::vector<double>> t(static_cast<size_t>(n_pol));
  std::vector<int> order(static_cast<size_t>(n_pol));
  for (int i = 0; i < n_pol; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937 rng(11);
  int64_t switches = 0;
  Logger quiet;
  for (int r = 0; r < reps; ++r) {
    std::shuffle(order.begin(), order.end(), rng);
    for (int p : order) {
      std::unique_ptr<MatmulScheduler> dyn;
      MatmulRouter* router = nullptr;
      if (p == 1) dyn = std::make_unique<MatmulScheduler>(b.shapes, b.margin, b.isa, b.n_threads, quiet);
      if (p == 1) router = dyn.get();
      if (p == 2) router = &oracle;
      if (p >= 3) router = &fixed[static_cast<size_t>(p - 3)];
      cpu_set_matmul_router(*b.cpu, router);
      double sum = 0;
      for (const Step& s : trace) sum += b.step(s);
      cpu_set_matmul_router(*b.cpu, nullptr);
      t[static_cast<size_t>(p)].push_back(sum);
      if (dyn) switches = dyn->n_switches();
    }
  }
  const double base = median(t[0]);
  std::printf("  %-14s %10s %10s %9s\n", "policy", "total ms", "rows/s", "vs static");
  for (int p = 0; p < n_pol; ++p) {
    const std::string name_p = p == 0   ? std::string("static")
                               : p == 1 ? std::string("dynamic")
                               : p == 2 ? std::string("oracle")
                                        : labels[static_cast<size_t>(p - 3)];
    const double m = median(t[static_cast<size_t>(p)]);
    std::printf("  %-14s %10.1f %10.1f %8.3fx%s\n", name_p.c_str(), m * 1e3, static_cast<double>(rows) / m, base / m,
                p == 1 ? (" (" + std::to_string(switches) + " switches)").c_str() : "");
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dynamic matmul scheduling against fixed mappings and an oracle, on per-step row traces"};
  std::string model_path, trace_path;
  std::vector<std::string> traces{"server", "spec", "prompts"};
  int threads = 2, reps = 3, steps = 60;
  double margin = 0.10;
  uint32_t seed = 1;
  app.add_option("-m,--model", model_path, "model file")->required();
  app.add_option("-t,--threads", threads, "threads (candidates run on 1..t)")->check(CLI::Range(1, 256));
  app.add_option("--reps", reps, "repetitions of each policy's replay (median)")->check(CLI::Range(1, 100));
  app.add_option("--steps", steps, "steps per generated trace")->check(CLI::Range(1, 100000));
  app.add_option("--seed", seed, "trace seed");
  app.add_option("--traces", traces, "generated traces: server spec prompts");
  app.add_option("--trace-file", trace_path, "replay this trace instead (\"N [out]\" per line)");
  app.add_option("--margin", margin, "the dynamic scheduler's hysteresis margin")->check(CLI::Range(0.0, 10.0));
  bool picks = false;
  app.add_flag("--picks", picks, "print each (shape, M) of a trace: every candidate's time and who picks which");
  CLI11_PARSE(app, argc, argv);

  ModelParams mp;
  mp.use_mmap = false;  // weights in memory: no page faults inside the timed replays
  auto model = Model::load(model_path, mp);
  if (!model) {
    std::fprintf(stderr, "load: %s\n", model.status().to_string().c_str());
    return 2;
  }
  auto cpu = backend_cpu().create(BackendOptions{.n_threads = threads});
  if (!cpu) {
    std::fprintf(stderr, "cpu backend: %s\n", cpu.status().to_string().c_str());
    return 1;
  }
  CalibrateOptions co;
  co.max_threads = threads;
  auto cal = load_or_calibrate(**model, **cpu, co, calib_dir(), false, Logger{});
  if (!cal) {
    std::fprintf(stderr, "calibration: %s\n", cal.status().to_string().c_str());
    return 1;
  }
  std::printf("%s, %d threads; calibration %s%s (%zu shapes)\n", (*cpu)->name(), threads,
              cal->from_cache ? "read from " : "measured, ",
              cal->from_cache ? cal->path.c_str() : cal->why_measured.c_str(), cal->tables.size());

  Bench b;
  b.cpu = cpu->get();
  b.n_threads = threads;
  b.margin = margin;
  cpu_backend_isa(*b.cpu, &b.isa);
  b.shapes = cal->tables;
  const Model& m = **model;
  for (const LayerWeights& l : m.layers)
    for (const Tensor* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
      if (w->data && shape_index(b.shapes, *w) < b.shapes.size())
        b.calls.push_back(Call{*w, shape_index(b.shapes, *w), false});
  if (shape_index(b.shapes, m.output) < b.shapes.size())
    b.calls.push_back(Call{m.output, shape_index(b.shapes, m.output), true});

  std::vector<std::pair<std::string, std::vector<Step>>> runs;
  if (!trace_path.empty()) {
    std::string err;
    auto t = kestrel::bench::trace_file(trace_path, &err);
    if (t.empty()) {
      std::fprintf(stderr, "trace: %s\n", err.empty() ? "empty" : err.c_str());
      return 2;
    }
    runs.emplace_back(trace_path, t);
  } else {
    for (const std::string& n : traces) {
      if (n == "server") runs.emplace_back(n, kestrel::bench::trace_server(steps, seed));
      else if (n == "spec") runs.emplace_back(n, kestrel::bench::trace_spec(steps, seed));
      else if (n == "prompts") runs.emplace_back(n, kestrel::bench::trace_prompts(steps, seed));
      else {
        std::fprintf(stderr, "unknown trace %s (server, spec, prompts)\n", n.c_str());
        return 2;
      }
    }
  }
  int64_t max_rows = 1, max_k = 1, max_n = 1;
  for (const auto& [n, t] : runs)
    for (const Step& s : t) max_rows = std::max(max_rows, s.rows);
  for (const Call& c : b.calls) {
    max_k = std::max(max_k, c.w.ne[0]);
    max_n = std::max(max_n, c.w.ne[1]);
  }
  b.x.assign(static_cast<size_t>(max_k * max_rows), 0.01f);
  b.y.assign(static_cast<size_t>(max_n * max_rows), 0.0f);
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (float& v : b.x) v = dist(rng);
  for (const auto& [n, t] : runs) run_trace(b, n.c_str(), t, reps, picks);
  return 0;
}
