// Jinja values: Python's str / repr / truthiness / equality, HF's tojson.
#include "runtime/chat/jinja_value.h"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace kestrel::jinja {

bool TStr::any_taint() const {
  for (uint8_t t : taint)
    if (t) return true;
  return false;
}

void TStr::append(const TStr& other) {
  if (other.taint.empty()) {
    append(std::string_view(other.text));
    return;
  }
  if (taint.empty()) taint.assign(text.size(), 0);
  text += other.text;
  taint.insert(taint.end(), other.taint.begin(), other.taint.end());
}

void TStr::append(std::string_view clean_text) {
  text.append(clean_text);
  if (!taint.empty()) taint.resize(text.size(), 0);
}

TStr TStr::substr(size_t pos, size_t n) const {
  TStr out;
  if (pos >= text.size()) return out;
  n = std::min(n, text.size() - pos);
  out.text = text.substr(pos, n);
  if (!taint.empty()) out.taint.assign(taint.begin() + static_cast<ptrdiff_t>(pos), taint.begin() + static_cast<ptrdiff_t>(pos + n));
  return out;
}

Value Value::string(TStr s) {
  Value v;
  v.kind_ = Kind::string;
  v.s_ = std::make_shared<TStr>(std::move(s));
  return v;
}

Value Value::array(Array a) {
  Value v;
  v.kind_ = Kind::array;
  v.a_ = std::make_shared<Array>(std::move(a));
  return v;
}

Value Value::object(Object o, bool mutable_namespace) {
  Value v;
  v.kind_ = Kind::object;
  v.namespace_ = mutable_namespace;
  v.o_ = std::make_shared<Object>(std::move(o));
  return v;
}

Value Value::macro(const MacroDef* def) {
  Value v;
  v.kind_ = Kind::callable;
  v.macro_ = def;
  return v;
}

Value Value::builtin(Builtin b) {
  Value v;
  v.kind_ = Kind::callable;
  v.builtin_ = b;
  return v;
}

const std::string& Value::undefined_hint() const {
  static const std::string kNone = "value";
  return hint_ ? *hint_ : kNone;
}

const Value* Value::find(std::string_view key) const {
  if (kind_ != Kind::object) return nullptr;
  for (const auto& [k, v] : *o_)
    if (k == key) return &v;
  return nullptr;
}

std::string Value::type_name() const {
  switch (kind_) {
    case Kind::undefined: return "Undefined";
    case Kind::none: return "NoneType";
    case Kind::boolean: return "bool";
    case Kind::integer: return "int";
    case Kind::floating: return "float";
    case Kind::string: return "str";
    case Kind::array: return "list";
    case Kind::object: return namespace_ ? "Namespace" : "dict";
    case Kind::callable: return "function";
  }
  return "?";
}

bool truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined:
    case Value::Kind::none: return false;
    case Value::Kind::boolean:
    case Value::Kind::integer: return v.as_int() != 0;
    case Value::Kind::floating: return v.as_double() != 0.0;
    case Value::Kind::string: return !v.str().text.empty();
    case Value::Kind::array: return !v.arr().empty();
    case Value::Kind::object: return v.is_namespace() || !v.obj().empty();
    case Value::Kind::callable: return true;
  }
  return false;
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_int() && b.is_int()) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::undefined:
    case Value::Kind::none: return true;
    case Value::Kind::string: return a.str().text == b.str().text;
    case Value::Kind::array: {
      if (a.arr().size() != b.arr().size()) return false;
      for (size_t i = 0; i < a.arr().size(); ++i)
        if (!equals(a.arr()[i], b.arr()[i])) return false;
      return true;
    }
    case Value::Kind::object: {
      if (a.is_namespace() || b.is_namespace()) return &a.obj() == &b.obj();
      if (a.obj().size() != b.obj().size()) return false;
      for (const auto& [k, v] : a.obj()) {
        const Value* o = b.find(k);
        if (!o || !equals(v, *o)) return false;
      }
      return true;
    }
    case Value::Kind::callable: return a.macro_def() == b.macro_def() && a.builtin_id() == b.builtin_id();
    default: return false;
  }
}

Expected<bool> less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_int() && b.is_int()) return a.as_int() < b.as_int();
    return a.as_double() < b.as_double();
  }
  if (a.is_string() && b.is_string()) return a.str().text < b.str().text;  // UTF-8 order = code point order
  if (a.is_array() && b.is_array()) {
    const Array &x = a.arr(), &y = b.arr();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (equals(x[i], y[i])) continue;
      return less(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  return Status::invalid_argument("'<' is not supported between instances of '%s' and '%s'", a.type_name().c_str(),
                                  b.type_name().c_str());
}

std::string float_repr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  char buf[64];
  const double mag = std::fabs(f);
  if (mag != 0.0 && (mag < 1e-4 || mag >= 1e16)) {
    auto r = std::to_chars(buf, buf + sizeof buf, f, std::chars_format::scientific);
    std::string s(buf, r.ptr);
    // Python writes at least two exponent digits: 1e-05, 1e+16.
    const size_t e = s.find('e');
    std::string mant = s.substr(0, e), exp = s.substr(e + 1);
    const char sign = exp[0] == '-' ? '-' : '+';
    if (exp[0] == '-' || exp[0] == '+') exp = exp.substr(1);
    if (exp.size() < 2) exp = "0" + exp;
    return mant + "e" + sign + exp;
  }
  auto r = std::to_chars(buf, buf + sizeof buf, f, std::chars_format::fixed);
  std::string s(buf, r.ptr);
  if (s.find('.') == std::string::npos) s += ".0";
  return s;
}

namespace {

void append_hex_escape(std::string& out, const char* prefix, unsigned v, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%s%0*x", prefix, digits, v);
  out += buf;
}

std::string repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == static_cast<unsigned char>(quote)) { out += '\\'; out += static_cast<char>(c); }
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) append_hex_escape(out, "\\x", c, 2);
    else out += static_cast<char>(c);
  }
  out += quote;
  return out;
}

void json_string(const std::string& s, std::string& out) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) append_hex_escape(out, "\\u", c, 4);
        else out += static_cast<char>(c);
    }
  }
  out += '"';
}

Status json_value(const Value& v, int indent, int depth, std::string& out) {
  if (depth > 512) return Status::too_long("tojson: nesting deeper than 512");
  const bool pretty = indent >= 0;
  auto newline = [&](int d) {
    out += '\n';
    out.append(static_cast<size_t>(indent) * static_cast<size_t>(d), ' ');
  };
  switch (v.kind()) {
    case Value::Kind::none: out += "null"; return {};
    case Value::Kind::boolean: out += v.as_bool() ? "true" : "false"; return {};
    case Value::Kind::integer: out += std::to_string(v.as_int()); return {};
    case Value::Kind::floating: {
      const double f = v.as_double();
      out += std::isnan(f) ? "NaN" : std::isinf(f) ? (f > 0 ? "Infinity" : "-Infinity") : float_repr(f);
      return {};
    }
    case Value::Kind::string: json_string(v.str().text, out); return {};
    case Value::Kind::array: {
      if (v.arr().empty()) { out += "[]"; return {}; }
      out += '[';
      for (size_t i = 0; i < v.arr().size(); ++i) {
        if (i) out += pretty ? "," : ", ";
        if (pretty) newline(depth + 1);
        KESTREL_TRY(json_value(v.arr()[i], indent, depth + 1, out));
      }
      if (pretty) newline(depth);
      out += ']';
      return {};
    }
    case Value::Kind::object: {
      if (v.obj().empty()) { out += "{}"; return {}; }
      out += '{';
      bool first = true;
      for (const auto& [k, x] : v.obj()) {
        if (!first) out += pretty ? "," : ", ";
        first = false;
        if (pretty) newline(depth + 1);
        json_string(k, out);
        out += ": ";
        KESTREL_TRY(json_value(x, indent, depth + 1, out));
      }
      if (pretty) newline(depth);
      out += '}';
      return {};
    }
    case Value::Kind::undefined:
      return Status::invalid_argument("tojson: '%s' is undefined", v.undefined_hint().c_str());
    case Value::Kind::callable: return Status::invalid_argument("tojson: a function is not JSON serializable");
  }
  return {};
}

void repr_into(const Value& v, std::string& out, int depth) {
  if (depth > 512) { out += "..."; return; }
  switch (v.kind()) {
    case Value::Kind::string: out += repr_string(v.str().text); return;
    case Value::Kind::array:
      out += '[';
      for (size_t i = 0; i < v.arr().size(); ++i) {
        if (i) out += ", ";
        repr_into(v.arr()[i], out, depth + 1);
      }
      out += ']';
      return;
    case Value::Kind::object:
      if (v.is_namespace()) { out += "<Namespace>"; return; }
      out += '{';
      for (size_t i = 0; i < v.obj().size(); ++i) {
        if (i) out += ", ";
        out += repr_string(v.obj()[i].first);
        out += ": ";
        repr_into(v.obj()[i].second, out, depth + 1);
      }
      out += '}';
      return;
    default: out += to_str(v).text; return;
  }
}

}  // namespace

std::string repr(const Value& v) {
  std::string out;
  repr_into(v, out, 0);
  return out;
}

TStr to_str(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined: return {};
    case Value::Kind::none: return TStr::clean("None");
    case Value::Kind::boolean: return TStr::clean(v.as_bool() ? "True" : "False");
    case Value::Kind::integer: return TStr::clean(std::to_string(v.as_int()));
    case Value::Kind::floating: return TStr::clean(float_repr(v.as_double()));
    case Value::Kind::string: return v.str();
    case Value::Kind::callable: return TStr::clean("<function>");
    case Value::Kind::array:
    case Value::Kind::object: {
      // Conservative taint: a container printed whole is tainted if any string inside is.
      bool tainted = false;
      std::vector<const Value*> stack{&v};
      while (!stack.empty() && !tainted) {
        const Value* x = stack.back();
        stack.pop_back();
        if (x->is_string()) tainted = x->str().any_taint();
        else if (x->is_array()) for (const Value& e : x->arr()) stack.push_back(&e);
        else if (x->is_object()) for (const auto& kv : x->obj()) stack.push_back(&kv.second);
      }
      std::string s;
      repr_into(v, s, 0);
      return tainted ? TStr::tainted(std::move(s)) : TStr::clean(std::move(s));
    }
  }
  return {};
}

Expected<std::string> to_json(const Value& v, int indent) {
  std::string out;
  KESTREL_TRY(json_value(v, indent, 0, out));
  return out;
}

std::vector<size_t> code_point_offsets(std::string_view s) {
  std::vector<size_t> offs;
  offs.reserve(s.size() + 1);
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) offs.push_back(i);
  }
  offs.push_back(s.size());
  return offs;
}

}  // namespace kestrel::jinja
