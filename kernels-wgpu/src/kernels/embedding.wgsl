// out[t, :] = table[ids[t], :] (zeros for an id outside the table); one
// invocation per output element. `table_at(row, col)` reads the dense or
// quantised table. Params: 0 tokens, 1 hidden, 2 vocab, 3 ids offset,
// 4 table offset, 5 out offset.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let gid = wg_linear(wg, nwg) * WG + lid;
    let h = pu(1u);
    if (gid >= pu(0u) * h) { return; }
    let tok = gid / h;
    let col = gid % h;
    let id = bitcast<i32>(ids[pu(3u) + tok]);
    var v = 0.0;
    if (id >= 0 && u32(id) < pu(2u)) { v = table_at(u32(id), col); }
    st_out(pu(5u) + gid, v);
}
