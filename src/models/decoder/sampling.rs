//! On-device token selection: greedy, and sampling with per-row top-k, top-p and temperature.
//!
//! The sampling rule (the contract tests and runtimes rely on), per batch row, given
//! `sampling_params[b] = (top_k, top_p, temperature)` and a host-drawn `u = sampling_uniform[b]`
//! in [0, 1):
//! 1. take the `K` largest logits (`K` = the graph's static `max_top_k`, capped at the vocab),
//!    in descending order, equal logits by lower token id;
//! 2. divide them by the temperature;
//! 3. keep the first `top_k` of them (`top_k < 1` or `> K` means all `K`);
//! 4. of those, with probabilities `p = softmax`, keep the smallest prefix whose mass is
//!    `>= top_p` (always at least one token; `top_p >= 1` keeps them all);
//! 5. renormalise, and return the first token whose cumulative probability exceeds `u`.
//!
//! `top_k = 1`, or `temperature <= 0`, is exactly greedy (the argmax, ties to the lower id).
//! Over vocab-sharded logits each rank takes its own `K` candidates (its padding masked), one
//! all-gather brings every rank's candidates together, and every rank makes the same global
//! selection.

use super::layers::Logits;
use super::recorder::Recorder;
use super::spec::SamplerKernels;
use crate::dsl::nn::{softmax_f32, top_k};
use crate::dsl::{ArrayType, DType, DotDims, OpError, Tensor};

/// `argmax` along the last dim as `s32`: the variadic-reduce primitive, or Neuron's
/// `AwsNeuronArgMax` (backend_config: the dim as decimal text, as torch-neuronx emits it;
/// UNVERIFIED here: the result dtype, s32 as zml uses, where torch-neuronx has s64).
fn argmax(cx: &Recorder<'_>, x: &Tensor) -> Result<Tensor, OpError> {
    let last = x.rank() as i64 - 1;
    match cx.spec.options.sampler_kernels {
        SamplerKernels::Primitives => x.argmax(last, DType::S32),
        SamplerKernels::Neuron => {
            let dims = &x.dims()[..x.rank() - 1];
            cx.b.custom_call(
                "AwsNeuronArgMax",
                &[x],
                ArrayType::new(DType::S32, dims.to_vec()),
                last.to_string().into_bytes(),
            )
        }
    }
}

/// The `k` largest entries of `x [B, N]` in descending order with their `s32` indices: a
/// stable sort (primitives), or Neuron's `AwsNeuronTopK` (backend_config: `k` as decimal text;
/// it returns `(values, u32 indices)` as torch-neuronx's `TopK` does).
fn largest(cx: &Recorder<'_>, x: &Tensor, k: i64) -> Result<(Tensor, Tensor), OpError> {
    match cx.spec.options.sampler_kernels {
        SamplerKernels::Primitives => top_k(x, k),
        SamplerKernels::Neuron => {
            let mut dims = x.dims().to_vec();
            *dims.last_mut().expect("rank >= 1") = k;
            let out = cx.b.custom_call_tuple(
                "AwsNeuronTopK",
                &[x],
                vec![
                    ArrayType::new(x.dtype(), dims.clone()),
                    ArrayType::new(DType::U32, dims),
                ],
                k.to_string().into_bytes(),
            )?;
            Ok((out.get(0)?, out.get(1)?.convert(DType::S32)?))
        }
    }
}

/// The `k` largest entries of `x [B, N]` in descending order, with `payload [B, N]` carried
/// along: one stable sort (primitives), or `AwsNeuronTopK` and a take-along of the payload.
fn largest_with(
    cx: &Recorder<'_>,
    x: &Tensor,
    payload: &Tensor,
    k: i64,
) -> Result<(Tensor, Tensor), OpError> {
    match cx.spec.options.sampler_kernels {
        SamplerKernels::Primitives => {
            let sorted = x.sort_with(1, true, &[payload])?;
            Ok((sorted[0].slice_dim(1, 0, k)?, sorted[1].slice_dim(1, 0, k)?))
        }
        SamplerKernels::Neuron => {
            let (values, at) = largest(cx, x, k)?;
            // payload[b, at[b, j]] through a one-hot [B, k, N] selection.
            let (bsz, n) = (x.dim(0), x.dim(1));
            let col = cx.b.iota(DType::S32, &[bsz, k, n], 2)?;
            let hit = col.eq(&at.reshape(&[bsz, k, 1])?)?;
            let wide = payload.reshape(&[bsz, 1, n])?;
            let taken = hit.select(&wide, &wide.scalar_like(0.0)?)?.sum(&[2])?;
            Ok((values, taken))
        }
    }
}

/// `values[b, idx[b]]` for `values [B, N]` and `idx [B]` (`s32`), by a one-hot selection.
fn pick(cx: &Recorder<'_>, values: &Tensor, idx: &Tensor) -> Result<Tensor, OpError> {
    let (bsz, n) = (values.dim(0), values.dim(1));
    let col = cx.b.iota(DType::S32, &[bsz, n], 1)?;
    let hit = col.eq(&idx.reshape(&[bsz, 1])?)?;
    hit.select(values, &values.scalar_like(0.0)?)?.sum(&[1])
}

/// This rank's logits with its vocab padding masked, and the global id of each column.
fn local_logits(
    cx: &Recorder<'_>,
    logits: &Logits,
    rank: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>), OpError> {
    match logits {
        Logits::Gathered(full) => Ok((full.clone(), None)),
        Logits::Sharded(local) => {
            let (bsz, vr) = (cx.spec.batch, cx.plan.vocab_per_rank);
            let rank = rank.expect("rank input exists for a sharded sampler");
            let offset = rank.mul(&rank.scalar_like(vr as f64)?)?;
            let col = cx.b.iota(DType::S32, &[bsz, vr], 1)?.add(&offset)?;
            let real = col.lt(&col.scalar_like(cx.plan.vocab as f64)?)?;
            let masked = real.select(local, &local.scalar_like(f32::MIN as f64)?)?;
            Ok((masked, Some(offset)))
        }
    }
}

/// Greedy next token `s32[B]` from the full-vocab logits, or from this rank's vocab shard
/// (then `rank` is the rank's index input).
pub fn greedy(
    cx: &Recorder<'_>,
    logits: &Logits,
    rank: Option<&Tensor>,
) -> Result<Tensor, OpError> {
    let _s = cx.b.scope("sampler");
    let (logits, offset) = local_logits(cx, logits, rank)?;
    let Some(offset) = offset else {
        return argmax(cx, &logits);
    };
    // Vocab-sharded: each rank takes its best (value, index), and an all-gather of the
    // candidates lets every rank pick the same global winner (the lowest rank among ties,
    // which holds the lowest id).
    let bsz = cx.spec.batch;
    let best = logits.reduce_max(&[1])?.reshape(&[bsz, 1])?;
    let index = argmax(cx, &logits)?.add(&offset)?.reshape(&[bsz, 1])?;
    let groups = cx.tp.groups();
    let (all_best, all_index) = if cx.tp.is_parallel() {
        (best.all_gather(1, &groups)?, index.all_gather(1, &groups)?)
    } else {
        (best, index)
    };
    let winner = argmax(cx, &all_best)?;
    pick(cx, &all_index, &winner)
}

/// The sampled next token `s32[B]` (see the module docs for the rule), from the logits,
/// `params f32[B, 3]` = (top_k, top_p, temperature) and `uniform f32[B]`.
pub fn sample(
    cx: &Recorder<'_>,
    logits: &Logits,
    params: &Tensor,
    uniform: &Tensor,
    rank: Option<&Tensor>,
) -> Result<Tensor, OpError> {
    let b = &cx.b;
    let _s = b.scope("sampler");
    let bsz = cx.spec.batch;
    let (local, offset) = local_logits(cx, logits, rank)?;
    // 1. The K largest, globally, with their token ids.
    let k_local = cx.spec.options.max_top_k.min(local.dim(1));
    let (values, ids) = largest(cx, &local, k_local)?;
    let (values, ids) = match offset {
        None => (values, ids),
        Some(offset) => {
            let ids = ids.add(&offset)?;
            let groups = cx.tp.groups();
            let (all_values, all_ids) = if cx.tp.is_parallel() {
                (values.all_gather(1, &groups)?, ids.all_gather(1, &groups)?)
            } else {
                (values, ids)
            };
            // Rank r's candidates sit before rank r+1's, so ties resolve to the lower id.
            let k = cx.spec.options.max_top_k.min(all_values.dim(1));
            largest_with(cx, &all_values, &all_ids, k)?
        }
    };
    let k = values.dim(1);
    let column =
        |i: i64| -> Result<Tensor, OpError> { params.slice_dim(1, i, i + 1)?.reshape(&[bsz, 1]) };
    let (top_k, top_p, temperature) = (column(0)?, column(1)?, column(2)?);
    let rank_of = b.iota(DType::S32, &[bsz, k], 1)?;
    let first = rank_of.eq(&rank_of.scalar_like(0.0)?)?;
    // 2-3. Temperature, then the first top_k (all K when top_k < 1 or > K).
    let greedy = temperature
        .le(&temperature.scalar_like(0.0)?)?
        .or(&top_k.eq(&top_k.scalar_like(1.0)?)?)?;
    let limit = top_k
        .lt(&top_k.scalar_like(1.0)?)?
        .or(&top_k.gt(&top_k.scalar_like(k as f64)?)?)?
        .select(&top_k.scalar_like(k as f64)?, &top_k)?
        .convert(DType::S32)?;
    let in_k = rank_of.lt(&limit)?;
    let t = greedy.select(&temperature.scalar_like(1.0)?, &temperature)?;
    let scaled = values.div(&t)?;
    let masked = in_k.select(&scaled, &scaled.scalar_like(f32::MIN as f64)?)?;
    let probs = softmax_f32(&masked)?;
    // Inclusive prefix sums as a matmul against an upper-triangular ones matrix.
    let tri = {
        let r = b.iota(DType::S32, &[k, k], 0)?;
        let c = b.iota(DType::S32, &[k, k], 1)?;
        r.le(&c)?.convert(DType::F32)?
    };
    let cumsum = |x: &Tensor| -> Result<Tensor, OpError> {
        x.dot_general(
            &tri,
            DotDims {
                lhs_contracting: vec![1],
                rhs_contracting: vec![0],
                ..Default::default()
            },
        )
    };
    // 4. The smallest prefix with mass >= top_p: rank i stays iff the mass before it < top_p.
    let before = cumsum(&probs)?.sub(&probs)?;
    let in_p = before.lt(&top_p)?;
    let keep = in_k.and(&in_p)?.or(&first)?;
    let keep = greedy.select(&first, &keep)?;
    // 5. Renormalise; the first kept token whose cumulative probability exceeds u.
    let kept = keep.select(&probs, &probs.scalar_like(0.0)?)?;
    let total = kept.sum(&[1])?.reshape(&[bsz, 1])?;
    let cum = cumsum(&kept.div(&total)?)?;
    let u = uniform.reshape(&[bsz, 1])?;
    let below = keep.and(&cum.le(&u)?)?.convert(DType::S32)?.sum(&[1])?;
    let last_kept = keep.convert(DType::S32)?.sum(&[1])?.add_scalar(-1.0)?;
    let idx = below.min(&last_kept)?;
    pick(cx, &ids, &idx)
}
