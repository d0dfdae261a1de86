//! Element types and static tensor types.

use std::fmt;

/// Element type of a tensor. The set is what the DSL records; the PJRT and HLO codes for
/// each live in two separate `match`es ([`DType::primitive_type`] here and the runtime's
/// buffer-type table), because the two numberings differ (bf16 is 16 in HLO, 13 in PJRT).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Pred,
    S8,
    S32,
    S64,
    U8,
    U32,
    F16,
    BF16,
    F32,
    F64,
}

impl DType {
    pub const ALL: [DType; 10] = [
        DType::Pred,
        DType::S8,
        DType::S32,
        DType::S64,
        DType::U8,
        DType::U32,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
    ];

    /// The name XLA prints (`f32`, `bf16`, `pred`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::Pred => "pred",
            DType::S8 => "s8",
            DType::S32 => "s32",
            DType::S64 => "s64",
            DType::U8 => "u8",
            DType::U32 => "u32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    /// `xla.PrimitiveType` code used in HLO protos.
    pub fn primitive_type(self) -> xla_proto::PrimitiveType {
        use xla_proto::PrimitiveType as P;
        match self {
            DType::Pred => P::Pred,
            DType::S8 => P::S8,
            DType::S32 => P::S32,
            DType::S64 => P::S64,
            DType::U8 => P::U8,
            DType::U32 => P::U32,
            DType::F16 => P::F16,
            DType::BF16 => P::Bf16,
            DType::F32 => P::F32,
            DType::F64 => P::F64,
        }
    }

    pub fn from_primitive_type(p: xla_proto::PrimitiveType) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.primitive_type() == p)
    }

    pub fn byte_size(self) -> usize {
        match self {
            DType::Pred | DType::S8 | DType::U8 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::S32 | DType::U32 | DType::F32 => 4,
            DType::S64 | DType::F64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    pub fn is_signed_int(self) -> bool {
        matches!(self, DType::S8 | DType::S32 | DType::S64)
    }

    pub fn is_unsigned_int(self) -> bool {
        matches!(self, DType::U8 | DType::U32)
    }

    pub fn is_int(self) -> bool {
        self.is_signed_int() || self.is_unsigned_int()
    }

    pub fn parse(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A static array type: element type plus dimensions, major to minor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ArrayType {
    pub dtype: DType,
    pub dims: Vec<i64>,
}

impl ArrayType {
    pub fn new(dtype: DType, dims: impl Into<Vec<i64>>) -> Self {
        ArrayType {
            dtype,
            dims: dims.into(),
        }
    }

    pub fn scalar(dtype: DType) -> Self {
        ArrayType::new(dtype, Vec::new())
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    pub fn element_count(&self) -> i64 {
        self.dims.iter().product()
    }

    pub fn byte_size(&self) -> i64 {
        self.element_count() * self.dtype.byte_size() as i64
    }

    pub fn with_dims(&self, dims: impl Into<Vec<i64>>) -> Self {
        ArrayType::new(self.dtype, dims)
    }

    pub fn with_dtype(&self, dtype: DType) -> Self {
        ArrayType::new(dtype, self.dims.clone())
    }

    /// Text form with XLA's default row-major layout, e.g. `f32[2,3]{1,0}`; scalars print no layout.
    pub fn to_string_with_layout(&self) -> String {
        let mut s = self.to_string();
        if !self.dims.is_empty() {
            let layout: Vec<String> = (0..self.dims.len()).rev().map(|d| d.to_string()).collect();
            s.push('{');
            s.push_str(&layout.join(","));
            s.push('}');
        }
        s
    }
}

impl fmt::Display for ArrayType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.dims.iter().map(|d| d.to_string()).collect();
        write!(f, "{}[{}]", self.dtype, dims.join(","))
    }
}

/// The type of an IR value: an array, or a flat tuple of arrays (tuple roots, variadic reduce).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    Array(ArrayType),
    Tuple(Vec<ArrayType>),
}

impl Type {
    pub fn as_array(&self) -> Option<&ArrayType> {
        match self {
            Type::Array(a) => Some(a),
            Type::Tuple(_) => None,
        }
    }
}

impl From<ArrayType> for Type {
    fn from(a: ArrayType) -> Self {
        Type::Array(a)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Array(a) => write!(f, "{a}"),
            Type::Tuple(elems) => {
                let parts: Vec<String> = elems.iter().map(|e| e.to_string()).collect();
                write!(f, "({})", parts.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_layout() {
        let t = ArrayType::new(DType::F32, vec![2, 3]);
        assert_eq!(t.to_string(), "f32[2,3]");
        assert_eq!(t.to_string_with_layout(), "f32[2,3]{1,0}");
        assert_eq!(
            ArrayType::scalar(DType::BF16).to_string_with_layout(),
            "bf16[]"
        );
        let tup = Type::Tuple(vec![t.clone(), ArrayType::new(DType::S32, vec![4])]);
        assert_eq!(tup.to_string(), "(f32[2,3], s32[4])");
    }

    #[test]
    fn primitive_type_codes_follow_xla_data_proto() {
        // hlo.md §1.5: the HLO numbering. bf16 is 16 here (13 in PJRT_Buffer_Type).
        let expected = [
            (DType::Pred, 1),
            (DType::S8, 2),
            (DType::S32, 4),
            (DType::S64, 5),
            (DType::U8, 6),
            (DType::U32, 8),
            (DType::F16, 10),
            (DType::F32, 11),
            (DType::F64, 12),
            (DType::BF16, 16),
        ];
        for (d, code) in expected {
            assert_eq!(d.primitive_type() as i32, code, "{d}");
            assert_eq!(DType::from_primitive_type(d.primitive_type()), Some(d));
        }
    }
}
