// Dense GEMM out[M, N] = x[M, K] · w[N, K]ᵀ (+ bias[N]), f32 accumulation.
// Tiles of 64 × 64 outputs per 16 × 16 work-group, each work-item 4 × 4
// outputs (rows and columns strided by 16 so stores coalesce), K in steps
// of 16 through local memory.

#define BM 64
#define BN 64
#define BK 16

__kernel __attribute__((reqd_work_group_size(16, 16, 1)))
void gemm(const __global uchar* x, ulong x_off, const __global uchar* w, ulong w_off, int in_dt,
          const __global uchar* bias, ulong bias_off, int bias_dt, int has_bias,
          __global uchar* out, ulong out_off, int out_dt, int M, int N, int K) {
    __local float As[BK][BM + 1];
    __local float Bs[BK][BN + 1];
    const __global uchar* xp = x + x_off;
    const __global uchar* wp = w + w_off;
    int tx = get_local_id(0), ty = get_local_id(1);
    int tid = ty * 16 + tx;
    int n0 = get_group_id(0) * BN, m0 = get_group_id(1) * BM;
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int l = tid; l < BM * BK; l += 256) {
            int r = l / BK, c = l % BK;
            int gk = k0 + c, gm = m0 + r, gn = n0 + r;
            As[c][r] = (gm < M && gk < K) ? ld(xp, (size_t)gm * K + gk, in_dt) : 0.0f;
            Bs[c][r] = (gn < N && gk < K) ? ld(wp, (size_t)gn * K + gk, in_dt) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < BK; kk++) {
            float a[4], b[4];
            for (int i = 0; i < 4; i++) a[i] = As[kk][ty + 16 * i];
            for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx + 16 * j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] = fma(a[i], b[j], acc[i][j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    __global uchar* op = out + out_off;
    for (int i = 0; i < 4; i++) {
        int m = m0 + ty + 16 * i;
        if (m >= M) continue;
        for (int j = 0; j < 4; j++) {
            int n = n0 + tx + 16 * j;
            if (n >= N) continue;
            float v = acc[i][j];
            if (has_bias) v += ld(bias + bias_off, n, bias_dt);
            st(op, (size_t)m * N + n, out_dt, v);
        }
    }
}

// Skinny GEMM for few rows (decode): a work-group of 64 work-items covers 64
// output columns and SK_ROWS rows; x's rows pass through local memory in
// chunks of SK_K, each work-item walks its own weight row. Every output is
// one fma chain over k in ascending order, exactly as in `gemm`, so a row's
// bits are the same whichever kernel computed it.

#define SK_ROWS 4
#define SK_K 256

__kernel __attribute__((reqd_work_group_size(64, 1, 1)))
void gemm_skinny(const __global uchar* x, ulong x_off, const __global uchar* w, ulong w_off, int in_dt,
                 const __global uchar* bias, ulong bias_off, int bias_dt, int has_bias,
                 __global uchar* out, ulong out_off, int out_dt, int M, int N, int K) {
    __local float xs[SK_ROWS][SK_K];
    const __global uchar* xp = x + x_off;
    const __global uchar* wp = w + w_off;
    int lid = get_local_id(0);
    int n = get_group_id(0) * 64 + lid;
    int m0 = get_group_id(1) * SK_ROWS;
    float acc[SK_ROWS];
    for (int i = 0; i < SK_ROWS; i++) acc[i] = 0.0f;
    size_t wrow = (size_t)min(n, N - 1) * K;
    for (int k0 = 0; k0 < K; k0 += SK_K) {
        int kn = min(SK_K, K - k0);
        for (int l = lid; l < SK_ROWS * SK_K; l += 64) {
            int r = l / SK_K, c = l % SK_K;
            int m = m0 + r;
            xs[r][c] = (m < M && c < kn) ? ld(xp, (size_t)m * K + k0 + c, in_dt) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        // Padded to a multiple of BK with zeros, as `gemm` pads its last tile.
        int kp = (kn + BK - 1) / BK * BK;
        for (int c = 0; c < kp; c++) {
            float b = c < kn ? ld(wp, wrow + k0 + c, in_dt) : 0.0f;
            for (int i = 0; i < SK_ROWS; i++) acc[i] = fma(xs[i][c], b, acc[i]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (n >= N) return;
    __global uchar* op = out + out_off;
    for (int i = 0; i < SK_ROWS; i++) {
        int m = m0 + i;
        if (m >= M) break;
        float v = acc[i];
        if (has_bias) v += ld(bias + bias_off, n, bias_dt);
        st(op, (size_t)m * N + n, out_dt, v);
    }
}
