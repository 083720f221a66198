// ThreadPool: the worker threads of one kestrel context (never process-global).
//
// Kernels split their work by (ith, nth) in fixed chunks, so results depend only
// on the thread count, never on timing. Two engines behind one interface:
//   native  (default) persistent std::threads that spin briefly, then yield,
//           then sleep: low hand-off latency on an idle machine, and no
//           collapse when the machine is oversubscribed (a descheduled worker
//           costs others a yield, not a spinning time slice);
//   openmp  OpenMP parallel regions (when built with OpenMP). Fast on an idle
//           machine; under oversubscription libgomp's spinning barriers can
//           cost a scheduler tick per op (measured: gemma3-270m decode at 2
//           threads on a loaded 2-core host, 0.6 tokens/s vs 14.6 native).
//
//   ThreadPool pool(2);
//   pool.run(pool.n_threads(), [&](int ith, int nth) {
//     for (int64_t r = ith; r < rows; r += nth) do_row(r);
//     pool.barrier();          // every thread of this run waits here
//   });
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "platform/function_ref.h"

namespace kestrel {

enum class PoolEngine { native, openmp };

class ThreadPool {
 public:
  using Job = FunctionRef<void(int ith, int nth)>;

  // n_threads < 1 is treated as 1. openmp falls back to native when kestrel
  // was built without OpenMP.
  explicit ThreadPool(int n_threads = 1, PoolEngine engine = PoolEngine::native);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int n_threads() const { return n_threads_; }
  void set_n_threads(int n);
  PoolEngine engine() const { return engine_; }

  // Runs job(ith, nth) for ith in [0, nth) with nth = clamp(n, 1, n_threads()).
  // The calling thread runs ith = 0. Returns when all have finished. Not reentrant.
  void run(int n, Job job);

  // Waits until every thread of the current run() reaches it. Only inside run().
  void barrier();

  // Splits [0, n) into nth near-equal chunks; returns [begin, end) of chunk ith.
  static void split(int64_t n, int ith, int nth, int64_t* begin, int64_t* end) {
    const int64_t per = n / nth, rem = n % nth;
    *begin = ith * per + (ith < rem ? ith : rem);
    *end = *begin + per + (ith < rem ? 1 : 0);
  }

 private:
  void worker_main(int ith, uint64_t seen);
  void stop_workers();
  void start_workers();

  int n_threads_ = 1;
  PoolEngine engine_ = PoolEngine::native;
  std::atomic<int> run_nth_{1};
  // Native engine state.
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  const Job* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<int> barrier_count_{0};
  std::atomic<uint32_t> barrier_phase_{0};
};

}  // namespace kestrel
