#include "platform/thread_pool.h"

#include <algorithm>

#if defined(KESTREL_HAVE_OPENMP)
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace kestrel {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

// Spin briefly (256 pauses, a few µs) before yielding: ops follow each other
// within microseconds, so an idle machine hands off work without a syscall,
// while a busy one gives the core to whoever we are waiting for instead of
// burning a time slice (longer spins, 2^14 pauses, measured 8x slower decode
// at 2 threads on a loaded 2-core host).
template <typename Pred>
inline bool spin_wait(Pred pred, int spins) {
  for (int i = 0; i < spins; ++i) {
    if (pred()) return true;
    cpu_relax();
  }
  return pred();
}

constexpr int kSpins = 256;

}  // namespace

ThreadPool::ThreadPool(int n_threads, PoolEngine engine) {
#if !defined(KESTREL_HAVE_OPENMP)
  engine = PoolEngine::native;
#endif
  engine_ = engine;
  n_threads_ = 0;
  set_n_threads(n_threads);
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::set_n_threads(int n) {
  n = std::max(1, n);
  if (n == n_threads_) return;
  stop_workers();
  n_threads_ = n;
  if (engine_ == PoolEngine::native) start_workers();
}

void ThreadPool::start_workers() {
  stopping_.store(false);
  // Workers start from the current generation: one that starts late must still
  // see a run published before it got going.
  const uint64_t gen = generation_.load(std::memory_order_acquire);
  // A worker that cannot start (out of memory, the OS refusing a thread) must not
  // leave the started ones joinable behind the exception: destroying a joinable
  // std::thread calls std::terminate. Stop them, fall back to one thread, rethrow
  // (the C API turns it into a status).
  try {
    workers_.reserve(static_cast<size_t>(n_threads_ - 1));
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i, gen] { worker_main(i, gen); });
  } catch (...) {
    stop_workers();
    n_threads_ = 1;
    throw;
  }
}

void ThreadPool::stop_workers() {
  if (workers_.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_.store(true);
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  stopping_.store(false);
}

void ThreadPool::worker_main(int ith, uint64_t seen) {
  for (;;) {
    auto ready = [&] { return generation_.load(std::memory_order_acquire) != seen; };
    if (!spin_wait(ready, kSpins)) {
      // Yield for a while, then sleep until the next run.
      bool got = false;
      for (int i = 0; i < 64 && !got; ++i) {
        std::this_thread::yield();
        got = ready();
      }
      if (!got) {
        std::unique_lock<std::mutex> lock(mu_);
        sleepers_.fetch_add(1);
        cv_.wait(lock, ready);
        sleepers_.fetch_sub(1);
      }
    }
    if (stopping_.load(std::memory_order_acquire)) return;
    seen = generation_.load(std::memory_order_acquire);
    const int nth = run_nth_.load(std::memory_order_acquire);
    if (ith < nth) (*job_)(ith, nth);
    // Every worker acknowledges every run, so none can lag into the next one
    // and mistake its generation.
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(int n, Job job) {
  const int nth = std::clamp(n, 1, n_threads_);
  if (nth == 1) {
    run_nth_.store(1, std::memory_order_relaxed);
    job(0, 1);
    return;
  }
#if defined(KESTREL_HAVE_OPENMP)
  if (engine_ == PoolEngine::openmp) {
#pragma omp parallel num_threads(nth)
    {
      const int actual = omp_get_num_threads();
#pragma omp single
      run_nth_.store(actual, std::memory_order_relaxed);
      // implicit barrier after single
      job(omp_get_thread_num(), actual);
    }
    return;
  }
#endif
  job_ = &job;
  run_nth_.store(nth, std::memory_order_release);
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_release);
  {
    // Publishing under the mutex pairs with a worker's check-then-sleep.
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  if (sleepers_.load(std::memory_order_acquire) > 0) cv_.notify_all();
  job(0, nth);
  auto done = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  while (!spin_wait(done, kSpins)) std::this_thread::yield();
}

void ThreadPool::barrier() {
#if defined(KESTREL_HAVE_OPENMP)
  if (engine_ == PoolEngine::openmp) {
    if (omp_in_parallel()) {
#pragma omp barrier
    }
    return;
  }
#endif
  const int nth = run_nth_.load(std::memory_order_acquire);
  if (nth <= 1) return;
  const uint32_t phase = barrier_phase_.load(std::memory_order_acquire);
  if (barrier_count_.fetch_add(1, std::memory_order_acq_rel) == nth - 1) {
    barrier_count_.store(0, std::memory_order_relaxed);
    barrier_phase_.fetch_add(1, std::memory_order_acq_rel);
  } else {
    auto passed = [&] { return barrier_phase_.load(std::memory_order_acquire) != phase; };
    while (!spin_wait(passed, kSpins)) std::this_thread::yield();
  }
}

}  // namespace kestrel
