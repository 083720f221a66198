// Tokenizer: text <-> token ids for the vocabularies models carry in GGUF
// metadata (tokenizer.ggml.*), matching llama.cpp's tokenizers id for id.
//
//   SPM ("llama", also Gemma's vocab): SentencePiece-style BPE over token
//     scores, with the space prefix, U+2581 for spaces and <0xNN> byte fallback.
//   BPE ("gpt2"): byte-level BPE over merge ranks after the model's
//     pre-tokenizer (pretokenize.h).
//   WPM ("bert") is not supported (create() returns unsupported).
//
// Text is untrusted: invalid UTF-8 and NUL bytes are tokenized (invalid bytes
// as U+FFFD or byte tokens), never thrown; input above max_input_bytes is a
// too_long error; no recursion, and time is near-linear in the input.
//
//   KESTREL_TRY_ASSIGN(VocabData v, vocab_from_gguf(*file));
//   KESTREL_TRY_ASSIGN(auto tok, Tokenizer::create(std::move(v)));
//   std::vector<int32_t> ids;
//   KESTREL_TRY(tok->encode("Hello", /*add_special=*/true, /*parse_special=*/false, ids));
//   std::string text;
//   KESTREL_TRY(tok->decode(ids, /*render_special=*/false, text));
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "platform/status.h"
#include "runtime/tokenizer/vocab.h"

namespace kestrel {

namespace gguf {
class File;
}

// Reads tokenizer.ggml.* from a GGUF file (typed accessors only), applying
// the per-model defaults llama.cpp applies when a key is absent. Errors:
// missing tokens / model keys, wrong types, mismatched array lengths and
// special ids outside the vocabulary are bad_file.
Expected<VocabData> vocab_from_gguf(const gguf::File& file);

class Tokenizer {
 public:
  enum class Kind { spm, bpe };

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Validates the vocabulary (bad_file: special ids outside it, score/type
  // arrays shorter than the tokens, malformed <0xNN> byte tokens, duplicate
  // tokens, merges naming unknown tokens; unsupported: unknown model or
  // pre-tokenizer) and builds the lookup structures.
  static Expected<std::unique_ptr<Tokenizer>> create(VocabData vocab);

  // Appends the ids of text to out. add_special: BOS (and EOS) per the vocab's
  // add_bos / add_eos. parse_special: control token texts inside text become
  // those tokens (otherwise they are plain text). User-defined tokens (added
  // tokens such as runs of spaces) are always matched, as the model's own
  // tokenizer does. Errors: too_long above max_input_bytes.
  Status encode(std::string_view text, bool add_special, bool parse_special, std::vector<int32_t>& out) const;
  // As encode() with parse_special, except that a special token's text is
  // recognised only where parse_special_at (one flag per byte of text) is set
  // on every byte it covers: a chat prompt parses its template's markup and
  // not its messages' content. Errors: invalid_argument when the flags do not
  // match the text's length; too_long as encode().
  Status encode_marked(std::string_view text, const std::vector<uint8_t>& parse_special_at, bool add_special,
                       std::vector<int32_t>& out) const;

  // Appends the bytes token id stands for (SPM: U+2581 -> ' ', <0xNN> -> the
  // byte; BPE: byte-level code points -> bytes). Control and unknown tokens
  // append nothing unless render_special. Error: id outside the vocabulary.
  Status token_to_piece(int32_t id, bool render_special, std::string& out) const;

  // Appends the text of ids, like llama.cpp's detokenize (remove_special off):
  // the SPM space prefix of the first piece is removed, and when clean_spaces
  // is set, the spaces HF's clean_up_tokenization_spaces removes are removed.
  Status decode(const std::vector<int32_t>& ids, bool render_special, std::string& out) const;

  int32_t n_vocab() const;
  int32_t bos() const;  // -1 when absent
  int32_t eos() const;  // -1 when absent
  bool is_eog(int32_t id) const;  // end of generation: eos, eot and end-of-turn tokens
  bool add_bos() const;
  Kind kind() const;
  TokenType token_type(int32_t id) const;  // normal for ids outside the vocabulary
  std::string_view token_text(int32_t id) const;  // the raw vocab entry ("" outside the vocabulary)
  const VocabData& vocab() const;

  size_t max_input_bytes = size_t{256} << 20;  // encode() cap in bytes; default 256 MiB
  bool clean_spaces = false;  // decode(): default from the vocab (BPE pre-tokenizer); settable

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  Status encode_impl(std::string_view text, bool add_special, bool parse_special, const uint8_t* parse_special_at,
                     std::vector<int32_t>& out) const;
  std::unique_ptr<Impl> impl_;
};

// Streaming detokenizer for generated ids: push() appends only complete UTF-8
// characters, holding back a character split across tokens (byte tokens)
// until it is complete; bytes that can never form a valid character are
// emitted as U+FFFD, so the output is always valid UTF-8. Pieces are emitted
// as token_to_piece gives them (no first-piece space removal: generation
// continues a prompt).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& t, bool render_special = false);
  // Error: id outside the vocabulary (the pending bytes are kept).
  Status push(int32_t id, std::string& out);
  // Emits what is pending (an unfinished character as U+FFFD).
  void flush(std::string& out);
  void reset();
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tok_;
  bool render_special_;
  std::string pending_;
};

}  // namespace kestrel
