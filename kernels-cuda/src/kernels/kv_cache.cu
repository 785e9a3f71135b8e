// write_kv (vLLM's reshape_and_cache) for the NHD cache layout: slot s of a
// cache `[num_blocks, block_size, num_kv_heads, head_dim]` is the row
// `s · num_kv_heads · head_dim` of a flat `[num_slots, kv_heads · head_dim]`
// array, so a token's K and V rows are copied contiguously. FP8 caches store
// e4m3(x / scale), the division done in f32 as the HAL defines.

template <typename I, typename C>
__device__ void write_kv_impl(const I* __restrict__ key, const I* __restrict__ value,
                              const long long* __restrict__ slots, C* __restrict__ kc,
                              C* __restrict__ vc, int row, float k_scale, float v_scale,
                              int scaled) {
    long long t = blockIdx.x;
    long long slot = slots[t];
    if (slot < 0) {
        return;
    }
    const I* ks = key + t * row;
    const I* vs = value + t * row;
    C* kd = kc + slot * row;
    C* vd = vc + slot * row;
    for (int j = threadIdx.x; j < row; j += blockDim.x) {
        float kv = to_f32(ks[j]);
        float vv = to_f32(vs[j]);
        if (scaled) {
            kv = kv / k_scale;
            vv = vv / v_scale;
        }
        kd[j] = from_f32<C>(kv);
        vd[j] = from_f32<C>(vv);
    }
}

#define WRITE_KV(NAME, I, C)                                                                    \
    extern "C" __global__ void NAME(const I* key, const I* value, const long long* slots,       \
                                    C* kc, C* vc, int row, float k_scale, float v_scale,        \
                                    int scaled) {                                               \
        write_kv_impl<I, C>(key, value, slots, kc, vc, row, k_scale, v_scale, scaled);          \
    }

#define WRITE_KV_ALL(IN, I)                                                                     \
    WRITE_KV(write_kv_##IN##_f32, I, float)                                                     \
    WRITE_KV(write_kv_##IN##_f16, I, kiln_f16)                                                  \
    WRITE_KV(write_kv_##IN##_bf16, I, kiln_bf16)                                                \
    WRITE_KV(write_kv_##IN##_f8e4m3, I, kiln_e4m3)

WRITE_KV_ALL(f32, float)
WRITE_KV_ALL(f16, kiln_f16)
WRITE_KV_ALL(bf16, kiln_bf16)
