// The Jinja interpreter's state, shared by jinja_render.cpp (statements),
// jinja_eval.cpp (expressions) and jinja_builtins.cpp (filters, tests,
// methods, global functions). Internal to runtime/chat.
#pragma once

#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runtime/chat/jinja.h"

namespace kestrel::jinja {

struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // Argument i by position, else by keyword name; nullptr when absent.
  const Value* get(size_t i, const char* name) const {
    if (i < pos.size()) return &pos[i];
    for (const auto& [k, v] : kw)
      if (k == name) return &v;
    return nullptr;
  }
};

class Interp {
 public:
  Interp(const Template& t, size_t max_output, uint64_t max_steps) : max_output_(max_output), steps_left_(max_steps) {
    (void)t;
  }

  Status exec(const Body& body, TStr& out);
  Expected<Value> eval(const Expr& e);

  Expected<Value> filter(const std::string& name, const Value& v, const Args& a, int line);
  Expected<bool> test(const std::string& name, const Value& v, const Args& a, int line);
  Expected<Value> method(const Value& obj, const std::string& name, const Args& a, int line);
  Expected<Value> call(const Value& fn, const Args& a, int line, const std::string& what);

  void push_scope() { scopes_.emplace_back(); }
  void pop_scope() { scopes_.pop_back(); }
  void set_var(const std::string& name, Value v) { scopes_.back()[name] = std::move(v); }
  Value lookup(const std::string& name) const;

  Status step(int line);

 private:
  enum class Flow { normal, break_, continue_ };
  Status exec_node(const Node& n, TStr& out);
  Status exec_for(const Node& n, TStr& out);
  Status assign(const std::vector<std::string>& targets, const Value& v, int line);
  Expected<Value> call_macro(const MacroDef& m, const Args& a, int line);
  Expected<Value> binary(const Expr& e);
  Status args_of(const Expr& e, size_t first, Args& out);

  std::vector<std::unordered_map<std::string, Value>> scopes_;
  Flow flow_ = Flow::normal;
  int loop_depth_ = 0;
  int macro_depth_ = 0;
  size_t max_output_;
  uint64_t steps_left_;

  friend class Template;
};

// Python's str.strip family over code points (chars empty and !has_chars: Python whitespace).
TStr py_strip(const TStr& s, bool left, bool right, const std::string* chars);

}  // namespace kestrel::jinja
