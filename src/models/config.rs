//! What every family's `config.json` parser shares: the error type (every message names the
//! source and the field), the validation helpers, the locator that turns a serde type error
//! into the field that caused it, and the model resolver that dispatches on `model_type`.

use serde::Deserialize;
use std::path::{Path, PathBuf};

use super::decoder::DecoderModel;
use super::{llama, phi3};

/// Errors from loading or validating a model config. Every message starts with the source
/// (short name or file path) and names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid JSON (or not a JSON object). serde's message carries the line and
    /// column.
    #[error("{origin}: malformed JSON: {error}")]
    Json {
        origin: String,
        #[source]
        error: serde_json::Error,
    },
    /// A field has the wrong JSON type or an out-of-range integer (e.g. a negative size).
    #[error("{origin}: field `{field}`: {error}")]
    FieldType {
        origin: String,
        field: String,
        #[source]
        error: serde_json::Error,
    },
    /// A required field is absent or null.
    #[error("{origin}: missing required field `{field}`{detail}")]
    MissingField {
        origin: String,
        field: String,
        /// Extra context, e.g. " (required for longrope)"; may be empty.
        detail: String,
    },
    /// A field is present and well-typed but its value is not acceptable.
    #[error("{origin}: field `{field}`: {reason}")]
    InvalidField {
        origin: String,
        field: String,
        reason: String,
    },
    /// A RoPE type the family does not support.
    #[error("{origin}: field `{field}`: unsupported RoPE type {rope_type:?} ({supported})")]
    UnsupportedRopeType {
        origin: String,
        field: String,
        rope_type: String,
        supported: &'static str,
    },
    /// A LongRoPE factor list whose length is not `rotary_dim / 2`.
    #[error(
        "{origin}: field `{field}` has {len} entries, expected rotary_dim / 2 = {expected} \
         (rotary_dim = {rotary_dim})"
    )]
    FactorLength {
        origin: String,
        field: String,
        len: usize,
        expected: usize,
        rotary_dim: usize,
    },
    /// A config file (or a directory's `config.json`) could not be read.
    #[error("{}: cannot read config file: {error}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// An embedded-config lookup was given a name that is not embedded.
    #[error("unknown embedded model {name:?}; valid names: {valid}")]
    UnknownModel { name: String, valid: String },
    /// A resolver was given neither an embedded name nor an existing path.
    #[error(
        "{name:?} is neither an embedded model (valid names: {valid}) nor an existing path to a \
         config.json or to a directory containing one"
    )]
    NotFound { name: String, valid: String },
    /// A `model_type` no family of this tool handles.
    #[error("{origin}: field `model_type`: {model_type:?} is not supported (supported: \"phi3\", \"llama\")")]
    UnsupportedModelType { origin: String, model_type: String },
}

/// Finds which key of `obj` makes `T` fail to deserialize, by deserializing each key alone
/// (every field of the raw structs is optional, so a one-key object fails only on that key).
fn failing_key<T: for<'de> Deserialize<'de>>(
    obj: &serde_json::Map<String, serde_json::Value>,
) -> Option<(&String, &serde_json::Value)> {
    obj.iter().find(|(k, v)| {
        let mut single = serde_json::Map::new();
        single.insert((*k).clone(), (*v).clone());
        T::deserialize(serde_json::Value::Object(single)).is_err()
    })
}

/// Parses `json` as the raw config `Raw`, turning a type error into one naming the field
/// (descending into `rope_scaling` / `rope_parameters`, whose raw type is `Rope`).
pub(crate) fn parse_raw<Raw, Rope>(json: &str, origin: &str) -> Result<Raw, ConfigError>
where
    Raw: for<'de> Deserialize<'de>,
    Rope: for<'de> Deserialize<'de>,
{
    let error = match serde_json::from_str(json) {
        Ok(raw) => return Ok(raw),
        Err(error) => error,
    };
    let as_json = |error| ConfigError::Json {
        origin: origin.to_string(),
        error,
    };
    if error.classify() != serde_json::error::Category::Data {
        return Err(as_json(error));
    }
    let Ok(map) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json) else {
        // Not an object at top level (or a problem serde reports only on the whole document).
        return Err(as_json(error));
    };
    let Some((key, value)) = failing_key::<Raw>(&map) else {
        return Err(as_json(error));
    };
    let mut field = key.clone();
    if key == "rope_scaling" || key == "rope_parameters" {
        if let Some(inner) = value.as_object() {
            if let Some((sub, _)) = failing_key::<Rope>(inner) {
                field = format!("{key}.{sub}");
            }
        }
    }
    Err(ConfigError::FieldType {
        origin: origin.to_string(),
        field,
        error,
    })
}

/// Validation context: the source name, for error messages.
pub(crate) struct Ctx<'a> {
    pub(crate) origin: &'a str,
}

impl Ctx<'_> {
    pub(crate) fn missing(&self, field: &str, detail: &str) -> ConfigError {
        ConfigError::MissingField {
            origin: self.origin.to_string(),
            field: field.to_string(),
            detail: detail.to_string(),
        }
    }

    pub(crate) fn invalid(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::InvalidField {
            origin: self.origin.to_string(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn required<T>(&self, value: Option<T>, field: &str) -> Result<T, ConfigError> {
        value.ok_or_else(|| self.missing(field, ""))
    }

    pub(crate) fn positive_size(
        &self,
        value: Option<usize>,
        field: &str,
    ) -> Result<usize, ConfigError> {
        let v = self.required(value, field)?;
        if v == 0 {
            return Err(self.invalid(field, "must be positive, got 0"));
        }
        Ok(v)
    }

    pub(crate) fn positive_f64(&self, value: f64, field: &str) -> Result<f64, ConfigError> {
        if !(value.is_finite() && value > 0.0) {
            return Err(self.invalid(field, format!("must be finite and positive, got {value}")));
        }
        Ok(value)
    }

    /// `model_type` must be `want`.
    pub(crate) fn model_type(&self, found: Option<&str>, want: &str) -> Result<(), ConfigError> {
        match found {
            Some(t) if t == want => Ok(()),
            Some(other) => {
                Err(self.invalid("model_type", format!("expected {want:?}, got {other:?}")))
            }
            None => Err(self.missing("model_type", &format!(" (expected {want:?})"))),
        }
    }

    /// `hidden_act` must be SiLU (the only activation of the supported families).
    pub(crate) fn silu(&self, found: Option<&str>) -> Result<(), ConfigError> {
        match found {
            None | Some("silu") => Ok(()),
            Some(other) => Err(self.invalid(
                "hidden_act",
                format!("only \"silu\" is supported, got {other:?}"),
            )),
        }
    }
}

/// `eos_token_id` as configs write it: one id or a list of ids.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// Reads a config file; errors name the path.
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// Every embedded config, of every family, by short name.
pub fn embedded_names() -> Vec<&'static str> {
    phi3::config::embedded_names()
        .chain(llama::config::embedded_names())
        .collect()
}

fn embedded_names_list() -> String {
    embedded_names().join(", ")
}

/// Parses a config of any supported family, dispatching on its `model_type`.
pub fn from_json_str(json: &str, origin: &str) -> Result<Box<dyn DecoderModel>, ConfigError> {
    #[derive(Deserialize)]
    struct Type {
        model_type: Option<serde_json::Value>,
    }
    let t: Type = serde_json::from_str(json).map_err(|error| ConfigError::Json {
        origin: origin.to_string(),
        error,
    })?;
    match t.model_type.as_ref().and_then(|v| v.as_str()) {
        Some("llama") => Ok(Box::new(llama::LlamaConfig::from_json_str(json, origin)?)),
        Some("phi3") | None => Ok(Box::new(phi3::Phi3Config::from_json_str(json, origin)?)),
        Some(other) => Err(ConfigError::UnsupportedModelType {
            origin: origin.to_string(),
            model_type: other.to_string(),
        }),
    }
}

/// Reads a `config.json` of any supported family; errors name the path.
pub fn from_file(path: &Path) -> Result<Box<dyn DecoderModel>, ConfigError> {
    from_json_str(&read_text(path)?, &path.display().to_string())
}

/// An embedded short name (of any family) first; otherwise a path to a `config.json` file or
/// to a directory containing one, of any supported `model_type`.
pub fn resolve(name_or_path: &str) -> Result<Box<dyn DecoderModel>, ConfigError> {
    if let Some(json) = phi3::config::embedded_json(name_or_path)
        .or_else(|| llama::config::embedded_json(name_or_path))
    {
        return from_json_str(json, name_or_path);
    }
    let path = Path::new(name_or_path);
    let file = if path.is_dir() {
        path.join("config.json")
    } else if path.exists() {
        path.to_path_buf()
    } else {
        return Err(ConfigError::NotFound {
            name: name_or_path.to_string(),
            valid: embedded_names_list(),
        });
    };
    from_file(&file)
}
