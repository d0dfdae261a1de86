//! Phi-3 family configuration: parsing and validation of Hugging Face `config.json` files
//! (`model_type: phi3`).
//!
//! The six public configs of Phi-3-mini-4k/-128k, Phi-3-medium-4k/-128k, Phi-3.5-mini and
//! Phi-4-mini are embedded in the binary (see [`EMBEDDED_MODELS`]); any other `config.json` can
//! be loaded with [`Phi3Config::from_file`] or [`Phi3Config::resolve`].
//!
//! Parsing follows transformers 5 (`configuration_phi3.py`, `modeling_rope_utils.py`):
//!
//! * RoPE parameters come from `rope_scaling` (the spelling of every shipped config) or, when
//!   `rope_scaling` is null/absent/empty, from the newer `rope_parameters`. The type is read from
//!   `rope_type` or `type`. `"su"` and `"yarn"` are legacy aliases of `"longrope"`; `"default"`,
//!   a missing type or a null dict mean plain RoPE. Every other type is rejected.
//! * `rope_theta` and `partial_rotary_factor` are taken from the RoPE dict when present there,
//!   otherwise from the top level (defaults 10000 and 1.0).
//! * The LongRoPE attention factor is the transformers 5 value: `factor` is the dict's `factor`
//!   or `max_position_embeddings / original_max_position_embeddings`; `att = 1` if
//!   `factor <= 1`, else `sqrt(1 + ln(factor) / ln(original_max_position_embeddings))`; an
//!   explicit `attention_factor` wins.
//!
//! Deliberate strictness beyond transformers: `original_max_position_embeddings` is required for
//! LongRoPE (transformers would silently assume 4096), a `head_dim` key that differs from
//! `hidden_size / num_attention_heads` is rejected, and a RoPE dict with factor lists but no
//! type is rejected rather than silently treated as plain RoPE.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

pub use crate::models::config::ConfigError;
use crate::models::config::{parse_raw, read_text, Ctx, TokenIds};

/// The embedded `config.json` files, as `(short name, JSON text)`. The JSON is byte-for-byte the
/// public Hugging Face file (see `shared/reference/configs/README.md` for provenance).
pub const EMBEDDED_MODELS: &[(&str, &str)] = &[
    ("phi-3-mini-4k", include_str!("configs/phi-3-mini-4k.json")),
    (
        "phi-3-mini-128k",
        include_str!("configs/phi-3-mini-128k.json"),
    ),
    (
        "phi-3-medium-4k",
        include_str!("configs/phi-3-medium-4k.json"),
    ),
    (
        "phi-3-medium-128k",
        include_str!("configs/phi-3-medium-128k.json"),
    ),
    ("phi-3.5-mini", include_str!("configs/phi-3.5-mini.json")),
    ("phi-4-mini", include_str!("configs/phi-4-mini.json")),
];

/// Short names of the embedded configs, in [`EMBEDDED_MODELS`] order.
pub fn embedded_names() -> impl Iterator<Item = &'static str> {
    EMBEDDED_MODELS.iter().map(|(name, _)| *name)
}

/// The JSON text of an embedded config, if `name` is one of [`embedded_names`].
pub fn embedded_json(name: &str) -> Option<&'static str> {
    EMBEDDED_MODELS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, json)| *json)
}

fn embedded_names_list() -> String {
    embedded_names().collect::<Vec<_>>().join(", ")
}

/// The MLP activation. Only SiLU exists in the Phi-3 family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HiddenAct {
    Silu,
}

impl HiddenAct {
    /// The Hugging Face spelling (`"silu"`).
    pub fn as_str(self) -> &'static str {
        match self {
            HiddenAct::Silu => "silu",
        }
    }
}

impl fmt::Display for HiddenAct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rotary-embedding scaling.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE: `inv_i = 1 / theta^(2i / rotary_dim)`, attention factor 1.
    Default,
    /// LongRoPE (HF `longrope`, legacy `su`/`yarn`): `inv_i = 1 / (ext[i] * theta^(2i /
    /// rotary_dim))` with `ext = long_factor` when `max(position_ids) + 1 >
    /// original_max_position_embeddings`, else `short_factor`; cos and sin are both multiplied by
    /// `attention_factor`. Each list has `rotary_dim / 2` entries.
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        attention_factor: f64,
    },
}

impl RopeScaling {
    /// The factor that multiplies cos and sin (1.0 for plain RoPE).
    pub fn attention_factor(&self) -> f64 {
        match self {
            RopeScaling::Default => 1.0,
            RopeScaling::LongRope {
                attention_factor, ..
            } => *attention_factor,
        }
    }

    /// True for [`RopeScaling::LongRope`].
    pub fn is_long_rope(&self) -> bool {
        matches!(self, RopeScaling::LongRope { .. })
    }
}

/// A validated Phi-3 family configuration: exactly what the graph builders need.
#[derive(Clone, Debug, PartialEq)]
pub struct Phi3Config {
    /// The embedded short name, or the source/path the config was read from.
    pub name: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// `hidden_size / num_attention_heads`.
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    /// Pretraining context length; LongRoPE switches to the long factors past it. Equals
    /// `max_position_embeddings` when a plain-RoPE config omits it.
    pub original_max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Fraction of each head that rotates, in (0, 1]; 1.0 unless given.
    pub partial_rotary_factor: f64,
    /// Each query attends to at most this many keys (itself included); `None` = full causal.
    pub sliding_window: Option<u64>,
    pub tie_word_embeddings: bool,
    pub hidden_act: HiddenAct,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    /// The first of `eos_token_ids`.
    pub eos_token_id: Option<u32>,
    /// `eos_token_id` as written: one id or a list.
    pub eos_token_ids: Vec<u32>,
    pub rope: RopeScaling,
}

/// `rope_scaling` / `rope_parameters` as written in the JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRope {
    #[serde(rename = "type")]
    type_: Option<String>,
    rope_type: Option<String>,
    short_factor: Option<Vec<f64>>,
    long_factor: Option<Vec<f64>>,
    factor: Option<f64>,
    attention_factor: Option<f64>,
    rope_theta: Option<f64>,
    partial_rotary_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
}

impl RawRope {
    fn is_empty(&self) -> bool {
        self.type_.is_none()
            && self.rope_type.is_none()
            && self.short_factor.is_none()
            && self.long_factor.is_none()
            && self.factor.is_none()
            && self.attention_factor.is_none()
            && self.rope_theta.is_none()
            && self.partial_rotary_factor.is_none()
            && self.original_max_position_embeddings.is_none()
    }
}

/// `config.json` as written; unknown keys are ignored.
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
    original_max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    partial_rotary_factor: Option<f64>,
    sliding_window: Option<u64>,
    tie_word_embeddings: Option<bool>,
    hidden_act: Option<String>,
    pad_token_id: Option<u32>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<TokenIds>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
}

/// Normalises a RoPE type spelling; `None` = unsupported.
fn canonical_rope_type(t: &str) -> Option<&'static str> {
    match t {
        "default" => Some("default"),
        "longrope" | "su" | "yarn" => Some("longrope"),
        _ => None,
    }
}

impl Phi3Config {
    /// Parses and validates a `config.json` text. `source` names it in errors and becomes
    /// [`Phi3Config::name`].
    pub fn from_json_str(json: &str, source: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = parse_raw::<RawConfig, RawRope>(json, source)?;
        Self::validate(raw, source)
    }

    /// Reads and parses a `config.json` file; errors name the path.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let json = read_text(path)?;
        Self::from_json_str(&json, &path.display().to_string())
    }

    /// One of the embedded configs by short name (see [`embedded_names`]).
    pub fn embedded(name: &str) -> Result<Self, ConfigError> {
        let json = embedded_json(name).ok_or_else(|| ConfigError::UnknownModel {
            name: name.to_string(),
            valid: embedded_names_list(),
        })?;
        Self::from_json_str(json, name)
    }

    /// An embedded short name first; otherwise a path to a `config.json` file or to a directory
    /// containing one.
    pub fn resolve(name_or_path: &str) -> Result<Self, ConfigError> {
        if embedded_json(name_or_path).is_some() {
            return Self::embedded(name_or_path);
        }
        let path = Path::new(name_or_path);
        if path.is_dir() {
            Self::from_file(&path.join("config.json"))
        } else if path.exists() {
            Self::from_file(path)
        } else {
            Err(ConfigError::NotFound {
                name: name_or_path.to_string(),
                valid: embedded_names_list(),
            })
        }
    }

    /// The same model cut to `n` decoder layers (for small test graphs).
    pub fn with_layers(mut self, n: usize) -> Self {
        self.num_hidden_layers = n;
        self
    }

    /// Channels of each head that rotate: `int(head_dim * partial_rotary_factor)`; the rest pass
    /// through. Always even and positive for a validated config.
    pub fn rotary_dim(&self) -> usize {
        rotary_dim(self.head_dim, self.partial_rotary_factor)
    }

    /// Query heads per KV head (`num_attention_heads / num_key_value_heads`).
    pub fn num_kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Output features of the fused `qkv_proj`: `(nH + 2 nKV) * head_dim`, laid out Q | K | V.
    pub fn qkv_out_features(&self) -> usize {
        (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim
    }

    /// Output features of the fused `gate_up_proj`: `2 * intermediate_size`, laid out gate | up.
    pub fn gate_up_out_features(&self) -> usize {
        2 * self.intermediate_size
    }

    fn validate(raw: RawConfig, origin: &str) -> Result<Self, ConfigError> {
        let cx = Ctx { origin };

        cx.model_type(raw.model_type.as_deref(), "phi3")?;
        cx.silu(raw.hidden_act.as_deref())?;
        let hidden_act = HiddenAct::Silu;

        let hidden_size = cx.positive_size(raw.hidden_size, "hidden_size")?;
        let intermediate_size = cx.positive_size(raw.intermediate_size, "intermediate_size")?;
        let num_hidden_layers = cx.positive_size(raw.num_hidden_layers, "num_hidden_layers")?;
        let num_attention_heads =
            cx.positive_size(raw.num_attention_heads, "num_attention_heads")?;
        // transformers: num_key_value_heads defaults to num_attention_heads.
        let num_key_value_heads = match raw.num_key_value_heads {
            None => num_attention_heads,
            v => cx.positive_size(v, "num_key_value_heads")?,
        };
        let vocab_size = cx.positive_size(raw.vocab_size, "vocab_size")?;
        let max_position_embeddings =
            cx.positive_size(raw.max_position_embeddings, "max_position_embeddings")?;

        if hidden_size % num_attention_heads != 0 {
            return Err(cx.invalid(
                "num_attention_heads",
                format!(
                    "num_attention_heads ({num_attention_heads}) does not divide hidden_size \
                     ({hidden_size})"
                ),
            ));
        }
        let head_dim = hidden_size / num_attention_heads;
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(cx.invalid(
                "num_key_value_heads",
                format!(
                    "num_attention_heads ({num_attention_heads}) is not a multiple of \
                     num_key_value_heads ({num_key_value_heads})"
                ),
            ));
        }
        if let Some(hd) = raw.head_dim {
            if hd != head_dim {
                return Err(cx.invalid(
                    "head_dim",
                    format!(
                        "{hd} differs from hidden_size / num_attention_heads = {head_dim}; \
                         Phi-3 derives head_dim from them"
                    ),
                ));
            }
        }

        let rms_norm_eps = cx.positive_f64(raw.rms_norm_eps.unwrap_or(1e-5), "rms_norm_eps")?;

        if let Some(0) = raw.sliding_window {
            return Err(cx.invalid("sliding_window", "must be positive or null, got 0"));
        }

        // transformers 5: `rope_scaling or rope_parameters` (an empty dict counts as absent).
        let (rope_key, rope_raw) = match (raw.rope_scaling, raw.rope_parameters) {
            (Some(r), _) if !r.is_empty() => ("rope_scaling", r),
            (_, Some(r)) => ("rope_parameters", r),
            _ => ("rope_scaling", RawRope::default()),
        };
        let rope_field = |name: &str| format!("{rope_key}.{name}");

        // rope_theta / partial_rotary_factor: the RoPE dict wins over the top level.
        let (rope_theta, theta_field) = match (rope_raw.rope_theta, raw.rope_theta) {
            (Some(t), _) => (t, rope_field("rope_theta")),
            (None, Some(t)) => (t, "rope_theta".to_string()),
            (None, None) => (10_000.0, "rope_theta".to_string()),
        };
        let rope_theta = cx.positive_f64(rope_theta, &theta_field)?;
        let (partial_rotary_factor, prf_field) =
            match (rope_raw.partial_rotary_factor, raw.partial_rotary_factor) {
                (Some(p), _) => (p, rope_field("partial_rotary_factor")),
                (None, Some(p)) => (p, "partial_rotary_factor".to_string()),
                (None, None) => (1.0, "partial_rotary_factor".to_string()),
            };
        if !(partial_rotary_factor > 0.0 && partial_rotary_factor <= 1.0) {
            return Err(cx.invalid(
                &prf_field,
                format!("must be in (0, 1], got {partial_rotary_factor}"),
            ));
        }
        let rot = rotary_dim(head_dim, partial_rotary_factor);
        if rot == 0 || rot % 2 == 1 {
            return Err(cx.invalid(
                &prf_field,
                format!(
                    "{partial_rotary_factor} gives rotary_dim = int({head_dim} * \
                     {partial_rotary_factor}) = {rot}, which must be even and positive"
                ),
            ));
        }

        // RoPE type from `rope_type` or `type`; if both are present they must agree after aliasing.
        let type_field = if rope_raw.rope_type.is_some() {
            rope_field("rope_type")
        } else {
            rope_field("type")
        };
        let canon = |t: &Option<String>| -> Result<Option<&'static str>, ConfigError> {
            match t {
                None => Ok(None),
                Some(s) => canonical_rope_type(s).map(Some).ok_or_else(|| {
                    ConfigError::UnsupportedRopeType {
                        origin: origin.to_string(),
                        field: type_field.clone(),
                        rope_type: s.clone(),
                        supported: "Phi-3 supports \"default\" and \"longrope\", with legacy \
                                    aliases \"su\" and \"yarn\"",
                    }
                }),
            }
        };
        let rope_type = match (canon(&rope_raw.rope_type)?, canon(&rope_raw.type_)?) {
            (Some(a), Some(b)) if a != b => {
                return Err(cx.invalid(
                    &rope_field("rope_type"),
                    format!(
                        "{:?} conflicts with {} = {:?}",
                        rope_raw.rope_type.as_deref().unwrap_or_default(),
                        rope_field("type"),
                        rope_raw.type_.as_deref().unwrap_or_default()
                    ),
                ))
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => {
                if rope_raw.short_factor.is_some() || rope_raw.long_factor.is_some() {
                    return Err(cx.missing(
                        &rope_field("rope_type"),
                        " (the dict has short_factor/long_factor but no `rope_type` or `type`)",
                    ));
                }
                "default"
            }
        };

        // Factor lists, when present, must have rotary_dim / 2 entries (for any type, as
        // transformers checks).
        for (list, name) in [
            (&rope_raw.short_factor, "short_factor"),
            (&rope_raw.long_factor, "long_factor"),
        ] {
            if let Some(list) = list {
                if list.len() != rot / 2 {
                    return Err(ConfigError::FactorLength {
                        origin: origin.to_string(),
                        field: rope_field(name),
                        len: list.len(),
                        expected: rot / 2,
                        rotary_dim: rot,
                    });
                }
                if let Some(bad) = list.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                    return Err(cx.invalid(
                        &rope_field(name),
                        format!("entries must be finite and positive, found {bad}"),
                    ));
                }
            }
        }

        // original_max_position_embeddings: top level wins (transformers copies it into the
        // RoPE dict), then the dict.
        let omax = raw
            .original_max_position_embeddings
            .map(|v| (v, "original_max_position_embeddings".to_string()))
            .or_else(|| {
                rope_raw
                    .original_max_position_embeddings
                    .map(|v| (v, rope_field("original_max_position_embeddings")))
            });
        if let Some((0, field)) = &omax {
            return Err(cx.invalid(field, "must be positive, got 0"));
        }

        let (rope, original_max_position_embeddings) = if rope_type == "longrope" {
            let short_factor = rope_raw.short_factor.ok_or_else(|| {
                cx.missing(&rope_field("short_factor"), " (required for longrope)")
            })?;
            let long_factor = rope_raw.long_factor.ok_or_else(|| {
                cx.missing(&rope_field("long_factor"), " (required for longrope)")
            })?;
            let (omax, _) = omax.ok_or_else(|| {
                cx.missing(
                    "original_max_position_embeddings",
                    " (required for longrope)",
                )
            })?;
            let factor = match rope_raw.factor {
                Some(f) => cx.positive_f64(f, &rope_field("factor"))?,
                None => max_position_embeddings as f64 / omax as f64,
            };
            let attention_factor = match rope_raw.attention_factor {
                Some(a) => cx.positive_f64(a, &rope_field("attention_factor"))?,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / (omax as f64).ln()).sqrt(),
            };
            (
                RopeScaling::LongRope {
                    short_factor,
                    long_factor,
                    attention_factor,
                },
                omax,
            )
        } else {
            (
                RopeScaling::Default,
                omax.map_or(max_position_embeddings, |(v, _)| v),
            )
        };

        Ok(Phi3Config {
            name: origin.to_string(),
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size,
            max_position_embeddings,
            original_max_position_embeddings,
            rms_norm_eps,
            rope_theta,
            partial_rotary_factor,
            sliding_window: raw.sliding_window,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            hidden_act,
            pad_token_id: raw.pad_token_id,
            bos_token_id: raw.bos_token_id,
            eos_token_id: raw
                .eos_token_id
                .as_ref()
                .and_then(|e| e.to_vec().first().copied()),
            eos_token_ids: raw.eos_token_id.map(|e| e.to_vec()).unwrap_or_default(),
            rope,
        })
    }
}

/// `int(head_dim * partial_rotary_factor)`, as Python truncates.
fn rotary_dim(head_dim: usize, partial_rotary_factor: f64) -> usize {
    (head_dim as f64 * partial_rotary_factor) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::path::PathBuf;

    /// sqrt(1 + ln(32) / ln(4096)) = sqrt(17/12).
    const ATT_128K: f64 = 1.190_238_071_7;

    fn embedded_value(name: &str) -> Value {
        serde_json::from_str(embedded_json(name).unwrap()).unwrap()
    }

    fn parse_value(v: &Value) -> Result<Phi3Config, ConfigError> {
        Phi3Config::from_json_str(&v.to_string(), "test-src")
    }

    /// Parses `v` expecting an error; returns its message, checked to name the source.
    fn err_msg(v: &Value) -> String {
        let e = parse_value(v).expect_err("expected a config error");
        let msg = e.to_string();
        assert!(msg.contains("test-src"), "message lacks source: {msg}");
        msg
    }

    fn assert_mentions(msg: &str, words: &[&str]) {
        for w in words {
            assert!(msg.contains(w), "{msg:?} should mention {w:?}");
        }
    }

    fn unique_tmp(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("phi3-config-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn embedded_names_are_the_six_models() {
        let names: Vec<_> = embedded_names().collect();
        assert_eq!(
            names,
            [
                "phi-3-mini-4k",
                "phi-3-mini-128k",
                "phi-3-medium-4k",
                "phi-3-medium-128k",
                "phi-3.5-mini",
                "phi-4-mini"
            ]
        );
        for name in names {
            let c = Phi3Config::embedded(name).unwrap();
            assert_eq!(c.name, name);
            assert_eq!(c.hidden_act, HiddenAct::Silu);
            assert_eq!(c.rms_norm_eps, 1e-5);
            assert_eq!(c.rope_theta, 10_000.0);
            assert_eq!(c.original_max_position_embeddings, 4096);
            assert_eq!(c.head_dim * c.num_attention_heads, c.hidden_size);
            assert_eq!(c.rotary_dim() % 2, 0);
            if let RopeScaling::LongRope {
                short_factor,
                long_factor,
                ..
            } = &c.rope
            {
                assert_eq!(short_factor.len(), c.rotary_dim() / 2);
                assert_eq!(long_factor.len(), c.rotary_dim() / 2);
            }
        }
    }

    /// phi3.md §3 and §4.
    #[test]
    fn derived_numbers_match_reference_table() {
        // (name, H, I, layers, nH, nKV, hd, rot, qkv_out, gate_up_out, vocab, max_pos,
        //  sliding_window, tie, (bos, eos, pad), 128k)
        type Row = (
            &'static str,
            [usize; 11],
            u64,
            bool,
            (Option<u32>, Option<u32>, Option<u32>),
            bool,
        );
        let rows: [Row; 6] = [
            (
                "phi-3-mini-4k",
                [3072, 8192, 32, 32, 32, 96, 96, 9216, 16384, 32064, 4096],
                2047,
                false,
                (Some(1), Some(32000), Some(32000)),
                false,
            ),
            (
                "phi-3-mini-128k",
                [3072, 8192, 32, 32, 32, 96, 96, 9216, 16384, 32064, 131072],
                262144,
                false,
                (Some(1), Some(32000), Some(32000)),
                true,
            ),
            (
                "phi-3-medium-4k",
                [5120, 17920, 40, 40, 10, 128, 128, 7680, 35840, 32064, 4096],
                2047,
                false,
                (Some(1), Some(32000), Some(32000)),
                false,
            ),
            (
                "phi-3-medium-128k",
                [
                    5120, 17920, 40, 40, 10, 128, 128, 7680, 35840, 32064, 131072,
                ],
                131072,
                false,
                (Some(1), Some(32000), None),
                true,
            ),
            (
                "phi-3.5-mini",
                [3072, 8192, 32, 32, 32, 96, 96, 9216, 16384, 32064, 131072],
                262144,
                false,
                (Some(1), Some(32000), Some(32000)),
                true,
            ),
            (
                // config.json's eos is 199999 (generation_config.json lists [200020, 199999]).
                "phi-4-mini",
                [3072, 8192, 32, 24, 8, 128, 96, 5120, 16384, 200064, 131072],
                262144,
                true,
                (Some(199999), Some(199999), Some(199999)),
                true,
            ),
        ];
        for (name, n, sw, tie, (bos, eos, pad), long) in rows {
            let c = Phi3Config::embedded(name).unwrap();
            let got = [
                c.hidden_size,
                c.intermediate_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.num_key_value_heads,
                c.head_dim,
                c.rotary_dim(),
                c.qkv_out_features(),
                c.gate_up_out_features(),
                c.vocab_size,
                c.max_position_embeddings,
            ];
            assert_eq!(got, n, "{name}");
            assert_eq!(c.sliding_window, Some(sw), "{name}");
            assert_eq!(c.tie_word_embeddings, tie, "{name}");
            assert_eq!(
                (c.bos_token_id, c.eos_token_id, c.pad_token_id),
                (bos, eos, pad),
                "{name}"
            );
            assert_eq!(c.rope.is_long_rope(), long, "{name}");
            if long {
                assert!(
                    (c.rope.attention_factor() - ATT_128K).abs() < 1e-9,
                    "{name}: {}",
                    c.rope.attention_factor()
                );
                assert!((c.rope.attention_factor() - (17.0f64 / 12.0).sqrt()).abs() < 1e-12);
            } else {
                assert_eq!(c.rope, RopeScaling::Default, "{name}");
                assert_eq!(c.rope.attention_factor(), 1.0);
            }
        }
        let p4 = Phi3Config::embedded("phi-4-mini").unwrap();
        assert_eq!(p4.partial_rotary_factor, 0.75);
        assert_eq!(p4.num_kv_groups(), 3);
        assert_eq!(
            Phi3Config::embedded("phi-3-medium-4k")
                .unwrap()
                .num_kv_groups(),
            4
        );
        assert_eq!(
            Phi3Config::embedded("phi-3-mini-4k")
                .unwrap()
                .partial_rotary_factor,
            1.0
        );
    }

    #[test]
    fn factor_values_are_read_verbatim() {
        let c = Phi3Config::embedded("phi-3-mini-128k").unwrap();
        let RopeScaling::LongRope { long_factor, .. } = &c.rope else {
            panic!("not longrope")
        };
        assert_eq!(long_factor[0], 1.0700000524520874);
        assert_eq!(long_factor[1], 1.1200000047683716);
        let c = Phi3Config::embedded("phi-4-mini").unwrap();
        let RopeScaling::LongRope {
            short_factor,
            long_factor,
            ..
        } = &c.rope
        else {
            panic!("not longrope")
        };
        assert!(short_factor.iter().all(|&x| x == 1.0));
        assert_eq!(long_factor[0], 1.0); // the integer `1` in the JSON
        assert_eq!(long_factor[1], 1.118320672);
        // phi-3-medium-128k uses the legacy "su" spelling in the embedded file.
        let c = Phi3Config::embedded("phi-3-medium-128k").unwrap();
        assert!(c.rope.is_long_rope());
        assert_eq!(c.rotary_dim(), 128);
    }

    #[test]
    fn superseded_su_config_parses_as_longrope() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/configs/phi-3-mini-128k.superseded-pre-2024-07.json"
        ));
        let c = Phi3Config::from_file(path).unwrap();
        assert_eq!(c.name, path.display().to_string());
        let RopeScaling::LongRope {
            short_factor,
            long_factor,
            attention_factor,
        } = &c.rope
        else {
            panic!("\"su\" should parse as LongRope")
        };
        assert_eq!(long_factor.len(), 48);
        assert_eq!(short_factor.len(), 48);
        assert_eq!(long_factor[0], 1.0299999713897705);
        assert_eq!(short_factor[0], 1.05);
        assert!((attention_factor - ATT_128K).abs() < 1e-9);
        // Shapes unchanged from the current revision; only the factors differ.
        let current = Phi3Config::embedded("phi-3-mini-128k").unwrap();
        assert_eq!(
            Phi3Config {
                name: current.name.clone(),
                rope: current.rope.clone(),
                ..c
            },
            current
        );
    }

    #[test]
    fn yarn_alias_and_default_type_and_null() {
        let mut v = embedded_value("phi-3.5-mini");
        v["rope_scaling"]["type"] = json!("yarn");
        assert!(parse_value(&v).unwrap().rope.is_long_rope());

        let mut v = embedded_value("phi-3-mini-4k");
        v["rope_scaling"] = json!({"type": "default"});
        assert_eq!(parse_value(&v).unwrap().rope, RopeScaling::Default);
        v["rope_scaling"] = json!({});
        assert_eq!(parse_value(&v).unwrap().rope, RopeScaling::Default);
        v.as_object_mut().unwrap().remove("rope_scaling");
        assert_eq!(parse_value(&v).unwrap().rope, RopeScaling::Default);
    }

    /// transformers 5 spelling: `rope_parameters` with `rope_type`, carrying rope_theta and
    /// partial_rotary_factor.
    #[test]
    fn rope_parameters_spelling_parses() {
        let mut v = embedded_value("phi-4-mini");
        let obj = v.as_object_mut().unwrap();
        let mut rope = obj.remove("rope_scaling").unwrap();
        obj.remove("rope_theta");
        obj.remove("partial_rotary_factor");
        let r = rope.as_object_mut().unwrap();
        r.remove("type");
        r.insert("rope_type".into(), json!("longrope"));
        r.insert("rope_theta".into(), json!(10000.0));
        r.insert("partial_rotary_factor".into(), json!(0.75));
        r.insert("original_max_position_embeddings".into(), json!(4096));
        obj.insert("rope_parameters".into(), rope);
        let c = parse_value(&v).unwrap();
        let want = Phi3Config {
            name: "test-src".into(),
            ..Phi3Config::embedded("phi-4-mini").unwrap()
        };
        assert_eq!(c, want);

        // The dict's rope_theta / partial_rotary_factor win over top-level ones.
        v["rope_theta"] = json!(5.0);
        v["partial_rotary_factor"] = json!(1.0);
        v["rope_parameters"]["rope_theta"] = json!(250000.0);
        let c = parse_value(&v).unwrap();
        assert_eq!(c.rope_theta, 250000.0);
        assert_eq!(c.rotary_dim(), 96);

        // Plain RoPE in the new spelling.
        let mut v = embedded_value("phi-3-mini-4k");
        let obj = v.as_object_mut().unwrap();
        obj.remove("rope_scaling");
        obj.insert(
            "rope_parameters".into(),
            json!({"rope_type": "default", "rope_theta": 250000.0}),
        );
        let c = parse_value(&v).unwrap();
        assert_eq!(c.rope, RopeScaling::Default);
        assert_eq!(c.rope_theta, 250000.0);

        // Both `type` and `rope_type` (as transformers 4.4x re-saves) agreeing is fine.
        let mut v = embedded_value("phi-3.5-mini");
        v["rope_scaling"]["rope_type"] = json!("longrope");
        assert!(parse_value(&v).unwrap().rope.is_long_rope());
        v["rope_scaling"]["type"] = json!("su");
        assert!(parse_value(&v).unwrap().rope.is_long_rope());
    }

    #[test]
    fn explicit_factor_and_attention_factor() {
        let mut v = embedded_value("phi-3.5-mini");
        v["rope_scaling"]["factor"] = json!(16.0);
        let att = parse_value(&v).unwrap().rope.attention_factor();
        assert!((att - (1.0 + 16f64.ln() / 4096f64.ln()).sqrt()).abs() < 1e-12);
        v["rope_scaling"]["factor"] = json!(1.0);
        assert_eq!(parse_value(&v).unwrap().rope.attention_factor(), 1.0);
        v["rope_scaling"]["attention_factor"] = json!(1.25);
        assert_eq!(parse_value(&v).unwrap().rope.attention_factor(), 1.25);
        // max_pos == original_max_pos: factor 1 → att 1.
        let mut v = embedded_value("phi-3.5-mini");
        v["max_position_embeddings"] = json!(4096);
        assert_eq!(parse_value(&v).unwrap().rope.attention_factor(), 1.0);
    }

    #[test]
    fn defaults_follow_transformers() {
        let mut v = embedded_value("phi-3-mini-4k");
        let obj = v.as_object_mut().unwrap();
        for k in [
            "num_key_value_heads",
            "rms_norm_eps",
            "rope_theta",
            "sliding_window",
            "tie_word_embeddings",
            "hidden_act",
            "pad_token_id",
            "original_max_position_embeddings",
        ] {
            obj.remove(k);
        }
        let c = parse_value(&v).unwrap();
        assert_eq!(c.num_key_value_heads, 32);
        assert_eq!(c.rms_norm_eps, 1e-5);
        assert_eq!(c.rope_theta, 10_000.0);
        assert_eq!(c.sliding_window, None);
        assert!(!c.tie_word_embeddings);
        assert_eq!(c.pad_token_id, None);
        assert_eq!(c.original_max_position_embeddings, 4096);
    }

    #[test]
    fn with_layers_cuts_depth_only() {
        let full = Phi3Config::embedded("phi-4-mini").unwrap();
        let small = full.clone().with_layers(2);
        assert_eq!(small.num_hidden_layers, 2);
        assert_eq!(
            Phi3Config {
                num_hidden_layers: 32,
                ..small
            },
            full
        );
    }

    // ---- error cases: each message names the field (and the source) ----

    #[test]
    fn err_unsupported_rope_type() {
        for t in ["dynamic", "linear", "llama3", "bogus"] {
            let mut v = embedded_value("phi-3.5-mini");
            v["rope_scaling"]["type"] = json!(t);
            let msg = err_msg(&v);
            assert_mentions(&msg, &["rope_scaling.type", t]);
            assert!(matches!(
                parse_value(&v),
                Err(ConfigError::UnsupportedRopeType { .. })
            ));
        }
        let mut v = embedded_value("phi-3-mini-4k");
        v.as_object_mut().unwrap().remove("rope_scaling");
        v["rope_parameters"] = json!({"rope_type": "dynamic", "factor": 2.0});
        assert_mentions(&err_msg(&v), &["rope_parameters.rope_type", "dynamic"]);
    }

    #[test]
    fn err_conflicting_or_missing_rope_type() {
        let mut v = embedded_value("phi-3.5-mini");
        v["rope_scaling"]["rope_type"] = json!("default");
        assert_mentions(&err_msg(&v), &["rope_scaling.rope_type", "conflicts"]);
        let mut v = embedded_value("phi-3.5-mini");
        v["rope_scaling"].as_object_mut().unwrap().remove("type");
        assert_mentions(&err_msg(&v), &["rope_scaling.rope_type", "missing"]);
    }

    #[test]
    fn err_factor_lengths() {
        let mut v = embedded_value("phi-3.5-mini");
        v["rope_scaling"]["short_factor"] = json!([1.0, 1.0, 1.0]);
        let msg = err_msg(&v);
        assert_mentions(&msg, &["rope_scaling.short_factor", "3 entries", "48"]);

        // Phi-4-mini: 64 (= head_dim / 2) is wrong, rotary_dim / 2 = 48 is right.
        let mut v = embedded_value("phi-4-mini");
        v["rope_scaling"]["long_factor"] = json!(vec![1.0; 64]);
        assert_mentions(&err_msg(&v), &["rope_scaling.long_factor", "64", "48"]);
        assert!(matches!(
            parse_value(&v),
            Err(ConfigError::FactorLength {
                expected: 48,
                len: 64,
                rotary_dim: 96,
                ..
            })
        ));

        let mut v = embedded_value("phi-3.5-mini");
        v["rope_scaling"]
            .as_object_mut()
            .unwrap()
            .remove("long_factor");
        assert_mentions(&err_msg(&v), &["rope_scaling.long_factor", "missing"]);

        let mut v = embedded_value("phi-3.5-mini");
        v["rope_scaling"]["short_factor"][3] = json!(-1.0);
        assert_mentions(&err_msg(&v), &["rope_scaling.short_factor"]);
    }

    #[test]
    fn err_heads_do_not_divide_hidden() {
        let mut v = embedded_value("phi-3-mini-4k");
        v["num_attention_heads"] = json!(30);
        v["num_key_value_heads"] = json!(30);
        assert_mentions(
            &err_msg(&v),
            &["num_attention_heads", "hidden_size", "3072"],
        );
    }

    #[test]
    fn err_kv_heads_do_not_divide_heads() {
        let mut v = embedded_value("phi-3-medium-4k");
        v["num_key_value_heads"] = json!(16);
        assert_mentions(&err_msg(&v), &["num_key_value_heads", "40", "16"]);
    }

    #[test]
    fn err_head_dim_mismatch() {
        let mut v = embedded_value("phi-3-mini-4k");
        v["head_dim"] = json!(128);
        assert_mentions(&err_msg(&v), &["head_dim", "96"]);
        v["head_dim"] = json!(96);
        parse_value(&v).unwrap();
    }

    #[test]
    fn err_non_positive_sizes() {
        for field in [
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
            "max_position_embeddings",
            "original_max_position_embeddings",
            "sliding_window",
        ] {
            let mut v = embedded_value("phi-3-mini-4k");
            v[field] = json!(0);
            assert_mentions(&err_msg(&v), &[field, "positive"]);
            // Negative integers fail at the serde level, still naming the field.
            v[field] = json!(-1);
            let msg = err_msg(&v);
            assert_mentions(&msg, &[field, "line", "column"]);
        }
        for field in ["rms_norm_eps", "rope_theta"] {
            let mut v = embedded_value("phi-3-mini-4k");
            v[field] = json!(0.0);
            assert_mentions(&err_msg(&v), &[field, "positive"]);
        }
    }

    #[test]
    fn err_hidden_act() {
        let mut v = embedded_value("phi-3-mini-4k");
        v["hidden_act"] = json!("gelu_new");
        assert_mentions(&err_msg(&v), &["hidden_act", "silu", "gelu_new"]);
    }

    #[test]
    fn err_model_type() {
        let mut v = embedded_value("phi-3-mini-4k");
        v["model_type"] = json!("phi");
        assert_mentions(&err_msg(&v), &["model_type", "phi3"]);
        v.as_object_mut().unwrap().remove("model_type");
        assert_mentions(&err_msg(&v), &["model_type", "missing"]);
    }

    #[test]
    fn err_missing_required_fields() {
        for field in [
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "vocab_size",
            "max_position_embeddings",
        ] {
            let mut v = embedded_value("phi-3-mini-4k");
            v.as_object_mut().unwrap().remove(field);
            let msg = err_msg(&v);
            assert_mentions(&msg, &[field, "missing"]);
            assert!(matches!(
                parse_value(&v),
                Err(ConfigError::MissingField { .. })
            ));
            // null counts as missing.
            v[field] = Value::Null;
            assert_mentions(&err_msg(&v), &[field, "missing"]);
        }
        // LongRoPE needs original_max_position_embeddings (top level or in the dict).
        let mut v = embedded_value("phi-3.5-mini");
        v.as_object_mut()
            .unwrap()
            .remove("original_max_position_embeddings");
        assert_mentions(
            &err_msg(&v),
            &["original_max_position_embeddings", "longrope"],
        );
        v["rope_scaling"]["original_max_position_embeddings"] = json!(4096);
        assert!((parse_value(&v).unwrap().rope.attention_factor() - ATT_128K).abs() < 1e-9);
    }

    #[test]
    fn err_wrong_json_types_name_the_field() {
        let mut v = embedded_value("phi-3-mini-4k");
        v["hidden_size"] = json!("3072");
        let msg = err_msg(&v);
        assert_mentions(&msg, &["`hidden_size`", "line", "column"]);
        assert!(matches!(
            parse_value(&v),
            Err(ConfigError::FieldType { ref field, .. }) if field == "hidden_size"
        ));

        let mut v = embedded_value("phi-3.5-mini");
        v["rope_scaling"]["long_factor"][5] = json!("x");
        assert_mentions(&err_msg(&v), &["rope_scaling.long_factor", "line"]);

        let mut v = embedded_value("phi-3-mini-4k");
        v["tie_word_embeddings"] = json!(1);
        assert_mentions(&err_msg(&v), &["tie_word_embeddings"]);
    }

    #[test]
    fn err_malformed_json_has_line_and_column() {
        let json = "{\n  \"model_type\": \"phi3\",\n  \"hidden_size\": 3072,,\n}";
        let e = Phi3Config::from_json_str(json, "test-src").unwrap_err();
        assert!(matches!(e, ConfigError::Json { .. }));
        assert_mentions(
            &e.to_string(),
            &["test-src", "malformed JSON", "line 3", "column"],
        );

        let e = Phi3Config::from_json_str("{\"model_type\": \"phi3\"", "test-src").unwrap_err();
        assert_mentions(&e.to_string(), &["test-src", "malformed JSON", "line 1"]);

        let e = Phi3Config::from_json_str("[1, 2]", "test-src").unwrap_err();
        assert_mentions(&e.to_string(), &["test-src", "line 1"]);
    }

    #[test]
    fn err_partial_rotary_factor() {
        for bad in [0.0, -0.5, 1.5] {
            let mut v = embedded_value("phi-4-mini");
            v["partial_rotary_factor"] = json!(bad);
            assert_mentions(&err_msg(&v), &["partial_rotary_factor", "(0, 1]"]);
        }
        // 96 * 0.03125 = 3: odd rotary dim.
        let mut v = embedded_value("phi-3-mini-4k");
        v["partial_rotary_factor"] = json!(0.03125);
        assert_mentions(
            &err_msg(&v),
            &["partial_rotary_factor", "rotary_dim", "3", "even"],
        );
        // 96 * 0.001 truncates to 0.
        v["partial_rotary_factor"] = json!(0.001);
        assert_mentions(&err_msg(&v), &["partial_rotary_factor", "= 0"]);
        // Inside rope_parameters the message names the nested field.
        let mut v = embedded_value("phi-3-mini-4k");
        v.as_object_mut().unwrap().remove("rope_scaling");
        v["rope_parameters"] = json!({"rope_type": "default", "partial_rotary_factor": 2.0});
        assert_mentions(&err_msg(&v), &["rope_parameters.partial_rotary_factor"]);
        // A valid partial factor on the 4k model.
        let mut v = embedded_value("phi-3-mini-4k");
        v["partial_rotary_factor"] = json!(0.5);
        assert_eq!(parse_value(&v).unwrap().rotary_dim(), 48);
    }

    #[test]
    fn embedded_and_resolve_and_file_errors() {
        let e = Phi3Config::embedded("phi-5").unwrap_err();
        assert!(matches!(e, ConfigError::UnknownModel { .. }));
        assert_mentions(&e.to_string(), &["phi-5", "phi-3-mini-4k", "phi-4-mini"]);

        assert_eq!(
            Phi3Config::resolve("phi-3-medium-4k").unwrap(),
            Phi3Config::embedded("phi-3-medium-4k").unwrap()
        );

        let dir = unique_tmp("resolve");
        let cfg = dir.join("config.json");
        std::fs::write(&cfg, embedded_json("phi-4-mini").unwrap()).unwrap();
        let by_dir = Phi3Config::resolve(dir.to_str().unwrap()).unwrap();
        assert_eq!(by_dir.name, cfg.display().to_string());
        let by_file = Phi3Config::resolve(cfg.to_str().unwrap()).unwrap();
        assert_eq!(by_dir, by_file);
        assert_eq!(
            Phi3Config {
                name: "phi-4-mini".into(),
                ..by_file
            },
            Phi3Config::embedded("phi-4-mini").unwrap()
        );

        // A bad file: the error names the path.
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{\"model_type\": \"phi3\", \"hidden_size\": }").unwrap();
        let msg = Phi3Config::from_file(&bad).unwrap_err().to_string();
        assert_mentions(&msg, &[&bad.display().to_string(), "line 1"]);

        // A directory without config.json: Io error naming dir/config.json.
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let e = Phi3Config::resolve(empty.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }));
        assert_mentions(
            &e.to_string(),
            &[&empty.join("config.json").display().to_string()],
        );

        let missing = dir.join("nope.json");
        let e = Phi3Config::from_file(&missing).unwrap_err();
        assert_mentions(&e.to_string(), &[&missing.display().to_string()]);
        let e = Phi3Config::resolve(missing.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, ConfigError::NotFound { .. }));
        assert_mentions(&e.to_string(), &["nope.json", "phi-3.5-mini"]);

        std::fs::remove_dir_all(&dir).unwrap();
    }
}
