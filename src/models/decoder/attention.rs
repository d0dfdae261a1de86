//! Grouped-query attention over the set's shared KV state: the causal (optionally
//! sliding-window) mask, the cache writes of prefill and decode at each sequence's cache row
//! (`seq_ids`), the decode read of a bucket's prefix of those rows, and the attention core
//! that never materialises repeated KV heads.
//!
//! The state is `[max_batch, kv_heads_per_rank, S_max, head_dim]` per layer and tensor
//! (`[kv_heads_per_rank, S_max, head_dim]` for one sequence under `SingleRowState::Squeezed`,
//! whose row is row 0). A
//! prefill of bucket `n` writes positions `0..n` of row `seq_ids[b]`; a decode step writes
//! position `position_ids[b]` of row `seq_ids[b]` and attends to positions `0..bucket` of
//! that row. A batch row whose `seq_ids` (or decode position) is out of range writes nothing:
//! the scatter form drops it (XLA's out-of-bounds rule) and the dynamic-update-slice form
//! writes the slot's old contents back; its outputs are then unspecified.

use super::recorder::Recorder;
use super::spec::{CacheWrite, DecodeRows, DecodeScores, GqaDot, GraphKind};
use super::{Inputs, LayerInputs};
use crate::dsl::nn::{apply_rotary, softmax_f32};
use crate::dsl::{DType, DotDims, GatherDims, OpError, ScatterCombiner, ScatterDims, Tensor};

/// `allowed[q, k]` for causal attention with an optional sliding window (each query sees at
/// most `window` keys, itself included), as a pred broadcastable to the scores
/// `[B, kv_r, g, S, T]`: within the prompt for prefill, over the bucket's cache positions by
/// position for decode.
pub fn attention_mask(
    cx: &Recorder<'_>,
    pos: &Tensor,
    window: Option<usize>,
) -> Result<Tensor, OpError> {
    let b = &cx.b;
    let (bsz, s, n) = (cx.spec.batch, cx.spec.seq_len, cx.spec.bucket);
    let window = window.map(|w| w as i64).filter(|&w| w < n);
    let (q, k, dims) = match cx.spec.kind {
        // Prefill attends within the prompt: positions are 0..S, padding comes last.
        GraphKind::ContextEncoding => {
            let q = b.iota(DType::S32, &[s, s], 0)?;
            let k = b.iota(DType::S32, &[s, s], 1)?;
            (q, k, vec![1, 1, 1, s, s])
        }
        // Decode attends over the bucket's (already updated) cache positions, by position.
        GraphKind::TokenGeneration => {
            let q = pos.reshape(&[bsz, s, 1])?.broadcast_to(&[bsz, s, n])?;
            let k = b.iota(DType::S32, &[bsz, s, n], 2)?;
            (q, k, vec![bsz, 1, 1, s, n])
        }
    };
    let mut allowed = k.le(&q)?;
    if let Some(w) = window {
        let lower = q.sub(&q.scalar_like(w as f64)?)?;
        allowed = allowed.and(&k.gt(&lower)?)?;
    }
    allowed.reshape(&dims)
}

/// Writes `rows` (one sequence's `[1, kv_r, L, hd]`) into `cache` at `[row, 0, position, 0]`
/// (`[0, position, 0]` of a state without its row dim), or leaves the cache as it was when
/// `row` is not a cache row or the rows do not fit at `position`: dynamic-update-slice would
/// clamp the start and overwrite another sequence, so an out-of-range write puts the slot's
/// old contents back instead.
fn guarded_update(
    cx: &Recorder<'_>,
    cache: &Tensor,
    rows: &Tensor,
    row: &Tensor,
    position: &Tensor,
) -> Result<Tensor, OpError> {
    let b = &cx.b;
    let zero = b.scalar(DType::S32, 0.0)?;
    let len = rows.dim(2);
    let rows_end = row.scalar_like(cx.spec.cache_batch as f64)?;
    let last_start = position.scalar_like((cx.spec.max_seq_len - len) as f64)?;
    let valid = row
        .ge(&zero)?
        .and(&row.lt(&rows_end)?)?
        .and(&position.ge(&zero)?)?
        .and(&position.le(&last_start)?)?;
    let (rows, starts) = if cx.spec.state_has_rows() {
        (rows.clone(), vec![row, &zero, position, &zero])
    } else {
        (
            rows.reshape(&rows.dims()[1..])?,
            vec![&zero, position, &zero],
        )
    };
    let old = cache.dynamic_slice(&starts, rows.dims())?;
    let update = valid.select(&rows, &old)?;
    cache.dynamic_update_slice(&update, &starts)
}

/// Writes this call's K or V rows `[B, kv_r, S, hd]` into the cache rows `seq_ids`.
pub fn write_cache(
    cx: &Recorder<'_>,
    cache: &Tensor,
    new: &Tensor,
    inputs: &Inputs,
) -> Result<Tensor, OpError> {
    let b = &cx.b;
    let (pos, seq_ids) = (&inputs.position_ids, &inputs.seq_ids);
    let row_of =
        |r: i64| -> Result<Tensor, OpError> { seq_ids.slice_dim(0, r, r + 1)?.reshape(&[]) };
    match (cx.spec.kind, cx.spec.options.decode_cache_write) {
        (GraphKind::ContextEncoding, _) => {
            let zero = b.scalar(DType::S32, 0.0)?;
            let mut updated = cache.clone();
            for r in 0..cx.spec.batch {
                let rows = new.slice_dim(0, r, r + 1)?;
                updated = guarded_update(cx, &updated, &rows, &row_of(r)?, &zero)?;
            }
            Ok(updated)
        }
        (GraphKind::TokenGeneration, CacheWrite::DynamicUpdateSlice) => {
            let mut updated = cache.clone();
            for r in 0..cx.spec.batch {
                let p = pos.slice(&[r, 0], &[r + 1, 1], &[1, 1])?.reshape(&[])?;
                let rows = new.slice_dim(0, r, r + 1)?;
                updated = guarded_update(cx, &updated, &rows, &row_of(r)?, &p)?;
            }
            Ok(updated)
        }
        (GraphKind::TokenGeneration, CacheWrite::ElementScatter) => {
            // torch.scatter(cache, dim=2, index=position, src=new) as torch-xla lowers it for
            // NxD: an index per element, `(row, head, position, d)`, the row being seq_ids[b].
            let d = new.dims().to_vec();
            let column = |t: Tensor| t.reshape(&[d[0], d[1], d[2], d[3], 1]);
            let row = column(seq_ids.broadcast_in_dim(&d, &[0])?)?;
            let head = column(b.iota(DType::S32, &d, 1)?)?;
            let position = column(pos.broadcast_in_dim(&d, &[0, 2])?)?;
            let lane = column(b.iota(DType::S32, &d, 3)?)?;
            let indices = Tensor::concat(&[&row, &head, &position, &lane], 4)?;
            cache.scatter(
                &indices,
                new,
                ScatterDims {
                    update_window_dims: vec![],
                    inserted_window_dims: vec![0, 1, 2, 3],
                    scatter_dims_to_operand_dims: vec![0, 1, 2, 3],
                    index_vector_dim: 4,
                },
                ScatterCombiner::Assign,
            )
        }
        (GraphKind::TokenGeneration, CacheWrite::Scatter) => {
            let (bsz, s) = (cx.spec.batch, cx.spec.seq_len);
            let rows = seq_ids.reshape(&[bsz, 1, 1])?.broadcast_to(&[bsz, s, 1])?;
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

/// Positions `0..bucket` of the cache rows `seq_ids`: `[B, kv_r, bucket, hd]`. An
/// out-of-range row reads a clamped one (XLA's gather rule): wrong values, never a crash.
pub fn read_rows(cx: &Recorder<'_>, cache: &Tensor, seq_ids: &Tensor) -> Result<Tensor, OpError> {
    let d = cache.dims();
    cache.gather(
        seq_ids,
        GatherDims {
            offset_dims: vec![1, 2, 3],
            collapsed_slice_dims: vec![0],
            start_index_map: vec![0],
            index_vector_dim: 1,
        },
        &[1, d[1], cx.spec.bucket, d[3]],
    )
}

/// GQA attention that never materialises repeated KV heads: the `g` queries sharing a KV
/// head are batched against its `[B, kv_r, T, hd]` keys, viewed `[B, kv_r, g, S, hd]`
/// ([`GqaDot::Grouped`]) or `[B, kv_r, g·S, hd]` ([`GqaDot::Merged`]). Returns the context
/// `[B, S, q_r·hd]`.
pub fn attend(
    cx: &Recorder<'_>,
    q: &Tensor,
    (k, v): (&Tensor, &Tensor),
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
    let t = k.dim(2);
    // The dims of the query side: [g, S] or [g·S].
    let free: Vec<i64> = match cx.spec.options.gqa_dot {
        GqaDot::Merged => vec![g * s],
        GqaDot::Grouped => vec![g, s],
    };
    let last = 2 + free.len() as i64; // the head_dim of the query view
    let view = |inner: i64| -> Vec<i64> {
        let mut d = vec![bsz, kv_r];
        d.extend(&free);
        d.push(inner);
        d
    };
    let batched = |lhs_contracting: i64, rhs_contracting: i64| DotDims {
        lhs_batch: vec![0, 1],
        rhs_batch: vec![0, 1],
        lhs_contracting: vec![lhs_contracting],
        rhs_contracting: vec![rhs_contracting],
    };
    // Over a wider state, the query and the probabilities are widened to it (exactly: the
    // probabilities are first rounded to the model's dtype, as with a state of that dtype),
    // and the context comes back in the model's dtype.
    let q = q.convert(k.dtype())?.reshape(&view(hd))?;
    let keys_first = cx.spec.kind == GraphKind::TokenGeneration
        && cx.spec.batch == 1
        && cx.spec.options.decode_scores == DecodeScores::KeysFirst;
    let scores = if keys_first {
        // `[B, kv_r, T, <free>]`, then T moved last: a small transpose of the scores.
        let mut perm = vec![0, 1];
        perm.extend((0..free.len() as i64).map(|i| 3 + i));
        perm.push(2);
        k.dot_general(&q, batched(3, last))?.transpose(&perm)?
    } else {
        q.dot_general(k, batched(last, 3))?
    }
    .convert(DType::F32)?
    .mul_scalar(scale)?;
    // Mask and softmax over [B, kv_r, g, S, T] (a free view of the merged scores).
    let scores = scores.reshape(&[bsz, kv_r, g, s, t])?;
    let masked = allowed.select(&scores, &scores.scalar_like(f32::MIN as f64)?)?;
    let probs = softmax_f32(&masked)?
        .convert(cx.spec.dtype)?
        .convert(v.dtype())?;
    let out = probs
        .reshape(&view(t))?
        .dot_general(v, batched(last, 2))?
        .convert(cx.spec.dtype)?;
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
/// K and V into the cache, and attend (within the prompt for prefill, over the bucket's
/// prefix of the updated cache rows for decode). Returns the context (only the kept rows',
/// when the layer keeps some: [`LayerInputs::keep`]) and the updated cache.
pub fn cached_attention(
    cx: &Recorder<'_>,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    cache: &KvCache,
    li: &LayerInputs<'_>,
    scale: f64,
) -> Result<(Tensor, KvCache), OpError> {
    let (cos, sin) = li.rope;
    let (inputs, allowed) = (li.inputs, li.mask);
    let q = apply_rotary(q, cos, sin)?;
    let k = apply_rotary(k, cos, sin)?;
    // A wider state (KvDtype::F32) takes the rows widened, exactly.
    let new = KvCache {
        key: write_cache(cx, &cache.key, &k.convert(cache.key.dtype())?, inputs)?,
        value: write_cache(cx, &cache.value, &v.convert(cache.value.dtype())?, inputs)?,
    };
    let ctx = match cx.spec.kind {
        GraphKind::ContextEncoding => attend(cx, &q, (&k, v), allowed, scale)?,
        GraphKind::TokenGeneration => {
            let rows = |cache: &Tensor| match cx.spec.options.decode_rows {
                // A state without its row dim holds one row, so a gather could only read it.
                // The prefix is cut from a view with the row dim: cut from the state as it is,
                // XLA fuses the step's update into the cut a second time and copies every
                // cache (tests/optimized_hlo.rs).
                _ if !cx.spec.state_has_rows() => {
                    let mut dims = vec![1];
                    dims.extend(cache.dims());
                    cache.reshape(&dims)?.slice_dim(2, 0, cx.spec.bucket)
                }
                DecodeRows::Gathered => read_rows(cx, cache, &inputs.seq_ids),
                // Row b is state row b: the bucket's prefix of the state itself.
                DecodeRows::InPlace => cache.slice_dim(2, 0, cx.spec.bucket),
            };
            let (keys, values) = (rows(&new.key)?, rows(&new.value)?);
            attend(cx, &q, (&keys, &values), allowed, scale)?
        }
    };
    Ok((li.kept(&ctx)?, new))
}
