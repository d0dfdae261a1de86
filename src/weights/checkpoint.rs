//! Hugging Face safetensors checkpoints: a `model.safetensors` file, or a sharded checkpoint
//! (`model.safetensors.index.json` plus the files its `weight_map` names).
//!
//! Only the headers are read when a checkpoint is opened (parsed and validated by the
//! `safetensors` crate, and checked against the file sizes so that a truncated file is caught at
//! once). Tensor data is memory-mapped one tensor at a time, when a shard needs it, and the
//! mapping is dropped right after, so the process never holds more than one checkpoint tensor's
//! pages at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;

use super::{convert, Result, WeightTensor, WeightsError};
use crate::ir::DType;

/// The single-file checkpoint name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Largest safetensors header accepted (the `safetensors` crate's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The parsed header of one safetensors file.
#[derive(Debug)]
pub(crate) struct FileHeader {
    pub(crate) path: PathBuf,
    /// Byte offset of the data section (8 + header length).
    pub(crate) data_start: u64,
    pub(crate) tensors: HashMap<String, TensorInfo>,
}

impl FileHeader {
    pub(crate) fn read(path: &Path) -> Result<FileHeader> {
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

    /// Maps the data of `info` (one tensor of this file) read-only.
    pub(crate) fn map(&self, tensor: &str, info: &TensorInfo) -> Result<Mapped> {
        let (start, end) = info.data_offsets;
        let io_err = |error| WeightsError::Io {
            path: self.path.clone(),
            error,
        };
        let f = File::open(&self.path).map_err(io_err)?;
        // A file cut short after it was opened would fault on access; check its length first.
        let len = f.metadata().map_err(io_err)?.len();
        let needed = self.data_start + end as u64;
        if len < needed {
            return Err(WeightsError::Corrupt {
                path: self.path.clone(),
                reason: format!(
                    "tensor `{tensor}`: the file ended early (it is {len} bytes, the tensor ends at \
                     byte {needed}; was it truncated after opening?)"
                ),
            });
        }
        if end == start {
            return Ok(Mapped { map: None });
        }
        // SAFETY: the mapping is read-only and private to this process; the length check above
        // guards against a file truncated after its header was read (a file truncated while
        // mapped would still fault, as with any mmap reader, HF's included).
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(self.data_start + start as u64)
                .len(end - start)
                .map(&f)
        }
        .map_err(io_err)?;
        Ok(Mapped { map: Some(map) })
    }
}

/// One tensor's bytes, memory-mapped; the pages are released when it drops.
pub struct Mapped {
    map: Option<memmap2::Mmap>,
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

/// A checkpoint tensor's header entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    pub file: PathBuf,
    /// The safetensors dtype name (`F32`, `BF16`, ...).
    pub dtype: String,
    pub shape: Vec<usize>,
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

    /// Checks that the tensor exists with `shape` and a supported dtype (F32, BF16, F16).
    pub fn check(&self, tensor: &str, shape: &[usize]) -> Result<()> {
        self.checked(tensor, shape).map(|_| ())
    }

    fn checked(&self, tensor: &str, shape: &[usize]) -> Result<(&FileHeader, &TensorInfo)> {
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

    /// Maps a tensor checked to have `shape`; returns its stored dtype and bytes.
    pub fn map(&self, tensor: &str, shape: &[usize]) -> Result<(Dtype, Mapped)> {
        let (file, info) = self.checked(tensor, shape)?;
        Ok((info.dtype, file.map(tensor, info)?))
    }

    /// Reads a whole checkpoint tensor converted to `dtype` (f32 or bf16).
    pub fn read(&self, tensor: &str, dtype: DType) -> Result<WeightTensor> {
        super::check_target(dtype)?;
        let shape = self.locate(tensor)?.1.shape.clone();
        let (from, bytes) = self.map(tensor, &shape)?;
        Ok(WeightTensor {
            name: tensor.to_string(),
            dtype,
            dims: shape.iter().map(|&d| d as i64).collect(),
            bytes: convert(&bytes, from, dtype),
        })
    }
}
