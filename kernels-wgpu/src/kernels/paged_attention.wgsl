// Paged attention: key and value addressing through the block table, and
// the key span of each query token; `paged_main.wgsl` / `paged_split.wgsl`
// hold the entry points.
// Params: 0 tokens, 1 heads, 2 kv heads, 3 head_dim, 4 batch, 5 block size,
// 6 block-table columns, 7 scale, 8 window (0 = none), 9 soft-cap,
// 10 q offset, 11 out offset, 12 query_start_loc offset, 13 seq_lens
// offset, 14 block_tables offset, 15 k scale, 16 v scale.
var<private> seq: u32;

fn slot_of(j: u32) -> u32 {
    let bs = pu(5u);
    let blk = bt[pu(14u) + seq * pu(6u) + j / bs];
    return blk * bs + j % bs;
}
fn kbase(j: u32, kvh: u32) -> u32 { return (slot_of(j) * pu(2u) + kvh) * pu(3u); }
fn vbase(j: u32, kvh: u32) -> u32 { return kbase(j, kvh); }
fn kld(i: u32) -> f32 { return ld_kc(i) * pf(15u); }
fn vld(i: u32) -> f32 { return ld_vc(i) * pf(16u); }

struct Span { lo: u32, hi: u32, empty: bool }

// The keys query token `tok` sees (and its sequence, in `seq`).
fn span(tok: u32) -> Span {
    var b = 0u;
    for (; b + 1u < pu(4u); b++) {
        if (tok < qsl[pu(12u) + b + 1u]) { break; }
    }
    seq = b;
    let past_end = tok >= qsl[pu(12u) + pu(4u)];
    let q0 = qsl[pu(12u) + b];
    let qlen = qsl[pu(12u) + b + 1u] - q0;
    let len = sl[pu(13u) + b];
    var p = 0u;
    if (!past_end) { p = len - qlen + (tok - q0); }
    var lo = 0u;
    let win = pu(8u);
    if (win > 0u && p + 1u > win) { lo = p + 1u - win; }
    return Span(lo, p, past_end);
}
