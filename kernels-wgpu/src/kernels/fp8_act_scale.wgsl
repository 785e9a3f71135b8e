// FP8 W8A8 activation scales: scale[m] = max(amax / 448, 1 / (448 · 512)),
// amax over row m (per token) or over every row (per tensor; one workgroup).
// Params: 0 M, 1 K, 2 x offset, 3 per tensor.
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wg_linear(wg, nwg);
    let mm = pu(0u);
    let kk = pu(1u);
    let whole = pu(3u) != 0u;
    if (row >= mm || (whole && row > 0u)) { return; }
    var start = row * kk;
    var end = start + kk;
    if (whole) { start = 0u; end = mm * kk; }
    var a = 0.0;
    for (var i = start + lid; i < end; i += WG) { a = max(a, abs(ld_x(pu(2u) + i))); }
    red[lid] = a;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let sc = max(red[0] / 448.0, 1.0 / (448.0 * 512.0));
        if (whole) {
            for (var m = 0u; m < mm; m++) { atomicStore(&xs[m], bitcast<u32>(sc)); }
        } else {
            atomicStore(&xs[row], bitcast<u32>(sc));
        }
    }
}
