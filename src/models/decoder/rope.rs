//! Rotary position embeddings: the inverse frequencies of each RoPE variant, computed as
//! transformers computes them (in f32), and the cos/sin tables a graph builds from its
//! `position_ids`.

use super::recorder::Recorder;
use crate::dsl::{DType, OpError, Tensor};

/// How the inverse frequencies are chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Frequencies {
    /// Fixed per graph (plain RoPE, Llama 3 scaling): `inv[i]`, scaled by `attention_factor`.
    Static {
        inv: Vec<f64>,
        attention_factor: f64,
    },
    /// LongRoPE: the long factors when `max(position_ids) + 1 > original_max`, else the
    /// short ones, chosen in the graph (as transformers does at run time) for each batch row
    /// on its own, so that sequences batched together each get what they would get alone;
    /// cos and sin are scaled by `attention_factor`.
    LongRope {
        short_inv: Vec<f64>,
        long_inv: Vec<f64>,
        original_max: usize,
        attention_factor: f64,
    },
}

/// Inverse frequencies as transformers computes them, in f32:
/// `1 / (factor_i * theta ** (2i / rot))`.
pub fn inverse_frequencies(theta: f64, rot: usize, factors: Option<&[f64]>) -> Vec<f64> {
    (0..rot / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / rot as f32;
            let base = (theta as f32).powf(exponent);
            let scaled = match factors {
                Some(f) => f[i] as f32 * base,
                None => base,
            };
            (1.0f32 / scaled) as f64
        })
        .collect()
}

/// Llama 3's frequency scaling (`_compute_llama3_parameters` in transformers, in f32):
/// wavelengths longer than `original_max / low_freq_factor` are divided by `factor`, shorter
/// than `original_max / high_freq_factor` kept, and the band between interpolated smoothly.
pub fn llama3_inverse_frequencies(
    theta: f64,
    rot: usize,
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    original_max: usize,
) -> Vec<f64> {
    let (factor, low, high, old) = (
        factor as f32,
        low_freq_factor as f32,
        high_freq_factor as f32,
        original_max as f32,
    );
    let low_wavelen = old / low;
    let high_wavelen = old / high;
    inverse_frequencies(theta, rot, None)
        .into_iter()
        .map(|inv| {
            let inv = inv as f32;
            let wavelen = 2.0 * std::f32::consts::PI / inv;
            let scaled = if wavelen > low_wavelen {
                inv / factor
            } else {
                inv
            };
            let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
            let out = if medium {
                let smooth = (old / wavelen - low) / (high - low);
                (1.0 - smooth) * scaled / factor + smooth * scaled
            } else {
                scaled
            };
            out as f64
        })
        .collect()
}

/// A rotary embedding over the first `rotary_dim` channels of each head.
#[derive(Clone, Debug, PartialEq)]
pub struct RotaryEmbedding {
    pub rotary_dim: usize,
    pub frequencies: Frequencies,
}

impl RotaryEmbedding {
    /// cos/sin tables `[B, 1, S, rot]` from `position_ids` `[B, S]`, computed in f32 and cast
    /// to the graph's dtype.
    pub fn tables(&self, cx: &Recorder<'_>, pos: &Tensor) -> Result<(Tensor, Tensor), OpError> {
        let b = &cx.b;
        let (bsz, s) = (cx.spec.batch, cx.spec.seq_len);
        let rot = self.rotary_dim as i64;
        let half = rot / 2;
        let (inv, att) = match &self.frequencies {
            Frequencies::Static {
                inv,
                attention_factor,
            } => (b.constant_f64(DType::F32, &[half], inv)?, *attention_factor),
            Frequencies::LongRope {
                short_inv,
                long_inv,
                original_max,
                attention_factor,
            } => {
                let short = b.constant_f64(DType::F32, &[half], short_inv)?;
                let long = b.constant_f64(DType::F32, &[half], long_inv)?;
                // Per row: [B] sequence lengths → [B, 1, half] frequencies.
                let seq_len = pos.reduce_max(&[1])?.add_scalar(1.0)?;
                let use_long = seq_len.gt(&seq_len.scalar_like(*original_max as f64)?)?;
                let use_long = use_long.reshape(&[bsz, 1, 1])?;
                (use_long.select(&long, &short)?, *attention_factor)
            }
        };
        let freqs = pos.convert(DType::F32)?.reshape(&[bsz, s, 1])?.mul(&inv)?;
        let emb = Tensor::concat(&[&freqs, &freqs], 2)?;
        let (mut cos, mut sin) = (emb.cos()?, emb.sin()?);
        if att != 1.0 {
            cos = cos.mul_scalar(att)?;
            sin = sin.mul_scalar(att)?;
        }
        let shape = [bsz, 1, s, rot];
        Ok((
            cos.convert(cx.spec.dtype)?.reshape(&shape)?,
            sin.convert(cx.spec.dtype)?.reshape(&shape)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        // Llama-3.2-1B: theta 500000, head_dim 64, factor 32, low 1, high 4, original 8192.
        let plain = inverse_frequencies(500000.0, 64, None);
        let scaled = llama3_inverse_frequencies(500000.0, 64, 32.0, 1.0, 4.0, 8192);
        // The highest frequency (short wavelength) is untouched.
        assert_eq!(scaled[0], plain[0]);
        // The lowest (wavelength > 8192) is divided by the factor.
        let last = plain.len() - 1;
        assert!((scaled[last] - plain[last] / 32.0).abs() < 1e-12);
        // In between it is smooth and monotone.
        assert!(scaled.windows(2).all(|w| w[1] < w[0]));
    }
}
