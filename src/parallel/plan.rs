//! How a decoder is split across `t` tensor-parallel ranks, following NxD's GQA rules
//! (`get_shardable_head_counts`): query heads padded to a multiple of `t`; KV heads either
//! sharded as they are, replicated up to `t` (REPLICATE_TO_TP_DEGREE), or expanded to one per
//! query head (CONVERT_TO_MHA) when `t` is not a multiple of the KV head count; the
//! intermediate size and the vocab padded to multiples of `t`.
//!
//! The plan is pure data over plain sizes ([`DecoderSizes`]): any decoder-only family uses it.
//! Its methods give the [`ShardRule`] of each kind of weight, which model code attaches to the
//! weights it declares.

use crate::weights::{padded_runs, push_run, Run, ShardRule};

/// The sizes a tensor-parallel split depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecoderSizes {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub vocab: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvStrategy {
    /// KV heads already divide evenly across ranks.
    Shard,
    /// Each KV head is repeated so every rank holds whole KV heads (`t % nKV == 0`).
    ReplicateToTpDegree,
    /// KV heads are expanded to one per (padded) query head.
    ConvertToMha,
}

/// The tensor-parallel degree cannot split the model; names the model, the degree and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{model}: cannot shard at tp={tp}: {reason}")]
pub struct ShardPlanError {
    pub model: String,
    pub tp: i64,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ShardPlan {
    pub tp: i64,
    pub strategy: KvStrategy,
    pub head_dim: i64,
    /// Padded query heads (all ranks) and per rank.
    pub q_heads: i64,
    pub q_heads_per_rank: i64,
    /// KV heads after replication/conversion and padding (all ranks) and per rank.
    pub kv_heads: i64,
    pub kv_heads_per_rank: i64,
    /// Source query head of each padded query head (`None` = zero padding).
    pub q_head_source: Vec<Option<i64>>,
    /// Source KV head of each padded KV head (`None` = zero padding).
    pub kv_head_source: Vec<Option<i64>>,
    pub hidden: i64,
    pub hidden_per_rank: i64,
    pub intermediate: i64,
    pub intermediate_padded: i64,
    pub intermediate_per_rank: i64,
    pub vocab: i64,
    pub vocab_padded: i64,
    pub vocab_per_rank: i64,
    /// The real (unpadded) head counts.
    pub heads: i64,
    pub kv_heads_real: i64,
}

fn round_up(n: i64, m: i64) -> i64 {
    (n + m - 1) / m * m
}

impl ShardPlan {
    /// The plan for `sizes` at `tp`; `model` names the model in errors.
    pub fn new(model: &str, sizes: &DecoderSizes, tp: i64) -> Result<ShardPlan, ShardPlanError> {
        let err = |reason: String| {
            Err(ShardPlanError {
                model: model.to_string(),
                tp,
                reason,
            })
        };
        if tp < 1 {
            return err("the tensor-parallel degree must be at least 1".into());
        }
        let (nh, nkv) = (sizes.heads as i64, sizes.kv_heads as i64);
        if nh < 1 || nkv < 1 || nh % nkv != 0 {
            return err(format!(
                "{nh} query heads are not a positive multiple of {nkv} KV heads"
            ));
        }
        let hidden = sizes.hidden as i64;
        if hidden % tp != 0 {
            return err(format!(
                "hidden_size {hidden} is not divisible by {tp} (the embedding is sharded on it)"
            ));
        }
        let g = nh / nkv;
        let q_heads = round_up(nh, tp);
        let strategy = if nh == nkv || (nkv >= tp && nkv % tp == 0) {
            KvStrategy::Shard
        } else if tp % nkv == 0 {
            KvStrategy::ReplicateToTpDegree
        } else {
            KvStrategy::ConvertToMha
        };
        let (q_head_source, kv_head_source): (Vec<Option<i64>>, Vec<Option<i64>>) = match strategy {
            KvStrategy::Shard if nh == nkv => {
                let src = |j: i64| (j < nh).then_some(j);
                (
                    (0..q_heads).map(src).collect(),
                    (0..q_heads).map(src).collect(),
                )
            }
            KvStrategy::Shard => {
                if q_heads != nh {
                    return err(format!(
                        "{nh} query heads need padding but {nkv} KV heads are sharded as-is"
                    ));
                }
                ((0..nh).map(Some).collect(), (0..nkv).map(Some).collect())
            }
            KvStrategy::ReplicateToTpDegree => {
                // Interleaved padding: each group of `g` query heads grows to `q_heads / nkv`.
                if q_heads % nkv != 0 {
                    return err(format!(
                        "{q_heads} padded query heads do not split into {nkv} groups"
                    ));
                }
                let per_group = q_heads / nkv;
                let q = (0..q_heads)
                    .map(|j| {
                        let (grp, i) = (j / per_group, j % per_group);
                        (i < g).then_some(grp * g + i)
                    })
                    .collect();
                let reps = tp / nkv;
                (q, (0..tp).map(|m| Some(m / reps)).collect())
            }
            KvStrategy::ConvertToMha => {
                let q = (0..q_heads).map(|j| (j < nh).then_some(j)).collect();
                let kv = (0..q_heads).map(|m| (m < nh).then_some(m / g)).collect();
                (q, kv)
            }
        };
        let kv_heads = kv_head_source.len() as i64;
        if kv_heads % tp != 0 {
            return err(format!("{kv_heads} KV heads do not divide across ranks"));
        }
        let (q_r, kv_r) = (q_heads / tp, kv_heads / tp);
        if q_r % kv_r != 0 {
            return err(format!(
                "{q_r} query heads per rank are not a multiple of {kv_r} KV heads per rank"
            ));
        }
        // Every real query head must land on a rank next to the KV head it reads.
        let local_group = q_r / kv_r;
        for (j, src) in q_head_source.iter().enumerate() {
            let Some(src) = src else { continue };
            let (rank, local) = (j as i64 / q_r, j as i64 % q_r);
            let kv_global = rank * kv_r + local / local_group;
            if kv_head_source[kv_global as usize] != Some(src / g) {
                return err(format!(
                    "query head {src} would not sit with its KV head {}",
                    src / g
                ));
            }
        }
        let inter = sizes.intermediate as i64;
        let vocab = sizes.vocab as i64;
        let intermediate_padded = round_up(inter, tp);
        let vocab_padded = round_up(vocab, tp);
        Ok(ShardPlan {
            tp,
            strategy,
            head_dim: sizes.head_dim as i64,
            q_heads,
            q_heads_per_rank: q_r,
            kv_heads,
            kv_heads_per_rank: kv_r,
            q_head_source,
            kv_head_source,
            hidden,
            hidden_per_rank: hidden / tp,
            intermediate: inter,
            intermediate_padded,
            intermediate_per_rank: intermediate_padded / tp,
            vocab,
            vocab_padded,
            vocab_per_rank: vocab_padded / tp,
            heads: nh,
            kv_heads_real: nkv,
        })
    }

    /// Query heads that share one KV head on a rank.
    pub fn local_group(&self) -> i64 {
        self.q_heads_per_rank / self.kv_heads_per_rank
    }

    /// Rows of the per-rank fused QKV weight: `[Q_r; K_r; V_r]`.
    pub fn qkv_rows_per_rank(&self) -> i64 {
        (self.q_heads_per_rank + 2 * self.kv_heads_per_rank) * self.head_dim
    }

    fn tp_usize(&self) -> usize {
        self.tp as usize
    }

    /// One run of `head_dim` indices per head, from `base + source · head_dim` (zeros for a
    /// padding head), for rank `r`'s slice of `sources`.
    fn head_runs(&self, sources: &[Option<i64>], per_rank: i64, base: usize, r: usize) -> Vec<Run> {
        let hd = self.head_dim as usize;
        let mut runs = Vec::new();
        let lo = r * per_rank as usize;
        for s in &sources[lo..lo + per_rank as usize] {
            let run = match s {
                Some(s) => Run::copy(base + *s as usize * hd, hd),
                None => Run::zeros(hd),
            };
            push_run(&mut runs, run);
        }
        runs
    }

    /// Every rank holds the whole tensor (norm weights, biases added after an all-reduce).
    pub fn replicated(&self) -> ShardRule {
        ShardRule::Replicated
    }

    /// The rank's padded query heads along `dim`, from a tensor whose query heads start at
    /// index `base` (0 for `q_proj`, and for `o_proj`'s columns with `dim = 1`).
    pub fn query_heads(&self, dim: usize, base: usize) -> ShardRule {
        let ranks = (0..self.tp_usize())
            .map(|r| self.head_runs(&self.q_head_source, self.q_heads_per_rank, base, r))
            .collect();
        ShardRule::cut(dim, ranks)
    }

    /// The rank's KV heads (replicated or expanded as the plan says) along dim 0, from a tensor
    /// whose KV heads start at row `base`.
    pub fn kv_heads(&self, base: usize) -> ShardRule {
        let ranks = (0..self.tp_usize())
            .map(|r| self.head_runs(&self.kv_head_source, self.kv_heads_per_rank, base, r))
            .collect();
        ShardRule::cut(0, ranks)
    }

    /// Rows `[Q_r; K_r; V_r]` of a fused Q|K|V tensor whose K and V heads start at rows
    /// `k_base` and `v_base`.
    pub fn fused_qkv(&self, k_base: usize, v_base: usize) -> ShardRule {
        let ranks = (0..self.tp_usize())
            .map(|r| {
                let mut runs = self.head_runs(&self.q_head_source, self.q_heads_per_rank, 0, r);
                for base in [k_base, v_base] {
                    for run in self.head_runs(&self.kv_head_source, self.kv_heads_per_rank, base, r)
                    {
                        push_run(&mut runs, run);
                    }
                }
                runs
            })
            .collect();
        ShardRule::cut(0, ranks)
    }

    /// Indices `base + r·I_r ..` of an intermediate-sized axis padded to `I_pad` along `dim`:
    /// gate or up rows (dim 0), or `down_proj` columns (dim 1).
    pub fn intermediate(&self, dim: usize, base: usize) -> ShardRule {
        self.padded_chunks(dim, &[base])
    }

    /// Rows `[gate_r; up_r]` of a fused gate|up tensor (up starts at row `intermediate`).
    pub fn fused_gate_up(&self) -> ShardRule {
        self.padded_chunks(0, &[0, self.intermediate as usize])
    }

    /// Rank `r`'s padded chunk of the vocab along dim 0 (`lm_head`).
    pub fn vocab_rows(&self) -> ShardRule {
        ShardRule::split(
            0,
            self.vocab as usize,
            self.tp_usize(),
            self.vocab_padded as usize,
        )
    }

    /// Rank `r`'s chunk of the hidden size along `dim` (the embedding's columns).
    pub fn hidden(&self, dim: usize) -> ShardRule {
        let h = self.hidden as usize;
        ShardRule::split(dim, h, self.tp_usize(), h)
    }

    fn padded_chunks(&self, dim: usize, bases: &[usize]) -> ShardRule {
        let (ir, real) = (
            self.intermediate_per_rank as usize,
            self.intermediate as usize,
        );
        let ranks = (0..self.tp_usize())
            .map(|r| {
                bases
                    .iter()
                    .flat_map(|&b| padded_runs(b, r * ir, ir, real))
                    .collect()
            })
            .collect();
        ShardRule::cut(dim, ranks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(heads: usize, kv: usize, hidden: usize) -> DecoderSizes {
        DecoderSizes {
            heads,
            kv_heads: kv,
            head_dim: hidden / heads,
            hidden,
            intermediate: 8192,
            vocab: 32064,
        }
    }

    #[test]
    fn gqa_rules_follow_nxd() {
        // Phi-4-mini: 24 q heads, 8 KV heads. tp 16 replicates, with interleaved padding.
        let p = ShardPlan::new("phi-4-mini", &sizes(24, 8, 3072), 16).unwrap();
        assert_eq!(p.strategy, KvStrategy::ReplicateToTpDegree);
        assert_eq!((p.q_heads_per_rank, p.kv_heads_per_rank), (2, 1));
        assert_eq!(p.q_head_source[..4], [Some(0), Some(1), Some(2), None]);
        assert_eq!(p.kv_head_source[..4], [Some(0), Some(0), Some(1), Some(1)]);
        // Phi-3-medium: 40 q heads, 10 KV heads; tp 8 converts to MHA.
        let p = ShardPlan::new("phi-3-medium", &sizes(40, 10, 5120), 8).unwrap();
        assert_eq!(p.strategy, KvStrategy::ConvertToMha);
        assert_eq!((p.q_heads_per_rank, p.kv_heads_per_rank), (5, 5));
    }

    #[test]
    fn rules_cut_the_right_heads() {
        // 4 q heads, 2 KV heads, head_dim 2, tp 2: rank 1 holds q heads 2, 3 and KV head 1.
        let p = ShardPlan::new("m", &sizes(4, 2, 8), 2).unwrap();
        let ShardRule::Cut { ranks, .. } = p.fused_qkv(8, 12) else {
            panic!()
        };
        assert_eq!(
            ranks[1],
            vec![Run::copy(4, 4), Run::copy(10, 2), Run::copy(14, 2)]
        );
        let ShardRule::Cut { dim, ranks } = p.query_heads(1, 0) else {
            panic!()
        };
        assert_eq!((dim, ranks[0].clone()), (1, vec![Run::copy(0, 4)]));
    }
}
