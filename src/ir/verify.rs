//! The IR verifier. It re-checks everything the DSL checks on record, plus graph-level
//! invariants (parameter numbering, outputs, aliasing), and reports every error it finds
//! rather than stopping at the first.

use super::graph::{Graph, NodeId};
use super::ops::Op;
use super::types::Type;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub struct VerifyError {
    /// The offending node, when the error is about one.
    pub node: Option<NodeId>,
    /// One-line rendering of the node (empty for graph-level errors).
    pub rendered: String,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rendered.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.rendered, self.message)
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct VerifyErrors {
    pub graph: String,
    pub errors: Vec<VerifyError>,
}

impl fmt::Display for VerifyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "graph `{}` failed verification with {} error(s):",
            self.graph,
            self.errors.len()
        )?;
        for e in &self.errors {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for VerifyErrors {}

pub fn verify(g: &Graph) -> Result<(), VerifyErrors> {
    verify_with(g, true)
}

/// [`verify`] for a graph that [`GraphBuilder`](crate::dsl::GraphBuilder) recorded: each of
/// its nodes was typed by its op's shape rule, from its operands' recorded types, as it was
/// added, so checking the nodes again only repeats that (it was a third of recording the
/// default set). Release builds check the graph-level rules only; debug builds, which every
/// test runs, check everything.
pub fn verify_recorded(g: &Graph) -> Result<(), VerifyErrors> {
    verify_with(g, cfg!(debug_assertions))
}

fn verify_with(g: &Graph, recheck_nodes: bool) -> Result<(), VerifyErrors> {
    let mut errors = Vec::new();
    let node_err = |id: NodeId, message: String| VerifyError {
        node: Some(id),
        rendered: g.render(id),
        message,
    };
    let graph_err = |message: String| VerifyError {
        node: None,
        rendered: String::new(),
        message,
    };

    let order = g.topo_order();
    if order.len() != g.node_count() {
        errors.push(graph_err(format!(
            "the graph has a cycle: {} of {} nodes cannot be ordered",
            g.node_count() - order.len(),
            g.node_count()
        )));
    }

    let mut params: BTreeMap<i64, NodeId> = BTreeMap::new();
    let mut names: BTreeMap<String, NodeId> = BTreeMap::new();
    for id in g.node_ids() {
        let node = g.node(id);
        if recheck_nodes {
            if let Some(message) = node_error(g, id) {
                errors.push(node_err(id, message));
                continue;
            }
        }
        if let Op::Parameter(p) = &node.op {
            if let Some(prev) = params.insert(p.number, id) {
                errors.push(node_err(
                    id,
                    format!("parameter number {} is also used by {prev}", p.number),
                ));
            }
            if let Some(prev) = names.insert(p.name.clone(), id) {
                errors.push(node_err(
                    id,
                    format!("parameter name `{}` is also used by {prev}", p.name),
                ));
            }
        }
    }
    for (expected, (&number, &id)) in params.iter().enumerate() {
        if number != expected as i64 {
            errors.push(node_err(
                id,
                format!(
                    "parameter numbers must run 0..{}, found {number}",
                    params.len()
                ),
            ));
            break;
        }
    }

    if g.outputs.is_empty() {
        errors.push(graph_err("the graph has no outputs".into()));
    }
    for (i, &o) in g.outputs.iter().enumerate() {
        if !g.contains(o) {
            errors.push(graph_err(format!(
                "output {i} refers to a removed node {o}"
            )));
        } else if !matches!(g.node(o).ty, Type::Array(_)) {
            errors.push(node_err(o, format!("output {i} must be an array")));
        }
    }

    let mut aliased_outputs = BTreeSet::new();
    let mut aliased_params = BTreeSet::new();
    for a in &g.aliases {
        let Some(&out) = g.outputs.get(a.output) else {
            errors.push(graph_err(format!(
                "alias of output {} to parameter {}: there are only {} outputs",
                a.output,
                a.parameter,
                g.outputs.len()
            )));
            continue;
        };
        let Some(&param) = params.get(&a.parameter) else {
            errors.push(graph_err(format!(
                "alias of output {} to parameter {}: no such parameter",
                a.output, a.parameter
            )));
            continue;
        };
        if g.contains(out) && g.node(out).ty != g.node(param).ty {
            errors.push(graph_err(format!(
                "alias of output {} ({}) to parameter {} ({}): types differ",
                a.output,
                g.node(out).ty,
                a.parameter,
                g.node(param).ty
            )));
        }
        if !aliased_outputs.insert(a.output) {
            errors.push(graph_err(format!("output {} is aliased twice", a.output)));
        }
        if !aliased_params.insert(a.parameter) {
            errors.push(graph_err(format!(
                "parameter {} is aliased twice",
                a.parameter
            )));
        }
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(VerifyErrors {
            graph: g.name.clone(),
            errors,
        })
    }
}

/// What is wrong with node `id` itself (its operand positions or its type), if anything.
fn node_error(g: &Graph, id: NodeId) -> Option<String> {
    let node = g.node(id);
    let positions = g.operand_positions(id);
    if positions.iter().enumerate().any(|(i, &p)| p as usize != i) {
        return Some(format!("operand positions {positions:?} are not 0..n"));
    }
    let operands = g.operands(id);
    let refs: Vec<&Type> = operands.iter().map(|&o| &g.node(o).ty).collect();
    match node.op.infer(&refs) {
        Err(e) => Some(format!("ill-typed {}: {e}", node.op.name())),
        Ok(t) if t != node.ty => Some(format!(
            "recorded type {} differs from the inferred type {t}",
            node.ty
        )),
        Ok(_) => None,
    }
}
