// The skeleton every quantised GEMM shares. A work-group of QWG work-items
// covers `QWG / tpc` output columns and QMT rows of x: the `tpc` work-items
// of a column stride over its 32-element chunks along K, each dequantising
// one chunk into registers and multiplying it with QMT rows of x; partial
// sums then meet in local memory (or a subgroup reduction on Intel when a
// column is one subgroup). f32 accumulation throughout.

#define QWG 64
#define QMT 4

// acc[mi] += x[m0 + mi, 32c .. 32c + 31] · w[0 .. 31] (rows past M and k past K skipped).
inline void quant_accumulate(const __global uchar* xp, int x_dt, int K, int M, int m0, int c,
                             const float* w, float* acc) {
    int k0 = c * 32;
    int kn = min(32, K - k0);
    for (int mi = 0; mi < QMT; mi++) {
        int m = m0 + mi;
        if (m >= M) break;
        size_t base = (size_t)m * K + k0;
        float s = 0.0f;
        if (x_dt == DT_F32) {
            const __global float* xr = (const __global float*)xp + base;
            for (int j = 0; j < kn; j++) s = fma(xr[j], w[j], s);
        } else {
            for (int j = 0; j < kn; j++) s = fma(ld(xp, base + j, x_dt), w[j], s);
        }
        acc[mi] += s;
    }
}

// Sum the partials of each column and write out[m, n] (+ bias[n]) times
// `post_scale` (per-row scale `row_scale[m]` when has_row_scale).
inline void quant_finish(float* acc, __local float* part, int tpc, int n, int m0, int M, int N,
                         const __global uchar* bias, ulong bias_off, int bias_dt, int has_bias,
                         __global uchar* out, ulong out_off, int out_dt, float post_scale,
                         const __global float* row_scale, int has_row_scale) {
    int lid = get_local_id(0);
    int col = lid / tpc, sub = lid % tpc;
#ifdef KILN_INTEL
    if (tpc == SG_SIZE) {
        for (int mi = 0; mi < QMT; mi++) acc[mi] = sub_group_reduce_add(acc[mi]);
    } else
#endif
    {
        for (int mi = 0; mi < QMT; mi++) part[mi * QWG + lid] = acc[mi];
        barrier(CLK_LOCAL_MEM_FENCE);
        if (sub == 0) {
            for (int mi = 0; mi < QMT; mi++) {
                float s = 0.0f;
                for (int t = 0; t < tpc; t++) s += part[mi * QWG + col * tpc + t];
                acc[mi] = s;
            }
        }
    }
    if (sub != 0 || n >= N) return;
    for (int mi = 0; mi < QMT; mi++) {
        int m = m0 + mi;
        if (m >= M) break;
        float v = acc[mi] * post_scale;
        if (has_row_scale) v *= row_scale[m];
        if (has_bias) v += ld(bias + bias_off, n, bias_dt);
        st(out + out_off, (size_t)m * N + n, out_dt, v);
    }
}
