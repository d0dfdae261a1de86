//! Builds the Phi-3 graph set: for each bucket a context-encoding and a token-generation
//! graph, lowered to `HloModuleProto` (`.hlo.pb`) and HLO text (`.hlo.txt`), plus one
//! `manifest.json`. With no arguments it builds the default set for the embedded
//! Phi-3-mini-4k-instruct config at tp 2, batch 1, with no weights and no network.

use clap::Parser;
use phi3_neuron::dsl::DType;
use phi3_neuron::hlo::{lower, print_module, LowerOptions, PrintOptions};
use phi3_neuron::models::phi3::config::embedded_names;
use phi3_neuron::models::phi3::graph::record;
use phi3_neuron::models::phi3::{GraphKind, GraphSpec, Phi3Config, ShardPlan};
use phi3_neuron::neuron::artifacts::write_atomic;
use phi3_neuron::neuron::manifest::{graph_entry, manifest, GraphArtifact};
use phi3_neuron::neuron::{default_compiler_flags, Target};
use prost::Message;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(version, about = "Build Phi-3 HLO graphs for AWS Neuron")]
struct Args {
    /// Embedded model name (see --list-models) or a path to a config.json or its folder.
    #[arg(long, default_value = "phi-3-mini-4k")]
    model: String,
    /// Tensor-parallel degree.
    #[arg(long, default_value_t = 2)]
    tp: i64,
    #[arg(long, default_value_t = 1)]
    batch: i64,
    /// Context-encoding buckets; each also gets a token-generation graph with that cache length
    /// unless --max-seq-len fixes one cache length for all graphs.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "128,256,512,1024,2048,4096"
    )]
    buckets: Vec<i64>,
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
    /// neuronx-cc target for the recorded compiler flags: trn1, trn2 or inf2.
    #[arg(long, default_value = "trn1")]
    target: String,
    #[arg(long)]
    list_models: bool,
}

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
    let mut cfg = Phi3Config::resolve(&args.model).map_err(|e| e.to_string())?;
    if let Some(n) = args.layers {
        if n == 0 {
            return Err("--layers must be at least 1".into());
        }
        cfg = cfg.with_layers(n);
    }
    let dtype = match args.dtype.as_str() {
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        other => return Err(format!("--dtype must be bf16 or f32, got `{other}`")),
    };
    let target = Target::parse(&args.target)
        .ok_or_else(|| format!("--target must be trn1, trn2 or inf2, got `{}`", args.target))?;
    let (write_pb, write_txt) = match args.format.as_str() {
        "pb" => (true, false),
        "txt" => (false, true),
        "both" => (true, true),
        other => return Err(format!("--format must be pb, txt or both, got `{other}`")),
    };
    if args.batch < 1 {
        return Err(format!("--batch must be at least 1, got {}", args.batch));
    }
    let mut kinds = Vec::new();
    for g in &args.graphs {
        match g.as_str() {
            "cte" => kinds.push(GraphKind::ContextEncoding),
            "tkg" => kinds.push(GraphKind::TokenGeneration),
            other => return Err(format!("--graphs takes cte and/or tkg, got `{other}`")),
        }
    }
    let plan = ShardPlan::new(&cfg, args.tp).map_err(|e| e.to_string())?;
    let mut buckets = args.buckets.clone();
    buckets.sort();
    buckets.dedup();
    if let Some(&b) = buckets.iter().find(|&&b| b < 1) {
        return Err(format!("bucket {b} must be at least 1"));
    }
    if let (Some(max), Some(&b)) = (args.max_seq_len, buckets.last()) {
        if b > max {
            return Err(format!("bucket {b} is larger than --max-seq-len {max}"));
        }
    }

    let mut specs = Vec::new();
    for &kind in &kinds {
        let lengths: Vec<i64> = match (kind, args.max_seq_len) {
            (GraphKind::TokenGeneration, Some(max)) => vec![max],
            _ => buckets.clone(),
        };
        for b in lengths {
            let max = args.max_seq_len.unwrap_or(b);
            specs.push(match kind {
                GraphKind::ContextEncoding => {
                    GraphSpec::context_encoding(args.batch, b, max, dtype)
                }
                GraphKind::TokenGeneration => GraphSpec::token_generation(args.batch, max, dtype),
            });
        }
    }

    let dir = args
        .out
        .join(model_dir_name(&cfg.name))
        .join(format!("tp{}", args.tp));
    let total = Instant::now();
    let mut rows = Vec::new();
    let mut entries = Vec::new();
    for spec in &specs {
        let start = Instant::now();
        let recorded = record(&cfg, &plan, spec).map_err(|e| e.to_string())?;
        let mut graph = recorded.graph.clone();
        phi3_neuron::ir::passes::optimize(&mut graph);
        let module = lower(&graph, &LowerOptions::default()).map_err(|e| e.to_string())?;
        let bytes = module.encode_to_vec();
        let mut files = Vec::new();
        let name = spec.name();
        if write_pb {
            let f = format!("{name}.hlo.pb");
            write_atomic(&dir.join(&f), &bytes)
                .map_err(|e| format!("{}: {e}", dir.join(&f).display()))?;
            files.push(f);
        }
        if write_txt {
            let f = format!("{name}.hlo.txt");
            let text = print_module(
                &module,
                &PrintOptions {
                    replica_count: Some(args.tp),
                },
            );
            write_atomic(&dir.join(&f), text.as_bytes())
                .map_err(|e| format!("{}: {e}", dir.join(&f).display()))?;
            files.push(f);
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let instrs: usize = module
            .computations
            .iter()
            .map(|c| c.instructions.len())
            .sum();
        let collectives = module
            .computations
            .iter()
            .flat_map(|c| &c.instructions)
            .filter(|i| {
                matches!(
                    i.opcode.as_str(),
                    "all-reduce" | "all-gather" | "reduce-scatter"
                )
            })
            .count();
        rows.push((
            name,
            recorded.inputs.len(),
            instrs,
            collectives,
            bytes.len(),
            ms,
        ));
        let mut r = recorded;
        r.graph = graph;
        entries.push(graph_entry(
            &GraphArtifact {
                recorded: &r,
                proto_bytes: &bytes,
                files,
                compiler_flags: default_compiler_flags(spec.kind, target),
            },
            &plan,
        ));
    }
    let max_len = specs.iter().map(|s| s.max_seq_len).max().unwrap_or(0);
    let m = manifest(
        &cfg,
        &plan,
        args.batch,
        max_len,
        &args.dtype,
        &args.target,
        entries,
    );
    let text = serde_json::to_string_pretty(&m).map_err(|e| e.to_string())? + "\n";
    // The manifest goes last, so it never names a file that is not fully written.
    write_atomic(&dir.join("manifest.json"), text.as_bytes())
        .map_err(|e| format!("{}: {e}", dir.display()))?;

    println!(
        "{:<16} {:>7} {:>8} {:>11} {:>12} {:>9}",
        "graph", "params", "instrs", "collectives", "proto bytes", "build ms"
    );
    for (name, params, instrs, coll, bytes, ms) in &rows {
        println!("{name:<16} {params:>7} {instrs:>8} {coll:>11} {bytes:>12} {ms:>9.1}");
    }
    println!(
        "{} graphs for {} (tp {}, {} layers) in {:.0} ms → {}",
        rows.len(),
        cfg.name,
        args.tp,
        cfg.num_hidden_layers,
        total.elapsed().as_secs_f64() * 1e3,
        dir.display()
    );
    Ok(())
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
