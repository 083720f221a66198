// Internal state of a Tokenizer, shared by tokenizer.cpp, spm.cpp and bpe.cpp.
#pragma once

#include <cstdint>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/tokenizer/pretokenize.h"
#include "runtime/tokenizer/tokenizer.h"

namespace kestrel {

struct MergeInfo {
  int32_t rank;    // position in tokenizer.ggml.merges: lower merges first
  int32_t result;  // id of the merged text, -1 if it is not a token
};

// Byte trie over the texts of special (control / user-defined / unknown)
// tokens, used to find which of them occur in a text in one pass.
struct SpecialTrie {
  struct Node {
    int32_t token = -1;        // id of the token whose text ends here
    int32_t first_child = -1;  // children are a contiguous sorted range of edges
    int32_t n_children = 0;
    int32_t n_user = 0;  // tokens matched without parse_special (plain user-defined) in this subtree
    int32_t n_all = 0;   // special tokens of any type ending in this subtree
  };
  struct Edge {
    uint8_t byte;
    int32_t node;
  };
  std::vector<Node> nodes;
  std::vector<Edge> edges;
  bool first_byte[256] = {};
  int32_t child(int32_t node, uint8_t b) const;
};

struct Tokenizer::Impl {
  VocabData vocab;
  Tokenizer::Kind kind = Tokenizer::Kind::spm;
  PreTokenizerInfo pre;
  std::unordered_map<std::string_view, int32_t> token_to_id;  // views into vocab.tokens
  std::vector<TokenType> types;                               // one per token
  std::vector<float> scores;                                  // one per token
  // 1: a special token that only parse_special may match. Control and unknown
  // tokens, and user-defined tokens that play a control role: files type
  // some of them user_defined (Phi-3's "</s>", DeepSeek-Coder's "<|EOT|>"),
  // and user-defined tokens are otherwise matched in any text.
  std::vector<uint8_t> markup;                                // one per token
  std::vector<uint8_t> eog;                                   // 1: ends generation
  // SPM: id of "<0xNN>" (else of the 1-byte text); BPE: id of the byte's
  // byte-level code point. -1 when the vocab has none.
  int32_t byte_token[256];
  std::unordered_map<uint64_t, MergeInfo> merges;  // BPE: key (left id << 32 | right id)
  size_t max_token_bytes = 0;
  // Special tokens in matching priority: longest text first, then lower id.
  std::vector<int32_t> specials;
  SpecialTrie trie;

  int32_t find(std::string_view text) const {
    auto it = token_to_id.find(text);
    return it == token_to_id.end() ? -1 : it->second;
  }
  // The token of a piece of ordinary text: like find(), but never a markup
  // token (nor an SPM byte token), so merging the characters of plain text
  // cannot spell a control token ("</" + "s>" -> "</s>").
  int32_t find_text(std::string_view text) const {
    const int32_t id = find(text);
    return (id < 0 || markup[id] || (kind == Tokenizer::Kind::spm && types[id] == TokenType::byte)) ? -1 : id;
  }
};

// SentencePiece-style BPE of one text fragment (spaces already U+2581).
// Error: too_long when the fragment has more than 2^31 - 1 bytes.
Status spm_tokenize(const Tokenizer::Impl& t, std::string_view text, std::vector<int32_t>& out);
// Byte-level BPE of one text fragment (pre-tokenized here).
Status bpe_tokenize(const Tokenizer::Impl& t, std::string_view text, std::vector<int32_t>& out);

}  // namespace kestrel
