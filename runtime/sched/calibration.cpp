#include "runtime/sched/calibration.h"

#include "platform/timer.h"
#include "runtime/sched/calib_cache.h"

namespace kestrel {

Expected<Calibration> load_or_calibrate(const Model& model, Backend& cpu, const CalibrateOptions& o,
                                        const std::string& dir, bool force, const Logger& log) {
  KESTREL_TRY(validate_calibrate_options(o));
  CpuIsa isa = CpuIsa::scalar;
  if (!cpu_backend_isa(cpu, &isa)) return Status::invalid_argument("calibration: %s is not a cpu backend", cpu.name());
  Calibration cal;
  const std::vector<ShapeWeights> shapes = model_matmul_weights(model);
  const CalibKey key = calib_key(isa, o, shapes);
  cal.path = dir.empty() ? std::string() : calib_path(dir, key);
  if (cal.path.empty()) {
    cal.why_measured = "no cache directory";
  } else if (force) {
    cal.why_measured = "asked to measure again";
  } else {
    auto cached = read_calibration(cal.path, key);
    // The key names the shapes; a table of another shape is no part of this model.
    if (cached)
      for (const ShapeCosts& c : *cached) {
        bool known = false;
        for (const ShapeWeights& sw : shapes) known = known || sw.shape == c.shape;
        if (!known) cached = Status::bad_file("'%s': a shape the model does not have", cal.path.c_str());
        if (!known) break;
      }
    if (cached) {
      cal.tables = std::move(*cached);
      cal.from_cache = true;
      return cal;
    }
    cal.why_measured = cached.status().to_string();
  }
  log.info("calibrating matmuls (%s)", cal.why_measured.c_str());
  Stopwatch sw;
  KESTREL_TRY_ASSIGN(cal.tables, calibrate_matmuls(cpu, shapes, o));
  cal.t_measure_s = sw.elapsed_s();
  log.info("calibrated %zu matmul shapes in %.2f s", cal.tables.size(), cal.t_measure_s);
  if (!cal.path.empty()) {
    const Status st = write_calibration(cal.path, key, cal.tables);
    if (!st.ok()) log.warn("calibration not cached: %s", st.to_string().c_str());
  }
  return cal;
}

}  // namespace kestrel
