// libFuzzer targets: one tokenizer on arbitrary text (BAD-INPUTS rows 14, 16,
// 17). Built once per vocabulary (see CMakeLists.txt): FUZZ_VOCABS is a
// comma-separated list of llama.cpp vocab names; input byte 0 picks one of
// them and whether special-token text is parsed; the rest is the text.
//   spm: llama-spm (SentencePiece BPE, byte fallback)
//   bpe: gpt-2, llama-bpe-like (deepseek-llm), deepseek-coder, falcon, starcoder,
//        mpt (user-defined space tokens): one per pre-tokenizer family here
#include <cstddef>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_util.h"

using namespace kestrel;

namespace {
std::vector<std::unique_ptr<Tokenizer>>& tokenizers() {
  static std::vector<std::unique_ptr<Tokenizer>> toks = [] {
    std::vector<std::unique_ptr<Tokenizer>> v;
    std::stringstream names(FUZZ_VOCABS);
    std::string name;
    while (std::getline(names, name, ',')) v.push_back(fuzz::load_vocab_tokenizer(name));
    return v;
  }();
  return toks;
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)tokenizers();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  auto& toks = tokenizers();
  const Tokenizer& tok = *toks[(data[0] >> 1) % toks.size()];
  const bool parse_special = (data[0] & 1) != 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  fuzz::exercise_tokenizer(tok, text, parse_special, tok.kind() == Tokenizer::Kind::spm);
  return 0;
}
