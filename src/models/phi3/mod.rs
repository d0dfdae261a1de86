//! The Phi-3 family (Hugging Face `model_type: phi3`).

pub mod config;
