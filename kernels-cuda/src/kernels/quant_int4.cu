// AWQ / GPTQ (4- and 8-bit, act-order included) GEMM, layout "cuda-int4".
//
// The host repacks every checkpoint into one layout. Input rows are ordered
// by group (the act-order permutation, identity otherwise) and each group is
// padded with zero weights to a multiple of 32; Kp is the padded length and
// nb = Kp / 32 the blocks per output row, each inside one group:
//   qs:   bytes [N, nb, 16] (4-bit: byte i holds element i in its low nibble
//         and element i + 16 in its high nibble) or [N, nb, 32] (8-bit: byte
//         j holds element j), unsigned values;
//   sz:   u32 [N, ngroups]: f16 scale in the low, f16 zero point in the high
//         16 bits (zeros are integers, exact in f16);
//   gtab: u32 [nb]: the group of each block;
//   perm: i32 [Kp]: the input feature at each position (-1 for padding);
//         activations are gathered through it when it is not the identity.
// Element value: (q - z) · s, computed as fma(q - z, s, 0) in f32.
//
// Runtime dtype codes: 0 f32, 1 f16, 2 bf16; bias code -1 means no bias.

/// Element `i` of a buffer of runtime dtype `dt`.
__device__ __forceinline__ float iq_load_dyn(const void* p, int dt, long long i) {
    if (dt == 1) {
        return to_f32(((const kiln_f16*)p)[i]);
    }
    if (dt == 2) {
        return to_f32(((const kiln_bf16*)p)[i]);
    }
    return ((const float*)p)[i];
}

/// Store `v` as element `i` of a buffer of runtime dtype `dt`.
__device__ __forceinline__ void iq_store_dyn(void* p, int dt, long long i, float v) {
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
template <typename T> __device__ __forceinline__ float4 iq_load4(const T* p);

template <> __device__ __forceinline__ float4 iq_load4<float>(const float* p) {
    return *(const float4*)p;
}

template <> __device__ __forceinline__ float4 iq_load4<kiln_f16>(const kiln_f16* p) {
    uint2 u = *(const uint2*)p;
    float4 r;
    r.x = f16_bits_to_f32((uint16_t)(u.x & 0xffffu));
    r.y = f16_bits_to_f32((uint16_t)(u.x >> 16));
    r.z = f16_bits_to_f32((uint16_t)(u.y & 0xffffu));
    r.w = f16_bits_to_f32((uint16_t)(u.y >> 16));
    return r;
}

template <> __device__ __forceinline__ float4 iq_load4<kiln_bf16>(const kiln_bf16* p) {
    uint2 u = *(const uint2*)p;
    float4 r;
    r.x = __uint_as_float(u.x << 16);
    r.y = __uint_as_float(u.x & 0xffff0000u);
    r.z = __uint_as_float(u.y << 16);
    r.w = __uint_as_float(u.y & 0xffff0000u);
    return r;
}

/// Per-block dequantisation parameters: value = fma(byte_value - c, d, mn)
/// where byte_value is the byte read through the 2^23 magic exponent, so
/// `c` = 2^23 + zero point.
struct IqBlock {
    float d;
    float mn;
    float c;
};

/// Raw block words of row `row`, block `b`: 4 words (4-bit) or 8 words (8-bit).
template <int BITS>
__device__ __forceinline__ void iq_load_block(const uint8_t* __restrict__ qs, int row, int nb,
                                              int b, uint32_t* w) {
    if (BITS == 8) {
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

/// Scale and zero of row `row` for block `b`: group gtab[b], word
/// sz[row * ngroups + group] = f16 scale (low 16 bits) | f16 zero (high).
__device__ __forceinline__ IqBlock iq_block_params(const uint32_t* __restrict__ sz,
                                                   const uint32_t* __restrict__ gtab,
                                                   int ngroups, int row, int b) {
    uint32_t v = sz[(long long)row * ngroups + gtab[b]];
    IqBlock p;
    p.d = f16_bits_to_f32((uint16_t)(v & 0xffffu));
    p.mn = 0.0f;
    p.c = 8388608.0f + f16_bits_to_f32((uint16_t)(v >> 16));
    return p;
}

/// The four bytes holding elements 4t .. 4t+3 of a block, one value per byte.
template <int BITS>
__device__ __forceinline__ uint32_t iq_quad(const uint32_t* w, int t) {
    if (BITS == 8) {
        return w[t];
    }
    return t < 4 ? (w[t] & 0x0f0f0f0fu) : ((w[t - 4] >> 4) & 0x0f0f0f0fu);
}

/// Byte `i` of `v` as the float 2^23 + byte.
__device__ __forceinline__ float iq_magic(uint32_t v, uint32_t i) {
    return __uint_as_float(__byte_perm(v, 0x4b000000u, 0x7440u | i));
}

__device__ __forceinline__ float4 iq_dequant_quad(uint32_t v, const IqBlock& p) {
    float4 r;
    r.x = fmaf(iq_magic(v, 0) - p.c, p.d, p.mn);
    r.y = fmaf(iq_magic(v, 1) - p.c, p.d, p.mn);
    r.z = fmaf(iq_magic(v, 2) - p.c, p.d, p.mn);
    r.w = fmaf(iq_magic(v, 3) - p.c, p.d, p.mn);
    return r;
}

// ---------------------------------------------------------------------------
// Matvec / small M: one warp per output row, lanes stride over the blocks of
// the row (one 16 / 32-byte load each), MR rows of x per weight read.
// Grid (ceil(N / 4), ceil(M / MR)), block 128.

template <int BITS, typename T, int MR>
__device__ void iq_matvec(const uint8_t* __restrict__ qs, const uint32_t* __restrict__ sz,
                          const uint32_t* __restrict__ gtab, int ngroups,
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
        iq_load_block<BITS>(qs, row, nb, b, w);
        IqBlock p = iq_block_params(sz, gtab, ngroups, row, b);
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            float4 wv = iq_dequant_quad(iq_quad<BITS>(w, t), p);
#pragma unroll
            for (int m = 0; m < MR; ++m) {
                float4 xv = iq_load4<T>(xr[m] + b * 32 + 4 * t);
                float a = acc[m];
                a = fmaf(wv.x, xv.x, a);
                a = fmaf(wv.y, xv.y, a);
                a = fmaf(wv.z, xv.z, a);
                a = fmaf(wv.w, xv.w, a);
                acc[m] = a;
            }
        }
    }
    const float bv = bias_dt >= 0 ? iq_load_dyn(bias, bias_dt, row) : 0.0f;
#pragma unroll
    for (int m = 0; m < MR; ++m) {
        float s = warp_sum(acc[m]);
        if (lane == 0 && m0 + m < M) {
            iq_store_dyn(out, out_dt, (long long)(m0 + m) * N + row, s + bv);
        }
    }
}

// ---------------------------------------------------------------------------
// Larger M: 64 x 64 output tiles, 256 threads with 4 x 4 outputs each; per
// 32-wide K step (one block) x and the dequantised W tile are staged in
// shared memory as f32, transposed to [k][row]. Grid (ceil(N/64), ceil(M/64)).

#define IQ_TILE 64
#define IQ_LD 68

template <int BITS, typename T>
__device__ void iq_matmul(const uint8_t* __restrict__ qs, const uint32_t* __restrict__ sz,
                          const uint32_t* __restrict__ gtab, int ngroups,
                          const T* __restrict__ x, const void* __restrict__ bias, int bias_dt,
                          void* __restrict__ out, int out_dt, int M, int N, int K) {
    __shared__ __align__(16) float xs[32][IQ_LD];
    __shared__ __align__(16) float ws[32][IQ_LD];
    const int tid = threadIdx.x;
    const int tx = tid & 15;
    const int ty = tid >> 4;
    const int m0 = blockIdx.y * IQ_TILE;
    const int n0 = blockIdx.x * IQ_TILE;
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
        float4 a0 = iq_load4<T>(xp + b * 32);
        float4 a1 = iq_load4<T>(xp + b * 32 + 4);
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
        iq_load_block<BITS>(qs, wrow, nb, b, w);
        IqBlock p = iq_block_params(sz, gtab, ngroups, wrow, b);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int t = 2 * lq + h;
            float4 wv = iq_dequant_quad(iq_quad<BITS>(w, t), p);
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
        const float bv = bias_dt >= 0 ? iq_load_dyn(bias, bias_dt, n) : 0.0f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + ty * 4 + i;
            if (m < M) {
                iq_store_dyn(out, out_dt, (long long)m * N + n, acc[i][j] + bv);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Activation gather: y[m, p] = x[m, perm[p]] (0 where perm[p] < 0), as f32
// [M, Kp]. Grid-stride over M · Kp.

template <typename T>
__device__ void iq_gather(const T* __restrict__ x, const int* __restrict__ perm,
                          float* __restrict__ y, int M, int K, int Kp) {
    const long long total = (long long)M * Kp;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long m = i / Kp;
        const int p = (int)(i - m * Kp);
        const int src = perm[p];
        y[i] = src >= 0 ? to_f32(x[m * K + src]) : 0.0f;
    }
}

// ---------------------------------------------------------------------------
// Entry points.

#define IQ_MV(NAME, BITS, T, MR)                                                                 \
    extern "C" __global__ void __launch_bounds__(128)                                            \
        NAME(const uint8_t* qs, const uint32_t* sz, const uint32_t* gtab, int ngroups,           \
             const T* x, const void* bias, int bias_dt, void* out, int out_dt, int M, int N,     \
             int K) {                                                                            \
        iq_matvec<BITS, T, MR>(qs, sz, gtab, ngroups, x, bias, bias_dt, out, out_dt, M, N, K);   \
    }

#define IQ_MV_ALL(BITS, TNAME, T)                                                                \
    IQ_MV(int##BITS##_mv_##TNAME##_m1, BITS, T, 1)                                              \
    IQ_MV(int##BITS##_mv_##TNAME##_m2, BITS, T, 2)                                              \
    IQ_MV(int##BITS##_mv_##TNAME##_m4, BITS, T, 4)                                              \
    IQ_MV(int##BITS##_mv_##TNAME##_m8, BITS, T, 8)

#define IQ_MM(BITS, TNAME, T)                                                                    \
    extern "C" __global__ void __launch_bounds__(256)                                            \
        int##BITS##_mm_##TNAME(const uint8_t* qs, const uint32_t* sz, const uint32_t* gtab,      \
                               int ngroups, const T* x, const void* bias, int bias_dt,           \
                               void* out, int out_dt, int M, int N, int K) {                     \
        iq_matmul<BITS, T>(qs, sz, gtab, ngroups, x, bias, bias_dt, out, out_dt, M, N, K);       \
    }

#define IQ_BITS(BITS)                                                                            \
    IQ_MV_ALL(BITS, f32, float)                                                                  \
    IQ_MV_ALL(BITS, f16, kiln_f16)                                                               \
    IQ_MV_ALL(BITS, bf16, kiln_bf16)                                                             \
    IQ_MM(BITS, f32, float)                                                                      \
    IQ_MM(BITS, f16, kiln_f16)                                                                   \
    IQ_MM(BITS, bf16, kiln_bf16)

IQ_BITS(4)
IQ_BITS(8)

extern "C" __global__ void int4_gather_f32(const float* x, const int* perm, float* y, int M,
                                           int K, int Kp) {
    iq_gather<float>(x, perm, y, M, K, Kp);
}
extern "C" __global__ void int4_gather_f16(const kiln_f16* x, const int* perm, float* y, int M,
                                           int K, int Kp) {
    iq_gather<kiln_f16>(x, perm, y, M, K, Kp);
}
extern "C" __global__ void int4_gather_bf16(const kiln_bf16* x, const int* perm, float* y, int M,
                                            int K, int Kp) {
    iq_gather<kiln_bf16>(x, perm, y, M, K, Kp);
}
