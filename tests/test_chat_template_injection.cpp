// Special-token hygiene on every shared vocabulary: with special parsing off,
// no text becomes a control token (also for tokens a file types as
// user-defined, such as Phi-3's "</s>"), and in a chat prompt only the
// template's markup does: message content that spells every special token of
// the vocabulary yields the same control tokens as plain content, for every
// built-in template and the vocabulary's own.
#include <catch2/catch.hpp>

#include <dirent.h>

#include <algorithm>
#include <string>
#include <vector>

#include "runtime/chat/builtin_templates.h"
#include "runtime/chat/chat.h"
#include "runtime/model/model.h"
#include "runtime/tokenizer/tokenizer.h"

using namespace kestrel;

namespace {

const std::string kModels = std::string(KESTREL_SHARED_DIR) + "/models/";

std::vector<std::string> shared_vocab_files() {
  std::vector<std::string> out;
  const std::string dir = kModels + "llama.cpp-vocab/";
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n.size() > 5 && n.compare(n.size() - 5, 5, ".gguf") == 0) out.push_back(dir + n);
    }
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  out.push_back(kModels + "stories260K/stories260K.gguf");
  return out;
}

bool bracketed(std::string_view s) {
  if (s.size() < 3) return false;
  if (!((s.front() == '<' && s.back() == '>') || (s.front() == '[' && s.back() == ']'))) return false;
  return s.find_first_of(" \t\r\n") == std::string_view::npos;
}

// What must never come from plain text: control and unknown tokens, the
// declared special ids, end-of-generation tokens, and user-defined tokens
// shaped like control markers.
bool control_like(const Tokenizer& tok, int32_t id) {
  const VocabData& v = tok.vocab();
  const TokenType t = tok.token_type(id);
  if (t == TokenType::control || t == TokenType::unknown || tok.is_eog(id)) return true;
  for (int32_t s : {v.bos_id, v.eos_id, v.unk_id, v.pad_id, v.eot_id, v.sep_id, v.mask_id})
    if (id == s) return true;
  return t == TokenType::user_defined && bracketed(tok.token_text(id));
}

std::vector<int32_t> control_ids(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::vector<int32_t> out;
  for (int32_t id : ids)
    if (control_like(tok, id)) out.push_back(id);
  return out;
}

std::unique_ptr<Model> load(const std::string& path) {
  ModelParams mp;
  mp.vocab_only = true;
  auto m = Model::load(path, mp);
  if (!m.ok()) return nullptr;
  return std::move(m).value();
}

}  // namespace

TEST_CASE("plain text never becomes a control token on any shared vocabulary", "[chat][tokenizer]") {
  int n_vocabs = 0;
  for (const std::string& path : shared_vocab_files()) {
    auto model = load(path);
    if (!model) continue;  // bert (WordPiece) is not supported by the tokenizer
    ++n_vocabs;
    const Tokenizer& tok = model->tokenizer();
    int n_checked = 0;
    for (int32_t id = 0; id < tok.n_vocab(); ++id) {
      if (!control_like(tok, id) || tok.token_text(id).empty()) continue;
      const std::string text(tok.token_text(id));
      for (const std::string& s : {text, "a" + text + " b", " " + text + text, "\n" + text + "\n"}) {
        std::vector<int32_t> ids;
        REQUIRE(tok.encode(s, false, false, ids).ok());
        INFO(path << ": '" << s << "'");
        CHECK(control_ids(tok, ids).empty());
        ++n_checked;
      }
      std::vector<int32_t> parsed;
      REQUIRE(tok.encode(text, false, true, parsed).ok());
      INFO(path << ": '" << text << "' with parse_special");
      CHECK(parsed == std::vector<int32_t>{id});  // markup still works when asked for
    }
    CHECK(n_checked > 0);
  }
  CHECK(n_vocabs >= 9);
}

TEST_CASE("the user-defined control markers of Phi-3 and DeepSeek-Coder stay text", "[chat][tokenizer]") {
  auto phi3 = load(kModels + "llama.cpp-vocab/ggml-vocab-phi-3.gguf");
  auto dsc = load(kModels + "llama.cpp-vocab/ggml-vocab-deepseek-coder.gguf");
  REQUIRE(phi3);
  REQUIRE(dsc);
  std::vector<int32_t> ids;
  REQUIRE(phi3->tokenizer().encode("</s>", false, false, ids).ok());
  CHECK(std::find(ids.begin(), ids.end(), 2) == ids.end());  // id 2 is "</s>", typed user-defined in this file
  ids.clear();
  REQUIRE(dsc->tokenizer().encode("x<|EOT|>y", false, false, ids).ok());
  CHECK(std::find(ids.begin(), ids.end(), 32021) == ids.end());
  // Plain user-defined tokens (runs of spaces, code words) are still matched as the model's tokenizer does.
  auto mpt = load(kModels + "llama.cpp-vocab/ggml-vocab-mpt.gguf");
  REQUIRE(mpt);
  const Tokenizer& t = mpt->tokenizer();
  int n_plain = 0;
  for (int32_t id = 0; id < t.n_vocab() && n_plain < 20; ++id) {
    if (t.token_type(id) != TokenType::user_defined || control_like(t, id)) continue;
    ids.clear();
    REQUIRE(t.encode(std::string(t.token_text(id)), false, false, ids).ok());
    CHECK(ids == std::vector<int32_t>{id});
    ++n_plain;
  }
  CHECK(n_plain > 0);
}

TEST_CASE("chat prompts: content cannot inject control tokens on any vocabulary and template", "[chat][tokenizer]") {
  int n_cases = 0;
  for (const std::string& path : shared_vocab_files()) {
    auto model = load(path);
    if (!model) continue;
    const Tokenizer& tok = model->tokenizer();
    std::string all_specials;
    for (int32_t id = 0; id < tok.n_vocab(); ++id)
      if (control_like(tok, id)) all_specials += std::string(tok.token_text(id)) + " ";
    std::vector<std::string> sources;
    for (std::string_view name : chat::builtin_names()) sources.emplace_back(chat::builtin_template(name));
    auto own = chat::choose_template(*model, nullptr);
    REQUIRE(own.ok());
    sources.push_back(own->source);
    for (const std::string& src : sources) {
      auto conversation = [&](const std::string& content) {
        return std::vector<chat::Message>{{"system", content}, {"user", content}, {"assistant", content},
                                          {"user", content}};
      };
      auto plain = chat::render(*model, src, conversation("x"), true);
      auto injected = chat::render(*model, src, conversation(all_specials), true);
      REQUIRE(plain.ok() == injected.ok());
      if (!plain.ok()) continue;  // a template that refuses this conversation (roles) refuses both
      std::vector<int32_t> a, b;
      REQUIRE(chat::tokenize(tok, *plain, a).ok());
      REQUIRE(chat::tokenize(tok, *injected, b).ok());
      INFO(path << "\n" << injected->text);
      CHECK(control_ids(tok, a) == control_ids(tok, b));
      ++n_cases;
    }
  }
  CHECK(n_cases >= 50);
}
