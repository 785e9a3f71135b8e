// Scatter new keys and values into the paged cache (NHD), one invocation
// per (token, kv head, element); negative slots are padding.
// Params: 0 tokens, 1 kv heads, 2 head_dim, 3 key offset, 4 value offset,
// 5 slot_mapping word offset, 6 k scale, 7 v scale (1 unless FP8), 8 slots.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let gid = wg_linear(wg, nwg) * WG + lid;
    let row = pu(1u) * pu(2u);
    if (gid >= pu(0u) * row) { return; }
    let tok = gid / row;
    let e = gid % row;
    let lo = slots[pu(5u) + 2u * tok];
    let hi = slots[pu(5u) + 2u * tok + 1u];
    if (hi != 0u || lo >= pu(8u)) { return; }
    let dst = lo * row + e;
    st_kc(dst, ld_key(pu(3u) + gid) / pf(6u));
    st_vc(dst, ld_value(pu(4u) + gid) / pf(7u));
}
