//! What to record: the graph kinds, one graph's spec, and the experiment knobs.

use crate::ir::DType;
pub use crate::manifest::GraphKind;
pub use crate::parallel::LinearForm;

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

/// Whether a projection the checkpoint may store fused (Q|K|V, gate|up) is one weight in the
/// graph or several.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Fusion {
    /// As the checkpoint stores it: fused for Phi-3, separate for Llama.
    #[default]
    Checkpoint,
    /// One weight (cut from the fused tensor, or stacked from the separate ones).
    Fused,
    /// One weight per part.
    Split,
}

impl Fusion {
    /// Resolves [`Fusion::Checkpoint`] against how the checkpoint stores the projection.
    pub fn is_fused(self, checkpoint_fused: bool) -> bool {
        match self {
            Fusion::Checkpoint => checkpoint_fused,
            Fusion::Fused => true,
            Fusion::Split => false,
        }
    }
}

/// Experiment knobs. Each changes the graph, never the numerics (bar the Neuron-only kernel).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GraphOptions {
    /// Q/K/V as one weight per layer, or three.
    pub qkv: Fusion,
    /// gate/up as one weight per layer, or two.
    pub gate_up: Fusion,
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

    /// False when the graph needs a kernel only Neuron has.
    pub fn runs_on_cpu(&self) -> bool {
        self.rms_norm == NormImpl::Primitives
    }
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            qkv: Fusion::Checkpoint,
            gate_up: Fusion::Checkpoint,
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

    pub fn with_options(self, options: GraphOptions) -> Self {
        GraphSpec { options, ..self }
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
