// RMS norm with optional fused residual add; one workgroup per row.
// Params: 0 rows, 1 hidden, 2 eps (f32), 3 x offset, 4 weight offset,
// 5 out offset, 6 residual offset, 7 has residual.
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wg_linear(wg, nwg);
    if (row >= pu(0u)) { return; }
    let h = pu(1u);
    let xo = pu(3u) + row * h;
    let wo = pu(4u);
    let oo = pu(5u) + row * h;
    let ro = pu(6u) + row * h;
    let has_res = pu(7u) != 0u;
    var ss = 0.0;
    for (var i = lid; i < h; i += WG) {
        var v = ld_x(xo + i);
        if (has_res) {
            st_res(ro + i, v + ld_res(ro + i));
            v = ld_res(ro + i);
        }
        ss += v * v;
    }
    red[lid] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(red[0] / f32(h) + pf(2u));
    for (var i = lid; i < h; i += WG) {
        var v: f32;
        if (has_res) { v = ld_res(ro + i); } else { v = ld_x(xo + i); }
        st_out(oo + i, v * inv * ld_w(wo + i));
    }
}
