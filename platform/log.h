// Logging through a sink chosen per context: kestrel keeps no process-global
// logger, so two embedders (or two contexts in one program) can route their
// messages to different places, or drop them.
//
//   LogSink sink{my_fn, my_user_data, LogLevel::warn};
//   Logger log(sink);                        // or log_sink_stderr(), or Logger{} = silent
//   log.warn("tensor %s: %d bytes of padding", name, pad);
//
// Messages are formatted printf-style into a stack buffer; only a message longer
// than kLogStackBytes allocates (and is still delivered, truncated, when that
// allocation fails). The sink function is called on the logging thread: if a
// context's threads log concurrently, the sink must be thread-safe.
#pragma once

#include <cstdarg>
#include <cstddef>

namespace kestrel {

// Numeric values are shared with the C API's log levels.
enum class LogLevel : int {
  debug = 0,
  info = 1,
  warn = 2,
  error = 3,
  none = 4,  // as a min_level: deliver nothing
};

// "debug", "info", "warn", "error", "none".
const char* log_level_name(LogLevel level);

// Where messages go. fn == nullptr drops everything. msg has no trailing newline
// and is valid only during the call.
struct LogSink {
  void (*fn)(void* user, LogLevel level, const char* msg) = nullptr;
  void* user = nullptr;             // passed back to fn unchanged
  LogLevel min_level = LogLevel::info;  // messages below this level are dropped
};

// A sink that writes "kestrel: <level>: <msg>\n" to stderr with one fputs call.
LogSink log_sink_stderr(LogLevel min_level = LogLevel::info);

// Messages up to this many bytes (with the terminating NUL) never touch the heap.
inline constexpr size_t kLogStackBytes = 512;

// A value type: copying a Logger copies its sink (not the destination).
class Logger {
 public:
  Logger() = default;  // silent
  explicit Logger(const LogSink& sink) : sink_(sink) {}

  const LogSink& sink() const { return sink_; }
  void set_sink(const LogSink& sink) { sink_ = sink; }
  // True if a message at this level would reach the sink: lets callers skip
  // building expensive arguments.
  bool enabled(LogLevel level) const {
    return sink_.fn != nullptr && level != LogLevel::none && level >= sink_.min_level;
  }

  void log(LogLevel level, const char* fmt, ...) const __attribute__((format(printf, 3, 4)));
  void vlog(LogLevel level, const char* fmt, va_list ap) const;
  void debug(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
  void info(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
  void warn(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
  void error(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));

 private:
  LogSink sink_;
};

}  // namespace kestrel
