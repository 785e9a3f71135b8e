//! Capabilities from the adapter probe, and the limits `supports` adds to
//! [`hal::Capabilities::check`].

use hal::{Capabilities, DType, KvLayout, OpDesc, Precision, QuantFormat, Unsupported};

use crate::device::AdapterProbe;

/// Largest attention head dim: the query row and each invocation's slice
/// of the accumulator live in fixed-size workgroup / private arrays.
pub(crate) const MAX_HEAD_DIM: usize = 256;

/// What the adapter in `probe` runs.
pub(crate) fn capabilities(probe: &AdapterProbe) -> Capabilities {
    let mut device = probe.description.clone();
    let mut extras = Vec::new();
    if probe.shader_f16 {
        extras.push("shader-f16".to_string());
    }
    if let Some((lo, hi)) = probe.subgroups {
        extras.push(if lo == hi {
            format!("subgroup {lo}")
        } else {
            format!("subgroups {lo}-{hi}")
        });
    }
    extras.push(format!(
        "binding ≤ {} MiB, workgroup memory {} KiB",
        probe.max_storage_binding >> 20,
        probe.workgroup_memory >> 10
    ));
    device.push_str(&format!(" [{}]", extras.join(", ")));
    Capabilities {
        device,
        memory_bytes: None,
        activation_dtypes: vec![DType::F32, DType::F16, DType::BF16],
        kv_cache_dtypes: vec![DType::F32, DType::F16, DType::BF16, DType::F8E4M3],
        kv_layouts: vec![KvLayout::Nhd],
        head_dims: Vec::new(),
        block_sizes: Vec::new(),
        quant_formats: QuantFormat::ALL.to_vec(),
        precisions: vec![Precision::Exact, Precision::Int8Activations],
        batch_invariant: false,
        step_capture: false,
    }
}

/// [`Capabilities::check`] plus this backend's own limits.
pub(crate) fn supports(caps: &Capabilities, op: &OpDesc) -> Result<(), Unsupported> {
    caps.check(op)?;
    let name = op.name();
    let head_dim = match *op {
        OpDesc::PagedAttention { cache, .. } => Some(cache.head_dim),
        OpDesc::FlashAttention { head_dim, .. } => Some(head_dim),
        _ => None,
    };
    if let Some(d) = head_dim {
        if d > MAX_HEAD_DIM {
            return Err(Unsupported::new(
                name,
                format!("head_dim {d} exceeds the kernels' maximum of {MAX_HEAD_DIM}"),
            ));
        }
    }
    Ok(())
}
