//! Builds one graph of a graph set end to end: record, optimise, lower, serialise, print,
//! measure and lint. `build-graphs`, the golden tests and the benchmarks share it.

use crate::hlo::stats::{module_stats, ModuleStats};
use crate::hlo::{lower, print_module, LowerOptions, PrintOptions};
use crate::ir::{Graph, Op};
use crate::models::phi3::graph::{record, BuildError, InputRole, RecordedGraph};
use crate::models::phi3::{GraphSpec, Phi3Config, ShardPlan};
use crate::neuron::lint::{lint, Finding};
use prost::Message;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

pub struct BuiltGraph {
    pub recorded: RecordedGraph,
    pub proto: xla_proto::HloModuleProto,
    /// The serialised proto (empty after [`BuiltGraph::drop_module`]).
    pub bytes: Vec<u8>,
    pub proto_sha256: String,
    pub proto_len: usize,
    pub stats: ModuleStats,
    pub weight_bytes: u64,
    pub kv_bytes: u64,
    pub findings: Vec<Finding>,
    /// Record + optimise + lower + serialise, in milliseconds (text printing excluded).
    pub build_ms: f64,
}

impl BuiltGraph {
    /// Frees the module and its bytes once written, keeping the summary (hash, size, stats).
    pub fn drop_module(&mut self) {
        self.proto = Default::default();
        self.bytes = Vec::new();
    }

    pub fn text(&self, tp: i64) -> String {
        print_module(
            &self.proto,
            &PrintOptions {
                replica_count: Some(tp),
            },
        )
    }
}

/// How many graphs to build (or compile) at once when the caller does not say: one per core.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Lowers a graph that `record` verified when it finished it and that only CSE/DCE touched
/// since (they keep it valid), so the verifier does not run twice (debug builds still run it).
pub fn lower_recorded(graph: &Graph) -> Result<xla_proto::HloModuleProto, crate::ir::VerifyErrors> {
    let opts = LowerOptions {
        verify: false,
        ..Default::default()
    };
    lower(graph, &opts)
}

pub fn build_graph(
    cfg: &Phi3Config,
    plan: &ShardPlan,
    spec: &GraphSpec,
) -> Result<BuiltGraph, BuildError> {
    let start = Instant::now();
    let mut recorded = record(cfg, plan, spec)?;
    crate::ir::passes::optimize(&mut recorded.graph);
    let proto = lower_recorded(&recorded.graph).map_err(BuildError::Verify)?;
    let bytes = proto.encode_to_vec();
    let build_ms = start.elapsed().as_secs_f64() * 1e3;
    let stats = module_stats(&proto);
    let findings = lint(&proto);
    let sum = |want: fn(&InputRole) -> bool| -> u64 {
        recorded
            .inputs
            .iter()
            .filter(|i| want(&i.role))
            .map(|i| i.ty.byte_size() as u64)
            .sum()
    };
    let weight_bytes = sum(|r| matches!(r, InputRole::Weight { .. }));
    let kv_bytes = sum(|r| matches!(r, InputRole::KvCache { .. }));
    Ok(BuiltGraph {
        recorded,
        proto,
        proto_sha256: crate::neuron::manifest::sha256_hex(&bytes),
        proto_len: bytes.len(),
        bytes,
        stats,
        weight_bytes,
        kv_bytes,
        findings,
        build_ms,
    })
}

/// Graphviz view of the IR with nodes collapsed by scope, `depth` levels deep (e.g. depth 3:
/// `model/layers.0/self_attn`). Each box shows its op count; edges carry value counts.
pub fn to_dot(g: &Graph, depth: usize) -> String {
    let cluster = |id| {
        let scope = &g.node(id).provenance.scope;
        let key: Vec<&str> = scope
            .split('/')
            .filter(|s| !s.is_empty())
            .take(depth)
            .collect();
        if key.is_empty() {
            "<root>".to_string()
        } else {
            key.join("/")
        }
    };
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    let mut params: BTreeMap<String, usize> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String), usize> = BTreeMap::new();
    for id in g.node_ids() {
        let c = cluster(id);
        if matches!(g.node(id).op, Op::Parameter(_)) {
            *params.entry(c.clone()).or_default() += 1;
        }
        *ops.entry(c.clone()).or_default() += 1;
        for operand in g.operands(id) {
            let from = cluster(operand);
            if from != c {
                *edges.entry((from, c.clone())).or_default() += 1;
            }
        }
    }
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
        g.name
    );
    for (c, n) in &ops {
        let p = params.get(c).copied().unwrap_or(0);
        let _ = writeln!(out, "  \"{c}\" [label=\"{c}\\n{n} ops, {p} params\"];");
    }
    for ((a, b), n) in &edges {
        let _ = writeln!(out, "  \"{a}\" -> \"{b}\" [label=\"{n}\"];");
    }
    out.push_str("}\n");
    out
}

/// HLO text for golden files: as [`BuiltGraph::text`], but without source file and line in
/// the metadata, so that editing model code without changing the graph leaves goldens alone.
pub fn golden_text(built: &BuiltGraph, tp: i64) -> String {
    let mut proto = built.proto.clone();
    for c in &mut proto.computations {
        for i in &mut c.instructions {
            if let Some(m) = &mut i.metadata {
                m.source_file.clear();
                m.source_line = 0;
            }
        }
    }
    print_module(
        &proto,
        &PrintOptions {
            replica_count: Some(tp),
        },
    )
}
