//! Perplexity of a model on a text, with a sliding window (the Hugging Face
//! `transformers` recipe): windows of `window` tokens start every `stride`
//! tokens, and each token is scored once, by the first window in which it is
//! not among the window's overlap with the previous one, so most tokens see
//! `window − stride` tokens of context or more.

use crate::engine::{Engine, ScoreError};

/// The result of [`perplexity`].
#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    /// Tokens whose probability was scored.
    pub scored: usize,
    /// Mean negative log-likelihood per scored token (nats).
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
    /// Forward passes run.
    pub windows: usize,
}

/// `log softmax(logits)[target]`, in f64.
fn log_prob(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| f64::from(v - max).exp()).sum();
    f64::from(logits[target] - max) - sum.ln()
}

/// Score `tokens` with `engine` in windows of `window` tokens every `stride`
/// tokens (`0 < stride ≤ window`).
pub fn perplexity(
    engine: &mut Engine,
    tokens: &[u32],
    window: usize,
    stride: usize,
) -> Result<Perplexity, ScoreError> {
    let (window, stride) = (window.max(2), stride.clamp(1, window.max(2)));
    let mut nll = 0f64;
    let mut scored = 0usize;
    let mut windows = 0usize;
    // Tokens before `done` have been scored (token 0 never is: no context).
    let mut done = 1usize;
    let mut begin = 0usize;
    while done < tokens.len() {
        let end = (begin + window).min(tokens.len());
        let chunk = &tokens[begin..end];
        // Row r predicts token begin + r + 1; score the new ones.
        let rows: Vec<usize> = (done.saturating_sub(begin + 1)..chunk.len() - 1).collect();
        if !rows.is_empty() {
            let logits = engine.score(chunk, &rows, chunk.len())?;
            for (&r, row) in rows.iter().zip(&logits) {
                let target = chunk[r + 1] as usize;
                nll -= log_prob(row, target);
                scored += 1;
            }
            windows += 1;
        }
        done = end;
        if end == tokens.len() {
            break;
        }
        begin += stride;
    }
    let mean_nll = if scored > 0 {
        nll / scored as f64
    } else {
        f64::NAN
    };
    Ok(Perplexity {
        scored,
        mean_nll,
        perplexity: mean_nll.exp(),
        windows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prob_is_a_normalised_log_softmax() {
        let l = [1.0f32, 2.0, 3.0];
        let total: f64 = (0..3).map(|i| log_prob(&l, i).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert!((log_prob(&[0.0, 0.0], 1) - 0.5f64.ln()).abs() < 1e-12);
    }
}
