//! Indexed reads and writes: dynamic-slice, dynamic-update-slice, gather and scatter.

use super::{all_distinct_in_range, array, expect_arity, OpRule};
use crate::ir::emit::{binary_scalar_computation, CompEmitter};
use crate::ir::error::ShapeError;
use crate::ir::types::{ArrayType, Type};

/// Start indices are one scalar integer operand per operand dim (the non-legacy form).
fn check_scalar_indices(x: &ArrayType, operands: &[&Type], first: usize) -> Result<(), ShapeError> {
    let got = operands.len() - first.min(operands.len());
    if got != x.rank() {
        return Err(ShapeError::WrongRank {
            what: "start indices (one scalar per operand dim)",
            expected: x.rank(),
            got,
        });
    }
    let mut index_dtype = None;
    for i in first..operands.len() {
        let idx = array(operands, i)?;
        if !idx.dims.is_empty() {
            return Err(ShapeError::WrongRank {
                what: "start index",
                expected: 0,
                got: idx.rank(),
            });
        }
        if !idx.dtype.is_int() {
            return Err(ShapeError::DTypeNotAllowed {
                what: "start index",
                dtype: idx.dtype,
            });
        }
        match index_dtype {
            None => index_dtype = Some(idx.dtype),
            Some(d) if d != idx.dtype => {
                return Err(ShapeError::DTypeMismatch {
                    what: "start index",
                    expected: d,
                    got: idx.dtype,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// `dynamic-slice(x, i0, i1, ...)` of static `sizes`; XLA clamps starts to stay in bounds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DynamicSlice {
    pub sizes: Vec<i64>,
}

impl OpRule for DynamicSlice {
    fn name(&self) -> &'static str {
        "dynamic-slice"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        let x = array(operands, 0)?;
        check_scalar_indices(x, operands, 1)?;
        if self.sizes.len() != x.rank() {
            return Err(ShapeError::WrongRank {
                what: "slice sizes",
                expected: x.rank(),
                got: self.sizes.len(),
            });
        }
        for (d, (&s, &n)) in self.sizes.iter().zip(&x.dims).enumerate() {
            if s < 0 || s > n {
                return Err(ShapeError::SliceOutOfRange {
                    dim: d,
                    start: 0,
                    limit: s,
                    stride: 1,
                    size: n,
                });
            }
        }
        Ok(Type::Array(x.with_dims(self.sizes.clone())))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("dynamic-slice", ty, operands, |i| {
            i.dynamic_slice_sizes = self.sizes.clone()
        })
    }
}

/// `dynamic-update-slice(x, update, i0, i1, ...)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DynamicUpdateSlice;

impl OpRule for DynamicUpdateSlice {
    fn name(&self) -> &'static str {
        "dynamic-update-slice"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        let x = array(operands, 0)?;
        let u = array(operands, 1)?;
        check_scalar_indices(x, operands, 2)?;
        if u.dtype != x.dtype {
            return Err(ShapeError::DTypeMismatch {
                what: "update",
                expected: x.dtype,
                got: u.dtype,
            });
        }
        if u.rank() != x.rank() || u.dims.iter().zip(&x.dims).any(|(a, b)| a > b) {
            return Err(ShapeError::invalid(
                "update",
                format!("{u} does not fit inside {x}"),
            ));
        }
        Ok(Type::Array(x.clone()))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("dynamic-update-slice", ty, operands, |_| {})
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GatherDims {
    pub offset_dims: Vec<i64>,
    pub collapsed_slice_dims: Vec<i64>,
    pub start_index_map: Vec<i64>,
    pub index_vector_dim: i64,
}

/// `gather(operand, start_indices)` (XLA semantics without batching dims).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Gather {
    pub dims: GatherDims,
    pub slice_sizes: Vec<i64>,
}

/// The batch dims of an index array: all dims but `index_vector_dim` (which may be one past
/// the end, meaning an implicit trailing index vector of size 1).
fn index_batch_dims(idx: &ArrayType, index_vector_dim: i64) -> Result<(Vec<i64>, i64), ShapeError> {
    if index_vector_dim < 0 || index_vector_dim as usize > idx.rank() {
        return Err(ShapeError::DimOutOfRange {
            dim: index_vector_dim,
            rank: idx.rank() + 1,
        });
    }
    let ivd = index_vector_dim as usize;
    let vec_len = if ivd == idx.rank() { 1 } else { idx.dims[ivd] };
    let batch = idx
        .dims
        .iter()
        .enumerate()
        .filter(|&(d, _)| d != ivd)
        .map(|(_, &n)| n)
        .collect();
    Ok((batch, vec_len))
}

impl OpRule for Gather {
    fn name(&self) -> &'static str {
        "gather"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 2)?;
        let (x, idx) = (array(operands, 0)?, array(operands, 1)?);
        let g = &self.dims;
        if !idx.dtype.is_int() {
            return Err(ShapeError::DTypeNotAllowed {
                what: "gather indices",
                dtype: idx.dtype,
            });
        }
        let (batch, vec_len) = index_batch_dims(idx, g.index_vector_dim)?;
        if g.start_index_map.len() as i64 != vec_len {
            return Err(ShapeError::invalid(
                "gather dimension numbers",
                format!(
                    "start_index_map has {} entries but the index vector has {vec_len}",
                    g.start_index_map.len()
                ),
            ));
        }
        if !all_distinct_in_range(&g.start_index_map, x.rank())
            || !all_distinct_in_range(&g.collapsed_slice_dims, x.rank())
        {
            return Err(ShapeError::invalid(
                "gather dimension numbers",
                format!("start_index_map/collapsed_slice_dims must be distinct dims of {x}"),
            ));
        }
        if self.slice_sizes.len() != x.rank() {
            return Err(ShapeError::WrongRank {
                what: "gather slice sizes",
                expected: x.rank(),
                got: self.slice_sizes.len(),
            });
        }
        for (d, (&s, &n)) in self.slice_sizes.iter().zip(&x.dims).enumerate() {
            if s < 0 || s > n {
                return Err(ShapeError::SliceOutOfRange {
                    dim: d,
                    start: 0,
                    limit: s,
                    stride: 1,
                    size: n,
                });
            }
        }
        for &c in &g.collapsed_slice_dims {
            if self.slice_sizes[c as usize] > 1 {
                return Err(ShapeError::invalid(
                    "gather dimension numbers",
                    format!("collapsed dim {c} must have slice size 1"),
                ));
            }
        }
        let offsets: Vec<i64> = (0..x.rank() as i64)
            .filter(|d| !g.collapsed_slice_dims.contains(d))
            .map(|d| self.slice_sizes[d as usize])
            .collect();
        let out_rank = batch.len() + offsets.len();
        if g.offset_dims.len() != offsets.len()
            || !all_distinct_in_range(&g.offset_dims, out_rank)
            || g.offset_dims.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(ShapeError::invalid(
                "gather dimension numbers",
                format!(
                    "offset_dims {:?} must be {} increasing output dims of rank {out_rank}",
                    g.offset_dims,
                    offsets.len()
                ),
            ));
        }
        let (mut b, mut o) = (batch.into_iter(), offsets.into_iter());
        let dims = (0..out_rank as i64)
            .map(|d| {
                if g.offset_dims.contains(&d) {
                    o.next().unwrap()
                } else {
                    b.next().unwrap()
                }
            })
            .collect::<Vec<_>>();
        Ok(Type::Array(x.with_dims(dims)))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("gather", ty, operands, |i| {
            i.gather_dimension_numbers = Some(Box::new(xla_proto::GatherDimensionNumbers {
                offset_dims: self.dims.offset_dims.clone(),
                collapsed_slice_dims: self.dims.collapsed_slice_dims.clone(),
                start_index_map: self.dims.start_index_map.clone(),
                index_vector_dim: self.dims.index_vector_dim,
                ..Default::default()
            }));
            i.gather_slice_sizes = self.slice_sizes.clone();
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScatterDims {
    pub update_window_dims: Vec<i64>,
    pub inserted_window_dims: Vec<i64>,
    pub scatter_dims_to_operand_dims: Vec<i64>,
    pub index_vector_dim: i64,
}

/// How scatter combines an update with the value already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScatterCombiner {
    /// Overwrite (KV-cache writes).
    Assign,
    Add,
}

/// `scatter(operand, indices, updates)` (XLA semantics without batching dims).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scatter {
    pub dims: ScatterDims,
    pub combiner: ScatterCombiner,
    pub indices_are_sorted: bool,
    pub unique_indices: bool,
}

impl OpRule for Scatter {
    fn name(&self) -> &'static str {
        "scatter"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 3)?;
        let (x, idx, upd) = (
            array(operands, 0)?,
            array(operands, 1)?,
            array(operands, 2)?,
        );
        let s = &self.dims;
        if !idx.dtype.is_int() {
            return Err(ShapeError::DTypeNotAllowed {
                what: "scatter indices",
                dtype: idx.dtype,
            });
        }
        if upd.dtype != x.dtype {
            return Err(ShapeError::DTypeMismatch {
                what: "updates",
                expected: x.dtype,
                got: upd.dtype,
            });
        }
        let (batch, vec_len) = index_batch_dims(idx, s.index_vector_dim)?;
        let bad = |reason: String| ShapeError::invalid("scatter dimension numbers", reason);
        if s.scatter_dims_to_operand_dims.len() as i64 != vec_len
            || !all_distinct_in_range(&s.scatter_dims_to_operand_dims, x.rank())
        {
            return Err(bad(format!(
                "scatter_dims_to_operand_dims {:?} must be {vec_len} distinct dims of {x}",
                s.scatter_dims_to_operand_dims
            )));
        }
        if s.update_window_dims.len() + s.inserted_window_dims.len() != x.rank()
            || !all_distinct_in_range(&s.inserted_window_dims, x.rank())
        {
            return Err(bad(format!(
                "update_window_dims {:?} and inserted_window_dims {:?} must cover the {} dims of {x}",
                s.update_window_dims,
                s.inserted_window_dims,
                x.rank()
            )));
        }
        if upd.rank() != batch.len() + s.update_window_dims.len()
            || !all_distinct_in_range(&s.update_window_dims, upd.rank())
            || s.update_window_dims.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(bad(format!(
                "updates {upd} must have {} scatter dims plus increasing window dims {:?}",
                batch.len(),
                s.update_window_dims
            )));
        }
        let window_operand_dims =
            (0..x.rank() as i64).filter(|d| !s.inserted_window_dims.contains(d));
        for (&uw, od) in s.update_window_dims.iter().zip(window_operand_dims) {
            if upd.dims[uw as usize] > x.dims[od as usize] {
                return Err(bad(format!(
                    "update window dim {uw} ({}) is larger than operand dim {od} ({})",
                    upd.dims[uw as usize], x.dims[od as usize]
                )));
            }
        }
        let update_scatter: Vec<i64> = (0..upd.rank() as i64)
            .filter(|d| !s.update_window_dims.contains(d))
            .map(|d| upd.dims[d as usize])
            .collect();
        if update_scatter != batch {
            return Err(bad(format!(
                "update scatter dims {update_scatter:?} differ from the index batch dims {batch:?}"
            )));
        }
        Ok(Type::Array(x.clone()))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        let dtype = ty.as_array().expect("scatter result is an array").dtype;
        let combiner = match self.combiner {
            ScatterCombiner::Add => binary_scalar_computation(cx.module(), "add", dtype),
            ScatterCombiner::Assign => {
                cx.module().subcomputation(&format!("assign_{dtype}"), |c| {
                    let t = Type::Array(ArrayType::scalar(dtype));
                    c.parameter(0, "old", &t);
                    c.parameter(1, "new", &t)
                })
            }
        };
        cx.emit("scatter", ty, operands, |i| {
            i.scatter_dimension_numbers = Some(Box::new(xla_proto::ScatterDimensionNumbers {
                update_window_dims: self.dims.update_window_dims.clone(),
                inserted_window_dims: self.dims.inserted_window_dims.clone(),
                scatter_dims_to_operand_dims: self.dims.scatter_dims_to_operand_dims.clone(),
                index_vector_dim: self.dims.index_vector_dim,
                ..Default::default()
            }));
            i.indices_are_sorted = self.indices_are_sorted;
            i.unique_indices = self.unique_indices;
            i.called_computation_ids = vec![combiner];
        })
    }
}
