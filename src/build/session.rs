//! The shortest path from a Hugging Face folder to running graphs: record a set in memory,
//! shard the checkpoint in memory, and load both into a [`run::Engine`](crate::run::Engine)
//! through the same manifest contract a written set uses.

use super::set::memory_set;
use crate::ir::DType;
use crate::manifest::Manifest;
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
    #[error("{0}")]
    Manifest(#[from] crate::manifest::ManifestError),
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

/// A set built from a Hugging Face folder and its sharded weights, in a cache folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifacts {
    /// `manifest.json` and the `.hlo.pb` files.
    pub graphs: std::path::PathBuf,
    /// `tp{r}.safetensors` per rank.
    pub weights: std::path::PathBuf,
    /// False when an earlier run had built them already.
    pub built: bool,
}

/// What identifies a checkpoint on disk cheaply: each safetensors file's name, size and
/// modification time (a changed file gets a new cache entry).
fn checkpoint_identity(model_dir: &Path) -> Result<String, SessionError> {
    let ckpt = Checkpoint::open(model_dir)?;
    let mut id = String::new();
    for f in ckpt.files() {
        let io = |error| WeightsError::Io {
            path: f.to_path_buf(),
            error,
        };
        let meta = std::fs::metadata(f).map_err(io)?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        id.push_str(&format!("{}:{}:{mtime}\n", f.display(), meta.len()));
    }
    Ok(id)
}

/// Records the set `shape` for `model_dir` and keeps it in `cache_root/<key>/graphs`, where the
/// key hashes the set's manifest (which holds every graph's proto hash, its knobs and its
/// weight table), and shards its weights into `cache_root/weights-<key>/`, keyed by the config,
/// the checkpoint, the degree, the set's weight table and this tool's version only: sets that
/// differ in buckets or graph forms but not in their weights share one copy (9 GB for
/// real-size Phi-3-mini). Recording a set takes milliseconds, so every call records it, and an
/// entry is only ever reused for exactly the graphs this code records: a build whose
/// recording changed without a new version is never served an older build's graphs. Each
/// entry is built in a temporary folder and renamed into place, so an interrupted run leaves
/// nothing half-written under a key.
pub fn prepare_artifacts(
    model_dir: &Path,
    tp: i64,
    dtype: DType,
    shape: &SetShape,
    options: &GraphOptions,
    cache_root: &Path,
) -> Result<Artifacts, SessionError> {
    let config_path = model_dir.join("config.json");
    let config = std::fs::read(&config_path).map_err(|error| ConfigError::Io {
        path: config_path.clone(),
        error,
    })?;
    let model = from_file(&config_path)?;
    let plan = model.plan(tp)?;
    let checkpoint = checkpoint_identity(model_dir)?;
    let set = memory_set(
        model.as_ref(),
        &plan,
        &shape.specs(dtype, options),
        Target::Trn1,
    )?;
    let manifest_text = set.manifest.to_json_pretty();
    // "layout 3": sets keyed on their manifest (layout 2 keyed them on their inputs).
    let key = crate::files::sha256_hex(format!("layout 3\n{manifest_text}").as_bytes());
    let entry = cache_root.join(&key[..32]);
    // The sharded weights depend only on the checkpoint and the set's weight table (names,
    // shapes, dtypes, layouts, shard rules), not on its buckets or forms: every set with the
    // same table shares one copy.
    let table =
        serde_json::to_string(&set.manifest.weights).expect("weight declarations serialise");
    let wkey = crate::files::sha256_hex(
        format!(
            "{}\n{checkpoint}\n{tp}\n{table}\n{}",
            String::from_utf8_lossy(&config),
            env!("CARGO_PKG_VERSION"),
        )
        .as_bytes(),
    );
    let weights = cache_root.join(format!("weights-{}", &wkey[..32]));
    let mut built = ensure_weights(model_dir, &set.manifest, tp, &weights)?;
    let manifest_file = "graphs/manifest.json";
    if !entry.join(manifest_file).is_file() {
        // Every file flushed to disk, the manifest last, before the folder is renamed into
        // place.
        let staging = staging_for(&entry)?;
        let graphs = staging.join("graphs");
        let mut stager = crate::files::Stager::new();
        let mut files: Vec<(String, &[u8])> = (set.protos.iter())
            .map(|(name, bytes)| (format!("{name}.hlo.pb"), bytes.as_slice()))
            .collect();
        files.sort();
        files.push(("manifest.json".into(), manifest_text.as_bytes()));
        for (file, bytes) in files {
            let path = graphs.join(file);
            stager.stage(&path, bytes).map_err(write_error(&path))?;
        }
        stager
            .commit()
            .map_err(|(path, error)| super::SetError::Write { path, error })?;
        crate::files::sync_dir(&graphs);
        publish(&staging, &entry, manifest_file)?;
        built = true;
    }
    Ok(Artifacts {
        graphs: entry.join("graphs"),
        weights,
        built,
    })
}

/// Writes every rank's file of `manifest`'s weights into `dir` unless an earlier run has:
/// staged next to it and renamed into place, so `dir` exists only complete. True when it
/// wrote them.
fn ensure_weights(
    model_dir: &Path,
    manifest: &Manifest,
    tp: i64,
    dir: &Path,
) -> Result<bool, SessionError> {
    let last_file = crate::weights::rank_file_name(tp as usize - 1);
    let last = dir.join(&last_file);
    if last.is_file() {
        return Ok(false);
    }
    let staging = staging_for(dir)?;
    let ckpt = Checkpoint::open(model_dir)?;
    crate::weights::write_rank_files(&ckpt, &manifest.weights, tp as usize, &staging)?;
    publish(&staging, dir, &last_file)?;
    Ok(true)
}

/// A fresh temporary folder name beside the cache entry `entry`, to build it in.
fn staging_for(entry: &Path) -> Result<std::path::PathBuf, SessionError> {
    Ok(crate::files::temporary_path(entry).map_err(write_error(entry))?)
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> super::SetError {
    let path = path.to_path_buf();
    move |error| super::SetError::Write { path, error }
}

/// Renames the finished `staging` folder to `entry` (durably); when another run got there
/// first (its `marker` exists), keeps that one and drops ours.
fn publish(staging: &Path, entry: &Path, marker: &str) -> Result<(), SessionError> {
    match crate::files::commit(staging, entry) {
        Ok(()) => Ok(()),
        Err(_) if entry.join(marker).is_file() => {
            let _ = std::fs::remove_dir_all(staging);
            Ok(())
        }
        Err(error) => Err(write_error(entry)(error).into()),
    }
}
