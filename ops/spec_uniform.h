// The counter-based uniforms of spec_verify (ops/op_table.h), in a header of
// their own so that host kernels and cuda device code draw the same numbers.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define KESTREL_HOST_DEVICE __host__ __device__
#else
#define KESTREL_HOST_DEVICE
#endif

namespace kestrel {

// The uniform in [0, 1) of (seed, row, stream): splitmix64 of the three, top 24 bits.
KESTREL_HOST_DEVICE inline float spec_uniform(uint64_t seed, int32_t row, int32_t stream) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (static_cast<uint64_t>(static_cast<uint32_t>(row)) * 2u +
                                               static_cast<uint64_t>(stream) + 1u);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

}  // namespace kestrel
