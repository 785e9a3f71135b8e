// FP8 E4M3 W8A8: weights e4m3 bytes [N, K] with per-tensor or per-channel
// f32 scales; activations cast to e4m3 with a static, dynamic per-tensor or
// dynamic per-token scale s: xq = e4m3(x / s), and
// out[m, n] = Σ_k e4m3→f32(xq[m, k]) · e4m3→f32(w[n, k]) · s[m] · ws[n].

#define FP8_MIN_SCALE (1.0f / (448.0f * 512.0f))

// amax[m] = max |x[m, :]|; one work-group per row.
__kernel REQD_SG void fp8_row_amax(const __global uchar* x, ulong x_off, int x_dt, int K,
                                   __global float* amax, __local float* scratch) {
    size_t m = get_group_id(0), lid = get_local_id(0), nl = get_local_size(0);
    float a = 0.0f;
    for (size_t k = lid; k < (size_t)K; k += nl) a = fmax(a, fabs(ld(x + x_off, m * K + k, x_dt)));
    a = wg_max(a, scratch);
    if (lid == 0) amax[m] = a;
}

// scale[m] from amax: mode 0 static (scale = static_scale), 1 dynamic per
// tensor (max over rows), 2 dynamic per token; one work-item.
__kernel void fp8_scales(__global float* amax_scale, int M, int mode, float static_scale) {
    if (get_global_id(0) != 0) return;
    if (mode == 0) {
        for (int m = 0; m < M; m++) amax_scale[m] = static_scale;
    } else if (mode == 1) {
        float a = 0.0f;
        for (int m = 0; m < M; m++) a = fmax(a, amax_scale[m]);
        float s = fmax(a / 448.0f, FP8_MIN_SCALE);
        for (int m = 0; m < M; m++) amax_scale[m] = s;
    } else {
        for (int m = 0; m < M; m++) amax_scale[m] = fmax(amax_scale[m] / 448.0f, FP8_MIN_SCALE);
    }
}

// xq[m, k] = e4m3→f32(e4m3(x[m, k] / s[m])) as f32 (the scale is applied
// after the product); global size (K, M).
__kernel void fp8_quantize(const __global uchar* x, ulong x_off, int x_dt, int K,
                           const __global float* scale, __global float* xq) {
    size_t k = get_global_id(0), m = get_global_id(1);
    if (k >= (size_t)K) return;
    float v = ld(x + x_off, m * K + k, x_dt) / scale[m];
    xq[m * K + k] = e4m3_to_f32(f32_to_e4m3(v));
}

// out = xq · dequant(W)ᵀ · s[m] · ws (+ bias); xq f32 [M, K]; launch as gguf_gemm.
__kernel REQD_SG void fp8_gemm(const __global uchar* xq, const __global uchar* wq,
                               const __global float* wscale, int per_channel,
                               const __global float* xscale,
                               const __global uchar* bias, ulong bias_off, int bias_dt, int has_bias,
                               __global uchar* out, ulong out_off, int out_dt,
                               int M, int N, int K, int tpc) {
    __local float part[QMT * QWG];
    int lid = get_local_id(0);
    int n = get_group_id(0) * (QWG / tpc) + lid / tpc;
    int m0 = get_group_id(1) * QMT;
    float acc[QMT];
    for (int mi = 0; mi < QMT; mi++) acc[mi] = 0.0f;
    if (n < N) {
        const __global uchar* row = wq + (size_t)n * K;
        for (int c = lid % tpc; c < (K + 31) / 32; c += tpc) {
            float w[32];
            for (int j = 0; j < 32; j++) {
                int k = c * 32 + j;
                w[j] = k < K ? e4m3_to_f32(row[k]) : 0.0f;
            }
            quant_accumulate(xq, DT_F32, K, M, m0, c, w, acc);
        }
    }
    float ws = n < N ? wscale[per_channel ? n : 0] : 0.0f;
    quant_finish(acc, part, tpc, n, m0, M, N, bias, bias_off, bias_dt, has_bias,
                 out, out_off, out_dt, ws, xscale, 1);
}
