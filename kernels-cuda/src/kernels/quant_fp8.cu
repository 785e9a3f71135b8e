// FP8 E4M3 W8A8 GEMM, layout "cuda-fp8".
//
// Packed layout: qw E4M3 bytes [N, Kp] (rows zero-padded to Kp, a multiple
// of 32), wscale f32 [N] (a per-tensor scale repeated). Activations are
// first quantised into an f32 scratch [M, Kp] holding e4m3(x / s_m) exactly
// (zero-padded), with s_m the static, per-tensor or per-row scale; the GEMM
// then accumulates x̂ · (w · 2^-8) in f32 and scales by 256 · s_m · wscale[n].
//
// Runtime dtype codes: 0 f32, 1 f16, 2 bf16; bias code -1 means no bias.

/// The 32 E4M3 bytes of row `row`, block `b`, as 8 words.
__device__ __forceinline__ void fp_load_block(const uint8_t* __restrict__ qs, int row, int nb,
                                              int b, uint32_t* w) {
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
}

/// Two E4M3 codes in the low bytes of each 16-bit half of `v` as the f16
/// bit patterns of value · 2^-8 (exact, subnormals included; the NaN codes
/// read as ±480 · 2^-8).
__device__ __forceinline__ uint32_t fp_pair_to_f16x2(uint32_t v) {
    return ((v & 0x007f007fu) << 7) | ((v & 0x00800080u) << 8);
}

/// The four E4M3 weights of word `v` (bytes 0..3) as f32 values · 2^-8.
__device__ __forceinline__ float4 fp_dequant_quad(uint32_t v) {
    uint32_t lo = fp_pair_to_f16x2(v & 0x00ff00ffu);
    uint32_t hi = fp_pair_to_f16x2((v >> 8) & 0x00ff00ffu);
    float4 r;
    r.x = f16_bits_to_f32((uint16_t)(lo & 0xffffu));
    r.y = f16_bits_to_f32((uint16_t)(hi & 0xffffu));
    r.z = f16_bits_to_f32((uint16_t)(lo >> 16));
    r.w = f16_bits_to_f32((uint16_t)(hi >> 16));
    return r;
}

/// The activation scale of row `m`: mode 0 static (`s_static`), 1 one
/// dynamic scale for the tensor (`s[0]`), 2 one per row (`s[m]`).
__device__ __forceinline__ float fp_row_scale(const float* __restrict__ s, float s_static,
                                              int mode, int m) {
    if (mode == 0) {
        return s_static;
    }
    return s[mode == 1 ? 0 : m];
}

// ---------------------------------------------------------------------------
// Small M (M <= 16): a CTA of 256 threads owns FP_MV_ROWS = 32 output rows
// (8 warps x FP_MV_R = 4 rows) and a range of K blocks (split-K). For every
// chunk of FP_MV_CHUNK = 32 blocks (1024 columns) the MR activation rows are
// staged once in shared memory as f32, laid out [MR][32 blocks][FP_MV_LD = 36]
// (4 floats of padding per block keep the per-lane float4 reads free of bank
// conflicts); lane j of a warp loads block j of each of its 4 rows (one
// 16 / 32-byte load per row, consecutive lanes on consecutive bytes of the
// row) and accumulates all MR activation rows in registers, so every weight
// byte is read once for any M <= MR.
// Grid (ceil(N / 32), splits), block 256, dynamic shared MR * 32 * 36 * 4
// bytes. Split y covers blocks [y * split_chunks * 32, (y + 1) * split_chunks
// * 32). With one split the kernel writes out (+ bias); otherwise it writes
// f32 partial sums part[splits, M, N] that fp8_mv_reduce adds in split
// order (deterministic).

#define FP_MV_WARPS 8
#define FP_MV_R 4
#define FP_MV_ROWS (FP_MV_WARPS * FP_MV_R)
#define FP_MV_CHUNK 32
#define FP_MV_LD 36

template <int MR>
__device__ void fp_matvec(const uint8_t* __restrict__ qs, const float* __restrict__ wscale,
                          const float* __restrict__ xscale, float xs_static, int xs_mode,
                          const float* __restrict__ x, const void* __restrict__ bias, int bias_dt,
                          void* __restrict__ out, int out_dt, float* __restrict__ part, int M,
                          int N, int K, int split_chunks) {
    extern __shared__ __align__(16) float fp_xs[];
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int nb = K >> 5;
    const int row0 = blockIdx.x * FP_MV_ROWS + warp * FP_MV_R;
    const int bbeg = blockIdx.y * split_chunks * FP_MV_CHUNK;
    const int bend = min(nb, bbeg + split_chunks * FP_MV_CHUNK);
    int rows[FP_MV_R];
#pragma unroll
    for (int r = 0; r < FP_MV_R; ++r) {
        rows[r] = min(row0 + r, N - 1);
    }
    float acc[MR][FP_MV_R];
#pragma unroll
    for (int m = 0; m < MR; ++m) {
#pragma unroll
        for (int r = 0; r < FP_MV_R; ++r) {
            acc[m][r] = 0.0f;
        }
    }
    for (int cb = bbeg; cb < bend; cb += FP_MV_CHUNK) {
        const int b = cb + lane;
        const bool active = b < bend;
        uint32_t w[FP_MV_R][8];
        if (active) {
#pragma unroll
            for (int r = 0; r < FP_MV_R; ++r) {
                fp_load_block(qs, rows[r], nb, b, w[r]);
            }
        }
        for (int i = tid; i < MR * FP_MV_CHUNK * 8; i += blockDim.x) {
            const int m = i / (FP_MV_CHUNK * 8);
            const int q = i - m * (FP_MV_CHUNK * 8);
            const int blk = q >> 3;
            const int off = (q & 7) * 4;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (m < M && cb + blk < bend) {
                v = qc_load4(x + (long long)m * K + (long long)(cb + blk) * 32 + off);
            }
            *(float4*)&fp_xs[(m * FP_MV_CHUNK + blk) * FP_MV_LD + off] = v;
        }
        __syncthreads();
        if (active) {
#pragma unroll
            for (int t = 0; t < 8; ++t) {
                float4 wv[FP_MV_R];
#pragma unroll
                for (int r = 0; r < FP_MV_R; ++r) {
                    wv[r] = fp_dequant_quad(w[r][t]);
                }
#pragma unroll
                for (int m = 0; m < MR; ++m) {
                    if (m < M) {
                        const float4 xv =
                            *(const float4*)&fp_xs[(m * FP_MV_CHUNK + lane) * FP_MV_LD + 4 * t];
#pragma unroll
                        for (int r = 0; r < FP_MV_R; ++r) {
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
    float* red = fp_xs + warp * (MR * FP_MV_R);
#pragma unroll
    for (int m = 0; m < MR; ++m) {
#pragma unroll
        for (int r = 0; r < FP_MV_R; ++r) {
            red[m * FP_MV_R + r] = warp_sum(acc[m][r]);
        }
    }
    __syncwarp();
    for (int i = lane; i < MR * FP_MV_R; i += 32) {
        const int m = i / FP_MV_R;
        const int row = row0 + (i - m * FP_MV_R);
        if (m < M && row < N) {
            const float s = red[i] * 256.0f * fp_row_scale(xscale, xs_static, xs_mode, m) *
                            wscale[row];
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
__device__ void fp_mv_reduce(const float* __restrict__ part, int splits,
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

#define FP_TILE 64
#define FP_LD 68

template <int UNUSED>
__device__ void fp_matmul(const uint8_t* __restrict__ qs, const float* __restrict__ wscale,
                          const float* __restrict__ x, const float* __restrict__ xscale,
                          float xs_static, int xs_mode, const void* __restrict__ bias, int bias_dt,
                          void* __restrict__ out, int out_dt, int M, int N, int K) {
    __shared__ __align__(16) float xs[32][FP_LD];
    __shared__ __align__(16) float ws[32][FP_LD];
    const int tid = threadIdx.x;
    const int tx = tid & 15;
    const int ty = tid >> 4;
    const int m0 = blockIdx.y * FP_TILE;
    const int n0 = blockIdx.x * FP_TILE;
    const int lr = tid >> 2;
    const int lq = tid & 3;
    const int nb = K >> 5;
    const bool xvalid = m0 + lr < M;
    const float* xp = x + (long long)(xvalid ? m0 + lr : 0) * K + lq * 8;
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
        float4 a0 = qc_load4(xp + b * 32);
        float4 a1 = qc_load4(xp + b * 32 + 4);
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
        fp_load_block(qs, wrow, nb, b, w);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int t = 2 * lq + h;
            float4 wv = fp_dequant_quad(w[t]);
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
                const float rs = fp_row_scale(xscale, xs_static, xs_mode, m);
                const float v = acc[i][j] * 256.0f * rs * wscale[n];
                qc_store_dyn(out, out_dt, (long long)m * N + n, v + bv);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Activation scales. fp8_row_amax: one block per row, amax[m] = max |x[m, :]|
// (NaN ignored, as f32::max does); with `scale` non-zero it also writes the
// per-row scale max(amax / 448, min_scale). fp8_tensor_scale: one block,
// s[0] = max(max_m amax[m] / 448, min_scale).

template <typename T>
__device__ void fp_row_amax(const T* __restrict__ x, float* __restrict__ amax,
                            float* __restrict__ scale, int K, float min_scale) {
    __shared__ float red[32];
    const long long m = blockIdx.x;
    float a = 0.0f;
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        a = fmaxf(a, fabsf(to_f32(x[m * K + k])));
    }
    a = warp_max(a);
    if ((threadIdx.x & 31) == 0) {
        red[threadIdx.x >> 5] = a;
    }
    __syncthreads();
    if (threadIdx.x < 32) {
        const int warps = blockDim.x >> 5;
        float v = threadIdx.x < warps ? red[threadIdx.x] : 0.0f;
        v = warp_max(v);
        if (threadIdx.x == 0) {
            amax[m] = v;
            if (scale) {
                scale[m] = fmaxf(__fdiv_rn(v, 448.0f), min_scale);
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
    fp8_tensor_scale(const float* __restrict__ amax, float* __restrict__ scale, int M,
                     float min_scale) {
    __shared__ float red[32];
    float a = 0.0f;
    for (int m = threadIdx.x; m < M; m += blockDim.x) {
        a = fmaxf(a, amax[m]);
    }
    a = warp_max(a);
    if ((threadIdx.x & 31) == 0) {
        red[threadIdx.x >> 5] = a;
    }
    __syncthreads();
    if (threadIdx.x < 32) {
        const int warps = blockDim.x >> 5;
        float v = threadIdx.x < warps ? red[threadIdx.x] : 0.0f;
        v = warp_max(v);
        if (threadIdx.x == 0) {
            scale[0] = fmaxf(__fdiv_rn(v, 448.0f), min_scale);
        }
    }
}

// ---------------------------------------------------------------------------
// Activation quantisation: xq[m, k] = e4m3(x[m, k] / s_m) as f32 for k < K,
// 0 for K <= k < Kp. Grid-stride over M · Kp.

template <typename T>
__device__ void fp_quant_x(const T* __restrict__ x, const float* __restrict__ xscale,
                           float xs_static, int xs_mode, float* __restrict__ xq, int M, int K,
                           int Kp) {
    const long long total = (long long)M * Kp;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long m = i / Kp;
        const int k = (int)(i - m * Kp);
        float v = 0.0f;
        if (k < K) {
            const float s = fp_row_scale(xscale, xs_static, xs_mode, (int)m);
            v = e4m3_to_f32(f32_to_e4m3(__fdiv_rn(to_f32(x[m * K + k]), s)));
        }
        xq[i] = v;
    }
}

// ---------------------------------------------------------------------------
// Entry points.

#define FP_DTYPE(TNAME, T)                                                                       \
    extern "C" __global__ void __launch_bounds__(256)                                            \
        fp8_row_amax_##TNAME(const T* x, float* amax, float* scale, int K, float min_scale) {    \
        fp_row_amax<T>(x, amax, scale, K, min_scale);                                            \
    }                                                                                            \
    extern "C" __global__ void fp8_quant_x_##TNAME(const T* x, const float* xscale,              \
                                                   float xs_static, int xs_mode, float* xq,      \
                                                   int M, int K, int Kp) {                       \
        fp_quant_x<T>(x, xscale, xs_static, xs_mode, xq, M, K, Kp);                              \
    }

FP_DTYPE(f32, float)
FP_DTYPE(f16, kiln_f16)
FP_DTYPE(bf16, kiln_bf16)

#define FP_MV(MR)                                                                                \
    extern "C" __global__ void __launch_bounds__(256)                                            \
        fp8_mv_m##MR(const uint8_t* qs, const float* wscale, const float* xscale,                \
                     float xs_static, int xs_mode, const float* x, const void* bias,             \
                     int bias_dt, void* out, int out_dt, float* part, int M, int N, int K,       \
                     int split_chunks) {                                                         \
        fp_matvec<MR>(qs, wscale, xscale, xs_static, xs_mode, x, bias, bias_dt, out, out_dt,     \
                      part, M, N, K, split_chunks);                                              \
    }

FP_MV(1)
FP_MV(2)
FP_MV(4)
FP_MV(8)
FP_MV(16)

extern "C" __global__ void __launch_bounds__(256)
    fp8_mv_reduce(const float* part, int splits, const void* bias, int bias_dt, void* out,
                  int out_dt, int M, int N) {
    fp_mv_reduce(part, splits, bias, bias_dt, out, out_dt, M, N);
}

extern "C" __global__ void __launch_bounds__(256)
    fp8_mm(const uint8_t* qs, const float* wscale, const float* x, const float* xscale,
           float xs_static, int xs_mode, const void* bias, int bias_dt, void* out, int out_dt,
           int M, int N, int K) {
    fp_matmul<0>(qs, wscale, x, xscale, xs_static, xs_mode, bias, bias_dt, out, out_dt, M, N, K);
}
