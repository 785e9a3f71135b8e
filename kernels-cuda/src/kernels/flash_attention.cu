// Dense varlen attention (FlashAttention-2 API): queries [total_q, H, D],
// keys and values [total_k, Hkv, D], sequences delimited by cu_seqlens.
//
// One CTA (128 threads, 4 warps) handles one sequence, one KV head, a tile
// of query rows (query token × query head of the KV head's group, at most
// MAXR rows) and all keys any of its rows sees. Keys are streamed in tiles of
// 32 with cp.async double buffering into shared memory and an online
// softmax (f32) runs over the tiles:
//   scores: warp w takes rows w, w+4, ...; lane j takes key j of the tile;
//   P·V:    thread t owns output elements d = t and d = t + 128 of all rows.
// Causal masking is bottom-right aligned (query i of Lq sees key j of Lk iff
// j ≤ i + Lk − Lq); a sliding window w keeps keys j > i + Lk − Lq − w; a
// query that sees no key writes zeros.

/// Key position (within the sequence) → byte offset of its row.
struct DenseAddr {
    int64_t k0; // first key row of the sequence
    int num_kv_heads;
    int kvh;
    int row_bytes; // D · sizeof(element)
    __device__ __forceinline__ int64_t operator()(int pos) const {
        return ((k0 + pos) * num_kv_heads + kvh) * (int64_t)row_bytes;
    }
};

/// Grid: x = batch · qtiles, y = num_kv_heads · head_tiles. Block: 128
/// threads; dynamic shared memory PaSmem::BYTES. A CTA takes query rows
/// [qt·tpt, qt·tpt + tpt) of its sequence and heads [ht·hpc, ht·hpc + hpc)
/// of its KV head's group. `window` < 0: none; `softcap` ≤ 0: none.
template <typename T, int D, int MAXR>
__device__ __forceinline__ void
flash_attention_impl(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                     T* __restrict__ out, const int* __restrict__ cu_q,
                     const int* __restrict__ cu_k, int num_heads, int num_kv_heads, int tpt,
                     int hpc, int head_tiles, int qtiles, int causal, float scale, float softcap,
                     int window) {
    extern __shared__ __align__(16) unsigned char pa_smem[];
    typedef PaSmem<T, D, MAXR> S;
    const int b = blockIdx.x / qtiles;
    const int qt = blockIdx.x - b * qtiles;
    const int kvh = blockIdx.y / head_tiles;
    const int ht = blockIdx.y - kvh * head_tiles;

    const int q0 = cu_q[b];
    const int lq = cu_q[b + 1] - q0;
    const int k0 = cu_k[b];
    const int lk = cu_k[b + 1] - k0;
    if (qt * tpt >= lq) {
        return; // uniform over the CTA
    }
    const int group = num_heads / num_kv_heads;
    const int nrows = tpt * hpc;

    int* lo_s = (int*)(pa_smem + S::LO_OFF);
    int* hi_s = (int*)(pa_smem + S::HI_OFF);
    int* tok_s = (int*)(pa_smem + S::TOK_OFF);
    int* head_s = (int*)(pa_smem + S::HEAD_OFF);
    if (threadIdx.x < nrows) {
        int r = threadIdx.x;
        int ti = r / hpc;
        int g = ht * hpc + (r - ti * hpc);
        int i = qt * tpt + ti;
        bool valid = i < lq && g < group;
        int a = i + lk - lq; // bottom-right aligned position
        int lo = 0;
        int hi = lk - 1;
        if (causal) {
            hi = min(a, lk - 1); // a < 0: empty
        }
        if (window >= 0 && a >= 0) {
            lo = max(0, a + 1 - window);
        }
        tok_s[r] = valid ? q0 + i : -1;
        head_s[r] = kvh * group + g;
        lo_s[r] = lo;
        hi_s[r] = hi;
    }
    __syncthreads();

    DenseAddr addr;
    addr.k0 = k0;
    addr.num_kv_heads = num_kv_heads;
    addr.kvh = kvh;
    addr.row_bytes = D * (int)sizeof(T);

    pa_core<T, T, D, MAXR>(pa_smem, nrows, q, out, k, v, addr, num_heads, 0, lk, scale, 1.0f,
                           softcap, (float*)nullptr, (float*)nullptr, 0, 1);
}

#define FA_MAXR 16

#define FA_ENTRY(N, T, D)                                                                          \
    extern "C" __global__ void __launch_bounds__(PA_THREADS) flash_attention_##N##_hd##D(          \
        const T* q, const T* k, const T* v, T* out, const int* cu_q, const int* cu_k,              \
        int num_heads, int num_kv_heads, int tpt, int hpc, int head_tiles, int qtiles, int causal, \
        float scale, float softcap, int window) {                                                  \
        flash_attention_impl<T, D, FA_MAXR>(q, k, v, out, cu_q, cu_k, num_heads, num_kv_heads,     \
                                            tpt, hpc, head_tiles, qtiles, causal, scale, softcap,  \
                                            window);                                               \
    }

#define FA_ALL_TYPES(D)                                                                            \
    FA_ENTRY(f32, float, D)                                                                        \
    FA_ENTRY(f16, kiln_f16, D)                                                                     \
    FA_ENTRY(bf16, kiln_bf16, D)

FA_ALL_TYPES(64)
FA_ALL_TYPES(80)
FA_ALL_TYPES(96)
FA_ALL_TYPES(128)
FA_ALL_TYPES(256)

// ---------------------------------------------------------------------------
// Tensor-core FlashAttention-2 (f16 / bf16, head dims 64, 80, 96, 128, 256).
//
// Grid (query tiles × num_heads, batch), 128 threads; x enumerates the
// (query tile, head) pairs head fastest with the last query tile first, so
// the CTAs with the most causal work start first across all heads (and the
// heads of one KV group run side by side, sharing its K/V in L2). A CTA
// owns FM_BM = 64 query rows of one (sequence, head); warp w owns rows
// 16w..16w+15. Keys and
// values of the head's KV head (h / group) stream through shared memory in
// tiles of FmCfg::BN keys (64; 32 at head dim 256), cp.async double
// buffered (K of the next tile loads during this tile's Q·Kᵀ, V of the next
// during P·V). Shared-memory rows are padded by 16 bytes: a row is an odd
// number of 16-byte chunks, so the 8 row addresses of every ldmatrix phase
// fall in 8 distinct bank groups. At head dims ≤ 128 the Q fragments live
// in registers after the first tile, so the Q tile is staged in the second
// V buffer (first written by the prefetch of tile 1's V, after a barrier
// that follows every warp's Q ldmatrix): 4 K/V tiles of shared memory,
// three CTAs per SM at head dim 128.
//
// S = Q·Kᵀ and O += P·V use mma.sync.m16n8k16 (f32 accumulate). Fragment
// layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16" with .f16/.bf16):
// g = lane / 4 (groupID), t = lane % 4 (thread in group); a 32-bit register
// holds two 16-bit elements, the lower-indexed one in the low half.
//   A (16×16, row-major), a0..a3:   a0 = A[g][2t, 2t+1]    a1 = A[g+8][2t, 2t+1]
//                                   a2 = A[g][2t+8, 2t+9]  a3 = A[g+8][2t+8, 2t+9]
//   B (16×8, k × n), b0, b1:        b0 = B[2t, 2t+1][g]    b1 = B[2t+8, 2t+9][g]
//   C (16×8, f32), c0..c3:          c0, c1 = C[g][2t, 2t+1]   c2, c3 = C[g+8][2t, 2t+1]
// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8×8 matrix i; lane
// L receives in register i row L/4, columns 2(L%4), 2(L%4)+1 of matrix i
// (with .trans: rows 2(L%4), 2(L%4)+1 of column L/4).
//   Q (A of S):  lane L addresses row L%16, column 8·(L/16) of the 16×16
//                block: matrices (rows 0-7, k 0-7), (8-15, 0-7), (0-7, 8-15),
//                (8-15, 8-15) → a0..a3.
//   K (B of S, K stored [key][d] = Bᵀ row-major, no transpose): lane L
//                addresses key 8·(L/16) + L%8, column 8·((L/8)%2): matrices
//                (keys 0-7, d 0-7) → b0 and (keys 0-7, d 8-15) → b1 of the
//                first n-tile; keys 8-15 likewise → b0, b1 of the second.
//   V (B of P·V, V stored [key][d] = B row-major, .trans): lane L addresses
//                key 8·((L/8)%2) + L%8, column 8·(L/16): matrices (keys 0-7,
//                d 0-7) → b0, (keys 8-15, d 0-7) → b1 of the first d-tile;
//                columns 8-15 likewise → b0, b1 of the second.
//   P (A of P·V) is S's accumulator, converted: for keys 16k..16k+15,
//                a0 = S-tile 2k (c0, c1), a1 = S-tile 2k (c2, c3),
//                a2 = S-tile 2k+1 (c0, c1), a3 = S-tile 2k+1 (c2, c3).
// So each thread owns rows g and g+8 of its warp's 16 and, per 8-wide
// tile, columns 2t and 2t+1: row statistics reduce over the 4 threads of a
// quad (shfl_xor 1, 2).
//
// Softmax runs in f32 in the log2 domain (scores × scale × log2 e, or the
// soft-capped score × log2 e); P is rounded to the input dtype for P·V (the
// row sum uses the unrounded P). Masked scores are −inf; a row whose
// running max is still −inf uses 0 as its max, so it keeps l = 0, O = 0 and
// writes zeros.
// ---------------------------------------------------------------------------

#define FM_THREADS 128
#define FM_BM 64

template <int D> struct FmCfg {
    static constexpr int BN = D > 128 ? 32 : 64; // keys per tile
    static constexpr int STRIDE = D + 8;         // padded row, in elements
    static constexpr int CPR = D / 8;            // 16-byte chunks per row
    static constexpr int KT = D / 16;            // k-steps of Q·Kᵀ
    static constexpr int NT = BN / 8;            // 8-key tiles of S
    static constexpr int DT = D / 8;             // 8-column tiles of O
    static constexpr bool Q_REGS = D <= 128;     // Q fragments held in registers
    static constexpr int TILE = BN * STRIDE * 2;  // bytes of one K or V tile
    // Q_REGS: Q staged in V buffer 1; else Q first, then K and V.
    static constexpr int K_OFF = Q_REGS ? 0 : FM_BM * STRIDE * 2;
    static constexpr int V_OFF = K_OFF + 2 * TILE;
    static constexpr int Q_OFF = Q_REGS ? V_OFF + TILE : 0;
    static constexpr int BYTES = V_OFF + 2 * TILE;
    // CTAs per SM the register budget must allow (launch bounds): at head
    // dims 80–128 three CTAs (≤ 168 registers) fit the shared memory too.
    static constexpr int MIN_BLOCKS = D <= 64 ? 4 : (D <= 128 ? 3 : 1);
    static_assert(!Q_REGS || BN >= FM_BM, "the Q tile must fit one V buffer");
};

__device__ __forceinline__ void fm_ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                           uint32_t& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

__device__ __forceinline__ void fm_ldsm_x4_trans(uint32_t addr, uint32_t& r0, uint32_t& r1,
                                                 uint32_t& r2, uint32_t& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

/// D (16×8 f32) += A (16×16) · B (16×8), A and B in the 16-bit type T.
template <typename T> struct FmMma;

template <> struct FmMma<kiln_f16> {
    __device__ __forceinline__ static void run(float* c, const uint32_t* a, uint32_t b0,
                                               uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
                     "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    /// Two f32 to a register of two f16 (RNE): `lo` in the low half.
    __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
        uint32_t r;
        asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
};

template <> struct FmMma<kiln_bf16> {
    __device__ __forceinline__ static void run(float* c, const uint32_t* a, uint32_t b0,
                                               uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
                     "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    /// Two f32 to a register of two bf16 (RNE): `lo` in the low half.
    __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
        uint32_t r;
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
};

/// Copy `ROWS` rows of `D` 16-bit elements into padded shared rows: row r
/// comes from `src + r · row_stride` (bytes) when r < `valid_rows`, else
/// is zero-filled.
template <int D, int ROWS>
__device__ __forceinline__ void fm_load_rows(unsigned char* dst, const unsigned char* src,
                                             int64_t row_stride, int valid_rows) {
    typedef FmCfg<D> C;
#pragma unroll
    for (int c = threadIdx.x; c < ROWS * C::CPR; c += FM_THREADS) {
        const int r = c / C::CPR;
        const int ch = c - r * C::CPR;
        const bool valid = r < valid_rows;
        const unsigned char* s = valid ? src + r * row_stride + ch * 16 : src;
        pa_cp16(dst + (r * C::STRIDE + ch * 8) * 2, s, valid);
    }
}

/// Scores of a 16-row warp tile against one key tile: `s[j][0..4]` is the
/// C fragment of keys 8j..8j+7 of the tile. `q_frag` holds the Q
/// fragments (Q_REGS) or `q_addr` the shared address of this lane's Q row.
template <typename T, int D>
__device__ __forceinline__ void fm_scores(float (*s)[4], const uint32_t (*q_frag)[4],
                                          uint32_t q_addr, uint32_t k_addr) {
    typedef FmCfg<D> C;
#pragma unroll
    for (int j = 0; j < C::NT; j++) {
        s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < C::KT; kk++) {
        uint32_t a[4];
        if constexpr (C::Q_REGS) {
            a[0] = q_frag[kk][0];
            a[1] = q_frag[kk][1];
            a[2] = q_frag[kk][2];
            a[3] = q_frag[kk][3];
        } else {
            fm_ldsm_x4(q_addr + kk * 32, a[0], a[1], a[2], a[3]);
        }
#pragma unroll
        for (int np = 0; np < C::NT / 2; np++) {
            uint32_t b0, b1, b2, b3;
            fm_ldsm_x4(k_addr + (np * 16 * C::STRIDE + kk * 16) * 2, b0, b1, b2, b3);
            FmMma<T>::run(s[2 * np], a, b0, b1);
            FmMma<T>::run(s[2 * np + 1], a, b2, b3);
        }
    }
}

/// Queries `[total_q, H, D]`, keys and values `[total_k, Hkv, D]`, output
/// `[total_q, H, D]`, all of type T (f16 or bf16); cu_q / cu_k `[batch + 1]`.
/// Grid (⌈max_seqlen_q / 64⌉ · H, batch), block 128, dynamic shared memory
/// FmCfg<D>::BYTES. `window` < 0: none; `softcap` ≤ 0: none.
template <typename T, int D>
__device__ __forceinline__ void
flash_attention_mma_impl(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         T* __restrict__ out, const int* __restrict__ cu_q,
                         const int* __restrict__ cu_k, int num_heads, int num_kv_heads,
                         int causal, float scale, float softcap, int window) {
    typedef FmCfg<D> C;
    constexpr int BN = C::BN;
    constexpr float LOG2E = 1.4426950408889634f;
    extern __shared__ __align__(16) unsigned char fm_smem[];

    const int b = blockIdx.y;
    // Heads fastest, longest causal tiles first.
    const int qt_rev = (int)(blockIdx.x / (unsigned)num_heads);
    const int h = (int)blockIdx.x - qt_rev * num_heads;
    const int qt = (int)(gridDim.x / (unsigned)num_heads) - 1 - qt_rev;
    const int q0 = cu_q[b];
    const int lq = cu_q[b + 1] - q0;
    const int k0 = cu_k[b];
    const int lk = cu_k[b + 1] - k0;
    const int i_first = qt * FM_BM;
    if (i_first >= lq) {
        return; // uniform over the CTA
    }
    const int kvh = h / (num_heads / num_kv_heads);

    const int tid = threadIdx.x;
    const int warp = tid >> 5;
    const int lane = tid & 31;
    const int g = lane >> 2;
    const int t4 = lane & 3;

    // Key range any row of the tile sees: [kv_begin, kv_end).
    const int i_last = min(i_first + FM_BM, lq) - 1;
    const int a_first = i_first + lk - lq; // bottom-right aligned positions
    const int a_last = i_last + lk - lq;
    const int kv_end = causal ? min(a_last + 1, lk) : lk;
    const int kv_begin = (window >= 0 && a_first >= 0) ? max(0, a_first + 1 - window) : 0;
    // Keys every row sees: a tile inside [max_lo, min_hi] needs no mask.
    const int min_hi = causal ? min(a_first, lk - 1) : lk - 1;
    const int max_lo = (window >= 0 && a_last >= 0) ? max(0, a_last + 1 - window) : 0;
    const int n_start = (kv_begin / BN) * BN;
    const int ntiles = kv_end > kv_begin ? (kv_end - n_start + BN - 1) / BN : 0;

    // This thread's rows (g and g + 8 of the warp's 16): visible keys.
    int lo_r[2], hi_r[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int a = i_first + warp * 16 + g + 8 * r + lk - lq;
        hi_r[r] = causal ? min(a, lk - 1) : lk - 1;
        lo_r[r] = (window >= 0 && a >= 0) ? max(0, a + 1 - window) : 0;
    }

    unsigned char* q_s = fm_smem + C::Q_OFF;
    unsigned char* k_s = fm_smem + C::K_OFF;
    unsigned char* v_s = fm_smem + C::V_OFF;
    const unsigned char* kb = (const unsigned char*)k;
    const unsigned char* vb = (const unsigned char*)v;
    const int64_t q_stride = (int64_t)num_heads * D * 2;
    const int64_t kv_stride = (int64_t)num_kv_heads * D * 2;
    const int64_t kv_head = ((int64_t)k0 * num_kv_heads + kvh) * D * 2;

    float o[C::DT][4];
#pragma unroll
    for (int j = 0; j < C::DT; j++) {
        o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    }
    float m_r[2] = {KILN_NEG_INF, KILN_NEG_INF};
    float l_r[2] = {0.0f, 0.0f};

    if (ntiles > 0) {
        const unsigned char* qsrc =
            (const unsigned char*)q + ((int64_t)(q0 + i_first) * num_heads + h) * D * 2;
        fm_load_rows<D, FM_BM>(q_s, qsrc, q_stride, lq - i_first);
        fm_load_rows<D, BN>(k_s, kb + kv_head + (int64_t)n_start * kv_stride, kv_stride,
                            lk - n_start);
        pa_cp_commit();
        fm_load_rows<D, BN>(v_s, vb + kv_head + (int64_t)n_start * kv_stride, kv_stride,
                            lk - n_start);
        pa_cp_commit();
    }

    // Per-lane ldmatrix addresses (see the layout notes above).
    const uint32_t q_addr =
        pa_smem_addr(q_s) + ((warp * 16 + (lane & 15)) * C::STRIDE + (lane >> 4) * 8) * 2;
    const uint32_t k_lane =
        ((((lane >> 4) * 8) + (lane & 7)) * C::STRIDE + ((lane >> 3) & 1) * 8) * 2;
    const uint32_t v_lane =
        ((((lane >> 3) & 1) * 8 + (lane & 7)) * C::STRIDE + (lane >> 4) * 8) * 2;
    const uint32_t k_base = pa_smem_addr(k_s);
    const uint32_t v_base = pa_smem_addr(v_s);

    uint32_t q_frag[C::Q_REGS ? C::KT : 1][4];
    const bool capped = softcap > 0.0f;
    const float s_mul = capped ? LOG2E : scale * LOG2E;

    for (int it = 0; it < ntiles; it++) {
        const int n0 = n_start + it * BN;
        const int buf = it & 1;
        asm volatile("cp.async.wait_group 1;\n" ::); // K of this tile (and Q) landed
        __syncthreads();
        if constexpr (C::Q_REGS) {
            if (it == 0) {
#pragma unroll
                for (int kk = 0; kk < C::KT; kk++) {
                    fm_ldsm_x4(q_addr + kk * 32, q_frag[kk][0], q_frag[kk][1], q_frag[kk][2],
                               q_frag[kk][3]);
                }
            }
        }
        if (it + 1 < ntiles) {
            fm_load_rows<D, BN>(k_s + (buf ^ 1) * BN * C::STRIDE * 2,
                                kb + kv_head + (int64_t)(n0 + BN) * kv_stride, kv_stride,
                                lk - (n0 + BN));
        }
        pa_cp_commit();

        float s[C::NT][4];
        fm_scores<T, D>(s, q_frag, q_addr, k_base + buf * BN * C::STRIDE * 2 + k_lane);

        // Scale (and soft-cap) into the log2 domain.
#pragma unroll
        for (int j = 0; j < C::NT; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = s[j][e];
                if (capped) {
                    x = pa_softcap(x * scale, softcap);
                }
                s[j][e] = x * s_mul;
            }
        }
        // Mask when some row of the CTA does not see the whole tile.
        if (!(n0 >= max_lo && n0 + BN - 1 <= min_hi)) {
#pragma unroll
            for (int j = 0; j < C::NT; j++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int key = n0 + j * 8 + 2 * t4 + (e & 1);
                    const int r = e >> 1;
                    if (key < lo_r[r] || key > hi_r[r]) {
                        s[j][e] = KILN_NEG_INF;
                    }
                }
            }
        }

        // Online softmax, rows g (r = 0) and g + 8 (r = 1).
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mx = KILN_NEG_INF;
#pragma unroll
            for (int j = 0; j < C::NT; j++) {
                mx = fmaxf(mx, fmaxf(s[j][2 * r], s[j][2 * r + 1]));
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m_r[r], mx);
            const float m_use = m_new == KILN_NEG_INF ? 0.0f : m_new;
            const float corr = exp2f(m_r[r] - m_use); // 0 while the row had no key
            m_r[r] = m_new;
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < C::NT; j++) {
                const float p0 = exp2f(s[j][2 * r] - m_use);
                const float p1 = exp2f(s[j][2 * r + 1] - m_use);
                s[j][2 * r] = p0;
                s[j][2 * r + 1] = p1;
                sum += p0 + p1;
            }
            l_r[r] = l_r[r] * corr + sum;
#pragma unroll
            for (int j = 0; j < C::DT; j++) {
                o[j][2 * r] *= corr;
                o[j][2 * r + 1] *= corr;
            }
        }

        asm volatile("cp.async.wait_group 1;\n" ::); // V of this tile landed
        __syncthreads();
        if (it + 1 < ntiles) {
            fm_load_rows<D, BN>(v_s + (buf ^ 1) * BN * C::STRIDE * 2,
                                vb + kv_head + (int64_t)(n0 + BN) * kv_stride, kv_stride,
                                lk - (n0 + BN));
        }
        pa_cp_commit();

        // O += P · V.
        const uint32_t v_tile = v_base + buf * BN * C::STRIDE * 2 + v_lane;
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            uint32_t a[4];
            a[0] = FmMma<T>::pack(s[2 * kk][0], s[2 * kk][1]);
            a[1] = FmMma<T>::pack(s[2 * kk][2], s[2 * kk][3]);
            a[2] = FmMma<T>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = FmMma<T>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < C::DT / 2; dp++) {
                uint32_t b0, b1, b2, b3;
                fm_ldsm_x4_trans(v_tile + (kk * 16 * C::STRIDE + dp * 16) * 2, b0, b1, b2, b3);
                FmMma<T>::run(o[2 * dp], a, b0, b1);
                FmMma<T>::run(o[2 * dp + 1], a, b2, b3);
            }
        }
    }
    pa_cp_wait_all();

    // Normalise and store rows below lq; a row that saw no key has l = 0.
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float l = l_r[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        const int i = i_first + warp * 16 + g + 8 * r;
        if (i < lq) {
            uint32_t* dst =
                (uint32_t*)(out + ((int64_t)(q0 + i) * num_heads + h) * D) + t4;
#pragma unroll
            for (int j = 0; j < C::DT; j++) {
                dst[j * 4] = FmMma<T>::pack(o[j][2 * r] * inv, o[j][2 * r + 1] * inv);
            }
        }
    }
}

#define FM_ENTRY(N, T, D)                                                                          \
    extern "C" __global__ void __launch_bounds__(FM_THREADS, FmCfg<D>::MIN_BLOCKS)                 \
        flash_attention_mma_##N##_hd##D(                                                           \
        const T* q, const T* k, const T* v, T* out, const int* cu_q, const int* cu_k,              \
        int num_heads, int num_kv_heads, int causal, float scale, float softcap, int window) {     \
        flash_attention_mma_impl<T, D>(q, k, v, out, cu_q, cu_k, num_heads, num_kv_heads, causal,  \
                                       scale, softcap, window);                                    \
    }

#define FM_ALL_TYPES(D)                                                                            \
    FM_ENTRY(f16, kiln_f16, D)                                                                     \
    FM_ENTRY(bf16, kiln_bf16, D)

FM_ALL_TYPES(64)
FM_ALL_TYPES(80)
FM_ALL_TYPES(96)
FM_ALL_TYPES(128)
FM_ALL_TYPES(256)
