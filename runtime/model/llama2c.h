// llama2.c files: the legacy (v0) fp32 checkpoint `.bin`, its `tokenizer.bin`,
// and their conversion to GGUF.
//
// Checkpoint: a 28-byte header of 7 little-endian int32 (dim, hidden_dim,
// n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
// means the classifier is stored separately), then fp32 arrays in run.c order:
// token_embedding [vocab][dim], rms_att [L][dim], wq [L][dim][dim],
// wk [L][kv_dim][dim], wv [L][kv_dim][dim], wo [L][dim][dim], rms_ffn [L][dim],
// w1 [L][hidden][dim], w2 [L][dim][hidden], w3 [L][hidden][dim], rms_final [dim],
// freq_cis_real [seq_len][head_size/2], freq_cis_imag [same], [wcls [vocab][dim]].
// Matrices are [out][in] row-major, which is GGUF's ne = {in, out}: the arrays
// become GGUF tensors without any permutation.
//
// tokenizer.bin: int32 max_token_length, then per token: f32 score, int32
// length, the bytes. Token count comes from the checkpoint's vocab_size.
//
//   KESTREL_TRY_ASSIGN(auto ckpt, Llama2cCheckpoint::open("stories260K.bin"));
//   KESTREL_TRY_ASSIGN(VocabData v, llama2c_vocab("tok512.bin", ckpt->config.vocab_size));
//   KESTREL_TRY(convert_llama2c_to_gguf("stories260K.bin", "tok512.bin", "stories260K.gguf"));
//
// Every check is a bad_file status naming the field or offset: header values
// (all positive, dim divisible by n_heads, n_heads by n_kv_heads, even head
// size), sizes through checked_math, the file size exactly the header's, and
// in tokenizer.bin: lengths within max_token_length and the file, finite
// scores, no trailing bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "platform/status.h"
#include "runtime/tokenizer/vocab.h"

namespace kestrel {

class MappedFile;
namespace gguf {
class Writer;
}

struct Llama2cConfig {
  int32_t dim = 0;
  int32_t hidden_dim = 0;
  int32_t n_layers = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t vocab_size = 0;         // positive (the header's sign is in shared_classifier)
  int32_t seq_len = 0;
  bool shared_classifier = true;  // header vocab_size > 0: wcls is token_embedding
  int32_t head_size() const { return dim / n_heads; }
  int32_t kv_dim() const { return head_size() * n_kv_heads; }
};

// Caps: header values above these are rejected before any size arithmetic.
inline constexpr int32_t kLlama2cMaxDim = 1 << 16;
inline constexpr int32_t kLlama2cMaxLayers = 1 << 10;
inline constexpr int32_t kLlama2cMaxVocab = 1 << 22;
inline constexpr int32_t kLlama2cMaxSeqLen = 1 << 24;
inline constexpr int32_t kLlama2cMaxTokenLength = 1 << 16;

class Llama2cCheckpoint {
 public:
  ~Llama2cCheckpoint();
  Llama2cCheckpoint(const Llama2cCheckpoint&) = delete;
  Llama2cCheckpoint& operator=(const Llama2cCheckpoint&) = delete;

  static Expected<std::unique_ptr<Llama2cCheckpoint>> open(const std::string& path, bool use_mmap = true);
  // A caller-owned buffer that must outlive the checkpoint.
  static Expected<std::unique_ptr<Llama2cCheckpoint>> from_memory(const void* data, size_t size);

  Llama2cConfig config;

  // Each array: its first byte in the file (fp32 little-endian, 4-byte aligned
  // when opened from a file) and its float count. Per-layer arrays hold all
  // layers back to back.
  struct Array {
    const uint8_t* data = nullptr;
    uint64_t n_floats = 0;
  };
  Array token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis_real, freq_cis_imag;
  Array wcls;  // == token_embedding when shared_classifier

 private:
  Llama2cCheckpoint() = default;
  Status parse(const uint8_t* data, uint64_t size);
  std::unique_ptr<MappedFile> file_;
};

// Vocabulary of a llama2.c tokenizer.bin with n_vocab tokens, in the form the
// llama2.c -> GGUF converter gives it: SentencePiece ("llama") model, spaces
// spelled U+2581, id 0 "<unk>" (unknown), 1 "<s>" and 2 "</s>" (control),
// "<0xHH>" tokens typed byte, empty tokens control, the rest normal;
// bos 1, eos 2, unk 0.
Expected<VocabData> llama2c_vocab(const std::string& tokenizer_path, int32_t n_vocab);
Expected<VocabData> llama2c_vocab_from_memory(const void* data, size_t size, int32_t n_vocab);

// Fills a writer with the GGUF form of a checkpoint and vocabulary: arch
// "llama", the llama.* hyperparameters (context_length = seq_len, rms eps
// 1e-5), tokenizer.ggml.* and the 3 + 9 * n_layers tensors (token_embd,
// output_norm, output, blk.N.*), in the key and tensor order of llama.cpp's
// converter. The writer borrows the checkpoint's tensor data.
Status llama2c_fill_gguf(const Llama2cCheckpoint& ckpt, const VocabData& vocab, gguf::Writer& w);

// Reads both files, validates them, writes out_path (via a temporary file).
Status convert_llama2c_to_gguf(const std::string& model_path, const std::string& tokenizer_path,
                               const std::string& out_path);

}  // namespace kestrel
