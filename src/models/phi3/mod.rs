//! The Phi-3 family (Hugging Face `model_type: phi3`): Phi-3-mini 4k/128k, Phi-3-medium
//! 4k/128k, Phi-3.5-mini and Phi-4-mini. [`config`] parses and validates `config.json`;
//! [`modeling`] holds the model, class by class as in `modeling_phi3.py`.

pub mod config;
pub mod modeling;

pub use config::Phi3Config;

use crate::models::decoder::{
    record_causal_lm, BuildError, DecoderModel, GraphSpec, RecordedGraph,
};
use crate::parallel::{DecoderSizes, ShardPlan};
use modeling::Phi3ForCausalLM;

impl DecoderModel for Phi3Config {
    fn name(&self) -> &str {
        &self.name
    }

    fn model_type(&self) -> &'static str {
        "phi3"
    }

    fn sizes(&self) -> DecoderSizes {
        DecoderSizes {
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            vocab: self.vocab_size,
        }
    }

    fn num_layers(&self) -> usize {
        self.num_hidden_layers
    }

    fn max_position_embeddings(&self) -> usize {
        self.max_position_embeddings
    }

    /// `Phi3ForCausalLM.prepare_inputs_for_generation`: with LongRoPE, the first time the
    /// sequence grows past `original_max_position_embeddings` while the cache holds at most
    /// that many tokens, HF drops the cache and encodes the whole sequence again (with the long
    /// factors from then on).
    fn reencode_past(&self) -> Option<usize> {
        self.rope
            .is_long_rope()
            .then_some(self.original_max_position_embeddings)
    }

    fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_ids.clone()
    }

    fn checkpoint_fusion(&self) -> (bool, bool) {
        (true, true)
    }

    fn with_layers(&self, n: usize) -> Box<dyn DecoderModel> {
        Box::new(self.clone().with_layers(n))
    }

    fn record(&self, plan: &ShardPlan, spec: &GraphSpec) -> Result<RecordedGraph, BuildError> {
        record_causal_lm(&self.name, self.num_hidden_layers, plan, spec, |cx| {
            Phi3ForCausalLM::new(cx, self)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::KvStrategy;

    fn plan(name: &str, tp: i64) -> ShardPlan {
        Phi3Config::embedded(name).unwrap().plan(tp).unwrap()
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
        assert!(cfg.plan(0).unwrap_err().to_string().contains("at least 1"));
        assert!(cfg
            .plan(7)
            .unwrap_err()
            .to_string()
            .contains("hidden_size 3072 is not divisible by 7"));
    }
}
