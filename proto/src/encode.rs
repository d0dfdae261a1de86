//! A faster [`prost::Message::encode_to_vec`] for [`HloModuleProto`], byte for byte the same.
//!
//! prost writes a nested message as its length, then its fields, and computes that length
//! afresh at every level: an instruction's length is computed once for the module's buffer
//! size, once for its computation's length prefix and once for its own, and each of those
//! walks every field of every nested shape and layout. Here each instruction is encoded once
//! into a scratch buffer, whose length is then its length prefix, and copied after it; each
//! computation likewise. The module's and the computations' other fields are still encoded
//! by prost; their big repeated field is spliced in where prost puts it, in field-number order
//! (`tests::splicing_matches_prost` pins that against prost's own output).

use crate::{HloComputationProto, HloModuleProto};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;

/// `HloModuleProto.computations` and `HloComputationProto.instructions`.
const COMPUTATIONS: u32 = 3;
const INSTRUCTIONS: u32 = 2;

/// The same bytes as `m.encode_to_vec()`.
pub fn encode_module(m: &HloModuleProto) -> Vec<u8> {
    // The fields numbered below `computations` (3), and the rest.
    let head = HloModuleProto {
        name: m.name.clone(),
        entry_computation_name: m.entry_computation_name.clone(),
        ..Default::default()
    };
    let tail = HloModuleProto {
        entry_computation_id: m.entry_computation_id,
        host_program_shape: m.host_program_shape.clone(),
        id: m.id,
        input_output_alias: m.input_output_alias.clone(),
        buffer_donor: m.buffer_donor.clone(),
        frontend_attributes: m.frontend_attributes.clone(),
        ..without_computations(m)
    };
    let mut instruction = Vec::new();
    let comps: Vec<Vec<u8>> = m
        .computations
        .iter()
        .map(|c| encode_computation(c, &mut instruction))
        .collect();
    let body: usize = comps.iter().map(|c| field_len(COMPUTATIONS, c.len())).sum();
    let mut buf = Vec::with_capacity(head.encoded_len() + body + tail.encoded_len());
    head.encode_raw(&mut buf);
    for c in &comps {
        encode_key(COMPUTATIONS, WireType::LengthDelimited, &mut buf);
        encode_varint(c.len() as u64, &mut buf);
        buf.extend_from_slice(c);
    }
    tail.encode_raw(&mut buf);
    buf
}

/// Every field of `m` but the ones `encode_module` writes itself, for a compile error when a
/// field is added to the proto and not placed here.
fn without_computations(m: &HloModuleProto) -> HloModuleProto {
    let HloModuleProto {
        name: _,
        entry_computation_name: _,
        entry_computation_id: _,
        computations: _,
        host_program_shape: _,
        id: _,
        input_output_alias: _,
        buffer_donor: _,
        frontend_attributes: _,
    } = m;
    HloModuleProto::default()
}

/// A computation's fields (without its own key and length): the field numbered below
/// `instructions` (2; the name), the instructions, then the rest. `scratch` holds one
/// instruction at a time.
fn encode_computation(c: &HloComputationProto, scratch: &mut Vec<u8>) -> Vec<u8> {
    let HloComputationProto {
        name,
        instructions,
        program_shape,
        id,
        root_id,
    } = c;
    let mut buf = HloComputationProto {
        name: name.clone(),
        ..Default::default()
    }
    .encode_to_vec();
    for i in instructions {
        scratch.clear();
        i.encode_raw(scratch);
        encode_key(INSTRUCTIONS, WireType::LengthDelimited, &mut buf);
        encode_varint(scratch.len() as u64, &mut buf);
        buf.extend_from_slice(scratch);
    }
    HloComputationProto {
        program_shape: program_shape.clone(),
        id: *id,
        root_id: *root_id,
        ..Default::default()
    }
    .encode_raw(&mut buf);
    buf
}

/// A length-delimited field's bytes: key, length, payload.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn shape(dims: &[i64]) -> ShapeProto {
        ShapeProto {
            element_type: PrimitiveType::F32 as i32,
            dimensions: dims.to_vec(),
            is_dynamic_dimension: vec![false; dims.len()],
            layout: Some(LayoutProto {
                minor_to_major: (0..dims.len() as i64).rev().collect(),
            }),
            ..Default::default()
        }
    }

    fn instruction(id: i64, opcode: &str, operands: &[i64]) -> HloInstructionProto {
        HloInstructionProto {
            name: format!("{opcode}.{id}"),
            opcode: opcode.into(),
            shape: Some(shape(&[2, 300])),
            id,
            operand_ids: operands.to_vec(),
            metadata: Some(OpMetadata {
                op_type: opcode.into(),
                op_name: "model/layers.0/mlp/down_proj".into(),
                source_file: "src/models/phi3/modeling.rs".into(),
                source_line: 42,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Every field set, with big enough instructions that the length varints take 2 bytes.
    #[test]
    fn splicing_matches_prost() {
        let comp = |id: i64, n: i64| HloComputationProto {
            name: format!("c{id}"),
            instructions: (0..n)
                .map(|k| instruction(id * 100 + k, "add", &[id * 100 + k - 1]))
                .collect(),
            program_shape: Some(ProgramShapeProto {
                parameters: vec![shape(&[2])],
                result: Some(shape(&[2])),
                parameter_names: vec!["p".into()],
            }),
            id,
            root_id: id * 100 + n - 1,
        };
        let m = HloModuleProto {
            name: "m".into(),
            entry_computation_name: "c2".into(),
            entry_computation_id: 2,
            computations: vec![comp(1, 3), comp(2, 40), HloComputationProto::default()],
            host_program_shape: Some(ProgramShapeProto {
                parameters: vec![shape(&[2, 300])],
                result: Some(shape(&[2, 300])),
                parameter_names: vec!["x".into()],
            }),
            id: 7,
            input_output_alias: Some(HloInputOutputAliasProto {
                entries: vec![hlo_input_output_alias_proto::AliasEntryProto {
                    output_shape_index: vec![0],
                    parameter_number: 1,
                    parameter_shape_index: vec![],
                    kind: Kind::MayAlias as i32,
                }],
            }),
            buffer_donor: Some(HloBufferDonorProto {
                entries: vec![hlo_buffer_donor_proto::BufferDonorEntryProto {
                    parameter_number: 1,
                    parameter_shape_index: vec![],
                }],
            }),
            frontend_attributes: Some(FrontendAttributes {
                map: [("k".to_string(), "v".to_string())].into(),
            }),
        };
        assert!(
            encode_module(&m) == m.encode_to_vec(),
            "bytes differ from prost's"
        );
        let empty = HloModuleProto::default();
        assert!(encode_module(&empty) == empty.encode_to_vec());
    }
}
