// Values of kestrel's Jinja interpreter: the Python-like data a chat template
// works on (none, bool, int, float, str, list, dict, callables), with Python's
// str(), repr(), truthiness and equality, and Hugging Face's tojson.
//
// Strings carry a per-byte taint: bytes that came from message data (roles,
// content) are tainted, bytes from the template itself are not. The chat
// tokenizer parses special tokens only in untainted bytes, so a user who types
// "<|im_end|>" gets text, while the template's own "<|im_end|>" is a token.
//
//   Value msg = Value::object({{"role", Value::content("user")}, {"content", Value::content("hi")}});
//   std::string s = to_str(msg).text;   // "{'role': 'user', 'content': 'hi'}"
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "platform/status.h"

namespace kestrel::jinja {

// A string with one taint flag per byte (empty flags: nothing tainted).
struct TStr {
  std::string text;
  std::vector<uint8_t> taint;  // empty, or text.size() flags; 1: from message data

  static TStr clean(std::string s) { return {std::move(s), {}}; }
  static TStr tainted(std::string s) {
    TStr t{std::move(s), {}};
    t.taint.assign(t.text.size(), 1);
    return t;
  }
  bool any_taint() const;
  void append(const TStr& other);
  void append(std::string_view clean_text);
  // Bytes [pos, pos + n) with their flags.
  TStr substr(size_t pos, size_t n) const;
  // The flags of a derived string: all set when any byte here is tainted.
  TStr derived(std::string s) const { return any_taint() ? tainted(std::move(s)) : clean(std::move(s)); }
};

class Value;
using Array = std::vector<Value>;
using Object = std::vector<std::pair<std::string, Value>>;  // insertion order, as Python dicts

struct MacroDef;  // jinja_ast.h
enum class Builtin : uint8_t { none, range, raise_exception, namespace_ };

class Value {
 public:
  enum class Kind : uint8_t { undefined, none, boolean, integer, floating, string, array, object, callable };

  Value() = default;  // undefined
  static Value none() { Value v; v.kind_ = Kind::none; return v; }
  static Value boolean(bool b) { Value v; v.kind_ = Kind::boolean; v.i_ = b; return v; }
  static Value integer(int64_t i) { Value v; v.kind_ = Kind::integer; v.i_ = i; return v; }
  static Value floating(double f) { Value v; v.kind_ = Kind::floating; v.f_ = f; return v; }
  static Value string(TStr s);
  static Value text(std::string s) { return string(TStr::clean(std::move(s))); }      // template text
  static Value content(std::string s) { return string(TStr::tainted(std::move(s))); }  // message data
  static Value array(Array a);
  static Value object(Object o, bool mutable_namespace = false);
  static Value macro(const MacroDef* def);
  static Value builtin(Builtin b);
  // An undefined value that remembers the name or attribute it stands for.
  static Value undefined(std::string hint) { Value v; v.hint_ = std::make_shared<std::string>(std::move(hint)); return v; }

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::undefined; }
  bool is_none() const { return kind_ == Kind::none; }
  bool is_bool() const { return kind_ == Kind::boolean; }
  bool is_int() const { return kind_ == Kind::integer || kind_ == Kind::boolean; }  // Python: bool is an int
  bool is_number() const { return is_int() || kind_ == Kind::floating; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_array() const { return kind_ == Kind::array; }
  bool is_object() const { return kind_ == Kind::object; }
  bool is_callable() const { return kind_ == Kind::callable; }
  bool is_namespace() const { return kind_ == Kind::object && namespace_; }

  bool as_bool() const { return i_ != 0; }
  int64_t as_int() const { return i_; }
  double as_double() const { return kind_ == Kind::floating ? f_ : static_cast<double>(i_); }
  const TStr& str() const { return *s_; }
  const Array& arr() const { return *a_; }
  const Object& obj() const { return *o_; }
  Object& mutable_obj() const { return *o_; }  // namespaces only
  const MacroDef* macro_def() const { return macro_; }
  Builtin builtin_id() const { return builtin_; }
  const std::string& undefined_hint() const;

  // Dict lookup by key; nullptr when absent (or not a dict).
  const Value* find(std::string_view key) const;

  std::string type_name() const;  // Python's: "str", "int", "list", "dict", ...

 private:
  Kind kind_ = Kind::undefined;
  bool namespace_ = false;
  Builtin builtin_ = Builtin::none;
  int64_t i_ = 0;
  double f_ = 0.0;
  std::shared_ptr<TStr> s_;
  std::shared_ptr<Array> a_;
  std::shared_ptr<Object> o_;
  std::shared_ptr<std::string> hint_;
  const MacroDef* macro_ = nullptr;
};

bool truthy(const Value& v);
// Python ==, with Jinja's rule that two undefined values are equal.
bool equals(const Value& a, const Value& b);
// Python <: numbers with numbers, strings with strings, lists element-wise; else an error.
Expected<bool> less(const Value& a, const Value& b);

// str(v) as Jinja prints it ({{ v }}): strings as they are, None "None",
// True "True", lists and dicts as Python's repr; undefined "".
TStr to_str(const Value& v);
// Python's repr(v).
std::string repr(const Value& v);
// Python's repr of a float ("1.0", "0.1", "1e+16").
std::string float_repr(double f);
// json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=False), as
// Hugging Face's tojson filter; indent < 0: none. Error for undefined and callables.
Expected<std::string> to_json(const Value& v, int indent);

// UTF-8 code points of s as byte offsets (one past the last included).
std::vector<size_t> code_point_offsets(std::string_view s);

}  // namespace kestrel::jinja
