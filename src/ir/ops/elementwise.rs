//! Elementwise ops: unary math, binary arithmetic, compare, select, clamp and convert. HLO has
//! no implicit broadcasting, so every rule here demands identical dims; the DSL inserts the
//! explicit broadcasts.

use super::{array, expect_arity, OpRule};
use crate::ir::emit::CompEmitter;
use crate::ir::error::ShapeError;
use crate::ir::types::{ArrayType, DType, Type};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Negate,
    Abs,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Tanh,
    Logistic,
    Sine,
    Cosine,
}

impl UnaryOp {
    pub fn opcode(self) -> &'static str {
        match self {
            UnaryOp::Negate => "negate",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exponential",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Logistic => "logistic",
            UnaryOp::Sine => "sine",
            UnaryOp::Cosine => "cosine",
        }
    }

    fn float_only(self) -> bool {
        !matches!(self, UnaryOp::Negate | UnaryOp::Abs)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Unary(pub UnaryOp);

impl OpRule for Unary {
    fn name(&self) -> &'static str {
        self.0.opcode()
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 1)?;
        let x = array(operands, 0)?;
        let ok = if self.0.float_only() {
            x.dtype.is_float()
        } else {
            x.dtype.is_float() || x.dtype.is_signed_int()
        };
        if !ok {
            return Err(ShapeError::DTypeNotAllowed {
                what: self.0.opcode(),
                dtype: x.dtype,
            });
        }
        Ok(Type::Array(x.clone()))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit(self.0.opcode(), ty, operands, |_| {})
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Subtract,
    Multiply,
    Divide,
    Maximum,
    Minimum,
    Power,
    /// Logical (pred) or bitwise (integer) and.
    And,
    /// Logical (pred) or bitwise (integer) or.
    Or,
}

impl BinaryOp {
    pub fn opcode(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Subtract => "subtract",
            BinaryOp::Multiply => "multiply",
            BinaryOp::Divide => "divide",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
            BinaryOp::Power => "power",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
        }
    }
}

/// Both operands must have the same dims and dtype (checked in this order, so the message
/// points at the first real difference).
fn same_type<'a>(
    what: &'static str,
    a: &'a ArrayType,
    b: &ArrayType,
) -> Result<&'a ArrayType, ShapeError> {
    if a.dims != b.dims {
        return Err(ShapeError::ShapeMismatch {
            lhs: a.clone(),
            rhs: b.clone(),
        });
    }
    if a.dtype != b.dtype {
        return Err(ShapeError::DTypeMismatch {
            what,
            expected: a.dtype,
            got: b.dtype,
        });
    }
    Ok(a)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Binary(pub BinaryOp);

impl OpRule for Binary {
    fn name(&self) -> &'static str {
        self.0.opcode()
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 2)?;
        let (a, b) = (array(operands, 0)?, array(operands, 1)?);
        let t = same_type("rhs", a, b)?;
        let logical = matches!(self.0, BinaryOp::And | BinaryOp::Or);
        let pred_ok = logical || matches!(self.0, BinaryOp::Maximum | BinaryOp::Minimum);
        if (t.dtype == DType::Pred && !pred_ok) || (logical && t.dtype.is_float()) {
            return Err(ShapeError::DTypeNotAllowed {
                what: self.0.opcode(),
                dtype: t.dtype,
            });
        }
        Ok(Type::Array(t.clone()))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit(self.0.opcode(), ty, operands, |_| {})
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Eq => "EQ",
            Direction::Ne => "NE",
            Direction::Lt => "LT",
            Direction::Le => "LE",
            Direction::Gt => "GT",
            Direction::Ge => "GE",
        }
    }
}

/// `compare`: elementwise comparison producing `pred`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Compare(pub Direction);

impl OpRule for Compare {
    fn name(&self) -> &'static str {
        "compare"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 2)?;
        let t = same_type("rhs", array(operands, 0)?, array(operands, 1)?)?;
        Ok(Type::Array(t.with_dtype(DType::Pred)))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("compare", ty, operands, |i| {
            i.comparison_direction = self.0.as_str().to_string()
        })
    }
}

/// `select(pred, on_true, on_false)`. The predicate must have the operands' dims: the CPU
/// plugin takes a scalar predicate but neuronx-cc may not, so the DSL broadcasts it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Select;

impl OpRule for Select {
    fn name(&self) -> &'static str {
        "select"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 3)?;
        let (p, t, f) = (
            array(operands, 0)?,
            array(operands, 1)?,
            array(operands, 2)?,
        );
        if p.dtype != DType::Pred {
            return Err(ShapeError::DTypeMismatch {
                what: "predicate",
                expected: DType::Pred,
                got: p.dtype,
            });
        }
        let t = same_type("on_false", t, f)?;
        if p.dims != t.dims {
            return Err(ShapeError::ShapeMismatch {
                lhs: p.clone(),
                rhs: t.clone(),
            });
        }
        Ok(Type::Array(t.clone()))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("select", ty, operands, |_| {})
    }
}

/// `clamp(min, x, max)` in HLO operand order; bounds are scalars or have `x`'s dims.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Clamp;

impl OpRule for Clamp {
    fn name(&self) -> &'static str {
        "clamp"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 3)?;
        let (lo, x, hi) = (
            array(operands, 0)?,
            array(operands, 1)?,
            array(operands, 2)?,
        );
        for (what, b) in [("min", lo), ("max", hi)] {
            if b.dtype != x.dtype {
                return Err(ShapeError::DTypeMismatch {
                    what,
                    expected: x.dtype,
                    got: b.dtype,
                });
            }
            if !b.dims.is_empty() && b.dims != x.dims {
                return Err(ShapeError::ShapeMismatch {
                    lhs: x.clone(),
                    rhs: b.clone(),
                });
            }
        }
        Ok(Type::Array(x.clone()))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("clamp", ty, operands, |_| {})
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Convert {
    pub to: DType,
}

impl OpRule for Convert {
    fn name(&self) -> &'static str {
        "convert"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 1)?;
        Ok(Type::Array(array(operands, 0)?.with_dtype(self.to)))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("convert", ty, operands, |_| {})
    }
}
