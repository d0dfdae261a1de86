//! Weights: Hugging Face checkpoints in, per-rank shards out.
//!
//! A graph's weight inputs are [`WeightDecl`]s: the parameter name, its per-rank dtype and
//! shape, and the checkpoint tensor(s) it is cut from, each with a [`ShardRule`]. The model code
//! declares each weight once (see `models/`); the manifest prints the same declarations; and
//! one function, [`shard_weight`], applies them for [`shard_rank`] (in memory), for
//! [`write_rank_files`] (`phi3 shard`, streamed to `tp{r}.safetensors`) and for any runtime
//! that reads the manifest.
//!
//! Conversion to the target dtype (f32, or bf16 with round-to-nearest-even) happens piecewise
//! while cutting, so no tensor is ever held in two dtypes at once.

pub mod checkpoint;
pub mod rank_files;
pub mod rule;

pub use checkpoint::{Checkpoint, TensorMeta, INDEX_FILE, SINGLE_FILE};
pub use rank_files::{rank_file_name, write_rank_files, RankFile};
pub use rule::{padded_runs, push_run, RuleError, Run, ShardRule};

use crate::ir::DType;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::PathBuf;

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
    BadRank { rank: usize, tp: usize },
    #[error("weight `{weight}`: {reason}")]
    Declaration { weight: String, reason: String },
    #[error("weight `{weight}` (from `{key}`): {error}")]
    Rule {
        weight: String,
        key: String,
        #[source]
        error: RuleError,
    },
}

pub type Result<T, E = WeightsError> = std::result::Result<T, E>;

/// How a 2-D weight is stored on the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// As the checkpoint stores it (`[out, in]` for a Hugging Face linear).
    #[default]
    Checkpoint,
    /// Transposed (`[in, out]` for a linear): `x @ W` without a transpose in the graph.
    Transposed,
}

/// One checkpoint tensor a weight is cut from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WeightPart {
    /// The Hugging Face checkpoint key.
    pub checkpoint_key: String,
    /// The tensor's shape in the checkpoint.
    pub hf_shape: Vec<usize>,
    pub shard: ShardRule,
}

/// A graph weight input: what it is called, what each rank holds, and where it comes from.
/// The parts' shards are concatenated along dim 0 (`[Q_r; K_r; V_r]` for a fused projection),
/// then laid out as `layout` says.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WeightDecl {
    pub name: String,
    pub dtype: DType,
    /// The per-rank shape (the same on every rank), after the layout.
    pub shape: Vec<usize>,
    pub parts: Vec<WeightPart>,
    #[serde(default)]
    pub layout: Layout,
}

impl WeightDecl {
    /// A weight cut from one checkpoint tensor. The per-rank shape is derived from the rule
    /// (rank 0's shard; [`WeightDecl::check`] verifies every rank agrees).
    pub fn new(
        name: impl Into<String>,
        dtype: DType,
        parts: Vec<WeightPart>,
        layout: Layout,
    ) -> Result<WeightDecl> {
        let name = name.into();
        let mut shape = Vec::new();
        for p in &parts {
            let dims = p
                .shard
                .shard_dims(&p.hf_shape, 0)
                .map_err(|error| WeightsError::Rule {
                    weight: name.clone(),
                    key: p.checkpoint_key.clone(),
                    error,
                })?;
            if shape.is_empty() {
                shape = dims;
            } else if shape.len() != dims.len() || shape[1..] != dims[1..] {
                return Err(WeightsError::Declaration {
                    weight: name,
                    reason: format!(
                        "part `{}` has shard dims {dims:?}, which do not stack on {shape:?}",
                        p.checkpoint_key
                    ),
                });
            } else {
                shape[0] += dims[0];
            }
        }
        if parts.is_empty() {
            return Err(WeightsError::Declaration {
                weight: name,
                reason: "no checkpoint tensor".into(),
            });
        }
        if layout == Layout::Transposed {
            if shape.len() != 2 {
                return Err(WeightsError::Declaration {
                    weight: name,
                    reason: format!("only 2-D weights can be transposed, got {shape:?}"),
                });
            }
            shape.swap(0, 1);
        }
        Ok(WeightDecl {
            name,
            dtype,
            shape,
            parts,
            layout,
        })
    }

    /// Checks the declaration for `tp` ranks: every part's rule fits its checkpoint shape and
    /// gives every rank the same shard shape, the one declared.
    pub fn check(&self, tp: usize) -> Result<()> {
        for rank in 0..tp {
            let decl = |reason: String| WeightsError::Declaration {
                weight: self.name.clone(),
                reason,
            };
            let mut rows = 0;
            let mut rest: Option<Vec<usize>> = None;
            for p in &self.parts {
                if let ShardRule::Cut { ranks, .. } = &p.shard {
                    if ranks.len() != tp {
                        return Err(decl(format!(
                            "part `{}` is cut for {} ranks, not {tp}",
                            p.checkpoint_key,
                            ranks.len()
                        )));
                    }
                }
                let dims =
                    p.shard
                        .shard_dims(&p.hf_shape, rank)
                        .map_err(|error| WeightsError::Rule {
                            weight: self.name.clone(),
                            key: p.checkpoint_key.clone(),
                            error,
                        })?;
                rows += dims[0];
                rest.get_or_insert_with(|| dims[1..].to_vec());
            }
            let mut shape = vec![rows];
            shape.extend(rest.unwrap_or_default());
            if self.layout == Layout::Transposed {
                shape.swap(0, 1);
            }
            if shape != self.shape {
                return Err(decl(format!(
                    "rank {rank}'s shard is {shape:?}, the declaration says {:?}",
                    self.shape
                )));
            }
        }
        Ok(())
    }

    pub fn byte_size(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.byte_size()
    }
}

/// One tensor in memory: a rank's weight shard, or a whole checkpoint tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightTensor {
    pub name: String,
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
        let from = stored_dtype(self.dtype)?;
        let bytes = convert(&self.bytes, from, DType::F32);
        Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }
}

/// All weight shards of one rank, in declaration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankWeights {
    pub rank: usize,
    pub tp: usize,
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
}

pub(crate) fn check_target(dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::BF16 => Ok(()),
        other => Err(WeightsError::UnsupportedTarget(other)),
    }
}

/// The safetensors dtype of a float DSL dtype.
pub fn stored_dtype(d: DType) -> Option<Dtype> {
    match d {
        DType::F32 => Some(Dtype::F32),
        DType::BF16 => Some(Dtype::BF16),
        DType::F16 => Some(Dtype::F16),
        DType::S32 => Some(Dtype::I32),
        _ => None,
    }
}

fn dtype_width(d: Dtype) -> usize {
    match d {
        Dtype::F32 | Dtype::I32 => 4,
        _ => 2,
    }
}

/// Converts little-endian F32/BF16/F16 bytes to `to` (f32, bf16 or f16), rounding to nearest
/// even when narrowing. Same-dtype input is copied bit for bit.
pub fn convert(bytes: &[u8], from: Dtype, to: DType) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() / dtype_width(from) * to.byte_size());
    convert_into(bytes, from, to, &mut out);
    out
}

fn convert_into(bytes: &[u8], from: Dtype, to: DType, out: &mut Vec<u8>) {
    use half::slice::HalfFloatSliceExt;
    use half::{bf16, f16};
    if stored_dtype(to) == Some(from) {
        out.extend_from_slice(bytes);
        return;
    }
    // Blocks through f32, with the element loops inside `half`'s slice routines; safetensors
    // and every supported host are little-endian, so the byte casts are the values.
    const BLOCK: usize = 8192;
    let width = dtype_width(from);
    let block = (bytes.len() / width).min(BLOCK);
    // Zeroed primitive vectors allocate zeroed pages (no element loop in a debug build).
    let mut wide = vec![0f32; block];
    let mut half_bits = vec![0u16; block];
    out.reserve(bytes.len() / width * to.byte_size());
    for chunk in bytes.chunks(BLOCK * width) {
        let n = chunk.len() / width;
        let wide = &mut wide[..n];
        let bits = &mut half_bits[..n];
        match from {
            Dtype::BF16 => {
                bytemuck::cast_slice_mut(bits).copy_from_slice(chunk);
                bytemuck::cast_slice::<u16, bf16>(bits).convert_to_f32_slice(wide);
            }
            Dtype::F16 => {
                bytemuck::cast_slice_mut(bits).copy_from_slice(chunk);
                bytemuck::cast_slice::<u16, f16>(bits).convert_to_f32_slice(wide);
            }
            _ => bytemuck::cast_slice_mut(wide).copy_from_slice(chunk),
        }
        match to {
            DType::BF16 => {
                bytemuck::cast_slice_mut::<u16, bf16>(bits).convert_from_f32_slice(wide);
                out.extend_from_slice(bytemuck::cast_slice(bits));
            }
            DType::F16 => {
                bytemuck::cast_slice_mut::<u16, f16>(bits).convert_from_f32_slice(wide);
                out.extend_from_slice(bytemuck::cast_slice(bits));
            }
            _ => out.extend_from_slice(bytemuck::cast_slice(wide)),
        }
    }
}

#[cfg(target_endian = "big")]
compile_error!("weight conversion assumes a little-endian host (as safetensors files are)");

/// The mapped checkpoint tensors of one declaration's parts.
pub struct PartSources {
    maps: Vec<(Dtype, checkpoint::Mapped)>,
}

impl PartSources {
    /// Maps every part of `decl` (checked against its declared checkpoint shape).
    pub fn map(ckpt: &Checkpoint, decl: &WeightDecl) -> Result<PartSources> {
        let maps = decl
            .parts
            .iter()
            .map(|p| ckpt.map(&p.checkpoint_key, &p.hf_shape))
            .collect::<Result<_>>()?;
        Ok(PartSources { maps })
    }
}

/// Rank `rank`'s shard of `decl`, converted to `decl.dtype`, delivered to `sink` in pieces in
/// row-major order. The one function that applies shard rules: the sharder, the rank-file
/// writer and the tests all go through it.
pub fn shard_weight(
    decl: &WeightDecl,
    sources: &PartSources,
    rank: usize,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut piece = Vec::new();
    let mut cut_parts = |sink: &mut dyn FnMut(&[u8]) -> io::Result<()>| -> io::Result<()> {
        for (part, (from, data)) in decl.parts.iter().zip(&sources.maps) {
            let elem = dtype_width(*from);
            rule::cut_rows(data, &part.hf_shape, elem, &part.shard, rank, &mut |b| {
                piece.clear();
                convert_into(b, *from, decl.dtype, &mut piece);
                sink(&piece)
            })?;
        }
        Ok(())
    };
    match decl.layout {
        Layout::Checkpoint => cut_parts(sink),
        Layout::Transposed => {
            // A transpose needs the whole shard: one shard, never the whole checkpoint tensor.
            let (rows, cols) = (decl.shape[1], decl.shape[0]);
            match decl.dtype.byte_size() {
                4 => transposed::<u32>(rows, cols, &mut cut_parts, sink),
                2 => transposed::<u16>(rows, cols, &mut cut_parts, sink),
                w => unreachable!("no {w}-byte weight dtype"),
            }
        }
    }
}

type Cut<'a> = dyn FnMut(&mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> + 'a;

/// Collects the row-major `rows × cols` shard `cut` delivers and hands `sink` its transpose,
/// built in cache-sized tiles.
fn transposed<T: bytemuck::Pod>(
    rows: usize,
    cols: usize,
    cut: &mut Cut<'_>,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    const TILE: usize = 64;
    let mut src: Vec<T> = bytemuck::zeroed_vec(rows * cols);
    let mut at = 0;
    cut(&mut |b| {
        bytemuck::cast_slice_mut::<T, u8>(&mut src)[at..at + b.len()].copy_from_slice(b);
        at += b.len();
        Ok(())
    })?;
    let mut dst: Vec<T> = bytemuck::zeroed_vec(rows * cols);
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                let row = &src[r * cols..(r + 1) * cols];
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = row[c];
                }
            }
        }
    }
    drop(src);
    for chunk in bytemuck::cast_slice::<T, u8>(&dst).chunks(1 << 20) {
        sink(chunk)?;
    }
    Ok(())
}

/// Checks the declarations against `tp` and the checkpoint (every part exists with its
/// declared shape and a supported dtype) and the target dtypes.
pub fn validate(ckpt: &Checkpoint, decls: &[WeightDecl], tp: usize) -> Result<()> {
    for d in decls {
        check_target(d.dtype)?;
        d.check(tp)?;
        for p in &d.parts {
            ckpt.check(&p.checkpoint_key, &p.hf_shape)?;
        }
    }
    Ok(())
}

fn io_into(decl: &WeightDecl, e: io::Error) -> WeightsError {
    WeightsError::Declaration {
        weight: decl.name.clone(),
        reason: e.to_string(),
    }
}

/// Every rank's shards in memory, mapping each checkpoint tensor once for all ranks.
pub fn shard_all_ranks(
    ckpt: &Checkpoint,
    decls: &[WeightDecl],
    tp: usize,
) -> Result<Vec<RankWeights>> {
    validate(ckpt, decls, tp)?;
    let mut out: Vec<RankWeights> = (0..tp)
        .map(|rank| RankWeights {
            rank,
            tp,
            tensors: Vec::with_capacity(decls.len()),
        })
        .collect();
    for d in decls {
        let sources = PartSources::map(ckpt, d)?;
        for w in &mut out {
            let mut bytes = Vec::with_capacity(d.byte_size());
            shard_weight(d, &sources, w.rank, &mut |b| {
                bytes.extend_from_slice(b);
                Ok(())
            })
            .map_err(|e| io_into(d, e))?;
            w.tensors.push(WeightTensor {
                name: d.name.clone(),
                dtype: d.dtype,
                dims: d.shape.iter().map(|&x| x as i64).collect(),
                bytes,
            });
        }
    }
    Ok(out)
}

/// The shards of one rank, in memory.
pub fn shard_rank(
    ckpt: &Checkpoint,
    decls: &[WeightDecl],
    tp: usize,
    rank: usize,
) -> Result<RankWeights> {
    if rank >= tp {
        return Err(WeightsError::BadRank { rank, tp });
    }
    validate(ckpt, decls, tp)?;
    let mut tensors = Vec::with_capacity(decls.len());
    for d in decls {
        let sources = PartSources::map(ckpt, d)?;
        let mut bytes = Vec::with_capacity(d.byte_size());
        shard_weight(d, &sources, rank, &mut |b| {
            bytes.extend_from_slice(b);
            Ok(())
        })
        .map_err(|e| io_into(d, e))?;
        tensors.push(WeightTensor {
            name: d.name.clone(),
            dtype: d.dtype,
            dims: d.shape.iter().map(|&x| x as i64).collect(),
            bytes,
        });
    }
    Ok(RankWeights { rank, tp, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_derive_and_check_shapes() {
        let part = |key: &str, rows: usize, tp: usize| WeightPart {
            checkpoint_key: key.into(),
            hf_shape: vec![rows, 4],
            shard: ShardRule::split(0, rows, tp, rows),
        };
        let d = WeightDecl::new(
            "qkv",
            DType::F32,
            vec![part("q", 8, 2), part("k", 4, 2)],
            Layout::Checkpoint,
        )
        .unwrap();
        assert_eq!(d.shape, vec![6, 4]);
        d.check(2).unwrap();
        let t =
            WeightDecl::new("t", DType::F32, vec![part("q", 8, 2)], Layout::Transposed).unwrap();
        assert_eq!(t.shape, vec![4, 4]);
        assert!(d
            .check(4)
            .unwrap_err()
            .to_string()
            .contains("cut for 2 ranks"));
    }
}
