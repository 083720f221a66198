#include "platform/status.h"

#include <cstdio>

namespace kestrel {

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::ok: return "ok";
    case StatusCode::invalid_argument: return "invalid_argument";
    case StatusCode::bad_file: return "bad_file";
    case StatusCode::unsupported: return "unsupported";
    case StatusCode::out_of_memory: return "out_of_memory";
    case StatusCode::io_error: return "io_error";
    case StatusCode::too_long: return "too_long";
    case StatusCode::cancelled: return "cancelled";
    case StatusCode::runtime_error: return "runtime_error";
    case StatusCode::internal: return "internal";
  }
  return "unknown";
}

Status make_status_v(StatusCode code, const char* fmt, va_list ap) {
  char buf[512];
  va_list copy;
  va_copy(copy, ap);
  int n = std::vsnprintf(buf, sizeof buf, fmt, copy);
  va_end(copy);
  if (n < 0) return Status(code, fmt);
  if (static_cast<size_t>(n) < sizeof buf) return Status(code, std::string(buf, static_cast<size_t>(n)));
  std::string s(static_cast<size_t>(n) + 1, '\0');
  std::vsnprintf(s.data(), s.size(), fmt, ap);
  s.resize(static_cast<size_t>(n));
  return Status(code, std::move(s));
}

#define KESTREL_STATUS_CTOR(name)                         \
  Status Status::name(const char* fmt, ...) {             \
    va_list ap;                                           \
    va_start(ap, fmt);                                    \
    Status s = make_status_v(StatusCode::name, fmt, ap);  \
    va_end(ap);                                           \
    return s;                                             \
  }
KESTREL_STATUS_CTOR(invalid_argument)
KESTREL_STATUS_CTOR(bad_file)
KESTREL_STATUS_CTOR(unsupported)
KESTREL_STATUS_CTOR(out_of_memory)
KESTREL_STATUS_CTOR(io_error)
KESTREL_STATUS_CTOR(too_long)
KESTREL_STATUS_CTOR(cancelled)
KESTREL_STATUS_CTOR(runtime_error)
KESTREL_STATUS_CTOR(internal)
#undef KESTREL_STATUS_CTOR

std::string Status::to_string() const {
  if (ok()) return "ok";
  return std::string(status_code_name(code_)) + ": " + message_;
}

Status& Status::with_context(const std::string& prefix) {
  if (!ok()) message_ = prefix + message_;
  return *this;
}

}  // namespace kestrel
