//! Shape-rule errors. Variants carry the data (dims, expected, got) rather than prose, so
//! callers and tests can match on them; `Display` renders the one-line explanation.

use super::types::{ArrayType, DType, Type};
use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Error)]
pub enum ShapeError {
    #[error("expected {expected} operand(s), got {got}")]
    Arity { expected: usize, got: usize },
    #[error("operand {operand} must be an array, got tuple {ty}")]
    NotAnArray { operand: usize, ty: Type },
    #[error("operand {operand} must be a tuple, got {ty}")]
    NotATuple { operand: usize, ty: Type },
    #[error("wrong rank for {what}: expected {expected}, got {got}")]
    WrongRank {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("dtype mismatch: {what} is {got}, expected {expected}")]
    DTypeMismatch {
        what: &'static str,
        expected: DType,
        got: DType,
    },
    #[error("dtype {dtype} is not allowed for {what}")]
    DTypeNotAllowed { what: &'static str, dtype: DType },
    #[error("shapes must be equal: {lhs} vs {rhs}")]
    ShapeMismatch { lhs: ArrayType, rhs: ArrayType },
    #[error("cannot broadcast {from} to {to}: {reason}")]
    BadBroadcast {
        from: ArrayType,
        to: String,
        reason: String,
    },
    #[error("bad dot dimensions: {reason}")]
    BadDotDims { reason: String },
    #[error("slice out of range in dimension {dim}: [{start}:{limit}:{stride}] of size {size}")]
    SliceOutOfRange {
        dim: usize,
        start: i64,
        limit: i64,
        stride: i64,
        size: i64,
    },
    #[error("dimension {dim} of size {size} is not divisible by the group size {group_size}")]
    NotDivisible {
        dim: usize,
        size: i64,
        group_size: i64,
    },
    #[error("dimension {dim} out of range for rank {rank}")]
    DimOutOfRange { dim: i64, rank: usize },
    #[error(
        "element count differs: {from} has {from_count} elements, target {to:?} has {to_count}"
    )]
    ElementCount {
        from: ArrayType,
        from_count: i64,
        to: Vec<i64>,
        to_count: i64,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

impl ShapeError {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        ShapeError::Invalid {
            what,
            reason: reason.into(),
        }
    }
}
