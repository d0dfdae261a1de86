//! Tensor-parallel layers built from DSL primitives and explicit collectives.
