// kestrel_calibrate and its result handle: the matmul calibration of a model on this
// machine's cpu (runtime/sched/calibration.h), as text for `kestrel calibrate`.
#include <cstdio>
#include <string>

#include "ops/cpu/matmul_variants.h"
#include "runtime/c_api_internal.h"
#include "runtime/sched/calib_cache.h"
#include "runtime/sched/calib_report.h"
#include "runtime/sched/calibration.h"

using namespace kestrel;
using namespace kestrel::capi;

namespace {
constexpr uint32_t kMagicCalibration = 0x4b43414cu;  // "KCAL"
}  // namespace

struct kestrel_calibration : kestrel::capi::HandleBase {
  kestrel_calibration() : HandleBase(kMagicCalibration) {}
  std::string text[3];  // by kestrel_calib_text
  double seconds = 0;
};

kestrel_status kestrel_calibrate(kestrel_model* model, int32_t n_threads, int32_t force, kestrel_calibration** out) {
  if (out) *out = nullptr;
  const Status s = guarded([&]() -> Status {
    if (!live(model)) return Status::invalid_argument("kestrel_calibrate: model is NULL or not live");
    if (!out) return Status::invalid_argument("kestrel_calibrate: out must not be NULL");
    if (n_threads < 1 || n_threads > kMaxCalibThreads)
      return Status::invalid_argument("n_threads %d out of range [1, %d]", n_threads, kMaxCalibThreads);
    if (model->model->vocab_only()) return Status::invalid_argument("a vocabulary-only model has no matmuls");
    KESTREL_TRY_ASSIGN(auto cpu, backend_cpu().create(BackendOptions{.n_threads = n_threads}));
    CpuIsa isa = CpuIsa::scalar;
    if (!cpu_backend_isa(*cpu, &isa)) return Status::internal("kestrel_calibrate: no cpu backend");
    CalibrateOptions o;
    o.max_threads = n_threads;
    KESTREL_TRY_ASSIGN(Calibration cal, load_or_calibrate(*model->model, *cpu, o, calib_dir(), force != 0, Logger{}));
    std::unique_ptr<kestrel_calibration> h(new (std::nothrow) kestrel_calibration());
    if (!h) return Status::out_of_memory("calibration handle");
    h->text[KESTREL_CALIB_TABLE] = calib_table_text(cal.tables, isa, n_threads);
    h->text[KESTREL_CALIB_CURVES] = calib_curves_text(cal.tables);
    char line[128];
    std::snprintf(line, sizeof line, "measured in %.2f s", cal.t_measure_s);
    std::string& src = h->text[KESTREL_CALIB_SOURCE];
    src = std::string(cpu->name()) + ", " + std::to_string(cal.tables.size()) + " shapes: ";
    if (cal.from_cache) src += "read from " + cal.path;
    else src += std::string(line) + " (" + cal.why_measured + ")" + (cal.path.empty() ? "" : ", cached in " + cal.path);
    h->seconds = cal.t_measure_s;
    *out = h.release();
    return {};
  });
  if (s.ok()) return KESTREL_OK;
  if (live(model)) fail_model(model, s);
  return fail_global(s);
}

void kestrel_calibration_free(kestrel_calibration* cal) {
  if (!cal || cal->magic != kMagicCalibration) return;
  cal->magic = kMagicFreed;
  delete cal;
}

const char* kestrel_calibration_text(const kestrel_calibration* cal, int32_t kind) {
  if (!cal || cal->magic != kMagicCalibration || kind < 0 || kind > KESTREL_CALIB_SOURCE) return "";
  return cal->text[kind].c_str();
}

double kestrel_calibration_seconds(const kestrel_calibration* cal) {
  if (!cal || cal->magic != kMagicCalibration) return -1;
  return cal->seconds;
}
