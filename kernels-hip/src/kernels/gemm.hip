// Dense GEMM `out[M, N] = x[M, K] · w[N, K]ᵀ (+ bias[N])`, row-major, f32
// accumulation, the bias and the output dtype fused into the store.
//
// A workgroup of 256 threads computes a 64 × 64 tile of `out`: K advances
// in steps of 16, the x and w slices are converted to f32 into LDS
// (transposed, so the inner loop reads a column of each as contiguous
// floats), and every thread accumulates a 4 × 4 block of outputs. Loads are
// coalesced along K (16 consecutive elements of a row per 16 threads). It is
// plain SIMT code: the same on wave64 (CDNA) and wave32 (RDNA), since no
// cross-lane operation is used. Grid: x = ceil(N / 64), y = ceil(M / 64).

#define GT_BM 64
#define GT_BN 64
#define GT_BK 16
#define GT_THREADS 256

/// Element `i` of a bias of runtime dtype `dt` (0 f32, 1 f16, 2 bf16).
__device__ __forceinline__ float gt_load(const void* p, int dt, long long i) {
    if (dt == 1) {
        return to_f32(((const kiln_f16*)p)[i]);
    }
    if (dt == 2) {
        return to_f32(((const kiln_bf16*)p)[i]);
    }
    return ((const float*)p)[i];
}

template <typename T, typename O>
__device__ __forceinline__ void gemm_tiled_impl(const T* __restrict__ x, const T* __restrict__ w,
                                                const void* __restrict__ bias, int bias_dt,
                                                O* __restrict__ out, int M, int N, int K) {
    __shared__ float xs[GT_BK][GT_BM + 4];
    __shared__ float ws[GT_BK][GT_BN + 4];
    const int tid = threadIdx.x;
    const int tx = tid % 16; // output columns tx·4 .. tx·4 + 3
    const int ty = tid / 16; // output rows ty·4 .. ty·4 + 3
    const int m0 = blockIdx.y * GT_BM;
    const int n0 = blockIdx.x * GT_BN;
    float c[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            c[i][j] = 0.0f;
        }
    }
    for (int k0 = 0; k0 < K; k0 += GT_BK) {
#pragma unroll
        for (int it = 0; it < GT_BM * GT_BK / GT_THREADS; it++) {
            const int i = tid + it * GT_THREADS;
            const int r = i / GT_BK;
            const int kk = i - r * GT_BK;
            const int gk = k0 + kk;
            const int gm = m0 + r;
            const int gn = n0 + r;
            xs[kk][r] = (gm < M && gk < K) ? to_f32(x[(long long)gm * K + gk]) : 0.0f;
            ws[kk][r] = (gn < N && gk < K) ? to_f32(w[(long long)gn * K + gk]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GT_BK; kk++) {
            float a[4];
            float b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                a[i] = xs[kk][ty * 4 + i];
                b[i] = ws[kk][tx * 4 + i];
            }
#pragma unroll
            for (int i = 0; i < 4; i++) {
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    c[i][j] = fmaf(a[i], b[j], c[i][j]);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int m = m0 + ty * 4 + i;
        if (m >= M) {
            continue;
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int n = n0 + tx * 4 + j;
            if (n < N) {
                float v = c[i][j];
                if (bias != nullptr) {
                    v += gt_load(bias, bias_dt, n);
                }
                out[(long long)m * N + n] = from_f32<O>(v);
            }
        }
    }
}

#define GEMM_TILED(TN, T, ON, O)                                                                   \
    extern "C" __global__ void __launch_bounds__(GT_THREADS)                                       \
        gemm_tiled_##TN##_##ON(const T* x, const T* w, const void* bias, int bias_dt, O* out,      \
                               int M, int N, int K) {                                              \
        gemm_tiled_impl<T, O>(x, w, bias, bias_dt, out, M, N, K);                                  \
    }

#define GEMM_TILED_OUT(TN, T)                                                                      \
    GEMM_TILED(TN, T, f32, float)                                                                  \
    GEMM_TILED(TN, T, f16, kiln_f16)                                                               \
    GEMM_TILED(TN, T, bf16, kiln_bf16)

GEMM_TILED_OUT(f32, float)
GEMM_TILED_OUT(f16, kiln_f16)
GEMM_TILED_OUT(bf16, kiln_bf16)
