//! Graphviz views of a graph, collapsed by model scope.

use crate::ir::{Graph, Op};
use std::collections::BTreeMap;
use std::fmt::Write;

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
