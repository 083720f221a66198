// Jinja lexer: splits a template into text, {{ expression }} and {% statement %}
// segments and the expression tokens inside the tags, with the whitespace
// rules Hugging Face renders chat templates with (trim_blocks and
// lstrip_blocks on, keep_trailing_newline off, "-" and "+" modifiers).
//
//   KESTREL_TRY_ASSIGN(std::vector<Segment> segs, lex("{%- if x %}\n  a{% endif %}"));
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "platform/status.h"

namespace kestrel::jinja {

struct Token {
  enum class Type : uint8_t { name, string, integer, floating, op, end };
  Type type;
  std::string text;  // name, operator, or the unescaped string literal
  int64_t i = 0;
  double f = 0.0;
  int line = 1;
};

struct Segment {
  enum class Type : uint8_t { text, output, statement };
  Type type;
  std::string text;           // text segments
  std::vector<Token> tokens;  // output / statement segments, ending with an end token
  int line = 1;
};

// Errors: invalid_argument naming the line, for an unclosed tag, comment or
// string, or a character no token starts with.
Expected<std::vector<Segment>> lex(std::string_view source);

}  // namespace kestrel::jinja
