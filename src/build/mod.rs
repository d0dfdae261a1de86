//! The build pipeline: one graph of a set end to end (record, optimise, lower, serialise,
//! measure, lint), Graphviz views, golden text, and the manifest. It works on any
//! [`DecoderModel`]; `build-graphs`, the golden tests and the benchmarks share it.

pub mod dot;
pub mod manifest;
pub mod session;
pub mod set;

pub use dot::to_dot;

pub use crate::files::sha256_hex;
use crate::hlo::stats::{module_stats, ModuleStats};
use crate::hlo::{lower, print_module, LowerOptions, PrintOptions};
use crate::ir::{Graph, VerifyErrors};
use crate::manifest::InputRole;
use crate::models::decoder::{BuildError, DecoderModel, GraphSpec, RecordedGraph};
use crate::neuron::lint::{lint, Finding};
use crate::parallel::ShardPlan;
use std::time::Instant;

/// Why a graph set could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("{0}")]
    Build(#[from] BuildError),
    #[error("{}: {error}", path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// Two graphs of one set declare a weight differently: a recorder bug, never merged.
    #[error("weight `{weight}` is declared differently by graphs `{first}` and `{second}`")]
    InconsistentWeight {
        weight: String,
        first: String,
        second: String,
    },
    #[error("{0}")]
    Manifest(#[from] crate::manifest::ManifestError),
}

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
    /// Custom-call targets the runtime provides itself (the manifest's `runtime_kernels`).
    pub runtime_kernels: Vec<String>,
    /// Record + optimise + lower + serialise, in milliseconds (text printing excluded).
    pub build_ms: f64,
}

impl BuiltGraph {
    /// Frees the module, its bytes and the IR graph's nodes once written, keeping the summary
    /// (hash, size, stats) and what the manifest reads (signature, weights, aliases).
    pub fn drop_module(&mut self) {
        self.proto = Default::default();
        self.bytes = Vec::new();
        self.recorded.graph.clear_nodes();
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

/// Lowers a graph that the recorder verified when it finished it and that only CSE/DCE
/// touched since (they keep it valid), so the verifier does not run twice (debug builds still
/// run it).
pub fn lower_recorded(graph: &Graph) -> Result<xla_proto::HloModuleProto, VerifyErrors> {
    let opts = LowerOptions {
        verify: false,
        ..Default::default()
    };
    lower(graph, &opts)
}

/// Records, optimises, lowers, serialises, measures and lints one graph.
pub fn build_graph(
    model: &dyn DecoderModel,
    plan: &ShardPlan,
    spec: &GraphSpec,
) -> Result<BuiltGraph, BuildError> {
    let start = Instant::now();
    let mut recorded = model.record(plan, spec)?;
    crate::ir::passes::optimize(&mut recorded.graph);
    let proto = lower_recorded(&recorded.graph)?;
    let runtime_kernels = runtime_kernels(&recorded.graph);
    let bytes = xla_proto::encode_module(&proto);
    let build_ms = start.elapsed().as_secs_f64() * 1e3;
    let stats = module_stats(&proto);
    let findings = lint(&proto);
    let weight_bytes = recorded.input_bytes(|r| matches!(r, InputRole::Weight { .. }));
    let kv_bytes = recorded.input_bytes(|r| matches!(r, InputRole::KvCache { .. }));
    Ok(BuiltGraph {
        recorded,
        proto,
        proto_sha256: sha256_hex(&bytes),
        proto_len: bytes.len(),
        bytes,
        stats,
        weight_bytes,
        kv_bytes,
        findings,
        runtime_kernels,
        build_ms,
    })
}

/// The custom-call targets of `graph` that the runtime must register (its own kernels).
fn runtime_kernels(graph: &crate::ir::Graph) -> Vec<String> {
    let targets: std::collections::BTreeSet<&str> = graph
        .node_ids()
        .into_iter()
        .filter_map(|id| match &graph.node(id).op {
            crate::ir::Op::MatvecKernel(k) => Some(k.target()),
            _ => None,
        })
        .collect();
    targets.into_iter().map(String::from).collect()
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
