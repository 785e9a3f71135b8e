// GGUF Q4_0 / Q4_1 / Q8_0 GEMM and embedding rows, layout "cuda-gguf".
//
// Packed layout (per weight [N, K], nb = K / 32 blocks per row):
//   qs: bytes [N, nb, 16] (4-bit: byte i holds element i in its low nibble,
//       element i + 16 in its high nibble, as in the checkpoint) or
//       [N, nb, 32] (Q8_0: int8 element j at byte j);
//   dm: Q4_0 / Q8_0: f16 d [N, nb]; Q4_1: u32 [N, nb] with d in the low and
//       m in the high 16 bits.
// Element values: Q4_0 (q - 8)·d, Q4_1 q·d + m, Q8_0 q·d; all computed in
// f32 as fma(q - offset, d, m), exact for f16 d and m.
//
// Runtime dtype codes: 0 f32, 1 f16, 2 bf16; bias code -1 means no bias.

#define FMT_Q4_0 0
#define FMT_Q4_1 1
#define FMT_Q8_0 2

/// Per-block dequantisation parameters: value = fma(byte_value - c, d, mn)
/// where byte_value is the (possibly sign-flipped) byte read through the
/// 2^23 magic exponent, so `c` = 2^23 + offset.
struct GqBlock {
    float d;
    float mn;
    float c;
};

/// Raw block words of row `row`, block `b`: 4 words (4-bit) or 8 words (Q8_0).
template <int FMT>
__device__ __forceinline__ void gq_load_block(const uint8_t* __restrict__ qs, int row, int nb,
                                              int b, uint32_t* w) {
    if (FMT == FMT_Q8_0) {
        const uint4* p = (const uint4*)(qs + ((long long)row * nb + b) * 32);
        uint4 a = p[0];
        uint4 c = p[1];
        w[0] = a.x;
        w[1] = a.y;
        w[2] = a.z;
        w[3] = a.w;
        w[4] = c.x;
        w[5] = c.y;
        w[6] = c.z;
        w[7] = c.w;
    } else {
        uint4 a = *(const uint4*)(qs + ((long long)row * nb + b) * 16);
        w[0] = a.x;
        w[1] = a.y;
        w[2] = a.z;
        w[3] = a.w;
    }
}

template <int FMT>
__device__ __forceinline__ GqBlock gq_block_params(const void* __restrict__ dm, int row, int nb,
                                                   int b) {
    GqBlock p;
    long long i = (long long)row * nb + b;
    if (FMT == FMT_Q4_1) {
        uint32_t v = ((const uint32_t*)dm)[i];
        p.d = f16_bits_to_f32((uint16_t)(v & 0xffffu));
        p.mn = f16_bits_to_f32((uint16_t)(v >> 16));
        p.c = 8388608.0f;
    } else {
        p.d = f16_bits_to_f32(((const uint16_t*)dm)[i]);
        p.mn = 0.0f;
        p.c = FMT == FMT_Q4_0 ? 8388616.0f : 8388736.0f;
    }
    return p;
}

/// The four bytes holding elements 4t .. 4t+3 of a block, one value per byte
/// (0..15 for 4-bit; the int8 value + 128 for Q8_0).
template <int FMT>
__device__ __forceinline__ uint32_t gq_quad(const uint32_t* w, int t) {
    if (FMT == FMT_Q8_0) {
        return w[t] ^ 0x80808080u;
    }
    return t < 4 ? (w[t] & 0x0f0f0f0fu) : ((w[t - 4] >> 4) & 0x0f0f0f0fu);
}

/// Byte `i` of `v` as the float 2^23 + byte.
__device__ __forceinline__ float gq_magic(uint32_t v, uint32_t i) {
    return __uint_as_float(__byte_perm(v, 0x4b000000u, 0x7440u | i));
}

__device__ __forceinline__ float4 gq_dequant_quad(uint32_t v, const GqBlock& p) {
    float4 r;
    r.x = fmaf(gq_magic(v, 0) - p.c, p.d, p.mn);
    r.y = fmaf(gq_magic(v, 1) - p.c, p.d, p.mn);
    r.z = fmaf(gq_magic(v, 2) - p.c, p.d, p.mn);
    r.w = fmaf(gq_magic(v, 3) - p.c, p.d, p.mn);
    return r;
}

// ---------------------------------------------------------------------------
// Small M (M <= 16): a CTA of 256 threads owns GQ_MV_ROWS = 32 output rows
// (8 warps x GQ_MV_R = 4 rows) and a range of K blocks (split-K). For every
// chunk of GQ_MV_CHUNK = 32 blocks (1024 columns) the MR activation rows are
// staged once in shared memory as f32, laid out [MR][32 blocks][GQ_MV_LD = 36]
// (4 floats of padding per block keep the per-lane float4 reads free of bank
// conflicts); lane j of a warp loads block j of each of its 4 rows (one
// 16 / 32-byte load per row, consecutive lanes on consecutive bytes of the
// row) and accumulates all MR activation rows in registers, so every weight
// byte is read once for any M <= MR.
// Grid (ceil(N / 32), splits), block 256, dynamic shared MR * 32 * 36 * 4
// bytes. Split y covers blocks [y * split_chunks * 32, (y + 1) * split_chunks
// * 32). With one split the kernel writes out (+ bias); otherwise it writes
// f32 partial sums part[splits, M, N] that gguf_mv_reduce adds in split
// order (deterministic).

#define GQ_MV_WARPS 8
#define GQ_MV_R 4
#define GQ_MV_ROWS (GQ_MV_WARPS * GQ_MV_R)
#define GQ_MV_CHUNK 32
#define GQ_MV_LD 36

template <int FMT, typename T, int MR>
__device__ void gq_matvec(const uint8_t* __restrict__ qs, const void* __restrict__ dm,
                          const T* __restrict__ x, const void* __restrict__ bias, int bias_dt,
                          void* __restrict__ out, int out_dt, float* __restrict__ part, int M,
                          int N, int K, int split_chunks) {
    extern __shared__ __align__(16) float gq_xs[];
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int nb = K >> 5;
    const int row0 = blockIdx.x * GQ_MV_ROWS + warp * GQ_MV_R;
    const int bbeg = blockIdx.y * split_chunks * GQ_MV_CHUNK;
    const int bend = min(nb, bbeg + split_chunks * GQ_MV_CHUNK);
    int rows[GQ_MV_R];
#pragma unroll
    for (int r = 0; r < GQ_MV_R; ++r) {
        rows[r] = min(row0 + r, N - 1);
    }
    float acc[MR][GQ_MV_R];
#pragma unroll
    for (int m = 0; m < MR; ++m) {
#pragma unroll
        for (int r = 0; r < GQ_MV_R; ++r) {
            acc[m][r] = 0.0f;
        }
    }
    for (int cb = bbeg; cb < bend; cb += GQ_MV_CHUNK) {
        const int b = cb + lane;
        const bool active = b < bend;
        uint32_t w[GQ_MV_R][8];
        GqBlock p[GQ_MV_R];
        if (active) {
#pragma unroll
            for (int r = 0; r < GQ_MV_R; ++r) {
                gq_load_block<FMT>(qs, rows[r], nb, b, w[r]);
                p[r] = gq_block_params<FMT>(dm, rows[r], nb, b);
            }
        }
        for (int i = tid; i < MR * GQ_MV_CHUNK * 8; i += blockDim.x) {
            const int m = i / (GQ_MV_CHUNK * 8);
            const int q = i - m * (GQ_MV_CHUNK * 8);
            const int blk = q >> 3;
            const int off = (q & 7) * 4;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (m < M && cb + blk < bend) {
                v = qc_load4<T>(x + (long long)m * K + (long long)(cb + blk) * 32 + off);
            }
            *(float4*)&gq_xs[(m * GQ_MV_CHUNK + blk) * GQ_MV_LD + off] = v;
        }
        __syncthreads();
        if (active) {
#pragma unroll
            for (int t = 0; t < 8; ++t) {
                float4 wv[GQ_MV_R];
#pragma unroll
                for (int r = 0; r < GQ_MV_R; ++r) {
                    wv[r] = gq_dequant_quad(gq_quad<FMT>(w[r], t), p[r]);
                }
#pragma unroll
                for (int m = 0; m < MR; ++m) {
                    if (m < M) {
                        const float4 xv =
                            *(const float4*)&gq_xs[(m * GQ_MV_CHUNK + lane) * GQ_MV_LD + 4 * t];
#pragma unroll
                        for (int r = 0; r < GQ_MV_R; ++r) {
                            float a = acc[m][r];
                            a = fmaf(wv[r].x, xv.x, a);
                            a = fmaf(wv[r].y, xv.y, a);
                            a = fmaf(wv[r].z, xv.z, a);
                            a = fmaf(wv[r].w, xv.w, a);
                            acc[m][r] = a;
                        }
                    }
                }
            }
        }
        __syncthreads();
    }
    // Warp sums (every lane holds them) go through shared memory so that
    // lanes store different outputs.
    float* red = gq_xs + warp * (MR * GQ_MV_R);
#pragma unroll
    for (int m = 0; m < MR; ++m) {
#pragma unroll
        for (int r = 0; r < GQ_MV_R; ++r) {
            red[m * GQ_MV_R + r] = warp_sum(acc[m][r]);
        }
    }
    __syncwarp();
    for (int i = lane; i < MR * GQ_MV_R; i += 32) {
        const int m = i / GQ_MV_R;
        const int row = row0 + (i - m * GQ_MV_R);
        if (m < M && row < N) {
            const float s = red[i];
            if (gridDim.y == 1) {
                const float bv = bias_dt >= 0 ? qc_load_dyn(bias, bias_dt, row) : 0.0f;
                qc_store_dyn(out, out_dt, (long long)m * N + row, s + bv);
            } else {
                part[((long long)blockIdx.y * M + m) * N + row] = s;
            }
        }
    }
}

/// out[m, n] = sum over splits s (in order) of part[s, m, n] + bias[n].
/// Grid-stride over M * N.
__device__ void gq_mv_reduce(const float* __restrict__ part, int splits,
                             const void* __restrict__ bias, int bias_dt, void* __restrict__ out,
                             int out_dt, int M, int N) {
    const long long total = (long long)M * N;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int sp = 0; sp < splits; ++sp) {
            s += part[(long long)sp * total + i];
        }
        const int n = (int)(i % N);
        const float bv = bias_dt >= 0 ? qc_load_dyn(bias, bias_dt, n) : 0.0f;
        qc_store_dyn(out, out_dt, i, s + bv);
    }
}

// ---------------------------------------------------------------------------
// Larger M: 64 x 64 output tiles, 256 threads with 4 x 4 outputs each; per
// 32-wide K step (one block) x and the dequantised W tile are staged in
// shared memory as f32, transposed to [k][row]. Grid (ceil(N/64), ceil(M/64)).

#define GQ_TILE 64
#define GQ_LD 68

template <int FMT, typename T>
__device__ void gq_matmul(const uint8_t* __restrict__ qs, const void* __restrict__ dm,
                          const T* __restrict__ x, const void* __restrict__ bias, int bias_dt,
                          void* __restrict__ out, int out_dt, int M, int N, int K) {
    __shared__ __align__(16) float xs[32][GQ_LD];
    __shared__ __align__(16) float ws[32][GQ_LD];
    const int tid = threadIdx.x;
    const int tx = tid & 15;
    const int ty = tid >> 4;
    const int m0 = blockIdx.y * GQ_TILE;
    const int n0 = blockIdx.x * GQ_TILE;
    const int lr = tid >> 2;
    const int lq = tid & 3;
    const int nb = K >> 5;
    const bool xvalid = m0 + lr < M;
    const T* xp = x + (long long)(xvalid ? m0 + lr : 0) * K + lq * 8;
    const bool wvalid = n0 + lr < N;
    const int wrow = wvalid ? n0 + lr : 0;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            acc[i][j] = 0.0f;
        }
    }
    for (int b = 0; b < nb; ++b) {
        float4 a0 = qc_load4<T>(xp + b * 32);
        float4 a1 = qc_load4<T>(xp + b * 32 + 4);
        if (!xvalid) {
            a0 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            a1 = a0;
        }
        xs[lq * 8 + 0][lr] = a0.x;
        xs[lq * 8 + 1][lr] = a0.y;
        xs[lq * 8 + 2][lr] = a0.z;
        xs[lq * 8 + 3][lr] = a0.w;
        xs[lq * 8 + 4][lr] = a1.x;
        xs[lq * 8 + 5][lr] = a1.y;
        xs[lq * 8 + 6][lr] = a1.z;
        xs[lq * 8 + 7][lr] = a1.w;
        uint32_t w[8];
        gq_load_block<FMT>(qs, wrow, nb, b, w);
        GqBlock p = gq_block_params<FMT>(dm, wrow, nb, b);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int t = 2 * lq + h;
            float4 wv = gq_dequant_quad(gq_quad<FMT>(w, t), p);
            if (!wvalid) {
                wv = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
            ws[4 * t + 0][lr] = wv.x;
            ws[4 * t + 1][lr] = wv.y;
            ws[4 * t + 2][lr] = wv.z;
            ws[4 * t + 3][lr] = wv.w;
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < 32; ++kk) {
            float4 av = *(const float4*)&xs[kk][ty * 4];
            float4 bv = *(const float4*)&ws[kk][tx * 4];
            float a[4] = {av.x, av.y, av.z, av.w};
            float c[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
            for (int i = 0; i < 4; ++i) {
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    acc[i][j] = fmaf(a[i], c[j], acc[i][j]);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int n = n0 + tx * 4 + j;
        if (n >= N) {
            continue;
        }
        const float bv = bias_dt >= 0 ? qc_load_dyn(bias, bias_dt, n) : 0.0f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + ty * 4 + i;
            if (m < M) {
                qc_store_dyn(out, out_dt, (long long)m * N + n, acc[i][j] + bv);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Embedding rows: out[t, :] = dequant(W)[ids[t], :]; an id outside [0, N)
// writes a row of zeros. Grid (num_tokens), block 256.

template <int FMT, typename O>
__device__ void gq_embed(const uint8_t* __restrict__ qs, const void* __restrict__ dm,
                         const int* __restrict__ ids, O* __restrict__ out, int N, int K) {
    const long long t = blockIdx.x;
    const int id = ids[t];
    const bool valid = id >= 0 && id < N;
    const int nb = K >> 5;
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        float v = 0.0f;
        if (valid) {
            const int b = k >> 5;
            const int j = k & 31;
            GqBlock p = gq_block_params<FMT>(dm, id, nb, b);
            float q;
            if (FMT == FMT_Q8_0) {
                q = (float)(int)(signed char)qs[((long long)id * nb + b) * 32 + j];
                v = q * p.d;
            } else {
                uint32_t byte = qs[((long long)id * nb + b) * 16 + (j & 15)];
                uint32_t nib = j < 16 ? (byte & 15u) : (byte >> 4);
                q = (float)(int)nib - (FMT == FMT_Q4_0 ? 8.0f : 0.0f);
                v = fmaf(q, p.d, p.mn);
            }
        }
        out[t * K + k] = from_f32<O>(v);
    }
}

// ---------------------------------------------------------------------------
// Activations to contiguous f32 (used when x is not aligned for vector loads).

template <typename T>
__device__ void gq_to_f32(const T* __restrict__ x, float* __restrict__ y, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        y[i] = to_f32(x[i]);
    }
}

// ---------------------------------------------------------------------------
// Entry points.

#define GQ_MV(NAME, FMT, T, MR)                                                                  \
    extern "C" __global__ void __launch_bounds__(256)                                            \
        NAME(const uint8_t* qs, const void* dm, const T* x, const void* bias, int bias_dt,       \
             void* out, int out_dt, float* part, int M, int N, int K, int split_chunks) {        \
        gq_matvec<FMT, T, MR>(qs, dm, x, bias, bias_dt, out, out_dt, part, M, N, K,              \
                              split_chunks);                                                     \
    }

#define GQ_MV_ALL(FNAME, FMT, TNAME, T)                                                          \
    GQ_MV(gguf_mv_##FNAME##_##TNAME##_m1, FMT, T, 1)                                            \
    GQ_MV(gguf_mv_##FNAME##_##TNAME##_m2, FMT, T, 2)                                            \
    GQ_MV(gguf_mv_##FNAME##_##TNAME##_m4, FMT, T, 4)                                            \
    GQ_MV(gguf_mv_##FNAME##_##TNAME##_m8, FMT, T, 8)                                            \
    GQ_MV(gguf_mv_##FNAME##_##TNAME##_m16, FMT, T, 16)

#define GQ_MM(FNAME, FMT, TNAME, T)                                                              \
    extern "C" __global__ void __launch_bounds__(256)                                            \
        gguf_mm_##FNAME##_##TNAME(const uint8_t* qs, const void* dm, const T* x,                 \
                                  const void* bias, int bias_dt, void* out, int out_dt, int M,   \
                                  int N, int K) {                                                \
        gq_matmul<FMT, T>(qs, dm, x, bias, bias_dt, out, out_dt, M, N, K);                       \
    }

#define GQ_EMBED(FNAME, FMT, ONAME, O)                                                           \
    extern "C" __global__ void gguf_embed_##FNAME##_##ONAME(                                    \
        const uint8_t* qs, const void* dm, const int* ids, O* out, int N, int K) {              \
        gq_embed<FMT, O>(qs, dm, ids, out, N, K);                                                \
    }

#define GQ_FORMAT(FNAME, FMT)                                                                    \
    GQ_MV_ALL(FNAME, FMT, f32, float)                                                            \
    GQ_MV_ALL(FNAME, FMT, f16, kiln_f16)                                                         \
    GQ_MV_ALL(FNAME, FMT, bf16, kiln_bf16)                                                       \
    GQ_MM(FNAME, FMT, f32, float)                                                                \
    GQ_MM(FNAME, FMT, f16, kiln_f16)                                                             \
    GQ_MM(FNAME, FMT, bf16, kiln_bf16)                                                           \
    GQ_EMBED(FNAME, FMT, f32, float)                                                             \
    GQ_EMBED(FNAME, FMT, f16, kiln_f16)                                                          \
    GQ_EMBED(FNAME, FMT, bf16, kiln_bf16)

GQ_FORMAT(q4_0, FMT_Q4_0)
GQ_FORMAT(q4_1, FMT_Q4_1)
GQ_FORMAT(q8_0, FMT_Q8_0)

extern "C" __global__ void __launch_bounds__(256)
    gguf_mv_reduce(const float* part, int splits, const void* bias, int bias_dt, void* out,
                   int out_dt, int M, int N) {
    gq_mv_reduce(part, splits, bias, bias_dt, out, out_dt, M, N);
}

extern "C" __global__ void gguf_to_f32_f32(const float* x, float* y, long long n) {
    gq_to_f32<float>(x, y, n);
}
extern "C" __global__ void gguf_to_f32_f16(const kiln_f16* x, float* y, long long n) {
    gq_to_f32<kiln_f16>(x, y, n);
}
extern "C" __global__ void gguf_to_f32_bf16(const kiln_bf16* x, float* y, long long n) {
    gq_to_f32<kiln_bf16>(x, y, n);
}
