//! `sort`: a stable sort of one or more arrays along one dim, ordered by the first.

use super::{array, check_dim, OpRule};
use crate::ir::emit::CompEmitter;
use crate::ir::error::ShapeError;
use crate::ir::types::{ArrayType, DType, Type};

/// Sorts every operand (all of one shape) along `dim` by operand 0: descending (`GT`) or
/// ascending (`LT`), stably, so equal keys keep their input order (the lower index first).
/// The other operands follow the same permutation. The result is a tuple of the sorted
/// operands, in operand order, or (one operand, as XLA requires) the sorted array itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sort {
    pub dim: i64,
    pub descending: bool,
}

impl OpRule for Sort {
    fn name(&self) -> &'static str {
        "sort"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        if operands.is_empty() {
            return Err(ShapeError::Arity {
                expected: 1,
                got: 0,
            });
        }
        let key = array(operands, 0)?;
        check_dim(self.dim, key.rank())?;
        if key.dtype == DType::Pred {
            return Err(ShapeError::DTypeNotAllowed {
                what: "sort key",
                dtype: key.dtype,
            });
        }
        let mut elems = Vec::with_capacity(operands.len());
        for i in 0..operands.len() {
            let a = array(operands, i)?;
            if a.dims != key.dims {
                return Err(ShapeError::ShapeMismatch {
                    lhs: key.clone(),
                    rhs: a.clone(),
                });
            }
            elems.push(a.clone());
        }
        if elems.len() == 1 {
            return Ok(Type::Array(elems.pop().expect("one element")));
        }
        Ok(Type::Tuple(elems))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        let elems = match ty {
            Type::Tuple(elems) => elems.clone(),
            Type::Array(a) => vec![a.clone()],
        };
        let dtypes: Vec<String> = elems.iter().map(|e| e.dtype.to_string()).collect();
        let direction = if self.descending { "GT" } else { "LT" };
        let key = format!("compare_{}_{}", direction.to_lowercase(), dtypes.join("_"));
        let scalars: Vec<ArrayType> = elems.iter().map(|e| ArrayType::scalar(e.dtype)).collect();
        let comp = cx.module().subcomputation(&key, |c| {
            let pred = Type::Array(ArrayType::scalar(DType::Pred));
            let mut params = Vec::with_capacity(2 * scalars.len());
            for (i, s) in scalars.iter().enumerate() {
                let t = Type::Array(s.clone());
                params.push(c.parameter(2 * i as i64, &format!("lhs.{i}"), &t));
                params.push(c.parameter(2 * i as i64 + 1, &format!("rhs.{i}"), &t));
            }
            c.emit("compare", &pred, &[params[0], params[1]], |i| {
                i.comparison_direction = direction.into()
            })
        });
        cx.emit("sort", ty, operands, |i| {
            i.dimensions = vec![self.dim];
            i.is_stable = true;
            i.called_computation_ids = vec![comp];
        })
    }
}
