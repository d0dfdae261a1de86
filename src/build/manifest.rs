//! Writes the manifest (the contract in [`crate::manifest`]) from built graphs: every graph's
//! inputs and outputs with their roles, the set-level weights table, the tensor-parallel
//! layout, the knobs, the compiler flags and the hash of each proto.

use super::{BuiltGraph, SetError};
use crate::manifest::{GraphEntry, IoEntry, Manifest, ModelInfo, FORMAT};
use crate::models::decoder::{DecoderModel, GraphOptions};
use crate::neuron::lint::Finding;
use crate::parallel::ShardPlan;
use crate::weights::WeightDecl;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One written graph, for its manifest entry.
pub struct GraphArtifact<'a> {
    pub built: &'a BuiltGraph,
    pub files: Vec<String>,
    pub compiler_flags: Vec<String>,
    /// Filled in by `--compile`: NEFF file, size, compile seconds, cache hit.
    pub compile: Option<Value>,
}

fn allow_listed_counts(findings: &[Finding]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for f in findings.iter().filter(|f| !f.is_flagged()) {
        *counts.entry(format!("{:?}", f.allowance)).or_default() += 1;
    }
    counts
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
        active_tokens: s.seq_len,
        max_seq_len: s.max_seq_len,
        dtype: s.dtype,
        runs_on_cpu: s.options.runs_on_cpu(),
        options: options_json(model, &s.options),
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
        neuron_lint: json!({
            "clean": f.iter().all(|f| !f.is_flagged()),
            "allow_listed": allow_listed_counts(f),
            "flagged": f.iter().filter(|f| f.is_flagged()).map(|f| json!({
                "instruction": f.instruction, "opcode": f.opcode, "message": f.message, "scope": f.scope,
            })).collect::<Vec<_>>(),
        }),
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
        "on_device_greedy": o.on_device_greedy,
        "gather_logits": o.gather_logits,
        "rms_norm": format!("{:?}", o.rms_norm),
        "runs_on_cpu": o.runs_on_cpu(),
    })
}

/// What every graph of a set shares, for the manifest's header.
pub struct SetInfo<'a> {
    pub model: &'a dyn DecoderModel,
    pub plan: &'a ShardPlan,
    pub batch: i64,
    pub max_seq_len: i64,
    pub dtype: crate::ir::DType,
    pub target: &'a str,
    pub options: &'a GraphOptions,
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
        batch,
        max_seq_len,
        dtype,
        target,
        options,
    } = *set;
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
        },
        tp_degree: plan.tp,
        replica_groups: vec![(0..plan.tp).collect()],
        dtype,
        options: options_json(model, options),
        neuron_config: json!({
            "batch_size": batch,
            "max_batch_size": batch,
            "sequence_length": max_seq_len,
            "max_context_length": max_seq_len,
            "tp_degree": plan.tp,
            "torch_dtype": if dtype == crate::ir::DType::BF16 { "bfloat16" } else { "float32" },
            "fused_qkv": options.qkv.is_fused(model.checkpoint_fusion().0),
            "glu_mlp": true,
            "on_device_sampling": options.on_device_greedy,
            "continuous_batching": false,
            "target": target,
            "pp_degree": 1,
            "ep_degree": 1,
            "start_rank_id": 0,
            "local_ranks_size": plan.tp,
        }),
        input_conventions: json!({
            "prefill": "the prompt fills positions 0..L-1 of the bucket; padding follows it, with position_ids <= L-1 (e.g. 0); logits are read at the first index holding the largest position id, and LongRoPE uses its long factors iff max(position_ids) + 1 > original_max_position_embeddings",
            "decode": "sequence b writes its new K/V row at position_ids[b] and attends to cache positions <= position_ids[b] (within the sliding window, if any)",
            "kv_cache": "zero-initialised; pass it donated and feed each graph's cache outputs to the next call",
        }),
        sharding: json!({
            "strategy": format!("{:?}", plan.strategy),
            "q_heads": plan.q_heads, "kv_heads": plan.kv_heads,
            "q_heads_per_rank": plan.q_heads_per_rank, "kv_heads_per_rank": plan.kv_heads_per_rank,
            "vocab_padded": plan.vocab_padded, "intermediate_padded": plan.intermediate_padded,
        }),
        weights,
        graphs,
    }
}
