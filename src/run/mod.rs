//! Runs a graph set through a PJRT plugin, one device per tensor-parallel rank, from what the
//! manifest says and nothing else: the graphs and their buckets, every input's role, the
//! shared KV state, the sampler inputs, the weights by name. It knows no model family.
//!
//! [`Engine`] holds the compiled graphs (compiled on first use, optionally through a cache of
//! serialized executables) and every rank's weights; a [`KvState`] is one set of cache
//! buffers of `max_batch_size` rows. [`Engine::prefill`] and [`Engine::decode`] run one call
//! each, choosing the bucket by the manifest's rule and padding the batch with rows that write
//! nothing; [`scheduler`] serves many requests over the cache rows (continuous batching).

pub mod kernels;
pub mod scheduler;
pub mod text;

pub use scheduler::{serve, Completion, FinishReason, Request, Sampling};

use crate::files::{sha256_hex, write_atomic};
use crate::ir::DType;
use crate::manifest::{DecodeRows, GraphEntry, GraphKind, InputRole, Manifest, OutputRole};
use crate::weights::{RankFile, RankWeights, WeightsError};
use pjrt_runtime::{
    Arg, Buffer, Client, CompileOptions, ElementType, HostBytes, LoadedExecutable, Plugin,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
                let sha = sha256_hex(&bytes);
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

/// A progress callback: (bytes loaded so far, total).
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// How an [`Engine`] loads.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// A folder of serialized executables, keyed by the proto's hash, the plugin, its API
    /// version and the device count: a later run of the same set skips the XLA compile.
    pub compile_cache: Option<PathBuf>,
    /// Compile every CPU-runnable graph at load rather than on first use.
    pub eager: bool,
    /// Called with (bytes loaded so far, total) while the weights upload.
    pub progress: Option<Progress>,
}

/// What loading and compiling cost, for `--timings`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub load_s: f64,
    pub compile_s: f64,
    pub compiled: usize,
    pub cache_hits: usize,
    pub weight_bytes: u64,
    pub prefill_calls: usize,
    pub decode_calls: usize,
    /// Sequences summed over decode calls (so `decode_rows / decode_calls` is the mean batch).
    pub decode_rows: usize,
    /// The token-generation buckets decode calls used.
    pub decode_buckets: std::collections::BTreeSet<i64>,
    /// Seconds spent in prefill and decode calls.
    pub prefill_s: f64,
    pub decode_s: f64,
}

struct Graph {
    entry: GraphEntry,
    exe: Mutex<Option<Arc<LoadedExecutable>>>,
}

/// A loaded graph set: every rank's weights on its device, the graphs compiled on demand.
pub struct Engine {
    manifest: Manifest,
    client: Client,
    protos: Protos,
    graphs: Vec<Graph>,
    /// `[rank]`: weight name → buffer.
    weights: Vec<HashMap<String, Buffer>>,
    tp: usize,
    cache: Option<PathBuf>,
    stats: Mutex<Stats>,
}

/// One set of KV-cache buffers (every rank's), `max_batch_size` rows: the state every graph
/// of the set reads and writes. It is donated to each call and replaced by its outputs; after
/// a failed call it is gone and [`Engine::new_state`] makes a fresh one.
pub struct KvState {
    caches: Option<Vec<Vec<Buffer>>>,
}

/// Per-row sampler settings for a graph with the on-device sampler.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerRow {
    pub top_k: f32,
    pub top_p: f32,
    pub temperature: f32,
    /// One uniform in [0, 1).
    pub uniform: f32,
}

impl SamplerRow {
    /// Exactly greedy.
    pub const GREEDY: SamplerRow = SamplerRow {
        top_k: 1.0,
        top_p: 1.0,
        temperature: 1.0,
        uniform: 0.0,
    };
}

/// One sequence of a prefill call.
#[derive(Clone, Debug)]
pub struct PrefillRow<'a> {
    pub seq_id: usize,
    pub tokens: &'a [i32],
    pub sampler: SamplerRow,
}

/// One sequence of a decode call: feed `token` at `position`.
#[derive(Clone, Copy, Debug)]
pub struct DecodeRow {
    pub seq_id: usize,
    pub token: i32,
    pub position: usize,
    pub sampler: SamplerRow,
}

/// One row's result: the logits of its last position (full vocab) and, with an on-device
/// sampler, its token.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowOut {
    pub logits: Vec<f32>,
    pub next_token: Option<i32>,
}

impl RowOut {
    /// The graph's token, or the argmax of the logits.
    pub fn token(&self) -> i32 {
        self.next_token.unwrap_or_else(|| argmax(&self.logits))
    }
}

/// One call's host-side inputs, `batch` rows.
struct Call {
    ids: Vec<i32>,
    pos: Vec<i32>,
    seq_ids: Vec<i32>,
    params: Vec<f32>,
    uniform: Vec<f32>,
}

impl Engine {
    /// Uploads every rank's weights (checked against the manifest's declarations); compiles the
    /// graphs as they are first used (or now, with `eager`).
    pub fn load(
        plugin: &Plugin,
        manifest: Manifest,
        protos: Protos,
        weights: Weights<'_>,
        options: LoadOptions,
    ) -> Result<Engine, RunError> {
        let start = Instant::now();
        let tp = manifest.tp_degree as usize;
        let runnable: Vec<&GraphEntry> = manifest.graphs.iter().filter(|g| g.runs_on_cpu).collect();
        if runnable.is_empty() && !manifest.graphs.is_empty() {
            let names: Vec<&str> = manifest.graphs.iter().map(|g| g.name.as_str()).collect();
            return Err(RunError::Input(format!(
                "the set's graphs ({}) need Neuron-only custom calls (runs_on_cpu: false); build \
                 it with the cpu preset, or without --rmsnorm custom-call, to run it here",
                names.join(", ")
            )));
        }
        for g in &runnable {
            check_kv_inputs(&manifest, g)?;
        }
        let kernels: std::collections::BTreeSet<String> = runnable
            .iter()
            .flat_map(|g| g.runtime_kernels.iter().cloned())
            .collect();
        if !kernels.is_empty() {
            let kernels: Vec<String> = kernels.into_iter().collect();
            kernels::register(plugin, &kernels).map_err(|e| {
                RunError::Input(format!(
                    "the set's graphs call the runtime's own kernels ({}), and {e}",
                    kernels.join(", ")
                ))
            })?;
        }
        let client = Client::with_devices(plugin, tp)?;
        let graphs = manifest
            .graphs
            .iter()
            .filter(|g| g.runs_on_cpu)
            .map(|g| Graph {
                entry: g.clone(),
                exe: Mutex::new(None),
            })
            .collect();
        let weights = upload_weights(&client, &manifest, weights, tp, options.progress.as_deref())?;
        let weight_bytes = weights
            .iter()
            .flat_map(|w| w.values())
            .map(|b| (b.element_count() * b.element_type().byte_size()) as u64)
            .sum();
        let engine = Engine {
            manifest,
            client,
            protos,
            graphs,
            weights,
            tp,
            cache: options.compile_cache,
            stats: Mutex::new(Stats {
                weight_bytes,
                ..Stats::default()
            }),
        };
        engine
            .stats
            .lock()
            .expect("no panics under the lock")
            .load_s = start.elapsed().as_secs_f64();
        if options.eager {
            for g in &engine.graphs {
                engine.executable(g)?;
            }
        }
        Ok(engine)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().expect("no panics under the lock").clone()
    }

    pub fn max_batch_size(&self) -> usize {
        self.manifest.kv_state.max_batch_size as usize
    }

    pub fn max_seq_len(&self) -> usize {
        self.manifest.kv_state.max_seq_len as usize
    }

    /// Whether the graphs sample on the device (`sampling_params` inputs).
    pub fn samples_on_device(&self) -> bool {
        self.graphs.iter().all(|g| {
            g.entry
                .inputs
                .iter()
                .any(|i| i.role == InputRole::SamplingParams)
        })
    }

    /// The largest prompt a context-encoding bucket holds.
    pub fn max_prompt(&self) -> usize {
        self.graphs
            .iter()
            .filter(|g| g.entry.kind == GraphKind::ContextEncoding)
            .map(|g| g.entry.bucket as usize)
            .max()
            .unwrap_or(0)
    }

    /// What a graph is compiled with: one replica per rank, and the XLA options its manifest
    /// entry lists.
    fn compile_options(&self, g: &GraphEntry) -> CompileOptions {
        CompileOptions::replicas(self.tp as i64).with_xla_options(&g.xla_options)
    }

    fn cache_key(&self, g: &GraphEntry) -> String {
        let plugin = self.client.plugin();
        let (major, minor) = plugin.api_version();
        // The compile options as the plugin receives them (replicas and XLA option overrides).
        let options = prost::Message::encode_to_vec(&self.compile_options(g).to_proto());
        sha256_hex(
            format!(
                "{}\n{}\n{major}.{minor}\n{}\n{}\n{}",
                g.proto_sha256,
                plugin.path().display(),
                self.tp,
                self.client.platform_name(),
                sha256_hex(&options)
            )
            .as_bytes(),
        )
    }

    /// The graph's executable: compiled on first use, through the cache when there is one.
    fn executable(&self, g: &Graph) -> Result<Arc<LoadedExecutable>, RunError> {
        let mut slot = g.exe.lock().expect("no panics under the lock");
        if let Some(exe) = slot.as_ref() {
            return Ok(Arc::clone(exe));
        }
        let start = Instant::now();
        let proto = self.protos.load(&g.entry)?;
        let cached = self
            .cache
            .as_ref()
            .map(|dir| dir.join(format!("{}.pjrt", self.cache_key(&g.entry))));
        let mut hit = false;
        let exe = match cached.as_ref().and_then(|p| std::fs::read(p).ok()) {
            Some(bytes) => match self.client.load_serialized(&bytes, &proto) {
                Ok(exe) => {
                    hit = true;
                    exe
                }
                // A stale or foreign entry: compile and overwrite it.
                Err(_) => self.compile(&g.entry, &proto)?,
            },
            None => self.compile(&g.entry, &proto)?,
        };
        if let (Some(path), false) = (&cached, hit) {
            // Best effort: a cache that cannot be written only costs the next run a compile.
            if let Ok(bytes) = exe.serialize() {
                let _ = write_atomic(path, &bytes);
            }
        }
        let mut stats = self.stats.lock().expect("no panics under the lock");
        stats.compile_s += start.elapsed().as_secs_f64();
        stats.compiled += 1;
        stats.cache_hits += hit as usize;
        let exe = Arc::new(exe);
        *slot = Some(Arc::clone(&exe));
        Ok(exe)
    }

    fn compile(&self, g: &GraphEntry, proto: &[u8]) -> Result<LoadedExecutable, RunError> {
        Ok(self.client.compile_bytes(proto, &self.compile_options(g))?)
    }

    fn graph(&self, kind: GraphKind, bucket: i64) -> Result<&Graph, RunError> {
        self.graphs
            .iter()
            .find(|g| g.entry.kind == kind && g.entry.bucket == bucket)
            .ok_or_else(|| {
                RunError::Input(format!(
                    "the set has no runnable {kind:?} graph of bucket {bucket}"
                ))
            })
    }

    fn buckets(&self, kind: GraphKind) -> Vec<i64> {
        let mut b: Vec<i64> = self
            .graphs
            .iter()
            .filter(|g| g.entry.kind == kind)
            .map(|g| g.entry.bucket)
            .collect();
        b.sort();
        b
    }

    /// A zero-initialised KV state: every rank's caches, `max_batch_size` rows. (Copied in
    /// from one zero buffer: state is donated to every call, which owned host memory cannot be.)
    pub fn new_state(&self) -> Result<KvState, RunError> {
        let kv = &self.manifest.kv_state;
        let n: i64 = kv.shape.iter().product();
        let zeros = vec![0u8; n as usize * kv.dtype.byte_size()];
        let mut all = Vec::with_capacity(self.tp);
        for rank in 0..self.tp {
            let mut caches = Vec::with_capacity(2 * kv.layers);
            for _ in 0..2 * kv.layers {
                caches.push(self.client.buffer_from_host(
                    &zeros,
                    element_type(kv.dtype),
                    &kv.shape,
                    rank,
                )?);
            }
            all.push(caches);
        }
        Ok(KvState { caches: Some(all) })
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

    fn check_row(&self, seq_id: usize) -> Result<(), RunError> {
        if seq_id >= self.max_batch_size() {
            return Err(RunError::Input(format!(
                "cache row {seq_id} is out of range: the set has {} rows (max_batch_size)",
                self.max_batch_size()
            )));
        }
        Ok(())
    }

    /// Encodes each row's tokens into its cache row (positions `0..len`), in the smallest
    /// context-encoding bucket that holds the longest of them; at most `ctx_batch_size` rows.
    pub fn prefill(
        &self,
        state: &mut KvState,
        rows: &[PrefillRow<'_>],
    ) -> Result<Vec<RowOut>, RunError> {
        let longest = rows.iter().map(|r| r.tokens.len()).max().unwrap_or(0);
        if rows.is_empty() || rows.iter().any(|r| r.tokens.is_empty()) {
            return Err(RunError::Input("a prompt is empty".into()));
        }
        for r in rows {
            self.check_ids(r.tokens)?;
            self.check_row(r.seq_id)?;
        }
        let buckets = self.buckets(GraphKind::ContextEncoding);
        let bucket = buckets
            .iter()
            .copied()
            .find(|&b| b as usize >= longest)
            .ok_or_else(|| {
                RunError::Input(format!(
                    "a prompt of {longest} tokens is longer than the largest context-encoding bucket ({})",
                    buckets.last().copied().unwrap_or(0)
                ))
            })?;
        let g = self.graph(GraphKind::ContextEncoding, bucket)?;
        let batch = g.entry.batch as usize;
        if rows.len() > batch {
            return Err(RunError::Input(format!(
                "{} prompts in one prefill call, the set's ctx_batch_size is {batch}",
                rows.len()
            )));
        }
        let s = bucket as usize;
        let invalid = self.max_batch_size() as i32;
        let mut call = Call::padded(batch, s, invalid);
        for (b, r) in rows.iter().enumerate() {
            // The prompt fills positions 0..L-1; padding follows with position 0.
            call.ids[b * s..b * s + r.tokens.len()].copy_from_slice(r.tokens);
            for (i, p) in call.pos[b * s..b * s + r.tokens.len()]
                .iter_mut()
                .enumerate()
            {
                *p = i as i32;
            }
            call.seq_ids[b] = r.seq_id as i32;
            call.set_sampler(b, &r.sampler);
        }
        self.executable(g)?; // compile time is not prefill time
        let start = Instant::now();
        let mut out = self.run(g, call, state)?;
        out.truncate(rows.len());
        let mut stats = self.stats.lock().expect("no panics under the lock");
        stats.prefill_calls += 1;
        stats.prefill_s += start.elapsed().as_secs_f64();
        Ok(out)
    }

    /// One decode step: each row feeds its token at its position into its cache row, in the
    /// smallest token-generation bucket past the furthest position; at most `tkg_batch_size`
    /// rows.
    pub fn decode(&self, state: &mut KvState, rows: &[DecodeRow]) -> Result<Vec<RowOut>, RunError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: Vec<i32> = rows.iter().map(|r| r.token).collect();
        self.check_ids(&tokens)?;
        let mut seen = std::collections::BTreeSet::new();
        for r in rows {
            self.check_row(r.seq_id)?;
            if !seen.insert(r.seq_id) {
                return Err(RunError::Input(format!(
                    "sequence row {} appears twice in one decode step",
                    r.seq_id
                )));
            }
        }
        let furthest = rows.iter().map(|r| r.position).max().unwrap_or(0);
        let buckets = self.buckets(GraphKind::TokenGeneration);
        let bucket = buckets
            .iter()
            .copied()
            .find(|&b| b as usize > furthest)
            .ok_or_else(|| {
                RunError::Input(format!(
                    "position {furthest} is past the largest token-generation bucket ({})",
                    buckets.last().copied().unwrap_or(0)
                ))
            })?;
        let g = self.graph(GraphKind::TokenGeneration, bucket)?;
        let batch = g.entry.batch as usize;
        if rows.len() > batch {
            return Err(RunError::Input(format!(
                "{} sequences in one decode step, the set's tkg_batch_size is {batch}",
                rows.len()
            )));
        }
        let invalid = self.max_batch_size() as i32;
        let mut call = Call::padded(batch, 1, invalid);
        // In-place rows: each sequence sits at its state row (idle rows stay invalid).
        let in_place = g.entry.decode_rows == DecodeRows::InPlace;
        let slot = |i: usize, r: &DecodeRow| if in_place { r.seq_id } else { i };
        for (i, r) in rows.iter().enumerate() {
            let b = slot(i, r);
            call.ids[b] = r.token;
            call.pos[b] = r.position as i32;
            call.seq_ids[b] = r.seq_id as i32;
            call.set_sampler(b, &r.sampler);
        }
        self.executable(g)?;
        let start = Instant::now();
        let mut all = self.run(g, call, state)?;
        let out: Vec<RowOut> = if in_place {
            rows.iter()
                .map(|r| std::mem::take(&mut all[r.seq_id]))
                .collect()
        } else {
            all.truncate(rows.len());
            all
        };
        let mut stats = self.stats.lock().expect("no panics under the lock");
        stats.decode_calls += 1;
        stats.decode_rows += rows.len();
        stats.decode_buckets.insert(bucket);
        stats.decode_s += start.elapsed().as_secs_f64();
        Ok(out)
    }

    /// Runs one graph on every rank; returns one [`RowOut`] per batch row.
    fn run(&self, g: &Graph, call: Call, state: &mut KvState) -> Result<Vec<RowOut>, RunError> {
        let exe = self.executable(g)?;
        let entry = &g.entry;
        let caches = state.caches.take().ok_or_else(|| {
            RunError::Input("the KV state was lost in a failed call; make a new one".into())
        })?;
        let (batch, s) = (entry.batch, entry.active_tokens);
        let mut per_rank = Vec::with_capacity(self.tp);
        for rank in 0..self.tp {
            let c = &self.client;
            per_rank.push((
                c.buffer_from_slice(&call.ids, &[batch, s], rank)?,
                c.buffer_from_slice(&call.pos, &[batch, s], rank)?,
                c.buffer_from_slice(&call.seq_ids, &[batch], rank)?,
                c.buffer_from_slice(&call.params, &[batch, 3], rank)?,
                c.buffer_from_slice(&call.uniform, &[batch], rank)?,
                c.buffer_from_scalar(rank as i32, rank)?,
            ));
        }
        let mut args = Vec::with_capacity(self.tp);
        for (rank, rank_caches) in caches.into_iter().enumerate() {
            let (ids, pos, seq, params, uniform, rank_buf) = &per_rank[rank];
            let mut caches = rank_caches.into_iter();
            let mut list = Vec::with_capacity(entry.inputs.len());
            for input in &entry.inputs {
                list.push(match &input.role {
                    InputRole::InputIds => Arg::Borrow(ids),
                    InputRole::PositionIds => Arg::Borrow(pos),
                    InputRole::SeqIds => Arg::Borrow(seq),
                    InputRole::SamplingParams => Arg::Borrow(params),
                    InputRole::SamplingUniform => Arg::Borrow(uniform),
                    InputRole::Weight { weight } => Arg::Borrow(&self.weights[rank][weight]),
                    InputRole::Rank => Arg::Borrow(rank_buf),
                    InputRole::KvCache { .. } => {
                        Arg::Donate(caches.next().expect("checked at load: caches match"))
                    }
                });
            }
            args.push(list);
        }
        let mut outputs = exe.execute(args)?;
        let roles: Vec<&OutputRole> = entry.outputs.iter().map(|o| &o.role).collect();
        let logits_at = roles
            .iter()
            .position(|r| **r == OutputRole::Logits)
            .ok_or_else(|| RunError::Input(format!("graph `{}` has no logits", entry.name)))?;
        // Gathered logits are the same on every rank; sharded ones are each rank's slice of
        // the padded vocab, in rank order.
        let vocab = self.manifest.model.vocab_size;
        let width = *entry.outputs[logits_at]
            .shape
            .last()
            .expect("logits are 2-D") as usize;
        let ranks = if width == vocab { 1 } else { self.tp };
        let slices: Vec<Vec<f32>> = outputs
            .iter()
            .take(ranks)
            .map(|o| o[logits_at].to_vec::<f32>())
            .collect::<Result<_, _>>()?;
        let next: Option<Vec<i32>> = match roles.iter().position(|r| **r == OutputRole::NextToken) {
            Some(k) => Some(outputs[0][k].to_vec::<i32>()?),
            None => None,
        };
        let first_cache = roles
            .iter()
            .position(|r| matches!(r, OutputRole::KvCache { .. }))
            .ok_or_else(|| RunError::Input(format!("graph `{}` has no caches", entry.name)))?;
        state.caches = Some(
            outputs
                .iter_mut()
                .map(|o| o.split_off(first_cache))
                .collect(),
        );
        Ok((0..batch as usize)
            .map(|b| {
                let mut logits = Vec::with_capacity(vocab);
                for slice in &slices {
                    logits.extend_from_slice(&slice[b * width..(b + 1) * width]);
                }
                logits.truncate(vocab);
                RowOut {
                    logits,
                    next_token: next.as_ref().map(|n| n[b]),
                }
            })
            .collect())
    }

    /// Logits of the last prompt position (one sequence, in a fresh state).
    pub fn last_logits(&self, prompt: &[i32]) -> Result<Vec<f32>, RunError> {
        let mut state = self.new_state()?;
        let row = PrefillRow {
            seq_id: 0,
            tokens: prompt,
            sampler: SamplerRow::GREEDY,
        };
        Ok(self.prefill(&mut state, &[row])?.remove(0).logits)
    }

    /// Greedy generation of `max_new` tokens for one prompt (the new tokens only), through the
    /// same scheduler as a batch of requests.
    pub fn generate(&self, prompt: &[i32], max_new: usize) -> Result<Vec<i32>, RunError> {
        let request = Request {
            prompt: prompt.to_vec(),
            max_new_tokens: max_new,
            sampling: Sampling::Greedy,
            stop: Vec::new(),
        };
        let mut done = serve(self, vec![request], &mut |_, _| {})?;
        match done.remove(0) {
            Ok(c) => Ok(c.tokens),
            Err(e) => Err(RunError::Input(e)),
        }
    }
}

impl Call {
    fn padded(batch: usize, s: usize, invalid_row: i32) -> Call {
        let g = SamplerRow::GREEDY;
        Call {
            ids: vec![0; batch * s],
            pos: vec![0; batch * s],
            seq_ids: vec![invalid_row; batch],
            params: [g.top_k, g.top_p, g.temperature].repeat(batch),
            uniform: vec![0.0; batch],
        }
    }

    fn set_sampler(&mut self, b: usize, r: &SamplerRow) {
        self.params[3 * b..3 * b + 3].copy_from_slice(&[r.top_k, r.top_p, r.temperature]);
        self.uniform[b] = r.uniform;
    }
}

/// Every KV input of `g` has the set's state shape, in layer-major (key, value) order.
fn check_kv_inputs(m: &Manifest, g: &GraphEntry) -> Result<(), RunError> {
    let kv: Vec<_> = g
        .inputs
        .iter()
        .filter(|i| matches!(i.role, InputRole::KvCache { .. }))
        .collect();
    if kv.len() != 2 * m.kv_state.layers {
        return Err(RunError::Input(format!(
            "graph `{}` has {} cache inputs, the KV state {} layers × 2",
            g.name,
            kv.len(),
            m.kv_state.layers
        )));
    }
    for (n, i) in kv.iter().enumerate() {
        let want = InputRole::KvCache {
            layer: n / 2,
            tensor: if n % 2 == 0 {
                crate::manifest::KvTensor::Key
            } else {
                crate::manifest::KvTensor::Value
            },
        };
        if i.role != want || i.shape != m.kv_state.shape || i.dtype != m.kv_state.dtype {
            return Err(RunError::Input(format!(
                "graph `{}` cache input `{}` does not match the set's KV state {}{:?}",
                g.name, i.name, m.kv_state.dtype, m.kv_state.shape
            )));
        }
    }
    Ok(())
}

/// Uploads every rank's weights, checked against the manifest's declarations. From rank
/// files, each tensor is read in bounded chunks straight into the memory that becomes its
/// device buffer (on the CPU plugin, without another copy).
fn upload_weights(
    client: &Client,
    manifest: &Manifest,
    source: Weights<'_>,
    tp: usize,
    progress: Option<&(dyn Fn(u64, u64) + Send + Sync)>,
) -> Result<Vec<HashMap<String, Buffer>>, RunError> {
    let mismatch = |m: String| Err(RunError::WeightMismatch(m));
    let total: u64 = manifest
        .weights
        .iter()
        .map(|d| d.byte_size() as u64)
        .sum::<u64>()
        * tp as u64;
    let mut done = 0u64;
    let mut all = Vec::with_capacity(tp);
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
            let ranks = (0..)
                .take_while(|&r| dir.join(crate::weights::rank_file_name(r)).is_file())
                .count();
            if ranks != tp {
                return mismatch(format!(
                    "{} holds rank files for {ranks} rank(s) (tp0.safetensors ...), the manifest is for tp={tp} (`phi3 shard --graphs` writes the matching ones)",
                    dir.display()
                ));
            }
            for rank in 0..tp {
                let path = dir.join(crate::weights::rank_file_name(rank));
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
                    let mut bytes = HostBytes::zeroed(t.bytes);
                    file.read_into(&d.name, bytes.as_mut_slice())?;
                    let shape: Vec<i64> = d.shape.iter().map(|&x| x as i64).collect();
                    let b = client.buffer_from_host_bytes(
                        bytes,
                        element_type(d.dtype),
                        &shape,
                        rank,
                    )?;
                    bufs.insert(d.name.clone(), b);
                    done += t.bytes as u64;
                    if let Some(p) = progress {
                        p(done, total);
                    }
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
