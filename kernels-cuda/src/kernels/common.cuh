// Kiln CUDA prelude, prepended to every kernel source before NVRTC compiles
// it. It needs no CUDA header: fixed-width integer types, the storage types
// of the three activation dtypes and exact conversions through PTX, so the
// kernels compile with nothing but libnvrtc (CI compile-checks them that way).
//
// Storage types: `float` (F32), `kiln_f16` (F16 bits), `kiln_bf16` (BF16
// bits), `unsigned char` (F8E4M3 bits). Every kernel computes in f32.

typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;

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

__device__ __forceinline__ float to_f32(kiln_f16 v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.x));
    return f;
}

__device__ __forceinline__ float to_f32(kiln_bf16 v) {
    return __uint_as_float(((uint32_t)v.x) << 16);
}

__device__ __forceinline__ float f16_bits_to_f32(uint16_t bits) {
    kiln_f16 h;
    h.x = bits;
    return to_f32(h);
}

/// Round-to-nearest-even conversion from f32 to a storage type.
template <typename T> __device__ __forceinline__ T from_f32(float f);

template <> __device__ __forceinline__ float from_f32<float>(float f) { return f; }

template <> __device__ __forceinline__ kiln_f16 from_f32<kiln_f16>(float f) {
    kiln_f16 r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.x) : "f"(f));
    return r;
}

template <> __device__ __forceinline__ kiln_bf16 from_f32<kiln_bf16>(float f) {
    // Software RNE (NaN kept quiet) so the prelude does not depend on sm_80's
    // cvt.rn.bf16.f32; identical results.
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

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    return v;
}

/// Sum over a block of `blockDim.x` threads (a multiple of 32, ≤ 1024);
/// `scratch` holds 32 floats of shared memory. Every thread gets the sum.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}
