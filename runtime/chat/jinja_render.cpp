// Jinja statements: text, output, if, for (with loop.*), set, macro,
// break / continue; scopes as jinja2 keeps them (a for loop's body has its
// own scope each iteration; if does not; a macro sees the top level and its
// arguments).
#include <algorithm>

#include "runtime/chat/jinja_interp.h"
#include "runtime/chat/jinja_parser.h"

namespace kestrel::jinja {

Expected<std::unique_ptr<Template>> Template::parse(std::string_view source) {
  auto t = std::unique_ptr<Template>(new Template());
  KESTREL_TRY_ASSIGN(t->body_, jinja::parse(source));
  return t;
}

Expected<TStr> Template::render(const Object& vars) const {
  Interp in(*this, max_output_bytes, max_steps);
  in.push_scope();
  in.set_var("range", Value::builtin(Builtin::range));
  in.set_var("raise_exception", Value::builtin(Builtin::raise_exception));
  in.set_var("namespace", Value::builtin(Builtin::namespace_));
  for (const auto& [k, v] : vars) in.set_var(k, v);
  TStr out;
  KESTREL_TRY(in.exec(body_, out));
  return out;
}

Value Interp::lookup(const std::string& name) const {
  for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
    auto f = it->find(name);
    if (f != it->end()) return f->second;
  }
  return Value::undefined(name);
}

Status Interp::step(int line) {
  if (steps_left_ == 0) return Status::too_long("line %d: the template ran past its step limit", line);
  --steps_left_;
  return {};
}

Status Interp::exec(const Body& body, TStr& out) {
  for (const Node& n : body) {
    KESTREL_TRY(exec_node(n, out));
    if (out.text.size() > max_output_) {
      return Status::too_long("the rendered template passed %zu bytes", max_output_);
    }
    if (flow_ != Flow::normal) return {};
  }
  return {};
}

Status Interp::assign(const std::vector<std::string>& targets, const Value& v, int line) {
  if (targets.size() == 1) {
    set_var(targets[0], v);
    return {};
  }
  if (!v.is_array()) {
    return Status::invalid_argument("line %d: cannot unpack a %s into %zu names", line, v.type_name().c_str(),
                                    targets.size());
  }
  if (v.arr().size() != targets.size()) {
    return Status::invalid_argument("line %d: cannot unpack %zu values into %zu names", line, v.arr().size(),
                                    targets.size());
  }
  for (size_t i = 0; i < targets.size(); ++i) set_var(targets[i], v.arr()[i]);
  return {};
}

Status Interp::exec_node(const Node& n, TStr& out) {
  KESTREL_TRY(step(n.line));
  switch (n.kind) {
    case NodeKind::text: out.append(std::string_view(n.text)); return {};
    case NodeKind::output: {
      KESTREL_TRY_ASSIGN(Value v, eval(*n.expr));
      if (v.is_callable()) return Status::invalid_argument("line %d: cannot print a function", n.line);
      out.append(to_str(v));
      return {};
    }
    case NodeKind::if_: {
      for (size_t i = 0; i < n.conds.size(); ++i) {
        KESTREL_TRY_ASSIGN(Value c, eval(*n.conds[i]));
        if (truthy(c)) return exec(n.bodies[i], out);
      }
      if (n.bodies.size() > n.conds.size()) return exec(n.bodies.back(), out);
      return {};
    }
    case NodeKind::for_: return exec_for(n, out);
    case NodeKind::set: {
      Value v;
      if (n.expr) {
        KESTREL_TRY_ASSIGN(v, eval(*n.expr));
      } else {
        TStr captured;
        KESTREL_TRY(exec(n.body, captured));
        v = Value::string(std::move(captured));
      }
      if (!n.attr.empty()) {
        const Value ns = lookup(n.targets[0]);
        if (!ns.is_namespace()) {
          return Status::invalid_argument("line %d: cannot assign attribute on non-namespace object '%s'", n.line,
                                          n.targets[0].c_str());
        }
        Object& o = ns.mutable_obj();
        for (auto& [k, x] : o) {
          if (k == n.attr) { x = std::move(v); return {}; }
        }
        o.emplace_back(n.attr, std::move(v));
        return {};
      }
      return assign(n.targets, v, n.line);
    }
    case NodeKind::macro: set_var(n.macro->name, Value::macro(n.macro.get())); return {};
    case NodeKind::break_:
    case NodeKind::continue_:
      if (loop_depth_ == 0) {
        return Status::invalid_argument("line %d: '%s' outside a loop", n.line,
                                        n.kind == NodeKind::break_ ? "break" : "continue");
      }
      flow_ = n.kind == NodeKind::break_ ? Flow::break_ : Flow::continue_;
      return {};
    case NodeKind::block: return exec(n.body, out);
  }
  return {};
}

Status Interp::exec_for(const Node& n, TStr& out) {
  KESTREL_TRY_ASSIGN(Value seq, eval(*n.expr));
  Array items;
  switch (seq.kind()) {
    case Value::Kind::undefined: break;  // iterating an undefined value: nothing
    case Value::Kind::array: items = seq.arr(); break;
    case Value::Kind::object:
      for (const auto& kv : seq.obj()) items.push_back(Value::text(kv.first));  // Python: a dict iterates its keys
      break;
    case Value::Kind::string: {
      const auto offs = code_point_offsets(seq.str().text);
      for (size_t i = 0; i + 1 < offs.size(); ++i)
        items.push_back(Value::string(seq.str().substr(offs[i], offs[i + 1] - offs[i])));
      break;
    }
    default:
      return Status::invalid_argument("line %d: '%s' object is not iterable", n.line, seq.type_name().c_str());
  }
  if (n.filter) {  // "for x in xs if cond": the filter sees each item; loop.* counts the kept ones
    Array kept;
    for (const Value& it : items) {
      push_scope();
      Status st = assign(n.targets, it, n.line);
      Expected<Value> c = st.ok() ? eval(*n.filter) : Expected<Value>(st);
      pop_scope();
      if (!c.ok()) return std::move(c).take_status();
      if (truthy(*c)) kept.push_back(it);
    }
    items = std::move(kept);
  }
  if (items.empty()) return exec(n.else_body, out);
  const auto len = static_cast<int64_t>(items.size());
  ++loop_depth_;
  Status result;
  for (int64_t i = 0; i < len; ++i) {
    result = step(n.line);  // an empty body still costs a step per iteration
    if (!result.ok()) break;
    Object loop = {
        {"index", Value::integer(i + 1)},
        {"index0", Value::integer(i)},
        {"revindex", Value::integer(len - i)},
        {"revindex0", Value::integer(len - i - 1)},
        {"first", Value::boolean(i == 0)},
        {"last", Value::boolean(i == len - 1)},
        {"length", Value::integer(len)},
        {"previtem", i > 0 ? items[static_cast<size_t>(i - 1)] : Value::undefined("loop.previtem")},
        {"nextitem", i + 1 < len ? items[static_cast<size_t>(i + 1)] : Value::undefined("loop.nextitem")},
    };
    push_scope();
    set_var("loop", Value::object(std::move(loop)));
    result = assign(n.targets, items[static_cast<size_t>(i)], n.line);
    if (result.ok()) result = exec(n.body, out);
    pop_scope();
    if (!result.ok()) break;
    if (flow_ == Flow::break_) { flow_ = Flow::normal; break; }
    flow_ = Flow::normal;
  }
  --loop_depth_;
  return result;
}

Expected<Value> Interp::call_macro(const MacroDef& m, const Args& a, int line) {
  if (macro_depth_ >= 64) return Status::too_long("line %d: macro calls nested deeper than 64", line);
  if (a.pos.size() > m.params.size()) {
    return Status::invalid_argument("line %d: macro '%s' takes %zu arguments, %zu given", line, m.name.c_str(),
                                    m.params.size(), a.pos.size());
  }
  // A macro sees the top level and its own arguments, not the caller's locals.
  std::vector<std::unordered_map<std::string, Value>> saved;
  saved.swap(scopes_);
  scopes_.push_back(saved.front());
  push_scope();
  Status st;
  for (size_t i = 0; i < m.params.size() && st.ok(); ++i) {
    const Value* given = a.get(i, m.params[i].c_str());
    if (given) {
      set_var(m.params[i], *given);
    } else if (m.defaults[i]) {
      Expected<Value> d = eval(*m.defaults[i]);
      if (!d.ok()) st = std::move(d).take_status();
      else set_var(m.params[i], std::move(d).value());
    } else {
      set_var(m.params[i], Value::undefined(m.params[i]));
    }
  }
  for (const auto& [k, v] : a.kw) {
    if (std::find(m.params.begin(), m.params.end(), k) == m.params.end() && st.ok()) {
      st = Status::invalid_argument("line %d: macro '%s' has no parameter '%s'", line, m.name.c_str(), k.c_str());
    }
  }
  TStr out;
  const int saved_loops = loop_depth_;
  loop_depth_ = 0;
  ++macro_depth_;
  if (st.ok()) st = exec(m.body, out);
  --macro_depth_;
  loop_depth_ = saved_loops;
  flow_ = Flow::normal;
  // Top-level assignments made inside the macro stay in the macro.
  scopes_.swap(saved);
  KESTREL_TRY(std::move(st));
  return Value::string(std::move(out));
}

}  // namespace kestrel::jinja
