#include "platform/log.h"

#include <cstdio>
#include <cstring>
#include <new>

namespace kestrel {

const char* log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
    case LogLevel::none: return "none";
  }
  return "unknown";
}

namespace {

void stderr_sink(void* /*user*/, LogLevel level, const char* msg) {
  // Holding the stream lock for the whole line keeps lines from several
  // threads from interleaving, at any message length.
  flockfile(stderr);
  std::fputs("kestrel: ", stderr);
  std::fputs(log_level_name(level), stderr);
  std::fputs(": ", stderr);
  std::fputs(msg, stderr);
  std::fputc('\n', stderr);
  funlockfile(stderr);
}

}  // namespace

LogSink log_sink_stderr(LogLevel min_level) {
  LogSink s;
  s.fn = stderr_sink;
  s.user = nullptr;
  s.min_level = min_level;
  return s;
}

void Logger::vlog(LogLevel level, const char* fmt, va_list ap) const {
  if (!enabled(level) || fmt == nullptr) return;
  char buf[kLogStackBytes];
  va_list ap2;
  va_copy(ap2, ap);
  const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  if (n < 0) {  // an encoding error in the arguments: say so rather than drop it
    va_end(ap2);
    sink_.fn(sink_.user, level, "(log message could not be formatted)");
    return;
  }
  if (static_cast<size_t>(n) < sizeof buf) {
    va_end(ap2);
    sink_.fn(sink_.user, level, buf);
    return;
  }
  // Longer than the stack buffer: one heap allocation of the exact size. When
  // it fails, deliver the truncated text marked with "..." instead of nothing.
  const size_t need = static_cast<size_t>(n) + 1;
  char* big = new (std::nothrow) char[need];
  if (big != nullptr) {
    std::vsnprintf(big, need, fmt, ap2);
    va_end(ap2);
    sink_.fn(sink_.user, level, big);
    delete[] big;
    return;
  }
  va_end(ap2);
  std::memcpy(buf + sizeof buf - 4, "...", 4);
  sink_.fn(sink_.user, level, buf);
}

void Logger::log(LogLevel level, const char* fmt, ...) const {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, fmt, ap);
  va_end(ap);
}

#define KESTREL_LOGGER_LEVEL_FN(name)           \
  void Logger::name(const char* fmt, ...) const { \
    va_list ap;                                 \
    va_start(ap, fmt);                          \
    vlog(LogLevel::name, fmt, ap);              \
    va_end(ap);                                 \
  }
KESTREL_LOGGER_LEVEL_FN(debug)
KESTREL_LOGGER_LEVEL_FN(info)
KESTREL_LOGGER_LEVEL_FN(warn)
KESTREL_LOGGER_LEVEL_FN(error)
#undef KESTREL_LOGGER_LEVEL_FN

}  // namespace kestrel
