// The calibration cache on disk: one text file per (machine, build, model shape), so the
// scheduler measures once per machine and model and later contexts start at once.
//
// Where: $KESTREL_CALIB_DIR, else $XDG_CACHE_HOME/kestrel/calibration, else
// $HOME/.cache/kestrel/calibration; the file is named by a hash of the key and holds the
// whole key, which must match exactly. A file that is missing, truncated, corrupt (its
// checksum line, any field out of range, a variant this build does not have or this
// machine cannot run) or stale (another key) is never trusted: read_calibration says why
// and the caller measures again and rewrites it. Writes go to a temporary file renamed
// over the old one, so a reader never sees half a file.
//
// Format (text, one record per line):
//   kestrel-calibration 2
//   machine <cpu model> | <features> | <logical cpus>
//   build <kestrel version, compiler, build type, ISA variants>
//   model <isa, max threads, row counts, the shapes>
//   shapes <S>
//   shape <wtype> <K> <N> <C candidates> <R rows>     S times:
//   cand <variant name | policy> <threads>              C lines
//   rows <M_1> ... <M_R>
//   ns <t_1> ... <t_R>                                  C lines, one per candidate
//   end <FNV-1a 64 of every byte before this line, hex>
//
//   const CalibKey key = calib_key(isa, options, shapes);
//   auto tables = read_calibration(calib_path(calib_dir(), key), key);
//   if (!tables) { ... measure ...; KESTREL_TRY(write_calibration(path, key, measured)); }
#pragma once

#include <string>
#include <vector>

#include "platform/status.h"
#include "runtime/sched/calibrate.h"
#include "runtime/sched/cost_table.h"

namespace kestrel {

struct CalibKey {
  std::string machine, build, model;  // single lines, no '\n'
};

// This machine and build, and the model part from what is measured.
CalibKey calib_key(CpuIsa isa, const CalibrateOptions& options, const std::vector<ShapeWeights>& shapes);

// The cache directory (see above); "" when no variable names one.
std::string calib_dir();
// dir + "/" + a file name from the key's hash.
std::string calib_path(const std::string& dir, const CalibKey& key);

// The tables, or bad_file (missing fields, out of range, checksum), io_error (cannot read),
// or invalid_argument naming the key field that differs (stale).
Expected<std::vector<ShapeCosts>> read_calibration(const std::string& path, const CalibKey& key);
// The file's text for key and tables (write_calibration writes exactly this).
std::string format_calibration(const CalibKey& key, const std::vector<ShapeCosts>& tables);
// Writes atomically (path + ".tmp.<pid>", then rename), creating the directory.
Status write_calibration(const std::string& path, const CalibKey& key, const std::vector<ShapeCosts>& tables);

}  // namespace kestrel
