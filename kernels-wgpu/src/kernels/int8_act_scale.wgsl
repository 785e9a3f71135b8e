// llama.cpp int8 activations: for each row m and block b of 32 along K (the
// last may be shorter), d = amax / 127, writes (1/d or 0, f16(d)) to
// xs[2 (m · blocks + b)]. One invocation per (row, block).
// Params: 0 M, 1 K, 2 x offset.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let gid = wg_linear(wg, nwg) * WG + lid;
    let kk = pu(1u);
    let blocks = (kk + 31u) / 32u;
    if (gid >= pu(0u) * blocks) { return; }
    let m = gid / blocks;
    let k0 = (gid % blocks) * 32u;
    var amax = 0.0;
    for (var k = k0; k < min(k0 + 32u, kk); k++) { amax = max(amax, abs(ld_x(pu(2u) + m * kk + k))); }
    let d = amax / 127.0;
    var id = 0.0;
    if (d != 0.0) { id = 1.0 / d; }
    atomicStore(&xs[2u * gid], bitcast<u32>(id));
    atomicStore(&xs[2u * gid + 1u], bitcast<u32>(unpack2x16float(f32_to_f16(d)).x));
}
