//! Memory: a full-width checkpoint (Phi-3-mini-4k at its real width, cut to 2 layers, bf16,
//! 0.85 GB) runs through `phi3 generate` in about the bytes its weights take on the device.
//! The weights stream from the checkpoint's mapping into each rank's file and from there into
//! device buffers the runtime owns without a copy; no step holds a second full copy.
//!
//! Bound: peak RSS ≤ 1.25 × the device weight bytes + 400 MiB. The constant is the process
//! without weights: the PJRT CPU client, XLA's compiler and the compiled executables of the
//! two graphs, the KV cache and activations (about 250–350 MiB measured, graph-size bound, not
//! model-size bound); the 25 % covers page-cache pages of the mapped files counted while a
//! shard streams through them.

use std::process::Command;
use testkit::FullWidthCase;

fn generate(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_phi3"))
        .arg("generate")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "phi3 generate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_full_width_checkpoint_runs_in_about_its_weight_bytes() {
    testkit::plugin(); // the child finds it the same way; a missing plugin fails here
    let case = FullWidthCase::load("phi-3-mini-4k.2l");
    let checkpoint = case.checkpoint();
    let model = checkpoint.path();
    let prompt = case.prompts[0].prompt_ids[..32]
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(",");
    for (tp, dtype) in [("1", "bf16"), ("2", "f32")] {
        // One cache per run, deleted after it: it holds the run's rank files (up to 1.6 GB).
        let cache = testkit::tempdir("memory-cache");
        let v = generate(&[
            "--model",
            model.to_str().unwrap(),
            "--tp",
            tp,
            "--dtype",
            dtype,
            "--prompt-ids",
            &prompt,
            "--max-new-tokens",
            "4",
            "--ignore-eos",
            "--timings",
            "--cache",
            cache.path().to_str().unwrap(),
        ]);
        let t = &v["timings"];
        let weights_mib = t["weight_bytes"].as_f64().unwrap() / (1 << 20) as f64;
        let peak = t["peak_rss_mb"].as_f64().unwrap();
        let bound = 1.25 * weights_mib + 400.0;
        eprintln!("tp {tp} {dtype}: weights {weights_mib:.0} MiB, peak RSS {peak:.0} MiB (bound {bound:.0})");
        assert!(
            weights_mib > 800.0,
            "the device holds the whole model ({weights_mib} MiB)"
        );
        assert!(
            peak <= bound,
            "tp {tp} {dtype}: peak RSS {peak:.0} MiB exceeds 1.25 × {weights_mib:.0} MiB of weights + 400 MiB"
        );
    }
}
