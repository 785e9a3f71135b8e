// Helpers shared by the quantised-GEMM sources (NVRTC prepends this to
// quant_gguf.cu, quant_int4.cu and quant_fp8.cu): runtime-dtype loads and
// stores (codes 0 f32, 1 f16, 2 bf16) and four-wide activation loads.

/// Element `i` of a buffer of runtime dtype `dt`.
__device__ __forceinline__ float qc_load_dyn(const void* p, int dt, long long i) {
    if (dt == 1) {
        return to_f32(((const kiln_f16*)p)[i]);
    }
    if (dt == 2) {
        return to_f32(((const kiln_bf16*)p)[i]);
    }
    return ((const float*)p)[i];
}

/// Store `v` as element `i` of a buffer of runtime dtype `dt`.
__device__ __forceinline__ void qc_store_dyn(void* p, int dt, long long i, float v) {
    if (dt == 1) {
        ((kiln_f16*)p)[i] = from_f32<kiln_f16>(v);
    } else if (dt == 2) {
        ((kiln_bf16*)p)[i] = from_f32<kiln_bf16>(v);
    } else {
        ((float*)p)[i] = v;
    }
}

/// Four consecutive activations starting at `p` (16-byte aligned for f32,
/// 8-byte aligned for f16 / bf16).
template <typename T> __device__ __forceinline__ float4 qc_load4(const T* p);

template <> __device__ __forceinline__ float4 qc_load4<float>(const float* p) {
    return *(const float4*)p;
}

template <> __device__ __forceinline__ float4 qc_load4<kiln_f16>(const kiln_f16* p) {
    uint2 u = *(const uint2*)p;
    float4 r;
    r.x = f16_bits_to_f32((uint16_t)(u.x & 0xffffu));
    r.y = f16_bits_to_f32((uint16_t)(u.x >> 16));
    r.z = f16_bits_to_f32((uint16_t)(u.y & 0xffffu));
    r.w = f16_bits_to_f32((uint16_t)(u.y >> 16));
    return r;
}

template <> __device__ __forceinline__ float4 qc_load4<kiln_bf16>(const kiln_bf16* p) {
    uint2 u = *(const uint2*)p;
    float4 r;
    r.x = __uint_as_float(u.x << 16);
    r.y = __uint_as_float(u.x & 0xffff0000u);
    r.z = __uint_as_float(u.y << 16);
    r.w = __uint_as_float(u.y & 0xffff0000u);
    return r;
}
