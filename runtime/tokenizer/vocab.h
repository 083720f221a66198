// VocabData: a tokenizer's vocabulary as read from a model file, before the
// tokenizer builds its lookup structures. Filled from GGUF metadata
// (tokenizer.ggml.*) or from a llama2.c tokenizer.bin.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kestrel {

enum class TokenType : int32_t {  // values of tokenizer.ggml.token_type
  undefined = 0, normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6,
};

struct VocabData {
  std::string model;             // tokenizer.ggml.model: "llama" (SPM), "gpt2" (BPE), "bert", ...
  std::string pre;               // tokenizer.ggml.pre: "default", "llama3", "qwen2", "gpt-2", ...
  std::vector<std::string> tokens;
  std::vector<float> scores;     // empty when the file has none
  std::vector<TokenType> types;  // empty when the file has none (all normal)
  std::vector<std::string> merges;  // BPE: "a b" pairs, highest priority first
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1, eot_id = -1;
  int32_t sep_id = -1, mask_id = -1;  // -1: absent
  bool add_bos = true;           // tokenizer.ggml.add_bos_token (model default when absent)
  bool add_eos = false;
  bool add_space_prefix = true;  // tokenizer.ggml.add_space_prefix (SPM)
};

}  // namespace kestrel
