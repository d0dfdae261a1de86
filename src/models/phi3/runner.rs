//! Runs Phi-3 graphs on a PJRT plugin, one device per tensor-parallel rank. This is what the
//! `phi3` binary and the numeric tests against Hugging Face use. Batch 1, greedy decoding.
//!
//! Generation follows HF `generate` exactly, including its one quirk for Phi-3: once the
//! sequence reaches `original_max_position_embeddings + 1` tokens while the cache holds at
//! most that many, HF drops the cache and re-encodes the whole sequence (with LongRoPE's long
//! factors from then on). The runner re-runs context encoding at that point too.

use super::config::Phi3Config;
use super::graph::{
    record, BuildError, GraphOptions, GraphSpec, InputRole, OutputRole, RecordedGraph,
};
use super::plan::ShardPlan;
use super::weights::{shard_all_ranks, Checkpoint, RankWeights, WeightsError};
use crate::dsl::DType;
use crate::hlo::{lower, LowerOptions};
use pjrt_runtime::{
    Arg, Buffer, Client, ClientOptions, CompileOptions, ElementType, LoadedExecutable, Plugin,
};
use std::fmt;

#[derive(Debug)]
pub enum RunError {
    Build(BuildError),
    Runtime(pjrt_runtime::Error),
    Weights(WeightsError),
    Input(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Build(e) => write!(f, "{e}"),
            RunError::Runtime(e) => write!(f, "runtime: {e}"),
            RunError::Weights(e) => write!(f, "{e}"),
            RunError::Input(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<pjrt_runtime::Error> for RunError {
    fn from(e: pjrt_runtime::Error) -> Self {
        RunError::Runtime(e)
    }
}

impl From<WeightsError> for RunError {
    fn from(e: WeightsError) -> Self {
        RunError::Weights(e)
    }
}

impl From<BuildError> for RunError {
    fn from(e: BuildError) -> Self {
        RunError::Build(e)
    }
}

/// The runtime's element type of a DSL dtype, through the shared HLO `PrimitiveType` code
/// (the runtime keeps the separate PJRT buffer-type table).
pub fn element_type(d: DType) -> ElementType {
    ElementType::from_primitive_type(d.primitive_type())
        .expect("the runtime supports every DSL dtype")
}

struct Compiled {
    graph: RecordedGraph,
    exe: LoadedExecutable,
}

/// What one execution returns: the full-vocab logits of the last position, the on-device
/// greedy token when the graph has one, and every rank's updated caches.
struct Step {
    logits: Vec<f32>,
    next_token: Option<i32>,
    caches: Vec<Vec<Buffer>>,
}

pub struct Runner {
    cfg: Phi3Config,
    plan: ShardPlan,
    dtype: DType,
    max_seq_len: i64,
    options: GraphOptions,
    client: Client,
    cte: Compiled,
    tkg: Compiled,
    /// `[rank][weight]`, in the graph's weight order.
    weights: Vec<Vec<Buffer>>,
}

impl Runner {
    /// Loads a Hugging Face checkpoint folder (`config.json` plus safetensors), shards it for
    /// `tp` ranks and builds a runner whose cache holds `max_seq_len` tokens.
    pub fn from_checkpoint(
        plugin: &Plugin,
        model_dir: &std::path::Path,
        tp: i64,
        dtype: DType,
        max_seq_len: i64,
        options: GraphOptions,
    ) -> Result<Runner, RunError> {
        let cfg = Phi3Config::from_file(&model_dir.join("config.json"))
            .map_err(|e| RunError::Input(e.to_string()))?;
        let plan = ShardPlan::new(&cfg, tp).map_err(|e| RunError::Input(e.to_string()))?;
        let ckpt = Checkpoint::open(model_dir)?;
        let shards = shard_all_ranks(&ckpt, &cfg, &plan, dtype)?;
        Runner::new(plugin, &cfg, tp, dtype, max_seq_len, &shards, options)
    }

    /// Builds and compiles the prefill graph (bucket = `max_seq_len`) and the decode graph for
    /// `tp` CPU devices with the given experiment `options`, and uploads each rank's weight
    /// shards (`shards[rank]`, fused as the sharder writes them).
    pub fn new(
        plugin: &Plugin,
        cfg: &Phi3Config,
        tp: i64,
        dtype: DType,
        max_seq_len: i64,
        shards: &[RankWeights],
        options: GraphOptions,
    ) -> Result<Runner, RunError> {
        let plan = ShardPlan::new(cfg, tp).map_err(|e| RunError::Input(e.to_string()))?;
        if shards.len() != tp as usize {
            return Err(RunError::Input(format!(
                "expected weight shards for {tp} ranks, got {}",
                shards.len()
            )));
        }
        let client = Client::new(
            plugin,
            &ClientOptions {
                cpu_device_count: Some(tp),
            },
        )?;
        let compile = |mut spec: GraphSpec| -> Result<Compiled, RunError> {
            spec.options = options.clone();
            let mut graph = record(cfg, &plan, &spec)?;
            crate::ir::passes::optimize(&mut graph.graph);
            let module = lower(&graph.graph, &LowerOptions::default())
                .map_err(|e| RunError::Build(BuildError::Verify(e)))?;
            let exe = client.compile(&module, &CompileOptions::replicas(tp))?;
            Ok(Compiled { graph, exe })
        };
        let cte = compile(GraphSpec::context_encoding(
            1,
            max_seq_len,
            max_seq_len,
            dtype,
        ))?;
        let tkg = compile(GraphSpec::token_generation(1, max_seq_len, dtype))?;

        let mut weights = Vec::with_capacity(tp as usize);
        for (rank, shard) in shards.iter().enumerate() {
            let shard = shard.unfused(&plan, !options.fused_qkv, !options.fused_gate_up);
            let mut bufs = Vec::new();
            for t in shard.for_graph_inputs(&cte.graph.inputs)? {
                bufs.push(client.buffer_from_host(
                    &t.bytes,
                    element_type(t.dtype),
                    &t.dims,
                    rank,
                )?);
            }
            weights.push(bufs);
        }
        Ok(Runner {
            cfg: cfg.clone(),
            plan,
            dtype,
            max_seq_len,
            options,
            client,
            cte,
            tkg,
            weights,
        })
    }

    fn zero_caches(&self) -> Result<Vec<Vec<Buffer>>, RunError> {
        let mut all = Vec::new();
        for rank in 0..self.plan.tp as usize {
            let mut caches = Vec::new();
            for input in &self.cte.graph.inputs {
                if let InputRole::KvCache { .. } = input.role {
                    let bytes = vec![0u8; input.ty.byte_size() as usize];
                    caches.push(self.client.buffer_from_host(
                        &bytes,
                        element_type(self.dtype),
                        &input.ty.dims,
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
        which: &Compiled,
        ids: &[i32],
        positions: &[i32],
        caches: Vec<Vec<Buffer>>,
    ) -> Result<Step, RunError> {
        let s = ids.len() as i64;
        let tp = self.plan.tp as usize;
        let mut per_rank_inputs = Vec::with_capacity(tp);
        for rank in 0..tp {
            let ids = self.client.buffer_from_slice(ids, &[1, s], rank)?;
            let pos = self.client.buffer_from_slice(positions, &[1, s], rank)?;
            let rank_buf = self.client.buffer_from_scalar(rank as i32, rank)?;
            per_rank_inputs.push((ids, pos, rank_buf));
        }
        let mut args = Vec::with_capacity(tp);
        for (rank, rank_caches) in caches.into_iter().enumerate() {
            let (ids, pos, rank_buf) = &per_rank_inputs[rank];
            let mut weights = self.weights[rank].iter();
            let mut caches = rank_caches.into_iter();
            let mut list = Vec::new();
            for input in &which.graph.inputs {
                list.push(match input.role {
                    InputRole::InputIds => Arg::Borrow(ids),
                    InputRole::PositionIds => Arg::Borrow(pos),
                    InputRole::Weight { .. } => {
                        Arg::Borrow(weights.next().expect("weights match the graph"))
                    }
                    InputRole::Rank => Arg::Borrow(rank_buf),
                    InputRole::KvCache { .. } => {
                        Arg::Donate(caches.next().expect("caches match the graph"))
                    }
                });
            }
            args.push(list);
        }
        let mut outputs = which.exe.execute(args)?;
        let roles: Vec<&OutputRole> = which.graph.outputs.iter().map(|o| &o.role).collect();
        let vocab = self.cfg.vocab_size;
        // Gathered logits are the same on every rank; sharded ones are concatenated in rank
        // order, then the vocab padding is dropped.
        let mut logits = Vec::new();
        let ranks = if self.options.gather_logits { 1 } else { tp };
        for out in outputs.iter().take(ranks) {
            logits.extend(out[0].to_vec::<f32>()?);
        }
        logits.truncate(vocab);
        let next_token = match roles.iter().position(|r| **r == OutputRole::NextToken) {
            Some(k) => Some(outputs[0][k].to_vec::<i32>()?[0]),
            None => None,
        };
        let first_cache = roles
            .iter()
            .position(|r| matches!(r, OutputRole::KvCache { .. }))
            .expect("graphs output their caches");
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
        let s = self.max_seq_len as usize;
        if tokens.is_empty() || tokens.len() > s {
            return Err(RunError::Input(format!(
                "prompt of {} tokens does not fit in {s}",
                tokens.len()
            )));
        }
        // Padding goes after the prompt with position 0; the graph reads the logits at the first
        // index holding the largest position, and decode overwrites the padded cache rows.
        let mut ids = vec![0i32; s];
        let mut pos = vec![0i32; s];
        for (i, &t) in tokens.iter().enumerate() {
            ids[i] = t;
            pos[i] = i as i32;
        }
        self.step(&self.cte, &ids, &pos, self.zero_caches()?)
    }

    fn check_ids(&self, tokens: &[i32]) -> Result<(), RunError> {
        let vocab = self.cfg.vocab_size as i32;
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
        if prompt.len() + max_new > self.max_seq_len as usize + 1 {
            return Err(RunError::Input(format!(
                "{} prompt + {max_new} new tokens exceed the cache length {}",
                prompt.len(),
                self.max_seq_len
            )));
        }
        let omax = self.cfg.original_max_position_embeddings;
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
            step = if tokens.len() > omax && cached <= omax {
                // HF's Phi-3 re-encodes the whole sequence when it first crosses the boundary.
                self.prefill(&tokens)?
            } else {
                let pos = (tokens.len() - 1) as i32;
                self.step(&self.tkg, &[next], &[pos], step.caches)?
            };
            cached = tokens.len();
        }
        Ok(out)
    }
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
