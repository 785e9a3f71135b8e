// out[M, N] = x[M, K] · W[N, K]ᵀ (+ bias[N]), 16×16 output tile per
// workgroup, K in steps of 16 through workgroup memory. `x_at(m, k)` and
// `w_at(n, k)` read (and dequantise) the operands.
// Params: 0 M, 1 N, 2 K, 3 x offset, 4 out offset, 5 bias offset, 6 has bias.
var<workgroup> xt: array<array<f32, 16>, 16>;
var<workgroup> wt: array<array<f32, 16>, 16>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let mm = pu(0u);
    let nn = pu(1u);
    let kk = pu(2u);
    let tiles_n = (nn + 15u) / 16u;
    let tile = wg_linear(wg, nwg);
    let m0 = (tile / tiles_n) * 16u;
    let n0 = (tile % tiles_n) * 16u;
    if (m0 >= mm) { return; }
    let lx = lid % 16u;
    let ly = lid / 16u;
    var acc = 0.0;
    for (var k0 = 0u; k0 < kk; k0 += 16u) {
        let k = k0 + lx;
        var xv = 0.0;
        if (m0 + ly < mm && k < kk) { xv = x_at(m0 + ly, k); }
        xt[ly][lx] = xv;
        var wv = 0.0;
        if (n0 + ly < nn && k < kk) { wv = w_at(n0 + ly, k); }
        wt[ly][lx] = wv;
        workgroupBarrier();
        for (var t = 0u; t < 16u; t++) { acc += xt[ly][t] * wt[lx][t]; }
        workgroupBarrier();
    }
    let m = m0 + ly;
    let n = n0 + lx;
    if (m < mm && n < nn) {
        if (pu(6u) != 0u) { acc += ld_bias(pu(5u) + n); }
        st_out(pu(4u) + m * nn + n, acc);
    }
}
