// AWQ and GPTQ (4- and 8-bit) after repacking on the host: one row per
// output feature, q as bytes [N, K·bits/8] (4-bit: element 2i in the low
// nibble of byte i), f32 scales and zero points [N, groups] (GPTQ's stored
// z − 1 already incremented), group of each k in g_idx [K] (act-order
// GPTQ permutes it; AWQ and plain GPTQ use k / group_size).
// w[n, k] = (q − zero[n, g]) · scale[n, g], g = g_idx[k].

// Dequantise elements 32c .. 32c + 31 of row n into w[32] (zeros past K).
inline void int_dequant(const __global uchar* qw, const __global float* sc, const __global float* zp,
                        const __global int* g_idx, int bits, int groups, int n, int K, int c,
                        float* w) {
    int k0 = c * 32;
    const __global float* srow = sc + (size_t)n * groups;
    const __global float* zrow = zp + (size_t)n * groups;
    if (bits == 4) {
        const __global uchar* row = qw + (size_t)n * (K / 2);
        for (int j = 0; j < 32; j += 2) {
            int k = k0 + j;
            if (k >= K) { w[j] = 0.0f; w[j + 1] = 0.0f; continue; }
            uchar b = row[k / 2];
            int g0 = g_idx[k], g1 = g_idx[k + 1];
            w[j] = ((float)(b & 0xf) - zrow[g0]) * srow[g0];
            w[j + 1] = ((float)(b >> 4) - zrow[g1]) * srow[g1];
        }
    } else {
        const __global uchar* row = qw + (size_t)n * K;
        for (int j = 0; j < 32; j++) {
            int k = k0 + j;
            if (k >= K) { w[j] = 0.0f; continue; }
            int g = g_idx[k];
            w[j] = ((float)row[k] - zrow[g]) * srow[g];
        }
    }
}

// out[M, N] = x[M, K] · W[N, K]ᵀ (+ bias); launch as gguf_gemm.
__kernel REQD_SG void int_gemm(const __global uchar* x, ulong x_off, int x_dt,
                               const __global uchar* qw, const __global float* sc,
                               const __global float* zp, const __global int* g_idx,
                               int bits, int groups,
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
        for (int c = lid % tpc; c < (K + 31) / 32; c += tpc) {
            float w[32];
            int_dequant(qw, sc, zp, g_idx, bits, groups, n, K, c, w);
            quant_accumulate(x + x_off, x_dt, K, M, m0, c, w, acc);
        }
    }
    quant_finish(acc, part, tpc, n, m0, M, N, bias, bias_off, bias_dt, has_bias,
                 out, out_off, out_dt, 1.0f, 0, 0);
}
