//! Neuron-specific pieces: the neuronx-cc flags NxDI passes for decoder graphs, per graph
//! kind and target ([`default_compiler_flags`]), the NEFF input/output names to expect
//! ([`neff_io_names`]), the driver, the lint, and CPU stand-ins for Neuron's sampler kernels.

use crate::manifest::GraphKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Trn1,
    Trn2,
    Trn3,
    Inf2,
}

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "trn1" => Some(Target::Trn1),
            "trn2" => Some(Target::Trn2),
            "trn3" => Some(Target::Trn3),
            "inf2" => Some(Target::Inf2),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::Trn1 => "trn1",
            Target::Trn2 => "trn2",
            Target::Trn3 => "trn3",
            Target::Inf2 => "inf2",
        }
    }

    /// Every target, in the order `--target` lists them.
    pub const ALL: [Target; 4] = [Target::Trn1, Target::Trn2, Target::Trn3, Target::Inf2];

    /// neuronx-cc's `--target`: inf2 compiles as trn1 (optimum-neuron normalises it so).
    pub fn compiler_target(self) -> &'static str {
        match self {
            Target::Trn1 | Target::Inf2 => "trn1",
            Target::Trn2 => "trn2",
            Target::Trn3 => "trn3",
        }
    }

    /// Logical NeuronCore config: 2 on trn2 (NxDI: `lnc = 2 if target == "trn2" else 1`) and
    /// on trn3 (assumed like trn2: no source gives trn3's value), 1 on trn1/inf2 (where `--lnc
    /// 2` is an error, NCC_EARG001).
    pub fn lnc(self) -> u8 {
        match self {
            Target::Trn2 | Target::Trn3 => 2,
            Target::Trn1 | Target::Inf2 => 1,
        }
    }
}

/// Default neuronx-cc flags: NxDI's set per graph kind (its `model_wrapper.py`), one argv
/// element per option as shell splitting of NxDI's strings gives:
///
/// ```text
/// common: --auto-cast=none --model-type=transformer
///         --tensorizer-options=--enable-ccop-compute-overlap --cc-pipeline-tiling-factor=T --vectorize-strided-dma
///         (T = 2 for context encoding, 1 for token generation)
/// CTE:    -O1 --internal-hlo2tensorizer-options=--modular-flow-mac-threshold=10 --verify-hlo=true
/// TKG:    -O2 --internal-hlo2tensorizer-options=--verify-hlo=true
/// then:   --lnc=N --target=<target>
/// ```
///
/// `-O1` with the modular flow saves compile time on the large prefill graphs; `-O2` avoids the
/// modular flow's call overhead in decode; `--verify-hlo=true` makes the compiler check the
/// module's shape rules first (NCC_EVRF064). `--logfile` is added by the driver, per run.
pub fn default_compiler_flags(kind: GraphKind, target: Target) -> Vec<String> {
    let (tiling, opt, hlo2tensorizer) = match kind {
        GraphKind::ContextEncoding => (
            2,
            "-O1",
            "--modular-flow-mac-threshold=10 --verify-hlo=true",
        ),
        GraphKind::TokenGeneration => (1, "-O2", "--verify-hlo=true"),
    };
    vec![
        "--auto-cast=none".into(),
        "--model-type=transformer".into(),
        format!(
            "--tensorizer-options=--enable-ccop-compute-overlap --cc-pipeline-tiling-factor={tiling} --vectorize-strided-dma"
        ),
        opt.into(),
        format!("--internal-hlo2tensorizer-options={hlo2tensorizer}"),
        format!("--lnc={}", target.lnc()),
        format!("--target={}", target.compiler_target()),
    ]
}

pub mod driver;
pub mod emulate;
pub mod lint;
mod neff;

pub use neff::{neff_io_names, NeffIoNames, MUST_ALIAS_SUFFIX, MUST_ALIAS_SUFFIX_SINCE};
