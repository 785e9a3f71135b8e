// One workgroup per (query token, query head) over all its keys.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let wid = wg_linear(wg, nwg);
    let heads = pu(1u);
    let tok = wid / heads;
    let head = wid % heads;
    if (tok >= pu(0u)) { return; }
    let s = span(tok);
    let kvh = head / (heads / pu(2u));
    let base = (tok * heads + head) * pu(3u);
    attend(lid, pu(10u) + base, kvh, s.lo, s.hi, s.empty);
    write_out(lid, pu(11u) + base, s.empty);
}
