// Checked size arithmetic: the one helper every size and offset computation in
// the loaders goes through (../shared/BAD-INPUTS.md row 4).
//
// Sizes and offsets read from files are untrusted. Any product, sum or
// round-up of them can wrap around; a wrapped size then passes a bounds check
// and the read runs off the buffer. These helpers return false (or a bad_file
// status naming the quantity) instead of wrapping.
//
//   uint64_t bytes;
//   if (!checked_mul(n_rows, row_bytes, bytes)) return Status::bad_file("...");
//   KESTREL_TRY_ASSIGN(uint64_t end, add_or_error(offset, bytes, "tensor end"));
//
// Caps: every value returned here is additionally at most kMaxCheckedBytes
// (2^56 bytes, 64 PiB). No real file is that large, and keeping all sizes
// below 2^56 means a handful of them can be added without the 64-bit
// headroom running out, and that any such size fits an int64 (tensor element
// counts are int64 in kestrel).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include "platform/status.h"

namespace kestrel {

inline constexpr uint64_t kMaxCheckedBytes = uint64_t{1} << 56;

// a + b, false on overflow or above kMaxCheckedBytes.
inline bool checked_add(uint64_t a, uint64_t b, uint64_t& out) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r) || r > kMaxCheckedBytes) return false;
  out = r;
  return true;
}

// a * b, false on overflow or above kMaxCheckedBytes.
inline bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r) || r > kMaxCheckedBytes) return false;
  out = r;
  return true;
}

inline constexpr bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Smallest multiple of align that is >= v. align must be a power of two
// (false otherwise); false on overflow or above kMaxCheckedBytes.
inline bool checked_align_up(uint64_t v, uint64_t align, uint64_t& out) {
  if (!is_pow2(align)) return false;
  uint64_t r;
  if (__builtin_add_overflow(v, align - 1, &r)) return false;
  r &= ~(align - 1);
  if (r > kMaxCheckedBytes) return false;
  out = r;
  return true;
}

// A 64-bit size that must become an in-memory size_t (32-bit targets).
inline bool checked_to_size(uint64_t v, size_t& out) {
  if (v > std::numeric_limits<size_t>::max()) return false;
  out = static_cast<size_t>(v);
  return true;
}

// Status-returning forms; `what` names the quantity in the message
// ("tensor 'x' byte size overflows").
inline Expected<uint64_t> add_or_error(uint64_t a, uint64_t b, const char* what) {
  uint64_t r = 0;
  if (!checked_add(a, b, r))
    return Status::bad_file("%s overflows (%llu + %llu)", what, static_cast<unsigned long long>(a),
                            static_cast<unsigned long long>(b));
  return r;
}

inline Expected<uint64_t> mul_or_error(uint64_t a, uint64_t b, const char* what) {
  uint64_t r = 0;
  if (!checked_mul(a, b, r))
    return Status::bad_file("%s overflows (%llu * %llu)", what, static_cast<unsigned long long>(a),
                            static_cast<unsigned long long>(b));
  return r;
}

inline Expected<uint64_t> align_up_or_error(uint64_t v, uint64_t align, const char* what) {
  uint64_t r = 0;
  if (!checked_align_up(v, align, r))
    return Status::bad_file("%s overflows when aligned to %llu (%llu)", what,
                            static_cast<unsigned long long>(align), static_cast<unsigned long long>(v));
  return r;
}

}  // namespace kestrel
