// kestrel calibrate -m MODEL [-t N] [--force] [--plot out.png]: the matmul calibration that
// --sched dynamic uses, measured (or read from the cache) and printed as a table of curves
// and crossovers; --plot draws the curves with gnuplot when it is installed.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "cli.h"

namespace kcli {
namespace {

struct CalibrateOptions {
  std::string model;
  int threads = kestrel_context_default_params().n_threads;
  bool force = false;
  std::string plot;
};

// gnuplot on PATH, or "".
std::string find_gnuplot() {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "";
  size_t i = 0;
  while (i <= p.size()) {
    const size_t j = p.find(':', i);
    const std::string dir = p.substr(i, (j == std::string::npos ? p.size() : j) - i);
    const std::string exe = (dir.empty() ? "." : dir) + "/gnuplot";
    struct stat st;
    if (::stat(exe.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(exe.c_str(), X_OK) == 0) return exe;
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return "";
}

// A gnuplot string literal.
std::string gp_string(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("''") : std::string(1, c);
  return q + "'";
}

// Shell-quoted for popen.
std::string quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// One panel per shape (log-log time per row against rows M, a line per candidate: per row,
// the curves of a memory-bound and a compute-bound kernel cross where the winner changes).
int plot(const std::string& gnuplot, const std::string& out, const std::string& curves) {
  // Each block: "# <shape>", "M <label> ...", data lines.
  struct Panel {
    std::string title;
    int n_cols = 0;
  };
  std::vector<Panel> panels;
  for (size_t i = 0; i < curves.size();) {
    const size_t e = curves.find('\n', i);
    const std::string line = curves.substr(i, (e == std::string::npos ? curves.size() : e) - i);
    i = e == std::string::npos ? curves.size() : e + 1;
    if (line.rfind("# ", 0) == 0) {
      panels.push_back(Panel{line.substr(2), 0});
    } else if (line.rfind("M ", 0) == 0 && !panels.empty()) {
      int n = 1;
      for (char c : line) n += c == ' ' ? 1 : 0;
      panels.back().n_cols = n;
    }
  }
  if (panels.empty()) return usage_error("nothing to plot: the model has no calibrated matmul shapes");
  int cols = 1;
  while (cols * cols < static_cast<int>(panels.size())) ++cols;
  const int rows = (static_cast<int>(panels.size()) + cols - 1) / cols;
  FILE* g = ::popen((quoted(gnuplot) + " 2>&1").c_str(), "w");
  if (!g) return usage_error("cannot run gnuplot");
  std::fprintf(g, "set terminal pngcairo size %d,%d noenhanced font ',9'\n", 520 * cols, 400 * rows);
  std::fprintf(g, "set output %s\n", gp_string(out).c_str());
  std::fprintf(g, "$curves << EOD\n%sEOD\n", curves.c_str());
  std::fprintf(g, "set logscale xy\nset key top right\nset grid\nset xlabel 'rows M'\nset ylabel 'ms per row (call / M)'\n");
  std::fprintf(g, "set multiplot layout %d,%d\n", rows, cols);
  for (size_t p = 0; p < panels.size(); ++p)
    std::fprintf(g,
                 "set title %s\n"
                 "plot for [c=2:%d] $curves index %zu using 1:(column(c) / $1) with linespoints title columnheader(c)\n",
                 gp_string(panels[p].title).c_str(), panels[p].n_cols, p);
  std::fprintf(g, "unset multiplot\n");
  const int rc = ::pclose(g);
  if (rc != 0) {
    std::fprintf(stderr, "kestrel: gnuplot failed (status %d); no plot\n", rc);
    return kExitRuntime;
  }
  std::printf("plot: %s\n", out.c_str());
  return kExitOk;
}

int calibrate(const CalibrateOptions& o) {
  kestrel_model* model = nullptr;
  const int rc = load_model(o.model, kestrel_model_default_params(), &model);
  if (rc != kExitOk) return rc;
  std::unique_ptr<kestrel_model, void (*)(kestrel_model*)> guard(model, kestrel_model_free);
  kestrel_calibration* cal = nullptr;
  const kestrel_status s = kestrel_calibrate(model, o.threads, o.force ? 1 : 0, &cal);
  if (s != KESTREL_OK) return report(s, "calibration failed", model);
  std::unique_ptr<kestrel_calibration, void (*)(kestrel_calibration*)> cal_guard(cal, kestrel_calibration_free);
  std::printf("%s\n\n%s", kestrel_calibration_text(cal, KESTREL_CALIB_SOURCE),
              kestrel_calibration_text(cal, KESTREL_CALIB_TABLE));
  if (!o.plot.empty()) {
    const std::string gnuplot = find_gnuplot();
    if (gnuplot.empty()) {
      std::printf("SKIP: plot not drawn: gnuplot is not installed (apt-get install gnuplot-nox)\n");
    } else {
      const int prc = plot(gnuplot, o.plot, kestrel_calibration_text(cal, KESTREL_CALIB_CURVES));
      if (prc != kExitOk) return prc;
    }
  }
  return std::fflush(stdout) == 0 ? kExitOk : kExitRuntime;
}

}  // namespace

Command add_calibrate(CLI::App& app) {
  auto o = std::make_shared<CalibrateOptions>();
  CLI::App* sub = app.add_subcommand(
      "calibrate", "measure (or show the cached) matmul cost curves that --sched dynamic routes by: a table per shape");
  sub->add_option("-m,--model", o->model, "model file")->required();
  sub->add_option("-t,--threads", o->threads, "candidates run on 1..N threads (as a context of N threads)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  sub->add_flag("--force", o->force, "measure again even when the cache holds this machine's curves");
  sub->add_option("--plot", o->plot, "also draw the curves into this PNG file (needs gnuplot)");
  return {sub, [o] { return calibrate(*o); }};
}

}  // namespace kcli
