// Elementwise ops (scale, softcap, silu, gelu, sigmoid, add, mul, swiglu, geglu),
// fill, copy with type conversion, the set_rows scatter and transpose. One block per row along ne[1..3], threads along ne[0], so
// any (aligned; for copy, any at all) byte strides work and accesses stay coalesced for packed rows.
// Accuracy: the exact exp tier uses expf / tanhf / erff (CUDA's accurate forms,
// <= 2 ulp each); the quake tiers follow ops/cuda/cuda_exp.cuh (the reference's
// formulas, errors as documented in ops/exp_tier.h).
#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/cuda_exp.cuh"

namespace kestrel::cuda {
namespace {

template <Unary OP, ExpTier T>
__device__ __forceinline__ float unary_fn(float v, float p0, float p1) {
  if constexpr (OP == Unary::scale) return fmaf(v, p0, p1);
  else if constexpr (OP == Unary::softcap) return p0 * tanhf(v / p0);
  else if constexpr (OP == Unary::silu) return silu_t<T>(v);
  else if constexpr (OP == Unary::sigmoid) return sigmoid_t<T>(v);
  else if constexpr (OP == Unary::gelu_tanh) return gelu_tanh_t<T>(v);
  else if constexpr (OP == Unary::gelu_sigmoid) return gelu_sigmoid_t<T>(v);
  else return gelu_erf_t<T>(v);
}

int64_t nrows_of(const TV& t) { return t.ne[1] * t.ne[2] * t.ne[3]; }
unsigned grid_for(int64_t nrows) { return static_cast<unsigned>(nrows < 65535 * 16 ? nrows : 65535 * 16); }

// Rows along grid.x; a few long rows (a decode step's one token) are also
// split along grid.y, so that one row is not one block on one SM.
dim3 split_grid(int64_t nrows, int64_t ne0, unsigned threads) {
  int64_t gy = 1;
  if (nrows < 64) {
    gy = (ne0 + threads - 1) / threads;
    gy = gy > 64 ? 64 : gy;
  }
  return dim3(grid_for(nrows), static_cast<unsigned>(gy));
}

template <Unary OP, ExpTier T>
__global__ void unary_f32(TV x, TV y, float p0, float p1, int64_t nrows) {
  pdl_wait();
  for (int64_t r = blockIdx.x; r < nrows; r += gridDim.x) {
    const float* xr = reinterpret_cast<const float*>(row_ptr(x, r));
    float* yr = reinterpret_cast<float*>(row_ptr(y, r));
    for (int64_t i = threadIdx.x + blockIdx.y * blockDim.x; i < x.ne[0]; i += blockDim.x * gridDim.y) {
      yr[i] = unary_fn<OP, T>(xr[i], p0, p1);
    }
  }
}

template <Binary OP, ExpTier T>
__global__ void binary_f32(TV a, TV b, TV y, int64_t nrows) {
  pdl_wait();
  for (int64_t r = blockIdx.x; r < nrows; r += gridDim.x) {
    const int64_t i1 = r % a.ne[1], i2 = (r / a.ne[1]) % a.ne[2], i3 = r / (a.ne[1] * a.ne[2]);
    const float* ar = reinterpret_cast<const float*>(a.data + i1 * a.nb[1] + i2 * a.nb[2] + i3 * a.nb[3]);
    float* yr = reinterpret_cast<float*>(y.data + i1 * y.nb[1] + i2 * y.nb[2] + i3 * y.nb[3]);
    // b broadcasts over any dim where it has one element.
    const int64_t j1 = b.ne[1] == 1 ? 0 : i1, j2 = b.ne[2] == 1 ? 0 : i2, j3 = b.ne[3] == 1 ? 0 : i3;
    const float* br = reinterpret_cast<const float*>(b.data + j1 * b.nb[1] + j2 * b.nb[2] + j3 * b.nb[3]);
    for (int64_t i = threadIdx.x + blockIdx.y * blockDim.x; i < a.ne[0]; i += blockDim.x * gridDim.y) {
      const float u = ar[i], v = br[i];
      if constexpr (OP == Binary::add) yr[i] = u + v;
      else if constexpr (OP == Binary::mul) yr[i] = u * v;
      else if constexpr (OP == Binary::swiglu) yr[i] = silu_t<T>(u) * v;
      else if constexpr (OP == Binary::geglu_tanh) yr[i] = gelu_tanh_t<T>(u) * v;
      else if constexpr (OP == Binary::geglu_sigmoid) yr[i] = gelu_sigmoid_t<T>(u) * v;
      else yr[i] = gelu_erf_t<T>(u) * v;
    }
  }
}

// Element i of a row of a plain float type. UA (unaligned): the row or its
// strides are not a multiple of the element size, so bytes are assembled one
// at a time (copy accepts any byte strides; the other ops require alignment).
template <DType T, bool UA>
__device__ __forceinline__ float load_plain(const char* row, int64_t i) {
  if constexpr (!UA) return load_weight<T>(row, i);
  constexpr int kBytes = T == DType::F32 ? 4 : 2;
  const auto* p = reinterpret_cast<const uint8_t*>(row) + i * kBytes;
  uint32_t u = 0;
#pragma unroll
  for (int b = 0; b < kBytes; ++b) u |= static_cast<uint32_t>(p[b]) << (8 * b);
  if constexpr (T == DType::F32) return __uint_as_float(u);
  else if constexpr (T == DType::F16) return half_bits_to_float(static_cast<uint16_t>(u));
  else return __uint_as_float(u << 16);
}

// Float -> half / bfloat16 bits, round to nearest even, in integer
// arithmetic only. The unaligned store path needs these: with CUDA 13.0 for
// sm_90, byte stores of the result of the hardware conversion
// (cvt.rn.f16.f32 then st.global.u8 of its low byte) wrote a wrong low byte
// on an H100 (seen by test_cuda's copy case with odd row padding).
__device__ __forceinline__ uint32_t f16_bits_int(float f) {
  const uint32_t x = __float_as_uint(f);
  const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u);
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // rounds to inf
  if (ax < 0x38800000u) {                         // half subnormal or zero
    if (ax < 0x33000000u) return sign;
    const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, sh = 126 - e;
    const uint32_t rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
    uint32_t q = m >> sh;
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return sign | q;
  }
  uint32_t h = (ax >> 13) - ((127u - 15u) << 10);
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return sign | h;
}

__device__ __forceinline__ uint32_t bf16_bits_int(float f) {
  uint32_t x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (x >> 16) | 0x40u;  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return x >> 16;
}

template <DType T, bool UA>
__device__ __forceinline__ void store_plain(char* row, int64_t i, float v) {
  constexpr int kBytes = T == DType::F32 ? 4 : 2;
  if constexpr (!UA) {
    if constexpr (T == DType::F32) reinterpret_cast<float*>(row)[i] = v;
    else if constexpr (T == DType::F16) reinterpret_cast<__half*>(row)[i] = __float2half_rn(v);
    else reinterpret_cast<__nv_bfloat16*>(row)[i] = __float2bfloat16_rn(v);
  } else {
    uint32_t u;
    if constexpr (T == DType::F32) u = __float_as_uint(v);
    else if constexpr (T == DType::F16) u = f16_bits_int(v);
    else u = bf16_bits_int(v);
    auto* p = reinterpret_cast<uint8_t*>(row) + i * kBytes;
#pragma unroll
    for (int b = 0; b < kBytes; ++b) p[b] = static_cast<uint8_t>(u >> (8 * b));
  }
}

template <DType XT, DType YT, bool UA>
__global__ void copy_kernel(TV x, TV y, int64_t nrows) {
  pdl_wait();
  for (int64_t r = blockIdx.x; r < nrows; r += gridDim.x) {
    const char* xr = row_ptr(x, r);
    char* yr = row_ptr(y, r);
    for (int64_t i = threadIdx.x; i < x.ne[0]; i += blockDim.x)
      store_plain<YT, UA>(yr, i, load_plain<XT, UA>(xr, i));
  }
}

bool is_aligned(const TV& t, int64_t a) {
  if (reinterpret_cast<uintptr_t>(t.data) % a) return false;
  for (int i = 1; i < 4; ++i)
    if (t.nb[i] % a) return false;
  return true;
}

template <DType XT, DType YT>
void copy_launch(TV x, TV y, int64_t nrows, unsigned threads, cudaStream_t s) {
  const int64_t xa = XT == DType::F32 ? 4 : 2, ya = YT == DType::F32 ? 4 : 2;
  if (is_aligned(x, xa) && is_aligned(y, ya))
    (void)launch_k(copy_kernel<XT, YT, false>, grid_for(nrows), threads, 0, s, x, y, nrows);
  else
    (void)launch_k(copy_kernel<XT, YT, true>, grid_for(nrows), threads, 0, s, x, y, nrows);
}

template <DType XT>
cudaError_t copy_to(DType yt, TV x, TV y, int64_t nrows, unsigned threads, cudaStream_t s) {
  switch (yt) {
    case DType::F32: copy_launch<XT, DType::F32>(x, y, nrows, threads, s); break;
    case DType::F16: copy_launch<XT, DType::F16>(x, y, nrows, threads, s); break;
    case DType::BF16: copy_launch<XT, DType::BF16>(x, y, nrows, threads, s); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}


__global__ void fill_f32(TV y, float value, int64_t nrows) {
  for (int64_t r = blockIdx.x; r < nrows; r += gridDim.x) {
    float* yr = reinterpret_cast<float*>(row_ptr(y, r));
    for (int64_t i = threadIdx.x; i < y.ne[0]; i += blockDim.x) yr[i] = value;
  }
}

// One block per source row m. The last of several rows naming the same
// destination row wins: a row that a later one overwrites is not stored (the
// block's threads scan the later rows together, so no two blocks race on a
// destination row).
template <DType YT>
__global__ void set_rows_kernel(TV x, const int32_t* ids, TV y, int64_t M) {
  pdl_wait();
  for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
    const int32_t id = ids[m];
    if (id < 0 || id >= y.ne[1]) continue;
    bool later = false;
    for (int64_t j = m + 1 + threadIdx.x; j < M && !later; j += blockDim.x) later = ids[j] == id;
    if (__syncthreads_or(later)) continue;
    const char* xr = x.data + m * x.nb[1];
    char* yr = y.data + static_cast<int64_t>(id) * y.nb[1];
    for (int64_t i = threadIdx.x; i < x.ne[0]; i += blockDim.x)
      store_plain<YT, false>(yr, i, reinterpret_cast<const float*>(xr)[i]);
  }
}

// 32 x 32 tiles through shared memory: both the reads of x rows and the
// writes of y rows are coalesced. Block (32, 8); tile (bx, by) covers x
// elements k in [32 bx, +32), m in [32 by, +32).
constexpr int kTile = 32;
__global__ void transpose_kernel(TV x, TV y, int64_t tiles_m) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t K = x.ne[0], M = x.ne[1];
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kTile;
  for (int64_t tm = blockIdx.y; tm < tiles_m; tm += gridDim.y) {
    const int64_t m0 = tm * kTile;
    __syncthreads();  // the previous tile's readers are done
    for (int r = threadIdx.y; r < kTile; r += blockDim.y) {
      const int64_t m = m0 + r, k = k0 + threadIdx.x;
      if (m < M && k < K) tile[r][threadIdx.x] = reinterpret_cast<const float*>(x.data + m * x.nb[1])[k];
    }
    __syncthreads();
    for (int r = threadIdx.y; r < kTile; r += blockDim.y) {
      const int64_t k = k0 + r, m = m0 + threadIdx.x;
      if (m < M && k < K) reinterpret_cast<float*>(y.data + k * y.nb[1])[m] = tile[threadIdx.x][r];
    }
  }
}

// x * 2^e = hi + lo to ~22 significant bits: hi = f16(x 2^e), lo = f16(x 2^e - hi),
// with 2^e per row putting the row's largest |x| near 2^14 (inside F16's range
// whatever the activations' scale; exact, being a power of two). Two
// tensor-core products on the pair keep an F16 weight's GEMM at FP32-level
// error (the weight itself is exact in F16). hi, lo: [rows][ne0] contiguous;
// inv[r] = 2^-e multiplies the product's row r back. lo may be null (hi only).
__global__ void split_f16_kernel(TV x, __half* hi, __half* lo, float* inv, int64_t nrows) {
  __shared__ float red[32];
  const int64_t K = x.ne[0];
  for (int64_t r = blockIdx.x; r < nrows; r += gridDim.x) {
    const float* xr = reinterpret_cast<const float*>(row_ptr(x, r));
    float mx = 0.0f;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) mx = fmaxf(mx, fabsf(xr[k]));
    mx = block_max(mx, red);
    int e = 0;
    if (mx > 0.0f && isfinite(mx)) {
      (void)frexpf(mx, &e);  // mx in [2^(e-1), 2^e)
      e = min(max(14 - e, -100), 100);
    }
    const float sc = ldexpf(1.0f, e);
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
      const float v = xr[k] * sc;
      const __half h = __float2half_rn(v);
      hi[r * K + k] = h;
      if (lo) lo[r * K + k] = __float2half_rn(v - __half2float(h));
    }
    if (threadIdx.x == 0) inv[r] = ldexpf(1.0f, -e);
    __syncthreads();  // red is reused by the next row
  }
}

// y row m (n floats) *= inv[m].
__global__ void scale_rows_kernel(float* y, int64_t ldy, const float* inv, int64_t n, int64_t m_rows) {
  for (int64_t m = blockIdx.x; m < m_rows; m += gridDim.x) {
    const float f = inv[m];
    if (f == 1.0f) continue;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) y[m * ldy + i] *= f;
  }
}

}  // namespace

cudaError_t launch_split_f16(TV x, void* hi, void* lo, float* inv, cudaStream_t s) {
  const int64_t nrows = nrows_of(x);
  if (nrows == 0 || x.ne[0] == 0) return cudaSuccess;
  split_f16_kernel<<<grid_for(nrows), row_threads(x.ne[0]), 0, s>>>(x, static_cast<__half*>(hi),
                                                                    static_cast<__half*>(lo), inv, nrows);
  return cudaGetLastError();
}

cudaError_t launch_scale_rows(float* y, int64_t ldy, const float* inv, int64_t n, int64_t m, cudaStream_t s) {
  if (n == 0 || m == 0) return cudaSuccess;
  scale_rows_kernel<<<grid_for(m), row_threads(n), 0, s>>>(y, ldy, inv, n, m);
  return cudaGetLastError();
}

cudaError_t launch_fill(TV y, float value, cudaStream_t s) {
  const int64_t nrows = nrows_of(y);
  if (nrows == 0 || y.ne[0] == 0) return cudaSuccess;
  fill_f32<<<grid_for(nrows), row_threads(y.ne[0]), 0, s>>>(y, value, nrows);
  return cudaGetLastError();
}

cudaError_t launch_set_rows(TV x, const int32_t* ids, DType yt, TV y, cudaStream_t s) {
  const int64_t M = x.ne[1];
  if (M == 0 || x.ne[0] == 0) return cudaSuccess;
  const unsigned g = grid_for(M), t = row_threads(x.ne[0]);
  switch (yt) {
    case DType::F32: (void)launch_k(set_rows_kernel<DType::F32>, g, t, 0, s, x, ids, y, M); break;
    case DType::F16: (void)launch_k(set_rows_kernel<DType::F16>, g, t, 0, s, x, ids, y, M); break;
    case DType::BF16: (void)launch_k(set_rows_kernel<DType::BF16>, g, t, 0, s, x, ids, y, M); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t launch_transpose(TV x, TV y, cudaStream_t s) {
  const int64_t K = x.ne[0], M = x.ne[1];
  if (K == 0 || M == 0) return cudaSuccess;
  const int64_t gx = (K + kTile - 1) / kTile, tiles_m = (M + kTile - 1) / kTile;
  if (gx > kMaxGridX) return cudaErrorInvalidConfiguration;
  const unsigned gy = static_cast<unsigned>(tiles_m < 65535 ? tiles_m : 65535);
  transpose_kernel<<<dim3(static_cast<unsigned>(gx), gy), dim3(kTile, 8), 0, s>>>(x, y, tiles_m);
  return cudaGetLastError();
}

cudaError_t launch_unary(Unary op, ExpTier tier, TV x, TV y, float p0, float p1, cudaStream_t s) {
  const int64_t nrows = nrows_of(x);
  if (nrows == 0 || x.ne[0] == 0) return cudaSuccess;
  const unsigned t = row_threads(x.ne[0]);
  const dim3 g = split_grid(nrows, x.ne[0], t);
  with_tier(tier, [&](auto tc) {
    constexpr ExpTier T = decltype(tc)::value;
    switch (op) {
      case Unary::scale: (void)launch_k(unary_f32<Unary::scale, T>, g, t, 0, s, x, y, p0, p1, nrows); break;
      case Unary::silu: (void)launch_k(unary_f32<Unary::silu, T>, g, t, 0, s, x, y, p0, p1, nrows); break;
      case Unary::sigmoid: (void)launch_k(unary_f32<Unary::sigmoid, T>, g, t, 0, s, x, y, p0, p1, nrows); break;
      case Unary::gelu_tanh: (void)launch_k(unary_f32<Unary::gelu_tanh, T>, g, t, 0, s, x, y, p0, p1, nrows); break;
      case Unary::gelu_erf: (void)launch_k(unary_f32<Unary::gelu_erf, T>, g, t, 0, s, x, y, p0, p1, nrows); break;
      case Unary::gelu_sigmoid: (void)launch_k(unary_f32<Unary::gelu_sigmoid, T>, g, t, 0, s, x, y, p0, p1, nrows); break;
      case Unary::softcap: (void)launch_k(unary_f32<Unary::softcap, T>, g, t, 0, s, x, y, p0, p1, nrows); break;
    }
  });
  return cudaGetLastError();
}

cudaError_t launch_binary(Binary op, ExpTier tier, TV a, TV b, TV y, cudaStream_t s) {
  const int64_t nrows = nrows_of(a);
  if (nrows == 0 || a.ne[0] == 0) return cudaSuccess;
  const unsigned t = row_threads(a.ne[0]);
  const dim3 g = split_grid(nrows, a.ne[0], t);
  with_tier(tier, [&](auto tc) {
    constexpr ExpTier T = decltype(tc)::value;
    switch (op) {
      case Binary::add: (void)launch_k(binary_f32<Binary::add, T>, g, t, 0, s, a, b, y, nrows); break;
      case Binary::mul: (void)launch_k(binary_f32<Binary::mul, T>, g, t, 0, s, a, b, y, nrows); break;
      case Binary::swiglu: (void)launch_k(binary_f32<Binary::swiglu, T>, g, t, 0, s, a, b, y, nrows); break;
      case Binary::geglu_tanh: (void)launch_k(binary_f32<Binary::geglu_tanh, T>, g, t, 0, s, a, b, y, nrows); break;
      case Binary::geglu_erf: (void)launch_k(binary_f32<Binary::geglu_erf, T>, g, t, 0, s, a, b, y, nrows); break;
      case Binary::geglu_sigmoid: (void)launch_k(binary_f32<Binary::geglu_sigmoid, T>, g, t, 0, s, a, b, y, nrows); break;
    }
  });
  return cudaGetLastError();
}

cudaError_t launch_copy(DType xt, TV x, DType yt, TV y, cudaStream_t s) {
  const int64_t nrows = nrows_of(x);
  if (nrows == 0 || x.ne[0] == 0) return cudaSuccess;
  const unsigned t = row_threads(x.ne[0]);
  switch (xt) {
    case DType::F32: return copy_to<DType::F32>(yt, x, y, nrows, t, s);
    case DType::F16: return copy_to<DType::F16>(yt, x, y, nrows, t, s);
    case DType::BF16: return copy_to<DType::BF16>(yt, x, y, nrows, t, s);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace kestrel::cuda
