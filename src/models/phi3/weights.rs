//! Hugging Face checkpoints → per-rank weight shards for the recorded Phi-3 graphs.
//!
//! [`Checkpoint::open`] reads a `model.safetensors` file or a sharded checkpoint
//! (`model.safetensors.index.json` + the files its `weight_map` names). Only the safetensors
//! headers are read up front (parsed and validated by the `safetensors` crate, and checked
//! against the file sizes so a truncated file is caught at once); tensor data is read one
//! tensor at a time, when a shard needs it.
//!
//! [`shard_for_rank`] produces, for one tensor-parallel rank, every weight parameter of the
//! graph in the graph's parameter order (see [`ordered_names`] and the module doc of
//! [`super::graph`]), converted to the target dtype (f32, or bf16 with round-to-nearest-even):
//!
//! | parameter | per-rank shape | from the HF tensor |
//! |---|---|---|
//! | `model.embed_tokens.weight` | `[V, H/t]` | columns `r·H/t ..` |
//! | `*.input_layernorm.weight`, `*.post_attention_layernorm.weight`, `model.norm.weight` | `[H]` | replicated |
//! | `*.self_attn.qkv_proj.weight` | `[(q_r + 2·kv_r)·hd, H]` | rows `[Q_r; K_r; V_r]`, heads picked by the plan's `q_head_source` / `kv_head_source` |
//! | `*.self_attn.o_proj.weight` | `[H, q_r·hd]` | the columns of the rank's query heads |
//! | `*.mlp.gate_up_proj.weight` | `[2·I_r, H]` | rows `[gate_r; up_r]`, each padded to `I_pad` and split in `t` |
//! | `*.mlp.down_proj.weight` | `[H, I_r]` | columns padded to `I_pad` and split in `t` |
//! | `lm_head.weight` | `[V_pad/t, H]` | rows padded to `V_pad` and split in `t` (`model.embed_tokens.weight` when tied) |
//!
//! Padding (heads with no source, rows/columns past the real size) is zero. Following NxD's
//! state-dict conversion (`neuron.md`, "State-dict conversion"), a tied checkpoint's `lm_head` is
//! taken from `model.embed_tokens.weight`.
//!
//! [`write_rank_files`] writes `tp{r}.safetensors` for every rank, atomically and with
//! deterministic bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, View};

use super::config::Phi3Config;
use super::graph::{InputRole, IoInfo};
use super::plan::ShardPlan;
use crate::dsl::DType;

/// The single-file checkpoint name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Largest safetensors header accepted (the `safetensors` crate's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Errors from loading, validating and sharding a checkpoint. Messages name the file and,
/// where one is involved, the tensor.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("{}: no checkpoint found (expected {SINGLE_FILE} or {INDEX_FILE})", dir.display())]
    NoCheckpoint { dir: PathBuf },
    #[error("{}: malformed checkpoint index: {reason}", path.display())]
    MalformedIndex { path: PathBuf, reason: String },
    #[error(
        "{}: weight_map maps tensor `{tensor}` to shard file {}, which does not exist",
        index.display(),
        file.display()
    )]
    MissingShardFile {
        index: PathBuf,
        file: PathBuf,
        tensor: String,
    },
    #[error("{}: truncated or corrupt safetensors file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("missing tensor `{tensor}`: not found in {searched}")]
    MissingTensor { tensor: String, searched: String },
    #[error("{}: tensor `{tensor}` has shape {got:?}, expected {expected:?}", path.display())]
    WrongShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{}: tensor `{tensor}` has unsupported dtype {dtype} (supported: F32, BF16, F16)", path.display())]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("unsupported target dtype {0} for weight shards (supported: f32, bf16)")]
    UnsupportedTarget(DType),
    #[error("rank {rank} is out of range for tp={tp}")]
    BadRank { rank: i64, tp: i64 },
    #[error("{model}: shard plan does not match the config: {reason}")]
    PlanMismatch { model: String, reason: String },
    #[error("graph input `{name}`: {reason}")]
    GraphMismatch { name: String, reason: String },
    #[error("{}: cannot serialize the rank's shards: {reason}", path.display())]
    Serialize { path: PathBuf, reason: String },
}

pub type Result<T, E = WeightsError> = std::result::Result<T, E>;

/// One tensor in memory: a rank's weight shard, or a whole checkpoint tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightTensor {
    /// The graph parameter name (for a checkpoint tensor, its checkpoint name).
    pub name: String,
    /// The Hugging Face checkpoint tensor it comes from (the graph's `InputRole::Weight { key }`).
    pub key: String,
    pub dtype: DType,
    pub dims: Vec<i64>,
    /// Row-major, little-endian.
    pub bytes: Vec<u8>,
}

impl WeightTensor {
    pub fn element_count(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }

    /// The values widened to f32 (f32, bf16 and f16 tensors; `None` for other dtypes).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let from = match self.dtype {
            DType::F32 => Dtype::F32,
            DType::BF16 => Dtype::BF16,
            DType::F16 => Dtype::F16,
            _ => return None,
        };
        let bytes = convert(&self.bytes, from, DType::F32);
        Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }
}

/// The optional `rank s32[]` graph input, holding `rank`.
pub fn rank_tensor(rank: i64) -> WeightTensor {
    WeightTensor {
        name: "rank".into(),
        key: "rank".into(),
        dtype: DType::S32,
        dims: Vec::new(),
        bytes: (rank as i32).to_le_bytes().to_vec(),
    }
}

/// All weight shards of one rank, in the graph's parameter order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankWeights {
    pub rank: i64,
    pub tp: i64,
    pub dtype: DType,
    pub tensors: Vec<WeightTensor>,
}

impl RankWeights {
    pub fn get(&self, name: &str) -> Option<&WeightTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|t| t.name.as_str())
    }

    pub fn total_bytes(&self) -> usize {
        self.tensors.iter().map(|t| t.bytes.len()).sum()
    }

    /// The shards for graphs recorded with unfused weights: each fused `qkv_proj` shard
    /// (rows `[Q_r; K_r; V_r]`) becomes `q_proj`, `k_proj`, `v_proj`, and each `gate_up_proj`
    /// shard (rows `[gate_r; up_r]`) becomes `gate_proj`, `up_proj`. Keys stay the fused
    /// checkpoint tensors they are cut from.
    pub fn unfused(&self, plan: &ShardPlan, split_qkv: bool, split_gate_up: bool) -> RankWeights {
        let mut tensors = Vec::with_capacity(self.tensors.len() + 3 * plan.tp as usize);
        for t in &self.tensors {
            let parts: Vec<(&str, i64)> =
                if split_qkv && t.name.ends_with(".self_attn.qkv_proj.weight") {
                    let hd = plan.head_dim;
                    vec![
                        ("q_proj", plan.q_heads_per_rank * hd),
                        ("k_proj", plan.kv_heads_per_rank * hd),
                        ("v_proj", plan.kv_heads_per_rank * hd),
                    ]
                } else if split_gate_up && t.name.ends_with(".mlp.gate_up_proj.weight") {
                    let ir = plan.intermediate_per_rank;
                    vec![("gate_proj", ir), ("up_proj", ir)]
                } else {
                    tensors.push(t.clone());
                    continue;
                };
            let prefix = &t.name[..t
                .name
                .rfind('.')
                .and_then(|i| t.name[..i].rfind('.'))
                .unwrap_or(0)];
            let row_bytes = t.bytes.len() / t.dims[0] as usize;
            let mut start = 0;
            for (part, rows) in parts {
                let end = start + rows as usize * row_bytes;
                tensors.push(WeightTensor {
                    name: format!("{prefix}.{part}.weight"),
                    key: t.key.clone(),
                    dtype: t.dtype,
                    dims: vec![rows, t.dims[1]],
                    bytes: t.bytes[start..end].to_vec(),
                });
                start = end;
            }
        }
        RankWeights {
            rank: self.rank,
            tp: self.tp,
            dtype: self.dtype,
            tensors,
        }
    }

    /// The shards for a recorded graph's weight inputs, in the graph's input order; checks
    /// that each exists with the graph's dtype and dims and comes from the graph's key.
    pub fn for_graph_inputs(&self, inputs: &[IoInfo<InputRole>]) -> Result<Vec<&WeightTensor>> {
        let mut out = Vec::new();
        for input in inputs {
            let InputRole::Weight { key, .. } = &input.role else {
                continue;
            };
            let bad = |reason: String| WeightsError::GraphMismatch {
                name: input.name.clone(),
                reason,
            };
            let t = self
                .get(&input.name)
                .ok_or_else(|| bad(format!("rank {} has no such weight shard", self.rank)))?;
            if t.dims != input.ty.dims || t.dtype != input.ty.dtype {
                return Err(bad(format!(
                    "the graph expects {}{:?}, the shard is {}{:?}",
                    input.ty.dtype, input.ty.dims, t.dtype, t.dims
                )));
            }
            if &t.key != key {
                return Err(bad(format!(
                    "the graph reads `{key}`, the shard comes from `{}`",
                    t.key
                )));
            }
            out.push(t);
        }
        Ok(out)
    }

    /// The shards as a safetensors file. Deterministic: tensors are sorted by name (within
    /// dtype) by the `safetensors` crate and the only metadata is `format: pt`.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, String> {
        let mut views = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let dtype = match t.dtype {
                DType::F32 => Dtype::F32,
                DType::BF16 => Dtype::BF16,
                DType::F16 => Dtype::F16,
                DType::S32 => Dtype::I32,
                other => {
                    return Err(format!(
                        "tensor `{}` has dtype {other}, which is not written",
                        t.name
                    ))
                }
            };
            let view = ByteView {
                dtype,
                shape: t.dims.iter().map(|&d| d as usize).collect(),
                data: &t.bytes,
            };
            views.push((t.name.clone(), view));
        }
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())
    }
}

struct ByteView<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: &'a [u8],
}

impl View for ByteView<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(self.data)
    }

    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The parsed header of one safetensors file.
#[derive(Debug)]
struct FileHeader {
    path: PathBuf,
    /// Byte offset of the data section (8 + header length).
    data_start: u64,
    tensors: HashMap<String, TensorInfo>,
}

impl FileHeader {
    fn read(path: &Path) -> Result<FileHeader> {
        let io_err = |error| WeightsError::Io {
            path: path.to_path_buf(),
            error,
        };
        let corrupt = |reason: String| WeightsError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let mut f = File::open(path).map_err(io_err)?;
        let file_len = f.metadata().map_err(io_err)?.len();
        if file_len < 8 {
            return Err(corrupt(format!(
                "the file is {file_len} bytes, too short for the 8-byte header length"
            )));
        }
        let mut n = [0u8; 8];
        f.read_exact(&mut n).map_err(io_err)?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER_BYTES {
            return Err(corrupt(format!(
                "header length {n} is larger than the {MAX_HEADER_BYTES}-byte limit"
            )));
        }
        if n > file_len - 8 {
            return Err(corrupt(format!(
                "the header is {n} bytes but only {} bytes follow the header length",
                file_len - 8
            )));
        }
        let mut header = vec![0u8; n as usize];
        f.read_exact(&mut header).map_err(io_err)?;
        let meta: Metadata =
            serde_json::from_slice(&header).map_err(|e| corrupt(format!("invalid header: {e}")))?;
        let available = file_len - 8 - n;
        let needed = meta.data_len() as u64;
        if needed > available {
            let first_cut = meta.offset_keys().into_iter().find(|k| {
                meta.info(k)
                    .is_some_and(|i| i.data_offsets.1 as u64 > available)
            });
            let which = first_cut
                .map(|k| format!("tensor `{k}` ends past the end of the file; "))
                .unwrap_or_default();
            return Err(corrupt(format!(
                "{which}the header describes {needed} data bytes but the file holds only {available}"
            )));
        }
        if needed < available {
            return Err(corrupt(format!(
                "{} unexpected bytes after the last tensor's data",
                available - needed
            )));
        }
        let tensors = meta
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        Ok(FileHeader {
            path: path.to_path_buf(),
            data_start: 8 + n,
            tensors,
        })
    }
}

/// Where a checkpoint's tensors live.
#[derive(Debug)]
pub struct Checkpoint {
    /// The index file of a sharded checkpoint.
    index: Option<PathBuf>,
    files: Vec<FileHeader>,
    /// Tensor name → index into `files`.
    locations: BTreeMap<String, usize>,
}

/// A checkpoint tensor's header entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    pub file: PathBuf,
    /// The safetensors dtype name (`F32`, `BF16`, ...).
    pub dtype: String,
    pub shape: Vec<usize>,
}

impl Checkpoint {
    /// Opens a checkpoint: a directory holding `model.safetensors` (preferred, as transformers
    /// does) or `model.safetensors.index.json`; or the path of a `.safetensors` file or of an
    /// index `.json` file. Reads and checks every file's header.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        if path.is_dir() {
            let single = path.join(SINGLE_FILE);
            let index = path.join(INDEX_FILE);
            if single.is_file() {
                Self::open_single(&single)
            } else if index.is_file() {
                Self::open_index(&index)
            } else {
                Err(WeightsError::NoCheckpoint {
                    dir: path.to_path_buf(),
                })
            }
        } else if path.extension().is_some_and(|e| e == "json") {
            Self::open_index(path)
        } else {
            Self::open_single(path)
        }
    }

    fn open_single(path: &Path) -> Result<Checkpoint> {
        let header = FileHeader::read(path)?;
        let locations = header.tensors.keys().map(|k| (k.clone(), 0)).collect();
        Ok(Checkpoint {
            index: None,
            files: vec![header],
            locations,
        })
    }

    fn open_index(index: &Path) -> Result<Checkpoint> {
        let malformed = |reason: String| WeightsError::MalformedIndex {
            path: index.to_path_buf(),
            reason,
        };
        let text = std::fs::read(index).map_err(|error| WeightsError::Io {
            path: index.to_path_buf(),
            error,
        })?;
        let json: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .ok_or_else(|| malformed("no `weight_map` key".into()))?
            .as_object()
            .ok_or_else(|| malformed("`weight_map` is not a JSON object".into()))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut wanted: BTreeMap<String, String> = BTreeMap::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                malformed(format!(
                    "weight_map entry for `{tensor}` is not a string: {file}"
                ))
            })?;
            let plain = !file.is_empty()
                && Path::new(file)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)));
            if !plain {
                return Err(malformed(format!(
                    "weight_map entry for `{tensor}` is {file:?}, not a file name relative to the index"
                )));
            }
            wanted.insert(tensor.clone(), file.to_string());
        }
        // Every named file must exist; report the first tensor that points at a missing one.
        let names: BTreeSet<&String> = wanted.values().collect();
        let mut files = Vec::with_capacity(names.len());
        let mut slot: HashMap<&str, usize> = HashMap::new();
        for name in names {
            let path = dir.join(name);
            if !path.is_file() {
                let tensor = wanted
                    .iter()
                    .find(|(_, f)| *f == name)
                    .map(|(t, _)| t.clone())
                    .unwrap_or_default();
                return Err(WeightsError::MissingShardFile {
                    index: index.to_path_buf(),
                    file: path,
                    tensor,
                });
            }
            slot.insert(name.as_str(), files.len());
            files.push(FileHeader::read(&path)?);
        }
        let locations = wanted
            .iter()
            .map(|(t, f)| (t.clone(), slot[f.as_str()]))
            .collect();
        Ok(Checkpoint {
            index: Some(index.to_path_buf()),
            files,
            locations,
        })
    }

    /// The safetensors files of the checkpoint.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Every tensor name the checkpoint lists.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.locations.keys().map(String::as_str)
    }

    fn searched(&self) -> String {
        let files: Vec<String> = self
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        match &self.index {
            Some(index) => format!(
                "the weight_map of {} (files: {})",
                index.display(),
                files.join(", ")
            ),
            None => files.join(", "),
        }
    }

    fn locate(&self, tensor: &str) -> Result<(&FileHeader, &TensorInfo)> {
        let missing = |searched: String| WeightsError::MissingTensor {
            tensor: tensor.to_string(),
            searched,
        };
        let &slot = self
            .locations
            .get(tensor)
            .ok_or_else(|| missing(self.searched()))?;
        let file = &self.files[slot];
        let info = file.tensors.get(tensor).ok_or_else(|| {
            let by = self
                .index
                .as_ref()
                .map(|i| format!(", where the weight_map of {} puts it", i.display()));
            missing(format!("{}{}", file.path.display(), by.unwrap_or_default()))
        })?;
        Ok((file, info))
    }

    /// A tensor's header entry, if the checkpoint has it.
    pub fn tensor_meta(&self, tensor: &str) -> Option<TensorMeta> {
        let (file, info) = self.locate(tensor).ok()?;
        Some(TensorMeta {
            file: file.path.clone(),
            dtype: info.dtype.to_string(),
            shape: info.shape.clone(),
        })
    }

    /// Checks that the tensor exists with `shape` and a supported dtype.
    fn check(&self, tensor: &str, shape: &[usize]) -> Result<(&FileHeader, &TensorInfo)> {
        let (file, info) = self.locate(tensor)?;
        if info.shape != shape {
            return Err(WeightsError::WrongShape {
                path: file.path.clone(),
                tensor: tensor.to_string(),
                expected: shape.to_vec(),
                got: info.shape.clone(),
            });
        }
        if !matches!(info.dtype, Dtype::F32 | Dtype::BF16 | Dtype::F16) {
            return Err(WeightsError::UnsupportedDtype {
                path: file.path.clone(),
                tensor: tensor.to_string(),
                dtype: info.dtype.to_string(),
            });
        }
        Ok((file, info))
    }

    /// Checks that every tensor the model needs exists with the exact Hugging Face shape and
    /// a supported dtype (F32, BF16, F16). Extra tensors are ignored.
    pub fn validate(&self, cfg: &Phi3Config) -> Result<()> {
        for (name, shape) in hf_tensor_shapes(cfg) {
            self.check(&name, &shape)?;
        }
        Ok(())
    }

    /// Reads a tensor's raw bytes and its dtype (no conversion).
    fn read_raw(
        &self,
        file: &FileHeader,
        tensor: &str,
        info: &TensorInfo,
    ) -> Result<(Dtype, Vec<u8>)> {
        let io_err = |error: io::Error| {
            if error.kind() == io::ErrorKind::UnexpectedEof {
                WeightsError::Corrupt {
                    path: file.path.clone(),
                    reason: format!(
                        "tensor `{tensor}`: the file ended early (was it truncated after opening?)"
                    ),
                }
            } else {
                WeightsError::Io {
                    path: file.path.clone(),
                    error,
                }
            }
        };
        let (start, end) = info.data_offsets;
        let mut f = File::open(&file.path).map_err(io_err)?;
        f.seek(SeekFrom::Start(file.data_start + start as u64))
            .map_err(io_err)?;
        let mut bytes = vec![0u8; end - start];
        f.read_exact(&mut bytes).map_err(io_err)?;
        Ok((info.dtype, bytes))
    }

    /// Reads a whole checkpoint tensor converted to `dtype` (f32 or bf16). The dtype of the
    /// stored tensor must be F32, BF16 or F16.
    pub fn read(&self, tensor: &str, dtype: DType) -> Result<WeightTensor> {
        check_target(dtype)?;
        let shape = self.locate(tensor)?.1.shape.clone();
        let (file, info) = self.check(tensor, &shape)?;
        let (from, bytes) = self.read_raw(file, tensor, info)?;
        Ok(WeightTensor {
            name: tensor.to_string(),
            key: tensor.to_string(),
            dtype,
            dims: info.shape.iter().map(|&d| d as i64).collect(),
            bytes: convert(&bytes, from, dtype),
        })
    }
}

fn check_target(dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::BF16 => Ok(()),
        other => Err(WeightsError::UnsupportedTarget(other)),
    }
}

/// Converts little-endian F32/BF16/F16 bytes to `to` (f32 or bf16), rounding to nearest even
/// when narrowing. Same-dtype input is copied bit for bit.
fn convert(bytes: &[u8], from: Dtype, to: DType) -> Vec<u8> {
    let same = matches!(
        (from, to),
        (Dtype::F32, DType::F32) | (Dtype::BF16, DType::BF16) | (Dtype::F16, DType::F16)
    );
    if same {
        return bytes.to_vec();
    }
    let widen = |c: &[u8]| -> f32 {
        match from {
            Dtype::BF16 => half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32(),
            Dtype::F16 => half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32(),
            _ => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        }
    };
    let width = if from == Dtype::F32 { 4 } else { 2 };
    let values = bytes.chunks_exact(width).map(widen);
    match to {
        DType::BF16 => values
            .flat_map(|v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        DType::F16 => values
            .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => values.flat_map(f32::to_le_bytes).collect(),
    }
}

/// What one graph weight parameter is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Param {
    Embed,
    Norm,
    Qkv,
    O,
    GateUp,
    Down,
    LmHead,
}

/// `(graph parameter name, HF key, kind)` in the graph's parameter order.
fn params(cfg: &Phi3Config) -> Vec<(String, String, Param)> {
    let mut out = Vec::with_capacity(3 + 6 * cfg.num_hidden_layers);
    let same = |n: String, p: Param| (n.clone(), n, p);
    out.push(same("model.embed_tokens.weight".into(), Param::Embed));
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.push(same(format!("{p}.input_layernorm.weight"), Param::Norm));
        out.push(same(format!("{p}.self_attn.qkv_proj.weight"), Param::Qkv));
        out.push(same(format!("{p}.self_attn.o_proj.weight"), Param::O));
        out.push(same(
            format!("{p}.post_attention_layernorm.weight"),
            Param::Norm,
        ));
        out.push(same(format!("{p}.mlp.gate_up_proj.weight"), Param::GateUp));
        out.push(same(format!("{p}.mlp.down_proj.weight"), Param::Down));
    }
    out.push(same("model.norm.weight".into(), Param::Norm));
    let lm_key = if cfg.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    out.push(("lm_head.weight".into(), lm_key.into(), Param::LmHead));
    out
}

/// The graph's weight parameter names, in the graph's parameter order.
pub fn ordered_names(cfg: &Phi3Config) -> Vec<String> {
    params(cfg).into_iter().map(|(name, _, _)| name).collect()
}

/// The Hugging Face checkpoint tensor each graph weight parameter is cut from (same order as
/// [`ordered_names`]; `lm_head.weight` comes from `model.embed_tokens.weight` when tied).
pub fn source_keys(cfg: &Phi3Config) -> Vec<String> {
    params(cfg).into_iter().map(|(_, key, _)| key).collect()
}

fn hf_shape(cfg: &Phi3Config, p: Param) -> Vec<usize> {
    let (h, i, v, hd) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.vocab_size,
        cfg.head_dim,
    );
    let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    match p {
        Param::Embed | Param::LmHead => vec![v, h],
        Param::Norm => vec![h],
        Param::Qkv => vec![(nh + 2 * nkv) * hd, h],
        Param::O => vec![h, nh * hd],
        Param::GateUp => vec![2 * i, h],
        Param::Down => vec![h, i],
    }
}

/// Every checkpoint tensor the model needs with its Hugging Face shape, without duplicates
/// (a tied checkpoint has no `lm_head.weight`).
pub fn hf_tensor_shapes(cfg: &Phi3Config) -> Vec<(String, Vec<usize>)> {
    let mut seen = BTreeSet::new();
    params(cfg)
        .into_iter()
        .filter(|(_, key, _)| seen.insert(key.clone()))
        .map(|(_, key, p)| (key, hf_shape(cfg, p)))
        .collect()
}

/// Checks that `plan` was made for `cfg` and is internally consistent, so slicing can't go out
/// of bounds.
fn check_plan(cfg: &Phi3Config, plan: &ShardPlan) -> Result<()> {
    let fail = |reason: String| {
        Err(WeightsError::PlanMismatch {
            model: cfg.name.clone(),
            reason,
        })
    };
    let t = plan.tp;
    if t < 1 {
        return fail(format!("tp={t}"));
    }
    let eq = |what: &str, plan_v: i64, cfg_v: usize| -> Result<()> {
        if plan_v == cfg_v as i64 {
            Ok(())
        } else {
            fail(format!(
                "{what} is {plan_v} in the plan but {cfg_v} in the config"
            ))
        }
    };
    eq("hidden size", plan.hidden, cfg.hidden_size)?;
    eq("head_dim", plan.head_dim, cfg.head_dim)?;
    eq("vocab size", plan.vocab, cfg.vocab_size)?;
    let split = |what: &str, total: i64, per_rank: i64, at_least: usize| -> Result<()> {
        if per_rank < 0 || per_rank.checked_mul(t) != Some(total) || total < at_least as i64 {
            fail(format!(
                "{what}: {per_rank} per rank × {t} ranks ≠ {total}, or fewer than {at_least}"
            ))
        } else {
            Ok(())
        }
    };
    split("hidden", plan.hidden, plan.hidden_per_rank, cfg.hidden_size)?;
    split(
        "intermediate",
        plan.intermediate_padded,
        plan.intermediate_per_rank,
        cfg.intermediate_size,
    )?;
    split(
        "vocab",
        plan.vocab_padded,
        plan.vocab_per_rank,
        cfg.vocab_size,
    )?;
    split(
        "query heads",
        plan.q_heads,
        plan.q_heads_per_rank,
        cfg.num_attention_heads,
    )?;
    split("KV heads", plan.kv_heads, plan.kv_heads_per_rank, 0)?;
    let sources = |what: &str, src: &[Option<i64>], len: i64, n: usize| -> Result<()> {
        if src.len() as i64 != len {
            return fail(format!("{} {what} head sources for {len} heads", src.len()));
        }
        match src.iter().flatten().find(|&&s| s < 0 || s >= n as i64) {
            Some(s) => fail(format!(
                "{what} head source {s} is out of range (the model has {n})"
            )),
            None => Ok(()),
        }
    };
    sources(
        "query",
        &plan.q_head_source,
        plan.q_heads,
        cfg.num_attention_heads,
    )?;
    sources(
        "KV",
        &plan.kv_head_source,
        plan.kv_heads,
        cfg.num_key_value_heads,
    )?;
    Ok(())
}

/// `len` consecutive rows (or columns) copied from index `src` onwards, or zeros for `None`.
#[derive(Clone, Copy, Debug)]
struct Run {
    src: Option<usize>,
    len: usize,
}

/// `len` entries starting at padded index `start` of an axis with `real` entries (the rest is
/// padding), with source offset `base`.
fn padded(base: usize, start: usize, len: usize, real: usize) -> [Run; 2] {
    let n = real.saturating_sub(start).min(len);
    [
        Run {
            src: Some(base + start),
            len: n,
        },
        Run {
            src: None,
            len: len - n,
        },
    ]
}

/// One run of `hd` rows/columns per head: `base + src·hd`, or zeros.
fn heads(base: usize, hd: usize, sources: &[Option<i64>]) -> Vec<Run> {
    sources
        .iter()
        .map(|s| Run {
            src: s.map(|s| base + s as usize * hd),
            len: hd,
        })
        .collect()
}

/// Gathers rows of `row_bytes` bytes; `None` if a run reads past the data.
fn take_rows(data: &[u8], row_bytes: usize, runs: &[Run]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(runs.iter().map(|r| r.len).sum::<usize>() * row_bytes);
    for run in runs {
        match run.src {
            Some(s) => out.extend_from_slice(data.get(s * row_bytes..(s + run.len) * row_bytes)?),
            None => out.resize(out.len() + run.len * row_bytes, 0),
        }
    }
    Some(out)
}

/// Gathers columns (elements of `elem` bytes) of a `[rows, cols]` matrix.
fn take_cols(data: &[u8], rows: usize, cols: usize, elem: usize, runs: &[Run]) -> Option<Vec<u8>> {
    let out_cols: usize = runs.iter().map(|r| r.len).sum();
    if data.len() != rows * cols * elem
        || runs.iter().any(|r| r.src.is_some_and(|s| s + r.len > cols))
    {
        return None;
    }
    let mut out = Vec::with_capacity(rows * out_cols * elem);
    for row in data.chunks_exact(cols * elem) {
        for run in runs {
            match run.src {
                Some(s) => out.extend_from_slice(&row[s * elem..(s + run.len) * elem]),
                None => out.resize(out.len() + run.len * elem, 0),
            }
        }
    }
    Some(out)
}

/// The per-rank dims of a parameter (the same on every rank).
fn shard_dims(cfg: &Phi3Config, plan: &ShardPlan, param: Param) -> Vec<usize> {
    let (h, v, hd) = (cfg.hidden_size, cfg.vocab_size, cfg.head_dim);
    let (hr, ir, vr) = (
        plan.hidden_per_rank as usize,
        plan.intermediate_per_rank as usize,
        plan.vocab_per_rank as usize,
    );
    let (qr, kvr) = (
        plan.q_heads_per_rank as usize,
        plan.kv_heads_per_rank as usize,
    );
    match param {
        Param::Norm => vec![h],
        Param::Embed => vec![v, hr],
        Param::Qkv => vec![(qr + 2 * kvr) * hd, h],
        Param::O => vec![h, qr * hd],
        Param::GateUp => vec![2 * ir, h],
        Param::Down => vec![h, ir],
        Param::LmHead => vec![vr, h],
    }
}

/// Rank `rank`'s slice of a whole checkpoint tensor (`data`, stored as `from`): its dims and
/// bytes, still in the stored dtype.
fn cut(
    cfg: &Phi3Config,
    plan: &ShardPlan,
    rank: i64,
    (key, param): (&str, Param),
    data: &[u8],
    from: Dtype,
) -> Result<(Vec<i64>, Vec<u8>)> {
    let r = rank as usize;
    let (h, i, v, hd) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.vocab_size,
        cfg.head_dim,
    );
    let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let hr = plan.hidden_per_rank as usize;
    let ir = plan.intermediate_per_rank as usize;
    let vr = plan.vocab_per_rank as usize;
    let (qr, kvr) = (
        plan.q_heads_per_rank as usize,
        plan.kv_heads_per_rank as usize,
    );
    let q_src = &plan.q_head_source[r * qr..(r + 1) * qr];
    let kv_src = &plan.kv_head_source[r * kvr..(r + 1) * kvr];
    let elem = if from == Dtype::F32 { 4 } else { 2 };
    let bytes = match param {
        Param::Norm => Some(data.to_vec()),
        Param::Embed => {
            let runs = [Run {
                src: Some(r * hr),
                len: hr,
            }];
            take_cols(data, v, h, elem, &runs)
        }
        Param::Qkv => {
            let mut runs = heads(0, hd, q_src);
            runs.extend(heads(nh * hd, hd, kv_src));
            runs.extend(heads((nh + nkv) * hd, hd, kv_src));
            take_rows(data, h * elem, &runs)
        }
        Param::O => take_cols(data, h, nh * hd, elem, &heads(0, hd, q_src)),
        Param::GateUp => {
            let mut runs = padded(0, r * ir, ir, i).to_vec();
            runs.extend(padded(i, r * ir, ir, i));
            take_rows(data, h * elem, &runs)
        }
        Param::Down => take_cols(data, h, i, elem, &padded(0, r * ir, ir, i)),
        Param::LmHead => take_rows(data, h * elem, &padded(0, r * vr, vr, v)),
    };
    let bytes = bytes.ok_or_else(|| WeightsError::PlanMismatch {
        model: cfg.name.clone(),
        reason: format!("rank {rank}'s shard of `{key}` reads outside the tensor"),
    })?;
    let dims = shard_dims(cfg, plan, param)
        .into_iter()
        .map(|d| d as i64)
        .collect();
    Ok((dims, bytes))
}

/// The weight shards of `rank`, in the graph's parameter order, converted to `dtype` (f32 or
/// bf16). Validates the checkpoint against `cfg` first.
pub fn shard_for_rank(
    ckpt: &Checkpoint,
    cfg: &Phi3Config,
    plan: &ShardPlan,
    rank: i64,
    dtype: DType,
) -> Result<RankWeights> {
    if rank < 0 || rank >= plan.tp {
        return Err(WeightsError::BadRank { rank, tp: plan.tp });
    }
    let mut one = shard_ranks(ckpt, cfg, plan, &[rank], dtype)?;
    Ok(one.remove(0))
}

/// Every rank's shards, reading each checkpoint tensor once (rather than once per rank, as
/// calling [`shard_for_rank`] for each rank would).
pub fn shard_all_ranks(
    ckpt: &Checkpoint,
    cfg: &Phi3Config,
    plan: &ShardPlan,
    dtype: DType,
) -> Result<Vec<RankWeights>> {
    let ranks: Vec<i64> = (0..plan.tp).collect();
    shard_ranks(ckpt, cfg, plan, &ranks, dtype)
}

/// The shards of `ranks`, reading each checkpoint tensor once and cutting it for each rank.
fn shard_ranks(
    ckpt: &Checkpoint,
    cfg: &Phi3Config,
    plan: &ShardPlan,
    ranks: &[i64],
    dtype: DType,
) -> Result<Vec<RankWeights>> {
    check_target(dtype)?;
    check_plan(cfg, plan)?;
    ckpt.validate(cfg)?;
    let mut out: Vec<RankWeights> = ranks
        .iter()
        .map(|&rank| RankWeights {
            rank,
            tp: plan.tp,
            dtype,
            tensors: Vec::new(),
        })
        .collect();
    for (name, key, param) in params(cfg) {
        let (file, info) = ckpt.check(&key, &hf_shape(cfg, param))?;
        let (from, data) = ckpt.read_raw(file, &key, info)?;
        for w in &mut out {
            let (dims, bytes) = cut(cfg, plan, w.rank, (&key, param), &data, from)?;
            w.tensors.push(WeightTensor {
                name: name.clone(),
                key: key.clone(),
                dtype,
                dims,
                bytes: convert(&bytes, from, dtype),
            });
        }
    }
    Ok(out)
}

/// The file name of rank `r`'s shards.
pub fn rank_file_name(rank: i64) -> String {
    format!("tp{rank}.safetensors")
}

/// Writes `tp{r}.safetensors` for every rank into `out_dir`. Each checkpoint tensor is read
/// once and cut for every rank, and the rank files are streamed (bounded memory, one pass over
/// the checkpoint), each into a temporary file that is renamed into place when complete. The
/// same checkpoint, config, plan and dtype give identical bytes. Returns the paths written, in
/// rank order.
pub fn write_rank_files(
    ckpt: &Checkpoint,
    cfg: &Phi3Config,
    plan: &ShardPlan,
    dtype: DType,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    use crate::neuron::artifacts::{commit, temporary_path};
    use std::io::{BufWriter, Write};
    check_target(dtype)?;
    check_plan(cfg, plan)?;
    ckpt.validate(cfg)?;
    let params = params(cfg);
    // Every rank file has the same names, shapes and offsets: one header serves all.
    let st_dtype = if dtype == DType::BF16 { "BF16" } else { "F32" };
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut offset = 0usize;
    for (name, _, param) in &params {
        let dims = shard_dims(cfg, plan, *param);
        let len = dims.iter().product::<usize>() * dtype.byte_size();
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": st_dtype, "shape": dims, "data_offsets": [offset, offset + len] }),
        );
        offset += len;
    }
    let mut header =
        serde_json::to_vec(&serde_json::Value::Object(header)).expect("JSON values serialise");
    // The format pads the header with spaces to an 8-byte boundary.
    header.resize(header.len().div_ceil(8) * 8, b' ');

    let paths: Vec<PathBuf> = (0..plan.tp)
        .map(|r| out_dir.join(rank_file_name(r)))
        .collect();
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |error: io::Error| WeightsError::Io { path, error }
    };
    let mut temps = Vec::with_capacity(paths.len());
    let result = (|| -> Result<()> {
        let mut writers = Vec::with_capacity(paths.len());
        for path in &paths {
            let tmp = temporary_path(path).map_err(io_err(path))?;
            temps.push(tmp.clone());
            let mut w = BufWriter::new(File::create(&tmp).map_err(io_err(path))?);
            w.write_all(&(header.len() as u64).to_le_bytes())
                .map_err(io_err(path))?;
            w.write_all(&header).map_err(io_err(path))?;
            writers.push(w);
        }
        for (_, key, param) in &params {
            let (file, info) = ckpt.check(key, &hf_shape(cfg, *param))?;
            let (from, data) = ckpt.read_raw(file, key, info)?;
            for (rank, w) in writers.iter_mut().enumerate() {
                let (_, bytes) = cut(cfg, plan, rank as i64, (key, *param), &data, from)?;
                w.write_all(&convert(&bytes, from, dtype))
                    .map_err(io_err(&paths[rank]))?;
            }
        }
        for (w, path) in writers.into_iter().zip(&paths) {
            let f = w.into_inner().map_err(|e| io_err(path)(e.into_error()))?;
            f.sync_all().map_err(io_err(path))?;
        }
        for (tmp, path) in temps.iter().zip(&paths) {
            commit(tmp, path).map_err(io_err(path))?;
        }
        Ok(())
    })();
    if result.is_err() {
        for tmp in &temps {
            let _ = std::fs::remove_file(tmp);
        }
    }
    result.map(|()| paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::phi3::graph::{record, GraphSpec};
    use crate::models::phi3::plan::KvStrategy;
    use safetensors::SafeTensors;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const FIXTURES: [&str; 8] = [
        "mha",
        "gqa",
        "gqa_mha_convert",
        "longrope",
        "partial_rotary",
        "phi4_like",
        "sliding_window",
        "tied",
    ];

    fn fixture_dir(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models")
            .join(name)
    }

    fn load(name: &str) -> (Phi3Config, Checkpoint) {
        let dir = fixture_dir(name);
        let cfg = Phi3Config::from_file(&dir.join("config.json")).unwrap();
        let ckpt = Checkpoint::open(&dir).unwrap();
        (cfg, ckpt)
    }

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::SeqCst);
            let dir =
                std::env::temp_dir().join(format!("phi3-weights-{}-{tag}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// An owned tensor for writing test checkpoints.
    struct Owned {
        dtype: Dtype,
        shape: Vec<usize>,
        data: Vec<u8>,
    }

    impl View for &Owned {
        fn dtype(&self) -> Dtype {
            self.dtype
        }
        fn shape(&self) -> &[usize] {
            &self.shape
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            std::borrow::Cow::Borrowed(&self.data)
        }
        fn data_len(&self) -> usize {
            self.data.len()
        }
    }

    fn fixture_tensors(name: &str) -> BTreeMap<String, Owned> {
        let bytes = std::fs::read(fixture_dir(name).join(SINGLE_FILE)).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        st.tensors()
            .into_iter()
            .map(|(k, v)| {
                let t = Owned {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    data: v.data().to_vec(),
                };
                (k, t)
            })
            .collect()
    }

    fn write_st(path: &Path, tensors: &BTreeMap<String, Owned>) {
        let bytes =
            safetensors::serialize(tensors.iter().map(|(k, v)| (k.clone(), v)), None).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// A copy of fixture `name` whose tensors went through `edit`.
    fn edited_fixture(name: &str, edit: impl FnOnce(&mut BTreeMap<String, Owned>)) -> TempDir {
        let dir = TempDir::new(name);
        std::fs::copy(
            fixture_dir(name).join("config.json"),
            dir.path().join("config.json"),
        )
        .unwrap();
        let mut tensors = fixture_tensors(name);
        edit(&mut tensors);
        write_st(&dir.path().join(SINGLE_FILE), &tensors);
        dir
    }

    fn f32s(t: &WeightTensor) -> Vec<f32> {
        t.to_f32().unwrap()
    }

    fn hf(ckpt: &Checkpoint, key: &str) -> (Vec<usize>, Vec<f32>) {
        let t = ckpt.read(key, DType::F32).unwrap();
        let dims = t.dims.iter().map(|&d| d as usize).collect();
        (dims, f32s(&t))
    }

    fn plans(cfg: &Phi3Config) -> Vec<ShardPlan> {
        [1, 2, 4]
            .into_iter()
            .filter_map(|tp| ShardPlan::new(cfg, tp).ok())
            .collect()
    }

    /// Rows `[a, b)` of a row-major matrix with `cols` columns.
    fn rows(m: &[f32], cols: usize, a: usize, b: usize) -> &[f32] {
        &m[a * cols..b * cols]
    }

    /// Columns `[a, b)` of a row-major matrix with `cols` columns.
    fn cols(m: &[f32], ncols: usize, a: usize, b: usize) -> Vec<f32> {
        m.chunks_exact(ncols)
            .flat_map(|row| row[a..b].to_vec())
            .collect()
    }

    #[test]
    fn shard_all_ranks_equals_shard_for_rank() {
        for name in ["gqa", "gqa_mha_convert", "tied"] {
            let (cfg, ckpt) = load(name);
            for plan in plans(&cfg) {
                let all = shard_all_ranks(&ckpt, &cfg, &plan, DType::BF16).unwrap();
                for (rank, w) in all.iter().enumerate() {
                    let one = shard_for_rank(&ckpt, &cfg, &plan, rank as i64, DType::BF16).unwrap();
                    assert_eq!(w, &one, "{name} tp{} rank {rank}", plan.tp);
                }
            }
        }
    }

    #[test]
    fn shards_have_the_graphs_shapes_for_every_fixture() {
        let mut checked = 0;
        for name in FIXTURES {
            let (cfg, ckpt) = load(name);
            for plan in plans(&cfg) {
                let spec = GraphSpec::context_encoding(1, 8, 16, DType::F32);
                let graph = record(&cfg, &plan, &spec).unwrap();
                let weight_inputs: Vec<_> = graph
                    .inputs
                    .iter()
                    .filter(|i| matches!(i.role, InputRole::Weight { .. }))
                    .collect();
                let names: Vec<String> = weight_inputs.iter().map(|i| i.name.clone()).collect();
                assert_eq!(names, ordered_names(&cfg), "{name} tp={}", plan.tp);
                for rank in 0..plan.tp {
                    let w = shard_for_rank(&ckpt, &cfg, &plan, rank, DType::F32).unwrap();
                    assert_eq!(w.names().collect::<Vec<_>>(), names);
                    for (input, shard) in weight_inputs.iter().zip(&w.tensors) {
                        assert_eq!(
                            shard.dims, input.ty.dims,
                            "{name} tp={} rank {rank} {}",
                            plan.tp, input.name
                        );
                        assert_eq!(shard.bytes.len() as i64, input.ty.byte_size());
                        let InputRole::Weight { key, .. } = &input.role else {
                            unreachable!()
                        };
                        assert_eq!(&shard.key, key);
                    }
                    let picked = w.for_graph_inputs(&graph.inputs).unwrap();
                    assert_eq!(picked.len(), weight_inputs.len());
                    checked += 1;
                }
            }
        }
        assert_eq!(
            checked,
            8 * (1 + 2 + 4),
            "every fixture shards at tp 1, 2 and 4"
        );
    }

    #[test]
    fn for_graph_inputs_rejects_a_dtype_mismatch() {
        let (cfg, ckpt) = load("mha");
        let plan = ShardPlan::new(&cfg, 2).unwrap();
        let graph = record(
            &cfg,
            &plan,
            &GraphSpec::context_encoding(1, 8, 16, DType::BF16),
        )
        .unwrap();
        let w = shard_for_rank(&ckpt, &cfg, &plan, 0, DType::F32).unwrap();
        let err = w.for_graph_inputs(&graph.inputs).unwrap_err().to_string();
        assert!(
            err.contains("model.embed_tokens.weight") && err.contains("bf16"),
            "{err}"
        );
    }

    /// Rebuilds every HF tensor from all ranks' shards and checks the padding is zero.
    fn check_reassembly(name: &str, plan: &ShardPlan, cfg: &Phi3Config, ckpt: &Checkpoint) {
        let t = plan.tp as usize;
        let ranks: Vec<RankWeights> = (0..plan.tp)
            .map(|r| shard_for_rank(ckpt, cfg, plan, r, DType::F32).unwrap())
            .collect();
        let get = |r: usize, n: &str| f32s(ranks[r].get(n).unwrap());
        let (h, i, v, hd) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.vocab_size,
            cfg.head_dim,
        );
        let (nh, nkv, g) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.num_kv_groups(),
        );
        let (qr, kvr) = (
            plan.q_heads_per_rank as usize,
            plan.kv_heads_per_rank as usize,
        );
        let (hr, ir, vr) = (
            h / t,
            plan.intermediate_per_rank as usize,
            plan.vocab_per_rank as usize,
        );
        let ctx = format!("{name} tp={t}");

        // Embedding: columns split across ranks.
        let (_, embed) = hf(ckpt, "model.embed_tokens.weight");
        for r in 0..t {
            assert_eq!(
                get(r, "model.embed_tokens.weight"),
                cols(&embed, h, r * hr, (r + 1) * hr),
                "{ctx}"
            );
        }
        // lm_head: rows padded to V_pad, split in t.
        let lm_key = if cfg.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let (_, lm) = hf(ckpt, lm_key);
        let lm_all: Vec<f32> = (0..t).flat_map(|r| get(r, "lm_head.weight")).collect();
        assert_eq!(&lm_all[..v * h], &lm[..], "{ctx} lm_head");
        assert!(
            lm_all[v * h..].iter().all(|&x| x == 0.0),
            "{ctx} lm_head padding"
        );
        assert_eq!(lm_all.len(), plan.vocab_padded as usize * h);
        assert_eq!(vr * t, plan.vocab_padded as usize);

        for key in ["model.norm.weight"] {
            for r in 0..t {
                assert_eq!(get(r, key), hf(ckpt, key).1);
            }
        }
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            for norm in ["input_layernorm", "post_attention_layernorm"] {
                let key = format!("{p}.{norm}.weight");
                for r in 0..t {
                    assert_eq!(get(r, &key), hf(ckpt, &key).1, "{ctx} {key}");
                }
            }
            // qkv: every padded head block equals its source head, or is zero.
            let qkv_key = format!("{p}.self_attn.qkv_proj.weight");
            let (_, qkv) = hf(ckpt, &qkv_key);
            let hf_head = |block: usize, head: usize| {
                rows(&qkv, h, block + head * hd, block + (head + 1) * hd).to_vec()
            };
            let (k_base, v_base) = (nh * hd, (nh + nkv) * hd);
            let o_key = format!("{p}.self_attn.o_proj.weight");
            let (_, o) = hf(ckpt, &o_key);
            let mut q_seen = vec![0; nh];
            for r in 0..t {
                let shard = get(r, &qkv_key);
                assert_eq!(shard.len(), (qr + 2 * kvr) * hd * h);
                let block = |local: usize| rows(&shard, h, local * hd, (local + 1) * hd).to_vec();
                let o_shard = get(r, &o_key);
                for j in 0..qr {
                    let global = r * qr + j;
                    let o_cols = cols(&o_shard, qr * hd, j * hd, (j + 1) * hd);
                    match plan.q_head_source[global] {
                        Some(s) => {
                            let s = s as usize;
                            q_seen[s] += 1;
                            assert_eq!(block(j), hf_head(0, s), "{ctx} rank {r} q head {j}");
                            assert_eq!(
                                o_cols,
                                cols(&o, nh * hd, s * hd, (s + 1) * hd),
                                "{ctx} o_proj"
                            );
                            // The KV head this query head reads on the rank is its HF KV head.
                            let local_kv = j / (qr / kvr);
                            assert_eq!(
                                block(qr + local_kv),
                                hf_head(k_base, s / g),
                                "{ctx} K of q head {s}"
                            );
                            assert_eq!(
                                block(qr + kvr + local_kv),
                                hf_head(v_base, s / g),
                                "{ctx} V of q head {s}"
                            );
                        }
                        None => {
                            assert!(block(j).iter().all(|&x| x == 0.0), "{ctx} padding q head");
                            assert!(
                                o_cols.iter().all(|&x| x == 0.0),
                                "{ctx} padding o_proj columns"
                            );
                        }
                    }
                }
                for m in 0..kvr {
                    let (k, vv) = (block(qr + m), block(qr + kvr + m));
                    match plan.kv_head_source[r * kvr + m] {
                        Some(s) => {
                            assert_eq!(k, hf_head(k_base, s as usize), "{ctx} rank {r} K head {m}");
                            assert_eq!(
                                vv,
                                hf_head(v_base, s as usize),
                                "{ctx} rank {r} V head {m}"
                            );
                        }
                        None => assert!(
                            k.iter().chain(&vv).all(|&x| x == 0.0),
                            "{ctx} padding KV head"
                        ),
                    }
                }
            }
            assert!(
                q_seen.iter().all(|&n| n == 1),
                "{ctx}: every query head exactly once: {q_seen:?}"
            );

            // gate_up: [gate_r; up_r]; concatenating the ranks gives gate and up padded to I_pad.
            let gu_key = format!("{p}.mlp.gate_up_proj.weight");
            let (_, gu) = hf(ckpt, &gu_key);
            let (mut gate, mut up) = (Vec::new(), Vec::new());
            for r in 0..t {
                let s = get(r, &gu_key);
                gate.extend_from_slice(rows(&s, h, 0, ir));
                up.extend_from_slice(rows(&s, h, ir, 2 * ir));
            }
            assert_eq!(&gate[..i * h], rows(&gu, h, 0, i), "{ctx} gate");
            assert_eq!(&up[..i * h], rows(&gu, h, i, 2 * i), "{ctx} up");
            assert!(gate[i * h..].iter().chain(&up[i * h..]).all(|&x| x == 0.0));
            // down: columns padded to I_pad.
            let down_key = format!("{p}.mlp.down_proj.weight");
            let (_, down) = hf(ckpt, &down_key);
            let mut joined = vec![Vec::new(); h];
            for r in 0..t {
                let s = get(r, &down_key);
                for (row, chunk) in joined.iter_mut().zip(s.chunks_exact(ir)) {
                    row.extend_from_slice(chunk);
                }
            }
            for (row, hf_row) in joined.iter().zip(down.chunks_exact(i)) {
                assert_eq!(&row[..i], hf_row, "{ctx} down");
                assert!(row[i..].iter().all(|&x| x == 0.0));
            }
        }
    }

    #[test]
    fn shards_reassemble_into_the_hf_tensors() {
        for name in FIXTURES {
            let (cfg, ckpt) = load(name);
            for plan in plans(&cfg) {
                check_reassembly(name, &plan, &cfg, &ckpt);
            }
        }
    }

    #[test]
    fn gqa_tp4_replicates_kv_heads() {
        let (cfg, ckpt) = load("gqa"); // 8 q heads, 2 KV heads
        let plan = ShardPlan::new(&cfg, 4).unwrap();
        assert_eq!(plan.strategy, KvStrategy::ReplicateToTpDegree);
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (_, qkv) = hf(&ckpt, "model.layers.0.self_attn.qkv_proj.weight");
        let head = |row0: usize| rows(&qkv, h, row0, row0 + hd).to_vec();
        for r in 0..4 {
            let w = shard_for_rank(&ckpt, &cfg, &plan, r as i64, DType::F32).unwrap();
            let s = f32s(w.get("model.layers.0.self_attn.qkv_proj.weight").unwrap());
            assert_eq!(s.len(), 4 * hd * h, "2 q heads + 1 K + 1 V per rank");
            let block = |b: usize| rows(&s, h, b * hd, (b + 1) * hd).to_vec();
            // Rank r holds query heads 2r, 2r+1 and KV head r / 2.
            assert_eq!(block(0), head(2 * r * hd));
            assert_eq!(block(1), head((2 * r + 1) * hd));
            assert_eq!(block(2), head((8 + r / 2) * hd));
            assert_eq!(block(3), head((8 + 2 + r / 2) * hd));
        }
    }

    #[test]
    fn gqa_mha_convert_tp4_expands_kv_and_pads_the_tail() {
        let (cfg, ckpt) = load("gqa_mha_convert"); // 6 q heads, 3 KV heads
        let plan = ShardPlan::new(&cfg, 4).unwrap();
        assert_eq!(plan.strategy, KvStrategy::ConvertToMha);
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (_, qkv) = hf(&ckpt, "model.layers.1.self_attn.qkv_proj.weight");
        let (_, o) = hf(&ckpt, "model.layers.1.self_attn.o_proj.weight");
        let head = |row0: usize| rows(&qkv, h, row0, row0 + hd).to_vec();
        for r in 0..4 {
            let w = shard_for_rank(&ckpt, &cfg, &plan, r as i64, DType::F32).unwrap();
            let s = f32s(w.get("model.layers.1.self_attn.qkv_proj.weight").unwrap());
            let os = f32s(w.get("model.layers.1.self_attn.o_proj.weight").unwrap());
            assert_eq!(s.len(), 6 * hd * h, "2 q heads + 2 K + 2 V per rank");
            let block = |b: usize| rows(&s, h, b * hd, (b + 1) * hd).to_vec();
            if r < 3 {
                // Query heads 2r, 2r+1 both read HF KV head r (6 / 3 = 2 per group).
                for j in 0..2 {
                    assert_eq!(block(j), head((2 * r + j) * hd));
                    assert_eq!(block(2 + j), head((6 + r) * hd), "K");
                    assert_eq!(block(4 + j), head((6 + 3 + r) * hd), "V");
                }
                assert_eq!(os, cols(&o, 6 * hd, 2 * r * hd, (2 * r + 2) * hd));
            } else {
                // Tail padding: heads 6 and 7 are zero everywhere.
                assert!(s.iter().all(|&x| x == 0.0));
                assert!(os.iter().all(|&x| x == 0.0));
            }
        }
    }

    #[test]
    fn tied_lm_head_comes_from_embed_tokens() {
        for name in ["tied", "phi4_like"] {
            let (cfg, ckpt) = load(name);
            assert!(cfg.tie_word_embeddings);
            assert!(
                ckpt.tensor_meta("lm_head.weight").is_none(),
                "{name} stores no lm_head"
            );
            assert!(!hf_tensor_shapes(&cfg)
                .iter()
                .any(|(k, _)| k == "lm_head.weight"));
            let (_, embed) = hf(&ckpt, "model.embed_tokens.weight");
            let plan = ShardPlan::new(&cfg, 2).unwrap();
            let h = cfg.hidden_size;
            let vr = plan.vocab_per_rank as usize;
            for r in 0..2 {
                let w = shard_for_rank(&ckpt, &cfg, &plan, r, DType::F32).unwrap();
                let lm = w.get("lm_head.weight").unwrap();
                assert_eq!(lm.key, "model.embed_tokens.weight");
                let r = r as usize;
                assert_eq!(f32s(lm), rows(&embed, h, r * vr, (r + 1) * vr));
            }
        }
        // Untied: lm_head is its own tensor, different from the embedding.
        let (cfg, ckpt) = load("mha");
        let w = shard_for_rank(
            &ckpt,
            &cfg,
            &ShardPlan::new(&cfg, 1).unwrap(),
            0,
            DType::F32,
        )
        .unwrap();
        assert_eq!(w.get("lm_head.weight").unwrap().key, "lm_head.weight");
        assert_ne!(
            w.get("lm_head.weight").unwrap().bytes,
            hf(&ckpt, "model.embed_tokens.weight")
                .1
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        let cases: [(u32, u16); 7] = [
            (0x3F80_0000, 0x3F80), // 1.0
            (0x3F80_8000, 0x3F80), // halfway, even below: stays
            (0x3F81_8000, 0x3F82), // halfway, odd below: rounds up
            (0x3F80_8001, 0x3F81), // above halfway
            (0x3F80_7FFF, 0x3F80), // below halfway
            (0xBF81_8000, 0xBF82), // negative halfway
            (0x7F7F_FFFF, 0x7F80), // f32::MAX overflows to +inf
        ];
        let input: Vec<u8> = cases.iter().flat_map(|(f, _)| f.to_le_bytes()).collect();
        let out = convert(&input, Dtype::F32, DType::BF16);
        let got: Vec<u16> = out
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(got, cases.iter().map(|c| c.1).collect::<Vec<_>>());
        // NaN stays NaN.
        let nan = convert(&f32::NAN.to_le_bytes(), Dtype::F32, DType::BF16);
        assert!(half::bf16::from_le_bytes([nan[0], nan[1]]).is_nan());
        // f16 → f32 is exact; bf16 → f32 is exact.
        let h = half::f16::from_f32(0.333);
        assert_eq!(
            convert(&h.to_le_bytes(), Dtype::F16, DType::F32),
            h.to_f32().to_le_bytes()
        );
        let b = half::bf16::from_f32(-2.75);
        assert_eq!(
            convert(&b.to_le_bytes(), Dtype::BF16, DType::F32),
            (-2.75f32).to_le_bytes()
        );
    }

    #[test]
    fn bf16_shards_are_the_rounded_f32_shards() {
        let (cfg, ckpt) = load("gqa_mha_convert");
        let plan = ShardPlan::new(&cfg, 4).unwrap();
        let f = shard_for_rank(&ckpt, &cfg, &plan, 1, DType::F32).unwrap();
        let b = shard_for_rank(&ckpt, &cfg, &plan, 1, DType::BF16).unwrap();
        assert_eq!(b.dtype, DType::BF16);
        let mut rounded_differently = 0;
        for (ft, bt) in f.tensors.iter().zip(&b.tensors) {
            assert_eq!((&ft.name, &ft.dims), (&bt.name, &bt.dims));
            assert_eq!(bt.dtype, DType::BF16);
            assert_eq!(bt.bytes.len() * 2, ft.bytes.len());
            let expect: Vec<u8> = f32s(ft)
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                .collect();
            assert_eq!(bt.bytes, expect, "{}", ft.name);
            // Truncation would differ from rounding on about half of the values.
            let truncated: Vec<u8> = ft
                .bytes
                .chunks_exact(4)
                .flat_map(|c| [c[2], c[3]])
                .collect();
            rounded_differently += bt
                .bytes
                .chunks(2)
                .zip(truncated.chunks(2))
                .filter(|(a, b)| a != b)
                .count();
        }
        assert!(rounded_differently > 0);
        assert!(matches!(
            shard_for_rank(&ckpt, &cfg, &plan, 0, DType::F16),
            Err(WeightsError::UnsupportedTarget(DType::F16))
        ));
    }

    /// Re-encodes every float tensor of a fixture in `dtype`.
    fn recast(dtype: Dtype) -> impl FnOnce(&mut BTreeMap<String, Owned>) {
        move |tensors| {
            for t in tensors.values_mut() {
                let vals: Vec<f32> = t
                    .data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                t.data = match dtype {
                    Dtype::BF16 => vals
                        .iter()
                        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                        .collect(),
                    Dtype::F16 => vals
                        .iter()
                        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                        .collect(),
                    _ => unreachable!(),
                };
                t.dtype = dtype;
            }
        }
    }

    #[test]
    fn half_precision_checkpoints_load() {
        let (cfg, f32_ckpt) = load("gqa");
        let plan = ShardPlan::new(&cfg, 2).unwrap();
        let reference = shard_for_rank(&f32_ckpt, &cfg, &plan, 1, DType::F32).unwrap();
        for (dtype, name) in [(Dtype::BF16, "bf16"), (Dtype::F16, "f16")] {
            let dir = edited_fixture("gqa", recast(dtype));
            let ckpt = Checkpoint::open(dir.path()).unwrap();
            let widened = shard_for_rank(&ckpt, &cfg, &plan, 1, DType::F32).unwrap();
            let narrow = shard_for_rank(&ckpt, &cfg, &plan, 1, DType::BF16).unwrap();
            for ((r, w), n) in reference
                .tensors
                .iter()
                .zip(&widened.tensors)
                .zip(&narrow.tensors)
            {
                let expect: Vec<f32> = f32s(r)
                    .iter()
                    .map(|&x| match dtype {
                        Dtype::BF16 => half::bf16::from_f32(x).to_f32(),
                        _ => half::f16::from_f32(x).to_f32(),
                    })
                    .collect();
                assert_eq!(f32s(w), expect, "{name} {}", r.name);
                let expect_bf16: Vec<u8> = expect
                    .iter()
                    .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                    .collect();
                assert_eq!(n.bytes, expect_bf16, "{name} {}", r.name);
            }
        }
    }

    fn open_err(dir: &Path) -> String {
        Checkpoint::open(dir).unwrap_err().to_string()
    }

    fn shard_err(name: &str, dir: &Path) -> WeightsError {
        let cfg = Phi3Config::from_file(&fixture_dir(name).join("config.json")).unwrap();
        let plan = ShardPlan::new(&cfg, 2).unwrap();
        let ckpt = Checkpoint::open(dir).unwrap();
        let err = shard_for_rank(&ckpt, &cfg, &plan, 0, DType::F32).unwrap_err();
        let err2 = write_rank_files(&ckpt, &cfg, &plan, DType::F32, &dir.join("out")).unwrap_err();
        assert_eq!(err.to_string(), err2.to_string());
        assert!(!dir.join("out").exists(), "nothing written on error");
        err
    }

    #[test]
    fn missing_tensor_names_the_tensor_and_the_file() {
        let key = "model.layers.1.mlp.down_proj.weight";
        let dir = edited_fixture("mha", |t| {
            t.remove(key);
        });
        let err = shard_err("mha", dir.path());
        assert!(matches!(err, WeightsError::MissingTensor { .. }), "{err:?}");
        let msg = err.to_string();
        let file = dir.path().join(SINGLE_FILE).display().to_string();
        assert!(msg.contains(key) && msg.contains(&file), "{msg}");
        // An untied model without lm_head.weight.
        let dir = edited_fixture("gqa", |t| {
            t.remove("lm_head.weight");
        });
        let msg = shard_err("gqa", dir.path()).to_string();
        assert!(
            msg.contains("`lm_head.weight`") && msg.contains(SINGLE_FILE),
            "{msg}"
        );
    }

    #[test]
    fn wrong_shape_names_the_tensor_file_and_shapes() {
        let key = "model.layers.0.self_attn.qkv_proj.weight";
        let dir = edited_fixture("gqa", |t| {
            let q = t.get_mut(key).unwrap();
            // Drop the V rows: [(8 + 2 + 2) * 16, 128] → [(8 + 2) * 16, 128].
            q.shape = vec![160, 128];
            q.data.truncate(160 * 128 * 4);
        });
        let err = shard_err("gqa", dir.path());
        let msg = err.to_string();
        assert!(matches!(err, WeightsError::WrongShape { .. }), "{err:?}");
        let file = dir.path().join(SINGLE_FILE).display().to_string();
        assert!(msg.contains(key) && msg.contains(&file), "{msg}");
        assert!(
            msg.contains("[160, 128]") && msg.contains("expected [192, 128]"),
            "{msg}"
        );
    }

    #[test]
    fn unsupported_dtype_names_the_tensor_and_file() {
        let key = "model.norm.weight";
        let dir = edited_fixture("mha", |t| {
            let n = t.get_mut(key).unwrap();
            n.dtype = Dtype::I32;
        });
        let msg = shard_err("mha", dir.path()).to_string();
        assert!(
            msg.contains(key) && msg.contains(SINGLE_FILE) && msg.contains("I32"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_files_name_the_file_and_tensor() {
        let dir = edited_fixture("mha", |_| {});
        let path = dir.path().join(SINGLE_FILE);
        let full = std::fs::read(&path).unwrap();
        let file = path.display().to_string();
        // Cut in the data section: the header names the tensor that no longer fits.
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        let err = Checkpoint::open(dir.path()).unwrap_err();
        assert!(matches!(err, WeightsError::Corrupt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&file) && msg.contains("tensor `model.") && msg.contains("truncated"),
            "{msg}"
        );
        // Cut inside the header, and before the header length.
        for len in [100, 3, 0] {
            std::fs::write(&path, &full[..len]).unwrap();
            let msg = open_err(dir.path());
            assert!(
                msg.contains(&file) && msg.contains("truncated or corrupt"),
                "{len}: {msg}"
            );
        }
        // Garbage header and trailing bytes.
        let mut garbage = 16u64.to_le_bytes().to_vec();
        garbage.extend_from_slice(b"{not json at all");
        std::fs::write(&path, &garbage).unwrap();
        assert!(open_err(dir.path()).contains("invalid header"));
        let mut longer = full.clone();
        longer.extend_from_slice(&[0; 4]);
        std::fs::write(&path, &longer).unwrap();
        assert!(open_err(dir.path()).contains("4 unexpected bytes"));
        // A file truncated after it was opened: the read names file and tensor.
        std::fs::write(&path, &full).unwrap();
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        // `model.norm.weight` sorts last, so its data is in the cut-off half.
        let err = match ckpt.read("model.norm.weight", DType::F32) {
            Ok(_) => panic!("reading a cut-off tensor must fail"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&file) && err.contains("model.norm.weight"),
            "{err}"
        );
    }

    /// Splits fixture `name` into two shard files with an index; returns the dir.
    fn sharded(name: &str, index_text: impl FnOnce(&str) -> String) -> TempDir {
        let dir = TempDir::new(&format!("{name}-sharded"));
        let tensors = fixture_tensors(name);
        let (a, b) = (
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        );
        let mut first = BTreeMap::new();
        let mut second = BTreeMap::new();
        let mut map = serde_json::Map::new();
        for (k, t) in tensors {
            let file = if k.contains("layers.1") || k.starts_with("lm_head") {
                b
            } else {
                a
            };
            map.insert(k.clone(), file.into());
            if file == a {
                first.insert(k, t);
            } else {
                second.insert(k, t);
            }
        }
        write_st(&dir.path().join(a), &first);
        write_st(&dir.path().join(b), &second);
        let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
        std::fs::write(dir.path().join(INDEX_FILE), index_text(&index.to_string())).unwrap();
        dir
    }

    #[test]
    fn sharded_checkpoints_give_the_same_shards() {
        let dir = sharded("gqa", str::to_string);
        let sharded_ckpt = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(sharded_ckpt.files().len(), 2);
        let (cfg, single) = load("gqa");
        let plan = ShardPlan::new(&cfg, 4).unwrap();
        for rank in 0..4 {
            let a = shard_for_rank(&single, &cfg, &plan, rank, DType::BF16).unwrap();
            let b = shard_for_rank(&sharded_ckpt, &cfg, &plan, rank, DType::BF16).unwrap();
            assert_eq!(a, b);
        }
        // Opening the index file directly works too.
        assert!(Checkpoint::open(&dir.path().join(INDEX_FILE)).is_ok());
    }

    #[test]
    fn index_pointing_at_a_missing_file_names_it() {
        let dir = sharded("mha", str::to_string);
        let missing = dir.path().join("model-00002-of-00002.safetensors");
        std::fs::remove_file(&missing).unwrap();
        let err = Checkpoint::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, WeightsError::MissingShardFile { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&missing.display().to_string()) && msg.contains(INDEX_FILE),
            "{msg}"
        );
        assert!(
            msg.contains("model.layers.1.") || msg.contains("lm_head.weight"),
            "{msg}"
        );
    }

    #[test]
    fn index_entry_missing_from_its_shard_names_both() {
        let dir = sharded("mha", |text| {
            text.replace(
                "\"model.norm.weight\":\"model-00001",
                "\"model.norm.weight\":\"model-00002",
            )
        });
        let err = shard_err("mha", dir.path());
        let msg = err.to_string();
        assert!(matches!(err, WeightsError::MissingTensor { .. }), "{err:?}");
        assert!(
            msg.contains("model.norm.weight") && msg.contains("model-00002-of-00002.safetensors"),
            "{msg}"
        );
        assert!(msg.contains(INDEX_FILE), "{msg}");
        // A tensor absent from the weight_map names the index.
        let dir = sharded("mha", |text| {
            text.replace("\"model.norm.weight\"", "\"model.norm.weight.renamed\"")
        });
        let msg = shard_err("mha", dir.path()).to_string();
        assert!(
            msg.contains("`model.norm.weight`") && msg.contains(INDEX_FILE),
            "{msg}"
        );
    }

    #[test]
    fn malformed_index_is_reported_with_its_path() {
        let cases: [(&str, &str); 5] = [
            ("{\"weight_map\": {", "invalid JSON"),
            ("[1, 2]", "no `weight_map`"),
            ("{\"weight_map\": [\"a\"]}", "not a JSON object"),
            (
                "{\"weight_map\": {\"model.norm.weight\": 3}}",
                "`model.norm.weight` is not a string",
            ),
            (
                "{\"weight_map\": {\"model.norm.weight\": \"../x.safetensors\"}}",
                "not a file name",
            ),
        ];
        for (text, what) in cases {
            let dir = sharded("mha", |_| text.to_string());
            std::fs::remove_file(dir.path().join("model-00001-of-00002.safetensors")).unwrap();
            let err = Checkpoint::open(dir.path()).unwrap_err();
            assert!(
                matches!(err, WeightsError::MalformedIndex { .. }),
                "{err:?}"
            );
            let msg = err.to_string();
            let index = dir.path().join(INDEX_FILE).display().to_string();
            assert!(msg.contains(&index) && msg.contains(what), "{text}: {msg}");
        }
    }

    #[test]
    fn other_bad_inputs_are_errors() {
        let empty = TempDir::new("empty");
        assert!(open_err(empty.path()).contains("no checkpoint found"));
        let missing = empty.path().join("nope.safetensors");
        assert!(open_err(&missing).contains("nope.safetensors"));
        let (cfg, ckpt) = load("mha");
        let plan = ShardPlan::new(&cfg, 2).unwrap();
        assert!(matches!(
            shard_for_rank(&ckpt, &cfg, &plan, 2, DType::F32),
            Err(WeightsError::BadRank { rank: 2, tp: 2 })
        ));
        assert!(shard_for_rank(&ckpt, &cfg, &plan, -1, DType::F32).is_err());
        // A plan made for another model.
        let (other, _) = load("gqa");
        let wrong = ShardPlan::new(&other, 2).unwrap();
        let err = shard_for_rank(&ckpt, &cfg, &wrong, 0, DType::F32).unwrap_err();
        assert!(matches!(err, WeightsError::PlanMismatch { .. }), "{err}");
        let mut broken = plan.clone();
        broken.q_head_source[0] = Some(99);
        assert!(shard_for_rank(&ckpt, &cfg, &broken, 0, DType::F32)
            .unwrap_err()
            .to_string()
            .contains("99"));
        // A config whose shapes differ from the checkpoint.
        let (gqa_cfg, _) = load("gqa");
        let err = ckpt.validate(&gqa_cfg).unwrap_err();
        assert!(matches!(err, WeightsError::WrongShape { .. }), "{err}");
    }

    #[test]
    fn rank_tensor_is_an_s32_scalar() {
        let t = rank_tensor(3);
        assert_eq!(
            (t.name.as_str(), t.dtype, t.dims.len()),
            ("rank", DType::S32, 0)
        );
        assert_eq!(t.bytes, 3i32.to_le_bytes());
    }

    #[test]
    fn rank_files_are_deterministic_and_reload() {
        let (cfg, ckpt) = load("phi4_like");
        let plan = ShardPlan::new(&cfg, 2).unwrap();
        let (a, b) = (TempDir::new("out-a"), TempDir::new("out-b"));
        for dtype in [DType::F32, DType::BF16] {
            let pa = write_rank_files(&ckpt, &cfg, &plan, dtype, a.path()).unwrap();
            let pb = write_rank_files(&ckpt, &cfg, &plan, dtype, b.path()).unwrap();
            assert_eq!(
                pa,
                vec![
                    a.path().join("tp0.safetensors"),
                    a.path().join("tp1.safetensors")
                ]
            );
            for (rank, (fa, fb)) in pa.iter().zip(&pb).enumerate() {
                let (ba, bb) = (std::fs::read(fa).unwrap(), std::fs::read(fb).unwrap());
                assert_eq!(ba, bb, "identical bytes for rank {rank}");
                let st = SafeTensors::deserialize(&ba).unwrap();
                let shards = shard_for_rank(&ckpt, &cfg, &plan, rank as i64, dtype).unwrap();
                assert_eq!(st.len(), shards.tensors.len());
                for t in &shards.tensors {
                    let view = st.tensor(&t.name).unwrap();
                    let want = if dtype == DType::F32 {
                        Dtype::F32
                    } else {
                        Dtype::BF16
                    };
                    assert_eq!(view.dtype(), want);
                    assert_eq!(
                        view.shape().iter().map(|&d| d as i64).collect::<Vec<_>>(),
                        t.dims
                    );
                    assert_eq!(view.data(), &t.bytes[..], "{}", t.name);
                }
            }
            // Overwriting in place keeps the bytes and leaves no temporary files.
            write_rank_files(&ckpt, &cfg, &plan, dtype, a.path()).unwrap();
            let names: Vec<String> = std::fs::read_dir(a.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names.len(), 2, "{names:?}");
        }
    }
}
