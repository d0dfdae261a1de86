//! What to record: the graph kinds, one graph's spec, and the experiment knobs.

pub use crate::ir::AliasKind;
use crate::ir::DType;
pub use crate::manifest::{DecodeRows, GraphKind};
pub use crate::parallel::LinearForm;

/// What the graph returns besides the logits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Sampling {
    /// Logits only; the host picks the token.
    #[default]
    None,
    /// `next_token s32[B]`: the argmax (ties to the lower id), over vocab-sharded logits too.
    Greedy,
    /// `next_token s32[B]` drawn from per-row `sampling_params f32[B,3]` (top_k, top_p,
    /// temperature) with one host-drawn `sampling_uniform f32[B]` per row; see
    /// [`super::sampling::sample`] for the exact rule.
    OnDevice,
}

/// How the sampler's argmax and top-k are computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SamplerKernels {
    /// From primitives: a variadic-reduce argmax, a stable sort for top-k. Runs everywhere.
    #[default]
    Primitives,
    /// Neuron's `AwsNeuronArgMax` / `AwsNeuronTopK` custom calls (Neuron only).
    Neuron,
}

/// How decode writes the new K/V rows into the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheWrite {
    /// One windowed `scatter` of `[kv, hd]` rows at `(seq_ids[b], position_ids[b])`
    /// (`update_window_dims={2,3}`). Compact, but no AWS writer emits this exact form.
    Scatter,
    /// The scatter NxD's KV-cache manager gets from torch-xla for `torch.scatter(dim=2)`: one
    /// index per element (`(seq_ids[b], head, position_ids[b], d)`, `update_window_dims={}`,
    /// `index_vector_dim=4`), overwriting. The Neuron presets' form.
    ElementScatter,
    /// One in-place `dynamic-update-slice` per sequence, at `[b, 0, position_ids[b,0], 0]`.
    /// Unlike scatter, an out-of-range position is clamped to the last row rather than
    /// dropped. XLA:CPU updates the cache in place this way, where its scatter lowering
    /// transposes every cache twice per step at batch > 1 (docs/decode-performance.md).
    DynamicUpdateSlice,
}

/// How a low-precision projection of a single row (batch-1 decode, the last prompt position's
/// logits) receives its activation vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VectorOperand {
    /// The vector straight from the ops that compute it (the RMSNorm, the attention output).
    #[default]
    Direct,
    /// The vector through an identity gather (indices `0..n`) first: the same values. XLA:CPU
    /// turns a bf16 matrix-vector product into one loop fusion that widens the weight as it
    /// reads it, and pulls cheap element-wise producers of the vector into that fusion, where
    /// they are recomputed for every output row: the RMSNorm before `qkv_proj` cost 4× the
    /// product (3072 → 9216: 4.2 GB/s of weights, against 16.7 with the vector computed once;
    /// docs/decode-performance.md). XLA counts a gather as expensive and does not fuse it into
    /// a consumer that reads each element many times, so the vector is computed once, into its
    /// own buffer (and, widened to f32 before the gather, leaves no rounding in the product).
    Gathered,
}

/// Which code multiplies a projection of a few rows (decode up to batch 8, the logits of the
/// last prompt position).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Matvec {
    /// XLA's own dot: the graph runs on any XLA runtime.
    #[default]
    Xla,
    /// The runtime's matrix-vector kernels, typed-FFI custom calls
    /// ([`crate::ir::ops::MatvecKernel`]): bf16 projections with `[out, in]` weights and f32
    /// ones with `[in, out]` weights ([`LinearForm::InputMajor`]). Each reads its weight once,
    /// at close to the machine's memory bandwidth, where XLA:CPU's own products of 2 to 8 f32
    /// rows, and of bf16 rows at real size, read it at about half of it
    /// (docs/decode-performance.md has the numbers, per machine). Only our runtime registers
    /// the kernels, so a set built with them runs in `phi3`/[`crate::run::Engine`], not in other
    /// XLA runtimes; projections of more rows stay XLA dots.
    Kernel,
}

/// What a prefill's last decoder layer computes past its attention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PrefillTail {
    /// Every token, as HF and NxD run it; the last token is picked after the final layer.
    #[default]
    AllTokens,
    /// Only each sequence's last real token: the last layer still projects Q/K/V and attends
    /// for every token (its K and V go into the cache), then keeps the attention output of
    /// the last token alone, so its `o_proj`, MLP and residuals run on one row per sequence.
    /// Nothing else reads the other rows (the graph returns the last token's logits), so the
    /// logits are the same up to summation order. llama.cpp skips these rows the same way.
    LastToken,
}

/// The KV state's shape when it holds one sequence (`max_batch_size` 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SingleRowState {
    /// `[1, kv_heads, S, head_dim]`, as at every other batch size (NxD's).
    #[default]
    Rows,
    /// `[kv_heads, S, head_dim]`, without the size-1 row dim. XLA:CPU strips size-1 dims from a
    /// dot's operands by bitcasting them, so with the row dim a batch-1 decode's attention reads
    /// a bitcast of the state that the step updates in place and returns aliased; XLA then
    /// fuses the update into that read a second time and copies every value cache twice per
    /// step (docs/decode-performance.md has the cost, which grows with the cache length).
    /// Without the dim, the update is in place and the attention reads it as it is. The
    /// runtime contract is unchanged: a runtime allocates the state from the manifest's
    /// `kv_state.shape`.
    Squeezed,
}

impl SingleRowState {
    /// Whether a state of `rows` sequences keeps its row dim: always, but for one sequence
    /// with [`SingleRowState::Squeezed`].
    pub fn has_rows(self, rows: i64) -> bool {
        rows != 1 || self == SingleRowState::Rows
    }

    /// The dims of each cache of a state of `rows` sequences:
    /// `[rows, kv_heads, max_seq_len, head_dim]`, or the last three.
    pub fn state_dims(self, rows: i64, kv_heads: i64, max_seq_len: i64, head_dim: i64) -> Vec<i64> {
        let dims = [rows, kv_heads, max_seq_len, head_dim];
        let from = usize::from(!self.has_rows(rows));
        dims[from..].to_vec()
    }
}

/// The element type of the KV state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvDtype {
    /// The graph's dtype (HF's cache dtype).
    #[default]
    Model,
    /// f32 whatever the graph's dtype: the new K/V rows are widened exactly when written, and
    /// decode attention reads them in f32 (the same numbers as a bf16 state, since every value
    /// written is a bf16 value), at twice the state's memory.
    F32,
}

impl KvDtype {
    pub fn resolve(self, model: DType) -> DType {
        match self {
            KvDtype::Model => model,
            KvDtype::F32 => DType::F32,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormImpl {
    /// RMSNorm from primitives (runs everywhere).
    Primitives,
    /// Neuron's `AwsNeuronRmsNorm` custom call (Neuron only: the CPU plugin cannot run it).
    NeuronCustomCall,
}

/// The result type of the matmuls of bf16 (or f16) graphs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DotResult {
    /// `f32 dot(bf16, bf16)` then one convert: what JAX emits and XLA:CPU runs fast.
    #[default]
    F32,
    /// The operands' dtype, as every AWS writer emits (Neuron's matmul engine accumulates in
    /// fp32 either way, so the value is the same: one rounding of the f32 sum).
    OperandType,
}

/// How grouped-query attention lays out its two matmuls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GqaDot {
    /// Queries viewed `[B, kv, g, S, hd]` against keys `[B, kv, T, hd]`: two free dims on the
    /// left operand.
    #[default]
    Grouped,
    /// Queries viewed `[B, kv, g·S, hd]` (the group and position dims are adjacent, so the
    /// reshape is free): one free dim per operand, as AWS writers' dots have.
    Merged,
}

/// Operand order of a batch-1 decode's attention-score dot (one query row against the cached
/// keys).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DecodeScores {
    /// `q · Kᵀ`, as HF and every AWS writer write it.
    #[default]
    QueryFirst,
    /// At batch 1, `K · qᵀ`, then the small `[.., T, S]` result transposed to `[.., S, T]`.
    /// With the query first, XLA:CPU transposes each layer's whole key cache before a batch-1
    /// product; with the keys first it reads them as they are stored
    /// (docs/decode-performance.md). Larger batches keep the query first: XLA reads the keys as
    /// stored either way there, and the two orders measured the same within noise. So does
    /// prefill, whose scores are a square matrix, not worth transposing.
    KeysFirst,
}

/// Which library XLA:CPU runs the dots with. A compile option, not a form: the HLO is the same
/// either way. Each graph's manifest entry records the XLA option overrides it is compiled with
/// (`xla_options`), and the runtime applies them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CpuDots {
    /// XLA's own choice: its dot emitter, and XNNPACK only where XLA's cost model accepts it.
    #[default]
    Xla,
    /// Every dot XNNPACK can run goes to XNNPACK, past XLA's cost model
    /// (`xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_DOT` with
    /// `xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_BYPASS_COST_MODEL`),
    /// in every graph. XLA:CPU multiplies f32 `[B, 1024] × [1024, 5632]` at B = 2..16 at about
    /// half the bandwidth of B = 1; XNNPACK's small-batch kernels do not (eight such weights:
    /// 18.6 → 8.0 ms at B = 4, 17.1 → 11.1 at B = 8; docs/decode-performance.md). For bf16
    /// they are slower (18.5 → 27.6 ms at B = 4), so no bf16 preset uses them. One replica
    /// only: XNNPACK fusions deadlock across replicas (`tests/tp_deadlock.rs`), and the
    /// runtime compiles multi-replica sets without XNNPACK.
    Xnnpack,
    /// [`CpuDots::Xnnpack`] for token generation's dots (a few rows each), XLA's own choice
    /// for context encoding's (a bucket of rows per sequence). At 128 rows XLA's choice is the
    /// faster one for the bench model's `[in, out]` weights of up to 3072 outputs (qkv 4.7
    /// against 5.8 ms, down 4.5 against 5.5), and XNNPACK only for the 5632-wide fused
    /// gate|up, which the f32 cpu preset splits ([`Fusion::Split`]); the bench model's
    /// batch-1 prefill takes 190 ms this way against 211 with XNNPACK everywhere
    /// (docs/decode-performance.md). The f32 cpu preset's.
    XnnpackDecode,
}

impl CpuDots {
    /// The XLA option overrides, by name, that a graph of `kind` is compiled with.
    pub fn xla_options(self, kind: GraphKind) -> std::collections::BTreeMap<String, String> {
        let xnnpack = match self {
            CpuDots::Xla => false,
            CpuDots::Xnnpack => true,
            CpuDots::XnnpackDecode => kind == GraphKind::TokenGeneration,
        };
        if !xnnpack {
            return Default::default();
        }
        [
            (
                "xla_cpu_experimental_xnn_fusion_type",
                "LIBRARY_FUSION_TYPE_DOT",
            ),
            (
                "xla_cpu_experimental_xnn_graph_fusion_mode",
                "XNN_GRAPH_FUSION_MODE_BYPASS_COST_MODEL",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
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
    /// On-device token selection.
    pub sampling: Sampling,
    pub sampler_kernels: SamplerKernels,
    /// The on-device sampler's static top-k bound: the largest `top_k` a request may ask for
    /// (NxDI's `global_topk`); capped at each rank's vocab slice.
    pub max_top_k: i64,
    /// All-gather the logits to the full vocab; otherwise each rank returns its vocab shard.
    pub gather_logits: bool,
    pub rms_norm: NormImpl,
    /// Operand order of the projection matmuls.
    pub linear: LinearForm,
    /// The KV state's `input_output_alias` kind.
    pub kv_alias: AliasKind,
    /// Result type of low-precision matmuls.
    pub dot_result: DotResult,
    pub gqa_dot: GqaDot,
    /// Token generation: each batch row's state row, gathered by `seq_ids` or in place.
    pub decode_rows: DecodeRows,
    /// The KV state's element type.
    pub kv_dtype: KvDtype,
    /// In bf16/f16 graphs, store a projection weight in f32 when its contraction (the input
    /// features per rank) is at least this long; `None`: never.
    pub f32_weights_from: Option<i64>,
    /// How a low-precision single-row projection receives its activation vector.
    pub vector_operand: VectorOperand,
    /// What a prefill's last layer computes past its attention.
    pub prefill_tail: PrefillTail,
    /// Which code multiplies projections of a few rows.
    pub matvec: Matvec,
    /// The KV state's shape for one sequence.
    pub single_row_state: SingleRowState,
    /// Operand order of decode's attention-score dot.
    pub decode_scores: DecodeScores,
    /// Which library XLA:CPU runs the dots with (a compile option; the HLO is unchanged).
    pub cpu_dots: CpuDots,
}

impl GraphOptions {
    /// What runs fastest on the PJRT CPU plugin in f32 (see [`GraphOptions::cpu_for`] for
    /// bf16): per-sequence dynamic-update-slice cache
    /// writes, `[in, out]` weights multiplied as `x · W`, and decode rows that are the state's
    /// rows (no gather of the cache; measured beside JAX in BENCHMARKS.md and
    /// docs/decode-performance.md), a prefill whose last layer runs its MLP on the last
    /// token only ([`PrefillTail::LastToken`]), and a one-sequence state without its row dim
    /// read keys-first at batch 1 ([`SingleRowState::Squeezed`], [`DecodeScores::KeysFirst`]),
    /// so that batch-1 decode copies no cache; gate and up as two weights
    /// ([`Fusion::Split`]: XLA:CPU's own dots run a 2816-wide weight at 172 GFLOP/s and the
    /// 5632-wide fused one at 152, at 128 rows); and token generation compiled with XNNPACK's
    /// dots ([`CpuDots::XnnpackDecode`], at one rank: [`GraphOptions::at_tp`]). The defaults
    /// stay NxD's forms for Neuron until neuronx-cc has compared them.
    pub fn cpu() -> Self {
        GraphOptions {
            gate_up: Fusion::Split,
            decode_cache_write: CacheWrite::DynamicUpdateSlice,
            linear: LinearForm::InputMajor,
            kv_alias: AliasKind::May,
            dot_result: DotResult::F32,
            gqa_dot: GqaDot::Grouped,
            decode_rows: DecodeRows::InPlace,
            prefill_tail: PrefillTail::LastToken,
            single_row_state: SingleRowState::Squeezed,
            decode_scores: DecodeScores::KeysFirst,
            cpu_dots: CpuDots::XnnpackDecode,
            ..GraphOptions::default()
        }
    }

    /// These options for a set of `tp` ranks: XNNPACK dots ([`CpuDots::Xnnpack`],
    /// [`CpuDots::XnnpackDecode`]) only at one rank.
    pub fn at_tp(self, tp: i64) -> Self {
        GraphOptions {
            cpu_dots: if tp > 1 { CpuDots::Xla } else { self.cpu_dots },
            ..self
        }
    }

    /// What `build-graphs --preset neuron` emits: NxD's forms, with Neuron's own kernels for
    /// the sampler's argmax and top-k (documented custom calls, where the variadic-reduce
    /// argmax has been reported to take a decode compile from about 1 to 22 minutes).
    pub fn neuron() -> Self {
        GraphOptions {
            sampler_kernels: SamplerKernels::Neuron,
            ..GraphOptions::default()
        }
    }

    /// The cpu preset for graphs of `dtype`. XLA:CPU runs bf16 (and f16) projections fastest
    /// the other way round from f32 ones: as `W · xᵀ` with `[out, in]` weights (the weight-first
    /// form). At batch 1 it turns the other forms' bf16 matrix-vector products into loop fusions
    /// that read a transposed, widened copy of the weight: a 4-layer full-width Phi-3-mini
    /// decodes a token in 783 ms activation-first, 1932 ms with `[in, out]` weights, 97 ms
    /// weight-first (f32 weights: 95 ms for twice the bytes); the bench model's batch 4 and 8
    /// stay as fast (docs/decode-performance.md).
    ///
    /// bf16 graphs also keep their KV state in f32 ([`KvDtype::F32`]): XLA:CPU runs the
    /// attention dots in f32 either way, and with a bf16 state it converts every whole cache to
    /// f32 and back on every step. And its bf16 matrix-vector product falls off a cliff once
    /// the contraction reaches 4096 (3584 → 3072: 1.3 ms; 4096 → 3072: 25 ms; 8192 → 3072,
    /// Phi-3-mini's `down_proj`: 46 ms, where f32 takes 3.9 ms), so such weights are stored in
    /// f32 (`f32_weights_from`), at twice their memory (258 → 97 ms in the 4-layer model).
    /// Single-row products take their vector through an identity gather
    /// ([`VectorOperand::Gathered`]), so that XLA computes the RMSNorm once rather than once per
    /// weight row. bf16 keeps gate and up as the checkpoint stores them: split, the bench model's
    /// prefill measured the same (batch 4: 1195 against 1217 ms).
    pub fn cpu_for(dtype: crate::dsl::DType) -> Self {
        match dtype {
            crate::dsl::DType::F32 => GraphOptions::cpu(),
            _ => GraphOptions {
                linear: LinearForm::WeightFirst,
                kv_dtype: KvDtype::F32,
                f32_weights_from: Some(4096),
                vector_operand: VectorOperand::Gathered,
                cpu_dots: CpuDots::Xla,
                gate_up: Fusion::Checkpoint,
                ..GraphOptions::cpu()
            },
        }
    }

    /// What our runtime runs fastest on CPU: [`GraphOptions::cpu_for`] with the runtime's
    /// matrix-vector kernels ([`Matvec::Kernel`]) for f32 and bf16. For bf16 every weight stays
    /// bf16 (the kernel has no cliff at long contractions, so `down_proj` needs no f32 copy);
    /// f32 keeps its `[in, out]` weights, which its kernel reads as they are, and XLA's own dots
    /// ([`CpuDots::Xla`]): the plugin cannot serialize an executable with XNNPACK fusions
    /// ("XnnFusionThunk is not serializable"), so the runtime's executable cache would miss
    /// on every run, and the kernel already takes the few-row products XNNPACK speeds up most.
    /// Graphs of this preset need the kernels registered, which only [`crate::run::Engine`]
    /// does.
    pub fn cpu_runtime_for(dtype: crate::dsl::DType) -> Self {
        match dtype {
            crate::dsl::DType::BF16 => GraphOptions {
                matvec: Matvec::Kernel,
                f32_weights_from: None,
                ..GraphOptions::cpu_for(dtype)
            },
            crate::dsl::DType::F32 => GraphOptions {
                matvec: Matvec::Kernel,
                cpu_dots: CpuDots::Xla,
                ..GraphOptions::cpu_for(dtype)
            },
            _ => GraphOptions::cpu_for(dtype),
        }
    }

    /// False when the graph needs a kernel only Neuron has.
    pub fn runs_on_cpu(&self) -> bool {
        let neuron_sampler =
            self.sampling != Sampling::None && self.sampler_kernels == SamplerKernels::Neuron;
        self.rms_norm == NormImpl::Primitives && !neuron_sampler
    }
}

/// The portable preset: the forms AWS's writers emit (must-alias state, operand-type bf16
/// dots, one free dim per side in attention, NxD's element-wise cache scatter), from
/// primitives only, so it runs on CPU too.
impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            qkv: Fusion::Checkpoint,
            gate_up: Fusion::Checkpoint,
            decode_cache_write: CacheWrite::ElementScatter,
            sampling: Sampling::None,
            sampler_kernels: SamplerKernels::Primitives,
            max_top_k: 256,
            gather_logits: true,
            rms_norm: NormImpl::Primitives,
            linear: LinearForm::ActivationFirst,
            kv_alias: AliasKind::Must,
            dot_result: DotResult::OperandType,
            gqa_dot: GqaDot::Merged,
            decode_rows: DecodeRows::Gathered,
            kv_dtype: KvDtype::Model,
            f32_weights_from: None,
            vector_operand: VectorOperand::Direct,
            prefill_tail: PrefillTail::AllTokens,
            matvec: Matvec::Xla,
            single_row_state: SingleRowState::Rows,
            decode_scores: DecodeScores::QueryFirst,
            cpu_dots: CpuDots::Xla,
        }
    }
}

/// One graph of a set. Every graph of a set shares one KV state of `cache_batch` rows of
/// `max_seq_len` positions; a graph's `batch` rows map to cache rows through its `seq_ids`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GraphSpec {
    pub kind: GraphKind,
    /// Sequences per call.
    pub batch: i64,
    /// Active tokens per sequence: the bucket length for prefill, 1 for decode.
    pub seq_len: i64,
    /// The bucket: prefill writes positions `0..bucket`; decode attends to positions
    /// `0..bucket` of each sequence's cache row.
    pub bucket: i64,
    /// KV-cache length (positions per cache row), shared by the set.
    pub max_seq_len: i64,
    /// KV-cache rows (`max_batch_size`), shared by the set.
    pub cache_batch: i64,
    pub dtype: DType,
    pub options: GraphOptions,
}

impl GraphSpec {
    /// Prefill of `batch` prompts into a bucket of `bucket` positions, over a cache of
    /// `batch` rows of `max_seq_len` (see [`GraphSpec::with_cache_batch`]).
    pub fn context_encoding(batch: i64, bucket: i64, max_seq_len: i64, dtype: DType) -> Self {
        GraphSpec {
            kind: GraphKind::ContextEncoding,
            batch,
            seq_len: bucket,
            bucket,
            max_seq_len,
            cache_batch: batch,
            dtype,
            options: GraphOptions::default(),
        }
    }

    /// One decode step of `batch` sequences attending to the whole cache of `max_seq_len`
    /// (see [`GraphSpec::with_bucket`] for a shorter prefix).
    pub fn token_generation(batch: i64, max_seq_len: i64, dtype: DType) -> Self {
        GraphSpec {
            kind: GraphKind::TokenGeneration,
            batch,
            seq_len: 1,
            bucket: max_seq_len,
            max_seq_len,
            cache_batch: batch,
            dtype,
            options: GraphOptions::default(),
        }
    }

    pub fn with_options(self, options: GraphOptions) -> Self {
        GraphSpec { options, ..self }
    }

    /// A decode graph attending to cache positions `0..bucket` only.
    pub fn with_bucket(self, bucket: i64) -> Self {
        match self.kind {
            GraphKind::TokenGeneration => GraphSpec { bucket, ..self },
            GraphKind::ContextEncoding => GraphSpec {
                bucket,
                seq_len: bucket,
                ..self
            },
        }
    }

    /// A cache of `rows` sequences (`max_batch_size`), of which this graph serves `batch`.
    pub fn with_cache_batch(self, rows: i64) -> Self {
        GraphSpec {
            cache_batch: rows,
            ..self
        }
    }

    /// Whether the KV state has its row dim ([`SingleRowState::has_rows`]).
    pub fn state_has_rows(&self) -> bool {
        self.options.single_row_state.has_rows(self.cache_batch)
    }

    /// The dims of each cache of the KV state ([`SingleRowState::state_dims`]).
    pub fn kv_state_dims(&self, kv_heads: i64, head_dim: i64) -> Vec<i64> {
        let s = self.options.single_row_state;
        s.state_dims(self.cache_batch, kv_heads, self.max_seq_len, head_dim)
    }

    /// E.g. `cte_b1_s128` (prefill bucket 128) or `tkg_b4_s1024` (decode, batch 4, attending
    /// to 1024 positions).
    pub fn name(&self) -> String {
        format!("{}_b{}_s{}", self.kind.short(), self.batch, self.bucket)
    }
}
