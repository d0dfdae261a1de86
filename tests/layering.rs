//! The library's folders import one way. Each top-level module has a layer; code in a module
//! may name (`crate::…`) only modules of lower layers:
//!
//! ```text
//! files                          0
//! ir                             1   (owns the emitter every op lowers through)
//! hlo, dsl, weights              2
//! manifest                       3   (the graph-set contract: roles, weights table)
//! neuron, run, parallel          4
//! models                         5
//! build                          6
//! ```
//!
//! A violation fails with the file, line and the import, e.g.
//! `src/ir/ops/dot.rs:4: ir (layer 1) imports hlo (layer 2)`.

use std::path::{Path, PathBuf};

const LAYERS: &[(&str, u32)] = &[
    ("files", 0),
    ("ir", 1),
    ("hlo", 2),
    ("dsl", 2),
    ("weights", 2),
    ("manifest", 3),
    ("neuron", 4),
    ("run", 4),
    ("parallel", 4),
    ("models", 5),
    ("build", 6),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line without its `//` comment (string literals holding `//` are rare enough
/// here not to matter: a false cut can only hide an import, never invent one).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Every `crate::<module>` a line names, including inside `use crate::{a::…, b::…}` groups.
fn named_modules(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        let Some(own) = layer(&module) else {
            // lib.rs and the binaries sit above every layer.
            assert!(
                module == "lib" || module == "bin",
                "{}: the top-level module `{module}` has no layer in tests/layering.rs",
                rel.display()
            );
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for other in named_modules(code(line)) {
                if other == module {
                    continue;
                }
                let Some(theirs) = layer(&other) else {
                    continue;
                };
                checked += 1;
                if theirs >= own {
                    violations.push(format!(
                        "src/{}:{}: {module} (layer {own}) imports {other} (layer {theirs})",
                        rel.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(checked > 50, "the scan found only {checked} imports");
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_scanner_sees_grouped_and_plain_imports() {
    assert_eq!(
        named_modules("use crate::{ir::DType, weights::Run};"),
        ["ir", "weights"]
    );
    assert_eq!(named_modules("let x = crate::hlo::lower(g);"), ["hlo"]);
    assert!(named_modules(code("// see crate::build")).is_empty());
}
