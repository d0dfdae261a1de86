//! What every decoder-only model shares: graph kinds, specs and knobs ([`spec`]); the
//! recording context with its input roles ([`recorder`]); RoPE variants ([`rope`]); GQA
//! attention, masks and cache writes ([`attention`]); the layers ([`layers`]); on-device
//! sampling ([`sampling`]); and the graph driver ([`record_causal_lm`]) that declares a causal
//! LM's inputs and caches, runs its forward and assembles the outputs.
//!
//! A model family (see `models::phi3`, `models::llama`) provides the modules, mirroring its
//! Hugging Face modeling file, and implements [`DecoderModel`] so the rest of the tool (graph
//! sets, manifests, sharding, benchmarks) can use it without knowing which family it is.

pub mod attention;
pub mod layers;
pub mod recorder;
pub mod rope;
pub mod sampling;
pub mod spec;

pub use attention::KvCache;
pub use layers::Logits;
pub use recorder::{part, BuildError, IoInfo, RecordedGraph, Recorder};
pub use spec::{
    AliasKind, CacheWrite, CpuDots, DecodeRows, DecodeScores, DotResult, Fusion, GqaDot, GraphKind,
    GraphOptions, GraphSpec, KvDtype, LinearForm, Matvec, NormImpl, PrefillTail, SamplerKernels,
    Sampling, SingleRowState, VectorOperand,
};

use crate::dsl::{DType, OpError, Tensor};
use crate::manifest::{InputRole, KvTensor, OutputRole};
use crate::parallel::{DecoderSizes, ShardPlan, ShardPlanError};

/// A decoder-only model the tool can record graphs for.
pub trait DecoderModel: Send + Sync {
    /// The embedded short name, or the path the config was read from.
    fn name(&self) -> &str;
    /// Hugging Face `model_type`.
    fn model_type(&self) -> &'static str;
    fn sizes(&self) -> DecoderSizes;
    fn num_layers(&self) -> usize;
    fn max_position_embeddings(&self) -> usize;
    /// Hugging Face `generate`'s re-encode rule for this model, if it has one: see
    /// [`crate::manifest::ModelInfo::reencode_past`].
    fn reencode_past(&self) -> Option<usize> {
        None
    }
    /// The ids that end generation, as `config.json` gives them (`generation_config.json`
    /// may say otherwise; runtimes prefer it).
    fn eos_token_ids(&self) -> Vec<u32>;
    /// Whether the checkpoint stores Q|K|V and gate|up fused (what [`Fusion::Checkpoint`]
    /// resolves to).
    fn checkpoint_fusion(&self) -> (bool, bool);
    /// The same model cut to `n` decoder layers (for quick experiments and small tests).
    fn with_layers(&self, n: usize) -> Box<dyn DecoderModel>;
    /// Records one graph for one rank of `plan`; the result is verified.
    fn record(&self, plan: &ShardPlan, spec: &GraphSpec) -> Result<RecordedGraph, BuildError>;

    /// The tensor-parallel plan of this model at `tp`.
    fn plan(&self, tp: i64) -> Result<ShardPlan, ShardPlanError> {
        ShardPlan::new(self.name(), &self.sizes(), tp)
    }
}

/// The per-call inputs every decoder layer may read.
pub struct Inputs {
    /// `s32[B, S]`.
    pub input_ids: Tensor,
    /// `s32[B, S]`.
    pub position_ids: Tensor,
    /// `s32[B]`: the cache row of each batch row.
    pub seq_ids: Tensor,
}

/// What one decoder layer reads besides its hidden state and its cache: the same for every
/// layer of a graph, except the rows the last layer of a prefill may keep.
pub struct LayerInputs<'a> {
    pub inputs: &'a Inputs,
    /// The rotary tables `(cos, sin)`.
    pub rope: (&'a Tensor, &'a Tensor),
    /// The attention mask ([`attention::attention_mask`]).
    pub mask: &'a Tensor,
    /// The last layer of a prefill under `PrefillTail::LastToken`: the rows it carries past
    /// its attention.
    pub keep: Option<&'a layers::KeptRows>,
}

impl LayerInputs<'_> {
    /// `t [B, S, ..]` as the layer carries it on: each sequence's last token alone when the
    /// layer keeps only that row, otherwise unchanged.
    pub fn kept(&self, t: &Tensor) -> Result<Tensor, OpError> {
        match self.keep {
            Some(rows) => rows.select(t),
            None => Ok(t.clone()),
        }
    }
}

/// One decoder layer (`*DecoderLayer`): the hidden state and the layer's cache in, both
/// updated out.
pub trait DecoderLayer {
    fn forward(
        &self,
        cx: &Recorder<'_>,
        hidden: &Tensor,
        cache: &KvCache,
        li: &LayerInputs<'_>,
    ) -> Result<(Tensor, KvCache), OpError>;
}

/// Runs `layers` in order under the causal attention mask (with `window`, a sliding window),
/// each under its Hugging Face scope (`layers.{l}`); the last one of a prefill may keep only
/// the rows the logits need ([`layers::KeptRows`]). Returns each sequence's last-position
/// hidden state `[B, hidden]` (before the final norm) and every layer's updated cache.
pub fn run_layers<L: DecoderLayer>(
    cx: &Recorder<'_>,
    layers: &[L],
    mut hidden: Tensor,
    caches: &[KvCache],
    inputs: &Inputs,
    rope: (&Tensor, &Tensor),
    window: Option<usize>,
) -> Result<(Tensor, Vec<KvCache>), OpError> {
    let pos = &inputs.position_ids;
    let mask = {
        let _s = cx.b.scope("mask");
        attention::attention_mask(cx, pos, window)?
    };
    let kept = layers::KeptRows::for_last_layer(cx, pos, hidden.dtype())?;
    let mut new_caches = Vec::with_capacity(layers.len());
    for (l, (layer, cache)) in layers.iter().zip(caches).enumerate() {
        let _s = cx.b.scope(format!("layers.{l}"));
        let li = LayerInputs {
            inputs,
            rope,
            mask: &mask,
            keep: kept.as_ref().filter(|_| l + 1 == layers.len()),
        };
        let (h, c) = layer.forward(cx, &hidden, cache, &li)?;
        hidden = h;
        new_caches.push(c);
    }
    let last = match kept {
        // Already each sequence's last position alone.
        Some(_) => hidden.reshape(&[cx.spec.batch, cx.plan.hidden])?,
        None => layers::last_position(cx, &hidden, pos)?,
    };
    Ok((last, new_caches))
}

/// The top module of a causal LM (`*ForCausalLM`): from token ids and positions to the logits
/// of each sequence's last position, updating the caches.
pub trait CausalLm {
    fn forward(
        &self,
        cx: &Recorder<'_>,
        inputs: &Inputs,
        caches: &[KvCache],
    ) -> Result<(Logits, Vec<KvCache>), OpError>;
}

/// Records one graph of a causal LM. Inputs, in parameter order:
/// 1. `input_ids s32[B,S]`, `position_ids s32[B,S]`, `seq_ids s32[B]`;
/// 2. with on-device sampling, `sampling_params f32[B,3]` (top_k, top_p, temperature) and
///    `sampling_uniform f32[B]`;
/// 3. the weights, as `build` declares them (each the rank's shard);
/// 4. `rank s32[]`, when on-device token selection runs over vocab-sharded logits;
/// 5. the KV caches `K_0, V_0, K_1, V_1, ...`, each `[max_batch, kv_heads_per_rank, S_max,
///    head_dim]` (without the row dim for one sequence under [`SingleRowState::Squeezed`]):
///    one state that every graph of a set shares.
///
/// Outputs: `logits f32[B, V]` (or `[B, V_pad/t]` when left sharded), then `next_token
/// s32[B]` with on-device token selection, then the updated caches, each aliased to its input.
pub fn record_causal_lm<M: CausalLm>(
    model: &str,
    layers: usize,
    plan: &ShardPlan,
    spec: &GraphSpec,
    build: impl FnOnce(&mut Recorder<'_>) -> Result<M, BuildError>,
) -> Result<RecordedGraph, BuildError> {
    let bad = |reason: String| {
        Err(BuildError::Spec {
            model: model.to_string(),
            graph: spec.name(),
            reason,
        })
    };
    if spec.batch < 1 || spec.seq_len < 1 || spec.bucket < 1 {
        return bad("batch, bucket and sequence length must be at least 1".into());
    }
    if spec.bucket > spec.max_seq_len {
        return bad(format!(
            "bucket {} is larger than the max sequence length {}",
            spec.bucket, spec.max_seq_len
        ));
    }
    if spec.kind == GraphKind::ContextEncoding && spec.seq_len != spec.bucket {
        return bad("a context-encoding graph's active tokens are its bucket".into());
    }
    if spec.batch > spec.cache_batch {
        return bad(format!(
            "batch {} is larger than the cache's {} rows (max batch size)",
            spec.batch, spec.cache_batch
        ));
    }
    if spec.kind == GraphKind::TokenGeneration
        && spec.options.decode_rows == DecodeRows::InPlace
        && spec.batch != spec.cache_batch
    {
        return bad(format!(
            "in-place decode rows need the batch ({}) to be the cache's rows ({})",
            spec.batch, spec.cache_batch
        ));
    }
    if !spec.state_has_rows() && spec.options.decode_cache_write != CacheWrite::DynamicUpdateSlice {
        return bad(format!(
            "a state without its row dim (single-row state {:?}) is written with \
             dynamic-update-slice only, not {:?}",
            spec.options.single_row_state, spec.options.decode_cache_write
        ));
    }
    let mut cx = Recorder::new(spec, plan);
    // A decoder layer records about 150-160 nodes (Phi-3-mini 151, Phi-4-mini 160 in the
    // default set); the head and the sampler a few hundred. A hint only: the graph grows
    // past it.
    cx.b.reserve(192 * layers + 512);
    let (bsz, s) = (spec.batch, spec.seq_len);
    let inputs = Inputs {
        input_ids: cx.input("input_ids", DType::S32, &[bsz, s], InputRole::InputIds)?,
        position_ids: cx.input(
            "position_ids",
            DType::S32,
            &[bsz, s],
            InputRole::PositionIds,
        )?,
        seq_ids: cx.input("seq_ids", DType::S32, &[bsz], InputRole::SeqIds)?,
    };
    let sampler_inputs = if spec.options.sampling == Sampling::OnDevice {
        Some((
            cx.input(
                "sampling_params",
                DType::F32,
                &[bsz, 3],
                InputRole::SamplingParams,
            )?,
            cx.input(
                "sampling_uniform",
                DType::F32,
                &[bsz],
                InputRole::SamplingUniform,
            )?,
        ))
    } else {
        None
    };
    let lm = build(&mut cx)?;
    let sharded_sampler = spec.options.sampling != Sampling::None && !spec.options.gather_logits;
    let rank = if sharded_sampler {
        Some(cx.input("rank", DType::S32, &[], InputRole::Rank)?)
    } else {
        None
    };
    let kv_dims = spec.kv_state_dims(plan.kv_heads_per_rank, plan.head_dim);
    let kv_dtype = spec.options.kv_dtype.resolve(spec.dtype);
    let mut caches = Vec::with_capacity(layers);
    for layer in 0..layers {
        let mut kv = Vec::with_capacity(2);
        for tensor in [KvTensor::Key, KvTensor::Value] {
            let name = format!("past_key_values.{layer}.{}", tensor.name());
            let role = InputRole::KvCache { layer, tensor };
            kv.push(cx.input(&name, kv_dtype, &kv_dims, role)?);
        }
        caches.push(KvCache {
            value: kv.pop().expect("two tensors"),
            key: kv.pop().expect("two tensors"),
        });
    }

    let (logits, new_caches) = lm.forward(&cx, &inputs, &caches)?;

    let mut outputs: Vec<(Tensor, OutputRole, String)> = Vec::new();
    outputs.push((logits.tensor().clone(), OutputRole::Logits, "logits".into()));
    let next = match (spec.options.sampling, &sampler_inputs) {
        (Sampling::None, _) => None,
        (Sampling::Greedy, _) => Some(sampling::greedy(&cx, &logits, rank.as_ref())?),
        (Sampling::OnDevice, Some((params, uniform))) => Some(sampling::sample(
            &cx,
            &logits,
            params,
            uniform,
            rank.as_ref(),
        )?),
        (Sampling::OnDevice, None) => unreachable!("sampler inputs exist with OnDevice"),
    };
    if let Some(next) = next {
        outputs.push((next, OutputRole::NextToken, "next_token".into()));
    }
    let mut aliases = Vec::with_capacity(2 * layers);
    for (layer, (new, old)) in new_caches.into_iter().zip(&caches).enumerate() {
        for (tensor, t, input) in [
            (KvTensor::Key, new.key, &old.key),
            (KvTensor::Value, new.value, &old.value),
        ] {
            let name = format!("past_key_values.{layer}.{}", tensor.name());
            aliases.push((outputs.len(), input.clone()));
            outputs.push((t, OutputRole::KvCache { layer, tensor }, name));
        }
    }
    cx.finish(outputs, aliases)
}
