// out[t, j] = silu(x[t, j]) * x[t, I + j]; one invocation per output element.
// Params: 0 tokens, 1 I, 2 x offset, 3 out offset.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let gid = wg_linear(wg, nwg) * WG + lid;
    let inter = pu(1u);
    if (gid >= pu(0u) * inter) { return; }
    let row = gid / inter;
    let j = gid % inter;
    let g = ld_x(pu(2u) + row * 2u * inter + j);
    let u = ld_x(pu(2u) + row * 2u * inter + inter + j);
    st_out(pu(3u) + gid, g / (1.0 + exp(-g)) * u);
}
