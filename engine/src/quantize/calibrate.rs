//! Calibration: run the source model over a text and record, for every
//! linear layer's input, what the quantiser needs — GPTQ's Hessian
//! `Σ x·xᵀ`, AWQ's mean |x| per channel and a sample of input rows, FP8's
//! largest |x|.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::engine::Engine;
use crate::model::llama::{ActivationTap, LinearSite};

use super::linalg::{HostGemm, Mat};
use super::QuantizeError;

/// What to collect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wants {
    /// `Σ x·xᵀ` per input (GPTQ).
    pub hessian: bool,
    /// Mean |x| per channel and up to this many sample rows (AWQ).
    pub sample_rows: usize,
}

/// The statistics of one linear layer's input.
#[derive(Clone, Debug, Default)]
pub struct InputStats {
    /// Rows seen.
    pub rows: usize,
    /// Channels (K).
    pub cols: usize,
    /// `Σ x·xᵀ`, `[K, K]` (when asked for).
    pub hessian: Vec<f32>,
    /// `Σ |x|` per channel.
    pub abs_sum: Vec<f64>,
    /// Largest |x|.
    pub abs_max: f32,
    /// Sampled rows, `[sample_count, K]`.
    pub sample: Vec<f32>,
}

impl InputStats {
    /// Mean |x| per channel.
    pub fn abs_mean(&self) -> Vec<f32> {
        let n = self.rows.max(1) as f64;
        self.abs_sum.iter().map(|&s| (s / n) as f32).collect()
    }

    /// The sampled rows as a matrix.
    pub fn sample_mat(&self) -> Mat {
        let rows = self.sample.len() / self.cols.max(1);
        Mat::new(rows, self.cols, self.sample.clone())
    }
}

/// Statistics per (layer, site).
pub type Stats = BTreeMap<(usize, LinearSite), InputStats>;

struct Collector {
    stats: Arc<Mutex<Stats>>,
    wants: Wants,
    /// Keep one row in `every` for the sample.
    every: usize,
    gemm: HostGemm,
    error: Arc<Mutex<Option<String>>>,
}

impl ActivationTap for Collector {
    fn observe(&mut self, layer: usize, site: LinearSite, x: &[f32], rows: usize, cols: usize) {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let s = stats.entry((layer, site)).or_default();
        if s.cols == 0 {
            s.cols = cols;
            s.abs_sum = vec![0.0; cols];
            if self.wants.hessian {
                s.hessian = vec![0.0; cols * cols];
            }
        }
        for (r, row) in x.chunks_exact(cols).take(rows).enumerate() {
            for (a, v) in s.abs_sum.iter_mut().zip(row) {
                *a += f64::from(v.abs());
                s.abs_max = s.abs_max.max(v.abs());
            }
            let seen = s.rows + r;
            if self.wants.sample_rows > 0
                && seen.is_multiple_of(self.every)
                && s.sample.len() < self.wants.sample_rows * cols
            {
                s.sample.extend_from_slice(row);
            }
        }
        s.rows += rows;
        if self.wants.hessian {
            let xt = Mat::new(rows, cols, x[..rows * cols].to_vec()).transpose();
            match self.gemm.xwt(&xt, &xt) {
                Ok(h) => {
                    for (a, b) in s.hessian.iter_mut().zip(&h.data) {
                        *a += b;
                    }
                }
                Err(e) => {
                    let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
                    slot.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// Run `engine` over `tokens` in windows of `window` tokens, collecting
/// `wants` for every linear layer's input.
pub fn calibrate(
    engine: &mut Engine,
    tokens: &[u32],
    window: usize,
    wants: Wants,
) -> Result<Stats, QuantizeError> {
    if tokens.is_empty() {
        return Err(QuantizeError::Calibration(
            "the calibration text has no tokens".into(),
        ));
    }
    let stats = Arc::new(Mutex::new(Stats::new()));
    let error = Arc::new(Mutex::new(None));
    let every = tokens.len().div_ceil(wants.sample_rows.max(1)).max(1);
    let collector = Collector {
        stats: Arc::clone(&stats),
        wants,
        every,
        gemm: HostGemm::new()?,
        error: Arc::clone(&error),
    };
    let model = engine.runner_mut().model_mut();
    model.set_tap(Some(Box::new(collector)))?;
    let mut result = Ok(());
    for chunk in tokens.chunks(window.max(1)) {
        if let Err(e) = engine.score(chunk, &[], chunk.len()) {
            result = Err(QuantizeError::Calibration(e.to_string()));
            break;
        }
    }
    engine.runner_mut().model_mut().set_tap(None)?;
    result?;
    if let Some(e) = error.lock().unwrap_or_else(PoisonError::into_inner).take() {
        return Err(QuantizeError::Calibration(e));
    }
    let stats = std::mem::take(&mut *stats.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(stats)
}
