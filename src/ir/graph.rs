//! The IR graph: a petgraph `StableGraph` of plain-data nodes. Edges run operand → user and
//! carry the operand position. Ids are newtypes so petgraph never leaks into the public API.

use super::ops::Op;
use super::types::Type;
use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences, NodeIndexable};
use petgraph::Direction;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;

/// A node's operands, in operand order. Almost every op has at most four, which stay inline:
/// the passes and the lowering read them once per node.
pub type Operands = smallvec::SmallVec<[NodeId; 4]>;

/// A value in the IR. Printed as `%N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(NodeIndex<u32>);

impl NodeId {
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0.index())
    }
}

/// Where a node was recorded: the model scope and the Rust source location. These become the
/// HLO `OpMetadata`, so compiler logs point back to our code.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Provenance {
    /// The HF module path (`model/layers.3/self_attn`), shared by the nodes recorded in it.
    pub scope: std::sync::Arc<str>,
    pub file: &'static str,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = if self.scope.is_empty() {
            "<root>"
        } else {
            &self.scope
        };
        write!(f, "{scope} ({}:{}:{})", self.file, self.line, self.column)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    pub op: Op,
    pub ty: Type,
    pub provenance: Provenance,
}

/// Output `output` (an index into the root tuple) reuses the buffer of parameter `parameter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Alias {
    pub output: usize,
    pub parameter: i64,
    pub kind: AliasKind,
}

/// XLA's alias kinds (`HloInputOutputAliasConfig::AliasKind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AliasKind {
    /// The compiler may reuse the parameter's buffer for the output, or may not.
    #[default]
    May,
    /// The output must live in the parameter's buffer: the caller donates the input, and the
    /// state is updated in place (what every AWS writer that keeps state emits).
    Must,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    g: StableGraph<Node, u32>,
    /// Insertion sequence per node index (stale for removed nodes): the tie-breaker that makes
    /// the topological order stable. StableGraph may reuse a removed node's index, so the
    /// sequence number, not the index, records insertion order.
    seq: Vec<u64>,
    next_seq: u64,
    pub outputs: Vec<NodeId>,
    pub aliases: Vec<Alias>,
    /// Module-level frontend attributes (sorted, so emission is deterministic).
    pub attributes: BTreeMap<String, String>,
}

impl Graph {
    /// Frees every node (and the outputs naming them), keeping the name, aliases and
    /// attributes: what a manifest still reads of a graph already lowered and written.
    pub fn clear_nodes(&mut self) {
        self.g = StableGraph::default();
        self.seq = Vec::new();
        self.outputs = Vec::new();
    }

    /// Room for `nodes` more nodes and their operand edges (about one and a third per node
    /// in a decoder graph).
    pub fn reserve(&mut self, nodes: usize) {
        self.g.reserve_nodes(nodes);
        self.g.reserve_edges(nodes + nodes / 3);
        self.seq.reserve(nodes);
    }

    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a node without checking its type. The DSL calls this only after the op's shape rule
    /// accepted the operands; tests use it to build deliberately broken graphs for the verifier.
    pub fn add_node_unchecked(&mut self, node: Node, operands: &[NodeId]) -> NodeId {
        let idx = self.g.add_node(node);
        for (pos, op) in operands.iter().enumerate() {
            self.g.add_edge(op.0, idx, pos as u32);
        }
        if self.seq.len() <= idx.index() {
            self.seq.resize(idx.index() + 1, 0);
        }
        self.seq[idx.index()] = self.next_seq;
        self.next_seq += 1;
        NodeId(idx)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id.0]
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id.0)
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Operands in operand order.
    pub fn operands(&self, id: NodeId) -> Operands {
        let edges = || self.g.edges_directed(id.0, Direction::Incoming);
        // Positions run 0..n in every graph but the broken ones tests give the verifier: each
        // operand goes straight to its place (this runs for every node in every pass).
        let n = edges().count();
        let free = NodeId(NodeIndex::end());
        let mut operands: Operands = smallvec::smallvec![free; n];
        let mut placed = 0;
        for e in edges() {
            match operands.get_mut(*e.weight() as usize) {
                Some(slot) if *slot == free => {
                    *slot = NodeId(e.source());
                    placed += 1;
                }
                _ => {}
            }
        }
        if placed == n {
            return operands;
        }
        let mut edges: Vec<(u32, NodeId)> =
            edges().map(|e| (*e.weight(), NodeId(e.source()))).collect();
        edges.sort();
        edges.into_iter().map(|(_, n)| n).collect()
    }

    pub fn operand_positions(&self, id: NodeId) -> Vec<u32> {
        let mut pos: Vec<u32> = self
            .g
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| *e.weight())
            .collect();
        pos.sort();
        pos
    }

    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let mut users: Vec<NodeId> = self
            .g
            .neighbors_directed(id.0, Direction::Outgoing)
            .map(NodeId)
            .collect();
        users.sort_by_key(|u| self.seq[u.0.index()]);
        users.dedup();
        users
    }

    /// Every node, in insertion order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.g.node_indices().map(NodeId).collect();
        ids.sort_unstable_by_key(|n| self.seq[n.0.index()]);
        ids
    }

    /// Parameters sorted by parameter number.
    pub fn parameters(&self) -> Vec<NodeId> {
        let mut params: Vec<(i64, NodeId)> = self
            .node_ids()
            .into_iter()
            .filter_map(|n| match &self.node(n).op {
                Op::Parameter(p) => Some((p.number, n)),
                _ => None,
            })
            .collect();
        params.sort();
        params.into_iter().map(|(_, n)| n).collect()
    }

    /// Kahn's algorithm with ready nodes taken in insertion order: deterministic, and equal to
    /// insertion order for graphs the DSL records. Nodes on a cycle are left out, and the
    /// verifier reports them.
    pub fn topo_order(&self) -> Vec<NodeId> {
        // Operands are recorded before their users, and a replacement points uses at an
        // older node, so insertion order is almost always topological already; it is then
        // also the order the heap below would give, at the cost of one pass over the edges.
        let forward = self
            .g
            .edge_references()
            .all(|e| self.seq[e.source().index()] < self.seq[e.target().index()]);
        if forward {
            return self.node_ids();
        }
        let bound = self.g.node_bound();
        let mut indegree = vec![0usize; bound];
        let mut ready = BinaryHeap::new();
        for n in self.g.node_indices() {
            let d = self.g.edges_directed(n, Direction::Incoming).count();
            indegree[n.index()] = d;
            if d == 0 {
                ready.push(Reverse((self.seq[n.index()], n)));
            }
        }
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(Reverse((_, n))) = ready.pop() {
            order.push(NodeId(n));
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let t = e.target();
                indegree[t.index()] -= 1;
                if indegree[t.index()] == 0 {
                    ready.push(Reverse((self.seq[t.index()], t)));
                }
            }
        }
        order
    }

    /// One past the largest node index: the size of a vector indexed by [`NodeId::index`].
    pub fn index_bound(&self) -> usize {
        self.g.node_bound()
    }

    /// Points every use of `old` (operands, outputs) at `new`, then removes `old`.
    pub fn replace_and_remove(&mut self, old: NodeId, new: NodeId) {
        let uses: Vec<(NodeIndex<u32>, u32)> = self
            .g
            .edges_directed(old.0, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
            .collect();
        for (user, pos) in uses {
            self.g.add_edge(new.0, user, pos);
        }
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
        self.remove(old);
    }

    pub fn remove(&mut self, id: NodeId) {
        self.g.remove_node(id.0);
    }

    /// One-line rendering used in verifier messages: `%5 = f32[2] add(%3, %4) at <provenance>`.
    pub fn render(&self, id: NodeId) -> String {
        let n = self.node(id);
        let ops: Vec<String> = self.operands(id).iter().map(|o| o.to_string()).collect();
        format!(
            "{id} = {} {}({}) at {}",
            n.ty,
            n.op.name(),
            ops.join(", "),
            n.provenance
        )
    }
}
