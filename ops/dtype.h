// Element and block types, with the exact GGUF / ggml block layouts.
//
// Numeric values equal ggml_type ids as stored in GGUF tensor infos, so a type
// read from a file maps 1:1 (after validating it is one we know).
// Quantized types store blocks of block_size() elements in type_size() bytes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kestrel {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,  // activation-only: 8-bit blocks of 256 for K-quant dot products
  I8 = 24,
  I16 = 25,
  I32 = 26,
  BF16 = 30,
};

constexpr int kQK = 32;    // elements per Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 block
constexpr int kQKK = 256;  // elements per K-quant super-block
constexpr int kKScaleBytes = 12;

using f16_bits = uint16_t;
using bf16_bits = uint16_t;

// x = d * (q - 8), q a nibble; qs[j] holds element j (low nibble) and j+16 (high).
struct BlockQ4_0 {
  f16_bits d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_0) == 18);

// x = d * (q - 16), q 5 bits: the low nibble from qs as in Q4_0 (element j low,
// j+16 high) and the fifth bit of element j from bit j of the 32-bit qh.
struct BlockQ5_0 {
  f16_bits d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_0) == 22);

// x = d * q + m, q a nibble laid out as in Q4_0 (element j low, j+16 high); d and m as
// ggml's block_q4_1 stores them (d first).
struct BlockQ4_1 {
  f16_bits d;
  f16_bits m;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_1) == 20);

// x = d * q + m, q 5 bits: low nibble from qs as in Q4_1, the fifth bit of element j from
// bit j of the little-endian 32-bit qh (as Q5_0).
struct BlockQ5_1 {
  f16_bits d;
  f16_bits m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_1) == 24);

// x = d * q.
struct BlockQ8_0 {
  f16_bits d;
  int8_t qs[kQK];
};
static_assert(sizeof(BlockQ8_0) == 34);

// 8 sub-blocks of 32; 6-bit scale and min per sub-block packed in scales[12];
// x = d * sc * q - dmin * m, q a nibble. qs: 4 groups of 32 bytes, each byte's low
// nibbles are sub-block 2g, high nibbles sub-block 2g+1.
struct BlockQ4_K {
  f16_bits d;
  f16_bits dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockQ4_K) == 144);

// As Q4_K plus a fifth bit per element in qh (bit 2g / 2g+1 of qh[l] for element l of
// sub-blocks 2g / 2g+1).
struct BlockQ5_K {
  f16_bits d;
  f16_bits dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockQ5_K) == 176);

// 16 sub-blocks of 16, int8 scales; x = d * scale * (q - 32), q 6 bits split
// into low 4 (ql) and high 2 (qh).
struct BlockQ6_K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  f16_bits d;
};
static_assert(sizeof(BlockQ6_K) == 210);

// Activation block for K-quant dot products: x = d * q; bsums[i] = sum of qs[16i..16i+15].
struct BlockQ8_K {
  float d;
  int8_t qs[kQKK];
  int16_t bsums[kQKK / 16];
};
static_assert(sizeof(BlockQ8_K) == 292);

struct DTypeTraits {
  const char* name;      // "q4_K", as ggml names it
  int block_size;        // elements per block (1 for plain types)
  size_t type_size;      // bytes per block
  bool is_quantized;
  bool is_weight;        // may appear as a model weight (matmul src0 / get_rows table)
};

// Traits of a known type; nullptr for an id kestrel does not know.
const DTypeTraits* dtype_traits(DType t);
// Same, from a raw id read from a file (any uint32 is safe to pass).
const DTypeTraits* dtype_traits_from_id(uint32_t id);
const char* dtype_name(DType t);

inline int dtype_block_size(DType t) { return dtype_traits(t)->block_size; }
inline size_t dtype_type_size(DType t) { return dtype_traits(t)->type_size; }

// Bytes in a row of n elements; n must be a multiple of the block size.
inline size_t dtype_row_size(DType t, int64_t n) {
  const DTypeTraits* tr = dtype_traits(t);
  return tr->type_size * static_cast<size_t>(n / tr->block_size);
}

// Weight types a model may carry (the matmul / get_rows src0 set).
constexpr DType kWeightTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1,
                                  DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

}  // namespace kestrel
