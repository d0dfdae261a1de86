//! Tensor parallelism, following NxD's parallel layers: one graph serves every rank, and each
//! rank's behaviour comes from its shard of the weights. [`plan`] says how a decoder's heads,
//! intermediate size and vocab split across ranks and gives each weight its shard rule;
//! [`linear`] holds the column- and row-parallel linears and the embedding, with their
//! explicit collectives.

pub mod linear;
pub mod plan;

pub use linear::{
    column_parallel_linear, gathered_vector, linear, linear_as, linear_with_bias,
    parallel_embedding, row_parallel_linear, LinearForm, LinearOptions, TensorParallel,
};
pub use plan::{DecoderSizes, KvStrategy, ShardPlan, ShardPlanError};
