// Hand-written pre-tokenizer regexes (see pretokenize.h).
//
// Conventions shared by every matcher: cps[b, e) is the piece being split,
// positions at or past e behave as "end of input" (lookaheads and character
// classes fail there), \s is Unicode White_Space, \p{L}/\p{N}/\p{P} are the
// Unicode general categories. A matcher returns the length of the match that
// starts at p, or 0 when none does.
#include "runtime/tokenizer/pretokenize.h"

#include <algorithm>

#include "runtime/tokenizer/unicode.h"

namespace kestrel {
namespace {

using unicode::cp_flags;
using unicode::kLetter;
using unicode::kNumber;
using unicode::kPunctuation;
using unicode::kSymbol;
using unicode::kWhitespace;

struct Piece {
  const uint32_t* cps;
  size_t b, e;
  uint16_t flags(size_t p) const { return p < e ? cp_flags(cps[p]) : 0; }
  uint32_t at(size_t p) const { return p < e ? cps[p] : 0xFFFFFFFFu; }
};

// Appends the run lengths of one piece split by a leftmost-first matcher:
// text between matches is kept as its own piece (what a regex iterator leaves).
template <typename Matcher>
void split_matches(const Piece& s, std::vector<size_t>& out, Matcher match) {
  size_t gap = s.b;
  for (size_t p = s.b; p < s.e;) {
    const size_t n = match(s, p);
    if (n == 0) { ++p; continue; }
    if (p > gap) out.push_back(p - gap);
    out.push_back(n);
    p += n;
    gap = p;
  }
  if (s.e > gap) out.push_back(s.e - gap);
}

bool is_rn(uint32_t c) { return c == '\r' || c == '\n'; }

// Contractions 's 't 're 've 'm 'll 'd (ASCII case folded when fold is set).
size_t match_contraction(const Piece& s, size_t p, bool fold) {
  if (s.at(p) != '\'' || p + 1 >= s.e) return 0;
  auto lower = [&](uint32_t c) { return fold ? unicode::ascii_lower(c) : c; };
  const uint32_t c1 = lower(s.at(p + 1));
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (p + 2 >= s.e) return 0;
  const uint32_t c2 = lower(s.at(p + 2));
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// Every code point matches one alternative, so this never leaves gaps.
void pass_gpt2(const Piece& s, std::vector<size_t>& out) {
  for (size_t p = s.b; p < s.e;) {
    size_t n = match_contraction(s, p, false);
    if (n == 0) {
      const size_t q0 = p + (s.at(p) == ' ' ? 1 : 0);
      const uint16_t f = s.flags(q0);
      size_t q = q0;
      if (f & kLetter) {
        while (s.flags(q) & kLetter) ++q;
      } else if (f & kNumber) {
        while (s.flags(q) & kNumber) ++q;
      } else if (f != 0 && !(f & (kWhitespace | kLetter | kNumber))) {
        for (uint16_t g = f; g != 0 && !(g & (kWhitespace | kLetter | kNumber)); g = s.flags(++q)) {}
      }
      if (q > q0) {
        n = q - p;
      } else {
        size_t k = 0;
        while (s.flags(p + k) & kWhitespace) ++k;
        if (k > 1 && p + k < s.e) n = k - 1;  // \s+(?!\S): leave the last space to the next word
        else n = std::max<size_t>(k, 1);
      }
    }
    out.push_back(n);
    p += n;
  }
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// with D = 3 (llama3) or 1 (qwen2, written \p{N} there).
void pass_llama3(const Piece& s, std::vector<size_t>& out, size_t max_digits) {
  for (size_t p = s.b; p < s.e;) {
    size_t n = match_contraction(s, p, true);
    const uint32_t c = s.at(p);
    const uint16_t f = s.flags(p);
    if (n == 0 && !is_rn(c) && !(f & kNumber) && ((f & kLetter) || (s.flags(p + 1) & kLetter))) {
      size_t q = p + 1;
      while (s.flags(q) & kLetter) ++q;
      n = q - p;
    }
    if (n == 0 && (f & kNumber)) {
      size_t q = p;
      while (q - p < max_digits && (s.flags(q) & kNumber)) ++q;
      n = q - p;
    }
    if (n == 0) {
      const size_t q0 = p + (c == ' ' ? 1 : 0);
      const uint16_t f2 = s.flags(q0);
      if (!(f2 & (kWhitespace | kLetter | kNumber)) && f != 0) {
        size_t q = q0;
        while (s.flags(q) != 0 && !(s.flags(q) & (kWhitespace | kLetter | kNumber))) ++q;
        while (is_rn(s.at(q))) ++q;
        n = q - p;
      }
    }
    if (n == 0) {
      size_t k = 0, last_rn = 0;
      while (s.flags(p + k) & kWhitespace) {
        if (is_rn(s.at(p + k))) last_rn = k + 1;
        ++k;
      }
      if (last_rn > 0) n = last_rn;                 // \s*[\r\n]+
      else if (k > 1 && p + k < s.e) n = k - 1;     // \s+(?!\S)
      else n = std::max<size_t>(k, 1);              // \s+ (or a lone unmatched code point)
    }
    out.push_back(n);
    p += n;
  }
}

// r: n inclusive ranges sorted by start and not overlapping.
bool in_ranges(uint32_t c, const uint32_t (*r)[2], size_t n) {
  size_t lo = 0, hi = n;  // binary search for the last range starting at or before c
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (r[mid][0] <= c) lo = mid + 1;
    else hi = mid;
  }
  return lo > 0 && c <= r[lo - 1][1];
}

// DeepSeek's explicit letter class (its tokenizer.json spells out the ranges).
constexpr uint32_t kDeepseekLetters[][2] = {
    {0x0041, 0x005A}, {0x0061, 0x007A}, {0x00B5, 0x00B5}, {0x00C0, 0x00D6}, {0x00D8, 0x00F6}, {0x00F8, 0x01BA},
    {0x01BC, 0x01BF}, {0x01C4, 0x0293}, {0x0295, 0x02AF}, {0x0370, 0x0373}, {0x0376, 0x0377}, {0x037B, 0x037D},
    {0x037F, 0x037F}, {0x0386, 0x0386}, {0x0388, 0x038A}, {0x038C, 0x038C}, {0x038E, 0x03A1}, {0x03A3, 0x03F5},
    {0x03F7, 0x0481}, {0x048A, 0x052F}, {0x0531, 0x0556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD},
    {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15},
    {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4},
    {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC},
    {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124},
    {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F},
    {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE},
    {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E},
    {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0x10400, 0x1044F},
    {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF},
    {0x1E900, 0x1E943},
};
// [!-/:-~！-／：-～‘-‟　-。] (ranges sorted for the binary search)
constexpr uint32_t kDeepseekPunct[][2] = {
    {0x0021, 0x002F}, {0x003A, 0x007E}, {0x2018, 0x201F}, {0x3000, 0x3002}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E},
};
// [一-龥ࠀ-一가-퟿]: U+0800..U+9FA5 (the first two ranges touch) and Hangul
constexpr uint32_t kDeepseekCjk[][2] = {{0x0800, 0x9FA5}, {0xAC00, 0xD7FF}};

// The reference engine matches explicit character ranges against text in
// which non-ASCII white space was replaced by U+000B, so such code points
// never fall in a range.
template <size_t N>
bool in_class(uint32_t c, const uint32_t (&r)[N][2]) {
  if (c > 0x7F && unicode::is_whitespace(c)) return false;
  return in_ranges(c, r, N);
}

bool is_ws(const Piece& s, size_t p) { return s.flags(p) & kWhitespace; }

// \s?X+ where X never matches white space.
template <typename Pred>
size_t match_opt_ws_plus(const Piece& s, size_t p, Pred x) {
  size_t q = p;
  if (!(q < s.e && x(s.cps[q]))) {
    if (!(is_ws(s, q) && q + 1 < s.e && x(s.cps[q + 1]))) return 0;
    ++q;
  }
  while (q < s.e && x(s.cps[q])) ++q;
  return q - p;
}

template <typename Pred>
size_t match_plus(const Piece& s, size_t p, Pred x) {
  size_t q = p;
  while (q < s.e && x(s.cps[q])) ++q;
  return q - p;
}

bool is_ascii_digit(uint32_t c) { return c >= '0' && c <= '9'; }
bool cat_letter(uint32_t c) { return cp_flags(c) & kLetter; }
bool cat_number(uint32_t c) { return cp_flags(c) & kNumber; }
bool cat_punct(uint32_t c) { return cp_flags(c) & kPunctuation; }

// \s+$ : the white space that ends the piece.
void pass_trailing_ws(const Piece& s, std::vector<size_t>& out) {
  size_t t = s.e;
  while (t > s.b && unicode::is_whitespace(s.cps[t - 1])) --t;
  if (t > s.b) out.push_back(t - s.b);
  if (s.e > t) out.push_back(s.e - t);
}

using PassFn = void (*)(const Piece&, std::vector<size_t>&);

void run_passes(const std::vector<uint32_t>& cps, std::vector<size_t>& words, const PassFn* passes, size_t n_passes) {
  std::vector<size_t> cur{cps.size()}, next;
  if (cps.empty()) return;
  for (size_t i = 0; i < n_passes; ++i) {
    next.clear();
    next.reserve(cur.size());
    size_t b = 0;
    for (size_t len : cur) {
      passes[i](Piece{cps.data(), b, b + len}, next);
      b += len;
    }
    cur.swap(next);
  }
  words.insert(words.end(), cur.begin(), cur.end());
}

// Individual passes, named after the regex they implement.
void rx_gpt2(const Piece& s, std::vector<size_t>& o) { pass_gpt2(s, o); }
void rx_llama3(const Piece& s, std::vector<size_t>& o) { pass_llama3(s, o, 3); }
void rx_qwen2(const Piece& s, std::vector<size_t>& o) { pass_llama3(s, o, 1); }
void rx_rn(const Piece& s, std::vector<size_t>& o) {  // [\r\n]
  split_matches(s, o, [](const Piece& t, size_t p) -> size_t { return is_rn(t.cps[p]) ? 1 : 0; });
}
void rx_ws_letters(const Piece& s, std::vector<size_t>& o) {  // \s?\p{L}+
  split_matches(s, o, [](const Piece& t, size_t p) { return match_opt_ws_plus(t, p, cat_letter); });
}
void rx_ws_punct(const Piece& s, std::vector<size_t>& o) {  // \s?\p{P}+
  split_matches(s, o, [](const Piece& t, size_t p) { return match_opt_ws_plus(t, p, cat_punct); });
}
void rx_cjk(const Piece& s, std::vector<size_t>& o) {  // [一-龥ࠀ-一가-퟿]+
  split_matches(s, o, [](const Piece& t, size_t p) {
    return match_plus(t, p, [](uint32_t c) { return in_class(c, kDeepseekCjk); });
  });
}
void rx_digit(const Piece& s, std::vector<size_t>& o) {  // \p{N}
  split_matches(s, o, [](const Piece& t, size_t p) -> size_t { return cat_number(t.cps[p]) ? 1 : 0; });
}
void rx_digits(const Piece& s, std::vector<size_t>& o) {  // \p{N}+
  split_matches(s, o, [](const Piece& t, size_t p) { return match_plus(t, p, cat_number); });
}
void rx_ds_letters(const Piece& s, std::vector<size_t>& o) {  // \s?[A-Za-zµÀ-Ö...]+
  split_matches(s, o, [](const Piece& t, size_t p) {
    return match_opt_ws_plus(t, p, [](uint32_t c) { return in_class(c, kDeepseekLetters); });
  });
}
void rx_ds_punct(const Piece& s, std::vector<size_t>& o) {  // \s?[!-/:-~！-／：-～‘-‟　-。]+
  split_matches(s, o, [](const Piece& t, size_t p) {
    return match_opt_ws_plus(t, p, [](uint32_t c) { return in_class(c, kDeepseekPunct); });
  });
}
void rx_three_digits(const Piece& s, std::vector<size_t>& o) {  // [0-9][0-9][0-9]
  split_matches(s, o, [](const Piece& t, size_t p) -> size_t {
    return (p + 2 < t.e && is_ascii_digit(t.cps[p]) && is_ascii_digit(t.cps[p + 1]) && is_ascii_digit(t.cps[p + 2])) ? 3 : 0;
  });
}
// [\p{P}\$\+<=>\^~\|`]+ (falcon) and [\p{P}\$\+<=>\^~\|]+ (default): in the
// reference engine \p{P} covers ASCII punctuation plus non-ASCII P; the listed
// ASCII symbols are added.
bool falcon_punct(uint32_t c) {
  if (c < 0x80) return (cp_flags(c) & (kPunctuation | kSymbol)) != 0;
  return cat_punct(c);
}
bool default_punct(uint32_t c) { return c != '`' && falcon_punct(c); }
void rx_falcon_punct(const Piece& s, std::vector<size_t>& o) {
  split_matches(s, o, [](const Piece& t, size_t p) { return match_plus(t, p, falcon_punct); });
}
void rx_default_punct(const Piece& s, std::vector<size_t>& o) {
  split_matches(s, o, [](const Piece& t, size_t p) { return match_plus(t, p, default_punct); });
}

constexpr PassFn kGpt2[] = {rx_gpt2};
constexpr PassFn kLlama3[] = {rx_llama3};
constexpr PassFn kQwen2[] = {rx_qwen2};
constexpr PassFn kDeepseekLlm[] = {rx_rn, rx_ds_letters, rx_ds_punct, pass_trailing_ws, rx_cjk, rx_digits};
constexpr PassFn kDeepseekCoder[] = {rx_rn, rx_ws_letters, rx_ws_punct, rx_cjk, rx_digit};
constexpr PassFn kFalcon[] = {rx_falcon_punct, rx_gpt2, rx_three_digits};
constexpr PassFn kStarcoder[] = {rx_digit, rx_gpt2};
constexpr PassFn kDefault[] = {rx_default_punct, rx_gpt2, rx_digits, rx_three_digits};

}  // namespace

Expected<PreTokenizerInfo> pre_tokenizer_from_name(std::string_view pre) {
  PreTokenizerInfo info;
  auto any = [&](std::initializer_list<std::string_view> names) {
    return std::find(names.begin(), names.end(), pre) != names.end();
  };
  if (pre.empty() || pre == "default") {
    info.type = PreTokenizer::bpe_default;
  } else if (any({"llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe", "chatglm-bpe"})) {
    info.type = PreTokenizer::llama3;
    info.ignore_merges = any({"llama3", "llama-v3", "llama-bpe", "falcon3"});
    info.add_bos = info.ignore_merges;
  } else if (any({"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"})) {
    info.type = PreTokenizer::qwen2;
    info.clean_spaces = !any({"qwen2", "deepseek-r1-qwen"});
  } else if (pre == "deepseek-llm") {
    info.type = PreTokenizer::deepseek_llm;
    info.clean_spaces = false;
  } else if (pre == "deepseek-coder") {
    info.type = PreTokenizer::deepseek_coder;
    info.clean_spaces = false;
  } else if (pre == "falcon") {
    info.type = PreTokenizer::falcon;
  } else if (any({"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"})) {
    info.type = PreTokenizer::starcoder;
    info.clean_spaces = !any({"command-r", "smollm"});
  } else if (any({"gpt-2", "phi-2", "mpt", "olmo", "jais", "roberta-bpe", "jina-es", "jina-de", "gigachat",
                  "jina-v1-en", "jina-v2-es", "jina-v2-de", "jina-v2-code"})) {
    info.type = PreTokenizer::gpt2;
  } else {
    return Status::unsupported("unknown BPE pre-tokenizer '%.*s'", static_cast<int>(pre.size()), pre.data());
  }
  return info;
}

void pre_tokenize(PreTokenizer type, const std::vector<uint32_t>& cps, std::vector<size_t>& words) {
  switch (type) {
    case PreTokenizer::gpt2: return run_passes(cps, words, kGpt2, std::size(kGpt2));
    case PreTokenizer::llama3: return run_passes(cps, words, kLlama3, std::size(kLlama3));
    case PreTokenizer::qwen2: return run_passes(cps, words, kQwen2, std::size(kQwen2));
    case PreTokenizer::deepseek_llm: return run_passes(cps, words, kDeepseekLlm, std::size(kDeepseekLlm));
    case PreTokenizer::deepseek_coder: return run_passes(cps, words, kDeepseekCoder, std::size(kDeepseekCoder));
    case PreTokenizer::falcon: return run_passes(cps, words, kFalcon, std::size(kFalcon));
    case PreTokenizer::starcoder: return run_passes(cps, words, kStarcoder, std::size(kStarcoder));
    case PreTokenizer::bpe_default: return run_passes(cps, words, kDefault, std::size(kDefault));
  }
}

}  // namespace kestrel
