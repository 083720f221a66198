// `kestrel chat`, `kestrel template` and `kestrel run --chat / -f` as a user
// runs them, on a synthetic model whose GGUF carries a chat template: turns
// read from a pipe, /reset, KV reuse (the second turn decodes only the tokens
// after the part of the conversation already in the cache), a full context
// reported and survived, Ctrl-C stopping a reply, and the template tool's output.
#include <catch2/catch.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/model/synth.h"

using namespace kestrel;

namespace {

const std::string kBinary = KESTREL_BINARY_DIR "/bin/kestrel";
// Role lines between the vocabulary's own control tokens.
const std::string kTemplate =
    "{% for m in messages %}<s>{{ m.role }}\n{{ m.content }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string temp_path(const std::string& what) {
  return std::string("/tmp/kestrel-chat-test-") + std::to_string(getpid()) + "-" + what;
}

// The synthetic llama model of runtime/model/synth.h with tokenizer.chat_template added.
const std::string& model_path() {
  struct Owned {
    std::string path;
    ~Owned() {
      if (!path.empty()) unlink(path.c_str());
    }
  };
  static Owned owned;
  std::string& path = owned.path;
  if (!path.empty()) return path;
  SynthSpec spec;
  spec.n_ctx = 4096;  // greedy replies of this model run to a full context: room for the Ctrl-C test
  auto bytes = synth_model_gguf(spec);
  REQUIRE(bytes.ok());
  auto in = gguf::File::from_memory(bytes->data(), bytes->size());
  REQUIRE(in.ok());
  gguf::Writer w;
  for (size_t i = 0; i < (*in)->n_keys(); ++i) {
    const gguf::KeyInfo ki = (*in)->key_info(i);
    w.set_raw(ki.key, static_cast<uint32_t>(ki.type), (*in)->raw_value(i));
  }
  w.set_string("tokenizer.chat_template", kTemplate);
  for (const gguf::TensorInfo& t : (*in)->tensors())
    REQUIRE(w.add_tensor(t.name, t.type, std::span<const int64_t>(t.ne, (size_t)t.n_dims), t.data, t.nbytes).ok());
  path = temp_path("model.gguf");
  REQUIRE(w.write_file(path).ok());
  return path;
}

struct Run {
  int code = -1;
  std::string out, err;
};

// Runs kestrel with args, stdin from `input`; stdout and stderr captured.
Run run(const std::string& args, const std::string& input) {
  const std::string in = temp_path("stdin"), err = temp_path("stderr");
  { std::ofstream(in, std::ios::binary) << input; }
  const std::string cmd = kBinary + " " + args + " < " + in + " 2> " + err;
  Run r;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int rc = pclose(p);
  r.code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.err = read_file(err);
  unlink(in.c_str());
  unlink(err.c_str());
  return r;
}

// Built and executable here (a cross build run under qemu-user cannot exec a
// second target binary): `kestrel --version` answers.
bool have_binary() {
  static const bool ok = [] {
    const Run r = run("--version", "");
    return r.code == 0 && r.out.find("kestrel") != std::string::npos;
  }();
  return ok;
}

#define NEED_BINARY()                                                 \
  if (!have_binary()) {                                               \
    WARN("SKIP: " << kBinary << " is not built or cannot run here");  \
    return;                                                           \
  }

struct TurnStats {
  int prompt, reused, fresh, generated;
};

std::vector<TurnStats> turn_stats(const std::string& err) {
  std::vector<TurnStats> out;
  const std::regex re(R"(turn \d+: prompt (\d+) tokens, (\d+) reused, (\d+) new .*generated (\d+))");
  for (auto it = std::sregex_iterator(err.begin(), err.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back({std::stoi((*it)[1]), std::stoi((*it)[2]), std::stoi((*it)[3]), std::stoi((*it)[4])});
  return out;
}

}  // namespace

TEST_CASE("kestrel chat through a pipe: turns, KV reuse, /reset", "[chat][cli]") {
  NEED_BINARY();
  const std::string m = model_path();
  const std::string args = "chat -m " + m + " --temp 0 -n 6 -t 1 -v";
  const Run first = run(args, "Hello there\n");
  REQUIRE(first.code == 0);
  INFO(first.err);
  CHECK(first.err.find("chat template: the GGUF's tokenizer.chat_template") != std::string::npos);
  const std::string reply1 = first.out;  // the first turn's reply and its newline
  REQUIRE(!reply1.empty());
  REQUIRE(reply1.back() == '\n');

  const Run r = run(args, "Hello there\nand a second turn\nmulti\\\nline third\n/reset\nHello there\n/exit\nnever read\n");
  INFO(r.err);
  REQUIRE(r.code == 0);
  const std::vector<TurnStats> st = turn_stats(r.err);
  REQUIRE(st.size() == 4);
  // Turn 1 decodes everything; turn 2 keeps at least turn 1's prompt in the cache and
  // decodes only what follows the shared prefix.
  CHECK(st[0].reused == 0);
  CHECK(st[0].fresh == st[0].prompt);
  CHECK(st[1].reused >= st[0].prompt);
  CHECK(st[1].fresh == st[1].prompt - st[1].reused);
  CHECK(st[1].fresh <= st[1].prompt - st[0].prompt);
  CHECK(st[2].reused >= st[1].prompt);
  // After /reset the conversation starts over: nothing reused, the same prompt, the same greedy reply.
  CHECK(st[3].reused == 0);
  CHECK(st[3].prompt == st[0].prompt);
  CHECK(r.err.find("conversation reset") != std::string::npos);
  CHECK(r.out.substr(0, reply1.size()) == reply1);
  CHECK(r.out.substr(r.out.size() - reply1.size()) == reply1);
}

TEST_CASE("kestrel chat reports a full context and goes on", "[chat][cli]") {
  NEED_BINARY();
  const std::string m = model_path();
  std::string longline;
  for (int i = 0; i < 40; ++i) longline += "many words to fill the context ";
  const Run r = run("chat -m " + m + " --temp 0 -n 4 -t 1 -c 64 -v", longline + "\nshort\n");
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(r.err.find("context full") != std::string::npos);
  CHECK(turn_stats(r.err).size() == 1);  // the short turn still ran
}

TEST_CASE("kestrel chat and template: bad template arguments are usage errors", "[chat][cli]") {
  NEED_BINARY();
  const std::string m = model_path();
  const Run r = run("chat -m " + m + " --chat-template nosuchformat", "hi\n");
  CHECK(r.code == 2);
  CHECK(r.err.find("unknown chat template 'nosuchformat'") != std::string::npos);
  const std::string bad = temp_path("bad.jinja");
  { std::ofstream(bad) << "{% for m in messages %}{{ m.content | frobnicate }}{% endfor %}"; }
  const Run t = run("template -m " + m + " --chat-template " + bad + " --messages -", R"([{"role":"user","content":"x"}])");
  unlink(bad.c_str());
  CHECK(t.code == 2);
  CHECK(t.err.find("filter 'frobnicate' is not supported") != std::string::npos);
}

TEST_CASE("kestrel template prints the rendered prompt and its ids", "[chat][cli]") {
  NEED_BINARY();
  const std::string m = model_path();
  const std::string msgs = R"([{"role":"system","content":"Be brief."},{"role":"user","content":"Hi </s> there"}])";
  const Run r = run("template -m " + m + " --messages -", msgs);
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.out == "<s>system\nBe brief.</s><s>user\nHi </s> there</s><s>assistant\n");
  const Run ids = run("template -m " + m + " --messages - --ids", msgs);
  REQUIRE(ids.code == 0);
  // Three "<s>" and two "</s>" of the markup are control tokens; the "</s>" typed in the content is text.
  int n_bos = 0, n_eos = 0;
  const std::regex num(R"(\d+)");
  for (auto it = std::sregex_iterator(ids.out.begin(), ids.out.end(), num); it != std::sregex_iterator(); ++it) {
    n_bos += it->str() == "1";
    n_eos += it->str() == "2";
  }
  CHECK(n_bos == 3);
  CHECK(n_eos == 2);
  const Run nogen = run("template -m " + m + " --messages - --no-generation-prompt --chat-template chatml", msgs);
  CHECK(nogen.out == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi </s> there<|im_end|>\n");
}

TEST_CASE("kestrel run -f reads the prompt from a file; --chat wraps it in the template", "[chat][cli]") {
  NEED_BINARY();
  const std::string m = model_path();
  const std::string prompt = temp_path("prompt.txt");
  { std::ofstream(prompt) << "Hello there"; }
  const Run p = run("run -m " + m + " -p 'Hello there' -n 8 --temp 0 -t 1", "");
  const Run f = run("run -m " + m + " -f " + prompt + " -n 8 --temp 0 -t 1", "");
  REQUIRE(p.code == 0);
  REQUIRE(f.code == 0);
  CHECK(p.out == f.out);
  const Run c = run("run -m " + m + " -f " + prompt + " -n 6 --temp 0 -t 1 --chat", "");
  const Run chat = run("chat -m " + m + " -n 6 --temp 0 -t 1", "Hello there\n");
  unlink(prompt.c_str());
  INFO(c.err);
  REQUIRE(c.code == 0);
  CHECK(c.out == chat.out);  // the same single user turn, the same greedy reply
  CHECK(c.err.find("chat template:") != std::string::npos);
}

TEST_CASE("kestrel chat: Ctrl-C stops the reply and returns to the prompt", "[chat][cli]") {
  NEED_BINARY();
  const std::string m = model_path();
  int in_p[2], out_p[2], err_p[2];
  REQUIRE(pipe(in_p) == 0);
  REQUIRE(pipe(out_p) == 0);
  REQUIRE(pipe(err_p) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(in_p[0], 0);
    dup2(out_p[1], 1);
    dup2(err_p[1], 2);
    for (int fd : {in_p[0], in_p[1], out_p[0], out_p[1], err_p[0], err_p[1]}) close(fd);
    // Greedy, no length cap: without the interrupt the reply runs to the full context.
    execl(kBinary.c_str(), kBinary.c_str(), "chat", "-m", m.c_str(), "--temp", "0", "-n", "-1", "-t", "1", "-v",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(in_p[0]);
  close(out_p[1]);
  close(err_p[1]);
  const std::string input = "a long reply please\n/reset\n";
  REQUIRE(write(in_p[1], input.data(), input.size()) == static_cast<ssize_t>(input.size()));
  close(in_p[1]);
  std::string out, err;
  bool sent = false;
  pollfd fds[2] = {{out_p[0], POLLIN, 0}, {err_p[0], POLLIN, 0}};
  char buf[4096];
  for (int open_fds = 2; open_fds > 0;) {
    if (poll(fds, 2, 60000) <= 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
        continue;
      }
      (i == 0 ? out : err).append(buf, static_cast<size_t>(n));
      if (i == 0 && !sent) {  // the reply has started: interrupt it
        kill(pid, SIGINT);
        sent = true;
      }
    }
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO(err);
  REQUIRE(sent);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);  // not 130: only the reply stopped
  const size_t stopped = err.find("reply stopped"), reset = err.find("conversation reset");
  CHECK(stopped != std::string::npos);
  CHECK(reset != std::string::npos);
  CHECK(stopped < reset);  // the next line was read after the interrupt
  const std::vector<TurnStats> st = turn_stats(err);
  REQUIRE(st.size() == 1);
  CHECK(st[0].prompt + st[0].generated < 4000);  // well short of the full context
  CHECK(err.find("context full") == std::string::npos);
}
