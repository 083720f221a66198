// The kestrel CLI as a user runs it: build/<dir>/bin/kestrel spawned with
// pipes, checking stdout, stderr and exit codes (0 ok, 1 runtime, 2 usage or
// bad input, 130 interrupted), Ctrl-C and a closed stdout.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

namespace {

const std::string kBinary = KESTREL_BINARY_DIR "/bin/kestrel";
const std::string kModels = KESTREL_SHARED_DIR "/models";
const std::string kStories = kModels + "/stories260K/stories260K.gguf";
// Greedy from BOS: the pieces of the 32 reference ids of ../shared/models/README.md.
const std::string kGreedy32 =
    " Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One";

struct Child {
  pid_t pid = -1;
  int out = -1, err = -1;
};

struct Result {
  int code = -1;    // exit status, or -1 when killed by a signal
  int signal = 0;
  std::string out, err;
};

// stdout_pipe_bytes > 0: shrink the stdout pipe to that many bytes (one page is
// the least), so that a reader that does not read blocks the writer early.
Child spawn(const std::vector<std::string>& args, int stdout_pipe_bytes = 0) {
  int out_p[2], err_p[2];
  REQUIRE(pipe(out_p) == 0);
  REQUIRE(pipe(err_p) == 0);
  if (stdout_pipe_bytes > 0) REQUIRE(fcntl(out_p[0], F_SETPIPE_SZ, stdout_pipe_bytes) >= stdout_pipe_bytes);
  std::vector<char*> argv;
  std::vector<std::string> copy = args;
  copy.insert(copy.begin(), kBinary);
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(out_p[1], 1);
    dup2(err_p[1], 2);
    close(out_p[0]);
    close(err_p[0]);
    close(out_p[1]);
    close(err_p[1]);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out_p[1]);
  close(err_p[1]);
  return {pid, out_p[0], err_p[0]};
}

// Reads both pipes to EOF (poll, so neither can fill up and block the child).
void drain(Child& c, Result& r) {
  pollfd fds[2] = {{c.out, POLLIN, 0}, {c.err, POLLIN, 0}};
  int open_fds = 2;
  char buf[4096];
  while (open_fds > 0) {
    if (poll(fds, 2, 60000) <= 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
      }
    }
  }
}

void reap(Child& c, Result& r) {
  int st = 0;
  waitpid(c.pid, &st, 0);
  if (WIFEXITED(st)) r.code = WEXITSTATUS(st);
  if (WIFSIGNALED(st)) r.signal = WTERMSIG(st);
}

Result run(const std::vector<std::string>& args) {
  Child c = spawn(args);
  Result r;
  drain(c, r);
  reap(c, r);
  return r;
}

// Built and executable here (a cross build run under qemu-user may not be
// able to exec a second target binary): `kestrel --version` answers.
bool have_binary() {
  static const int ok = [] {
    struct stat st;
    if (stat(kBinary.c_str(), &st) != 0) return 0;
    Result r = run({"--version"});
    return r.code == 0 && r.out.find("kestrel") != std::string::npos ? 1 : 0;
  }();
  return ok == 1;
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

#define NEED_BINARY()                                                          \
  if (!have_binary()) {                                                        \
    WARN("SKIP: " << kBinary << " is not built or cannot run here");          \
    return;                                                                    \
  }

}  // namespace

TEST_CASE("kestrel run: greedy text on stdout, summary on stderr", "[cli]") {
  NEED_BINARY();
  Result r = run({"run", "-m", kStories, "-p", "", "-n", "32", "--temp", "0", "-t", "1", "-c", "256"});
  INFO("stderr: " << r.err);
  CHECK(r.code == 0);
  CHECK(r.out == kGreedy32 + "\n");
  CHECK(contains(r.err, "tokens/s"));
  CHECK(contains(r.err, "load"));

  // -tb and long forms are accepted; seeded sampling is reproducible.
  const std::vector<std::string> args = {"run", "-m", kStories, "-p", "Once upon a time", "-n", "24", "-s", "42",
                                         "--temp", "0.9", "--top-k", "20", "--top-p", "0.9", "--min-p", "0.02",
                                         "--repeat-penalty", "1.1", "--repeat-last-n", "16", "-t", "1", "-tb", "1"};
  Result a = run(args), b = run(args);
  CHECK(a.code == 0);
  CHECK(a.out.size() > 10);
  CHECK(a.out == b.out);
}

TEST_CASE("kestrel run: bad usage and bad files exit 2 naming the problem", "[cli]") {
  NEED_BINARY();
  struct Case {
    std::vector<std::string> args;
    std::string expect_in_stderr;
  };
  const std::vector<Case> cases = {
      {{"run", "-m", kStories, "-n", "12abc"}, "n-predict"},
      {{"run", "-m", kStories, "-n", "99999999999999999999"}, "n-predict"},
      {{"run", "-m", kStories, "-t", "-2"}, "threads"},
      {{"run", "-m", kStories, "-tb", "0"}, "threads-batch"},
      {{"run", "-m", kStories, "-c"}, "ctx-size"},
      {{"run", "-m", kStories, "-s", "5000000000"}, "seed"},
      {{"run", "-p", "hello"}, "model"},
      {{"run", "-m", kStories, "--temp", "nan", "-n", "2", "-t", "1"}, "temperature"},
      {{"run", "-m", kStories, "--repeat-penalty", "-1", "-n", "2", "-t", "1"}, "repeat_penalty"},
      {{"run", "-m", "/nonexistent/model.gguf"}, "/nonexistent/model.gguf"},
      {{"run", "-m", kModels}, "directory"},
      {{"run", "-m", kModels + "/llama.cpp-vocab/ggml-vocab-gpt-2.gguf.inp"}, "bad_file"},
      {{"run", "-m", kModels + "/llama.cpp-vocab/ggml-vocab-phi-3.gguf"}, "missing tensor"},  // vocabulary only
      {{"frobnicate"}, "frobnicate"},
      {{}, "subcommand"},
      {{"bench", "-m", kStories, "-t", "1,x"}, "threads"},
      {{"bench", "-m", kStories, "-o", "xml"}, "xml"},
      {{"tokenize", "-m", kStories}, "prompt"},
      {{"run", "-m", kStories, "-n", "-2"}, "n-predict"},
      {{"run", "-m", kStories, "-c", "12abc"}, "ctx-size"},
      {{"run", "-m", kStories, "--top-k", "many"}, "top-k"},
      {{"run", "-m", kStories, "--temp"}, "temp"},
      {{"run", "-m", kStories, "--repeat-last-n", "-5"}, "repeat-last-n"},
      {{"run", "-m", kStories, "--exp", "fast"}, "exp"},
      {{"run", "-m", kStories, "--no-such-flag"}, "no-such-flag"},
      {{"bench", "-m", kStories, "-p", "abc"}, "n-prompt"},
      {{"bench", "-m", kStories, "-r", "0"}, "repetitions"},
      {{"perplexity", "-m", kStories, "-f", "/nonexistent/kestrel.txt"}, "/nonexistent/kestrel.txt"},
      {{"perplexity", "-m", kStories, "-f", kStories, "--chunks", "-1"}, "chunks"},
      {{"inspect"}, "model"},
      {{"convert", "llama2c", "m.bin"}, "tokenizer"},
  };
  for (const Case& c : cases) {
    std::string line;
    for (const auto& a : c.args) line += a + " ";
    Result r = run(c.args);
    INFO("kestrel " << line << "\nstderr: " << r.err);
    CHECK(r.code == 2);
    CHECK(r.out.empty());
    CHECK(contains(r.err, c.expect_in_stderr));
  }
}

TEST_CASE("kestrel tokenize prints pieces or an id list", "[cli]") {
  NEED_BINARY();
  Result r = run({"tokenize", "-m", kStories, "-p", "Hello world"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "     1 -> '<s>'"));
  CHECK(contains(r.out, "-> ' He'"));
  // A vocabulary-only file, llama.cpp's expected ids for "Hello world".
  r = run({"tokenize", "-m", kModels + "/llama.cpp-vocab/ggml-vocab-llama-spm.gguf", "-p", "Hello world", "--ids",
           "--no-bos"});
  CHECK(r.code == 0);
  CHECK(r.out == "[15043, 3186]\n");
  r = run({"tokenize", "-m", kModels + "/llama.cpp-vocab/ggml-vocab-gpt-2.gguf", "-p", "Hi<|endoftext|>", "--ids",
           "--parse-special"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "50256]"));
}

TEST_CASE("kestrel inspect describes the model", "[cli]") {
  NEED_BINARY();
  Result r = run({"inspect", kStories});
  INFO(r.out << r.err);
  CHECK(r.code == 0);
  CHECK(contains(r.out, "architecture:  llama"));
  CHECK(contains(r.out, "llama.block_count"));
  CHECK(contains(r.out, "48 tensors"));
  CHECK(contains(r.out, "n_vocab 512, bos 1 '<s>', eos 2 '</s>'"));
  r = run({"inspect", "/nonexistent.gguf"});
  CHECK(r.code == 2);
}

TEST_CASE("kestrel bench prints a table or JSON", "[cli]") {
  NEED_BINARY();
  Result r = run({"bench", "-m", kStories, "-p", "16", "-n", "4", "-r", "2", "-t", "1"});
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(contains(r.out, "| model"));
  CHECK(contains(r.out, "t/s"));
  CHECK(contains(r.out, "pp16"));
  CHECK(contains(r.out, "tg4"));
  r = run({"bench", "-m", kStories, "-p", "8", "-n", "2", "-r", "2", "-t", "1,2", "-o", "json"});
  CHECK(r.code == 0);
  const auto j = nlohmann::json::parse(r.out, nullptr, false);
  REQUIRE(j.is_array());
  REQUIRE(j.size() == 4);
  for (const auto& o : j) {
    CHECK(o.at("avg_ts").get<double>() > 0.0);
    CHECK(o.at("samples_ts").size() == 2);
    CHECK(o.at("model_n_params").get<uint64_t>() > 0);
  }
  CHECK(j[0].at("test") == "pp8");
  CHECK(j[3].at("n_threads") == 2);
}

TEST_CASE("kestrel convert llama2c gives a GGUF that generates the same text", "[cli]") {
  NEED_BINARY();
  char dir[] = "/tmp/kestrel_cli_XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  const std::string out = std::string(dir) + "/stories260K.gguf";
  const std::string s = kModels + "/stories260K/";
  Result r = run({"convert", "llama2c", s + "stories260K.bin", s + "tok512.bin", out});
  INFO(r.err);
  CHECK(r.code == 0);
  r = run({"run", "-m", out, "-n", "32", "--temp", "0", "-t", "1", "-c", "256"});
  CHECK(r.code == 0);
  CHECK(r.out == kGreedy32 + "\n");
  r = run({"run", "-m", s + "stories260K.bin", "--tokenizer", s + "tok512.bin", "-n", "32", "--temp", "0", "-t", "1"});
  CHECK(r.code == 0);
  CHECK(r.out == kGreedy32 + "\n");
  r = run({"convert", "llama2c", s + "tok512.bin", s + "tok512.bin", out + ".bad"});
  CHECK(r.code == 2);
  std::remove(out.c_str());
  rmdir(dir);
}

TEST_CASE("kestrel run: Ctrl-C stops with a summary; a closed stdout ends quietly", "[cli]") {
  NEED_BINARY();
  {
    // Until end of text or the full 2048-token context: long enough to interrupt.
    Child c = spawn({"run", "-m", kStories, "-n", "-1", "--temp", "1.0", "-s", "3", "-t", "1"});
    char buf[64];
    const ssize_t n = read(c.out, buf, sizeof buf);  // generation has started
    REQUIRE(n > 0);
    kill(c.pid, SIGINT);
    Result r;
    r.out.assign(buf, static_cast<size_t>(n));
    drain(c, r);
    reap(c, r);
    INFO("stderr: " << r.err);
    if (r.code == 0) {
      WARN("SKIP: generation ended before the signal arrived");
    } else {
      CHECK(r.code == 130);
      CHECK(contains(r.err, "tokens/s"));
      CHECK(contains(r.err, "interrupted"));
    }
  }
  {
    // Two Ctrl-C in a row: the second exits 130 at once, whether or not the first
    // has reached a token boundary yet; never a death by SIGINT.
    Child c = spawn({"run", "-m", kStories, "-n", "-1", "--temp", "1.0", "-s", "5", "-t", "1"});
    char buf[64];
    const ssize_t n = read(c.out, buf, sizeof buf);
    REQUIRE(n > 0);
    kill(c.pid, SIGINT);
    kill(c.pid, SIGINT);
    Result r;
    drain(c, r);
    reap(c, r);
    INFO("stderr: " << r.err);
    CHECK(r.signal == 0);
    if (r.code == 0) WARN("SKIP: generation ended before the signals arrived");
    else CHECK(r.code == 130);
  }
  {
    // Ctrl-C while the writer is blocked on a full stdout pipe (a reader that
    // paused, like a pager): the interrupted write is restarted, not failed, so
    // the run does not end as if the reader had gone; once the reader reads, it
    // stops after the current token with the summary and 130. Greedy text with
    // a 2048-token context is about 4.9 KB, more than the 4 KiB pipe.
    const std::vector<std::string> args = {"run", "-m", kStories, "-n", "-1", "-c", "2048", "--temp", "0", "-t", "1"};
    const Result full = run(args);
    REQUIRE(full.code == 0);
    REQUIRE(full.out.size() > 4096 + 64);
    for (int n_signals : {1, 2}) {
      INFO(n_signals << " Ctrl-C while blocked");
      Child c = spawn(args, 4096);
      // Full: within a piece's length of 4096 bytes (a small write is all or
      // nothing) and unchanged for half a second, so the writer sits in write(2).
      int avail = 0, last = -1, stable = 0;
      for (int i = 0; i < 600 && stable < 5; ++i) {  // up to 60 s
        usleep(100 * 1000);
        REQUIRE(ioctl(c.out, FIONREAD, &avail) == 0);
        stable = avail >= 4096 - 64 && avail == last ? stable + 1 : 0;
        last = avail;
      }
      REQUIRE(stable == 5);
      for (int i = 0; i < n_signals; ++i) {
        kill(c.pid, SIGINT);
        usleep(100 * 1000);
      }
      Result r;
      drain(c, r);
      reap(c, r);
      INFO("stderr: " << r.err);
      CHECK(r.signal == 0);
      CHECK(r.code == 130);
      if (n_signals == 1) {
        // Stopped after the token being written: a strict prefix of the full text,
        // with the timing summary.
        CHECK(r.out.size() >= 4096 - 64);
        CHECK(r.out.size() < full.out.size());
        CHECK(full.out.compare(0, r.out.size(), r.out) == 0);
        CHECK(contains(r.err, "tokens/s"));
        CHECK(contains(r.err, "interrupted"));
      } else {
        // The second exits at once, still blocked: no summary.
        CHECK_FALSE(contains(r.err, "tokens/s"));
      }
    }
  }
  {
    Child c = spawn({"run", "-m", kStories, "-n", "-1", "--temp", "1.0", "-s", "4", "-t", "1"});
    char buf[16];
    REQUIRE(read(c.out, buf, sizeof buf) > 0);
    close(c.out);  // the reader goes away (like `| head -c 16`)
    Result r;
    std::string err;
    char eb[4096];
    ssize_t k;
    while ((k = read(c.err, eb, sizeof eb)) > 0) err.append(eb, static_cast<size_t>(k));
    close(c.err);
    reap(c, r);
    INFO("stderr: " << err);
    CHECK(r.signal == 0);  // not killed by SIGPIPE
    CHECK((r.code == 0 || r.code == 1));
    CHECK_FALSE(contains(err, "error"));
    CHECK_FALSE(contains(err, "Broken pipe"));
  }
}

TEST_CASE("kestrel calibrate prints curves and crossovers; run --sched dynamic gives the same text", "[cli][sched]") {
  NEED_BINARY();
  char dir[] = "/tmp/kestrel_test_calib_XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  REQUIRE(setenv("KESTREL_CALIB_DIR", dir, 1) == 0);
  Result a = run({"calibrate", "-m", kStories, "-t", "2"});
  INFO("stdout: " << a.out << "\nstderr: " << a.err);
  CHECK(a.code == 0);
  CHECK(contains(a.out, "measured in"));
  CHECK(contains(a.out, "crossovers:"));
  CHECK(contains(a.out, "/t2"));
  Result b = run({"calibrate", "-m", kStories, "-t", "2"});
  CHECK(b.code == 0);
  CHECK(contains(b.out, "read from"));
  // --plot: a PNG with gnuplot on PATH, a SKIP line and exit 0 without.
  const std::string png = std::string(dir) + "/curves.png";
  Result p = run({"calibrate", "-m", kStories, "-t", "2", "--plot", png});
  CHECK(p.code == 0);
  struct stat st;
  if (contains(p.out, "SKIP:")) CHECK(stat(png.c_str(), &st) != 0);
  else CHECK((stat(png.c_str(), &st) == 0 && st.st_size > 1000));
  const std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  REQUIRE(setenv("PATH", "/nonexistent", 1) == 0);
  Result q = run({"calibrate", "-m", kStories, "-t", "2", "--plot", png + ".2"});
  REQUIRE(setenv("PATH", path.c_str(), 1) == 0);
  CHECK(q.code == 0);
  CHECK(contains(q.out, "SKIP: plot not drawn"));
  // The dynamic scheduler changes kernels and threads, never the text.
  Result r = run({"run", "-m", kStories, "-p", "", "-n", "32", "--temp", "0", "-t", "2", "-c", "256", "--sched", "dynamic"});
  CHECK(r.code == 0);
  CHECK(r.out == kGreedy32 + "\n");
  CHECK(run({"run", "-m", kStories, "-p", "", "-n", "4", "--sched", "fast"}).code == 2);
  CHECK(run({"calibrate", "-m", kStories, "-t", "0"}).code == 2);
  unsetenv("KESTREL_CALIB_DIR");
  std::filesystem::remove_all(dir);
}
