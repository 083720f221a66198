// Architectures as descriptions: what differs between llama, qwen2, qwen3,
// phi3, gemma2 and gemma3 is data (norm placement, activation, rope pairing,
// biases, fused tensors, soft-caps), read by one forward pass
// (runtime/engine/forward.cpp). Adding an architecture = one entry in
// arch.cpp plus any genuinely new op.
//
//   const ArchDesc* a = find_arch("phi3");   // nullptr when unknown
//   if (a && a->fused_qkv) ...
#pragma once

#include <cstdint>
#include <string_view>

#include "ops/op_table.h"

namespace kestrel {

enum class ArchId { llama, qwen2, gemma3, qwen3, phi3, gemma2 };

enum class FfnActivation { silu, gelu_tanh };  // swiglu / geglu(tanh)

// Which per-pair rope frequency factor tensors (ops/op_table.h: rope src2) a file may carry.
enum class RopeFactors {
  none,
  // rope_freqs.weight [n_rot/2] (Llama 3's rope scaling); rope_factors_long /
  // _short instead when rope.scaling.type is "longrope".
  freqs,
  // rope_factors_long.weight / rope_factors_short.weight [n_rot/2], the long
  // ones when a sequence's context exceeds rope.scaling.original_context_length.
  long_short,
};

struct ArchDesc {
  ArchId id;
  const char* name;               // general.architecture value
  RopeMode rope_mode;             // adjacent pairs (llama) or neox halves
  FfnActivation ffn_act;
  bool qkv_bias;                  // q/k/v projections may carry biases (qwen2)
  bool qk_norm;                   // per-head RMSNorm of q and k before rope (gemma3, qwen3)
  bool post_attn_norm;            // RMSNorm of the attention output before the residual add
  bool post_ffn_norm;             // RMSNorm of the FFN output before the residual add
  bool scale_embeddings;          // token embeddings * sqrt(n_embd) (gemma)
  // GGUF converters fold gemma's (1 + w) into the stored norm weights, so the
  // files kestrel reads need the plain form; kept as data for files that don't.
  bool norm_one_plus_weight;
  bool sliding_window;            // some layers attend within a window (gemma2, gemma3)
  int default_swa_pattern;        // every n-th layer is global; the others slide
  float default_rope_theta;
  float default_rope_theta_swa;   // 0: the file's rope.freq_base (gemma2)
  float default_rms_eps;
  // llama.cpp refuses rope.dimension_count != head_dim for these (llama, qwen3).
  bool full_rotary = false;
  RopeFactors rope_factors = RopeFactors::none;
  // attn_qkv.weight [n_embd, n_q + 2 n_kv] (q rows, then k, then v) may stand
  // for attn_q/k/v; split into row views at load (phi3).
  bool fused_qkv = false;
  // ffn_up.weight [n_embd, 2 n_ff] holds the gate rows then the up rows, and
  // there is no ffn_gate; split into row views at load (phi3).
  bool fused_gate_up = false;
  bool tied_only = false;         // output.weight is never read: the output is token_embd (gemma2)
  bool swa_rope_scaled = false;   // sliding layers take the rope scaling too (gemma2); else unscaled (gemma3)
  int64_t default_n_swa = 0;      // sliding window without the key (gemma2: 4096)
  // Soft-caps without their keys; > 0 means the architecture always applies
  // them and a file's value must then be > 0 (gemma2: 50 and 30).
  float default_attn_softcap = 0.0f;
  float default_final_softcap = 0.0f;
};

// nullptr for an architecture kestrel does not know.
const ArchDesc* find_arch(std::string_view name);
const ArchDesc& arch_desc(ArchId id);

}  // namespace kestrel
