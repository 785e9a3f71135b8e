// Matrix-vector form of the GEMM for a few rows (decode): one workgroup per
// output feature n, the invocations split K, then a tree reduction per row.
// Params as the tiled kernel; M ≤ ROWS.
const ROWS: u32 = 8u;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let mm = pu(0u);
    let nn = pu(1u);
    let kk = pu(2u);
    let n = wg_linear(wg, nwg);
    if (n >= nn) { return; }
    var acc: array<f32, 8>;
    for (var k = lid; k < kk; k += WG) {
        let w = w_at(n, k);
        for (var m = 0u; m < mm; m++) { acc[m] += x_at(m, k) * w; }
    }
    for (var m = 0u; m < mm; m++) {
        red[lid] = acc[m];
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (lid < s) { red[lid] += red[lid + s]; }
            workgroupBarrier();
        }
        if (lid == 0u) {
            var v = red[0];
            if (pu(6u) != 0u) { v += ld_bias(pu(5u) + n); }
            st_out(pu(4u) + m * nn + n, v);
        }
        workgroupBarrier();
    }
}
