#include "runtime/model/arch.h"

namespace kestrel {

namespace {
constexpr ArchDesc kArchs[] = {
    {ArchId::llama, "llama", RopeMode::adjacent, FfnActivation::silu,
     /*qkv_bias*/ true, /*qk_norm*/ false, /*post_attn_norm*/ false, /*post_ffn_norm*/ false,
     /*scale_embeddings*/ false, /*norm_one_plus_weight*/ false, /*sliding_window*/ false,
     /*default_swa_pattern*/ 0, /*rope_theta*/ 10000.0f, /*rope_theta_swa*/ 10000.0f, /*rms_eps*/ 1e-5f},
    {ArchId::qwen2, "qwen2", RopeMode::neox, FfnActivation::silu,
     true, false, false, false, false, false, false, 0, 1000000.0f, 1000000.0f, 1e-6f},
    {ArchId::gemma3, "gemma3", RopeMode::neox, FfnActivation::gelu_tanh,
     false, true, true, true, true, false, true, 6, 1000000.0f, 10000.0f, 1e-6f},
};
}  // namespace

const ArchDesc* find_arch(std::string_view name) {
  for (const ArchDesc& a : kArchs)
    if (name == a.name) return &a;
  return nullptr;
}

const ArchDesc& arch_desc(ArchId id) { return kArchs[static_cast<int>(id)]; }

}  // namespace kestrel
