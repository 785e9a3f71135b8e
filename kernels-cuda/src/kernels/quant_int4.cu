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
// Small M (M <= 16): a CTA of 256 threads owns IQ_MV_ROWS = 32 output rows
// (8 warps x IQ_MV_R = 4 rows) and a range of K blocks (split-K). For every
// chunk of IQ_MV_CHUNK = 32 blocks (1024 columns) the MR activation rows are
// staged once in shared memory as f32, laid out [MR][32 blocks][IQ_MV_LD = 36]
// (4 floats of padding per block keep the per-lane float4 reads free of bank
// conflicts); lane j of a warp loads block j of each of its 4 rows (one
// 16 / 32-byte load per row, consecutive lanes on consecutive bytes of the
// row) and accumulates all MR activation rows in registers, so every weight
// byte is read once for any M <= MR.
// Grid (ceil(N / 32), splits), block 256, dynamic shared MR * 32 * 36 * 4
// bytes. Split y covers blocks [y * split_chunks * 32, (y + 1) * split_chunks
// * 32). With one split the kernel writes out (+ bias); otherwise it writes
// f32 partial sums part[splits, M, N] that int4_mv_reduce adds in split
// order (deterministic).

#define IQ_MV_WARPS 8
#define IQ_MV_R 4
#define IQ_MV_ROWS (IQ_MV_WARPS * IQ_MV_R)
#define IQ_MV_CHUNK 32
#define IQ_MV_LD 36

template <int BITS, typename T, int MR>
__device__ void iq_matvec(const uint8_t* __restrict__ qs, const uint32_t* __restrict__ sz,
                          const uint32_t* __restrict__ gtab, int ngroups,
                          const T* __restrict__ x, const void* __restrict__ bias, int bias_dt,
                          void* __restrict__ out, int out_dt, float* __restrict__ part, int M,
                          int N, int K, int split_chunks) {
    extern __shared__ __align__(16) float iq_xs[];
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int nb = K >> 5;
    const int row0 = blockIdx.x * IQ_MV_ROWS + warp * IQ_MV_R;
    const int bbeg = blockIdx.y * split_chunks * IQ_MV_CHUNK;
    const int bend = min(nb, bbeg + split_chunks * IQ_MV_CHUNK);
    int rows[IQ_MV_R];
#pragma unroll
    for (int r = 0; r < IQ_MV_R; ++r) {
        rows[r] = min(row0 + r, N - 1);
    }
    float acc[MR][IQ_MV_R];
#pragma unroll
    for (int m = 0; m < MR; ++m) {
#pragma unroll
        for (int r = 0; r < IQ_MV_R; ++r) {
            acc[m][r] = 0.0f;
        }
    }
    for (int cb = bbeg; cb < bend; cb += IQ_MV_CHUNK) {
        const int b = cb + lane;
        const bool active = b < bend;
        uint32_t w[IQ_MV_R][8];
        IqBlock p[IQ_MV_R];
        if (active) {
            const uint32_t g = gtab[b];
#pragma unroll
            for (int r = 0; r < IQ_MV_R; ++r) {
                iq_load_block<BITS>(qs, rows[r], nb, b, w[r]);
                const uint32_t v = sz[(long long)rows[r] * ngroups + g];
                p[r].d = f16_bits_to_f32((uint16_t)(v & 0xffffu));
                p[r].mn = 0.0f;
                p[r].c = 8388608.0f + f16_bits_to_f32((uint16_t)(v >> 16));
            }
        }
        for (int i = tid; i < MR * IQ_MV_CHUNK * 8; i += blockDim.x) {
            const int m = i / (IQ_MV_CHUNK * 8);
            const int q = i - m * (IQ_MV_CHUNK * 8);
            const int blk = q >> 3;
            const int off = (q & 7) * 4;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (m < M && cb + blk < bend) {
                v = qc_load4<T>(x + (long long)m * K + (long long)(cb + blk) * 32 + off);
            }
            *(float4*)&iq_xs[(m * IQ_MV_CHUNK + blk) * IQ_MV_LD + off] = v;
        }
        __syncthreads();
        if (active) {
#pragma unroll
            for (int t = 0; t < 8; ++t) {
                float4 wv[IQ_MV_R];
#pragma unroll
                for (int r = 0; r < IQ_MV_R; ++r) {
                    wv[r] = iq_dequant_quad(iq_quad<BITS>(w[r], t), p[r]);
                }
#pragma unroll
                for (int m = 0; m < MR; ++m) {
                    if (m < M) {
                        const float4 xv =
                            *(const float4*)&iq_xs[(m * IQ_MV_CHUNK + lane) * IQ_MV_LD + 4 * t];
#pragma unroll
                        for (int r = 0; r < IQ_MV_R; ++r) {
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
    float* red = iq_xs + warp * (MR * IQ_MV_R);
#pragma unroll
    for (int m = 0; m < MR; ++m) {
#pragma unroll
        for (int r = 0; r < IQ_MV_R; ++r) {
            red[m * IQ_MV_R + r] = warp_sum(acc[m][r]);
        }
    }
    __syncwarp();
    for (int i = lane; i < MR * IQ_MV_R; i += 32) {
        const int m = i / IQ_MV_R;
        const int row = row0 + (i - m * IQ_MV_R);
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
__device__ void iq_mv_reduce(const float* __restrict__ part, int splits,
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
    extern "C" __global__ void __launch_bounds__(256)                                            \
        NAME(const uint8_t* qs, const uint32_t* sz, const uint32_t* gtab, int ngroups,           \
             const T* x, const void* bias, int bias_dt, void* out, int out_dt, float* part,      \
             int M, int N, int K, int split_chunks) {                                            \
        iq_matvec<BITS, T, MR>(qs, sz, gtab, ngroups, x, bias, bias_dt, out, out_dt, part, M, N, \
                               K, split_chunks);                                                 \
    }

#define IQ_MV_ALL(BITS, TNAME, T)                                                                \
    IQ_MV(int##BITS##_mv_##TNAME##_m1, BITS, T, 1)                                              \
    IQ_MV(int##BITS##_mv_##TNAME##_m2, BITS, T, 2)                                              \
    IQ_MV(int##BITS##_mv_##TNAME##_m4, BITS, T, 4)                                              \
    IQ_MV(int##BITS##_mv_##TNAME##_m8, BITS, T, 8)                                              \
    IQ_MV(int##BITS##_mv_##TNAME##_m16, BITS, T, 16)

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

extern "C" __global__ void __launch_bounds__(256)
    int4_mv_reduce(const float* part, int splits, const void* bias, int bias_dt, void* out,
                   int out_dt, int M, int N) {
    iq_mv_reduce(part, splits, bias, bias_dt, out, out_dt, M, N);
}

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
