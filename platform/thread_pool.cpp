#include "platform/thread_pool.h"

#include <algorithm>

#if defined(KESTREL_HAVE_OPENMP)
#include <omp.h>
#endif

namespace kestrel {

ThreadPool::ThreadPool(int n_threads) { set_n_threads(n_threads); }

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::set_n_threads(int n) {
  n = std::max(1, n);
  if (n == n_threads_ && (n == 1 || !workers_.empty())) return;
  stop_workers();
  n_threads_ = n;
#if !defined(KESTREL_HAVE_OPENMP)
  start_workers();
#endif
}

void ThreadPool::start_workers() {
  stopping_ = false;
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_main(i); });
}

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    ++generation_;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  stopping_ = false;
}

void ThreadPool::worker_main(int ith) {
  uint64_t seen = 0;
  for (;;) {
    const Job* job;
    int nth;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      job = job_;
      nth = run_nth_;
    }
    if (ith < nth) {
      (*job)(ith, nth);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
}

void ThreadPool::run(int n, Job job) {
  const int nth = std::clamp(n, 1, n_threads_);
  if (nth == 1) {
    run_nth_ = 1;
    job(0, 1);
    return;
  }
#if defined(KESTREL_HAVE_OPENMP)
#pragma omp parallel num_threads(nth)
  {
    const int actual = omp_get_num_threads();
#pragma omp single
    run_nth_ = actual;
    // implicit barrier after single
    job(omp_get_thread_num(), actual);
  }
#else
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &job;
    run_nth_ = nth;
    pending_.store(nth - 1, std::memory_order_release);
    ++generation_;
  }
  cv_.notify_all();
  job(0, nth);
  while (pending_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
#endif
}

void ThreadPool::barrier() {
#if defined(KESTREL_HAVE_OPENMP)
  if (omp_in_parallel()) {
#pragma omp barrier
  }
#else
  const int nth = run_nth_;
  if (nth <= 1) return;
  const uint32_t phase = barrier_phase_.load(std::memory_order_acquire);
  if (barrier_count_.fetch_add(1, std::memory_order_acq_rel) == nth - 1) {
    barrier_count_.store(0, std::memory_order_relaxed);
    barrier_phase_.fetch_add(1, std::memory_order_acq_rel);
  } else {
    while (barrier_phase_.load(std::memory_order_acquire) == phase) std::this_thread::yield();
  }
#endif
}

}  // namespace kestrel
