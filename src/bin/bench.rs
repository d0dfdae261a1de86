//! `bench`: the project's benchmarks (graph-build speed and memory, execution on the PJRT CPU
//! plugin, decode-graph analysis). `tools/bench` builds the release binaries and runs
//! `bench all`, which starts every measurement in a fresh child process (of this binary, or of
//! `build-graphs`), writes `target/bench/results.json` and regenerates `BENCHMARKS.md` above its
//! hand-written analysis section.
//!
//! The subcommands other than `all` and `report` are the children: each does one measurement
//! and prints one JSON object on stdout.

use clap::{Parser, Subcommand};
use phi3_neuron::dsl::DType;
use phi3_neuron::models::phi3::graph::{record, GraphOptions, InputRole, RecordedGraph};
use phi3_neuron::models::phi3::runner::element_type;
use phi3_neuron::models::phi3::{GraphSpec, Phi3Config, ShardPlan};
use phi3_neuron::neuron::graphset::lower_recorded;
use pjrt_runtime::{Arg, Buffer, Client, ClientOptions, CompileOptions, LoadedExecutable, Plugin};
use prost::Message;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Phi-3 graph-build and CPU execution benchmarks (see tools/bench)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Every measurement, each in fresh processes; writes results.json and BENCHMARKS.md.
    All {
        /// Fresh-process runs per graph-build configuration (median, min and max reported).
        #[arg(long, default_value_t = 7)]
        runs: usize,
        /// Timed decode steps per configuration (after warm-up).
        #[arg(long, default_value_t = 30)]
        decode_steps: usize,
        /// Timed prefill calls per configuration (after warm-up).
        #[arg(long, default_value_t = 10)]
        prefill_runs: usize,
        /// Folder for results.json, the HLO dumps and scratch graph output.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// The report to (re)generate.
        #[arg(long, default_value = "BENCHMARKS.md")]
        report: PathBuf,
        /// Skip the PJRT execution benchmarks (graph building only).
        #[arg(long)]
        no_exec: bool,
        /// The command line that started the run, recorded in the report.
        #[arg(long, default_value = "tools/bench")]
        invoked_as: String,
    },
    /// Regenerates BENCHMARKS.md from an existing results.json.
    Report {
        #[arg(long, default_value = "target/bench/results.json")]
        results: PathBuf,
        #[arg(long, default_value = "BENCHMARKS.md")]
        report: PathBuf,
    },
    /// Child: records, optimises, lowers and serialises one graph set in this process.
    BuildSet {
        #[arg(long)]
        model: String,
        #[arg(long)]
        tp: i64,
        #[arg(long)]
        layers: Option<usize>,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "128,256,512,1024,2048,4096"
        )]
        buckets: Vec<i64>,
        /// Graphs built at once (default: available cores, as build-graphs).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Child: XLA compile, prefill and decode of the random mid-size model on the CPU plugin.
    Exec {
        #[arg(long, default_value_t = 1)]
        tp: i64,
        /// Decode batch sizes.
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        batches: Vec<i64>,
        /// Decode cache length (the decode step writes position cache_len - 1).
        #[arg(long, default_value_t = 512)]
        cache_len: i64,
        /// Prefill bucket (0: no prefill).
        #[arg(long, default_value_t = 128)]
        prefill: i64,
        #[arg(long, default_value_t = 30)]
        decode_steps: usize,
        #[arg(long, default_value_t = 10)]
        prefill_runs: usize,
        /// Graph options for every graph of the run: neuron (`GraphOptions::default()`, NxD's
        /// forms) or cpu (`GraphOptions::cpu()`: weight-first matmuls, dynamic-update-slice
        /// cache writes).
        #[arg(long, default_value = "neuron")]
        preset: String,
    },
    /// Child: host memory copy and read bandwidth.
    Membw {
        /// Buffer size in MiB (well above the last-level cache).
        #[arg(long, default_value_t = 1024)]
        mib: usize,
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::All {
            runs,
            decode_steps,
            prefill_runs,
            out,
            report,
            no_exec,
            invoked_as,
        } => run_all(&AllArgs {
            runs,
            decode_steps,
            prefill_runs,
            out,
            report,
            no_exec,
            invoked_as,
        }),
        Cmd::Report { results, report } => regenerate_report(&results, &report),
        Cmd::BuildSet {
            model,
            tp,
            layers,
            buckets,
            jobs,
        } => build_set(&model, tp, layers, &buckets, jobs).map(print_json),
        Cmd::Exec {
            tp,
            batches,
            cache_len,
            prefill,
            decode_steps,
            prefill_runs,
            preset,
        } => exec_bench(&ExecArgs {
            tp,
            batches,
            cache_len,
            prefill,
            decode_steps,
            prefill_runs,
            preset,
        })
        .map(print_json),
        Cmd::Membw { mib, reps } => {
            print_json(memory_bandwidth(mib, reps));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(v: Value) {
    println!("{v}");
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `{median, min, max, runs}` of a sample.
fn summary(xs: &[f64]) -> Value {
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!({ "median": median(xs), "min": min, "max": max, "runs": xs })
}

/// Peak resident set size of this process (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64().unwrap_or(f64::NAN)
}

fn text(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => "n/a".into(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Child: graph building
// ---------------------------------------------------------------------------------------------

/// One graph through exactly the stages `graphset::build_graph` times: record (the DSL, ending
/// in IR verification), optimise (CSE + DCE), lower (IR to `HloModuleProto`) and serialise
/// (protobuf encoding). Nothing is written to disk.
fn build_one(cfg: &Phi3Config, plan: &ShardPlan, spec: &GraphSpec) -> Result<Value, String> {
    let t0 = Instant::now();
    let mut recorded = record(cfg, plan, spec).map_err(|e| e.to_string())?;
    let t1 = Instant::now();
    phi3_neuron::ir::passes::optimize(&mut recorded.graph);
    let t2 = Instant::now();
    let proto = lower_recorded(&recorded.graph).map_err(|e| e.to_string())?;
    let t3 = Instant::now();
    let bytes = proto.encode_to_vec();
    let t4 = Instant::now();
    let instructions: usize = proto
        .computations
        .iter()
        .map(|c| c.instructions.len())
        .sum();
    Ok(json!({
        "graph": spec.name(),
        "record_ms": ms(t1 - t0),
        "optimize_ms": ms(t2 - t1),
        "lower_ms": ms(t3 - t2),
        "serialize_ms": ms(t4 - t3),
        "total_ms": ms(t4 - t0),
        "instructions": instructions,
        "proto_bytes": bytes.len(),
    }))
}

/// The default set of `build-graphs` (a context-encoding and a token-generation graph per
/// bucket, batch 1, bf16), built `jobs` at a time as `build-graphs` does.
fn build_set(
    model: &str,
    tp: i64,
    layers: Option<usize>,
    buckets: &[i64],
    jobs: Option<usize>,
) -> Result<Value, String> {
    let start = Instant::now();
    let mut cfg = Phi3Config::resolve(model).map_err(|e| e.to_string())?;
    if let Some(n) = layers {
        cfg = cfg.with_layers(n);
    }
    let plan = ShardPlan::new(&cfg, tp).map_err(|e| e.to_string())?;
    let mut specs: Vec<GraphSpec> = buckets
        .iter()
        .map(|&b| GraphSpec::context_encoding(1, b, b, DType::BF16))
        .collect();
    specs.extend(
        buckets
            .iter()
            .map(|&b| GraphSpec::token_generation(1, b, DType::BF16)),
    );
    let jobs = jobs
        .unwrap_or_else(phi3_neuron::neuron::graphset::default_jobs)
        .clamp(1, specs.len().max(1));
    let set_start = Instant::now();
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<Value, String>>>> = Mutex::new(vec![None; specs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = {
                    let mut n = next.lock().expect("no panics while locked");
                    *n += 1;
                    *n - 1
                };
                let Some(spec) = specs.get(i) else { break };
                let r = build_one(&cfg, &plan, spec);
                results.lock().expect("no panics while locked")[i] = Some(r);
            });
        }
    });
    let set_ms = ms(set_start.elapsed());
    let graphs = results
        .into_inner()
        .expect("no panics while locked")
        .into_iter()
        .map(|r| r.expect("every graph was built"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "model": model,
        "tp": tp,
        "layers": cfg.num_hidden_layers,
        "jobs": jobs,
        "set_ms": set_ms,
        "main_ms": ms(start.elapsed()),
        "peak_rss_kib": peak_rss_kib(),
        "graphs": graphs,
    }))
}

// ---------------------------------------------------------------------------------------------
// Child: execution on the PJRT CPU plugin
// ---------------------------------------------------------------------------------------------

/// The mid-size random model of the execution benchmarks (Phi-3 layout, plain RoPE, no
/// sliding window).
const BENCH_MODEL_JSON: &str = r#"{
  "model_type": "phi3",
  "hidden_size": 1024,
  "intermediate_size": 2816,
  "num_hidden_layers": 8,
  "num_attention_heads": 16,
  "num_key_value_heads": 16,
  "vocab_size": 32064,
  "max_position_embeddings": 4096,
  "original_max_position_embeddings": 4096,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "rope_scaling": null,
  "sliding_window": null,
  "tie_word_embeddings": false,
  "hidden_act": "silu",
  "bos_token_id": 1,
  "eos_token_id": 32000,
  "pad_token_id": 32000
}"#;

fn bench_model() -> Result<Phi3Config, String> {
    Phi3Config::from_json_str(BENCH_MODEL_JSON, "bench-mid-1024x8").map_err(|e| e.to_string())
}

struct ExecArgs {
    tp: i64,
    batches: Vec<i64>,
    cache_len: i64,
    prefill: i64,
    decode_steps: usize,
    prefill_runs: usize,
    preset: String,
}

/// A deterministic pseudo-random stream (64-bit LCG, Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn new(seed: u64) -> Lcg {
        Lcg(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Uniform in [-1, 1).
    fn next_unit(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// FNV-1a, to seed each tensor from its name.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Random f32 bytes for one weight input: norms are 1, everything else uniform with standard
/// deviation 0.02 (half-width 0.02 * sqrt(3)).
fn random_weight(name: &str, rank: usize, count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * 4);
    if name.contains("norm") {
        for _ in 0..count {
            out.extend_from_slice(&1.0f32.to_le_bytes());
        }
        return out;
    }
    let mut rng = Lcg::new(fnv1a(name) ^ (rank as u64).wrapping_mul(0x5851_F42D_4C95_7F2D));
    let half_width = 0.02 * 3f32.sqrt();
    for _ in 0..count {
        out.extend_from_slice(&(rng.next_unit() * half_width).to_le_bytes());
    }
    out
}

struct Compiled {
    graph: RecordedGraph,
    exe: LoadedExecutable,
    record_lower_ms: f64,
    compile_ms: f64,
    hlo_instructions: usize,
}

fn compile_graph(
    client: &Client,
    cfg: &Phi3Config,
    plan: &ShardPlan,
    spec: &GraphSpec,
) -> Result<Compiled, String> {
    let t0 = Instant::now();
    let mut graph = record(cfg, plan, spec).map_err(|e| e.to_string())?;
    phi3_neuron::ir::passes::optimize(&mut graph.graph);
    let module = lower_recorded(&graph.graph).map_err(|e| e.to_string())?;
    let t1 = Instant::now();
    let exe = client
        .compile(&module, &CompileOptions::replicas(plan.tp))
        .map_err(|e| format!("{}: {e}", spec.name()))?;
    let t2 = Instant::now();
    Ok(Compiled {
        graph,
        exe,
        record_lower_ms: ms(t1 - t0),
        compile_ms: ms(t2 - t1),
        hlo_instructions: module
            .computations
            .iter()
            .map(|c| c.instructions.len())
            .sum(),
    })
}

fn weight_names(g: &RecordedGraph) -> Vec<&str> {
    g.inputs
        .iter()
        .filter(|i| matches!(i.role, InputRole::Weight { .. }))
        .map(|i| i.name.as_str())
        .collect()
}

/// The device address of a buffer (`PJRT_Buffer_UnsafePointer`), to check that a donated cache
/// comes back in the same memory; `None` when the plugin lacks the entry point or fails.
fn device_address(plugin: &Plugin, buffer: &Buffer) -> Option<usize> {
    use pjrt_runtime::sys;
    let offset = std::mem::offset_of!(sys::PJRT_Api, PJRT_Buffer_UnsafePointer);
    if offset + std::mem::size_of::<usize>() > plugin.api_struct_size() {
        return None;
    }
    // SAFETY: the slot lies within the plugin's function table (checked above); the argument
    // struct is fully initialised and the buffer is live for the call.
    unsafe {
        let f = (*plugin.raw_api()).PJRT_Buffer_UnsafePointer?;
        let mut args: sys::PJRT_Buffer_UnsafePointer_Args = std::mem::zeroed();
        args.struct_size = std::mem::size_of::<sys::PJRT_Buffer_UnsafePointer_Args>();
        args.buffer = buffer.as_raw();
        let err = f(&mut args);
        if !err.is_null() {
            if let Some(destroy) = (*plugin.raw_api()).PJRT_Error_Destroy {
                let mut d: sys::PJRT_Error_Destroy_Args = std::mem::zeroed();
                d.struct_size = std::mem::size_of::<sys::PJRT_Error_Destroy_Args>();
                d.error = err;
                destroy(&mut d);
            }
            return None;
        }
        Some(args.buffer_pointer)
    }
}

/// One call's wall time, rank 0's logits and every rank's new caches.
type StepResult = (Duration, Vec<f32>, Vec<Vec<Buffer>>);

struct Session<'a> {
    client: &'a Client,
    tp: usize,
    /// `[rank][weight]`, in the graphs' (shared) weight order.
    weights: Vec<Vec<Buffer>>,
}

impl Session<'_> {
    fn zero_caches(&self, g: &RecordedGraph) -> Result<Vec<Vec<Buffer>>, String> {
        let mut all = Vec::new();
        for rank in 0..self.tp {
            let mut caches = Vec::new();
            for input in &g.inputs {
                if let InputRole::KvCache { .. } = input.role {
                    let bytes = vec![0u8; input.ty.byte_size() as usize];
                    caches.push(
                        self.client
                            .buffer_from_host(
                                &bytes,
                                element_type(input.ty.dtype),
                                &input.ty.dims,
                                rank,
                            )
                            .map_err(|e| e.to_string())?,
                    );
                }
            }
            all.push(caches);
        }
        Ok(all)
    }

    /// One call on every rank, timed end to end as a serving loop sees it: uploading ids and
    /// positions, executing, and reading rank 0's logits back. Returns the new caches.
    fn step(
        &self,
        c: &Compiled,
        ids: &[i32],
        pos: &[i32],
        dims: &[i64],
        caches: Vec<Vec<Buffer>>,
    ) -> Result<StepResult, String> {
        let t0 = Instant::now();
        let e = |e: pjrt_runtime::Error| e.to_string();
        let mut per_rank = Vec::with_capacity(self.tp);
        for rank in 0..self.tp {
            let i = self.client.buffer_from_slice(ids, dims, rank).map_err(e)?;
            let p = self.client.buffer_from_slice(pos, dims, rank).map_err(e)?;
            let r = self
                .client
                .buffer_from_scalar(rank as i32, rank)
                .map_err(e)?;
            per_rank.push((i, p, r));
        }
        let mut args = Vec::with_capacity(self.tp);
        for (rank, rank_caches) in caches.into_iter().enumerate() {
            let (i, p, r) = &per_rank[rank];
            let mut weights = self.weights[rank].iter();
            let mut caches = rank_caches.into_iter();
            let mut list = Vec::new();
            for input in &c.graph.inputs {
                list.push(match input.role {
                    InputRole::InputIds => Arg::Borrow(i),
                    InputRole::PositionIds => Arg::Borrow(p),
                    InputRole::Weight { .. } => {
                        Arg::Borrow(weights.next().ok_or("fewer weights than inputs")?)
                    }
                    InputRole::Rank => Arg::Borrow(r),
                    InputRole::KvCache { .. } => {
                        Arg::Donate(caches.next().ok_or("fewer caches than inputs")?)
                    }
                });
            }
            args.push(list);
        }
        let outputs = c.exe.execute(args).map_err(e)?;
        let logits = outputs[0][0].to_vec::<f32>().map_err(e)?;
        let elapsed = t0.elapsed();
        if logits.iter().any(|x| !x.is_finite()) {
            return Err(format!("{}: non-finite logits", c.graph.spec.name()));
        }
        let caches = outputs.into_iter().map(|mut o| o.split_off(1)).collect();
        Ok((elapsed, logits, caches))
    }
}

fn exec_bench(a: &ExecArgs) -> Result<Value, String> {
    let options = match a.preset.as_str() {
        "neuron" => GraphOptions::default(),
        "cpu" => GraphOptions::cpu(),
        other => return Err(format!("--preset must be neuron or cpu, got `{other}`")),
    };
    let cfg = bench_model()?;
    let plan = ShardPlan::new(&cfg, a.tp).map_err(|e| e.to_string())?;
    let plugin = Plugin::from_env().map_err(|e| e.to_string())?;
    let client = Client::new(
        &plugin,
        &ClientOptions {
            cpu_device_count: Some(a.tp),
        },
    )
    .map_err(|e| e.to_string())?;
    let tp = a.tp as usize;

    // Compile every graph first (XLA compile time per graph).
    let mut specs = Vec::new();
    if a.prefill > 0 {
        specs.push(GraphSpec::context_encoding(
            1,
            a.prefill,
            a.cache_len.max(a.prefill),
            DType::F32,
        ));
    }
    for &b in &a.batches {
        specs.push(GraphSpec::token_generation(b, a.cache_len, DType::F32));
    }
    for spec in &mut specs {
        spec.options = options.clone();
    }
    let mut compiled = Vec::new();
    for spec in &specs {
        compiled.push(compile_graph(&client, &cfg, &plan, spec)?);
    }
    let names = weight_names(&compiled[0].graph);
    if compiled.iter().any(|c| weight_names(&c.graph) != names) {
        return Err("the graphs disagree on their weight inputs".into());
    }

    // Random weights, generated per rank from the graph's own weight shapes, then uploaded.
    let t_weights = Instant::now();
    let mut weights = Vec::with_capacity(tp);
    let mut weight_bytes_per_rank = Vec::with_capacity(tp);
    let mut embed_bytes_per_rank = Vec::with_capacity(tp);
    for rank in 0..tp {
        let mut bufs = Vec::new();
        let (mut total, mut embed) = (0u64, 0u64);
        for input in &compiled[0].graph.inputs {
            let InputRole::Weight { key, .. } = &input.role else {
                continue;
            };
            let count = input.ty.dims.iter().product::<i64>() as usize;
            let bytes = random_weight(&input.name, rank, count);
            total += bytes.len() as u64;
            if key == "model.embed_tokens.weight" && input.name == key.as_str() {
                embed += bytes.len() as u64;
            }
            bufs.push(
                client
                    .buffer_from_host(&bytes, element_type(input.ty.dtype), &input.ty.dims, rank)
                    .map_err(|e| e.to_string())?,
            );
        }
        weights.push(bufs);
        weight_bytes_per_rank.push(total);
        embed_bytes_per_rank.push(embed);
    }
    let weights_ms = ms(t_weights.elapsed());
    let session = Session {
        client: &client,
        tp,
        weights,
    };
    let mut rng = Lcg::new(7);
    let mut token = || ((rng.next_unit() + 1.0) * 0.5 * (cfg.vocab_size as f32 - 1.0)) as i32;

    let mut result = json!({
        "tp": a.tp,
        "model": {
            "hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers,
            "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads,
            "intermediate": cfg.intermediate_size, "vocab": cfg.vocab_size, "dtype": "f32",
        },
        "preset": a.preset,
        "graph_options": {
            "linear": format!("{:?}", options.linear),
            "decode_cache_write": format!("{:?}", options.decode_cache_write),
        },
        "cache_len": a.cache_len,
        "weight_bytes_per_rank": weight_bytes_per_rank,
        "embedding_bytes_per_rank": embed_bytes_per_rank,
        "weights_generate_upload_ms": weights_ms,
        "compile": compiled.iter().map(|c| json!({
            "graph": c.graph.spec.name(),
            "record_lower_ms": c.record_lower_ms,
            "xla_compile_ms": c.compile_ms,
            "hlo_instructions": c.hlo_instructions,
        })).collect::<Vec<_>>(),
    });

    let mut compiled = compiled.into_iter();
    if a.prefill > 0 {
        let c = compiled.next().expect("prefill graph compiled");
        let s = a.prefill as usize;
        let ids: Vec<i32> = (0..s).map(|_| token()).collect();
        let pos: Vec<i32> = (0..s as i32).collect();
        let mut times = Vec::new();
        for i in 0..a.prefill_runs + 2 {
            let caches = session.zero_caches(&c.graph)?;
            let (t, _, _) = session.step(&c, &ids, &pos, &[1, a.prefill], caches)?;
            if i >= 2 {
                times.push(ms(t));
            }
        }
        let med = median(&times);
        result["prefill"] = json!({
            "graph": c.graph.spec.name(),
            "tokens": s,
            "ms": summary(&times),
            "tokens_per_s": s as f64 / (med / 1e3),
        });
    }

    let mut decode = Vec::new();
    for c in compiled {
        let b = c.graph.spec.batch;
        let n = b as usize;
        let mut caches = session.zero_caches(&c.graph)?;
        let before: Vec<Option<usize>> = caches[0]
            .iter()
            .map(|buf| device_address(&plugin, buf))
            .collect();
        let pos = vec![(a.cache_len - 1) as i32; n];
        let mut times = Vec::new();
        let mut in_place = None;
        let mut last_logits = Vec::new();
        for i in 0..a.decode_steps + 3 {
            let ids: Vec<i32> = (0..n).map(|_| token()).collect();
            let (t, logits, next) = session.step(&c, &ids, &pos, &[b, 1], caches)?;
            caches = next;
            last_logits = logits;
            if i == 0 {
                let after: Vec<Option<usize>> = caches[0]
                    .iter()
                    .map(|buf| device_address(&plugin, buf))
                    .collect();
                if before.iter().all(Option::is_some) {
                    in_place = Some(before == after);
                }
            }
            if i >= 3 {
                times.push(ms(t));
            }
        }
        let med = median(&times);
        // Bytes each step must read at least once: every weight but the embedding table (a
        // gather reads b rows of it), plus the whole KV cache that attention reads.
        let hidden_per_rank = plan.hidden_per_rank as u64;
        let weight_read: u64 = (0..tp)
            .map(|r| weight_bytes_per_rank[r] - embed_bytes_per_rank[r])
            .sum::<u64>()
            + tp as u64 * b as u64 * hidden_per_rank * 4;
        let kv_read: u64 = c
            .graph
            .inputs
            .iter()
            .filter(|i| matches!(i.role, InputRole::KvCache { .. }))
            .map(|i| i.ty.byte_size() as u64)
            .sum::<u64>()
            * tp as u64;
        decode.push(json!({
            "graph": c.graph.spec.name(),
            "batch": b,
            "position": a.cache_len - 1,
            "step_ms": summary(&times),
            "ms_per_token": med,
            "tokens_per_s": b as f64 / (med / 1e3),
            "weight_bytes_read_per_step": weight_read,
            "kv_bytes_read_per_step": kv_read,
            "caches_updated_in_place": in_place,
            // To compare graph variants: the same token stream must give the same logits.
            "last_logits_head": &last_logits[..4.min(last_logits.len())],
            "last_logits_sum": last_logits.iter().map(|&x| x as f64).sum::<f64>(),
        }));
    }
    result["decode"] = Value::Array(decode);
    result["peak_rss_kib"] = json!(peak_rss_kib());
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Child: memory bandwidth
// ---------------------------------------------------------------------------------------------

/// Host memory bandwidth on buffers far larger than the caches: `copy` (memcpy; bytes read plus
/// bytes written per second, STREAM's convention) and `read` (a sum over the buffer), each with
/// one thread and with every core. Best of `reps`.
fn memory_bandwidth(mib: usize, reps: usize) -> Value {
    let words = (mib << 20) / 8;
    let bytes = (words * 8) as f64;
    let src: Vec<u64> = (0..words as u64).collect();
    let mut dst = vec![1u64; words];
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut out = serde_json::Map::new();
    for t in [1, threads] {
        let chunk = words.div_ceil(t);
        let (mut copy, mut read) = (Vec::new(), Vec::new());
        for _ in 0..reps.max(1) {
            let start = Instant::now();
            std::thread::scope(|s| {
                for (d, sv) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                    s.spawn(move || d.copy_from_slice(sv));
                }
            });
            copy.push(2.0 * bytes / start.elapsed().as_secs_f64() / 1e9);
            std::hint::black_box(&dst);

            let start = Instant::now();
            let sum = std::thread::scope(|s| {
                let handles: Vec<_> = src
                    .chunks(chunk)
                    .map(|c| s.spawn(move || c.iter().fold(0u64, |a, &w| a.wrapping_add(w))))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("no panic"))
                    .fold(0u64, u64::wrapping_add)
            });
            read.push(bytes / start.elapsed().as_secs_f64() / 1e9);
            std::hint::black_box(sum);
        }
        let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        out.insert(
            format!("threads_{t}"),
            json!({
                "threads": t,
                "copy_gb_s": best(&copy),
                "read_gb_s": best(&read),
                "copy_gb_s_median": median(&copy),
                "read_gb_s_median": median(&read),
            }),
        );
    }
    json!({
        "buffer_mib": mib,
        "reps": reps,
        "threads_max": threads,
        "results": Value::Object(out),
    })
}

// ---------------------------------------------------------------------------------------------
// Orchestration: `bench all`
// ---------------------------------------------------------------------------------------------

struct AllArgs {
    runs: usize,
    decode_steps: usize,
    prefill_runs: usize,
    out: PathBuf,
    report: PathBuf,
    no_exec: bool,
    invoked_as: String,
}

/// The graph-build configurations of the report: (embedded model, tp).
const BUILD_CONFIGS: &[(&str, i64)] = &[
    ("phi-3-mini-4k", 1),
    ("phi-3-mini-4k", 8),
    ("phi-3-mini-4k", 32),
    ("phi-3-medium-128k", 8),
    ("phi-4-mini", 8),
];
const LAYER_COUNTS: &[usize] = &[2, 8, 32];
/// The graph presets of the execution benchmarks: `GraphOptions::default()` (NxD's forms, what
/// Neuron graphs use) and `GraphOptions::cpu()` (what the `phi3` CPU runner uses).
const PRESETS: [&str; 2] = ["neuron", "cpu"];
const BUCKETS: &[i64] = &[128, 256, 512, 1024, 2048, 4096];
const GNU_TIME: &str = "/usr/bin/time";
/// Where the analysis section of BENCHMARKS.md starts; everything from here on is kept.
const ANALYSIS_MARKER: &str =
    "<!-- hand-written analysis below: tools/bench keeps everything from this line on -->";

/// One child process: its stdout, its wall time seen from here and, when `/usr/bin/time -v`
/// wrapped it, its peak RSS and CPU time.
struct ChildRun {
    stdout: String,
    wall_ms: f64,
    max_rss_kib: Option<u64>,
    cpu_s: Option<f64>,
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    &s[start..]
}

fn run_child(program: &Path, args: &[String], env: &[(&str, String)]) -> Result<ChildRun, String> {
    let timed = Path::new(GNU_TIME).is_file();
    let mut cmd = if timed {
        let mut c = Command::new(GNU_TIME);
        c.arg("-v").arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    let wall_ms = ms(start.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "`{} {}` failed ({}):\n{}",
            program.display(),
            args.join(" "),
            out.status,
            tail(&stderr, 3000)
        ));
    }
    let field = |name: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let seconds = |name: &str| field(name).and_then(|v| v.parse::<f64>().ok());
    Ok(ChildRun {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        wall_ms,
        max_rss_kib: field("Maximum resident set size (kbytes):").and_then(|v| v.parse().ok()),
        cpu_s: seconds("User time (seconds):")
            .zip(seconds("System time (seconds):"))
            .map(|(u, s)| u + s),
    })
}

fn parse_json(run: &ChildRun) -> Result<Value, String> {
    let line = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| format!("no JSON in child output:\n{}", tail(&run.stdout, 2000)))?;
    serde_json::from_str(line).map_err(|e| format!("bad child JSON: {e}"))
}

/// A command to repeat in fresh processes.
struct Task {
    label: String,
    program: PathBuf,
    args: Vec<String>,
}

impl Task {
    fn new(label: String, program: &Path, args: &[&str]) -> Task {
        Task {
            label,
            program: program.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn command_line(&self) -> String {
        let name = self
            .program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("target/release/{name} {}", self.args.join(" "))
    }
}

/// Runs every task `runs` times, round-robin (so slow drift in machine load spreads evenly).
fn repeat(tasks: &[Task], runs: usize) -> Result<Vec<Vec<ChildRun>>, String> {
    let mut all: Vec<Vec<ChildRun>> = tasks.iter().map(|_| Vec::new()).collect();
    for r in 0..runs {
        for (t, task) in tasks.iter().enumerate() {
            eprintln!("bench: [{}/{runs}] {}", r + 1, task.label);
            all[t].push(run_child(&task.program, &task.args, &[])?);
        }
    }
    Ok(all)
}

fn opt_summary(xs: &[Option<f64>]) -> Value {
    let v: Vec<f64> = xs.iter().flatten().copied().collect();
    if v.is_empty() {
        Value::Null
    } else {
        summary(&v)
    }
}

/// Medians over fresh-process runs of `bench build-set`.
fn aggregate_build_set(task: &Task, runs: &[ChildRun]) -> Result<Value, String> {
    let parsed = runs.iter().map(parse_json).collect::<Result<Vec<_>, _>>()?;
    let first = &parsed[0];
    let col = |f: &dyn Fn(&Value) -> f64| parsed.iter().map(f).collect::<Vec<f64>>();
    let graphs = first["graphs"].as_array().cloned().unwrap_or_default();
    let mut per_graph = Vec::new();
    for (i, g) in graphs.iter().enumerate() {
        let stage = |k: &str| {
            median(&col(&|p: &Value| {
                p["graphs"][i][k].as_f64().unwrap_or(f64::NAN)
            }))
        };
        per_graph.push(json!({
            "graph": g["graph"],
            "instructions": g["instructions"],
            "proto_bytes": g["proto_bytes"],
            "total_ms": stage("total_ms"),
            "record_ms": stage("record_ms"),
            "optimize_ms": stage("optimize_ms"),
            "lower_ms": stage("lower_ms"),
            "serialize_ms": stage("serialize_ms"),
        }));
    }
    let sum_of = |k: &'static str| {
        col(&move |p: &Value| {
            p["graphs"]
                .as_array()
                .map(|gs| gs.iter().filter_map(|g| g[k].as_f64()).sum())
                .unwrap_or(f64::NAN)
        })
    };
    Ok(json!({
        "model": first["model"],
        "tp": first["tp"],
        "layers": first["layers"],
        "jobs": first["jobs"],
        "command": task.command_line(),
        "runs": runs.len(),
        "set_ms": summary(&col(&|p: &Value| p["set_ms"].as_f64().unwrap_or(f64::NAN))),
        "sum_graph_ms": summary(&sum_of("total_ms")),
        "stage_sums_ms": {
            "record": median(&sum_of("record_ms")),
            "optimize": median(&sum_of("optimize_ms")),
            "lower": median(&sum_of("lower_ms")),
            "serialize": median(&sum_of("serialize_ms")),
        },
        "process_wall_ms": summary(&runs.iter().map(|r| r.wall_ms).collect::<Vec<_>>()),
        "process_cpu_s": opt_summary(&runs.iter().map(|r| r.cpu_s).collect::<Vec<_>>()),
        "peak_rss_kib_vmhwm": opt_summary(&col(&|p: &Value| p["peak_rss_kib"].as_f64().unwrap_or(f64::NAN)).into_iter().map(|x| (!x.is_nan()).then_some(x)).collect::<Vec<_>>()),
        "peak_rss_kib_time": opt_summary(&runs.iter().map(|r| r.max_rss_kib.map(|k| k as f64)).collect::<Vec<_>>()),
        "graphs": per_graph,
    }))
}

/// Medians over fresh-process runs of `build-graphs --format pb` (the whole tool, writing files).
fn aggregate_build_graphs(task: &Task, runs: &[ChildRun]) -> Value {
    let reported: Vec<Option<f64>> = runs
        .iter()
        .map(|r| {
            let line = r.stdout.lines().find(|l| l.contains(" graphs for "))?;
            let before = &line[..line.find(" ms")?];
            before.rsplit(' ').next()?.parse().ok()
        })
        .collect();
    json!({
        "command": task.command_line(),
        "runs": runs.len(),
        "process_wall_ms": summary(&runs.iter().map(|r| r.wall_ms).collect::<Vec<_>>()),
        "reported_total_ms": opt_summary(&reported),
        "process_cpu_s": opt_summary(&runs.iter().map(|r| r.cpu_s).collect::<Vec<_>>()),
        "peak_rss_kib_time": opt_summary(&runs.iter().map(|r| r.max_rss_kib.map(|k| k as f64)).collect::<Vec<_>>()),
    })
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn load_average() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn machine_description() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_field = |k: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let flags = cpu_field("flags").unwrap_or_default();
    let simd: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: Option<u64> = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    let lscpu = command_output("lscpu", &[]).unwrap_or_default();
    let lscpu_field = |k: &str| {
        lscpu
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let plugin = std::env::var("PJRT_PLUGIN").ok();
    // The wheel's version is in its install folder name (tools/install-pjrt-plugin).
    let plugin_version = plugin.as_deref().and_then(|p| {
        Path::new(p).ancestors().find_map(|a| {
            a.file_name()?
                .to_str()?
                .strip_prefix("xla-cpu-pjrt-")
                .map(str::to_string)
        })
    });
    json!({
        "cpu_model": cpu_field("model name"),
        "cpu_family_model_stepping": format!(
            "{}/{}/{}",
            cpu_field("cpu family").unwrap_or_default(),
            cpu_field("model\t").unwrap_or_default(),
            cpu_field("stepping").unwrap_or_default()
        ),
        "hypervisor": lscpu_field("Hypervisor vendor"),
        "l3_cache": lscpu_field("L3 cache"),
        "simd": simd,
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "memory_gib": mem_kib.map(|k| k as f64 / (1024.0 * 1024.0)),
        "kernel": command_output("uname", &["-sr"]),
        "rustc": command_output("rustc", &["--version"]),
        "pjrt_plugin": plugin,
        "pjrt_plugin_version": plugin_version,
        "gnu_time": Path::new(GNU_TIME).is_file(),
    })
}

/// Op counts of XLA's optimised entry computation for each module dumped under `dir`.
fn analyze_hlo_dump(dir: &Path) -> Result<Value, String> {
    let mut modules = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".cpu_after_optimizations.txt") else {
            continue;
        };
        let module = stem.split_once('.').map(|(_, m)| m).unwrap_or(stem);
        let textual = std::fs::read_to_string(entry.path()).map_err(|e| e.to_string())?;
        modules.insert(module.to_string(), analyze_module_text(&textual, &name));
    }
    Ok(json!(modules))
}

/// `(name, element type and dims, opcode)` of one HLO instruction line.
fn parse_instruction(line: &str) -> Option<(&str, &str, &str)> {
    let line = line.trim_start();
    let line = line.strip_prefix("ROOT ").unwrap_or(line);
    let (name, rest) = line.split_once(" = ")?;
    if rest.starts_with('(') {
        // A tuple-shaped result: type and opcode are not needed here.
        return Some((name, "", "tuple"));
    }
    let (ty, rest) = rest.split_once(' ')?;
    let opcode = &rest[..rest.find('(')?];
    Some((name, ty, opcode))
}

fn element_count(ty: &str) -> Option<u64> {
    let inner = &ty[ty.find('[')? + 1..ty.find(']')?];
    if inner.is_empty() {
        return Some(1);
    }
    inner
        .split(',')
        .map(|d| d.trim().parse::<u64>().ok())
        .product()
}

fn analyze_module_text(textual: &str, file: &str) -> Value {
    let aliases = textual
        .lines()
        .next()
        .map(|header| header.matches("may-alias").count() + header.matches("must-alias").count())
        .unwrap_or(0);
    let entry: Vec<&str> = textual
        .lines()
        .skip_while(|l| !l.starts_with("ENTRY"))
        .skip(1)
        .take_while(|l| !l.starts_with('}'))
        .collect();
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    let mut cache_sizes = Vec::new();
    let parsed: Vec<(&str, &str, &str)> =
        entry.iter().filter_map(|l| parse_instruction(l)).collect();
    for (name, ty, op) in &parsed {
        *ops.entry(op.to_string()).or_default() += 1;
        if *op == "parameter" && name.contains("past_key_values") {
            cache_sizes.extend(element_count(ty));
        }
    }
    // Whole-cache data movement: a copy, transpose or copy/transpose fusion whose result has a
    // KV cache's element count.
    let mut cache_copies: BTreeMap<String, usize> = BTreeMap::new();
    for (name, ty, op) in &parsed {
        // A fusion rooted in a dynamic-update-slice or scatter updates its operand in place
        // (any `copy` in its name is a copy of the small update).
        let in_place = name.contains("dynamic-update-slice") || name.contains("scatter");
        let moves = matches!(*op, "copy" | "transpose")
            || (*op == "fusion"
                && !in_place
                && (name.contains("copy") || name.contains("transpose")));
        if moves && element_count(ty).is_some_and(|n| cache_sizes.contains(&n)) {
            // `%transpose_copy_fusion.31` → `transpose_copy_fusion`.
            let base = name.trim_start_matches('%');
            let base = base
                .rsplit_once('.')
                .filter(|(_, n)| n.chars().all(|c| c.is_ascii_digit()))
                .map_or(base, |(b, _)| b);
            *cache_copies.entry(base.to_string()).or_default() += 1;
        }
    }
    // Scatters and dynamic-update-slices usually sit inside fusions: count them everywhere.
    let anywhere = |opcode: &str| {
        textual
            .lines()
            .filter_map(parse_instruction)
            .filter(|(_, _, op)| *op == opcode)
            .count()
    };
    let pick = |k: &str| ops.get(k).copied().unwrap_or(0);
    json!({
        "file": file,
        "entry_instructions": parsed.len(),
        "input_output_aliases": aliases,
        "copy": pick("copy"),
        "transpose": pick("transpose"),
        "fusion": pick("fusion"),
        "dot": pick("dot"),
        "scatter": anywhere("scatter"),
        "dynamic-update-slice": anywhere("dynamic-update-slice"),
        "convert": pick("convert"),
        "cache_sized_copies": cache_copies.values().sum::<usize>(),
        "cache_sized_copy_kinds": cache_copies,
    })
}

fn run_all(a: &AllArgs) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = me.parent().ok_or("no executable folder")?.to_path_buf();
    let build_graphs = dir.join("build-graphs");
    if !build_graphs.is_file() {
        return Err(format!(
            "{} is missing: run `cargo build --release --bins` first (tools/bench does)",
            build_graphs.display()
        ));
    }
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let started = Instant::now();
    let load_before = load_average();
    let machine = machine_description();
    let runs = a.runs.max(1);
    let scratch = a.out.join("graphs");
    let scratch_s = scratch.display().to_string();

    // 1. Whole default sets, per model/tp: in-process build (no files) and the whole tool.
    let mut set_tasks = Vec::new();
    let mut tool_tasks = Vec::new();
    for &(model, tp) in BUILD_CONFIGS {
        let tp_s = tp.to_string();
        set_tasks.push(Task::new(
            format!("build-set {model} tp {tp}"),
            &me,
            &["build-set", "--model", model, "--tp", &tp_s],
        ));
        tool_tasks.push(Task::new(
            format!("build-graphs {model} tp {tp}"),
            &build_graphs,
            &[
                "--model", model, "--tp", &tp_s, "--format", "pb", "--out", &scratch_s,
            ],
        ));
    }
    // One core only, for the Phi-3-mini-4k tp 8 set.
    set_tasks.push(Task::new(
        "build-set phi-3-mini-4k tp 8, 1 job".into(),
        &me,
        &[
            "build-set",
            "--model",
            "phi-3-mini-4k",
            "--tp",
            "8",
            "--jobs",
            "1",
        ],
    ));
    let set_runs = repeat(&set_tasks, runs)?;
    let tool_runs = repeat(&tool_tasks, runs)?;
    let mut sets = Vec::new();
    for (task, r) in set_tasks.iter().zip(&set_runs) {
        sets.push(aggregate_build_set(task, r)?);
    }
    let tools: Vec<Value> = tool_tasks
        .iter()
        .zip(&tool_runs)
        .map(|(t, r)| aggregate_build_graphs(t, r))
        .collect();

    // 2. Scaling: layers (whole set) and single buckets (one CTE + one TKG graph, one job).
    let mut layer_tasks = Vec::new();
    for &n in LAYER_COUNTS {
        let n_s = n.to_string();
        layer_tasks.push(Task::new(
            format!("build-set phi-3-mini-4k tp 8, {n} layers"),
            &me,
            &[
                "build-set",
                "--model",
                "phi-3-mini-4k",
                "--tp",
                "8",
                "--layers",
                &n_s,
            ],
        ));
    }
    let mut bucket_tasks = Vec::new();
    for &b in BUCKETS {
        let b_s = b.to_string();
        bucket_tasks.push(Task::new(
            format!("build-set phi-3-mini-4k tp 8, bucket {b}"),
            &me,
            &[
                "build-set",
                "--model",
                "phi-3-mini-4k",
                "--tp",
                "8",
                "--buckets",
                &b_s,
                "--jobs",
                "1",
            ],
        ));
    }
    let layer_runs = repeat(&layer_tasks, runs)?;
    let bucket_runs = repeat(&bucket_tasks, runs)?;
    let mut layers = Vec::new();
    for (task, r) in layer_tasks.iter().zip(&layer_runs) {
        layers.push(aggregate_build_set(task, r)?);
    }
    let mut buckets = Vec::new();
    for (task, r) in bucket_tasks.iter().zip(&bucket_runs) {
        buckets.push(aggregate_build_set(task, r)?);
    }

    let mut results = json!({
        "schema": 2,
        "invoked_as": a.invoked_as,
        "date": command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "machine": machine,
        "load_average_before": load_before,
        "graph_build": {
            "dtype": "bf16",
            "batch": 1,
            "buckets": BUCKETS,
            "sets": sets,
            "build_graphs_tool": tools,
            "layer_scaling": layers,
            "bucket_scaling": buckets,
        },
    });

    // 3. Execution on the PJRT CPU plugin.
    if !a.no_exec {
        results["execution"] = run_exec_benchmarks(a, &me)?;
    }
    results["load_average_after"] = json!(load_average());
    results["bench_wall_s"] = json!(started.elapsed().as_secs_f64());

    let path = a.out.join("results.json");
    let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())? + "\n";
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    write_report(&results, &a.report)?;
    eprintln!("bench: wrote {}", a.report.display());
    Ok(())
}

fn run_exec_benchmarks(a: &AllArgs, me: &Path) -> Result<Value, String> {
    if std::env::var_os("PJRT_PLUGIN").is_none() {
        return Err(
            "PJRT_PLUGIN is not set (tools/bench sets it from tools/install-pjrt-plugin)".into(),
        );
    }
    let steps = a.decode_steps.to_string();
    let prefill_runs = a.prefill_runs.to_string();
    let child =
        |label: &str, args: Vec<&str>, env: &[(&str, String)]| -> Result<(Value, String), String> {
            eprintln!("bench: {label}");
            let args: Vec<String> = args.into_iter().map(str::to_string).collect();
            let run = run_child(me, &args, env)?;
            let mut v = parse_json(&run)?;
            v["process_wall_ms"] = json!(run.wall_ms);
            v["max_rss_kib_time"] = json!(run.max_rss_kib);
            Ok((v, format!("target/release/bench {}", args.join(" "))))
        };
    let (membw, membw_cmd) = child("memory bandwidth", vec!["membw"], &[])?;
    // Both graph presets at tp 1 and 2, alternating presets so that slow drift in machine load
    // does not favour one of them.
    let mut runs = Vec::new();
    for tp in ["1", "2"] {
        for preset in PRESETS {
            let (v, cmd) = child(
                &format!("execution tp {tp}, {preset} graphs"),
                vec![
                    "exec",
                    "--tp",
                    tp,
                    "--preset",
                    preset,
                    "--batches",
                    "1,4",
                    "--prefill",
                    "128",
                    "--cache-len",
                    "512",
                    "--decode-steps",
                    &steps,
                    "--prefill-runs",
                    &prefill_runs,
                ],
                &[],
            )?;
            runs.push(json!({ "command": cmd, "preset": preset, "result": v }));
        }
    }
    // XLA's optimised HLO, per preset: XLA_FLAGS is read once per process, so a child each.
    let dump_root = a.out.join("hlo-dump");
    let _ = std::fs::remove_dir_all(&dump_root);
    let mut dumps = Vec::new();
    for preset in PRESETS {
        let dump = dump_root.join(preset);
        let flags = format!("--xla_dump_to={} --xla_dump_hlo_as_text", dump.display());
        let (_, dump_cmd) = child(
            &format!("HLO dump, {preset} graphs"),
            vec![
                "exec",
                "--tp",
                "1",
                "--preset",
                preset,
                "--batches",
                "1,4",
                "--prefill",
                "128",
                "--cache-len",
                "512",
                "--decode-steps",
                "1",
                "--prefill-runs",
                "1",
            ],
            &[("XLA_FLAGS", flags.clone())],
        )?;
        let hlo = analyze_hlo_dump(&dump)?;
        // The dump is large (LLVM IR, object files): keep only the HLO texts.
        if let Ok(entries) = std::fs::read_dir(&dump) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !(name.ends_with("after_optimizations.txt")
                    || name.ends_with("before_optimizations.txt")
                    || name.ends_with("after_optimizations-buffer-assignment.txt"))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        dumps.push(json!({
            "preset": preset,
            "command": format!("XLA_FLAGS='{flags}' {dump_cmd}"),
            "dir": dump.display().to_string(),
            "modules": hlo,
        }));
    }
    Ok(json!({
        "memory_bandwidth": { "command": membw_cmd, "result": membw },
        "runs": runs,
        "hlo_dumps": dumps,
    }))
}

// ---------------------------------------------------------------------------------------------
// BENCHMARKS.md
// ---------------------------------------------------------------------------------------------

fn regenerate_report(results: &Path, report: &Path) -> Result<(), String> {
    let text =
        std::fs::read_to_string(results).map_err(|e| format!("{}: {e}", results.display()))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", results.display()))?;
    write_report(&v, report)
}

/// `median (min–max)` of a [`summary`], with `digits` decimals.
fn fmt_sum(v: &Value, digits: usize) -> String {
    if v.is_null() {
        return "n/a".into();
    }
    format!(
        "{:.d$} ({:.d$}–{:.d$})",
        num(v, &["median"]),
        num(v, &["min"]),
        num(v, &["max"]),
        d = digits
    )
}

fn mib_of_kib(v: &Value) -> String {
    if v.is_null() {
        return "n/a".into();
    }
    format!(
        "{:.0} ({:.0}–{:.0})",
        num(v, &["median"]) / 1024.0,
        num(v, &["min"]) / 1024.0,
        num(v, &["max"]) / 1024.0
    )
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

fn find_set<'a>(sets: &'a [Value], model: &str, tp: i64, jobs_one: bool) -> Option<&'a Value> {
    sets.iter().find(|s| {
        s["model"] == model && s["tp"] == tp && (s["jobs"].as_i64() == Some(1)) == jobs_one
    })
}

fn write_report(r: &Value, path: &Path) -> Result<(), String> {
    use std::fmt::Write as _;
    let mut o = String::new();
    let m = &r["machine"];
    let gb = &r["graph_build"];
    let empty = Vec::new();
    let sets = gb["sets"].as_array().unwrap_or(&empty);
    let ex = &r["execution"];

    let _ = writeln!(o, "# Benchmarks\n");
    let _ = writeln!(
        o,
        "Everything above the analysis marker is generated by `{}` (`target/release/bench all`) \
         from `target/bench/results.json`; rerun it to refresh. Run on {}.\n",
        text(r, &["invoked_as"]),
        text(r, &["date"])
    );

    // Summary against the targets.
    let _ = writeln!(o, "## Targets\n");
    let _ = writeln!(o, "| target | measured | |\n|---|---|---|");
    if let Some(s) = find_set(sets, "phi-3-mini-4k", 8, false) {
        let set_ms = num(s, &["set_ms", "median"]);
        let rss = num(s, &["peak_rss_kib_time", "max"]).max(num(s, &["peak_rss_kib_vmhwm", "max"]));
        let _ = writeln!(
            o,
            "| Phi-3-mini-4k, tp 8, default set (12 graphs, 32 layers) recorded, optimised, lowered and serialised in < 100 ms on {} cores | {:.0} ms (median of {} fresh processes; min {:.0}, max {:.0}) | {} |",
            text(m, &["cores"]),
            set_ms,
            text(s, &["runs"]),
            num(s, &["set_ms", "min"]),
            num(s, &["set_ms", "max"]),
            verdict(set_ms < 100.0)
        );
        let _ = writeln!(
            o,
            "| … with peak RSS < 150 MB | {:.0} MB at most (in-process build, no files) | {} |",
            rss * 1024.0 / 1e6,
            verdict(rss * 1024.0 < 150e6)
        );
    }
    if let Some(t) = gb["build_graphs_tool"].as_array().and_then(|ts| {
        ts.iter().find(|t| {
            t["command"]
                .as_str()
                .is_some_and(|c| c.contains("phi-3-mini-4k --tp 8 "))
        })
    }) {
        let rss = num(t, &["peak_rss_kib_time", "max"]) * 1024.0;
        let _ = writeln!(
            o,
            "| (for reference) the whole `build-graphs --format pb` process for that set, writing the files | {:.0} ms wall, {:.0} MB peak RSS | {} / {} |",
            num(t, &["process_wall_ms", "median"]),
            rss / 1e6,
            verdict(num(t, &["process_wall_ms", "median"]) < 100.0),
            verdict(rss < 150e6)
        );
    }
    let bw = num(
        ex,
        &[
            "memory_bandwidth",
            "result",
            "results",
            &format!(
                "threads_{}",
                text(ex, &["memory_bandwidth", "result", "threads_max"])
            ),
            "copy_gb_s",
        ],
    );
    let decode_rows = decode_rows(ex, bw);
    let tp1_b1 = |preset: &str| {
        decode_rows
            .iter()
            .find(|d| d.tp == 1 && d.batch == 1 && d.preset == preset)
    };
    if let Some(d) = tp1_b1("cpu") {
        let _ = writeln!(
            o,
            "| Decode at tp 1 (batch 1, cache 512) within 2× of the memory-bandwidth floor, with the graphs the CPU runner uses (`GraphOptions::cpu()`) | {:.1} ms/token vs a {:.1} ms floor: {:.2}× | {} |",
            d.median_ms,
            d.floor_ms,
            d.median_ms / d.floor_ms,
            verdict(d.median_ms / d.floor_ms <= 2.0)
        );
    }
    if let Some(d) = tp1_b1("neuron") {
        let _ = writeln!(
            o,
            "| (for reference) the same with the default graphs (`GraphOptions::default()`, NxD's forms, as built for Neuron) | {:.1} ms/token vs a {:.1} ms floor: {:.2}× | {} |",
            d.median_ms,
            d.floor_ms,
            d.median_ms / d.floor_ms,
            verdict(d.median_ms / d.floor_ms <= 2.0)
        );
    }
    let _ = writeln!(o);

    // Machine.
    let _ = writeln!(o, "## Machine\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let row = |o: &mut String, k: &str, v: String| {
        let _ = writeln!(o, "| {k} | {v} |");
    };
    row(
        &mut o,
        "CPU",
        format!(
            "{} (family/model/stepping {}), L3 {}, SIMD: {}",
            text(m, &["cpu_model"]),
            text(m, &["cpu_family_model_stepping"]),
            text(m, &["l3_cache"]),
            m["simd"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
    );
    row(&mut o, "hypervisor", text(m, &["hypervisor"]));
    row(&mut o, "cores", text(m, &["cores"]));
    row(
        &mut o,
        "memory",
        format!("{:.1} GiB", num(m, &["memory_gib"])),
    );
    row(&mut o, "kernel", text(m, &["kernel"]));
    row(&mut o, "rustc", text(m, &["rustc"]));
    row(
        &mut o,
        "PJRT plugin",
        format!(
            "xla-cpu-pjrt {} (`{}`)",
            text(m, &["pjrt_plugin_version"]),
            text(m, &["pjrt_plugin"])
        ),
    );
    row(
        &mut o,
        "load average (1/5/15 min) before / after",
        format!(
            "{} / {}",
            text(r, &["load_average_before"]),
            text(r, &["load_average_after"])
        ),
    );
    row(
        &mut o,
        "whole benchmark",
        format!("{:.0} s", num(r, &["bench_wall_s"])),
    );
    let _ = writeln!(o);

    // Commands.
    let _ = writeln!(o, "## Commands\n");
    let _ = writeln!(o, "`tools/bench` builds `target/release/{{bench,build-graphs}}` (`cargo build --release --locked --bin bench --bin build-graphs`), sets `PJRT_PLUGIN=$(tools/install-pjrt-plugin)` and runs `target/release/bench all`, which starts each of these as a fresh process (each graph-build command {} times, round-robin), wrapped in `/usr/bin/time -v` for peak RSS and CPU time:\n", text(gb["sets"].get(0).unwrap_or(&Value::Null), &["runs"]));
    let _ = writeln!(o, "```");
    let mut cmds: Vec<String> = Vec::new();
    for key in [
        "sets",
        "build_graphs_tool",
        "layer_scaling",
        "bucket_scaling",
    ] {
        for s in gb[key].as_array().unwrap_or(&empty) {
            cmds.push(text(s, &["command"]));
        }
    }
    if !ex["memory_bandwidth"].is_null() {
        cmds.push(text(&ex["memory_bandwidth"], &["command"]));
    }
    for key in ["runs", "hlo_dumps"] {
        for s in ex[key].as_array().unwrap_or(&empty) {
            cmds.push(text(s, &["command"]));
        }
    }
    for c in cmds {
        let _ = writeln!(o, "{c}");
    }
    let _ = writeln!(o, "```\n");

    // Graph building.
    let _ = writeln!(o, "## Graph building\n");
    let _ = writeln!(o, "`bench build-set` runs, in one process, exactly the stages `build_graph` times for each graph of the default set ({} context-encoding + {} token-generation graphs, buckets {}, batch 1, bf16): **record** (the DSL, ending with IR verification), **optimise** (CSE + DCE), **lower** (IR → `HloModuleProto`) and **serialise** (protobuf encoding). It writes no files and skips statistics and lint. Graphs are built on `available_parallelism` threads, as `build-graphs` does. *set ms* is the wall time from the first graph's start to the last graph's end; *process ms* is the whole process seen from outside (start-up and config parsing included); times are median (min–max) over fresh processes.\n",
        BUCKETS.len(), BUCKETS.len(), BUCKETS.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", "));
    let _ = writeln!(o, "| model | tp | layers | jobs | set ms | Σ per-graph ms | process ms | CPU s (user+sys) | peak RSS MiB (VmHWM) | peak RSS MiB (time -v) |");
    let _ = writeln!(o, "|---|---:|---:|---:|---|---|---|---|---|---|");
    for s in sets {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            text(s, &["model"]).trim_matches('"'),
            text(s, &["tp"]),
            text(s, &["layers"]),
            text(s, &["jobs"]),
            fmt_sum(&s["set_ms"], 1),
            fmt_sum(&s["sum_graph_ms"], 1),
            fmt_sum(&s["process_wall_ms"], 1),
            fmt_sum(&s["process_cpu_s"], 2),
            mib_of_kib(&s["peak_rss_kib_vmhwm"]),
            mib_of_kib(&s["peak_rss_kib_time"]),
        );
    }
    let _ = writeln!(o, "\nWhere the time goes (sum over the 12 graphs, median ms; per-thread wall time, so with 2 jobs it adds up to about twice the set time):\n");
    let _ = writeln!(o, "| model | tp | jobs | record | optimise | lower | serialise |\n|---|---:|---:|---:|---:|---:|---:|");
    for s in sets {
        let st = &s["stage_sums_ms"];
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            text(s, &["model"]),
            text(s, &["tp"]),
            text(s, &["jobs"]),
            num(st, &["record"]),
            num(st, &["optimize"]),
            num(st, &["lower"]),
            num(st, &["serialize"])
        );
    }
    let _ = writeln!(
        o,
        "\nPer graph (median ms, record + optimise + lower + serialise, 2 jobs):\n"
    );
    let multi: Vec<&Value> = sets
        .iter()
        .filter(|s| s["jobs"].as_i64() != Some(1))
        .collect();
    let _ = write!(o, "| graph |");
    for s in &multi {
        let _ = write!(o, " {} tp {} |", text(s, &["model"]), text(s, &["tp"]));
    }
    let _ = write!(o, "\n|---|");
    for _ in &multi {
        let _ = write!(o, "---:|");
    }
    let _ = writeln!(o);
    if let Some(first) = multi.first() {
        for (i, g) in first["graphs"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .enumerate()
        {
            let _ = write!(o, "| {} |", text(g, &["graph"]));
            for s in &multi {
                let _ = write!(o, " {:.1} |", num(&s["graphs"][i], &["total_ms"]));
            }
            let _ = writeln!(o);
        }
        let _ = write!(o, "| HLO instructions per graph |");
        for s in &multi {
            let _ = write!(o, " {} |", text(&s["graphs"][0], &["instructions"]));
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(
        o,
        "\n### The whole `build-graphs` tool, writing `.hlo.pb` files\n"
    );
    let _ = writeln!(o, "`build-graphs --format pb` also computes statistics and lint findings, and writes the protos and `manifest.json`. *process ms* is measured from outside; *reported ms* is the tool's own total line.\n");
    let _ = writeln!(o, "| command | process ms | reported ms | CPU s | peak RSS MiB (time -v) |\n|---|---|---|---|---|");
    for t in gb["build_graphs_tool"].as_array().unwrap_or(&empty) {
        let _ = writeln!(
            o,
            "| `{}` | {} | {} | {} | {} |",
            text(t, &["command"]),
            fmt_sum(&t["process_wall_ms"], 0),
            fmt_sum(&t["reported_total_ms"], 0),
            fmt_sum(&t["process_cpu_s"], 2),
            mib_of_kib(&t["peak_rss_kib_time"])
        );
    }

    let _ = writeln!(
        o,
        "\n### Scaling with layer count (Phi-3-mini-4k, tp 8, whole set, 2 jobs)\n"
    );
    let _ = writeln!(o, "| layers | set ms | Σ per-graph ms | Σ per-graph ms per layer | HLO instructions per graph |\n|---:|---|---|---:|---:|");
    for s in gb["layer_scaling"].as_array().unwrap_or(&empty) {
        let n = num(s, &["layers"]);
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.2} | {} |",
            n,
            fmt_sum(&s["set_ms"], 1),
            fmt_sum(&s["sum_graph_ms"], 1),
            num(s, &["sum_graph_ms", "median"]) / n,
            text(&s["graphs"][0], &["instructions"])
        );
    }
    let _ = writeln!(
        o,
        "\n### Scaling with bucket length (Phi-3-mini-4k, tp 8, 32 layers, one job)\n"
    );
    let _ = writeln!(o, "Each row is its own set of one context-encoding and one token-generation graph (`--buckets N`).\n");
    let _ = writeln!(o, "| bucket | cte ms | tkg ms | cte instructions | tkg instructions |\n|---:|---:|---:|---:|---:|");
    for s in gb["bucket_scaling"].as_array().unwrap_or(&empty) {
        let g = &s["graphs"];
        let _ = writeln!(
            o,
            "| {} | {:.1} | {:.1} | {} | {} |",
            text(&g[0], &["graph"]).trim_start_matches("cte_b1_s"),
            num(&g[0], &["total_ms"]),
            num(&g[1], &["total_ms"]),
            text(&g[0], &["instructions"]),
            text(&g[1], &["instructions"])
        );
    }

    // Execution.
    if !ex.is_null() {
        write_exec_section(&mut o, ex, bw, &decode_rows);
    }

    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let analysis = match existing.find(ANALYSIS_MARKER) {
        Some(i) => existing[i..].to_string(),
        None => format!("{ANALYSIS_MARKER}\n\n## Analysis\n\n(Not written yet.)\n"),
    };
    o.push('\n');
    o.push_str(&analysis);
    std::fs::write(path, o).map_err(|e| format!("{}: {e}", path.display()))
}

struct DecodeRow {
    preset: String,
    tp: i64,
    batch: i64,
    median_ms: f64,
    floor_ms: f64,
    floor_read_ms: f64,
    step: Value,
    tokens_per_s: f64,
    weight_bytes: f64,
    kv_bytes: f64,
    in_place: String,
    logits_sum: f64,
}

fn decode_rows(ex: &Value, copy_gb_s: f64) -> Vec<DecodeRow> {
    let threads = text(ex, &["memory_bandwidth", "result", "threads_max"]);
    let read_gb_s = num(
        ex,
        &[
            "memory_bandwidth",
            "result",
            "results",
            &format!("threads_{threads}"),
            "read_gb_s",
        ],
    );
    let mut rows = Vec::new();
    for run in ex["runs"].as_array().into_iter().flatten() {
        let res = &run["result"];
        for d in res["decode"].as_array().into_iter().flatten() {
            let wb = num(d, &["weight_bytes_read_per_step"]);
            rows.push(DecodeRow {
                preset: text(res, &["preset"]),
                tp: res["tp"].as_i64().unwrap_or(0),
                batch: d["batch"].as_i64().unwrap_or(0),
                median_ms: num(d, &["step_ms", "median"]),
                floor_ms: wb / (copy_gb_s * 1e9) * 1e3,
                floor_read_ms: wb / (read_gb_s * 1e9) * 1e3,
                step: d["step_ms"].clone(),
                tokens_per_s: num(d, &["tokens_per_s"]),
                weight_bytes: wb,
                kv_bytes: num(d, &["kv_bytes_read_per_step"]),
                in_place: text(d, &["caches_updated_in_place"]),
                logits_sum: num(d, &["last_logits_sum"]),
            });
        }
    }
    rows
}

fn write_exec_section(o: &mut String, ex: &Value, copy_gb_s: f64, rows: &[DecodeRow]) {
    use std::fmt::Write as _;
    let empty = Vec::new();
    let runs = ex["runs"].as_array().unwrap_or(&empty);
    let model = &runs
        .first()
        .map(|r| &r["result"]["model"])
        .cloned()
        .unwrap_or(Value::Null);
    let _ = writeln!(o, "\n## Execution on the PJRT CPU plugin\n");
    let _ = writeln!(
        o,
        "A random-weight Phi-3-layout model that `bench` builds in Rust: hidden {}, {} layers, {} heads, {} KV heads, intermediate {}, vocab {}, {} (weights from a 64-bit LCG, standard deviation 0.02, norms 1). Each tp runs in its own process with one CPU device per rank. Times are end to end per call as a serving loop sees them: uploading ids and positions, executing every rank, and copying rank 0's logits to the host. KV caches are donated (`Arg::Donate`) and threaded from step to step.\n\nEvery configuration runs twice, once per graph preset (*graphs* column), each in its own process: **neuron** is `GraphOptions::default()`, NxD's forms as built for Neuron (activation-first projections `x · wᵀ`, scatter cache writes); **cpu** is `GraphOptions::cpu()`, what the `phi3` CPU runner uses (weight-first projections `w · xᵀ` then a transpose of the small result, and one in-place dynamic-update-slice per sequence for the decode cache write). The preset applies to every graph of the run, prefill and decode; `build-graphs --preset neuron|cpu` builds the same graphs.\n",
        text(model, &["hidden"]), text(model, &["layers"]), text(model, &["heads"]), text(model, &["kv_heads"]),
        text(model, &["intermediate"]), text(model, &["vocab"]), text(model, &["dtype"]).trim_matches('"')
    );
    let mb = &ex["memory_bandwidth"]["result"];
    let _ = writeln!(o, "### Memory bandwidth\n");
    let _ = writeln!(o, "Measured by `bench membw` on {} MiB buffers, best of {}. *copy* is `copy_from_slice` (memcpy) counting bytes read plus bytes written per second (STREAM's convention); *read* sums the buffer.\n", text(mb, &["buffer_mib"]), text(mb, &["reps"]));
    let _ = writeln!(o, "| threads | copy GB/s | read GB/s |\n|---:|---:|---:|");
    if let Some(res) = mb["results"].as_object() {
        for v in res.values() {
            let _ = writeln!(
                o,
                "| {} | {:.1} | {:.1} |",
                text(v, &["threads"]),
                num(v, &["copy_gb_s"]),
                num(v, &["read_gb_s"])
            );
        }
    }
    // Rows grouped by tp, then graph, with the presets side by side.
    let mut tps: Vec<i64> = runs
        .iter()
        .filter_map(|r| r["result"]["tp"].as_i64())
        .collect();
    tps.dedup();
    let runs_of = |tp: i64| {
        runs.iter()
            .filter(move |r| r["result"]["tp"].as_i64() == Some(tp))
    };
    let preset_of = |r: &Value| text(&r["result"], &["preset"]);
    let _ = writeln!(o, "\n### XLA compile time\n");
    let _ = writeln!(o, "| tp | graph | graphs | HLO instructions | record + optimise + lower ms | XLA compile ms |\n|---:|---|---|---:|---:|---:|");
    for &tp in &tps {
        let n = runs_of(tp)
            .map(|r| r["result"]["compile"].as_array().map_or(0, Vec::len))
            .max()
            .unwrap_or(0);
        for i in 0..n {
            for run in runs_of(tp) {
                let c = &run["result"]["compile"][i];
                if c.is_null() {
                    continue;
                }
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {:.1} | {:.0} |",
                    tp,
                    text(c, &["graph"]),
                    preset_of(run),
                    text(c, &["hlo_instructions"]),
                    num(c, &["record_lower_ms"]),
                    num(c, &["xla_compile_ms"])
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "\n### Prefill (context encoding, S = 128, cache 512, batch 1)\n"
    );
    let _ = writeln!(
        o,
        "| tp | graphs | ms per call | tokens/s | speed-up over neuron |\n|---:|---|---|---:|---:|"
    );
    for &tp in &tps {
        let base = runs_of(tp)
            .find(|r| preset_of(r) == "neuron")
            .map(|r| num(&r["result"]["prefill"], &["ms", "median"]));
        for run in runs_of(tp) {
            let p = &run["result"]["prefill"];
            if p.is_null() {
                continue;
            }
            let speedup = base
                .map(|b| format!("{:.2}×", b / num(p, &["ms", "median"])))
                .unwrap_or_else(|| "n/a".into());
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.0} | {} |",
                tp,
                preset_of(run),
                fmt_sum(&p["ms"], 1),
                num(p, &["tokens_per_s"]),
                speedup
            );
        }
    }
    let _ = writeln!(o, "\n### Decode (cache length 512, writing position 511)\n");
    let _ = writeln!(o, "*ms per step* is the latency of one decode step, i.e. ms per token for each sequence of the batch. The floor is the weight bytes one step must read (every weight except the embedding table, of which a gather reads `batch` rows; summed over ranks, which share the same memory) divided by the copy bandwidth above ({copy_gb_s:.1} GB/s); the read-bandwidth floor is given too. The KV cache adds the bytes in the *KV MB* column on top, which neither floor counts. *donated caches reused*: each cache output came back in its donated input's device memory (checked with `PJRT_Buffer_UnsafePointer`), so PJRT allocated nothing; whether XLA moved the whole cache *inside* the step is what the HLO table below shows.\n");
    let _ = writeln!(o, "| tp | batch | graphs | ms per step | tokens/s | speed-up over neuron | weight MB/step | KV MB/step | floor ms (copy bw) | ours / floor | floor ms (read bw) | ours / read floor | donated caches reused |\n|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut order: Vec<&DecodeRow> = rows.iter().collect();
    // Stable: presets keep their run order within a (tp, batch).
    order.sort_by_key(|d| (d.tp, d.batch));
    for d in &order {
        let speedup = rows
            .iter()
            .find(|b| b.tp == d.tp && b.batch == d.batch && b.preset == "neuron")
            .map(|b| format!("{:.2}×", b.median_ms / d.median_ms))
            .unwrap_or_else(|| "n/a".into());
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {:.1} | {} | {:.0} | {:.0} | {:.1} | {:.2}× | {:.1} | {:.2}× | {} |",
            d.tp,
            d.batch,
            d.preset,
            fmt_sum(&d.step, 1),
            d.tokens_per_s,
            speedup,
            d.weight_bytes / 1e6,
            d.kv_bytes / 1e6,
            d.floor_ms,
            d.median_ms / d.floor_ms,
            d.floor_read_ms,
            d.median_ms / d.floor_read_ms,
            d.in_place
        );
    }
    // Same token stream, same weights: the presets must produce the same logits.
    let mut worst: Option<f64> = None;
    for d in rows.iter().filter(|d| d.preset != "neuron") {
        if let Some(b) = rows
            .iter()
            .find(|b| b.tp == d.tp && b.batch == d.batch && b.preset == "neuron")
        {
            let rel = (d.logits_sum - b.logits_sum).abs() / b.logits_sum.abs().max(1e-30);
            worst = Some(worst.map_or(rel, |w: f64| w.max(rel)));
        }
    }
    if let Some(w) = worst {
        let _ = writeln!(o, "\nBoth presets see the same weights and token stream; the sum of the last step's rank-0 logits (`last_logits_sum`) agrees between them to within {w:.1e} relative in every row, so the cpu preset is a rewrite, not an approximation.");
    }
    let dumps = ex["hlo_dumps"].as_array().unwrap_or(&empty);
    if !dumps.is_empty() {
        let dirs = dumps
            .iter()
            .map(|d| format!("`{}`", text(d, &["dir"])))
            .collect::<Vec<_>>()
            .join(" and ");
        let _ = writeln!(
            o,
            "\n### XLA's optimised HLO (tp 1), before (neuron) and after (cpu)\n"
        );
        let _ = writeln!(o, "From {dirs} (`*.cpu_after_optimizations.txt`, kept there). Counts are over the entry computation, except *scatter* and *dynamic-update-slice*, which are counted in every computation (XLA wraps them in fusions); *cache-sized copies* are copies, transposes and copy/transpose fusions (not in-place dynamic-update-slice or scatter fusions) whose result is as large as a KV cache: whole-cache data movement.\n");
        let _ = writeln!(o, "| module | graphs | entry instructions | input/output aliases | copy | transpose | fusion | dot | scatter | dynamic-update-slice | cache-sized copies | of which |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        let mut names: Vec<&String> = dumps
            .iter()
            .filter_map(|d| d["modules"].as_object())
            .flat_map(|m| m.keys())
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            for dump in dumps {
                let v = &dump["modules"][name.as_str()];
                if v.is_null() {
                    continue;
                }
                let ex_list = v["cache_sized_copy_kinds"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, n)| format!("`{k}` ×{n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                let _ = writeln!(
                    o,
                    "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    text(dump, &["preset"]),
                    text(v, &["entry_instructions"]),
                    text(v, &["input_output_aliases"]),
                    text(v, &["copy"]),
                    text(v, &["transpose"]),
                    text(v, &["fusion"]),
                    text(v, &["dot"]),
                    text(v, &["scatter"]),
                    text(v, &["dynamic-update-slice"]),
                    text(v, &["cache_sized_copies"]),
                    ex_list
                );
            }
        }
    }
}
