// The syntax tree of a parsed Jinja template: expressions and statements,
// as jinja_parser.cpp builds them and jinja_render.cpp walks them.
//
//   {% for m in messages %}{{ m.content | trim }}{% endfor %}
//   -> Node{for, targets {"m"}, expr Name(messages),
//           body {Node{output, expr Filter(trim, Attr(Name(m), "content"))}}}
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/chat/jinja_value.h"

namespace kestrel::jinja {

enum class ExprKind : uint8_t {
  literal,   // value
  name,      // name
  list,      // kids: items
  dict,      // kids: key, value, key, value, ...
  attr,      // kids[0] . name
  item,      // kids[0] [ kids[1] ]
  slice,     // kids[0] [ kids[1] : kids[2] : kids[3] ] (a missing part is a literal undefined)
  call,      // kids[0] ( kids[1..n_pos], kw_names = kids[n_pos+1..] )
  filter,    // kids[0] | name ( kids[1..] )
  test,      // kids[0] is [not] name ( kids[1..] )
  unary,     // op kids[0]: "not", "-", "+"
  binary,    // kids[0] op kids[1]
  cond,      // kids[0] if kids[1] else kids[2] (kids[2] may be absent)
};

struct Expr {
  ExprKind kind = ExprKind::literal;
  Value value;                       // literal
  std::string name;                  // name, attribute, filter, test, operator
  std::vector<std::unique_ptr<Expr>> kids;
  std::vector<std::string> kw_names;  // call / filter / test: names of the trailing keyword arguments
  bool negated = false;               // test: "is not"
  int line = 1;
};
using ExprPtr = std::unique_ptr<Expr>;

enum class NodeKind : uint8_t {
  text,       // text (template text, never tainted)
  output,     // {{ expr }}
  if_,        // conds[i] -> bodies[i]; else body = bodies.back() when bodies.size() > conds.size()
  for_,       // for targets in expr [if filter]: body, else_body
  set,        // set targets = expr | set target.attr = expr | set target %}body{% endset
  macro,      // macro def
  break_,
  continue_,
  block,      // a body with no effect of its own ({% generation %})
};

struct Node;
using Body = std::vector<Node>;

struct MacroDef {
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // one per param; nullptr: required
  Body body;
};

struct Node {
  NodeKind kind = NodeKind::text;
  int line = 1;
  std::string text;
  std::vector<std::string> targets;  // for / set names; set: targets[0] + attr for "ns.attr"
  std::string attr;                  // set ns.attr
  ExprPtr expr;                      // output / for iterable / set value
  ExprPtr filter;                    // for ... if filter
  std::vector<ExprPtr> conds;        // if / elif
  std::vector<Body> bodies;          // if branches (+ else)
  Body body, else_body;              // for / set block / block
  std::shared_ptr<MacroDef> macro;   // macro
};

}  // namespace kestrel::jinja
