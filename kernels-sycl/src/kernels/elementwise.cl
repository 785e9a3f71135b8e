// RMS norm (+ fused residual add), RoPE, SiLU-and-mul, add, dense embedding.
// Every tensor is (base, byte offset, dtype code); see common.cl.

// One work-group per row; `scratch` holds one float per work-item.
// x, residual, out: [tokens, hidden] of dtype dt; weight: [hidden] of w_dt.
__kernel REQD_SG void rms_norm(const __global uchar* x, ulong x_off,
                               __global uchar* res, ulong res_off, int has_res,
                               const __global uchar* w, ulong w_off, int w_dt,
                               __global uchar* out, ulong out_off,
                               int dt, int hidden, float eps,
                               __local float* scratch) {
    size_t row = get_group_id(0), lid = get_local_id(0), nl = get_local_size(0);
    const __global uchar* xp = x + x_off;
    __global uchar* rp = res + res_off;
    const __global uchar* wp = w + w_off;
    __global uchar* op = out + out_off;
    size_t base = row * (size_t)hidden;
    float ss = 0.0f;
    for (size_t i = lid; i < (size_t)hidden; i += nl) {
        float v = ld(xp, base + i, dt);
        if (has_res) {
            st(rp, base + i, dt, v + ld(rp, base + i, dt));
            v = ld(rp, base + i, dt);
        }
        ss += v * v;
    }
    ss = wg_sum(ss, scratch);
    float inv = rsqrt(ss / (float)hidden + eps);
    for (size_t i = lid; i < (size_t)hidden; i += nl) {
        float v = has_res ? ld(rp, base + i, dt) : ld(xp, base + i, dt);
        st(op, base + i, dt, v * inv * ld(wp, i, w_dt));
    }
}

// In place on q [tokens, nh, hd] and k [tokens, nkh, hd] (dtype dt).
// Global size (rot / 2, nh + nkh, tokens). cos_sin: f32 [max_pos, rot].
__kernel void rope(const __global uchar* pos, ulong pos_off,
                   __global uchar* q, ulong q_off, __global uchar* k, ulong k_off,
                   const __global uchar* cs, ulong cs_off,
                   int dt, int nh, int nkh, int hd, int rot, int max_pos, int neox) {
    int i = get_global_id(0), h = get_global_id(1), t = get_global_id(2);
    int half_rot = rot / 2;
    if (i >= half_rot || h >= nh + nkh) return;
    long p = ((const __global long*)(pos + pos_off))[t];
    if (p < 0 || p >= max_pos) return;
    const __global float* c = (const __global float*)(cs + cs_off) + p * rot;
    float co = c[i], si = c[half_rot + i];
    __global uchar* base;
    size_t row;
    if (h < nh) {
        base = q + q_off;
        row = ((size_t)t * nh + h) * hd;
    } else {
        base = k + k_off;
        row = ((size_t)t * nkh + (h - nh)) * hd;
    }
    size_t ia = neox ? row + i : row + 2 * i;
    size_t ib = neox ? row + i + half_rot : row + 2 * i + 1;
    float a = ld(base, ia, dt), b = ld(base, ib, dt);
    st(base, ia, dt, a * co - b * si);
    st(base, ib, dt, b * co + a * si);
}

// out[t, j] = silu(x[t, j]) * x[t, inter + j]; global size (inter, tokens).
__kernel void silu_and_mul(const __global uchar* x, ulong x_off,
                           __global uchar* out, ulong out_off, int dt, int inter) {
    size_t j = get_global_id(0), t = get_global_id(1);
    if (j >= (size_t)inter) return;
    const __global uchar* xp = x + x_off;
#ifdef KILN_INTEL
    // f16 activations: the product in half precision (cl_khr_fp16).
    if (dt == DT_F16) {
        const __global half* xh = (const __global half*)xp;
        float a = (float)xh[t * 2 * inter + j];
        half g = convert_half_rte(a / (1.0f + exp(-a)));
        ((__global half*)(out + out_off))[t * inter + j] = g * xh[t * 2 * inter + inter + j];
        return;
    }
#endif
    float a = ld(xp, t * 2 * inter + j, dt);
    float b = ld(xp, t * 2 * inter + inter + j, dt);
    st(out + out_off, t * inter + j, dt, a / (1.0f + exp(-a)) * b);
}

// out = a + b, b either [rows, n] or one row [n] (broadcast); global size
// (n, rows).
__kernel void add(const __global uchar* a, ulong a_off, const __global uchar* b, ulong b_off,
                  __global uchar* out, ulong out_off, int dt, int n, int broadcast) {
    size_t j = get_global_id(0), r = get_global_id(1);
    if (j >= (size_t)n) return;
    size_t i = r * n + j;
#ifdef KILN_INTEL
    // f16 operands: added in half precision (cl_khr_fp16).
    if (dt == DT_F16) {
        const __global half* ah = (const __global half*)(a + a_off);
        const __global half* bh = (const __global half*)(b + b_off);
        ((__global half*)(out + out_off))[i] = ah[i] + bh[broadcast ? j : i];
        return;
    }
#endif
    float bv = ld(b + b_off, broadcast ? j : i, dt);
    st(out + out_off, i, dt, ld(a + a_off, i, dt) + bv);
}

// out[t, :] = table[ids[t], :] (zeros for an id outside 0..vocab); global
// size (hidden, tokens).
__kernel void embedding_dense(const __global uchar* ids, ulong ids_off,
                              const __global uchar* table, ulong table_off, int table_dt,
                              __global uchar* out, ulong out_off, int out_dt,
                              int vocab, int hidden) {
    size_t j = get_global_id(0), t = get_global_id(1);
    if (j >= (size_t)hidden) return;
    int id = ((const __global int*)(ids + ids_off))[t];
    float v = (id >= 0 && id < vocab) ? ld(table + table_off, (size_t)id * hidden + j, table_dt) : 0.0f;
    st(out + out_off, t * hidden + j, out_dt, v);
}
