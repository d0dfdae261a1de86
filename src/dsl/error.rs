//! Errors raised while recording: the op, the operand types, the model scope and the Rust
//! source location of the offending call.

use crate::ir::{ShapeError, Type};
use std::fmt;
use std::ops::Deref;
use std::panic::Location;

/// A rejected op. Boxed so the `Ok` path of every DSL call stays small.
#[derive(Clone, Debug, PartialEq)]
pub struct OpError(Box<OpErrorDetail>);

#[derive(Clone, Debug, PartialEq)]
pub struct OpErrorDetail {
    pub op: &'static str,
    pub operands: Vec<Type>,
    pub scope: String,
    pub location: &'static Location<'static>,
    pub error: ShapeError,
}

impl OpError {
    pub fn new(
        op: &'static str,
        operands: Vec<Type>,
        scope: String,
        location: &'static Location<'static>,
        error: ShapeError,
    ) -> Self {
        OpError(Box::new(OpErrorDetail {
            op,
            operands,
            scope,
            location,
            error,
        }))
    }
}

impl Deref for OpError {
    type Target = OpErrorDetail;
    fn deref(&self) -> &OpErrorDetail {
        &self.0
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operands: Vec<String> = self.operands.iter().map(|t| t.to_string()).collect();
        let scope = if self.scope.is_empty() {
            "<root>"
        } else {
            &self.scope
        };
        write!(
            f,
            "`{}` at {scope} ({}:{}:{}): {}; operands: ({})",
            self.op,
            self.location.file(),
            self.location.line(),
            self.location.column(),
            self.error,
            operands.join(", ")
        )
    }
}

impl std::error::Error for OpError {}
