//! Graph → `HloModuleProto`. Module-level policy lives here (entry signature, root tuple,
//! aliasing, metadata, Neuron I/O names); per-op emission lives with each op in `ir::ops`.

use crate::ir::emit::{shape_proto, ModuleEmitter};
use crate::ir::{verify, AliasKind, Graph, Op, Type, VerifyErrors};
use xla_proto::{
    hlo_input_output_alias_proto::AliasEntryProto, FrontendAttributes, HloInputOutputAliasProto,
    HloModuleProto, Kind, OpMetadata, ProgramShapeProto,
};

#[derive(Clone, Debug)]
pub struct LowerOptions {
    /// Stamp `neff_input_names` / `neff_output_names` frontend attributes on the parameters and
    /// the root tuple, as Neuron's tooling does, so NEFF I/O tensors have stable names.
    pub neff_io_names: bool,
    /// Emit `OpMetadata` (scope path and Rust source location) on every instruction.
    pub metadata: bool,
    /// Run the IR verifier first. Only skip it for a graph that `GraphBuilder::finish`
    /// verified and that only invariant-preserving passes touched since; debug builds verify
    /// regardless.
    pub verify: bool,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            neff_io_names: true,
            metadata: true,
            verify: true,
        }
    }
}

/// `scope/name` (or `name` at the top), written without the formatting machinery: it runs
/// once per node.
fn scoped_name(scope: &str, name: &str) -> String {
    let mut s = String::with_capacity(scope.len() + 1 + name.len());
    if !scope.is_empty() {
        s.push_str(scope);
        s.push('/');
    }
    s.push_str(name);
    s
}

/// Verifies `g` and lowers it. The entry computation is `main`; its root is always a tuple of
/// the graph outputs, so output `k` of the module is tuple element `{k}`.
pub fn lower(g: &Graph, opts: &LowerOptions) -> Result<HloModuleProto, VerifyErrors> {
    if opts.verify || cfg!(debug_assertions) {
        verify(g)?;
    }
    let mut m = ModuleEmitter::new();
    let mut entry = m.begin("main");
    // Some ops lower to more than one instruction (a reduce adds its init constant), but
    // fewer than one in four; growing past the room would copy every instruction.
    entry.reserve(g.node_count() + g.node_count() / 4 + 16);
    let mut values = vec![-1i64; g.index_bound()];
    // (number, shape, name) of each entry parameter, for the host program shape.
    let mut params = Vec::new();

    let mut operands: Vec<i64> = Vec::new();
    for n in g.topo_order() {
        let node = g.node(n);
        operands.clear();
        operands.extend(g.operands(n).iter().map(|o| values[o.index()]));
        let start = entry.instruction_count();
        let id = node.op.lower(&mut entry, &operands, &node.ty);
        let p = &node.provenance;
        let metadata = opts.metadata.then(|| OpMetadata {
            op_type: node.op.name().to_string(),
            op_name: scoped_name(&p.scope, node.op.name()),
            source_file: p.file.to_string(),
            source_line: p.line as i32,
            ..Default::default()
        });
        if let Some((last, rest)) = entry.instructions_from(start).split_last_mut() {
            for instr in rest {
                instr.metadata = metadata.clone();
            }
            last.metadata = metadata;
        }
        if let Op::Parameter(param) = &node.op {
            params.push((param.number, shape_proto(&node.ty), param.name.clone()));
            if opts.neff_io_names {
                let instr = entry
                    .instructions_from(start)
                    .last_mut()
                    .expect("parameter emitted");
                instr.frontend_attributes = Some(attrs([(
                    "neff_input_names",
                    format!("input{}", param.number),
                )]));
            }
        }
        values[n.index()] = id;
    }

    let out_types: Vec<_> = g
        .outputs
        .iter()
        .map(|o| {
            g.node(*o)
                .ty
                .as_array()
                .expect("verified: outputs are arrays")
                .clone()
        })
        .collect();
    let out_ids: Vec<i64> = g.outputs.iter().map(|o| values[o.index()]).collect();
    let root_ty = Type::Tuple(out_types);
    let root = entry.emit("tuple", &root_ty, &out_ids, |i| {
        if opts.neff_io_names {
            let names: Vec<String> = (0..out_ids.len()).map(|k| format!("output{k}")).collect();
            i.frontend_attributes = Some(attrs([("neff_output_names", names.join(","))]));
        }
    });
    let entry_id = entry.finish(root);

    params.sort_by_key(|(number, _, _)| *number);
    let (parameters, parameter_names): (Vec<_>, Vec<_>) = params
        .into_iter()
        .map(|(_, shape, name)| (shape, name))
        .unzip();

    let input_output_alias = (!g.aliases.is_empty()).then(|| HloInputOutputAliasProto {
        entries: g
            .aliases
            .iter()
            .map(|a| AliasEntryProto {
                output_shape_index: vec![a.output as i64],
                parameter_number: a.parameter,
                parameter_shape_index: vec![],
                kind: match a.kind {
                    AliasKind::May => Kind::MayAlias,
                    AliasKind::Must => Kind::MustAlias,
                } as i32,
            })
            .collect(),
    });

    let module = HloModuleProto {
        name: g.name.clone(),
        entry_computation_name: "main".to_string(),
        entry_computation_id: entry_id,
        computations: m.into_computations(),
        host_program_shape: Some(ProgramShapeProto {
            parameters,
            result: Some(shape_proto(&root_ty)),
            parameter_names,
        }),
        input_output_alias,
        frontend_attributes: (!g.attributes.is_empty()).then(|| FrontendAttributes {
            map: g.attributes.clone().into_iter().collect(),
        }),
        ..Default::default()
    };
    // The emitter upholds XLA's module rules by construction; this keeps it honest in tests
    // and debug builds at no cost to release builds.
    debug_assert_eq!(super::check::check_module(&module), Ok(()));
    Ok(module)
}

fn attrs<const N: usize>(pairs: [(&str, String); N]) -> FrontendAttributes {
    FrontendAttributes {
        map: pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}
