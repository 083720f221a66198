// Shared-memory matrix loads for the tensor-core kernels (k_ks_matmul_mma.cu,
// k_attention_mma.cu): ldmatrix of four 8 x 8 matrices of 16-bit elements,
// plain or transposed, and the row padding that keeps them free of bank
// conflicts.
#pragma once

#include <cstdint>

namespace kestrel::cuda {

// Shared row strides (in 16-bit elements) for ldmatrix: rows of n elements padded to an odd
// number of 16-byte units, so the 8 row addresses of one 8 x 8 matrix hit distinct banks.
constexpr int ldsm_stride(int n) { return ((n + 8) / 8) % 2 ? n + 8 : n + 16; }

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// Lane l gives the address of row l % 8 of matrix l / 8; lane t receives, of
// each matrix i, r[i] = the elements (t / 4, 2 (t % 4)) and (t / 4, 2 (t % 4) + 1).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// The same, transposed: r[i] = the elements (2 (t % 4), t / 4) and (2 (t % 4) + 1, t / 4).
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

}  // namespace kestrel::cuda
