//! Grouped-query attention over a static KV cache: the causal (optionally sliding-window)
//! mask, the cache writes of prefill and decode, and the attention core that never
//! materialises repeated KV heads.

use super::recorder::Recorder;
use super::spec::{CacheWrite, GraphKind};
use crate::dsl::nn::{apply_rotary, softmax_f32};
use crate::dsl::{DType, DotDims, OpError, ScatterCombiner, ScatterDims, Tensor};

/// `allowed[q, k]` for causal attention with an optional sliding window (each query sees at
/// most `window` keys, itself included), as a pred broadcastable to the scores
/// `[B, kv_r, g, S, T]`.
pub fn attention_mask(
    cx: &Recorder<'_>,
    pos: &Tensor,
    window: Option<usize>,
) -> Result<Tensor, OpError> {
    let b = &cx.b;
    let (bsz, s, smax) = (cx.spec.batch, cx.spec.seq_len, cx.spec.max_seq_len);
    let window = window.map(|w| w as i64).filter(|&w| w < smax);
    let (q, k, dims) = match cx.spec.kind {
        // Prefill attends within the prompt: positions are 0..S, padding comes last.
        GraphKind::ContextEncoding => {
            let q = b.iota(DType::S32, &[s, s], 0)?;
            let k = b.iota(DType::S32, &[s, s], 1)?;
            (q, k, vec![1, 1, 1, s, s])
        }
        // Decode attends over the whole (already updated) cache, keyed by position.
        GraphKind::TokenGeneration => {
            let q = pos.reshape(&[bsz, s, 1])?.broadcast_to(&[bsz, s, smax])?;
            let k = b.iota(DType::S32, &[bsz, s, smax], 2)?;
            (q, k, vec![bsz, 1, 1, s, smax])
        }
    };
    let mut allowed = k.le(&q)?;
    if let Some(w) = window {
        let lower = q.sub(&q.scalar_like(w as f64)?)?;
        allowed = allowed.select(&k.gt(&lower)?, &allowed)?;
    }
    allowed.reshape(&dims)
}

/// Writes this step's K or V rows `[B, kv_r, S, hd]` into the cache.
pub fn write_cache(
    cx: &Recorder<'_>,
    cache: &Tensor,
    new: &Tensor,
    pos: &Tensor,
) -> Result<Tensor, OpError> {
    let b = &cx.b;
    let zero = b.scalar(DType::S32, 0.0)?;
    match (cx.spec.kind, cx.spec.options.decode_cache_write) {
        (GraphKind::ContextEncoding, _) => {
            cache.dynamic_update_slice(new, &[&zero, &zero, &zero, &zero])
        }
        (GraphKind::TokenGeneration, CacheWrite::DynamicUpdateSlice) => {
            let mut updated = cache.clone();
            for row in 0..cx.spec.batch {
                let r = b.scalar(DType::S32, row as f64)?;
                let p = pos.slice(&[row, 0], &[row + 1, 1], &[1, 1])?.reshape(&[])?;
                let rows = new.slice_dim(0, row, row + 1)?;
                updated = updated.dynamic_update_slice(&rows, &[&r, &zero, &p, &zero])?;
            }
            Ok(updated)
        }
        (GraphKind::TokenGeneration, CacheWrite::Scatter) => {
            let (bsz, s) = (cx.spec.batch, cx.spec.seq_len);
            let rows = b.iota(DType::S32, &[bsz, s, 1], 0)?;
            let at = pos.reshape(&[bsz, s, 1])?;
            let indices = Tensor::concat(&[&rows, &at], 2)?;
            let updates = new.transpose(&[0, 2, 1, 3])?;
            cache.scatter(
                &indices,
                &updates,
                ScatterDims {
                    update_window_dims: vec![2, 3],
                    inserted_window_dims: vec![0, 2],
                    scatter_dims_to_operand_dims: vec![0, 2],
                    index_vector_dim: 2,
                },
                ScatterCombiner::Assign,
            )
        }
    }
}

/// GQA attention that never materialises repeated KV heads: queries `[B, q_r, S, hd]` are
/// viewed as `[B, kv_r, g, S, hd]` and batched against `[B, kv_r, T, hd]` keys. Returns the
/// context `[B, S, q_r·hd]`.
pub fn attend(
    cx: &Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    allowed: &Tensor,
    scale: f64,
) -> Result<Tensor, OpError> {
    let (bsz, s) = (cx.spec.batch, cx.spec.seq_len);
    let plan = cx.plan;
    let (q_r, kv_r, g, hd) = (
        plan.q_heads_per_rank,
        plan.kv_heads_per_rank,
        plan.local_group(),
        plan.head_dim,
    );
    let q5 = q.reshape(&[bsz, kv_r, g, s, hd])?;
    let batch = DotDims {
        lhs_batch: vec![0, 1],
        rhs_batch: vec![0, 1],
        lhs_contracting: vec![4],
        rhs_contracting: vec![3],
    };
    let scores = q5.dot_general(k, batch)?.convert(DType::F32)?;
    let scores = scores.mul_scalar(scale)?;
    let masked = allowed.select(&scores, &scores.scalar_like(f32::MIN as f64)?)?;
    let probs = softmax_f32(&masked)?.convert(cx.spec.dtype)?;
    let out = probs.dot_general(
        v,
        DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![0, 1],
            lhs_contracting: vec![4],
            rhs_contracting: vec![2],
        },
    )?;
    out.reshape(&[bsz, q_r, s, hd])?
        .transpose(&[0, 2, 1, 3])?
        .reshape(&[bsz, s, q_r * hd])
}

/// One layer's KV cache: the graph inputs, and after the layer ran, the updated tensors.
#[derive(Clone)]
pub struct KvCache {
    pub key: Tensor,
    pub value: Tensor,
}

/// What every decoder attention does once its projections are done: rotate Q and K, write
/// K and V into the cache, and attend (within the prompt for prefill, over the updated cache
/// for decode). Returns the context and the updated cache.
#[allow(clippy::too_many_arguments)]
pub fn cached_attention(
    cx: &Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    (cos, sin): (&Tensor, &Tensor),
    cache: &KvCache,
    pos: &Tensor,
    allowed: &Tensor,
    scale: f64,
) -> Result<(Tensor, KvCache), OpError> {
    let q = apply_rotary(q, cos, sin)?;
    let k = apply_rotary(k, cos, sin)?;
    let new = KvCache {
        key: write_cache(cx, &cache.key, &k, pos)?,
        value: write_cache(cx, &cache.value, v, pos)?,
    };
    let ctx = match cx.spec.kind {
        GraphKind::ContextEncoding => attend(cx, &q, &k, v, allowed, scale)?,
        GraphKind::TokenGeneration => attend(cx, &q, &new.key, &new.value, allowed, scale)?,
    };
    Ok((ctx, new))
}
