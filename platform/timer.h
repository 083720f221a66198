// Monotonic time for timing summaries, benchmarks and the scheduler's
// per-shape measurements. Never wall-clock time: it does not jump when the
// system clock is set.
//
//   Stopwatch sw;                   // starts running
//   run_prompt();
//   const double t_prompt_ms = sw.elapsed_ms();
//   sw.reset();
#pragma once

#include <cstdint>

namespace kestrel {

// Nanoseconds from an arbitrary fixed origin (CLOCK_MONOTONIC); only
// differences mean anything. Never decreases within one process.
int64_t now_ns();

// Measures the time since construction or the last reset(). Copyable value.
class Stopwatch {
 public:
  Stopwatch() : start_ns_(now_ns()) {}
  void reset() { start_ns_ = now_ns(); }
  int64_t elapsed_ns() const { return now_ns() - start_ns_; }
  double elapsed_us() const { return static_cast<double>(elapsed_ns()) * 1e-3; }
  double elapsed_ms() const { return static_cast<double>(elapsed_ns()) * 1e-6; }
  double elapsed_s() const { return static_cast<double>(elapsed_ns()) * 1e-9; }
  // Returns the elapsed time and restarts: one call per step of a loop.
  int64_t lap_ns() {
    const int64_t now = now_ns();
    const int64_t dt = now - start_ns_;
    start_ns_ = now;
    return dt;
  }

 private:
  int64_t start_ns_;
};

}  // namespace kestrel
