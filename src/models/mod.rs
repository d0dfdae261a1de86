//! Model definitions recorded with the DSL.

pub mod phi3;
