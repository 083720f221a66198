// Architectures as descriptions: what differs between llama, qwen2 and gemma3
// is data (norm placement, activation, rope pairing, biases), read by one
// forward pass (runtime/engine/forward.cpp). Adding an architecture = one
// entry in arch.cpp plus any genuinely new op.
#pragma once

#include <string_view>

#include "ops/op_table.h"

namespace kestrel {

enum class ArchId { llama, qwen2, gemma3 };

enum class FfnActivation { silu, gelu_tanh };  // swiglu / geglu(tanh)

struct ArchDesc {
  ArchId id;
  const char* name;               // general.architecture value
  RopeMode rope_mode;             // adjacent pairs (llama) or neox halves
  FfnActivation ffn_act;
  bool qkv_bias;                  // q/k/v projections may carry biases (qwen2)
  bool qk_norm;                   // per-head RMSNorm of q and k before rope (gemma3)
  bool post_attn_norm;            // RMSNorm of the attention output before the residual add
  bool post_ffn_norm;             // RMSNorm of the FFN output before the residual add
  bool scale_embeddings;          // token embeddings * sqrt(n_embd) (gemma)
  // GGUF converters fold gemma's (1 + w) into the stored norm weights, so the
  // files kestrel reads need the plain form; kept as data for files that don't.
  bool norm_one_plus_weight;
  bool sliding_window;            // some layers attend within a window (gemma3)
  int default_swa_pattern;        // every n-th layer is global; the others slide
  float default_rope_theta;
  float default_rope_theta_swa;
  float default_rms_eps;
};

// nullptr for an architecture kestrel does not know.
const ArchDesc* find_arch(std::string_view name);
const ArchDesc& arch_desc(ArchId id);

}  // namespace kestrel
