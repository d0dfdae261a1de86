//! The `phi3` command line: its JSON contract, and one clear error line for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn phi3(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phi3"))
        .args(args)
        .output()
        .unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn expected_case(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["cases"][0].clone()
}

fn ids(case: &serde_json::Value) -> String {
    let ids: Vec<String> = case["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    ids.join(",")
}

#[test]
fn logits_and_generate_print_the_json_contract() {
    let case = expected_case("gqa");
    let model = fixture("gqa");
    let prompt = ids(&case);
    let out = phi3(&[
        "logits",
        "--model",
        model.to_str().unwrap(),
        "--prompt-ids",
        &prompt,
        "--tp",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<f64> = v["last_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let want: Vec<f64> = case["last_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), want.len());
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(diff <= 1e-4, "{diff}");

    let out = phi3(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt-ids",
        &prompt,
        "--max-new-tokens",
        "16",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tokens"], case["greedy_16"]);
}

#[test]
fn bad_input_gives_one_clear_line() {
    let model = fixture("mha");
    let m = model.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "logits",
                "--model",
                "/nonexistent/model",
                "--prompt-ids",
                "1,2",
            ],
            "/nonexistent/model/config.json",
        ),
        (
            &["logits", "--model", m, "--prompt-ids", "1,99999"],
            "token id 99999 is outside the vocabulary [0, 256)",
        ),
        (
            &["logits", "--model", m, "--prompt-ids", "1", "--tp", "3"],
            "cannot shard at tp=3",
        ),
        (
            &[
                "logits",
                "--model",
                m,
                "--prompt-ids",
                "1",
                "--dtype",
                "f16",
            ],
            "--dtype must be f32 or bf16",
        ),
        (
            &["logits", "--model", m, "--prompt-ids", "1", "--tp", "0"],
            "--tp must be at least 1",
        ),
    ];
    for (args, expected) in cases {
        let out = phi3(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .find(|l| l.starts_with("phi3: error:"))
            .unwrap_or_else(|| panic!("{args:?}: {err}"));
        assert!(line.contains(expected), "{args:?}: {line}");
    }
}

#[test]
fn a_truncated_checkpoint_names_the_file() {
    let dir = std::env::temp_dir().join(format!("phi3-cli-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("mha").join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(fixture("mha").join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let out = phi3(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        "1,2",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn shard_writes_one_safetensors_file_per_rank() {
    use phi3_neuron::dsl::DType;
    use phi3_neuron::manifest::InputRole;
    use phi3_neuron::models::decoder::GraphSpec;
    use phi3_neuron::models::phi3::Phi3Config;
    use phi3_neuron::models::DecoderModel;
    let out = std::env::temp_dir().join(format!("phi3-cli-shard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let model = fixture("gqa_mha_convert");
    let args = [
        "shard",
        "--model",
        model.to_str().unwrap(),
        "--tp",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--dtype",
        "bf16",
    ];
    let r = phi3(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // The files hold exactly the bf16 weight inputs of the tp-4 graph, at the graph's shapes.
    let cfg = Phi3Config::from_file(&model.join("config.json")).unwrap();
    let plan = cfg.plan(4).unwrap();
    let g = cfg
        .record(&plan, &GraphSpec::token_generation(1, 16, DType::BF16))
        .unwrap();
    let mut first = Vec::new();
    for rank in 0..4 {
        let bytes = std::fs::read(out.join(format!("tp{rank}.safetensors"))).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let weights: Vec<_> = g
            .inputs
            .iter()
            .filter(|i| matches!(i.role, InputRole::Weight { .. }))
            .collect();
        assert_eq!(st.len(), weights.len());
        for w in weights {
            let t = st
                .tensor(&w.name)
                .unwrap_or_else(|e| panic!("tp{rank}: {}: {e}", w.name));
            assert_eq!(t.dtype(), safetensors::Dtype::BF16);
            let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
            assert_eq!(dims, w.ty.dims, "tp{rank}: {}", w.name);
        }
        first.push(bytes);
    }
    // Deterministic: a second run writes the same bytes.
    assert!(phi3(&args).status.success());
    for (rank, bytes) in first.iter().enumerate() {
        assert_eq!(
            &std::fs::read(out.join(format!("tp{rank}.safetensors"))).unwrap(),
            bytes
        );
    }
    std::fs::remove_dir_all(&out).ok();
}
