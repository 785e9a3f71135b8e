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

/// Element `i` of a buffer of runtime dtype `dt`.
__device__ __forceinline__ float gq_load_dyn(const void* p, int dt, long long i) {
    if (dt == 1) {
        return to_f32(((const kiln_f16*)p)[i]);
    }
    if (dt == 2) {
        return to_f32(((const kiln_bf16*)p)[i]);
    }
    return ((const float*)p)[i];
}

/// Store `v` as element `i` of a buffer of runtime dtype `dt`.
__device__ __forceinline__ void gq_store_dyn(void* p, int dt, long long i, float v) {
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
template <typename T> __device__ __forceinline__ float4 gq_load4(const T* p);

template <> __device__ __forceinline__ float4 gq_load4<float>(const float* p) {
    return *(const float4*)p;
}

template <> __device__ __forceinline__ float4 gq_load4<kiln_f16>(const kiln_f16* p) {
    uint2 u = *(const uint2*)p;
    float4 r;
    r.x = f16_bits_to_f32((uint16_t)(u.x & 0xffffu));
    r.y = f16_bits_to_f32((uint16_t)(u.x >> 16));
    r.z = f16_bits_to_f32((uint16_t)(u.y & 0xffffu));
    r.w = f16_bits_to_f32((uint16_t)(u.y >> 16));
    return r;
}

template <> __device__ __forceinline__ float4 gq_load4<kiln_bf16>(const kiln_bf16* p) {
    uint2 u = *(const uint2*)p;
    float4 r;
    r.x = __uint_as_float(u.x << 16);
    r.y = __uint_as_float(u.x & 0xffff0000u);
    r.z = __uint_as_float(u.y << 16);
    r.w = __uint_as_float(u.y & 0xffff0000u);
    return r;
}

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
// Matvec / small M: one warp per output row, lanes stride over the blocks of
// the row (one 16 / 32-byte load each), MR rows of x per weight read.
// Grid (ceil(N / 4), ceil(M / MR)), block 128.

template <int FMT, typename T, int MR>
__device__ void gq_matvec(const uint8_t* __restrict__ qs, const void* __restrict__ dm,
                          const T* __restrict__ x, const void* __restrict__ bias, int bias_dt,
                          void* __restrict__ out, int out_dt, int M, int N, int K) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= N) {
        return;
    }
    const int m0 = blockIdx.y * MR;
    const int nb = K >> 5;
    const T* xr[MR];
#pragma unroll
    for (int m = 0; m < MR; ++m) {
        xr[m] = x + (long long)min(m0 + m, M - 1) * K;
    }
    float acc[MR];
#pragma unroll
    for (int m = 0; m < MR; ++m) {
        acc[m] = 0.0f;
    }
    for (int b = lane; b < nb; b += 32) {
        uint32_t w[8];
        gq_load_block<FMT>(qs, row, nb, b, w);
        GqBlock p = gq_block_params<FMT>(dm, row, nb, b);
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            float4 wv = gq_dequant_quad(gq_quad<FMT>(w, t), p);
#pragma unroll
            for (int m = 0; m < MR; ++m) {
                float4 xv = gq_load4<T>(xr[m] + b * 32 + 4 * t);
                float a = acc[m];
                a = fmaf(wv.x, xv.x, a);
                a = fmaf(wv.y, xv.y, a);
                a = fmaf(wv.z, xv.z, a);
                a = fmaf(wv.w, xv.w, a);
                acc[m] = a;
            }
        }
    }
    const float bv = bias_dt >= 0 ? gq_load_dyn(bias, bias_dt, row) : 0.0f;
#pragma unroll
    for (int m = 0; m < MR; ++m) {
        float s = warp_sum(acc[m]);
        if (lane == 0 && m0 + m < M) {
            gq_store_dyn(out, out_dt, (long long)(m0 + m) * N + row, s + bv);
        }
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
        float4 a0 = gq_load4<T>(xp + b * 32);
        float4 a1 = gq_load4<T>(xp + b * 32 + 4);
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
        const float bv = bias_dt >= 0 ? gq_load_dyn(bias, bias_dt, n) : 0.0f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + ty * 4 + i;
            if (m < M) {
                gq_store_dyn(out, out_dt, (long long)m * N + n, acc[i][j] + bv);
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
    extern "C" __global__ void __launch_bounds__(128)                                            \
        NAME(const uint8_t* qs, const void* dm, const T* x, const void* bias, int bias_dt,       \
             void* out, int out_dt, int M, int N, int K) {                                       \
        gq_matvec<FMT, T, MR>(qs, dm, x, bias, bias_dt, out, out_dt, M, N, K);                   \
    }

#define GQ_MV_ALL(FNAME, FMT, TNAME, T)                                                          \
    GQ_MV(gguf_mv_##FNAME##_##TNAME##_m1, FMT, T, 1)                                            \
    GQ_MV(gguf_mv_##FNAME##_##TNAME##_m2, FMT, T, 2)                                            \
    GQ_MV(gguf_mv_##FNAME##_##TNAME##_m4, FMT, T, 4)                                            \
    GQ_MV(gguf_mv_##FNAME##_##TNAME##_m8, FMT, T, 8)

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

extern "C" __global__ void gguf_to_f32_f32(const float* x, float* y, long long n) {
    gq_to_f32<float>(x, y, n);
}
extern "C" __global__ void gguf_to_f32_f16(const kiln_f16* x, float* y, long long n) {
    gq_to_f32<kiln_f16>(x, y, n);
}
extern "C" __global__ void gguf_to_f32_bf16(const kiln_bf16* x, float* y, long long n) {
    gq_to_f32<kiln_bf16>(x, y, n);
}
