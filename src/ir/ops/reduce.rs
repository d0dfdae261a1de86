//! Reductions: `reduce` with a generated scalar computation, and argmax as a variadic reduce.

use super::{all_distinct_in_range, array, check_dim, expect_arity, OpRule};
use crate::ir::emit::{binary_scalar_computation, CompEmitter};
use crate::ir::error::ShapeError;
use crate::ir::types::{ArrayType, DType, Type};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Sum,
    Max,
    Min,
    Product,
}

impl ReduceKind {
    /// The binary opcode of the scalar computation.
    pub fn opcode(self) -> &'static str {
        match self {
            ReduceKind::Sum => "add",
            ReduceKind::Max => "maximum",
            ReduceKind::Min => "minimum",
            ReduceKind::Product => "multiply",
        }
    }

    /// The identity element, emitted as a constant init value (Neuron requires constant inits).
    pub fn identity(self, dtype: DType) -> f64 {
        let (lowest, highest) = match dtype {
            d if d.is_float() => (f64::NEG_INFINITY, f64::INFINITY),
            DType::Pred => (0.0, 1.0),
            DType::S8 => (i8::MIN as f64, i8::MAX as f64),
            DType::U8 => (0.0, u8::MAX as f64),
            DType::S32 => (i32::MIN as f64, i32::MAX as f64),
            DType::U32 => (0.0, u32::MAX as f64),
            _ => (i64::MIN as f64, i64::MAX as f64),
        };
        match self {
            ReduceKind::Sum => 0.0,
            ReduceKind::Product => 1.0,
            ReduceKind::Max => lowest,
            ReduceKind::Min => highest,
        }
    }
}

fn reduced_dims(x: &ArrayType, dims: &[i64]) -> Result<Vec<i64>, ShapeError> {
    if !all_distinct_in_range(dims, x.rank()) {
        return Err(ShapeError::invalid(
            "reduce dimensions",
            format!("{dims:?} must be distinct dims of {x}"),
        ));
    }
    Ok((0..x.rank() as i64)
        .filter(|d| !dims.contains(d))
        .map(|d| x.dims[d as usize])
        .collect())
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reduce {
    pub kind: ReduceKind,
    pub dims: Vec<i64>,
}

impl OpRule for Reduce {
    fn name(&self) -> &'static str {
        "reduce"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 1)?;
        let x = array(operands, 0)?;
        Ok(Type::Array(x.with_dims(reduced_dims(x, &self.dims)?)))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        let dtype = ty.as_array().expect("reduce result is an array").dtype;
        let comp = binary_scalar_computation(cx.module(), self.kind.opcode(), dtype);
        let init = cx.scalar(dtype, self.kind.identity(dtype));
        cx.emit("reduce", ty, &[operands[0], init], |i| {
            i.dimensions = self.dims.clone();
            i.called_computation_ids = vec![comp];
        })
    }
}

/// Index of the maximum along `dim` (the lowest index among ties), as `index_dtype`.
/// Lowered to a variadic reduce over (value, iota) pairs, which is outside Neuron's
/// documented op set: keep it behind a build option.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Argmax {
    pub dim: i64,
    pub index_dtype: DType,
}

impl OpRule for Argmax {
    fn name(&self) -> &'static str {
        "argmax"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 1)?;
        let x = array(operands, 0)?;
        check_dim(self.dim, x.rank())?;
        if !self.index_dtype.is_int() {
            return Err(ShapeError::DTypeNotAllowed {
                what: "argmax index",
                dtype: self.index_dtype,
            });
        }
        if x.dtype == DType::Pred {
            return Err(ShapeError::DTypeNotAllowed {
                what: "argmax input",
                dtype: x.dtype,
            });
        }
        Ok(Type::Array(ArrayType::new(
            self.index_dtype,
            reduced_dims(x, &[self.dim])?,
        )))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        let out = ty.as_array().expect("argmax result is an array").clone();
        let x = cx
            .type_of(operands[0])
            .as_array()
            .expect("argmax input")
            .clone();
        let (vt, it) = (x.dtype, self.index_dtype);
        let comp = cx
            .module()
            .subcomputation(&format!("argmax_{vt}_{it}"), |c| {
                let (sv, si) = (ArrayType::scalar(vt), ArrayType::scalar(it));
                let (v, i) = (Type::Array(sv.clone()), Type::Array(si.clone()));
                let pred = Type::Array(ArrayType::scalar(DType::Pred));
                let acc_v = c.parameter(0, "acc_value", &v);
                let acc_i = c.parameter(1, "acc_index", &i);
                let new_v = c.parameter(2, "value", &v);
                let new_i = c.parameter(3, "index", &i);
                let dir = |d: &'static str| {
                    move |p: &mut xla_proto::HloInstructionProto| p.comparison_direction = d.into()
                };
                let gt = c.emit("compare", &pred, &[acc_v, new_v], dir("GT"));
                let eq = c.emit("compare", &pred, &[acc_v, new_v], dir("EQ"));
                let lower_index = c.emit("compare", &pred, &[acc_i, new_i], dir("LT"));
                // Keep the accumulator when it is larger, or equal with a lower index.
                let keep = c.emit("select", &pred, &[eq, lower_index, gt], |_| {});
                let value = c.emit("select", &v, &[keep, acc_v, new_v], |_| {});
                let index = c.emit("select", &i, &[keep, acc_i, new_i], |_| {});
                c.emit("tuple", &Type::Tuple(vec![sv, si]), &[value, index], |_| {})
            });
        let iota = cx.emit("iota", &Type::Array(x.with_dtype(it)), &[], |i| {
            i.dimensions = vec![self.dim]
        });
        let init_v = cx.scalar(vt, ReduceKind::Max.identity(vt));
        let init_i = cx.scalar(it, 0.0);
        let pair = Type::Tuple(vec![out.with_dtype(vt), out.clone()]);
        let reduce = cx.emit("reduce", &pair, &[operands[0], iota, init_v, init_i], |i| {
            i.dimensions = vec![self.dim];
            i.called_computation_ids = vec![comp];
        });
        cx.emit("get-tuple-element", ty, &[reduce], |i| i.tuple_index = 1)
    }
}
