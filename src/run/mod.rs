//! Runs a graph set through a PJRT plugin, one device per tensor-parallel rank, from what the
//! manifest says and nothing else: the graphs and their buckets, every input's role, the KV
//! caches, the weights by name. It knows no model family: the `phi3` binary and the numeric
//! tests against Hugging Face use it on sets of any family, written to disk by `build-graphs`
//! and `phi3 shard` or held in memory.
//!
//! Generation follows Hugging Face `generate` (greedy), including the re-encode rule the
//! manifest may carry ([`crate::manifest::ModelInfo::reencode_past`], Phi-3's LongRoPE quirk).

use crate::ir::DType;
use crate::manifest::{GraphEntry, GraphKind, InputRole, Manifest, OutputRole};
use crate::weights::{RankFile, RankWeights, WeightsError};
use pjrt_runtime::{
    Arg, Buffer, Client, ClientOptions, CompileOptions, ElementType, LoadedExecutable, Plugin,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("runtime: {0}")]
    Runtime(#[from] pjrt_runtime::Error),
    #[error("{0}")]
    Weights(#[from] WeightsError),
    #[error("{0}")]
    Manifest(#[from] crate::manifest::ManifestError),
    /// The weights do not fit the manifest (names the rank, tensor and what differs).
    #[error("weights do not match the manifest: {0}")]
    WeightMismatch(String),
    /// The set cannot serve the request (names the limit).
    #[error("{0}")]
    Input(String),
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

/// The runtime's element type of a DSL dtype, through the shared HLO `PrimitiveType` code
/// (the runtime keeps the separate PJRT buffer-type table).
pub fn element_type(d: DType) -> ElementType {
    ElementType::from_primitive_type(d.primitive_type())
        .expect("the runtime supports every DSL dtype")
}

/// Where the graphs' serialized protos come from.
pub enum Protos {
    /// `manifest.json`'s folder: each graph's `.hlo.pb` beside it.
    Dir(PathBuf),
    /// In memory, by graph name.
    Memory(HashMap<String, Vec<u8>>),
}

impl Protos {
    fn load(&self, g: &GraphEntry) -> Result<Vec<u8>, RunError> {
        match self {
            Protos::Dir(dir) => {
                let file = g.proto_file().ok_or_else(|| {
                    RunError::Input(format!(
                        "graph `{}` was written without its .hlo.pb (build with --format pb or both)",
                        g.name
                    ))
                })?;
                let path = dir.join(file);
                let bytes = std::fs::read(&path).map_err(|error| RunError::Io {
                    path: path.clone(),
                    error,
                })?;
                let sha = crate::files::sha256_hex(&bytes);
                if sha != g.proto_sha256 {
                    return Err(RunError::Input(format!(
                        "{}: the file's sha256 {sha} differs from the manifest's {}",
                        path.display(),
                        g.proto_sha256
                    )));
                }
                Ok(bytes)
            }
            Protos::Memory(m) => m
                .get(&g.name)
                .cloned()
                .ok_or_else(|| RunError::Input(format!("no proto for graph `{}`", g.name))),
        }
    }
}

/// Where each rank's weight shards come from.
pub enum Weights<'a> {
    /// `phi3 shard`'s output: `tp{r}.safetensors` per rank.
    Dir(&'a Path),
    /// In memory, one entry per rank.
    Memory(&'a [RankWeights]),
}

struct Compiled {
    entry: GraphEntry,
    exe: LoadedExecutable,
}

/// What one execution returns: the full-vocab logits of each sequence's last position, the
/// on-device token when the graph has one, and every rank's updated caches.
struct Step {
    logits: Vec<f32>,
    next_token: Option<i32>,
    caches: Vec<Vec<Buffer>>,
}

/// A loaded graph set: compiled executables, every rank's weights on its device.
pub struct Engine {
    manifest: Manifest,
    client: Client,
    graphs: Vec<Compiled>,
    /// `[rank]`: weight name → buffer.
    weights: Vec<HashMap<String, Buffer>>,
    tp: usize,
}

impl Engine {
    /// Compiles every graph the CPU can run and uploads every rank's weights.
    pub fn load(
        plugin: &Plugin,
        manifest: Manifest,
        protos: &Protos,
        weights: Weights<'_>,
    ) -> Result<Engine, RunError> {
        let tp = manifest.tp_degree as usize;
        let client = Client::new(
            plugin,
            &ClientOptions {
                cpu_device_count: Some(tp as i64),
            },
        )?;
        let mut graphs = Vec::new();
        for g in &manifest.graphs {
            if !g.runs_on_cpu {
                continue;
            }
            let bytes = protos.load(g)?;
            let exe = client.compile_bytes(&bytes, &CompileOptions::replicas(tp as i64))?;
            graphs.push(Compiled {
                entry: g.clone(),
                exe,
            });
        }
        if graphs.is_empty() {
            return Err(RunError::Input(
                "no graph of the set runs on this plugin (they need Neuron-only custom calls)"
                    .into(),
            ));
        }
        let weights = upload_weights(&client, &manifest, weights, tp)?;
        Ok(Engine {
            manifest,
            client,
            graphs,
            weights,
            tp,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn cache_len(&self) -> i64 {
        self.graphs
            .iter()
            .map(|g| g.entry.max_seq_len)
            .min()
            .unwrap_or(0)
    }

    /// The smallest context-encoding graph that holds `len` tokens.
    fn prefill_graph(&self, len: usize) -> Result<&Compiled, RunError> {
        self.graphs
            .iter()
            .filter(|g| g.entry.kind == GraphKind::ContextEncoding)
            .filter(|g| g.entry.active_tokens as usize >= len)
            .min_by_key(|g| g.entry.active_tokens)
            .ok_or_else(|| {
                let largest = self
                    .graphs
                    .iter()
                    .filter(|g| g.entry.kind == GraphKind::ContextEncoding)
                    .map(|g| g.entry.active_tokens)
                    .max()
                    .unwrap_or(0);
                RunError::Input(format!(
                    "a prompt of {len} tokens is longer than the largest context-encoding bucket ({largest})"
                ))
            })
    }

    fn decode_graph(&self) -> Result<&Compiled, RunError> {
        self.graphs
            .iter()
            .find(|g| g.entry.kind == GraphKind::TokenGeneration)
            .ok_or_else(|| RunError::Input("the set has no token-generation graph".into()))
    }

    fn zero_caches(&self, g: &Compiled) -> Result<Vec<Vec<Buffer>>, RunError> {
        let mut all = Vec::with_capacity(self.tp);
        for rank in 0..self.tp {
            let mut caches = Vec::new();
            for input in &g.entry.inputs {
                if let InputRole::KvCache { .. } = input.role {
                    let n: i64 = input.shape.iter().product();
                    let bytes = vec![0u8; n as usize * input.dtype.byte_size()];
                    caches.push(self.client.buffer_from_host(
                        &bytes,
                        element_type(input.dtype),
                        &input.shape,
                        rank,
                    )?);
                }
            }
            all.push(caches);
        }
        Ok(all)
    }

    /// Runs one graph on every rank.
    fn step(
        &self,
        g: &Compiled,
        ids: &[i32],
        positions: &[i32],
        caches: Vec<Vec<Buffer>>,
    ) -> Result<Step, RunError> {
        let s = ids.len() as i64;
        let mut per_rank = Vec::with_capacity(self.tp);
        for rank in 0..self.tp {
            let ids = self.client.buffer_from_slice(ids, &[1, s], rank)?;
            let pos = self.client.buffer_from_slice(positions, &[1, s], rank)?;
            let rank_buf = self.client.buffer_from_scalar(rank as i32, rank)?;
            per_rank.push((ids, pos, rank_buf));
        }
        let mut args = Vec::with_capacity(self.tp);
        for (rank, rank_caches) in caches.into_iter().enumerate() {
            let (ids, pos, rank_buf) = &per_rank[rank];
            let mut caches = rank_caches.into_iter();
            let mut list = Vec::with_capacity(g.entry.inputs.len());
            for input in &g.entry.inputs {
                list.push(match &input.role {
                    InputRole::InputIds => Arg::Borrow(ids),
                    InputRole::PositionIds => Arg::Borrow(pos),
                    InputRole::Weight { weight } => Arg::Borrow(&self.weights[rank][weight]),
                    InputRole::Rank => Arg::Borrow(rank_buf),
                    InputRole::KvCache { .. } => {
                        Arg::Donate(caches.next().expect("caches match the graph"))
                    }
                });
            }
            args.push(list);
        }
        let mut outputs = g.exe.execute(args)?;
        let roles: Vec<&OutputRole> = g.entry.outputs.iter().map(|o| &o.role).collect();
        let logits_at = roles
            .iter()
            .position(|r| **r == OutputRole::Logits)
            .ok_or_else(|| RunError::Input(format!("graph `{}` has no logits", g.entry.name)))?;
        // Gathered logits are the same on every rank; sharded ones are concatenated in rank
        // order, then the vocab padding is dropped.
        let vocab = self.manifest.model.vocab_size;
        let gathered = g.entry.outputs[logits_at].shape.last() == Some(&(vocab as i64));
        let ranks = if gathered { 1 } else { self.tp };
        let mut logits = Vec::new();
        for out in outputs.iter().take(ranks) {
            logits.extend(out[logits_at].to_vec::<f32>()?);
        }
        logits.truncate(vocab);
        let next_token = match roles.iter().position(|r| **r == OutputRole::NextToken) {
            Some(k) => Some(outputs[0][k].to_vec::<i32>()?[0]),
            None => None,
        };
        let first_cache = roles
            .iter()
            .position(|r| matches!(r, OutputRole::KvCache { .. }))
            .ok_or_else(|| RunError::Input(format!("graph `{}` has no caches", g.entry.name)))?;
        let caches = outputs
            .iter_mut()
            .map(|o| o.split_off(first_cache))
            .collect();
        Ok(Step {
            logits,
            next_token,
            caches,
        })
    }

    fn prefill(&self, tokens: &[i32]) -> Result<Step, RunError> {
        let g = self.prefill_graph(tokens.len())?;
        let s = g.entry.active_tokens as usize;
        if tokens.is_empty() {
            return Err(RunError::Input("the prompt is empty".into()));
        }
        // Padding goes after the prompt with position 0; the graph reads the logits at the first
        // index holding the largest position, and decode overwrites the padded cache rows.
        let mut ids = vec![0i32; s];
        let mut pos = vec![0i32; s];
        for (i, &t) in tokens.iter().enumerate() {
            ids[i] = t;
            pos[i] = i as i32;
        }
        self.step(g, &ids, &pos, self.zero_caches(g)?)
    }

    fn check_ids(&self, tokens: &[i32]) -> Result<(), RunError> {
        let vocab = self.manifest.model.vocab_size as i32;
        if let Some(t) = tokens.iter().find(|&&t| t < 0 || t >= vocab) {
            return Err(RunError::Input(format!(
                "token id {t} is outside the vocabulary [0, {vocab})"
            )));
        }
        Ok(())
    }

    /// Logits of the last prompt position.
    pub fn last_logits(&self, prompt: &[i32]) -> Result<Vec<f32>, RunError> {
        self.check_ids(prompt)?;
        Ok(self.prefill(prompt)?.logits)
    }

    /// Greedy generation of `max_new` tokens (the new tokens only). With on-device greedy
    /// sampling the graph's token is used; otherwise the host takes the argmax.
    pub fn generate(&self, prompt: &[i32], max_new: usize) -> Result<Vec<i32>, RunError> {
        self.check_ids(prompt)?;
        let cache = self.cache_len() as usize;
        if prompt.len() + max_new > cache + 1 {
            return Err(RunError::Input(format!(
                "{} prompt + {max_new} new tokens exceed the cache length {cache}",
                prompt.len()
            )));
        }
        let reencode = self.manifest.model.reencode_past;
        let tkg = self.decode_graph()?;
        let mut tokens = prompt.to_vec();
        let mut step = self.prefill(&tokens)?;
        let mut cached = tokens.len();
        let mut out = Vec::with_capacity(max_new);
        for i in 0..max_new {
            let next = step.next_token.unwrap_or_else(|| argmax(&step.logits));
            out.push(next);
            tokens.push(next);
            if i + 1 == max_new {
                break;
            }
            step = match reencode {
                // HF re-encodes the whole sequence when it first crosses the boundary.
                Some(omax) if tokens.len() > omax && cached <= omax => self.prefill(&tokens)?,
                _ => {
                    let pos = (tokens.len() - 1) as i32;
                    self.step(tkg, &[next], &[pos], step.caches)?
                }
            };
            cached = tokens.len();
        }
        Ok(out)
    }
}

/// Uploads every rank's weights, checked against the manifest's declarations.
fn upload_weights(
    client: &Client,
    manifest: &Manifest,
    source: Weights<'_>,
    tp: usize,
) -> Result<Vec<HashMap<String, Buffer>>, RunError> {
    let mut all = Vec::with_capacity(tp);
    let mismatch = |m: String| Err(RunError::WeightMismatch(m));
    match source {
        Weights::Memory(ranks) => {
            if ranks.len() != tp {
                return mismatch(format!(
                    "the manifest is for tp={tp}, the weights have {} ranks",
                    ranks.len()
                ));
            }
            for (rank, w) in ranks.iter().enumerate() {
                let mut bufs = HashMap::with_capacity(manifest.weights.len());
                for d in &manifest.weights {
                    let t = w.get(&d.name).ok_or_else(|| {
                        RunError::WeightMismatch(format!("rank {rank} has no tensor `{}`", d.name))
                    })?;
                    let shape: Vec<i64> = d.shape.iter().map(|&x| x as i64).collect();
                    if t.dims != shape || t.dtype != d.dtype {
                        return mismatch(format!(
                            "rank {rank} tensor `{}` is {}{:?}, the manifest declares {}{:?}",
                            d.name, t.dtype, t.dims, d.dtype, d.shape
                        ));
                    }
                    let b =
                        client.buffer_from_host(&t.bytes, element_type(t.dtype), &t.dims, rank)?;
                    bufs.insert(d.name.clone(), b);
                }
                all.push(bufs);
            }
        }
        Weights::Dir(dir) => {
            for rank in 0..tp {
                let path = dir.join(crate::weights::rank_file_name(rank));
                if !path.is_file() {
                    return mismatch(format!(
                        "{} is missing (the manifest is for tp={tp}; `phi3 shard --tp {tp}` writes it)",
                        path.display()
                    ));
                }
                let file = RankFile::open(&path)?;
                let mut bufs = HashMap::with_capacity(manifest.weights.len());
                for d in &manifest.weights {
                    let t = file.tensor(&d.name).ok_or_else(|| {
                        RunError::WeightMismatch(format!(
                            "{}: no tensor `{}`",
                            path.display(),
                            d.name
                        ))
                    })?;
                    if t.shape != d.shape || t.dtype != d.dtype {
                        return mismatch(format!(
                            "{}: tensor `{}` is {}{:?}, the manifest declares {}{:?}",
                            path.display(),
                            d.name,
                            t.dtype,
                            t.shape,
                            d.dtype,
                            d.shape
                        ));
                    }
                    let mut bytes = vec![0u8; t.bytes];
                    file.read_into(&d.name, &mut bytes)?;
                    let shape: Vec<i64> = d.shape.iter().map(|&x| x as i64).collect();
                    let b = client.buffer_from_host(&bytes, element_type(d.dtype), &shape, rank)?;
                    bufs.insert(d.name.clone(), b);
                }
                all.push(bufs);
            }
        }
    }
    Ok(all)
}

/// Index of the largest logit, the first among ties (as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> i32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as i32
}
