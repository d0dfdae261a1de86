//! Runs a checkpoint (Phi-3 family or Llama) through the compiled graphs on a PJRT plugin,
//! one device per tensor-parallel rank, and prints JSON. The command lines are a stable
//! contract:
//!
//! ```text
//! phi3 logits   --model DIR --prompt-ids 1,2,3 [--tp N] [--dtype f32|bf16]
//! phi3 generate --model DIR --prompt-ids 1,2,3 --max-new-tokens K [--tp N] [--dtype f32|bf16]
//! phi3 shard    --model DIR --tp N --out DIR [--dtype f32|bf16]
//! ```
//!
//! `logits` prints `{"last_logits": [...]}`, `generate` prints `{"tokens": [...]}` (the new
//! tokens only, greedy). The plugin comes from `PJRT_PLUGIN` (`tools/install-pjrt-plugin`).
//! The graphs use the CPU preset (`GraphOptions::cpu`): the same numerics as the Neuron
//! defaults, in the forms XLA:CPU runs fastest.

use clap::{Args, Parser, Subcommand};
use phi3_neuron::build::session::engine_from_checkpoint;
use phi3_neuron::dsl::DType;
use phi3_neuron::models::decoder::{GraphOptions, GraphSpec};
use phi3_neuron::models::from_file;
use phi3_neuron::run::Engine;
use phi3_neuron::weights::{write_rank_files, Checkpoint};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "Run decoder graphs (Phi-3 family, Llama) on a PJRT plugin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the logits of the last prompt position.
    Logits(Common),
    /// Greedily generate new tokens.
    Generate {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        max_new_tokens: usize,
    },
    /// Shard a checkpoint for tensor parallelism: writes OUT/tp{r}.safetensors per rank, with the
    /// tensors each rank's graph inputs take (names as in manifest.json).
    Shard {
        /// Hugging Face model folder: config.json plus model.safetensors (or a sharded index).
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        tp: i64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "bf16")]
        dtype: String,
    },
}

#[derive(Args)]
struct Common {
    /// Hugging Face model folder: config.json plus model.safetensors (or a sharded index).
    #[arg(long)]
    model: PathBuf,
    /// Comma-separated prompt token ids.
    #[arg(long, value_delimiter = ',', required = true)]
    prompt_ids: Vec<i32>,
    /// Tensor-parallel degree: the number of CPU devices.
    #[arg(long, default_value_t = 1)]
    tp: i64,
    #[arg(long, default_value = "f32")]
    dtype: String,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(json) => {
            println!("{json}");
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

fn engine(c: &Common, new_tokens: usize) -> Result<Engine, String> {
    let dtype = parse_dtype(&c.dtype)?;
    if c.tp < 1 {
        return Err(format!("--tp must be at least 1, got {}", c.tp));
    }
    let model = from_file(&c.model.join("config.json")).map_err(|e| e.to_string())?;
    let limit = model.max_position_embeddings();
    match c.prompt_ids.len().checked_add(new_tokens) {
        Some(n) if n <= limit => {}
        _ => {
            return Err(format!(
                "{} prompt tokens + {new_tokens} new tokens exceed the model's max_position_embeddings {limit}",
                c.prompt_ids.len()
            ))
        }
    }
    model.plan(c.tp).map_err(|e| e.to_string())?;
    let plugin = pjrt_runtime::Plugin::from_env().map_err(|e| e.to_string())?;
    // One cache long enough for the prompt and every new token, rounded up to a multiple of 8.
    let needed = (c.prompt_ids.len() + new_tokens).max(1) as i64;
    let max_seq_len = (needed + 7) / 8 * 8;
    engine_from_checkpoint(
        &plugin,
        &c.model,
        c.tp,
        dtype,
        max_seq_len,
        GraphOptions::cpu(),
    )
    .map_err(|e| e.to_string())
}

fn run(cli: Cli) -> Result<String, String> {
    match cli.command {
        Command::Logits(c) => {
            let logits = engine(&c, 0)?
                .last_logits(&c.prompt_ids)
                .map_err(|e| e.to_string())?;
            Ok(serde_json::json!({ "last_logits": logits }).to_string())
        }
        Command::Shard {
            model,
            tp,
            out,
            dtype,
        } => {
            let dtype = parse_dtype(&dtype)?;
            let cfg = from_file(&model.join("config.json")).map_err(|e| e.to_string())?;
            let plan = cfg.plan(tp).map_err(|e| e.to_string())?;
            // The weights every graph of a default-knob set declares.
            let spec = GraphSpec::context_encoding(1, 1, 1, dtype);
            let decls = cfg.record(&plan, &spec).map_err(|e| e.to_string())?.weights;
            let ckpt = Checkpoint::open(&model).map_err(|e| e.to_string())?;
            let files =
                write_rank_files(&ckpt, &decls, tp as usize, &out).map_err(|e| e.to_string())?;
            let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            Ok(serde_json::json!({ "files": files }).to_string())
        }
        Command::Generate {
            common,
            max_new_tokens,
        } => {
            let tokens = engine(&common, max_new_tokens)?
                .generate(&common.prompt_ids, max_new_tokens)
                .map_err(|e| e.to_string())?;
            Ok(serde_json::json!({ "tokens": tokens }).to_string())
        }
    }
}
