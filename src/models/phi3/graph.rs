//! Records the Phi-3 context-encoding (prefill) and token-generation (decode) graphs for one
//! rank of a tensor-parallel group. Composite layers are plain functions over primitives.
//!
//! Inputs, in this order (the manifest documents them per graph):
//! 1. `input_ids s32[B,S]`, `position_ids s32[B,S]`;
//! 2. the weights: `model.embed_tokens.weight`, then per layer `input_layernorm`, `qkv_proj`,
//!    `o_proj`, `post_attention_layernorm`, `gate_up_proj`, `down_proj`, then `model.norm`
//!    and `lm_head` (each the rank's shard, see [`ShardPlan`]);
//! 3. `rank s32[]`, only for on-device greedy sampling over vocab-sharded logits;
//! 4. the KV caches, `K_0, V_0, K_1, V_1, ...`, each `[B, kv_heads_per_rank, S_max, head_dim]`.
//!
//! Outputs: `logits f32[B, V]` (or `[B, V_pad/t]` when left sharded), then `next_token s32[B]`
//! when greedy sampling is on, then the updated caches, each aliased to its input.

use super::config::{Phi3Config, RopeScaling};
use super::plan::{FusedPart, ShardPlan, ShardRule};
use crate::dsl::nn::{apply_rotary, rms_norm, silu, softmax_f32};
use crate::dsl::{
    ArrayType, DType, DotDims, Graph, GraphBuilder, OpError, ScatterCombiner, ScatterDims, Tensor,
};
use crate::ir::VerifyErrors;
pub use crate::parallel::LinearForm;
use crate::parallel::{
    column_parallel_linear, parallel_embedding, row_parallel_linear, TensorParallel,
};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// How decode writes the new K/V rows into the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheWrite {
    /// `scatter` at `position_ids` (what NxD emits).
    Scatter,
    /// One in-place `dynamic-update-slice` per sequence, at `[b, 0, position_ids[b,0], 0]`.
    /// Unlike scatter, an out-of-range position is clamped to the last row rather than
    /// dropped. XLA:CPU updates the cache in place this way, where its scatter lowering
    /// transposes every cache twice per step at batch > 1 (docs/decode-performance.md).
    DynamicUpdateSlice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormImpl {
    /// RMSNorm from primitives (runs everywhere).
    Primitives,
    /// Neuron's `AwsNeuronRmsNorm` custom call (Neuron only: the CPU plugin cannot run it).
    NeuronCustomCall,
}

/// Experiment knobs. Each changes the graph, never the numerics (bar the Neuron-only kernel).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GraphOptions {
    /// One fused Q|K|V weight per layer (HF's layout) rather than three.
    pub fused_qkv: bool,
    /// One fused gate|up weight per layer (HF's layout) rather than two.
    pub fused_gate_up: bool,
    pub decode_cache_write: CacheWrite,
    /// Emit `next_token`, an on-device greedy argmax (a variadic reduce: not Neuron-safe).
    pub on_device_greedy: bool,
    /// All-gather the logits to the full vocab; otherwise each rank returns its vocab shard.
    pub gather_logits: bool,
    pub rms_norm: NormImpl,
    /// Operand order of the projection matmuls.
    pub linear: LinearForm,
}

impl GraphOptions {
    /// What runs fastest on the PJRT CPU plugin: per-sequence dynamic-update-slice cache
    /// writes and weight-first matmuls (both measured in docs/decode-performance.md). The
    /// defaults stay NxD's forms for Neuron until neuronx-cc has compared them.
    pub fn cpu() -> Self {
        GraphOptions {
            decode_cache_write: CacheWrite::DynamicUpdateSlice,
            linear: LinearForm::WeightFirst,
            ..GraphOptions::default()
        }
    }
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            fused_qkv: true,
            fused_gate_up: true,
            decode_cache_write: CacheWrite::Scatter,
            on_device_greedy: false,
            gather_logits: true,
            rms_norm: NormImpl::Primitives,
            linear: LinearForm::ActivationFirst,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GraphSpec {
    pub kind: GraphKind,
    pub batch: i64,
    /// Active tokens per sequence: the bucket length for prefill, 1 for decode.
    pub seq_len: i64,
    /// KV-cache length.
    pub max_seq_len: i64,
    pub dtype: DType,
    pub options: GraphOptions,
}

impl GraphSpec {
    pub fn context_encoding(batch: i64, bucket: i64, max_seq_len: i64, dtype: DType) -> Self {
        GraphSpec {
            kind: GraphKind::ContextEncoding,
            batch,
            seq_len: bucket,
            max_seq_len,
            dtype,
            options: GraphOptions::default(),
        }
    }

    pub fn token_generation(batch: i64, max_seq_len: i64, dtype: DType) -> Self {
        GraphSpec {
            kind: GraphKind::TokenGeneration,
            batch,
            seq_len: 1,
            max_seq_len,
            dtype,
            options: GraphOptions::default(),
        }
    }

    /// E.g. `cte_b1_s128` (prefill bucket 128) or `tkg_b1_s4096` (decode, cache 4096).
    pub fn name(&self) -> String {
        let s = match self.kind {
            GraphKind::ContextEncoding => self.seq_len,
            GraphKind::TokenGeneration => self.max_seq_len,
        };
        format!("{}_b{}_s{}", self.kind.short(), self.batch, s)
    }
}

/// What each entry parameter is, for the manifest and the runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputRole {
    InputIds,
    PositionIds,
    /// A weight shard; `key` is the Hugging Face checkpoint tensor it is cut from, `shard` how.
    Weight {
        key: String,
        shard: ShardRule,
    },
    Rank,
    KvCache {
        layer: usize,
        value: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputRole {
    Logits,
    NextToken,
    KvCache { layer: usize, value: bool },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoInfo<R> {
    pub name: String,
    pub ty: ArrayType,
    pub role: R,
}

pub struct RecordedGraph {
    pub spec: GraphSpec,
    pub graph: Graph,
    pub inputs: Vec<IoInfo<InputRole>>,
    pub outputs: Vec<IoInfo<OutputRole>>,
}

#[derive(Debug)]
pub enum BuildError {
    Spec(String),
    Op(OpError),
    Verify(VerifyErrors),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Spec(m) => write!(f, "{m}"),
            BuildError::Op(e) => write!(f, "{e}"),
            BuildError::Verify(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BuildError {}

impl From<OpError> for BuildError {
    fn from(e: OpError) -> Self {
        BuildError::Op(e)
    }
}

/// Inverse frequencies as transformers computes them, in f32:
/// `1 / (factor_i * theta ** (2i / rot))`.
pub fn inverse_frequencies(cfg: &Phi3Config, factors: Option<&[f64]>) -> Vec<f64> {
    let rot = cfg.rotary_dim();
    (0..rot / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / rot as f32;
            let base = (cfg.rope_theta as f32).powf(exponent);
            let scaled = match factors {
                Some(f) => f[i] as f32 * base,
                None => base,
            };
            (1.0f32 / scaled) as f64
        })
        .collect()
}

/// Q|K|V as one fused weight (HF's layout) or three (NxD's unfused layout).
enum QkvWeights {
    Fused(Tensor),
    Split { q: Tensor, k: Tensor, v: Tensor },
}

/// gate|up as one fused weight (HF's layout) or two.
enum GateUpWeights {
    Fused(Tensor),
    Split { gate: Tensor, up: Tensor },
}

/// The lm_head's output: the full vocab on every rank, or each rank's padded vocab shard.
enum Logits {
    Gathered(Tensor),
    Sharded(Tensor),
}

struct LayerWeights {
    input_norm: Tensor,
    qkv: QkvWeights,
    o: Tensor,
    post_norm: Tensor,
    gate_up: GateUpWeights,
    down: Tensor,
}

struct Recorder<'a> {
    b: GraphBuilder,
    cfg: &'a Phi3Config,
    plan: &'a ShardPlan,
    spec: &'a GraphSpec,
    tp: TensorParallel,
    inputs: Vec<IoInfo<InputRole>>,
}

impl Recorder<'_> {
    #[track_caller]
    fn input(
        &mut self,
        name: &str,
        dtype: DType,
        dims: &[i64],
        role: InputRole,
    ) -> Result<Tensor, OpError> {
        let t = self.b.parameter(name, dtype, dims)?;
        self.inputs.push(IoInfo {
            name: name.to_string(),
            ty: t.ty().clone(),
            role,
        });
        Ok(t)
    }

    #[track_caller]
    fn weight(&mut self, key: &str, dims: &[i64], shard: ShardRule) -> Result<Tensor, OpError> {
        self.weight_from(key, key, dims, shard)
    }

    /// A weight parameter `name` cut from checkpoint tensor `key` (they differ for the
    /// unfused Q/K/V and gate/up weights and a tied lm_head).
    #[track_caller]
    fn weight_from(
        &mut self,
        name: &str,
        key: &str,
        dims: &[i64],
        shard: ShardRule,
    ) -> Result<Tensor, OpError> {
        let role = InputRole::Weight {
            key: key.to_string(),
            shard,
        };
        self.input(name, self.spec.dtype, dims, role)
    }

    fn norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor, OpError> {
        match self.spec.options.rms_norm {
            NormImpl::Primitives => rms_norm(x, w, self.cfg.rms_norm_eps),
            NormImpl::NeuronCustomCall => {
                // The call as torch-neuronx's `RmsNorm` op emits it and NxDI's CustomRMSNorm
                // uses it: operands (x, weight, eps as an f32 scalar constant), result of x's
                // type, the normalised dim as decimal text in backend_config; NxDI feeds it f32
                // and casts the result back. UNVERIFIED here: no neuronx-cc to compile it.
                let eps = self.b.scalar(DType::F32, self.cfg.rms_norm_eps)?;
                let xf = x.convert(DType::F32)?;
                let dim = (x.rank() - 1).to_string().into_bytes();
                self.b
                    .custom_call("AwsNeuronRmsNorm", &[&xf, w, &eps], xf.ty().clone(), dim)?
                    .convert(x.dtype())
            }
        }
    }

    /// cos/sin tables `[B, 1, S, rot]` from `position_ids`, in f32 then cast. With LongRoPE the
    /// short or long factors are chosen in the graph from `max(position_ids) + 1`, as
    /// transformers 5 does, instead of being frozen when the graph is built.
    fn rope_tables(&self, pos: &Tensor) -> Result<(Tensor, Tensor), OpError> {
        let _s = self.b.scope("rotary_emb");
        let (bsz, s) = (self.spec.batch, self.spec.seq_len);
        let rot = self.cfg.rotary_dim() as i64;
        let half = rot / 2;
        let (inv, att) = match &self.cfg.rope {
            RopeScaling::Default => (
                self.b
                    .constant_f64(DType::F32, &[half], &inverse_frequencies(self.cfg, None))?,
                1.0,
            ),
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                attention_factor,
            } => {
                let short = self.b.constant_f64(
                    DType::F32,
                    &[half],
                    &inverse_frequencies(self.cfg, Some(short_factor)),
                )?;
                let long = self.b.constant_f64(
                    DType::F32,
                    &[half],
                    &inverse_frequencies(self.cfg, Some(long_factor)),
                )?;
                let seq_len = pos.reduce_max(&[0, 1])?.add_scalar(1.0)?;
                let omax = self
                    .b
                    .scalar(DType::S32, self.cfg.original_max_position_embeddings as f64)?;
                (seq_len.gt(&omax)?.select(&long, &short)?, *attention_factor)
            }
        };
        let freqs = pos.convert(DType::F32)?.reshape(&[bsz, s, 1])?.mul(&inv)?;
        let emb = Tensor::concat(&[&freqs, &freqs], 2)?;
        let (mut cos, mut sin) = (emb.cos()?, emb.sin()?);
        if att != 1.0 {
            cos = cos.mul_scalar(att)?;
            sin = sin.mul_scalar(att)?;
        }
        let shape = [bsz, 1, s, rot];
        Ok((
            cos.convert(self.spec.dtype)?.reshape(&shape)?,
            sin.convert(self.spec.dtype)?.reshape(&shape)?,
        ))
    }

    /// `allowed[q, k]` for causal attention with an optional sliding window, as a pred
    /// broadcastable to the scores `[B, kv_r, g, S, T]`.
    fn attention_mask(&self, pos: &Tensor) -> Result<Tensor, OpError> {
        let _s = self.b.scope("mask");
        let (bsz, s, smax) = (self.spec.batch, self.spec.seq_len, self.spec.max_seq_len);
        let window = self
            .cfg
            .sliding_window
            .map(|w| w as i64)
            .filter(|&w| w < smax);
        let (q, k, dims) = match self.spec.kind {
            // Prefill attends within the prompt: positions are 0..S, padding comes last.
            GraphKind::ContextEncoding => {
                let q = self.b.iota(DType::S32, &[s, s], 0)?;
                let k = self.b.iota(DType::S32, &[s, s], 1)?;
                (q, k, vec![1, 1, 1, s, s])
            }
            // Decode attends over the whole (already updated) cache, keyed by position.
            GraphKind::TokenGeneration => {
                let q = pos.reshape(&[bsz, s, 1])?.broadcast_to(&[bsz, s, smax])?;
                let k = self.b.iota(DType::S32, &[bsz, s, smax], 2)?;
                (q, k, vec![bsz, 1, 1, s, smax])
            }
        };
        let mut allowed = k.le(&q)?;
        if let Some(w) = window {
            let lower = q.sub(&q.scalar_like(w as f64)?)?;
            allowed = allowed.select(&k.gt(&lower)?, &allowed)?;
        }
        allowed.reshape(&dims)
    }

    /// GQA attention that never materialises repeated KV heads: queries are viewed as
    /// `[B, kv_r, g, S, hd]` and batched against `[B, kv_r, T, hd]` keys.
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        allowed: &Tensor,
    ) -> Result<Tensor, OpError> {
        let (bsz, s) = (self.spec.batch, self.spec.seq_len);
        let (q_r, kv_r, g, hd) = (
            self.plan.q_heads_per_rank,
            self.plan.kv_heads_per_rank,
            self.plan.local_group(),
            self.plan.head_dim,
        );
        let q5 = q.reshape(&[bsz, kv_r, g, s, hd])?;
        let batch = DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![0, 1],
            lhs_contracting: vec![4],
            rhs_contracting: vec![3],
        };
        let scores = q5.dot_general(k, batch)?.convert(DType::F32)?;
        let scores = scores.mul_scalar((hd as f64).powf(-0.5))?;
        let masked = allowed.select(&scores, &scores.scalar_like(f32::MIN as f64)?)?;
        let probs = softmax_f32(&masked)?.convert(self.spec.dtype)?;
        let out = probs.dot_general(
            v,
            DotDims {
                lhs_batch: vec![0, 1],
                rhs_batch: vec![0, 1],
                lhs_contracting: vec![4],
                rhs_contracting: vec![2],
            },
        )?;
        out.reshape(&[bsz, q_r, s, hd])?
            .transpose(&[0, 2, 1, 3])?
            .reshape(&[bsz, s, q_r * hd])
    }

    /// Writes this step's K or V rows `[B, kv_r, S, hd]` into the cache.
    fn write_cache(&self, cache: &Tensor, new: &Tensor, pos: &Tensor) -> Result<Tensor, OpError> {
        let zero = self.b.scalar(DType::S32, 0.0)?;
        match (self.spec.kind, self.spec.options.decode_cache_write) {
            (GraphKind::ContextEncoding, _) => {
                cache.dynamic_update_slice(new, &[&zero, &zero, &zero, &zero])
            }
            (GraphKind::TokenGeneration, CacheWrite::DynamicUpdateSlice) => {
                let mut updated = cache.clone();
                for row in 0..self.spec.batch {
                    let b = self.b.scalar(DType::S32, row as f64)?;
                    let p = pos.slice(&[row, 0], &[row + 1, 1], &[1, 1])?.reshape(&[])?;
                    let rows = new.slice_dim(0, row, row + 1)?;
                    updated = updated.dynamic_update_slice(&rows, &[&b, &zero, &p, &zero])?;
                }
                Ok(updated)
            }
            (GraphKind::TokenGeneration, CacheWrite::Scatter) => {
                let (bsz, s) = (self.spec.batch, self.spec.seq_len);
                let rows = self.b.iota(DType::S32, &[bsz, s, 1], 0)?;
                let at = pos.reshape(&[bsz, s, 1])?;
                let indices = Tensor::concat(&[&rows, &at], 2)?;
                let updates = new.transpose(&[0, 2, 1, 3])?;
                cache.scatter(
                    &indices,
                    &updates,
                    ScatterDims {
                        update_window_dims: vec![2, 3],
                        inserted_window_dims: vec![0, 2],
                        scatter_dims_to_operand_dims: vec![0, 2],
                        index_vector_dim: 2,
                    },
                    ScatterCombiner::Assign,
                )
            }
        }
    }

    /// Hidden state of the last real token per sequence: the first index holding the largest
    /// position id (prefill pads after the prompt), selected with a one-hot contraction.
    fn last_position(&self, h: &Tensor, pos: &Tensor) -> Result<Tensor, OpError> {
        let (bsz, s, hidden) = (self.spec.batch, self.spec.seq_len, self.plan.hidden);
        if s == 1 {
            return h.reshape(&[bsz, hidden]);
        }
        let _s = self.b.scope("last_position");
        let idx = self.b.iota(DType::S32, &[bsz, s], 1)?;
        let max = pos.reduce_max(&[1])?.reshape(&[bsz, 1])?;
        let candidates = pos.eq(&max)?.select(&idx, &idx.scalar_like(s as f64)?)?;
        let last = candidates.reduce_min(&[1])?.reshape(&[bsz, 1])?;
        let onehot = idx.eq(&last)?.convert(h.dtype())?;
        onehot.dot_general(
            h,
            DotDims {
                lhs_batch: vec![0],
                rhs_batch: vec![0],
                lhs_contracting: vec![1],
                rhs_contracting: vec![1],
            },
        )
    }

    /// Greedy next token from the full-vocab logits, or from this rank's vocab shard.
    fn greedy(&self, logits: &Logits, rank: Option<&Tensor>) -> Result<Tensor, OpError> {
        let _s = self.b.scope("sampler");
        let local_logits = match logits {
            Logits::Gathered(full) => return full.argmax(-1, DType::S32),
            Logits::Sharded(local) => local,
        };
        // Vocab-sharded: each rank masks its padding, takes its best (value, index), and an
        // all-gather of the candidates lets every rank pick the same global winner.
        let (bsz, vr, t) = (self.spec.batch, self.plan.vocab_per_rank, self.plan.tp);
        let rank = rank.expect("rank input exists for sharded greedy");
        let offset = rank.mul(&rank.scalar_like(vr as f64)?)?;
        let col = self.b.iota(DType::S32, &[bsz, vr], 1)?.add(&offset)?;
        let real = col.lt(&col.scalar_like(self.plan.vocab as f64)?)?;
        let logits = real.select(local_logits, &local_logits.scalar_like(f32::MIN as f64)?)?;
        let best = logits.reduce_max(&[1])?.reshape(&[bsz, 1])?;
        let index = logits
            .argmax(1, DType::S32)?
            .add(&offset)?
            .reshape(&[bsz, 1])?;
        let groups = self.tp.groups();
        let (all_best, all_index) = if self.tp.is_parallel() {
            (best.all_gather(1, &groups)?, index.all_gather(1, &groups)?)
        } else {
            (best, index)
        };
        let winner = all_best.argmax(1, DType::S32)?.reshape(&[bsz, 1])?;
        let pick = self.b.iota(DType::S32, &[bsz, t], 1)?.eq(&winner)?;
        pick.select(&all_index, &all_index.scalar_like(0.0)?)?
            .sum(&[1])
    }
}

/// Records one graph. The result is verified; lower it with [`crate::hlo::lower`].
pub fn record(
    cfg: &Phi3Config,
    plan: &ShardPlan,
    spec: &GraphSpec,
) -> Result<RecordedGraph, BuildError> {
    let bad = |m: String| {
        Err(BuildError::Spec(format!(
            "{}: {}: {m}",
            cfg.name,
            spec.name()
        )))
    };
    if spec.batch < 1 || spec.seq_len < 1 {
        return bad("batch and sequence length must be at least 1".into());
    }
    if spec.seq_len > spec.max_seq_len {
        return bad(format!(
            "bucket {} is larger than the max sequence length {}",
            spec.seq_len, spec.max_seq_len
        ));
    }
    let mut r = Recorder {
        b: GraphBuilder::new(spec.name()),
        cfg,
        plan,
        spec,
        tp: TensorParallel::new(plan.tp).with_linear(spec.options.linear),
        inputs: Vec::new(),
    };
    let (bsz, s, smax) = (spec.batch, spec.seq_len, spec.max_seq_len);
    let (h, hd) = (plan.hidden, plan.head_dim);
    let (q_r, kv_r) = (plan.q_heads_per_rank, plan.kv_heads_per_rank);
    let layers = cfg.num_hidden_layers;
    let b = r.b.clone();
    let _model = b.scope("model");

    let ids = r.input("input_ids", DType::S32, &[bsz, s], InputRole::InputIds)?;
    let pos = r.input(
        "position_ids",
        DType::S32,
        &[bsz, s],
        InputRole::PositionIds,
    )?;
    use ShardRule::*;
    let embed = r.weight(
        "model.embed_tokens.weight",
        &[plan.vocab, plan.hidden_per_rank],
        Split { dim: 1, pad_to: h },
    )?;
    let mut weights = Vec::with_capacity(layers);
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        let input_norm = r.weight(&format!("{p}.input_layernorm.weight"), &[h], Replicated)?;
        let qkv_key = format!("{p}.self_attn.qkv_proj.weight");
        let qkv = if spec.options.fused_qkv {
            let dims = [plan.qkv_rows_per_rank(), h];
            QkvWeights::Fused(r.weight(&qkv_key, &dims, QkvHeads { part: None })?)
        } else {
            let mut part = |name: &str, heads: i64, part: FusedPart| {
                let name = format!("{p}.self_attn.{name}.weight");
                let rule = QkvHeads { part: Some(part) };
                r.weight_from(&name, &qkv_key, &[heads * hd, h], rule)
            };
            QkvWeights::Split {
                q: part("q_proj", q_r, FusedPart::Q)?,
                k: part("k_proj", kv_r, FusedPart::K)?,
                v: part("v_proj", kv_r, FusedPart::V)?,
            }
        };
        let o_name = format!("{p}.self_attn.o_proj.weight");
        let o = r.weight(&o_name, &[h, q_r * hd], QueryHeadColumns)?;
        let post_norm = r.weight(
            &format!("{p}.post_attention_layernorm.weight"),
            &[h],
            Replicated,
        )?;
        let ir = plan.intermediate_per_rank;
        let pad_to = plan.intermediate_padded;
        let gu_key = format!("{p}.mlp.gate_up_proj.weight");
        let gate_up = if spec.options.fused_gate_up {
            GateUpWeights::Fused(r.weight(&gu_key, &[2 * ir, h], GateUp { part: None, pad_to })?)
        } else {
            let mut part = |name: &str, part: FusedPart| {
                let name = format!("{p}.mlp.{name}.weight");
                let rule = GateUp {
                    part: Some(part),
                    pad_to,
                };
                r.weight_from(&name, &gu_key, &[ir, h], rule)
            };
            GateUpWeights::Split {
                gate: part("gate_proj", FusedPart::Gate)?,
                up: part("up_proj", FusedPart::Up)?,
            }
        };
        let down_name = format!("{p}.mlp.down_proj.weight");
        let down = r.weight(&down_name, &[h, ir], Split { dim: 1, pad_to })?;
        weights.push(LayerWeights {
            input_norm,
            qkv,
            o,
            post_norm,
            gate_up,
            down,
        });
    }
    let final_norm = r.weight("model.norm.weight", &[h], Replicated)?;
    let lm_key = if cfg.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    let lm_head = r.weight_from(
        "lm_head.weight",
        lm_key,
        &[plan.vocab_per_rank, h],
        Split {
            dim: 0,
            pad_to: plan.vocab_padded,
        },
    )?;
    let sharded_greedy = spec.options.on_device_greedy && !spec.options.gather_logits;
    let rank = if sharded_greedy {
        Some(r.input("rank", DType::S32, &[], InputRole::Rank)?)
    } else {
        None
    };
    let mut caches = Vec::with_capacity(2 * layers);
    for l in 0..layers {
        for (value, kind) in [(false, "key"), (true, "value")] {
            caches.push(r.input(
                &format!("past_key_values.{l}.{kind}"),
                spec.dtype,
                &[bsz, kv_r, smax, hd],
                InputRole::KvCache { layer: l, value },
            )?);
        }
    }

    let mut hidden = {
        let _s = b.scope("embed_tokens");
        parallel_embedding(&ids, &embed, &r.tp)?
    };
    let (cos, sin) = r.rope_tables(&pos)?;
    let allowed = r.attention_mask(&pos)?;
    let mut new_caches = Vec::with_capacity(2 * layers);
    for (l, w) in weights.iter().enumerate() {
        let _layer = b.scope(format!("layers.{l}"));
        let attn_out = {
            let _s = b.scope("self_attn");
            let x = {
                let _n = b.scope("input_layernorm");
                r.norm(&hidden, &w.input_norm)?
            };
            // [B, S, n·hd] → [B, n, S, hd]
            let heads = |t: &Tensor, n: i64| -> Result<Tensor, OpError> {
                t.reshape(&[bsz, s, n, hd])?.transpose(&[0, 2, 1, 3])
            };
            let (q, k, v) = match &w.qkv {
                QkvWeights::Fused(wqkv) => {
                    let qkv = {
                        let _p = b.scope("qkv_proj");
                        column_parallel_linear(&x, wqkv, false, &r.tp)?
                    };
                    let part = |start: i64, n: i64| qkv.slice_dim(2, start * hd, (start + n) * hd);
                    (
                        heads(&part(0, q_r)?, q_r)?,
                        heads(&part(q_r, kv_r)?, kv_r)?,
                        heads(&part(q_r + kv_r, kv_r)?, kv_r)?,
                    )
                }
                QkvWeights::Split { q, k, v } => {
                    let proj = |name: &str, w: &Tensor, n: i64| -> Result<Tensor, OpError> {
                        let _p = b.scope(name);
                        heads(&column_parallel_linear(&x, w, false, &r.tp)?, n)
                    };
                    (
                        proj("q_proj", q, q_r)?,
                        proj("k_proj", k, kv_r)?,
                        proj("v_proj", v, kv_r)?,
                    )
                }
            };
            let q = apply_rotary(&q, &cos, &sin)?;
            let k = apply_rotary(&k, &cos, &sin)?;
            let (k_cache, v_cache) = (&caches[2 * l], &caches[2 * l + 1]);
            let new_k = r.write_cache(k_cache, &k, &pos)?;
            let new_v = r.write_cache(v_cache, &v, &pos)?;
            let ctx = match spec.kind {
                GraphKind::ContextEncoding => r.attention(&q, &k, &v, &allowed)?,
                GraphKind::TokenGeneration => r.attention(&q, &new_k, &new_v, &allowed)?,
            };
            new_caches.push(new_k);
            new_caches.push(new_v);
            let _p = b.scope("o_proj");
            row_parallel_linear(&ctx, &w.o, &r.tp)?
        };
        hidden = hidden.add(&attn_out)?;
        let mlp_out = {
            let _s = b.scope("mlp");
            let x = {
                let _n = b.scope("post_attention_layernorm");
                r.norm(&hidden, &w.post_norm)?
            };
            let ir = plan.intermediate_per_rank;
            let (gate, up) = match &w.gate_up {
                GateUpWeights::Fused(wgu) => {
                    let gu = {
                        let _p = b.scope("gate_up_proj");
                        column_parallel_linear(&x, wgu, false, &r.tp)?
                    };
                    (gu.slice_dim(2, 0, ir)?, gu.slice_dim(2, ir, 2 * ir)?)
                }
                GateUpWeights::Split { gate, up } => {
                    let proj = |name: &str, w: &Tensor| -> Result<Tensor, OpError> {
                        let _p = b.scope(name);
                        column_parallel_linear(&x, w, false, &r.tp)
                    };
                    (proj("gate_proj", gate)?, proj("up_proj", up)?)
                }
            };
            let act = up.mul(&silu(&gate)?)?;
            let _p = b.scope("down_proj");
            row_parallel_linear(&act, &w.down, &r.tp)?
        };
        hidden = hidden.add(&mlp_out)?;
    }

    let last = r.last_position(&hidden, &pos)?;
    let normed = {
        let _n = b.scope("norm");
        r.norm(&last, &final_norm)?
    };
    // lm_head is a ColumnParallelLinear: gathered (NxD without on-device sampling) and cut
    // back to the real vocab, or left as each rank's padded vocab shard.
    let logits = {
        let _s = b.scope("lm_head");
        let gather = spec.options.gather_logits;
        let y = column_parallel_linear(&normed, &lm_head, gather, &r.tp)?.convert(DType::F32)?;
        if gather {
            Logits::Gathered(y.slice_dim(1, 0, plan.vocab)?)
        } else {
            Logits::Sharded(y)
        }
    };
    let mut outputs: Vec<(Tensor, OutputRole, String)> = Vec::new();
    let logits_out = match &logits {
        Logits::Gathered(t) | Logits::Sharded(t) => t.clone(),
    };
    outputs.push((logits_out, OutputRole::Logits, "logits".into()));
    if spec.options.on_device_greedy {
        let next = r.greedy(&logits, rank.as_ref())?;
        outputs.push((next, OutputRole::NextToken, "next_token".into()));
    }
    for (i, c) in new_caches.into_iter().enumerate() {
        let (layer, value) = (i / 2, i % 2 == 1);
        let name = format!(
            "past_key_values.{layer}.{}",
            if value { "value" } else { "key" }
        );
        b.alias_output(outputs.len(), &caches[i])?;
        outputs.push((c, OutputRole::KvCache { layer, value }, name));
    }
    drop(_model);
    let refs: Vec<&Tensor> = outputs.iter().map(|(t, _, _)| t).collect();
    let graph = b.finish(&refs).map_err(BuildError::Verify)?;
    let outputs = outputs
        .into_iter()
        .map(|(t, role, name)| IoInfo {
            name,
            ty: t.ty().clone(),
            role,
        })
        .collect();
    Ok(RecordedGraph {
        spec: spec.clone(),
        graph,
        inputs: r.inputs,
        outputs,
    })
}
