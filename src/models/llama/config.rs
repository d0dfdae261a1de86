//! Llama configuration (Hugging Face `model_type: llama`), parsed and validated as
//! transformers 5 reads `configuration_llama.py`:
//!
//! * `head_dim` defaults to `hidden_size / num_attention_heads` and may differ from it;
//! * `num_key_value_heads` defaults to `num_attention_heads`;
//! * RoPE comes from `rope_scaling` or, when that is null/absent, `rope_parameters`; the type is
//!   `rope_type` or `type`: `default` (also a null dict) or `llama3` (`factor`,
//!   `low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`, all required);
//!   `rope_theta` from the dict, else the top level, else 10000;
//! * `attention_bias` (on q/k/v/o) and `mlp_bias` (on gate/up/down) default to false,
//!   `tie_word_embeddings` to false, `rms_norm_eps` to 1e-6.
//!
//! Llama-3.2-1B, Llama-3.2-3B and Llama-3.1-8B are embedded ([`EMBEDDED_MODELS`]).

use serde::Deserialize;
use std::path::Path;

use crate::models::config::{parse_raw, read_text, ConfigError, Ctx, TokenIds};

/// The embedded `config.json` files, as `(short name, JSON text)`: the shape and RoPE fields of
/// the public Hugging Face files.
pub const EMBEDDED_MODELS: &[(&str, &str)] = &[
    ("llama-3.2-1b", include_str!("configs/llama-3.2-1b.json")),
    ("llama-3.2-3b", include_str!("configs/llama-3.2-3b.json")),
    ("llama-3.1-8b", include_str!("configs/llama-3.1-8b.json")),
];

pub fn embedded_names() -> impl Iterator<Item = &'static str> {
    EMBEDDED_MODELS.iter().map(|(name, _)| *name)
}

pub fn embedded_json(name: &str) -> Option<&'static str> {
    EMBEDDED_MODELS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, json)| *json)
}

/// Rotary-embedding scaling.
#[derive(Clone, Debug, PartialEq)]
pub enum LlamaRope {
    Default,
    /// Llama 3 frequency scaling (see `decoder::rope::llama3_inverse_frequencies`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// A validated Llama configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// The embedded short name, or the source/path the config was read from.
    pub name: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope: LlamaRope,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRope {
    #[serde(rename = "type")]
    type_: Option<String>,
    rope_type: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawConfig {
    model_type: Option<String>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    hidden_act: Option<String>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<TokenIds>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
}

impl LlamaConfig {
    pub fn from_json_str(json: &str, source: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = parse_raw::<RawConfig, RawRope>(json, source)?;
        Self::validate(raw, source)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_json_str(&read_text(path)?, &path.display().to_string())
    }

    pub fn embedded(name: &str) -> Result<Self, ConfigError> {
        let json = embedded_json(name).ok_or_else(|| ConfigError::UnknownModel {
            name: name.to_string(),
            valid: embedded_names().collect::<Vec<_>>().join(", "),
        })?;
        Self::from_json_str(json, name)
    }

    /// The same model cut to `n` decoder layers.
    pub fn with_layers(mut self, n: usize) -> Self {
        self.num_hidden_layers = n;
        self
    }

    fn validate(raw: RawConfig, origin: &str) -> Result<Self, ConfigError> {
        let cx = Ctx { origin };
        cx.model_type(raw.model_type.as_deref(), "llama")?;
        cx.silu(raw.hidden_act.as_deref())?;
        let hidden_size = cx.positive_size(raw.hidden_size, "hidden_size")?;
        let intermediate_size = cx.positive_size(raw.intermediate_size, "intermediate_size")?;
        let num_hidden_layers = cx.positive_size(raw.num_hidden_layers, "num_hidden_layers")?;
        let num_attention_heads =
            cx.positive_size(raw.num_attention_heads, "num_attention_heads")?;
        let num_key_value_heads = match raw.num_key_value_heads {
            None => num_attention_heads,
            v => cx.positive_size(v, "num_key_value_heads")?,
        };
        let vocab_size = cx.positive_size(raw.vocab_size, "vocab_size")?;
        let max_position_embeddings =
            cx.positive_size(raw.max_position_embeddings, "max_position_embeddings")?;
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(cx.invalid(
                "num_key_value_heads",
                format!(
                    "num_attention_heads ({num_attention_heads}) is not a multiple of \
                     num_key_value_heads ({num_key_value_heads})"
                ),
            ));
        }
        let head_dim = match raw.head_dim {
            Some(hd) => cx.positive_size(Some(hd), "head_dim")?,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(cx.invalid(
                    "num_attention_heads",
                    format!(
                        "num_attention_heads ({num_attention_heads}) does not divide hidden_size \
                         ({hidden_size}) and no head_dim is given"
                    ),
                ))
            }
        };
        if head_dim % 2 == 1 {
            return Err(cx.invalid("head_dim", format!("{head_dim} must be even for RoPE")));
        }
        let rms_norm_eps = cx.positive_f64(raw.rms_norm_eps.unwrap_or(1e-6), "rms_norm_eps")?;

        let (rope_key, rope_raw) = match (raw.rope_scaling, raw.rope_parameters) {
            (Some(r), _) => ("rope_scaling", r),
            (None, Some(r)) => ("rope_parameters", r),
            (None, None) => ("rope_scaling", RawRope::default()),
        };
        let field = |name: &str| format!("{rope_key}.{name}");
        let (theta, theta_field) = match (rope_raw.rope_theta, raw.rope_theta) {
            (Some(t), _) => (t, field("rope_theta")),
            (None, Some(t)) => (t, "rope_theta".to_string()),
            (None, None) => (10_000.0, "rope_theta".to_string()),
        };
        let rope_theta = cx.positive_f64(theta, &theta_field)?;
        let (type_field, rope_type) = match (&rope_raw.rope_type, &rope_raw.type_) {
            (Some(t), _) => (field("rope_type"), t.as_str()),
            (None, Some(t)) => (field("type"), t.as_str()),
            (None, None) => (field("rope_type"), "default"),
        };
        let rope = match rope_type {
            "default" => LlamaRope::Default,
            "llama3" => {
                let need = |v: Option<f64>, name: &str| -> Result<f64, ConfigError> {
                    let v = v.ok_or_else(|| cx.missing(&field(name), " (required for llama3)"))?;
                    cx.positive_f64(v, &field(name))
                };
                let factor = need(rope_raw.factor, "factor")?;
                let low_freq_factor = need(rope_raw.low_freq_factor, "low_freq_factor")?;
                let high_freq_factor = need(rope_raw.high_freq_factor, "high_freq_factor")?;
                if high_freq_factor <= low_freq_factor {
                    return Err(cx.invalid(
                        &field("high_freq_factor"),
                        format!(
                            "{high_freq_factor} must be larger than low_freq_factor {low_freq_factor}"
                        ),
                    ));
                }
                let omax = cx.positive_size(
                    rope_raw.original_max_position_embeddings,
                    &field("original_max_position_embeddings"),
                )?;
                LlamaRope::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings: omax,
                }
            }
            other => {
                return Err(ConfigError::UnsupportedRopeType {
                    origin: origin.to_string(),
                    field: type_field,
                    rope_type: other.to_string(),
                    supported: "Llama supports \"default\" and \"llama3\"",
                })
            }
        };
        Ok(LlamaConfig {
            name: origin.to_string(),
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size,
            max_position_embeddings,
            rms_norm_eps,
            rope_theta,
            rope,
            attention_bias: raw.attention_bias.unwrap_or(false),
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            bos_token_id: raw.bos_token_id,
            eos_token_ids: raw.eos_token_id.map(|e| e.to_vec()).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn value(name: &str) -> Value {
        serde_json::from_str(embedded_json(name).unwrap()).unwrap()
    }

    fn parse(v: &Value) -> Result<LlamaConfig, ConfigError> {
        LlamaConfig::from_json_str(&v.to_string(), "test-src")
    }

    #[test]
    fn embedded_configs_parse() {
        let one = LlamaConfig::embedded("llama-3.2-1b").unwrap();
        assert_eq!(
            (
                one.hidden_size,
                one.num_attention_heads,
                one.num_key_value_heads,
                one.head_dim
            ),
            (2048, 32, 8, 64)
        );
        assert!(one.tie_word_embeddings);
        assert_eq!(
            one.rope,
            LlamaRope::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192
            }
        );
        let three = LlamaConfig::embedded("llama-3.2-3b").unwrap();
        assert_eq!((three.head_dim, three.num_attention_heads), (128, 24));
        let eight = LlamaConfig::embedded("llama-3.1-8b").unwrap();
        assert_eq!((eight.head_dim, eight.intermediate_size), (128, 14336));
        assert!(!eight.tie_word_embeddings);
        assert_eq!(eight.eos_token_ids, vec![128001]);
    }

    #[test]
    fn defaults_and_lists() {
        let mut v = value("llama-3.2-1b");
        let o = v.as_object_mut().unwrap();
        for k in ["head_dim", "rope_scaling", "rms_norm_eps", "attention_bias"] {
            o.remove(k);
        }
        o.insert("eos_token_id".into(), json!([128001, 128008, 128009]));
        let c = parse(&v).unwrap();
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.rope, LlamaRope::Default);
        assert_eq!(c.rms_norm_eps, 1e-6);
        assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = value("llama-3.2-1b");
        v["rope_scaling"]["rope_type"] = json!("yarn");
        let msg = parse(&v).unwrap_err().to_string();
        assert!(
            msg.contains("rope_scaling.rope_type") && msg.contains("yarn"),
            "{msg}"
        );
        let mut v = value("llama-3.2-1b");
        v["rope_scaling"]
            .as_object_mut()
            .unwrap()
            .remove("low_freq_factor");
        let msg = parse(&v).unwrap_err().to_string();
        assert!(
            msg.contains("rope_scaling.low_freq_factor") && msg.contains("missing"),
            "{msg}"
        );
        let mut v = value("llama-3.2-1b");
        v["num_key_value_heads"] = json!(5);
        assert!(parse(&v)
            .unwrap_err()
            .to_string()
            .contains("num_key_value_heads"));
        let mut v = value("llama-3.2-1b");
        v["hidden_size"] = json!("big");
        let msg = parse(&v).unwrap_err().to_string();
        assert!(
            msg.contains("test-src") && msg.contains("hidden_size"),
            "{msg}"
        );
        let mut v = value("llama-3.2-1b");
        v["model_type"] = json!("phi3");
        assert!(parse(&v)
            .unwrap_err()
            .to_string()
            .contains("expected \"llama\""));
    }
}
