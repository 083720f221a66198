// Calibration of the matmul scheduler: for each weight-bearing matmul shape of a model
// (weight type, K, N; every layer's projection of one shape counts once), the time of each
// candidate (cost_table.h) at M = 1, 2, 4, ..., 512 activation rows on this machine.
//
// Candidates are the cpu variants that cannot change an output's bits: where every
// variant the default policy uses for a weight type is in one bits group
// (ops/cpu/matmul_variants.h), every available variant of that group, on 1 .. max_threads
// threads; otherwise (float weights, whose policy variants differ in bits) the policy's
// own pick on 1 .. max_threads threads. Threads split a matmul by output rows, so no
// thread count changes an output's bits either.
//
// Timing follows a forward pass's access pattern: each call reads another layer's weights
// of the shape (or another slice of a matrix the model has once, the output head), so
// weights come from memory, not from a cache. A call of more than work_cap multiply-adds
// runs on slices of the weight rows (at least kMinSliceRows, and one of 32 rows): a
// matmul's time is linear in its weight rows once each thread has a few dozen, plus a
// part that is not (the activation rows' quantizing and packing, waking threads), and the
// line through the two slices' times gives the whole matrix's. Each point is the median of `reps` calls after one warm-up call (more for
// calls of well under a millisecond, whose times vary most), the candidates alternating.
//
//   CalibrateOptions o;
//   o.max_threads = 2;
//   KESTREL_TRY_ASSIGN(std::vector<ShapeCosts> tables, calibrate_matmuls(cpu, model_matmul_weights(model), o));
#pragma once

#include <cstdint>
#include <vector>

#include "ops/backend.h"
#include "platform/status.h"
#include "runtime/model/model.h"
#include "runtime/sched/cost_table.h"

namespace kestrel {

// Limits the cache reader enforces too (calib_cache.h).
constexpr int kMaxCalibRows = 32;        // measured row counts per shape
constexpr int64_t kMaxCalibM = 65536;    // largest measured row count
constexpr int kMaxCalibCands = 128;      // candidates per shape
constexpr int kMaxCalibShapes = 1024;    // shapes per model
constexpr int kMaxCalibThreads = 1024;

struct CalibrateOptions {
  std::vector<int64_t> rows{1, 2, 4, 8, 16, 32, 64, 128, 256, 512};  // increasing, in [1, kMaxCalibM]
  int max_threads = 1;            // candidates run on 1 .. max_threads threads (the backend's pool must have them)
  int reps = 5;                   // timed calls per point (median), >= 1
  int64_t work_cap = 1 << 24;     // multiply-adds per timed call before slicing the weight rows
};

// One shape and every weight of the model with it (rows of K elements, ne[1] = N).
struct ShapeWeights {
  MatmulShape shape;
  std::vector<Tensor> weights;
};

// The model's weight-bearing matmul shapes in a fixed order (sorted), each with its
// weights: every layer's dense projections and the output head. KS chains are left out
// (they are not plain matmuls).
std::vector<ShapeWeights> model_matmul_weights(const Model& model);

// The candidates for weight type w on ISA `isa` (see the header comment); empty when the
// cpu backend has no kernel for w.
std::vector<MatmulCandidate> matmul_candidates(CpuIsa isa, DType w, int max_threads);

// Times every candidate of every shape on cpu backend `cpu`. invalid_argument: not a cpu
// backend or options out of range; out_of_memory.
Expected<std::vector<ShapeCosts>> calibrate_matmuls(Backend& cpu, const std::vector<ShapeWeights>& shapes,
                                                    const CalibrateOptions& options);

// Checks options against the limits above.
Status validate_calibrate_options(const CalibrateOptions& o);

}  // namespace kestrel
