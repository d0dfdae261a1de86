//! How a Phi-3 model is split across `t` tensor-parallel ranks, following NxD's GQA rules
//! (`get_shardable_head_counts`): query heads padded to a multiple of `t`; KV heads either
//! replicated up to `t` (REPLICATE_TO_TP_DEGREE) or expanded to one per query head
//! (CONVERT_TO_MHA) when `t` is not a multiple of the KV head count; vocab padded to a
//! multiple of `t`. The plan is pure data; the graph recorder and the weight sharder read it.

use super::config::Phi3Config;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvStrategy {
    /// KV heads already divide evenly across ranks.
    Shard,
    /// Each KV head is repeated so every rank holds whole KV heads (`t % nKV == 0`).
    ReplicateToTpDegree,
    /// KV heads are expanded to one per (padded) query head.
    ConvertToMha,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlanError(pub String);

impl fmt::Display for ShardPlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShardPlanError {}

#[derive(Clone, Debug, PartialEq)]
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
    pub intermediate_padded: i64,
    pub intermediate_per_rank: i64,
    pub vocab: i64,
    pub vocab_padded: i64,
    pub vocab_per_rank: i64,
}

fn round_up(n: i64, m: i64) -> i64 {
    (n + m - 1) / m * m
}

impl ShardPlan {
    pub fn new(cfg: &Phi3Config, tp: i64) -> Result<ShardPlan, ShardPlanError> {
        let err = |m: String| {
            Err(ShardPlanError(format!(
                "{}: cannot shard at tp={tp}: {m}",
                cfg.name
            )))
        };
        if tp < 1 {
            return err("the tensor-parallel degree must be at least 1".into());
        }
        let (nh, nkv) = (
            cfg.num_attention_heads as i64,
            cfg.num_key_value_heads as i64,
        );
        let hidden = cfg.hidden_size as i64;
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
        let inter = cfg.intermediate_size as i64;
        let vocab = cfg.vocab_size as i64;
        let intermediate_padded = round_up(inter, tp);
        let vocab_padded = round_up(vocab, tp);
        Ok(ShardPlan {
            tp,
            strategy,
            head_dim: cfg.head_dim as i64,
            q_heads,
            q_heads_per_rank: q_r,
            kv_heads,
            kv_heads_per_rank: kv_r,
            q_head_source,
            kv_head_source,
            hidden,
            hidden_per_rank: hidden / tp,
            intermediate_padded,
            intermediate_per_rank: intermediate_padded / tp,
            vocab,
            vocab_padded,
            vocab_per_rank: vocab_padded / tp,
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
}

/// Which part of a fused checkpoint tensor an unfused weight is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FusedPart {
    Q,
    K,
    V,
    Gate,
    Up,
}

/// How a rank's weight shard is cut from its checkpoint tensor. The recorder attaches one to
/// every weight input, so the manifest (and anyone reading it) need not guess from names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShardRule {
    /// Every rank holds the whole tensor (norm weights).
    Replicated,
    /// Zero-pad `dim` to `pad_to`, then rank `r` takes contiguous chunk `r` of `tp`.
    Split { dim: usize, pad_to: i64 },
    /// Rows of the fused Q|K|V tensor: the rank's padded query heads, then its KV heads, each
    /// head taken from its source head in the plan (zeros for padding); `part` narrows the
    /// cut to one of Q, K, V for unfused graphs.
    QkvHeads { part: Option<FusedPart> },
    /// Columns of `o_proj` for the rank's padded query heads.
    QueryHeadColumns,
    /// Rows `[gate_r; up_r]` of the fused gate|up tensor, each half padded to `pad_to` and split
    /// in `tp`; `part` narrows the cut to gate or up for unfused graphs.
    GateUp {
        part: Option<FusedPart>,
        pad_to: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str, tp: i64) -> ShardPlan {
        ShardPlan::new(&Phi3Config::embedded(name).unwrap(), tp).unwrap()
    }

    #[test]
    fn matches_neuron_md_per_rank_layouts() {
        // (model, tp, q heads per rank, kv heads per rank), from neuron.md's table.
        let cases = [
            ("phi-3-mini-4k", 2, 16, 16),
            ("phi-3-mini-4k", 8, 4, 4),
            ("phi-3-mini-4k", 32, 1, 1),
            ("phi-3-medium-4k", 2, 20, 5),
            ("phi-3-medium-4k", 4, 10, 10),
            ("phi-3-medium-4k", 8, 5, 5),
            ("phi-3-medium-4k", 16, 3, 3),
            ("phi-3-medium-4k", 32, 2, 2),
            ("phi-4-mini", 2, 12, 4),
            ("phi-4-mini", 4, 6, 2),
            ("phi-4-mini", 8, 3, 1),
            ("phi-4-mini", 16, 2, 1),
            ("phi-4-mini", 32, 1, 1),
        ];
        for (name, tp, q, kv) in cases {
            let p = plan(name, tp);
            assert_eq!(
                (p.q_heads_per_rank, p.kv_heads_per_rank),
                (q, kv),
                "{name} tp={tp}"
            );
        }
        assert_eq!(
            plan("phi-4-mini", 16).strategy,
            KvStrategy::ReplicateToTpDegree
        );
        assert_eq!(
            plan("phi-3-medium-4k", 8).strategy,
            KvStrategy::ConvertToMha
        );
        assert_eq!(plan("phi-4-mini", 32).vocab_padded, 200064);
        assert_eq!(plan("phi-3-mini-4k", 32).vocab_padded, 32064);
        assert_eq!(plan("phi-3-mini-4k", 24).q_heads, 48);
    }

    #[test]
    fn interleaved_padding_keeps_groups_together() {
        let p = plan("phi-4-mini", 16); // 24 q heads → 32, 8 kv heads → 16
        assert_eq!(p.q_head_source[..4], [Some(0), Some(1), Some(2), None]);
        assert_eq!(p.kv_head_source[..4], [Some(0), Some(0), Some(1), Some(1)]);
    }

    #[test]
    fn rejects_impossible_degrees() {
        let cfg = Phi3Config::embedded("phi-3-mini-4k").unwrap();
        assert!(ShardPlan::new(&cfg, 0)
            .unwrap_err()
            .to_string()
            .contains("at least 1"));
        assert!(ShardPlan::new(&cfg, 7)
            .unwrap_err()
            .to_string()
            .contains("hidden_size 3072 is not divisible by 7"));
    }
}
