//! The `Tensor` handle and its ops. Every method is `#[track_caller]`, so an error points at
//! the line of model code that recorded the op, and returns `Result`: a shape error is a
//! value, never a panic.

use super::builder::GraphBuilder;
use super::error::OpError;
use crate::ir::ops::*;
use crate::ir::{ArrayType, DType, NodeId, ShapeError, Type};
use std::fmt;
use std::panic::Location;

/// A typed handle to a recorded value: element type and static shape are known here.
#[derive(Clone)]
pub struct Tensor {
    id: NodeId,
    ty: ArrayType,
    pub(crate) builder: GraphBuilder,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.id, self.ty)
    }
}

type R = Result<Tensor, OpError>;

impl Tensor {
    pub(crate) fn from_parts(id: NodeId, ty: Type, builder: GraphBuilder) -> Tensor {
        let ty = match ty {
            Type::Array(a) => a,
            Type::Tuple(_) => unreachable!("tuple values are TupleValue handles"),
        };
        Tensor { id, ty, builder }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn ty(&self) -> &ArrayType {
        &self.ty
    }
    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }
    pub fn dims(&self) -> &[i64] {
        &self.ty.dims
    }
    pub fn rank(&self) -> usize {
        self.ty.rank()
    }
    pub fn builder(&self) -> &GraphBuilder {
        &self.builder
    }

    /// Size of dim `d`; negative `d` counts from the end (`-1` is the last dim). Panics when
    /// `d` is out of range (a programming error; ops report bad dims as `OpError`s).
    pub fn dim(&self, d: i64) -> i64 {
        self.ty.dims[self.axis(d)]
    }

    fn axis(&self, d: i64) -> usize {
        if d < 0 {
            (self.rank() as i64 + d) as usize
        } else {
            d as usize
        }
    }

    #[track_caller]
    fn unary(&self, op: UnaryOp) -> R {
        self.builder.record(Unary(op), &[self])
    }

    #[track_caller]
    fn error(&self, op: &'static str, operands: &[&Tensor], error: ShapeError) -> OpError {
        OpError::new(
            op,
            operands.iter().map(|t| Type::Array(t.ty.clone())).collect(),
            self.builder.scope_path(),
            Location::caller(),
            error,
        )
    }

    // ---- Elementwise ----

    #[track_caller]
    pub fn neg(&self) -> R {
        self.unary(UnaryOp::Negate)
    }
    #[track_caller]
    pub fn abs(&self) -> R {
        self.unary(UnaryOp::Abs)
    }
    #[track_caller]
    pub fn exp(&self) -> R {
        self.unary(UnaryOp::Exp)
    }
    #[track_caller]
    pub fn log(&self) -> R {
        self.unary(UnaryOp::Log)
    }
    #[track_caller]
    pub fn sqrt(&self) -> R {
        self.unary(UnaryOp::Sqrt)
    }
    #[track_caller]
    pub fn rsqrt(&self) -> R {
        self.unary(UnaryOp::Rsqrt)
    }
    #[track_caller]
    pub fn tanh(&self) -> R {
        self.unary(UnaryOp::Tanh)
    }
    #[track_caller]
    pub fn logistic(&self) -> R {
        self.unary(UnaryOp::Logistic)
    }
    #[track_caller]
    pub fn sin(&self) -> R {
        self.unary(UnaryOp::Sine)
    }
    #[track_caller]
    pub fn cos(&self) -> R {
        self.unary(UnaryOp::Cosine)
    }

    /// Binary op with numpy-style broadcasting, recorded as explicit reshape/broadcast ops.
    #[track_caller]
    pub fn binary(&self, op: BinaryOp, rhs: &Tensor) -> R {
        let (a, b) = self.broadcast_pair(op.opcode(), rhs)?;
        self.builder.record(Binary(op), &[&a, &b])
    }
    #[track_caller]
    pub fn add(&self, rhs: &Tensor) -> R {
        self.binary(BinaryOp::Add, rhs)
    }
    #[track_caller]
    pub fn sub(&self, rhs: &Tensor) -> R {
        self.binary(BinaryOp::Subtract, rhs)
    }
    #[track_caller]
    pub fn mul(&self, rhs: &Tensor) -> R {
        self.binary(BinaryOp::Multiply, rhs)
    }
    #[track_caller]
    pub fn div(&self, rhs: &Tensor) -> R {
        self.binary(BinaryOp::Divide, rhs)
    }
    #[track_caller]
    pub fn max(&self, rhs: &Tensor) -> R {
        self.binary(BinaryOp::Maximum, rhs)
    }
    #[track_caller]
    pub fn min(&self, rhs: &Tensor) -> R {
        self.binary(BinaryOp::Minimum, rhs)
    }
    /// Logical and of preds (bitwise for integers).
    #[track_caller]
    pub fn and(&self, rhs: &Tensor) -> R {
        self.binary(BinaryOp::And, rhs)
    }

    /// Logical or of preds (bitwise for integers).
    #[track_caller]
    pub fn or(&self, rhs: &Tensor) -> R {
        self.binary(BinaryOp::Or, rhs)
    }

    #[track_caller]
    pub fn pow(&self, rhs: &Tensor) -> R {
        self.binary(BinaryOp::Power, rhs)
    }

    /// A scalar constant of this tensor's dtype (to combine with broadcasting ops).
    #[track_caller]
    pub fn scalar_like(&self, value: f64) -> R {
        self.builder.scalar(self.dtype(), value)
    }
    #[track_caller]
    pub fn add_scalar(&self, value: f64) -> R {
        self.add(&self.scalar_like(value)?)
    }
    #[track_caller]
    pub fn mul_scalar(&self, value: f64) -> R {
        self.mul(&self.scalar_like(value)?)
    }

    #[track_caller]
    pub fn compare(&self, rhs: &Tensor, direction: Direction) -> R {
        let (a, b) = self.broadcast_pair("compare", rhs)?;
        self.builder.record(Compare(direction), &[&a, &b])
    }
    #[track_caller]
    pub fn eq(&self, rhs: &Tensor) -> R {
        self.compare(rhs, Direction::Eq)
    }
    #[track_caller]
    pub fn ne(&self, rhs: &Tensor) -> R {
        self.compare(rhs, Direction::Ne)
    }
    #[track_caller]
    pub fn lt(&self, rhs: &Tensor) -> R {
        self.compare(rhs, Direction::Lt)
    }
    #[track_caller]
    pub fn le(&self, rhs: &Tensor) -> R {
        self.compare(rhs, Direction::Le)
    }
    #[track_caller]
    pub fn gt(&self, rhs: &Tensor) -> R {
        self.compare(rhs, Direction::Gt)
    }
    #[track_caller]
    pub fn ge(&self, rhs: &Tensor) -> R {
        self.compare(rhs, Direction::Ge)
    }

    /// `select(self, on_true, on_false)` on a `pred` tensor; all three broadcast together.
    #[track_caller]
    pub fn select(&self, on_true: &Tensor, on_false: &Tensor) -> R {
        let dims =
            broadcast_dims(&[self.dims(), on_true.dims(), on_false.dims()]).map_err(|reason| {
                self.error(
                    "select",
                    &[self, on_true, on_false],
                    bad_broadcast(self, on_true, reason),
                )
            })?;
        let p = self.broadcast_to(&dims)?;
        let t = on_true.broadcast_to(&dims)?;
        let f = on_false.broadcast_to(&dims)?;
        self.builder.record(Select, &[&p, &t, &f])
    }

    /// `clamp(min, self, max)`; bounds are scalars or have this tensor's dims.
    #[track_caller]
    pub fn clamp(&self, min: &Tensor, max: &Tensor) -> R {
        self.builder.record(Clamp, &[min, self, max])
    }

    #[track_caller]
    pub fn convert(&self, to: DType) -> R {
        if to == self.dtype() {
            return Ok(self.clone());
        }
        self.builder.record(Convert { to }, &[self])
    }

    // ---- Movement ----

    #[track_caller]
    pub fn reshape(&self, dims: &[i64]) -> R {
        if dims == self.dims() {
            return Ok(self.clone());
        }
        self.builder.record(
            Reshape {
                dims: dims.to_vec(),
            },
            &[self],
        )
    }

    #[track_caller]
    pub fn transpose(&self, perm: &[i64]) -> R {
        self.builder.record(
            Transpose {
                perm: perm.to_vec(),
            },
            &[self],
        )
    }

    /// HLO `broadcast`: operand dim `i` becomes output dim `mapping[i]`.
    #[track_caller]
    pub fn broadcast_in_dim(&self, dims: &[i64], mapping: &[i64]) -> R {
        if dims == self.dims() && mapping.iter().enumerate().all(|(i, &m)| m == i as i64) {
            return Ok(self.clone());
        }
        self.builder.record(
            Broadcast {
                dims: dims.to_vec(),
                mapping: mapping.to_vec(),
            },
            &[self],
        )
    }

    /// Numpy-style broadcast to `dims` (dims align from the right; size-1 dims stretch). Records
    /// a reshape dropping the stretched size-1 dims, then an HLO broadcast.
    #[track_caller]
    pub fn broadcast_to(&self, dims: &[i64]) -> R {
        if dims == self.dims() {
            return Ok(self.clone());
        }
        let (r, rank) = (self.rank(), dims.len());
        if r > rank {
            return Err(self.error(
                "broadcast",
                &[self],
                bad_broadcast_to(self, dims, "target has lower rank"),
            ));
        }
        let offset = rank - r;
        let mut kept_dims = Vec::new();
        let mut mapping = Vec::new();
        for (i, &d) in self.dims().iter().enumerate() {
            let t = dims[offset + i];
            if d == t {
                kept_dims.push(d);
                mapping.push((offset + i) as i64);
            } else if d != 1 {
                let reason = format!("dim {i} has size {d}, target has {t}");
                return Err(self.error(
                    "broadcast",
                    &[self],
                    bad_broadcast_to(self, dims, &reason),
                ));
            }
        }
        self.reshape(&kept_dims)?.broadcast_in_dim(dims, &mapping)
    }

    #[track_caller]
    fn broadcast_pair(&self, op: &'static str, rhs: &Tensor) -> Result<(Tensor, Tensor), OpError> {
        if self.dims() == rhs.dims() {
            return Ok((self.clone(), rhs.clone()));
        }
        let dims = broadcast_dims(&[self.dims(), rhs.dims()])
            .map_err(|reason| self.error(op, &[self, rhs], bad_broadcast(self, rhs, reason)))?;
        Ok((self.broadcast_to(&dims)?, rhs.broadcast_to(&dims)?))
    }

    #[track_caller]
    pub fn slice(&self, starts: &[i64], limits: &[i64], strides: &[i64]) -> R {
        self.builder.record(
            Slice {
                starts: starts.to_vec(),
                limits: limits.to_vec(),
                strides: strides.to_vec(),
            },
            &[self],
        )
    }

    /// `[start, limit)` along one dim (negative dims count from the end), everything else whole.
    /// The whole dim is the tensor itself: no op is recorded.
    #[track_caller]
    pub fn slice_dim(&self, dim: i64, start: i64, limit: i64) -> R {
        let d = self.axis(dim);
        if d < self.rank() && start == 0 && limit == self.dims()[d] {
            return Ok(self.clone());
        }
        let mut starts = vec![0; self.rank()];
        let mut limits = self.dims().to_vec();
        if d >= self.rank() {
            return Err(self.error(
                "slice",
                &[self],
                ShapeError::DimOutOfRange {
                    dim,
                    rank: self.rank(),
                },
            ));
        }
        starts[d] = start;
        limits[d] = limit;
        self.slice(&starts, &limits, &vec![1; self.rank()])
    }

    #[track_caller]
    pub fn pad(&self, value: &Tensor, low: &[i64], high: &[i64], interior: &[i64]) -> R {
        self.builder.record(
            Pad {
                low: low.to_vec(),
                high: high.to_vec(),
                interior: interior.to_vec(),
            },
            &[self, value],
        )
    }

    #[track_caller]
    pub fn concat(tensors: &[&Tensor], dim: i64) -> R {
        match tensors.first() {
            Some(first) => first.builder.concatenate(tensors, dim),
            None => Err(OpError::new(
                "concatenate",
                Vec::new(),
                String::new(),
                Location::caller(),
                ShapeError::Arity {
                    expected: 1,
                    got: 0,
                },
            )),
        }
    }

    // ---- Indexing ----

    #[track_caller]
    pub fn dynamic_slice(&self, starts: &[&Tensor], sizes: &[i64]) -> R {
        let mut ops = vec![self];
        ops.extend_from_slice(starts);
        self.builder.record(
            DynamicSlice {
                sizes: sizes.to_vec(),
            },
            &ops,
        )
    }

    #[track_caller]
    pub fn dynamic_update_slice(&self, update: &Tensor, starts: &[&Tensor]) -> R {
        let mut ops = vec![self, update];
        ops.extend_from_slice(starts);
        self.builder.record(DynamicUpdateSlice, &ops)
    }

    #[track_caller]
    pub fn gather(&self, indices: &Tensor, dims: GatherDims, slice_sizes: &[i64]) -> R {
        self.builder.record(
            Gather {
                dims,
                slice_sizes: slice_sizes.to_vec(),
            },
            &[self, indices],
        )
    }

    /// Embedding lookup: rows of this `[V, D]` table at integer `ids` of any shape → `[..ids, D]`.
    #[track_caller]
    pub fn take(&self, ids: &Tensor) -> R {
        if self.rank() != 2 {
            let e = ShapeError::WrongRank {
                what: "embedding table",
                expected: 2,
                got: self.rank(),
            };
            return Err(self.error("gather", &[self, ids], e));
        }
        let r = ids.rank() as i64;
        self.gather(
            ids,
            GatherDims {
                offset_dims: vec![r],
                collapsed_slice_dims: vec![0],
                start_index_map: vec![0],
                index_vector_dim: r,
            },
            &[1, self.dim(1)],
        )
    }

    #[track_caller]
    pub fn scatter(
        &self,
        indices: &Tensor,
        updates: &Tensor,
        dims: ScatterDims,
        combiner: ScatterCombiner,
    ) -> R {
        self.builder.record(
            Scatter {
                dims,
                combiner,
                indices_are_sorted: false,
                unique_indices: false,
            },
            &[self, indices, updates],
        )
    }

    /// Sorts this tensor along `dim` (descending or ascending, stably: equal keys keep their
    /// order) and `others` (same dims) by the same permutation; returns the sorted key, then the
    /// sorted others.
    #[track_caller]
    pub fn sort_with(
        &self,
        dim: i64,
        descending: bool,
        others: &[&Tensor],
    ) -> Result<Vec<Tensor>, OpError> {
        let dim = self.axis(dim) as i64;
        if others.is_empty() {
            return Ok(vec![self
                .builder
                .record(Sort { dim, descending }, &[self])?]);
        }
        let mut ops = vec![self];
        ops.extend_from_slice(others);
        let tuple = self
            .builder
            .record_tuple_op(Sort { dim, descending }, &ops)?;
        (0..tuple.len()).map(|i| tuple.get(i)).collect()
    }

    // ---- Contraction and reduction ----

    #[track_caller]
    pub fn dot_general(&self, rhs: &Tensor, dims: DotDims) -> R {
        self.builder.record(
            Dot {
                dims,
                out: self.dtype(),
            },
            &[self, rhs],
        )
    }

    /// `dot_general` with a wider result type (e.g. bf16 operands, f32 result).
    #[track_caller]
    pub fn dot_general_to(&self, rhs: &Tensor, dims: DotDims, out: DType) -> R {
        self.builder.record(Dot { dims, out }, &[self, rhs])
    }

    /// `self` `[m, k]` times `w` through one of the runtime's matrix-vector kernels → f32
    /// `[m, n]`: bf16 `w [n, k]` or f32 `w [k, n]` ([`crate::ir::ops::MatvecKernel`]).
    #[track_caller]
    pub fn matvec_kernel(&self, w: &Tensor, kernel: crate::ir::ops::MatvecKernel) -> R {
        self.builder.record(kernel, &[self, w])
    }

    /// `[..., K] · [K, N] → [..., N]`.
    #[track_caller]
    pub fn matmul(&self, rhs: &Tensor) -> R {
        self.dot_general(
            rhs,
            DotDims {
                lhs_contracting: vec![self.rank() as i64 - 1],
                rhs_contracting: vec![0],
                ..Default::default()
            },
        )
    }

    #[track_caller]
    pub fn reduce(&self, kind: ReduceKind, dims: &[i64]) -> R {
        let dims: Vec<i64> = dims.iter().map(|&d| self.axis(d) as i64).collect();
        self.builder.record(Reduce { kind, dims }, &[self])
    }
    #[track_caller]
    pub fn sum(&self, dims: &[i64]) -> R {
        self.reduce(ReduceKind::Sum, dims)
    }
    #[track_caller]
    pub fn reduce_max(&self, dims: &[i64]) -> R {
        self.reduce(ReduceKind::Max, dims)
    }
    #[track_caller]
    pub fn reduce_min(&self, dims: &[i64]) -> R {
        self.reduce(ReduceKind::Min, dims)
    }

    /// Index of the largest element along `dim` (the first one among ties).
    #[track_caller]
    pub fn argmax(&self, dim: i64, index_dtype: DType) -> R {
        let dim = self.axis(dim) as i64;
        self.builder.record(Argmax { dim, index_dtype }, &[self])
    }

    // ---- Collectives ----

    #[track_caller]
    pub fn all_reduce(&self, kind: ReduceKind, groups: &ReplicaGroups) -> R {
        self.builder.record(
            AllReduce {
                kind,
                groups: groups.clone(),
            },
            &[self],
        )
    }

    #[track_caller]
    pub fn all_gather(&self, dim: i64, groups: &ReplicaGroups) -> R {
        let dim = self.axis(dim) as i64;
        self.builder.record(
            AllGather {
                dim,
                groups: groups.clone(),
            },
            &[self],
        )
    }

    #[track_caller]
    pub fn reduce_scatter(&self, kind: ReduceKind, dim: i64, groups: &ReplicaGroups) -> R {
        let dim = self.axis(dim) as i64;
        self.builder.record(
            ReduceScatter {
                kind,
                dim,
                groups: groups.clone(),
            },
            &[self],
        )
    }
}

/// Two sizes of one aligned dim that neither equal each other nor are 1.
struct Conflict {
    dim: usize,
    a: i64,
    b: i64,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dim {} has sizes {} and {}", self.dim, self.a, self.b)
    }
}

/// Numpy broadcast of several shapes: align from the right; each dim equal or 1.
fn broadcast_dims(shapes: &[&[i64]]) -> Result<Vec<i64>, Conflict> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1i64; rank];
    for s in shapes {
        let offset = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[offset + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(Conflict {
                    dim: offset + i,
                    a: *o,
                    b: d,
                });
            }
        }
    }
    Ok(out)
}

fn bad_broadcast(a: &Tensor, b: &Tensor, conflict: Conflict) -> ShapeError {
    ShapeError::BadBroadcast {
        from: a.ty.clone(),
        to: b.ty.to_string(),
        reason: conflict.to_string(),
    }
}

fn bad_broadcast_to(a: &Tensor, dims: &[i64], reason: &str) -> ShapeError {
    ShapeError::BadBroadcast {
        from: a.ty.clone(),
        to: format!("{dims:?}"),
        reason: reason.to_string(),
    }
}
