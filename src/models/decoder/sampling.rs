//! On-device token selection from the logits.

use super::layers::Logits;
use super::recorder::Recorder;
use crate::dsl::{DType, OpError, Tensor};

/// Greedy next token `s32[B]` from the full-vocab logits, or from this rank's vocab shard
/// (then `rank` is the rank's index input).
pub fn greedy(
    cx: &Recorder<'_>,
    logits: &Logits,
    rank: Option<&Tensor>,
) -> Result<Tensor, OpError> {
    let b = &cx.b;
    let _s = b.scope("sampler");
    let local_logits = match logits {
        Logits::Gathered(full) => return full.argmax(-1, DType::S32),
        Logits::Sharded(local) => local,
    };
    // Vocab-sharded: each rank masks its padding, takes its best (value, index), and an
    // all-gather of the candidates lets every rank pick the same global winner.
    let (bsz, vr, t) = (cx.spec.batch, cx.plan.vocab_per_rank, cx.plan.tp);
    let rank = rank.expect("rank input exists for sharded greedy");
    let offset = rank.mul(&rank.scalar_like(vr as f64)?)?;
    let col = b.iota(DType::S32, &[bsz, vr], 1)?.add(&offset)?;
    let real = col.lt(&col.scalar_like(cx.plan.vocab as f64)?)?;
    let logits = real.select(local_logits, &local_logits.scalar_like(f32::MIN as f64)?)?;
    let best = logits.reduce_max(&[1])?.reshape(&[bsz, 1])?;
    let index = logits
        .argmax(1, DType::S32)?
        .add(&offset)?
        .reshape(&[bsz, 1])?;
    let groups = cx.tp.groups();
    let (all_best, all_index) = if cx.tp.is_parallel() {
        (best.all_gather(1, &groups)?, index.all_gather(1, &groups)?)
    } else {
        (best, index)
    };
    let winner = all_best.argmax(1, DType::S32)?.reshape(&[bsz, 1])?;
    let pick = b.iota(DType::S32, &[bsz, t], 1)?.eq(&winner)?;
    pick.select(&all_index, &all_index.scalar_like(0.0)?)?
        .sum(&[1])
}
