// Jinja expressions: names, literals, attribute / item / slice access, calls,
// filters, tests and operators, with Python's semantics for each type.
#include <algorithm>
#include <cmath>

#include "runtime/chat/jinja_interp.h"

namespace kestrel::jinja {
namespace {

Status undefined_error(const Value& v, int line) {
  return Status::invalid_argument("line %d: '%s' is undefined", line, v.undefined_hint().c_str());
}

// Python's slice indices for a sequence of n elements.
Status slice_indices(const Value& start, const Value& stop, const Value& step, int64_t n, int line, int64_t& a,
                     int64_t& b, int64_t& s) {
  for (const Value* v : {&start, &stop, &step}) {
    if (!v->is_undefined() && !v->is_none() && !v->is_int()) {
      return Status::invalid_argument("line %d: slice indices must be integers or None", line);
    }
  }
  s = step.is_int() ? step.as_int() : 1;
  if (s == 0) return Status::invalid_argument("line %d: slice step cannot be zero", line);
  auto clamp = [&](const Value& v, int64_t def) -> int64_t {
    if (!v.is_int()) return def;
    int64_t x = v.as_int();
    if (x < 0) x += n;
    if (s > 0) return std::clamp<int64_t>(x, 0, n);
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  a = clamp(start, s > 0 ? 0 : n - 1);
  b = clamp(stop, s > 0 ? n : -1);
  return {};
}

Expected<Value> arith(const std::string& op, const Value& l, const Value& r, int line) {
  if (l.is_undefined()) return undefined_error(l, line);
  if (r.is_undefined()) return undefined_error(r, line);
  if (op == "+") {
    if (l.is_string() && r.is_string()) {
      TStr s = l.str();
      s.append(r.str());
      return Value::string(std::move(s));
    }
    if (l.is_array() && r.is_array()) {
      Array a = l.arr();
      a.insert(a.end(), r.arr().begin(), r.arr().end());
      return Value::array(std::move(a));
    }
  }
  if (op == "*") {
    const Value* seq = l.is_string() || l.is_array() ? &l : r.is_string() || r.is_array() ? &r : nullptr;
    const Value* cnt = seq == &l ? &r : &l;
    if (seq && cnt->is_int()) {
      const int64_t n = std::max<int64_t>(0, cnt->as_int());
      const size_t unit = seq->is_string() ? seq->str().text.size() : seq->arr().size();
      if (unit > 0 && static_cast<uint64_t>(n) > (uint64_t{64} << 20) / unit) {
        return Status::too_long("line %d: repetition of %lld copies is too large", line, static_cast<long long>(n));
      }
      if (seq->is_string()) {
        TStr s;
        for (int64_t i = 0; i < n; ++i) s.append(seq->str());
        return Value::string(std::move(s));
      }
      Array a;
      for (int64_t i = 0; i < n; ++i) a.insert(a.end(), seq->arr().begin(), seq->arr().end());
      return Value::array(std::move(a));
    }
  }
  if (!l.is_number() || !r.is_number()) {
    return Status::invalid_argument("line %d: unsupported operand type(s) for %s: '%s' and '%s'", line, op.c_str(),
                                    l.type_name().c_str(), r.type_name().c_str());
  }
  const bool ints = l.is_int() && r.is_int();
  const double x = l.as_double(), y = r.as_double();
  if (op == "+") return ints ? Value::integer(l.as_int() + r.as_int()) : Value::floating(x + y);
  if (op == "-") return ints ? Value::integer(l.as_int() - r.as_int()) : Value::floating(x - y);
  if (op == "*") return ints ? Value::integer(l.as_int() * r.as_int()) : Value::floating(x * y);
  if (op == "/") {
    if (y == 0.0) return Status::invalid_argument("line %d: division by zero", line);
    return Value::floating(x / y);
  }
  if (op == "//" || op == "%") {
    if (y == 0.0) return Status::invalid_argument("line %d: integer division or modulo by zero", line);
    if (ints) {
      const int64_t a = l.as_int(), b = r.as_int();
      int64_t q = a / b, m = a % b;
      if (m != 0 && ((m < 0) != (b < 0))) { --q; m += b; }  // Python floors
      return Value::integer(op == "//" ? q : m);
    }
    const double q = std::floor(x / y);
    return Value::floating(op == "//" ? q : x - q * y);
  }
  if (op == "**") {
    if (ints && r.as_int() >= 0) {
      int64_t acc = 1;
      for (int64_t i = 0; i < r.as_int() && i < 64; ++i) acc *= l.as_int();
      return Value::integer(acc);
    }
    return Value::floating(std::pow(x, y));
  }
  return Status::internal("line %d: unknown operator %s", line, op.c_str());
}

}  // namespace

Status Interp::args_of(const Expr& e, size_t first, Args& out) {
  const size_t n_kw = e.kw_names.size();
  const size_t n_pos = e.kids.size() - first - n_kw;
  for (size_t i = 0; i < n_pos; ++i) {
    KESTREL_TRY_ASSIGN(Value v, eval(*e.kids[first + i]));
    out.pos.push_back(std::move(v));
  }
  for (size_t i = 0; i < n_kw; ++i) {
    KESTREL_TRY_ASSIGN(Value v, eval(*e.kids[first + n_pos + i]));
    out.kw.emplace_back(e.kw_names[i], std::move(v));
  }
  return {};
}

Expected<Value> Interp::binary(const Expr& e) {
  const std::string& op = e.name;
  KESTREL_TRY_ASSIGN(Value l, eval(*e.kids[0]));
  if (op == "and") {
    if (!truthy(l)) return l;
    return eval(*e.kids[1]);
  }
  if (op == "or") {
    if (truthy(l)) return l;
    return eval(*e.kids[1]);
  }
  KESTREL_TRY_ASSIGN(Value r, eval(*e.kids[1]));
  if (op == "==") return Value::boolean(equals(l, r));
  if (op == "!=") return Value::boolean(!equals(l, r));
  if (op == "~") {
    TStr s = to_str(l);
    s.append(to_str(r));
    return Value::string(std::move(s));
  }
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    if (l.is_undefined()) return undefined_error(l, e.line);
    if (r.is_undefined()) return undefined_error(r, e.line);
    const bool swap = op == ">" || op == "<=";
    Expected<bool> lt = swap ? less(r, l) : less(l, r);
    if (!lt.ok()) return Status::invalid_argument("line %d: %s", e.line, lt.status().message().c_str());
    const bool res = (op == "<" || op == ">") ? *lt : !*lt;
    return Value::boolean(res);
  }
  if (op == "in" || op == "not in") {
    bool found = false;
    if (r.is_string()) {
      if (!l.is_string()) {
        return Status::invalid_argument("line %d: 'in <string>' requires string as left operand, not %s", e.line,
                                        l.type_name().c_str());
      }
      found = r.str().text.find(l.str().text) != std::string::npos;
    } else if (r.is_array()) {
      for (const Value& x : r.arr()) found = found || equals(l, x);
    } else if (r.is_object()) {
      found = l.is_string() && r.find(l.str().text) != nullptr;
    } else if (r.is_undefined()) {
      return undefined_error(r, e.line);
    } else {
      return Status::invalid_argument("line %d: argument of type '%s' is not iterable", e.line, r.type_name().c_str());
    }
    return Value::boolean(op == "in" ? found : !found);
  }
  return arith(op, l, r, e.line);
}

Expected<Value> Interp::eval(const Expr& e) {
  KESTREL_TRY(step(e.line));
  switch (e.kind) {
    case ExprKind::literal: return e.value;
    case ExprKind::name: return lookup(e.name);
    case ExprKind::list: {
      Array a;
      for (const auto& k : e.kids) {
        KESTREL_TRY_ASSIGN(Value v, eval(*k));
        a.push_back(std::move(v));
      }
      return Value::array(std::move(a));
    }
    case ExprKind::dict: {
      Object o;
      for (size_t i = 0; i + 1 < e.kids.size(); i += 2) {
        KESTREL_TRY_ASSIGN(Value k, eval(*e.kids[i]));
        KESTREL_TRY_ASSIGN(Value v, eval(*e.kids[i + 1]));
        if (!k.is_string()) return Status::unsupported("line %d: dict keys other than strings", e.line);
        bool replaced = false;
        for (auto& [ok, ov] : o)
          if (ok == k.str().text) { ov = v; replaced = true; }
        if (!replaced) o.emplace_back(k.str().text, std::move(v));
      }
      return Value::object(std::move(o));
    }
    case ExprKind::attr:
    case ExprKind::item: {
      KESTREL_TRY_ASSIGN(Value obj, eval(*e.kids[0]));
      Value key;
      if (e.kind == ExprKind::attr) {
        key = Value::text(e.name);
      } else {
        KESTREL_TRY_ASSIGN(key, eval(*e.kids[1]));
      }
      if (obj.is_undefined()) return undefined_error(obj, e.line);
      const std::string hint = key.is_string() ? key.str().text : to_str(key).text;
      if (obj.is_object() && key.is_string()) {
        const Value* v = obj.find(key.str().text);
        if (v) return *v;
        return Value::undefined(std::string(obj.is_namespace() ? "namespace" : "dict object") +
                                " has no attribute '" + hint + "'");
      }
      if ((obj.is_array() || obj.is_string()) && key.is_int() && !key.is_bool()) {
        if (obj.is_array()) {
          const auto n = static_cast<int64_t>(obj.arr().size());
          int64_t i = key.as_int();
          if (i < 0) i += n;
          if (i < 0 || i >= n) return Value::undefined("list object has no element " + hint);
          return obj.arr()[static_cast<size_t>(i)];
        }
        const auto offs = code_point_offsets(obj.str().text);
        const auto n = static_cast<int64_t>(offs.size()) - 1;
        int64_t i = key.as_int();
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value::undefined("str object has no element " + hint);
        return Value::string(obj.str().substr(offs[static_cast<size_t>(i)], offs[static_cast<size_t>(i) + 1] -
                                                                                 offs[static_cast<size_t>(i)]));
      }
      return Value::undefined(obj.type_name() + " object has no attribute '" + hint + "'");
    }
    case ExprKind::slice: {
      KESTREL_TRY_ASSIGN(Value obj, eval(*e.kids[0]));
      KESTREL_TRY_ASSIGN(Value a, eval(*e.kids[1]));
      KESTREL_TRY_ASSIGN(Value b, eval(*e.kids[2]));
      KESTREL_TRY_ASSIGN(Value c, eval(*e.kids[3]));
      if (obj.is_undefined()) return undefined_error(obj, e.line);
      if (!obj.is_array() && !obj.is_string()) {
        return Status::invalid_argument("line %d: '%s' object is not subscriptable", e.line, obj.type_name().c_str());
      }
      std::vector<size_t> offs;
      if (obj.is_string()) offs = code_point_offsets(obj.str().text);
      const auto n = static_cast<int64_t>(obj.is_array() ? obj.arr().size() : offs.size() - 1);
      int64_t i0 = 0, i1 = 0, st = 1;
      KESTREL_TRY(slice_indices(a, b, c, n, e.line, i0, i1, st));
      Array out_a;
      TStr out_s;
      for (int64_t i = i0; st > 0 ? i < i1 : i > i1; i += st) {
        const auto k = static_cast<size_t>(i);
        if (obj.is_array()) out_a.push_back(obj.arr()[k]);
        else out_s.append(obj.str().substr(offs[k], offs[k + 1] - offs[k]));
      }
      return obj.is_array() ? Value::array(std::move(out_a)) : Value::string(std::move(out_s));
    }
    case ExprKind::call: {
      Args a;
      KESTREL_TRY(args_of(e, 1, a));
      const Expr& callee = *e.kids[0];
      if (callee.kind == ExprKind::attr) {
        KESTREL_TRY_ASSIGN(Value obj, eval(*callee.kids[0]));
        if (obj.is_undefined()) return undefined_error(obj, e.line);
        const Value* member = obj.is_object() ? obj.find(callee.name) : nullptr;
        if (member && member->is_callable()) return call(*member, a, e.line, callee.name);
        return method(obj, callee.name, a, e.line);
      }
      KESTREL_TRY_ASSIGN(Value fn, eval(callee));
      const std::string what = callee.kind == ExprKind::name ? callee.name : "expression";
      return call(fn, a, e.line, what);
    }
    case ExprKind::filter: {
      KESTREL_TRY_ASSIGN(Value v, eval(*e.kids[0]));
      Args a;
      KESTREL_TRY(args_of(e, 1, a));
      return filter(e.name, v, a, e.line);
    }
    case ExprKind::test: {
      KESTREL_TRY_ASSIGN(Value v, eval(*e.kids[0]));
      Args a;
      KESTREL_TRY(args_of(e, 1, a));
      KESTREL_TRY_ASSIGN(bool r, test(e.name, v, a, e.line));
      return Value::boolean(e.negated ? !r : r);
    }
    case ExprKind::unary: {
      KESTREL_TRY_ASSIGN(Value v, eval(*e.kids[0]));
      if (e.name == "not") return Value::boolean(!truthy(v));
      if (v.is_undefined()) return undefined_error(v, e.line);
      if (!v.is_number()) {
        return Status::invalid_argument("line %d: bad operand type for unary %s: '%s'", e.line, e.name.c_str(),
                                        v.type_name().c_str());
      }
      if (e.name == "+") return v.is_bool() ? Value::integer(v.as_int()) : v;
      return v.is_int() ? Value::integer(-v.as_int()) : Value::floating(-v.as_double());
    }
    case ExprKind::binary: return binary(e);
    case ExprKind::cond: {
      KESTREL_TRY_ASSIGN(Value c, eval(*e.kids[1]));
      if (truthy(c)) return eval(*e.kids[0]);
      if (e.kids.size() > 2) return eval(*e.kids[2]);
      return Value::undefined("conditional expression");
    }
  }
  return Status::internal("line %d: unknown expression", e.line);
}

}  // namespace kestrel::jinja
