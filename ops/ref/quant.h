// Reference (de)quantization of rows for every block type in ops/dtype.h.
// Scalar and readable; SIMD kernels are tested against these.
#pragma once

#include <cstdint>

#include "ops/dtype.h"

namespace kestrel::ref {

// dst[0..n) = row of `type` at src, converted to float. n is a multiple of the
// block size. Works for every weight type plus Q8_K.
void dequantize_row(DType type, const void* src, float* dst, int64_t n);

// Quantizes n floats into `type` blocks at dst (weight types and Q8_K).
// Every weight type is written byte for byte as ggml's reference quantizers write it.
void quantize_row(DType type, const float* src, void* dst, int64_t n);

// Activation quantizers used by the quantized dot products.
void quantize_row_q8_0(const float* src, BlockQ8_0* dst, int64_t n);
void quantize_row_q8_K(const float* src, BlockQ8_K* dst, int64_t n);

}  // namespace kestrel::ref
