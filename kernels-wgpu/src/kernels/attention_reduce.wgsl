// Split-K combine: one workgroup per (query token, query head) rescales the
// partitions' partial rows to their common max. Params: 0 rows, 1
// partitions, 3 head_dim, 11 out offset.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wg_linear(wg, nwg);
    if (row >= pu(0u)) { return; }
    let parts = pu(1u);
    let d = pu(3u);
    let stride = d + 2u;
    var mx = -3.0e38;
    var bad = false;
    for (var p = 0u; p < parts; p++) {
        let m = bitcast<f32>(part[(row * parts + p) * stride]);
        if (m != m) { bad = true; }
        mx = max(mx, m);
    }
    if (bad) { mx = nan_f32(); }
    var l = 0.0;
    for (var p = 0u; p < parts; p++) {
        let rec = (row * parts + p) * stride;
        l += bitcast<f32>(part[rec + 1u]) * exp(bitcast<f32>(part[rec]) - mx);
    }
    for (var e = lid; e < d; e += WG) {
        var o = 0.0;
        for (var p = 0u; p < parts; p++) {
            let rec = (row * parts + p) * stride;
            o += bitcast<f32>(part[rec + 2u + e]) * exp(bitcast<f32>(part[rec]) - mx);
        }
        var v = 0.0;
        if (l != 0.0) { v = o / l; }
        st_out(pu(11u) + row * d + e, v);
    }
}
