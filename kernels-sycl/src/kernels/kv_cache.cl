// write_kv (vLLM's reshape_and_cache) into an NHD cache
// [blocks, bs, nkh, hd]: token t's row goes to slot slot_mapping[t]
// (negative = padding, skipped). FP8 caches store e4m3(x / scale).
// Global size (nkh · hd, tokens).
__kernel void write_kv(const __global uchar* key, ulong key_off, const __global uchar* value,
                       ulong value_off, int dt, const __global uchar* slots_b, ulong slots_off,
                       __global uchar* kc, __global uchar* vc, int kv_dt,
                       float k_scale, float v_scale, int row_elems) {
    size_t i = get_global_id(0), t = get_global_id(1);
    if (i >= (size_t)row_elems) return;
    long slot = ((const __global long*)(slots_b + slots_off))[t];
    if (slot < 0) return;
    size_t src = t * row_elems + i, dst = (size_t)slot * row_elems + i;
    float kv = ld(key + key_off, src, dt), vv = ld(value + value_off, src, dt);
    if (kv_dt == DT_E4M3) {
        kv /= k_scale;
        vv /= v_scale;
    }
    st(kc, dst, kv_dt, kv);
    st(vc, dst, kv_dt, vv);
}
