//! Our HLO text printer (`phi3_neuron::hlo::print_module`) against XLA's own printer.
//!
//! Every conformance graph (`tests/common/graphs.rs`, covering every opcode the lowering emits,
//! collectives on 2 and 4 replicas included) is compiled by the PJRT CPU plugin with
//! `XLA_FLAGS=--xla_dump_to=DIR --xla_dump_hlo_as_text`, and XLA's `*.before_optimizations.txt`
//! dump of each module is compared with `print_module` of the same proto. XLA reads
//! `XLA_FLAGS` once per process, so the dumping compiles run in child processes (this test
//! binary re-executed with `PHI3_XLA_DUMP_CHILD` set), the pattern of `tests/lowering.rs`.
//!
//! Normalised differences (documented in docs/hlo-text.md), and nothing else:
//! 1. Large constants. XLA prints a constant with more than 10 elements as `constant({...})`
//!    unless `--xla_dump_large_constants` is given; we always print the values. The default
//!    dump is compared after replacing our literal of such constants with `{...}`; a second
//!    dump taken with `--xla_dump_large_constants` is compared with no normalisation at all.
//! 2. `replica_count=N` is not in the proto (it comes from the compile options): the test
//!    passes the replica count it compiles with through `PrintOptions::replica_count`, so it is
//!    a printer input rather than a normalisation.
//!
//! Differences this check found and that were fixed in the printer, not normalised: XLA prints
//! instructions in its own post-order (not proto order), `/*index=N*/` every fifth tuple
//! element and operand, matrix literals as `{ { 1, 2 }, { 3, 4 } }`, pred array elements as
//! `1`/`0`, f16/bf16 at 5/4 significant digits, interior padding of every dim once one dim
//! has some, and a JSON-dict backend config unquoted.

mod common;

use common::graphs;
use phi3_neuron::hlo::{print_module, PrintOptions};
use pjrt_runtime::{CompileOptions, Error, ErrorCode};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

const CHILD_ENV: &str = "PHI3_XLA_DUMP_CHILD";
const TEST_NAME: &str = "printer_matches_xla_dump";

/// XLA elides constants with more than this many elements (`HloConstantInstruction`).
const XLA_LARGE_CONSTANT: i64 = 10;

/// Child side: compile every graph so the plugin dumps it. Only the custom call may fail (no
/// CPU kernel); its `before_optimizations` dump is written before that failure.
fn compile_all() {
    for (g, n) in graphs::all() {
        let m = common::lower_default(&g);
        match common::client(n as usize).compile(&m, &CompileOptions::replicas(n)) {
            Ok(_) => {}
            Err(Error::Pjrt {
                code: ErrorCode::NotFound,
                message,
            }) if g.name == "conf_custom_call" => {
                assert!(message.contains("AwsNeuronRmsNorm"), "{message}")
            }
            Err(e) => panic!("compiling {}: {e}", g.name),
        }
    }
}

/// Starts a child that dumps into `dir`; its output (XLA's log lines) goes to `dir.log`.
fn spawn_dump(dir: &Path, extra_flags: &str) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let log = File::create(dir.with_extension("log")).unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .env(
            "XLA_FLAGS",
            format!(
                "--xla_dump_to={} --xla_dump_hlo_as_text {extra_flags}",
                dir.display()
            ),
        )
        .spawn()
        .unwrap()
}

fn read_dump(dir: &Path, module: &str) -> String {
    let suffix = format!(".{module}.before_optimizations.txt");
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(&suffix))
        .collect();
    match found.as_slice() {
        [p] => std::fs::read_to_string(p).unwrap(),
        _ => panic!(
            "expected one *{suffix} in {}, found {found:?}",
            dir.display()
        ),
    }
}

/// Element count of a printed array shape such as `f32[3,4]{1,0}` (1 for a scalar).
fn element_count(shape: &str) -> Option<i64> {
    let dims = shape.split_once('[')?.1.split_once(']')?.0;
    if dims.is_empty() {
        return Some(1);
    }
    dims.split(',')
        .map(|d| d.parse::<i64>().ok())
        .product::<Option<i64>>()
}

/// Normalisation 1: our literal of a constant with more than 10 elements becomes `{...}`.
fn elide_large_constants(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut line = line.to_string();
        if let Some(at) = line.find(" constant(") {
            let shape = line[..at].rsplit("= ").next().unwrap_or("");
            let open = at + " constant(".len();
            let large = element_count(shape).is_some_and(|n| n > XLA_LARGE_CONSTANT);
            // Literal text holds no parentheses, so the first `)` closes it.
            if let (true, Some(len)) = (large, line[open..].find(')')) {
                line.replace_range(open..open + len, "{...}");
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The first differing line, for the failure message.
fn first_difference(ours: &str, xla: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (ours.lines().collect(), xla.lines().collect());
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i), b.get(i));
        if x != y {
            return format!(
                "line {}:\n  ours: {}\n  xla:  {}",
                i + 1,
                x.unwrap_or(&"<end>"),
                y.unwrap_or(&"<end>")
            );
        }
    }
    "texts differ only in trailing newlines".into()
}

#[test]
fn printer_matches_xla_dump() {
    if std::env::var_os(CHILD_ENV).is_some() {
        compile_all();
        return;
    }
    let root = std::env::temp_dir().join(format!("phi3-xla-dump-{}", std::process::id()));
    let (default_dir, full_dir) = (root.join("default"), root.join("large-constants"));
    let children = [
        spawn_dump(&default_dir, ""),
        spawn_dump(&full_dir, "--xla_dump_large_constants"),
    ];
    for (mut child, dir) in children.into_iter().zip([&default_dir, &full_dir]) {
        if !child.wait().unwrap().success() {
            let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
            panic!("the dumping child for {} failed:\n{log}", dir.display());
        }
    }

    let mut failures = Vec::new();
    let mut opcodes = BTreeSet::new();
    for (g, n) in graphs::all() {
        let m = common::lower_default(&g);
        opcodes.extend(
            m.computations
                .iter()
                .flat_map(|c| &c.instructions)
                .map(|i| i.opcode.clone()),
        );
        let ours = print_module(
            &m,
            &PrintOptions {
                replica_count: Some(n),
            },
        );
        for (dir, ours, what) in [
            (&full_dir, ours.clone(), "large constants dumped"),
            (&default_dir, elide_large_constants(&ours), "default dump"),
        ] {
            let xla = read_dump(dir, &g.name);
            if ours != xla {
                let path = dir.join(format!("{}.ours.txt", g.name));
                std::fs::write(&path, &ours).unwrap();
                failures.push(format!(
                    "{} ({what}; ours in {}): {}",
                    g.name,
                    path.display(),
                    first_difference(&ours, &xla)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "our HLO text differs from XLA's:\n{}",
        failures.join("\n")
    );
    std::fs::remove_dir_all(&root).ok();

    // The comparison covered every opcode the lowering emits.
    let required = [
        "parameter",
        "constant",
        "iota",
        "convert",
        "reshape",
        "transpose",
        "broadcast",
        "slice",
        "concatenate",
        "pad",
        "dynamic-slice",
        "dynamic-update-slice",
        "gather",
        "scatter",
        "dot",
        "negate",
        "abs",
        "exponential",
        "log",
        "sqrt",
        "rsqrt",
        "tanh",
        "logistic",
        "sine",
        "cosine",
        "add",
        "subtract",
        "multiply",
        "divide",
        "maximum",
        "minimum",
        "power",
        "compare",
        "select",
        "clamp",
        "reduce",
        "tuple",
        "get-tuple-element",
        "custom-call",
        "all-reduce",
        "all-gather",
        "reduce-scatter",
    ];
    let missing: Vec<&str> = required
        .iter()
        .filter(|op| !opcodes.contains(**op))
        .copied()
        .collect();
    assert!(missing.is_empty(), "opcodes not compared: {missing:?}");
}

#[test]
fn large_constant_normalisation() {
    let text = "  %c = f32[3,4]{1,0} constant({ { 1, 2, 3, 4 }, { 5, 6, 7, 8 }, { 9, 10, 11, 12 } }), metadata={op_type=\"constant\"}\n  %d = f32[2,5]{1,0} constant({ { 1, 2, 3, 4, 5 }, { 6, 7, 8, 9, 10 } })\n  %e = f32[] constant(1)\n";
    assert_eq!(
        elide_large_constants(text),
        "  %c = f32[3,4]{1,0} constant({...}), metadata={op_type=\"constant\"}\n  %d = f32[2,5]{1,0} constant({ { 1, 2, 3, 4, 5 }, { 6, 7, 8, 9, 10 } })\n  %e = f32[] constant(1)\n"
    );
}
