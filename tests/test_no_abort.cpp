// The library never aborts, exits, terminates, asserts or throws on input
// (../shared/BAD-INPUTS.md, "Errors" in ../shared/STYLE.md): this test scans
// every source file under platform/, ops/ and runtime/ for those calls, with
// comments and string literals removed, and fails on any use that is not in
// tests/no_abort_allowlist.txt (each entry gives a reason). static_assert is a
// compile-time check and is not matched; `catch` is how the C API keeps
// exceptions from crossing into C and is not matched either.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const fs::path kRoot = KESTREL_SOURCE_DIR;

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Replaces comments and the contents of string and character literals with
// spaces, keeping newlines (so line numbers stay right). Raw strings
// R"delim(...)delim" are handled too.
std::string strip_comments_and_strings(const std::string& s) {
  std::string out = s;
  size_t i = 0;
  const size_t n = s.size();
  auto blank = [&](size_t a, size_t b) {
    for (size_t k = a; k < b && k < n; ++k)
      if (out[k] != '\n') out[k] = ' ';
  };
  while (i < n) {
    if (s.compare(i, 2, "//") == 0) {
      size_t e = s.find('\n', i);
      if (e == std::string::npos) e = n;
      blank(i, e);
      i = e;
    } else if (s.compare(i, 2, "/*") == 0) {
      size_t e = s.find("*/", i + 2);
      e = e == std::string::npos ? n : e + 2;
      blank(i, e);
      i = e;
    } else if (s[i] == 'R' && i + 1 < n && s[i + 1] == '"' &&
               (i == 0 || !(std::isalnum(static_cast<unsigned char>(s[i - 1])) || s[i - 1] == '_'))) {
      const size_t open = s.find('(', i + 2);
      if (open == std::string::npos) break;
      const std::string close = ")" + s.substr(i + 2, open - i - 2) + "\"";
      size_t e = s.find(close, open);
      e = e == std::string::npos ? n : e + close.size();
      blank(i + 2, e - 1);
      i = e;
    } else if (s[i] == '"' || s[i] == '\'') {
      // A digit separator (1'000'000) is not a character literal.
      if (s[i] == '\'' && i > 0 && std::isxdigit(static_cast<unsigned char>(s[i - 1]))) {
        ++i;
        continue;
      }
      const char q = s[i];
      size_t e = i + 1;
      while (e < n && s[e] != q && s[e] != '\n') e += s[e] == '\\' ? 2 : 1;
      blank(i + 1, std::min(e, n));
      i = e + 1;
    } else {
      ++i;
    }
  }
  return out;
}

struct Finding {
  std::string path;  // relative to the source root
  int line;
  std::string text;  // trimmed original line
  std::string what;
};

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(" \t\r");
  return s.substr(a, b - a + 1);
}

// What must not appear in library code.
const std::vector<std::pair<std::string, std::regex>>& patterns() {
  static const std::vector<std::pair<std::string, std::regex>> p = {
      {"abort", std::regex(R"((^|[^\w.>:])(std::)?abort\s*\()")},
      {"exit", std::regex(R"((^|[^\w.>:])(std::)?(_?[eE]xit|quick_exit|_Exit)\s*\()")},
      {"terminate", std::regex(R"(\bstd::terminate\b|(^|[^\w.>:])terminate\s*\()")},
      {"assert", std::regex(R"((^|[^\w])assert\s*\()")},
      {"throw", std::regex(R"(\bthrow\b)")},
      {"trap", std::regex(R"(__builtin_trap|__trap\s*\()")},
  };
  return p;
}

std::vector<Finding> scan_text(const std::string& rel, const std::string& src) {
  std::vector<Finding> out;
  const std::string code = strip_comments_and_strings(src);
  std::istringstream cs(code), os(src);
  std::string cline, oline;
  int ln = 0;
  while (std::getline(cs, cline) && std::getline(os, oline)) {
    ++ln;
    for (const auto& [what, re] : patterns())
      if (std::regex_search(cline, re)) out.push_back({rel, ln, trim(oline), what});
  }
  return out;
}

bool is_source(const fs::path& p) {
  static const std::set<std::string> exts = {".cpp", ".cc", ".c", ".h", ".hpp", ".inl", ".inc", ".cu", ".cuh"};
  return exts.count(p.extension().string()) != 0;
}

}  // namespace

TEST_CASE("the scanner finds each forbidden call and ignores comments and strings", "[no_abort]") {
  const std::string bad =
      "void f() { abort(); }\n"
      "void g() { std::exit(1); }\n"
      "void h() { std::terminate(); }\n"
      "void i(int x) { assert(x > 0); }\n"
      "void j() { throw 1; }\n"
      "void k() { __builtin_trap(); }\n"
      "void l() { _Exit(2); }\n";
  const auto found = scan_text("x.cpp", bad);
  std::vector<std::string> whats;
  for (const auto& f : found) whats.push_back(f.what);
  CHECK(whats == std::vector<std::string>{"abort", "exit", "terminate", "assert", "throw", "trap", "exit"});

  const std::string fine =
      "// abort() here would be bad\n"
      "/* throw\n   exit(1) */\n"
      "static_assert(sizeof(int) == 4);\n"
      "const char* s = \"never throw or abort()\";\n"
      "const char* r = R\"x(assert(0))x\";\n"
      "int n = 1'000'000; char c = '\"';\n"
      "bool on_exit_path = x.exit(); try { g(); } catch (...) {}\n";
  const auto none = scan_text("y.cpp", fine);
  for (const auto& f : none) UNSCOPED_INFO(f.line << ": " << f.what << ": " << f.text);
  CHECK(none.empty());
}

TEST_CASE("library sources never abort, exit, terminate, assert or throw", "[no_abort]") {
  // The allow-list: path | trimmed line | reason.
  std::map<std::pair<std::string, std::string>, bool> allowed;  // -> used
  {
    std::ifstream f(kRoot / "tests" / "no_abort_allowlist.txt");
    REQUIRE(f.good());
    std::string line;
    int ln = 0;
    while (std::getline(f, line)) {
      ++ln;
      const std::string t = trim(line);
      if (t.empty() || t[0] == '#') continue;
      const size_t a = t.find(" | "), b = a == std::string::npos ? a : t.find(" | ", a + 3);
      INFO("no_abort_allowlist.txt:" << ln << ": " << t);
      REQUIRE(b != std::string::npos);           // three fields
      REQUIRE(!trim(t.substr(b + 3)).empty());   // a reason
      allowed[{trim(t.substr(0, a)), trim(t.substr(a + 3, b - a - 3))}] = false;
    }
  }

  size_t n_files = 0;
  std::vector<Finding> bad;
  for (const char* dir : {"platform", "ops", "runtime"}) {
    REQUIRE(fs::is_directory(kRoot / dir));
    for (const auto& e : fs::recursive_directory_iterator(kRoot / dir)) {
      if (!e.is_regular_file() || !is_source(e.path())) continue;
      ++n_files;
      const std::string rel = fs::relative(e.path(), kRoot).generic_string();
      for (Finding& f : scan_text(rel, read_file(e.path()))) {
        auto it = allowed.find({f.path, f.text});
        if (it != allowed.end()) {
          it->second = true;
        } else {
          bad.push_back(std::move(f));
        }
      }
    }
  }
  std::printf("no_abort: scanned %zu library source files, %zu allow-listed uses\n", n_files, allowed.size());
  CHECK(n_files > 50);
  for (const Finding& f : bad)
    UNSCOPED_INFO(f.path << ":" << f.line << ": " << f.what << ": " << f.text
                         << "  (return a Status instead, or add it to tests/no_abort_allowlist.txt with a reason)");
  CHECK(bad.empty());
  for (const auto& [key, used] : allowed)
    if (!used) WARN("stale allow-list entry (no longer in the source): " << key.first << " | " << key.second);
}
