//! The shortest path from a Hugging Face folder to running graphs: record a set in memory,
//! shard the checkpoint in memory, and load both into a [`run::Engine`](crate::run::Engine)
//! through the same manifest contract a written set uses.

use super::set::memory_set;
use crate::ir::DType;
use crate::models::decoder::{BuildError, GraphOptions, GraphSpec};
use crate::models::{from_file, ConfigError};
use crate::neuron::Target;
use crate::parallel::ShardPlanError;
use crate::run::{Engine, LoadOptions, Protos, RunError, Weights};
use crate::weights::{shard_all_ranks, Checkpoint, WeightsError};
use pjrt_runtime::Plugin;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Plan(#[from] ShardPlanError),
    #[error("{0}")]
    Build(#[from] BuildError),
    #[error("{0}")]
    Set(#[from] super::SetError),
    #[error("{0}")]
    Weights(#[from] WeightsError),
    #[error("{0}")]
    Run(#[from] RunError),
}

/// The buckets and batch sizes of a set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetShape {
    pub cte_buckets: Vec<i64>,
    pub tkg_buckets: Vec<i64>,
    pub max_seq_len: i64,
    /// KV-cache rows, and the token-generation batch.
    pub max_batch: i64,
    /// Prompts per context-encoding call.
    pub ctx_batch: i64,
}

impl SetShape {
    /// One prefill bucket and one decode bucket, both `max_seq_len`, batch 1.
    pub fn single(max_seq_len: i64) -> SetShape {
        SetShape {
            cte_buckets: vec![max_seq_len],
            tkg_buckets: vec![max_seq_len],
            max_seq_len,
            max_batch: 1,
            ctx_batch: 1,
        }
    }

    /// The specs of every graph of the set.
    pub fn specs(&self, dtype: DType, options: &GraphOptions) -> Vec<GraphSpec> {
        let cte = self
            .cte_buckets
            .iter()
            .map(|&b| GraphSpec::context_encoding(self.ctx_batch, b, self.max_seq_len, dtype));
        let tkg = self.tkg_buckets.iter().map(|&b| {
            GraphSpec::token_generation(self.max_batch, self.max_seq_len, dtype).with_bucket(b)
        });
        cte.chain(tkg)
            .map(|s| {
                s.with_cache_batch(self.max_batch)
                    .with_options(options.clone())
            })
            .collect()
    }
}

/// Loads the Hugging Face folder `model_dir` (any supported family) at `tp` ranks: one
/// context-encoding graph with a `max_seq_len` bucket and one decode graph over a cache of
/// `max_seq_len`, with the given knobs.
pub fn engine_from_checkpoint(
    plugin: &Plugin,
    model_dir: &Path,
    tp: i64,
    dtype: DType,
    max_seq_len: i64,
    options: GraphOptions,
) -> Result<Engine, SessionError> {
    engine_for(
        plugin,
        model_dir,
        tp,
        dtype,
        &SetShape::single(max_seq_len),
        &options,
    )
}

/// Loads `model_dir` at `tp` ranks as a serving set of `shape`, built in memory.
pub fn engine_for(
    plugin: &Plugin,
    model_dir: &Path,
    tp: i64,
    dtype: DType,
    shape: &SetShape,
    options: &GraphOptions,
) -> Result<Engine, SessionError> {
    let model = from_file(&model_dir.join("config.json"))?;
    let plan = model.plan(tp)?;
    let specs = shape.specs(dtype, options);
    let set = memory_set(model.as_ref(), &plan, &specs, Target::Trn1)?;
    let ckpt = Checkpoint::open(model_dir)?;
    let shards = shard_all_ranks(&ckpt, &set.manifest.weights, tp as usize)?;
    Ok(Engine::load(
        plugin,
        set.manifest,
        Protos::Memory(set.protos),
        Weights::Memory(&shards),
        LoadOptions::default(),
    )?)
}
