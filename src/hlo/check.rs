//! Checks a lowered module against XLA's module-level rules (hlo.md §2) and reports every
//! violation, so that an emitter bug surfaces here with a readable message instead of as an
//! XLA `RET_CHECK` deep inside a compiler.

use std::collections::{HashMap, HashSet};
use std::fmt;
use xla_proto::HloModuleProto;

/// One broken module rule: where (computation and instruction, when there is one) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckError {
    /// The computation, or empty for a module-level rule.
    pub computation: String,
    /// The offending instruction's name, when the rule is about one.
    pub instruction: Option<String>,
    pub message: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.computation.is_empty(), &self.instruction) {
            (true, _) => write!(f, "{}", self.message),
            (false, None) => write!(f, "{}: {}", self.computation, self.message),
            (false, Some(i)) => write!(f, "{}: `{i}` {}", self.computation, self.message),
        }
    }
}

/// Every broken rule of a module, in the order found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct CheckErrors(pub Vec<CheckError>);

impl fmt::Display for CheckErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the HLO module breaks {} XLA module rule(s):",
            self.0.len()
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl CheckErrors {
    pub fn messages(&self) -> Vec<String> {
        self.0.iter().map(|e| e.to_string()).collect()
    }
}

struct Found(Vec<CheckError>);

impl Found {
    fn at(&mut self, comp: &str, instr: Option<&str>, message: String) {
        self.0.push(CheckError {
            computation: comp.to_string(),
            instruction: instr.map(str::to_string),
            message,
        });
    }
}

pub fn check_module(m: &HloModuleProto) -> Result<(), CheckErrors> {
    let mut errors = Found(Vec::new());
    let mut names = HashSet::new();
    let mut defined_computations = HashSet::new();
    let mut computation_ids = HashSet::new();
    for c in &m.computations {
        if !computation_ids.insert(c.id) {
            errors.at(
                &c.name,
                None,
                format!("computation id {} is used twice", c.id),
            );
        }
        let mut ids: HashMap<i64, &str> = HashMap::new();
        let mut params = Vec::new();
        for i in &c.instructions {
            if i.name.is_empty() {
                errors.at(&c.name, None, format!("instruction {} has no name", i.id));
            } else if !names.insert(i.name.as_str()) {
                errors.at(&c.name, Some(&i.name), "is not module-unique".into());
            }
            for o in &i.operand_ids {
                if !ids.contains_key(o) {
                    errors.at(
                        &c.name,
                        Some(&i.name),
                        format!("uses operand id {o} before it is defined"),
                    );
                }
            }
            for callee in &i.called_computation_ids {
                if !defined_computations.contains(callee) {
                    errors.at(
                        &c.name,
                        Some(&i.name),
                        format!("calls computation {callee}, which is not listed before it"),
                    );
                }
            }
            if i.shape.is_none() {
                errors.at(&c.name, Some(&i.name), "has no shape".into());
            }
            if i.opcode == "parameter" {
                params.push(i.parameter_number);
            }
            if ids.insert(i.id, &i.name).is_some() {
                errors.at(
                    &c.name,
                    Some(&i.name),
                    format!("reuses instruction id {}", i.id),
                );
            }
        }
        params.sort();
        if params.iter().enumerate().any(|(k, &p)| p != k as i64) {
            errors.at(
                &c.name,
                None,
                format!("parameter numbers {params:?} do not run 0..n"),
            );
        }
        if !ids.contains_key(&c.root_id) {
            errors.at(
                &c.name,
                None,
                format!("root id {} is not an instruction of it", c.root_id),
            );
        }
        match &c.program_shape {
            Some(ps) if ps.parameters.len() != ps.parameter_names.len() => errors.at(
                &c.name,
                None,
                format!(
                    "program shape has {} parameters but {} names",
                    ps.parameters.len(),
                    ps.parameter_names.len()
                ),
            ),
            Some(ps) if ps.parameters.len() != params.len() => errors.at(
                &c.name,
                None,
                format!(
                    "program shape has {} parameters, the computation {}",
                    ps.parameters.len(),
                    params.len()
                ),
            ),
            _ => {}
        }
        defined_computations.insert(c.id);
    }
    match m
        .computations
        .iter()
        .find(|c| c.id == m.entry_computation_id)
    {
        None => errors.at(
            "",
            None,
            format!(
                "entry computation id {} does not exist",
                m.entry_computation_id
            ),
        ),
        Some(entry) => {
            let root = entry.instructions.iter().find(|i| i.id == entry.root_id);
            match (&m.host_program_shape, root) {
                (None, _) => errors.at("", None, "the module has no host_program_shape".into()),
                (Some(hps), root) => {
                    if hps.parameters.len() != hps.parameter_names.len() {
                        errors.at(
                            "",
                            None,
                            format!(
                                "host_program_shape has {} parameters but {} names",
                                hps.parameters.len(),
                                hps.parameter_names.len()
                            ),
                        );
                    }
                    if let (Some(r), Some(root)) = (&hps.result, root) {
                        if Some(r) != root.shape.as_ref() {
                            errors.at(
                                "",
                                None,
                                "host_program_shape.result differs from the entry root's shape"
                                    .into(),
                            );
                        }
                    }
                }
            }
        }
    }
    if errors.0.is_empty() {
        Ok(())
    } else {
        Err(CheckErrors(errors.0))
    }
}
