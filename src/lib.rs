//! Compiler tooling that records the Phi-3 family as static XLA HLO graphs for AWS Neuron.
//!
//! The pipeline is: typed DSL ([`dsl`]) → petgraph IR ([`ir`]) → `HloModuleProto` and HLO
//! text ([`hlo`]). Tensor-parallel layers live in [`parallel`], models in [`models`], and the
//! neuronx-cc driver in [`neuron`].

pub mod dsl;
pub mod hlo;
pub mod ir;
pub mod models;
pub mod neuron;
pub mod parallel;

pub use dsl::{DType, Graph, GraphBuilder, Tensor};
