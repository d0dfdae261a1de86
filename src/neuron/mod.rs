//! Neuron-specific pieces: the neuronx-cc flags known to work for decoder graphs (see
//! `neuron.md`: optimum-neuron's flag set), per graph kind and target.

use crate::manifest::GraphKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Trn1,
    Trn2,
    Inf2,
}

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "trn1" => Some(Target::Trn1),
            "trn2" => Some(Target::Trn2),
            "inf2" => Some(Target::Inf2),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::Trn1 => "trn1",
            Target::Trn2 => "trn2",
            Target::Inf2 => "inf2",
        }
    }

    /// neuronx-cc's `--target`: inf2 compiles as trn1 (optimum-neuron normalises it so).
    pub fn compiler_target(self) -> &'static str {
        match self {
            Target::Trn1 | Target::Inf2 => "trn1",
            Target::Trn2 => "trn2",
        }
    }

    /// Logical NeuronCore config: 2 on trn2, 1 elsewhere.
    pub fn lnc(self) -> u8 {
        match self {
            Target::Trn2 => 2,
            _ => 1,
        }
    }
}

/// Default neuronx-cc flags: optimum-neuron's set for every graph, with NxDI's tiling factor 1
/// for token generation.
pub fn default_compiler_flags(kind: GraphKind, target: Target) -> Vec<String> {
    let tiling = match kind {
        GraphKind::ContextEncoding => 2,
        GraphKind::TokenGeneration => 1,
    };
    vec![
        "--auto-cast=none".into(),
        "--model-type=transformer".into(),
        format!(
            "--tensorizer-options=--enable-ccop-compute-overlap --cc-pipeline-tiling-factor={tiling} --vectorize-strided-dma"
        ),
        "-O2".into(),
        format!("--lnc={}", target.lnc()),
        format!("--target={}", target.compiler_target()),
    ]
}

pub mod driver;
pub mod emulate;
pub mod lint;
