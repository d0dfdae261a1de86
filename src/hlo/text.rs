//! HLO text in the format of XLA's `HloModule::ToString`, printed from the proto so it can
//! be compared line by line with XLA's own dump of the same module.

use half::{bf16, f16};
use std::collections::HashMap;
use std::fmt::Write;
use xla_proto::{
    HloComputationProto, HloInstructionProto, HloModuleProto, LiteralProto, PrimitiveType,
    ShapeProto,
};

#[derive(Clone, Debug, Default)]
pub struct PrintOptions {
    /// XLA prints `replica_count=N` from the module config, which is not part of the proto.
    pub replica_count: Option<i64>,
}

pub fn element_type_name(t: i32) -> String {
    match PrimitiveType::try_from(t) {
        Ok(PrimitiveType::Tuple) => "tuple".into(),
        Ok(p) => p.as_str_name().to_ascii_lowercase(),
        Err(_) => format!("<type {t}>"),
    }
}

/// `f32[2,3]{1,0}` (with layout) or `f32[2,3]` (without); tuples as `(a, b)`.
pub fn shape_text(s: &ShapeProto, with_layout: bool) -> String {
    if s.element_type == PrimitiveType::Tuple as i32 {
        let parts: Vec<String> = s
            .tuple_shapes
            .iter()
            .map(|t| shape_text(t, with_layout))
            .collect();
        return format!("({})", parts.join(", "));
    }
    let dims: Vec<String> = s.dimensions.iter().map(|d| d.to_string()).collect();
    let mut out = format!("{}[{}]", element_type_name(s.element_type), dims.join(","));
    if with_layout && !s.dimensions.is_empty() {
        let m2m: Vec<i64> = match &s.layout {
            Some(l) if !l.minor_to_major.is_empty() => l.minor_to_major.clone(),
            _ => (0..s.dimensions.len() as i64).rev().collect(),
        };
        let m2m: Vec<String> = m2m.iter().map(|d| d.to_string()).collect();
        let _ = write!(out, "{{{}}}", m2m.join(","));
    }
    out
}

fn list(v: &[i64]) -> String {
    let parts: Vec<String> = v.iter().map(|d| d.to_string()).collect();
    format!("{{{}}}", parts.join(","))
}

/// C's `%.{p}g`, which XLA's `RoundTripFpToString` uses.
fn format_g(v: f64, p: usize) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v < 0.0 { "-inf".into() } else { "inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{:.*e}", p - 1, v);
    let (mantissa, exp) = sci.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent");
    let strip = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp >= -4 && exp < p as i32 {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        strip(&format!("{:.*}", decimals, v))
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{}{:02}", strip(mantissa), sign, exp.abs())
    }
}

/// The shortest of XLA's two precisions (digits10, then max_digits10) that round-trips.
fn format_float(
    v: f64,
    digits10: usize,
    max_digits10: usize,
    round_trips: impl Fn(&str) -> bool,
) -> String {
    let short = format_g(v, digits10);
    if round_trips(&short) {
        short
    } else {
        format_g(v, max_digits10)
    }
}

fn literal_elements(l: &LiteralProto, ty: i32) -> Vec<String> {
    let halves = |b: &[u8]| -> Vec<[u8; 2]> { b.chunks_exact(2).map(|c| [c[0], c[1]]).collect() };
    match PrimitiveType::try_from(ty) {
        Ok(PrimitiveType::Pred) => l.preds.iter().map(|b| b.to_string()).collect(),
        Ok(PrimitiveType::S8) => l.s8s.iter().map(|&b| (b as i8).to_string()).collect(),
        Ok(PrimitiveType::U8) => l.u8s.iter().map(|b| b.to_string()).collect(),
        Ok(PrimitiveType::S32) => l.s32s.iter().map(|v| v.to_string()).collect(),
        Ok(PrimitiveType::U32) => l.u32s.iter().map(|v| v.to_string()).collect(),
        Ok(PrimitiveType::S64) => l.s64s.iter().map(|v| v.to_string()).collect(),
        Ok(PrimitiveType::U64) => l.u64s.iter().map(|v| v.to_string()).collect(),
        Ok(PrimitiveType::F32) => l
            .f32s
            .iter()
            .map(|&v| {
                format_float(v as f64, 6, 9, |s| {
                    s.parse::<f32>().ok() == Some(v) || v.is_nan()
                })
            })
            .collect(),
        Ok(PrimitiveType::F64) => l
            .f64s
            .iter()
            .map(|&v| {
                format_float(v, 15, 17, |s| {
                    s.parse::<f64>().ok() == Some(v) || v.is_nan()
                })
            })
            .collect(),
        Ok(PrimitiveType::F16) => halves(&l.f16s)
            .into_iter()
            .map(|b| {
                let v = f16::from_le_bytes(b);
                format_float(v.to_f64(), 3, 5, |s| {
                    s.parse::<f32>().map(f16::from_f32).ok() == Some(v)
                })
            })
            .collect(),
        Ok(PrimitiveType::Bf16) => halves(&l.bf16s)
            .into_iter()
            .map(|b| {
                let v = bf16::from_le_bytes(b);
                format_float(v.to_f64(), 2, 4, |s| {
                    s.parse::<f32>().map(bf16::from_f32).ok() == Some(v)
                })
            })
            .collect(),
        _ => vec!["?".into()],
    }
}

/// Literal text: `0` for scalars, `{1, 2}` for vectors, `{ { 1, 2 }, { 3, 4 } }` for matrices.
pub fn literal_text(l: &LiteralProto) -> String {
    let Some(shape) = &l.shape else {
        return "{}".into();
    };
    let elems = literal_elements(l, shape.element_type);
    if shape.dimensions.is_empty() {
        return elems.into_iter().next().unwrap_or_default();
    }
    fn nest(elems: &[String], dims: &[i64]) -> String {
        if dims.len() == 1 {
            return format!("{{{}}}", elems.join(", "));
        }
        let stride: usize = dims[1..].iter().product::<i64>() as usize;
        let parts: Vec<String> = (0..dims[0] as usize)
            .map(|i| nest(&elems[i * stride..(i + 1) * stride], &dims[1..]))
            .collect();
        let inner = parts
            .iter()
            .map(|p| format!(" {p}"))
            .collect::<Vec<_>>()
            .join(",");
        format!("{{{inner} }}")
    }
    if elems.len() as i64 != shape.dimensions.iter().product::<i64>() {
        return "{...}".into();
    }
    nest(&elems, &shape.dimensions)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn replica_groups(i: &HloInstructionProto) -> String {
    let groups: Vec<String> = i
        .replica_groups
        .iter()
        .map(|g| list(&g.replica_ids))
        .collect();
    format!("replica_groups={{{}}}", groups.join(","))
}

/// Opcode-specific attributes, in the order XLA prints them.
fn extra_attributes(i: &HloInstructionProto, comp_names: &HashMap<i64, String>) -> Vec<String> {
    let mut a = Vec::new();
    let collective_prefix = |a: &mut Vec<String>| {
        if i.channel_id > 0 {
            a.push(format!("channel_id={}", i.channel_id));
        }
        a.push(replica_groups(i));
    };
    match i.opcode.as_str() {
        "iota" => a.push(format!(
            "iota_dimension={}",
            i.dimensions.first().copied().unwrap_or(0)
        )),
        "transpose" | "broadcast" | "reduce" | "concatenate" | "reverse" => {
            a.push(format!("dimensions={}", list(&i.dimensions)))
        }
        "slice" => {
            let parts: Vec<String> = i
                .slice_dimensions
                .iter()
                .map(|s| {
                    if s.stride == 1 {
                        format!("[{}:{}]", s.start, s.limit)
                    } else {
                        format!("[{}:{}:{}]", s.start, s.limit, s.stride)
                    }
                })
                .collect();
            a.push(format!("slice={{{}}}", parts.join(", ")));
        }
        "dynamic-slice" => a.push(format!(
            "dynamic_slice_sizes={}",
            list(&i.dynamic_slice_sizes)
        )),
        "pad" => {
            if let Some(p) = &i.padding_config {
                let dims: Vec<String> = p
                    .dimensions
                    .iter()
                    .map(|d| {
                        let mut s = format!("{}_{}", d.edge_padding_low, d.edge_padding_high);
                        if d.interior_padding != 0 {
                            let _ = write!(s, "_{}", d.interior_padding);
                        }
                        s
                    })
                    .collect();
                a.push(format!("padding={}", dims.join("x")));
            }
        }
        "dot" => {
            if let Some(d) = &i.dot_dimension_numbers {
                for (name, v) in [
                    ("lhs_batch_dims", &d.lhs_batch_dimensions),
                    ("lhs_contracting_dims", &d.lhs_contracting_dimensions),
                    ("rhs_batch_dims", &d.rhs_batch_dimensions),
                    ("rhs_contracting_dims", &d.rhs_contracting_dimensions),
                ] {
                    if !v.is_empty() {
                        a.push(format!("{name}={}", list(v)));
                    }
                }
            }
        }
        "gather" => {
            if let Some(d) = &i.gather_dimension_numbers {
                a.push(format!("offset_dims={}", list(&d.offset_dims)));
                a.push(format!(
                    "collapsed_slice_dims={}",
                    list(&d.collapsed_slice_dims)
                ));
                a.push(format!("start_index_map={}", list(&d.start_index_map)));
                a.push(format!("index_vector_dim={}", d.index_vector_dim));
            }
            a.push(format!("slice_sizes={}", list(&i.gather_slice_sizes)));
            if i.indices_are_sorted {
                a.push("indices_are_sorted=true".into());
            }
        }
        "scatter" => {
            if let Some(d) = &i.scatter_dimension_numbers {
                a.push(format!(
                    "update_window_dims={}",
                    list(&d.update_window_dims)
                ));
                a.push(format!(
                    "inserted_window_dims={}",
                    list(&d.inserted_window_dims)
                ));
                a.push(format!(
                    "scatter_dims_to_operand_dims={}",
                    list(&d.scatter_dims_to_operand_dims)
                ));
                a.push(format!("index_vector_dim={}", d.index_vector_dim));
            }
            if i.indices_are_sorted {
                a.push("indices_are_sorted=true".into());
            }
            if i.unique_indices {
                a.push("unique_indices=true".into());
            }
        }
        "compare" => {
            a.push(format!("direction={}", i.comparison_direction));
            if !i.comparison_type.is_empty() {
                a.push(format!("type={}", i.comparison_type));
            }
        }
        "get-tuple-element" => a.push(format!("index={}", i.tuple_index)),
        "all-reduce" => {
            collective_prefix(&mut a);
            if i.use_global_device_ids {
                a.push("use_global_device_ids=true".into());
            }
        }
        "all-gather" | "reduce-scatter" => {
            collective_prefix(&mut a);
            a.push(format!("dimensions={}", list(&i.dimensions)));
            if i.use_global_device_ids {
                a.push("use_global_device_ids=true".into());
            }
        }
        "custom-call" => {
            a.push(format!(
                "custom_call_target=\"{}\"",
                escape(&i.custom_call_target)
            ));
            if i.custom_call_has_side_effect {
                a.push("custom_call_has_side_effect=true".into());
            }
            let v = i.custom_call_api_version;
            if v != xla_proto::CustomCallApiVersion::ApiVersionOriginal as i32 && v != 0 {
                if let Ok(api) = xla_proto::CustomCallApiVersion::try_from(v) {
                    a.push(format!("api_version={}", api.as_str_name()));
                }
            }
        }
        "reduce-precision" => {
            a.push(format!("exponent_bits={}", i.exponent_bits));
            a.push(format!("mantissa_bits={}", i.mantissa_bits));
        }
        _ => {}
    }
    if !i.called_computation_ids.is_empty() {
        let names: Vec<String> = i
            .called_computation_ids
            .iter()
            .map(|c| format!("%{}", comp_names.get(c).map(String::as_str).unwrap_or("?")))
            .collect();
        let key = if matches!(i.opcode.as_str(), "call" | "custom-call" | "fusion") {
            "calls"
        } else {
            "to_apply"
        };
        a.push(format!("{key}={}", names.join(", ")));
    }
    if let Some(fa) = &i.frontend_attributes {
        if !fa.map.is_empty() {
            let kv: Vec<String> = fa
                .map
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            a.push(format!("frontend_attributes={{{}}}", kv.join(",")));
        }
    }
    if let Some(m) = &i.metadata {
        let mut parts = Vec::new();
        if !m.op_type.is_empty() {
            parts.push(format!("op_type=\"{}\"", escape(&m.op_type)));
        }
        if !m.op_name.is_empty() {
            parts.push(format!("op_name=\"{}\"", escape(&m.op_name)));
        }
        if !m.source_file.is_empty() {
            parts.push(format!("source_file=\"{}\"", escape(&m.source_file)));
        }
        if m.source_line != 0 {
            parts.push(format!("source_line={}", m.source_line));
        }
        if !parts.is_empty() {
            a.push(format!("metadata={{{}}}", parts.join(" ")));
        }
    }
    if !i.backend_config.is_empty() {
        let text = String::from_utf8_lossy(&i.backend_config);
        a.push(format!("backend_config=\"{}\"", escape(&text)));
    }
    a
}

fn instruction_text(
    i: &HloInstructionProto,
    names: &HashMap<i64, String>,
    comp_names: &HashMap<i64, String>,
    is_root: bool,
) -> String {
    let shape = i
        .shape
        .as_ref()
        .map(|s| shape_text(s, true))
        .unwrap_or_default();
    let args = match i.opcode.as_str() {
        "parameter" => i.parameter_number.to_string(),
        "constant" => i.literal.as_ref().map(literal_text).unwrap_or_default(),
        _ => i
            .operand_ids
            .iter()
            .map(|o| format!("%{}", names.get(o).map(String::as_str).unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut line = format!(
        "  {}%{} = {} {}({})",
        if is_root { "ROOT " } else { "" },
        i.name,
        shape,
        i.opcode,
        args
    );
    for attr in extra_attributes(i, comp_names) {
        let _ = write!(line, ", {attr}");
    }
    line
}

fn computation_text(
    c: &HloComputationProto,
    comp_names: &HashMap<i64, String>,
    is_entry: bool,
) -> String {
    let names: HashMap<i64, String> = c
        .instructions
        .iter()
        .map(|i| (i.id, i.name.clone()))
        .collect();
    let mut params: Vec<&HloInstructionProto> = c
        .instructions
        .iter()
        .filter(|i| i.opcode == "parameter")
        .collect();
    params.sort_by_key(|p| p.parameter_number);
    let sig: Vec<String> = params
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p.name,
                p.shape
                    .as_ref()
                    .map(|s| shape_text(s, false))
                    .unwrap_or_default()
            )
        })
        .collect();
    let result = c
        .instructions
        .iter()
        .find(|i| i.id == c.root_id)
        .and_then(|i| i.shape.as_ref())
        .map(|s| shape_text(s, false))
        .unwrap_or_default();
    let mut out = format!(
        "{}%{} ({}) -> {} {{\n",
        if is_entry { "ENTRY " } else { "" },
        c.name,
        sig.join(", "),
        result
    );
    for i in &c.instructions {
        out.push_str(&instruction_text(i, &names, comp_names, i.id == c.root_id));
        out.push('\n');
    }
    out.push('}');
    out
}

pub fn print_module(m: &HloModuleProto, opts: &PrintOptions) -> String {
    let comp_names: HashMap<i64, String> = m
        .computations
        .iter()
        .map(|c| (c.id, c.name.clone()))
        .collect();
    let mut header = format!("HloModule {}", m.name);
    if let Some(alias) = &m.input_output_alias {
        if !alias.entries.is_empty() {
            let entries: Vec<String> = alias
                .entries
                .iter()
                .map(|e| {
                    let kind = if e.kind == xla_proto::Kind::MustAlias as i32 {
                        "must-alias"
                    } else {
                        "may-alias"
                    };
                    format!(
                        "{}: ({}, {}, {kind})",
                        list(&e.output_shape_index),
                        e.parameter_number,
                        list(&e.parameter_shape_index)
                    )
                })
                .collect();
            let _ = write!(header, ", input_output_alias={{ {} }}", entries.join(", "));
        }
    }
    if let Some(ps) = &m.host_program_shape {
        let params: Vec<String> = ps.parameters.iter().map(|s| shape_text(s, true)).collect();
        let result = ps
            .result
            .as_ref()
            .map(|s| shape_text(s, true))
            .unwrap_or_default();
        let _ = write!(
            header,
            ", entry_computation_layout={{({})->{result}}}",
            params.join(", ")
        );
    }
    if let Some(n) = opts.replica_count.filter(|&n| n != 1) {
        let _ = write!(header, ", replica_count={n}");
    }
    if let Some(fa) = &m.frontend_attributes {
        if !fa.map.is_empty() {
            let kv: Vec<String> = fa
                .map
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(header, ", frontend_attributes={{{}}}", kv.join(","));
        }
    }
    let mut out = header;
    out.push_str("\n\n");
    for c in &m.computations {
        out.push_str(&computation_text(
            c,
            &comp_names,
            c.id == m.entry_computation_id,
        ));
        out.push_str("\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_g_matches_c_printf() {
        assert_eq!(format_g(0.1, 6), "0.1");
        assert_eq!(format_g(1e-5, 6), "1e-05");
        assert_eq!(format_g(10000.0, 6), "10000");
        assert_eq!(format_g(1234567.0, 6), "1.23457e+06");
        assert_eq!(format_g(-2.5, 6), "-2.5");
        assert_eq!(format_g(f64::NEG_INFINITY, 6), "-inf");
        let v = 0.1020621f32;
        let s = format_float(v as f64, 6, 9, |s| s.parse::<f32>().ok() == Some(v));
        assert_eq!(s.parse::<f32>().unwrap(), v);
    }
}
