//! Ops that introduce values or restructure them: parameter, constant, iota, tuple,
//! get-tuple-element and custom-call.

use super::{array, expect_arity, OpRule};
use crate::ir::emit::CompEmitter;
use crate::ir::error::ShapeError;
use crate::ir::literal::Literal;
use crate::ir::types::{ArrayType, Type};

/// An entry parameter. `number` is its position in the signature.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Parameter {
    pub number: i64,
    pub name: String,
    pub ty: ArrayType,
}

impl OpRule for Parameter {
    fn name(&self) -> &'static str {
        "parameter"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 0)?;
        Ok(Type::Array(self.ty.clone()))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, _: &[i64], ty: &Type) -> i64 {
        cx.parameter(self.number, &sanitize_name(&self.name), ty)
    }
}

/// HLO identifiers allow letters, digits, `_`, `.` and `-`; anything else becomes `_`.
pub fn sanitize_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Constant(pub Literal);

impl OpRule for Constant {
    fn name(&self) -> &'static str {
        "constant"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 0)?;
        let lit = &self.0;
        let want = lit.ty.element_count() as usize * lit.ty.dtype.byte_size();
        if lit.bytes.len() != want || lit.ty.dims.iter().any(|&d| d < 0) {
            return Err(ShapeError::invalid(
                "constant",
                format!(
                    "{} needs {want} bytes, literal has {}",
                    lit.ty,
                    lit.bytes.len()
                ),
            ));
        }
        Ok(Type::Array(lit.ty.clone()))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, _: &[i64], _: &Type) -> i64 {
        cx.constant(&self.0)
    }
}

/// `iota`: values 0, 1, 2, ... along `dim`, broadcast over the other dims.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Iota {
    pub ty: ArrayType,
    pub dim: i64,
}

impl OpRule for Iota {
    fn name(&self) -> &'static str {
        "iota"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 0)?;
        super::check_dim(self.dim, self.ty.rank())?;
        if self.ty.dtype == crate::ir::DType::Pred {
            return Err(ShapeError::DTypeNotAllowed {
                what: "iota",
                dtype: self.ty.dtype,
            });
        }
        Ok(Type::Array(self.ty.clone()))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, _: &[i64], ty: &Type) -> i64 {
        cx.emit("iota", ty, &[], |i| i.dimensions = vec![self.dim])
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tuple;

impl OpRule for Tuple {
    fn name(&self) -> &'static str {
        "tuple"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        let elems = (0..operands.len())
            .map(|i| array(operands, i).cloned())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Type::Tuple(elems))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("tuple", ty, operands, |_| {})
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GetTupleElement {
    pub index: i64,
}

impl OpRule for GetTupleElement {
    fn name(&self) -> &'static str {
        "get-tuple-element"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 1)?;
        match operands[0] {
            Type::Tuple(elems) => elems
                .get(self.index as usize)
                .filter(|_| self.index >= 0)
                .map(|e| Type::Array(e.clone()))
                .ok_or_else(|| {
                    ShapeError::invalid(
                        "tuple index",
                        format!("{} out of range for {}", self.index, operands[0]),
                    )
                }),
            t => Err(ShapeError::NotATuple {
                operand: 0,
                ty: t.clone(),
            }),
        }
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("get-tuple-element", ty, operands, |i| {
            i.tuple_index = self.index
        })
    }
}

/// A call into a backend kernel (e.g. Neuron's `AwsNeuronRmsNorm`). The result type (an
/// array, or a tuple such as `AwsNeuronTopK`'s values and indices) is declared by the caller,
/// since the IR cannot know the kernel's shape rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CustomCall {
    pub target: String,
    pub backend_config: Vec<u8>,
    pub ty: Type,
    pub has_side_effect: bool,
}

impl OpRule for CustomCall {
    fn name(&self) -> &'static str {
        "custom-call"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        for i in 0..operands.len() {
            array(operands, i)?;
        }
        if self.target.is_empty() {
            return Err(ShapeError::invalid("custom-call", "empty target name"));
        }
        Ok(self.ty.clone())
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("custom-call", ty, operands, |i| {
            i.custom_call_target = self.target.clone();
            i.backend_config = self.backend_config.clone();
            i.custom_call_has_side_effect = self.has_side_effect;
            // torch-neuronx leaves its AwsNeuron* calls' version unspecified, but XLA's proto
            // reader rejects that ("Unknown custom-call API version enum value: 0"), so the
            // original API, which is what XLA reads an unset version as elsewhere.
            i.custom_call_api_version = xla_proto::CustomCallApiVersion::ApiVersionOriginal as i32;
        })
    }
}
