// Matrix-vector form of the GEMM for a few rows (decode): NPW output
// features per workgroup, LANES invocations per feature splitting K, one
// workgroup-memory reduction. The sum order of an output does not depend
// on M. Params as the tiled kernel; M ≤ ROWS.
const ROWS: u32 = 8u;
const NPW: u32 = 16u;
const LANES: u32 = WG / NPW;
var<workgroup> red: array<f32, 512>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let mm = pu(0u);
    let nn = pu(1u);
    let kk = pu(2u);
    let n0 = wg_linear(wg, nwg) * NPW;
    if (n0 >= nn) { return; }
    let n = n0 + lid / LANES;
    let lane = lid % LANES;
    var acc: array<f32, 8>;
    if (n < nn) {
        for (var k = lane; k < kk; k += LANES) {
            let w = w_at(n, k);
            for (var m = 0u; m < mm; m++) { acc[m] += x_at(m, k) * w; }
        }
    }
    for (var m = 0u; m < ROWS; m++) { red[m * WG + lid] = acc[m]; }
    workgroupBarrier();
    if (lane == 0u && n < nn) {
        for (var m = 0u; m < mm; m++) {
            var v = 0.0;
            for (var l = 0u; l < LANES; l++) { v += red[m * WG + lid + l]; }
            if (pu(6u) != 0u) { v += ld_bias(pu(5u) + n); }
            st_out(pu(4u) + m * nn + n, v);
        }
    }
}
