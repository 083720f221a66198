#include "runtime/sched/calibrate.h"

#include <algorithm>
#include <new>
#include <random>

#include "platform/timer.h"

namespace kestrel {

namespace {

constexpr int64_t kMinSliceRows = 128;
constexpr int64_t kFixedSliceRows = 32;  // the small slice that prices a call's fixed part
constexpr double kShortCallNs = 2e6;  // a point's calls per candidate take at least this long ...
constexpr int kMaxShortReps = 15;     // ... with at most this many repetitions

// Group the weights by shape.
void add_weight(std::vector<ShapeWeights>& out, const Tensor& w) {
  if (!w.data || w.ne[2] != 1 || w.ne[3] != 1) return;
  const MatmulShape s{w.type, w.ne[0], w.ne[1]};
  for (ShapeWeights& sw : out) {
    if (sw.shape == s) {
      sw.weights.push_back(w);
      return;
    }
  }
  out.push_back(ShapeWeights{s, {w}});
}

}  // namespace

std::vector<ShapeWeights> model_matmul_weights(const Model& m) {
  std::vector<ShapeWeights> out;
  for (const LayerWeights& l : m.layers)
    for (const Tensor* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) add_weight(out, *w);
  add_weight(out, m.output);
  std::sort(out.begin(), out.end(), [](const ShapeWeights& a, const ShapeWeights& b) { return a.shape < b.shape; });
  return out;
}

std::vector<MatmulCandidate> matmul_candidates(CpuIsa isa, DType w, int max_threads) {
  std::vector<MatmulCandidate> out;
  const MatmulVariant* v[kMaxMatmulVariants];
  const int n = std::min(cpu_matmul_variants(isa, w, v, kMaxMatmulVariants), kMaxMatmulVariants);
  // The bits group every policy variant shares (0: none, or they differ).
  int32_t group = -1;
  for (int i = 0; i < n; ++i) {
    if (v[i]->min_rows > v[i]->max_rows || v[i]->max_rows < 1 || !v[i]->available()) continue;
    if (group < 0) group = v[i]->bits_group;
    else if (group != v[i]->bits_group) group = 0;
  }
  if (group < 0) return out;  // no kernel for w
  for (int t = 1; t <= max_threads; ++t) {
    if (group == 0) {
      out.push_back(MatmulCandidate{nullptr, t});
      continue;
    }
    for (int i = 0; i < n; ++i)
      if (v[i]->bits_group == group && v[i]->available()) out.push_back(MatmulCandidate{v[i], t});
  }
  return out;
}

Status validate_calibrate_options(const CalibrateOptions& o) {
  if (o.rows.empty() || o.rows.size() > static_cast<size_t>(kMaxCalibRows))
    return Status::invalid_argument("calibration: %zu row counts (1 to %d)", o.rows.size(), kMaxCalibRows);
  for (size_t i = 0; i < o.rows.size(); ++i)
    if (o.rows[i] < 1 || o.rows[i] > kMaxCalibM || (i > 0 && o.rows[i] <= o.rows[i - 1]))
      return Status::invalid_argument("calibration: row counts must increase within [1, %lld]", (long long)kMaxCalibM);
  if (o.max_threads < 1 || o.max_threads > kMaxCalibThreads)
    return Status::invalid_argument("calibration: max_threads %d out of range", o.max_threads);
  if (o.reps < 1 || o.reps > 1000)
    return Status::invalid_argument("calibration: reps %d out of range [1, 1000]", o.reps);
  if (o.work_cap < 1) return Status::invalid_argument("calibration: work_cap must be positive");
  return {};
}

Expected<std::vector<ShapeCosts>> calibrate_matmuls(Backend& cpu, const std::vector<ShapeWeights>& shapes,
                                                    const CalibrateOptions& o) {
  KESTREL_TRY(validate_calibrate_options(o));
  CpuIsa isa = CpuIsa::scalar;
  if (!cpu_backend_isa(cpu, &isa)) return Status::invalid_argument("calibration: %s is not a cpu backend", cpu.name());
  std::vector<ShapeCosts> out;
  try {
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    int64_t max_k = 1, max_n = 1;
    for (const ShapeWeights& sw : shapes) {
      max_k = std::max(max_k, sw.shape.k);
      max_n = std::max(max_n, sw.shape.n);
    }
    const int64_t max_m = o.rows.back();
    std::vector<float> x(static_cast<size_t>(max_k * max_m)), y;
    for (float& v : x) v = dist(rng);
    for (const ShapeWeights& sw : shapes) {
      if (sw.weights.empty()) continue;
      ShapeCosts c;
      c.shape = sw.shape;
      c.cands = matmul_candidates(isa, sw.shape.wtype, o.max_threads);
      if (c.cands.empty()) continue;
      c.rows = o.rows;
      c.ns.assign(c.cands.size() * c.rows.size(), 0.0);
      const int64_t K = sw.shape.k, N = sw.shape.n;
      size_t next = 0;  // weight and slice of the next call
      for (size_t r = 0; r < c.rows.size(); ++r) {
        const int64_t M = c.rows[r];
        const size_t nc = c.cands.size();
        // Every candidate's median time on slices of `rows` weight rows (N: whole matrices).
        auto measure = [&](int64_t rows, std::vector<double>* med) -> Status {
          const int64_t n_slices = N / rows;
          if (y.size() < static_cast<size_t>(rows * M)) y.resize(static_cast<size_t>(rows * M));
          Tensor xt = make_tensor(DType::F32, x.data(), K, M);
          Tensor yt = make_tensor(DType::F32, y.data(), rows, M);
          // One call of candidate ci on the next weight (slice); returns nanoseconds.
          auto call = [&](size_t ci, double* ns) -> Status {
            const MatmulCandidate& cand = c.cands[ci];
            const size_t i = next++;
            Tensor wt = sw.weights[i % sw.weights.size()];
            wt.data = wt.row<char>((static_cast<int64_t>(i / sw.weights.size()) % n_slices) * rows);
            wt.ne[1] = rows;
            OpCall op{OpId::matmul, &yt, {&wt, &xt}, 2, nullptr};
            const MatmulVariant* v = cand.variant ? cand.variant : cpu_matmul_policy_variant(isa, sw.shape.wtype, M);
            if (!v) return Status::unsupported("calibration: no %s matmul kernel", dtype_name(sw.shape.wtype));
            const int64_t t0 = now_ns();
            KESTREL_TRY(cpu_run_matmul_variant(cpu, op, *v, cand.n_threads));
            *ns = static_cast<double>(std::max<int64_t>(now_ns() - t0, 1));
            return {};
          };
          // Candidates alternate within each repetition, in a fresh order each time, so
          // drift and other load hit all alike. Each timed call follows an untimed one of
          // the same candidate: a call on more threads than the one before it would
          // otherwise pay for waking the extra threads, a cost of the order, not of the
          // candidate. Short calls (tens of microseconds, where such costs show) get more
          // repetitions, up to kShortCallNs of calls per candidate.
          double warm = 0, warm_max = 0;
          for (size_t ci = 0; ci < nc; ++ci) {
            KESTREL_TRY(call(ci, &warm));
            warm_max = std::max(warm_max, warm);
          }
          const int reps = std::max(o.reps, std::min(kMaxShortReps, static_cast<int>(kShortCallNs / warm_max)) | 1);
          std::vector<double> t(nc * static_cast<size_t>(reps));
          std::vector<size_t> order(nc);
          for (size_t ci = 0; ci < nc; ++ci) order[ci] = ci;
          for (int rep = 0; rep < reps; ++rep) {
            std::shuffle(order.begin(), order.end(), rng);
            for (size_t ci : order) {
              KESTREL_TRY(call(ci, &warm));
              KESTREL_TRY(call(ci, &t[ci * static_cast<size_t>(reps) + rep]));
            }
          }
          med->resize(nc);
          for (size_t ci = 0; ci < nc; ++ci) {
            auto b = t.begin() + static_cast<std::ptrdiff_t>(ci * static_cast<size_t>(reps));
            std::sort(b, b + reps);
            (*med)[ci] = *(b + reps / 2);
          }
          return {};
        };
        int64_t rows = N;
        if (K * M * N > o.work_cap) rows = std::clamp<int64_t>(o.work_cap / (K * M), kMinSliceRows, N);
        std::vector<double> t_big, t_small;
        KESTREL_TRY(measure(rows, &t_big));
        if (rows == N) {
          for (size_t ci = 0; ci < nc; ++ci) c.ns[ci * c.rows.size() + r] = t_big[ci];
          continue;
        }
        // A call costs a part that grows with the weight rows and a part that does not
        // (quantizing and packing the M activation rows, waking threads): a small slice's
        // time gives the second, and the whole matrix's time is the line through both
        // slices' times at N rows. (Scaling one slice's time by N / rows multiplied the
        // fixed part too: at M = 64 on a 8960-wide weight that made the AMX tiles look
        // 3.6 times slower than they are.)
        const int64_t small = std::min<int64_t>(kFixedSliceRows, rows / 2);
        KESTREL_TRY(measure(small, &t_small));
        for (size_t ci = 0; ci < nc; ++ci) {
          const double per_row = (t_big[ci] - t_small[ci]) / static_cast<double>(rows - small);
          const double whole = t_big[ci] + std::max(per_row, 0.0) * static_cast<double>(N - rows);
          c.ns[ci * c.rows.size() + r] = std::max(whole, 1.0);
        }
      }
      out.push_back(std::move(c));
    }
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("calibration buffers");
  }
  return out;
}

}  // namespace kestrel
