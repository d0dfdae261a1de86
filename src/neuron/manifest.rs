//! `manifest.json`: the contract between the graphs and a runtime or serving layer. For each
//! graph it lists every input and output (name, dtype, shape, role), the aliasing, the TP
//! degree and replica groups, the compiler flags and the hash of the proto bytes.

use crate::models::phi3::graph::{InputRole, OutputRole, RecordedGraph};
use crate::models::phi3::plan::{FusedPart, ShardRule};
use crate::models::phi3::{Phi3Config, ShardPlan};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn input_json(name: &str, ty: &crate::ir::ArrayType, role: &InputRole, plan: &ShardPlan) -> Value {
    let (role_name, extra) = match role {
        InputRole::InputIds => ("input_ids", json!({})),
        InputRole::PositionIds => ("position_ids", json!({})),
        InputRole::Rank => (
            "rank",
            json!({ "value": "the rank's index in the TP group" }),
        ),
        InputRole::KvCache { layer, value } => (
            "kv_cache",
            json!({ "layer": layer, "tensor": if *value { "value" } else { "key" } }),
        ),
        InputRole::Weight { key, shard } => (
            "weight",
            json!({ "checkpoint_key": key, "shard": shard_json(shard, plan) }),
        ),
    };
    let mut v =
        json!({ "name": name, "dtype": ty.dtype.name(), "shape": ty.dims, "role": role_name });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
}

/// How the rank's slice of a weight is cut from the checkpoint tensor.
fn shard_json(rule: &ShardRule, plan: &ShardPlan) -> Value {
    let part = |p: &Option<FusedPart>| p.map(|p| format!("{p:?}").to_lowercase());
    match rule {
        ShardRule::Replicated => json!({ "kind": "replicated" }),
        ShardRule::Split { dim, pad_to } => {
            json!({ "kind": "split", "dim": dim, "parts": plan.tp, "pad_to": pad_to })
        }
        ShardRule::QkvHeads { part: p } => json!({
            "kind": "qkv_heads", "part": part(p), "dim": 0, "strategy": format!("{:?}", plan.strategy),
            "q_heads_per_rank": plan.q_heads_per_rank, "kv_heads_per_rank": plan.kv_heads_per_rank,
            "q_head_source": plan.q_head_source, "kv_head_source": plan.kv_head_source,
        }),
        ShardRule::QueryHeadColumns => {
            json!({ "kind": "q_heads", "dim": 1, "q_head_source": plan.q_head_source })
        }
        ShardRule::GateUp { part: p, pad_to } => json!({
            "kind": "gate_up", "part": part(p), "dim": 0, "parts": plan.tp, "pad_to": pad_to,
        }),
    }
}

pub struct GraphArtifact<'a> {
    pub recorded: &'a RecordedGraph,
    pub proto_sha256: &'a str,
    pub proto_len: usize,
    pub files: Vec<String>,
    pub compiler_flags: Vec<String>,
    pub stats: &'a crate::hlo::stats::ModuleStats,
    pub findings: &'a [crate::neuron::lint::Finding],
    /// Filled in by `--compile`: NEFF file, size, compile seconds, cache hit.
    pub compile: Option<Value>,
}

pub fn graph_entry(a: &GraphArtifact<'_>, plan: &ShardPlan) -> Value {
    let g = a.recorded;
    let inputs: Vec<Value> = g
        .inputs
        .iter()
        .map(|i| input_json(&i.name, &i.ty, &i.role, plan))
        .collect();
    let outputs: Vec<Value> = g
        .outputs
        .iter()
        .enumerate()
        .map(|(k, o)| {
            let role = match o.role {
                OutputRole::Logits => "logits",
                OutputRole::NextToken => "next_token",
                OutputRole::KvCache { .. } => "kv_cache",
            };
            let alias = g.graph.aliases.iter().find(|a| a.output == k).map(|a| a.parameter);
            json!({ "name": o.name, "dtype": o.ty.dtype.name(), "shape": o.ty.dims, "role": role, "aliases_input": alias })
        })
        .collect();
    let s = &g.spec;
    json!({
        "name": s.name(),
        "kind": match s.kind { crate::models::phi3::GraphKind::ContextEncoding => "context_encoding", _ => "token_generation" },
        "batch": s.batch,
        "active_tokens": s.seq_len,
        "max_seq_len": s.max_seq_len,
        "dtype": s.dtype.name(),
        "options": {
            "fused_qkv": s.options.fused_qkv,
            "fused_gate_up": s.options.fused_gate_up,
            "linear": format!("{:?}", s.options.linear),
            "decode_cache_write": format!("{:?}", s.options.decode_cache_write),
            "on_device_greedy": s.options.on_device_greedy,
            "gather_logits": s.options.gather_logits,
            "rms_norm": format!("{:?}", s.options.rms_norm),
            "runs_on_cpu": s.options.rms_norm == crate::models::phi3::graph::NormImpl::Primitives,
        },
        "files": a.files,
        "proto_sha256": a.proto_sha256,
        "proto_bytes": a.proto_len,
        "compiler_flags": a.compiler_flags,
        "inputs": inputs,
        "outputs": outputs,
        "aliases": g.graph.aliases.iter().map(|a| json!({ "output": a.output, "parameter": a.parameter })).collect::<Vec<_>>(),
        "stats": {
            "instructions": a.stats.instructions,
            "parameters": a.stats.parameters,
            "dot_flops": a.stats.dot_flops,
            "collectives": a.stats.collectives,
            "collective_bytes_per_rank": a.stats.collective_bytes,
            "op_histogram": a.stats.op_histogram,
        },
        "neuron_lint": {
            "clean": a.findings.iter().all(|f| !f.is_flagged()),
            "allow_listed": allow_listed_counts(a.findings),
            "flagged": a.findings.iter().filter(|f| f.is_flagged()).map(|f| json!({
                "instruction": f.instruction, "opcode": f.opcode, "message": f.message, "scope": f.scope,
            })).collect::<Vec<_>>(),
        },
        "compile": a.compile,
    })
}

/// The whole manifest, with an optimum-neuron `neuron_config.json`-style block.
/// What every graph of a set shares, for the manifest's header.
pub struct SetInfo<'a> {
    pub batch: i64,
    pub max_seq_len: i64,
    pub dtype: &'a str,
    pub target: &'a str,
    pub options: &'a crate::models::phi3::graph::GraphOptions,
}

pub fn manifest(
    cfg: &Phi3Config,
    plan: &ShardPlan,
    set: &SetInfo<'_>,
    graphs: Vec<Value>,
) -> Value {
    let SetInfo {
        batch,
        max_seq_len,
        dtype,
        target,
        options,
    } = *set;
    json!({
        "format": "phi3-neuron-manifest/1",
        "model": cfg.name,
        "num_hidden_layers": cfg.num_hidden_layers,
        "tp_degree": plan.tp,
        "replica_groups": [ (0..plan.tp).collect::<Vec<_>>() ],
        "neuron_config": {
            "batch_size": batch,
            "max_batch_size": batch,
            "sequence_length": max_seq_len,
            "max_context_length": max_seq_len,
            "tp_degree": plan.tp,
            "torch_dtype": if dtype == "bf16" { "bfloat16" } else { "float32" },
            "fused_qkv": options.fused_qkv,
            "glu_mlp": true,
            "on_device_sampling": options.on_device_greedy,
            "continuous_batching": false,
            "target": target,
            "pp_degree": 1,
            "ep_degree": 1,
            "start_rank_id": 0,
            "local_ranks_size": plan.tp,
        },
        "input_conventions": {
            "prefill": "the prompt fills positions 0..L-1 of the bucket; padding follows it, with position_ids <= L-1 (e.g. 0); logits are read at the first index holding the largest position id, and LongRoPE uses its long factors iff max(position_ids) + 1 > original_max_position_embeddings",
            "decode": "sequence b writes its new K/V row at position_ids[b] and attends to cache positions <= position_ids[b] (within the sliding window, if any)",
            "kv_cache": "zero-initialised; pass it donated and feed each graph's cache outputs to the next call",
        },
        "sharding": {
            "strategy": format!("{:?}", plan.strategy),
            "q_heads": plan.q_heads, "kv_heads": plan.kv_heads,
            "q_heads_per_rank": plan.q_heads_per_rank, "kv_heads_per_rank": plan.kv_heads_per_rank,
            "vocab_padded": plan.vocab_padded, "intermediate_padded": plan.intermediate_padded,
        },
        "graphs": graphs,
    })
}

fn allow_listed_counts(
    findings: &[crate::neuron::lint::Finding],
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for f in findings.iter().filter(|f| !f.is_flagged()) {
        *counts.entry(format!("{:?}", f.allowance)).or_default() += 1;
    }
    counts
}
