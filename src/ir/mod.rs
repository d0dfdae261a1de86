//! The intermediate representation: typed plain-data nodes on a petgraph `StableGraph`, a
//! verifier that reports every error at once, and small composable passes.

pub mod emit;
pub mod error;
pub mod graph;
pub mod literal;
pub mod ops;
pub mod passes;
pub mod types;
pub mod verify;

pub use error::ShapeError;
pub use graph::{Alias, AliasKind, Graph, Node, NodeId, Operands, Provenance};
pub use literal::Literal;
pub use ops::Op;
pub use types::{ArrayType, DType, Type};
pub use verify::{verify, verify_recorded, VerifyError, VerifyErrors};
