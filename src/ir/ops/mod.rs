//! The primitive op set. Each family file holds, per op, the attribute data (plain
//! `Clone + Eq + Hash` structs), the shape rule (`infer`) and the lowering (`lower`), so an
//! op is defined in exactly one place. The HLO text form follows from the proto fields the
//! lowering fills in: `hlo::text` prints any proto by field, which is what lets
//! `tests/printer_vs_xla.rs` compare it with XLA's own printer.
//!
//! Two ops lower to more than one instruction, deliberately:
//! - `Reduce` emits its init value as a constant: the identity of its reduction kind is part
//!   of the op, and a constant init is what Neuron requires, so it is not an IR operand.
//! - `Argmax` emits an iota, two constant inits, a variadic reduce with a comparator and a
//!   get-tuple-element. It stays one IR op so its shape rule is checked when it is recorded
//!   and the IR shows "argmax" (a Neuron lint finding) rather than its expansion.

mod collective;
mod dot;
mod elementwise;
mod indexing;
mod movement;
mod reduce;
mod sort;
mod source;

pub use collective::{AllGather, AllReduce, ReduceScatter, ReplicaGroups};
pub use dot::{Dot, DotDims, MatvecKernel, F32_MATVEC_KERNEL_TARGET, MATVEC_KERNEL_TARGET};
pub use elementwise::{Binary, Unary};
pub use elementwise::{BinaryOp, Clamp, Compare, Convert, Direction, Select, UnaryOp};
pub use indexing::{
    DynamicSlice, DynamicUpdateSlice, Gather, GatherDims, Scatter, ScatterCombiner, ScatterDims,
};
pub use movement::{Broadcast, Concatenate, Pad, Reshape, Slice, Transpose};
pub use reduce::{Argmax, Reduce, ReduceKind};
pub use sort::Sort;
pub use source::{Constant, CustomCall, GetTupleElement, Iota, Parameter, Tuple};

use super::error::ShapeError;
use super::types::{ArrayType, Type};
use crate::ir::emit::CompEmitter;

/// What every op provides: its name (the HLO opcode, or the DSL name for ops that lower to
/// several instructions), its shape rule, and its lowering.
pub trait OpRule {
    fn name(&self) -> &'static str;
    /// Computes the result type from the operand types, or explains why they are ill-typed.
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError>;
    /// Emits the HLO instruction(s) for this op. `ty` is the already-inferred result type:
    /// lowering never re-derives it. Returns the id of the instruction holding the result.
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64;
}

macro_rules! ops {
    ($($variant:ident),* $(,)?) => {
        /// One IR operation. Plain data: `Eq + Hash` make it a CSE key and a snapshot value.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum Op { $($variant($variant)),* }

        impl Op {
            fn rule(&self) -> &dyn OpRule {
                match self { $(Op::$variant(op) => op),* }
            }
        }

        $(impl From<$variant> for Op {
            fn from(op: $variant) -> Op { Op::$variant(op) }
        })*
    };
}

ops!(
    Parameter,
    Constant,
    Iota,
    Convert,
    Reshape,
    Transpose,
    Broadcast,
    Slice,
    Concatenate,
    Pad,
    DynamicSlice,
    DynamicUpdateSlice,
    Gather,
    Scatter,
    Dot,
    MatvecKernel,
    Unary,
    Binary,
    Compare,
    Select,
    Clamp,
    Reduce,
    Argmax,
    Sort,
    AllReduce,
    AllGather,
    ReduceScatter,
    Tuple,
    GetTupleElement,
    CustomCall,
);

impl Op {
    pub fn name(&self) -> &'static str {
        self.rule().name()
    }

    pub fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        self.rule().infer(operands)
    }

    pub fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        self.rule().lower(cx, operands, ty)
    }

    pub fn is_collective(&self) -> bool {
        matches!(
            self,
            Op::AllReduce(_) | Op::AllGather(_) | Op::ReduceScatter(_)
        )
    }

    /// Ops that CSE must never merge: parameters are distinct inputs, and custom calls or
    /// collectives may have effects the IR cannot see.
    pub fn is_cse_barrier(&self) -> bool {
        matches!(self, Op::Parameter(_) | Op::CustomCall(_)) || self.is_collective()
    }
}

// Shared helpers for shape rules.

pub(crate) fn expect_arity(operands: &[&Type], n: usize) -> Result<(), ShapeError> {
    if operands.len() != n {
        return Err(ShapeError::Arity {
            expected: n,
            got: operands.len(),
        });
    }
    Ok(())
}

pub(crate) fn array<'a>(operands: &[&'a Type], i: usize) -> Result<&'a ArrayType, ShapeError> {
    match operands.get(i) {
        Some(Type::Array(a)) => Ok(a),
        Some(t) => Err(ShapeError::NotAnArray {
            operand: i,
            ty: (*t).clone(),
        }),
        None => Err(ShapeError::Arity {
            expected: i + 1,
            got: operands.len(),
        }),
    }
}

pub(crate) fn check_dim(dim: i64, rank: usize) -> Result<usize, ShapeError> {
    if dim < 0 || dim as usize >= rank {
        return Err(ShapeError::DimOutOfRange { dim, rank });
    }
    Ok(dim as usize)
}

/// True when `dims` is a permutation of `0..n`.
pub(crate) fn is_permutation(dims: &[i64], n: usize) -> bool {
    let mut seen = vec![false; n];
    dims.len() == n
        && dims.iter().all(|&d| {
            let ok = d >= 0 && (d as usize) < n && !seen[d as usize];
            if ok {
                seen[d as usize] = true;
            }
            ok
        })
}

pub(crate) fn all_distinct_in_range(dims: &[i64], n: usize) -> bool {
    let mut seen = vec![false; n];
    dims.iter().all(|&d| {
        let ok = d >= 0 && (d as usize) < n && !seen[d as usize];
        if ok {
            seen[d as usize] = true;
        }
        ok
    })
}
