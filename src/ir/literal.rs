//! Constant values. Stored as little-endian row-major bytes so a literal is plain
//! `Eq + Hash` data (no float comparisons), and converted to `LiteralProto` on lowering.

use super::types::{ArrayType, DType};
use half::{bf16, f16};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Literal {
    pub ty: ArrayType,
    pub bytes: Vec<u8>,
}

impl Literal {
    /// Converts each value to `dtype` with Rust `as` semantics for integers, IEEE rounding for
    /// floats (f16/bf16 round to nearest even), and `!= 0` for `pred`.
    pub fn from_f64(dtype: DType, dims: &[i64], values: &[f64]) -> Literal {
        let mut bytes = Vec::with_capacity(values.len() * dtype.byte_size());
        for &v in values {
            match dtype {
                DType::Pred => bytes.push((v != 0.0) as u8),
                DType::S8 => bytes.push(v as i8 as u8),
                DType::U8 => bytes.push(v as u8),
                DType::S32 => bytes.extend((v as i32).to_le_bytes()),
                DType::U32 => bytes.extend((v as u32).to_le_bytes()),
                DType::S64 => bytes.extend((v as i64).to_le_bytes()),
                DType::F16 => bytes.extend(f16::from_f64(v).to_le_bytes()),
                DType::BF16 => bytes.extend(bf16::from_f64(v).to_le_bytes()),
                DType::F32 => bytes.extend((v as f32).to_le_bytes()),
                DType::F64 => bytes.extend(v.to_le_bytes()),
            }
        }
        Literal {
            ty: ArrayType::new(dtype, dims.to_vec()),
            bytes,
        }
    }

    pub fn from_i64(dtype: DType, dims: &[i64], values: &[i64]) -> Literal {
        if dtype == DType::S64 {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            return Literal {
                ty: ArrayType::new(dtype, dims.to_vec()),
                bytes,
            };
        }
        let as_f64: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        Literal::from_f64(dtype, dims, &as_f64)
    }

    pub fn scalar(dtype: DType, value: f64) -> Literal {
        Literal::from_f64(dtype, &[], &[value])
    }

    pub fn element_count(&self) -> usize {
        self.ty.element_count() as usize
    }

    /// Element `i` widened to f64 (exact for every type but large s64/u64 values).
    pub fn get_f64(&self, i: usize) -> f64 {
        let w = self.ty.dtype.byte_size();
        let b = &self.bytes[i * w..(i + 1) * w];
        match self.ty.dtype {
            DType::Pred | DType::U8 => b[0] as f64,
            DType::S8 => b[0] as i8 as f64,
            DType::S32 => i32::from_le_bytes(b.try_into().unwrap()) as f64,
            DType::U32 => u32::from_le_bytes(b.try_into().unwrap()) as f64,
            DType::S64 => i64::from_le_bytes(b.try_into().unwrap()) as f64,
            DType::F16 => f16::from_le_bytes(b.try_into().unwrap()).to_f64(),
            DType::BF16 => bf16::from_le_bytes(b.try_into().unwrap()).to_f64(),
            DType::F32 => f32::from_le_bytes(b.try_into().unwrap()) as f64,
            DType::F64 => f64::from_le_bytes(b.try_into().unwrap()),
        }
    }

    pub fn to_proto(&self) -> xla_proto::LiteralProto {
        let mut p = xla_proto::LiteralProto {
            shape: Some(super::emit::shape_proto_of_array(&self.ty)),
            ..Default::default()
        };
        let words4 = || self.bytes.chunks_exact(4).map(|c| c.try_into().unwrap());
        let words8 = || self.bytes.chunks_exact(8).map(|c| c.try_into().unwrap());
        match self.ty.dtype {
            DType::Pred => p.preds = self.bytes.iter().map(|&b| b != 0).collect(),
            DType::S8 => p.s8s = self.bytes.clone(),
            DType::U8 => p.u8s = self.bytes.clone(),
            DType::S32 => p.s32s = words4().map(i32::from_le_bytes).collect(),
            DType::U32 => p.u32s = words4().map(u32::from_le_bytes).collect(),
            DType::S64 => p.s64s = words8().map(i64::from_le_bytes).collect(),
            DType::F16 => p.f16s = self.bytes.clone(),
            DType::BF16 => p.bf16s = self.bytes.clone(),
            DType::F32 => p.f32s = words4().map(f32::from_le_bytes).collect(),
            DType::F64 => p.f64s = words8().map(f64::from_le_bytes).collect(),
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_values_per_dtype() {
        for dtype in DType::ALL {
            let lit = Literal::from_f64(dtype, &[3], &[0.0, 1.0, 2.0]);
            assert_eq!(lit.bytes.len(), 3 * dtype.byte_size());
            let expect = if dtype == DType::Pred { 1.0 } else { 2.0 };
            assert_eq!(lit.get_f64(2), expect, "{dtype}");
        }
        let bf = Literal::scalar(DType::BF16, 1.0);
        assert_eq!(bf.to_proto().bf16s, vec![0x80, 0x3f]);
    }
}
