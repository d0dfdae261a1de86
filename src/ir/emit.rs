//! Module-wide emission state: one id counter for computations and instructions, module-unique
//! names, and the cache of generated sub-computations (reducers, combiners). It lives in `ir`
//! because every op's lowering (in `ir::ops`) emits through it; `hlo::lower` adds the
//! module-level policy on top.

use super::{ArrayType, DType, Literal, Type};
use std::collections::{BTreeMap, HashSet};
use xla_proto::{
    HloComputationProto, HloInstructionProto, LayoutProto, PrimitiveType, ProgramShapeProto,
    ShapeProto,
};

#[derive(Default)]
pub struct ModuleEmitter {
    next_id: i64,
    names: HashSet<String>,
    /// Finished computations, callees first.
    pub(crate) computations: Vec<HloComputationProto>,
    subcomputations: BTreeMap<String, i64>,
}

impl ModuleEmitter {
    pub fn new() -> Self {
        Self::default()
    }

    fn fresh_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Reserves `base`, or `base.N` when taken: instruction names are module-global in XLA.
    /// Only caller-chosen names (parameters, computations) go through here; `<opcode>.<id>`
    /// names are unique by their id.
    fn unique_name(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while !self.names.insert(name.clone()) {
            name = format!("{base}.{n}");
            n += 1;
        }
        name
    }

    pub fn begin(&mut self, name: &str) -> CompEmitter<'_> {
        let id = self.fresh_id();
        let name = self.unique_name(name);
        CompEmitter {
            m: self,
            name,
            id,
            instrs: Vec::new(),
            params: BTreeMap::new(),
        }
    }

    /// Returns the id of the cached sub-computation `key`, building it on first use. Building
    /// a callee finishes it before its caller, which keeps computations callee-first.
    pub fn subcomputation(
        &mut self,
        key: &str,
        build: impl FnOnce(&mut CompEmitter<'_>) -> i64,
    ) -> i64 {
        if let Some(&id) = self.subcomputations.get(key) {
            return id;
        }
        let mut c = self.begin(key);
        let root = build(&mut c);
        let id = c.finish(root);
        self.subcomputations.insert(key.to_string(), id);
        id
    }

    pub fn into_computations(self) -> Vec<HloComputationProto> {
        self.computations
    }
}

pub struct CompEmitter<'m> {
    m: &'m mut ModuleEmitter,
    name: String,
    id: i64,
    instrs: Vec<HloInstructionProto>,
    params: BTreeMap<i64, (String, xla_proto::ShapeProto)>,
}

impl CompEmitter<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn module(&mut self) -> &mut ModuleEmitter {
        self.m
    }

    pub fn parameter(&mut self, number: i64, name: &str, ty: &Type) -> i64 {
        let full = format!("{}.{}", self.name, name);
        let id = self.push("parameter", ty, &[], Some(full.clone()), |i| {
            i.parameter_number = number
        });
        self.params.insert(number, (full, shape_proto(ty)));
        id
    }

    /// Emits one instruction named `<opcode>.<id>` and returns its id.
    pub fn emit(
        &mut self,
        opcode: &'static str,
        ty: &Type,
        operands: &[i64],
        fill: impl FnOnce(&mut HloInstructionProto),
    ) -> i64 {
        self.push(opcode, ty, operands, None, fill)
    }

    fn push(
        &mut self,
        opcode: &'static str,
        ty: &Type,
        operands: &[i64],
        name: Option<String>,
        fill: impl FnOnce(&mut HloInstructionProto),
    ) -> i64 {
        let id = self.m.fresh_id();
        let name = match name {
            Some(n) => self.m.unique_name(&n),
            None => instruction_name(opcode, id),
        };
        let mut instr = HloInstructionProto {
            name,
            opcode: opcode.to_string(),
            shape: Some(shape_proto(ty)),
            id,
            operand_ids: operands.to_vec(),
            ..Default::default()
        };
        fill(&mut instr);
        self.instrs.push(instr);
        id
    }

    /// The type of instruction `id` of this computation, read back from its shape.
    pub fn type_of(&self, id: i64) -> Type {
        let shape = self
            .instrs
            .iter()
            .rev()
            .find(|i| i.id == id)
            .and_then(|i| i.shape.as_ref())
            .expect("an instruction of this computation, with its shape");
        type_of_shape(shape)
    }

    pub fn constant(&mut self, lit: &Literal) -> i64 {
        let proto = lit.to_proto();
        self.emit("constant", &Type::Array(lit.ty.clone()), &[], |i| {
            i.literal = Some(Box::new(proto))
        })
    }

    pub fn scalar(&mut self, dtype: DType, value: f64) -> i64 {
        self.constant(&Literal::scalar(dtype, value))
    }

    /// Instructions emitted since `start` (an index into this computation's list), so the
    /// lowering can stamp one IR node's metadata on every instruction it produced.
    pub fn instructions_from(&mut self, start: usize) -> &mut [HloInstructionProto] {
        &mut self.instrs[start..]
    }

    pub fn reserve(&mut self, instructions: usize) {
        self.instrs.reserve(instructions);
    }

    pub fn instruction_count(&self) -> usize {
        self.instrs.len()
    }

    /// Closes the computation with `root` and returns its id.
    pub fn finish(self, root: i64) -> i64 {
        let root_shape = (self.instrs.iter().rev().find(|i| i.id == root))
            .and_then(|i| i.shape.clone())
            .expect("the root is an instruction of this computation");
        // XLA prints a computation's signature with its parameter instructions' names.
        let (names, shapes): (Vec<String>, Vec<_>) = self.params.into_values().unzip();
        let comp = HloComputationProto {
            name: self.name,
            instructions: self.instrs,
            program_shape: Some(ProgramShapeProto {
                parameters: shapes,
                result: Some(root_shape),
                parameter_names: names,
            }),
            id: self.id,
            root_id: root,
        };
        self.m.computations.push(comp);
        self.id
    }
}

/// Builds the scalar computation `(T[], T[]) -> T[]` applying `opcode`; cached per (op, dtype).
pub fn binary_scalar_computation(m: &mut ModuleEmitter, opcode: &'static str, dtype: DType) -> i64 {
    scalar_computation(m, "", opcode, dtype)
}

/// The reducer of a collective: like [`binary_scalar_computation`] but never shared with a
/// `reduce` or `scatter` (`collective_add_f32`), as AWS's nkipy keeps them apart.
pub fn collective_reducer(m: &mut ModuleEmitter, opcode: &'static str, dtype: DType) -> i64 {
    scalar_computation(m, "collective_", opcode, dtype)
}

fn scalar_computation(
    m: &mut ModuleEmitter,
    prefix: &str,
    opcode: &'static str,
    dtype: DType,
) -> i64 {
    let key = format!("{prefix}{}_{}", opcode.replace('-', "_"), dtype);
    m.subcomputation(&key, |c| {
        let t = Type::Array(ArrayType::scalar(dtype));
        let lhs = c.parameter(0, "lhs", &t);
        let rhs = c.parameter(1, "rhs", &t);
        c.emit(opcode, &t, &[lhs, rhs], |_| {})
    })
}

/// Array shape with XLA's default row-major layout (`minor_to_major = [rank-1, ..., 0]`).
pub fn shape_proto_of_array(a: &ArrayType) -> ShapeProto {
    ShapeProto {
        element_type: a.dtype.primitive_type() as i32,
        dimensions: a.dims.clone(),
        // Static shapes, said explicitly: XLA warns about an empty list ("Malformed shape
        // proto") and AWS's nkipy writes one entry per dim.
        is_dynamic_dimension: vec![false; a.rank()],
        layout: Some(LayoutProto {
            minor_to_major: (0..a.rank() as i64).rev().collect(),
        }),
        ..Default::default()
    }
}

/// The inverse of [`shape_proto`].
fn type_of_shape(s: &ShapeProto) -> Type {
    let array = |s: &ShapeProto| {
        let dtype = PrimitiveType::try_from(s.element_type)
            .ok()
            .and_then(DType::from_primitive_type)
            .expect("emitted shapes have array element types");
        ArrayType::new(dtype, s.dimensions.clone())
    };
    if s.element_type == PrimitiveType::Tuple as i32 {
        Type::Tuple(s.tuple_shapes.iter().map(array).collect())
    } else {
        Type::Array(array(s))
    }
}

pub fn shape_proto(t: &Type) -> ShapeProto {
    match t {
        Type::Array(a) => shape_proto_of_array(a),
        Type::Tuple(elems) => ShapeProto {
            element_type: PrimitiveType::Tuple as i32,
            tuple_shapes: elems.iter().map(shape_proto_of_array).collect(),
            ..Default::default()
        },
    }
}

/// `<opcode>.<id>`, with the opcode's `-` as `_` (`dynamic_slice.12`), written without the
/// formatting machinery: it names every instruction.
fn instruction_name(opcode: &str, id: i64) -> String {
    let mut digits = itoa::Buffer::new();
    let id = digits.format(id);
    let mut name = String::with_capacity(opcode.len() + 1 + id.len());
    name.extend(opcode.chars().map(|c| if c == '-' { '_' } else { c }));
    name.push('.');
    name.push_str(id);
    name
}
