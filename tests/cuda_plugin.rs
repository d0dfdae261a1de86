//! The CUDA PJRT plugin (`tools/install-pjrt-plugin cuda`, PyPI `jax-cuda12-pjrt`) through
//! `phi3 generate --plugin`. On a machine without an NVIDIA GPU, which is every machine CI
//! runs on, loading it must fail with one clear line (never a panic); on a machine with one,
//! the fixture must give Hugging Face's tokens.
//!
//! The plugin comes from `$PJRT_CUDA_PLUGIN`, else the install path under the cache folder;
//! when neither exists the test fails with the install command (`./tools/test` installs it
//! with `--plugin-only`, without the NVIDIA libraries).

use std::path::{Path, PathBuf};
use std::process::Command;

fn cuda_plugin() -> PathBuf {
    if let Some(p) = std::env::var_os("PJRT_CUDA_PLUGIN") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_default();
    let so =
        cache.join("phi3-neuron/jax-cuda12-pjrt-0.10.2/jax_plugins/xla_cuda12/xla_cuda_plugin.so");
    assert!(
        so.exists(),
        "the CUDA PJRT plugin is missing: run `tools/install-pjrt-plugin cuda --plugin-only` \
         (or set PJRT_CUDA_PLUGIN)"
    );
    so
}

fn has_gpu() -> bool {
    Path::new("/dev/nvidiactl").exists() || Path::new("/proc/driver/nvidia/version").exists()
}

#[test]
fn the_cuda_plugin_runs_the_fixture_or_fails_with_one_line() {
    let plugin = cuda_plugin();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/gqa");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
            .unwrap();
    let case = &expected["cases"][0];
    let prompt: Vec<String> = case["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let cache = std::env::temp_dir().join(format!("phi3-cuda-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_phi3"))
        .args(["generate", "--ignore-eos", "--plugin"])
        .arg(&plugin)
        .arg("--model")
        .arg(&fixture)
        .args([
            "--prompt-ids",
            &prompt.join(","),
            "--max-new-tokens",
            "16",
            "--cache",
        ])
        .arg(&cache)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&cache).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "phi3 panicked with the CUDA plugin:\n{stderr}"
    );
    if has_gpu() {
        assert!(out.status.success(), "{stderr}");
        // Unverified: no machine this was written on had a GPU.
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["tokens"], case["greedy_16"],
            "CUDA tokens differ from HF's"
        );
        return;
    }
    assert!(
        !out.status.success(),
        "phi3 generate succeeded on the CUDA plugin without a GPU"
    );
    let ours: Vec<&str> = stderr.lines().filter(|l| l.starts_with("phi3: ")).collect();
    assert_eq!(ours.len(), 1, "expected one phi3 error line:\n{stderr}");
    let line = ours[0];
    assert!(
        line.contains("xla_cuda_plugin.so"),
        "the error line names the plugin: {line}"
    );
    assert!(
        !line.contains("cpu_device_count"),
        "the CUDA plugin was asked for CPU devices: {line}"
    );
}
