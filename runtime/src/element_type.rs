//! Element types and their two numberings.
//!
//! PJRT's transfer API numbers types with `PJRT_Buffer_Type`; HLO protos use
//! `xla.PrimitiveType`. The numbers agree for the integer and f16/f32/f64 types but not for
//! BF16 (13 vs 16) and several others (hlo.md §1.5). A shared cast between the two would be a
//! silent bf16 bug, so each direction is its own exhaustive `match`.

use xla_proto::PrimitiveType;

use crate::sys::PJRT_Buffer_Type as B;

/// The array element types the project's DSL uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElementType {
    Pred,
    S8,
    S16,
    S32,
    S64,
    U8,
    U16,
    U32,
    U64,
    F16,
    BF16,
    F32,
    F64,
}

impl ElementType {
    /// Every variant, for exhaustive tests and tables.
    pub const ALL: [ElementType; 13] = [
        ElementType::Pred,
        ElementType::S8,
        ElementType::S16,
        ElementType::S32,
        ElementType::S64,
        ElementType::U8,
        ElementType::U16,
        ElementType::U32,
        ElementType::U64,
        ElementType::F16,
        ElementType::BF16,
        ElementType::F32,
        ElementType::F64,
    ];

    /// Bytes per element in a dense host buffer (PRED is one byte, 0 or 1).
    pub fn byte_size(self) -> usize {
        match self {
            ElementType::Pred | ElementType::S8 | ElementType::U8 => 1,
            ElementType::S16 | ElementType::U16 | ElementType::F16 | ElementType::BF16 => 2,
            ElementType::S32 | ElementType::U32 | ElementType::F32 => 4,
            ElementType::S64 | ElementType::U64 | ElementType::F64 => 8,
        }
    }

    /// The `PJRT_Buffer_Type` used by buffer transfers (BF16 = 13).
    pub fn to_pjrt(self) -> crate::sys::PJRT_Buffer_Type {
        match self {
            ElementType::Pred => B::PJRT_Buffer_Type_PRED,
            ElementType::S8 => B::PJRT_Buffer_Type_S8,
            ElementType::S16 => B::PJRT_Buffer_Type_S16,
            ElementType::S32 => B::PJRT_Buffer_Type_S32,
            ElementType::S64 => B::PJRT_Buffer_Type_S64,
            ElementType::U8 => B::PJRT_Buffer_Type_U8,
            ElementType::U16 => B::PJRT_Buffer_Type_U16,
            ElementType::U32 => B::PJRT_Buffer_Type_U32,
            ElementType::U64 => B::PJRT_Buffer_Type_U64,
            ElementType::F16 => B::PJRT_Buffer_Type_F16,
            ElementType::BF16 => B::PJRT_Buffer_Type_BF16,
            ElementType::F32 => B::PJRT_Buffer_Type_F32,
            ElementType::F64 => B::PJRT_Buffer_Type_F64,
        }
    }

    /// Inverse of [`ElementType::to_pjrt`]; `None` for types this crate does not model.
    pub fn from_pjrt(ty: crate::sys::PJRT_Buffer_Type) -> Option<ElementType> {
        Some(match ty {
            B::PJRT_Buffer_Type_PRED => ElementType::Pred,
            B::PJRT_Buffer_Type_S8 => ElementType::S8,
            B::PJRT_Buffer_Type_S16 => ElementType::S16,
            B::PJRT_Buffer_Type_S32 => ElementType::S32,
            B::PJRT_Buffer_Type_S64 => ElementType::S64,
            B::PJRT_Buffer_Type_U8 => ElementType::U8,
            B::PJRT_Buffer_Type_U16 => ElementType::U16,
            B::PJRT_Buffer_Type_U32 => ElementType::U32,
            B::PJRT_Buffer_Type_U64 => ElementType::U64,
            B::PJRT_Buffer_Type_F16 => ElementType::F16,
            B::PJRT_Buffer_Type_BF16 => ElementType::BF16,
            B::PJRT_Buffer_Type_F32 => ElementType::F32,
            B::PJRT_Buffer_Type_F64 => ElementType::F64,
            _ => return None,
        })
    }

    /// The `xla.PrimitiveType` used in HLO protos (BF16 = 16). Deliberately a separate match
    /// from [`ElementType::to_pjrt`].
    pub fn to_primitive_type(self) -> PrimitiveType {
        match self {
            ElementType::Pred => PrimitiveType::Pred,
            ElementType::S8 => PrimitiveType::S8,
            ElementType::S16 => PrimitiveType::S16,
            ElementType::S32 => PrimitiveType::S32,
            ElementType::S64 => PrimitiveType::S64,
            ElementType::U8 => PrimitiveType::U8,
            ElementType::U16 => PrimitiveType::U16,
            ElementType::U32 => PrimitiveType::U32,
            ElementType::U64 => PrimitiveType::U64,
            ElementType::F16 => PrimitiveType::F16,
            ElementType::BF16 => PrimitiveType::Bf16,
            ElementType::F32 => PrimitiveType::F32,
            ElementType::F64 => PrimitiveType::F64,
        }
    }

    /// Inverse of [`ElementType::to_primitive_type`]; `None` for tuples, tokens, complex and
    /// narrow float types.
    pub fn from_primitive_type(ty: PrimitiveType) -> Option<ElementType> {
        Some(match ty {
            PrimitiveType::Pred => ElementType::Pred,
            PrimitiveType::S8 => ElementType::S8,
            PrimitiveType::S16 => ElementType::S16,
            PrimitiveType::S32 => ElementType::S32,
            PrimitiveType::S64 => ElementType::S64,
            PrimitiveType::U8 => ElementType::U8,
            PrimitiveType::U16 => ElementType::U16,
            PrimitiveType::U32 => ElementType::U32,
            PrimitiveType::U64 => ElementType::U64,
            PrimitiveType::F16 => ElementType::F16,
            PrimitiveType::Bf16 => ElementType::BF16,
            PrimitiveType::F32 => ElementType::F32,
            PrimitiveType::F64 => ElementType::F64,
            _ => return None,
        })
    }

    /// XLA's lower-case name as printed in HLO text (`bf16`, `pred`, …).
    pub fn name(self) -> &'static str {
        match self {
            ElementType::Pred => "pred",
            ElementType::S8 => "s8",
            ElementType::S16 => "s16",
            ElementType::S32 => "s32",
            ElementType::S64 => "s64",
            ElementType::U8 => "u8",
            ElementType::U16 => "u16",
            ElementType::U32 => "u32",
            ElementType::U64 => "u64",
            ElementType::F16 => "f16",
            ElementType::BF16 => "bf16",
            ElementType::F32 => "f32",
            ElementType::F64 => "f64",
        }
    }
}

impl std::fmt::Display for ElementType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Rust types that map to an [`ElementType`], for the typed buffer helpers.
///
/// Sealed: the crate views `&[T]` as bytes when uploading, which is sound only for the types
/// implemented here (no padding, every bit pattern of the value initialized; `bool` is one byte,
/// 0 or 1, exactly XLA's PRED). Values use the host's byte order, as PJRT host buffers do.
pub trait NativeType: sealed::Sealed + Copy + Sized + 'static {
    const ELEMENT_TYPE: ElementType;
    /// Reads one value from exactly `ELEMENT_TYPE.byte_size()` bytes.
    fn read_ne(bytes: &[u8]) -> Self;
}

macro_rules! native_type {
    ($($t:ty => $et:ident, $n:literal;)*) => {$(
        impl sealed::Sealed for $t {}
        impl NativeType for $t {
            const ELEMENT_TYPE: ElementType = ElementType::$et;
            fn read_ne(bytes: &[u8]) -> Self {
                let mut raw = [0u8; $n];
                raw.copy_from_slice(bytes);
                <$t>::from_ne_bytes(raw)
            }
        }
    )*};
}

native_type! {
    i8 => S8, 1;
    i16 => S16, 2;
    i32 => S32, 4;
    i64 => S64, 8;
    u8 => U8, 1;
    u16 => U16, 2;
    u32 => U32, 4;
    u64 => U64, 8;
    half::f16 => F16, 2;
    half::bf16 => BF16, 2;
    f32 => F32, 4;
    f64 => F64, 8;
}

impl sealed::Sealed for bool {}
/// Any non-zero PRED byte reads as `true` (XLA itself writes only 0 and 1).
impl NativeType for bool {
    const ELEMENT_TYPE: ElementType = ElementType::Pred;
    fn read_ne(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

/// Views a slice of native values as its host bytes.
pub(crate) fn as_bytes<T: NativeType>(data: &[T]) -> &[u8] {
    // SAFETY: `NativeType` is sealed to padding-free plain-old-data types (see its docs), so
    // every byte of the slice is initialized; `u8` has alignment 1 and the length is exact.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_types_match_byte_sizes() {
        fn check<T: NativeType>() {
            assert_eq!(std::mem::size_of::<T>(), T::ELEMENT_TYPE.byte_size());
        }
        check::<bool>();
        check::<i8>();
        check::<i16>();
        check::<i32>();
        check::<i64>();
        check::<u8>();
        check::<u16>();
        check::<u32>();
        check::<u64>();
        check::<half::f16>();
        check::<half::bf16>();
        check::<f32>();
        check::<f64>();
    }

    #[test]
    fn as_bytes_is_native_endian() {
        assert_eq!(as_bytes(&[1.5f32]), 1.5f32.to_ne_bytes());
        assert_eq!(as_bytes(&[true, false]), [1, 0]);
        assert_eq!(f32::read_ne(&2.5f32.to_ne_bytes()), 2.5);
    }
}
