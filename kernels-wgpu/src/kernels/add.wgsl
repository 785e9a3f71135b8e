// out = a + b, b optionally one row broadcast; one invocation per element.
// Params: 0 rows, 1 n, 2 a offset, 3 b offset, 4 out offset, 5 broadcast.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let gid = wg_linear(wg, nwg) * WG + lid;
    let n = pu(1u);
    if (gid >= pu(0u) * n) { return; }
    var bi = gid;
    if (pu(5u) != 0u) { bi = gid % n; }
    st_out(pu(4u) + gid, ld_a(pu(2u) + gid) + ld_b(pu(3u) + bi));
}
