//! HLO text in the format of XLA's `HloModule::ToString`, printed from the proto so it can
//! be compared line by line with XLA's own dump of the same module (`--xla_dump_hlo_as_text`,
//! the `*.before_optimizations.txt` file). `tests/printer_vs_xla.rs` checks that they are
//! identical for every opcode the lowering emits; docs/hlo-text.md lists the one legitimate
//! difference (XLA elides constants of more than 10 elements unless
//! `--xla_dump_large_constants` is set; we always print them).

use half::{bf16, f16};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
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
    match static_type_name(t) {
        Some(n) => n.into(),
        None => match PrimitiveType::try_from(t) {
            Ok(p) => p.as_str_name().to_ascii_lowercase(),
            Err(_) => format!("<type {t}>"),
        },
    }
}

/// The names of the element types graphs use, without allocating.
fn static_type_name(t: i32) -> Option<&'static str> {
    Some(match PrimitiveType::try_from(t).ok()? {
        PrimitiveType::Tuple => "tuple",
        PrimitiveType::Pred => "pred",
        PrimitiveType::S8 => "s8",
        PrimitiveType::S32 => "s32",
        PrimitiveType::S64 => "s64",
        PrimitiveType::U8 => "u8",
        PrimitiveType::U32 => "u32",
        PrimitiveType::U64 => "u64",
        PrimitiveType::F16 => "f16",
        PrimitiveType::Bf16 => "bf16",
        PrimitiveType::F32 => "f32",
        PrimitiveType::F64 => "f64",
        _ => return None,
    })
}

/// [`shape_text`], appended to `out`.
fn write_shape(out: &mut String, s: &ShapeProto, with_layout: bool) {
    if s.element_type == PrimitiveType::Tuple as i32 {
        out.push('(');
        for (k, t) in s.tuple_shapes.iter().enumerate() {
            separator(out, k);
            write_shape(out, t, with_layout);
        }
        out.push(')');
        return;
    }
    match static_type_name(s.element_type) {
        Some(n) => out.push_str(n),
        None => out.push_str(&element_type_name(s.element_type)),
    }
    out.push('[');
    for (k, d) in s.dimensions.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        push_int(out, *d);
    }
    out.push(']');
    if with_layout && !s.dimensions.is_empty() {
        out.push('{');
        match &s.layout {
            Some(l) if !l.minor_to_major.is_empty() => {
                for (k, d) in l.minor_to_major.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    push_int(out, *d);
                }
            }
            _ => {
                for (k, d) in (0..s.dimensions.len()).rev().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    push_int(out, d);
                }
            }
        }
        out.push('}');
    }
}

/// The `", "` (with XLA's `/*index=N*/` before every fifth element) ahead of element `k`.
fn separator(out: &mut String, k: usize) {
    if k > 0 {
        out.push_str(", ");
        if k.is_multiple_of(5) {
            let _ = write!(out, "/*index={k}*/");
        }
    }
}

/// `f32[2,3]{1,0}` (with layout) or `f32[2,3]` (without); tuples as `(a, b)`.
pub fn shape_text(s: &ShapeProto, with_layout: bool) -> String {
    let mut out = String::new();
    write_shape(&mut out, s, with_layout);
    out
}

/// Joins with `", "`, writing `/*index=N*/` before every fifth element as XLA does in tuple
/// shapes, program shapes and operand lists (`HloPrintOptions::
/// print_operand_index_annotation_interval`, 5 by default).
fn join_indexed(parts: &[String]) -> String {
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        separator(&mut out, i);
        out.push_str(p);
    }
    out
}

/// `{1,2,3}`, displayed without allocating.
/// Appends `v` in decimal (the hot path of the printer: every dim, id and line number).
fn push_int(out: &mut String, v: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Appends `s` escaped as [`Escaped`] displays it.
fn push_escaped(out: &mut String, s: &str) {
    for_each_escaped(s, |piece| {
        out.push_str(piece);
        Ok(())
    })
    .expect("pushing to a String cannot fail");
}

/// Calls `emit` with `s` in pieces, `"`, `\` and newlines escaped.
fn for_each_escaped(s: &str, mut emit: impl FnMut(&str) -> std::fmt::Result) -> std::fmt::Result {
    let mut rest = s;
    while let Some(at) = memchr::memchr3(b'"', b'\\', b'\n', rest.as_bytes()) {
        emit(&rest[..at])?;
        emit(match rest.as_bytes()[at] {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            _ => "\\n",
        })?;
        rest = &rest[at + 1..];
    }
    emit(rest)
}

struct List<'a>(&'a [i64]);

impl std::fmt::Display for List<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        for (k, d) in self.0.iter().enumerate() {
            if k > 0 {
                f.write_str(",")?;
            }
            f.write_str(itoa::Buffer::new().format(*d))?;
        }
        f.write_str("}")
    }
}

fn list(v: &[i64]) -> List<'_> {
    List(v)
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

/// Element texts as XLA's `LiteralBase::GetAsString` writes them, except that `pred` elements
/// of arrays are `1`/`0` (XLA's dense-array printer does that "so that the string is more
/// dense"); a scalar `pred` is `true`/`false`.
fn literal_elements(l: &LiteralProto, ty: i32, is_array: bool) -> Vec<String> {
    let halves = |b: &[u8]| -> Vec<[u8; 2]> { b.chunks_exact(2).map(|c| [c[0], c[1]]).collect() };
    match PrimitiveType::try_from(ty) {
        Ok(PrimitiveType::Pred) if is_array => l
            .preds
            .iter()
            .map(|&b| if b { "1" } else { "0" }.to_string())
            .collect(),
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
        // XLA prints f16 and bf16 with `%.*g` at max_digits10 (5 and 4), without first trying
        // a shorter precision as it does for f32 and f64 (`GenericRoundTripFpToString`).
        Ok(PrimitiveType::F16) => halves(&l.f16s)
            .into_iter()
            .map(|b| format_g(f16::from_le_bytes(b).to_f64(), 5))
            .collect(),
        Ok(PrimitiveType::Bf16) => halves(&l.bf16s)
            .into_iter()
            .map(|b| format_g(bf16::from_le_bytes(b).to_f64(), 4))
            .collect(),
        _ => vec!["?".into()],
    }
}

/// Literal text as XLA's `LiteralBase::PrintWithoutShapeOneline`: `0` for scalars, `{1, 2}`
/// for vectors, `{ { 1, 2 }, { 3, 4 } }` for matrices (`{ {1}, {2} }` when rows have one
/// element), and `/*iN=V*/` markers above rank 3.
pub fn literal_text(l: &LiteralProto) -> String {
    let Some(shape) = &l.shape else {
        return "{}".into();
    };
    let dims = &shape.dimensions;
    let elems = literal_elements(l, shape.element_type, !dims.is_empty());
    if dims.is_empty() {
        return elems.into_iter().next().unwrap_or_default();
    }
    if elems.len() as i64 != dims.iter().product::<i64>() {
        return "{...}".into();
    }
    let mut out = String::new();
    let mut elems = elems.into_iter();
    dense_text(&mut elems, dims, &mut Vec::new(), dims.len(), &mut out);
    out
}

/// The recursion of XLA's `DenseArrayPrintHelper` with `oneline = true`.
fn dense_text(
    elems: &mut impl Iterator<Item = String>,
    dims: &[i64],
    accum: &mut Vec<i64>,
    rank: usize,
    out: &mut String,
) {
    let Some((&n, inner)) = dims.split_first() else {
        out.push_str(&elems.next().unwrap_or_default());
        return;
    };
    let innermost_pad = if n <= 1 { "" } else { " " };
    // Opening brace.
    if rank == 1 {
        out.push('{');
    } else if dims.len() == 1 {
        let _ = write!(out, "{{{innermost_pad}");
    } else if rank > 3 && !accum.is_empty() && accum.len() < rank {
        let _ = write!(
            out,
            "{{ /*i{}={}*/{}",
            accum.len() - 1,
            accum[accum.len() - 1],
            if n > 0 { " " } else { "" }
        );
    } else {
        out.push_str("{ ");
    }
    for i in 0..n {
        accum.push(i);
        dense_text(elems, inner, accum, rank, out);
        accum.pop();
        if i < n - 1 {
            out.push_str(", ");
        }
    }
    // Closing brace.
    if rank == 1 {
        out.push('}');
    } else if dims.len() == 1 {
        let _ = write!(out, "{innermost_pad}}}");
    } else {
        out.push_str(" }");
    }
}

/// `s` with `"`, `\` and newlines escaped, displayed without allocating.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for_each_escaped(self.0, |piece| f.write_str(piece))
    }
}

fn escape(s: &str) -> Escaped<'_> {
    Escaped(s)
}

/// XLA's `LexesAsJsonDict`, approximated: the text is one `{...}` with balanced braces outside
/// string literals and nothing but whitespace after the closing brace.
fn lexes_as_json_dict(s: &str) -> bool {
    let s = s.trim_start();
    if !s.starts_with('{') {
        return false;
    }
    let mut depth = 0usize;
    let mut chars = s.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => loop {
                match chars.next() {
                    Some((_, '\\')) => {
                        chars.next();
                    }
                    Some((_, '"')) => break,
                    Some(_) => {}
                    None => return false,
                }
            },
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return s[at + 1..].trim().is_empty();
                }
            }
            _ => {}
        }
    }
    false
}

/// `, key=value`, appended.
macro_rules! attr {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(", ");
        let _ = write!($out, $($arg)*);
    }};
}

fn replica_groups(i: &HloInstructionProto) -> String {
    let groups: Vec<String> = i
        .replica_groups
        .iter()
        .map(|g| list(&g.replica_ids).to_string())
        .collect();
    format!("replica_groups={{{}}}", groups.join(","))
}

/// Opcode-specific attributes, in the order XLA prints them.
fn extra_attributes(a: &mut String, i: &HloInstructionProto, comp_names: &HashMap<i64, &str>) {
    let collective_prefix = |a: &mut String| {
        if i.channel_id > 0 {
            attr!(a, "channel_id={}", i.channel_id);
        }
        attr!(a, "{}", replica_groups(i));
    };
    match i.opcode.as_str() {
        "iota" => attr!(
            a,
            "iota_dimension={}",
            i.dimensions.first().copied().unwrap_or(0)
        ),
        "transpose" | "broadcast" | "reduce" | "concatenate" | "reverse" => {
            attr!(a, "dimensions={}", list(&i.dimensions))
        }
        "sort" => {
            attr!(a, "dimensions={}", list(&i.dimensions));
            if i.is_stable {
                attr!(a, "is_stable=true");
            }
        }
        "slice" => {
            a.push_str(", slice={");
            for (k, s) in i.slice_dimensions.iter().enumerate() {
                if k > 0 {
                    a.push_str(", ");
                }
                a.push('[');
                push_int(a, s.start);
                a.push(':');
                push_int(a, s.limit);
                if s.stride != 1 {
                    a.push(':');
                    push_int(a, s.stride);
                }
                a.push(']');
            }
            a.push('}');
        }
        "dynamic-slice" => attr!(a, "dynamic_slice_sizes={}", list(&i.dynamic_slice_sizes)),
        "pad" => {
            if let Some(p) = &i.padding_config {
                // Like XLA's `PaddingConfigToString`: the interior padding of every dim is
                // printed as soon as one dim has some.
                let interior = p.dimensions.iter().any(|d| d.interior_padding != 0);
                let dims: Vec<String> = p
                    .dimensions
                    .iter()
                    .map(|d| {
                        let mut s = format!("{}_{}", d.edge_padding_low, d.edge_padding_high);
                        if interior {
                            let _ = write!(s, "_{}", d.interior_padding);
                        }
                        s
                    })
                    .collect();
                attr!(a, "padding={}", dims.join("x"));
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
                        attr!(a, "{name}={}", list(v));
                    }
                }
            }
        }
        "gather" => {
            if let Some(d) = &i.gather_dimension_numbers {
                attr!(a, "offset_dims={}", list(&d.offset_dims));
                attr!(a, "collapsed_slice_dims={}", list(&d.collapsed_slice_dims));
                attr!(a, "start_index_map={}", list(&d.start_index_map));
                attr!(a, "index_vector_dim={}", d.index_vector_dim);
            }
            attr!(a, "slice_sizes={}", list(&i.gather_slice_sizes));
            if i.indices_are_sorted {
                attr!(a, "indices_are_sorted=true");
            }
        }
        "scatter" => {
            if let Some(d) = &i.scatter_dimension_numbers {
                attr!(a, "update_window_dims={}", list(&d.update_window_dims));
                attr!(a, "inserted_window_dims={}", list(&d.inserted_window_dims));
                attr!(
                    a,
                    "scatter_dims_to_operand_dims={}",
                    list(&d.scatter_dims_to_operand_dims)
                );
                attr!(a, "index_vector_dim={}", d.index_vector_dim);
            }
            if i.indices_are_sorted {
                attr!(a, "indices_are_sorted=true");
            }
            if i.unique_indices {
                attr!(a, "unique_indices=true");
            }
        }
        "compare" => {
            attr!(a, "direction={}", i.comparison_direction);
            if !i.comparison_type.is_empty() {
                attr!(a, "type={}", i.comparison_type);
            }
        }
        "get-tuple-element" => attr!(a, "index={}", i.tuple_index),
        "all-reduce" => {
            collective_prefix(a);
            if i.use_global_device_ids {
                attr!(a, "use_global_device_ids=true");
            }
        }
        "all-gather" | "reduce-scatter" => {
            collective_prefix(a);
            attr!(a, "dimensions={}", list(&i.dimensions));
            if i.use_global_device_ids {
                attr!(a, "use_global_device_ids=true");
            }
        }
        "custom-call" => {
            attr!(
                a,
                "custom_call_target=\"{}\"",
                escape(&i.custom_call_target)
            );
            if i.custom_call_has_side_effect {
                attr!(a, "custom_call_has_side_effect=true");
            }
            let v = i.custom_call_api_version;
            if v != xla_proto::CustomCallApiVersion::ApiVersionOriginal as i32 && v != 0 {
                if let Ok(api) = xla_proto::CustomCallApiVersion::try_from(v) {
                    attr!(a, "api_version={}", api.as_str_name());
                }
            }
        }
        "reduce-precision" => {
            attr!(a, "exponent_bits={}", i.exponent_bits);
            attr!(a, "mantissa_bits={}", i.mantissa_bits);
        }
        _ => {}
    }
    if !i.called_computation_ids.is_empty() {
        let names: Vec<String> = i
            .called_computation_ids
            .iter()
            .map(|c| format!("%{}", comp_names.get(c).copied().unwrap_or("?")))
            .collect();
        let key = if matches!(i.opcode.as_str(), "call" | "custom-call" | "fusion") {
            "calls"
        } else {
            "to_apply"
        };
        attr!(a, "{key}={}", names.join(", "));
    }
    if let Some(fa) = &i.frontend_attributes {
        if !fa.map.is_empty() {
            let kv: Vec<String> = fa
                .map
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            attr!(a, "frontend_attributes={{{}}}", kv.join(","));
        }
    }
    if let Some(m) = &i.metadata {
        let fields = !m.op_type.is_empty()
            || !m.op_name.is_empty()
            || !m.source_file.is_empty()
            || m.source_line != 0;
        if fields {
            a.push_str(", metadata={");
            let mut space = "";
            for (key, value) in [
                ("op_type=\"", &m.op_type),
                ("op_name=\"", &m.op_name),
                ("source_file=\"", &m.source_file),
            ] {
                if !value.is_empty() {
                    a.push_str(space);
                    a.push_str(key);
                    push_escaped(a, value);
                    a.push('"');
                    space = " ";
                }
            }
            if m.source_line != 0 {
                a.push_str(space);
                a.push_str("source_line=");
                push_int(a, m.source_line);
            }
            a.push('}');
        }
    }
    if !i.backend_config.is_empty() {
        let text = String::from_utf8_lossy(&i.backend_config);
        // XLA prints a config that lexes as a JSON dict as is, anything else quoted.
        if lexes_as_json_dict(&text) {
            attr!(a, "backend_config={text}");
        } else {
            attr!(a, "backend_config=\"{}\"", escape(&text));
        }
    }
}

fn write_instruction(
    out: &mut String,
    i: &HloInstructionProto,
    names: &HashMap<i64, &str>,
    comp_names: &HashMap<i64, &str>,
    is_root: bool,
) {
    out.push_str(if is_root { "  ROOT %" } else { "  %" });
    out.push_str(&i.name);
    out.push_str(" = ");
    if let Some(sh) = &i.shape {
        write_shape(out, sh, true);
    }
    out.push(' ');
    out.push_str(&i.opcode);
    out.push('(');
    match i.opcode.as_str() {
        "parameter" => push_int(out, i.parameter_number),
        "constant" => {
            if let Some(l) = &i.literal {
                out.push_str(&literal_text(l));
            }
        }
        _ => {
            for (k, o) in i.operand_ids.iter().enumerate() {
                separator(out, k);
                out.push('%');
                out.push_str(names.get(o).copied().unwrap_or("?"));
            }
        }
    }
    out.push(')');
    extra_attributes(out, i, comp_names);
}

/// The order XLA prints a computation in (`HloComputation::MakeInstructionPostOrder`): a
/// depth-first post-order over operands (then control predecessors), started from every
/// instruction without users in list order. The proto's own order may be any topological one.
fn instruction_post_order(c: &HloComputationProto) -> Vec<&HloInstructionProto> {
    let index: HashMap<i64, usize> = c
        .instructions
        .iter()
        .enumerate()
        .map(|(k, i)| (i.id, k))
        .collect();
    let children = |k: usize| {
        let i = &c.instructions[k];
        i.operand_ids
            .iter()
            .chain(&i.control_predecessor_ids)
            .filter_map(|id| index.get(id).copied())
    };
    let mut has_user = vec![false; c.instructions.len()];
    for k in 0..c.instructions.len() {
        for child in children(k) {
            has_user[child] = true;
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        New,
        Visiting,
        Visited,
    }
    let mut state = vec![State::New; c.instructions.len()];
    let mut order = Vec::with_capacity(c.instructions.len());
    for start in (0..c.instructions.len()).filter(|&k| !has_user[k]) {
        let mut stack = vec![start];
        while let Some(&k) = stack.last() {
            match state[k] {
                State::Visited => {
                    stack.pop();
                }
                State::Visiting => {
                    stack.pop();
                    state[k] = State::Visited;
                    order.push(&c.instructions[k]);
                }
                State::New => {
                    state[k] = State::Visiting;
                    // Reversed, so that the first operand is visited first.
                    let from = stack.len();
                    stack.extend(children(k));
                    stack[from..].reverse();
                }
            }
        }
    }
    order
}

/// The order XLA prints computations in (`HloModule::MakeComputationPostOrder`): for each
/// computation no instruction calls, in module order, the computations it calls (depth-first,
/// callees before callers, in the order of the calling instructions), then itself.
fn computation_post_order(m: &HloModuleProto) -> Vec<&HloComputationProto> {
    let by_id: HashMap<i64, &HloComputationProto> =
        m.computations.iter().map(|c| (c.id, c)).collect();
    let called: HashSet<i64> = m
        .computations
        .iter()
        .flat_map(|c| &c.instructions)
        .flat_map(|i| i.called_computation_ids.iter().copied())
        .collect();
    let mut added = HashSet::default();
    let mut order = Vec::new();
    fn embed<'a>(
        c: &'a HloComputationProto,
        by_id: &HashMap<i64, &'a HloComputationProto>,
        added: &mut HashSet<i64>,
        order: &mut Vec<&'a HloComputationProto>,
    ) {
        for i in &c.instructions {
            for callee in &i.called_computation_ids {
                if let Some(&callee) = by_id.get(callee) {
                    if added.insert(callee.id) {
                        embed(callee, by_id, added, order);
                        order.push(callee);
                    }
                }
            }
        }
    }
    for c in m.computations.iter().filter(|c| !called.contains(&c.id)) {
        embed(c, &by_id, &mut added, &mut order);
        if added.insert(c.id) {
            order.push(c);
        }
    }
    order
}

fn write_computation(
    out: &mut String,
    c: &HloComputationProto,
    comp_names: &HashMap<i64, &str>,
    is_entry: bool,
) {
    let names: HashMap<i64, &str> = c
        .instructions
        .iter()
        .map(|i| (i.id, i.name.as_str()))
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
    let _ = writeln!(
        out,
        "{}%{} ({}) -> {} {{",
        if is_entry { "ENTRY " } else { "" },
        c.name,
        sig.join(", "),
        result
    );
    for i in instruction_post_order(c) {
        write_instruction(out, i, &names, comp_names, i.id == c.root_id);
        out.push('\n');
    }
    out.push('}');
}

pub fn print_module(m: &HloModuleProto, opts: &PrintOptions) -> String {
    let comp_names: HashMap<i64, &str> = m
        .computations
        .iter()
        .map(|c| (c.id, c.name.as_str()))
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
            join_indexed(&params)
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
    // About 240 bytes per instruction, so the text is built without reallocating.
    let instructions: usize = m.computations.iter().map(|c| c.instructions.len()).sum();
    let mut out = String::with_capacity(header.len() + 256 * instructions);
    out.push_str(&header);
    out.push_str("\n\n");
    for c in computation_post_order(m) {
        write_computation(&mut out, c, &comp_names, c.id == m.entry_computation_id);
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

    // The expected strings below are what XLA printed for the same literals
    // (tests/printer_vs_xla.rs compares whole modules against the plugin).
    #[test]
    fn literals_print_like_xla() {
        let f32s = |dims: &[i64], v: &[f32]| LiteralProto {
            shape: Some(ShapeProto {
                element_type: PrimitiveType::F32 as i32,
                dimensions: dims.to_vec(),
                ..Default::default()
            }),
            f32s: v.to_vec(),
            ..Default::default()
        };
        let cube = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        assert_eq!(literal_text(&f32s(&[2], &[1.0, -0.0])), "{1, -0}");
        assert_eq!(
            literal_text(&f32s(&[2, 3], &[0.1, -1.5, 1e-5, 3.0, 1e10, 0.0])),
            "{ { 0.1, -1.5, 1e-05 }, { 3, 1e+10, 0 } }"
        );
        assert_eq!(literal_text(&f32s(&[2, 1], &[5.0, 6.0])), "{ {5}, {6} }");
        assert_eq!(
            literal_text(&f32s(&[2, 2, 2], &cube)),
            "{ { { 1, 2 }, { 3, 4 } }, { { 5, 6 }, { 7, 8 } } }"
        );
        assert_eq!(
            literal_text(&f32s(&[2, 1, 2, 2], &cube)),
            "{ { /*i0=0*/ { /*i1=0*/ { 1, 2 }, { 3, 4 } } }, \
             { /*i0=1*/ { /*i1=0*/ { 5, 6 }, { 7, 8 } } } }"
        );
        let pred = |dims: &[i64], v: &[bool]| LiteralProto {
            shape: Some(ShapeProto {
                element_type: PrimitiveType::Pred as i32,
                dimensions: dims.to_vec(),
                ..Default::default()
            }),
            preds: v.to_vec(),
            ..Default::default()
        };
        assert_eq!(literal_text(&pred(&[2], &[true, false])), "{1, 0}");
        assert_eq!(literal_text(&pred(&[], &[true])), "true");
        let bf16s: Vec<u8> = [1.5f32, -0.3, 256.0, 1e-3]
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect();
        let bf = LiteralProto {
            shape: Some(ShapeProto {
                element_type: PrimitiveType::Bf16 as i32,
                dimensions: vec![4],
                ..Default::default()
            }),
            bf16s,
            ..Default::default()
        };
        assert_eq!(literal_text(&bf), "{1.5, -0.3008, 256, 0.0009995}");
    }

    #[test]
    fn index_annotations_and_backend_configs() {
        let parts: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        assert_eq!(
            join_indexed(&parts),
            "0, 1, 2, 3, 4, /*index=5*/5, 6, 7, 8, 9, /*index=10*/10"
        );
        assert!(lexes_as_json_dict(r#"{"eps":1e-05,"s":"}{"}"#));
        assert!(lexes_as_json_dict(" {} "));
        assert!(!lexes_as_json_dict("{} x"));
        assert!(!lexes_as_json_dict("eps=1"));
        assert!(!lexes_as_json_dict(r#"{"open"#));
    }

    /// `HloSliceInstruction`'s form: `[start:limit]`, with `:stride` only when it is not 1.
    #[test]
    fn slice_attributes_print_like_xla() {
        use xla_proto::hlo_instruction_proto::SliceDimensions;
        let dims = |start, limit, stride| SliceDimensions {
            start,
            limit,
            stride,
        };
        let i = HloInstructionProto {
            opcode: "slice".into(),
            slice_dimensions: vec![dims(0, 1, 1), dims(1, 7, 2), dims(48, 96, 1)],
            ..Default::default()
        };
        let mut a = String::new();
        extra_attributes(&mut a, &i, &HashMap::default());
        assert_eq!(a, ", slice={[0:1], [1:7:2], [48:96]}");
    }

    /// XLA prints instructions in a depth-first post-order from the root, whatever the
    /// proto's (topological) order.
    #[test]
    fn instructions_print_in_post_order() {
        let inst = |id: i64, name: &str, operands: &[i64]| HloInstructionProto {
            id,
            name: name.into(),
            operand_ids: operands.to_vec(),
            ..Default::default()
        };
        let c = HloComputationProto {
            instructions: vec![
                inst(1, "a", &[]),
                inst(2, "b", &[]),
                inst(3, "gt", &[1, 2]),
                inst(4, "dead", &[]),
                inst(5, "c", &[]),
                inst(6, "lt", &[5, 1]),
                inst(7, "root", &[6, 3]),
            ],
            root_id: 7,
            ..Default::default()
        };
        let order: Vec<&str> = instruction_post_order(&c)
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(order, ["dead", "c", "a", "lt", "b", "gt", "root"]);
    }
}
