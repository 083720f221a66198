// Jinja parser: segments from jinja_lexer.h -> the syntax tree of jinja_ast.h,
// with jinja2's operator precedence. A statement, filter-less construct or
// syntax kestrel does not support is an `unsupported` error naming it and
// its line, never a silent misparse.
//
//   KESTREL_TRY_ASSIGN(Body body, parse("{% if x %}{{ x | trim }}{% endif %}"));
#pragma once

#include <string_view>

#include "runtime/chat/jinja_ast.h"

namespace kestrel::jinja {

Expected<Body> parse(std::string_view source);

}  // namespace kestrel::jinja
