// platform/: thread pool (run, barrier, split, determinism), monotonic timers,
// per-context logging sinks, CPU feature detection.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "platform/cpu_features.h"
#include "platform/log.h"
#include "platform/thread_pool.h"
#include "platform/timer.h"

// Counts heap allocations made by this thread, to check that short log
// messages never allocate. Replacing the global operator new is allowed once
// per program; this test binary is its own program.
namespace {
thread_local long t_allocs = 0;
}
void* operator new(std::size_t n) {
  ++t_allocs;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  ++t_allocs;
  return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

using namespace kestrel;

TEST_CASE("ThreadPool::split covers [0, n) in ordered near-equal chunks", "[platform][thread_pool]") {
  for (int64_t n : {0, 1, 2, 7, 64, 100, 1001}) {
    for (int nth = 1; nth <= 5; ++nth) {
      int64_t expect_begin = 0, min_len = n, max_len = 0;
      for (int ith = 0; ith < nth; ++ith) {
        int64_t b = -1, e = -1;
        ThreadPool::split(n, ith, nth, &b, &e);
        INFO("n=" << n << " nth=" << nth << " ith=" << ith);
        REQUIRE(b == expect_begin);
        REQUIRE(e >= b);
        expect_begin = e;
        min_len = std::min(min_len, e - b);
        max_len = std::max(max_len, e - b);
      }
      REQUIRE(expect_begin == n);
      REQUIRE(max_len - min_len <= 1);
    }
  }
}

TEST_CASE("ThreadPool::run calls every (ith, nth) once, ith 0 on the caller", "[platform][thread_pool]") {
  for (int n_threads = 1; n_threads <= 4; ++n_threads) {
    ThreadPool pool(n_threads);
    REQUIRE(pool.n_threads() == n_threads);
    for (int n : {-3, 0, 1, 2, 3, 4, 9}) {
      const int want_nth = std::clamp(n, 1, n_threads);
      std::vector<std::atomic<int>> calls(8);
      std::atomic<int> bad_nth{0};
      std::thread::id ith0_thread;
      pool.run(n, [&](int ith, int nth) {
        if (nth != want_nth) bad_nth.fetch_add(1);
        if (ith >= 0 && ith < 8) calls[ith].fetch_add(1);
        if (ith == 0) ith0_thread = std::this_thread::get_id();
      });
      INFO("n_threads=" << n_threads << " n=" << n);
      REQUIRE(bad_nth.load() == 0);
      for (int i = 0; i < 8; ++i) REQUIRE(calls[i].load() == (i < want_nth ? 1 : 0));
      REQUIRE(ith0_thread == std::this_thread::get_id());
    }
  }
}

TEST_CASE("ThreadPool::barrier orders the phases of one run", "[platform][thread_pool]") {
  for (int n_threads = 1; n_threads <= 4; ++n_threads) {
    ThreadPool pool(n_threads);
    constexpr int kRounds = 200;
    std::vector<int> slot(n_threads, -1);
    std::atomic<int> mismatches{0};
    pool.run(n_threads, [&](int ith, int nth) {
      for (int r = 0; r < kRounds; ++r) {
        slot[ith] = r;  // phase 1: everyone publishes round r
        pool.barrier();
        for (int j = 0; j < nth; ++j)  // phase 2: everyone sees all of round r
          if (slot[j] != r) mismatches.fetch_add(1);
        pool.barrier();  // nobody starts round r+1 while others still read
      }
    });
    INFO("n_threads=" << n_threads);
    REQUIRE(mismatches.load() == 0);
  }
}

TEST_CASE("ThreadPool: fixed chunks give bitwise reproducible reductions", "[platform][thread_pool]") {
  std::vector<float> x(100003);
  uint32_t s = 12345;
  for (float& v : x) {  // values of mixed magnitude so that summation order matters
    s = s * 1664525u + 1013904223u;
    v = static_cast<float>(s >> 8) * (1.0f / 16777216.0f) * ((s & 1) ? 1e4f : 1e-3f);
  }
  for (int n_threads = 1; n_threads <= 4; ++n_threads) {
    ThreadPool pool(n_threads);
    auto reduce = [&] {
      std::vector<float> partial(n_threads, 0.0f);
      pool.run(n_threads, [&](int ith, int nth) {
        int64_t b, e;
        ThreadPool::split(static_cast<int64_t>(x.size()), ith, nth, &b, &e);
        float acc = 0.0f;
        for (int64_t i = b; i < e; ++i) acc += x[i];
        partial[ith] = acc;
      });
      float total = 0.0f;
      for (float p : partial) total += p;
      return total;
    };
    const float first = reduce();
    for (int rep = 0; rep < 20; ++rep) {
      const float again = reduce();
      INFO("n_threads=" << n_threads << " rep=" << rep);
      REQUIRE(std::memcmp(&first, &again, sizeof first) == 0);
    }
  }
}

TEST_CASE("ThreadPool::set_n_threads resizes; counts below 1 mean 1", "[platform][thread_pool]") {
  ThreadPool pool(0);
  REQUIRE(pool.n_threads() == 1);
  pool.set_n_threads(3);
  REQUIRE(pool.n_threads() == 3);
  std::atomic<int> seen{0};
  pool.run(3, [&](int, int nth) { seen.fetch_add(nth); });
  REQUIRE(seen.load() == 9);
  pool.set_n_threads(-5);
  REQUIRE(pool.n_threads() == 1);
  seen = 0;
  pool.run(4, [&](int ith, int nth) { seen.fetch_add(ith + 10 * nth); });
  REQUIRE(seen.load() == 10);
}

TEST_CASE("now_ns never decreases and Stopwatch measures a sleep", "[platform][timer]") {
  int64_t prev = now_ns();
  for (int i = 0; i < 100000; ++i) {
    const int64_t t = now_ns();
    REQUIRE(t >= prev);
    prev = t;
  }
  Stopwatch sw;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const int64_t dt = sw.elapsed_ns();
  REQUIRE(dt >= 20'000'000);
  REQUIRE(dt < 20'000'000'000);  // a sleep of 20 ms is not 20 s, even under emulation
  REQUIRE(sw.elapsed_ms() >= 20.0);
  const int64_t lap = sw.lap_ns();
  REQUIRE(lap >= dt);
  REQUIRE(sw.elapsed_ns() < lap);  // lap restarted the watch
  sw.reset();
  REQUIRE(sw.elapsed_s() < 1.0);
}

namespace {
struct Captured {
  std::vector<std::pair<LogLevel, std::string>> msgs;
};
void capture_fn(void* user, LogLevel level, const char* msg) {
  static_cast<Captured*>(user)->msgs.emplace_back(level, msg);
}
}  // namespace

TEST_CASE("Logger delivers formatted messages to its own sink", "[platform][log]") {
  Captured a, b;
  Logger la(LogSink{capture_fn, &a, LogLevel::debug});
  Logger lb(LogSink{capture_fn, &b, LogLevel::debug});
  la.info("loaded %d tensors from %s", 291, "model.gguf");
  lb.error("bad magic 0x%08x", 0x46554747u);
  la.debug("d");
  la.warn("w%c", '!');
  REQUIRE(a.msgs.size() == 3);
  REQUIRE(a.msgs[0].first == LogLevel::info);
  REQUIRE(a.msgs[0].second == "loaded 291 tensors from model.gguf");
  REQUIRE(a.msgs[1] == std::make_pair(LogLevel::debug, std::string("d")));
  REQUIRE(a.msgs[2] == std::make_pair(LogLevel::warn, std::string("w!")));
  REQUIRE(b.msgs.size() == 1);  // two loggers never share state
  REQUIRE(b.msgs[0].first == LogLevel::error);
  REQUIRE(b.msgs[0].second == "bad magic 0x46554747");
}

TEST_CASE("Logger filters by the sink's min_level", "[platform][log]") {
  Captured c;
  Logger log(LogSink{capture_fn, &c, LogLevel::warn});
  REQUIRE_FALSE(log.enabled(LogLevel::debug));
  REQUIRE_FALSE(log.enabled(LogLevel::info));
  REQUIRE(log.enabled(LogLevel::warn));
  REQUIRE(log.enabled(LogLevel::error));
  REQUIRE_FALSE(log.enabled(LogLevel::none));
  log.debug("no");
  log.info("no");
  log.warn("yes 1");
  log.error("yes 2");
  log.log(LogLevel::none, "never");
  REQUIRE(c.msgs.size() == 2);
  REQUIRE(c.msgs[0].second == "yes 1");
  REQUIRE(c.msgs[1].second == "yes 2");

  Captured quiet;
  Logger off(LogSink{capture_fn, &quiet, LogLevel::none});
  off.error("dropped");
  REQUIRE(quiet.msgs.empty());

  Logger silent;  // default: no sink, nothing happens
  REQUIRE_FALSE(silent.enabled(LogLevel::error));
  silent.error("nowhere %d", 1);

  Logger copy = log;  // a value: the copy logs to the same sink
  copy.error("via copy");
  REQUIRE(c.msgs.size() == 3);
  REQUIRE(c.msgs[2].second == "via copy");
}

TEST_CASE("Logger: short messages do not allocate, long ones arrive whole", "[platform][log]") {
  std::string long_msg(3000, 'x');
  long_msg[0] = 'A';
  long_msg[2999] = 'Z';
  // The sink itself allocates (it copies into a std::string): count only the
  // formatting, through a sink that just records length and ends.
  struct Seen {
    size_t len = 0;
    char first = 0, last = 0;
  } seen;
  auto fn = [](void* user, LogLevel, const char* msg) {
    auto* s = static_cast<Seen*>(user);
    s->len = std::strlen(msg);
    s->first = msg[0];
    s->last = s->len ? msg[s->len - 1] : 0;
  };
  Logger log(LogSink{fn, &seen, LogLevel::debug});

  const std::string fits(kLogStackBytes - 1, 'y');  // exactly fills the stack buffer
  // Counts are read into locals before any REQUIRE, which may allocate itself.
  const long before = t_allocs;
  log.info("kv cache: %d cells of %d bytes, %s", 4096, 256, "f16");
  const long after_short = t_allocs;
  const size_t len_short = seen.len;
  log.info("%s", fits.c_str());
  const long after_fits = t_allocs;
  REQUIRE(after_short == before);
  REQUIRE(len_short == std::strlen("kv cache: 4096 cells of 256 bytes, f16"));
  REQUIRE(after_fits == before);
  REQUIRE(seen.len == kLogStackBytes - 1);

  log.warn("%s", long_msg.c_str());
  const long after_long = t_allocs;
  REQUIRE(after_long > after_fits);  // the counter works: this one had to allocate
  REQUIRE(seen.len == 3000);
  REQUIRE(seen.first == 'A');
  REQUIRE(seen.last == 'Z');
}

TEST_CASE("log_level_name and the stderr sink", "[platform][log]") {
  REQUIRE(std::string(log_level_name(LogLevel::debug)) == "debug");
  REQUIRE(std::string(log_level_name(LogLevel::warn)) == "warn");
  REQUIRE(std::string(log_level_name(LogLevel::error)) == "error");
  const LogSink s = log_sink_stderr(LogLevel::error);
  REQUIRE(s.fn != nullptr);
  REQUIRE(s.min_level == LogLevel::error);
  Logger log(s);
  log.info("not shown: below min_level");
  REQUIRE(log.enabled(LogLevel::error));
}

TEST_CASE("cpu_features agrees with the compiler's view of this CPU", "[platform][cpu_features]") {
  const CpuFeatures& f = cpu_features();
  REQUIRE(&f == &cpu_features());  // detected once
  REQUIRE(f.n_logical_cpus >= 1);
  const std::string s = f.to_string();
  REQUIRE_FALSE(s.empty());
  INFO("features: " << s);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  REQUIRE(f.sse42 == static_cast<bool>(__builtin_cpu_supports("sse4.2")));
  REQUIRE(f.avx2 == static_cast<bool>(__builtin_cpu_supports("avx2")));
  REQUIRE(f.fma == static_cast<bool>(__builtin_cpu_supports("fma")));
  REQUIRE(f.avx512f == static_cast<bool>(__builtin_cpu_supports("avx512f")));
  REQUIRE(f.avx_vnni == static_cast<bool>(__builtin_cpu_supports("avxvnni")));
  REQUIRE((s.find("avx_vnni") != std::string::npos) == f.avx_vnni);
  // Implications that any x86-64 CPU and OS satisfy.
  if (f.avx2) REQUIRE(f.avx);
  if (f.avx512bw || f.avx512vl || f.avx512dq || f.avx512vnni) REQUIRE(f.avx512f);
  REQUIRE_FALSE(f.neon);
#elif defined(__aarch64__)
  REQUIRE(f.neon);  // mandatory on arm64
  REQUIRE_FALSE(f.avx2);
  REQUIRE(s.find("neon") != std::string::npos);
#else
  REQUIRE_FALSE(f.avx2);
  REQUIRE_FALSE(f.neon);  // 32-bit ARM: no variant is compiled, none reported
#endif
}
