// Dense varlen attention (FlashAttention-2 API): one workgroup per (query
// token, query head); causal masks align to the bottom right.
// Params: 0 tokens, 1 heads, 2 kv heads, 3 head_dim, 4 batch, 5 causal,
// 7 scale, 8 window (0 = none), 9 soft-cap, 10 q offset, 11 out offset,
// 12 cu_seqlens_q offset, 13 cu_seqlens_k offset, 14 k offset, 15 v offset.
var<private> k0: u32;

fn kbase(j: u32, kvh: u32) -> u32 { return pu(14u) + ((k0 + j) * pu(2u) + kvh) * pu(3u); }
fn vbase(j: u32, kvh: u32) -> u32 { return pu(15u) + ((k0 + j) * pu(2u) + kvh) * pu(3u); }
fn kld(i: u32) -> f32 { return ld_k(i); }
fn vld(i: u32) -> f32 { return ld_v(i); }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let wid = wg_linear(wg, nwg);
    let heads = pu(1u);
    let tok = wid / heads;
    let head = wid % heads;
    if (tok >= pu(0u)) { return; }
    var b = 0u;
    for (; b + 1u < max(pu(4u), 1u); b++) {
        if (tok < cuq[pu(12u) + b + 1u]) { break; }
    }
    let q0 = cuq[pu(12u) + b];
    let lq = i32(cuq[pu(12u) + b + 1u] - q0);
    k0 = cuk[pu(13u) + b];
    let lk = i32(cuk[pu(13u) + b + 1u] - k0);
    let aligned = i32(tok - q0) + lk - lq;
    let win = i32(pu(8u));
    var lo = 0;
    var hi = lk - 1;
    var empty = lk <= 0 || pu(4u) == 0u || tok >= cuq[pu(12u) + pu(4u)];
    if (pu(5u) != 0u) {
        if (aligned < 0) { empty = true; }
        hi = min(aligned, lk - 1);
    }
    if (win > 0 && aligned >= 0 && aligned + 1 > win) { lo = aligned + 1 - win; }
    if (lo > hi) { empty = true; }
    let kvh = head / (heads / pu(2u));
    let base = (tok * heads + head) * pu(3u);
    attend(lid, pu(10u) + base, kvh, u32(max(lo, 0)), u32(max(hi, 0)), empty);
    write_out(lid, pu(11u) + base, empty);
}
