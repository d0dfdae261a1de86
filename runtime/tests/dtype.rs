//! `ElementType` against both numberings (hlo.md §1.5). They differ for BF16 (PJRT 13, HLO 16),
//! which is exactly the bug a shared cast would hide.

use pjrt_runtime::sys::PJRT_Buffer_Type;
use pjrt_runtime::ElementType;
use xla_proto::PrimitiveType;

/// (type, byte size, PJRT_Buffer_Type code, xla.PrimitiveType code), from hlo.md §1.5.
const TABLE: [(ElementType, usize, u32, i32); 13] = [
    (ElementType::Pred, 1, 1, 1),
    (ElementType::S8, 1, 2, 2),
    (ElementType::S16, 2, 3, 3),
    (ElementType::S32, 4, 4, 4),
    (ElementType::S64, 8, 5, 5),
    (ElementType::U8, 1, 6, 6),
    (ElementType::U16, 2, 7, 7),
    (ElementType::U32, 4, 8, 8),
    (ElementType::U64, 8, 9, 9),
    (ElementType::F16, 2, 10, 10),
    (ElementType::F32, 4, 11, 11),
    (ElementType::F64, 8, 12, 12),
    (ElementType::BF16, 2, 13, 16),
];

#[test]
fn both_mappings_for_every_element_type() {
    assert_eq!(TABLE.len(), ElementType::ALL.len());
    for ty in ElementType::ALL {
        let &(_, bytes, pjrt, hlo) = TABLE.iter().find(|row| row.0 == ty).unwrap();
        assert_eq!(ty.byte_size(), bytes, "{ty} byte size");
        assert_eq!(ty.to_pjrt().0, pjrt, "{ty} PJRT_Buffer_Type");
        assert_eq!(ty.to_primitive_type() as i32, hlo, "{ty} xla.PrimitiveType");
        assert_eq!(ElementType::from_pjrt(PJRT_Buffer_Type(pjrt)), Some(ty));
        assert_eq!(
            ElementType::from_primitive_type(PrimitiveType::try_from(hlo).unwrap()),
            Some(ty)
        );
    }
}

#[test]
fn bf16_codes_differ_between_the_two_enums() {
    assert_eq!(
        ElementType::BF16.to_pjrt(),
        PJRT_Buffer_Type::PJRT_Buffer_Type_BF16
    );
    assert_eq!(ElementType::BF16.to_pjrt().0, 13);
    assert_eq!(ElementType::BF16.to_primitive_type(), PrimitiveType::Bf16);
    assert_eq!(PrimitiveType::Bf16 as i32, 16);
    // Code 13 means TUPLE in HLO and 16 means F8E5M2 in PJRT: neither is an ElementType.
    assert_eq!(ElementType::from_primitive_type(PrimitiveType::Tuple), None);
    assert_eq!(ElementType::from_pjrt(PJRT_Buffer_Type(16)), None);
}

#[test]
fn unmodelled_types_are_rejected() {
    assert_eq!(
        ElementType::from_pjrt(PJRT_Buffer_Type::PJRT_Buffer_Type_C64),
        None
    );
    assert_eq!(
        ElementType::from_pjrt(PJRT_Buffer_Type::PJRT_Buffer_Type_INVALID),
        None
    );
    assert_eq!(ElementType::from_primitive_type(PrimitiveType::C64), None);
    assert_eq!(ElementType::from_primitive_type(PrimitiveType::Token), None);
}
