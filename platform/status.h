// Status and Expected<T>: how every fallible function in kestrel reports failure.
//
// Bad files, bad text, bad parameters and out-of-memory are statuses, never
// asserts, exceptions or aborts (see ../shared/BAD-INPUTS.md). Usage:
//
//   Expected<Model> load(...) {
//     KESTREL_TRY(check_header(f));                 // propagate a Status
//     KESTREL_TRY_ASSIGN(auto n, read_u64(f));      // propagate or bind
//     if (n > kMaxTensors) return Status::bad_file("tensor count %llu > cap", n);
//   }
#pragma once

#include <cstdarg>
#include <cstdint>
#include <new>
#include <string>
#include <utility>
#include <variant>

namespace kestrel {

// Numeric values are shared with the C API's kestrel_status.
enum class StatusCode : int {
  ok = 0,
  invalid_argument = 1,  // a parameter the caller passed is out of range or NULL
  bad_file = 2,          // a model / tokenizer file is malformed or unsupported
  unsupported = 3,       // valid, but this build or backend cannot do it
  out_of_memory = 4,
  io_error = 5,          // the OS refused (open, read, mmap)
  too_long = 6,          // input above a configured cap
  cancelled = 7,         // a callback asked to stop
  runtime_error = 8,     // NaN logits, backend failure, ...
  internal = 9,          // a kestrel bug
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return {}; }
  // printf-style constructors for each code.
  static Status invalid_argument(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
  static Status bad_file(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
  static Status unsupported(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
  static Status out_of_memory(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
  static Status io_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
  static Status too_long(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
  static Status cancelled(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
  static Status runtime_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
  static Status internal(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

  bool ok() const { return code_ == StatusCode::ok; }
  explicit operator bool() const { return ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "bad_file: tensor 'x' ends past the file" (or "ok").
  std::string to_string() const;

  // Prefix context to the message: "loading blk.3: " + message.
  Status& with_context(const std::string& prefix);

 private:
  StatusCode code_ = StatusCode::ok;
  std::string message_;
};

Status make_status_v(StatusCode code, const char* fmt, va_list ap);

// Expected<T>: a value or a non-ok Status.
template <typename T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::move(value)) {}                 // NOLINT: implicit by design
  Expected(Status status) : v_(std::move(status)) {}          // NOLINT: must not be ok
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }
  const Status& status() const {
    static const Status kOk;
    return v_.index() == 1 ? std::get<1>(v_) : kOk;
  }
  Status take_status() && { return ok() ? Status() : std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Status> v_;
};

#define KESTREL_CONCAT_INNER(a, b) a##b
#define KESTREL_CONCAT(a, b) KESTREL_CONCAT_INNER(a, b)

#define KESTREL_TRY(expr)                                 \
  do {                                                    \
    ::kestrel::Status kestrel_try_status_ = (expr);       \
    if (!kestrel_try_status_.ok()) return kestrel_try_status_; \
  } while (0)

#define KESTREL_TRY_ASSIGN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                            \
  if (!tmp.ok()) return std::move(tmp).take_status(); \
  lhs = std::move(tmp).value()

#define KESTREL_TRY_ASSIGN(lhs, expr) \
  KESTREL_TRY_ASSIGN_IMPL(KESTREL_CONCAT(kestrel_try_tmp_, __LINE__), lhs, expr)

}  // namespace kestrel
