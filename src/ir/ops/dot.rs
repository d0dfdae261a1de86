//! `dot` with general dimension numbers.

use super::{all_distinct_in_range, array, expect_arity, OpRule};
use crate::ir::emit::CompEmitter;
use crate::ir::error::ShapeError;
use crate::ir::types::{DType, Type};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DotDims {
    pub lhs_batch: Vec<i64>,
    pub rhs_batch: Vec<i64>,
    pub lhs_contracting: Vec<i64>,
    pub rhs_contracting: Vec<i64>,
}

/// Output dims are: batch dims (in `lhs_batch` order), lhs free dims, rhs free dims.
/// `out` is the result element type; it may be wider than the operands' (bf16 · bf16 → f32),
/// which XLA treats as the preferred element type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dot {
    pub dims: DotDims,
    pub out: DType,
}

impl OpRule for Dot {
    fn name(&self) -> &'static str {
        "dot"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 2)?;
        let (l, r) = (array(operands, 0)?, array(operands, 1)?);
        let d = &self.dims;
        let bad = |reason: String| ShapeError::BadDotDims { reason };
        if l.dtype != r.dtype {
            return Err(ShapeError::DTypeMismatch {
                what: "rhs",
                expected: l.dtype,
                got: r.dtype,
            });
        }
        if l.dtype == DType::Pred
            || (self.out != l.dtype && !(l.dtype.is_float() && self.out.is_float()))
        {
            return Err(ShapeError::DTypeNotAllowed {
                what: "dot result",
                dtype: self.out,
            });
        }
        if d.lhs_batch.len() != d.rhs_batch.len() {
            return Err(bad(format!(
                "lhs has {} batch dims, rhs has {}",
                d.lhs_batch.len(),
                d.rhs_batch.len()
            )));
        }
        if d.lhs_contracting.len() != d.rhs_contracting.len() {
            return Err(bad(format!(
                "lhs has {} contracting dims, rhs has {}",
                d.lhs_contracting.len(),
                d.rhs_contracting.len()
            )));
        }
        for (side, t, batch, contract) in [
            ("lhs", l, &d.lhs_batch, &d.lhs_contracting),
            ("rhs", r, &d.rhs_batch, &d.rhs_contracting),
        ] {
            let all: Vec<i64> = batch.iter().chain(contract.iter()).copied().collect();
            if !all_distinct_in_range(&all, t.rank()) {
                return Err(bad(format!(
                    "{side} batch {batch:?} and contracting {contract:?} dims must be distinct dims of {t}"
                )));
            }
        }
        for (pairs, kind) in [
            ((&d.lhs_batch, &d.rhs_batch), "batch"),
            ((&d.lhs_contracting, &d.rhs_contracting), "contracting"),
        ] {
            for (&a, &b) in pairs.0.iter().zip(pairs.1.iter()) {
                if l.dims[a as usize] != r.dims[b as usize] {
                    return Err(bad(format!(
                        "{kind} dimension sizes differ: lhs dim {a} = {}, rhs dim {b} = {}",
                        l.dims[a as usize], r.dims[b as usize]
                    )));
                }
            }
        }
        let free = |t: &crate::ir::ArrayType, batch: &[i64], contract: &[i64]| {
            (0..t.rank() as i64)
                .filter(|x| !batch.contains(x) && !contract.contains(x))
                .map(|x| t.dims[x as usize])
                .collect::<Vec<_>>()
        };
        let mut dims: Vec<i64> = d.lhs_batch.iter().map(|&b| l.dims[b as usize]).collect();
        dims.extend(free(l, &d.lhs_batch, &d.lhs_contracting));
        dims.extend(free(r, &d.rhs_batch, &d.rhs_contracting));
        Ok(Type::Array(crate::ir::ArrayType::new(self.out, dims)))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("dot", ty, operands, |i| {
            i.dot_dimension_numbers = Some(Box::new(xla_proto::DotDimensionNumbers {
                lhs_contracting_dimensions: self.dims.lhs_contracting.clone(),
                rhs_contracting_dimensions: self.dims.rhs_contracting.clone(),
                lhs_batch_dimensions: self.dims.lhs_batch.clone(),
                rhs_batch_dimensions: self.dims.rhs_batch.clone(),
            }))
        })
    }
}

/// The typed-FFI custom-call target of [`MatvecKernel::Bf16`]: a bf16 matrix-vector kernel
/// that the runtime (`run::kernels`) registers with the CPU plugin before it compiles a graph.
pub const MATVEC_KERNEL_TARGET: &str = "phi3_neuron.bf16_matvec";

/// The typed-FFI custom-call target of [`MatvecKernel::F32`]: the f32 kernel for `[in, out]`
/// weights, registered the same way.
pub const F32_MATVEC_KERNEL_TARGET: &str = "phi3_neuron.f32_matvec";

/// A projection of a few rows through one of the runtime's kernels: `x [m, k]` times a weight,
/// → f32 `[m, n]`, the same products and f32 sums as the XLA dot it replaces, in an order of
/// the kernel's choosing. Lowered to a typed-FFI `custom-call` of the kernel's target: for a
/// few rows, XLA:CPU's own products read a weight more slowly than a kernel that streams it
/// once (docs/decode-performance.md). Only a runtime that registers the target runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatvecKernel {
    /// bf16 `x [m, k]` and bf16 `w [n, k]` (a projection weight in HF's `[out, in]` layout),
    /// as `dot(x, w, contracting 1·1) → f32`: [`MATVEC_KERNEL_TARGET`].
    Bf16,
    /// f32 `x [m, k]` and f32 `w [k, n]` (the `[in, out]` layout of
    /// `LinearForm::InputMajor`), as `dot(x, w, contracting 1·0)`: [`F32_MATVEC_KERNEL_TARGET`].
    F32,
}

impl MatvecKernel {
    /// The custom-call target the runtime registers for this kernel.
    pub fn target(self) -> &'static str {
        match self {
            MatvecKernel::Bf16 => MATVEC_KERNEL_TARGET,
            MatvecKernel::F32 => F32_MATVEC_KERNEL_TARGET,
        }
    }
}

impl OpRule for MatvecKernel {
    fn name(&self) -> &'static str {
        "matvec-kernel"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 2)?;
        let (x, w) = (array(operands, 0)?, array(operands, 1)?);
        let (dtype, contracting, free, layout) = match self {
            MatvecKernel::Bf16 => (DType::BF16, 1, 0, "w [n, k]"),
            MatvecKernel::F32 => (DType::F32, 0, 1, "w [k, n]"),
        };
        for (what, t) in [("matvec-kernel vector", x), ("matvec-kernel weight", w)] {
            if t.dtype != dtype {
                return Err(ShapeError::DTypeNotAllowed {
                    what,
                    dtype: t.dtype,
                });
            }
        }
        if x.rank() != 2 || w.rank() != 2 || x.dims[1] != w.dims[contracting] {
            return Err(ShapeError::invalid(
                "matvec-kernel",
                format!("wants x [m, k] and {layout}, got x {x} and w {w}"),
            ));
        }
        Ok(Type::Array(crate::ir::ArrayType::new(
            DType::F32,
            vec![x.dims[0], w.dims[free]],
        )))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("custom-call", ty, operands, |i| {
            i.custom_call_target = self.target().to_string();
            i.custom_call_api_version = xla_proto::CustomCallApiVersion::ApiVersionTypedFfi as i32;
        })
    }
}
