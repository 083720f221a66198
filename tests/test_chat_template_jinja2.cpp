// kestrel's Jinja interpreter against Python's jinja2 (Debian python3-jinja2),
// set up as Hugging Face renders chat templates (tests/data/chat/render_jinja2.py):
// every fixture template in tests/data/chat/templates (together they use every
// supported construct) and every built-in template, over the message lists of
// tests/data/chat/messages.json, with and without the generation prompt. The
// outputs must be equal byte for byte; where jinja2 raises, kestrel must fail too.
// SKIP when python3 or jinja2 is missing.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/chat/builtin_templates.h"
#include "runtime/chat/jinja.h"
#include "tests/reduced_sweep.h"

using namespace kestrel;
using json = nlohmann::json;

namespace {

const std::string kData = std::string(KESTREL_SOURCE_DIR) + "/tests/data/chat/";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Source {
  std::string name, text;
};

std::vector<Source> templates() {
  std::vector<Source> out;
  std::vector<std::string> names;
  if (DIR* d = opendir((kData + "templates").c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n.size() > 6 && n.compare(n.size() - 6, 6, ".jinja") == 0) names.push_back(n);
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  for (const auto& n : names) out.push_back({n, read_file(kData + "templates/" + n)});
  for (std::string_view n : chat::builtin_names())
    out.push_back({"built-in " + std::string(n), std::string(chat::builtin_template(n))});
  return out;
}

jinja::Value to_value(const json& j) {
  if (j.is_string()) return jinja::Value::content(j.get<std::string>());
  if (j.is_boolean()) return jinja::Value::boolean(j.get<bool>());
  if (j.is_number_integer()) return jinja::Value::integer(j.get<int64_t>());
  if (j.is_number()) return jinja::Value::floating(j.get<double>());
  if (j.is_null()) return jinja::Value::none();
  if (j.is_array()) {
    jinja::Array a;
    for (const auto& x : j) a.push_back(to_value(x));
    return jinja::Value::array(std::move(a));
  }
  jinja::Object o;
  for (const auto& [k, v] : j.items()) o.emplace_back(k, to_value(v));
  return jinja::Value::object(std::move(o));
}

// Runs the jinja2 helper on the cases; false (with why) when it cannot run.
bool run_jinja2(const json& cases, json& results, std::string& why) {
  char in_path[] = "/tmp/kestrel-jinja2-in-XXXXXX";
  char out_path[] = "/tmp/kestrel-jinja2-out-XXXXXX";
  const int fi = mkstemp(in_path), fo = mkstemp(out_path);
  if (fi < 0 || fo < 0) { why = "mkstemp failed"; return false; }
  close(fi);
  close(fo);
  { std::ofstream(in_path, std::ios::binary) << cases.dump(); }
  const std::string cmd = "python3 '" + kData + "render_jinja2.py' < " + in_path + " > " + out_path + " 2>/dev/null";
  const int rc = std::system(cmd.c_str());
  const std::string out = read_file(out_path);
  unlink(in_path);
  unlink(out_path);
  const int code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  if (code == 77) { why = "python3-jinja2 is not installed"; return false; }
  if (code == 127) { why = "python3 is not installed"; return false; }
  if (code != 0) { why = "the jinja2 helper failed (exit " + std::to_string(code) + ")"; return false; }
  results = json::parse(out);
  return true;
}

}  // namespace

TEST_CASE("templates render byte for byte as jinja2 renders them", "[chat][jinja]") {
  const json corpus = json::parse(read_file(kData + "messages.json"));
  REQUIRE(corpus.size() >= 10);
  const std::vector<Source> srcs = templates();
  REQUIRE(srcs.size() >= 9);
  json cases = json::array();
  struct Ref {
    size_t tmpl, msgs;
    bool gen;
  };
  std::vector<Ref> refs;
  for (size_t t = 0; t < srcs.size(); ++t) {
    for (size_t m = 0; m < corpus.size(); ++m) {
      for (bool gen : {false, true}) {
        cases.push_back({{"template", srcs[t].text}, {"messages", corpus[m]}, {"add_generation_prompt", gen},
                         {"bos_token", "<s>"}, {"eos_token", "</s>"}});
        refs.push_back({t, m, gen});
      }
    }
  }
  json expected;
  std::string why;
  if (!run_jinja2(cases, expected, why)) {
    WARN("SKIP: " << why);
    return;
  }
  REQUIRE(expected.size() == cases.size());
  size_t n_equal = 0, n_both_fail = 0;
  for (size_t i = 0; i < refs.size(); ++i) {
    const Ref& r = refs[i];
    auto tmpl = jinja::Template::parse(srcs[r.tmpl].text);
    INFO("template " << srcs[r.tmpl].name << ", messages #" << r.msgs << ", add_generation_prompt " << r.gen);
    REQUIRE(tmpl.ok());
    jinja::Object vars = {{"messages", to_value(corpus[r.msgs])},
                          {"add_generation_prompt", jinja::Value::boolean(r.gen)},
                          {"bos_token", jinja::Value::text("<s>")},
                          {"eos_token", jinja::Value::text("</s>")}};
    auto got = (*tmpl)->render(vars);
    const json& want = expected[i];
    if (!want["ok"].get<bool>()) {
      INFO("jinja2: " << want["error"].get<std::string>());
      CHECK_FALSE(got.ok());
      n_both_fail += !got.ok();
      continue;
    }
    INFO("kestrel error: " << got.status().to_string());
    REQUIRE(got.ok());
    const std::string want_text = want["text"].get<std::string>();
    CHECK(got->text == want_text);
    n_equal += got->text == want_text;
  }
  WARN(n_equal << " renderings equal, " << n_both_fail << " refused by both, of " << refs.size());
  CHECK(n_equal > refs.size() / 2);
}

TEST_CASE("unsupported constructs and template errors name what failed", "[chat][jinja]") {
  auto parse_error = [](const char* src) {
    auto t = jinja::Template::parse(src);
    return t.ok() ? std::string() : t.status().to_string();
  };
  CHECK_THAT(parse_error("{% include 'x' %}"), Catch::Contains("'include' statement is not supported"));
  CHECK_THAT(parse_error("{% if x %}"), Catch::Contains("expected 'elif' or 'else' or 'endif'"));
  CHECK_THAT(parse_error("{{ 'abc }}"), Catch::Contains("unclosed string"));
  CHECK_THAT(parse_error("{{ x +* }}"), Catch::Contains("expected an expression"));
  CHECK_THAT(parse_error(("{{ " + std::string(1000, '(') + " }}").c_str()), Catch::Contains("nested deeper"));
  CHECK_THAT(parse_error(("{{ " + std::string(1000, '-') + "1 }}").c_str()), Catch::Contains("nested too deeply"));
  auto render_error = [](const char* src) {
    auto t = jinja::Template::parse(src);
    REQUIRE(t.ok());
    auto r = (*t)->render({});
    return r.ok() ? std::string() : r.status().to_string();
  };
  CHECK_THAT(render_error("{{ 'x' | wordwrap }}"), Catch::Contains("filter 'wordwrap' is not supported"));
  CHECK_THAT(render_error("{{ 'a'.zfill(3) }}"), Catch::Contains("method 'zfill'"));
  CHECK_THAT(render_error("{{ 1 is prime }}"), Catch::Contains("test 'prime' is not supported"));
  CHECK_THAT(render_error("{{ raise_exception('bad roles') }}"), Catch::Contains("bad roles"));
  CHECK_THAT(render_error("{{ x.y }}"), Catch::Contains("'x' is undefined"));
  CHECK_THAT(render_error("{{ 1 + 'a' }}"), Catch::Contains("unsupported operand"));
  auto busy = jinja::Template::parse("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
  REQUIRE(busy.ok());
  (*busy)->max_steps = 100000;
  auto r = (*busy)->render({});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.status().to_string(), Catch::Contains("step limit"));
  auto wide = jinja::Template::parse("{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}");
  REQUIRE(wide.ok());
  (*wide)->max_output_bytes = 1 << 20;
  r = (*wide)->render({});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::too_long);
}

TEST_CASE("message strings stay tainted through the template", "[chat][jinja]") {
  auto t = jinja::Template::parse("{{ '<|a|>' + m | trim + '<|b|>' }}{{ m[1:3] }}{{ 'x' ~ m.upper() }}");
  REQUIRE(t.ok());
  auto r = (*t)->render({{"m", jinja::Value::content(" hey ")}});
  REQUIRE(r.ok());
  REQUIRE(r->text == "<|a|>hey<|b|>hex HEY ");
  const std::string flags = [&] {
    std::string f;
    for (size_t i = 0; i < r->text.size(); ++i) f += (i < r->taint.size() && r->taint[i]) ? '1' : '0';
    return f;
  }();
  CHECK(flags == std::string("00000") + "111" + "00000" + "11" + "0" + "11111");
}

TEST_CASE("mutated templates end in a result or a status, never a crash", "[chat][jinja]") {
  // A GGUF's template is untrusted input (BAD-INPUTS.md): cut, spliced and
  // truncated versions of every fixture and built-in must parse and render to
  // text or to an error with a message (under the asan preset, with no
  // sanitizer report).
  std::vector<std::string> seeds;
  for (const Source& s : templates()) seeds.push_back(s.text);
  static const char* const kFrags[] = {"{{", "}}", "{%", "%}", "{#", "#}", "-", "+", "'", "\"", "(", ")", "[",
                                       "]", "|", ".", ":", "\\", "\n", " ", "loop", "messages", "for", "endfor",
                                       "if", "endif", "not", "is", "in", "~", "*", "**", "//", "0", "-1", "set",
                                       "macro", "9999999999999999999999", "raw", "endraw"};
  jinja::Array msgs = {
      jinja::Value::object({{"role", jinja::Value::content("user")}, {"content", jinja::Value::content("hi {{x}}")}}),
      jinja::Value::object({{"role", jinja::Value::content("assistant")}, {"content", jinja::Value::content("")}})};
  std::mt19937 rng(13);
  const int n = kestrel::test::reduced_sweep() ? 1500 : 6000;
  int rendered = 0, refused = 0;
  for (int it = 0; it < n; ++it) {
    std::string src = seeds[rng() % seeds.size()];
    for (int k = 0, nm = 1 + static_cast<int>(rng() % 4); k < nm && !src.empty(); ++k) {
      const size_t p = rng() % src.size();
      switch (rng() % 3) {
        case 0: src.erase(p, 1 + rng() % 8); break;
        case 1: src.insert(p, kFrags[rng() % (sizeof kFrags / sizeof *kFrags)]); break;
        default: src.resize(p); break;
      }
    }
    auto t = jinja::Template::parse(src);
    if (!t.ok()) {
      CHECK_FALSE(t.status().message().empty());
      ++refused;
      continue;
    }
    (*t)->max_steps = 200000;
    auto r = (*t)->render({{"messages", jinja::Value::array(msgs)}, {"add_generation_prompt", jinja::Value::boolean(true)},
                           {"bos_token", jinja::Value::text("<s>")}});
    if (r.ok()) {
      ++rendered;
    } else {
      CHECK_FALSE(r.status().message().empty());
      ++refused;
    }
  }
  CHECK(rendered > n / 20);  // the mutations still leave many templates that work
  CHECK(refused > n / 20);
}
