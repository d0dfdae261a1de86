//! The Phi-3 family (Hugging Face `model_type: phi3`).

pub mod config;
pub mod graph;
pub mod plan;
pub mod runner;
pub mod weights;

pub use config::Phi3Config;
pub use graph::{GraphKind, GraphOptions, GraphSpec};
pub use plan::ShardPlan;
