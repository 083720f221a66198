#include "runtime/model/arch.h"

namespace kestrel {

namespace {
// In ArchId order. Each entry follows what llama.cpp reads for the
// architecture (src/models/<arch>.cpp): tensor names, defaults, rope pairing.
constexpr ArchDesc kArchs[] = {
    {.id = ArchId::llama, .name = "llama", .rope_mode = RopeMode::adjacent, .ffn_act = FfnActivation::silu,
     .qkv_bias = true, .qk_norm = false, .post_attn_norm = false, .post_ffn_norm = false,
     .scale_embeddings = false, .norm_one_plus_weight = false, .sliding_window = false, .default_swa_pattern = 0,
     .default_rope_theta = 10000.0f, .default_rope_theta_swa = 10000.0f, .default_rms_eps = 1e-5f,
     .full_rotary = true, .rope_factors = RopeFactors::freqs},
    {.id = ArchId::qwen2, .name = "qwen2", .rope_mode = RopeMode::neox, .ffn_act = FfnActivation::silu,
     .qkv_bias = true, .qk_norm = false, .post_attn_norm = false, .post_ffn_norm = false,
     .scale_embeddings = false, .norm_one_plus_weight = false, .sliding_window = false, .default_swa_pattern = 0,
     .default_rope_theta = 1000000.0f, .default_rope_theta_swa = 1000000.0f, .default_rms_eps = 1e-6f},
    {.id = ArchId::gemma3, .name = "gemma3", .rope_mode = RopeMode::neox, .ffn_act = FfnActivation::gelu_tanh,
     .qkv_bias = false, .qk_norm = true, .post_attn_norm = true, .post_ffn_norm = true,
     .scale_embeddings = true, .norm_one_plus_weight = false, .sliding_window = true, .default_swa_pattern = 6,
     .default_rope_theta = 1000000.0f, .default_rope_theta_swa = 10000.0f, .default_rms_eps = 1e-6f},
    {.id = ArchId::qwen3, .name = "qwen3", .rope_mode = RopeMode::neox, .ffn_act = FfnActivation::silu,
     .qkv_bias = false, .qk_norm = true, .post_attn_norm = false, .post_ffn_norm = false,
     .scale_embeddings = false, .norm_one_plus_weight = false, .sliding_window = false, .default_swa_pattern = 0,
     .default_rope_theta = 1000000.0f, .default_rope_theta_swa = 1000000.0f, .default_rms_eps = 1e-6f,
     .full_rotary = true},
    // Phi-3: llama.cpp turns its sliding window off (phi3.cpp), and so does kestrel.
    {.id = ArchId::phi3, .name = "phi3", .rope_mode = RopeMode::neox, .ffn_act = FfnActivation::silu,
     .qkv_bias = false, .qk_norm = false, .post_attn_norm = false, .post_ffn_norm = false,
     .scale_embeddings = false, .norm_one_plus_weight = false, .sliding_window = false, .default_swa_pattern = 0,
     .default_rope_theta = 10000.0f, .default_rope_theta_swa = 10000.0f, .default_rms_eps = 1e-5f,
     .rope_factors = RopeFactors::long_short, .fused_qkv = true, .fused_gate_up = true},
    {.id = ArchId::gemma2, .name = "gemma2", .rope_mode = RopeMode::neox, .ffn_act = FfnActivation::gelu_tanh,
     .qkv_bias = false, .qk_norm = false, .post_attn_norm = true, .post_ffn_norm = true,
     .scale_embeddings = true, .norm_one_plus_weight = false, .sliding_window = true, .default_swa_pattern = 2,
     .default_rope_theta = 10000.0f, .default_rope_theta_swa = 0.0f, .default_rms_eps = 1e-6f,
     .tied_only = true, .swa_rope_scaled = true, .default_n_swa = 4096, .default_attn_softcap = 50.0f,
     .default_final_softcap = 30.0f},
};
}  // namespace

const ArchDesc* find_arch(std::string_view name) {
  for (const ArchDesc& a : kArchs)
    if (name == a.name) return &a;
  return nullptr;
}

const ArchDesc& arch_desc(ArchId id) { return kArchs[static_cast<int>(id)]; }

}  // namespace kestrel
