//! Dev-only helpers shared by the tests and the benchmarks.
//!
//! **Counter-hash weights.** Full-width checkpoints are too big to commit, so a test writes
//! them on demand from a counter-based hash that `tools/fixtures/hashinit.py` implements too:
//! element `i` of tensor `key` is a function of `(key, i)` alone, so Python (which runs Hugging
//! Face on the same weights and commits only HF's outputs) and Rust (which regenerates the
//! checkpoint in the test) agree bit for bit. The rule:
//!
//! ```text
//! seed  = fnv1a64(key)
//! z     = splitmix64_finalize(seed + (i + 1) · 0x9E3779B97F4A7C15)     (wrapping u64)
//! u     = (z >> 40) / 2^24 · 2 − 1                                     (exact in f32, in [−1, 1))
//! value = offset + scale · u                                           (f32)
//! ```
//!
//! with `(scale, offset)` from the tensor's name and shape ([`init_for`]).

use phi3_neuron::models::DecoderModel;
use phi3_neuron::weights::WeightDecl;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
pub use tempfile::TempDir;

/// Every committed HF fixture (tests/fixtures/models).
pub const FIXTURES: [&str; 10] = [
    "mha",
    "gqa",
    "gqa_mha_convert",
    "longrope",
    "partial_rotary",
    "phi4_like",
    "sliding_window",
    "tied",
    "llama_gqa",
    "llama_bias_tied",
];

/// The Phi-3 fixtures (the first eight of [`FIXTURES`]; the rest are Llama).
pub const PHI3_FIXTURES: &[&str] = FIXTURES.split_at(8).0;

/// A JSON array of integers (token ids) as `i32`s.
pub fn ints(v: &serde_json::Value) -> Vec<i32> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x.as_i64().expect("an integer") as i32)
        .collect()
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture_dir(name: &str) -> PathBuf {
    repo().join("tests/fixtures/models").join(name)
}

/// The plugin from `$PJRT_PLUGIN` (or the default install path). A missing plugin FAILS the
/// caller with the install hint: a test that needs it must never pass vacuously.
pub fn plugin() -> pjrt_runtime::Plugin {
    pjrt_runtime::Plugin::from_env().unwrap_or_else(|e| panic!("{e}"))
}

pub fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Element `i` of the stream `seed`: uniform in [−1, 1), exact in f32.
pub fn uniform(seed: u64, i: u64) -> f32 {
    let z = finalize(seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    (z >> 40) as f32 / 16_777_216.0 * 2.0 - 1.0
}

/// `(scale, offset)` of a checkpoint tensor, from its name and shape: norms near 1, biases
/// small, projections scaled by their fan-in, the LM head large enough that greedy decoding
/// has clear margins. A tied embedding (`tied`: the checkpoint has no `lm_head.weight`) is
/// also the LM head, so it is kept small: the residual stream is then the layers' outputs,
/// not the last token's own embedding, which would win every greedy step by ~√hidden σ.
pub fn init_for(key: &str, shape: &[usize], tied: bool) -> (f32, f32) {
    if key.ends_with("norm.weight") {
        return (0.1, 1.0);
    }
    if key.ends_with(".bias") {
        return (0.02, 0.0);
    }
    let fan_in = shape.get(1).copied().unwrap_or(1).max(1) as f64;
    if key == "model.embed_tokens.weight" {
        return (if tied { 0.02 } else { 0.5 }, 0.0);
    }
    if key == "lm_head.weight" {
        return ((4.0 / fan_in.sqrt()) as f32, 0.0);
    }
    ((0.8 / fan_in.sqrt()) as f32, 0.0)
}

/// The checkpoint tensors `decls` read, each once, in first-use order: `(key, HF shape)`.
pub fn checkpoint_tensors(decls: &[WeightDecl]) -> Vec<(String, Vec<usize>)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for d in decls {
        for p in &d.parts {
            if seen.insert(p.checkpoint_key.clone()) {
                out.push((p.checkpoint_key.clone(), p.hf_shape.clone()));
            }
        }
    }
    out
}

/// The checkpoint tensors of `model` (from the weights a default graph of it declares).
pub fn model_tensors(model: &dyn DecoderModel) -> Vec<(String, Vec<usize>)> {
    use phi3_neuron::models::decoder::GraphSpec;
    let plan = model.plan(1).expect("every model shards at tp 1");
    let spec = GraphSpec::context_encoding(1, 1, 1, phi3_neuron::DType::F32);
    let decls = model.record(&plan, &spec).expect("records").weights;
    checkpoint_tensors(&decls)
}

/// Writes `dir/model.safetensors` holding every tensor of `tensors` with counter-hash values
/// rounded to bf16 (nearest even), as bf16 or, when `!bf16`, as the same values widened to f32
/// (a checkpoint the f32 graphs load without conversion), streamed in bounded chunks; copies
/// `config_json` to `dir/config.json`. Returns the bytes written.
pub fn write_hashed_checkpoint(
    dir: &Path,
    config_json: &str,
    tensors: &[(String, Vec<usize>)],
    bf16: bool,
) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), config_json)?;
    let width = if bf16 { 2 } else { 4 };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (key, shape) in tensors {
        let len = shape.iter().product::<usize>() * width;
        header.insert(
            key.clone(),
            serde_json::json!({
                "dtype": if bf16 { "BF16" } else { "F32" },
                "shape": shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header))?;
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut w = BufWriter::with_capacity(
        4 << 20,
        std::fs::File::create(dir.join("model.safetensors"))?,
    );
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    let mut chunk = Vec::with_capacity(1 << 22);
    let tied = !tensors.iter().any(|(k, _)| k == "lm_head.weight");
    for (key, shape) in tensors {
        let (scale, offset) = init_for(key, shape, tied);
        let seed = fnv1a64(key);
        let n: u64 = shape.iter().product::<usize>() as u64;
        let mut i = 0;
        while i < n {
            chunk.clear();
            let end = (i + (1 << 20)).min(n);
            for j in i..end {
                let v = half::bf16::from_f32(offset + scale * uniform(seed, j));
                if bf16 {
                    chunk.extend_from_slice(&v.to_le_bytes());
                } else {
                    chunk.extend_from_slice(&v.to_f32().to_le_bytes());
                }
            }
            w.write_all(&chunk)?;
            i = end;
        }
    }
    w.into_inner()?.sync_all()?;
    Ok(8 + header.len() as u64 + offset as u64)
}

/// HF's logits at one generation step, summarised.
#[derive(Clone, Debug)]
pub struct StepLogits {
    /// The greedy token HF picked, and its top-1/top-2 logit gap.
    pub token: i32,
    pub margin: f32,
    /// HF's 32 largest logits, `(id, logit)`.
    pub top: Vec<(usize, f32)>,
    /// HF's logits of ids `0, stride, 2·stride, …` (256 of them).
    pub probe_stride: usize,
    pub probe: Vec<f32>,
    pub max_abs: f32,
}

impl StepLogits {
    /// The largest |ours − HF| over HF's top ids and the probes.
    pub fn max_err(&self, logits: &[f32]) -> f32 {
        let top = self.top.iter().map(|&(id, v)| (logits[id] - v).abs());
        let probes = (self.probe.iter().enumerate())
            .map(|(k, &v)| (logits[k * self.probe_stride] - v).abs());
        top.chain(probes).fold(0.0, f32::max)
    }
}

/// One prompt of a full-width case, with HF's outputs on it.
#[derive(Clone, Debug)]
pub struct FullWidthPrompt {
    /// `"default"` (run by `./tools/test`) or `"full"` (run by `tools/test-full`).
    pub suite: String,
    pub prompt_ids: Vec<i32>,
    /// HF's greedy continuation.
    pub greedy: Vec<i32>,
    /// The logits each greedy token was chosen from (step 0: the prompt's last position).
    pub steps: Vec<StepLogits>,
}

/// A real config at full width (cut to a few layers), from `tests/fixtures/full_width/NAME`.
#[derive(Clone, Debug)]
pub struct FullWidthCase {
    pub name: String,
    pub dir: PathBuf,
    pub config_json: String,
    /// Every tensor of the checkpoint HF ran on: `(key, shape)`.
    pub checkpoint: Vec<(String, Vec<usize>)>,
    pub prompts: Vec<FullWidthPrompt>,
}

/// Every full-width case (tools/fixtures/make_full_width.py).
pub const FULL_WIDTH: [&str; 5] = [
    "phi-3-mini-4k.2l",
    "phi-3-medium-4k.1l",
    "phi-4-mini.2l",
    "phi-3.5-mini.2l",
    "llama-3.2-1b.2l",
];

impl FullWidthCase {
    pub fn load(name: &str) -> FullWidthCase {
        let dir = repo().join("tests/fixtures/full_width").join(name);
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join(f).display()))
        };
        let config_json = read("config.json");
        let v: serde_json::Value = serde_json::from_str(&read("expected.json")).unwrap();
        let floats = |v: &serde_json::Value| -> Vec<f32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        let checkpoint = v["checkpoint"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let shape = e[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                (e[0].as_str().unwrap().to_string(), shape)
            })
            .collect();
        let prompts = v["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| FullWidthPrompt {
                suite: p["suite"].as_str().unwrap().to_string(),
                prompt_ids: ints(&p["prompt_ids"]),
                greedy: ints(&p["greedy"]),
                steps: p["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|st| StepLogits {
                        token: st["token"].as_i64().unwrap() as i32,
                        margin: st["margin"].as_f64().unwrap() as f32,
                        top: st["top"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|e| {
                                (
                                    e[0].as_u64().unwrap() as usize,
                                    e[1].as_f64().unwrap() as f32,
                                )
                            })
                            .collect(),
                        probe_stride: st["probe_stride"].as_u64().unwrap() as usize,
                        probe: floats(&st["probe"]),
                        max_abs: st["max_abs"].as_f64().unwrap() as f32,
                    })
                    .collect(),
            })
            .collect();
        FullWidthCase {
            name: name.to_string(),
            dir,
            config_json,
            checkpoint,
            prompts,
        }
    }

    pub fn prompts<'a>(&'a self, suite: &'a str) -> impl Iterator<Item = &'a FullWidthPrompt> {
        self.prompts.iter().filter(move |p| p.suite == suite)
    }

    /// The case's checkpoint (bf16: the values HF ran on; f32 graphs widen them exactly),
    /// written for this process under `target/scratch/` and removed with its last holder
    /// (1–1.6 GB each).
    pub fn checkpoint(&self) -> Arc<TempDir> {
        scratch_checkpoint(&self.name, &self.config_json, &self.checkpoint)
    }
}

/// A counter-hash checkpoint (bf16) for this test process, under `target/scratch/`: written on
/// first use, shared by the tests that hold it at the same time, and deleted when the last
/// holder drops it, so a suite never keeps more than the checkpoints its running tests need
/// on disk. Folders that a killed run left behind are swept on first use.
pub fn scratch_checkpoint(
    name: &str,
    config_json: &str,
    tensors: &[(String, Vec<usize>)],
) -> Arc<TempDir> {
    type Live = std::collections::HashMap<String, std::sync::Weak<TempDir>>;
    static LIVE: std::sync::Mutex<Option<Live>> = std::sync::Mutex::new(None);
    // One writer at a time: two tests asking for the same case wait for one copy.
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let root = repo().join("target/scratch");
    let live = live.get_or_insert_with(|| {
        sweep_dead(&root);
        // What earlier versions cached (up to 9 GB).
        let _ = std::fs::remove_dir_all(repo().join("target/full-width"));
        Live::new()
    });
    if let Some(dir) = live.get(name).and_then(std::sync::Weak::upgrade) {
        return dir;
    }
    std::fs::create_dir_all(&root).unwrap();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{}-{name}-", std::process::id()))
        .tempdir_in(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    write_hashed_checkpoint(dir.path(), config_json, tensors, true)
        .unwrap_or_else(|e| panic!("writing {}: {e}", dir.path().display()));
    let dir = Arc::new(dir);
    live.insert(name.to_string(), Arc::downgrade(&dir));
    dir
}

/// Removes the folders under `root` named `PID-...` whose process is gone.
fn sweep_dead(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name.to_str().and_then(|n| n.split('-').next());
        if let Some(pid) = pid.filter(|p| p.parse::<u32>().is_ok()) {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A fresh temporary folder (under the system's temp dir) removed when dropped.
pub fn tempdir(tag: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("phi3-neuron-{tag}-"))
        .tempdir()
        .expect("a temporary folder")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values printed by `python3 tools/fixtures/hashinit.py`: the Python and Rust
    /// streams agree bit for bit.
    #[test]
    fn the_hash_matches_the_python_reference() {
        assert_eq!(fnv1a64("model.norm.weight"), 0xd6d6_e5af_d116_04e4);
        let s = fnv1a64("x");
        // Python prints the f32 values as f64; compare in f64 (exact: f32 widens exactly).
        let v: Vec<f64> = (0..4).map(|i| uniform(s, i) as f64).collect();
        let want: [f64; 4] = [
            -0.597583532333374,
            0.6170535087585449,
            0.2866472005844116,
            0.6562187671661377,
        ];
        assert_eq!(v, want);
        let key = "model.layers.0.mlp.down_proj.weight";
        let (scale, offset) = init_for(key, &[2, 3], false);
        let t: Vec<f64> = (0..6)
            .map(|i| (offset + scale * uniform(fnv1a64(key), i)) as f64)
            .collect();
        let want = [
            -0.060828980058431625,
            0.41769570112228394,
            -0.2883928418159485,
            0.15086139738559723,
            -0.14542347192764282,
            -0.38261517882347107,
        ];
        assert_eq!(t, want);
    }
}
