// Every row of ../shared/BAD-INPUTS.md through the library, the C API and the
// CLI. The file rows run a corpus generated at test time from
// ../shared/models/stories260K by tests/bad_inputs/make_corpus.py (one or more
// files per row, each with the status and a message substring it must give);
// the other rows are checked here where no other test covers that surface.
//
// Row  What                              Library                          C API                       CLI
// ---  --------------------------------  -------------------------------  --------------------------  ----------------------------
//  1   truncated anywhere                corpus + test_gguf row 1 (every  corpus                      corpus (run: exit 2, message)
//                                        prefix), test_llama2c truncated
//  2   magic, version, byte order        corpus + test_gguf row 2         corpus                      corpus
//  3   huge / negative counts            corpus + test_gguf row 3         corpus                      corpus
//  4   size arithmetic overflow          corpus + test_gguf row 4         corpus                      corpus
//  5   overlapping / holed tensors       corpus (mmap and read paths)     corpus                      corpus
//  6   value types, duplicates           corpus + test_gguf row 6         corpus                      corpus
//  7   known key, wrong type             corpus + test_gguf row 7         corpus                      corpus
//  8   alignment                         corpus + test_gguf row 8         corpus                      corpus
//  9   tensor types, dims                corpus + test_gguf row 9         corpus                      corpus
// 10   contradicting hyperparameters     corpus + test_model_archs        corpus                      corpus
// 11   tokenizer metadata                corpus + test_tokenizer bad      corpus                      corpus
//                                        vocabularies
// 12   chat template                     corpus (loads; never executed)   corpus                      corpus (generates)
// 13   not a model                       corpus + test_gguf row 13        corpus                      corpus + test_cli
// 14   invalid UTF-8, NUL                test_tokenizer invalid UTF-8     here                        here (tokenize)
// 15   very long input, cap              test_long_input, test_tokenizer  test_long_input (too_long)  -
// 16   long runs of one character        test_long_input (256 KiB stack)  -                           -
// 17   special-token text is text        test_tokenizer special tokens    here                        here (tokenize)
// 18   bad ids, positions, batches       test_model_stories bad batches   here, test_c_api.c          -
// 19   sampling parameters               test_sampling documented rule    here                        test_cli (temperature, ...)
// 20   NaN / Inf logits                  test_sampling NaN                here                        -
// 21   CLI numbers, missing values       -                                -                           test_cli bad usage
// 22   Ctrl-C, SIGPIPE                   -                                -                           test_cli Ctrl-C
// 23   NULL handles, threads, OOM        test_concurrency                 test_c_api.c, here          -
//                                        (out-of-memory: statuses from every nothrow allocation; no
//                                        injected-allocation-failure test yet)
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <kestrel/kestrel.h>

#include "runtime/model/model.h"

using namespace kestrel;

namespace {

const std::string kShared = KESTREL_SHARED_DIR;
const std::string kSource = KESTREL_SOURCE_DIR;
const std::string kCorpus = std::string(KESTREL_BINARY_DIR) + "/bad_inputs_corpus";
const std::string kCli = std::string(KESTREL_BINARY_DIR) + "/bin/kestrel";
const std::string kStories = kShared + "/models/stories260K/stories260K.gguf";

struct Case {
  int row = 0;
  std::string name, model, tokenizer, status, message, what;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// Generates the corpus once per test binary; empty when it cannot be
// generated here (no python3, or no ../shared/models), with the reason.
const std::vector<Case>& corpus(std::string* why_not) {
  static std::string reason;
  static const std::vector<Case> cases = [] {
    std::vector<Case> out;
    struct stat st;
    if (stat(kStories.c_str(), &st) != 0) {
      reason = kStories + " not found";
      return out;
    }
    if (std::system("python3 -c 'import struct' >/dev/null 2>&1") != 0) {
      reason = "python3 not found (tests/bad_inputs/make_corpus.py generates the corpus)";
      return out;
    }
    const std::string cmd = "rm -rf '" + kCorpus + "' && python3 '" + kSource +
                            "/tests/bad_inputs/make_corpus.py' '" + kShared + "' '" + kCorpus + "'";
    if (std::system(cmd.c_str()) != 0) {
      reason = "FAILED: " + cmd;
      return out;
    }
    std::istringstream tsv(slurp(kCorpus + "/cases.tsv"));
    std::string line;
    while (std::getline(tsv, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::vector<std::string> f;
      std::stringstream ls(line);
      std::string field;
      while (std::getline(ls, field, '\t')) f.push_back(field);
      if (f.size() == 6) f.push_back("");  // empty last column
      if (f.size() != 7) continue;
      out.push_back({std::atoi(f[0].c_str()), f[1], f[2], f[3], f[4], f[5], f[6]});
    }
    return out;
  }();
  if (why_not) *why_not = reason;
  return cases;
}

std::string path_of(const std::string& file) { return kCorpus + "/" + file; }

// Runs the CLI with stdout and stderr captured; exit code or -signal.
struct CliResult {
  int code = -1000;
  std::string out, err;
};
CliResult run_cli(const std::vector<std::string>& args) {
  CliResult r;
  const std::string out_path = kCorpus + "/.cli_out", err_path = kCorpus + "/.cli_err";
  const pid_t pid = fork();
  if (pid < 0) return r;
  if (pid == 0) {
    const int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0) _exit(126);
    dup2(o, 1);
    dup2(e, 2);
    std::vector<std::string> copy = args;
    copy.insert(copy.begin(), kCli);
    std::vector<char*> argv;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

bool have_cli() {
  static const bool ok = [] {
    struct stat st;
    if (stat(kCli.c_str(), &st) != 0) return false;
    return run_cli({"--version"}).code == 0;
  }();
  return ok;
}

#define NEED_CORPUS()                          \
  std::string why_;                            \
  const auto& cases = corpus(&why_);           \
  if (cases.empty()) {                         \
    WARN("SKIP: bad-input corpus: " << why_);  \
    return;                                    \
  }

}  // namespace

TEST_CASE("the corpus covers every file row of BAD-INPUTS.md", "[bad_inputs]") {
  NEED_CORPUS();
  std::vector<int> per_row(14, 0);
  for (const Case& c : cases) {
    REQUIRE(c.row >= 1);
    REQUIRE(c.row <= 13);
    ++per_row[static_cast<size_t>(c.row)];
  }
  for (int row = 1; row <= 13; ++row) {
    INFO("row " << row);
    CHECK(per_row[static_cast<size_t>(row)] >= 1);
  }
  std::printf("bad_inputs: %zu cases for rows 1-13\n", cases.size());
}

TEST_CASE("library: each bad file gives its status and message, mmap and read paths", "[bad_inputs]") {
  NEED_CORPUS();
  for (const Case& c : cases) {
    for (bool use_mmap : {true, false}) {
      ModelParams mp;
      mp.use_mmap = use_mmap;
      if (c.tokenizer != "-") mp.llama2c_tokenizer_path = path_of(c.tokenizer);
      auto m = Model::load(path_of(c.model), mp);
      const Status& st = m.status();
      INFO("row " << c.row << " " << c.name << " (" << c.what << "), use_mmap=" << use_mmap << ": got "
                  << st.to_string());
      CHECK(status_code_name(st.code()) == c.status);
      if (!c.message.empty()) CHECK(contains(st.message(), c.message));
      if (c.status != "ok") CHECK(!st.message().empty());
    }
  }
}

TEST_CASE("C API: each bad file gives its status and message; no handle is returned", "[bad_inputs][c_api]") {
  NEED_CORPUS();
  for (const Case& c : cases) {
    kestrel_model_params mp = kestrel_model_default_params();
    const std::string tok = path_of(c.tokenizer);
    if (c.tokenizer != "-") mp.llama2c_tokenizer = tok.c_str();
    kestrel_model* model = reinterpret_cast<kestrel_model*>(0x1);  // must be overwritten
    const kestrel_status s = kestrel_model_load(path_of(c.model).c_str(), &mp, &model);
    const std::string msg = kestrel_last_error(nullptr);
    INFO("row " << c.row << " " << c.name << " (" << c.what << "): got " << kestrel_status_name(s) << ": " << msg);
    CHECK(std::string(kestrel_status_name(s)) == c.status);
    if (c.status == "ok") {
      CHECK(model != nullptr);
      kestrel_model_free(model);
    } else {
      CHECK(model == nullptr);
      CHECK(!msg.empty());
      if (!c.message.empty()) CHECK(contains(msg, c.message));
    }
  }
}

TEST_CASE("CLI: each bad file exits 2 with a message naming the problem", "[bad_inputs][cli]") {
  NEED_CORPUS();
  if (!have_cli()) {
    WARN("SKIP: " << kCli << " is not built or cannot run here");
    return;
  }
  for (const Case& c : cases) {
    std::vector<std::string> args = {"run", "-m", path_of(c.model), "-n", "2", "-t", "1", "-p", "Once"};
    if (c.tokenizer != "-") {
      args.push_back("--tokenizer");
      args.push_back(path_of(c.tokenizer));
    }
    const CliResult r = run_cli(args);
    INFO("row " << c.row << " " << c.name << " (" << c.what << "): exit " << r.code << ", stderr: " << r.err);
    if (c.status == "ok") {
      CHECK(r.code == 0);
      CHECK(!r.out.empty());
    } else {
      CHECK(r.code == 2);
      CHECK(r.out.empty());
      CHECK(contains(r.err, c.status));
      if (!c.message.empty()) CHECK(contains(r.err, c.message));
    }
  }
}

namespace {
kestrel_model* load_stories() {
  kestrel_model_params mp = kestrel_model_default_params();
  kestrel_model* m = nullptr;
  return kestrel_model_load(kStories.c_str(), &mp, &m) == KESTREL_OK ? m : nullptr;
}
}  // namespace

TEST_CASE("rows 14, 17: bad text and special-token text through the C API and the CLI", "[bad_inputs][c_api]") {
  kestrel_model* model = load_stories();
  if (!model) {
    WARN("SKIP: " << kStories << " does not load");
    return;
  }
  const std::string texts[] = {std::string("a\0b", 3), "\xFF\xFE", "\xC0\x80", "\xED\xA0\x80", "x\xE2\x82",
                               "\xF4\x90\x80\x80"};
  for (const std::string& t : texts) {
    kestrel_token ids[64];
    int32_t n = 0;
    CHECK(kestrel_tokenize(model, t.data(), t.size(), 0, 0, ids, 64, &n) == KESTREL_OK);
    CHECK(n > 0);
    char buf[256];
    size_t nb = 0;
    CHECK(kestrel_detokenize(model, ids, n, 0, buf, sizeof buf, &nb) == KESTREL_OK);
    CHECK(std::string(buf, nb) == t);  // SPM byte fallback keeps every byte
  }
  // "</s>" in user text is text unless parse_special.
  kestrel_token ids[64];
  int32_t n = 0;
  REQUIRE(kestrel_tokenize(model, "</s>", 4, 0, 0, ids, 64, &n) == KESTREL_OK);
  CHECK(n > 1);
  for (int32_t i = 0; i < n; ++i) CHECK(ids[i] != kestrel_token_eos(model));
  REQUIRE(kestrel_tokenize(model, "</s>", 4, 0, 1, ids, 64, &n) == KESTREL_OK);
  CHECK(n == 1);
  CHECK(ids[0] == kestrel_token_eos(model));
  kestrel_model_free(model);

  if (have_cli()) {
    const CliResult r = run_cli({"tokenize", "-m", kStories, "--ids", "-p", "caf\xE9 </s> \xFF"});
    INFO("stderr: " << r.err);
    CHECK(r.code == 0);
    CHECK(contains(r.out, "["));
    CHECK(!contains(r.out, ", 2]"));  // eos (id 2) not parsed from the text
  }
}

TEST_CASE("rows 18-20, 23: bad ids, batches, parameters, logits and handles through the C API",
          "[bad_inputs][c_api]") {
  kestrel_model* model = load_stories();
  if (!model) {
    WARN("SKIP: " << kStories << " does not load");
    return;
  }
  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = 32;
  cp.n_threads = 1;
  kestrel_context* ctx = nullptr;
  REQUIRE(kestrel_context_create(model, &cp, &ctx) == KESTREL_OK);
  const int32_t n_vocab = kestrel_model_n_vocab(model);

  // Row 18: ids outside the vocabulary, positions out of order, bad sequence
  // ids, empty batches, a prompt longer than the context.
  {
    kestrel_token bad_ids[] = {-1, n_vocab, std::numeric_limits<int32_t>::min()};
    for (kestrel_token t : bad_ids) {
      int32_t pos = 0;
      kestrel_batch b{1, &t, &pos, nullptr, nullptr};
      INFO("token " << t);
      CHECK(kestrel_decode(ctx, &b) == KESTREL_ERR_INVALID_ARGUMENT);
      CHECK(std::string(kestrel_last_error(ctx)).size() > 0);
    }
    kestrel_batch empty{0, nullptr, nullptr, nullptr, nullptr};
    CHECK(kestrel_decode(ctx, &empty) == KESTREL_ERR_INVALID_ARGUMENT);
    kestrel_token two[] = {1, 5};
    int32_t backwards[] = {3, 1};
    kestrel_batch bw{2, two, backwards, nullptr, nullptr};
    CHECK(kestrel_decode(ctx, &bw) == KESTREL_ERR_INVALID_ARGUMENT);
    int32_t seq[] = {0, 7};
    int32_t pos[] = {0, 1};
    kestrel_batch bs{2, two, pos, seq, nullptr};
    CHECK(kestrel_decode(ctx, &bs) == KESTREL_ERR_INVALID_ARGUMENT);
    CHECK(kestrel_kv_seq_pos_max(ctx, 0) == -1);  // nothing was stored by the failures
    const std::string long_prompt(400, 'a');
    CHECK(kestrel_generate(ctx, long_prompt.c_str(), 4, nullptr, nullptr, nullptr) == KESTREL_ERR_TOO_LONG);
    CHECK(std::string(kestrel_last_error(ctx)).size() > 0);
  }

  // Row 19: out-of-range sampling parameters are rejected or clamped as
  // documented; row 20: NaN / Inf logits are a runtime error.
  {
    kestrel_sampler_params sp = kestrel_sampler_default_params();
    sp.top_p = std::nanf("");
    kestrel_sampler* s = nullptr;
    CHECK(kestrel_sampler_create(model, &sp, &s) == KESTREL_ERR_INVALID_ARGUMENT);
    CHECK(s == nullptr);
    sp = kestrel_sampler_default_params();
    sp.top_p = 1.5f;  // documented: >= 1 is off
    REQUIRE(kestrel_sampler_create(model, &sp, &s) == KESTREL_OK);
    kestrel_sampler_free(s);
    s = nullptr;
    sp = kestrel_sampler_default_params();
    sp.repeat_penalty = -1.0f;
    CHECK(kestrel_sampler_create(model, &sp, &s) == KESTREL_ERR_INVALID_ARGUMENT);
    sp = kestrel_sampler_default_params();
    sp.temperature = std::nanf("");
    CHECK(kestrel_sampler_create(model, &sp, &s) == KESTREL_ERR_INVALID_ARGUMENT);
    sp = kestrel_sampler_default_params();
    sp.top_k = n_vocab * 10;  // clamped
    REQUIRE(kestrel_sampler_create(model, &sp, &s) == KESTREL_OK);
    std::vector<float> logits(static_cast<size_t>(n_vocab), 0.0f);
    logits[7] = 5.0f;
    kestrel_token t = -1;
    CHECK(kestrel_sampler_sample(s, logits.data(), &t) == KESTREL_OK);
    CHECK((t >= 0 && t < n_vocab));
    for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
      logits[3] = bad;
      t = 12345;
      CHECK(kestrel_sampler_sample(s, logits.data(), &t) == KESTREL_ERR_RUNTIME);
      CHECK(std::string(kestrel_sampler_last_error(s)).size() > 0);
    }
    kestrel_sampler_free(s);
  }

  // Row 23: NULL handles and NULL outputs are statuses.
  {
    kestrel_token one = 1;
    int32_t pos = 0;
    kestrel_batch b{1, &one, &pos, nullptr, nullptr};
    CHECK(kestrel_decode(nullptr, &b) == KESTREL_ERR_INVALID_ARGUMENT);
    CHECK(kestrel_decode(ctx, nullptr) == KESTREL_ERR_INVALID_ARGUMENT);
    int32_t n = 0;
    CHECK(kestrel_tokenize(nullptr, "a", 1, 0, 0, nullptr, 0, &n) == KESTREL_ERR_INVALID_ARGUMENT);
    CHECK(kestrel_tokenize(model, nullptr, 5, 0, 0, nullptr, 0, &n) == KESTREL_ERR_INVALID_ARGUMENT);
    CHECK(kestrel_model_load(nullptr, nullptr, nullptr) != KESTREL_OK);
    CHECK(kestrel_sampler_sample(nullptr, nullptr, nullptr) == KESTREL_ERR_INVALID_ARGUMENT);
    CHECK(kestrel_get_logits(nullptr, 0) == nullptr);
    kestrel_context_free(nullptr);
    kestrel_model_free(nullptr);
  }
  kestrel_context_free(ctx);
  kestrel_model_free(model);
}
