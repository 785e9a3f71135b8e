// The attention core shared by paged_attention.cu and flash_attention.cu on
// AMD GPUs (prepended to both, as the CUDA backend's attention_core.cuh is):
// per-dtype 16-byte vector loads, the shared-memory (LDS) layout of a
// workgroup and `pa_core`, the online-softmax attention of a tile of query
// rows over a range of keys whose addresses an `Addr` functor gives (the
// paged cache's block tables, or dense rows).
//
// It is the CUDA core with one change that AMD hardware asks for: key/value
// tiles are staged through a single LDS buffer with ordinary 16-byte loads
// and stores. CUDA double-buffers them with cp.async, which has no AMD
// equivalent before gfx950; here the other wavefronts of the compute unit
// hide the load latency instead, and a single buffer keeps every supported
// (dtype, head dim) within the 64 KiB of LDS a workgroup may use.
// Lanes: the CUDA layout of 4 logical warps of 32 lanes (2 wavefronts on
// CDNA, 4 on RDNA wave32); see hip_prelude.h.

#define PA_THREADS 128
#define PA_WARPS 4
#define PA_KT 32

/// 16-byte global→LDS copy; `valid == false` writes zeros and reads nothing.
__device__ __forceinline__ void pa_cp16(void* dst, const void* src, bool valid) {
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (valid) {
        v = *(const uint4*)src;
    }
    *(uint4*)dst = v;
}

/// Elements of a cache type in 16 bytes, converted to f32.
template <typename T> struct PaVec;

template <> struct PaVec<float> {
    static constexpr int N = 4;
    __device__ __forceinline__ static void load(const uint4& v, float* f) {
        f[0] = __uint_as_float(v.x);
        f[1] = __uint_as_float(v.y);
        f[2] = __uint_as_float(v.z);
        f[3] = __uint_as_float(v.w);
    }
};

template <> struct PaVec<kiln_f16> {
    static constexpr int N = 8;
    __device__ __forceinline__ static void load(const uint4& v, float* f) {
        uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            f[2 * i] = f16_bits_to_f32((uint16_t)(w[i] & 0xffffu));
            f[2 * i + 1] = f16_bits_to_f32((uint16_t)(w[i] >> 16));
        }
    }
};

template <> struct PaVec<kiln_bf16> {
    static constexpr int N = 8;
    __device__ __forceinline__ static void load(const uint4& v, float* f) {
        uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            f[2 * i] = __uint_as_float(w[i] << 16);
            f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        }
    }
};

template <> struct PaVec<kiln_e4m3> {
    static constexpr int N = 16;
    __device__ __forceinline__ static void load(const uint4& v, float* f) {
        uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
#pragma unroll
            for (int b = 0; b < 4; b++) {
                f[4 * i + b] = e4m3_to_f32((uint8_t)((w[i] >> (8 * b)) & 0xffu));
            }
        }
    }
};

/// `cap · tanh(x / cap)` in f32 without the approximate tanh.
__device__ __forceinline__ float pa_softcap(float x, float cap) {
    float y = x / cap;
    float a = fabsf(y);
    float e = __expf(-2.0f * a);
    float t = (1.0f - e) / (1.0f + e);
    return cap * copysignf(t, y);
}

/// Shared-memory layout of one CTA, in bytes.
template <typename CT, int D, int MAXR> struct PaSmem {
    static constexpr int ES = (int)sizeof(CT);
    static constexpr int CPR = D * ES / 16; // 16-byte chunks per key row
    // K rows padded to an odd number of 16-byte chunks: conflict-free
    // 16-byte reads with one key per lane.
    static constexpr int KROW = (CPR % 2 == 0) ? D * ES + 16 : D * ES;
    static constexpr int VROW = D * ES;
    static constexpr int Q_OFF = 0;                                  // float [MAXR][D]
    static constexpr int K_OFF = Q_OFF + MAXR * D * 4;               // [KT][KROW]
    static constexpr int V_OFF = K_OFF + PA_KT * KROW;               // [KT][VROW]
    static constexpr int P_OFF = V_OFF + PA_KT * VROW;               // float [MAXR][KT]
    static constexpr int C_OFF = P_OFF + MAXR * PA_KT * 4;           // float [MAXR] corr
    static constexpr int M_OFF = C_OFF + MAXR * 4;                   // float [MAXR] max
    static constexpr int L_OFF = M_OFF + MAXR * 4;                   // float [MAXR] sum
    static constexpr int LO_OFF = L_OFF + MAXR * 4;                  // int [MAXR] first key
    static constexpr int HI_OFF = LO_OFF + MAXR * 4;                 // int [MAXR] last key
    static constexpr int TOK_OFF = HI_OFF + MAXR * 4;                // int [MAXR] token, -1 none
    static constexpr int HEAD_OFF = TOK_OFF + MAXR * 4;              // int [MAXR] head
    static constexpr int BYTES = HEAD_OFF + MAXR * 4;
};

/// The attention of the CTA's rows (set up in shared memory by the caller:
/// token, head, visible key range [lo, hi] per row) over keys
/// [range_lo, range_hi). `tmp_o == nullptr`: write the normalised output
/// to `out`; else write the unnormalised partial to `tmp_o` /
/// `tmp_ml` at partition `part` of `num_parts`.
template <typename QT, typename CT, int D, int MAXR, typename Addr>
__device__ __forceinline__ void pa_core(unsigned char* smem, int nrows, const QT* __restrict__ q,
                                        QT* __restrict__ out, const CT* __restrict__ kc,
                                        const CT* __restrict__ vc, Addr addr, int num_heads,
                                        int range_lo, int range_hi, float qscale, float vscale,
                                        float softcap, float* __restrict__ tmp_o,
                                        float* __restrict__ tmp_ml, int part, int num_parts) {
    typedef PaSmem<CT, D, MAXR> S;
    constexpr int RPW = MAXR / PA_WARPS;
    constexpr int EPV = PaVec<CT>::N;
    constexpr int DPT = (D + PA_THREADS - 1) / PA_THREADS;

    float* q_s = (float*)(smem + S::Q_OFF);
    unsigned char* k_s = smem + S::K_OFF;
    unsigned char* v_s = smem + S::V_OFF;
    float* p_s = (float*)(smem + S::P_OFF);
    float* c_s = (float*)(smem + S::C_OFF);
    float* m_s = (float*)(smem + S::M_OFF);
    float* l_s = (float*)(smem + S::L_OFF);
    const int* lo_s = (const int*)(smem + S::LO_OFF);
    const int* hi_s = (const int*)(smem + S::HI_OFF);
    const int* tok_s = (const int*)(smem + S::TOK_OFF);
    const int* head_s = (const int*)(smem + S::HEAD_OFF);

    const int tid = threadIdx.x;
    const int warp = tid >> 5;
    const int lane = tid & 31;

    // Queries, scaled, as f32.
    for (int i = tid; i < MAXR * D; i += PA_THREADS) {
        int r = i / D;
        int d = i - r * D;
        float v = 0.0f;
        if (r < nrows && tok_s[r] >= 0) {
            int64_t at = ((int64_t)tok_s[r] * num_heads + head_s[r]) * D + d;
            v = to_f32(q[at]) * qscale;
        }
        q_s[i] = v;
    }

    // Keys any row sees, within the range.
    int kv_lo = range_hi;
    int kv_hi = range_lo;
    for (int r = 0; r < nrows; r++) {
        if (tok_s[r] >= 0 && lo_s[r] <= hi_s[r]) {
            kv_lo = min(kv_lo, lo_s[r]);
            kv_hi = max(kv_hi, hi_s[r] + 1);
        }
    }
    kv_lo = max(kv_lo, range_lo);
    kv_hi = min(kv_hi, range_hi);
    const int ntiles = kv_hi > kv_lo ? (kv_hi - kv_lo + PA_KT - 1) / PA_KT : 0;

    const unsigned char* kb = (const unsigned char*)kc;
    const unsigned char* vb = (const unsigned char*)vc;

    // Copy tile t into the LDS buffer.
    auto stage = [&](int t) {
        int base = kv_lo + t * PA_KT;
        unsigned char* kd = k_s;
        unsigned char* vd = v_s;
        for (int i = tid; i < PA_KT * S::CPR; i += PA_THREADS) {
            int key = i / S::CPR;
            int c = i - key * S::CPR;
            int pos = base + key;
            bool valid = pos < kv_hi;
            int64_t off = valid ? addr(pos) + c * 16 : 0;
            pa_cp16(kd + key * S::KROW + c * 16, kb + off, valid);
            pa_cp16(vd + key * S::VROW + c * 16, vb + off, valid);
        }
    };

    float m_r[RPW];
    float l_r[RPW];
#pragma unroll
    for (int i = 0; i < RPW; i++) {
        m_r[i] = KILN_NEG_INF;
        l_r[i] = 0.0f;
    }
    float acc[MAXR][DPT];
#pragma unroll
    for (int r = 0; r < MAXR; r++) {
#pragma unroll
        for (int k = 0; k < DPT; k++) {
            acc[r][k] = 0.0f;
        }
    }
    // Rows this warp owns: warp, warp + 4, ...
    const int nrw = nrows > warp ? (nrows - warp + PA_WARPS - 1) / PA_WARPS : 0;

    for (int t = 0; t < ntiles; t++) {
        __syncthreads(); // the previous tile's P·V is done with the buffer and p_s
        stage(t);
        __syncthreads(); // tile t visible
        const unsigned char* kt = k_s;
        const unsigned char* vt = v_s;
        const int pos = kv_lo + t * PA_KT + lane;

        // Scores of this lane's key against the warp's rows.
        float s[RPW];
#pragma unroll
        for (int i = 0; i < RPW; i++) {
            s[i] = 0.0f;
        }
        const unsigned char* krow = kt + lane * S::KROW;
#pragma unroll 4
        for (int c = 0; c < S::CPR; c++) {
            uint4 kv = *(const uint4*)(krow + c * 16);
            float kf[EPV];
            PaVec<CT>::load(kv, kf);
#pragma unroll
            for (int i = 0; i < RPW; i++) {
                if (i < nrw) {
                    const float4* qr = (const float4*)(q_s + (warp + PA_WARPS * i) * D + c * EPV);
#pragma unroll
                    for (int e = 0; e < EPV / 4; e++) {
                        float4 qv = qr[e];
                        s[i] += qv.x * kf[4 * e] + qv.y * kf[4 * e + 1] + qv.z * kf[4 * e + 2] +
                                qv.w * kf[4 * e + 3];
                    }
                }
            }
        }
        // Online softmax per row.
#pragma unroll
        for (int i = 0; i < RPW; i++) {
            if (i < nrw) {
                int r = warp + PA_WARPS * i;
                float x = s[i];
                if (softcap > 0.0f) {
                    x = pa_softcap(x, softcap);
                }
                bool vis = tok_s[r] >= 0 && pos < kv_hi && pos >= lo_s[r] && pos <= hi_s[r];
                x = vis ? x : KILN_NEG_INF;
                float mnew = fmaxf(m_r[i], warp_max(x));
                float p = vis ? __expf(x - mnew) : 0.0f;
                float corr = (mnew == KILN_NEG_INF) ? 1.0f : __expf(m_r[i] - mnew);
                l_r[i] = l_r[i] * corr + warp_sum(p);
                m_r[i] = mnew;
                p_s[r * PA_KT + lane] = p;
                if (lane == 0) {
                    c_s[r] = corr;
                }
            }
        }
        __syncthreads(); // p_s, c_s ready

        // P·V for this thread's output elements.
#pragma unroll
        for (int k = 0; k < DPT; k++) {
            const int d = tid + k * PA_THREADS;
            if (d < D) {
#pragma unroll
                for (int r = 0; r < MAXR; r++) {
                    if (r < nrows) {
                        acc[r][k] *= c_s[r];
                    }
                }
#pragma unroll 2
                for (int j = 0; j < PA_KT; j += 4) {
                    float vv[4];
#pragma unroll
                    for (int u = 0; u < 4; u++) {
                        vv[u] = to_f32(*(const CT*)(vt + (j + u) * S::VROW + d * S::ES));
                    }
#pragma unroll
                    for (int r = 0; r < MAXR; r++) {
                        if (r < nrows) {
                            float4 p = *(const float4*)(p_s + r * PA_KT + j);
                            acc[r][k] += p.x * vv[0] + p.y * vv[1] + p.z * vv[2] + p.w * vv[3];
                        }
                    }
                }
            }
        }
    }

    // Row statistics to shared memory.
#pragma unroll
    for (int i = 0; i < RPW; i++) {
        if (i < nrw && lane == 0) {
            int r = warp + PA_WARPS * i;
            m_s[r] = m_r[i];
            l_s[r] = l_r[i];
        }
    }
    __syncthreads();

#pragma unroll
    for (int k = 0; k < DPT; k++) {
        const int d = tid + k * PA_THREADS;
        if (d < D) {
#pragma unroll
            for (int r = 0; r < MAXR; r++) {
                if (r < nrows && tok_s[r] >= 0) {
                    int64_t row = (int64_t)tok_s[r] * num_heads + head_s[r];
                    if (tmp_o == nullptr) {
                        float l = l_s[r];
                        float o = l > 0.0f ? acc[r][k] * vscale / l : 0.0f;
                        out[row * D + d] = from_f32<QT>(o);
                    } else {
                        tmp_o[(row * num_parts + part) * D + d] = acc[r][k] * vscale;
                    }
                }
            }
        }
    }
    if (tmp_o != nullptr && tid < nrows && tok_s[tid] >= 0) {
        int64_t row = (int64_t)tok_s[tid] * num_heads + head_s[tid];
        tmp_ml[(row * num_parts + part) * 2] = m_s[tid];
        tmp_ml[(row * num_parts + part) * 2 + 1] = l_s[tid];
    }
}
