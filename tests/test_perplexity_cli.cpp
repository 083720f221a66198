// kestrel perplexity and kestrel quantize as a user runs them on the shared
// stories260K: llama-perplexity's output lines, the logits file written and
// compared (KL 0, same top 100%), the older rule behind --score-all, and the
// usage errors and bad files that exit 2 with a message.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace {

const std::string kBinary = KESTREL_BINARY_DIR "/bin/kestrel";
const std::string kStories = KESTREL_SHARED_DIR "/models/stories260K/stories260K.gguf";
const std::string kText = KESTREL_SOURCE_DIR "/tests/data/ppl_text.txt";

bool file_exists(const std::string& p) {
  std::ifstream f(p);
  return f.good();
}

// stdout and stderr together; *status gets the exit code (-1: killed).
std::string shell(const std::string& args, int* status) {
  const std::string cmd = kBinary + " " + args + " 2>&1";
  std::FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = pclose(p);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

#define NEED_BINARY()                                                                   \
  do {                                                                                  \
    if (!file_exists(kBinary) || !file_exists(kStories)) {                              \
      WARN("SKIP: " << kBinary << " (build kestrel_cli) or " << kStories << " is missing"); \
      return;                                                                           \
    }                                                                                   \
    int st_ = 0;                                                                        \
    if (!contains(shell("--version", &st_), "kestrel") || st_ != 0) {                   \
      WARN("SKIP: " << kBinary << " cannot run here");                                  \
      return;                                                                           \
    }                                                                                   \
  } while (0)

}  // namespace

TEST_CASE("kestrel perplexity: llama-perplexity's output, the logits file, --score-all", "[perplexity][cli]") {
  NEED_BINARY();
  int st = 0;
  const std::string base = "test_perplexity_cli_base.kld";
  const std::string out =
      shell("perplexity -m " + kStories + " -f " + kText + " -c 128 --chunks 3 -t 1 --kl-divergence-base " + base, &st);
  INFO(out);
  REQUIRE(st == 0);
  CHECK(contains(out, "[1]"));
  CHECK(contains(out, ",[3]"));
  double ppl = 0, err = 0;
  const size_t at = out.find("Final estimate: PPL = ");
  REQUIRE(at != std::string::npos);
  REQUIRE(std::sscanf(out.c_str() + at, "Final estimate: PPL = %lf +/- %lf", &ppl, &err) == 2);
  CHECK(ppl > 1.0);
  CHECK(err > 0.0);
  size_t n = 0;
  const size_t sum = out.rfind("\nppl ");
  REQUIRE(sum != std::string::npos);
  REQUIRE(std::sscanf(out.c_str() + sum + 1, "ppl %*f +- %*f | tokens %zu", &n) == 1);
  CHECK(n == 3 * 63);  // the second half of each chunk of 128, less its last position
  CHECK(file_exists(base));

  const std::string kl = shell("perplexity -m " + kStories + " -f " + kText + " -t 1 --kl-divergence-base " + base +
                                   " --kl-divergence",
                               &st);
  INFO(kl);
  REQUIRE(st == 0);
  CHECK(contains(kl, "Same top p: 100.000"));
  double kld = 1;
  const size_t k = kl.find("Mean    KLD:");
  REQUIRE(k != std::string::npos);
  REQUIRE(std::sscanf(kl.c_str() + k, "Mean    KLD: %lf", &kld) == 1);
  CHECK(std::abs(kld) < 1e-4);
  // A -c other than the file's is a usage error naming both.
  const std::string bad_c = shell("perplexity -m " + kStories + " -c 64 --kl-divergence-base " + base + " --kl-divergence", &st);
  CHECK(st == 2);
  CHECK(contains(bad_c, "-c 128"));
  // A truncated file: exit 2, the file named.
  {
    std::ifstream in(base, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(base, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 7));
  }
  const std::string cut = shell("perplexity -m " + kStories + " --kl-divergence-base " + base + " --kl-divergence", &st);
  CHECK(st == 2);
  CHECK(contains(cut, "truncated"));
  std::remove(base.c_str());

  const std::string all = shell("perplexity -m " + kStories + " -f " + kText + " -c 128 --chunks 3 -t 1 --score-all", &st);
  REQUIRE(st == 0);
  const size_t sa = all.rfind("\nppl ");
  REQUIRE(sa != std::string::npos);
  REQUIRE(std::sscanf(all.c_str() + sa + 1, "ppl %*f +- %*f | tokens %zu", &n) == 1);
  CHECK(n == 3 * 127);
  const std::string mix = shell("perplexity -m " + kStories + " -f " + kText + " --score-all --kl-divergence-base x.kld", &st);
  CHECK(st == 2);
  CHECK(contains(mix, "--score-all"));
  const std::string none = shell("perplexity -m " + kStories + " --kl-divergence", &st);
  CHECK(st == 2);
  CHECK(contains(none, "--kl-divergence-base"));
}

TEST_CASE("kestrel quantize: writes a loadable model; bad types and requantization refused", "[quantize][cli]") {
  NEED_BINARY();
  int st = 0;
  const std::string q = "test_perplexity_cli_q4km.gguf", q2 = "test_perplexity_cli_q4_0.gguf";
  const std::string log = shell("quantize " + kStories + " " + q + " Q4_K_M -t 2", &st);
  INFO(log);
  REQUIRE(st == 0);
  CHECK(contains(log, "blk.0.ffn_down.weight"));
  CHECK(contains(log, "-> q5_0"));  // rows of 64: Q4_K falls back to Q5_0
  const std::string ppl = shell("perplexity -m " + q + " -f " + kText + " -c 128 --chunks 2 -t 1", &st);
  CHECK(st == 0);
  CHECK(contains(ppl, "Final estimate: PPL = "));
  const std::string bad = shell("quantize " + kStories + " " + q2 + " Q3_K_S", &st);
  CHECK(st == 2);
  CHECK(contains(bad, "Q3_K_S"));
  const std::string re = shell("quantize " + q + " " + q2 + " Q6_K", &st);
  CHECK(st == 2);
  CHECK(contains(re, "requantiz"));
  CHECK(shell("quantize " + q + " " + q2 + " Q6_K --allow-requantize", &st).size() > 0);
  CHECK(st == 0);
  const std::string q8 = shell("quantize " + kStories + " " + q2 + " Q8_0", &st);
  CHECK(st == 2);  // ffn_down rows of 172: no 32-element block fits, as in llama-quantize
  CHECK(contains(q8, "172"));
  std::remove(q.c_str());
  std::remove(q2.c_str());
}
