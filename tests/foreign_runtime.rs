//! The manifest is a complete contract: a runtime that knows none of this crate's types can
//! serve the artifacts. This test writes a set with the `build-graphs` binary and rank files
//! with `phi3 shard`, then — reading only `manifest.json` (as JSON), the `.hlo.pb` files and
//! the `tp{r}.safetensors` files (with the `safetensors` crate), and running through the
//! runtime crate's public API — prefills two sequences of different lengths one at a time
//! into different cache rows and decodes them together in one token-generation batch, each at
//! its own position, across a bucket boundary. Both continuations must equal Hugging Face's
//! greedy ones. A final call with only out-of-range `seq_ids` must leave the state unchanged.

use pjrt_runtime::{Arg, Buffer, Client, ClientOptions, CompileOptions, ElementType, Plugin};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use testkit::fixture_dir as fixture;

fn run(bin: &str, args: &[&str]) {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ints(v: &Value) -> Vec<i32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as i32)
        .collect()
}

fn dims(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn element_type(dtype: &str) -> ElementType {
    match dtype {
        "f32" => ElementType::F32,
        "bf16" => ElementType::BF16,
        "s32" => ElementType::S32,
        other => panic!("unexpected dtype {other}"),
    }
}

/// A minimal runtime over the JSON manifest.
struct Foreign {
    manifest: Value,
    client: Client,
    exes: HashMap<String, pjrt_runtime::LoadedExecutable>,
    /// `[rank]`: weight name → buffer.
    weights: Vec<HashMap<String, Buffer>>,
    tp: usize,
}

impl Foreign {
    fn load(graphs: &Path, weights: &Path) -> Foreign {
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(graphs.join("manifest.json")).unwrap()).unwrap();
        let tp = manifest["tp_degree"].as_u64().unwrap() as usize;
        let plugin = Plugin::from_env().unwrap_or_else(|e| panic!("{e}"));
        let client = Client::new(
            &plugin,
            &ClientOptions {
                cpu_device_count: Some(tp as i64),
            },
        )
        .unwrap();
        let mut exes = HashMap::new();
        for g in manifest["graphs"].as_array().unwrap() {
            let file = g["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .find(|f| f.ends_with(".hlo.pb"))
                .unwrap();
            let bytes = std::fs::read(graphs.join(file)).unwrap();
            let exe = client
                .compile_bytes(&bytes, &CompileOptions::replicas(tp as i64))
                .unwrap();
            exes.insert(g["name"].as_str().unwrap().to_string(), exe);
        }
        let mut all = Vec::new();
        for rank in 0..tp {
            let bytes = std::fs::read(weights.join(format!("tp{rank}.safetensors"))).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let mut bufs = HashMap::new();
            for w in manifest["weights"].as_array().unwrap() {
                let name = w["name"].as_str().unwrap();
                let t = st.tensor(name).unwrap();
                let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
                assert_eq!(shape, dims(&w["shape"]), "{name}");
                let b = client
                    .buffer_from_host(
                        t.data(),
                        element_type(w["dtype"].as_str().unwrap()),
                        &shape,
                        rank,
                    )
                    .unwrap();
                bufs.insert(name.to_string(), b);
            }
            all.push(bufs);
        }
        Foreign {
            manifest,
            client,
            exes,
            weights: all,
            tp,
        }
    }

    fn zero_state(&self) -> Vec<Vec<Buffer>> {
        let kv = &self.manifest["kv_state"];
        let shape = dims(&kv["shape"]);
        let layers = kv["layers"].as_u64().unwrap() as usize;
        let ty = element_type(kv["dtype"].as_str().unwrap());
        let n: i64 = shape.iter().product();
        let zeros = vec![0u8; n as usize * ty.byte_size()];
        (0..self.tp)
            .map(|rank| {
                (0..2 * layers)
                    .map(|_| {
                        self.client
                            .buffer_from_host(&zeros, ty, &shape, rank)
                            .unwrap()
                    })
                    .collect()
            })
            .collect()
    }

    /// The graph of `kind` chosen by the manifest's rule for `need` positions.
    fn graph(&self, kind: &str, need: usize) -> &Value {
        let list = &self.manifest["buckets"][kind];
        let bucket = list
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as usize)
            .filter(|&b| b >= need)
            .min()
            .unwrap();
        self.manifest["graphs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["kind"] == kind && g["bucket"].as_u64().unwrap() as usize == bucket)
            .unwrap()
    }

    /// One call: `ids`/`pos` are `[B, S]`, `seq` is `[B]`; returns each row's logits and the
    /// new state.
    fn call(
        &self,
        g: &Value,
        ids: &[i32],
        pos: &[i32],
        seq: &[i32],
        state: Vec<Vec<Buffer>>,
    ) -> (Vec<Vec<f32>>, Vec<Vec<Buffer>>) {
        let b = g["batch"].as_i64().unwrap();
        let s = g["active_tokens"].as_i64().unwrap();
        let mut per_rank = Vec::new();
        for rank in 0..self.tp {
            per_rank.push([
                self.client.buffer_from_slice(ids, &[b, s], rank).unwrap(),
                self.client.buffer_from_slice(pos, &[b, s], rank).unwrap(),
                self.client.buffer_from_slice(seq, &[b], rank).unwrap(),
            ]);
        }
        let mut args = Vec::new();
        for (rank, caches) in state.into_iter().enumerate() {
            let mut caches = caches.into_iter();
            let list: Vec<Arg> = g["inputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| match i["role"].as_str().unwrap() {
                    "input_ids" => Arg::Borrow(&per_rank[rank][0]),
                    "position_ids" => Arg::Borrow(&per_rank[rank][1]),
                    "seq_ids" => Arg::Borrow(&per_rank[rank][2]),
                    "weight" => Arg::Borrow(&self.weights[rank][i["weight"].as_str().unwrap()]),
                    "kv_cache" => Arg::Donate(caches.next().unwrap()),
                    other => panic!("role {other} is not used by this set"),
                })
                .collect();
            args.push(list);
        }
        let exe = &self.exes[g["name"].as_str().unwrap()];
        let mut out = exe.execute(args).unwrap();
        let outputs = g["outputs"].as_array().unwrap();
        let logits_at = outputs.iter().position(|o| o["role"] == "logits").unwrap();
        let first_cache = outputs
            .iter()
            .position(|o| o["role"] == "kv_cache")
            .unwrap();
        let vocab = self.manifest["model"]["vocab_size"].as_u64().unwrap() as usize;
        let flat = out[0][logits_at].to_vec::<f32>().unwrap();
        assert_eq!(flat.len(), b as usize * vocab, "gathered logits");
        let rows = flat.chunks(vocab).map(<[f32]>::to_vec).collect();
        let state = out.iter_mut().map(|o| o.split_off(first_cache)).collect();
        (rows, state)
    }
}

fn argmax(v: &[f32]) -> i32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as i32
}

#[test]
fn a_runtime_that_reads_only_the_artifacts_serves_two_sequences() {
    let tmp = std::env::temp_dir().join(format!("phi3-foreign-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let model = fixture("gqa");
    let m = model.to_str().unwrap();
    let out = tmp.join("graphs");
    run(
        env!("CARGO_BIN_EXE_build-graphs"),
        &[
            "--model",
            m,
            "--tp",
            "2",
            "--dtype",
            "f32",
            "--buckets",
            "16,32",
            "--max-batch-size",
            "2",
            "--format",
            "pb",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let graphs = out.join("gqa/tp2");
    let weights = tmp.join("weights");
    run(
        env!("CARGO_BIN_EXE_phi3"),
        &[
            "shard",
            "--model",
            m,
            "--graphs",
            graphs.to_str().unwrap(),
            "--out",
            weights.to_str().unwrap(),
        ],
    );
    let rt = Foreign::load(&graphs, &weights);
    let expected: Value =
        serde_json::from_slice(&std::fs::read(model.join("expected.json")).unwrap()).unwrap();
    let cases = expected["cases"].as_array().unwrap();
    let (a, b) = (&cases[0], &cases[1]); // prompts of 7 and 13 tokens
    let prompts = [ints(&a["prompt_ids"]), ints(&b["prompt_ids"])];
    let want = [ints(&a["greedy_16"]), ints(&b["greedy_16"])];
    let rows = rt.manifest["kv_state"]["max_batch_size"].as_i64().unwrap() as i32;
    assert_eq!(rows, 2);

    // Prefill each sequence alone into its own row (seq_id 1 first, to show the rows are real).
    let mut state = rt.zero_state();
    let mut tokens: [Vec<i32>; 2] = Default::default();
    for row in [1usize, 0] {
        let p = &prompts[row];
        let g = rt.graph("context_encoding", p.len());
        let s = g["bucket"].as_u64().unwrap() as usize;
        let mut ids = vec![0; s];
        let mut pos = vec![0; s];
        ids[..p.len()].copy_from_slice(p);
        for (i, x) in pos[..p.len()].iter_mut().enumerate() {
            *x = i as i32;
        }
        let (logits, next) = rt.call(g, &ids, &pos, &[row as i32], state);
        state = next;
        tokens[row] = p.clone();
        tokens[row].push(argmax(&logits[0]));
    }
    // Decode both together, each at its own position; the bucket follows the furthest one.
    let mut buckets = std::collections::BTreeSet::new();
    for _ in 1..16 {
        let pos: Vec<i32> = tokens.iter().map(|t| t.len() as i32 - 1).collect();
        let furthest = *pos.iter().max().unwrap() as usize;
        let g = rt.graph("token_generation", furthest + 1);
        buckets.insert(g["bucket"].as_u64().unwrap());
        let ids: Vec<i32> = tokens.iter().map(|t| *t.last().unwrap()).collect();
        let (logits, next) = rt.call(g, &ids, &pos, &[0, 1], state);
        state = next;
        for (row, l) in logits.iter().enumerate() {
            tokens[row].push(argmax(l));
        }
    }
    for row in 0..2 {
        assert_eq!(
            tokens[row][prompts[row].len()..],
            want[row][..],
            "sequence {row}"
        );
    }
    assert_eq!(
        buckets.len(),
        2,
        "the decode crossed from bucket 16 to 32: {buckets:?}"
    );

    // Rows whose seq_ids are out of range write nothing.
    let before: Vec<Vec<f32>> = state[0]
        .iter()
        .map(|c| c.to_vec::<f32>().unwrap())
        .collect();
    let g = rt.graph("token_generation", 20);
    let (_, after) = rt.call(g, &[5, 6], &[3, 4], &[-1, rows], state);
    for (k, (x, y)) in before.iter().zip(&after[0]).enumerate() {
        assert_eq!(x, &y.to_vec::<f32>().unwrap(), "cache {k} changed");
    }
    std::fs::remove_dir_all(&tmp).ok();
}
