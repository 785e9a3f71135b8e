// GGUF block formats, kept in the checkpoint's byte layout (each row K / 32
// consecutive blocks): Q4_0 = f16 d + 16 B nibbles (w = (q - 8) d), Q4_1 =
// f16 d, f16 m + 16 B nibbles (w = q d + m), Q8_0 = f16 d + 32 int8
// (w = q d). Nibble j < 16 is the low half of byte j, j ≥ 16 the high half
// of byte j - 16.

#define GGUF_Q4_0 0
#define GGUF_Q4_1 1
#define GGUF_Q8_0 2

inline int gguf_block_bytes(int ty) { return ty == GGUF_Q4_0 ? 18 : ty == GGUF_Q4_1 ? 20 : 34; }

inline float gguf_half(const __global uchar* p) {
    return vload_half(0, (const __global half*)p);
}

// Dequantise block c of row n (K elements per row) into w[32].
inline void gguf_dequant(const __global uchar* wq, int ty, int n, int K, int c, float* w) {
    int bb = gguf_block_bytes(ty);
    const __global uchar* blk = wq + ((size_t)n * (K / 32) + c) * bb;
    float d = gguf_half(blk);
    if (ty == GGUF_Q8_0) {
        const __global char* qs = (const __global char*)(blk + 2);
        for (int j = 0; j < 32; j++) w[j] = (float)qs[j] * d;
    } else if (ty == GGUF_Q4_0) {
        const __global uchar* qs = blk + 2;
        for (int j = 0; j < 16; j++) {
            uchar b = qs[j];
            w[j] = (float)((int)(b & 0xf) - 8) * d;
            w[j + 16] = (float)((int)(b >> 4) - 8) * d;
        }
    } else {
        float m = gguf_half(blk + 2);
        const __global uchar* qs = blk + 4;
        for (int j = 0; j < 16; j++) {
            uchar b = qs[j];
            w[j] = (float)(b & 0xf) * d + m;
            w[j + 16] = (float)(b >> 4) * d + m;
        }
    }
}

// out[M, N] = x[M, K] · W[N, K]ᵀ (+ bias). Global size (ceil(N / cols) · QWG,
// ceil(M / QMT)), local (QWG, 1), cols = QWG / tpc.
__kernel REQD_SG void gguf_gemm(const __global uchar* x, ulong x_off, int x_dt,
                                const __global uchar* wq, int ty,
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
        for (int c = lid % tpc; c < K / 32; c += tpc) {
            float w[32];
            gguf_dequant(wq, ty, n, K, c, w);
            quant_accumulate(x + x_off, x_dt, K, M, m0, c, w, acc);
        }
    }
    quant_finish(acc, part, tpc, n, m0, M, N, bias, bias_off, bias_dt, has_bias,
                 out, out_off, out_dt, 1.0f, 0, 0);
}

// out[t, :] = dequant(W)[ids[t], :] (zeros for an id outside 0..vocab);
// global size (K / 32, tokens).
__kernel void gguf_embedding(const __global uchar* ids, ulong ids_off,
                             const __global uchar* wq, int ty,
                             __global uchar* out, ulong out_off, int out_dt, int vocab, int K) {
    int c = get_global_id(0), t = get_global_id(1);
    if (c >= K / 32) return;
    int id = ((const __global int*)(ids + ids_off))[t];
    float w[32];
    if (id >= 0 && id < vocab) {
        gguf_dequant(wq, ty, id, K, c, w);
    } else {
        for (int j = 0; j < 32; j++) w[j] = 0.0f;
    }
    for (int j = 0; j < 32; j++) st(out + out_off, (size_t)t * K + c * 32 + j, out_dt, w[j]);
}
