//! Text in, text out: a Hugging Face `tokenizer.json` through the `tokenizers` crate (HF's
//! own), the chat template of the `tokenizer_config.json` beside it through `minijinja`, and
//! the stop tokens of `generation_config.json`.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("{}: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("{}: the tokenizer has {tokenizer} tokens, more than the model's vocab_size {model}", path.display())]
    VocabTooLarge {
        path: PathBuf,
        tokenizer: usize,
        model: usize,
    },
    #[error("{}: no chat_template in tokenizer_config.json beside it", path.display())]
    NoChatTemplate { path: PathBuf },
    #[error("chat template of {}: {reason}", path.display())]
    Template { path: PathBuf, reason: String },
}

/// A tokenizer and, when its folder has one, its chat template.
pub struct TextCodec {
    path: PathBuf,
    tokenizer: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

fn token_text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl TextCodec {
    /// Loads `tokenizer.json` and checks it fits a model of `model_vocab` tokens.
    pub fn load(path: &Path, model_vocab: usize) -> Result<TextCodec, TextError> {
        let tokenizer =
            tokenizers::Tokenizer::from_file(path).map_err(|e| TextError::Tokenizer {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let n = tokenizer.get_vocab_size(true);
        if n > model_vocab {
            return Err(TextError::VocabTooLarge {
                path: path.to_path_buf(),
                tokenizer: n,
                model: model_vocab,
            });
        }
        let config_path = path.with_file_name("tokenizer_config.json");
        let (mut chat_template, mut bos_token, mut eos_token) = (None, None, None);
        if config_path.is_file() {
            let bad = |reason: String| TextError::Config {
                path: config_path.clone(),
                reason,
            };
            let text = std::fs::read(&config_path).map_err(|e| bad(e.to_string()))?;
            let v: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
            chat_template = v
                .get("chat_template")
                .and_then(|t| t.as_str())
                .map(str::to_string);
            bos_token = token_text(v.get("bos_token"));
            eos_token = token_text(v.get("eos_token"));
        }
        Ok(TextCodec {
            path: path.to_path_buf(),
            tokenizer,
            chat_template,
            bos_token,
            eos_token,
        })
    }

    /// The ids of `text`, without special tokens added (as HF's `apply_chat_template` and
    /// most prompts are given).
    pub fn encode(&self, text: &str) -> Result<Vec<i32>, TextError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| TextError::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        Ok(enc.get_ids().iter().map(|&i| i as i32).collect())
    }

    /// The text of `ids`, as HF's `decode` (special tokens kept).
    pub fn decode(&self, ids: &[i32]) -> Result<String, TextError> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.tokenizer
            .decode(&ids, false)
            .map_err(|e| TextError::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// One user message through the chat template, with the generation prompt, as HF's
    /// `apply_chat_template(messages, add_generation_prompt=True)` renders it.
    pub fn chat(&self, user: &str) -> Result<String, TextError> {
        let template = self
            .chat_template
            .as_ref()
            .ok_or_else(|| TextError::NoChatTemplate {
                path: self.path.clone(),
            })?;
        let fail = |e: minijinja::Error| TextError::Template {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", template).map_err(fail)?;
        let messages = vec![minijinja::context! { role => "user", content => user }];
        env.get_template("chat")
            .map_err(fail)?
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => self.bos_token.clone().unwrap_or_default(),
                eos_token => self.eos_token.clone().unwrap_or_default(),
            })
            .map_err(fail)
    }
}

/// The ids that end generation: `generation_config.json`'s `eos_token_id` (one id or a list)
/// in `model_dir` when there is one, else `fallback` (the config's, from the manifest).
pub fn stop_tokens(model_dir: Option<&Path>, fallback: &[u32]) -> Result<Vec<i32>, TextError> {
    if let Some(dir) = model_dir {
        let path = dir.join("generation_config.json");
        if path.is_file() {
            let bad = |reason: String| TextError::Config {
                path: path.clone(),
                reason,
            };
            let text = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
            let v: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
            let ids = match v.get("eos_token_id") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::Number(n)) => n.as_i64().map(|i| vec![i as i32]),
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .map(|x| x.as_i64().map(|i| i as i32))
                    .collect::<Option<Vec<_>>>(),
                Some(other) => {
                    return Err(bad(format!(
                        "eos_token_id is {other}, not an id or a list of ids"
                    )))
                }
            };
            if let Some(ids) = ids {
                return Ok(ids);
            }
        }
    }
    Ok(fallback.iter().map(|&i| i as i32).collect())
}
