//! Shared by every runtime test binary: finding the plugin, and a tiny hand-written HLO module
//! builder that follows hlo.md §2 (module-unique names, per-computation ids, callees first,
//! `host_program_shape` with one name per parameter).

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use pjrt_runtime::{Client, ClientOptions, ElementType, Plugin};
use xla_proto::hlo_input_output_alias_proto::AliasEntryProto;
use xla_proto::{
    HloComputationProto, HloInputOutputAliasProto, HloInstructionProto, HloModuleProto, Kind,
    LayoutProto, LiteralProto, ProgramShapeProto, ReplicaGroup, ShapeProto,
};

/// The plugin from `$PJRT_PLUGIN` (or the default install path). A missing plugin FAILS the test
/// with the install hint: these tests are the only check that the runtime works at all, so they
/// must never pass vacuously.
pub fn plugin() -> Plugin {
    match Plugin::from_env() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// A client with `devices` CPU devices.
pub fn cpu_client(devices: i64) -> Client {
    Client::new(
        &plugin(),
        &ClientOptions {
            cpu_device_count: Some(devices),
        },
    )
    .unwrap_or_else(|e| panic!("creating a CPU client with {devices} devices: {e}"))
}

pub fn shape(ty: ElementType, dims: &[i64]) -> ShapeProto {
    ShapeProto {
        element_type: ty.to_primitive_type() as i32,
        dimensions: dims.to_vec(),
        ..Default::default()
    }
}

pub fn f32s(dims: &[i64]) -> ShapeProto {
    shape(ElementType::F32, dims)
}

pub fn tuple_shape(elements: Vec<ShapeProto>) -> ShapeProto {
    ShapeProto {
        element_type: xla_proto::PrimitiveType::Tuple as i32,
        tuple_shapes: elements,
        ..Default::default()
    }
}

/// Builds one computation. Instruction names are `<computation>.<opcode>.<id>`, which keeps them
/// unique across the module as long as computation names are.
pub struct Comp {
    name: String,
    id: i64,
    instructions: Vec<HloInstructionProto>,
    parameters: Vec<ShapeProto>,
}

impl Comp {
    pub fn new(name: &str, id: i64) -> Comp {
        Comp {
            name: name.into(),
            id,
            instructions: Vec::new(),
            parameters: Vec::new(),
        }
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    /// Adds parameter number `self.parameters.len()`.
    pub fn param(&mut self, shape: ShapeProto) -> i64 {
        let n = self.parameters.len() as i64;
        self.parameters.push(shape.clone());
        self.inst("parameter", shape, &[], |i| i.parameter_number = n)
    }

    /// Adds an instruction and returns its id; `extra` fills in op-specific fields.
    pub fn inst(
        &mut self,
        opcode: &str,
        shape: ShapeProto,
        operands: &[i64],
        extra: impl FnOnce(&mut HloInstructionProto),
    ) -> i64 {
        let id = self.instructions.len() as i64 + 1;
        let mut inst = HloInstructionProto {
            name: format!("{}.{}.{}", self.name, opcode.replace('-', "_"), id),
            opcode: opcode.into(),
            shape: Some(shape),
            id,
            operand_ids: operands.to_vec(),
            ..Default::default()
        };
        extra(&mut inst);
        self.instructions.push(inst);
        id
    }

    /// A scalar constant. XLA rejects a literal whose shape has no layout ("LiteralProto has no
    /// layout"), and then requires the instruction's shape to carry the same layout
    /// (`Shape::Equal().MinorToMajorOnlyInLayout()` RET_CHECK); a scalar's layout is empty.
    pub fn s32_constant(&mut self, value: i32) -> i64 {
        let with_layout = ShapeProto {
            layout: Some(LayoutProto::default()),
            ..shape(ElementType::S32, &[])
        };
        self.inst("constant", with_layout.clone(), &[], |i| {
            i.literal = Some(Box::new(LiteralProto {
                shape: Some(with_layout),
                s32s: vec![value],
                ..Default::default()
            }))
        })
    }

    pub fn finish(self, root: i64) -> HloComputationProto {
        let result = self.instructions[(root - 1) as usize].shape.clone();
        HloComputationProto {
            program_shape: Some(ProgramShapeProto {
                parameter_names: (0..self.parameters.len())
                    .map(|i| format!("p{i}"))
                    .collect(),
                parameters: self.parameters,
                result,
            }),
            name: self.name,
            instructions: self.instructions,
            id: self.id,
            root_id: root,
        }
    }
}

/// A module whose entry is the last computation (callees must come first).
pub fn module(name: &str, computations: Vec<HloComputationProto>) -> HloModuleProto {
    let entry = computations.last().expect("at least one computation");
    HloModuleProto {
        name: name.into(),
        entry_computation_name: entry.name.clone(),
        entry_computation_id: entry.id,
        host_program_shape: entry.program_shape.clone(),
        computations,
        ..Default::default()
    }
}

/// `(T[], T[]) -> T[]` addition, the `to_apply` of reductions.
pub fn scalar_add(name: &str, id: i64, ty: ElementType) -> HloComputationProto {
    let mut c = Comp::new(name, id);
    let a = c.param(shape(ty, &[]));
    let b = c.param(shape(ty, &[]));
    let sum = c.inst("add", shape(ty, &[]), &[a, b], |_| {});
    c.finish(sum)
}

pub fn replica_groups(groups: &[&[i64]]) -> Vec<ReplicaGroup> {
    groups
        .iter()
        .map(|g| ReplicaGroup {
            replica_ids: g.to_vec(),
        })
        .collect()
}

/// `input_output_alias` entries `(output_shape_index, parameter_number)`, all may-alias.
pub fn aliases(entries: &[(&[i64], i64)]) -> HloInputOutputAliasProto {
    HloInputOutputAliasProto {
        entries: entries
            .iter()
            .map(|&(output, param)| AliasEntryProto {
                output_shape_index: output.to_vec(),
                parameter_number: param,
                parameter_shape_index: vec![],
                kind: Kind::MayAlias as i32,
            })
            .collect(),
    }
}

/// `f32[2,3] + f32[2,3]`, the smallest useful module.
pub fn add_module() -> HloModuleProto {
    let mut c = Comp::new("main", 0);
    let a = c.param(f32s(&[2, 3]));
    let b = c.param(f32s(&[2, 3]));
    let sum = c.inst("add", f32s(&[2, 3]), &[a, b], |_| {});
    module("add_module", vec![c.finish(sum)])
}
