//! Compiler tooling that records decoder LLMs (the Phi-3 family, then Llama) as static XLA
//! HLO graphs for AWS Neuron.
//!
//! The pipeline is: typed DSL ([`dsl`]) → petgraph IR ([`ir`]) → `HloModuleProto` and HLO
//! text ([`hlo`]). Tensor-parallel layers and plans live in [`parallel`], models in
//! [`models`], checkpoints and weight shards in [`weights`], the graph-set contract in
//! [`manifest`], the build pipeline in [`build`], the runner in [`run`] and the neuronx-cc
//! driver and lint in [`neuron`].
//!
//! Layers import one way (checked by `tests/layering.rs`): `files`, then `ir`; `hlo`, `dsl`
//! and `weights` on `ir`; `manifest` on those; `neuron` and `run` on `hlo`; `parallel` on
//! `dsl`; `models` on `parallel`; `build` on everything below it.

pub mod build;
pub mod dsl;
pub mod files;
pub mod hlo;
pub mod ir;
pub mod manifest;
pub mod models;
pub mod neuron;
pub mod parallel;
pub mod run;
pub mod weights;

pub use dsl::{DType, Graph, GraphBuilder, Tensor};
