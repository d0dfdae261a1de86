//! Writes the manifest (the contract in [`crate::manifest`]) from built graphs: every graph's
//! inputs and outputs with their roles, the set-level weights table, the tensor-parallel
//! layout, the knobs, the compiler flags and the hash of each proto.

use super::{BuiltGraph, SetError};
use crate::manifest::{
    Buckets, DecodeRows, GraphEntry, IoEntry, KvState, Manifest, ModelInfo, FORMAT,
};
use crate::models::decoder::{
    DecoderModel, GraphKind, GraphOptions, GraphSpec, SamplerKernels, Sampling,
};
use crate::neuron::lint::{Finding, Severity};
use crate::parallel::ShardPlan;
use crate::weights::WeightDecl;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One written graph, for its manifest entry.
pub struct GraphArtifact<'a> {
    pub built: &'a BuiltGraph,
    pub files: Vec<String>,
    pub compiler_flags: Vec<String>,
    /// Filled in by `--compile`: NEFF file, size, compile seconds, cache hit.
    pub compile: Option<Value>,
}

/// How many info findings of each code (the allow-listed forms a graph relies on).
fn allow_listed_counts(findings: &[Finding]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for f in findings.iter().filter(|f| f.severity == Severity::Info) {
        *counts.entry(f.code).or_default() += 1;
    }
    counts
}

/// The manifest's `neuron_lint` block: `clean` (no error), the info counts per code, and each
/// error (`flagged`) and warning with its code.
pub fn lint_json(findings: &[Finding]) -> Value {
    let list = |severity: Severity| {
        findings
            .iter()
            .filter(|f| f.severity == severity)
            .map(|f| {
                json!({
                    "code": f.code, "severity": f.severity.name(), "instruction": f.instruction,
                    "opcode": f.opcode, "message": f.message, "scope": f.scope,
                })
            })
            .collect::<Vec<_>>()
    };
    json!({
        "clean": findings.iter().all(|f| !f.is_flagged()),
        "allow_listed": allow_listed_counts(findings),
        "flagged": list(Severity::Error),
        "warnings": list(Severity::Warning),
    })
}

pub fn graph_entry(model: &dyn DecoderModel, a: &GraphArtifact<'_>) -> GraphEntry {
    let b = a.built;
    let g = &b.recorded;
    let s = &g.spec;
    let inputs = g
        .inputs
        .iter()
        .map(|i| IoEntry {
            name: i.name.clone(),
            dtype: i.ty.dtype,
            shape: i.ty.dims.clone(),
            role: i.role.clone(),
            aliases_input: None,
        })
        .collect();
    let outputs = g
        .outputs
        .iter()
        .enumerate()
        .map(|(k, o)| IoEntry {
            name: o.name.clone(),
            dtype: o.ty.dtype,
            shape: o.ty.dims.clone(),
            role: o.role.clone(),
            aliases_input: g
                .graph
                .aliases
                .iter()
                .find(|a| a.output == k)
                .map(|a| a.parameter as usize),
        })
        .collect();
    let f = &b.findings;
    GraphEntry {
        name: s.name(),
        kind: s.kind,
        batch: s.batch,
        decode_rows: match s.kind {
            GraphKind::TokenGeneration => s.options.decode_rows,
            GraphKind::ContextEncoding => DecodeRows::Gathered,
        },
        bucket: s.bucket,
        active_tokens: s.seq_len,
        max_seq_len: s.max_seq_len,
        dtype: s.dtype,
        runs_on_cpu: s.options.runs_on_cpu(),
        runtime_kernels: b.runtime_kernels.clone(),
        options: options_json(model, &s.options),
        xla_options: s.options.cpu_dots.xla_options(s.kind),
        files: a.files.clone(),
        proto_sha256: b.proto_sha256.clone(),
        proto_bytes: b.proto_len,
        compiler_flags: a.compiler_flags.clone(),
        inputs,
        outputs,
        stats: json!({
            "instructions": b.stats.instructions,
            "parameters": b.stats.parameters,
            "dot_flops": b.stats.dot_flops,
            "collectives": b.stats.collectives,
            "collective_bytes_per_rank": b.stats.collective_bytes,
            "op_histogram": b.stats.op_histogram,
        }),
        neuron_lint: lint_json(f),
        compile: a.compile.clone().unwrap_or(Value::Null),
    }
}

/// The knobs, as the manifest records them (the fusions also resolved for the model).
pub fn options_json(model: &dyn DecoderModel, o: &GraphOptions) -> Value {
    let (qkv, gate_up) = model.checkpoint_fusion();
    json!({
        "qkv": format!("{:?}", o.qkv),
        "gate_up": format!("{:?}", o.gate_up),
        "fused_qkv": o.qkv.is_fused(qkv),
        "fused_gate_up": o.gate_up.is_fused(gate_up),
        "linear": format!("{:?}", o.linear),
        "decode_cache_write": format!("{:?}", o.decode_cache_write),
        "sampling": format!("{:?}", o.sampling),
        "sampler_kernels": format!("{:?}", o.sampler_kernels),
        "max_top_k": o.max_top_k,
        "gather_logits": o.gather_logits,
        "rms_norm": format!("{:?}", o.rms_norm),
        "kv_alias": format!("{:?}", o.kv_alias),
        "dot_result": format!("{:?}", o.dot_result),
        "gqa_dot": format!("{:?}", o.gqa_dot),
        "decode_rows": format!("{:?}", o.decode_rows),
        "kv_dtype": format!("{:?}", o.kv_dtype),
        "f32_weights_from": o.f32_weights_from,
        "vector_operand": format!("{:?}", o.vector_operand),
        "prefill_tail": format!("{:?}", o.prefill_tail),
        "matvec": format!("{:?}", o.matvec),
        "single_row_state": format!("{:?}", o.single_row_state),
        "decode_scores": format!("{:?}", o.decode_scores),
        "cpu_dots": format!("{:?}", o.cpu_dots),
        "runs_on_cpu": o.runs_on_cpu(),
    })
}

/// What every graph of a set shares, for the manifest's header.
pub struct SetInfo<'a> {
    pub model: &'a dyn DecoderModel,
    pub plan: &'a ShardPlan,
    pub dtype: crate::ir::DType,
    pub target: &'a str,
    pub options: &'a GraphOptions,
    /// Every graph's spec (the buckets, batch sizes and shared state come from them).
    pub specs: &'a [GraphSpec],
}

fn buckets_of(specs: &[GraphSpec], kind: GraphKind) -> Vec<i64> {
    let set: BTreeSet<i64> = specs
        .iter()
        .filter(|s| s.kind == kind)
        .map(|s| s.bucket)
        .collect();
    set.into_iter().collect()
}

fn batch_of(specs: &[GraphSpec], kind: GraphKind) -> i64 {
    specs
        .iter()
        .filter(|s| s.kind == kind)
        .map(|s| s.batch)
        .max()
        .unwrap_or(0)
}

/// The weights every graph of `built` reads, each declared once (in first-use order). Two
/// graphs that declare one name differently are a bug in the recorder: reported, not merged.
pub fn weights_table(built: &[&BuiltGraph]) -> Result<Vec<WeightDecl>, SetError> {
    let mut table: Vec<WeightDecl> = Vec::new();
    // Weight name → (index into the table, the graph that declared it first).
    let mut index: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for b in built {
        for d in &b.recorded.weights {
            match index.get(&d.name) {
                Some((i, first)) if table[*i] != *d => {
                    return Err(SetError::InconsistentWeight {
                        weight: d.name.clone(),
                        first: first.clone(),
                        second: b.recorded.spec.name(),
                    })
                }
                Some(_) => {}
                None => {
                    index.insert(d.name.clone(), (table.len(), b.recorded.spec.name()));
                    table.push(d.clone());
                }
            }
        }
    }
    Ok(table)
}

/// The whole manifest, with an optimum-neuron `neuron_config.json`-style block.
pub fn manifest(set: &SetInfo<'_>, weights: Vec<WeightDecl>, graphs: Vec<GraphEntry>) -> Manifest {
    let SetInfo {
        model,
        plan,
        dtype,
        target,
        options,
        specs,
    } = *set;
    // As the set is compiled: XNNPACK's dots only at one rank.
    let options = &options.clone().at_tp(plan.tp);
    let max_seq_len = specs.iter().map(|s| s.max_seq_len).max().unwrap_or(0);
    let max_batch = specs.iter().map(|s| s.cache_batch).max().unwrap_or(1);
    let (cte, tkg) = (
        buckets_of(specs, GraphKind::ContextEncoding),
        buckets_of(specs, GraphKind::TokenGeneration),
    );
    let (ctx_batch, tkg_batch) = (
        batch_of(specs, GraphKind::ContextEncoding),
        batch_of(specs, GraphKind::TokenGeneration),
    );
    let sampling_config = match options.sampling {
        Sampling::None => Value::Null,
        Sampling::Greedy => json!({ "do_sample": false, "top_k": 1, "dynamic": false }),
        Sampling::OnDevice => json!({
            "do_sample": true, "dynamic": true, "deterministic": false,
            "global_topk": options.max_top_k,
            "top_k_kernel_enabled": options.sampler_kernels == SamplerKernels::Neuron,
        }),
    };
    Manifest {
        format: FORMAT.to_string(),
        tool: json!({ "name": env!("CARGO_PKG_NAME"), "version": env!("CARGO_PKG_VERSION") }),
        model: ModelInfo {
            name: model.name().to_string(),
            model_type: model.model_type().to_string(),
            num_hidden_layers: model.num_layers(),
            vocab_size: model.sizes().vocab,
            max_position_embeddings: model.max_position_embeddings(),
            reencode_past: model.reencode_past(),
            eos_token_ids: model.eos_token_ids(),
        },
        tp_degree: plan.tp,
        replica_groups: vec![(0..plan.tp).collect()],
        dtype,
        options: options_json(model, options),
        neuron_config: json!({
            "batch_size": max_batch,
            "max_batch_size": max_batch,
            "ctx_batch_size": ctx_batch,
            "tkg_batch_size": tkg_batch,
            "sequence_length": max_seq_len,
            "max_context_length": cte.last().copied().unwrap_or(0),
            "max_length": max_seq_len,
            "context_encoding_buckets": cte,
            "token_generation_buckets": tkg,
            "enable_bucketing": cte.len() > 1 || tkg.len() > 1,
            "continuous_batching": true,
            "is_continuous_batching": true,
            "tp_degree": plan.tp,
            "torch_dtype": if dtype == crate::ir::DType::BF16 { "bfloat16" } else { "float32" },
            "fused_qkv": options.qkv.is_fused(model.checkpoint_fusion().0),
            "glu_mlp": true,
            "on_device_sampling": options.sampling != Sampling::None,
            "on_device_sampling_config": sampling_config,
            "target": target,
            "pp_degree": 1,
            "ep_degree": 1,
            "start_rank_id": 0,
            "local_ranks_size": plan.tp,
        }),
        input_conventions: json!({
            "kv_state": "one state per set: every graph takes and returns the same cache tensors (aliased); zero-initialise them once, pass them donated, and feed each call's cache outputs to the next call of any graph",
            "seq_ids": "batch row b reads and writes cache row seq_ids[b]; a row whose seq_id is outside [0, max_batch_size) (or, in decode, whose position is outside [0, max_seq_len)) writes nothing, and its outputs are unspecified: use it to pad a batch",
            "prefill": "a prompt of L tokens fills positions 0..L-1 of its bucket (the smallest context-encoding bucket >= L); padding follows it, with position_ids <= L-1 (e.g. 0); the graph writes positions 0..bucket-1 of row seq_ids[b] and returns the logits at the first index holding the largest position id",
            "decode": "row b feeds one token at position_ids[b], writes its K/V there and attends to positions <= position_ids[b] (within the sliding window, if any) among the bucket's positions 0..bucket-1; choose the smallest token-generation bucket > the largest position of the batch",
            "longrope": "each row picks LongRoPE's long factors iff its own max(position_ids) + 1 > original_max_position_embeddings; when a sequence first grows past model.reencode_past tokens with a cache written below it, encode the whole sequence again (Hugging Face's Phi-3 rule), which needs a context-encoding bucket that holds it",
            "sampling": "sampling_params[b] = (top_k, top_p, temperature): the K = max_top_k largest logits (ties by lower id), divided by the temperature, the first top_k (all K if top_k < 1 or > K), then the smallest prefix with probability mass >= top_p, renormalised; next_token is the first whose cumulative probability exceeds sampling_uniform[b]; top_k = 1 or temperature <= 0 is greedy",
        }),
        sharding: json!({
            "strategy": format!("{:?}", plan.strategy),
            "q_heads": plan.q_heads, "kv_heads": plan.kv_heads,
            "q_heads_per_rank": plan.q_heads_per_rank, "kv_heads_per_rank": plan.kv_heads_per_rank,
            "vocab_padded": plan.vocab_padded, "intermediate_padded": plan.intermediate_padded,
        }),
        kv_state: KvState {
            shape: options.single_row_state.state_dims(
                max_batch,
                plan.kv_heads_per_rank,
                max_seq_len,
                plan.head_dim,
            ),
            dtype: options.kv_dtype.resolve(dtype),
            layers: model.num_layers(),
            max_batch_size: max_batch,
            max_seq_len,
        },
        buckets: Buckets {
            context_encoding: cte,
            token_generation: tkg,
            ctx_batch_size: ctx_batch,
            tkg_batch_size: tkg_batch,
            rule: json!({
                "context_encoding": "the smallest bucket >= the prompt length",
                "token_generation": "the smallest bucket > the largest position_ids of the batch (its furthest position + 1)",
            }),
        },
        weights,
        graphs,
    }
}
