//! The shortest path from a Hugging Face folder to running graphs: record a set in memory,
//! shard the checkpoint in memory, and load both into a [`run::Engine`](crate::run::Engine)
//! through the same manifest contract a written set uses.

use super::set::memory_set;
use crate::ir::DType;
use crate::models::decoder::{BuildError, GraphOptions, GraphSpec};
use crate::models::{from_file, ConfigError};
use crate::neuron::Target;
use crate::parallel::ShardPlanError;
use crate::run::{Engine, Protos, RunError, Weights};
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
    let model = from_file(&model_dir.join("config.json"))?;
    let plan = model.plan(tp)?;
    let specs = [
        GraphSpec::context_encoding(1, max_seq_len, max_seq_len, dtype),
        GraphSpec::token_generation(1, max_seq_len, dtype),
    ]
    .map(|s| s.with_options(options.clone()));
    let set = memory_set(model.as_ref(), &plan, &specs, Target::Trn1)?;
    let ckpt = Checkpoint::open(model_dir)?;
    let shards = shard_all_ranks(&ckpt, &set.manifest.weights, tp as usize)?;
    Ok(Engine::load(
        plugin,
        set.manifest,
        &Protos::Memory(set.protos),
        Weights::Memory(&shards),
    )?)
}
