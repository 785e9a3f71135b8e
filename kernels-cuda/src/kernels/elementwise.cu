// RMS norm (+ fused residual), RoPE, SiLU-and-mul, dense embedding, add and
// the dense-GEMM epilogue. All memory-bound: one pass over the data, f32
// arithmetic, 64-bit element offsets.

/// Load element `i` of a buffer of runtime dtype `dt` (0 f32, 1 f16, 2 bf16).
__device__ __forceinline__ float load_dyn(const void* p, long long i, int dt) {
    if (dt == 0) {
        return ((const float*)p)[i];
    }
    if (dt == 1) {
        return to_f32(((const kiln_f16*)p)[i]);
    }
    return to_f32(((const kiln_bf16*)p)[i]);
}

// ---------------------------------------------------------------------------
// RMS norm: one block per row. With `residual`: r = x + residual, rounded to
// T, stored back, and normalised; else r = x.

template <typename T, typename W>
__device__ void rms_norm_impl(const T* __restrict__ x, T* residual, const W* __restrict__ weight,
                              T* out, int hidden, float eps) {
    __shared__ float red[32];
    long long row = blockIdx.x;
    const T* xr = x + row * hidden;
    T* rr = residual ? residual + row * hidden : nullptr;
    T* orow = out + row * hidden;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
        float v = to_f32(xr[j]);
        if (rr) {
            T s = from_f32<T>(v + to_f32(rr[j]));
            rr[j] = s;
            v = to_f32(s);
        }
        ss += v * v;
    }
    float total = block_sum(ss, red);
    float inv = 1.0f / sqrtf(total / (float)hidden + eps);
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
        float v = rr ? to_f32(rr[j]) : to_f32(xr[j]);
        orow[j] = from_f32<T>(v * inv * to_f32(weight[j]));
    }
}

#define RMS_NORM(NAME, T, W)                                                                    \
    extern "C" __global__ void NAME(const T* x, T* residual, const W* weight, T* out,          \
                                    int hidden, float eps) {                                    \
        rms_norm_impl<T, W>(x, residual, weight, out, hidden, eps);                             \
    }
RMS_NORM(rms_norm_f32_wf32, float, float)
RMS_NORM(rms_norm_f16_wf32, kiln_f16, float)
RMS_NORM(rms_norm_bf16_wf32, kiln_bf16, float)
RMS_NORM(rms_norm_f16_wf16, kiln_f16, kiln_f16)
RMS_NORM(rms_norm_bf16_wbf16, kiln_bf16, kiln_bf16)

// ---------------------------------------------------------------------------
// RoPE in place: one block per token; threads over (head, pair) of q then k.
// cos_sin[p] holds rot/2 cosines then rot/2 sines. Positions outside the
// table leave the token unchanged.

template <typename T>
__device__ void rope_impl(const long long* __restrict__ positions, T* q, T* k,
                          const float* __restrict__ cos_sin, int hq, int hk, int d, int rot,
                          int max_pos, int neox) {
    long long t = blockIdx.x;
    long long p = positions[t];
    if (p < 0 || p >= max_pos) {
        return;
    }
    const float* row = cos_sin + p * rot;
    int half = rot / 2;
    int pairs_q = hq * half;
    int total = (hq + hk) * half;
    for (int w = threadIdx.x; w < total; w += blockDim.x) {
        T* base;
        int i;
        if (w < pairs_q) {
            base = q + (t * hq + w / half) * d;
            i = w % half;
        } else {
            int w2 = w - pairs_q;
            base = k + (t * hk + w2 / half) * d;
            i = w2 % half;
        }
        int a = neox ? i : 2 * i;
        int b = neox ? i + half : 2 * i + 1;
        float c = row[i];
        float s = row[half + i];
        float xa = to_f32(base[a]);
        float xb = to_f32(base[b]);
        base[a] = from_f32<T>(xa * c - xb * s);
        base[b] = from_f32<T>(xb * c + xa * s);
    }
}

#define ROPE(NAME, T)                                                                           \
    extern "C" __global__ void NAME(const long long* positions, T* q, T* k,                     \
                                    const float* cos_sin, int hq, int hk, int d, int rot,       \
                                    int max_pos, int neox) {                                    \
        rope_impl<T>(positions, q, k, cos_sin, hq, hk, d, rot, max_pos, neox);                  \
    }
ROPE(rope_f32, float)
ROPE(rope_f16, kiln_f16)
ROPE(rope_bf16, kiln_bf16)

// ---------------------------------------------------------------------------
// out[t, j] = silu(x[t, j]) · x[t, I + j]; grid-stride over t·I elements.

template <typename T>
__device__ void silu_and_mul_impl(const T* __restrict__ x, T* __restrict__ out, long long rows,
                                  long long inter) {
    long long n = rows * inter;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        long long r = e / inter;
        long long j = e - r * inter;
        float a = to_f32(x[r * 2 * inter + j]);
        float b = to_f32(x[r * 2 * inter + inter + j]);
        out[e] = from_f32<T>(a / (1.0f + expf(-a)) * b);
    }
}

#define SILU(NAME, T)                                                                           \
    extern "C" __global__ void NAME(const T* x, T* out, long long rows, long long inter) {      \
        silu_and_mul_impl<T>(x, out, rows, inter);                                              \
    }
SILU(silu_and_mul_f32, float)
SILU(silu_and_mul_f16, kiln_f16)
SILU(silu_and_mul_bf16, kiln_bf16)

// ---------------------------------------------------------------------------
// Dense embedding: one block per token; ids outside [0, vocab) give zeros.

template <typename O>
__device__ void embedding_impl(const int* __restrict__ ids, const void* __restrict__ table,
                               int table_dt, O* __restrict__ out, int vocab, int hidden) {
    long long t = blockIdx.x;
    int id = ids[t];
    O* orow = out + t * hidden;
    bool ok = id >= 0 && id < vocab;
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
        float v = ok ? load_dyn(table, (long long)id * hidden + j, table_dt) : 0.0f;
        orow[j] = from_f32<O>(v);
    }
}

#define EMBEDDING(NAME, O)                                                                      \
    extern "C" __global__ void NAME(const int* ids, const void* table, int table_dt, O* out,    \
                                    int vocab, int hidden) {                                    \
        embedding_impl<O>(ids, table, table_dt, out, vocab, hidden);                            \
    }
EMBEDDING(embedding_f32, float)
EMBEDDING(embedding_f16, kiln_f16)
EMBEDDING(embedding_bf16, kiln_bf16)

// ---------------------------------------------------------------------------
// out = a + b, b either [rows, n] or one row [n] broadcast.

template <typename T>
__device__ void add_impl(const T* a, const T* b, T* out, long long rows, long long n,
                         int broadcast) {
    long long total = rows * n;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long bi = broadcast ? e % n : e;
        out[e] = from_f32<T>(to_f32(a[e]) + to_f32(b[bi]));
    }
}

#define ADD(NAME, T)                                                                            \
    extern "C" __global__ void NAME(const T* a, const T* b, T* out, long long rows,             \
                                    long long n, int broadcast) {                               \
        add_impl<T>(a, b, out, rows, n, broadcast);                                             \
    }
ADD(add_f32, float)
ADD(add_f16, kiln_f16)
ADD(add_bf16, kiln_bf16)

// ---------------------------------------------------------------------------
// Dense GEMM epilogue: out[m, n] = acc[m, n] + bias[n] (bias optional, of
// runtime dtype `bias_dt`), converted to O.

template <typename O>
__device__ void gemm_epilogue_impl(const float* __restrict__ acc, const void* __restrict__ bias,
                                   int bias_dt, O* __restrict__ out, long long m, long long n) {
    long long total = m * n;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        float v = acc[e];
        if (bias) {
            v += load_dyn(bias, e % n, bias_dt);
        }
        out[e] = from_f32<O>(v);
    }
}

#define EPILOGUE(NAME, O)                                                                       \
    extern "C" __global__ void NAME(const float* acc, const void* bias, int bias_dt, O* out,    \
                                    long long m, long long n) {                                 \
        gemm_epilogue_impl<O>(acc, bias, bias_dt, out, m, n);                                   \
    }
EPILOGUE(gemm_epilogue_f32, float)
EPILOGUE(gemm_epilogue_f16, kiln_f16)
EPILOGUE(gemm_epilogue_bf16, kiln_bf16)
