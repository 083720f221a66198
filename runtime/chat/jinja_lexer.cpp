// Jinja lexer, following jinja2's Lexer.tokeniter for the settings Hugging
// Face uses: newlines normalized to \n and one trailing newline dropped;
// "{%-"/"-%}" strip all whitespace; trim_blocks drops the newline after a
// "%}" or "#}"; lstrip_blocks drops spaces and tabs between a line start and
// a "{%" or "{#" (not "{{", not "{%+").
#include "runtime/chat/jinja_lexer.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>

namespace kestrel::jinja {
namespace {

constexpr int kMaxNesting = 128;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string normalize_newlines(std::string_view src) {
  std::string out;
  out.reserve(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i] == '\r') {
      out += '\n';
      if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
    } else {
      out += src[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();  // keep_trailing_newline = False
  return out;
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Python's "unicode-escape" decoding of a string literal's body, as jinja2 applies it.
std::string unescape(std::string_view body) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (c != '\\' || i + 1 >= body.size()) {
      out += c;
      continue;
    }
    const char e = body[++i];
    auto hex = [&](int n) -> long {
      if (i + static_cast<size_t>(n) >= body.size()) return -1;
      std::string h(body.substr(i + 1, static_cast<size_t>(n)));
      for (char x : h)
        if (!std::isxdigit(static_cast<unsigned char>(x))) return -1;
      return std::strtol(h.c_str(), nullptr, 16);
    };
    switch (e) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'v': out += '\v'; break;
      case '\n': break;  // line continuation
      case 'x': case 'u': case 'U': {
        const int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        const long v = hex(n);
        if (v < 0 || v > 0x10FFFF) { out += '\\'; out += e; break; }
        append_utf8(static_cast<uint32_t>(v), out);
        i += static_cast<size_t>(n);
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          uint32_t v = static_cast<uint32_t>(e - '0');
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7'; ++k)
            v = v * 8 + static_cast<uint32_t>(body[++i] - '0');
          append_utf8(v, out);
        } else {
          out += '\\';
          out += e;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string src) : s_(std::move(src)) {}

  Expected<std::vector<Segment>> run() {
    std::vector<Segment> segs;
    size_t pos = 0;
    bool strip_next = false;  // the previous tag ended with "-": strip leading whitespace
    while (pos <= s_.size()) {
      const size_t tag = find_tag(pos);
      std::string text = s_.substr(pos, (tag == std::string::npos ? s_.size() : tag) - pos);
      if (strip_next) {
        size_t k = 0;
        while (k < text.size() && is_space(text[k])) ++k;
        text.erase(0, k);
      }
      strip_next = false;
      if (tag == std::string::npos) {
        if (!text.empty()) segs.push_back({Segment::Type::text, std::move(text), {}, line_at(pos)});
        break;
      }
      const char kind = s_[tag + 1];  // '{', '%' or '#'
      const char sign = tag + 2 < s_.size() ? s_[tag + 2] : '\0';
      if (sign == '-') {
        while (!text.empty() && is_space(text.back())) text.pop_back();
      } else if (sign != '+' && kind != '{') {
        lstrip_blocks(text, pos == 0 || s_[pos - 1] == '\n');
      }
      if (!text.empty()) segs.push_back({Segment::Type::text, std::move(text), {}, line_at(pos)});
      size_t p = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      const int line = line_at(tag);
      if (kind == '#') {
        const size_t end = s_.find("#}", p);
        if (end == std::string::npos) return Status::invalid_argument("line %d: unclosed comment", line);
        pos = end + 2;
        if (end > p && s_[end - 1] == '-') strip_next = true;
        else if (pos < s_.size() && s_[pos] == '\n') ++pos;  // trim_blocks
        continue;
      }
      Segment seg{kind == '{' ? Segment::Type::output : Segment::Type::statement, {}, {}, line};
      KESTREL_TRY(tokens(p, kind, seg.tokens, pos, strip_next));
      // {% raw %} ... {% endraw %}: the text in between as it is.
      if (seg.type == Segment::Type::statement && seg.tokens.size() == 2 && seg.tokens[0].text == "raw" &&
          seg.tokens[0].type == Token::Type::name) {
        KESTREL_TRY(raw_block(pos, strip_next, segs, line));
        continue;
      }
      segs.push_back(std::move(seg));
    }
    return segs;
  }

 private:
  int line_at(size_t pos) const {
    int line = 1;
    for (size_t i = 0; i < pos && i < s_.size(); ++i) line += s_[i] == '\n';
    return line;
  }

  // lstrip_blocks: drops the whitespace between the last line start and a
  // block tag. line_starting: the text itself begins a line.
  static void lstrip_blocks(std::string& text, bool line_starting) {
    const size_t nl = text.rfind('\n');
    const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
    if (l_pos > 0 || line_starting) {
      bool only_ws = l_pos < text.size();
      for (size_t k = l_pos; k < text.size(); ++k) only_ws = only_ws && is_space(text[k]);
      if (only_ws) text.resize(l_pos);
    }
  }

  size_t find_tag(size_t pos) const {
    for (size_t i = pos; i + 1 < s_.size(); ++i) {
      if (s_[i] == '{' && (s_[i + 1] == '{' || s_[i + 1] == '%' || s_[i + 1] == '#')) return i;
    }
    return std::string::npos;
  }

  // After a tag's closing characters: "-" strips what follows, trim_blocks
  // drops one newline after "%}".
  void after_end(size_t end_pos, bool dash, char kind, size_t& pos, bool& strip_next) {
    pos = last_end_ = end_pos;
    if (dash) strip_next = true;
    else if (kind == '%' && pos < s_.size() && s_[pos] == '\n' && !plus_end_) ++pos;
  }

  Status tokens(size_t p, char kind, std::vector<Token>& out, size_t& pos, bool& strip_next) {
    int depth = 0;  // open brackets: a closing "}}" inside a dict literal is not the tag's end
    const int line0 = line_at(p);
    int line = line0;
    plus_end_ = false;
    while (true) {
      while (p < s_.size() && is_space(s_[p])) line += s_[p++] == '\n';
      if (p >= s_.size()) return Status::invalid_argument("line %d: unclosed tag", line0);
      const char close = kind == '{' ? '}' : '%';
      const char second = '}';
      if (depth == 0) {
        const bool dash = s_[p] == '-' && s_.compare(p + 1, 2, std::string{close, second}) == 0;
        const bool plus = kind == '%' && s_[p] == '+' && s_.compare(p + 1, 2, "%}") == 0;
        if (dash || plus || s_.compare(p, 2, std::string{close, second}) == 0) {
          plus_end_ = plus;
          out.push_back({Token::Type::end, "", 0, 0.0, line});
          after_end(p + ((dash || plus) ? 3 : 2), dash, kind, pos, strip_next);
          return {};
        }
      }
      const char c = s_[p];
      Token t{Token::Type::op, "", 0, 0.0, line};
      if (is_name_start(c)) {
        size_t q = p;
        while (q < s_.size() && (is_name_start(s_[q]) || is_digit(s_[q]))) ++q;
        t.type = Token::Type::name;
        t.text = s_.substr(p, q - p);
        p = q;
      } else if (is_digit(c)) {
        size_t q = p;
        while (q < s_.size() && (is_digit(s_[q]) || s_[q] == '_')) ++q;
        bool is_float = false;
        if (q + 1 < s_.size() && s_[q] == '.' && is_digit(s_[q + 1])) {
          is_float = true;
          ++q;
          while (q < s_.size() && (is_digit(s_[q]) || s_[q] == '_')) ++q;
        }
        if (q < s_.size() && (s_[q] == 'e' || s_[q] == 'E')) {
          size_t r = q + 1;
          if (r < s_.size() && (s_[r] == '+' || s_[r] == '-')) ++r;
          if (r < s_.size() && is_digit(s_[r])) {
            is_float = true;
            q = r;
            while (q < s_.size() && is_digit(s_[q])) ++q;
          }
        }
        std::string num;
        for (size_t k = p; k < q; ++k)
          if (s_[k] != '_') num += s_[k];
        if (is_float) {
          t.type = Token::Type::floating;
          t.f = std::strtod(num.c_str(), nullptr);
        } else {
          t.type = Token::Type::integer;
          errno = 0;
          t.i = std::strtoll(num.c_str(), nullptr, 10);
          if (errno == ERANGE) return Status::unsupported("line %d: integer literal %s is above 64 bits", line, num.c_str());
        }
        t.text = num;
        p = q;
      } else if (c == '\'' || c == '"') {
        size_t q = p + 1;
        while (q < s_.size() && s_[q] != c) {
          if (s_[q] == '\\') ++q;
          ++q;
        }
        if (q >= s_.size()) return Status::invalid_argument("line %d: unclosed string literal", line);
        t.type = Token::Type::string;
        t.text = unescape(std::string_view(s_).substr(p + 1, q - p - 1));
        for (size_t k = p; k < q; ++k) line += s_[k] == '\n';
        p = q + 1;
      } else {
        static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "(", ")",
                                     "[", "]", "{", "}", ",", ".", ":", "|", "=", "<", ">"};
        bool found = false;
        for (const char* op : kOps) {
          const size_t n = std::char_traits<char>::length(op);
          if (s_.compare(p, n, op) == 0) {
            t.text = op;
            p += n;
            found = true;
            break;
          }
        }
        if (!found) return Status::invalid_argument("line %d: unexpected character '%c' in a tag", line, c);
        if (t.text == "(" || t.text == "[" || t.text == "{") {
          // Deeper nesting than any real template; it bounds the parser's recursion.
          if (++depth > kMaxNesting) return Status::unsupported("line %d: brackets nested deeper than %d", line, kMaxNesting);
        }
        if ((t.text == ")" || t.text == "]" || t.text == "}") && depth > 0) --depth;
      }
      out.push_back(std::move(t));
    }
  }

  // jinja2 applies no trim_blocks after "{% raw %}", but does after "{% endraw %}".
  Status raw_block(size_t& pos, bool& strip_next, std::vector<Segment>& segs, int line) {
    pos = last_end_;
    size_t search = pos;
    while (true) {
      const size_t tag = s_.find("{%", search);
      if (tag == std::string::npos) return Status::invalid_argument("line %d: raw block without endraw", line);
      size_t p = tag + 2;
      const bool dash_open = p < s_.size() && s_[p] == '-';
      const bool plus_open = p < s_.size() && s_[p] == '+';
      if (p < s_.size() && (s_[p] == '-' || s_[p] == '+')) ++p;
      while (p < s_.size() && is_space(s_[p])) ++p;
      if (s_.compare(p, 6, "endraw") != 0) { search = tag + 2; continue; }
      std::string text = s_.substr(pos, tag - pos);
      if (strip_next) {
        size_t k = 0;
        while (k < text.size() && is_space(text[k])) ++k;
        text.erase(0, k);
      }
      if (dash_open)
        while (!text.empty() && is_space(text.back())) text.pop_back();
      else if (!plus_open)
        lstrip_blocks(text, pos > 0 && s_[pos - 1] == '\n');
      if (!text.empty()) segs.push_back({Segment::Type::text, std::move(text), {}, line});
      std::vector<Token> toks;
      strip_next = false;
      return tokens(p, '%', toks, pos, strip_next);
    }
  }

  std::string s_;
  bool plus_end_ = false;
  size_t last_end_ = 0;  // just past the last tag's closing characters
};

}  // namespace

Expected<std::vector<Segment>> lex(std::string_view source) {
  Lexer lexer(normalize_newlines(source));
  return lexer.run();
}

}  // namespace kestrel::jinja
