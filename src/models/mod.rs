//! Model definitions recorded with the DSL: [`decoder`] holds what every decoder-only model
//! shares; [`phi3`] and [`llama`] are the families, each mirroring its Hugging Face modeling
//! file; [`config`] dispatches a `config.json` to its family by `model_type`.

pub mod config;
pub mod decoder;
pub mod llama;
pub mod phi3;

pub use config::{embedded_names, from_file, from_json_str, resolve, ConfigError};
pub use decoder::DecoderModel;
