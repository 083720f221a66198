// Pre-tokenizers of byte-level BPE vocabularies: split text (as code points)
// into words before BPE merges run inside each word.
//
// Each model's pre-tokenizer is a list of regexes in its tokenizer.json; here
// each one is a hand-written matcher over Unicode categories (unicode.h), with
// the leftmost-match, first-alternative-wins semantics of the regex engines the
// reference implementation uses, applied pass after pass: every pass splits each
// piece of the previous pass into matches and the text between them. No regex
// library, no recursion; every pass is linear in the text length.
//
//   KESTREL_TRY_ASSIGN(PreTokenizerInfo info, pre_tokenizer_from_name("llama3"));
//   std::vector<size_t> words;  // lengths in code points, summing to cps.size()
//   pre_tokenize(info.type, cps, words);
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "platform/status.h"

namespace kestrel {

enum class PreTokenizer {
  gpt2,            // gpt-2, mpt, olmo, jais, phi-2, roberta-bpe, jina-*
  llama3,          // llama3 / llama-bpe / llama-v3 / falcon3, dbrx, smaug-bpe, chatglm-bpe
  qwen2,           // qwen2, deepseek-r1-qwen, stablelm2, megrez: llama3 with single digits
  deepseek_llm,    // deepseek-llm
  deepseek_coder,  // deepseek-coder
  falcon,          // falcon
  starcoder,       // starcoder, refact, command-r, smollm, codeshell, exaone, minerva-7b
  bpe_default,     // "default" or missing tokenizer.ggml.pre
};

struct PreTokenizerInfo {
  PreTokenizer type = PreTokenizer::bpe_default;
  bool clean_spaces = true;    // decode removes spaces before ?!., (clean_up_tokenization_spaces)
  bool ignore_merges = false;  // a word that is itself a token is emitted whole
  bool add_bos = false;        // default of tokenizer.ggml.add_bos_token
};

// tokenizer.ggml.pre -> pre-tokenizer; unknown names are unsupported.
Expected<PreTokenizerInfo> pre_tokenizer_from_name(std::string_view pre);

// Splits cps into words; appends their lengths (in code points) to words.
void pre_tokenize(PreTokenizer type, const std::vector<uint32_t>& cps, std::vector<size_t>& words);

}  // namespace kestrel
