//! Builds a decoder's graph set (the Phi-3 family or Llama): for each bucket a
//! context-encoding and a token-generation graph, lowered to `HloModuleProto` (`.hlo.pb`) and
//! HLO text (`.hlo.txt`), plus one `manifest.json`. With no arguments it builds the default
//! set for the embedded Phi-3-mini-4k-instruct config at tp 2, batch 1, with no weights and no
//! network.

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use phi3_neuron::build::manifest::{graph_entry, manifest, weights_table, GraphArtifact, SetInfo};
use phi3_neuron::build::set::{stage_graphs, write_manifest, WriteOptions};
use phi3_neuron::build::{default_jobs, BuiltGraph};
use phi3_neuron::dsl::DType;
use phi3_neuron::models::decoder::{
    AliasKind, CacheWrite, CpuDots, DecodeRows, DecodeScores, DotResult, Fusion, GqaDot, GraphKind,
    GraphOptions, GraphSpec, KvDtype, LinearForm, Matvec, NormImpl, PrefillTail, SamplerKernels,
    Sampling, SingleRowState, VectorOperand,
};
use phi3_neuron::models::{embedded_names, resolve};
use phi3_neuron::neuron::{default_compiler_flags, driver, neff_io_names, Target};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Build decoder HLO graph sets (Phi-3 family, Llama) for AWS Neuron"
)]
struct Args {
    /// Embedded model name (see --list-models) or a path to a config.json or its folder.
    #[arg(long, default_value = "phi-3-mini-4k")]
    model: String,
    /// Tensor-parallel degree.
    #[arg(long, default_value_t = 2)]
    tp: i64,
    /// Shorthand for --max-batch-size and --ctx-batch-size.
    #[arg(long)]
    batch: Option<i64>,
    /// KV-cache rows (sequences served at once) and the token-generation batch.
    #[arg(long)]
    max_batch_size: Option<i64>,
    /// Prompts per context-encoding call (at most --max-batch-size).
    #[arg(long)]
    ctx_batch_size: Option<i64>,
    /// Context-encoding buckets (prompt lengths). Default: 128, 256, ... up to --max-seq-len.
    #[arg(long, value_delimiter = ',')]
    buckets: Option<Vec<i64>>,
    /// Token-generation buckets (cache positions attended to). Default: the --buckets list.
    #[arg(long, value_delimiter = ',')]
    tkg_buckets: Option<Vec<i64>>,
    /// Positions per KV-cache row, shared by every graph. Default: the largest bucket (4096
    /// when no bucket is given).
    #[arg(long)]
    max_seq_len: Option<i64>,
    /// Which graph kinds: cte, tkg.
    #[arg(long, value_delimiter = ',', default_value = "cte,tkg")]
    graphs: Vec<String>,
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Output root; graphs go to <out>/<model>/tp<t>/.
    #[arg(long, default_value = "target/graphs")]
    out: PathBuf,
    /// pb, txt or both.
    #[arg(long, default_value = "both")]
    format: String,
    /// Override the layer count (e.g. 2 for quick experiments).
    #[arg(long)]
    layers: Option<usize>,
    /// neuronx-cc target for the recorded compiler flags: trn1, trn2, trn3 or inf2.
    #[arg(long, default_value = "trn1")]
    target: String,
    #[arg(long)]
    list_models: bool,
    /// Print per-graph statistics and Neuron lint findings.
    #[arg(long)]
    stats: bool,
    /// Also write <graph>.dot: the IR as Graphviz, collapsed by scope (model/layers.N/...).
    #[arg(long)]
    dot: bool,
    /// Graphs built in parallel (default: available cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Q/K/V projection weights: checkpoint (as the checkpoint stores them: fused for Phi-3,
    /// separate for Llama), fused (one qkv_proj per layer) or split.
    #[arg(long, default_value = "checkpoint")]
    qkv: String,
    /// MLP gate/up weights: checkpoint, fused (one gate_up_proj per layer) or split.
    #[arg(long, default_value = "checkpoint")]
    gate_up: String,
    /// Projection matmuls: activation-first (x·wᵀ, NxD's; the neuron preset's), weight-first
    /// (w·xᵀ) or input-major (weights stored [in, out], x·W; the cpu preset's).
    #[arg(long)]
    linear: Option<String>,
    /// neuron (the forms AWS's writers emit, Neuron's sampler kernels), cpu (the forms the PJRT
    /// CPU plugin runs fastest: dus, may-alias, f32 dots, grouped GQA, in-place decode rows;
    /// input-major weights in f32 graphs; weight-first matmuls, an f32 KV state and f32 weights
    /// for contractions from 4096 in bf16 ones) or portable (the neuron forms from primitives
    /// only).
    #[arg(long, default_value = "neuron")]
    preset: String,
    /// Decode cache write: element-scatter (NxD's torch.scatter form; the neuron preset's),
    /// scatter (one windowed scatter of [kv, hd] rows) or dus (one dynamic-update-slice per
    /// sequence; the cpu preset's).
    #[arg(long)]
    cache_write: Option<String>,
    /// KV-state input_output_alias kind: must (AWS writers'; the neuron preset's) or may (the
    /// cpu preset's).
    #[arg(long)]
    kv_alias: Option<String>,
    /// Result dtype of bf16 matmuls: operand (bf16, as AWS writers emit; the neuron preset's)
    /// or f32 (then one convert; the cpu preset's).
    #[arg(long)]
    dot_result: Option<String>,
    /// GQA attention dots: merged (queries [B, kv, g·S, hd]; the neuron preset's) or grouped
    /// ([B, kv, g, S, hd]; the cpu preset's).
    #[arg(long)]
    gqa_dot: Option<String>,
    /// Decode rows: gathered (row b reads state row seq_ids[b]; the neuron preset's) or
    /// in-place (row b is state row b, no gather of the cache; the cpu preset's).
    #[arg(long)]
    decode_rows: Option<String>,
    /// KV-state element type: model (the graphs' dtype; the neuron preset's) or f32 (the cpu
    /// preset's for bf16 graphs: XLA:CPU then converts no cache per step).
    #[arg(long)]
    kv_dtype: Option<String>,
    /// bf16 graphs: store projection weights whose contraction (input features per rank) is at
    /// least K in f32 (the cpu preset's is 4096, where XLA:CPU's bf16 matrix-vector product
    /// slows down tenfold); 0: never.
    #[arg(long, value_name = "K")]
    f32_weights_from: Option<i64>,
    /// bf16 single-row projections (batch-1 decode): direct (the vector from the ops that make
    /// it; the neuron preset's) or gathered (through an identity gather, so that XLA:CPU
    /// computes it once instead of once per weight row; the cpu preset's for bf16).
    #[arg(long)]
    vector_operand: Option<String>,
    /// Prefill's last layer past its attention: all-tokens (as HF and NxD; the neuron
    /// preset's) or last-token (o_proj and MLP on each sequence's last real token only, the
    /// one whose logits the graph returns; the cpu preset's).
    #[arg(long)]
    prefill_tail: Option<String>,
    /// f32 and bf16 projections of up to 8 rows (decode, last-token logits): xla (XLA's dot;
    /// every preset's) or kernel (the phi3 runtime's matrix-vector kernels, typed-FFI custom
    /// calls that only that runtime registers; what `phi3 generate` builds).
    #[arg(long)]
    matvec: Option<String>,
    /// The KV state of a set with one cache row (--max-batch-size 1): rows ([1, kv, S, hd], as
    /// at every batch size; the neuron preset's) or squeezed ([kv, S, hd]: XLA:CPU then updates
    /// it in place at batch-1 decode instead of copying every cache; the cpu preset's).
    #[arg(long)]
    single_row_state: Option<String>,
    /// Batch-1 decode's attention scores: query-first (q·Kᵀ, as HF and NxD; the neuron
    /// preset's) or keys-first (K·qᵀ, which XLA:CPU runs without transposing the key cache;
    /// the cpu preset's).
    #[arg(long)]
    decode_scores: Option<String>,
    /// Which library XLA:CPU runs the dots with: a compile option, listed in each graph's
    /// manifest entry as xla_options (the HLO does not change). xla (XLA's own choice; every
    /// preset's but the f32 cpu preset's), xnnpack (XNNPACK for every dot, past XLA's cost
    /// model: batched f32 decode about twice as fast) or xnnpack-decode (XNNPACK for token
    /// generation, XLA's choice for context encoding; the f32 cpu preset's at --tp 1). Both
    /// XNNPACK choices need --tp 1.
    #[arg(long)]
    cpu_dots: Option<String>,
    /// On-device token selection: none (logits only), greedy (argmax), or on-device (per-row
    /// top-k / top-p / temperature from `sampling_params`, with host-drawn uniforms).
    #[arg(long, default_value = "none")]
    sampling: String,
    /// The on-device sampler's static top-k bound (NxDI's global_topk).
    #[arg(long, default_value_t = 256)]
    max_top_k: i64,
    /// The sampler's argmax/top-k: primitives (runs everywhere) or neuron (AwsNeuronArgMax /
    /// AwsNeuronTopK custom calls). Default: the preset's.
    #[arg(long)]
    sampler_kernels: Option<String>,
    /// Logits: gathered (full vocab on every rank) or sharded (each rank's vocab slice).
    #[arg(long, default_value = "gathered")]
    logits: String,
    /// RMSNorm: primitives, or custom-call (Neuron's AwsNeuronRmsNorm; cannot run on CPU).
    #[arg(long, default_value = "primitives")]
    rmsnorm: String,
    /// Compile every graph to a NEFF with neuronx-cc (needs the Neuron SDK's compiler).
    #[arg(long)]
    compile: bool,
    /// The neuronx-cc to run (default: `neuronx-cc` on PATH).
    #[arg(long)]
    neuronx_cc: Option<PathBuf>,
    /// Replace the default per-graph compiler flags (one string, split like a shell would).
    #[arg(long, allow_hyphen_values = true)]
    compiler_flags: Option<String>,
    /// NEFF cache folder, keyed by proto bytes, flags and compiler version.
    #[arg(long)]
    neff_cache: Option<PathBuf>,
}

/// Splits a flag string like a POSIX shell: whitespace separates words, quotes group them.
fn shell_words(s: &str) -> Result<Vec<String>, String> {
    let (mut words, mut cur, mut quote, mut in_word) = (Vec::new(), String::new(), None, false);
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("--compiler-flags has an unclosed quote: {s}"));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn graph_options(args: &Args, dtype: DType) -> Result<GraphOptions, String> {
    let pick = |flag: &str, v: &str, options: &[&str]| -> Result<usize, String> {
        options
            .iter()
            .position(|o| *o == v)
            .ok_or_else(|| format!("--{flag} must be one of {}, got `{v}`", options.join(", ")))
    };
    let base = match args.preset.as_str() {
        "neuron" => GraphOptions::neuron(),
        "cpu" => GraphOptions::cpu_for(dtype),
        "portable" => GraphOptions::default(),
        other => {
            return Err(format!(
                "--preset must be one of neuron, cpu, portable, got `{other}`"
            ))
        }
    };
    if args.max_top_k < 1 {
        return Err(format!(
            "--max-top-k must be at least 1, got {}",
            args.max_top_k
        ));
    }
    let fusion = [Fusion::Checkpoint, Fusion::Fused, Fusion::Split];
    let fusions = ["checkpoint", "fused", "split"];
    Ok(GraphOptions {
        qkv: fusion[pick("qkv", &args.qkv, &fusions)?],
        gate_up: fusion[pick("gate-up", &args.gate_up, &fusions)?],
        decode_cache_write: match &args.cache_write {
            Some(v) => [
                CacheWrite::ElementScatter,
                CacheWrite::Scatter,
                CacheWrite::DynamicUpdateSlice,
            ][pick("cache-write", v, &["element-scatter", "scatter", "dus"])?],
            None => base.decode_cache_write,
        },
        kv_alias: match &args.kv_alias {
            Some(v) => [AliasKind::Must, AliasKind::May][pick("kv-alias", v, &["must", "may"])?],
            None => base.kv_alias,
        },
        dot_result: match &args.dot_result {
            Some(v) => [DotResult::OperandType, DotResult::F32]
                [pick("dot-result", v, &["operand", "f32"])?],
            None => base.dot_result,
        },
        gqa_dot: match &args.gqa_dot {
            Some(v) => {
                [GqaDot::Merged, GqaDot::Grouped][pick("gqa-dot", v, &["merged", "grouped"])?]
            }
            None => base.gqa_dot,
        },
        decode_rows: match &args.decode_rows {
            Some(v) => [DecodeRows::Gathered, DecodeRows::InPlace]
                [pick("decode-rows", v, &["gathered", "in-place"])?],
            None => base.decode_rows,
        },
        f32_weights_from: match args.f32_weights_from {
            Some(k) if k < 0 => {
                return Err(format!("--f32-weights-from must be 0 or more, got {k}"))
            }
            Some(0) => None,
            Some(k) => Some(k),
            None => base.f32_weights_from,
        },
        vector_operand: match &args.vector_operand {
            Some(v) => [VectorOperand::Direct, VectorOperand::Gathered]
                [pick("vector-operand", v, &["direct", "gathered"])?],
            None => base.vector_operand,
        },
        prefill_tail: match &args.prefill_tail {
            Some(v) => [PrefillTail::AllTokens, PrefillTail::LastToken]
                [pick("prefill-tail", v, &["all-tokens", "last-token"])?],
            None => base.prefill_tail,
        },
        matvec: match &args.matvec {
            Some(v) => [Matvec::Xla, Matvec::Kernel][pick("matvec", v, &["xla", "kernel"])?],
            None => base.matvec,
        },
        single_row_state: match &args.single_row_state {
            Some(v) => [SingleRowState::Rows, SingleRowState::Squeezed]
                [pick("single-row-state", v, &["rows", "squeezed"])?],
            None => base.single_row_state,
        },
        decode_scores: match &args.decode_scores {
            Some(v) => [DecodeScores::QueryFirst, DecodeScores::KeysFirst]
                [pick("decode-scores", v, &["query-first", "keys-first"])?],
            None => base.decode_scores,
        },
        kv_dtype: match &args.kv_dtype {
            Some(v) => [KvDtype::Model, KvDtype::F32][pick("kv-dtype", v, &["model", "f32"])?],
            None => base.kv_dtype,
        },
        sampling: [Sampling::None, Sampling::Greedy, Sampling::OnDevice]
            [pick("sampling", &args.sampling, &["none", "greedy", "on-device"])?],
        sampler_kernels: match &args.sampler_kernels {
            Some(v) => [SamplerKernels::Primitives, SamplerKernels::Neuron]
                [pick("sampler-kernels", v, &["primitives", "neuron"])?],
            None => base.sampler_kernels,
        },
        max_top_k: args.max_top_k,
        gather_logits: pick("logits", &args.logits, &["gathered", "sharded"])? == 0,
        rms_norm: [NormImpl::Primitives, NormImpl::NeuronCustomCall]
            [pick("rmsnorm", &args.rmsnorm, &["primitives", "custom-call"])?],
        linear: match &args.linear {
            Some(v) => [
                LinearForm::ActivationFirst,
                LinearForm::WeightFirst,
                LinearForm::InputMajor,
            ][pick(
                "linear",
                v,
                &["activation-first", "weight-first", "input-major"],
            )?],
            None => base.linear,
        },
        cpu_dots: match &args.cpu_dots {
            Some(v) => {
                let names = ["xla", "xnnpack", "xnnpack-decode"];
                let k = pick("cpu-dots", v, &names)?;
                let dots = [CpuDots::Xla, CpuDots::Xnnpack, CpuDots::XnnpackDecode][k];
                if dots != CpuDots::Xla && args.tp > 1 {
                    return Err(format!(
                        "--cpu-dots {} needs --tp 1, got --tp {}: XLA:CPU's XNNPACK \
                         fusions deadlock across replicas, so multi-replica sets are compiled \
                         without them",
                        names[k], args.tp
                    ));
                }
                dots
            }
            None => base.cpu_dots,
        },
    })
}

/// The process allocates and frees a few hundred thousand small blocks per graph (the proto's
/// strings and vectors) on two or more builder threads. mimalloc serves them from per-thread
/// pages backed by transparent huge pages where the kernel allows them (`enabled` set to
/// `always` or `madvise`): about 230 page faults for the default set instead of glibc's 5,500
/// on 4 KiB pages, and 11-16% less CPU time, at a higher peak RSS (77 MiB against 26 for the
/// default set). Without huge pages it is no faster than glibc. Measured in BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("build-graphs: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    if args.list_models {
        for name in embedded_names() {
            println!("{name}");
        }
        return Ok(());
    }
    let mut model = resolve(&args.model).map_err(|e| e.to_string())?;
    if let Some(n) = args.layers {
        if n == 0 {
            return Err("--layers must be at least 1".into());
        }
        model = model.with_layers(n);
    }
    let dtype = match args.dtype.as_str() {
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        other => return Err(format!("--dtype must be bf16 or f32, got `{other}`")),
    };
    let target = Target::parse(&args.target).ok_or_else(|| {
        let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
        format!(
            "--target must be one of {}, got `{}`",
            names.join(", "),
            args.target
        )
    })?;
    let (write_pb, write_txt) = match args.format.as_str() {
        "pb" => (true, false),
        "txt" => (false, true),
        "both" => (true, true),
        other => return Err(format!("--format must be pb, txt or both, got `{other}`")),
    };
    let max_batch = args.max_batch_size.or(args.batch).unwrap_or(1);
    let ctx_batch = args.ctx_batch_size.or(args.batch).unwrap_or(1);
    for (flag, v) in [
        ("--max-batch-size", max_batch),
        ("--ctx-batch-size", ctx_batch),
    ] {
        if v < 1 {
            return Err(format!("{flag} must be at least 1, got {v}"));
        }
    }
    if ctx_batch > max_batch {
        return Err(format!(
            "--ctx-batch-size {ctx_batch} is larger than --max-batch-size {max_batch} (the cache rows)"
        ));
    }
    let mut kinds = Vec::new();
    for g in &args.graphs {
        let kind = match g.as_str() {
            "cte" => GraphKind::ContextEncoding,
            "tkg" => GraphKind::TokenGeneration,
            other => return Err(format!("--graphs takes cte and/or tkg, got `{other}`")),
        };
        // `--graphs cte,cte` names each graph once: two builds of one file would race.
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    let plan = model.plan(args.tp).map_err(|e| e.to_string())?;
    let limit = model.max_position_embeddings() as i64;
    let explicit: Vec<i64> = args
        .buckets
        .iter()
        .chain(args.tkg_buckets.iter())
        .flatten()
        .copied()
        .collect();
    if let Some(&b) = explicit.iter().find(|&&b| b < 1) {
        return Err(format!("bucket {b} must be at least 1"));
    }
    let max_seq_len = match (args.max_seq_len, explicit.iter().max()) {
        (Some(max), _) => max,
        (None, Some(&b)) => b,
        (None, None) => 4096.min(limit),
    };
    if !(1..=limit).contains(&max_seq_len) {
        return Err(format!(
            "--max-seq-len {max_seq_len} must be between 1 and the model's max_position_embeddings {limit}"
        ));
    }
    // NxDI's automatic buckets: powers of two from 128, then the maximum itself.
    let auto: Vec<i64> = (7..)
        .map(|i| 1i64 << i)
        .take_while(|&b| b < max_seq_len)
        .chain([max_seq_len])
        .collect();
    let sorted = |v: &Option<Vec<i64>>, fallback: &[i64]| -> Vec<i64> {
        let mut v = v.clone().unwrap_or_else(|| fallback.to_vec());
        v.sort();
        v.dedup();
        v
    };
    let cte_buckets = sorted(&args.buckets, &auto);
    let tkg_buckets = sorted(&args.tkg_buckets, &cte_buckets);
    for &b in cte_buckets.iter().chain(&tkg_buckets) {
        if b > max_seq_len {
            return Err(match args.max_seq_len {
                Some(max) => format!("bucket {b} is larger than --max-seq-len {max}"),
                None => format!("bucket {b} is larger than the max sequence length {max_seq_len}"),
            });
        }
    }

    let options = graph_options(&args, dtype)?;
    // Find the compiler before building anything, so a missing one fails fast.
    let compiler = if args.compile {
        if !write_pb {
            return Err("--compile needs the .hlo.pb files: use --format pb or both".into());
        }
        Some(driver::find_compiler(args.neuronx_cc.as_deref()).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let flag_override = args
        .compiler_flags
        .as_deref()
        .map(shell_words)
        .transpose()?;
    let mut specs = Vec::new();
    for &kind in &kinds {
        let buckets = match kind {
            GraphKind::ContextEncoding => &cte_buckets,
            GraphKind::TokenGeneration => &tkg_buckets,
        };
        for &b in buckets {
            let spec = match kind {
                GraphKind::ContextEncoding => {
                    GraphSpec::context_encoding(ctx_batch, b, max_seq_len, dtype)
                }
                GraphKind::TokenGeneration => {
                    GraphSpec::token_generation(max_batch, max_seq_len, dtype).with_bucket(b)
                }
            };
            specs.push(
                spec.with_cache_batch(max_batch)
                    .with_options(options.clone()),
            );
        }
    }

    let dir = args
        .out
        .join(model_dir_name(model.name()))
        .join(format!("tp{}", args.tp));
    let total = Instant::now();
    let progress = ProgressBar::new(specs.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} graphs").expect("valid template"),
    );
    let written = stage_graphs(
        model.as_ref(),
        &plan,
        &specs,
        &dir,
        WriteOptions {
            pb: write_pb,
            txt: write_txt,
            dot: args.dot,
            jobs: args.jobs,
        },
        &|| progress.inc(1),
    );
    progress.finish_and_clear();
    let (written, staged) = written.map_err(|e| e.to_string())?;
    let (built, files_per_graph): (Vec<BuiltGraph>, Vec<Vec<String>>) = written.into_iter().unzip();
    let flags: Vec<Vec<String>> = built
        .iter()
        .map(|b| {
            flag_override
                .clone()
                .unwrap_or_else(|| default_compiler_flags(b.recorded.spec.kind, target))
        })
        .collect();
    // The compiler reads the graph files, so they go into place first; otherwise the manifest
    // is built while the files are still being flushed and goes in with them.
    let (compiled, staged) = match &compiler {
        Some(cc) => {
            staged.commit().map_err(|e| e.to_string())?;
            (Some(compile_graphs(cc, &args, &dir, &built, &flags)?), None)
        }
        None => (None, Some(staged)),
    };
    let mut entries = Vec::new();
    let mut failures = Vec::new();
    for (i, (b, files)) in built.iter().zip(files_per_graph).enumerate() {
        let compile = match &compiled {
            Some((version, results)) => {
                let names = expected_neff_names(&dir, b, version)?;
                Some(match &results[i] {
                    Ok(o) => serde_json::json!({
                        "neff": o.neff.file_name().map(|f| f.to_string_lossy().into_owned()),
                        "neff_bytes": o.neff_bytes,
                        "seconds": o.seconds,
                        "cache_hit": o.cache_hit,
                        "cache_key": o.cache_key,
                        "compiler_version": version,
                        "command": o.command,
                        "neff_io_names": names,
                    }),
                    Err(e) => {
                        failures.push(e.to_string());
                        let mut block = serde_json::json!({
                            "error": e.to_string(),
                            "compiler_version": version,
                            "neff_io_names": names,
                        });
                        if let driver::DriverError::CompileFailed(f) = e {
                            block["compiler_log"] = f.compiler_log.display().to_string().into();
                            block["work_dir"] = f.work_dir.display().to_string().into();
                        }
                        block
                    }
                })
            }
            None => None,
        };
        entries.push(graph_entry(
            model.as_ref(),
            &GraphArtifact {
                built: b,
                files,
                compiler_flags: flags[i].clone(),
                compile,
            },
        ));
    }
    let weights = weights_table(&built.iter().collect::<Vec<_>>()).map_err(|e| e.to_string())?;
    let set = SetInfo {
        model: model.as_ref(),
        plan: &plan,
        dtype,
        target: &args.target,
        options: &options,
        specs: &specs,
    };
    // The manifest goes last, so it never names a file that is not fully written.
    let manifest = manifest(&set, weights, entries);
    match staged {
        Some(staged) => staged.commit_with_manifest(&manifest),
        None => write_manifest(&dir, &manifest),
    }
    .map_err(|e| e.to_string())?;

    println!(
        "{:<16} {:>7} {:>8} {:>11} {:>12} {:>9}",
        "graph", "params", "instrs", "collectives", "proto bytes", "build ms"
    );
    for b in &built {
        println!(
            "{:<16} {:>7} {:>8} {:>11} {:>12} {:>9.1}",
            b.recorded.spec.name(),
            b.stats.parameters,
            b.stats.instructions,
            b.stats.collectives,
            b.proto_len,
            b.build_ms
        );
    }
    if args.stats {
        print_stats(&built);
    }
    if let Some((_, results)) = &compiled {
        for (b, r) in built.iter().zip(results) {
            if let Ok(o) = r {
                println!(
                    "compiled {:<16} {:>12} bytes NEFF in {:>7.2} s{}",
                    b.recorded.spec.name(),
                    o.neff_bytes,
                    o.seconds,
                    if o.cache_hit { " (cache hit)" } else { "" }
                );
            }
        }
    }
    if !failures.is_empty() {
        return Err(format!(
            "{} of {} graphs failed to compile:\n{}",
            failures.len(),
            built.len(),
            failures.join("\n")
        ));
    }
    println!(
        "{} graphs for {} (tp {}, {} layers) in {:.0} ms → {}",
        built.len(),
        model.name(),
        args.tp,
        model.num_layers(),
        total.elapsed().as_secs_f64() * 1e3,
        dir.display()
    );
    // The process ends here, and its memory goes back to the system at once: freeing the
    // graphs' summaries and the manifest one allocation at a time would only delay the exit
    // (about 2 ms of the default set's run).
    std::mem::forget((built, manifest));
    Ok(())
}

type CompileResults = (
    String,
    Vec<Result<driver::CompileOutcome, driver::DriverError>>,
);

/// Runs neuronx-cc on every written `.hlo.pb`, `--jobs` at a time, through the NEFF cache.
fn compile_graphs(
    compiler: &std::path::Path,
    args: &Args,
    dir: &std::path::Path,
    built: &[BuiltGraph],
    flags: &[Vec<String>],
) -> Result<CompileResults, String> {
    let jobs: Vec<driver::CompileJob> = built
        .iter()
        .zip(flags)
        .map(|(b, flags)| {
            let name = b.recorded.spec.name();
            driver::CompileJob {
                hlo_pb: dir.join(format!("{name}.hlo.pb")),
                neff: dir.join(format!("{name}.neff")),
                log: dir.join(format!("{name}.neuronx-cc.log")),
                flags: flags.clone(),
                name,
            }
        })
        .collect();
    let cache = args.neff_cache.clone().unwrap_or_else(|| {
        let home = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        home.join("phi3-neuron").join("neff-cache")
    });
    let parallel = args.jobs.unwrap_or_else(default_jobs);
    let version = driver::compiler_version(compiler).map_err(|e| e.to_string())?;
    let results = driver::compile_all_with_version(compiler, &version, &jobs, parallel, &cache);
    Ok((version, results))
}

/// The NEFF input/output names to expect for a written graph (from its `.hlo.pb`: the built
/// module is freed once written). Expected, not read: no NEFF is opened.
fn expected_neff_names(
    dir: &std::path::Path,
    b: &BuiltGraph,
    compiler_version: &str,
) -> Result<serde_json::Value, String> {
    use prost::Message;
    let path = dir.join(format!("{}.hlo.pb", b.recorded.spec.name()));
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let module = xla_proto::HloModuleProto::decode(bytes.as_slice())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::to_value(neff_io_names(&module, Some(compiler_version))).map_err(|e| e.to_string())
}

fn print_stats(built: &[BuiltGraph]) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!();
    println!(
        "{:<16} {:>12} {:>11} {:>10} {:>11} {:>11} {:>14} {:>14}",
        "graph",
        "GFLOP (dot)",
        "weight MiB",
        "KV MiB",
        "activ. MiB",
        "collectives",
        "coll. MiB/rank",
        "lint"
    );
    for b in built {
        let flagged = b.findings.iter().filter(|f| f.is_flagged()).count();
        let warnings = b.findings.iter().filter(|f| f.is_warning()).count();
        println!(
            "{:<16} {:>12.2} {:>11.1} {:>10.1} {:>11.1} {:>11} {:>14.2} {:>14}",
            b.recorded.spec.name(),
            b.stats.dot_flops as f64 / 1e9,
            mib(b.weight_bytes),
            mib(b.kv_bytes),
            mib(b.stats.activation_bytes),
            b.stats.collectives,
            mib(b.stats.collective_bytes),
            match (flagged, warnings) {
                (0, 0) => "clean".to_string(),
                (0, w) => format!("clean, {w} warn"),
                (e, 0) => format!("{e} flagged"),
                (e, w) => format!("{e} flagged, {w} warn"),
            }
        );
    }
    for b in built {
        println!("\n{} op histogram:", b.recorded.spec.name());
        let mut ops: Vec<(&String, &usize)> = b.stats.op_histogram.iter().collect();
        ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let line: Vec<String> = ops.iter().map(|(op, n)| format!("{op} {n}")).collect();
        println!("  {}", line.join(", "));
        for f in b
            .findings
            .iter()
            .filter(|f| f.is_flagged() || f.is_warning())
        {
            println!(
                "  lint {} {}: {} {} at {}: {}",
                f.severity.name(),
                f.code,
                f.opcode,
                f.instruction,
                f.scope,
                f.message
            );
        }
        let mut info: std::collections::BTreeMap<&str, usize> = Default::default();
        for f in b
            .findings
            .iter()
            .filter(|f| !f.is_flagged() && !f.is_warning())
        {
            *info.entry(f.code).or_default() += 1;
        }
        if !info.is_empty() {
            let line: Vec<String> = info.iter().map(|(c, n)| format!("{c} {n}")).collect();
            println!("  lint info (allow-listed): {}", line.join(", "));
        }
    }
}

/// A folder name from an embedded name or a config path.
fn model_dir_name(name: &str) -> String {
    let p = std::path::Path::new(name);
    let base = if p.file_name().map(|f| f == "config.json").unwrap_or(false) {
        p.parent().and_then(|d| d.file_name())
    } else {
        p.file_name()
    };
    base.and_then(|b| b.to_str()).unwrap_or("model").to_string()
}
