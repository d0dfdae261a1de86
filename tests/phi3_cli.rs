//! The `phi3` command line: its JSON contract, and one clear error line for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use testkit::fixture_dir as fixture;
use testkit::FIXTURES as ALL_FIXTURES;

fn phi3(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phi3"))
        .args(args)
        .output()
        .unwrap()
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

    let cache = testkit::tempdir("phi3-cli-cache");
    let generate = |rows: &str| -> serde_json::Value {
        let out = phi3(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt-ids",
            &prompt,
            "--max-new-tokens",
            "16",
            "--max-batch-size",
            rows,
            "--cache",
            cache.path().to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(generate("1")["tokens"], case["greedy_16"]);
    // The set it built for this short request: a 128-position cache in buckets from 32.
    let named = |name: &str| -> Vec<PathBuf> {
        walk(cache.path())
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n == name))
            .collect()
    };
    let manifests = named("manifest.json");
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifests[0]).unwrap()).unwrap();
    assert_eq!(
        m["buckets"]["context_encoding"],
        serde_json::json!([32, 64, 128]),
        "{}",
        m["buckets"]
    );
    // Another set shape (two cache rows) is another set with the same weights: the cache keeps
    // one sharded copy of them.
    assert_eq!(generate("2")["tokens"], case["greedy_16"]);
    assert_eq!(named("manifest.json").len(), 2);
    let files = walk(cache.path());
    assert_eq!(named("tp0.safetensors").len(), 1, "{files:?}");
    // The same request again reuses its set. Each set's folder is named by its manifest, which
    // holds every graph's proto hash: graphs recorded differently (a code change without a new
    // version) get a folder of their own, never an older run's graphs.
    assert_eq!(generate("1")["tokens"], case["greedy_16"]);
    let manifests = named("manifest.json");
    assert_eq!(manifests.len(), 2, "{manifests:?}");
    for m in &manifests {
        let text = std::fs::read_to_string(m).unwrap();
        let key = phi3_neuron::build::sha256_hex(format!("layout 3\n{text}").as_bytes());
        let folder = m.parent().and_then(Path::parent).and_then(Path::file_name);
        assert_eq!(folder.unwrap().to_str(), Some(&key[..32]), "{m:?}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
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

// ---- The artifact path: build-graphs + phi3 shard + phi3 generate --graphs --weights ----

fn build_graphs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_build-graphs"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find(|l| l.starts_with("phi3: error:"))
        .unwrap_or_else(|| panic!("no error line: {err}"))
        .to_string()
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("phi3-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a set and its rank files for `fixture` at `tp` into `dir`; returns (graphs, weights).
fn artifacts(fixture_name: &str, tp: i64, dir: &Path, extra: &[&str]) -> (PathBuf, PathBuf) {
    let model = fixture(fixture_name);
    let out = dir.join("graphs");
    let tp_s = tp.to_string();
    let mut args = vec![
        "--model",
        model.to_str().unwrap(),
        "--tp",
        &tp_s,
        "--dtype",
        "f32",
        "--buckets",
        "16,32,64",
        "--max-batch-size",
        "2",
        "--format",
        "pb",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(build_graphs(&args), "build-graphs");
    let graphs = out.join(fixture_name).join(format!("tp{tp}"));
    let weights = dir.join("weights");
    ok(
        phi3(&[
            "shard",
            "--model",
            model.to_str().unwrap(),
            "--graphs",
            graphs.to_str().unwrap(),
            "--out",
            weights.to_str().unwrap(),
        ]),
        "shard",
    );
    (graphs, weights)
}

fn all_cases(name: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

/// Every fixture, from written artifacts, at tp 1, 2 and 4: the first case's logits within
/// 1e-4 of HF and its 16 greedy tokens; then every case as one JSONL batch over two cache
/// rows, each exactly its single-sequence result.
#[test]
fn artifacts_match_hf_at_tp_1_2_4() {
    let cache = scratch("artifact-cache");
    for name in ALL_FIXTURES {
        for tp in [1, 2, 4] {
            let dir = scratch(&format!("art-{name}-{tp}"));
            let (graphs, weights) = artifacts(name, tp, &dir, &[]);
            let (g, w, c) = (
                graphs.to_str().unwrap(),
                weights.to_str().unwrap(),
                cache.to_str().unwrap(),
            );
            let cases = all_cases(name);
            let first = &cases[0];
            let out = ok(
                phi3(&[
                    "generate",
                    "--graphs",
                    g,
                    "--weights",
                    w,
                    "--prompt-ids",
                    &ids(first),
                    "--max-new-tokens",
                    "16",
                    "--logits",
                    "--cache",
                    c,
                ]),
                &format!("{name} tp={tp}"),
            );
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["tokens"], first["greedy_16"], "{name} tp={tp}");
            assert_eq!(v["finish_reason"], "length");
            let diff = v["last_logits"]
                .as_array()
                .unwrap()
                .iter()
                .zip(first["last_logits"].as_array().unwrap())
                .map(|(a, b)| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs())
                .fold(0.0, f64::max);
            assert!(diff <= 1e-4, "{name} tp={tp}: logits differ by {diff}");
            let jsonl = dir.join("requests.jsonl");
            let lines: Vec<String> = cases
                .iter()
                .map(|c| serde_json::json!({ "prompt_ids": c["prompt_ids"] }).to_string())
                .collect();
            std::fs::write(&jsonl, lines.join("\n")).unwrap();
            let out = ok(
                phi3(&[
                    "generate",
                    "--graphs",
                    g,
                    "--weights",
                    w,
                    "--prompts",
                    jsonl.to_str().unwrap(),
                    "--max-new-tokens",
                    "16",
                    "--cache",
                    c,
                ]),
                &format!("{name} tp={tp} jsonl"),
            );
            let results: Vec<serde_json::Value> = out
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(results.len(), cases.len());
            for (i, (r, c)) in results.iter().zip(&cases).enumerate() {
                assert_eq!(r["tokens"], c["greedy_16"], "{name} tp={tp} request {i}");
            }
            std::fs::remove_dir_all(&dir).ok();
        }
    }
    std::fs::remove_dir_all(&cache).ok();
}

fn tokenizer_case() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture("gqa").join("tokenizer_case.json")).unwrap(),
    )
    .unwrap()
}

/// Text in, text out: HF's tokens for the prompt, HF's greedy continuation and HF's decoded
/// text; the same through the chat template. The --model path builds into the cache once and
/// the second run compiles nothing.
#[test]
fn text_prompts_and_chat_match_hf() {
    let cache = scratch("text-cache");
    let model = fixture("gqa");
    let case = tokenizer_case();
    let (m, c) = (model.to_str().unwrap(), cache.to_str().unwrap());
    let args = [
        "generate",
        "--model",
        m,
        "--prompt",
        case["prompt"].as_str().unwrap(),
        "--max-new-tokens",
        "16",
        "--cache",
        c,
        "--timings",
    ];
    let v: serde_json::Value = serde_json::from_str(&ok(phi3(&args), "text")).unwrap();
    assert_eq!(v["tokens"], case["text"]["greedy_16"]);
    assert_eq!(v["text"], case["text"]["text"]);
    for key in [
        "load_s",
        "compile_s",
        "prefill_s",
        "decode_ms_per_token",
        "peak_rss_mb",
    ] {
        assert!(v["timings"][key].is_number(), "{key}: {}", v["timings"]);
    }
    let second = phi3(&args);
    let err = String::from_utf8_lossy(&second.stderr).to_string();
    ok(second, "second run");
    assert!(err.contains("from the cache, no XLA compile"), "{err}");
    let user = case["messages"][0]["content"].as_str().unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(
        phi3(&[
            "generate",
            "--model",
            m,
            "--prompt",
            user,
            "--chat",
            "--max-new-tokens",
            "16",
            "--cache",
            c,
        ]),
        "chat",
    ))
    .unwrap();
    assert_eq!(v["tokens"], case["chat"]["greedy_16"]);
    assert_eq!(v["text"], case["chat"]["text"]);
    // Streaming prints one line per token before the result.
    let out = ok(
        phi3(&[
            "generate",
            "--model",
            m,
            "--prompt-ids",
            &ids(&expected_case("gqa")),
            "--max-new-tokens",
            "4",
            "--stream",
            "--cache",
            c,
        ]),
        "stream",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(first["token"], expected_case("gqa")["greedy_16"][0]);
    std::fs::remove_dir_all(&cache).ok();
}

/// EOS from generation_config.json stops generation (the token is kept), and --ignore-eos
/// runs to the length.
#[test]
fn eos_stops_generation() {
    let dir = scratch("eos");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("gqa").join(f), dir.join(f)).unwrap();
    }
    let case = expected_case("gqa");
    let greedy: Vec<i64> = case["greedy_16"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    let eos = greedy[3];
    let first = greedy.iter().position(|&t| t == eos).unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        serde_json::json!({ "eos_token_id": [9999, eos] }).to_string(),
    )
    .unwrap();
    let cache = dir.join("cache");
    let prompt = ids(&case);
    let run_it = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt-ids",
            &prompt,
            "--max-new-tokens",
            "16",
            "--cache",
            cache.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(phi3(&args), "eos")).unwrap()
    };
    let v = run_it(&[]);
    assert_eq!(v["finish_reason"], "eos");
    assert_eq!(v["tokens"], serde_json::json!(greedy[..=first]));
    let v = run_it(&["--ignore-eos"]);
    assert_eq!(v["finish_reason"], "length");
    assert_eq!(v["tokens"], case["greedy_16"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// Sampling on the device is reproducible from the seed.
#[test]
fn sampling_is_reproducible_from_the_seed() {
    let cache = scratch("sample-cache");
    let model = fixture("phi4_like");
    let (m, c) = (model.to_str().unwrap(), cache.to_str().unwrap());
    let prompt = ids(&expected_case("phi4_like"));
    let sample = |seed: &str| -> serde_json::Value {
        let out = ok(
            phi3(&[
                "generate",
                "--model",
                m,
                "--prompt-ids",
                &prompt,
                "--max-new-tokens",
                "12",
                "--temperature",
                "1.5",
                "--top-k",
                "50",
                "--top-p",
                "0.95",
                "--seed",
                seed,
                "--cache",
                c,
            ]),
            "sample",
        );
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["tokens"].clone()
    };
    let (a, b, other) = (sample("7"), sample("7"), sample("8"));
    assert_eq!(a, b, "the same seed gives the same tokens");
    assert_ne!(a, other, "another seed gives other tokens");
    let greedy12: Vec<serde_json::Value> =
        expected_case("phi4_like")["greedy_16"].as_array().unwrap()[..12].to_vec();
    assert_ne!(
        a,
        serde_json::Value::Array(greedy12),
        "sampling is not greedy here"
    );
    std::fs::remove_dir_all(&cache).ok();
}

/// Bad artifacts and requests: one clear line each.
#[test]
fn bad_artifacts_and_requests_give_one_clear_line() {
    let dir = scratch("bad-artifacts");
    let (graphs, weights) = artifacts("mha", 2, &dir, &[]);
    let (g, w) = (graphs.to_str().unwrap(), weights.to_str().unwrap());
    let cache = dir.join("cache");
    let c = cache.to_str().unwrap();
    let gen = |g: &str, w: &str, extra: &[&str]| -> Output {
        let mut args = vec!["generate", "--graphs", g, "--weights", w, "--cache", c];
        args.extend_from_slice(extra);
        phi3(&args)
    };
    // Weights sharded for another tp.
    let (_, weights1) = artifacts("mha", 1, &dir.join("tp1"), &[]);
    let line = error_line(&gen(
        g,
        weights1.to_str().unwrap(),
        &["--prompt-ids", "1,2"],
    ));
    assert!(
        line.contains("rank files for 1 rank(s)") && line.contains("tp=2"),
        "{line}"
    );
    let (graphs1, _) = artifacts("mha", 1, &dir.join("tp1b"), &[]);
    let line = error_line(&gen(graphs1.to_str().unwrap(), w, &["--prompt-ids", "1,2"]));
    assert!(
        line.contains("rank files for 2 rank(s)") && line.contains("tp=1"),
        "{line}"
    );
    // A rank file without one tensor, and with one tensor of another shape.
    for (what, expected) in [
        ("missing", "no tensor `model.norm.weight`"),
        ("shape", "[63]"),
    ] {
        let bad = dir.join(format!("weights-{what}"));
        std::fs::create_dir_all(&bad).unwrap();
        for rank in 0..2 {
            let name = format!("tp{rank}.safetensors");
            let bytes = std::fs::read(weights.join(&name)).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
                .tensors()
                .into_iter()
                .filter(|(n, _)| what != "missing" || n != "model.norm.weight")
                .collect();
            let short;
            if what == "shape" {
                let i = tensors
                    .iter()
                    .position(|(n, _)| n == "model.norm.weight")
                    .unwrap();
                short = tensors[i].1.data()[..63 * 4].to_vec();
                tensors[i].1 =
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![63], &short)
                        .unwrap();
            }
            std::fs::write(
                bad.join(&name),
                safetensors::serialize(tensors, None).unwrap(),
            )
            .unwrap();
        }
        let line = error_line(&gen(g, bad.to_str().unwrap(), &["--prompt-ids", "1,2"]));
        assert!(
            line.contains("weights do not match the manifest") && line.contains(expected),
            "{what}: {line}"
        );
    }
    // A prompt longer than the largest bucket (64).
    let long: Vec<String> = (0..65).map(|i| (i % 200).to_string()).collect();
    let line = error_line(&gen(g, w, &["--prompt-ids", &long.join(",")]));
    assert!(
        line.contains("65 tokens is longer than the largest context-encoding bucket (64)"),
        "{line}"
    );
    // A tokenizer with more tokens than the model (gqa's has 384, mha 256).
    let tok = fixture("gqa").join("tokenizer.json");
    let line = error_line(&gen(
        g,
        w,
        &["--prompt", "hello", "--tokenizer", tok.to_str().unwrap()],
    ));
    assert!(
        line.contains("384 tokens, more than the model's vocab_size 256"),
        "{line}"
    );
    // A missing plugin.
    let line = error_line(&gen(
        g,
        w,
        &["--prompt-ids", "1", "--plugin", "/nonexistent/pjrt.so"],
    ));
    assert!(line.contains("/nonexistent/pjrt.so"), "{line}");
    // Graphs that need Neuron-only kernels.
    let (neuron, _) = artifacts("mha", 2, &dir.join("neuron"), &["--rmsnorm", "custom-call"]);
    let line = error_line(&gen(neuron.to_str().unwrap(), w, &["--prompt-ids", "1,2"]));
    assert!(line.contains("Neuron-only custom calls"), "{line}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `--model --dtype bf16` builds its sets with the runtime's matrix-vector kernel (every
/// graph's manifest entry lists it, and the engine registers it before compiling), and
/// `--matvec xla` with XLA's dots; both runs generate. A bad `--matvec` is one line.
#[test]
fn bf16_model_sets_call_the_runtime_kernel() {
    let cache = scratch("kernel-cache");
    let model = fixture("gqa");
    let (m, c) = (model.to_str().unwrap(), cache.to_str().unwrap());
    let prompt = ids(&expected_case("gqa"));
    let run = |matvec: &str| {
        phi3(&[
            "generate",
            "--model",
            m,
            "--dtype",
            "bf16",
            "--matvec",
            matvec,
            "--prompt-ids",
            &prompt,
            "--max-new-tokens",
            "4",
            "--cache",
            c,
        ])
    };
    let manifests = || -> Vec<serde_json::Value> {
        let sets = cache.join("sets");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&sets)
            .unwrap()
            .map(|e| e.unwrap().path().join("graphs/manifest.json"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    };
    let v: serde_json::Value = serde_json::from_str(&ok(run("kernel"), "kernel")).unwrap();
    assert_eq!(v["tokens"].as_array().unwrap().len(), 4, "{v}");
    let sets = manifests();
    assert_eq!(sets.len(), 1);
    for g in sets[0]["graphs"].as_array().unwrap() {
        assert_eq!(
            g["runtime_kernels"],
            serde_json::json!(["phi3_neuron.bf16_matvec"])
        );
    }
    ok(run("xla"), "xla");
    let sets = manifests();
    assert_eq!(sets.len(), 2);
    let plain = sets
        .iter()
        .filter(|m| m["graphs"][0].get("runtime_kernels").is_none())
        .count();
    assert_eq!(plain, 1, "one set of the two calls no kernel");
    let bad = run("sideways");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success()
            && err.contains("--matvec must be kernel or xla")
            && err.lines().count() == 1,
        "{err}"
    );
    std::fs::remove_dir_all(&cache).ok();
}
