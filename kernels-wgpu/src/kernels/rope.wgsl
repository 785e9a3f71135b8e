// Rotary embedding in place on q and k; one invocation per (token, head, pair).
// Params: 0 tokens, 1 q heads, 2 k heads, 3 head_dim, 4 rotary_dim,
// 5 style (0 neox, 1 gptj), 6 q offset, 7 k offset, 8 positions word offset,
// 9 max_position, 10 cos_sin offset.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let gid = wg_linear(wg, nwg) * WG + lid;
    let hq = pu(1u);
    let heads = hq + pu(2u);
    let d = pu(3u);
    let rot = pu(4u);
    let half = rot / 2u;
    if (gid >= pu(0u) * heads * half) { return; }
    let i = gid % half;
    let hh = (gid / half) % heads;
    let tok = gid / (half * heads);
    let plo = pos[pu(8u) + 2u * tok];
    let phi = pos[pu(8u) + 2u * tok + 1u];
    if (phi != 0u || plo >= pu(9u)) { return; }
    let c = ld_cs(pu(10u) + plo * rot + i);
    let s = ld_cs(pu(10u) + plo * rot + half + i);
    var ia = i;
    var ib = i + half;
    if (pu(5u) == 1u) { ia = 2u * i; ib = 2u * i + 1u; }
    if (hh < hq) {
        let base = pu(6u) + (tok * hq + hh) * d;
        let a = ld_q(base + ia);
        let b = ld_q(base + ib);
        st_q(base + ia, a * c - b * s);
        st_q(base + ib, b * c + a * s);
    } else {
        let base = pu(7u) + (tok * (heads - hq) + hh - hq) * d;
        let a = ld_k(base + ia);
        let b = ld_k(base + ib);
        st_k(base + ia, a * c - b * s);
        st_k(base + ib, b * c + a * s);
    }
}
