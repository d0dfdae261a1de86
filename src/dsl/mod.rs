//! The typed tensor DSL. A [`GraphBuilder`] records ops into an IR [`Graph`]; every op checks
//! its operands and computes its result type when it is recorded, so an ill-typed node never
//! enters the graph. Errors name the op, the operand types, the scope path and the caller's
//! source location (`#[track_caller]`).

mod builder;
mod error;
pub mod nn;
mod tensor;

pub use crate::ir::ops::{
    Direction, DotDims, GatherDims, ReduceKind, ReplicaGroups, ScatterCombiner, ScatterDims,
};
pub use crate::ir::{AliasKind, ArrayType, DType, Graph, Literal, Type};
pub use builder::{GraphBuilder, ScopeGuard, TupleValue};
pub use error::{OpError, OpErrorDetail};
pub use tensor::Tensor;
