//! `tp{r}.safetensors`: one file per rank holding that rank's weight shards, named as the
//! graphs' weight inputs (and the manifest's `weights` table) name them.
//!
//! [`write_rank_files`] streams every rank's file in one pass over the checkpoint: each
//! checkpoint tensor is mapped once, cut for every rank and converted piecewise, each file
//! goes to a temporary file that is renamed into place when complete, and the same inputs
//! give identical bytes. [`RankFile`] reads them back, one tensor at a time, into memory the
//! caller provides.

use super::checkpoint::FileHeader;
use super::{
    shard_weight, stored_dtype, validate, Checkpoint, PartSources, Result, WeightDecl, WeightsError,
};
use crate::files::{commit, temporary_path};
use crate::ir::DType;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file name of rank `r`'s shards.
pub fn rank_file_name(rank: usize) -> String {
    format!("tp{rank}.safetensors")
}

/// The safetensors header every rank file of `decls` shares (same names, shapes, offsets).
fn header(decls: &[WeightDecl]) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut offset = 0usize;
    for d in decls {
        let dtype = stored_dtype(d.dtype).ok_or(WeightsError::UnsupportedTarget(d.dtype))?;
        let len = d.byte_size();
        header.insert(
            d.name.clone(),
            serde_json::json!({ "dtype": dtype.to_string(), "shape": d.shape, "data_offsets": [offset, offset + len] }),
        );
        offset += len;
    }
    let mut bytes =
        serde_json::to_vec(&serde_json::Value::Object(header)).expect("JSON values serialise");
    // The format pads the header with spaces to an 8-byte boundary.
    bytes.resize(bytes.len().div_ceil(8) * 8, b' ');
    Ok(bytes)
}

/// Writes `tp{r}.safetensors` for every rank of `tp` into `out_dir`; returns the paths, in
/// rank order. Nothing is left behind on error (no partial file, no temporary).
pub fn write_rank_files(
    ckpt: &Checkpoint,
    decls: &[WeightDecl],
    tp: usize,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    validate(ckpt, decls, tp)?;
    let header = header(decls)?;
    let paths: Vec<PathBuf> = (0..tp).map(|r| out_dir.join(rank_file_name(r))).collect();
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
            let mut w =
                BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io_err(path))?);
            w.write_all(&(header.len() as u64).to_le_bytes())
                .map_err(io_err(path))?;
            w.write_all(&header).map_err(io_err(path))?;
            writers.push(w);
        }
        for d in decls {
            let sources = PartSources::map(ckpt, d)?;
            for (rank, w) in writers.iter_mut().enumerate() {
                shard_weight(d, &sources, rank, &mut |b| w.write_all(b))
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

/// One rank file opened for reading: its header is parsed and checked against the file size;
/// tensors are read on request.
#[derive(Debug)]
pub struct RankFile {
    header: FileHeader,
    file: File,
}

/// A tensor's entry in a rank file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: usize,
}

impl RankFile {
    pub fn open(path: &Path) -> Result<RankFile> {
        let header = FileHeader::read(path)?;
        let file = File::open(path).map_err(|error| WeightsError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(RankFile { header, file })
    }

    pub fn path(&self) -> &Path {
        &self.header.path
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.header.tensors.keys().map(String::as_str)
    }

    /// The entry of tensor `name`, if the file has it.
    pub fn tensor(&self, name: &str) -> Option<RankTensor> {
        let info = self.header.tensors.get(name)?;
        let dtype = match info.dtype {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::I32 => DType::S32,
            _ => return None,
        };
        Some(RankTensor {
            dtype,
            shape: info.shape.clone(),
            bytes: info.data_offsets.1 - info.data_offsets.0,
        })
    }

    /// Reads tensor `name` into `out` (exactly its size), in bounded chunks straight into the
    /// caller's memory: no intermediate copy and no mapped pages.
    pub fn read_into(&self, name: &str, out: &mut [u8]) -> Result<()> {
        let path = &self.header.path;
        let info = self
            .header
            .tensors
            .get(name)
            .ok_or_else(|| WeightsError::MissingTensor {
                tensor: name.to_string(),
                searched: path.display().to_string(),
            })?;
        let (start, end) = info.data_offsets;
        if out.len() != end - start {
            return Err(WeightsError::Declaration {
                weight: name.to_string(),
                reason: format!(
                    "{}: the tensor has {} bytes, the destination {}",
                    path.display(),
                    end - start,
                    out.len()
                ),
            });
        }
        let base = self.header.data_start + start as u64;
        const CHUNK: usize = 8 << 20;
        for (i, chunk) in out.chunks_mut(CHUNK).enumerate() {
            self.file
                .read_exact_at(chunk, base + (i * CHUNK) as u64)
                .map_err(|error| {
                    if error.kind() == io::ErrorKind::UnexpectedEof {
                        WeightsError::Corrupt {
                            path: path.clone(),
                            reason: format!("tensor `{name}`: the file ended early"),
                        }
                    } else {
                        WeightsError::Io {
                            path: path.clone(),
                            error,
                        }
                    }
                })?;
        }
        Ok(())
    }
}
