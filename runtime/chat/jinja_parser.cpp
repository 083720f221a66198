// Jinja parser: statements by recursive descent over the lexer's segments,
// expressions by jinja2's precedence (condexpr < or < and < not < compare <
// + - < ~ < * / // % < ** < unary < postfix / filters / tests).
#include "runtime/chat/jinja_parser.h"

#include "runtime/chat/jinja_lexer.h"

namespace kestrel::jinja {
namespace {

Node node(NodeKind kind, int line) {
  Node n;
  n.kind = kind;
  n.line = line;
  return n;
}

ExprPtr make(ExprKind kind, int line, std::string name = {}) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  e->name = std::move(name);
  return e;
}

// Expression parser over one tag's tokens.
class ExprParser {
 public:
  explicit ExprParser(const std::vector<Token>& toks) : t_(toks) {}

  const Token& peek(size_t k = 0) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  bool at_end() const { return peek().type == Token::Type::end; }
  bool is_op(const char* op, size_t k = 0) const { return peek(k).type == Token::Type::op && peek(k).text == op; }
  bool is_name(const char* n, size_t k = 0) const { return peek(k).type == Token::Type::name && peek(k).text == n; }
  const Token& next() { return t_[std::min(i_++, t_.size() - 1)]; }
  int line() const { return peek().line; }

  Status expect_op(const char* op) {
    if (!is_op(op)) return error(std::string("expected '") + op + "'");
    ++i_;
    return {};
  }
  Status expect_end() {
    if (!at_end()) return error("unexpected '" + peek().text + "'");
    return {};
  }
  Status error(const std::string& what) const {
    const std::string near = at_end() ? std::string("end of tag") : "'" + peek().text + "'";
    return Status::invalid_argument("line %d: %s (near %s)", line(), what.c_str(), near.c_str());
  }
  Expected<std::string> name() {
    if (peek().type != Token::Type::name) return error("expected a name");
    return next().text;
  }

  // Every recursion of the expression grammar passes here or through a prefix
  // operator; both count depth so that a hostile template cannot exhaust the stack.
  Expected<ExprPtr> expression() {
    if (++depth_ > kMaxDepth) return error("expression nested too deeply");
    auto e = condexpr();
    --depth_;
    return e;
  }

  Expected<ExprPtr> condexpr() {
    KESTREL_TRY_ASSIGN(ExprPtr e, or_expr());
    while (is_name("if")) {
      const int ln = line();
      ++i_;
      auto c = make(ExprKind::cond, ln);
      KESTREL_TRY_ASSIGN(ExprPtr cond, or_expr());
      c->kids.push_back(std::move(e));
      c->kids.push_back(std::move(cond));
      if (is_name("else")) {
        ++i_;
        KESTREL_TRY_ASSIGN(ExprPtr other, condexpr());
        c->kids.push_back(std::move(other));
      }
      e = std::move(c);
    }
    return e;
  }

  Expected<ExprPtr> binary_chain(Expected<ExprPtr> (ExprParser::*sub)(), std::initializer_list<const char*> ops,
                                 bool names) {
    KESTREL_TRY_ASSIGN(ExprPtr e, (this->*sub)());
    while (true) {
      const char* hit = nullptr;
      for (const char* op : ops)
        if (names ? is_name(op) : is_op(op)) hit = op;
      if (!hit) return e;
      const int ln = line();
      ++i_;
      KESTREL_TRY_ASSIGN(ExprPtr r, (this->*sub)());
      auto b = make(ExprKind::binary, ln, hit);
      b->kids.push_back(std::move(e));
      b->kids.push_back(std::move(r));
      e = std::move(b);
    }
  }

  Expected<ExprPtr> or_expr() { return binary_chain(&ExprParser::and_expr, {"or"}, true); }
  Expected<ExprPtr> and_expr() { return binary_chain(&ExprParser::not_expr, {"and"}, true); }

  Expected<ExprPtr> not_expr() {
    if (is_name("not")) {
      const int ln = line();
      ++i_;
      if (++depth_ > kMaxDepth) return error("expression nested too deeply");
      KESTREL_TRY_ASSIGN(ExprPtr x, not_expr());
      --depth_;
      auto u = make(ExprKind::unary, ln, "not");
      u->kids.push_back(std::move(x));
      return u;
    }
    return compare();
  }

  Expected<ExprPtr> compare() {
    KESTREL_TRY_ASSIGN(ExprPtr e, math1());
    while (true) {
      std::string op;
      const int ln = line();
      if (is_op("==") || is_op("!=") || is_op("<") || is_op(">") || is_op("<=") || is_op(">=")) {
        op = next().text;
      } else if (is_name("in")) {
        ++i_;
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        i_ += 2;
        op = "not in";
      } else {
        return e;
      }
      KESTREL_TRY_ASSIGN(ExprPtr r, math1());
      auto b = make(ExprKind::binary, ln, op);
      b->kids.push_back(std::move(e));
      b->kids.push_back(std::move(r));
      e = std::move(b);
    }
  }

  Expected<ExprPtr> math1() { return binary_chain(&ExprParser::concat, {"+", "-"}, false); }
  Expected<ExprPtr> concat() { return binary_chain(&ExprParser::math2, {"~"}, false); }
  Expected<ExprPtr> math2() { return binary_chain(&ExprParser::pow, {"*", "/", "//", "%"}, false); }
  Expected<ExprPtr> pow() { return binary_chain(&ExprParser::unary_filtered, {"**"}, false); }
  Expected<ExprPtr> unary_filtered() { return unary(true); }

  Expected<ExprPtr> unary(bool with_filter) {
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const int ln = line();
      const std::string op = next().text;
      if (++depth_ > kMaxDepth) return error("expression nested too deeply");
      KESTREL_TRY_ASSIGN(ExprPtr x, unary(false));
      --depth_;
      e = make(ExprKind::unary, ln, op);
      e->kids.push_back(std::move(x));
    } else {
      KESTREL_TRY_ASSIGN(e, primary());
    }
    KESTREL_TRY_ASSIGN(e, postfix(std::move(e)));
    if (with_filter) { KESTREL_TRY_ASSIGN(e, filters(std::move(e))); }
    return e;
  }

  Expected<ExprPtr> primary() {
    const Token& tk = peek();
    const int ln = tk.line;
    switch (tk.type) {
      case Token::Type::name: {
        ++i_;
        auto lit = make(ExprKind::literal, ln);
        if (tk.text == "true" || tk.text == "True") { lit->value = Value::boolean(true); return lit; }
        if (tk.text == "false" || tk.text == "False") { lit->value = Value::boolean(false); return lit; }
        if (tk.text == "none" || tk.text == "None") { lit->value = Value::none(); return lit; }
        return make(ExprKind::name, ln, tk.text);
      }
      case Token::Type::string: {
        std::string s;
        while (peek().type == Token::Type::string) s += next().text;  // adjacent literals join
        auto lit = make(ExprKind::literal, ln);
        lit->value = Value::text(std::move(s));
        return lit;
      }
      case Token::Type::integer: {
        ++i_;
        auto lit = make(ExprKind::literal, ln);
        lit->value = Value::integer(tk.i);
        return lit;
      }
      case Token::Type::floating: {
        ++i_;
        auto lit = make(ExprKind::literal, ln);
        lit->value = Value::floating(tk.f);
        return lit;
      }
      case Token::Type::op: {
        if (tk.text == "(") {
          ++i_;
          if (is_op(")")) { ++i_; return make(ExprKind::list, ln, "tuple"); }
          KESTREL_TRY_ASSIGN(ExprPtr e, expression());
          if (is_op(",")) {  // a tuple: evaluated as a list
            auto tup = make(ExprKind::list, ln, "tuple");
            tup->kids.push_back(std::move(e));
            while (is_op(",")) {
              ++i_;
              if (is_op(")")) break;
              KESTREL_TRY_ASSIGN(ExprPtr x, expression());
              tup->kids.push_back(std::move(x));
            }
            e = std::move(tup);
          }
          KESTREL_TRY(expect_op(")"));
          return e;
        }
        if (tk.text == "[") {
          ++i_;
          auto l = make(ExprKind::list, ln);
          while (!is_op("]")) {
            KESTREL_TRY_ASSIGN(ExprPtr x, expression());
            l->kids.push_back(std::move(x));
            if (!is_op(",")) break;
            ++i_;
          }
          KESTREL_TRY(expect_op("]"));
          return l;
        }
        if (tk.text == "{") {
          ++i_;
          auto d = make(ExprKind::dict, ln);
          while (!is_op("}")) {
            KESTREL_TRY_ASSIGN(ExprPtr k, expression());
            KESTREL_TRY(expect_op(":"));
            KESTREL_TRY_ASSIGN(ExprPtr v, expression());
            d->kids.push_back(std::move(k));
            d->kids.push_back(std::move(v));
            if (!is_op(",")) break;
            ++i_;
          }
          KESTREL_TRY(expect_op("}"));
          return d;
        }
        return error("expected an expression");
      }
      case Token::Type::end: return error("expected an expression");
    }
    return error("expected an expression");
  }

  // Call arguments after "(": positional, then name=value.
  Status call_args(Expr& call) {
    KESTREL_TRY(expect_op("("));
    std::vector<ExprPtr> pos, kw;
    while (!is_op(")")) {
      if (peek().type == Token::Type::name && is_op("=", 1)) {
        call.kw_names.push_back(next().text);
        ++i_;
        KESTREL_TRY_ASSIGN(ExprPtr v, expression());
        kw.push_back(std::move(v));
      } else {
        if (!kw.empty()) return error("positional argument after a keyword argument");
        KESTREL_TRY_ASSIGN(ExprPtr v, expression());
        pos.push_back(std::move(v));
      }
      if (!is_op(",")) break;
      ++i_;
    }
    KESTREL_TRY(expect_op(")"));
    for (auto& p : pos) call.kids.push_back(std::move(p));
    for (auto& k : kw) call.kids.push_back(std::move(k));
    return {};
  }

  Expected<ExprPtr> postfix(ExprPtr e) {
    while (true) {
      const int ln = line();
      if (is_op(".")) {
        ++i_;
        std::string attr;
        if (peek().type == Token::Type::integer) attr = next().text;
        else { KESTREL_TRY_ASSIGN(attr, name()); }
        auto a = make(ExprKind::attr, ln, attr);
        a->kids.push_back(std::move(e));
        e = std::move(a);
      } else if (is_op("[")) {
        ++i_;
        ExprPtr parts[3];
        bool is_slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!is_op(":") && !is_op("]")) { KESTREL_TRY_ASSIGN(parts[k], expression()); }
          if (k < 2 && is_op(":")) { ++i_; is_slice = true; continue; }
          break;
        }
        KESTREL_TRY(expect_op("]"));
        if (is_slice) {
          auto s = make(ExprKind::slice, ln);
          s->kids.push_back(std::move(e));
          for (auto& p : parts) {
            if (!p) { p = make(ExprKind::literal, ln); }  // undefined: the default bound
            s->kids.push_back(std::move(p));
          }
          e = std::move(s);
        } else {
          if (!parts[0]) return error("empty subscript");
          auto it = make(ExprKind::item, ln);
          it->kids.push_back(std::move(e));
          it->kids.push_back(std::move(parts[0]));
          e = std::move(it);
        }
      } else if (is_op("(")) {
        auto c = make(ExprKind::call, ln);
        c->kids.push_back(std::move(e));
        KESTREL_TRY(call_args(*c));
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  Expected<ExprPtr> filters(ExprPtr e) {
    while (true) {
      const int ln = line();
      if (is_op("|")) {
        ++i_;
        KESTREL_TRY_ASSIGN(std::string fname, dotted_name());
        auto f = make(ExprKind::filter, ln, fname);
        f->kids.push_back(std::move(e));
        if (is_op("(")) KESTREL_TRY(call_args(*f));
        e = std::move(f);
      } else if (is_name("is")) {
        ++i_;
        bool neg = false;
        if (is_name("not")) { ++i_; neg = true; }
        KESTREL_TRY_ASSIGN(std::string tname, dotted_name());
        auto t = make(ExprKind::test, ln, tname);
        t->negated = neg;
        t->kids.push_back(std::move(e));
        if (is_op("(")) {
          KESTREL_TRY(call_args(*t));
        } else if (starts_test_arg()) {
          KESTREL_TRY_ASSIGN(ExprPtr arg, primary());
          KESTREL_TRY_ASSIGN(arg, postfix(std::move(arg)));
          t->kids.push_back(std::move(arg));
        }
        e = std::move(t);
      } else if (is_op("(")) {
        auto c = make(ExprKind::call, ln);
        c->kids.push_back(std::move(e));
        KESTREL_TRY(call_args(*c));
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  // jinja2: a test takes one bare argument unless the next token ends the expression.
  bool starts_test_arg() const {
    const Token& tk = peek();
    if (tk.type == Token::Type::string || tk.type == Token::Type::integer || tk.type == Token::Type::floating) return true;
    if (tk.type == Token::Type::op) return tk.text == "[" || tk.text == "{";
    if (tk.type == Token::Type::name) {
      for (const char* kw : {"else", "or", "and", "if", "in", "is", "not", "recursive"})
        if (tk.text == kw) return false;
      return true;
    }
    return false;
  }

  Expected<std::string> dotted_name() {
    KESTREL_TRY_ASSIGN(std::string n, name());
    while (is_op(".")) {
      ++i_;
      KESTREL_TRY_ASSIGN(std::string more, name());
      n += "." + more;
    }
    return n;
  }

  // Assignment targets: "a" or "a, b" or "(a, b)".
  Expected<std::vector<std::string>> targets() {
    std::vector<std::string> out;
    const bool paren = is_op("(");
    if (paren) ++i_;
    while (true) {
      KESTREL_TRY_ASSIGN(std::string n, name());
      out.push_back(n);
      if (!is_op(",")) break;
      ++i_;
    }
    if (paren) KESTREL_TRY(expect_op(")"));
    return out;
  }

 private:
  static constexpr int kMaxDepth = 256;
  const std::vector<Token>& t_;
  size_t i_ = 0;
  int depth_ = 0;
};

class Parser {
 public:
  explicit Parser(std::vector<Segment> segs) : segs_(std::move(segs)) {}

  // Parses nodes until a statement whose first word is in `ends` (returned
  // in *end_word, with the segment index left on it) or the end of input.
  Status body(Body& out, std::initializer_list<const char*> ends, std::string* end_word) {
    while (pos_ < segs_.size()) {
      Segment& seg = segs_[pos_];
      if (seg.type == Segment::Type::text) {
        Node n = node(NodeKind::text, seg.line);
        n.text = std::move(seg.text);
        out.push_back(std::move(n));
        ++pos_;
        continue;
      }
      ExprParser ep(seg.tokens);
      if (seg.type == Segment::Type::output) {
        Node n = node(NodeKind::output, seg.line);
        KESTREL_TRY_ASSIGN(n.expr, ep.expression());
        KESTREL_TRY(ep.expect_end());
        out.push_back(std::move(n));
        ++pos_;
        continue;
      }
      KESTREL_TRY_ASSIGN(std::string word, ep.name());
      for (const char* e : ends) {
        if (word == e) {
          if (end_word) *end_word = word;
          return {};
        }
      }
      ++pos_;
      // Statement nesting bounds the parser's (and the renderer's) recursion.
      if (++nesting_ > kMaxNesting) return Status::unsupported("line %d: statements nested deeper than %d", seg.line, kMaxNesting);
      Status st = statement(word, ep, seg.line, out);
      --nesting_;
      KESTREL_TRY(std::move(st));
    }
    if (ends.size() > 0) {
      std::string want;
      for (const char* e : ends) want += std::string(want.empty() ? "" : " or ") + "'" + e + "'";
      return Status::invalid_argument("unexpected end of template: expected %s", want.c_str());
    }
    return {};
  }

 private:
  // The statement after the end word of a block: checks it is a bare tag.
  Status close(const char* word) {
    ExprParser ep(segs_[pos_].tokens);
    (void)ep.next();
    if (!ep.at_end()) return ep.error(std::string("unexpected text after '") + word + "'");
    ++pos_;
    return {};
  }

  Status statement(const std::string& word, ExprParser& ep, int line, Body& out) {
    Node n = node(NodeKind::text, line);
    if (word == "if") {
      n.kind = NodeKind::if_;
      KESTREL_TRY_ASSIGN(ExprPtr cond, ep.expression());
      KESTREL_TRY(ep.expect_end());
      n.conds.push_back(std::move(cond));
      while (true) {
        Body b;
        std::string end;
        KESTREL_TRY(body(b, {"elif", "else", "endif"}, &end));
        n.bodies.push_back(std::move(b));
        ExprParser tail(segs_[pos_].tokens);
        (void)tail.next();
        if (end == "elif") {
          KESTREL_TRY_ASSIGN(ExprPtr c, tail.expression());
          KESTREL_TRY(tail.expect_end());
          n.conds.push_back(std::move(c));
          ++pos_;
          continue;
        }
        if (end == "else") {
          KESTREL_TRY(close("else"));
          Body eb;
          KESTREL_TRY(body(eb, {"endif"}, &end));
          n.bodies.push_back(std::move(eb));
        }
        KESTREL_TRY(close("endif"));
        break;
      }
    } else if (word == "for") {
      n.kind = NodeKind::for_;
      KESTREL_TRY_ASSIGN(n.targets, ep.targets());
      if (!ep.is_name("in")) return ep.error("expected 'in'");
      (void)ep.next();
      // The iterable stops before a filter "if": parse without the condexpr level.
      KESTREL_TRY_ASSIGN(n.expr, ep.or_expr());
      if (ep.is_name("if")) {
        (void)ep.next();
        KESTREL_TRY_ASSIGN(n.filter, ep.expression());
      }
      if (ep.is_name("recursive")) return Status::unsupported("line %d: recursive for loops are not supported", line);
      KESTREL_TRY(ep.expect_end());
      std::string end;
      KESTREL_TRY(body(n.body, {"else", "endfor"}, &end));
      if (end == "else") {
        KESTREL_TRY(close("else"));
        KESTREL_TRY(body(n.else_body, {"endfor"}, &end));
      }
      KESTREL_TRY(close("endfor"));
    } else if (word == "set") {
      n.kind = NodeKind::set;
      KESTREL_TRY_ASSIGN(n.targets, ep.targets());
      if (n.targets.size() == 1 && ep.is_op(".")) {
        (void)ep.next();
        KESTREL_TRY_ASSIGN(n.attr, ep.name());
      }
      if (ep.is_op("=")) {
        (void)ep.next();
        KESTREL_TRY_ASSIGN(n.expr, ep.expression());
        if (ep.is_op(",")) {  // set a, b = x, y
          auto tup = make(ExprKind::list, line, "tuple");
          tup->kids.push_back(std::move(n.expr));
          while (ep.is_op(",")) {
            (void)ep.next();
            KESTREL_TRY_ASSIGN(ExprPtr x, ep.expression());
            tup->kids.push_back(std::move(x));
          }
          n.expr = std::move(tup);
        }
        KESTREL_TRY(ep.expect_end());
      } else {
        KESTREL_TRY(ep.expect_end());
        if (n.targets.size() != 1 || !n.attr.empty()) return ep.error("a block set takes one name");
        std::string end;
        KESTREL_TRY(body(n.body, {"endset"}, &end));
        KESTREL_TRY(close("endset"));
      }
    } else if (word == "macro") {
      n.kind = NodeKind::macro;
      n.macro = std::make_shared<MacroDef>();
      KESTREL_TRY_ASSIGN(n.macro->name, ep.name());
      KESTREL_TRY(ep.expect_op("("));
      while (!ep.is_op(")")) {
        KESTREL_TRY_ASSIGN(std::string p, ep.name());
        n.macro->params.push_back(p);
        ExprPtr def;
        if (ep.is_op("=")) {
          (void)ep.next();
          KESTREL_TRY_ASSIGN(def, ep.expression());
        }
        n.macro->defaults.push_back(std::move(def));
        if (!ep.is_op(",")) break;
        (void)ep.next();
      }
      KESTREL_TRY(ep.expect_op(")"));
      KESTREL_TRY(ep.expect_end());
      std::string end;
      KESTREL_TRY(body(n.macro->body, {"endmacro"}, &end));
      KESTREL_TRY(close("endmacro"));
    } else if (word == "break" || word == "continue") {
      n.kind = word == "break" ? NodeKind::break_ : NodeKind::continue_;
      KESTREL_TRY(ep.expect_end());
    } else if (word == "generation") {  // Hugging Face's assistant-mask marker: renders its body
      n.kind = NodeKind::block;
      KESTREL_TRY(ep.expect_end());
      std::string end;
      KESTREL_TRY(body(n.body, {"endgeneration"}, &end));
      KESTREL_TRY(close("endgeneration"));
    } else {
      return Status::unsupported("line %d: the '%s' statement is not supported", line, word.c_str());
    }
    out.push_back(std::move(n));
    return {};
  }

  static constexpr int kMaxNesting = 128;
  std::vector<Segment> segs_;
  size_t pos_ = 0;
  int nesting_ = 0;
};

}  // namespace

Expected<Body> parse(std::string_view source) {
  KESTREL_TRY_ASSIGN(std::vector<Segment> segs, lex(source));
  Parser p(std::move(segs));
  Body out;
  KESTREL_TRY(p.body(out, {}, nullptr));
  return out;
}

}  // namespace kestrel::jinja
