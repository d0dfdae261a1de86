//! Checks a lowered module against XLA's module-level rules (hlo.md §2) and reports every
//! violation, so that an emitter bug surfaces here with a readable message instead of as an
//! XLA `RET_CHECK` deep inside a compiler.

use std::collections::{HashMap, HashSet};
use xla_proto::HloModuleProto;

pub fn check_module(m: &HloModuleProto) -> Vec<String> {
    let mut errors = Vec::new();
    let mut names = HashSet::new();
    let mut defined_computations = HashSet::new();
    let mut computation_ids = HashSet::new();
    for c in &m.computations {
        if !computation_ids.insert(c.id) {
            errors.push(format!("computation id {} is used twice", c.id));
        }
        let mut ids: HashMap<i64, &str> = HashMap::new();
        let mut params = Vec::new();
        for i in &c.instructions {
            if i.name.is_empty() {
                errors.push(format!("{}: instruction {} has no name", c.name, i.id));
            } else if !names.insert(i.name.as_str()) {
                errors.push(format!(
                    "{}: instruction name `{}` is not module-unique",
                    c.name, i.name
                ));
            }
            for o in &i.operand_ids {
                if !ids.contains_key(o) {
                    errors.push(format!(
                        "{}: `{}` uses operand id {o} before it is defined",
                        c.name, i.name
                    ));
                }
            }
            for callee in &i.called_computation_ids {
                if !defined_computations.contains(callee) {
                    errors.push(format!(
                        "{}: `{}` calls computation {callee}, which is not listed before it",
                        c.name, i.name
                    ));
                }
            }
            if i.shape.is_none() {
                errors.push(format!("{}: `{}` has no shape", c.name, i.name));
            }
            if i.opcode == "parameter" {
                params.push(i.parameter_number);
            }
            if ids.insert(i.id, &i.name).is_some() {
                errors.push(format!("{}: instruction id {} is used twice", c.name, i.id));
            }
        }
        params.sort();
        if params.iter().enumerate().any(|(k, &p)| p != k as i64) {
            errors.push(format!(
                "{}: parameter numbers {params:?} do not run 0..n",
                c.name
            ));
        }
        if !ids.contains_key(&c.root_id) {
            errors.push(format!(
                "{}: root id {} is not an instruction of it",
                c.name, c.root_id
            ));
        }
        match &c.program_shape {
            Some(ps) if ps.parameters.len() != ps.parameter_names.len() => errors.push(format!(
                "{}: program shape has {} parameters but {} names",
                c.name,
                ps.parameters.len(),
                ps.parameter_names.len()
            )),
            Some(ps) if ps.parameters.len() != params.len() => errors.push(format!(
                "{}: program shape has {} parameters, the computation {}",
                c.name,
                ps.parameters.len(),
                params.len()
            )),
            _ => {}
        }
        defined_computations.insert(c.id);
    }
    match m
        .computations
        .iter()
        .find(|c| c.id == m.entry_computation_id)
    {
        None => errors.push(format!(
            "entry computation id {} does not exist",
            m.entry_computation_id
        )),
        Some(entry) => {
            let root = entry.instructions.iter().find(|i| i.id == entry.root_id);
            match (&m.host_program_shape, root) {
                (None, _) => errors.push("the module has no host_program_shape".into()),
                (Some(hps), root) => {
                    if hps.parameters.len() != hps.parameter_names.len() {
                        errors.push(format!(
                            "host_program_shape has {} parameters but {} names",
                            hps.parameters.len(),
                            hps.parameter_names.len()
                        ));
                    }
                    if let (Some(r), Some(root)) = (&hps.result, root) {
                        if Some(r) != root.shape.as_ref() {
                            errors.push(
                                "host_program_shape.result differs from the entry root's shape"
                                    .into(),
                            );
                        }
                    }
                }
            }
        }
    }
    errors
}
