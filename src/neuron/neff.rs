//! The names a NEFF will give a module's inputs and outputs, computed from the module.
//!
//! Neuron's tooling names NEFF tensors from frontend attributes: each entry parameter carries
//! `neff_input_names="input<i>"` and the root tuple `neff_output_names="output0,output1,..."`
//! (torch-neuronx and nkipy stamp them; so does our lowering). neuronx-cc 2.23 and later rename
//! an input that a must-alias entry of `input_output_alias` ties to an output to
//! `<name>.must_alias_input` (nkipy#51). An alias entry whose kind is unset counts as
//! must-alias, as XLA reads it.
//!
//! No NEFF is read here (neuronx-cc does not run where this project is tested): these are the
//! *expected* names, and [`NeffIoNames::source`] says so. A runtime should take the names from
//! the NEFF itself when it has one.

use serde::Serialize;
use std::collections::HashSet;
use xla_proto::{HloModuleProto, Kind};

/// The suffix neuronx-cc appends to a must-alias input's NEFF name.
pub const MUST_ALIAS_SUFFIX: &str = ".must_alias_input";

/// The first compiler version (major, minor) that appends [`MUST_ALIAS_SUFFIX`].
pub const MUST_ALIAS_SUFFIX_SINCE: (u32, u32) = (2, 23);

/// Expected NEFF input and output names of a module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NeffIoNames {
    /// One per entry parameter, in parameter-number order.
    pub inputs: Vec<String>,
    /// One per element of the root tuple.
    pub outputs: Vec<String>,
    /// Always `"expected"`: computed from the module, not read from a NEFF.
    pub source: &'static str,
    /// The compiler version the names are for (the version number out of `--version`), or
    /// `None` when unknown (then the newest behaviour is assumed).
    pub compiler_version: Option<String>,
}

/// The version number in neuronx-cc's `--version` output (`NeuronX Compiler version
/// 2.21.33363.0+82129205`, possibly followed by more lines), or the first word that looks
/// like one.
fn version_number(version: &str) -> Option<&str> {
    let looks_like = |w: &&str| {
        let mut parts = w.split('.');
        parts.next().is_some_and(|p| p.parse::<u32>().is_ok())
            && parts
                .next()
                .is_some_and(|p| p.chars().next().is_some_and(|c| c.is_ascii_digit()))
    };
    if let Some(rest) = version.split("Compiler version").nth(1) {
        if let Some(w) = rest.split_whitespace().next().filter(looks_like) {
            return Some(w);
        }
    }
    version.split_whitespace().find(looks_like)
}

/// `(major, minor)` of a version number like `2.23.6484.0+3b612583`.
fn major_minor(number: &str) -> Option<(u32, u32)> {
    let mut parts = number.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    Some((major, minor.parse().ok()?))
}

/// The NEFF input/output names to expect for `module` compiled by a neuronx-cc whose
/// `--version` output is `compiler_version` (`None`: unknown, assumed >= 2.23).
pub fn neff_io_names(module: &HloModuleProto, compiler_version: Option<&str>) -> NeffIoNames {
    let number = compiler_version.map(|v| version_number(v).unwrap_or(v.trim()).to_string());
    let suffixed = match number.as_deref().and_then(major_minor) {
        Some(v) => v >= MUST_ALIAS_SUFFIX_SINCE,
        None => true,
    };
    let must_alias: HashSet<i64> = module
        .input_output_alias
        .iter()
        .flat_map(|a| &a.entries)
        .filter(|e| e.kind != Kind::MayAlias as i32 && e.parameter_shape_index.is_empty())
        .map(|e| e.parameter_number)
        .collect();
    let entry = module
        .computations
        .iter()
        .find(|c| c.id == module.entry_computation_id);
    let attr = |i: &xla_proto::HloInstructionProto, key: &str| {
        i.frontend_attributes
            .as_ref()
            .and_then(|a| a.map.get(key))
            .cloned()
    };

    let mut params: Vec<_> = entry
        .into_iter()
        .flat_map(|c| &c.instructions)
        .filter(|i| i.opcode == "parameter")
        .collect();
    params.sort_by_key(|i| i.parameter_number);
    let inputs = params
        .iter()
        .map(|p| {
            let name = attr(p, "neff_input_names")
                .unwrap_or_else(|| format!("input{}", p.parameter_number));
            if suffixed && must_alias.contains(&p.parameter_number) {
                format!("{name}{MUST_ALIAS_SUFFIX}")
            } else {
                name
            }
        })
        .collect();

    let root = entry.and_then(|c| c.instructions.iter().find(|i| i.id == c.root_id));
    let outputs = match root {
        Some(r) => match attr(r, "neff_output_names") {
            Some(names) => names.split(',').map(str::to_string).collect(),
            None if r.opcode == "tuple" => (0..r.operand_ids.len())
                .map(|k| format!("output{k}"))
                .collect(),
            None => vec!["output0".to_string()],
        },
        None => Vec::new(),
    };
    NeffIoNames {
        inputs,
        outputs,
        source: "expected",
        compiler_version: number,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers() {
        let real = "NeuronX Compiler version 2.21.33363.0+82129205\n\nPython version 3.10.12\n";
        assert_eq!(version_number(real), Some("2.21.33363.0+82129205"));
        assert_eq!(major_minor("2.21.33363.0+82129205"), Some((2, 21)));
        assert_eq!(version_number("neuronx-cc 2.23.1"), Some("2.23.1"));
        assert_eq!(major_minor("2.9rc1"), Some((2, 9)));
        assert_eq!(version_number("no digits here"), None);
    }
}
