//! Lowering of IR graphs to XLA `HloModuleProto`, and the HLO text printer.

pub mod check;
pub mod emit;
pub mod lower;
pub mod stats;
pub mod text;

pub use lower::{lower, LowerOptions};
pub use text::{print_module, PrintOptions};

use crate::ir::{ArrayType, Type};
use xla_proto::{LayoutProto, PrimitiveType, ShapeProto};

/// Array shape with XLA's default row-major layout (`minor_to_major = [rank-1, ..., 0]`).
pub fn shape_proto_of_array(a: &ArrayType) -> ShapeProto {
    ShapeProto {
        element_type: a.dtype.primitive_type() as i32,
        dimensions: a.dims.clone(),
        layout: Some(LayoutProto {
            minor_to_major: (0..a.rank() as i64).rev().collect(),
        }),
        ..Default::default()
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
