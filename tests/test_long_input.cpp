// Long inputs (../shared/BAD-INPUTS.md rows 15, 16): 10 MiB of one repeated
// character tokenizes in near-linear time with stack use independent of the
// length — each encode runs on a thread with a 256 KiB stack, so recursion or
// a stack buffer growing with the input would crash this test — and input
// above the configured cap is a too_long error that leaves the output alone.
// (test_tokenizer.cpp times 1 MiB vs 10 MiB runs on the default stack; this
// adds the small stack, the C API cap and the tokenizer.bin SPM vocabulary.)
#include <catch2/catch.hpp>

#include <pthread.h>
#include <sys/mman.h>

#include <cstdio>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include <kestrel/kestrel.h>

#include "runtime/model/gguf.h"
#include "runtime/tokenizer/tokenizer.h"

using namespace kestrel;

namespace {

const std::string kShared = KESTREL_SHARED_DIR;
constexpr size_t kSmallStack = 256 * 1024;

// Runs fn on a new thread with a stack of `stack_bytes`; false when the thread
// cannot be created.
bool run_with_stack(size_t stack_bytes, const std::function<void()>& fn) {
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0) return false;
  if (pthread_attr_setstacksize(&attr, stack_bytes) != 0) {
    pthread_attr_destroy(&attr);
    return false;
  }
  pthread_t th;
  auto tramp = [](void* p) -> void* {
    (*static_cast<const std::function<void()>*>(p))();
    return nullptr;
  };
  const int rc = pthread_create(&th, &attr, tramp, const_cast<std::function<void()>*>(&fn));
  pthread_attr_destroy(&attr);
  if (rc != 0) return false;
  pthread_join(th, nullptr);
  return true;
}

std::unique_ptr<Tokenizer> load(const std::string& path) {
  auto f = gguf::File::open(path, {.vocab_only = true});
  if (!f.ok()) return nullptr;
  auto v = vocab_from_gguf(**f);
  if (!v.ok()) return nullptr;
  auto t = Tokenizer::create(std::move(*v));
  return t.ok() ? std::move(t).value() : nullptr;
}

double cpu_seconds() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

bool sanitized() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  return true;
#endif
#endif
  return false;
}

}  // namespace

TEST_CASE("10 MiB of one character on a 256 KiB stack: near-linear time", "[long_input][tokenizer]") {
  struct Case {
    const char* vocab;
    char ch;
  };
  const Case cases[] = {{"stories260K/stories260K.gguf", 'a'}, {"llama.cpp-vocab/ggml-vocab-llama-spm.gguf", ' '},
                        {"llama.cpp-vocab/ggml-vocab-gpt-2.gguf", 'a'}, {"llama.cpp-vocab/ggml-vocab-gpt-2.gguf", ' '},
                        {"llama.cpp-vocab/ggml-vocab-deepseek-llm.gguf", '1'},
                        {"llama.cpp-vocab/ggml-vocab-mpt.gguf", ' '}};
  for (const Case& c : cases) {
    auto tok = load(kShared + "/models/" + c.vocab);
    if (!tok) {
      WARN("SKIP: " << c.vocab << " not found under " << kShared << "/models");
      continue;
    }
    // Sanitizers slow each step several-fold and their stacks are larger:
    // smaller runs, larger stack.
    const size_t big = sanitized() ? (size_t{2} << 20) : (size_t{10} << 20);
    const size_t small = big / 10;
    const size_t stack = sanitized() ? 4 * kSmallStack : kSmallStack;
    double secs[2] = {0, 0};
    size_t n_ids[2] = {0, 0};
    bool ok[2] = {false, false};
    for (int k = 0; k < 2; ++k) {
      const std::string text(k == 0 ? small : big, c.ch);
      REQUIRE(run_with_stack(stack, [&] {
        std::vector<int32_t> ids;
        const double t0 = cpu_seconds();
        ok[k] = tok->encode(text, false, false, ids).ok();
        secs[k] = cpu_seconds() - t0;
        n_ids[k] = ids.size();
        if (k == 1) {  // decode on the small stack too
          std::string back;
          ok[k] = ok[k] && tok->decode(ids, false, back).ok() && back.size() >= text.size() - 1;
        }
      }));
      CHECK(ok[k]);
      CHECK(n_ids[k] > 0);
    }
    std::printf("long input %-45s '%c': %zu B %.3f s, %zu B %.3f s cpu (%zu ids), ratio %.1f (x10 input)\n", c.vocab,
                c.ch, small, secs[0], big, secs[1], n_ids[1], secs[1] / (secs[0] > 0 ? secs[0] : 1e-9));
    // Linear would be 10x; allow noise and n log n, not n^2 (100x).
    CHECK(secs[1] < 30 * secs[0] + 0.1);
  }
}

TEST_CASE("input above the cap is too_long, in the library and the C API", "[long_input][tokenizer][c_api]") {
  const std::string path = kShared + "/models/stories260K/stories260K.gguf";
  auto tok = load(path);
  if (!tok) {
    WARN("SKIP: " << path << " not found");
    return;
  }
  tok->max_input_bytes = size_t{1} << 20;
  std::vector<int32_t> ids{42};
  const std::string over((size_t{1} << 20) + 1, 'a');
  Status st = tok->encode(over, true, false, ids);
  CHECK(st.code() == StatusCode::too_long);
  CHECK(st.message().find("above the tokenizer cap") != std::string::npos);
  CHECK(ids == std::vector<int32_t>{42});  // nothing appended
  CHECK(tok->encode(std::string(size_t{1} << 20, 'a'), true, false, ids).ok());

  // The C API at the default cap (256 MiB): a buffer one page above it,
  // mapped but never touched (the cap is checked before any byte is read), so
  // the test costs no memory.
  kestrel_model_params mp = kestrel_model_default_params();
  mp.vocab_only = 1;
  kestrel_model* model = nullptr;
  REQUIRE(kestrel_model_load(path.c_str(), &mp, &model) == KESTREL_OK);
  const size_t len = (size_t{256} << 20) + 4096;
  void* big = mmap(nullptr, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  REQUIRE(big != MAP_FAILED);
  kestrel_token out[4];
  int32_t n = -1;
  CHECK(kestrel_tokenize(model, static_cast<const char*>(big), len, 1, 0, out, 4, &n) == KESTREL_ERR_TOO_LONG);
  CHECK(std::string(kestrel_last_error(model)).find("above the tokenizer cap") != std::string::npos);
  CHECK(n == 0);
  munmap(big, len);
  kestrel_model_free(model);
}
