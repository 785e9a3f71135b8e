// The normalised output row (zeros when the query sees no key).
fn write_out(lid: u32, obase: u32, empty: bool) {
    for (var r = 0u; r < PER; r++) {
        let e = lid + r * WG;
        if (e < pu(3u)) {
            var o = 0.0;
            if (!empty) { o = acc[r] / l_run; }
            st_out(obase + e, o);
        }
    }
}
