//! Golden snapshots under `graphs/`: HLO text of small reference configs (each graph kind at
//! tp 1 and 2, with and without LongRoPE and GQA), and a stats snapshot (op histogram,
//! parameters, FLOPs, collectives) of every full-size embedded model. A mismatch fails with a
//! unified diff; `BLESS=1 cargo test --test golden` (or `BLESS=1 ./tools/test`) rewrites them.
//!
//! Golden text omits source file and line from the metadata, so moving model code around does
//! not churn the goldens; the scope paths (`op_name`) stay.

use phi3_neuron::build::{build_graph, golden_text};
use phi3_neuron::dsl::DType;
use phi3_neuron::manifest::InputRole;
use phi3_neuron::models::decoder::GraphSpec;
use phi3_neuron::models::phi3::config::embedded_names;
use phi3_neuron::models::phi3::Phi3Config;
use phi3_neuron::models::DecoderModel;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs")
}

fn bless() -> bool {
    std::env::var_os("BLESS").is_some_and(|v| v != "0" && !v.is_empty())
}

/// Compares `actual` with the golden file, or rewrites it under BLESS. Returns a failure
/// message with a unified diff.
fn check_golden(path: &Path, actual: &str) -> Option<String> {
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected == actual {
        return None;
    }
    if bless() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        return None;
    }
    let rel = path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string();
    let diff = similar::TextDiff::from_lines(expected.as_str(), actual)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{rel} (golden)"), &format!("{rel} (now)"))
        .to_string();
    let shown: String = diff.lines().take(200).collect::<Vec<_>>().join("\n");
    Some(format!("{rel} differs (BLESS=1 rewrites it):\n{shown}"))
}

/// (golden name, fixture whose config.json it uses): plain MHA, GQA, LongRoPE, and LongRoPE
/// with GQA, partial rotary and tied embeddings.
const REFERENCE_CONFIGS: &[(&str, &str)] = &[
    ("mha", "mha"),
    ("gqa", "gqa"),
    ("longrope", "longrope"),
    ("longrope_gqa", "phi4_like"),
];

#[test]
fn hlo_text_of_reference_graphs() {
    let mut failures = Vec::new();
    for (name, fixture) in REFERENCE_CONFIGS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models")
            .join(fixture)
            .join("config.json");
        let cfg = Phi3Config::from_file(&path).unwrap().with_layers(1);
        for tp in [1, 2] {
            let plan = cfg.plan(tp).unwrap();
            for spec in [
                GraphSpec::context_encoding(1, 16, 32, DType::F32),
                GraphSpec::token_generation(1, 32, DType::F32),
            ] {
                let built = build_graph(&cfg, &plan, &spec).unwrap();
                // The build's own encoder (xla_proto::encode_module) must give prost's bytes.
                assert!(
                    built.bytes == prost::Message::encode_to_vec(&built.proto),
                    "{name} tp {tp} {}: encode_module differs from prost",
                    spec.name()
                );
                let file = root()
                    .join("golden")
                    .join(name)
                    .join(format!("tp{tp}"))
                    .join(format!("{}.hlo.txt", spec.name()));
                failures.extend(check_golden(&file, &golden_text(&built, tp)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn stats_of_full_size_models() {
    let mut failures = Vec::new();
    let tp = 8;
    for model in embedded_names() {
        let cfg = Phi3Config::embedded(model).unwrap();
        let plan = cfg.plan(tp).unwrap();
        let mut graphs = serde_json::Map::new();
        for spec in [
            GraphSpec::context_encoding(1, 128, 4096, DType::BF16),
            GraphSpec::token_generation(1, 4096, DType::BF16),
        ] {
            let b = build_graph(&cfg, &plan, &spec).unwrap();
            let parameter_count: i64 = b
                .recorded
                .inputs
                .iter()
                .filter(|i| matches!(i.role, InputRole::Weight { .. }))
                .map(|i| i.ty.element_count())
                .sum();
            graphs.insert(
                spec.name(),
                serde_json::json!({
                    "instructions": b.stats.instructions,
                    "parameters": b.stats.parameters,
                    "weight_elements_per_rank": parameter_count,
                    "dot_flops": b.stats.dot_flops,
                    "collectives": b.stats.collectives,
                    "collective_bytes_per_rank": b.stats.collective_bytes,
                    "op_histogram": b.stats.op_histogram,
                    "neuron_lint_clean": b.findings.iter().all(|f| !f.is_flagged()),
                }),
            );
        }
        let snapshot = serde_json::json!({ "model": model, "tp": tp, "layers": cfg.num_hidden_layers, "graphs": graphs });
        let text = serde_json::to_string_pretty(&snapshot).unwrap() + "\n";
        failures.extend(check_golden(
            &root().join("stats").join(format!("{model}.tp{tp}.json")),
            &text,
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
