//! `manifest.json`: the contract between a graph set and whatever runs it.
//!
//! `build-graphs` writes it (through `build::manifest`); `run` reads it, and so can any other
//! runtime: everything needed to drive the graphs is here, in JSON, without Rust types. One
//! set-level table declares every weight once (name, per-rank shape, the checkpoint tensors it
//! is cut from and how); every graph lists its inputs and outputs in parameter order, each with
//! its role. The roles are the vocabulary the model recorder uses too ([`InputRole`],
//! [`OutputRole`]), so the graph, the manifest and the runner cannot drift apart.

use crate::ir::DType;
use crate::weights::WeightDecl;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `format` string of this version of the contract.
pub const FORMAT: &str = "phi3-neuron-manifest/3";

/// Which tensor of a layer's KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvTensor {
    Key,
    Value,
}

impl KvTensor {
    pub fn name(self) -> &'static str {
        match self {
            KvTensor::Key => "key",
            KvTensor::Value => "value",
        }
    }
}

/// What a graph input is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum InputRole {
    /// `s32[B, S]` token ids.
    InputIds,
    /// `s32[B, S]` positions.
    PositionIds,
    /// `s32[B]`: the KV-cache row of each batch row.
    SeqIds,
    /// `f32[B, 3]`: per row (top_k, top_p, temperature) for the on-device sampler.
    SamplingParams,
    /// `f32[B]`: one uniform in [0, 1) per row, drawn by the host.
    SamplingUniform,
    /// A weight shard: `weight` names its entry in the manifest's `weights` table.
    Weight { weight: String },
    /// `s32[]`: the rank's index in the tensor-parallel group.
    Rank,
    /// A KV cache tensor of `layer`.
    KvCache { layer: usize, tensor: KvTensor },
}

/// What a graph output is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum OutputRole {
    /// `f32[B, V]` (or each rank's `[B, V_pad / t]` slice when left sharded).
    Logits,
    /// `s32[B]`: the on-device sampler's token.
    NextToken,
    /// The updated KV cache tensor, aliased to its input.
    KvCache { layer: usize, tensor: KvTensor },
}

/// One graph input or output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoEntry<R> {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<i64>,
    #[serde(flatten)]
    pub role: R,
    /// For an output: the input parameter whose buffer it reuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliases_input: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphKind {
    ContextEncoding,
    TokenGeneration,
}

impl GraphKind {
    pub fn short(self) -> &'static str {
        match self {
            GraphKind::ContextEncoding => "cte",
            GraphKind::TokenGeneration => "tkg",
        }
    }
}

/// One graph of the set.
/// How a token-generation graph's batch rows map to the KV state's rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeRows {
    /// Row `b` reads and writes state row `seq_ids[b]`: any rows, in any order (the graph
    /// gathers each row's cache prefix).
    #[default]
    Gathered,
    /// Row `b` is state row `b` (the graph's batch is the state's rows): `seq_ids[b]` must be
    /// `b` for an active row, or out of range for an idle one (nothing is written). The graph
    /// attends over the state in place, without a gather.
    InPlace,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphEntry {
    pub name: String,
    pub kind: GraphKind,
    pub batch: i64,
    /// Which KV-state row each batch row reads and writes (token generation).
    #[serde(default)]
    pub decode_rows: DecodeRows,
    /// Context encoding: the prompt positions it holds (`0..bucket`). Token generation: the
    /// cache positions it attends to (`0..bucket`).
    pub bucket: i64,
    /// Tokens per sequence in one call: the bucket length for context encoding, 1 for decode.
    pub active_tokens: i64,
    /// The KV cache length this graph reads and writes.
    pub max_seq_len: i64,
    pub dtype: DType,
    /// False when the graph needs a Neuron-only custom call (the CPU plugin cannot run it).
    pub runs_on_cpu: bool,
    /// Custom-call targets the runtime provides itself and must register before compiling the
    /// graph (`phi3_neuron.bf16_matvec`, `phi3_neuron.f32_matvec`); empty for a graph any XLA
    /// runtime runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_kernels: Vec<String>,
    /// The knobs the graph was recorded with.
    #[serde(default)]
    pub options: serde_json::Value,
    /// XLA option overrides (`CompileOptionsProto.env_option_overrides`, by flag name) the
    /// graph is meant to be compiled with on XLA:CPU; the runtime applies them. Absent when
    /// there are none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xla_options: BTreeMap<String, String>,
    /// Files of the graph, relative to the manifest's folder (`.hlo.pb` first).
    pub files: Vec<String>,
    pub proto_sha256: String,
    pub proto_bytes: usize,
    pub compiler_flags: Vec<String>,
    pub inputs: Vec<IoEntry<InputRole>>,
    pub outputs: Vec<IoEntry<OutputRole>>,
    /// Graph statistics and Neuron lint findings (informational).
    #[serde(default)]
    pub stats: serde_json::Value,
    #[serde(default)]
    pub neuron_lint: serde_json::Value,
    /// Filled in by `--compile`.
    #[serde(default)]
    pub compile: serde_json::Value,
}

impl GraphEntry {
    /// The `.hlo.pb` file, when the set was written with it.
    pub fn proto_file(&self) -> Option<&str> {
        self.files
            .iter()
            .find(|f| f.ends_with(".hlo.pb"))
            .map(String::as_str)
    }
}

/// The model a set was built for, as far as a runtime needs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub model_type: String,
    pub num_hidden_layers: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    /// Hugging Face `generate`'s Phi-3 rule: when a sequence first grows past this many tokens
    /// while its cache holds at most this many, the whole sequence is encoded again (LongRoPE
    /// switches to its long factors). `None` for models without the rule.
    pub reencode_past: Option<usize>,
    /// `config.json`'s `eos_token_id` (a runtime may prefer `generation_config.json`).
    #[serde(default)]
    pub eos_token_ids: Vec<u32>,
}

/// The KV state every graph of the set takes and returns (aliased): per layer a key and a
/// value tensor of `shape`, zero-initialised by the runtime.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KvState {
    /// `[max_batch_size, kv_heads_per_rank, max_seq_len, head_dim]`, or the last three when the
    /// state holds one sequence and the set was built without its size-1 row dim.
    pub shape: Vec<i64>,
    pub dtype: DType,
    pub layers: usize,
    pub max_batch_size: i64,
    pub max_seq_len: i64,
}

/// The set's buckets per graph kind, and the rule for choosing one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Buckets {
    pub context_encoding: Vec<i64>,
    pub token_generation: Vec<i64>,
    /// Batch rows per call of each kind.
    pub ctx_batch_size: i64,
    pub tkg_batch_size: i64,
    /// In words, for a runtime writer.
    pub rule: serde_json::Value,
}

impl Buckets {
    /// The smallest context-encoding bucket that holds a prompt of `len` tokens.
    pub fn context_encoding_for(&self, len: usize) -> Option<i64> {
        self.context_encoding
            .iter()
            .copied()
            .filter(|&b| b as usize >= len)
            .min()
    }

    /// The smallest token-generation bucket that holds position `furthest` (the largest
    /// position of the batch), i.e. `furthest + 1` cache positions.
    pub fn token_generation_for(&self, furthest: usize) -> Option<i64> {
        self.token_generation
            .iter()
            .copied()
            .filter(|&b| b as usize > furthest)
            .min()
    }
}

/// The whole manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub tool: serde_json::Value,
    pub model: ModelInfo,
    pub tp_degree: i64,
    pub replica_groups: Vec<Vec<i64>>,
    pub dtype: DType,
    /// The graph options (knobs) the set was recorded with, resolved.
    pub options: serde_json::Value,
    /// optimum-neuron / NxDI `neuron_config.json` fields that describe the set.
    pub neuron_config: serde_json::Value,
    pub input_conventions: serde_json::Value,
    pub sharding: serde_json::Value,
    pub kv_state: KvState,
    pub buckets: Buckets,
    /// Every weight input of every graph, declared once.
    pub weights: Vec<WeightDecl>,
    pub graphs: Vec<GraphEntry>,
}

/// A manifest that cannot be read or does not hold together; names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{}: not a valid manifest: {error}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    #[error("{}: format is `{found}`, this tool reads `{FORMAT}`", path.display())]
    Format { path: PathBuf, found: String },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read(path).map_err(|error| ManifestError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Manifest::parse(&text, path)
    }

    /// Parses and checks a manifest's text; `path` names it in errors.
    pub fn parse(text: &[u8], path: &Path) -> Result<Manifest, ManifestError> {
        let value: serde_json::Value =
            serde_json::from_slice(text).map_err(|error| ManifestError::Json {
                path: path.to_path_buf(),
                error,
            })?;
        let found = value
            .get("format")
            .and_then(|f| f.as_str())
            .unwrap_or("")
            .to_string();
        if found != FORMAT {
            return Err(ManifestError::Format {
                path: path.to_path_buf(),
                found,
            });
        }
        let m: Manifest = serde_json::from_value(value).map_err(|error| ManifestError::Json {
            path: path.to_path_buf(),
            error,
        })?;
        m.check(path)?;
        Ok(m)
    }

    /// Internal consistency: every weight input names a declared weight of its shape and dtype.
    fn check(&self, path: &Path) -> Result<(), ManifestError> {
        let invalid = |reason: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        for g in &self.graphs {
            for i in &g.inputs {
                if let InputRole::Weight { weight } = &i.role {
                    let d = self.weight(weight).ok_or_else(|| {
                        invalid(format!(
                            "graph `{}` input `{}` names weight `{weight}`, which the weights table lacks",
                            g.name, i.name
                        ))
                    })?;
                    let shape: Vec<i64> = d.shape.iter().map(|&x| x as i64).collect();
                    if shape != i.shape || d.dtype != i.dtype {
                        return Err(invalid(format!(
                            "graph `{}` input `{}` is {}{:?}, its weight is declared {}{:?}",
                            g.name, i.name, i.dtype, i.shape, d.dtype, d.shape
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn weight(&self, name: &str) -> Option<&WeightDecl> {
        self.weights.iter().find(|w| w.name == name)
    }

    pub fn graph(&self, name: &str) -> Option<&GraphEntry> {
        self.graphs.iter().find(|g| g.name == name)
    }

    /// The graph of `kind` and `bucket`.
    pub fn graph_for(&self, kind: GraphKind, bucket: i64) -> Option<&GraphEntry> {
        self.graphs
            .iter()
            .find(|g| g.kind == kind && g.bucket == bucket)
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifests serialise") + "\n"
    }
}
