//! Small helpers shared by the op modules: view offsets as shader indices,
//! grid sizes.

use hal::{HalError, Result, View};

use crate::WgpuDevice;

/// Element offset of `v` in its buffer, as a shader index (elements of
/// 16- and 8-bit types are addressed individually by the accessors).
pub(crate) fn elem_offset(dev: &WgpuDevice, op: &'static str, v: &View<'_>) -> Result<u32> {
    u32::try_from(v.layout.end().max(v.layout.offset()))
        .map(|_| v.layout.offset() as u32)
        .map_err(|_| {
            HalError::invalid(
                &dev.name,
                op,
                "a view reaches past element 2^32, beyond shader indexing",
            )
        })
}

/// Word offset of an I64 view (two words per element).
pub(crate) fn word_offset(dev: &WgpuDevice, op: &'static str, v: &View<'_>) -> Result<u32> {
    let e = elem_offset(dev, op, v)?;
    e.checked_mul(2)
        .ok_or_else(|| HalError::invalid(&dev.name, op, "an i64 view lies past word 2^32"))
}

/// Workgroups for `n` invocations of `wg` each.
pub(crate) fn groups_for(n: usize, wg: u32) -> usize {
    n.div_ceil(wg as usize)
}
