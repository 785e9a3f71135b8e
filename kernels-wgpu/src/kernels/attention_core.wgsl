// Attention of one query row against keys lo..=hi, online softmax over
// tiles of WG keys in workgroup memory; leaves the running max `m_run`, sum
// `l_run` and unnormalised output `acc` (this invocation's head-dim
// elements lid, lid + WG, …) for `write_out` or a split-K partial. The kernel defines `kbase(j, kvh)` /
// `vbase(j, kvh)` (element index of key / value row j) and `kld(i)` /
// `vld(i)` (a scaled element). Params used: 3 head_dim, 7 scale (f32),
// 9 soft-cap (f32, 0 = none).
const MAXD: u32 = 256u;
const PER: u32 = MAXD / WG;
const NEG: f32 = -3.0e38;
var<workgroup> qsh: array<f32, MAXD>;
var<workgroup> sc: array<f32, WG>;
var<private> acc: array<f32, PER>;
var<private> m_run: f32;
var<private> l_run: f32;

fn attend(lid: u32, qbase: u32, kvh: u32, lo: u32, hi: u32, empty: bool) {
    let d = pu(3u);
    let scale = pf(7u);
    let cap = pf(9u);
    for (var i = lid; i < d; i += WG) { qsh[i] = ld_q(qbase + i); }
    workgroupBarrier();
    var m = NEG;
    var l = 0.0;
    for (var r = 0u; r < PER; r++) { acc[r] = 0.0; }
    if (!empty) {
        for (var j0 = lo; j0 <= hi; j0 += WG) {
            let j = j0 + lid;
            var s = NEG;
            if (j <= hi) {
                let kb = kbase(j, kvh);
                var dot = 0.0;
                for (var e = 0u; e < d; e++) { dot += qsh[e] * kld(kb + e); }
                s = dot * scale;
                if (cap > 0.0) { s = cap * tanh(s / cap); }
            }
            sc[lid] = s;
            workgroupBarrier();
            let cnt = min(WG, hi - j0 + 1u);
            var mt = m;
            var bad = false;
            for (var t = 0u; t < cnt; t++) {
                let v = sc[t];
                if (v != v) { bad = true; }
                mt = max(mt, v);
            }
            if (bad) { mt = nan_f32(); }
            var pw = 0.0;
            if (lid < cnt) { pw = exp(sc[lid] - mt); }
            workgroupBarrier();
            sc[lid] = pw;
            workgroupBarrier();
            let alpha = exp(m - mt);
            l = l * alpha;
            for (var r = 0u; r < PER; r++) { acc[r] *= alpha; }
            for (var t = 0u; t < cnt; t++) {
                let w = sc[t];
                l += w;
                let vb = vbase(j0 + t, kvh);
                for (var r = 0u; r < PER; r++) {
                    let e = lid + r * WG;
                    if (e < d) { acc[r] += w * vld(vb + e); }
                }
            }
            m = mt;
            workgroupBarrier();
        }
    }
    m_run = m;
    l_run = l;
}
