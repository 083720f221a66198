// A model's matmul calibration for this machine: read from the cache (calib_cache.h) when
// a valid file for this machine, build and model shape is there, else measured
// (calibrate.h) and written back. What a context with dynamic scheduling and
// `kestrel calibrate` call.
//
//   KESTREL_TRY_ASSIGN(Calibration cal, load_or_calibrate(model, cpu, options, calib_dir(), false, log));
//   log.info("%zu shapes, %s", cal.tables.size(), cal.from_cache ? "cached" : "measured");
#pragma once

#include <string>
#include <vector>

#include "platform/log.h"
#include "runtime/sched/calibrate.h"
#include "runtime/sched/cost_table.h"

namespace kestrel {

struct Calibration {
  std::vector<ShapeCosts> tables;
  std::string path;        // the cache file ("" when there is no cache directory)
  bool from_cache = false;
  std::string why_measured;  // when measured: why the cache was not used
  double t_measure_s = 0;    // measuring time (0 from the cache)
};

// dir "": no cache (measured, not written). force: measure even when the cache is valid.
// A cache that cannot be written is logged (warn) and the measured tables returned.
Expected<Calibration> load_or_calibrate(const Model& model, Backend& cpu, const CalibrateOptions& options,
                                        const std::string& dir, bool force, const Logger& log);

}  // namespace kestrel
