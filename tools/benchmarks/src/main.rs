//! `bench`: graph-build speed and memory, execution through the [`Engine`] on the PJRT CPU
//! plugin, and host memory bandwidth. `tools/bench` builds the release binaries and runs
//! `bench all`, which starts every measurement in a fresh child process (of this binary or of
//! `build-graphs`), writes `target/bench/results.json` and regenerates `BENCHMARKS.md` above
//! its hand-written analysis marker.
//!
//! The other subcommands are the children: each does one measurement and prints one JSON
//! object on stdout.

use clap::{Args, Parser, Subcommand};
use phi3_neuron::build::default_jobs;
use phi3_neuron::build::session::{engine_for, SetShape};
use phi3_neuron::build::set::build_all;
use phi3_neuron::dsl::DType;
use phi3_neuron::models::decoder::GraphOptions;
use phi3_neuron::models::{from_json_str, resolve};
use phi3_neuron::run::{DecodeRow, PrefillRow, SamplerRow};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// `build-graphs`' allocator, so that `bench build-set` measures a set built as that process
/// builds it. The execution benchmarks spend their time in the PJRT plugin, whose C++ code
/// keeps the C library's `malloc`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The marker below which BENCHMARKS.md is hand-written and kept.
const MARKER: &str =
    "<!-- hand-written analysis below: tools/bench keeps everything from this line on -->";

/// The execution benchmarks' model: the one `tools/bench-jax` runs beside JAX.
const BENCH_CONFIG: &str = include_str!("../../bench-jax/config.json");

#[derive(Parser, Debug)]
#[command(about = "Graph-build and CPU execution benchmarks (see tools/bench)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Every measurement, each in fresh processes; writes results.json and BENCHMARKS.md.
    All(AllArgs),
    /// Regenerates BENCHMARKS.md from an existing results.json.
    Report {
        #[arg(long, default_value = "target/bench/results.json")]
        results: PathBuf,
        #[arg(long, default_value = "BENCHMARKS.md")]
        report: PathBuf,
    },
    /// Child: records, optimises, lowers and serialises `build-graphs`' default set in memory.
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
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Child: prefill and decode of the bench model through the Engine on the CPU plugin.
    Exec(ExecArgs),
    /// Writes a counter-hash checkpoint (testkit's weights, the ones the full-width tests and
    /// `tools/fixtures/hashinit.py` share) for a config, at any size: for the real-size runs.
    MakeCheckpoint {
        /// A config.json.
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// bf16 tensors (else f32, holding the same bf16-rounded values).
        #[arg(long)]
        bf16: bool,
    },
    /// Child: host memory copy and read bandwidth.
    Membw {
        #[arg(long, default_value_t = 1024)]
        mib: usize,
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::All(a) => run_all(&a),
        Cmd::Report { results, report } => std::fs::read_to_string(&results)
            .map_err(|e| format!("{}: {e}", results.display()))
            .and_then(|t| {
                serde_json::from_str(&t).map_err(|e| format!("{}: {e}", results.display()))
            })
            .and_then(|r: Value| write_report(&r, &report)),
        Cmd::BuildSet {
            model,
            tp,
            layers,
            buckets,
            jobs,
        } => build_set(&model, tp, layers, &buckets, jobs).map(print_json),
        Cmd::Exec(a) => exec(&a).map(print_json),
        Cmd::MakeCheckpoint { config, out, bf16 } => make_checkpoint(&config, &out, bf16),
        Cmd::Membw { mib, reps } => {
            print_json(memory_bandwidth(mib, reps));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(v: Value) {
    println!(
        "{}",
        serde_json::to_string(&v).expect("JSON values serialise")
    );
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `{median, min, max, n}` of a sample.
fn summary(xs: &[f64]) -> Value {
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!({"median": median(xs), "min": min, "max": max, "n": xs.len()})
}

/// This process's peak RSS (VmHWM), KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn num(v: &Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------------
// Child: graph building
// ---------------------------------------------------------------------------------------------

/// `build-graphs`' default set (a CTE and a TKG graph per bucket over one shared state, batch
/// 1, bf16, the default preset), built `jobs` at a time exactly as `build-graphs` builds it,
/// but written nowhere.
fn build_set(
    name: &str,
    tp: i64,
    layers: Option<usize>,
    buckets: &[i64],
    jobs: Option<usize>,
) -> Result<Value, String> {
    let start = Instant::now();
    let mut model = resolve(name).map_err(|e| e.to_string())?;
    if let Some(n) = layers {
        model = model.with_layers(n);
    }
    let plan = model.plan(tp).map_err(|e| e.to_string())?;
    let max = buckets.iter().copied().max().ok_or("--buckets is empty")?;
    let shape = SetShape {
        cte_buckets: buckets.to_vec(),
        tkg_buckets: buckets.to_vec(),
        max_seq_len: max,
        max_batch: 1,
        ctx_batch: 1,
    };
    let specs = shape.specs(DType::BF16, &GraphOptions::default());
    let jobs = jobs.unwrap_or_else(default_jobs);
    let set_start = Instant::now();
    let built = build_all(
        model.as_ref(),
        &plan,
        &specs,
        Some(jobs),
        &|_| Ok(Vec::new()),
        &|| {},
    )
    .map_err(|e| e.to_string())?;
    let set_ms = ms(set_start.elapsed());
    let graphs: Vec<Value> = built
        .iter()
        .map(|(b, _)| {
            json!({
                "graph": b.recorded.spec.name(),
                "build_ms": b.build_ms,
                "proto_bytes": b.proto_len,
            })
        })
        .collect();
    Ok(json!({
        "model": name,
        "tp": tp,
        "layers": model.num_layers(),
        "jobs": jobs.clamp(1, specs.len()),
        "set_ms": set_ms,
        "sum_graph_ms": built.iter().map(|(b, _)| b.build_ms).sum::<f64>(),
        "main_ms": ms(start.elapsed()),
        "peak_rss_kib": peak_rss_kib(),
        "graphs": graphs,
    }))
}

// ---------------------------------------------------------------------------------------------
// Child: execution
// ---------------------------------------------------------------------------------------------

#[derive(Args, Debug)]
struct ExecArgs {
    #[arg(long, default_value_t = 1)]
    tp: i64,
    /// cpu (`GraphOptions::cpu()`) or neuron (`GraphOptions::neuron()`, AWS's forms).
    #[arg(long, default_value = "cpu")]
    preset: String,
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Decode batch sizes (one set per size: its cache rows and TKG batch).
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    batches: Vec<i64>,
    /// Prefill bucket (0: no prefill).
    #[arg(long, default_value_t = 128)]
    prefill: i64,
    /// Cache length; decode writes position cache_len - 1.
    #[arg(long, default_value_t = 512)]
    cache_len: i64,
    #[arg(long, default_value_t = 30)]
    decode_steps: usize,
    #[arg(long, default_value_t = 10)]
    prefill_runs: usize,
    /// The bench model's checkpoint folder (written by `bench all`).
    #[arg(long)]
    model_dir: PathBuf,
}

/// Token ids from a fixed 64-bit LCG (Knuth's MMIX constants), so every variant sees the same.
struct Tokens(u64, i32);

impl Tokens {
    fn next(&mut self) -> i32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % self.1 as u64) as i32
    }
}

/// Every call is timed as a serving loop sees it: the Engine uploads ids, positions and
/// seq_ids, executes (the KV state donated), and reads the logits back.
fn exec(a: &ExecArgs) -> Result<Value, String> {
    let dtype = match a.dtype.as_str() {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        other => return Err(format!("--dtype must be f32 or bf16, got `{other}`")),
    };
    let options = match a.preset.as_str() {
        "cpu" => GraphOptions::cpu_for(dtype),
        "cpu-runtime" => GraphOptions::cpu_runtime_for(dtype),
        "neuron" => GraphOptions::neuron(),
        other => {
            return Err(format!(
                "--preset must be cpu, cpu-runtime or neuron, got `{other}`"
            ))
        }
    };
    let model = from_json_str(BENCH_CONFIG, "bench").map_err(|e| e.to_string())?;
    let vocab = model.sizes().vocab as i32;
    let plugin = pjrt_runtime::Plugin::from_env().map_err(|e| e.to_string())?;
    let mut tokens = Tokens(7, vocab);
    let greedy = SamplerRow::GREEDY;
    let mut prefill = Value::Null;
    let mut decode = Vec::new();
    for (i, &b) in a.batches.iter().enumerate() {
        let shape = SetShape {
            cte_buckets: vec![a.prefill.max(1)],
            tkg_buckets: vec![a.cache_len],
            max_seq_len: a.cache_len,
            max_batch: b,
            ctx_batch: 1,
        };
        let t0 = Instant::now();
        let engine = engine_for(&plugin, &a.model_dir, a.tp, dtype, &shape, &options)
            .map_err(|e| e.to_string())?;
        let load_ms = ms(t0.elapsed());
        let mut state = engine.new_state().map_err(|e| e.to_string())?;
        if i == 0 && a.prefill > 0 {
            let ids: Vec<i32> = (0..a.prefill).map(|_| tokens.next()).collect();
            let mut times = Vec::new();
            for k in 0..a.prefill_runs + 2 {
                let row = PrefillRow {
                    seq_id: 0,
                    tokens: &ids,
                    sampler: greedy,
                };
                let t = Instant::now();
                engine
                    .prefill(&mut state, &[row])
                    .map_err(|e| e.to_string())?;
                if k >= 2 {
                    times.push(ms(t.elapsed()));
                }
            }
            prefill = json!({
                "tokens": a.prefill,
                "ms": summary(&times),
                "tokens_per_s": a.prefill as f64 / (median(&times) / 1e3),
            });
        }
        let position = (a.cache_len - 1) as usize;
        let mut times = Vec::new();
        let mut logits_sum = 0f64;
        for k in 0..a.decode_steps + 3 {
            let rows: Vec<DecodeRow> = (0..b as usize)
                .map(|s| DecodeRow {
                    seq_id: s,
                    token: tokens.next(),
                    position,
                    sampler: greedy,
                })
                .collect();
            let t = Instant::now();
            let out = engine
                .decode(&mut state, &rows)
                .map_err(|e| e.to_string())?;
            if k >= 3 {
                times.push(ms(t.elapsed()));
            }
            logits_sum = out[0].logits.iter().map(|&x| x as f64).sum();
        }
        let stats = engine.stats();
        let med = median(&times);
        decode.push(json!({
            "batch": b,
            "position": position,
            "step_ms": summary(&times),
            "ms_per_token": med / b as f64,
            "tokens_per_s": b as f64 / (med / 1e3),
            "load_ms": load_ms,
            "xla_compile_s": stats.compile_s,
            "weight_bytes": stats.weight_bytes,
            // The same token stream must give the same logits across presets.
            "last_logits_sum": logits_sum,
        }));
    }
    let sizes = model.sizes();
    Ok(json!({
        "tp": a.tp,
        "preset": a.preset,
        "dtype": a.dtype,
        "model": {
            "hidden": sizes.hidden, "layers": model.num_layers(), "heads": sizes.heads,
            "kv_heads": sizes.kv_heads, "intermediate": sizes.intermediate, "vocab": sizes.vocab,
        },
        "cache_len": a.cache_len,
        "prefill": prefill,
        "decode": decode,
        "peak_rss_kib": peak_rss_kib(),
    }))
}

fn make_checkpoint(config: &Path, out: &Path, bf16: bool) -> Result<(), String> {
    let json = std::fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let model = from_json_str(&json, &config.display().to_string()).map_err(|e| e.to_string())?;
    let tensors = testkit::model_tensors(model.as_ref());
    let start = Instant::now();
    let bytes = testkit::write_hashed_checkpoint(out, &json, &tensors, bf16)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "bench: wrote {} ({:.2} GB, {} tensors) in {:.1} s",
        out.join("model.safetensors").display(),
        bytes as f64 / 1e9,
        tensors.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Child: memory bandwidth
// ---------------------------------------------------------------------------------------------

/// Host memory bandwidth on buffers far larger than the caches: `copy` (bytes read plus
/// written per second, STREAM's convention) and `read` (a sum over the buffer), with one
/// thread and with every core. Best of `reps`.
fn memory_bandwidth(mib: usize, reps: usize) -> Value {
    let words = (mib << 20) / 8;
    let bytes = (words * 8) as f64;
    let src: Vec<u64> = (0..words as u64).collect();
    let mut dst = vec![1u64; words];
    let threads = default_jobs();
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
            json!({"threads": t, "copy_gb_s": best(&copy), "read_gb_s": best(&read)}),
        );
    }
    json!({"buffer_mib": mib, "reps": reps, "threads_max": threads, "results": out})
}

// ---------------------------------------------------------------------------------------------
// Orchestration: `bench all`
// ---------------------------------------------------------------------------------------------

#[derive(Args, Debug)]
struct AllArgs {
    /// Fresh-process runs per graph-build configuration (median, min and max reported).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Timed decode steps per configuration (after 3 warm-up steps).
    #[arg(long, default_value_t = 30)]
    decode_steps: usize,
    /// Timed prefill calls per configuration (after 2 warm-up calls).
    #[arg(long, default_value_t = 10)]
    prefill_runs: usize,
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    #[arg(long, default_value = "BENCHMARKS.md")]
    report: PathBuf,
    /// Graph building only (no PJRT plugin needed).
    #[arg(long)]
    no_exec: bool,
    /// The command line that started the run, recorded in the report.
    #[arg(long, default_value = "tools/bench")]
    invoked_as: String,
}

/// One child run: its stdout, wall time and (through `/usr/bin/time -v` when present) peak RSS
/// and CPU seconds.
struct ChildRun {
    stdout: String,
    wall_ms: f64,
    rss_kib: Option<f64>,
    cpu_s: Option<f64>,
}

fn run_child(program: &Path, args: &[String], env: &[(&str, String)]) -> Result<ChildRun, String> {
    let timed = Path::new("/usr/bin/time").exists();
    let mut cmd = if timed {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-v").arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    let wall_ms = ms(start.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let tail: String = stderr
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!(
            "{} {} failed ({}):\n{tail}",
            program.display(),
            args.join(" "),
            out.status
        ));
    }
    let field = |name: &str| -> Option<f64> {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    let cpu_s = match (
        field("User time (seconds):"),
        field("System time (seconds):"),
    ) {
        (Some(u), Some(s)) => Some(u + s),
        _ => None,
    };
    Ok(ChildRun {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        wall_ms,
        rss_kib: field("Maximum resident set size (kbytes):"),
        cpu_s,
    })
}

fn child_json(run: &ChildRun) -> Result<Value, String> {
    serde_json::from_str(run.stdout.trim()).map_err(|e| format!("child output: {e}"))
}

fn opt_summary(xs: &[Option<f64>]) -> Value {
    let v: Vec<f64> = xs.iter().flatten().copied().collect();
    if v.is_empty() {
        Value::Null
    } else {
        summary(&v)
    }
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_string());
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    let simd: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"]
        .into_iter()
        .filter(|f| flags.contains(f))
        .collect();
    let mem_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
    });
    json!({
        "cpu": model,
        "simd": simd,
        "cores": default_jobs(),
        "memory_gib": mem_kib.map(|k| k / (1 << 20) as f64),
        "kernel": command_output("uname", &["-r"]),
        "rustc": command_output("rustc", &["--version"]),
        "load_average": std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
    })
}

fn run_all(a: &AllArgs) -> Result<(), String> {
    let started = Instant::now();
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let build_graphs = me.with_file_name("build-graphs");
    if !build_graphs.exists() {
        return Err(format!(
            "{} is missing (cargo build --release --bin build-graphs)",
            build_graphs.display()
        ));
    }
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let before = machine();
    let s = |v: &[&str]| -> Vec<String> { v.iter().map(|s| s.to_string()).collect() };

    // Graph building: in-process sets and whole build-graphs processes, round-robin so slow
    // drift of the machine spreads over every configuration.
    let sets: Vec<Vec<String>> = vec![
        s(&["--model", "phi-3-mini-4k", "--tp", "1"]),
        s(&["--model", "phi-3-mini-4k", "--tp", "8"]),
        s(&["--model", "phi-3-medium-128k", "--tp", "8"]),
        s(&["--model", "phi-4-mini", "--tp", "8"]),
        s(&["--model", "phi-3-mini-4k", "--tp", "8", "--jobs", "1"]),
    ];
    let graphs_out = a.out.join("graphs");
    // First the README's command as a newcomer runs it: no arguments (the default set, both
    // formats, into target/graphs).
    let tools: Vec<Vec<String>> = std::iter::once(Vec::new())
        .chain(
            ["phi-3-mini-4k", "phi-3-medium-128k", "phi-4-mini"]
                .iter()
                .map(|m| {
                    let mut v = s(&["--model", m, "--tp", "8", "--format", "pb", "--out"]);
                    v.push(graphs_out.display().to_string());
                    v
                }),
        )
        .collect();
    let mut set_runs: Vec<Vec<ChildRun>> = sets.iter().map(|_| Vec::new()).collect();
    let mut tool_runs: Vec<Vec<ChildRun>> = tools.iter().map(|_| Vec::new()).collect();
    for round in 0..a.runs.max(1) {
        eprintln!("bench: graph building, round {}/{}", round + 1, a.runs);
        for (args, runs) in sets.iter().zip(&mut set_runs) {
            let mut full = vec!["build-set".to_string()];
            full.extend(args.iter().cloned());
            runs.push(run_child(&me, &full, &[])?);
        }
        for (args, runs) in tools.iter().zip(&mut tool_runs) {
            runs.push(run_child(&build_graphs, args, &[])?);
        }
    }
    let mut build_sets = Vec::new();
    for (args, runs) in sets.iter().zip(&set_runs) {
        let parsed = runs.iter().map(child_json).collect::<Result<Vec<_>, _>>()?;
        let first = &parsed[0];
        let pick = |k: &str| -> Vec<f64> { parsed.iter().map(|p| num(p, &[k])).collect() };
        build_sets.push(json!({
            "command": format!("target/release/bench build-set {}", args.join(" ")),
            "model": first["model"], "tp": first["tp"], "layers": first["layers"],
            "jobs": first["jobs"], "graphs": first["graphs"].as_array().map_or(0, Vec::len),
            "set_ms": summary(&pick("set_ms")),
            "sum_graph_ms": summary(&pick("sum_graph_ms")),
            "process_ms": summary(&runs.iter().map(|r| r.wall_ms).collect::<Vec<_>>()),
            "peak_rss_kib": summary(&pick("peak_rss_kib")),
            "cpu_s": opt_summary(&runs.iter().map(|r| r.cpu_s).collect::<Vec<_>>()),
        }));
    }
    let build_tools: Vec<Value> = tools
        .iter()
        .zip(&tool_runs)
        .map(|(args, runs)| {
            json!({
                "command": format!("target/release/build-graphs {}", args.join(" ")).trim_end().to_string(),
                "wall_ms": summary(&runs.iter().map(|r| r.wall_ms).collect::<Vec<_>>()),
                "peak_rss_kib": opt_summary(&runs.iter().map(|r| r.rss_kib).collect::<Vec<_>>()),
                "cpu_s": opt_summary(&runs.iter().map(|r| r.cpu_s).collect::<Vec<_>>()),
            })
        })
        .collect();

    let mut results = json!({
        "date": command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "invoked_as": a.invoked_as,
        "runs": a.runs,
        "machine": before,
        "build_sets": build_sets,
        "build_graphs": build_tools,
    });

    if !a.no_exec {
        let plugin = std::env::var("PJRT_PLUGIN").unwrap_or_default();
        results["plugin"] = json!(plugin);
        eprintln!("bench: memory bandwidth");
        let membw = child_json(&run_child(&me, &s(&["membw"]), &[])?)?;
        results["membw"] = membw;
        let model_dir = a.out.join("model");
        let tensors = testkit::model_tensors(
            from_json_str(BENCH_CONFIG, "bench")
                .map_err(|e| e.to_string())?
                .as_ref(),
        );
        if !model_dir.join("model.safetensors").exists() {
            eprintln!("bench: writing the bench model's counter-hash checkpoint");
            testkit::write_hashed_checkpoint(&model_dir, BENCH_CONFIG, &tensors, false)
                .map_err(|e| format!("{}: {e}", model_dir.display()))?;
        }
        let mut exec = Vec::new();
        for (tp, preset, dtype) in [
            (1, "cpu", "f32"),
            (1, "cpu-runtime", "f32"),
            (1, "neuron", "f32"),
            (1, "cpu", "bf16"),
            (1, "cpu-runtime", "bf16"),
            (1, "neuron", "bf16"),
            (2, "cpu", "f32"),
        ] {
            eprintln!("bench: exec tp {tp} {preset} {dtype}");
            let args = vec![
                "exec".to_string(),
                format!("--tp={tp}"),
                format!("--preset={preset}"),
                format!("--dtype={dtype}"),
                format!("--decode-steps={}", a.decode_steps),
                format!("--prefill-runs={}", a.prefill_runs),
                format!("--model-dir={}", model_dir.display()),
            ];
            let run = run_child(&me, &args, &[])?;
            let mut v = child_json(&run)?;
            v["command"] = json!(format!("target/release/bench {}", args.join(" ")));
            exec.push(v);
        }
        results["exec"] = json!(exec);
        // The long runs' results, when their own commands have written them.
        for (key, file) in [("jax", "jax.json"), ("real", "real.json")] {
            if let Ok(text) = std::fs::read_to_string(a.out.join(file)) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    results[key] = v;
                }
            }
        }
    }
    results["machine_after"] = machine();
    results["wall_s"] = json!(started.elapsed().as_secs_f64());
    let path = a.out.join("results.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&results).expect("JSON values serialise"),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    write_report(&results, &a.report)
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

fn med_range(v: &Value, digits: usize) -> String {
    let (m, lo, hi) = (num(v, &["median"]), num(v, &["min"]), num(v, &["max"]));
    if m.is_nan() {
        return "–".into();
    }
    format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

fn mib(v: &Value) -> String {
    let m = num(v, &["median"]);
    if m.is_nan() {
        "–".into()
    } else {
        format!("{:.0}", m / 1024.0)
    }
}

fn write_report(r: &Value, path: &Path) -> Result<(), String> {
    use std::fmt::Write;
    let mut o = String::new();
    let m = &r["machine"];
    let _ = writeln!(o, "# Benchmarks\n");
    let _ = writeln!(
        o,
        "Everything above the analysis marker is generated by `{}` (`target/release/bench all`) \
         from `target/bench/results.json`; rerun it to refresh. Run on {}, {} s in all.\n",
        r["invoked_as"].as_str().unwrap_or("tools/bench"),
        r["date"].as_str().unwrap_or("?"),
        num(r, &["wall_s"]).round()
    );
    let _ = writeln!(o, "## Machine\n\n| | |\n|---|---|");
    let _ = writeln!(o, "| CPU | {} |", m["cpu"].as_str().unwrap_or("?"));
    let simd: Vec<&str> = m["simd"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let _ = writeln!(o, "| SIMD | {} |", simd.join(", "));
    let _ = writeln!(o, "| cores | {} |", m["cores"]);
    let _ = writeln!(o, "| memory | {:.1} GiB |", num(m, &["memory_gib"]));
    let _ = writeln!(o, "| kernel | {} |", m["kernel"].as_str().unwrap_or("?"));
    let _ = writeln!(o, "| rustc | {} |", m["rustc"].as_str().unwrap_or("?"));
    if let Some(p) = r["plugin"].as_str() {
        let _ = writeln!(o, "| PJRT plugin | xla-cpu-pjrt 0.0.1 (`{p}`) |");
    }
    let _ = writeln!(
        o,
        "| load average before / after | {} / {} |\n",
        m["load_average"].as_str().unwrap_or("?"),
        r["machine_after"]["load_average"].as_str().unwrap_or("?")
    );

    let _ = writeln!(
        o,
        "## Graph building\n\n`bench build-set` builds `build-graphs`' default set (6 context-encoding + 6 \
         token-generation graphs over one shared KV state, buckets 128…4096, batch 1, bf16, the \
         neuron preset) in one process, exactly as `build-graphs` does (record, optimise, lower, \
         serialise, lint), writing nothing. *set ms*: first graph's start to last graph's end; \
         *process ms*: the whole child process seen from outside. Median (min–max) over {} fresh \
         processes each, round-robin.\n",
        r["runs"]
    );
    let _ = writeln!(
        o,
        "| command | graphs | layers | jobs | set ms | Σ per-graph ms | process ms | CPU s | peak RSS MiB |\n|---|---:|---:|---:|---|---|---|---|---:|"
    );
    for b in r["build_sets"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
            b["command"].as_str().unwrap_or(""),
            b["graphs"],
            b["layers"],
            b["jobs"],
            med_range(&b["set_ms"], 1),
            med_range(&b["sum_graph_ms"], 1),
            med_range(&b["process_ms"], 1),
            med_range(&b["cpu_s"], 2),
            mib(&b["peak_rss_kib"]),
        );
    }
    let _ = writeln!(
        o,
        "\nThe whole `build-graphs` process, fresh each run: with no arguments (the default set, \
         `.hlo.pb` and `.hlo.txt`), then pb only at tp 8. Every file is written to a temporary, \
         synced and renamed into place, the manifest last:\n\n| command | wall ms | CPU s | peak RSS MiB |\n|---|---|---|---:|"
    );
    for b in r["build_graphs"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "| `{}` | {} | {} | {} |",
            b["command"].as_str().unwrap_or(""),
            med_range(&b["wall_ms"], 1),
            med_range(&b["cpu_s"], 2),
            mib(&b["peak_rss_kib"]),
        );
    }

    if let Some(exec) = r["exec"].as_array() {
        let bw = &r["membw"]["results"];
        let read_bw = bw
            .as_object()
            .map(|o| {
                o.values()
                    .map(|v| num(v, &["read_gb_s"]))
                    .fold(0.0, f64::max)
            })
            .unwrap_or(f64::NAN);
        let _ = writeln!(
            o,
            "\n## Execution on the PJRT CPU plugin\n\nThe bench model (`tools/bench-jax/config.json`: \
             hidden 1024, 8 layers, 16 heads, 16 KV heads, intermediate 2816, vocab 32064) on \
             counter-hash weights, through `Engine` as `phi3 generate` runs it: ids, positions \
             and seq_ids uploaded, the KV state donated, the logits read back. Host memory \
             bandwidth (`bench membw`, 1 GiB buffers, best of 5): read {read_bw:.1} GB/s. The \
             floor of a decode step is the bytes it must read (every weight but the embedding, \
             plus the KV state) over that bandwidth.\n"
        );
        let _ = writeln!(
            o,
            "| tp | preset | dtype | prefill S=128 ms | decode B=1 ms | B=4 ms | B=8 ms | B=8 ms/token | floor B=1 / B=4 ms | B=1 ÷ floor | B=4 ÷ floor | XLA compile s |\n|---:|---|---|---|---|---|---|---:|---:|---:|---:|---:|"
        );
        for e in exec {
            let d = e["decode"].as_array().cloned().unwrap_or_default();
            let at = |b: i64| d.iter().find(|x| x["batch"].as_i64() == Some(b));
            let step = |b: i64| at(b).map_or("–".into(), |x| med_range(&x["step_ms"], 1));
            let per_tok = at(8).map_or(f64::NAN, |x| num(x, &["ms_per_token"]));
            let sizes = &e["model"];
            let width = if e["dtype"] == "bf16" { 2.0 } else { 4.0 };
            let h = num(sizes, &["hidden"]);
            let v = num(sizes, &["vocab"]);
            let weight_bytes = at(1).map_or(f64::NAN, |x| num(x, &["weight_bytes"]));
            let embed = h * v * width;
            let cache = 2.0
                * num(sizes, &["layers"])
                * num(sizes, &["kv_heads"])
                * (h / num(sizes, &["heads"]))
                * num(e, &["cache_len"])
                * width;
            // The state is `kv_dtype` wide: f32 in the cpu preset's bf16 graphs.
            let cpu = e["preset"].as_str().is_some_and(|p| p.starts_with("cpu"));
            let kv_width = if cpu { 4.0 } else { width };
            let cache = cache / width * kv_width;
            let floor_ms = |b: f64| (weight_bytes - embed + cache * b) / (read_bw * 1e9) * 1e3;
            let b1 = at(1).map_or(f64::NAN, |x| num(x, &["step_ms", "median"]));
            let b4 = at(4).map_or(f64::NAN, |x| num(x, &["step_ms", "median"]));
            let compile: f64 = d.iter().map(|x| num(x, &["xla_compile_s"])).sum();
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} / {:.1} | {:.2} | {:.2} | {:.1} |",
                e["tp"],
                e["preset"].as_str().unwrap_or(""),
                e["dtype"].as_str().unwrap_or(""),
                med_range(&e["prefill"]["ms"], 1),
                step(1),
                step(4),
                step(8),
                per_tok,
                floor_ms(1.0),
                floor_ms(4.0),
                b1 / floor_ms(1.0),
                b4 / floor_ms(4.0),
                compile
            );
        }
        let _ = writeln!(o, "\nCommands (each a fresh process):\n\n```");
        for e in exec {
            let _ = writeln!(o, "{}", e["command"].as_str().unwrap_or(""));
        }
        let _ = writeln!(o, "```");
    }

    if let Some(cases) = r["jax"]["cases"].as_array() {
        let _ = writeln!(
            o,
            "\n## Beside JAX on the same XLA\n\nFrom `tools/bench-jax/run` (its `target/bench/jax.json`, \
             read by this report when present): our `.hlo.pb` files and a plain JAX Phi-3 of the \
             same shapes and weights, both compiled and run by one jaxlib client on the same \
             `xla-cpu-pjrt` plugin, in alternating rounds, after checking that their logits \
             agree. Ours is each graph twice: `xla`, the cpu preset (XLA's own ops only: it runs \
             in any XLA runtime; each graph compiled with the XLA options its manifest entry \
             lists: in f32, XNNPACK's dots for token generation), and `kernels`, the set \
             `phi3 generate` runs (`--matvec kernel`: products of up to 8 rows in the runtime's \
             f32 and bf16 kernels, which bench.py registers with the plugin through \
             `tools/bench-jax/kernels`); each is timed against JAX in rounds of its own. JAX: {}. Ratio = ours ÷ JAX (median of per-round medians; \
             min–max of the per-round ratios).\n\n| phase | batch | dtype | ours | ours ms | JAX ms | ours ÷ JAX | min–max |\n|---|---:|---|---|---:|---:|---:|---|",
            if r["jax"]["jax_xla_options"] == "same" {
                "compiled with our graph's XLA options too (`--jax-xla-options same`)"
            } else {
                "jax.jit's default compile options, what a JAX user gets"
            }
        );
        for c in cases {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.2}–{:.2} |",
                c["phase"].as_str().unwrap_or(""),
                c["batch"],
                c["dtype"].as_str().unwrap_or(""),
                c["variant"].as_str().unwrap_or("xla"),
                num(c, &["ours_ms"]),
                num(c, &["jax_ms"]),
                num(c, &["ratio"]),
                num(c, &["ratio_min"]),
                num(c, &["ratio_max"]),
            );
        }
    }

    let real = &r["real"];
    if real.is_object() {
        let _ = writeln!(
            o,
            "\n## Real size beside Hugging Face transformers\n\nFrom `tools/bench-real/run` (its \
             `target/bench/real.json`): {} in bf16 on its counter-hash weights ({:.2} GB on the \
             device), a 16-token prompt, `phi3 generate --model DIR --dtype bf16` (tp 1; its bf16 \
             matrix-vector products in the runtime's kernel, `--matvec kernel`, and once with XLA's \
             dots, `--matvec xla`) and HF transformers {} ({} threads) {}. Per token: the wall-time \
             difference between 18 and 2 new tokens, over 16; medians over the rounds. HF generates \
             both counts in one process, loaded once; each of ours is a process of its own, so ours \
             is also given with each process's weight upload and executable loading taken out \
             first, and as the engine's own decode time.\n\n\
             | | ms per token (wall) | without load | inside the engine | load s | peak RSS MB | \
             greedy tokens equal to HF's |\n|---|---:|---:|---:|---:|---:|---:|",
            real["model"].as_str().unwrap_or("?"),
            num(real, &["ours", "weight_bytes"]) / 1e9,
            real["hf"]["torch"].as_str().map_or("?".into(), |t| format!("(torch {t})")),
            real["hf"]["threads"],
            match real["rounds"].as_u64() {
                Some(n) => format!(
                    "in {n} alternating rounds (each a pair of our processes, then one HF process)"
                ),
                None => "one after the other (a real.json from before the rounds alternated)".into(),
            },
        );
        let dash = |v: f64| {
            if v.is_nan() {
                "–".to_string()
            } else {
                format!("{v:.0}")
            }
        };
        for (who, k, same) in [
            ("ours, --matvec kernel", "ours", &real["same_greedy_prefix"]),
            (
                "ours, --matvec xla",
                "ours_xla",
                &real["ours_xla"]["same_greedy_prefix"],
            ),
            ("HF transformers", "hf", &Value::Null),
        ] {
            let _ = writeln!(
                o,
                "| {who} | {:.0} | {} | {} | {:.1} | {:.0} | {} |",
                num(real, &[k, "ms_per_token"]),
                dash(num(real, &[k, "net_ms_per_token"])),
                dash(num(real, &[k, "inside_ms_per_token"])),
                num(real, &[k, "load_s"]),
                num(real, &[k, "peak_rss_mb"]),
                same.as_i64().map_or("–".into(), |n| format!("{n} of 18")),
            );
        }
        // Ours ÷ HF within each round (median, min–max); a file written before the rounds
        // alternated has only the medians' ratio.
        let per_round = real["ours_over_hf"].is_object();
        let ratio = |k: &str, ours: &str| -> String {
            let v = &real["ours_over_hf"][k];
            match (v[0].as_f64(), v[1].as_f64(), v[2].as_f64()) {
                (Some(m), Some(lo), Some(hi)) => format!("{m:.2} ({lo:.2}–{hi:.2})"),
                _ => format!(
                    "{:.2}",
                    num(real, &["ours", ours]) / num(real, &["hf", "ms_per_token"])
                ),
            }
        };
        let _ = writeln!(
            o,
            "\nOurs ÷ HF per token, {}: {} by wall time, {} without load, {} inside the engine. \
             Our prefill of the 16 tokens: {:.2} s; HF's whole 1-token generate: {:.2} s.",
            if per_round {
                "within each round"
            } else {
                "of the medians"
            },
            ratio("wall", "ms_per_token"),
            ratio("net", "net_ms_per_token"),
            ratio("inside", "inside_ms_per_token"),
            num(real, &["ours", "prefill_s"]),
            num(real, &["hf", "first_token_s"]),
        );
    }

    let _ = writeln!(o, "\n{MARKER}\n");
    let kept = std::fs::read_to_string(path)
        .ok()
        .and_then(|old| {
            old.find(MARKER)
                .map(|i| old[i + MARKER.len()..].to_string())
        })
        .unwrap_or_else(|| "## Analysis\n\n(none yet)\n".into());
    o.push_str(kept.trim_start_matches('\n'));
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, o).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
