//! Per-graph statistics read off a lowered module: op histogram, matmul FLOPs, collective
//! count and bytes, and the bytes of intermediate values.

use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use xla_proto::{HloModuleProto, PrimitiveType, ShapeProto};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleStats {
    /// Entry-computation instructions per opcode (generated reducers are not counted).
    pub op_histogram: BTreeMap<String, usize>,
    pub instructions: usize,
    pub parameters: usize,
    /// `2 · M · N · K` summed over every `dot`.
    pub dot_flops: u64,
    pub collectives: usize,
    /// Bytes each rank contributes to collectives (the operands' sizes).
    pub collective_bytes: u64,
    /// Sum of every non-parameter, non-constant entry value's size: an upper bound on the
    /// activation memory a graph touches, before any buffer reuse.
    pub activation_bytes: u64,
}

pub fn element_bytes(t: i32) -> u64 {
    match PrimitiveType::try_from(t) {
        Ok(PrimitiveType::Pred | PrimitiveType::S8 | PrimitiveType::U8) => 1,
        Ok(PrimitiveType::S16 | PrimitiveType::U16 | PrimitiveType::F16 | PrimitiveType::Bf16) => 2,
        Ok(PrimitiveType::S64 | PrimitiveType::U64 | PrimitiveType::F64 | PrimitiveType::C64) => 8,
        Ok(PrimitiveType::C128) => 16,
        _ => 4,
    }
}

pub fn shape_bytes(s: &ShapeProto) -> u64 {
    if s.element_type == PrimitiveType::Tuple as i32 {
        return s.tuple_shapes.iter().map(shape_bytes).sum();
    }
    s.dimensions.iter().product::<i64>() as u64 * element_bytes(s.element_type)
}

pub fn module_stats(m: &HloModuleProto) -> ModuleStats {
    let mut st = ModuleStats::default();
    let Some(entry) = m
        .computations
        .iter()
        .find(|c| c.id == m.entry_computation_id)
    else {
        return st;
    };
    let shapes: FxHashMap<i64, &ShapeProto> = entry
        .instructions
        .iter()
        .filter_map(|i| i.shape.as_ref().map(|s| (i.id, s)))
        .collect();
    // Counted by borrowed name; the few distinct opcodes are copied once at the end.
    let mut histogram: FxHashMap<&str, usize> = FxHashMap::default();
    for i in &entry.instructions {
        *histogram.entry(i.opcode.as_str()).or_default() += 1;
        st.instructions += 1;
        let out = i.shape.as_ref().map(shape_bytes).unwrap_or(0);
        match i.opcode.as_str() {
            "parameter" => st.parameters += 1,
            "constant" | "tuple" | "get-tuple-element" => {}
            _ => st.activation_bytes += out,
        }
        if i.opcode == "dot" {
            let (Some(d), Some(lhs), Some(out)) = (
                i.dot_dimension_numbers.as_deref(),
                i.operand_ids.first().and_then(|o| shapes.get(o)),
                i.shape.as_ref(),
            ) else {
                continue;
            };
            let k: i64 = d
                .lhs_contracting_dimensions
                .iter()
                .map(|&c| lhs.dimensions[c as usize])
                .product();
            let mn: i64 = out.dimensions.iter().product();
            st.dot_flops += 2 * (mn as u64) * (k as u64);
        }
        if matches!(
            i.opcode.as_str(),
            "all-reduce" | "all-gather" | "reduce-scatter" | "all-to-all"
        ) {
            st.collectives += 1;
            st.collective_bytes += i
                .operand_ids
                .iter()
                .filter_map(|o| shapes.get(o))
                .map(|s| shape_bytes(s))
                .sum::<u64>();
        }
    }
    st.op_histogram = histogram
        .into_iter()
        .map(|(op, n)| (op.to_string(), n))
        .collect();
    st
}
