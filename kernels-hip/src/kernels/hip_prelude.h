// Kiln HIP prelude: prepended to every kernel source before hiprtc (or
// hipcc, for compile checks) compiles it. It plays the part of the CUDA
// backend's common.cuh, so the CUDA kernel sources that port honestly
// compile for AMD GPUs unchanged:
//
// * fixed-width integer types and the storage types of the activation
//   dtypes (`kiln_f16`, `kiln_bf16`, `kiln_e4m3` bits), with exact
//   conversions written in plain C (clang's `_Float16` for f16, integer
//   round-to-nearest-even for bf16 and e4m3) instead of PTX `cvt`;
// * the warp vocabulary of the CUDA sources mapped explicitly onto AMD
//   wavefronts. The shared sources are written for 32-lane *logical*
//   warps (`lane = tid & 31`, `warp = tid >> 5`). `KILN_WAVE` is the
//   hardware wavefront of the target: 64 on CDNA (gfx9: MI100/MI200/MI300),
//   32 on RDNA (gfx10/gfx11, compiled wave32). On CDNA a wavefront holds two
//   logical warps, so every shuffle is limited to a 32-lane segment
//   (`width = KILN_WARP`) and never mixes the two; on RDNA the two coincide.
//   `__syncwarp()` becomes a wavefront barrier plus an LDS fence: a
//   wavefront executes in lockstep, so this orders the shared-memory
//   traffic of a logical warp exactly as `__syncwarp` does on NVIDIA.
//
// Storage types: `float` (F32), `kiln_f16` (F16 bits), `kiln_bf16` (BF16
// bits), `unsigned char` / `kiln_e4m3` (F8E4M3 bits). Every kernel computes
// in f32.

#ifndef __HIPCC_RTC__
#include <hip/hip_runtime.h>
#include <stdint.h>
#endif

#ifndef __AMDGCN_WAVEFRONT_SIZE
#error "kiln: compile for an AMD GPU target (--offload-arch=gfx...)"
#endif

/// Lanes of the target's hardware wavefront (64 on CDNA, 32 on RDNA wave32).
#define KILN_WAVE __AMDGCN_WAVEFRONT_SIZE
/// Lanes of the logical warp the shared kernel sources are written for.
#define KILN_WARP 32
static_assert(KILN_WAVE % KILN_WARP == 0, "a wavefront must hold whole logical warps");

// Fixed-width integer types: hipcc gets them from <stdint.h>; hiprtc's
// pre-included runtime header defines the 32- and 64-bit ones only, so the
// narrow ones are declared here (the same types <stdint.h> names, so a
// newer runtime header that declares them too is not contradicted).
#ifdef __HIPCC_RTC__
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
#endif

#ifndef __align__
#define __align__(n) __attribute__((aligned(n)))
#endif

/// IEEE half, stored as its bits.
struct __align__(2) kiln_f16 {
    uint16_t x;
};

/// bfloat16, stored as its bits.
struct __align__(2) kiln_bf16 {
    uint16_t x;
};

#define KILN_INF __int_as_float(0x7f800000)
#define KILN_NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float to_f32(float v) { return v; }

__device__ __forceinline__ float f16_bits_to_f32(uint16_t bits) {
    return (float)__builtin_bit_cast(_Float16, bits);
}

__device__ __forceinline__ float to_f32(kiln_f16 v) { return f16_bits_to_f32(v.x); }

__device__ __forceinline__ float to_f32(kiln_bf16 v) {
    return __uint_as_float(((uint32_t)v.x) << 16);
}

/// Round-to-nearest-even conversion from f32 to a storage type.
template <typename T> __device__ __forceinline__ T from_f32(float f);

template <> __device__ __forceinline__ float from_f32<float>(float f) { return f; }

template <> __device__ __forceinline__ kiln_f16 from_f32<kiln_f16>(float f) {
    kiln_f16 r;
    r.x = __builtin_bit_cast(uint16_t, (_Float16)f); // v_cvt_f16_f32: RNE
    return r;
}

template <> __device__ __forceinline__ kiln_bf16 from_f32<kiln_bf16>(float f) {
    uint32_t u = __float_as_uint(f);
    kiln_bf16 r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        r.x = (uint16_t)((u >> 16) | 0x40u);
        return r;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    r.x = (uint16_t)(u >> 16);
    return r;
}

/// FP8 E4M3 (`float8_e4m3fn`) bits to f32, exactly.
__device__ __forceinline__ float e4m3_to_f32(uint8_t b) {
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t mag = b & 0x7fu;
    if (mag == 0x7fu) {
        return __uint_as_float(sign | 0x7fc00000u);
    }
    uint32_t e = mag >> 3;
    uint32_t m = mag & 7u;
    float v;
    if (e == 0) {
        v = (float)m * 0.001953125f; // m · 2^-9
    } else {
        v = __uint_as_float(((e + 120u) << 23) | (m << 20)); // (1 + m/8) · 2^(e-7)
    }
    return __uint_as_float(__float_as_uint(v) | sign);
}

/// f32 to FP8 E4M3 bits: round to nearest even, saturating to ±448; NaN
/// stays NaN, ±inf becomes ±448 (the HAL's `f32_to_e4m3`).
__device__ __forceinline__ uint8_t f32_to_e4m3(float x) {
    uint32_t u = __float_as_uint(x);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return sign | 0x7f;
    }
    float a = fabsf(x);
    if (a >= 448.0f) {
        return sign | 0x7e;
    }
    if (a == 0.0f) {
        return sign;
    }
    int e = (int)((__float_as_uint(a) >> 23) & 0xffu) - 127;
    if (e < -6) {
        e = -6;
    }
    float quantum = __uint_as_float((uint32_t)(e - 3 + 127) << 23);
    float q = rintf(a / quantum) * quantum;
    if (q >= 448.0f) {
        return sign | 0x7e;
    }
    if (q == 0.0f) {
        return sign;
    }
    int qe = (int)((__float_as_uint(q) >> 23) & 0xffu) - 127;
    if (qe < -6) {
        return sign | (uint8_t)(q * 512.0f);
    }
    float mant = q / __uint_as_float((uint32_t)(qe - 3 + 127) << 23) - 8.0f;
    return sign | (uint8_t)((qe + 7) << 3) | (uint8_t)mant;
}

/// Storage of the FP8 KV cache: reads and writes go through a scale.
struct kiln_e4m3 {
    uint8_t x;
};

__device__ __forceinline__ float to_f32(kiln_e4m3 v) { return e4m3_to_f32(v.x); }

template <> __device__ __forceinline__ kiln_e4m3 from_f32<kiln_e4m3>(float f) {
    kiln_e4m3 r;
    r.x = f32_to_e4m3(f);
    return r;
}

/// `v` of the lane whose index within the logical warp is `lane ^ mask`.
__device__ __forceinline__ float kiln_shfl_xor(float v, int mask) {
    return __shfl_xor(v, mask, KILN_WARP);
}

/// Orders the shared-memory accesses of the lanes of a wavefront (and so of
/// a logical warp): the wavefront runs in lockstep, so a fence on LDS and a
/// scheduling barrier are all `__syncwarp` has to give.
__device__ __forceinline__ void kiln_wave_sync() {
    __builtin_amdgcn_fence(__ATOMIC_RELEASE, "wavefront");
    __builtin_amdgcn_wave_barrier();
    __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "wavefront");
}

// The CUDA spellings used by the shared sources. The 32-bit lane mask is
// always "every lane of the logical warp" there, so it is dropped.
#define __shfl_xor_sync(mask, v, lane_mask) kiln_shfl_xor((v), (lane_mask))
#define __syncwarp() kiln_wave_sync()

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = KILN_WARP / 2; o > 0; o >>= 1) {
        v += kiln_shfl_xor(v, o);
    }
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = KILN_WARP / 2; o > 0; o >>= 1) {
        v = fmaxf(v, kiln_shfl_xor(v, o));
    }
    return v;
}

/// Sum over a block of `blockDim.x` threads (a multiple of 32, ≤ 1024);
/// `scratch` holds 32 floats of shared memory. Every thread gets the sum.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & (KILN_WARP - 1);
    int warp = threadIdx.x / KILN_WARP;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    int warps = (blockDim.x + KILN_WARP - 1) / KILN_WARP;
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}
