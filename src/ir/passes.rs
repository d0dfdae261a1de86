//! Graph passes as small composable units. A tuple of passes is a pass that runs them in order.

use super::graph::{Graph, NodeId, Operands};
use super::ops::Op;
use rustc_hash::{FxHashMap, FxHashSet};

pub trait Pass {
    fn name(&self) -> &'static str;
    /// Runs the pass; returns whether the graph changed.
    fn run(&self, g: &mut Graph) -> bool;
}

macro_rules! tuple_pass {
    ($($p:ident),+) => {
        impl<$($p: Pass),+> Pass for ($($p,)+) {
            fn name(&self) -> &'static str { "pipeline" }
            #[allow(non_snake_case)]
            fn run(&self, g: &mut Graph) -> bool {
                let ($($p,)+) = self;
                let mut changed = false;
                $(changed |= $p.run(g);)+
                changed
            }
        }
    };
}
tuple_pass!(A);
tuple_pass!(A, B);
tuple_pass!(A, B, C);
tuple_pass!(A, B, C, D);

/// Removes nodes that no output depends on. Parameters always stay: they are the graph's
/// signature, and dropping an unused weight would renumber every later input.
pub struct DeadCodeElimination;

impl Pass for DeadCodeElimination {
    fn name(&self) -> &'static str {
        "dce"
    }
    fn run(&self, g: &mut Graph) -> bool {
        let mut live: FxHashSet<NodeId> = FxHashSet::default();
        let mut stack: Vec<NodeId> = g
            .outputs
            .iter()
            .copied()
            .filter(|&o| g.contains(o))
            .collect();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(g.operands(n));
            }
        }
        let dead: Vec<NodeId> = g
            .node_ids()
            .into_iter()
            .filter(|&n| !live.contains(&n) && !matches!(g.node(n).op, Op::Parameter(_)))
            .collect();
        for &n in &dead {
            g.remove(n);
        }
        !dead.is_empty()
    }
}

/// Merges nodes with equal op data and equal operands, keyed by the op's derived `Eq + Hash`.
/// Parameters, custom calls and collectives are never merged (see `Op::is_cse_barrier`).
pub struct CommonSubexpressionElimination;

impl Pass for CommonSubexpressionElimination {
    fn name(&self) -> &'static str {
        "cse"
    }
    fn run(&self, g: &mut Graph) -> bool {
        let order = g.topo_order();
        // First find each node's canonical equal (read-only, so ops are compared in place),
        // then merge. Topological order: a node's operands are canonical when it is visited.
        let mut merge: FxHashMap<NodeId, NodeId> = FxHashMap::default();
        {
            let mut seen: FxHashMap<(&Op, Operands), NodeId> =
                FxHashMap::with_capacity_and_hasher(order.len(), Default::default());
            for &n in &order {
                let op = &g.node(n).op;
                if op.is_cse_barrier() {
                    continue;
                }
                let mut operands = g.operands(n);
                for o in &mut operands {
                    *o = merge.get(o).copied().unwrap_or(*o);
                }
                match seen.entry((op, operands)) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        merge.insert(n, *e.get());
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(n);
                    }
                }
            }
        }
        for &n in &order {
            if let Some(&canonical) = merge.get(&n) {
                g.replace_and_remove(n, canonical);
            }
        }
        !merge.is_empty()
    }
}

/// The default pipeline run before lowering.
pub fn optimize(g: &mut Graph) -> bool {
    (CommonSubexpressionElimination, DeadCodeElimination).run(g)
}
