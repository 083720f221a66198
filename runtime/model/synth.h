// Synthetic models: random weights in the exact tensor layout of a real
// architecture, written as GGUF. Tests build small ones in memory (ref vs cpu
// agreement per architecture); the benchmark builds TinyLlama-1.1B shapes in
// each weight type to compare against other runtimes on identical files. The
// files load in llama.cpp too (same keys and tensor names, fused phi3 tensors,
// rope factor tensors).
//
//   SynthSpec s;                       // llama, tiny by default
//   s.weights = "q4_k_m";
//   KESTREL_TRY_ASSIGN(auto bytes, synth_model_gguf(s));
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "platform/status.h"
#include "runtime/model/arch.h"

namespace kestrel {

struct SynthSpec {
  ArchId arch = ArchId::llama;
  int64_t n_vocab = 320;   // >= 259: 3 specials + 256 byte tokens + words
  int64_t n_embd = 64;
  int64_t n_layer = 2;
  int64_t n_head = 4;
  int64_t n_head_kv = 2;
  int64_t head_dim = 0;    // 0: n_embd / n_head
  int64_t n_ff = 96;
  int64_t n_ctx = 256;
  int64_t n_swa = 0;       // gemma2/3: sliding window (0: not written, the arch default applies)
  bool tied_output = false;  // gemma2 is always tied (llama.cpp never reads its output.weight)
  int64_t n_rot = 0;       // rope.dimension_count (0: head_dim); < head_dim is partial rotary (phi3)
  float rope_theta = 0.0f; // rope.freq_base (0: the arch default)
  // llama: write Llama 3's rope_freqs.weight, the per-pair factors of Llama 3.1's
  // rope scaling (factor 8, low 1, high 4) with n_ctx as the original context.
  bool rope_freqs = false;
  // phi3: write LongRoPE's rope_factors_long / _short (random, in [1, 16] and [1, 2]),
  // rope.scaling.original_context_length = n_ctx / 4 and the converter's
  // rope.scaling.attn_factor sqrt(1 + ln(4) / ln(n_ctx / 4)).
  bool rope_long_short = false;
  // gemma2: the soft-caps written (0: llama.cpp's defaults 50 and 30).
  float attn_softcap = 0.0f;
  float final_softcap = 0.0f;
  // f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, or q4_k_m (q4_k with q6_k for
  // output, and for attn_v / ffn_down of the layers llama.cpp's Q4_K_M favours).
  std::string weights = "f32";
  uint64_t seed = 1;
  int n_threads = 2;       // quantization threads
  // >= 0: write kestrel.spec.mask_token_id (and mask_n_predict when > 0), the keys
  // of simultaneous speculative drafting (runtime/spec/speculative.h).
  int32_t spec_mask_token = -1;
  int32_t spec_mask_n_predict = 0;
};

Expected<std::vector<uint8_t>> synth_model_gguf(const SynthSpec& spec);
Status write_synth_model(const SynthSpec& spec, const std::string& path);

}  // namespace kestrel
