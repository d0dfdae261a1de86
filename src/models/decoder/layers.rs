//! The layers decoder models are made of, each a weight holder with a `forward`: RMSNorm,
//! the vocab-parallel embedding, column- and row-parallel linears, the Q/K/V and gate/up
//! projections (fused or split), and the LM head. Model files declare the weights (they know
//! the checkpoint keys); these types only compute.

use super::recorder::Recorder;
use super::spec::{GraphKind, NormImpl, PrefillTail};
use crate::dsl::nn::rms_norm;
use crate::dsl::{DType, DotDims, OpError, Tensor};
use crate::parallel::{column_parallel_linear, parallel_embedding, row_parallel_linear};

/// `Phi3RMSNorm` / `LlamaRMSNorm`.
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn forward(&self, cx: &Recorder<'_>, x: &Tensor) -> Result<Tensor, OpError> {
        match cx.spec.options.rms_norm {
            NormImpl::Primitives => rms_norm(x, &self.weight, self.eps),
            NormImpl::NeuronCustomCall => {
                // The call as torch-neuronx's `RmsNorm` op emits it and NxDI's CustomRMSNorm
                // uses it: operands (x, weight, eps as an f32 scalar constant), result of x's
                // type, the normalised dim as decimal text in backend_config; NxDI feeds it f32
                // and casts the result back. UNVERIFIED here: no neuronx-cc to compile it.
                let eps = cx.b.scalar(DType::F32, self.eps)?;
                let xf = x.convert(DType::F32)?;
                let dim = (x.rank() - 1).to_string().into_bytes();
                cx.b.custom_call(
                    "AwsNeuronRmsNorm",
                    &[&xf, &self.weight, &eps],
                    xf.ty().clone(),
                    dim,
                )?
                .convert(x.dtype())
            }
        }
    }
}

/// The token embedding, sharded across the hidden dim (NxD's `shard_across_embedding`).
pub struct Embedding {
    pub table: Tensor,
}

impl Embedding {
    pub fn forward(&self, cx: &Recorder<'_>, ids: &Tensor) -> Result<Tensor, OpError> {
        parallel_embedding(ids, &self.table, &cx.tp)
    }
}

/// A column-parallel linear: each rank holds `out / t` rows.
pub struct ColumnLinear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl ColumnLinear {
    pub fn forward(&self, cx: &Recorder<'_>, x: &Tensor) -> Result<Tensor, OpError> {
        column_parallel_linear(x, &self.weight, self.bias.as_ref(), false, &cx.tp)
    }
}

/// A row-parallel linear: each rank holds `in / t` columns; the partial products are
/// all-reduced, and the bias is added once after.
pub struct RowLinear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl RowLinear {
    pub fn forward(&self, cx: &Recorder<'_>, x: &Tensor) -> Result<Tensor, OpError> {
        row_parallel_linear(x, &self.weight, self.bias.as_ref(), &cx.tp)
    }
}

/// Q, K and V projections: one fused weight (rows `[Q_r; K_r; V_r]`) or three.
pub enum QkvProjection {
    Fused(ColumnLinear),
    Split {
        q: ColumnLinear,
        k: ColumnLinear,
        v: ColumnLinear,
    },
}

impl QkvProjection {
    /// `(q, k, v)` as heads `[B, n, S, hd]`; each projection is recorded under its HF name.
    pub fn forward(
        &self,
        cx: &Recorder<'_>,
        x: &Tensor,
        names: [&str; 4],
    ) -> Result<(Tensor, Tensor, Tensor), OpError> {
        let (bsz, s) = (cx.spec.batch, cx.spec.seq_len);
        let plan = cx.plan;
        let (q_r, kv_r, hd) = (plan.q_heads_per_rank, plan.kv_heads_per_rank, plan.head_dim);
        // [B, S, n·hd] → [B, n, S, hd]
        let heads = |t: &Tensor, n: i64| -> Result<Tensor, OpError> {
            t.reshape(&[bsz, s, n, hd])?.transpose(&[0, 2, 1, 3])
        };
        let [fused, qn, kn, vn] = names;
        match self {
            QkvProjection::Fused(w) => {
                let qkv = {
                    let _p = cx.b.scope(fused);
                    w.forward(cx, x)?
                };
                let part = |start: i64, n: i64| qkv.slice_dim(2, start * hd, (start + n) * hd);
                Ok((
                    heads(&part(0, q_r)?, q_r)?,
                    heads(&part(q_r, kv_r)?, kv_r)?,
                    heads(&part(q_r + kv_r, kv_r)?, kv_r)?,
                ))
            }
            QkvProjection::Split { q, k, v } => {
                let proj = |name: &str, w: &ColumnLinear, n: i64| -> Result<Tensor, OpError> {
                    let _p = cx.b.scope(name);
                    heads(&w.forward(cx, x)?, n)
                };
                Ok((proj(qn, q, q_r)?, proj(kn, k, kv_r)?, proj(vn, v, kv_r)?))
            }
        }
    }
}

/// The MLP's gate and up projections: one fused weight (rows `[gate_r; up_r]`) or two.
pub enum GateUpProjection {
    Fused(ColumnLinear),
    Split {
        gate: ColumnLinear,
        up: ColumnLinear,
    },
}

impl GateUpProjection {
    /// `(gate, up)`, each `[B, S, I_r]`; recorded under the HF names `names`.
    pub fn forward(
        &self,
        cx: &Recorder<'_>,
        x: &Tensor,
        names: [&str; 3],
    ) -> Result<(Tensor, Tensor), OpError> {
        let ir = cx.plan.intermediate_per_rank;
        let [fused, gn, un] = names;
        match self {
            GateUpProjection::Fused(w) => {
                let gu = {
                    let _p = cx.b.scope(fused);
                    w.forward(cx, x)?
                };
                Ok((gu.slice_dim(2, 0, ir)?, gu.slice_dim(2, ir, 2 * ir)?))
            }
            GateUpProjection::Split { gate, up } => {
                let proj = |name: &str, w: &ColumnLinear| -> Result<Tensor, OpError> {
                    let _p = cx.b.scope(name);
                    w.forward(cx, x)
                };
                Ok((proj(gn, gate)?, proj(un, up)?))
            }
        }
    }
}

/// The lm_head's output: the full vocab on every rank, or each rank's padded vocab shard.
pub enum Logits {
    Gathered(Tensor),
    Sharded(Tensor),
}

impl Logits {
    pub fn tensor(&self) -> &Tensor {
        match self {
            Logits::Gathered(t) | Logits::Sharded(t) => t,
        }
    }
}

/// The LM head, a ColumnParallelLinear over the padded vocab: gathered (NxD without
/// on-device sampling) and cut back to the real vocab, or left as each rank's shard.
pub struct LmHead {
    pub weight: Tensor,
}

impl LmHead {
    pub fn forward(&self, cx: &Recorder<'_>, x: &Tensor) -> Result<Logits, OpError> {
        let gather = cx.spec.options.gather_logits;
        let y =
            column_parallel_linear(x, &self.weight, None, gather, &cx.tp)?.convert(DType::F32)?;
        Ok(if gather {
            Logits::Gathered(y.slice_dim(1, 0, cx.plan.vocab)?)
        } else {
            Logits::Sharded(y)
        })
    }
}

/// Which rows of a prefill the layers carry: every token's, or from the last layer's attention
/// output on only each sequence's last real token (`GraphOptions::prefill_tail`).
pub struct KeptRows {
    /// `[B, S]`: one-hot at each sequence's last real token.
    selector: Tensor,
}

impl KeptRows {
    /// For the last layer of `spec`'s graph: `Some` in a prefill under
    /// [`PrefillTail::LastToken`] (nothing to cut otherwise).
    pub fn for_last_layer(
        cx: &Recorder<'_>,
        pos: &Tensor,
        dtype: DType,
    ) -> Result<Option<KeptRows>, OpError> {
        let spec = cx.spec;
        if spec.kind != GraphKind::ContextEncoding
            || spec.seq_len == 1
            || spec.options.prefill_tail != PrefillTail::LastToken
        {
            return Ok(None);
        }
        let _s = cx.b.scope("last_position");
        Ok(Some(KeptRows {
            selector: last_token_selector(cx, pos, dtype)?,
        }))
    }

    /// `[B, S, ..]` → `[B, 1, ..]`: each sequence's last real token.
    pub fn select(&self, t: &Tensor) -> Result<Tensor, OpError> {
        let mut dims = t.dims().to_vec();
        dims[1] = 1;
        select_rows(&self.selector, t)?.reshape(&dims)
    }
}

/// `[B, S]`, one-hot at each sequence's last real token: the first index holding the largest
/// position id (prefill pads after the prompt), in `dtype`.
fn last_token_selector(cx: &Recorder<'_>, pos: &Tensor, dtype: DType) -> Result<Tensor, OpError> {
    let (bsz, s) = (cx.spec.batch, cx.spec.seq_len);
    let b = &cx.b;
    let idx = b.iota(DType::S32, &[bsz, s], 1)?;
    let max = pos.reduce_max(&[1])?.reshape(&[bsz, 1])?;
    let candidates = pos.eq(&max)?.select(&idx, &idx.scalar_like(s as f64)?)?;
    let last = candidates.reduce_min(&[1])?.reshape(&[bsz, 1])?;
    idx.eq(&last)?.convert(dtype)
}

/// `selector [B, S] · t [B, S, ..]` → `[B, ..]` (a one-hot contraction: exact).
fn select_rows(selector: &Tensor, t: &Tensor) -> Result<Tensor, OpError> {
    selector.dot_general(
        t,
        DotDims {
            lhs_batch: vec![0],
            rhs_batch: vec![0],
            lhs_contracting: vec![1],
            rhs_contracting: vec![1],
        },
    )
}

/// Hidden state of the last real token per sequence, `[B, hidden]`: the first index holding
/// the largest position id, selected with a one-hot contraction.
pub fn last_position(cx: &Recorder<'_>, h: &Tensor, pos: &Tensor) -> Result<Tensor, OpError> {
    let (bsz, s, hidden) = (cx.spec.batch, cx.spec.seq_len, cx.plan.hidden);
    if s == 1 {
        return h.reshape(&[bsz, hidden]);
    }
    let _s = cx.b.scope("last_position");
    select_rows(&last_token_selector(cx, pos, h.dtype())?, h)
}
