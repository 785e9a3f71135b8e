// Paged attention over the KV cache for ragged batches (decode, chunked
// prefill and prefix hits mixed), with an optional split over the context
// (partitions of `part_size` keys, merged by `paged_attention_reduce_*`).
//
// One CTA (128 threads, 4 warps) handles one sequence, one KV head, a tile
// of query rows and one partition of the keys. A query row is a (query
// token, query head) pair: `hpc` heads of the KV head's group times `tpt`
// tokens of the sequence, at most MAXR rows, so every K/V element is read
// from global memory once per CTA and used by all rows. Keys are streamed
// in tiles of 32 with cp.async double buffering into shared memory (zero
// filled past the visible range, so nothing outside `seq_len` is read) and
// an online softmax (f32) runs over the tiles:
//   scores: warp w takes rows w, w+4, ...; lane j takes key j of the tile;
//   P·V:    thread t owns output elements d = t and d = t + 128 of all rows.
// Masking happens before exp (masked scores are -inf and their p is 0, and
// zero-filled V rows are finite), so NaN in unused cache slots never enters.
//
// Cache layout NHD: K and V are [num_blocks, block_size, num_kv_heads, D].
// FP8 (e4m3) caches hold k / k_scale: the scale is folded into `qscale`
// (keys) and `vscale` (values).

/// Key position → byte offset of its row in the paged cache.
struct PagedAddr {
    const int* table; // this sequence's block-table row
    int block_size;
    int num_kv_heads;
    int kvh;
    int row_bytes; // D · sizeof(cache element)
    __device__ __forceinline__ int64_t operator()(int pos) const {
        int64_t blk = (int64_t)table[pos / block_size];
        int64_t slot = blk * block_size + (pos % block_size);
        return (slot * num_kv_heads + kvh) * (int64_t)row_bytes;
    }
};

/// Grid: x = batch · qtiles, y = num_kv_heads · head_tiles, z = num_parts.
/// Block: 128 threads; dynamic shared memory PaSmem::BYTES.
/// A CTA takes query tokens [qt·tpt, qt·tpt + tpt) of its sequence and
/// heads [ht·hpc, ht·hpc + hpc) of its KV head's group; keys of partition z
/// ([z·part_size, (z+1)·part_size) ∩ [0, seq_len)). `window` < 0: none;
/// `softcap` ≤ 0: none. `tmp_o` null: one partition, write `out` directly.
template <typename QT, typename CT, int D, int MAXR>
__device__ __forceinline__ void
paged_attention_impl(const QT* __restrict__ q, QT* __restrict__ out, const CT* __restrict__ kc,
                     const CT* __restrict__ vc, const int* __restrict__ query_start_loc,
                     const int* __restrict__ seq_lens, const int* __restrict__ block_tables,
                     int bt_stride, int num_heads, int num_kv_heads, int block_size, int tpt,
                     int hpc, int head_tiles, int qtiles, int part_size, int num_parts,
                     float qscale, float vscale, float softcap, int window,
                     float* __restrict__ tmp_o, float* __restrict__ tmp_ml) {
    extern __shared__ __align__(16) unsigned char pa_smem[];
    typedef PaSmem<CT, D, MAXR> S;
    const int b = blockIdx.x / qtiles;
    const int qt = blockIdx.x - b * qtiles;
    const int kvh = blockIdx.y / head_tiles;
    const int ht = blockIdx.y - kvh * head_tiles;
    const int part = blockIdx.z;

    const int q0 = query_start_loc[b];
    const int qlen = query_start_loc[b + 1] - q0;
    const int len = seq_lens[b];
    if (qt * tpt >= qlen || part * part_size >= len) {
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
        int tl = qt * tpt + ti;
        bool valid = tl < qlen && g < group;
        int p = len - qlen + tl;
        tok_s[r] = valid ? q0 + tl : -1;
        head_s[r] = kvh * group + g;
        lo_s[r] = window >= 0 ? max(0, p + 1 - window) : 0;
        hi_s[r] = p;
    }
    __syncthreads();

    PagedAddr addr;
    addr.table = block_tables + (int64_t)b * bt_stride;
    addr.block_size = block_size;
    addr.num_kv_heads = num_kv_heads;
    addr.kvh = kvh;
    addr.row_bytes = D * (int)sizeof(CT);

    const int range_lo = part * part_size;
    const int range_hi = min(len, range_lo + part_size);
    pa_core<QT, CT, D, MAXR>(pa_smem, nrows, q, out, kc, vc, addr, num_heads, range_lo, range_hi,
                             qscale, vscale, softcap, tmp_o, tmp_ml, part, num_parts);
}

/// Merge the partitions of each (token, head): grid (num_tokens, num_heads),
/// 128 threads. `tmp_o` [T, H, P, D] unnormalised partial outputs, `tmp_ml`
/// [T, H, P, 2] (max, sum); partitions at or past ceil(seq_len / part_size)
/// are not read.
template <typename QT, int D>
__device__ __forceinline__ void
paged_reduce_impl(QT* __restrict__ out, const float* __restrict__ tmp_o,
                  const float* __restrict__ tmp_ml, const int* __restrict__ query_start_loc,
                  const int* __restrict__ seq_lens, int batch, int num_heads, int part_size,
                  int num_parts) {
    const int t = blockIdx.x;
    const int h = blockIdx.y;
    // Sequence of token t: the last b with query_start_loc[b] <= t.
    int lo = 0;
    int hi = batch - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (query_start_loc[mid] <= t) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    const int len = seq_lens[lo];
    const int np = min(num_parts, (len + part_size - 1) / part_size);
    const int64_t row = (int64_t)t * num_heads + h;
    const float* ml = tmp_ml + row * num_parts * 2;
    float m = KILN_NEG_INF;
    for (int i = 0; i < np; i++) {
        m = fmaxf(m, ml[2 * i]);
    }
    float l = 0.0f;
    for (int i = 0; i < np; i++) {
        float mi = ml[2 * i];
        if (mi != KILN_NEG_INF) {
            l += __expf(mi - m) * ml[2 * i + 1];
        }
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float o = 0.0f;
        for (int i = 0; i < np; i++) {
            float mi = ml[2 * i];
            if (mi != KILN_NEG_INF) {
                o += __expf(mi - m) * tmp_o[(row * num_parts + i) * D + d];
            }
        }
        out[row * D + d] = from_f32<QT>(o * inv);
    }
}

#define PA_MAXR 16

#define PA_ENTRY(QN, QT, CN, CT, D)                                                                \
    extern "C" __global__ void __launch_bounds__(PA_THREADS)                                       \
        paged_attention_##QN##_##CN##_hd##D(                                                       \
            const QT* q, QT* out, const CT* kc, const CT* vc, const int* query_start_loc,          \
            const int* seq_lens, const int* block_tables, int bt_stride, int num_heads,            \
            int num_kv_heads, int block_size, int tpt, int hpc, int head_tiles, int qtiles,        \
            int part_size, int num_parts, float qscale, float vscale, float softcap, int window,   \
            float* tmp_o, float* tmp_ml) {                                                         \
        paged_attention_impl<QT, CT, D, PA_MAXR>(                                                  \
            q, out, kc, vc, query_start_loc, seq_lens, block_tables, bt_stride, num_heads,         \
            num_kv_heads, block_size, tpt, hpc, head_tiles, qtiles, part_size, num_parts, qscale,  \
            vscale, softcap, window, tmp_o, tmp_ml);                                               \
    }

#define PA_REDUCE(QN, QT, D)                                                                       \
    extern "C" __global__ void __launch_bounds__(PA_THREADS) paged_attention_reduce_##QN##_hd##D(  \
        QT* out, const float* tmp_o, const float* tmp_ml, const int* query_start_loc,              \
        const int* seq_lens, int batch, int num_heads, int part_size, int num_parts) {             \
        paged_reduce_impl<QT, D>(out, tmp_o, tmp_ml, query_start_loc, seq_lens, batch, num_heads,  \
                                 part_size, num_parts);                                            \
    }

#define PA_ALL_CACHES(D)                                                                           \
    PA_ENTRY(f32, float, f32, float, D)                                                            \
    PA_ENTRY(f32, float, f16, kiln_f16, D)                                                         \
    PA_ENTRY(f32, float, bf16, kiln_bf16, D)                                                       \
    PA_ENTRY(f32, float, f8e4m3, kiln_e4m3, D)                                                     \
    PA_ENTRY(f16, kiln_f16, f16, kiln_f16, D)                                                      \
    PA_ENTRY(f16, kiln_f16, f8e4m3, kiln_e4m3, D)                                                  \
    PA_ENTRY(bf16, kiln_bf16, bf16, kiln_bf16, D)                                                  \
    PA_ENTRY(bf16, kiln_bf16, f8e4m3, kiln_e4m3, D)                                                \
    PA_REDUCE(f32, float, D)                                                                       \
    PA_REDUCE(f16, kiln_f16, D)                                                                    \
    PA_REDUCE(bf16, kiln_bf16, D)

PA_ALL_CACHES(64)
PA_ALL_CACHES(80)
PA_ALL_CACHES(96)
PA_ALL_CACHES(128)
PA_ALL_CACHES(256)
