// Unicode helpers for the tokenizers: a UTF-8 decoder that never throws and
// never reads past the end, code point category flags (the \p{..} classes the
// pre-tokenizer regexes use), and GPT-2's byte <-> printable-unicode mapping.
//
//   size_t i = 0;
//   while (i < s.size()) { Utf8Char c = decode_utf8(s, i); i += c.len; use(c.cp); }
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kestrel::unicode {

inline constexpr uint32_t kReplacement = 0xFFFD;

// Category flags (one per code point) plus the white-space bit.
enum CpFlag : uint16_t {
  kUndefined = 0x01,    // unassigned (Cn)
  kNumber = 0x02,       // \p{N}
  kLetter = 0x04,       // \p{L}
  kSeparator = 0x08,    // \p{Z}
  kMark = 0x10,         // \p{M}
  kPunctuation = 0x20,  // \p{P}
  kSymbol = 0x40,       // \p{S}
  kControl = 0x80,      // \p{C}
  kWhitespace = 0x100,  // Unicode White_Space (what \s means in the pre-tokenizers)
};

// Flags of a code point; code points past U+10FFFF are undefined.
uint16_t cp_flags(uint32_t cp);
inline bool is_whitespace(uint32_t cp) { return cp_flags(cp) & kWhitespace; }
inline bool is_letter(uint32_t cp) { return cp_flags(cp) & kLetter; }
inline bool is_number(uint32_t cp) { return cp_flags(cp) & kNumber; }

struct Utf8Char {
  uint32_t cp;   // kReplacement when invalid
  uint32_t len;  // bytes consumed, >= 1
  bool valid;
};

// Decodes the character at s[i] (i < s.size()). Invalid sequences (stray
// continuation bytes, bad leads, truncated sequences, overlong forms,
// surrogates, > U+10FFFF) decode as one byte of U+FFFD, so decoding always
// advances and the next valid character is found again.
Utf8Char decode_utf8(std::string_view s, size_t i);

// Decodes a whole string (invalid bytes -> U+FFFD, one per byte).
void decode_utf8(std::string_view s, std::vector<uint32_t>& out);

// Appends the UTF-8 form of cp (cp must be <= U+10FFFF and not a surrogate;
// anything else appends U+FFFD).
void append_utf8(uint32_t cp, std::string& out);

// Length of the longest prefix of s that does not end inside an incomplete
// (but so far valid) UTF-8 sequence: the bytes after it may still be
// completed by more input.
size_t complete_utf8_prefix(std::string_view s);

// Replaces every invalid byte of s by U+FFFD (valid characters are copied).
void append_sanitized_utf8(std::string_view s, std::string& out);

// GPT-2 byte-level BPE: every byte maps to one printable code point
// (printable Latin-1 bytes map to themselves, the rest to U+0100..U+0143).
uint32_t byte_to_cp(uint8_t b);
// The UTF-8 of byte_to_cp(b).
std::string_view byte_to_utf8(uint8_t b);
// Inverse of byte_to_cp, -1 when cp is not one of the 256 images.
int cp_to_byte(uint32_t cp);

// ASCII-only lower-casing (what the contraction rules of the pre-tokenizers need).
inline uint32_t ascii_lower(uint32_t cp) { return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp; }

}  // namespace kestrel::unicode
