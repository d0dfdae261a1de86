//! Runs graph sets (Phi-3 family or Llama) on a PJRT plugin, one device per tensor-parallel
//! rank, and prints JSON. The command lines are a stable contract:
//!
//! ```text
//! phi3 generate --graphs DIR --weights DIR (--prompt-ids 1,2,3 | --prompt TEXT | --prompts FILE.jsonl)
//!               [--max-new-tokens K] [--tokenizer FILE] [--chat] [--ignore-eos] [--stream]
//!               [--temperature T] [--top-k K] [--top-p P] [--seed S] [--timings] [--plugin PATH]
//! phi3 generate --model DIR [--tp N] [--dtype f32|bf16] [--max-batch-size N] ...   (the same, from an HF folder)
//!               [--logits]   (also the last prompt position's logits, as `last_logits`)
//! phi3 logits   --model DIR --prompt-ids 1,2,3 [--tp N] [--dtype f32|bf16]
//! phi3 shard    --model DIR (--graphs DIR | --tp N [--dtype f32|bf16]) --out DIR
//! ```
//!
//! `generate` runs what `build-graphs` wrote (`--graphs`: manifest and `.hlo.pb` files) with
//! what `phi3 shard` wrote (`--weights`). `--model` is the shortcut: it builds a CPU-preset
//! set for the folder into a cache keyed by the config, checkpoint, knobs and tool version,
//! shards the weights there, and then runs through exactly the same path. Compiled
//! executables are cached too (keyed by proto hash, plugin and device count).
//!
//! Output: `{"tokens": [...], "text": "...", "finish_reason": "eos"|"length"}` (`text` with a
//! tokenizer; `timings` with `--timings`); with `--prompts`, one such line per request, in
//! input order (or `{"error": ...}` for a request that cannot be served). `logits` prints
//! `{"last_logits": [...]}`. The plugin is `--plugin`, else `PJRT_PLUGIN`.

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use phi3_neuron::build::session::{engine_from_checkpoint, prepare_artifacts, SetShape};
use phi3_neuron::dsl::DType;
use phi3_neuron::manifest::Manifest;
use phi3_neuron::models::decoder::{GraphOptions, GraphSpec, Sampling as GraphSampling};
use phi3_neuron::models::from_file;
use phi3_neuron::run::text::{stop_tokens, TextCodec};
use phi3_neuron::run::{serve, Engine, LoadOptions, Protos, Request, Sampling, Weights};
use phi3_neuron::weights::{write_rank_files, Checkpoint};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
#[command(
    version,
    about = "Run decoder graph sets (Phi-3 family, Llama) on a PJRT plugin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the logits of the last prompt position.
    Logits {
        /// Hugging Face model folder: config.json plus model.safetensors (or a sharded index).
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated prompt token ids.
        #[arg(long, value_delimiter = ',', required = true)]
        prompt_ids: Vec<i32>,
        #[arg(long, default_value_t = 1)]
        tp: i64,
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// bf16 products of up to 8 rows: kernel (this runtime's matrix-vector kernel) or xla.
        #[arg(long, default_value = "kernel")]
        matvec: String,
    },
    /// Generate tokens for one prompt or a JSONL file of requests.
    Generate(Box<Generate>),
    /// Shard a checkpoint for tensor parallelism: writes OUT/tp{r}.safetensors per rank, with the
    /// tensors the graphs' weight inputs take (names as in manifest.json).
    Shard {
        /// Hugging Face model folder: config.json plus model.safetensors (or a sharded index).
        #[arg(long)]
        model: PathBuf,
        /// A build-graphs folder: shard exactly its manifest's weights, at its tp.
        #[arg(long)]
        graphs: Option<PathBuf>,
        /// Without --graphs: the tensor-parallel degree.
        #[arg(long)]
        tp: Option<i64>,
        #[arg(long)]
        out: PathBuf,
        /// Without --graphs: the shards' dtype.
        #[arg(long, default_value = "bf16")]
        dtype: String,
    },
}

#[derive(Args)]
struct Generate {
    /// A build-graphs folder (manifest.json and the .hlo.pb files); needs --weights.
    #[arg(long, requires = "weights", conflicts_with = "model")]
    graphs: Option<PathBuf>,
    /// `phi3 shard`'s output folder.
    #[arg(long, requires = "graphs")]
    weights: Option<PathBuf>,
    /// A Hugging Face folder: build and shard into the cache, then run that.
    #[arg(long)]
    model: Option<PathBuf>,
    /// With --model: the tensor-parallel degree (CPU devices).
    #[arg(long, default_value_t = 1)]
    tp: i64,
    /// With --model: the graphs' and weights' dtype.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// With --model, bf16: products of up to 8 rows in this runtime's matrix-vector kernel
    /// (kernel) or as XLA dots (xla, with the cpu preset's f32 storage of long contractions).
    #[arg(long, default_value = "kernel")]
    matvec: String,
    /// With --model: cache rows (sequences served at once). Default: 1, or 4 with --prompts.
    #[arg(long)]
    max_batch_size: Option<i64>,
    /// Comma-separated prompt token ids.
    #[arg(long, value_delimiter = ',')]
    prompt_ids: Option<Vec<i32>>,
    /// A text prompt (needs a tokenizer).
    #[arg(long)]
    prompt: Option<String>,
    /// One request per line: {"prompt_ids": [...]} or {"prompt": "..."}, with optional
    /// "max_new_tokens", "temperature", "top_k", "top_p", "seed".
    #[arg(long)]
    prompts: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// tokenizer.json (default: the --model folder's).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Apply the chat template of the tokenizer_config.json beside the tokenizer.
    #[arg(long)]
    chat: bool,
    /// Do not stop at the eos_token_id of generation_config.json (or config.json).
    #[arg(long)]
    ignore_eos: bool,
    /// Print each token as it comes: {"token": id, "text": piece} lines, before the result.
    #[arg(long)]
    stream: bool,
    /// Sampling (on the device): temperature. Greedy when no sampling option is given.
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    top_k: Option<u32>,
    #[arg(long)]
    top_p: Option<f32>,
    /// Seed of the host-drawn uniforms: the same seed reproduces a run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Add load, compile, prefill and decode times and peak memory to the output.
    #[arg(long)]
    timings: bool,
    /// Also print the logits of the last prompt position (`last_logits`; single prompt only).
    #[arg(long)]
    logits: bool,
    /// The PJRT plugin (default: $PJRT_PLUGIN).
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// Cache folder for --model sets and compiled executables
    /// (default: $XDG_CACHE_HOME/phi3-neuron or ~/.cache/phi3-neuron).
    #[arg(long)]
    cache: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("phi3: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    match s {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        other => Err(format!("--dtype must be f32 or bf16, got `{other}`")),
    }
}

fn cache_root(explicit: Option<&Path>) -> PathBuf {
    explicit.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"))
            .join("phi3-neuron")
    })
}

fn plugin(explicit: Option<&Path>) -> Result<pjrt_runtime::Plugin, String> {
    match explicit {
        Some(p) => pjrt_runtime::Plugin::load(p),
        None => pjrt_runtime::Plugin::from_env(),
    }
    .map_err(|e| e.to_string())
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The options `phi3` builds sets with on CPU: `--matvec kernel` is [`GraphOptions::cpu_runtime_for`],
/// `--matvec xla` the cpu preset of `build-graphs`.
fn cpu_options(dtype: DType, matvec: &str) -> Result<GraphOptions, String> {
    match matvec {
        "kernel" => Ok(GraphOptions::cpu_runtime_for(dtype)),
        "xla" => Ok(GraphOptions::cpu_for(dtype)),
        other => Err(format!("--matvec must be kernel or xla, got `{other}`")),
    }
}

fn run(cli: Cli) -> Result<String, String> {
    match cli.command {
        Command::Logits {
            model,
            prompt_ids,
            tp,
            dtype,
            matvec,
        } => {
            let dtype = parse_dtype(&dtype)?;
            let options = cpu_options(dtype, &matvec)?;
            if tp < 1 {
                return Err(format!("--tp must be at least 1, got {tp}"));
            }
            let cfg = from_file(&model.join("config.json")).map_err(|e| e.to_string())?;
            cfg.plan(tp).map_err(|e| e.to_string())?;
            let plugin = plugin(None)?;
            let max_seq_len = (prompt_ids.len().max(1) as i64 + 7) / 8 * 8;
            let engine = engine_from_checkpoint(&plugin, &model, tp, dtype, max_seq_len, options)
                .map_err(|e| e.to_string())?;
            let logits = engine.last_logits(&prompt_ids).map_err(|e| e.to_string())?;
            Ok(json!({ "last_logits": logits }).to_string())
        }
        Command::Shard {
            model,
            graphs,
            tp,
            out,
            dtype,
        } => {
            let ckpt = Checkpoint::open(&model).map_err(|e| e.to_string())?;
            let (decls, tp) = match (graphs, tp) {
                (Some(dir), _) => {
                    let m =
                        Manifest::read(&dir.join("manifest.json")).map_err(|e| e.to_string())?;
                    (m.weights, m.tp_degree)
                }
                (None, Some(tp)) => {
                    let dtype = parse_dtype(&dtype)?;
                    let cfg = from_file(&model.join("config.json")).map_err(|e| e.to_string())?;
                    let plan = cfg.plan(tp).map_err(|e| e.to_string())?;
                    // The weights every graph of a default-knob set declares.
                    let spec = GraphSpec::context_encoding(1, 1, 1, dtype);
                    (
                        cfg.record(&plan, &spec).map_err(|e| e.to_string())?.weights,
                        tp,
                    )
                }
                (None, None) => return Err("give --graphs DIR or --tp N".into()),
            };
            let files =
                write_rank_files(&ckpt, &decls, tp as usize, &out).map_err(|e| e.to_string())?;
            let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            Ok(json!({ "files": files }).to_string())
        }
        Command::Generate(g) => generate(*g),
    }
}

/// One request line of a `--prompts` file, before it is validated.
struct Pending {
    prompt: Result<Vec<i32>, String>,
    max_new_tokens: usize,
    sampling: Sampling,
}

fn sampling_of(
    temperature: Option<f32>,
    top_k: Option<u32>,
    top_p: Option<f32>,
    seed: u64,
) -> Sampling {
    if temperature.is_none() && top_k.is_none() && top_p.is_none() {
        return Sampling::Greedy;
    }
    Sampling::Sample {
        top_k: top_k.unwrap_or(0),
        top_p: top_p.unwrap_or(1.0),
        temperature: temperature.unwrap_or(1.0),
        seed,
    }
}

fn generate(g: Generate) -> Result<String, String> {
    let start = Instant::now();
    let plugin = plugin(g.plugin.as_deref())?;
    let cache = cache_root(g.cache.as_deref());
    let batch_default = if g.prompts.is_some() { 4 } else { 1 };
    let (manifest_in, model_cfg) = match (&g.graphs, &g.weights, &g.model) {
        (Some(gr), Some(_), None) => (
            Some(Manifest::read(&gr.join("manifest.json")).map_err(|e| e.to_string())?),
            None,
        ),
        (None, None, Some(model)) => (
            None,
            Some(from_file(&model.join("config.json")).map_err(|e| e.to_string())?),
        ),
        _ => return Err("give --graphs DIR --weights DIR, or --model DIR".into()),
    };
    let vocab = match (&manifest_in, &model_cfg) {
        (Some(m), _) => m.model.vocab_size,
        (None, Some(c)) => c.sizes().vocab,
        _ => unreachable!("one of the two"),
    };
    let model_dir = g.model.clone();
    // The tokenizer: as given, or the model folder's when it has one.
    let tokenizer_path = g
        .tokenizer
        .clone()
        .or_else(|| model_dir.as_ref().map(|d| d.join("tokenizer.json")))
        .filter(|p| g.tokenizer.is_some() || p.is_file());
    let codec = match &tokenizer_path {
        Some(p) => Some(TextCodec::load(p, vocab).map_err(|e| e.to_string())?),
        None => None,
    };
    let encode = |text: &str| -> Result<Vec<i32>, String> {
        let codec = codec
            .as_ref()
            .ok_or("a text prompt needs a tokenizer: --tokenizer FILE (or a --model folder with tokenizer.json)")?;
        let text = if g.chat {
            codec.chat(text).map_err(|e| e.to_string())?
        } else {
            text.to_string()
        };
        codec.encode(&text).map_err(|e| e.to_string())
    };
    let default_sampling = sampling_of(g.temperature, g.top_k, g.top_p, g.seed);
    let pending: Vec<Pending> = match (&g.prompt_ids, &g.prompt, &g.prompts) {
        (Some(ids), None, None) => vec![Pending {
            prompt: Ok(ids.clone()),
            max_new_tokens: g.max_new_tokens,
            sampling: default_sampling,
        }],
        (None, Some(text), None) => vec![Pending {
            prompt: Ok(encode(text)?),
            max_new_tokens: g.max_new_tokens,
            sampling: default_sampling,
        }],
        (None, None, Some(file)) => read_requests(file, &g, &encode)?,
        _ => return Err("give exactly one of --prompt-ids, --prompt and --prompts".into()),
    };
    // The folders to run: as given, or built from the HF folder into the cache.
    let (graphs, weights, manifest) = match (&g.graphs, &g.weights, &model_cfg) {
        (Some(gr), Some(w), None) => (gr.clone(), w.clone(), manifest_in.expect("read above")),
        (None, None, Some(cfg)) => {
            let model = model_dir.as_ref().expect("--model given");
            let dtype = parse_dtype(&g.dtype)?;
            if g.tp < 1 {
                return Err(format!("--tp must be at least 1, got {}", g.tp));
            }
            cfg.plan(g.tp).map_err(|e| e.to_string())?;
            let rows = g.max_batch_size.unwrap_or(batch_default);
            if rows < 1 {
                return Err(format!("--max-batch-size must be at least 1, got {rows}"));
            }
            // A cache long enough for the longest request (at least 128 positions), in
            // power-of-two buckets from 32: on CPU a prefill costs its bucket's length, so a
            // short prompt in a 128 bucket paid four times its work before the first token.
            let limit = cfg.max_position_embeddings() as i64;
            let longest = pending
                .iter()
                .filter_map(|p| {
                    p.prompt
                        .as_ref()
                        .ok()
                        .map(|ids| ids.len() + p.max_new_tokens)
                })
                .max()
                .unwrap_or(1) as i64;
            if longest > limit {
                return Err(format!(
                    "a request needs {longest} positions, more than the model's max_position_embeddings {limit}"
                ));
            }
            let max_seq_len = (longest.max(128) as u64)
                .next_power_of_two()
                .min(limit as u64) as i64;
            let auto: Vec<i64> = (5..)
                .map(|i| 1i64 << i)
                .take_while(|&b| b < max_seq_len)
                .chain([max_seq_len])
                .collect();
            let shape = SetShape {
                cte_buckets: auto.clone(),
                tkg_buckets: auto,
                max_seq_len,
                max_batch: rows,
                ctx_batch: 1,
            };
            let options = GraphOptions {
                sampling: GraphSampling::OnDevice,
                ..cpu_options(dtype, &g.matvec)?
            };
            let a = prepare_artifacts(model, g.tp, dtype, &shape, &options, &cache.join("sets"))
                .map_err(|e| e.to_string())?;
            let m = Manifest::read(&a.graphs.join("manifest.json")).map_err(|e| e.to_string())?;
            (a.graphs, a.weights, m)
        }
        _ => unreachable!("checked above"),
    };
    let stop = if g.ignore_eos {
        Vec::new()
    } else {
        let dir = model_dir.clone().or_else(|| {
            tokenizer_path
                .as_ref()
                .and_then(|p| p.parent().map(Path::to_path_buf))
        });
        stop_tokens(dir.as_deref(), &manifest.model.eos_token_ids).map_err(|e| e.to_string())?
    };
    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template("loading weights {bar:30} {bytes}/{total_bytes}")
            .expect("valid template"),
    );
    let p = progress.clone();
    let engine = Engine::load(
        &plugin,
        manifest,
        Protos::Dir(graphs.clone()),
        Weights::Dir(&weights),
        LoadOptions {
            compile_cache: Some(cache.join("pjrt")),
            eager: false,
            progress: Some(Arc::new(move |done, total| {
                p.set_length(total);
                p.set_position(done);
            })),
        },
    )
    .map_err(|e| e.to_string())?;
    progress.finish_and_clear();
    let requests: Vec<Option<Request>> = pending
        .iter()
        .map(|p| {
            p.prompt.as_ref().ok().map(|ids| Request {
                prompt: ids.clone(),
                max_new_tokens: p.max_new_tokens,
                sampling: p.sampling,
                stop: stop.clone(),
            })
        })
        .collect();
    let runnable: Vec<Request> = requests.iter().flatten().cloned().collect();
    let last_logits = match (g.logits, runnable.first()) {
        (true, Some(r)) if g.prompts.is_none() => {
            Some(engine.last_logits(&r.prompt).map_err(|e| e.to_string())?)
        }
        (true, _) => return Err("--logits needs a single prompt".into()),
        _ => None,
    };
    let stdout = std::io::stdout();
    let stream = g.stream;
    let done = serve(&engine, runnable, &mut |_, t| {
        if stream {
            let piece = codec.as_ref().and_then(|c| c.decode(&[t]).ok());
            let mut out = stdout.lock();
            let _ = writeln!(out, "{}", json!({ "token": t, "text": piece }));
            let _ = out.flush();
        }
    })
    .map_err(|e| e.to_string())?;
    let stats = engine.stats();
    let mut results = done.into_iter();
    let mut lines = Vec::with_capacity(pending.len());
    for p in &pending {
        let line = match &p.prompt {
            Err(e) => json!({ "error": e }),
            Ok(_) => match results.next().expect("one result per runnable request") {
                Err(e) => json!({ "error": e }),
                Ok(c) => {
                    let mut v = json!({
                        "tokens": c.tokens,
                        "finish_reason": c.finish_reason.as_str(),
                    });
                    if let Some(codec) = &codec {
                        v["text"] = json!(codec.decode(&c.tokens).map_err(|e| e.to_string())?);
                    }
                    if let Some(l) = &last_logits {
                        v["last_logits"] = json!(l);
                    }
                    v
                }
            },
        };
        lines.push(line);
    }
    if g.timings {
        let decode_tokens = stats.decode_rows.max(1);
        let timings = json!({
            "load_s": stats.load_s,
            "compile_s": stats.compile_s,
            "compiled_graphs": stats.compiled,
            "compile_cache_hits": stats.cache_hits,
            "prefill_s": stats.prefill_s,
            "decode_ms_per_token": 1e3 * stats.decode_s / decode_tokens as f64,
            "decode_steps": stats.decode_calls,
            "total_s": start.elapsed().as_secs_f64(),
            "peak_rss_mb": peak_rss_mb(),
            "weight_bytes": stats.weight_bytes,
        });
        for l in &mut lines {
            l["timings"] = timings.clone();
        }
    }
    if stats.compiled > 0 && stats.cache_hits == stats.compiled {
        eprintln!(
            "phi3: loaded {} compiled graph(s) from the cache, no XLA compile",
            stats.compiled
        );
    } else if stats.cache_hits > 0 {
        eprintln!(
            "phi3: compiled {} graph(s), {} of them from the cache",
            stats.compiled, stats.cache_hits
        );
    }
    if g.prompts.is_some() {
        Ok(lines
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n"))
    } else {
        let line = lines.remove(0);
        if let Some(e) = line.get("error") {
            return Err(e.as_str().unwrap_or_default().to_string());
        }
        Ok(line.to_string())
    }
}

/// Reads a JSONL file of requests; a malformed line becomes that request's error.
fn read_requests(
    file: &Path,
    g: &Generate,
    encode: &dyn Fn(&str) -> Result<Vec<i32>, String>,
) -> Result<Vec<Pending>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |e: String| format!("{}:{}: {e}", file.display(), n + 1);
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                out.push(Pending {
                    prompt: Err(at(e.to_string())),
                    max_new_tokens: 0,
                    sampling: Sampling::Greedy,
                });
                continue;
            }
        };
        let prompt = match (v.get("prompt_ids"), v.get("prompt")) {
            (Some(ids), None) => ids
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|x| x.as_i64().map(|i| i as i32))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| at("prompt_ids must be a list of integers".into())),
            (None, Some(text)) => match text.as_str() {
                Some(t) => encode(t).map_err(at),
                None => Err(at("prompt must be a string".into())),
            },
            _ => Err(at("give exactly one of prompt_ids and prompt".into())),
        };
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        let sampling = sampling_of(
            f("temperature").map(|x| x as f32).or(g.temperature),
            f("top_k").map(|x| x as u32).or(g.top_k),
            f("top_p").map(|x| x as f32).or(g.top_p),
            v.get("seed")
                .and_then(Value::as_u64)
                .unwrap_or(g.seed.wrapping_add(n as u64)),
        );
        out.push(Pending {
            prompt,
            max_new_tokens: v
                .get("max_new_tokens")
                .and_then(Value::as_u64)
                .map(|k| k as usize)
                .unwrap_or(g.max_new_tokens),
            sampling,
        });
    }
    Ok(out)
}
