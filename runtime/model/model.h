// Model: the weights of one transformer (views into the mapped file, in their
// stored types), its hyperparameters and its tokenizer. Immutable after load,
// so one Model may be shared read-only by several contexts on several threads.
//
//   ModelParams mp;
//   KESTREL_TRY_ASSIGN(auto model, Model::load("stories260K.gguf", mp));
//   model->hparams().n_layer;
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ops/tensor.h"
#include "platform/status.h"
#include "runtime/ks/ks_linear.h"
#include "runtime/model/hparams.h"

namespace kestrel {

namespace gguf {
class File;
}
class Tokenizer;

// A weight that is absent has data == nullptr. Fused files (phi3's attn_qkv,
// gate-and-up ffn_up) are bound as row views: wq/wk/wv and w_gate/w_up then
// point into one tensor.
struct LayerWeights {
  Tensor attn_norm, wq, wk, wv, bq, bk, bv, q_norm, k_norm, wo, post_attn_norm;
  Tensor ffn_norm, w_gate, w_up, w_down, post_ffn_norm;
  // Projections stored as KS factor chains (docs/ks-gguf.md); the dense weight is then absent.
  KsLinear ks_q, ks_k, ks_v, ks_o, ks_gate, ks_up, ks_down;
};

struct ModelParams {
  bool use_mmap = true;
  bool vocab_only = false;  // tokenizer only (vocabulary GGUF files)
  // Page the weights in, reporting progress in [0, 1]; returning false cancels
  // the load (status `cancelled`). nullptr: no callback, weights paged lazily.
  bool (*progress)(float fraction, void* user) = nullptr;
  void* progress_user = nullptr;
  // llama2.c checkpoints (.bin): the tokenizer.bin to pair with the model.
  std::string llama2c_tokenizer_path;
};

class Model {
 public:
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Loads a GGUF file, or a llama2.c checkpoint when params name a tokenizer.bin.
  static Expected<std::unique_ptr<Model>> load(const std::string& path, const ModelParams& params);
  // Loads a GGUF file held in memory (fuzzing, embedded models): the bytes are
  // copied, so the buffer need not outlive the model. llama2c_tokenizer_path
  // is ignored (a llama2.c checkpoint is not GGUF).
  static Expected<std::unique_ptr<Model>> load_from_memory(const void* data, size_t size, const ModelParams& params);

  const HParams& hparams() const { return hp_; }
  const ArchDesc& arch() const { return *hp_.arch; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const gguf::File& file() const { return *file_; }
  bool vocab_only() const { return vocab_only_; }
  // Bytes of all weight tensors (what one decode step streams, roughly).
  uint64_t weight_bytes() const { return weight_bytes_; }

  Tensor tok_embd;     // [n_embd, n_vocab]
  Tensor output_norm;  // [n_embd]
  Tensor output;       // [n_embd, n_vocab]; tok_embd when tied
  bool tied_output = false;
  std::vector<LayerWeights> layers;
  // Per-pair rope frequency factors (absent: data == nullptr), F32 [n_rot/2],
  // every value finite and > 0: Llama 3's rope_freqs, or LongRoPE's pair.
  Tensor rope_freqs, rope_long, rope_short;

  // The factors a context of n_ctx_seq cells per sequence rotates with, as
  // llama.cpp chooses them (rope_freqs; else the long ones when n_ctx_seq,
  // rounded up to a multiple of 256, exceeds the original context length, the
  // short ones otherwise); nullptr when the model has none.
  const Tensor* rope_factors(int64_t n_ctx_seq) const;

 private:
  Model() = default;
  Status finish_load(const ModelParams& params);  // everything after the file is parsed
  Status bind_tensors();
  Status page_in(const ModelParams& params);

  HParams hp_;
  bool vocab_only_ = false;
  uint64_t weight_bytes_ = 0;
  std::vector<uint8_t> owned_file_;  // an in-memory GGUF (converted llama2.c checkpoints)
  std::unique_ptr<gguf::File> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

}  // namespace kestrel
