//! The case tables: every op family × model shape × dtype or format ×
//! workload, hot and (for decode on weights or a KV cache) cold.
//!
//! [`Grid::new`] says which shapes a run covers ([`Grid::quick`] is a small
//! subset); [`all`] expands a grid into [`Case`]s, in family order.

pub mod attention;
pub mod elementwise;
pub mod gemm;
pub mod quant;

use std::sync::Arc;

use hal::{DType, Precision};

use crate::case::{cold_copies, Case, Op, Temp};
use crate::shapes::{ModelShape, Scale, Workload, LLAMA3_8B, SMOLLM2_135M, TINY};

pub use attention::{FlashCase, PagedCase, WriteKvCase};
pub use elementwise::{AddCase, EmbeddingCase, RmsNormCase, RopeCase, SiluAndMulCase, TableKind};
pub use gemm::GemmCase;
pub use quant::{QuantGemmCase, QuantKind};

/// Working set a cold variant must exceed at [`Scale::Real`]: 300 MiB, more
/// than the last-level cache of the machines Kiln is benchmarked on.
pub const COLD_BYTES: usize = 300 << 20;

/// Which shapes, dtypes and workloads a run covers.
#[derive(Clone, Debug)]
pub struct Grid {
    /// Models whose shapes are used.
    pub models: Vec<ModelShape>,
    /// Dense GEMM dtypes.
    pub gemm_dtypes: Vec<DType>,
    /// Quantised weight formats.
    pub quant_kinds: Vec<QuantKind>,
    /// Token counts of the GEMM cases (`M`).
    pub linear_workloads: Vec<Workload>,
    /// `write_kv` workloads.
    pub write_kv_workloads: Vec<Workload>,
    /// Paged-attention workloads (decode × context, chunked prefill).
    pub paged_workloads: Vec<Workload>,
    /// Flash-attention prompt lengths.
    pub flash_lengths: Vec<usize>,
    /// Activation dtypes of attention, `write_kv` and the element-wise ops.
    pub act_dtypes: Vec<DType>,
    /// Token counts of the element-wise ops.
    pub small_workloads: Vec<Workload>,
    /// Embedding table formats.
    pub tables: Vec<TableKind>,
    /// Whether cold variants are generated.
    pub cold: bool,
    /// Working set a cold variant exceeds, in bytes.
    pub cold_bytes: usize,
}

fn decode(batch: usize, context: usize) -> Workload {
    Workload::Decode { batch, context }
}

fn prefill(tokens: usize) -> Workload {
    Workload::Prefill { tokens }
}

impl Grid {
    /// The grid of a full (`quick = false`) or quick run at `scale`.
    pub fn new(quick: bool, scale: Scale) -> Grid {
        match (scale, quick) {
            (Scale::Real, false) => Grid::full(),
            (Scale::Real, true) => Grid::quick(),
            (Scale::Tiny, quick) => Grid::tiny(quick),
        }
    }

    /// Full run: SmolLM2-135M and Llama-3-8B; decode b1/b8/b32 (contexts 512
    /// and 2k for attention) and prefill 512 (and 2k for flash attention);
    /// f32 and f16 activations; hot and cold.
    pub fn full() -> Grid {
        Grid {
            models: vec![SMOLLM2_135M, LLAMA3_8B],
            gemm_dtypes: vec![DType::F32, DType::F16, DType::BF16],
            quant_kinds: QuantKind::ALL.to_vec(),
            linear_workloads: vec![
                decode(1, 512),
                decode(8, 512),
                decode(32, 512),
                prefill(512),
            ],
            write_kv_workloads: vec![decode(1, 512), decode(32, 512), prefill(512)],
            paged_workloads: [1, 8, 32]
                .into_iter()
                .flat_map(|b| [decode(b, 512), decode(b, 2048)])
                .chain([Workload::ChunkedPrefill {
                    query: 512,
                    context: 2048,
                }])
                .collect(),
            flash_lengths: vec![512, 2048],
            act_dtypes: vec![DType::F32, DType::F16],
            small_workloads: vec![decode(1, 512), decode(32, 512), prefill(512)],
            tables: vec![TableKind::F16, TableKind::Q8_0],
            cold: true,
            cold_bytes: COLD_BYTES,
        }
    }

    /// Quick run (under 2 minutes with `cargo bench` on a 2-core box):
    /// SmolLM2-135M only, f32 activations, decode b1 and prefill 512 for
    /// GEMM, every quant format at decode b1, hot only.
    pub fn quick() -> Grid {
        Grid {
            models: vec![SMOLLM2_135M],
            gemm_dtypes: vec![DType::F32],
            quant_kinds: QuantKind::ALL.to_vec(),
            linear_workloads: vec![decode(1, 512), prefill(512)],
            write_kv_workloads: vec![decode(8, 512)],
            paged_workloads: vec![decode(1, 2048), decode(8, 512)],
            flash_lengths: vec![512],
            act_dtypes: vec![DType::F32],
            small_workloads: vec![decode(1, 512), prefill(512)],
            tables: vec![TableKind::F16, TableKind::Q8_0],
            cold: false,
            cold_bytes: COLD_BYTES,
        }
    }

    /// Toy shapes for tests: every family, format and dtype of the full grid
    /// (fewer of them when `quick`), contexts that end mid-block, and a
    /// 256 KiB cold threshold.
    pub fn tiny(quick: bool) -> Grid {
        let mut g = Grid {
            models: vec![TINY],
            gemm_dtypes: vec![DType::F32, DType::F16, DType::BF16],
            quant_kinds: QuantKind::ALL.to_vec(),
            linear_workloads: vec![decode(1, 40), decode(3, 40), prefill(24)],
            write_kv_workloads: vec![decode(3, 40), prefill(24)],
            paged_workloads: vec![
                decode(1, 40),
                decode(3, 16),
                Workload::ChunkedPrefill {
                    query: 8,
                    context: 40,
                },
            ],
            flash_lengths: vec![24],
            act_dtypes: vec![DType::F32, DType::F16],
            small_workloads: vec![decode(3, 40), prefill(24)],
            tables: vec![TableKind::F16, TableKind::Q8_0],
            cold: true,
            cold_bytes: 256 << 10,
        };
        if quick {
            g.gemm_dtypes.truncate(1);
            g.act_dtypes.truncate(1);
            g.cold = false;
        }
        g
    }
}

/// Every case of `grid`, in [`crate::case::Family::ALL`] order.
pub fn all(grid: &Grid) -> Vec<Case> {
    let mut ops: Vec<Box<dyn Op>> = Vec::new();
    for &model in &grid.models {
        let layer = model.mlp_down();
        for &dtype in &grid.gemm_dtypes {
            for &workload in &grid.linear_workloads {
                ops.push(Box::new(GemmCase {
                    model,
                    layer,
                    workload,
                    dtype,
                }));
            }
        }
        for &kind in &grid.quant_kinds {
            // FP8 W8A8 fixes its own activation format: no int8 variant.
            let precisions: &[Precision] = if kind == QuantKind::Fp8 {
                &[Precision::Exact]
            } else {
                &[Precision::Exact, Precision::Int8Activations]
            };
            for &precision in precisions {
                for &workload in &grid.linear_workloads {
                    ops.push(Box::new(QuantGemmCase {
                        model,
                        layer,
                        workload,
                        kind,
                        precision,
                    }));
                }
                // The square attention projection, at single-token decode.
                for &workload in grid.linear_workloads.iter().filter(|w| w.num_tokens() == 1) {
                    ops.push(Box::new(QuantGemmCase {
                        model,
                        layer: model.attn_out(),
                        workload,
                        kind,
                        precision,
                    }));
                }
            }
        }
        for &dtype in &grid.act_dtypes {
            for &workload in &grid.write_kv_workloads {
                ops.push(Box::new(WriteKvCase {
                    model,
                    workload,
                    dtype,
                }));
            }
            for &workload in &grid.paged_workloads {
                ops.push(Box::new(PagedCase {
                    model,
                    workload,
                    dtype,
                }));
            }
            for &seq_len in &grid.flash_lengths {
                ops.push(Box::new(FlashCase {
                    model,
                    seq_len,
                    dtype,
                }));
            }
            for &workload in &grid.small_workloads {
                for residual in [false, true] {
                    ops.push(Box::new(RmsNormCase {
                        model,
                        workload,
                        dtype,
                        residual,
                    }));
                }
                ops.push(Box::new(RopeCase {
                    model,
                    workload,
                    dtype,
                }));
                ops.push(Box::new(SiluAndMulCase {
                    model,
                    workload,
                    dtype,
                }));
                ops.push(Box::new(AddCase {
                    model,
                    workload,
                    dtype,
                }));
            }
        }
        for &table in &grid.tables {
            for &workload in &grid.small_workloads {
                ops.push(Box::new(EmbeddingCase {
                    model,
                    workload,
                    table,
                }));
            }
        }
    }
    ops.sort_by_key(|op| op.family());
    let mut cases = Vec::new();
    for op in ops {
        let op: Arc<dyn Op> = Arc::from(op);
        cases.push(Case::new(op.clone(), Temp::Hot, 1));
        if grid.cold && op.has_cold_variant() {
            let copies = cold_copies(op.resident_bytes(), grid.cold_bytes);
            cases.push(Case::new(op, Temp::Cold, copies));
        }
    }
    cases
}
