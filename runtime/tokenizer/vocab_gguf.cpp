// vocab_from_gguf: VocabData from a GGUF file's tokenizer.ggml.* metadata.
#include "runtime/model/gguf.h"
#include "runtime/tokenizer/pretokenize.h"
#include "runtime/tokenizer/tokenizer.h"

namespace kestrel {
namespace {

// Reads an optional token id key into id (left unchanged when absent).
Status read_id(const gguf::File& f, std::string_view key, int32_t& id) {
  if (!f.has(key)) return {};
  KESTREL_TRY_ASSIGN(id, f.get_i32(key));
  return {};
}

Status read_bool(const gguf::File& f, std::string_view key, bool& value) {
  if (!f.has(key)) return {};
  KESTREL_TRY_ASSIGN(value, f.get_bool(key));
  return {};
}

}  // namespace

Expected<VocabData> vocab_from_gguf(const gguf::File& f) {
  VocabData v;
  if (!f.has("tokenizer.ggml.model")) return Status::bad_file("tokenizer.ggml.model is missing");
  KESTREL_TRY_ASSIGN(std::string_view model, f.get_string("tokenizer.ggml.model"));
  v.model.assign(model);
  if (f.has("tokenizer.ggml.pre")) {
    KESTREL_TRY_ASSIGN(std::string_view pre, f.get_string("tokenizer.ggml.pre"));
    v.pre.assign(pre);
  }
  if (!f.has("tokenizer.ggml.tokens")) return Status::bad_file("tokenizer.ggml.tokens is missing");
  {
    KESTREL_TRY_ASSIGN(std::vector<std::string_view> tokens, f.get_string_array("tokenizer.ggml.tokens"));
    v.tokens.assign(tokens.begin(), tokens.end());
  }
  const size_t n = v.tokens.size();
  if (f.has("tokenizer.ggml.scores")) {
    KESTREL_TRY_ASSIGN(v.scores, f.get_f32_array("tokenizer.ggml.scores"));
    if (v.scores.size() != n) {
      return Status::bad_file("tokenizer.ggml.scores has %zu entries for %zu tokens", v.scores.size(), n);
    }
  }
  if (f.has("tokenizer.ggml.token_type")) {
    KESTREL_TRY_ASSIGN(std::vector<int32_t> types, f.get_i32_array("tokenizer.ggml.token_type"));
    if (types.size() != n) {
      return Status::bad_file("tokenizer.ggml.token_type has %zu entries for %zu tokens", types.size(), n);
    }
    v.types.reserve(n);
    for (int32_t t : types) v.types.push_back(static_cast<TokenType>(t));
  }

  // Per-model defaults, as llama.cpp applies them when a key is absent.
  if (v.model == "llama") {
    v.bos_id = 1, v.eos_id = 2, v.unk_id = 0;
    v.add_bos = true, v.add_eos = false, v.add_space_prefix = true;
  } else if (v.model == "gpt2") {
    if (!f.has("tokenizer.ggml.merges")) return Status::bad_file("BPE tokenizer without tokenizer.ggml.merges");
    KESTREL_TRY_ASSIGN(std::vector<std::string_view> merges, f.get_string_array("tokenizer.ggml.merges"));
    v.merges.assign(merges.begin(), merges.end());
    Expected<PreTokenizerInfo> pre = pre_tokenizer_from_name(v.pre);
    v.add_bos = pre.ok() && pre->add_bos;
    v.add_eos = false, v.add_space_prefix = false;
  } else if (v.model == "bert") {
    v.bos_id = 101, v.unk_id = 100, v.sep_id = 102, v.pad_id = 0, v.mask_id = 103;
    v.add_bos = true, v.add_eos = false, v.add_space_prefix = false;
  }
  KESTREL_TRY(read_bool(f, "tokenizer.ggml.add_space_prefix", v.add_space_prefix));
  KESTREL_TRY(read_id(f, "tokenizer.ggml.bos_token_id", v.bos_id));
  KESTREL_TRY(read_id(f, "tokenizer.ggml.eos_token_id", v.eos_id));
  KESTREL_TRY(read_id(f, "tokenizer.ggml.unknown_token_id", v.unk_id));
  KESTREL_TRY(read_id(f, "tokenizer.ggml.padding_token_id", v.pad_id));
  KESTREL_TRY(read_id(f, "tokenizer.ggml.eot_token_id", v.eot_id));
  KESTREL_TRY(read_id(f, "tokenizer.ggml.seperator_token_id", v.sep_id));  // sic: the GGUF key's spelling
  KESTREL_TRY(read_id(f, "tokenizer.ggml.mask_token_id", v.mask_id));
  KESTREL_TRY(read_bool(f, "tokenizer.ggml.add_bos_token", v.add_bos));
  KESTREL_TRY(read_bool(f, "tokenizer.ggml.add_eos_token", v.add_eos));
  const std::pair<const char*, int32_t> ids[] = {{"bos", v.bos_id}, {"eos", v.eos_id}, {"unknown", v.unk_id},
                                                 {"padding", v.pad_id}, {"eot", v.eot_id}, {"separator", v.sep_id},
                                                 {"mask", v.mask_id}};
  for (auto& [name, id] : ids) {
    if (id < -1 || id >= static_cast<int64_t>(n)) {
      return Status::bad_file("tokenizer.ggml %s token id %d is outside the vocabulary of %zu tokens", name, id, n);
    }
  }
  return v;
}

}  // namespace kestrel
