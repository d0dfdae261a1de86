//! Data movement: reshape, transpose, broadcast, slice, concatenate and pad.

use super::{all_distinct_in_range, array, check_dim, expect_arity, is_permutation, OpRule};
use crate::ir::emit::CompEmitter;
use crate::ir::error::ShapeError;
use crate::ir::types::Type;
use xla_proto::{
    hlo_instruction_proto::SliceDimensions, padding_config::PaddingConfigDimension, PaddingConfig,
};

/// `reshape` to `dims`, in row-major logical order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reshape {
    pub dims: Vec<i64>,
}

impl OpRule for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 1)?;
        let x = array(operands, 0)?;
        let to_count: i64 = self.dims.iter().product();
        if self.dims.iter().any(|&d| d < 0) || to_count != x.element_count() {
            return Err(ShapeError::ElementCount {
                from: x.clone(),
                from_count: x.element_count(),
                to: self.dims.clone(),
                to_count,
            });
        }
        Ok(Type::Array(x.with_dims(self.dims.clone())))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("reshape", ty, operands, |_| {})
    }
}

/// `transpose`: output dim `i` is operand dim `perm[i]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Transpose {
    pub perm: Vec<i64>,
}

impl OpRule for Transpose {
    fn name(&self) -> &'static str {
        "transpose"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 1)?;
        let x = array(operands, 0)?;
        if !is_permutation(&self.perm, x.rank()) {
            return Err(ShapeError::invalid(
                "permutation",
                format!(
                    "{:?} is not a permutation of the {} dims of {x}",
                    self.perm,
                    x.rank()
                ),
            ));
        }
        let dims = self
            .perm
            .iter()
            .map(|&p| x.dims[p as usize])
            .collect::<Vec<_>>();
        Ok(Type::Array(x.with_dims(dims)))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("transpose", ty, operands, |i| {
            i.dimensions = self.perm.clone()
        })
    }
}

/// HLO `broadcast`: operand dim `i` becomes output dim `mapping[i]`; the other output dims are
/// new. It cannot stretch a size-1 dim (that is the DSL's numpy-style `broadcast_to`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Broadcast {
    pub dims: Vec<i64>,
    pub mapping: Vec<i64>,
}

impl OpRule for Broadcast {
    fn name(&self) -> &'static str {
        "broadcast"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 1)?;
        let x = array(operands, 0)?;
        let bad = |reason: String| ShapeError::BadBroadcast {
            from: x.clone(),
            to: format!("{:?} with dimensions={:?}", self.dims, self.mapping),
            reason,
        };
        if self.mapping.len() != x.rank() {
            return Err(bad(format!(
                "needs one mapping entry per operand dim ({}), got {}",
                x.rank(),
                self.mapping.len()
            )));
        }
        if !all_distinct_in_range(&self.mapping, self.dims.len())
            || self.mapping.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(bad("mapping must be strictly increasing output dims".into()));
        }
        for (i, &m) in self.mapping.iter().enumerate() {
            if x.dims[i] != self.dims[m as usize] {
                return Err(bad(format!(
                    "operand dim {i} has size {} but output dim {m} has size {}",
                    x.dims[i], self.dims[m as usize]
                )));
            }
        }
        Ok(Type::Array(x.with_dims(self.dims.clone())))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("broadcast", ty, operands, |i| {
            i.dimensions = self.mapping.clone()
        })
    }
}

/// Static `slice` with `[start:limit:stride]` per dim.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Slice {
    pub starts: Vec<i64>,
    pub limits: Vec<i64>,
    pub strides: Vec<i64>,
}

impl OpRule for Slice {
    fn name(&self) -> &'static str {
        "slice"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 1)?;
        let x = array(operands, 0)?;
        for got in [self.starts.len(), self.limits.len(), self.strides.len()] {
            if got != x.rank() {
                return Err(ShapeError::WrongRank {
                    what: "slice bounds",
                    expected: x.rank(),
                    got,
                });
            }
        }
        let mut dims = Vec::with_capacity(x.rank());
        for d in 0..x.rank() {
            let (start, limit, stride) = (self.starts[d], self.limits[d], self.strides[d]);
            if start < 0 || limit > x.dims[d] || start > limit || stride < 1 {
                return Err(ShapeError::SliceOutOfRange {
                    dim: d,
                    start,
                    limit,
                    stride,
                    size: x.dims[d],
                });
            }
            dims.push((limit - start + stride - 1) / stride);
        }
        Ok(Type::Array(x.with_dims(dims)))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("slice", ty, operands, |i| {
            i.slice_dimensions = (0..self.starts.len())
                .map(|d| SliceDimensions {
                    start: self.starts[d],
                    limit: self.limits[d],
                    stride: self.strides[d],
                })
                .collect()
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Concatenate {
    pub dim: i64,
}

impl OpRule for Concatenate {
    fn name(&self) -> &'static str {
        "concatenate"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        if operands.is_empty() {
            return Err(ShapeError::Arity {
                expected: 1,
                got: 0,
            });
        }
        let first = array(operands, 0)?;
        let dim = check_dim(self.dim, first.rank())?;
        let mut out = first.dims.clone();
        for i in 1..operands.len() {
            let x = array(operands, i)?;
            if x.dtype != first.dtype {
                return Err(ShapeError::DTypeMismatch {
                    what: "concatenated operand",
                    expected: first.dtype,
                    got: x.dtype,
                });
            }
            let same_other = x.rank() == first.rank()
                && (0..x.rank()).all(|d| d == dim || x.dims[d] == first.dims[d]);
            if !same_other {
                return Err(ShapeError::ShapeMismatch {
                    lhs: first.clone(),
                    rhs: x.clone(),
                });
            }
            out[dim] += x.dims[dim];
        }
        Ok(Type::Array(first.with_dims(out)))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("concatenate", ty, operands, |i| {
            i.dimensions = vec![self.dim]
        })
    }
}

/// `pad(x, value)` with edge (possibly negative) and interior padding per dim.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pad {
    pub low: Vec<i64>,
    pub high: Vec<i64>,
    pub interior: Vec<i64>,
}

impl OpRule for Pad {
    fn name(&self) -> &'static str {
        "pad"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 2)?;
        let (x, v) = (array(operands, 0)?, array(operands, 1)?);
        if !v.dims.is_empty() {
            return Err(ShapeError::WrongRank {
                what: "padding value",
                expected: 0,
                got: v.rank(),
            });
        }
        if v.dtype != x.dtype {
            return Err(ShapeError::DTypeMismatch {
                what: "padding value",
                expected: x.dtype,
                got: v.dtype,
            });
        }
        for got in [self.low.len(), self.high.len(), self.interior.len()] {
            if got != x.rank() {
                return Err(ShapeError::WrongRank {
                    what: "padding config",
                    expected: x.rank(),
                    got,
                });
            }
        }
        let mut dims = Vec::with_capacity(x.rank());
        for d in 0..x.rank() {
            let n = x.dims[d];
            if self.interior[d] < 0 {
                return Err(ShapeError::invalid(
                    "padding",
                    format!("negative interior padding in dim {d}"),
                ));
            }
            let size = self.low[d] + self.high[d] + n + (n - 1).max(0) * self.interior[d];
            if size < 0 {
                return Err(ShapeError::invalid(
                    "padding",
                    format!("dim {d} would have size {size}"),
                ));
            }
            dims.push(size);
        }
        Ok(Type::Array(x.with_dims(dims)))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("pad", ty, operands, |i| {
            i.padding_config = Some(PaddingConfig {
                dimensions: (0..self.low.len())
                    .map(|d| PaddingConfigDimension {
                        edge_padding_low: self.low[d],
                        edge_padding_high: self.high[d],
                        interior_padding: self.interior[d],
                    })
                    .collect(),
            })
        })
    }
}
