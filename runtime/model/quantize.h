// Model quantization: a GGUF file rewritten with its weights in another type,
// each tensor's type chosen as llama.cpp's llama-quantize chooses it (its
// src/llama-quant.cpp), so that `kestrel quantize` and `llama-quantize` of the
// same input write the same tensor types and llama.cpp reads the result.
//
// The choice per tensor, for the file types kestrel writes:
//   - kept as it is: tensors of fewer than 2 dimensions (norms, biases), names
//     not ending in "weight", "*_norm.weight", and llama.cpp's other exceptions
//     (expert routers, positional embeddings, ...);
//   - F16 / BF16: every other tensor in that type;
//   - quantized types: output.weight (and token_embd.weight when the output is
//     tied to it) in Q6_K, or Q8_0 when its rows are not a multiple of the
//     type's block; Q4_K_M / Q5_K_M: Q6_K for attn_v and ffn_down of the first
//     and last eighth of the layers and every third layer between
//     (use_more_bits), Q4_K / Q5_K elsewhere;
//   - then a row length the block does not divide falls back as llama.cpp's
//     does: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and to F16 when that block
//     does not divide it either.
// Quantized input tensors are refused unless allow_requantize (as
// llama-quantize does): they are dequantized and quantized again.
//
//   QuantizeParams p;
//   KESTREL_TRY_ASSIGN(p.ftype, parse_quant_ftype("Q4_K_M"));
//   KESTREL_TRY(quantize_model("in-f16.gguf", "out-q4_k_m.gguf", p, nullptr));
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "ops/dtype.h"
#include "platform/status.h"

namespace kestrel {

// llama.cpp's llama_ftype values (general.file_type) of the types kestrel writes.
enum class QuantFtype : uint32_t {
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q8_0 = 7,
  q5_0 = 8,
  q5_1 = 9,
  q4_k_m = 15,
  q5_k_m = 17,
  q6_k = 18,
  bf16 = 32,
};

// "Q4_K_M", "q8_0", "F16", ... (any case); invalid_argument naming the choices.
Expected<QuantFtype> parse_quant_ftype(std::string_view name);
const char* quant_ftype_name(QuantFtype f);  // "Q4_K_M"
// The type most tensors get (Q4_K for Q4_K_M).
DType quant_ftype_default_type(QuantFtype f);

// The _M mixes' layers with more bits: the first and last eighth of n_layers and
// every third layer between (llama.cpp's use_more_bits).
bool quant_use_more_bits(int64_t i_layer, int64_t n_layers);

// One tensor as the mix sees it.
struct MixTensor {
  std::string name;
  DType type = DType::F32;
  int n_dims = 0;      // dimensions past trailing 1s, as ggml_n_dims counts
  int64_t ne0 = 0;     // row length
};

struct MixChoice {
  DType type = DType::F32;
  std::string note;    // "" or why the mix's type was replaced (row length)
};

// llama-quantize's order of tensors: by layer ("blk.N." prefix; others first),
// then by name.
bool quant_order_less(const std::string& a, const std::string& b);

// The type of each tensor (same order as tensors, which must be in
// quant_order_less order). n_layer: {arch}.block_count. Errors:
// invalid_argument when a tensor's row fits no type llama.cpp would fall back to.
Expected<std::vector<MixChoice>> choose_quant_types(QuantFtype ftype, int64_t n_layer,
                                                    const std::vector<MixTensor>& tensors);

struct QuantizeParams {
  QuantFtype ftype = QuantFtype::q8_0;
  int n_threads = 0;             // <= 0: the hardware's threads
  bool allow_requantize = false; // quantized inputs: dequantize and quantize again
};

struct QuantizeReport {
  std::string name;
  DType from = DType::F32, to = DType::F32;
  uint64_t from_bytes = 0, to_bytes = 0;
  std::string note;
};

// Reads in_path, writes out_path (through a temporary file): every metadata
// key copied (split keys dropped), general.file_type and
// general.quantization_version (2) set, tensors in llama-quantize's order.
// on_tensor (may be empty) hears of each tensor. Errors: bad_file / io_error
// from reading, invalid_argument for requantization without permission or
// non-finite weights, out_of_memory.
Status quantize_model(const std::string& in_path, const std::string& out_path, const QuantizeParams& params,
                      const std::function<void(const QuantizeReport&)>& on_tensor);

}  // namespace kestrel
