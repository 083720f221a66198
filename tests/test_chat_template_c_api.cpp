// The chat-template C API: buffer rules, argument checks, template choice and
// error messages, on the shared vocabularies (no weights needed).
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <kestrel/kestrel.h>

namespace {

const std::string kModels = std::string(KESTREL_SHARED_DIR) + "/models/";

struct Model {
  kestrel_model* m = nullptr;
  explicit Model(const std::string& path) {
    kestrel_model_params p = kestrel_model_default_params();
    p.vocab_only = 1;
    REQUIRE(kestrel_model_load(path.c_str(), &p, &m) == KESTREL_OK);
  }
  ~Model() { kestrel_model_free(m); }
};

std::string origin_of(kestrel_model* m, const char* tmpl) {
  char buf[512];
  REQUIRE(kestrel_chat_template_info(m, tmpl, buf, sizeof buf, nullptr, 0, nullptr) == KESTREL_OK);
  return buf;
}

}  // namespace

TEST_CASE("chat C API: rendering, buffer sizes and token ids", "[chat][c_api]") {
  Model gpt2(kModels + "llama.cpp-vocab/ggml-vocab-gpt-2.gguf");
  const kestrel_chat_message msgs[] = {{"system", "S"}, {"user", "Hi <|endoftext|>"}};
  const std::string want =
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi <|endoftext|><|im_end|>\n<|im_start|>assistant\n";
  size_t n = 0;
  CHECK(kestrel_chat_apply_template(gpt2.m, "chatml", msgs, 2, 1, nullptr, 0, &n) == KESTREL_ERR_TOO_LONG);
  CHECK(n == want.size());
  std::vector<char> buf(n);  // one byte short: no room for the NUL
  CHECK(kestrel_chat_apply_template(gpt2.m, "chatml", msgs, 2, 1, buf.data(), buf.size(), &n) == KESTREL_ERR_TOO_LONG);
  CHECK(std::string(buf.data()) == want.substr(0, want.size() - 1));
  buf.resize(n + 1);
  REQUIRE(kestrel_chat_apply_template(gpt2.m, "chatml", msgs, 2, 1, buf.data(), buf.size(), &n) == KESTREL_OK);
  CHECK(std::string(buf.data(), n) == want);

  int32_t n_tok = 0;
  CHECK(kestrel_chat_tokenize(gpt2.m, "chatml", msgs, 2, 1, nullptr, 0, &n_tok) == KESTREL_ERR_TOO_LONG);
  std::vector<kestrel_token> ids(static_cast<size_t>(n_tok));
  REQUIRE(kestrel_chat_tokenize(gpt2.m, "chatml", msgs, 2, 1, ids.data(), n_tok, &n_tok) == KESTREL_OK);
  // gpt-2 has no <|im_start|> token: that markup is text; its one control token, typed in the content, stays text.
  for (kestrel_token id : ids) CHECK(id != 50256);
}

TEST_CASE("chat C API: template choice and errors", "[chat][c_api]") {
  Model stories(kModels + "stories260K/stories260K.gguf");
  CHECK(origin_of(stories.m, nullptr).find("built-in 'llama2'") != std::string::npos);
  CHECK(origin_of(stories.m, "gemma") == "built-in 'gemma'");
  CHECK(origin_of(stories.m, "{{ messages[0].content }}") == "the given template");
  Model phi3(kModels + "llama.cpp-vocab/ggml-vocab-phi-3.gguf");
  CHECK(origin_of(phi3.m, "") == "the GGUF's tokenizer.chat_template");
  size_t len = 0;
  std::vector<char> src(4096);
  REQUIRE(kestrel_chat_template_info(phi3.m, nullptr, nullptr, 0, src.data(), src.size(), &len) == KESTREL_OK);
  CHECK(std::string(src.data()).find("<|user|>") != std::string::npos);
  CHECK(len == std::string(src.data()).size());

  const kestrel_chat_message msgs[] = {{"user", "a"}, {"user", "b"}};
  size_t n = 0;
  char buf[256];
  CHECK(kestrel_chat_apply_template(stories.m, "nosuch", msgs, 1, 1, buf, sizeof buf, &n) ==
        KESTREL_ERR_INVALID_ARGUMENT);
  CHECK(std::string(kestrel_last_error(stories.m)).find("unknown chat template 'nosuch'") != std::string::npos);
  CHECK(kestrel_chat_apply_template(stories.m, "gemma", msgs, 2, 1, buf, sizeof buf, &n) ==
        KESTREL_ERR_INVALID_ARGUMENT);  // roles must alternate: the template raises
  CHECK(std::string(kestrel_last_error(stories.m)).find("must alternate") != std::string::npos);
  CHECK(kestrel_chat_apply_template(stories.m, "{% for %}", msgs, 1, 1, buf, sizeof buf, &n) ==
        KESTREL_ERR_INVALID_ARGUMENT);
  CHECK(kestrel_chat_apply_template(stories.m, "{{ x | nosuchfilter }}", msgs, 1, 1, buf, sizeof buf, &n) ==
        KESTREL_ERR_UNSUPPORTED);
  const kestrel_chat_message bad[] = {{"user", nullptr}};
  CHECK(kestrel_chat_apply_template(stories.m, nullptr, bad, 1, 1, buf, sizeof buf, &n) ==
        KESTREL_ERR_INVALID_ARGUMENT);
  CHECK(kestrel_chat_apply_template(nullptr, nullptr, msgs, 1, 1, buf, sizeof buf, &n) ==
        KESTREL_ERR_INVALID_ARGUMENT);
  CHECK(kestrel_chat_apply_template(stories.m, nullptr, nullptr, 1, 1, buf, sizeof buf, &n) ==
        KESTREL_ERR_INVALID_ARGUMENT);
  CHECK(kestrel_chat_apply_template(stories.m, nullptr, msgs, 1, 1, buf, sizeof buf, nullptr) ==
        KESTREL_ERR_INVALID_ARGUMENT);
  // No messages: chatml renders just the generation prompt; llama2's template reads messages[0] and fails, as in jinja2.
  CHECK(kestrel_chat_apply_template(stories.m, "chatml", nullptr, 0, 1, buf, sizeof buf, &n) == KESTREL_OK);
  CHECK(std::string(buf, n) == "<|im_start|>assistant\n");
  CHECK(kestrel_chat_apply_template(stories.m, nullptr, nullptr, 0, 1, buf, sizeof buf, &n) ==
        KESTREL_ERR_INVALID_ARGUMENT);
}
