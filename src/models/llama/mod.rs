//! Llama (Hugging Face `model_type: llama`), the second family on the shared decoder:
//! [`config`] parses `config.json`; [`modeling`] mirrors `modeling_llama.py`.

pub mod config;
pub mod modeling;

pub use config::LlamaConfig;

use crate::models::decoder::{
    record_causal_lm, BuildError, DecoderModel, GraphSpec, RecordedGraph,
};
use crate::parallel::{DecoderSizes, ShardPlan};
use modeling::LlamaForCausalLM;

impl DecoderModel for LlamaConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn model_type(&self) -> &'static str {
        "llama"
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

    fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_ids.clone()
    }

    fn checkpoint_fusion(&self) -> (bool, bool) {
        (false, false)
    }

    fn with_layers(&self, n: usize) -> Box<dyn DecoderModel> {
        Box::new(self.clone().with_layers(n))
    }

    fn record(&self, plan: &ShardPlan, spec: &GraphSpec) -> Result<RecordedGraph, BuildError> {
        record_causal_lm(&self.name, self.num_hidden_layers, plan, spec, |cx| {
            LlamaForCausalLM::new(cx, self)
        })
    }
}
