// Jinja's filters, tests, string / dict methods and global functions, as far
// as chat templates use them. Each follows jinja2 / Python; a name not here is
// an `unsupported` error naming it. Case mapping (upper, lower, title,
// capitalize) maps ASCII letters only.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "runtime/chat/jinja_interp.h"

namespace kestrel::jinja {
namespace {

// One code point of s at i (invalid bytes count as one code point each).
uint32_t next_cp(std::string_view s, size_t i, size_t& len) {
  const auto c = static_cast<unsigned char>(s[i]);
  int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + static_cast<size_t>(n) > s.size()) { len = 1; return c; }
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
    if ((b & 0xC0) != 0x80) { len = 1; return c; }
    cp = (cp << 6) | (b & 0x3F);
  }
  len = static_cast<size_t>(n);
  return cp;
}

// str.isspace() for one code point, as str.strip() and str.split() use it.
bool py_space(uint32_t cp) {
  return (cp >= 9 && cp <= 13) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

std::vector<size_t> cp_starts(std::string_view s) {  // start offsets plus s.size()
  std::vector<size_t> out;
  for (size_t i = 0; i < s.size();) {
    out.push_back(i);
    size_t len;
    next_cp(s, i, len);
    i += len;
  }
  out.push_back(s.size());
  return out;
}

Status want_string(const Value& v, const char* what, int line) {
  if (v.is_string()) return {};
  return Status::invalid_argument("line %d: %s needs a string, got %s", line, what, v.type_name().c_str());
}

TStr map_ascii(const TStr& s, int mode) {  // 0 lower, 1 upper, 2 capitalize, 3 title
  TStr out = s;
  bool word_start = true;
  for (size_t i = 0; i < out.text.size(); ++i) {
    char& c = out.text[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool upper = mode == 1 || (mode == 2 && i == 0) || (mode == 3 && word_start);
    if (upper && c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    else if (!upper && mode != 1 && c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    word_start = !alpha && !(static_cast<unsigned char>(c) >= 0x80);
  }
  return out;
}

// Python str.split(sep, maxsplit); sep nullptr: runs of whitespace.
Array py_split(const TStr& s, const std::string* sep, int64_t maxsplit) {
  Array out;
  const std::string& t = s.text;
  if (sep) {
    size_t pos = 0;
    int64_t n = 0;
    while (maxsplit < 0 || n < maxsplit) {
      const size_t f = t.find(*sep, pos);
      if (f == std::string::npos) break;
      out.push_back(Value::string(s.substr(pos, f - pos)));
      pos = f + sep->size();
      ++n;
    }
    out.push_back(Value::string(s.substr(pos, t.size() - pos)));
    return out;
  }
  const auto starts = cp_starts(t);
  size_t k = 0;
  int64_t n = 0;
  auto is_ws = [&](size_t idx) {
    size_t len;
    return py_space(next_cp(t, starts[idx], len));
  };
  const size_t ncp = starts.size() - 1;
  while (k < ncp) {
    while (k < ncp && is_ws(k)) ++k;
    if (k >= ncp) break;
    if (maxsplit >= 0 && n >= maxsplit) {
      size_t end = ncp;
      while (end > k && is_ws(end - 1)) --end;
      out.push_back(Value::string(s.substr(starts[k], starts[end] - starts[k])));
      break;
    }
    const size_t b = k;
    while (k < ncp && !is_ws(k)) ++k;
    out.push_back(Value::string(s.substr(starts[b], starts[k] - starts[b])));
    ++n;
  }
  return out;
}

TStr py_replace(const TStr& s, const TStr& old, const TStr& with, int64_t count) {
  TStr out;
  const std::string& t = s.text;
  if (old.text.empty()) {  // Python inserts `with` between code points
    const auto starts = cp_starts(t);
    int64_t n = 0;
    for (size_t k = 0; k + 1 < starts.size(); ++k) {
      if (count < 0 || n < count) { out.append(with); ++n; }
      out.append(s.substr(starts[k], starts[k + 1] - starts[k]));
    }
    if (count < 0 || n < count) out.append(with);
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    const size_t f = t.find(old.text, pos);
    if (f == std::string::npos) break;
    out.append(s.substr(pos, f - pos));
    out.append(with);
    pos = f + old.text.size();
    ++n;
  }
  out.append(s.substr(pos, t.size() - pos));
  return out;
}

Expected<int64_t> int_arg(const Value* v, int64_t def, const char* what, int line) {
  if (!v || v->is_none()) return def;
  if (!v->is_int()) return Status::invalid_argument("line %d: %s must be an integer", line, what);
  return v->as_int();
}

bool any_string_taint(const Value& v) {
  if (v.is_string()) return v.str().any_taint();
  if (v.is_array()) {
    for (const Value& x : v.arr())
      if (any_string_taint(x)) return true;
  }
  if (v.is_object()) {
    for (const auto& kv : v.obj())
      if (any_string_taint(kv.second)) return true;
  }
  return false;
}

Array items_of(const Value& v) {
  Array out;
  if (v.is_array()) return v.arr();
  if (v.is_object()) {
    for (const auto& kv : v.obj()) out.push_back(Value::text(kv.first));
  } else if (v.is_string()) {
    const auto starts = cp_starts(v.str().text);
    for (size_t k = 0; k + 1 < starts.size(); ++k)
      out.push_back(Value::string(v.str().substr(starts[k], starts[k + 1] - starts[k])));
  }
  return out;
}

}  // namespace

TStr py_strip(const TStr& s, bool left, bool right, const std::string* chars) {
  const std::string& t = s.text;
  const auto starts = cp_starts(t);
  const std::vector<size_t> strip_set = chars ? cp_starts(*chars) : std::vector<size_t>{};
  auto strippable = [&](size_t k) {
    size_t len;
    const uint32_t cp = next_cp(t, starts[k], len);
    if (!chars) return py_space(cp);
    for (size_t j = 0; j + 1 < strip_set.size(); ++j) {
      size_t l2;
      if (next_cp(*chars, strip_set[j], l2) == cp) return true;
    }
    return false;
  };
  size_t b = 0, e = starts.size() - 1;
  if (left)
    while (b < e && strippable(b)) ++b;
  if (right)
    while (e > b && strippable(e - 1)) --e;
  return s.substr(starts[b], starts[e] - starts[b]);
}

Expected<Value> Interp::call(const Value& fn, const Args& a, int line, const std::string& what) {
  if (fn.is_undefined()) return Status::invalid_argument("line %d: '%s' is undefined", line, what.c_str());
  if (!fn.is_callable()) {
    return Status::invalid_argument("line %d: '%s' object is not callable", line, fn.type_name().c_str());
  }
  if (fn.macro_def()) return call_macro(*fn.macro_def(), a, line);
  switch (fn.builtin_id()) {
    case Builtin::raise_exception: {
      const std::string msg = a.pos.empty() ? std::string() : to_str(a.pos[0]).text;
      return Status::invalid_argument("line %d: the template raised an exception: %s", line, msg.c_str());
    }
    case Builtin::range: {
      int64_t start = 0, stop = 0, stepv = 1;
      for (const Value& v : a.pos)
        if (!v.is_int()) return Status::invalid_argument("line %d: range() takes integers", line);
      if (a.pos.size() == 1) stop = a.pos[0].as_int();
      else if (a.pos.size() >= 2) { start = a.pos[0].as_int(); stop = a.pos[1].as_int(); }
      if (a.pos.size() >= 3) stepv = a.pos[2].as_int();
      if (a.pos.empty() || a.pos.size() > 3) return Status::invalid_argument("line %d: range() takes 1 to 3 arguments", line);
      if (stepv == 0) return Status::invalid_argument("line %d: range() arg 3 must not be zero", line);
      Array out;
      for (int64_t i = start; stepv > 0 ? i < stop : i > stop; i += stepv) {
        if (out.size() >= (size_t{1} << 20)) return Status::too_long("line %d: range() of more than 2^20 items", line);
        out.push_back(Value::integer(i));
      }
      return Value::array(std::move(out));
    }
    case Builtin::namespace_: {
      Object o;
      if (!a.pos.empty()) {
        if (!a.pos[0].is_object()) return Status::invalid_argument("line %d: namespace() takes a dict", line);
        o = a.pos[0].obj();
      }
      for (const auto& kv : a.kw) o.push_back(kv);
      return Value::object(std::move(o), /*mutable_namespace=*/true);
    }
    case Builtin::none: break;
  }
  return Status::internal("line %d: unknown function", line);
}

Expected<Value> Interp::method(const Value& obj, const std::string& name, const Args& a, int line) {
  if (obj.is_string()) {
    const TStr& s = obj.str();
    const Value* a0 = a.get(0, "chars");
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const std::string* chars = a0 && a0->is_string() ? &a0->str().text : nullptr;
      return Value::string(py_strip(s, name != "rstrip", name != "lstrip", chars));
    }
    if (name == "upper") return Value::string(map_ascii(s, 1));
    if (name == "lower") return Value::string(map_ascii(s, 0));
    if (name == "capitalize") return Value::string(map_ascii(s, 2));
    if (name == "title") return Value::string(map_ascii(s, 3));
    if (name == "startswith" || name == "endswith") {
      if (!a0) return Status::invalid_argument("line %d: %s() takes an argument", line, name.c_str());
      Array cands = a0->is_array() ? a0->arr() : Array{*a0};
      for (const Value& c : cands) {
        KESTREL_TRY(want_string(c, name.c_str(), line));
        const std::string& p = c.str().text;
        const bool hit = p.size() <= s.text.size() &&
                         (name == "startswith" ? s.text.compare(0, p.size(), p) == 0
                                               : s.text.compare(s.text.size() - p.size(), p.size(), p) == 0);
        if (hit) return Value::boolean(true);
      }
      return Value::boolean(false);
    }
    if (name == "split") {
      const Value* sep = a.get(0, "sep");
      KESTREL_TRY_ASSIGN(int64_t maxsplit, int_arg(a.get(1, "maxsplit"), -1, "maxsplit", line));
      if (sep && !sep->is_none()) {
        KESTREL_TRY(want_string(*sep, "split", line));
        if (sep->str().text.empty()) return Status::invalid_argument("line %d: empty separator", line);
        return Value::array(py_split(s, &sep->str().text, maxsplit));
      }
      return Value::array(py_split(s, nullptr, maxsplit));
    }
    if (name == "replace") {
      const Value* old = a.get(0, "old");
      const Value* with = a.get(1, "new");
      if (!old || !with) return Status::invalid_argument("line %d: replace() takes two strings", line);
      KESTREL_TRY(want_string(*old, "replace", line));
      KESTREL_TRY(want_string(*with, "replace", line));
      KESTREL_TRY_ASSIGN(int64_t count, int_arg(a.get(2, "count"), -1, "count", line));
      return Value::string(py_replace(s, old->str(), with->str(), count));
    }
    if (name == "join") {
      if (!a0) return Status::invalid_argument("line %d: join() takes an iterable", line);
      TStr out;
      const Array items = items_of(*a0);
      for (size_t i = 0; i < items.size(); ++i) {
        KESTREL_TRY(want_string(items[i], "join", line));
        if (i) out.append(s);
        out.append(items[i].str());
      }
      return Value::string(std::move(out));
    }
    if (name == "find" || name == "count") {
      if (!a0) return Status::invalid_argument("line %d: %s() takes a string", line, name.c_str());
      KESTREL_TRY(want_string(*a0, name.c_str(), line));
      const std::string& sub = a0->str().text;
      if (name == "find") {
        const size_t f = s.text.find(sub);
        if (f == std::string::npos) return Value::integer(-1);
        return Value::integer(static_cast<int64_t>(cp_starts(s.text.substr(0, f)).size()) - 1);
      }
      if (sub.empty()) return Value::integer(static_cast<int64_t>(cp_starts(s.text).size()));
      int64_t n = 0;
      for (size_t p = s.text.find(sub); p != std::string::npos; p = s.text.find(sub, p + sub.size())) ++n;
      return Value::integer(n);
    }
  }
  if (obj.is_object() && !obj.is_namespace()) {
    if (name == "items") {
      Array out;
      for (const auto& [k, v] : obj.obj()) out.push_back(Value::array({Value::text(k), v}));
      return Value::array(std::move(out));
    }
    if (name == "keys") {
      Array out;
      for (const auto& kv : obj.obj()) out.push_back(Value::text(kv.first));
      return Value::array(std::move(out));
    }
    if (name == "values") {
      Array out;
      for (const auto& kv : obj.obj()) out.push_back(kv.second);
      return Value::array(std::move(out));
    }
    if (name == "get") {
      const Value* k = a.get(0, "key");
      if (!k) return Status::invalid_argument("line %d: get() takes a key", line);
      const Value* v = k->is_string() ? obj.find(k->str().text) : nullptr;
      if (v) return *v;
      const Value* d = a.get(1, "default");
      return d ? *d : Value::none();
    }
  }
  return Status::unsupported("line %d: the method '%s' of a %s is not supported", line, name.c_str(),
                             obj.type_name().c_str());
}

Expected<bool> Interp::test(const std::string& name, const Value& v, const Args& a, int line) {
  const Value* a0 = a.get(0, "value");
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int() && !v.is_bool();
  if (name == "float") return v.kind() == Value::Kind::floating;
  if (name == "mapping") return v.is_object();
  if (name == "sequence") return v.is_array() || v.is_string() || v.is_object();
  if (name == "iterable") return v.is_array() || v.is_string() || v.is_object();
  if (name == "callable") return v.is_callable();
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) return false;
    bool cased = false;
    for (char c : v.str().text) {
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        cased = true;
        if (name == "lower" ? (c >= 'A' && c <= 'Z') : (c >= 'a' && c <= 'z')) return false;
      }
    }
    return cased;
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!v.is_int()) return Status::invalid_argument("line %d: the '%s' test needs an integer", line, name.c_str());
    if (name == "divisibleby") {
      if (!a0 || !a0->is_int() || a0->as_int() == 0)
        return Status::invalid_argument("line %d: divisibleby needs a non-zero integer", line);
      return v.as_int() % a0->as_int() == 0;
    }
    const bool odd = (v.as_int() % 2) != 0;
    return name == "odd" ? odd : !odd;
  }
  if (name == "eq" || name == "equalto" || name == "==" || name == "ne" || name == "!=" || name == "sameas" ||
      name == "lt" || name == "gt" || name == "le" || name == "ge" || name == "in") {
    if (!a0) return Status::invalid_argument("line %d: the '%s' test takes an argument", line, name.c_str());
    if (name == "eq" || name == "equalto" || name == "==") return equals(v, *a0);
    if (name == "ne" || name == "!=") return !equals(v, *a0);
    if (name == "sameas") {
      if (v.is_none() || v.is_bool() || a0->is_none() || a0->is_bool()) return v.kind() == a0->kind() && equals(v, *a0);
      return false;
    }
    if (name == "in") {
      if (a0->is_string()) return v.is_string() && a0->str().text.find(v.str().text) != std::string::npos;
      for (const Value& x : items_of(*a0))
        if (equals(v, x)) return true;
      return false;
    }
    Expected<bool> lt = (name == "lt" || name == "ge") ? less(v, *a0) : less(*a0, v);
    if (!lt.ok()) return Status::invalid_argument("line %d: %s", line, lt.status().message().c_str());
    return (name == "lt" || name == "gt") ? *lt : !*lt;
  }
  return Status::unsupported("line %d: the test '%s' is not supported", line, name.c_str());
}

Expected<Value> Interp::filter(const std::string& name, const Value& v, const Args& a, int line) {
  // jinja2 rejects an unknown filter before looking at its input; so does this.
  static const char* const kFilters[] = {"default", "d", "safe", "string", "length", "count", "tojson", "trim",
                                         "upper", "lower", "capitalize", "title", "replace", "join", "list", "first",
                                         "last", "reverse", "int", "float", "abs", "items", "selectattr",
                                         "rejectattr", "select", "reject", "map"};
  if (std::find(std::begin(kFilters), std::end(kFilters), name) == std::end(kFilters))
    return Status::unsupported("line %d: the filter '%s' is not supported", line, name.c_str());
  const Value* a0 = a.get(0, "");
  if (name == "default" || name == "d") {
    const Value* def = a.get(0, "default_value");
    const Value* boolean = a.get(1, "boolean");
    const bool use = v.is_undefined() || (boolean && truthy(*boolean) && !truthy(v));
    return use ? (def ? *def : Value::text("")) : v;
  }
  if (name == "safe") return v;
  if (name == "string") return Value::string(to_str(v));
  if (name == "length" || name == "count") {
    if (v.is_undefined()) return Value::integer(0);
    if (v.is_string()) return Value::integer(static_cast<int64_t>(cp_starts(v.str().text).size()) - 1);
    if (v.is_array()) return Value::integer(static_cast<int64_t>(v.arr().size()));
    if (v.is_object()) return Value::integer(static_cast<int64_t>(v.obj().size()));
    return Status::invalid_argument("line %d: object of type '%s' has no len()", line, v.type_name().c_str());
  }
  if (name == "tojson") {
    for (const auto& [k, x] : a.kw) {
      if (k == "indent") continue;
      const bool is_default = (k == "ensure_ascii" || k == "sort_keys") ? (x.is_bool() && !x.as_bool()) : x.is_none();
      if (!is_default) return Status::unsupported("line %d: tojson(%s=...) is not supported", line, k.c_str());
    }
    const Value* ind = a.get(0, "indent");
    KESTREL_TRY_ASSIGN(int64_t indent, int_arg(ind, -1, "indent", line));
    Expected<std::string> js = to_json(v, static_cast<int>(std::clamp<int64_t>(indent, -1, 64)));
    if (!js.ok()) return Status::invalid_argument("line %d: %s", line, js.status().message().c_str());
    TStr out = any_string_taint(v) ? TStr::tainted(std::move(js).value()) : TStr::clean(std::move(js).value());
    return Value::string(std::move(out));
  }
  if (v.is_undefined() && name != "list" && name != "join") {
    if (name == "trim" || name == "upper" || name == "lower" || name == "capitalize" || name == "title")
      return Value::text("");  // str(Undefined) is ""
    return Status::invalid_argument("line %d: '%s' is undefined (filter %s)", line, v.undefined_hint().c_str(),
                                    name.c_str());
  }
  if (name == "trim" || name == "upper" || name == "lower" || name == "capitalize" || name == "title") {
    const TStr s = to_str(v);
    if (name == "trim") {
      const Value* chars = a.get(0, "chars");
      return Value::string(py_strip(s, true, true, chars && chars->is_string() ? &chars->str().text : nullptr));
    }
    return Value::string(map_ascii(s, name == "lower" ? 0 : name == "upper" ? 1 : name == "capitalize" ? 2 : 3));
  }
  if (name == "replace") {
    const Value* old = a.get(0, "old");
    const Value* with = a.get(1, "new");
    if (!old || !with || !old->is_string() || !with->is_string())
      return Status::invalid_argument("line %d: replace takes two strings", line);
    KESTREL_TRY_ASSIGN(int64_t count, int_arg(a.get(2, "count"), -1, "count", line));
    return Value::string(py_replace(to_str(v), old->str(), with->str(), count));
  }
  if (name == "join") {
    const Value* sep = a.get(0, "d");
    const Value* attr = a.get(1, "attribute");
    TStr out;
    const Array items = items_of(v);
    for (size_t i = 0; i < items.size(); ++i) {
      if (i && sep) out.append(to_str(*sep));
      const Value* x = &items[i];
      if (attr && attr->is_string()) x = items[i].find(attr->str().text);
      if (x) out.append(to_str(*x));
    }
    return Value::string(std::move(out));
  }
  if (name == "list") return Value::array(items_of(v));
  if (name == "first" || name == "last") {
    const Array items = items_of(v);
    if (items.empty()) return Value::undefined(std::string("the ") + name + " item of an empty sequence");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    if (v.is_string()) {
      const auto starts = cp_starts(v.str().text);
      TStr out;
      for (size_t k = starts.size() - 1; k > 0; --k) out.append(v.str().substr(starts[k - 1], starts[k] - starts[k - 1]));
      return Value::string(std::move(out));
    }
    Array items = items_of(v);
    std::reverse(items.begin(), items.end());
    return Value::array(std::move(items));
  }
  if (name == "int") {
    if (v.is_int()) return Value::integer(v.as_int());
    if (v.kind() == Value::Kind::floating) return Value::integer(static_cast<int64_t>(v.as_double()));
    if (v.is_string()) {
      const std::string t = py_strip(v.str(), true, true, nullptr).text;
      char* end = nullptr;
      const long long x = std::strtoll(t.c_str(), &end, 10);
      if (!t.empty() && end && *end == '\0') return Value::integer(x);
    }
    return a0 ? *a0 : Value::integer(0);
  }
  if (name == "float") {
    if (v.is_number()) return Value::floating(v.as_double());
    if (v.is_string()) {
      const std::string t = py_strip(v.str(), true, true, nullptr).text;
      char* end = nullptr;
      const double x = std::strtod(t.c_str(), &end);
      if (!t.empty() && end && *end == '\0') return Value::floating(x);
    }
    return a0 ? *a0 : Value::floating(0.0);
  }
  if (name == "abs") {
    if (v.is_int()) return Value::integer(std::llabs(v.as_int()));
    if (v.is_number()) return Value::floating(std::fabs(v.as_double()));
    return Status::invalid_argument("line %d: bad operand type for abs(): '%s'", line, v.type_name().c_str());
  }
  if (name == "items") {
    if (!v.is_object()) return Status::invalid_argument("line %d: items needs a dict", line);
    return method(v, "items", Args{}, line);
  }
  if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
    const bool by_attr = name == "selectattr" || name == "rejectattr";
    const bool keep_true = name == "selectattr" || name == "select";
    size_t k = 0;
    const Value* attr = nullptr;
    if (by_attr) {
      if (a.pos.empty() || !a.pos[0].is_string()) return Status::invalid_argument("line %d: %s needs an attribute name", line, name.c_str());
      attr = &a.pos[0];
      k = 1;
    }
    Array out;
    for (const Value& item : items_of(v)) {
      Value x = item;
      if (attr) {
        const Value* f = item.find(attr->str().text);
        x = f ? *f : Value::undefined(attr->str().text);
      }
      bool r = truthy(x);
      if (a.pos.size() > k) {
        if (!a.pos[k].is_string()) return Status::invalid_argument("line %d: %s needs a test name", line, name.c_str());
        Args targs;
        targs.pos.assign(a.pos.begin() + static_cast<ptrdiff_t>(k + 1), a.pos.end());
        KESTREL_TRY_ASSIGN(r, test(a.pos[k].str().text, x, targs, line));
      }
      if (r == keep_true) out.push_back(item);
    }
    return Value::array(std::move(out));
  }
  if (name == "map") {
    const Value* attr = a.get(99, "attribute");
    Array out;
    for (const Value& item : items_of(v)) {
      if (attr && attr->is_string()) {
        const Value* f = item.find(attr->str().text);
        const Value* def = a.get(99, "default");
        out.push_back(f ? *f : def ? *def : Value::undefined(attr->str().text));
      } else if (!a.pos.empty() && a.pos[0].is_string()) {
        Args fargs;
        fargs.pos.assign(a.pos.begin() + 1, a.pos.end());
        KESTREL_TRY_ASSIGN(Value y, filter(a.pos[0].str().text, item, fargs, line));
        out.push_back(std::move(y));
      } else {
        return Status::invalid_argument("line %d: map needs a filter name or attribute=", line);
      }
    }
    return Value::array(std::move(out));
  }
  return Status::unsupported("line %d: the filter '%s' is not supported", line, name.c_str());
}

}  // namespace kestrel::jinja
