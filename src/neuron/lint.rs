//! Neuron compatibility check. Flags every instruction outside the op set AWS documents for
//! the Neuron compiler (the appendix of `neuron.md`), and the documented restrictions within
//! it: reductions only with add/max/min/mul and a constant init, `power` only with a constant
//! exponent, no variadic reduce, sort or top-k, dynamic (dynamic-)slices only with constant
//! indices, and every custom-call. A short allow-list covers what NxD's own decoder graphs
//! rely on: `scatter`, dynamic writes into aliased KV-cache state, and collectives.

use std::collections::{HashMap, HashSet};
use xla_proto::{HloComputationProto, HloInstructionProto, HloModuleProto};

/// Opcodes of the documented Neuron-safe set (plus `parameter`).
const SAFE_OPCODES: &[&str] = &[
    "parameter",
    "abs",
    "add",
    "all-gather",
    "all-reduce",
    "atan2",
    "batch-norm-training",
    "batch-norm-grad",
    "batch-norm-inference",
    "broadcast",
    "ceil",
    "clamp",
    "compare",
    "concatenate",
    "constant",
    "convert",
    "cosine",
    "custom-call",
    "divide",
    "dot",
    "dynamic-update-slice",
    "exponential",
    "floor",
    "gather",
    "get-tuple-element",
    "iota",
    "log",
    "and",
    "not",
    "maximum",
    "minimum",
    "multiply",
    "negate",
    "pad",
    "power",
    "reduce",
    "reshape",
    "rng-bit-generator",
    "rng",
    "rsqrt",
    "scatter",
    "select",
    "shift-right-logical",
    "sign",
    "sine",
    "slice",
    "sqrt",
    "subtract",
    "tanh",
    "transpose",
    "tuple",
    "select-and-scatter",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Allowance {
    /// Outside the documented set and not allow-listed.
    Flagged,
    /// Allow-listed: NxD's decoder graphs use it on Neuron.
    Scatter,
    DynamicKvWrite,
    Collective,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub instruction: String,
    pub opcode: String,
    pub message: String,
    pub allowance: Allowance,
    /// The model scope from the instruction's metadata, when present.
    pub scope: String,
}

impl Finding {
    pub fn is_flagged(&self) -> bool {
        self.allowance == Allowance::Flagged
    }
}

fn is_constant_like(id: i64, by_id: &HashMap<i64, &HloInstructionProto>) -> bool {
    match by_id.get(&id) {
        Some(i) if i.opcode == "constant" => true,
        Some(i) if matches!(i.opcode.as_str(), "broadcast" | "reshape" | "convert") => {
            i.operand_ids.iter().all(|o| is_constant_like(*o, by_id))
        }
        _ => false,
    }
}

/// True when a dynamic-update-slice writes into an aliased parameter (KV-cache state), directly
/// or through a chain of dynamic-update-slices (one per sequence of a batch).
fn updates_state(
    i: &HloInstructionProto,
    by_id: &HashMap<i64, &HloInstructionProto>,
    aliased: &HashSet<i64>,
) -> bool {
    let mut target = i.operand_ids.first().and_then(|o| by_id.get(o));
    while let Some(t) = target {
        match t.opcode.as_str() {
            "parameter" => return aliased.contains(&t.parameter_number),
            "dynamic-update-slice" => target = t.operand_ids.first().and_then(|o| by_id.get(o)),
            _ => return false,
        }
    }
    false
}

fn reducer_root(comp: &HloComputationProto) -> Option<&str> {
    comp.instructions
        .iter()
        .find(|i| i.id == comp.root_id)
        .map(|i| i.opcode.as_str())
}

pub fn lint(m: &HloModuleProto) -> Vec<Finding> {
    let comps: HashMap<i64, &HloComputationProto> =
        m.computations.iter().map(|c| (c.id, c)).collect();
    let aliased: HashSet<i64> = m
        .input_output_alias
        .iter()
        .flat_map(|a| &a.entries)
        .map(|e| e.parameter_number)
        .collect();
    let mut findings = Vec::new();
    for comp in &m.computations {
        let by_id: HashMap<i64, &HloInstructionProto> =
            comp.instructions.iter().map(|i| (i.id, i)).collect();
        let is_entry = comp.id == m.entry_computation_id;
        for i in &comp.instructions {
            let mut flag = |message: String, allowance: Allowance| {
                findings.push(Finding {
                    instruction: i.name.clone(),
                    opcode: i.opcode.clone(),
                    message,
                    allowance,
                    scope: i
                        .metadata
                        .as_ref()
                        .map(|m| m.op_name.clone())
                        .unwrap_or_default(),
                })
            };
            let op = i.opcode.as_str();
            match op {
                "all-reduce" | "all-gather" | "reduce-scatter" | "all-to-all"
                | "collective-permute" => {
                    flag(format!("collective `{op}`"), Allowance::Collective);
                    continue;
                }
                "scatter" => {
                    flag("scatter (NxD's KV-cache update)".into(), Allowance::Scatter);
                    continue;
                }
                "sort" | "topk" => {
                    flag(
                        format!("`{op}` is not in Neuron's documented op set"),
                        Allowance::Flagged,
                    );
                    continue;
                }
                _ => {}
            }
            if !SAFE_OPCODES.contains(&op) && op != "dynamic-slice" {
                flag(
                    format!("`{op}` is not in Neuron's documented op set"),
                    Allowance::Flagged,
                );
            }
            match op {
                "reduce" => {
                    let n = i.operand_ids.len();
                    if n > 2 {
                        flag(
                            "variadic reduce (e.g. argmax) is not supported".into(),
                            Allowance::Flagged,
                        );
                    }
                    for init in &i.operand_ids[n / 2..] {
                        if !is_constant_like(*init, &by_id) {
                            flag(
                                "reduce with a non-constant init value".into(),
                                Allowance::Flagged,
                            );
                        }
                    }
                    for c in &i.called_computation_ids {
                        let root = comps.get(c).and_then(|c| reducer_root(c));
                        if n <= 2
                            && !matches!(root, Some("add" | "maximum" | "minimum" | "multiply"))
                        {
                            flag(
                                format!(
                                    "reduce with a `{}` computation (only add, max, min, mul)",
                                    root.unwrap_or("?")
                                ),
                                Allowance::Flagged,
                            );
                        }
                    }
                }
                "power"
                    if !i
                        .operand_ids
                        .get(1)
                        .is_some_and(|e| is_constant_like(*e, &by_id)) =>
                {
                    flag(
                        "power with a non-constant exponent".into(),
                        Allowance::Flagged,
                    );
                }
                "dynamic-slice" | "dynamic-update-slice" => {
                    let first_index = if op == "dynamic-slice" { 1 } else { 2 };
                    let runtime = i.operand_ids[first_index.min(i.operand_ids.len())..]
                        .iter()
                        .any(|o| !is_constant_like(*o, &by_id));
                    if runtime {
                        // Runtime-index access to the KV state: NxD's continuous-batching
                        // writes (DUS at `[seq_id, 0, 0, 0]`) and transformers-neuronx's cache
                        // reads (dynamic-slice) both do it.
                        let on_state = is_entry && updates_state(i, &by_id, &aliased);
                        if on_state {
                            flag(
                                format!("`{op}` of an aliased KV cache at runtime indices"),
                                Allowance::DynamicKvWrite,
                            );
                        } else {
                            flag(format!("`{op}` with runtime indices (Neuron documents constant indices only)"), Allowance::Flagged);
                        }
                    }
                }
                "custom-call" => flag(
                    format!(
                        "custom-call `{}` (backend-specific: runs only where that kernel exists)",
                        i.custom_call_target
                    ),
                    Allowance::Flagged,
                ),
                _ => {}
            }
        }
    }
    findings
}
