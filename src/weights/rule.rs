//! How one rank's weight shard is cut from a checkpoint tensor: plain data, so the graph
//! recorder can attach it to a weight, the manifest can print it, and one generic function
//! ([`cut_rows`] through [`WeightDecl`](super::WeightDecl)) can apply it for the sharder and the
//! runtime alike.
//!
//! A [`ShardRule::Cut`] lists, for every rank, the [`Run`]s of consecutive indices along one
//! dimension that make up its shard, in order; a run either copies a range of the checkpoint
//! tensor or is zero padding. Every tensor-parallel layout in this project (row or column
//! splits with padding, query heads picked by the GQA plan, KV heads replicated or expanded,
//! a fused Q|K|V or gate|up tensor cut into its parts) is such a list.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `len` consecutive indices taken from `src` onwards, or `len` zeros when `src` is `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Run {
    pub src: Option<usize>,
    pub len: usize,
}

impl Run {
    pub fn copy(src: usize, len: usize) -> Run {
        Run {
            src: Some(src),
            len,
        }
    }

    pub fn zeros(len: usize) -> Run {
        Run { src: None, len }
    }
}

/// `len` entries starting at padded index `start` of an axis whose first `real` entries
/// exist (the rest is padding), offset by `base` in the source: a copy, then zeros.
pub fn padded_runs(base: usize, start: usize, len: usize, real: usize) -> Vec<Run> {
    let n = real.saturating_sub(start).min(len);
    let mut runs = Vec::with_capacity(2);
    if n > 0 {
        runs.push(Run::copy(base + start, n));
    }
    if len > n {
        runs.push(Run::zeros(len - n));
    }
    runs
}

/// Appends `run` to `runs`, merging it into the last run when they are contiguous (so a
/// rule prints as few runs as it has pieces).
pub fn push_run(runs: &mut Vec<Run>, run: Run) {
    if run.len == 0 {
        return;
    }
    if let Some(last) = runs.last_mut() {
        match (last.src, run.src) {
            (Some(a), Some(b)) if a + last.len == b => {
                last.len += run.len;
                return;
            }
            (None, None) => {
                last.len += run.len;
                return;
            }
            _ => {}
        }
    }
    runs.push(run);
}

/// How every rank's shard is cut from one checkpoint tensor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShardRule {
    /// Every rank holds the whole tensor.
    Replicated,
    /// Rank `r`'s shard is the concatenation, along `dim`, of the runs `ranks[r]`; the other
    /// dimensions are whole.
    Cut { dim: usize, ranks: Vec<Vec<Run>> },
}

/// A rule that does not fit the tensor it is applied to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("the rule cuts dimension {dim} of a rank-{rank} tensor")]
    DimOutOfRange { dim: usize, rank: usize },
    #[error("rank {rank} reads indices {start}..{end} of dimension {dim}, which has {size}")]
    OutOfBounds {
        rank: usize,
        dim: usize,
        start: usize,
        end: usize,
        size: usize,
    },
    #[error("rank {rank} is out of range: the rule has {ranks} ranks")]
    NoSuchRank { rank: usize, ranks: usize },
}

impl ShardRule {
    /// Zero-pads `dim` (of size `size`) to `pad_to`, then rank `r` takes contiguous chunk `r`
    /// of `parts`.
    pub fn split(dim: usize, size: usize, parts: usize, pad_to: usize) -> ShardRule {
        let chunk = pad_to / parts;
        let ranks = (0..parts)
            .map(|r| padded_runs(0, r * chunk, chunk, size))
            .collect();
        ShardRule::Cut { dim, ranks }
    }

    /// Rank `r`'s shard along `dim` is `ranks[r]` (runs are merged where contiguous).
    pub fn cut(dim: usize, ranks: Vec<Vec<Run>>) -> ShardRule {
        let ranks = ranks
            .into_iter()
            .map(|runs| {
                let mut merged = Vec::with_capacity(runs.len());
                for r in runs {
                    push_run(&mut merged, r);
                }
                merged
            })
            .collect();
        ShardRule::Cut { dim, ranks }
    }

    /// The runs of `rank` along the cut dim, or `None` for a replicated tensor.
    pub fn runs(&self, rank: usize) -> Result<Option<(usize, &[Run])>, RuleError> {
        match self {
            ShardRule::Replicated => Ok(None),
            ShardRule::Cut { dim, ranks } => ranks
                .get(rank)
                .map(|r| Some((*dim, r.as_slice())))
                .ok_or(RuleError::NoSuchRank {
                    rank,
                    ranks: ranks.len(),
                }),
        }
    }

    /// Checks the rule against a checkpoint tensor of dims `hf_dims` and returns rank
    /// `rank`'s shard dims.
    pub fn shard_dims(&self, hf_dims: &[usize], rank: usize) -> Result<Vec<usize>, RuleError> {
        let Some((dim, runs)) = self.runs(rank)? else {
            return Ok(hf_dims.to_vec());
        };
        if dim >= hf_dims.len() {
            return Err(RuleError::DimOutOfRange {
                dim,
                rank: hf_dims.len(),
            });
        }
        for run in runs {
            if let Some(s) = run.src {
                if s + run.len > hf_dims[dim] {
                    return Err(RuleError::OutOfBounds {
                        rank,
                        dim,
                        start: s,
                        end: s + run.len,
                        size: hf_dims[dim],
                    });
                }
            }
        }
        let mut dims = hf_dims.to_vec();
        dims[dim] = runs.iter().map(|r| r.len).sum();
        Ok(dims)
    }
}

impl fmt::Display for ShardRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardRule::Replicated => f.write_str("replicated"),
            ShardRule::Cut { dim, ranks } => write!(f, "cut dim {dim} over {} ranks", ranks.len()),
        }
    }
}

/// Copies rank `rank`'s shard of a row-major tensor (`data`, `hf_dims`, elements of `elem`
/// bytes) into `out`, one output row-block at a time: `sink` receives consecutive pieces of
/// the shard's bytes, in order, so a caller can convert and write them without holding the
/// whole shard. The rule must have been checked with [`ShardRule::shard_dims`].
pub fn cut_rows(
    data: &[u8],
    hf_dims: &[usize],
    elem: usize,
    rule: &ShardRule,
    rank: usize,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let zeros = |n: usize, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>| {
        let mut left = n;
        while left > 0 {
            let k = left.min(ZEROS.len());
            sink(&ZEROS[..k])?;
            left -= k;
        }
        Ok::<(), std::io::Error>(())
    };
    let runs = match rule.runs(rank) {
        Ok(Some((dim, runs))) => Some((dim, runs)),
        Ok(None) => None,
        Err(e) => return Err(std::io::Error::other(e)),
    };
    let Some((dim, runs)) = runs else {
        // Replicated: the whole tensor, in pieces.
        for piece in data.chunks(1 << 20) {
            sink(piece)?;
        }
        return Ok(());
    };
    // View the tensor as [outer, size(dim), inner]: each run is a contiguous block of
    // `len * inner` elements within every outer slice.
    let outer: usize = hf_dims[..dim].iter().product();
    let inner: usize = hf_dims[dim + 1..].iter().product::<usize>() * elem;
    let slice = hf_dims[dim] * inner;
    for o in 0..outer {
        let base = o * slice;
        for run in runs {
            match run.src {
                Some(s) => {
                    let start = base + s * inner;
                    sink(&data[start..start + run.len * inner])?;
                }
                None => zeros(run.len * inner, sink)?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(data: &[u8], dims: &[usize], rule: &ShardRule, rank: usize) -> Vec<u8> {
        let mut out = Vec::new();
        cut_rows(data, dims, 1, rule, rank, &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn split_pads_and_chunks() {
        // 5 rows of 2, split in 2 with padding to 6: rank 0 rows 0..3, rank 1 rows 3..5 + zeros.
        let data: Vec<u8> = (1..=10).collect();
        let rule = ShardRule::split(0, 5, 2, 6);
        assert_eq!(rule.shard_dims(&[5, 2], 1).unwrap(), vec![3, 2]);
        assert_eq!(collect(&data, &[5, 2], &rule, 0), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(collect(&data, &[5, 2], &rule, 1), vec![7, 8, 9, 10, 0, 0]);
    }

    #[test]
    fn column_cuts_take_every_row() {
        // [2, 4]: rank 1 of a 2-way column split takes columns 2..4.
        let data: Vec<u8> = (0..8).collect();
        let rule = ShardRule::split(1, 4, 2, 4);
        assert_eq!(collect(&data, &[2, 4], &rule, 1), vec![2, 3, 6, 7]);
    }

    #[test]
    fn runs_merge_and_bounds_are_checked() {
        let rule = ShardRule::cut(
            0,
            vec![vec![Run::copy(0, 2), Run::copy(2, 1), Run::zeros(1)]],
        );
        assert_eq!(rule.runs(0).unwrap().unwrap().1.len(), 2);
        assert!(matches!(
            rule.shard_dims(&[2, 3], 0),
            Err(RuleError::OutOfBounds {
                end: 3,
                size: 2,
                ..
            })
        ));
        assert!(matches!(
            rule.shard_dims(&[4], 1),
            Err(RuleError::NoSuchRank { rank: 1, ranks: 1 })
        ));
    }

    #[test]
    fn serialises_as_plain_data() {
        let rule = ShardRule::split(1, 3, 2, 4);
        let json = serde_json::to_string(&rule).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"cut","dim":1,"ranks":[[{"src":0,"len":2}],[{"src":2,"len":1},{"src":null,"len":1}]]}"#
        );
        let back: ShardRule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rule);
    }
}
