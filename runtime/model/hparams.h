// Hyperparameters of a transformer, read from GGUF metadata and validated as
// a whole against each other and the tensors before anything is built
// (../shared/BAD-INPUTS.md row 10).
#pragma once

#include <cstdint>
#include <vector>

#include "platform/status.h"
#include "runtime/model/arch.h"

namespace kestrel {

namespace gguf {
class File;
}

// Caps on what a file may claim; larger values are a bad_file error.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxEmbd = 1 << 17;
constexpr int64_t kMaxFfn = 1 << 20;
constexpr int64_t kMaxVocab = 1 << 22;
constexpr int64_t kMaxContext = 1 << 24;

// rope.scaling.type values kestrel runs (llama.cpp's names); "yarn" is refused.
enum class RopeScaling { none, linear, longrope };

struct HParams {
  const ArchDesc* arch = nullptr;
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;     // attention.key_length (== value_length)
  int64_t n_ff = 0;
  int64_t n_ctx_train = 0;
  int64_t n_rot = 0;        // rotated dims per head
  float rms_eps = 1e-5f;
  float rope_theta = 10000.0f;
  float rope_theta_swa = 10000.0f;
  float rope_freq_scale = 1.0f;      // 1 / linear scaling factor (global layers)
  float rope_freq_scale_swa = 1.0f;  // the same on sliding layers
  RopeScaling rope_scaling = RopeScaling::linear;  // rope.scaling.type
  float rope_attn_factor = 1.0f;     // rope.scaling.attn_factor: rotated pairs * this (LongRoPE)
  int64_t n_ctx_orig = 0;            // rope.scaling.original_context_length (default n_ctx_train)
  int64_t n_swa = 0;                 // sliding window (0 = none)
  std::vector<bool> layer_is_swa;    // per layer
  float attn_scale = 0.0f;           // q scale; 1/sqrt(head_dim) by default
  float attn_softcap = 0.0f;         // attention logits cap * tanh(s / cap); 0 = off
  float final_softcap = 0.0f;        // output logits, the same; 0 = off

  int64_t n_embd_q() const { return n_head * head_dim; }
  int64_t n_embd_kv() const { return n_head_kv * head_dim; }
};

// Reads {arch}.* keys. n_vocab is taken from the token embedding rows by the
// caller (the tokenizer and the tensors must then agree).
Expected<HParams> read_hparams(const gguf::File& file, const ArchDesc& arch);
// Checks values and their relations (heads divide, caps, ...).
Status validate_hparams(const HParams& hp);

}  // namespace kestrel
