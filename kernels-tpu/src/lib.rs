//! Kiln's TPU backend: every op is a StableHLO program, compiled and run by
//! a PJRT plugin (`libtpu.so` on a TPU VM; XLA's CPU plugin elsewhere).
//!
//! * [`pjrt`] — the binding to the PJRT C API (dlopen, `GetPjrtApi`,
//!   version check, client, compile, execute, buffers, events, errors);
//! * [`hlo`] — a typed builder producing StableHLO programs as MLIR text;
//! * [`device`] — the process-wide client, byte buffers kept on the device,
//!   the compiled-program cache, and the view load/store helpers;
//! * `gemm`, `quant`, `attention`, `kv_cache`, `elementwise` — the lowerings,
//!   one module per op family.
//!
//! The plugin is `$KILN_PJRT_PLUGIN`, else the cached CPU plugin
//! (`~/.cache/kiln/pjrt/pjrt_c_api_cpu_plugin.so`). Opening never panics:
//! without a plugin the probe reports [`hal::Unavailable`] with the reason.

mod attention;
mod caps;
pub mod device;
mod elementwise;
mod gemm;
pub mod hlo;
mod kv_cache;
pub mod pjrt;
mod quant;

use std::sync::Arc;

use hal::{
    AddArgs, Backend, BackendFactory, Capabilities, DeviceBuffer, DeviceInfo, Elementwise,
    EmbeddingArgs, FlashAttention, FlashAttentionArgs, Gemm, GemmArgs, KvCache, KvCacheOps, OpDesc,
    PackedWeight, PagedAttention, PagedAttentionArgs, Probe, QuantGemm, QuantGemmArgs,
    QuantWeights, Result, RmsNormArgs, RopeArgs, SiluAndMulArgs, StepCapture, Unsupported,
    WriteKvArgs,
};

pub use device::TpuDevice;

impl TpuDevice {
    /// `supports`, as an error naming this backend.
    pub(crate) fn check(&self, op: &OpDesc) -> Result<()> {
        self.supports(op).map_err(|u| self.refuse(u))
    }
}

impl Backend for TpuDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn supports(&self, op: &OpDesc) -> std::result::Result<(), Unsupported> {
        caps::supports(&self.caps, op)
    }

    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        self.alloc_impl(bytes)
    }

    fn upload(&self, dst: &mut DeviceBuffer, offset: usize, src: &[u8]) -> Result<()> {
        self.upload_impl(dst, offset, src)
    }

    fn download(&self, src: &DeviceBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.download_impl(src, offset, dst)
    }

    /// Every program run waits for its completion event, so there is
    /// nothing left to wait for.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

impl Gemm for TpuDevice {
    fn gemm(&self, args: GemmArgs<'_>) -> Result<()> {
        gemm::gemm(self, args)
    }
}

impl QuantGemm for TpuDevice {
    fn pack(&self, w: &QuantWeights) -> Result<PackedWeight> {
        quant::pack(self, w)
    }

    fn quant_gemm(&self, args: QuantGemmArgs<'_>) -> Result<()> {
        quant::quant_gemm(self, args)
    }
}

impl KvCacheOps for TpuDevice {
    /// K and V as typed arrays `[num_blocks, block_size, kv_heads, head_dim]`
    /// of the cache dtype, so attention and `write_kv` use them in place.
    fn alloc_kv_cache(
        &self,
        spec: &hal::KvCacheSpec,
        k_scale: f32,
        v_scale: f32,
    ) -> Result<KvCache> {
        kv_cache::alloc_kv_cache(self, spec, k_scale, v_scale)
    }

    fn write_kv(&self, args: WriteKvArgs<'_>) -> Result<()> {
        kv_cache::write_kv(self, args)
    }

    fn copy_blocks(&self, cache: &mut KvCache, pairs: &[(u32, u32)]) -> Result<()> {
        kv_cache::copy_blocks(self, cache, pairs)
    }
}

impl PagedAttention for TpuDevice {
    fn paged_attention(&self, args: PagedAttentionArgs<'_>) -> Result<()> {
        attention::paged_attention(self, args)
    }
}

impl FlashAttention for TpuDevice {
    fn flash_attention(&self, args: FlashAttentionArgs<'_>) -> Result<()> {
        attention::flash_attention(self, args)
    }
}

impl Elementwise for TpuDevice {
    fn rms_norm(&self, args: RmsNormArgs<'_>) -> Result<()> {
        elementwise::rms_norm(self, args)
    }

    fn rope(&self, args: RopeArgs<'_>) -> Result<()> {
        elementwise::rope(self, args)
    }

    fn silu_and_mul(&self, args: SiluAndMulArgs<'_>) -> Result<()> {
        elementwise::silu_and_mul(self, args)
    }

    fn embedding(&self, args: EmbeddingArgs<'_>) -> Result<()> {
        elementwise::embedding(self, args)
    }

    fn add(&self, args: AddArgs<'_>) -> Result<()> {
        elementwise::add(self, args)
    }
}

/// Eager steps: every op is its own program (see the crate README for the
/// plan to compile a whole decode step as one program).
impl StepCapture for TpuDevice {}

/// Open the plugin's first device (`tpu:0`).
pub fn open_default() -> Result<TpuDevice> {
    TpuDevice::open(0)
}

/// The registry factory of kind `tpu`.
pub fn factory() -> BackendFactory {
    fn probe() -> Probe {
        match device::list() {
            Ok(devs) => Probe::Available(
                devs.into_iter()
                    .map(|(index, description)| DeviceInfo { index, description })
                    .collect(),
            ),
            Err(reason) => Probe::Unavailable(reason),
        }
    }
    fn open(index: usize) -> Result<Arc<dyn hal::Device>> {
        Ok(Arc::new(TpuDevice::open(index)?))
    }
    BackendFactory {
        kind: "tpu",
        crate_name: env!("CARGO_PKG_NAME"),
        description: "TPUs (and XLA's CPU plugin): StableHLO through PJRT",
        api_version: hal::API_VERSION,
        probe,
        open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_never_panics_and_open_agrees() {
        let f = factory();
        assert_eq!(f.kind, "tpu");
        match (f.probe)() {
            Probe::Available(devs) => {
                assert!(!devs.is_empty());
                let d = (f.open)(0).expect("a listed device opens");
                assert_eq!(d.name(), "tpu:0");
                assert!(d.capabilities().device.contains("PJRT"));
                assert!((f.open)(devs.len()).is_err(), "index past the last device");
            }
            Probe::Unavailable(reason) => {
                let required = std::env::var("KILN_REQUIRE_TPU").is_ok_and(|v| v == "1");
                assert!(!required, "KILN_REQUIRE_TPU=1 but no PJRT device: {reason}");
                assert!(!reason.to_string().is_empty());
                assert!((f.open)(0).is_err());
            }
        }
    }

    /// A program using most builder ops compiles through the plugin and
    /// computes what it should.
    #[test]
    fn emitter_programs_compile_and_run() {
        use crate::hlo::{Builder, Cmp, El, GatherDims, Reduce, ScatterDims, Ty};
        let Ok(rt) = device::runtime() else {
            return;
        };
        let mut b = Builder::new();
        // x: f32 [2, 4] = [[0, 1, 2, 3], [4, 5, 6, 7]]
        let x = b.arg(Ty::new(&[2, 4], El::F32));
        let ids = b.const_i32(&[2], &[1, 0]);
        let rows = b.gather(
            &x,
            &ids,
            &GatherDims {
                offset_dims: vec![1],
                collapsed_slice_dims: vec![0],
                start_index_map: vec![0],
                index_vector_dim: 1,
                slice_sizes: vec![1, 4],
            },
            &[2, 4],
        );
        // rows = [[4..7], [0..3]]; row sums via dot with ones and via reduce.
        let ones = b.splat(Ty::new(&[4], El::F32), 1.0);
        let dot = b
            .dot_general(&rows, &ones, (&[], &[]), (&[1], &[0]), El::F32)
            .unwrap();
        let red = b.reduce(&rows, &[1], Reduce::Sum).unwrap();
        let both = b.add(&dot, &red).unwrap(); // [44, 12]
        let io = b.iota(Ty::new(&[2], El::F32), 0).unwrap(); // [0, 1]
        let one2 = b.splat(Ty::new(&[2], El::F32), 1.0);
        let gt = b.compare(&io, &one2, Cmp::Lt).unwrap(); // [true, false]
        let neg = b.neg(&both);
        let sel = b.select(&gt, &both, &neg).unwrap(); // [44, -12]
        let idx = b.const_i32(&[1, 1], &[1]);
        let upd = b.splat(Ty::new(&[1], El::F32), 0.5);
        let sc = b.scatter(
            &sel,
            &idx,
            &upd,
            &ScatterDims {
                update_window_dims: vec![],
                inserted_window_dims: vec![0],
                scatter_dims_to_operand_dims: vec![0],
                index_vector_dim: 1,
            },
        ); // [44, 0.5]
        let h = b.convert(&sc, El::F16);
        let raw = b.bitcast(&h, El::U8).unwrap();
        let back = b.bitcast(&raw, El::F16).unwrap();
        let f = b.convert(&back, El::F32);
        let t = b.reshape(&f, &[2, 1]).unwrap();
        let t = b.transpose(&t, &[1, 0]).unwrap();
        let c = b.concatenate(&[&t, &t], 0).unwrap(); // [[44, 0.5], [44, 0.5]]
        let c = b.reshape(&c, &[4]).unwrap();
        let text = b.finish(&[&c]);

        let exe = rt.client.compile(&text).expect("the program compiles");
        let data: Vec<u8> = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let input = rt
            .client
            .buffer_from_host(0, &data, pjrt::ElementType::F32, &[2, 4])
            .expect("upload");
        let out = exe.execute(&[&input], 1).expect("runs");
        let mut bytes = [0u8; 16];
        out[0].to_host(&mut bytes).expect("download");
        let got: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(got, [44.0, 0.5, 44.0, 0.5]);
    }

    /// The same op on the same shapes compiles once; another shape compiles
    /// again.
    #[test]
    fn programs_are_cached_per_shape() {
        let Ok(d) = open_default() else {
            return;
        };
        let mut b = d.alloc(40).expect("alloc");
        d.upload(&mut b, 3, &[1, 2, 3, 4, 5, 6, 7]).expect("upload");
        // Partial uploads into a 40-byte buffer: only this test makes them.
        let key = "upload|40|";
        assert_eq!(d.cached_programs(key), 1);
        d.upload(&mut b, 3, &[9, 9, 9, 9, 9, 9, 9]).expect("upload");
        assert_eq!(d.cached_programs(key), 1, "same shape: cache hit");
        d.upload(&mut b, 3, &[9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9])
            .expect("upload");
        assert_eq!(d.cached_programs(key), 2, "new shape: compiled");
        let mut out = [0u8; 4];
        d.download(&b, 2, &mut out).expect("download");
        assert_eq!(out, [0, 9, 9, 9]);
    }

    #[test]
    fn compile_errors_name_the_entry_point() {
        let Ok(rt) = device::runtime() else {
            return;
        };
        let e = rt.client.compile("module { not stablehlo }").unwrap_err();
        assert_eq!(e.op, "PJRT_Client_Compile");
        assert!(!e.msg.is_empty());
    }

    #[test]
    fn upload_download_round_trip() {
        let Ok(d) = open_default() else {
            return;
        };
        let mut b = d.alloc(16).expect("alloc");
        let mut out = [0xffu8; 16];
        d.download(&b, 0, &mut out).expect("download");
        assert_eq!(out, [0u8; 16]);
        d.upload(&mut b, 0, &[7u8; 16]).expect("upload");
        d.upload(&mut b, 4, &[1, 2, 3]).expect("partial upload");
        d.download(&b, 0, &mut out).expect("download");
        assert_eq!(&out[..8], &[7, 7, 7, 7, 1, 2, 3, 7]);
        let mut part = [0u8; 2];
        d.download(&b, 5, &mut part).expect("partial download");
        assert_eq!(part, [2, 3]);
        assert!(d.upload(&mut b, 15, &[0, 0]).is_err());
        assert!(d.download(&b, 20, &mut part).is_err());
    }
}
