// UTF-8 decoding, category lookup and the GPT-2 byte mapping (see unicode.h).
#include "runtime/tokenizer/unicode.h"

#include <algorithm>
#include <array>

namespace kestrel::unicode {
namespace {

struct Run {
  uint32_t first;
  uint8_t flag;
};

constexpr Run kRuns[] = {
#include "runtime/tokenizer/unicode_tables.inc"
};

// Unicode White_Space (PropList.txt); the same set the byte-level BPE
// pre-tokenizers treat as \s.
bool white_space(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  switch (cp) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

// A flat table for the first 64 Ki code points (most text), binary search above.
struct FlagTable {
  std::array<uint16_t, 0x10000> bmp{};
  FlagTable() {
    size_t r = 0;
    constexpr size_t n = sizeof(kRuns) / sizeof(kRuns[0]);
    for (uint32_t cp = 0; cp < 0x10000; ++cp) {
      while (r + 1 < n && kRuns[r + 1].first <= cp) ++r;
      bmp[cp] = static_cast<uint16_t>(kRuns[r].flag | (white_space(cp) ? kWhitespace : 0));
    }
  }
};

const FlagTable& flag_table() {
  static const FlagTable table;  // immutable after construction (thread-safe static init)
  return table;
}

struct ByteMap {
  uint32_t cp[256];
  char utf8[256][3];
  uint8_t utf8_len[256];
  int16_t inverse[0x144];  // byte images are all below U+0144
  ByteMap() {
    for (auto& v : inverse) v = -1;
    auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    int n = 0;
    for (int b = 0; b < 256; ++b) cp[b] = printable(b) ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
    for (int b = 0; b < 256; ++b) {
      std::string s;
      append_utf8(cp[b], s);
      utf8_len[b] = static_cast<uint8_t>(s.size());
      for (size_t k = 0; k < s.size(); ++k) utf8[b][k] = s[k];
      inverse[cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

uint16_t cp_flags(uint32_t cp) {
  if (cp < 0x10000) return flag_table().bmp[cp];
  if (cp >= 0x110000) return kUndefined;
  constexpr size_t n = sizeof(kRuns) / sizeof(kRuns[0]);
  const Run* it = std::upper_bound(kRuns, kRuns + n, cp, [](uint32_t v, const Run& r) { return v < r.first; });
  return (it - 1)->flag;  // no white space above the BMP
}

Utf8Char decode_utf8(std::string_view s, size_t i) {
  const Utf8Char bad{kReplacement, 1, false};
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + i;
  const size_t left = s.size() - i;
  const uint8_t b0 = p[0];
  if (b0 < 0x80) return {b0, 1, true};
  uint32_t len, cp, min;
  if (b0 >= 0xC2 && b0 <= 0xDF) { len = 2; cp = b0 & 0x1F; min = 0x80; }
  else if ((b0 & 0xF0) == 0xE0) { len = 3; cp = b0 & 0x0F; min = 0x800; }
  else if (b0 >= 0xF0 && b0 <= 0xF4) { len = 4; cp = b0 & 0x07; min = 0x10000; }
  else return bad;  // continuation byte, C0/C1 (always overlong), F5..FF
  if (left < len) return bad;
  for (uint32_t k = 1; k < len; ++k) {
    if ((p[k] & 0xC0) != 0x80) return bad;
    cp = (cp << 6) | (p[k] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return bad;
  return {cp, len, true};
}

void decode_utf8(std::string_view s, std::vector<uint32_t>& out) {
  out.clear();
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const Utf8Char c = decode_utf8(s, i);
    out.push_back(c.cp);
    i += c.len;
  }
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = kReplacement;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t complete_utf8_prefix(std::string_view s) {
  // Look at most 3 bytes back for the lead byte of an unfinished sequence.
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto b = static_cast<uint8_t>(s[n - back]);
    if ((b & 0xC0) == 0x80) continue;  // continuation: keep looking for the lead
    size_t need = 0;
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if ((b & 0xF0) == 0xE0) need = 3;
    else if (b >= 0xF0 && b <= 0xF4) need = 4;
    if (need > back) {
      // Hold the tail back only if it can still become a valid character.
      std::string_view tail = s.substr(n - back);
      bool ok = true;
      if (back >= 2) {
        const auto b1 = static_cast<uint8_t>(tail[1]);
        if (b == 0xE0 && b1 < 0xA0) ok = false;  // overlong
        if (b == 0xED && b1 > 0x9F) ok = false;  // surrogate
        if (b == 0xF0 && b1 < 0x90) ok = false;  // overlong
        if (b == 0xF4 && b1 > 0x8F) ok = false;  // > U+10FFFF
      }
      return ok ? n - back : n;
    }
    return n;
  }
  return n;
}

void append_sanitized_utf8(std::string_view s, std::string& out) {
  for (size_t i = 0; i < s.size();) {
    const Utf8Char c = decode_utf8(s, i);
    if (c.valid) out.append(s.data() + i, c.len);
    else append_utf8(kReplacement, out);
    i += c.len;
  }
}

uint32_t byte_to_cp(uint8_t b) { return byte_map().cp[b]; }

std::string_view byte_to_utf8(uint8_t b) {
  const ByteMap& m = byte_map();
  return {m.utf8[b], m.utf8_len[b]};
}

int cp_to_byte(uint32_t cp) { return cp < 0x144 ? byte_map().inverse[cp] : -1; }

}  // namespace kestrel::unicode
