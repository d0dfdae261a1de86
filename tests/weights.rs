//! Checkpoints in, rank shards out: every rule of the Phi-3 plan reassembles into the Hugging
//! Face tensors (padding is zero, every query head lands exactly once next to its KV head),
//! half-precision checkpoints load, sharded checkpoints give the same shards, rank files are
//! deterministic, and every bad input is one clear error naming the file and tensor.
//!
//! The shards are cut by the declarations the Phi-3 recorder attaches to a graph's weights
//! (`RecordedGraph::weights`), through the one generic function the sharder, the rank-file
//! writer and the runtime share.

use phi3_neuron::dsl::DType;
use phi3_neuron::manifest::InputRole;
use phi3_neuron::models::decoder::GraphSpec;
use phi3_neuron::models::phi3::Phi3Config;
use phi3_neuron::models::DecoderModel;
use phi3_neuron::parallel::{KvStrategy, ShardPlan};
use phi3_neuron::weights::{
    self, convert, shard_all_ranks, shard_rank, write_rank_files, Checkpoint, RankWeights,
    WeightDecl, WeightTensor, WeightsError, INDEX_FILE, SINGLE_FILE,
};
use safetensors::{Dtype, SafeTensors, View};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use testkit::fixture_dir;
use testkit::TempDir;
use testkit::PHI3_FIXTURES as FIXTURES;

fn load(name: &str) -> (Phi3Config, Checkpoint) {
    let dir = fixture_dir(name);
    let cfg = Phi3Config::from_file(&dir.join("config.json")).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    (cfg, ckpt)
}

/// The weight declarations of a `dtype` graph of `cfg` at `plan` (every graph of a set
/// declares the same ones).
fn decls(cfg: &Phi3Config, plan: &ShardPlan, dtype: DType) -> Vec<WeightDecl> {
    cfg.record(plan, &GraphSpec::context_encoding(1, 8, 16, dtype))
        .unwrap()
        .weights
}

fn shard_for_rank(
    ckpt: &Checkpoint,
    cfg: &Phi3Config,
    plan: &ShardPlan,
    rank: usize,
    dtype: DType,
) -> Result<RankWeights, WeightsError> {
    shard_rank(ckpt, &decls(cfg, plan, dtype), plan.tp as usize, rank)
}

fn write_files(
    ckpt: &Checkpoint,
    cfg: &Phi3Config,
    plan: &ShardPlan,
    dtype: DType,
    out: &Path,
) -> Result<Vec<PathBuf>, WeightsError> {
    write_rank_files(ckpt, &decls(cfg, plan, dtype), plan.tp as usize, out)
}

fn key_of<'a>(d: &'a [WeightDecl], name: &str) -> &'a str {
    &d.iter().find(|d| d.name == name).unwrap().parts[0].checkpoint_key
}

/// An owned tensor for writing test checkpoints.
struct Owned {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Owned {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn fixture_tensors(name: &str) -> BTreeMap<String, Owned> {
    let bytes = std::fs::read(fixture_dir(name).join(SINGLE_FILE)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let t = Owned {
                dtype: v.dtype(),
                shape: v.shape().to_vec(),
                data: v.data().to_vec(),
            };
            (k, t)
        })
        .collect()
}

fn write_st(path: &Path, tensors: &BTreeMap<String, Owned>) {
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.clone(), v)), None).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A copy of fixture `name` whose tensors went through `edit`.
fn edited_fixture(name: &str, edit: impl FnOnce(&mut BTreeMap<String, Owned>)) -> TempDir {
    let dir = testkit::tempdir(name);
    std::fs::copy(
        fixture_dir(name).join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let mut tensors = fixture_tensors(name);
    edit(&mut tensors);
    write_st(&dir.path().join(SINGLE_FILE), &tensors);
    dir
}

fn f32s(t: &WeightTensor) -> Vec<f32> {
    t.to_f32().unwrap()
}

fn hf(ckpt: &Checkpoint, key: &str) -> (Vec<usize>, Vec<f32>) {
    let t = ckpt.read(key, DType::F32).unwrap();
    let dims = t.dims.iter().map(|&d| d as usize).collect();
    (dims, f32s(&t))
}

fn plans(cfg: &Phi3Config) -> Vec<ShardPlan> {
    [1, 2, 4]
        .into_iter()
        .filter_map(|tp| cfg.plan(tp).ok())
        .collect()
}

/// Rows `[a, b)` of a row-major matrix with `cols` columns.
fn rows(m: &[f32], cols: usize, a: usize, b: usize) -> &[f32] {
    &m[a * cols..b * cols]
}

/// Columns `[a, b)` of a row-major matrix with `cols` columns.
fn cols(m: &[f32], ncols: usize, a: usize, b: usize) -> Vec<f32> {
    m.chunks_exact(ncols)
        .flat_map(|row| row[a..b].to_vec())
        .collect()
}

#[test]
fn shard_all_ranks_equals_shard_for_rank() {
    for name in ["gqa", "gqa_mha_convert", "tied"] {
        let (cfg, ckpt) = load(name);
        for plan in plans(&cfg) {
            let all =
                shard_all_ranks(&ckpt, &decls(&cfg, &plan, DType::BF16), plan.tp as usize).unwrap();
            for (rank, w) in all.iter().enumerate() {
                let one = shard_for_rank(&ckpt, &cfg, &plan, rank, DType::BF16).unwrap();
                assert_eq!(w, &one, "{name} tp{} rank {rank}", plan.tp);
            }
        }
    }
}

#[test]
fn shards_have_the_graphs_shapes_for_every_fixture() {
    let mut checked = 0;
    for name in FIXTURES {
        let (cfg, ckpt) = load(name);
        for plan in plans(&cfg) {
            let spec = GraphSpec::context_encoding(1, 8, 16, DType::F32);
            let graph = cfg.record(&plan, &spec).unwrap();
            let weight_inputs: Vec<_> = graph
                .inputs
                .iter()
                .filter(|i| matches!(i.role, InputRole::Weight { .. }))
                .collect();
            let names: Vec<String> = weight_inputs.iter().map(|i| i.name.clone()).collect();
            let declared: Vec<String> = graph.weights.iter().map(|d| d.name.clone()).collect();
            assert_eq!(names, declared, "{name} tp={}", plan.tp);
            for rank in 0..plan.tp {
                let w = shard_for_rank(&ckpt, &cfg, &plan, rank as usize, DType::F32).unwrap();
                assert_eq!(w.names().collect::<Vec<_>>(), names);
                for (input, shard) in weight_inputs.iter().zip(&w.tensors) {
                    assert_eq!(
                        shard.dims, input.ty.dims,
                        "{name} tp={} rank {rank} {}",
                        plan.tp, input.name
                    );
                    assert_eq!(shard.bytes.len() as i64, input.ty.byte_size());
                    let decl = graph.weights.iter().find(|d| d.name == input.name).unwrap();
                    assert_eq!(
                        decl.shape,
                        shard.dims.iter().map(|&d| d as usize).collect::<Vec<_>>()
                    );
                }
                assert_eq!(w.tensors.len(), weight_inputs.len());
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked,
        8 * (1 + 2 + 4),
        "every fixture shards at tp 1, 2 and 4"
    );
}

/// Rebuilds every HF tensor from all ranks' shards and checks the padding is zero.
fn check_reassembly(name: &str, plan: &ShardPlan, cfg: &Phi3Config, ckpt: &Checkpoint) {
    let t = plan.tp as usize;
    let ranks: Vec<RankWeights> = (0..plan.tp)
        .map(|r| shard_for_rank(ckpt, cfg, plan, r as usize, DType::F32).unwrap())
        .collect();
    let get = |r: usize, n: &str| f32s(ranks[r].get(n).unwrap());
    let (h, i, v, hd) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.vocab_size,
        cfg.head_dim,
    );
    let (nh, nkv, g) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.num_kv_groups(),
    );
    let (qr, kvr) = (
        plan.q_heads_per_rank as usize,
        plan.kv_heads_per_rank as usize,
    );
    let (hr, ir, vr) = (
        h / t,
        plan.intermediate_per_rank as usize,
        plan.vocab_per_rank as usize,
    );
    let ctx = format!("{name} tp={t}");

    // Embedding: columns split across ranks.
    let (_, embed) = hf(ckpt, "model.embed_tokens.weight");
    for r in 0..t {
        assert_eq!(
            get(r, "model.embed_tokens.weight"),
            cols(&embed, h, r * hr, (r + 1) * hr),
            "{ctx}"
        );
    }
    // lm_head: rows padded to V_pad, split in t.
    let lm_key = if cfg.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    let (_, lm) = hf(ckpt, lm_key);
    let lm_all: Vec<f32> = (0..t).flat_map(|r| get(r, "lm_head.weight")).collect();
    assert_eq!(&lm_all[..v * h], &lm[..], "{ctx} lm_head");
    assert!(
        lm_all[v * h..].iter().all(|&x| x == 0.0),
        "{ctx} lm_head padding"
    );
    assert_eq!(lm_all.len(), plan.vocab_padded as usize * h);
    assert_eq!(vr * t, plan.vocab_padded as usize);

    for key in ["model.norm.weight"] {
        for r in 0..t {
            assert_eq!(get(r, key), hf(ckpt, key).1);
        }
    }
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            let key = format!("{p}.{norm}.weight");
            for r in 0..t {
                assert_eq!(get(r, &key), hf(ckpt, &key).1, "{ctx} {key}");
            }
        }
        // qkv: every padded head block equals its source head, or is zero.
        let qkv_key = format!("{p}.self_attn.qkv_proj.weight");
        let (_, qkv) = hf(ckpt, &qkv_key);
        let hf_head = |block: usize, head: usize| {
            rows(&qkv, h, block + head * hd, block + (head + 1) * hd).to_vec()
        };
        let (k_base, v_base) = (nh * hd, (nh + nkv) * hd);
        let o_key = format!("{p}.self_attn.o_proj.weight");
        let (_, o) = hf(ckpt, &o_key);
        let mut q_seen = vec![0; nh];
        for r in 0..t {
            let shard = get(r, &qkv_key);
            assert_eq!(shard.len(), (qr + 2 * kvr) * hd * h);
            let block = |local: usize| rows(&shard, h, local * hd, (local + 1) * hd).to_vec();
            let o_shard = get(r, &o_key);
            for j in 0..qr {
                let global = r * qr + j;
                let o_cols = cols(&o_shard, qr * hd, j * hd, (j + 1) * hd);
                match plan.q_head_source[global] {
                    Some(s) => {
                        let s = s as usize;
                        q_seen[s] += 1;
                        assert_eq!(block(j), hf_head(0, s), "{ctx} rank {r} q head {j}");
                        assert_eq!(
                            o_cols,
                            cols(&o, nh * hd, s * hd, (s + 1) * hd),
                            "{ctx} o_proj"
                        );
                        // The KV head this query head reads on the rank is its HF KV head.
                        let local_kv = j / (qr / kvr);
                        assert_eq!(
                            block(qr + local_kv),
                            hf_head(k_base, s / g),
                            "{ctx} K of q head {s}"
                        );
                        assert_eq!(
                            block(qr + kvr + local_kv),
                            hf_head(v_base, s / g),
                            "{ctx} V of q head {s}"
                        );
                    }
                    None => {
                        assert!(block(j).iter().all(|&x| x == 0.0), "{ctx} padding q head");
                        assert!(
                            o_cols.iter().all(|&x| x == 0.0),
                            "{ctx} padding o_proj columns"
                        );
                    }
                }
            }
            for m in 0..kvr {
                let (k, vv) = (block(qr + m), block(qr + kvr + m));
                match plan.kv_head_source[r * kvr + m] {
                    Some(s) => {
                        assert_eq!(k, hf_head(k_base, s as usize), "{ctx} rank {r} K head {m}");
                        assert_eq!(vv, hf_head(v_base, s as usize), "{ctx} rank {r} V head {m}");
                    }
                    None => assert!(
                        k.iter().chain(&vv).all(|&x| x == 0.0),
                        "{ctx} padding KV head"
                    ),
                }
            }
        }
        assert!(
            q_seen.iter().all(|&n| n == 1),
            "{ctx}: every query head exactly once: {q_seen:?}"
        );

        // gate_up: [gate_r; up_r]; concatenating the ranks gives gate and up padded to I_pad.
        let gu_key = format!("{p}.mlp.gate_up_proj.weight");
        let (_, gu) = hf(ckpt, &gu_key);
        let (mut gate, mut up) = (Vec::new(), Vec::new());
        for r in 0..t {
            let s = get(r, &gu_key);
            gate.extend_from_slice(rows(&s, h, 0, ir));
            up.extend_from_slice(rows(&s, h, ir, 2 * ir));
        }
        assert_eq!(&gate[..i * h], rows(&gu, h, 0, i), "{ctx} gate");
        assert_eq!(&up[..i * h], rows(&gu, h, i, 2 * i), "{ctx} up");
        assert!(gate[i * h..].iter().chain(&up[i * h..]).all(|&x| x == 0.0));
        // down: columns padded to I_pad.
        let down_key = format!("{p}.mlp.down_proj.weight");
        let (_, down) = hf(ckpt, &down_key);
        let mut joined = vec![Vec::new(); h];
        for r in 0..t {
            let s = get(r, &down_key);
            for (row, chunk) in joined.iter_mut().zip(s.chunks_exact(ir)) {
                row.extend_from_slice(chunk);
            }
        }
        for (row, hf_row) in joined.iter().zip(down.chunks_exact(i)) {
            assert_eq!(&row[..i], hf_row, "{ctx} down");
            assert!(row[i..].iter().all(|&x| x == 0.0));
        }
    }
}

#[test]
fn shards_reassemble_into_the_hf_tensors() {
    for name in FIXTURES {
        let (cfg, ckpt) = load(name);
        for plan in plans(&cfg) {
            check_reassembly(name, &plan, &cfg, &ckpt);
        }
    }
}

#[test]
fn gqa_tp4_replicates_kv_heads() {
    let (cfg, ckpt) = load("gqa"); // 8 q heads, 2 KV heads
    let plan = cfg.plan(4).unwrap();
    assert_eq!(plan.strategy, KvStrategy::ReplicateToTpDegree);
    let (h, hd) = (cfg.hidden_size, cfg.head_dim);
    let (_, qkv) = hf(&ckpt, "model.layers.0.self_attn.qkv_proj.weight");
    let head = |row0: usize| rows(&qkv, h, row0, row0 + hd).to_vec();
    for r in 0..4 {
        let w = shard_for_rank(&ckpt, &cfg, &plan, r, DType::F32).unwrap();
        let s = f32s(w.get("model.layers.0.self_attn.qkv_proj.weight").unwrap());
        assert_eq!(s.len(), 4 * hd * h, "2 q heads + 1 K + 1 V per rank");
        let block = |b: usize| rows(&s, h, b * hd, (b + 1) * hd).to_vec();
        // Rank r holds query heads 2r, 2r+1 and KV head r / 2.
        assert_eq!(block(0), head(2 * r * hd));
        assert_eq!(block(1), head((2 * r + 1) * hd));
        assert_eq!(block(2), head((8 + r / 2) * hd));
        assert_eq!(block(3), head((8 + 2 + r / 2) * hd));
    }
}

#[test]
fn gqa_mha_convert_tp4_expands_kv_and_pads_the_tail() {
    let (cfg, ckpt) = load("gqa_mha_convert"); // 6 q heads, 3 KV heads
    let plan = cfg.plan(4).unwrap();
    assert_eq!(plan.strategy, KvStrategy::ConvertToMha);
    let (h, hd) = (cfg.hidden_size, cfg.head_dim);
    let (_, qkv) = hf(&ckpt, "model.layers.1.self_attn.qkv_proj.weight");
    let (_, o) = hf(&ckpt, "model.layers.1.self_attn.o_proj.weight");
    let head = |row0: usize| rows(&qkv, h, row0, row0 + hd).to_vec();
    for r in 0..4 {
        let w = shard_for_rank(&ckpt, &cfg, &plan, r, DType::F32).unwrap();
        let s = f32s(w.get("model.layers.1.self_attn.qkv_proj.weight").unwrap());
        let os = f32s(w.get("model.layers.1.self_attn.o_proj.weight").unwrap());
        assert_eq!(s.len(), 6 * hd * h, "2 q heads + 2 K + 2 V per rank");
        let block = |b: usize| rows(&s, h, b * hd, (b + 1) * hd).to_vec();
        if r < 3 {
            // Query heads 2r, 2r+1 both read HF KV head r (6 / 3 = 2 per group).
            for j in 0..2 {
                assert_eq!(block(j), head((2 * r + j) * hd));
                assert_eq!(block(2 + j), head((6 + r) * hd), "K");
                assert_eq!(block(4 + j), head((6 + 3 + r) * hd), "V");
            }
            assert_eq!(os, cols(&o, 6 * hd, 2 * r * hd, (2 * r + 2) * hd));
        } else {
            // Tail padding: heads 6 and 7 are zero everywhere.
            assert!(s.iter().all(|&x| x == 0.0));
            assert!(os.iter().all(|&x| x == 0.0));
        }
    }
}

#[test]
fn tied_lm_head_comes_from_embed_tokens() {
    for name in ["tied", "phi4_like"] {
        let (cfg, ckpt) = load(name);
        assert!(cfg.tie_word_embeddings);
        assert!(
            ckpt.tensor_meta("lm_head.weight").is_none(),
            "{name} stores no lm_head"
        );
        let d = decls(&cfg, &cfg.plan(1).unwrap(), DType::F32);
        assert!(!d
            .iter()
            .flat_map(|d| &d.parts)
            .any(|p| p.checkpoint_key == "lm_head.weight"));
        let (_, embed) = hf(&ckpt, "model.embed_tokens.weight");
        let plan = cfg.plan(2).unwrap();
        let h = cfg.hidden_size;
        let vr = plan.vocab_per_rank as usize;
        for r in 0..2 {
            let w = shard_for_rank(&ckpt, &cfg, &plan, r, DType::F32).unwrap();
            let lm = w.get("lm_head.weight").unwrap();
            assert_eq!(
                key_of(&decls(&cfg, &plan, DType::F32), "lm_head.weight"),
                "model.embed_tokens.weight"
            );
            assert_eq!(f32s(lm), rows(&embed, h, r * vr, (r + 1) * vr));
        }
    }
    // Untied: lm_head is its own tensor, different from the embedding.
    let (cfg, ckpt) = load("mha");
    let w = shard_for_rank(&ckpt, &cfg, &cfg.plan(1).unwrap(), 0, DType::F32).unwrap();
    assert_eq!(
        key_of(
            &decls(&cfg, &cfg.plan(1).unwrap(), DType::F32),
            "lm_head.weight"
        ),
        "lm_head.weight"
    );
    assert_ne!(
        w.get("lm_head.weight").unwrap().bytes,
        hf(&ckpt, "model.embed_tokens.weight")
            .1
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<_>>()
    );
}

#[test]
fn bf16_rounds_to_nearest_even() {
    let cases: [(u32, u16); 7] = [
        (0x3F80_0000, 0x3F80), // 1.0
        (0x3F80_8000, 0x3F80), // halfway, even below: stays
        (0x3F81_8000, 0x3F82), // halfway, odd below: rounds up
        (0x3F80_8001, 0x3F81), // above halfway
        (0x3F80_7FFF, 0x3F80), // below halfway
        (0xBF81_8000, 0xBF82), // negative halfway
        (0x7F7F_FFFF, 0x7F80), // f32::MAX overflows to +inf
    ];
    let input: Vec<u8> = cases.iter().flat_map(|(f, _)| f.to_le_bytes()).collect();
    let out = convert(&input, Dtype::F32, DType::BF16);
    let got: Vec<u16> = out
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(got, cases.iter().map(|c| c.1).collect::<Vec<_>>());
    // NaN stays NaN.
    let nan = convert(&f32::NAN.to_le_bytes(), Dtype::F32, DType::BF16);
    assert!(half::bf16::from_le_bytes([nan[0], nan[1]]).is_nan());
    // f16 → f32 is exact; bf16 → f32 is exact.
    let h = half::f16::from_f32(0.333);
    assert_eq!(
        convert(&h.to_le_bytes(), Dtype::F16, DType::F32),
        h.to_f32().to_le_bytes()
    );
    let b = half::bf16::from_f32(-2.75);
    assert_eq!(
        convert(&b.to_le_bytes(), Dtype::BF16, DType::F32),
        (-2.75f32).to_le_bytes()
    );
}

#[test]
fn bf16_shards_are_the_rounded_f32_shards() {
    let (cfg, ckpt) = load("gqa_mha_convert");
    let plan = cfg.plan(4).unwrap();
    let f = shard_for_rank(&ckpt, &cfg, &plan, 1, DType::F32).unwrap();
    let b = shard_for_rank(&ckpt, &cfg, &plan, 1, DType::BF16).unwrap();
    let mut rounded_differently = 0;
    for (ft, bt) in f.tensors.iter().zip(&b.tensors) {
        assert_eq!((&ft.name, &ft.dims), (&bt.name, &bt.dims));
        assert_eq!(bt.dtype, DType::BF16);
        assert_eq!(bt.bytes.len() * 2, ft.bytes.len());
        let expect: Vec<u8> = f32s(ft)
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(bt.bytes, expect, "{}", ft.name);
        // Truncation would differ from rounding on about half of the values.
        let truncated: Vec<u8> = ft
            .bytes
            .chunks_exact(4)
            .flat_map(|c| [c[2], c[3]])
            .collect();
        rounded_differently += bt
            .bytes
            .chunks(2)
            .zip(truncated.chunks(2))
            .filter(|(a, b)| a != b)
            .count();
    }
    assert!(rounded_differently > 0);
    assert!(matches!(
        shard_for_rank(&ckpt, &cfg, &plan, 0, DType::F16),
        Err(WeightsError::UnsupportedTarget(DType::F16))
    ));
}

/// Re-encodes every float tensor of a fixture in `dtype`.
fn recast(dtype: Dtype) -> impl FnOnce(&mut BTreeMap<String, Owned>) {
    move |tensors| {
        for t in tensors.values_mut() {
            let vals: Vec<f32> = t
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            t.data = match dtype {
                Dtype::BF16 => vals
                    .iter()
                    .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                    .collect(),
                Dtype::F16 => vals
                    .iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
                _ => unreachable!(),
            };
            t.dtype = dtype;
        }
    }
}

#[test]
fn half_precision_checkpoints_load() {
    let (cfg, f32_ckpt) = load("gqa");
    let plan = cfg.plan(2).unwrap();
    let reference = shard_for_rank(&f32_ckpt, &cfg, &plan, 1, DType::F32).unwrap();
    for (dtype, name) in [(Dtype::BF16, "bf16"), (Dtype::F16, "f16")] {
        let dir = edited_fixture("gqa", recast(dtype));
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        let widened = shard_for_rank(&ckpt, &cfg, &plan, 1, DType::F32).unwrap();
        let narrow = shard_for_rank(&ckpt, &cfg, &plan, 1, DType::BF16).unwrap();
        for ((r, w), n) in reference
            .tensors
            .iter()
            .zip(&widened.tensors)
            .zip(&narrow.tensors)
        {
            let expect: Vec<f32> = f32s(r)
                .iter()
                .map(|&x| match dtype {
                    Dtype::BF16 => half::bf16::from_f32(x).to_f32(),
                    _ => half::f16::from_f32(x).to_f32(),
                })
                .collect();
            assert_eq!(f32s(w), expect, "{name} {}", r.name);
            let expect_bf16: Vec<u8> = expect
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                .collect();
            assert_eq!(n.bytes, expect_bf16, "{name} {}", r.name);
        }
    }
}

fn open_err(dir: &Path) -> String {
    Checkpoint::open(dir).unwrap_err().to_string()
}

fn shard_err(name: &str, dir: &Path) -> WeightsError {
    let cfg = Phi3Config::from_file(&fixture_dir(name).join("config.json")).unwrap();
    let plan = cfg.plan(2).unwrap();
    let ckpt = Checkpoint::open(dir).unwrap();
    let err = shard_for_rank(&ckpt, &cfg, &plan, 0, DType::F32).unwrap_err();
    let err2 = write_files(&ckpt, &cfg, &plan, DType::F32, &dir.join("out")).unwrap_err();
    assert_eq!(err.to_string(), err2.to_string());
    assert!(!dir.join("out").exists(), "nothing written on error");
    err
}

#[test]
fn missing_tensor_names_the_tensor_and_the_file() {
    let key = "model.layers.1.mlp.down_proj.weight";
    let dir = edited_fixture("mha", |t| {
        t.remove(key);
    });
    let err = shard_err("mha", dir.path());
    assert!(matches!(err, WeightsError::MissingTensor { .. }), "{err:?}");
    let msg = err.to_string();
    let file = dir.path().join(SINGLE_FILE).display().to_string();
    assert!(msg.contains(key) && msg.contains(&file), "{msg}");
    // An untied model without lm_head.weight.
    let dir = edited_fixture("gqa", |t| {
        t.remove("lm_head.weight");
    });
    let msg = shard_err("gqa", dir.path()).to_string();
    assert!(
        msg.contains("`lm_head.weight`") && msg.contains(SINGLE_FILE),
        "{msg}"
    );
}

#[test]
fn wrong_shape_names_the_tensor_file_and_shapes() {
    let key = "model.layers.0.self_attn.qkv_proj.weight";
    let dir = edited_fixture("gqa", |t| {
        let q = t.get_mut(key).unwrap();
        // Drop the V rows: [(8 + 2 + 2) * 16, 128] → [(8 + 2) * 16, 128].
        q.shape = vec![160, 128];
        q.data.truncate(160 * 128 * 4);
    });
    let err = shard_err("gqa", dir.path());
    let msg = err.to_string();
    assert!(matches!(err, WeightsError::WrongShape { .. }), "{err:?}");
    let file = dir.path().join(SINGLE_FILE).display().to_string();
    assert!(msg.contains(key) && msg.contains(&file), "{msg}");
    assert!(
        msg.contains("[160, 128]") && msg.contains("expected [192, 128]"),
        "{msg}"
    );
}

#[test]
fn unsupported_dtype_names_the_tensor_and_file() {
    let key = "model.norm.weight";
    let dir = edited_fixture("mha", |t| {
        let n = t.get_mut(key).unwrap();
        n.dtype = Dtype::I32;
    });
    let msg = shard_err("mha", dir.path()).to_string();
    assert!(
        msg.contains(key) && msg.contains(SINGLE_FILE) && msg.contains("I32"),
        "{msg}"
    );
}

#[test]
fn truncated_files_name_the_file_and_tensor() {
    let dir = edited_fixture("mha", |_| {});
    let path = dir.path().join(SINGLE_FILE);
    let full = std::fs::read(&path).unwrap();
    let file = path.display().to_string();
    // Cut in the data section: the header names the tensor that no longer fits.
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(matches!(err, WeightsError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&file) && msg.contains("tensor `model.") && msg.contains("truncated"),
        "{msg}"
    );
    // Cut inside the header, and before the header length.
    for len in [100, 3, 0] {
        std::fs::write(&path, &full[..len]).unwrap();
        let msg = open_err(dir.path());
        assert!(
            msg.contains(&file) && msg.contains("truncated or corrupt"),
            "{len}: {msg}"
        );
    }
    // Garbage header and trailing bytes.
    let mut garbage = 16u64.to_le_bytes().to_vec();
    garbage.extend_from_slice(b"{not json at all");
    std::fs::write(&path, &garbage).unwrap();
    assert!(open_err(dir.path()).contains("invalid header"));
    let mut longer = full.clone();
    longer.extend_from_slice(&[0; 4]);
    std::fs::write(&path, &longer).unwrap();
    assert!(open_err(dir.path()).contains("4 unexpected bytes"));
    // A file truncated after it was opened: the read names file and tensor.
    std::fs::write(&path, &full).unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    // `model.norm.weight` sorts last, so its data is in the cut-off half.
    let err = match ckpt.read("model.norm.weight", DType::F32) {
        Ok(_) => panic!("reading a cut-off tensor must fail"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&file) && err.contains("model.norm.weight"),
        "{err}"
    );
}

/// Splits fixture `name` into two shard files with an index; returns the dir.
fn sharded(name: &str, index_text: impl FnOnce(&str) -> String) -> TempDir {
    let dir = testkit::tempdir(&format!("{name}-sharded"));
    let tensors = fixture_tensors(name);
    let (a, b) = (
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    );
    let mut first = BTreeMap::new();
    let mut second = BTreeMap::new();
    let mut map = serde_json::Map::new();
    for (k, t) in tensors {
        let file = if k.contains("layers.1") || k.starts_with("lm_head") {
            b
        } else {
            a
        };
        map.insert(k.clone(), file.into());
        if file == a {
            first.insert(k, t);
        } else {
            second.insert(k, t);
        }
    }
    write_st(&dir.path().join(a), &first);
    write_st(&dir.path().join(b), &second);
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.path().join(INDEX_FILE), index_text(&index.to_string())).unwrap();
    dir
}

#[test]
fn sharded_checkpoints_give_the_same_shards() {
    let dir = sharded("gqa", str::to_string);
    let sharded_ckpt = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(sharded_ckpt.files().len(), 2);
    let (cfg, single) = load("gqa");
    let plan = cfg.plan(4).unwrap();
    for rank in 0..4 {
        let a = shard_for_rank(&single, &cfg, &plan, rank, DType::BF16).unwrap();
        let b = shard_for_rank(&sharded_ckpt, &cfg, &plan, rank, DType::BF16).unwrap();
        assert_eq!(a, b);
    }
    // Opening the index file directly works too.
    assert!(Checkpoint::open(&dir.path().join(INDEX_FILE)).is_ok());
}

#[test]
fn index_pointing_at_a_missing_file_names_it() {
    let dir = sharded("mha", str::to_string);
    let missing = dir.path().join("model-00002-of-00002.safetensors");
    std::fs::remove_file(&missing).unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, WeightsError::MissingShardFile { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&missing.display().to_string()) && msg.contains(INDEX_FILE),
        "{msg}"
    );
    assert!(
        msg.contains("model.layers.1.") || msg.contains("lm_head.weight"),
        "{msg}"
    );
}

#[test]
fn index_entry_missing_from_its_shard_names_both() {
    let dir = sharded("mha", |text| {
        text.replace(
            "\"model.norm.weight\":\"model-00001",
            "\"model.norm.weight\":\"model-00002",
        )
    });
    let err = shard_err("mha", dir.path());
    let msg = err.to_string();
    assert!(matches!(err, WeightsError::MissingTensor { .. }), "{err:?}");
    assert!(
        msg.contains("model.norm.weight") && msg.contains("model-00002-of-00002.safetensors"),
        "{msg}"
    );
    assert!(msg.contains(INDEX_FILE), "{msg}");
    // A tensor absent from the weight_map names the index.
    let dir = sharded("mha", |text| {
        text.replace("\"model.norm.weight\"", "\"model.norm.weight.renamed\"")
    });
    let msg = shard_err("mha", dir.path()).to_string();
    assert!(
        msg.contains("`model.norm.weight`") && msg.contains(INDEX_FILE),
        "{msg}"
    );
}

#[test]
fn malformed_index_is_reported_with_its_path() {
    let cases: [(&str, &str); 5] = [
        ("{\"weight_map\": {", "invalid JSON"),
        ("[1, 2]", "no `weight_map`"),
        ("{\"weight_map\": [\"a\"]}", "not a JSON object"),
        (
            "{\"weight_map\": {\"model.norm.weight\": 3}}",
            "`model.norm.weight` is not a string",
        ),
        (
            "{\"weight_map\": {\"model.norm.weight\": \"../x.safetensors\"}}",
            "not a file name",
        ),
    ];
    for (text, what) in cases {
        let dir = sharded("mha", |_| text.to_string());
        std::fs::remove_file(dir.path().join("model-00001-of-00002.safetensors")).unwrap();
        let err = Checkpoint::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, WeightsError::MalformedIndex { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        let index = dir.path().join(INDEX_FILE).display().to_string();
        assert!(msg.contains(&index) && msg.contains(what), "{text}: {msg}");
    }
}

#[test]
fn other_bad_inputs_are_errors() {
    let empty = testkit::tempdir("empty");
    assert!(open_err(empty.path()).contains("no checkpoint found"));
    let missing = empty.path().join("nope.safetensors");
    assert!(open_err(&missing).contains("nope.safetensors"));
    let (cfg, ckpt) = load("mha");
    let plan = cfg.plan(2).unwrap();
    assert!(matches!(
        shard_for_rank(&ckpt, &cfg, &plan, 2, DType::F32),
        Err(WeightsError::BadRank { rank: 2, tp: 2 })
    ));
    // A plan made for another model: its rules do not fit this model's tensors, and the
    // recorder says which weight and where, before anything is read.
    let spec = GraphSpec::context_encoding(1, 8, 16, DType::F32);
    let (other, _) = load("gqa");
    let wrong = other.plan(2).unwrap();
    let err = cfg.record(&wrong, &spec).err().unwrap().to_string();
    assert!(
        err.contains("weight `") && err.contains("reads indices"),
        "{err}"
    );
    let mut broken = plan.clone();
    broken.q_head_source[0] = Some(99);
    let err = cfg.record(&broken, &spec).err().unwrap().to_string();
    assert!(
        err.contains("qkv_proj") && err.contains("1584..1600"),
        "{err}"
    );
    // A config whose shapes differ from the checkpoint.
    let (gqa_cfg, _) = load("gqa");
    let d = decls(&gqa_cfg, &gqa_cfg.plan(2).unwrap(), DType::F32);
    let err = weights::validate(&ckpt, &d, 2).unwrap_err();
    assert!(matches!(err, WeightsError::WrongShape { .. }), "{err}");
}

#[test]
fn rank_files_are_deterministic_and_reload() {
    let (cfg, ckpt) = load("phi4_like");
    let plan = cfg.plan(2).unwrap();
    let (a, b) = (testkit::tempdir("out-a"), testkit::tempdir("out-b"));
    for dtype in [DType::F32, DType::BF16] {
        let pa = write_files(&ckpt, &cfg, &plan, dtype, a.path()).unwrap();
        let pb = write_files(&ckpt, &cfg, &plan, dtype, b.path()).unwrap();
        assert_eq!(
            pa,
            vec![
                a.path().join("tp0.safetensors"),
                a.path().join("tp1.safetensors")
            ]
        );
        for (rank, (fa, fb)) in pa.iter().zip(&pb).enumerate() {
            let (ba, bb) = (std::fs::read(fa).unwrap(), std::fs::read(fb).unwrap());
            assert_eq!(ba, bb, "identical bytes for rank {rank}");
            let st = SafeTensors::deserialize(&ba).unwrap();
            let shards = shard_for_rank(&ckpt, &cfg, &plan, rank, dtype).unwrap();
            assert_eq!(st.len(), shards.tensors.len());
            for t in &shards.tensors {
                let view = st.tensor(&t.name).unwrap();
                let want = if dtype == DType::F32 {
                    Dtype::F32
                } else {
                    Dtype::BF16
                };
                assert_eq!(view.dtype(), want);
                assert_eq!(
                    view.shape().iter().map(|&d| d as i64).collect::<Vec<_>>(),
                    t.dims
                );
                assert_eq!(view.data(), &t.bytes[..], "{}", t.name);
            }
        }
        // Overwriting in place keeps the bytes and leaves no temporary files.
        write_files(&ckpt, &cfg, &plan, dtype, a.path()).unwrap();
        let names: Vec<String> = std::fs::read_dir(a.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
