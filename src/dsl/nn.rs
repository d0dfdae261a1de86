//! Composite ops shared by models, written as plain functions over DSL primitives.

use super::{DType, OpError, Tensor};
use crate::ir::ShapeError;
use std::panic::Location;

/// The size of `x`'s last dim, or an error naming `op` when `x` is a scalar.
#[track_caller]
fn last_dim(x: &Tensor, op: &'static str) -> Result<i64, OpError> {
    if x.rank() == 0 {
        return Err(OpError::new(
            op,
            vec![crate::ir::Type::Array(x.ty().clone())],
            x.builder().scope_path(),
            Location::caller(),
            ShapeError::WrongRank {
                what: "input (needs a last dim)",
                expected: 1,
                got: 0,
            },
        ));
    }
    Ok(x.dim(-1))
}

/// RMSNorm as Hugging Face computes it: accumulate in f32, normalise, cast back to the input
/// dtype, *then* multiply by the weight (the cast comes before the weight, as in
/// `Phi3RMSNorm`/`LlamaRMSNorm`).
#[track_caller]
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor, OpError> {
    let n = last_dim(x, "rms_norm")? as f64;
    let xf = x.convert(DType::F32)?;
    let last = x.rank() as i64 - 1;
    let mean_sq = xf.mul(&xf)?.sum(&[last])?.mul_scalar(1.0 / n)?;
    let mut keep = x.dims().to_vec();
    keep[last as usize] = 1;
    let inv = mean_sq.add_scalar(eps)?.rsqrt()?.reshape(&keep)?;
    xf.mul(&inv)?.convert(x.dtype())?.mul(weight)
}

/// LayerNorm over the last dim with f32 statistics (Phi-1/Phi-2 style models use it).
#[track_caller]
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor, OpError> {
    let n = last_dim(x, "layer_norm")? as f64;
    let xf = x.convert(DType::F32)?;
    let last = x.rank() as i64 - 1;
    let mut keep = x.dims().to_vec();
    keep[last as usize] = 1;
    let mean = xf.sum(&[last])?.mul_scalar(1.0 / n)?.reshape(&keep)?;
    let centered = xf.sub(&mean)?;
    let var = centered
        .mul(&centered)?
        .sum(&[last])?
        .mul_scalar(1.0 / n)?
        .reshape(&keep)?;
    let normed = centered.mul(&var.add_scalar(eps)?.rsqrt()?)?;
    normed
        .mul(&weight.convert(DType::F32)?)?
        .add(&bias.convert(DType::F32)?)?
        .convert(x.dtype())
}

/// Softmax over the last dim, computed in f32 and returned in f32.
#[track_caller]
pub fn softmax_f32(x: &Tensor) -> Result<Tensor, OpError> {
    last_dim(x, "softmax")?;
    let xf = x.convert(DType::F32)?;
    let last = x.rank() as i64 - 1;
    let mut keep = x.dims().to_vec();
    keep[last as usize] = 1;
    let max = xf.reduce_max(&[last])?.reshape(&keep)?;
    let e = xf.sub(&max)?.exp()?;
    let sum = e.sum(&[last])?.reshape(&keep)?;
    e.div(&sum)
}

/// `x * sigmoid(x)`, written as `x / (1 + exp(-x))`: `logistic` is outside the op set Neuron
/// documents, while exp, add and divide are inside it. Computed in f32 and rounded once, as
/// PyTorch's low-precision `silu` kernels do.
#[track_caller]
pub fn silu(x: &Tensor) -> Result<Tensor, OpError> {
    let xf = x.convert(DType::F32)?;
    xf.div(&xf.neg()?.exp()?.add_scalar(1.0)?)?
        .convert(x.dtype())
}

/// NeoX `rotate_half` on the last dim: `cat(-x[d/2:], x[:d/2])`.
#[track_caller]
pub fn rotate_half(x: &Tensor) -> Result<Tensor, OpError> {
    let d = last_dim(x, "rotate_half")?;
    let lo = x.slice_dim(-1, 0, d / 2)?;
    let hi = x.slice_dim(-1, d / 2, d)?;
    Tensor::concat(&[&hi.neg()?, &lo], x.rank() as i64 - 1)
}

/// Applies NeoX half-split rotary embedding to the first `cos.dim(-1)` channels of `x` and
/// passes the rest through (partial rotary). `cos`/`sin` broadcast against `x`.
#[track_caller]
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, OpError> {
    let rot = last_dim(cos, "apply_rotary")?;
    let hd = last_dim(x, "apply_rotary")?;
    let x_rot = if rot == hd {
        x.clone()
    } else {
        x.slice_dim(-1, 0, rot)?
    };
    let rotated = x_rot.mul(cos)?.add(&rotate_half(&x_rot)?.mul(sin)?)?;
    if rot == hd {
        Ok(rotated)
    } else {
        let pass = x.slice_dim(-1, rot, hd)?;
        Tensor::concat(&[&rotated, &pass], x.rank() as i64 - 1)
    }
}

/// The `k` largest entries along the last dim, in descending order, with their indices
/// (`s32`); among equal values the lower index comes first (a stable sort of the whole dim,
/// then a slice).
#[track_caller]
pub fn top_k(x: &Tensor, k: i64) -> Result<(Tensor, Tensor), OpError> {
    let n = last_dim(x, "top_k")?;
    if k < 1 || k > n {
        return Err(OpError::new(
            "top_k",
            vec![crate::ir::Type::Array(x.ty().clone())],
            x.builder().scope_path(),
            Location::caller(),
            ShapeError::invalid("k", format!("{k} is not in 1..={n}")),
        ));
    }
    let last = x.rank() as i64 - 1;
    let idx = x.builder().iota(DType::S32, x.dims(), last)?;
    let sorted = x.sort_with(last, true, &[&idx])?;
    Ok((
        sorted[0].slice_dim(last, 0, k)?,
        sorted[1].slice_dim(last, 0, k)?,
    ))
}
