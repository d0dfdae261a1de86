//! `build-graphs` end to end: outputs, manifest, idempotent reruns, one-line errors for bad
//! options, and the neuronx-cc driver wired in (with the fake compiler).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_build-graphs"))
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("phi3-bg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn read_manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn read_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn builds_a_graph_set_with_manifest_and_reruns_identically() {
    let out = temp_dir("set");
    let args = [
        "--layers",
        "2",
        "--buckets",
        "16,32",
        "--out",
        out.to_str().unwrap(),
        "--dot",
        "--stats",
    ];
    let first = run(&args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("cte_b1_s16") && stdout.contains("tkg_b1_s32"),
        "{stdout}"
    );
    assert!(
        stdout.contains("op histogram") && stdout.contains("clean"),
        "{stdout}"
    );
    let dir = out.join("phi-3-mini-4k/tp2");
    let files = read_tree(&dir);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for g in ["cte_b1_s16", "cte_b1_s32", "tkg_b1_s16", "tkg_b1_s32"] {
        for ext in ["hlo.pb", "hlo.txt", "dot"] {
            assert!(names.contains(&format!("{g}.{ext}").as_str()), "{names:?}");
        }
    }
    assert!(
        !names.iter().any(|n| n.contains(".tmp")),
        "no temp files left: {names:?}"
    );

    let manifest = read_manifest(&dir);
    assert_eq!(manifest["tp_degree"], 2);
    assert_eq!(manifest["replica_groups"], serde_json::json!([[0, 1]]));
    let graphs = manifest["graphs"].as_array().unwrap();
    assert_eq!(graphs.len(), 4);
    let tkg = graphs.iter().find(|g| g["name"] == "tkg_b1_s32").unwrap();
    let inputs = tkg["inputs"].as_array().unwrap();
    assert_eq!(inputs[0]["role"], "input_ids");
    assert_eq!(inputs[1]["role"], "position_ids");
    assert_eq!(inputs[2]["role"], "seq_ids");
    // Weights are declared once, in the set's table: the first, the embedding, is cut by
    // columns.
    let first_weight = inputs.iter().find(|i| i["role"] == "weight").unwrap();
    let embed = manifest["weights"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == first_weight["weight"])
        .unwrap();
    assert_eq!(
        embed["parts"][0]["checkpoint_key"],
        "model.embed_tokens.weight"
    );
    assert_eq!(embed["parts"][0]["shard"]["kind"], "cut");
    assert_eq!(embed["parts"][0]["shard"]["dim"], 1);
    let caches: Vec<_> = inputs.iter().filter(|i| i["role"] == "kv_cache").collect();
    assert_eq!(caches.len(), 4);
    assert_eq!(caches[0]["shape"], serde_json::json!([1, 16, 32, 96]));
    let outputs = tkg["outputs"].as_array().unwrap();
    assert_eq!(outputs[0]["role"], "logits");
    assert_eq!(
        outputs[1]["aliases_input"],
        inputs.iter().position(|i| i["role"] == "kv_cache").unwrap()
    );
    assert_eq!(tkg["neuron_lint"]["clean"], true);
    assert!(tkg["compiler_flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "--target=trn1"));
    let pb = std::fs::read(dir.join("tkg_b1_s32.hlo.pb")).unwrap();
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&pb)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert_eq!(tkg["proto_sha256"], sha);

    // A second run into the same folder gives byte-identical files.
    let second = run(&args);
    assert!(second.status.success());
    assert_eq!(files, read_tree(&dir), "rerun changed the outputs");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn bad_options_fail_with_one_clear_line() {
    let out = temp_dir("bad");
    let o = out.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--tp", "0"], "at least 1"),
        (
            &["--buckets", "128,8192", "--max-seq-len", "4096"],
            "bucket 8192 is larger than --max-seq-len 4096",
        ),
        (&["--model", "phi-9"], "phi-9"),
        (&["--tp", "7"], "hidden_size 3072 is not divisible by 7"),
        (&["--dtype", "f8"], "--dtype must be bf16 or f32"),
        (
            &["--sampling", "topk"],
            "--sampling must be one of none, greedy",
        ),
        (&["--format", "json"], "--format must be pb, txt or both"),
        // XNNPACK's dots only at one rank (the default is two).
        (
            &["--preset", "cpu", "--dtype", "f32", "--cpu-dots", "xnnpack"],
            "--cpu-dots xnnpack needs --tp 1, got --tp 2",
        ),
        (
            &["--cpu-dots", "xnnpack-decode"],
            "--cpu-dots xnnpack-decode needs --tp 1, got --tp 2",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["--out", o, "--layers", "1", "--buckets", "16"];
        all.extend_from_slice(args);
        let r = run(&all);
        assert!(!r.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line, got {err}"
        );
    }
    assert!(
        !out.join("phi-3-mini-4k").exists(),
        "failed runs write nothing"
    );
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn list_models_names_the_embedded_configs() {
    let r = run(&["--list-models"]);
    let s = String::from_utf8_lossy(&r.stdout);
    for m in [
        "phi-3-mini-4k",
        "phi-3-mini-128k",
        "phi-3-medium-4k",
        "phi-3-medium-128k",
        "phi-3.5-mini",
        "phi-4-mini",
    ] {
        assert!(s.lines().any(|l| l == m), "{s}");
    }
}

fn fake_compiler() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-neuronx-cc")
}

#[test]
fn compile_runs_neuronx_cc_and_caches_neffs() {
    let out = temp_dir("compile");
    let cache = out.join("cache");
    let argv_log = out.join("argv.log");
    let cc = fake_compiler();
    let args = [
        "--layers",
        "1",
        "--buckets",
        "16",
        "--out",
        out.to_str().unwrap(),
        "--compile",
        "--neuronx-cc",
        cc.to_str().unwrap(),
        "--neff-cache",
        cache.to_str().unwrap(),
        "--target",
        "trn2",
    ];
    let first = bin()
        .args(args)
        .env("FAKE_NEURONX_CC_ARGV_LOG", &argv_log)
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert_eq!(argv.lines().count(), 2, "one compile per graph: {argv}");
    assert!(
        argv.contains("--framework=XLA")
            && argv.contains("--target=trn2")
            && argv.contains("--lnc=2"),
        "{argv}"
    );
    let dir = out.join("phi-3-mini-4k/tp2");
    let manifest = read_manifest(&dir);
    for g in manifest["graphs"].as_array().unwrap() {
        let c = &g["compile"];
        assert!(c["neff_bytes"].as_u64().unwrap() > 0, "{c}");
        assert_eq!(c["cache_hit"], false);
        assert!(dir.join(c["neff"].as_str().unwrap()).exists());
        // The NEFF names the runtime should expect (computed, not read from the NEFF).
        let names = &c["neff_io_names"];
        assert_eq!(names["source"], "expected", "{c}");
        assert_eq!(names["compiler_version"], "2.21.0.0+fake");
        let inputs = names["inputs"].as_array().unwrap();
        assert_eq!(inputs.len(), g["inputs"].as_array().unwrap().len());
        for (k, name) in inputs.iter().enumerate() {
            // Before 2.23 no input gets the must-alias suffix.
            assert_eq!(name, &format!("input{k}"), "{names}");
        }
        let outputs = names["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), g["outputs"].as_array().unwrap().len());
        assert_eq!(outputs[0], "output0");
    }
    assert!(argv.contains("--logfile="), "{argv}");
    // Same protos, flags and compiler: every NEFF comes from the cache.
    let second = bin()
        .args(args)
        .env("FAKE_NEURONX_CC_ARGV_LOG", &argv_log)
        .output()
        .unwrap();
    assert!(second.status.success());
    assert_eq!(
        std::fs::read_to_string(&argv_log).unwrap().lines().count(),
        2,
        "no new compiles"
    );
    assert!(String::from_utf8_lossy(&second.stdout).contains("(cache hit)"));
    // A flag override is a different cache key, passed through verbatim.
    let third = bin()
        .args(args)
        .args([
            "--compiler-flags",
            "--target=trn2 -O1 '--tensorizer-options=--a --b'",
        ])
        .env("FAKE_NEURONX_CC_ARGV_LOG", &argv_log)
        .output()
        .unwrap();
    assert!(
        third.status.success(),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert_eq!(argv.lines().count(), 4);
    assert!(
        argv.lines()
            .last()
            .unwrap()
            .contains("--tensorizer-options=--a --b"),
        "{argv}"
    );
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn compile_failures_and_a_missing_compiler_are_reported() {
    let out = temp_dir("compile-fail");
    let o = out.to_str().unwrap();
    let missing = run(&[
        "--layers",
        "1",
        "--buckets",
        "16",
        "--out",
        o,
        "--compile",
        "--neuronx-cc",
        "/nonexistent/neuronx-cc",
    ]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("not on PyPI") || err.contains("install"),
        "{err}"
    );
    assert!(
        !out.join("phi-3-mini-4k").exists(),
        "fails fast, before building"
    );

    let failing = bin()
        .args([
            "--layers",
            "1",
            "--buckets",
            "16",
            "--out",
            o,
            "--compile",
            "--neuronx-cc",
        ])
        .arg(fake_compiler())
        .args(["--neff-cache", out.join("cache").to_str().unwrap()])
        .env("FAKE_NEURONX_CC_FAIL", "1")
        .output()
        .unwrap();
    assert!(!failing.status.success());
    let err = String::from_utf8_lossy(&failing.stderr);
    assert!(
        err.contains("reproduce with:") && err.contains("2 of 2 graphs failed"),
        "{err}"
    );
    assert!(err.contains("compiler log kept at"), "{err}");
    let manifest = read_manifest(&out.join("phi-3-mini-4k/tp2"));
    let c = &manifest["graphs"][0]["compile"];
    assert!(c["error"].as_str().unwrap().contains("failed"));
    // The failed compile's work folder and the compiler's own log stay, named in the manifest.
    let kept = Path::new(c["compiler_log"].as_str().unwrap());
    assert!(kept.is_file(), "{c}");
    assert!(std::fs::read_to_string(kept)
        .unwrap()
        .contains("NCC_FAKE002"));
    assert!(kept.starts_with(c["work_dir"].as_str().unwrap()));
    assert_eq!(c["neff_io_names"]["source"], "expected");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_failed_run_leaves_no_stale_manifest() {
    let out = temp_dir("stale");
    let dir = out.join("phi-3-mini-4k/tp2");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.json"), "{\"from\": \"an older build\"}").unwrap();
    std::fs::write(dir.join(".cte_b1_s16.hlo.pb.tmp.999.0"), "half-written").unwrap();
    // A folder where a graph file must go makes the write fail mid-run.
    std::fs::create_dir_all(dir.join("tkg_b1_s16.hlo.pb")).unwrap();
    let r = run(&[
        "--layers",
        "1",
        "--buckets",
        "16",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("tkg_b1_s16.hlo.pb"));
    assert!(
        !dir.join("manifest.json").exists(),
        "the old manifest no longer describes the files"
    );
    assert!(
        !dir.join(".cte_b1_s16.hlo.pb.tmp.999.0").exists(),
        "stale temporaries are removed"
    );
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn options_are_deduplicated_checked_and_recorded() {
    let out = temp_dir("opts");
    let o = out.to_str().unwrap();
    // A one-layer, one-bucket set with these options.
    let small = |options: &[&str]| {
        let mut args = vec!["--layers", "1", "--buckets", "16"];
        args.extend_from_slice(options);
        args.extend(["--out", o]);
        run(&args)
    };
    // Asking for a kind twice builds it once.
    let r = small(&["--graphs", "cte,cte"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let read = || read_manifest(&out.join("phi-3-mini-4k/tp2"));
    assert_eq!(read()["graphs"].as_array().unwrap().len(), 1);
    // Decode-only sets are not held to the (prefill) buckets.
    let r = run(&[
        "--layers",
        "1",
        "--graphs",
        "tkg",
        "--max-seq-len",
        "512",
        "--out",
        o,
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = run(&["--layers", "1", "--max-seq-len", "99999999", "--out", o]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("max_position_embeddings 4096"),
        "{err}"
    );
    // The manifest says how the graphs were built.
    let r = small(&["--qkv", "split", "--sampling", "greedy", "--preset", "cpu"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let m = read();
    assert_eq!(m["neuron_config"]["fused_qkv"], false);
    assert_eq!(m["neuron_config"]["on_device_sampling"], true);
    let options = &m["graphs"][0]["options"];
    assert_eq!(options["fused_qkv"], false);
    // bf16 (the default dtype): the cpu preset multiplies weight-first, keeps an f32 state,
    // stores contractions from 4096 in f32 and gathers single-row vectors.
    assert_eq!(options["linear"], "WeightFirst");
    assert_eq!(options["kv_dtype"], "F32");
    assert_eq!(options["f32_weights_from"], 4096);
    assert_eq!(options["vector_operand"], "Gathered");
    // Its prefill runs the last layer past attention on the last token only.
    assert_eq!(options["prefill_tail"], "LastToken");
    assert_eq!(m["kv_state"]["dtype"], "f32");
    assert_eq!(options["decode_cache_write"], "DynamicUpdateSlice");
    // In-place decode rows are recorded on the token-generation graph, the contract a runtime
    // follows (row b is state row b).
    let tkg = m["graphs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["kind"] == "token_generation")
        .expect("a tkg graph");
    assert_eq!(tkg["decode_rows"], "in_place");
    // One sequence's state has no row dim in the cpu preset (phi-3-mini-4k at tp 2: 16 KV
    // heads per rank, 16 positions, head_dim 96), and the cache inputs are declared so.
    assert_eq!(options["single_row_state"], "Squeezed");
    assert_eq!(options["decode_scores"], "KeysFirst");
    assert_eq!(m["kv_state"]["shape"], serde_json::json!([16, 16, 96]));
    assert_eq!(m["kv_state"]["max_batch_size"], 1);
    let cache_input = |m: &serde_json::Value| {
        m["graphs"][0]["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["role"] == "kv_cache")
            .map(|i| i["shape"].clone())
            .expect("a cache input")
    };
    assert_eq!(cache_input(&m), m["kv_state"]["shape"]);
    // Two sequences keep the row dim, and so does a squeezed state asked for explicitly not.
    let r = small(&["--preset", "cpu", "--batch", "2"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let m = read();
    assert_eq!(m["kv_state"]["shape"], serde_json::json!([2, 16, 16, 96]));
    assert_eq!(cache_input(&m), m["kv_state"]["shape"]);
    let r = small(&["--preset", "cpu", "--single-row-state", "rows"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        read()["kv_state"]["shape"],
        serde_json::json!([1, 16, 16, 96])
    );
    // The squeezed state is written by dynamic-update-slice only: any other write is refused
    // in one line.
    let r = small(&["--preset", "cpu", "--cache-write", "scatter"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success()
            && err.contains("dynamic-update-slice only")
            && err.lines().count() == 1,
        "{err}"
    );
    // No preset calls the runtime's kernel; --matvec kernel lists it on every graph that does
    // (the bf16 default: each graph's small-row projections), with every weight kept bf16.
    assert_eq!(options["matvec"], "Xla");
    assert!(tkg.get("runtime_kernels").is_none(), "{tkg}");
    let r = small(&[
        "--preset",
        "cpu",
        "--matvec",
        "kernel",
        "--f32-weights-from",
        "0",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for g in read()["graphs"].as_array().unwrap() {
        assert_eq!(g["options"]["matvec"], "Kernel");
        assert_eq!(
            g["runtime_kernels"],
            serde_json::json!(["phi3_neuron.bf16_matvec"])
        );
    }
    // In f32 the kernel is the f32 one, on the cpu preset's [in, out] weights; prefill's 16
    // rows keep XLA's dots but its last-token logits take the kernel.
    let r = small(&["--preset", "cpu", "--matvec", "kernel", "--dtype", "f32"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for g in read()["graphs"].as_array().unwrap() {
        assert_eq!(
            g["runtime_kernels"],
            serde_json::json!(["phi3_neuron.f32_matvec"]),
            "{}",
            g["name"]
        );
    }
    // The f32 cpu preset compiles token generation with XNNPACK's dots at one rank: those
    // graphs' entries list the XLA options, context encoding's none. `--cpu-dots xnnpack`
    // lists them for every graph. At two ranks, in bf16, in the neuron preset and with
    // `--cpu-dots xla` no graph lists any (asking for XNNPACK at two ranks is refused:
    // bad_options_fail_with_one_clear_line).
    let tp1 = out.join("phi-3-mini-4k/tp1");
    let bypass = |g: &serde_json::Value| {
        g["xla_options"]["xla_cpu_experimental_xnn_graph_fusion_mode"]
            == "XNN_GRAPH_FUSION_MODE_BYPASS_COST_MODEL"
    };
    let f32_cpu_tp1 = ["--preset", "cpu", "--dtype", "f32", "--tp", "1"];
    let with_dots = |dots: &'static str| [&f32_cpu_tp1[..], &["--cpu-dots", dots]].concat();
    let r = small(&f32_cpu_tp1);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let m = read_manifest(&tp1);
    assert_eq!(m["options"]["cpu_dots"], "XnnpackDecode");
    assert!(m.get("xla_options").is_none(), "per graph, not per set");
    for g in m["graphs"].as_array().unwrap() {
        let decode = g["kind"] == "token_generation";
        assert_eq!(bypass(g), decode, "{}", g["name"]);
        assert_eq!(g.get("xla_options").is_none(), !decode, "{}", g["name"]);
    }
    let r = small(&with_dots("xnnpack"));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let m = read_manifest(&tp1);
    assert_eq!(m["options"]["cpu_dots"], "Xnnpack");
    assert!(m["graphs"].as_array().unwrap().iter().all(bypass));
    let xla_dots = with_dots("xla");
    for args in [
        &["--preset", "cpu", "--dtype", "f32"][..],
        &["--preset", "cpu", "--tp", "1"],
        &["--dtype", "f32", "--tp", "1"],
        &xla_dots,
    ] {
        let r = small(args);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let tp = if args.contains(&"1") {
            &tp1
        } else {
            &out.join("phi-3-mini-4k/tp2")
        };
        let m = read_manifest(tp);
        assert_eq!(m["options"]["cpu_dots"], "Xla", "{args:?}");
        for g in m["graphs"].as_array().unwrap() {
            assert_eq!(g["options"]["cpu_dots"], "Xla", "{args:?}");
            assert!(g.get("xla_options").is_none(), "{args:?}: {}", g["name"]);
        }
    }
    let r = small(&["--decode-rows", "sideways"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("--decode-rows") && err.lines().count() == 1,
        "{err}"
    );
    // trn3: lnc 2, like trn2.
    let r = small(&["--target", "trn3"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let m = read();
    assert_eq!(m["neuron_config"]["target"], "trn3");
    let flags = m["graphs"][0]["compiler_flags"].as_array().unwrap();
    assert!(flags.iter().any(|f| f == "--target=trn3") && flags.iter().any(|f| f == "--lnc=2"));
    let r = small(&["--target", "trn9"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("--target must be one of trn1, trn2, trn3, inf2"),
        "{err}"
    );
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn lint_findings_carry_their_codes_in_stats_and_manifest() {
    let out = temp_dir("lint");
    // The primitive sampler's stable sort is an error, its `or`s are warnings.
    let r = run(&[
        "--layers",
        "1",
        "--buckets",
        "16",
        "--graphs",
        "tkg",
        "--sampling",
        "on-device",
        "--sampler-kernels",
        "primitives",
        "--stats",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(stdout.contains("1 flagged, 3 warn"), "{stdout}");
    assert!(
        stdout.contains("lint error LINT_UNSUPPORTED_OP: sort"),
        "{stdout}"
    );
    assert!(
        stdout.contains("lint warning LINT_UNDOCUMENTED_OP: or"),
        "{stdout}"
    );
    assert!(
        stdout.contains("lint info (allow-listed): ALLOW_COLLECTIVE"),
        "{stdout}"
    );
    let m = read_manifest(&out.join("phi-3-mini-4k/tp2"));
    let lint = &m["graphs"][0]["neuron_lint"];
    assert_eq!(lint["clean"], false);
    assert_eq!(lint["flagged"][0]["code"], "LINT_UNSUPPORTED_OP");
    assert_eq!(lint["flagged"][0]["severity"], "error");
    assert_eq!(lint["flagged"][0]["opcode"], "sort");
    assert_eq!(lint["warnings"].as_array().unwrap().len(), 3);
    assert_eq!(lint["warnings"][0]["code"], "LINT_UNDOCUMENTED_OP");
    assert!(lint["allow_listed"]["ALLOW_SCATTER"].as_u64().unwrap() > 0);
    std::fs::remove_dir_all(&out).ok();
}
