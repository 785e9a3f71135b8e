//! Dense GEMM through cuBLAS (`cublasGemmEx`, f32 accumulation).
//!
//! `out[M, N] = x[M, K] · w[N, K]ᵀ (+ bias)`: row-major `x` and `w` are the
//! column-major `xᵀ` and `wᵀ`, so cuBLAS computes the column-major
//! `outᵀ[N, M] = (wᵀ)ᵀ · xᵀ` with `transa = T`. The product lands in f32 (in
//! `out` itself when it is f32 and there is no bias, else in scratch) and an
//! epilogue kernel adds the bias and converts to the output dtype. cuBLAS is
//! loaded at run time; without it, `supports` refuses `gemm` and says why.

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cublas::{result as blas, sys as bsys};
use cudarc::driver::{CudaContext, CudaStream};
use hal::{Backend, DType, GemmArgs, HalError, OpDesc, Result, Unsupported};

use crate::device::{Arg, CudaDevice};
use crate::sources::ELEMENTWISE;

struct Handle(bsys::cublasHandle_t);

// SAFETY: the handle is used only under the mutex, with the context bound.
unsafe impl Send for Handle {}

/// A cuBLAS handle bound to the device's stream.
pub(crate) struct Blas {
    handle: Mutex<Handle>,
    ctx: Arc<CudaContext>,
}

impl Blas {
    /// A handle on `stream`, or `None` when libcublas cannot be loaded.
    pub(crate) fn new(ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>) -> Option<Blas> {
        // SAFETY: only tries to dlopen libcublas.
        if !unsafe { bsys::is_culib_present() } {
            return None;
        }
        ctx.bind_to_thread().ok()?;
        let handle = blas::create_handle().ok()?;
        // SAFETY: both handles are live; the stream outlives the handle (the
        // device holds both and drops the handle first).
        let bound = unsafe { blas::set_stream(handle, stream.cu_stream() as bsys::cudaStream_t) };
        if bound.is_err() {
            // SAFETY: created above, destroyed once.
            let _ = unsafe { blas::destroy_handle(handle) };
            return None;
        }
        Some(Blas {
            handle: Mutex::new(Handle(handle)),
            ctx: ctx.clone(),
        })
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        if let Ok(h) = self.handle.lock() {
            if self.ctx.bind_to_thread().is_ok() {
                // SAFETY: created in `new`, destroyed once.
                let _ = unsafe { blas::destroy_handle(h.0) };
            }
        }
    }
}

/// `gemm` needs cuBLAS.
pub(crate) fn supports(dev: &CudaDevice, op: &OpDesc) -> std::result::Result<(), Unsupported> {
    let _ = op;
    if dev.blas.is_none() {
        return Err(Unsupported::new(
            "gemm",
            "cuBLAS (libcublas.so.13) not found: install the CUDA 13 toolkit or \
             `pip install nvidia-cublas` and put its lib directory on LD_LIBRARY_PATH",
        ));
    }
    Ok(())
}

fn data_type(d: DType) -> bsys::cudaDataType {
    match d {
        DType::F16 => bsys::cudaDataType::CUDA_R_16F,
        DType::BF16 => bsys::cudaDataType::CUDA_R_16BF,
        _ => bsys::cudaDataType::CUDA_R_32F,
    }
}

/// Runtime dtype code of the epilogue kernels (0 f32, 1 f16, 2 bf16).
pub(crate) fn dt_code(d: DType) -> i32 {
    match d {
        DType::F16 => 1,
        DType::BF16 => 2,
        _ => 0,
    }
}

/// Lower-case dtype suffix of kernel names.
pub(crate) fn suffix(d: DType) -> &'static str {
    match d {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F8E4M3 => "f8e4m3",
        _ => "f32",
    }
}

/// Run [`GemmArgs`].
pub(crate) fn gemm(dev: &CudaDevice, args: GemmArgs<'_>) -> Result<()> {
    let op = "gemm";
    let (m, n, k) = args.validate(dev.name())?;
    dev.supports(&args.desc()).map_err(|u| dev.refuse(u))?;
    let Some(blas) = &dev.blas else {
        return Err(HalError::device(dev.name(), op, "cuBLAS is not loaded"));
    };
    if m == 0 || n == 0 {
        return Ok(());
    }
    for (what, v) in [("m", m), ("n", n), ("k", k)] {
        if v > i32::MAX as usize {
            return Err(HalError::invalid(
                dev.name(),
                op,
                format!("{what} = {v} exceeds cuBLAS's 32-bit sizes"),
            ));
        }
    }
    let x = dev.ptr(op, &args.x)?;
    let w = dev.ptr(op, &args.w)?;
    let out = dev.ptr_mut(op, &args.out)?;
    let direct = args.out.dtype == DType::F32 && args.bias.is_none();
    let scratch = if direct {
        None
    } else {
        Some(dev.scratch(op, m * n * 4)?)
    };
    let acc = scratch.as_ref().map_or(out, |s| s.ptr());
    let (alpha, beta) = (1.0f32, 0.0f32);
    {
        let h = blas
            .handle
            .lock()
            .map_err(|_| HalError::device(dev.name(), op, "cuBLAS handle poisoned"))?;
        dev.bind(op)?;
        let ty = data_type(args.x.dtype);
        // SAFETY: pointers are live device allocations of the validated sizes;
        // alpha/beta are host f32 (the default pointer mode).
        unsafe {
            blas::gemm_ex(
                h.0,
                bsys::cublasOperation_t::CUBLAS_OP_T,
                bsys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                &alpha as *const f32 as *const c_void,
                w as *const c_void,
                ty,
                k.max(1) as i32,
                x as *const c_void,
                ty,
                k.max(1) as i32,
                &beta as *const f32 as *const c_void,
                acc as *mut c_void,
                bsys::cudaDataType::CUDA_R_32F,
                n as i32,
                bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| HalError::device(dev.name(), op, format!("cublasGemmEx: {e:?}")))?;
    }
    if let Some(s) = &scratch {
        let f = dev.function(
            &ELEMENTWISE,
            &format!("gemm_epilogue_{}", suffix(args.out.dtype)),
        )?;
        let (bias, bias_dt) = match &args.bias {
            Some(b) => (dev.ptr(op, b)?, dt_code(b.dtype)),
            None => (0, 0),
        };
        dev.launch(
            op,
            &f,
            (dev.stride_grid(m * n), 1, 1),
            (256, 1, 1),
            0,
            &[
                Arg::Ptr(s.ptr()),
                Arg::Ptr(bias),
                Arg::I32(bias_dt),
                Arg::Ptr(out),
                Arg::I64(m as i64),
                Arg::I64(n as i64),
            ],
        )?;
    }
    Ok(())
}
