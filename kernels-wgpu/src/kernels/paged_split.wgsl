// Split-K: one workgroup per (query token, query head, partition of
// pu(18) keys); writes (max, sum, unnormalised row) to `part` for
// attention_reduce.wgsl. Params: 17 partitions.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let wid = wg_linear(wg, nwg);
    let heads = pu(1u);
    let parts = pu(17u);
    let pt = wid % parts;
    let row = wid / parts;
    let tok = row / heads;
    let head = row % heads;
    if (tok >= pu(0u)) { return; }
    let s = span(tok);
    let p0 = pt * pu(18u);
    let lo = max(s.lo, p0);
    let hi = min(s.hi, p0 + pu(18u) - 1u);
    let empty = s.empty || lo > hi;
    let kvh = head / (heads / pu(2u));
    attend(lid, pu(10u) + row * pu(3u), kvh, lo, hi, empty);
    let rec = wid * (pu(3u) + 2u);
    if (lid == 0u) {
        atomicStore(&part[rec], bitcast<u32>(select(m_run, NEG, empty)));
        atomicStore(&part[rec + 1u], bitcast<u32>(select(l_run, 0.0, empty)));
    }
    for (var r = 0u; r < PER; r++) {
        let e = lid + r * WG;
        if (e < pu(3u)) { atomicStore(&part[rec + 2u + e], bitcast<u32>(select(acc[r], 0.0, empty))); }
    }
}
