//! Neuron compatibility lint: an early check of an `HloModuleProto` against what neuronx-cc
//! documents it rejects. neuronx-cc itself cannot run here, so this is the best check before
//! a Neuron host: each rule is one documented rejection (an `NCC_*` code from the compiler's
//! error-code catalogue) or one constraint from another named source, and every finding
//! carries its rule's code. [`RULES`] lists them all; `docs/neuron-lint.md` says where each
//! comes from.
//!
//! A finding is an [`Severity::Error`] (the compiler documents the rejection, or nothing shows
//! the form compiles: fix it before compiling), a [`Severity::Warning`] (it compiles, with a
//! known risk: compile time, a next-SDK change, a target restriction), or
//! [`Severity::Info`] (accepted; recorded so a reader sees which allow-listed forms a graph
//! relies on). [`Finding::is_flagged`] is true for errors only.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use xla_proto::{
    HloComputationProto, HloInstructionProto, HloModuleProto, LiteralProto, PrimitiveType,
    ShapeProto,
};

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Would fail (a documented rejection) or has no evidence it compiles: must be fixed.
    Error,
    /// Compiles, with a known risk.
    Warning,
    /// Accepted: an allow-listed form, or an op outside the 2022 table that AWS writers emit.
    Info,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One lint rule: its code (neuronx-cc's `NCC_*` code where the compiler documents the
/// rejection, else a `LINT_*` / `ALLOW_*` name of ours), its severity, what it checks, and
/// where the constraint is documented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub code: &'static str,
    pub severity: Severity,
    pub summary: &'static str,
    pub source: &'static str,
}

const SDK_CODES: &str = "aws-neuron-sdk compiler/error-codes";
const OP_TABLE: &str =
    "aws-neuron-sdk release-notes/components/compiler.rst, \"Supported Operators\" (2022)";

macro_rules! rule {
    ($code:expr, $sev:ident, $summary:expr, $source:expr) => {
        Rule {
            code: $code,
            severity: Severity::$sev,
            summary: $summary,
            source: $source,
        }
    };
}

/// Every rule the lint applies, in the order `docs/neuron-lint.md` lists them.
pub const RULES: &[Rule] = &[
    // Documented rejections (NCC codes).
    rule!(
        "NCC_EVRF015",
        Error,
        "custom-call target outside the compiler's recognised list (also NCC_EHCA005)",
        "aws-neuron-sdk compiler/error-codes/EVRF015.rst, EHCA005.rst"
    ),
    rule!(
        "NCC_EVRF013",
        Error,
        "top-k (the `topk` opcode or AwsNeuronTopK) on integer data",
        SDK_CODES
    ),
    rule!(
        "NCC_EVRF062",
        Error,
        "s64 values: truncated to 32 bits today, and hard errors (integer dot, scatter with \
         compute, all-reduce, reduce-scatter, int64 power) once the next SDK defaults to \
         --native-int64=enabled --implicit-integer-downcast=none",
        "aws-neuron-sdk compiler/error-codes/EVRF062.rst; compiler.rst Neuron 2.32 notes"
    ),
    rule!(
        "NCC_ESFH002",
        Error,
        "u64 values: u64 constants must fit in 32 bits; 64-bit integers go the way of s64 in the next SDK",
        "aws-neuron-sdk compiler/error-codes/ESFH002.rst; compiler.rst Neuron 2.32 notes"
    ),
    rule!(
        "LINT_F64",
        Error,
        "f64 values: NeuronCores have no FP64 datapath",
        "aws-neuron-sdk about-neuron/arch/neuron-features/data-types.rst; nkipy core/backend/hlo.py dtype table"
    ),
    rule!(
        "NCC_EVRF004",
        Error,
        "complex element types (c64, c128)",
        SDK_CODES
    ),
    rule!(
        "NCC_EVRF005",
        Error,
        "FNUZ fp8 element types (f8e4m3fnuz, f8e5m2fnuz, f8e4m3b11fnuz)",
        SDK_CODES
    ),
    rule!("NCC_ESPP004", Error, "f4 element types (f4e2m1fn)", SDK_CODES),
    rule!(
        "NCC_EVRF051",
        Warning,
        "f8e4m3fn: unsupported on trn1/trn2 unless compiled with \
         --experimental-unsafe-fp8e4m3fn-as-fp8e4m3",
        SDK_CODES
    ),
    rule!(
        "NCC_EVRF052",
        Warning,
        "f8e4m3: unsupported on targets after trn3",
        SDK_CODES
    ),
    rule!(
        "NCC_EVRF035",
        Error,
        "dot with integer (or pred) operands: no integer matmul datapath",
        "aws-neuron-sdk compiler/error-codes/EVRF035.rst; compiler.rst Neuron 2.32 notes"
    ),
    rule!(
        "NCC_EVRF061",
        Error,
        "all-reduce of integer (or pred) data",
        "aws-neuron-sdk compiler/error-codes/EVRF061.rst; compiler.rst Neuron 2.32 notes"
    ),
    rule!(
        "NCC_EVRF063",
        Error,
        "reduce-scatter of integer (or pred) data",
        "aws-neuron-sdk compiler/error-codes/EVRF063.rst; compiler.rst Neuron 2.32 notes"
    ),
    rule!(
        "NCC_EVRF060",
        Error,
        "scatter whose combiner computes (not a plain overwrite) on integer or pred data \
         (also NCC_EVRF016, scatter-reduce on int/bool)",
        "aws-neuron-sdk compiler/error-codes/EVRF060.rst, EVRF016.rst"
    ),
    rule!(
        "NCC_EVRF031",
        Error,
        "iota-derived gather/scatter start indices that can exceed the operand dim minus the \
         slice (window) size, or go below 0 (also NCC_EVRF056)",
        "aws-neuron-sdk compiler/error-codes/EVRF031.rst, EVRF056.rst (compiler 2.29)"
    ),
    rule!(
        "NCC_EMOD025",
        Error,
        "dynamic shapes: a dynamic dimension in any shape, set-dimension-size, \
         get-dimension-size, or the PadToStatic / SliceToDynamic custom calls",
        "aws-neuron-sdk compiler/error-codes/EMOD025.rst; aws-neuron-sdk#1144"
    ),
    rule!(
        "NCC_EVRF006",
        Error,
        "rng-bit-generator with an algorithm other than RNG_DEFAULT",
        SDK_CODES
    ),
    rule!(
        "NCC_EVRF022",
        Error,
        "shift-right-arithmetic on a type other than 32-bit integers",
        SDK_CODES
    ),
    rule!(
        "NCC_EVRF017",
        Warning,
        "reduce-window: the compiler rejects base/window dilation > 1 and operand counts other \
         than 2 (EVRF017-019); the window is not in this project's proto subset, so the lint \
         cannot check it",
        "aws-neuron-sdk compiler/error-codes/EVRF017.rst-EVRF019.rst"
    ),
    // Runtime and frontend constraints from other sources.
    rule!(
        "LINT_COMMUNICATORS",
        Error,
        "more than 16 distinct replica-group sets (each one a communicator) in one module",
        "aws-neuron-sdk release-notes/components/runtime.rst (Neuron 2.32: 16 communicators per NEFF, was 12)"
    ),
    rule!(
        "LINT_RAW_PARAMETER_OUTPUT",
        Error,
        "an entry output that is a parameter itself (nkipy inserts a copy: \"The Neuron \
         compiler cannot handle outputs that are raw parameter references\")",
        "aws-neuron/nkipy nkipy/src/nkipy/core/trace.py"
    ),
    rule!(
        "LINT_DEVICE_LIST_GROUPS",
        Error,
        "a collective whose groups are given as collective_device_list (explicit or iota \
         form) instead of the legacy replica_groups list that every AWS writer emits",
        "transformers-neuronx hlo.py; nkipy core/backend/hlo.py; torch-xla Neuron dumps"
    ),
    rule!(
        "LINT_EMPTY_REPLICA_GROUPS",
        Warning,
        "a collective with no replica groups: neuronx-cc reads that as all ranks",
        "aws-neuron-sdk#1107"
    ),
    rule!(
        "LINT_UNSUPPORTED_OP",
        Error,
        "an opcode outside the documented operator table that no AWS writer emits (sort, topk, \
         while, conditional, call, ...; AWS's frontends turn argmax/top-k into custom calls)",
        OP_TABLE
    ),
    rule!(
        "LINT_UNDOCUMENTED_OP",
        Warning,
        "an elementwise opcode outside the documented table (e.g. `or`) with neither a \
         documented rejection nor an AWS writer that emits it: UNVERIFIED",
        OP_TABLE
    ),
    rule!(
        "LINT_EVIDENCED_OP",
        Info,
        "an opcode outside the 2022 table that AWS writers emit (logistic in NxD/TNX SiLU, \
         copy in nkipy, dynamic-slice in transformers-neuronx)",
        "GraphHelper llama/tp_2.js dump; nkipy trace.py; transformers-neuronx hlo.py"
    ),
    rule!(
        "LINT_REDUCE_COMPUTATION",
        Error,
        "a reduce whose computation is not add, maximum, minimum or multiply",
        OP_TABLE
    ),
    rule!(
        "LINT_REDUCE_INIT",
        Error,
        "a reduce whose init value is not a constant",
        OP_TABLE
    ),
    rule!(
        "LINT_POW_EXPONENT",
        Error,
        "power with a non-constant exponent",
        OP_TABLE
    ),
    rule!(
        "LINT_VARIADIC_REDUCE",
        Warning,
        "a variadic reduce (argmax as a (value, index) pair): accepted (NxD's TP argmax emits \
         it), but decode compile time went from ~1 to ~22 minutes with it",
        "aws-neuron-sdk#1210; neuronx-distributed operators/argmax.py"
    ),
    rule!(
        "LINT_DYNAMIC_INDEX",
        Warning,
        "dynamic-slice / dynamic-update-slice at runtime indices on a tensor that is not the \
         aliased KV state (the 2022 table documents constant indices only)",
        OP_TABLE
    ),
    // Allow-listed forms (info).
    rule!(
        "ALLOW_CUSTOM_CALL",
        Info,
        "a custom call whose target is on the recognised list (AwsNeuronRmsNorm, \
         AwsNeuronArgMax, AwsNeuronTopK, ...)",
        "aws-neuron-sdk compiler/error-codes/EHCA005.rst"
    ),
    rule!(
        "ALLOW_SCATTER",
        Info,
        "scatter that overwrites, or computes on float data (the decode KV-cache write of \
         transformers-neuronx, NxD and vLLM-neuron)",
        "transformers-neuronx layers/attention.py; vllm-project/vllm#15911"
    ),
    rule!(
        "ALLOW_KV_DYNAMIC_WRITE",
        Info,
        "dynamic-update-slice / dynamic-slice of the aliased KV state at runtime indices \
         (optimum-neuron's continuous-batching writes, transformers-neuronx's cache reads)",
        "optimum-neuron kvcache/kv_cache_manager.py; transformers-neuronx hlo.py"
    ),
    rule!(
        "ALLOW_COLLECTIVE",
        Info,
        "a collective with explicit groups in the legacy replica_groups field",
        "transformers-neuronx hlo.py; nkipy core/backend/hlo.py; aws-neuron-sdk#1107"
    ),
];

/// The rule with this code.
pub fn rule(code: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.code == code)
}

/// At most this many communicators (distinct replica-group sets) per NEFF (Neuron 2.32).
pub const MAX_COMMUNICATORS: usize = 16;

/// Custom-call targets neuronx-cc recognises (the NCC_EHCA005 / NCC_EVRF015 list, plus the
/// two newer targets documented by their own error codes).
pub const KNOWN_CUSTOM_CALL_TARGETS: &[&str] = &[
    "AwsNeuronErf",
    "AwsNeuronGelu",
    "AwsNeuronGeluApprxTanh",
    "AwsNeuronGeluBackward",
    "AwsNeuronSilu",
    "AwsNeuronSiluBackward",
    "AwsNeuronRmsNorm",
    "AwsNeuronSoftmax",
    "AwsNeuronSoftmaxBackward",
    "AwsNeuronCollectiveMatmul",
    "AwsNeuronIntMatmult",
    "AwsNeuronArgMax",
    "AwsNeuronArgMin",
    "AwsNeuronTopK",
    "AwsNeuronDropoutMaskV1",
    "AwsNeuronCustomNativeKernel",
    "AwsNeuronCustomOp",
    "AwsNeuronDevicePrint",
    "ResizeNearest",
    "ResizeBilinear",
    "ResizeNearestGrad",
    "AwsNeuronLNCShardingConstraint",
    "AwsNeuronTransferWithStaticRing",
    "AwsNeuronModuleMarkerStart-Forward",
    "AwsNeuronModuleMarkerStart-Backward",
    "AwsNeuronModuleMarkerEnd-Forward",
    "AwsNeuronModuleMarkerEnd-Backward",
    "NeuronBoundaryMarker-Start",
    "NeuronBoundaryMarker-End",
    // Documented by NCC_EVRF036-042/057/058 and NCC_EVRF043-055.
    "QuantizeMX",
    "__op$block_scaled_dot",
];

/// Opcodes of the documented operator table (the neuronx-cc release notes, with its later
/// additions: bitcast-convert, reverse, select-and-scatter, atan2, not, dynamic-update-slice),
/// plus `parameter`. Collectives, custom calls and the ops with their own rule are handled
/// apart.
const TABLE_OPCODES: &[&str] = &[
    "parameter",
    "abs",
    "add",
    "atan2",
    "batch-norm-training",
    "batch-norm-grad",
    "batch-norm-inference",
    "bitcast-convert",
    "broadcast",
    "ceil",
    "clamp",
    "compare",
    "concatenate",
    "constant",
    "convert",
    "cosine",
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
    "reverse",
    "rng-bit-generator",
    "rng",
    "rsqrt",
    "scatter",
    "select",
    "select-and-scatter",
    "shift-right-logical",
    "sign",
    "sine",
    "slice",
    "sqrt",
    "subtract",
    "tanh",
    "transpose",
    "tuple",
];

/// Outside the table, but emitted by AWS writers whose graphs compile.
const EVIDENCED_OPCODES: &[&str] = &["logistic", "copy"];

/// Elementwise opcodes outside the table with no evidence either way.
const UNDOCUMENTED_ELEMENTWISE: &[&str] = &[
    "or",
    "xor",
    "remainder",
    "shift-left",
    "round-nearest-afz",
    "round-nearest-even",
    "cbrt",
    "exponential-minus-one",
    "log-plus-one",
    "is-finite",
    "popcnt",
    "count-leading-zeros",
    "tan",
    "erf",
    "real",
    "imag",
    "convolution",
];

const COLLECTIVES: &[&str] = &[
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
];

/// One lint finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub instruction: String,
    pub opcode: String,
    /// The rule's code (see [`RULES`]), e.g. `"NCC_EVRF015"`.
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    /// The model scope from the instruction's metadata, when present.
    pub scope: String,
}

impl Finding {
    /// Would fail or must be fixed before a Neuron compile (an error).
    pub fn is_flagged(&self) -> bool {
        self.severity == Severity::Error
    }

    pub fn is_warning(&self) -> bool {
        self.severity == Severity::Warning
    }

    /// The rule this finding comes from.
    pub fn rule(&self) -> &'static Rule {
        rule(self.code).expect("every finding's code is in RULES")
    }
}

fn element_type(shape: Option<&ShapeProto>) -> Option<PrimitiveType> {
    shape.and_then(|s| PrimitiveType::try_from(s.element_type).ok())
}

/// Every array element type in `shape` (tuple shapes recursively).
fn leaf_types(shape: &ShapeProto, out: &mut Vec<PrimitiveType>) {
    match PrimitiveType::try_from(shape.element_type) {
        Ok(PrimitiveType::Tuple) => shape.tuple_shapes.iter().for_each(|s| leaf_types(s, out)),
        Ok(t) => out.push(t),
        Err(_) => {}
    }
}

fn has_dynamic_dim(shape: &ShapeProto) -> bool {
    shape.is_dynamic_dimension.iter().any(|d| *d) || shape.tuple_shapes.iter().any(has_dynamic_dim)
}

fn is_integer(t: PrimitiveType) -> bool {
    use PrimitiveType::*;
    matches!(
        t,
        Pred | S1 | S2 | S4 | S8 | S16 | S32 | S64 | U1 | U2 | U4 | U8 | U16 | U32 | U64
    )
}

/// The element-type rule `t` breaks, with a short reason.
fn dtype_rule(t: PrimitiveType) -> Option<(&'static str, &'static str)> {
    use PrimitiveType::*;
    Some(match t {
        S64 => ("NCC_EVRF062", "s64"),
        U64 => ("NCC_ESFH002", "u64"),
        F64 => ("LINT_F64", "f64"),
        C64 => ("NCC_EVRF004", "c64"),
        C128 => ("NCC_EVRF004", "c128"),
        F8e4m3fnuz => ("NCC_EVRF005", "f8e4m3fnuz"),
        F8e5m2fnuz => ("NCC_EVRF005", "f8e5m2fnuz"),
        F8e4m3b11fnuz => ("NCC_EVRF005", "f8e4m3b11fnuz"),
        F4e2m1fn => ("NCC_ESPP004", "f4e2m1fn"),
        F8e4m3fn => ("NCC_EVRF051", "f8e4m3fn"),
        F8e4m3 => ("NCC_EVRF052", "f8e4m3"),
        _ => return None,
    })
}

fn is_constant_like(id: i64, by_id: &HashMap<i64, &HloInstructionProto>) -> bool {
    match by_id.get(&id) {
        Some(i) if i.opcode == "constant" => true,
        Some(i)
            if matches!(
                i.opcode.as_str(),
                "broadcast" | "reshape" | "convert" | "copy"
            ) =>
        {
            i.operand_ids.iter().all(|o| is_constant_like(*o, by_id))
        }
        _ => false,
    }
}

/// True when `i`'s first operand is an aliased parameter (KV-cache state), directly or
/// through a chain of dynamic-update-slices (one per sequence of a batch).
fn on_state(
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

fn root_of(comp: &HloComputationProto) -> Option<&HloInstructionProto> {
    comp.instructions.iter().find(|i| i.id == comp.root_id)
}

/// True when a scatter combiner only overwrites: its root is its second parameter.
fn is_overwrite(comp: Option<&&HloComputationProto>) -> bool {
    comp.and_then(|c| root_of(c))
        .is_some_and(|r| r.opcode == "parameter" && r.parameter_number == 1)
}

/// A group set in canonical form (each group sorted, groups sorted), for counting
/// communicators.
fn group_key(i: &HloInstructionProto) -> String {
    if let Some(list) = &i.collective_device_list {
        return format!("device-list {list:?}");
    }
    if i.replica_groups.is_empty() {
        return "all".into();
    }
    let mut groups: Vec<Vec<i64>> = i
        .replica_groups
        .iter()
        .map(|g| {
            let mut g = g.replica_ids.clone();
            g.sort();
            g
        })
        .collect();
    groups.sort();
    format!("{groups:?}")
}

// ---------------------------------------------------------------------------------------------
// Value ranges of integer index computations, for NCC_EVRF031.

/// The closed range `[lo, hi]` an integer tensor's elements lie in, and whether an iota
/// feeds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    lo: i128,
    hi: i128,
    iota: bool,
}

impl Range {
    fn union(a: Range, b: Range) -> Range {
        Range {
            lo: a.lo.min(b.lo),
            hi: a.hi.max(b.hi),
            iota: a.iota || b.iota,
        }
    }
}

fn literal_range(lit: &LiteralProto) -> Option<(i128, i128)> {
    let values: Vec<i128> = match element_type(lit.shape.as_ref())? {
        PrimitiveType::S32 => lit.s32s.iter().map(|v| *v as i128).collect(),
        PrimitiveType::S64 => lit.s64s.iter().map(|v| *v as i128).collect(),
        PrimitiveType::U32 => lit.u32s.iter().map(|v| *v as i128).collect(),
        PrimitiveType::U64 => lit.u64s.iter().map(|v| *v as i128).collect(),
        PrimitiveType::S8 => lit.s8s.iter().map(|v| *v as i8 as i128).collect(),
        PrimitiveType::U8 => lit.u8s.iter().map(|v| *v as i128).collect(),
        _ => return None,
    };
    Some((*values.iter().min()?, *values.iter().max()?))
}

struct Ranges<'a> {
    by_id: &'a HashMap<i64, &'a HloInstructionProto>,
    memo: HashMap<i64, Option<Range>>,
}

impl Ranges<'_> {
    fn of(&mut self, id: i64, depth: usize) -> Option<Range> {
        if let Some(r) = self.memo.get(&id) {
            return *r;
        }
        let r = if depth > 64 {
            None
        } else {
            self.compute(id, depth + 1)
        };
        self.memo.insert(id, r);
        r
    }

    fn compute(&mut self, id: i64, depth: usize) -> Option<Range> {
        let i = *self.by_id.get(&id)?;
        let op = |s: &mut Self, k: usize| -> Option<Range> {
            let o = *i.operand_ids.get(k)?;
            s.of(o, depth)
        };
        let dims = |i: &HloInstructionProto| -> Vec<i64> {
            i.shape
                .as_ref()
                .map(|s| s.dimensions.clone())
                .unwrap_or_default()
        };
        if !element_type(i.shape.as_ref()).is_some_and(is_integer) {
            return None;
        }
        match i.opcode.as_str() {
            "iota" => {
                let d = *i.dimensions.first()? as usize;
                let n = *dims(i).get(d)? as i128;
                (n > 0).then_some(Range {
                    lo: 0,
                    hi: n - 1,
                    iota: true,
                })
            }
            "constant" => {
                let (lo, hi) = literal_range(i.literal.as_deref()?)?;
                Some(Range {
                    lo,
                    hi,
                    iota: false,
                })
            }
            "slice" => {
                // A slice of an iota along its dimension: exactly the sliced values.
                let src = *self.by_id.get(i.operand_ids.first()?)?;
                if src.opcode == "iota" {
                    let d = *src.dimensions.first()? as usize;
                    let sd = i.slice_dimensions.get(d)?;
                    let stride = sd.stride.max(1) as i128;
                    let n = (sd.limit as i128 - sd.start as i128 + stride - 1) / stride;
                    return (n > 0).then_some(Range {
                        lo: sd.start as i128,
                        hi: sd.start as i128 + stride * (n - 1),
                        iota: true,
                    });
                }
                op(self, 0)
            }
            "broadcast" | "reshape" | "transpose" | "copy" | "convert" | "bitcast" => op(self, 0),
            "negate" => op(self, 0).map(|a| Range {
                lo: -a.hi,
                hi: -a.lo,
                iota: a.iota,
            }),
            "add" | "subtract" | "multiply" | "maximum" | "minimum" => {
                let (a, b) = (op(self, 0)?, op(self, 1)?);
                let (lo, hi) = match i.opcode.as_str() {
                    "add" => (a.lo + b.lo, a.hi + b.hi),
                    "subtract" => (a.lo - b.hi, a.hi - b.lo),
                    "maximum" => (a.lo.max(b.lo), a.hi.max(b.hi)),
                    "minimum" => (a.lo.min(b.lo), a.hi.min(b.hi)),
                    _ => {
                        let p = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi];
                        (*p.iter().min()?, *p.iter().max()?)
                    }
                };
                Some(Range {
                    lo,
                    hi,
                    iota: a.iota || b.iota,
                })
            }
            "clamp" => {
                let (mn, x, mx) = (op(self, 0)?, op(self, 1)?, op(self, 2)?);
                Some(Range {
                    lo: x.lo.max(mn.lo).min(mx.lo),
                    hi: x.hi.max(mn.hi).min(mx.hi),
                    iota: x.iota,
                })
            }
            "select" => Some(Range::union(op(self, 1)?, op(self, 2)?)),
            "concatenate" => {
                let mut acc: Option<Range> = None;
                for k in 0..i.operand_ids.len() {
                    let r = op(self, k)?;
                    acc = Some(acc.map_or(r, |a| Range::union(a, r)));
                }
                acc
            }
            _ => None,
        }
    }

    /// The range of component `c` of the index vectors of `indices` (vectors along
    /// `index_vector_dim`), when it can be told apart.
    fn component(&mut self, indices: i64, index_vector_dim: i64, c: usize) -> Option<Range> {
        let i = *self.by_id.get(&indices)?;
        let dims = &i.shape.as_ref()?.dimensions;
        let ivd = index_vector_dim as usize;
        if ivd >= dims.len() || dims[ivd] == 1 {
            return (c == 0).then(|| self.of(indices, 0)).flatten();
        }
        if i.opcode == "concatenate" && i.dimensions.first() == Some(&index_vector_dim) {
            let mut offset = 0usize;
            for o in &i.operand_ids {
                let n = self.by_id.get(o)?.shape.as_ref()?.dimensions.get(ivd)?;
                let n = *n as usize;
                if c < offset + n {
                    return self.component(*o, index_vector_dim, c - offset);
                }
                offset += n;
            }
        }
        None
    }
}

fn dims_of(id: i64, by_id: &HashMap<i64, &HloInstructionProto>) -> Option<Vec<i64>> {
    Some(by_id.get(&id)?.shape.as_ref()?.dimensions.clone())
}

/// A gather's or scatter's start indices: the indices instruction, its index vector dim, and
/// per index component the operand dim it addresses and the largest start in bounds there.
struct IndexBounds {
    indices: i64,
    index_vector_dim: i64,
    components: Vec<(i64, i64)>,
}

/// [`IndexBounds`] of a gather or scatter (`None` for forms the lint does not follow).
fn index_bounds(
    i: &HloInstructionProto,
    by_id: &HashMap<i64, &HloInstructionProto>,
) -> Option<IndexBounds> {
    let operand = dims_of(*i.operand_ids.first()?, by_id)?;
    let indices = *i.operand_ids.get(1)?;
    if i.opcode == "gather" {
        let g = i.gather_dimension_numbers.as_ref()?;
        if !g.operand_batching_dims.is_empty() {
            return None;
        }
        let bounds = g
            .start_index_map
            .iter()
            .map(|&d| {
                let size = *i.gather_slice_sizes.get(d as usize)?;
                Some((d, operand.get(d as usize)? - size))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(IndexBounds {
            indices,
            index_vector_dim: g.index_vector_dim,
            components: bounds,
        })
    } else {
        let s = i.scatter_dimension_numbers.as_ref()?;
        if !s.input_batching_dims.is_empty() {
            return None;
        }
        let updates = dims_of(*i.operand_ids.get(2)?, by_id)?;
        // Operand dims not inserted take the update window dims in order.
        let window: Vec<i64> = (0..operand.len() as i64)
            .filter(|d| !s.inserted_window_dims.contains(d))
            .collect();
        let bounds = s
            .scatter_dims_to_operand_dims
            .iter()
            .map(|&d| {
                let size = match window.iter().position(|w| *w == d) {
                    Some(k) => *updates.get(*s.update_window_dims.get(k)? as usize)?,
                    None => 1,
                };
                Some((d, operand.get(d as usize)? - size))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(IndexBounds {
            indices,
            index_vector_dim: s.index_vector_dim,
            components: bounds,
        })
    }
}

// ---------------------------------------------------------------------------------------------

struct Sink<'a> {
    findings: &'a mut Vec<Finding>,
}

impl Sink<'_> {
    fn push(&mut self, i: &HloInstructionProto, code: &'static str, message: String) {
        let severity = rule(code)
            .unwrap_or_else(|| panic!("lint code {code} is not in RULES"))
            .severity;
        self.findings.push(Finding {
            instruction: i.name.clone(),
            opcode: i.opcode.clone(),
            code,
            severity,
            message,
            scope: i
                .metadata
                .as_ref()
                .map(|m| m.op_name.clone())
                .unwrap_or_default(),
        });
    }
}

/// Lints a module: every finding, in instruction order (module-level findings last).
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
    let mut sink = Sink {
        findings: &mut findings,
    };
    // Distinct replica-group sets, in first-use order, with the instruction that used each
    // first.
    let mut group_sets: Vec<(String, HloInstructionProto)> = Vec::new();
    // Each instruction's leaf element types, in one buffer for the whole module.
    let mut types = Vec::new();

    for comp in &m.computations {
        let by_id: HashMap<i64, &HloInstructionProto> =
            comp.instructions.iter().map(|i| (i.id, i)).collect();
        let mut ranges = Ranges {
            by_id: &by_id,
            memo: HashMap::default(),
        };
        let is_entry = comp.id == m.entry_computation_id;
        let operand_type = |i: &HloInstructionProto, k: usize| {
            i.operand_ids
                .get(k)
                .and_then(|o| by_id.get(o))
                .and_then(|o| element_type(o.shape.as_ref()))
        };
        for i in &comp.instructions {
            let op = i.opcode.as_str();
            let result_type = element_type(i.shape.as_ref());

            // Element types and dynamic dims of the result.
            if let Some(shape) = &i.shape {
                types.clear();
                leaf_types(shape, &mut types);
                let mut seen = HashSet::default();
                for &t in &types {
                    if let Some((code, name)) = dtype_rule(t) {
                        if seen.insert(code) {
                            sink.push(i, code, format!("`{op}` produces {name} values"));
                        }
                    }
                }
                if has_dynamic_dim(shape) {
                    sink.push(
                        i,
                        "NCC_EMOD025",
                        format!("`{op}` has a dynamic dimension in its shape"),
                    );
                }
            }

            match op {
                _ if TABLE_OPCODES.contains(&op) => {}
                "custom-call" | "dynamic-slice" | "shift-right-arithmetic" => {}
                _ if COLLECTIVES.contains(&op) => {}
                "set-dimension-size" | "get-dimension-size" => sink.push(
                    i,
                    "NCC_EMOD025",
                    format!("`{op}` makes or reads a dynamic shape"),
                ),
                "reduce-window" => sink.push(
                    i,
                    "NCC_EVRF017",
                    "reduce-window: check for dilation > 1 and operand count by hand".into(),
                ),
                _ if EVIDENCED_OPCODES.contains(&op) => sink.push(
                    i,
                    "LINT_EVIDENCED_OP",
                    format!("`{op}` is not in the 2022 operator table, but AWS writers emit it"),
                ),
                _ if UNDOCUMENTED_ELEMENTWISE.contains(&op) => sink.push(
                    i,
                    "LINT_UNDOCUMENTED_OP",
                    format!(
                        "`{op}` is not in neuronx-cc's documented operator table and no AWS \
                         writer is known to emit it (no rejection is documented either)"
                    ),
                ),
                _ => sink.push(
                    i,
                    "LINT_UNSUPPORTED_OP",
                    format!("`{op}` is not in neuronx-cc's documented operator table"),
                ),
            }

            match op {
                "custom-call" => {
                    let target = i.custom_call_target.as_str();
                    if matches!(target, "PadToStatic" | "SliceToDynamic") {
                        sink.push(
                            i,
                            "NCC_EMOD025",
                            format!("custom-call `{target}` makes a dynamic shape"),
                        );
                    } else if KNOWN_CUSTOM_CALL_TARGETS.contains(&target) {
                        sink.push(
                            i,
                            "ALLOW_CUSTOM_CALL",
                            format!("custom-call `{target}` (a recognised target)"),
                        );
                    } else {
                        sink.push(
                            i,
                            "NCC_EVRF015",
                            format!(
                                "custom-call target `{target}` is not one neuronx-cc recognises \
                                 (NCC_EVRF015 / NCC_EHCA005)"
                            ),
                        );
                    }
                    if target == "AwsNeuronTopK" && operand_type(i, 0).is_some_and(is_integer) {
                        sink.push(i, "NCC_EVRF013", "AwsNeuronTopK on integer data".into());
                    }
                }
                "topk" if operand_type(i, 0).is_some_and(is_integer) => {
                    sink.push(i, "NCC_EVRF013", "`topk` on integer data".into())
                }
                "dot" => {
                    let ints: Vec<String> = (0..i.operand_ids.len())
                        .filter_map(|k| operand_type(i, k))
                        .chain(result_type)
                        .filter(|t| is_integer(*t))
                        .map(|t| t.as_str_name().to_lowercase())
                        .collect();
                    if !ints.is_empty() {
                        sink.push(
                            i,
                            "NCC_EVRF035",
                            format!("dot on integer data ({})", ints.join(", ")),
                        );
                    }
                }
                "scatter" => {
                    let data = operand_type(i, 0);
                    let overwrite = i
                        .called_computation_ids
                        .first()
                        .is_some_and(|c| is_overwrite(comps.get(c)));
                    if !overwrite && data.is_some_and(is_integer) {
                        sink.push(
                            i,
                            "NCC_EVRF060",
                            format!(
                                "scatter with a computing combiner on {} data (NCC_EVRF060 / \
                                 NCC_EVRF016; an overwrite scatter is fine)",
                                data.map(|t| t.as_str_name().to_lowercase())
                                    .unwrap_or_default()
                            ),
                        );
                    } else {
                        sink.push(
                            i,
                            "ALLOW_SCATTER",
                            if overwrite {
                                "scatter (overwrite: NxD's KV-cache update)".into()
                            } else {
                                "scatter with a computing combiner on float data".into()
                            },
                        );
                    }
                }
                "rng-bit-generator" if i.rng_algorithm != 0 => sink.push(
                    i,
                    "NCC_EVRF006",
                    format!(
                        "rng-bit-generator with algorithm {}",
                        xla_proto::RandomAlgorithm::try_from(i.rng_algorithm)
                            .map(|a| a.as_str_name().to_string())
                            .unwrap_or_else(|_| i.rng_algorithm.to_string())
                    ),
                ),
                "shift-right-arithmetic"
                    if !matches!(result_type, Some(PrimitiveType::S32 | PrimitiveType::U32)) =>
                {
                    sink.push(
                        i,
                        "NCC_EVRF022",
                        "shift-right-arithmetic on a non-32-bit type".into(),
                    )
                }
                "reduce" => {
                    let n = i.operand_ids.len();
                    if n > 2 {
                        sink.push(
                            i,
                            "LINT_VARIADIC_REDUCE",
                            format!(
                                "variadic reduce over {} arrays (e.g. argmax): compiles, but \
                                 slowly (aws-neuron-sdk#1210)",
                                n / 2
                            ),
                        );
                    }
                    for init in &i.operand_ids[n / 2..] {
                        if !is_constant_like(*init, &by_id) {
                            sink.push(
                                i,
                                "LINT_REDUCE_INIT",
                                "reduce with a non-constant init value".into(),
                            );
                        }
                    }
                    if n <= 2 {
                        for c in &i.called_computation_ids {
                            let root = comps
                                .get(c)
                                .and_then(|c| root_of(c))
                                .map(|r| r.opcode.as_str());
                            if !matches!(root, Some("add" | "maximum" | "minimum" | "multiply")) {
                                sink.push(
                                    i,
                                    "LINT_REDUCE_COMPUTATION",
                                    format!(
                                        "reduce with a `{}` computation (only add, max, min, mul)",
                                        root.unwrap_or("?")
                                    ),
                                );
                            }
                        }
                    }
                }
                "power"
                    if !i
                        .operand_ids
                        .get(1)
                        .is_some_and(|e| is_constant_like(*e, &by_id)) =>
                {
                    sink.push(
                        i,
                        "LINT_POW_EXPONENT",
                        "power with a non-constant exponent".into(),
                    );
                }
                "dynamic-slice" | "dynamic-update-slice" => {
                    let first_index = if op == "dynamic-slice" { 1 } else { 2 };
                    let runtime = i.operand_ids[first_index.min(i.operand_ids.len())..]
                        .iter()
                        .any(|o| !is_constant_like(*o, &by_id));
                    if runtime && is_entry && on_state(i, &by_id, &aliased) {
                        sink.push(
                            i,
                            "ALLOW_KV_DYNAMIC_WRITE",
                            format!("`{op}` of the aliased KV state at runtime indices"),
                        );
                    } else if runtime {
                        sink.push(
                            i,
                            "LINT_DYNAMIC_INDEX",
                            format!(
                                "`{op}` at runtime indices on a tensor that is not the aliased \
                                 KV state (the 2022 table documents constant indices only)"
                            ),
                        );
                    } else if op == "dynamic-slice" {
                        sink.push(
                            i,
                            "LINT_EVIDENCED_OP",
                            "`dynamic-slice` is not in the 2022 operator table, but \
                             transformers-neuronx emits it"
                                .into(),
                        );
                    }
                }
                _ if COLLECTIVES.contains(&op) => {
                    match op {
                        "all-reduce" if result_type_or_leaf_is_integer(i) => {
                            sink.push(i, "NCC_EVRF061", "all-reduce of integer data".into())
                        }
                        "reduce-scatter" if result_type_or_leaf_is_integer(i) => {
                            sink.push(i, "NCC_EVRF063", "reduce-scatter of integer data".into())
                        }
                        _ => {}
                    }
                    if op != "collective-permute" {
                        if i.collective_device_list.is_some() {
                            sink.push(
                                i,
                                "LINT_DEVICE_LIST_GROUPS",
                                format!(
                                    "`{op}` gives its groups as collective_device_list; emit \
                                     explicit groups in the legacy replica_groups field"
                                ),
                            );
                        } else if i.replica_groups.is_empty() {
                            sink.push(
                                i,
                                "LINT_EMPTY_REPLICA_GROUPS",
                                format!("`{op}` with no replica groups (means all ranks)"),
                            );
                        } else {
                            sink.push(i, "ALLOW_COLLECTIVE", format!("collective `{op}`"));
                        }
                        let key = group_key(i);
                        if !group_sets.iter().any(|(k, _)| *k == key) {
                            group_sets.push((key, i.clone()));
                        }
                    } else {
                        sink.push(i, "ALLOW_COLLECTIVE", format!("collective `{op}`"));
                    }
                }
                _ => {}
            }

            // Iota-derived gather/scatter indices that can leave the operand.
            if matches!(op, "gather" | "scatter") {
                if let Some(b) = index_bounds(i, &by_id) {
                    for (c, (dim, max_start)) in b.components.iter().enumerate() {
                        let Some(r) = ranges.component(b.indices, b.index_vector_dim, c) else {
                            continue;
                        };
                        if r.iota && (r.lo < 0 || r.hi > *max_start as i128) {
                            sink.push(
                                i,
                                "NCC_EVRF031",
                                format!(
                                    "{op} index component {c} (operand dim {dim}) is \
                                     iota-derived with values {}..={}, outside 0..={max_start} \
                                     (NCC_EVRF031 / NCC_EVRF056)",
                                    r.lo, r.hi
                                ),
                            );
                        }
                    }
                }
            }
        }

        // The entry's outputs must not be raw parameters.
        if is_entry {
            if let Some(root) = root_of(comp) {
                let outputs: Vec<&HloInstructionProto> = if root.opcode == "tuple" {
                    root.operand_ids
                        .iter()
                        .filter_map(|o| by_id.get(o).copied())
                        .collect()
                } else {
                    vec![root]
                };
                for (k, o) in outputs.iter().enumerate() {
                    if o.opcode == "parameter" {
                        sink.push(
                            o,
                            "LINT_RAW_PARAMETER_OUTPUT",
                            format!(
                                "output {k} is parameter {} itself; return a copy",
                                o.parameter_number
                            ),
                        );
                    }
                }
            }
        }
    }

    if group_sets.len() > MAX_COMMUNICATORS {
        let (_, first_over) = &group_sets[MAX_COMMUNICATORS];
        sink.push(
            first_over,
            "LINT_COMMUNICATORS",
            format!(
                "the module uses {} distinct replica-group sets; the Neuron runtime allows at \
                 most {MAX_COMMUNICATORS} communicators per NEFF",
                group_sets.len()
            ),
        );
    }
    findings
}

fn result_type_or_leaf_is_integer(i: &HloInstructionProto) -> bool {
    let mut types = Vec::new();
    if let Some(s) = &i.shape {
        leaf_types(s, &mut types);
    }
    types.into_iter().any(is_integer)
}
