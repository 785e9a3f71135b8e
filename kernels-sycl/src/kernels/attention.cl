// Paged attention (decode + ragged prefill, GQA, split-K) and dense varlen
// flash attention, sharing one core: a work-group of ATT_WG work-items per
// (query token, KV head, group of up to ATT_MAXG query heads sharing that KV
// head[, partition]) walks its keys in tiles of ATT_WG with an online
// softmax per head (running max and sum, f32). K and V rows are read once
// for all the heads of the group (GQA). In a tile each work-item scores one
// key against every head (q lives in local memory), then the work-items
// switch to owning head dimensions d = lid + ATT_WG·i and accumulate
// p_j · v_j[d] for every head.

#define ATT_WG 64
#define ATT_MAX_HD 256
#define ATT_DPT (ATT_MAX_HD / ATT_WG)
#define ATT_MAXG 8

// Physical row (token slot, or dense row) of logical key j.
inline long att_row(int j, int paged, const __global int* table, int bs, int k0) {
    return paged ? (long)table[j / bs] * bs + j % bs : (long)(k0 + j);
}

// Heads h0 .. h0 + gh - 1 (gh ≤ ATT_MAXG) over keys lo..=hi (empty when
// lo > hi) of KV head kvh; rows have nkh heads of hd elements in dtype kv_dt
// (FP8 multiplied by k_scale / v_scale). qs holds the heads' queries
// ([ATT_MAXG][ATT_MAX_HD]). With `split`, writes each head's unnormalised
// accumulator and (max, sum) to tmp_out / tmp_ml at slot
// `slot0 + g · slot_stride`; otherwise out[out_base + g · hd + d] =
// acc · vs / sum (zeros when empty).
inline void attention_core(__local float* qs, __local float* red, __local float* ps,
                           __local long* rows, int gh, int lo, int hi,
                           const __global uchar* kc, const __global uchar* vc, int kv_dt,
                           float k_scale, float v_scale, int paged, const __global int* table,
                           int bs, int k0, int nkh, int kvh, int hd, float scale, float softcap,
                           __global uchar* out, size_t out_base, int out_dt,
                           int split, __global float* tmp_out, __global float* tmp_ml,
                           size_t slot0, size_t slot_stride) {
    int lid = get_local_id(0);
    float m[ATT_MAXG], l[ATT_MAXG];
    float acc[ATT_MAXG][ATT_DPT];
    for (int g = 0; g < ATT_MAXG; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
        for (int i = 0; i < ATT_DPT; i++) acc[g][i] = 0.0f;
    }
    float ks = kv_dt == DT_E4M3 ? k_scale : 1.0f;
    float vs = kv_dt == DT_E4M3 ? v_scale : 1.0f;
    for (int j0 = lo; j0 <= hi; j0 += ATT_WG) {
        int j = j0 + lid;
        float s[ATT_MAXG];
        for (int g = 0; g < ATT_MAXG; g++) s[g] = -INFINITY;
        if (j <= hi) {
            long row = att_row(j, paged, table, bs, k0);
            rows[lid] = row;
            size_t kb = ((size_t)row * nkh + kvh) * hd;
            float dot[ATT_MAXG];
            for (int g = 0; g < ATT_MAXG; g++) dot[g] = 0.0f;
            for (int d = 0; d < hd; d++) {
                float kd = kv_dt == DT_F32 ? ((const __global float*)kc)[kb + d] : ld(kc, kb + d, kv_dt);
                for (int g = 0; g < gh; g++) dot[g] = fma(qs[g * ATT_MAX_HD + d], kd, dot[g]);
            }
            for (int g = 0; g < gh; g++) {
                float sc = dot[g] * ks * scale;
                if (softcap > 0.0f) sc = softcap * tanh(sc / softcap);
                s[g] = sc;
            }
        }
        float corr[ATT_MAXG];
        for (int g = 0; g < gh; g++) {
            float m_new = fmax(m[g], wg_max(s[g], red));
            corr[g] = exp(m[g] - m_new);
            float p = j <= hi ? exp(s[g] - m_new) : 0.0f;
            ps[g * ATT_WG + lid] = p;
            l[g] = l[g] * corr[g] + wg_sum(p, red);
            m[g] = m_new;
        }
        int nk = min(ATT_WG, hi - j0 + 1);
        for (int i = 0; i < ATT_DPT; i++) {
            int d = lid + ATT_WG * i;
            if (d >= hd) break;
            float a[ATT_MAXG];
            for (int g = 0; g < gh; g++) a[g] = acc[g][i] * corr[g];
#ifdef KILN_INTEL
            // f32 values: one 16-lane block read per key (lane = d).
            if (kv_dt == DT_F32 && hd % SG_SIZE == 0) {
                size_t col = (size_t)(d - (int)get_sub_group_local_id());
                const __global float* vf = (const __global float*)vc;
                for (int jj = 0; jj < nk; jj++) {
                    const __global uint* vr = (const __global uint*)(vf + ((size_t)rows[jj] * nkh + kvh) * hd + col);
                    float vv = as_float(intel_sub_group_block_read(vr));
                    for (int g = 0; g < gh; g++) a[g] = fma(ps[g * ATT_WG + jj], vv, a[g]);
                }
                for (int g = 0; g < gh; g++) acc[g][i] = a[g];
                continue;
            }
#endif
            for (int jj = 0; jj < nk; jj++) {
                float vv = ld(vc, ((size_t)rows[jj] * nkh + kvh) * hd + d, kv_dt);
                for (int g = 0; g < gh; g++) a[g] = fma(ps[g * ATT_WG + jj], vv, a[g]);
            }
            for (int g = 0; g < gh; g++) acc[g][i] = a[g];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int g = 0; g < gh; g++) {
        size_t slot = slot0 + (size_t)g * slot_stride;
        if (split) {
            for (int i = 0; i < ATT_DPT; i++) {
                int d = lid + ATT_WG * i;
                if (d < hd) tmp_out[slot * hd + d] = acc[g][i] * vs;
            }
            if (lid == 0) {
                tmp_ml[slot * 2] = m[g];
                tmp_ml[slot * 2 + 1] = l[g];
            }
        } else {
            // (acc · vs) / l, exactly as attention_reduce computes a single
            // partition, so a row's bits do not depend on whether it was split.
            int seen = l[g] > 0.0f || isnan(l[g]);
            for (int i = 0; i < ATT_DPT; i++) {
                int d = lid + ATT_WG * i;
                if (d < hd)
                    st(out, out_base + (size_t)g * hd + d, out_dt, seen ? (acc[g][i] * vs) / l[g] : 0.0f);
            }
        }
    }
}

// Queries of heads h0 .. h0 + gh - 1 of token t into qs[g][d].
inline void att_load_q(__local float* qs, const __global uchar* q, size_t base, int dt, int hd, int gh) {
    for (int g = 0; g < gh; g++)
        for (int d = get_local_id(0); d < hd; d += ATT_WG)
            qs[g * ATT_MAX_HD + d] = ld(q, base + (size_t)g * hd + d, dt);
    barrier(CLK_LOCAL_MEM_FENCE);
}

// Work-group dimension 1 indexes (KV head, chunk of ≤ ATT_MAXG query heads):
// sets the KV head, the first query head and the chunk's head count.
inline void att_heads(int nh, int nkh, int* kvh, int* h0, int* gh) {
    int group = nh / nkh;
    int chunks = (group + ATT_MAXG - 1) / ATT_MAXG;
    int hc = get_group_id(1);
    *kvh = hc / chunks;
    int c = hc % chunks;
    *h0 = *kvh * group + c * ATT_MAXG;
    *gh = min(ATT_MAXG, group - c * ATT_MAXG);
}

// Index b with qsl[b] <= t < qsl[b + 1] (qsl non-decreasing, batch + 1 entries).
inline int att_seq_of(const __global int* qsl, int batch, int t) {
    int lo = 0, hi = batch - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (qsl[mid] <= t) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// Paged attention. q, out: [tokens, nh, hd] (dtype dt); caches NHD
// [blocks, bs, nkh, hd] (kv_dt); work-groups of ATT_WG.
// window 0 = none; softcap 0 = none. With nparts > 1 each group covers
// keys [part · part_len, (part + 1) · part_len) and writes tmp_out
// [tokens, nh, nparts, hd] and tmp_ml [tokens, nh, nparts, 2] for
// attention_reduce. Groups (tokens, nkh · ceil((nh / nkh) / ATT_MAXG), nparts).
__kernel __attribute__((reqd_work_group_size(ATT_WG, 1, 1))) REQD_SG
void paged_attention(const __global uchar* q, ulong q_off, int dt,
                     __global uchar* out, ulong out_off,
                     const __global uchar* kc, const __global uchar* vc, int kv_dt,
                     float k_scale, float v_scale,
                     const __global uchar* qsl_b, ulong qsl_off,
                     const __global uchar* lens_b, ulong lens_off,
                     const __global uchar* bt_b, ulong bt_off, int max_blocks,
                     int batch, int nh, int nkh, int hd, int bs,
                     float scale, int window, float softcap,
                     int part_len, int nparts, __global float* tmp_out, __global float* tmp_ml) {
    __local float qs[ATT_MAXG * ATT_MAX_HD];
    __local float red[ATT_WG];
    __local float ps[ATT_MAXG * ATT_WG];
    __local long rows[ATT_WG];
    int t = get_group_id(0), part = get_group_id(2);
    int kvh, h0, gh;
    att_heads(nh, nkh, &kvh, &h0, &gh);
    const __global int* qsl = (const __global int*)(qsl_b + qsl_off);
    const __global int* lens = (const __global int*)(lens_b + lens_off);
    const __global int* bt = (const __global int*)(bt_b + bt_off);
    int b = att_seq_of(qsl, batch, t);
    int qlen = qsl[b + 1] - qsl[b];
    int p = lens[b] - qlen + (t - qsl[b]);
    int lo = window > 0 ? max(0, p + 1 - window) : 0;
    int hi = p;
    if (nparts > 1) {
        lo = max(lo, part * part_len);
        hi = min(hi, (part + 1) * part_len - 1);
    }
    size_t qbase = ((size_t)t * nh + h0) * hd;
    att_load_q(qs, q + q_off, qbase, dt, hd, gh);
    attention_core(qs, red, ps, rows, gh, lo, hi, kc, vc, kv_dt, k_scale, v_scale, 1,
                   bt + (size_t)b * max_blocks, bs, 0, nkh, kvh, hd, scale, softcap,
                   out + out_off, qbase, dt, nparts > 1, tmp_out, tmp_ml,
                   ((size_t)t * nh + h0) * nparts + part, (size_t)nparts);
}

// Combine the partitions of paged_attention: groups (tokens, nh) of ATT_WG.
__kernel __attribute__((reqd_work_group_size(ATT_WG, 1, 1)))
void attention_reduce(const __global float* tmp_out, const __global float* tmp_ml,
                      __global uchar* out, ulong out_off, int dt, int nh, int hd, int nparts) {
    int t = get_group_id(0), h = get_group_id(1), lid = get_local_id(0);
    size_t base = ((size_t)t * nh + h) * nparts;
    float gm = -INFINITY;
    int any_nan = 0;
    for (int p = 0; p < nparts; p++) {
        float l = tmp_ml[(base + p) * 2 + 1];
        if (isnan(l)) any_nan = 1;
        if (l > 0.0f) gm = fmax(gm, tmp_ml[(base + p) * 2]);
    }
    float sum = 0.0f;
    for (int p = 0; p < nparts; p++) {
        float l = tmp_ml[(base + p) * 2 + 1];
        if (l > 0.0f) sum += exp(tmp_ml[(base + p) * 2] - gm) * l;
    }
    for (int d = lid; d < hd; d += ATT_WG) {
        float a = 0.0f;
        for (int p = 0; p < nparts; p++) {
            float l = tmp_ml[(base + p) * 2 + 1];
            if (l > 0.0f) a += exp(tmp_ml[(base + p) * 2] - gm) * tmp_out[(base + p) * hd + d];
        }
        float v = any_nan ? NAN : (sum > 0.0f ? a / sum : 0.0f);
        st(out + out_off, ((size_t)t * nh + h) * hd + d, dt, v);
    }
}

// Dense varlen attention (FlashAttention-2 API, bottom-right causal).
// q, out [total_q, nh, hd]; k, v [total_k, nkh, hd]; all of dtype dt.
// Groups (total_q, nkh · ceil((nh / nkh) / ATT_MAXG)) of ATT_WG.
__kernel __attribute__((reqd_work_group_size(ATT_WG, 1, 1))) REQD_SG
void flash_attention(const __global uchar* q, ulong q_off, const __global uchar* k, ulong k_off,
                     const __global uchar* v, ulong v_off, __global uchar* out, ulong out_off,
                     int dt, const __global uchar* cq_b, ulong cq_off,
                     const __global uchar* ck_b, ulong ck_off, int batch,
                     int nh, int nkh, int hd, int causal, float scale, int window, float softcap) {
    __local float qs[ATT_MAXG * ATT_MAX_HD];
    __local float red[ATT_WG];
    __local float ps[ATT_MAXG * ATT_WG];
    __local long rows[ATT_WG];
    int t = get_group_id(0);
    int kvh, h0, gh;
    att_heads(nh, nkh, &kvh, &h0, &gh);
    const __global int* cq = (const __global int*)(cq_b + cq_off);
    const __global int* ck = (const __global int*)(ck_b + ck_off);
    int b = att_seq_of(cq, batch, t);
    int lq = cq[b + 1] - cq[b], k0 = ck[b], lk = ck[b + 1] - ck[b];
    int i = t - cq[b];
    int aligned = i + lk - lq;
    int lo, hi;
    if (causal) {
        if (aligned < 0) { lo = 1; hi = 0; }
        else {
            lo = window > 0 ? max(0, aligned + 1 - window) : 0;
            hi = min(aligned, lk - 1);
        }
    } else {
        lo = (window > 0 && aligned >= 0) ? max(0, aligned + 1 - window) : 0;
        hi = lk - 1;
    }
    size_t qbase = ((size_t)t * nh + h0) * hd;
    att_load_q(qs, q + q_off, qbase, dt, hd, gh);
    attention_core(qs, red, ps, rows, gh, lo, hi, k + k_off, v + v_off, dt, 1.0f, 1.0f, 0, 0, 1, k0,
                   nkh, kvh, hd, scale, softcap, out + out_off, qbase, dt, 0, 0, 0, 0, 0);
}
