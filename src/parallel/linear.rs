//! Tensor-parallel linears and the embedding, built from DSL primitives and explicit
//! collectives. Weights keep the Hugging Face `[out, in]` layout, so a linear is a `dot`
//! contracting the activation's last dim with the weight's dim 1 (no transpose op), unless
//! the form is [`LinearForm::InputMajor`], whose weights are stored `[in, out]`.

use crate::dsl::{DType, DotDims, OpError, ReduceKind, ReplicaGroups, Tensor};
use crate::ir::ops::MatvecKernel;

/// The tensor-parallel group: `degree` ranks, all in one replica group; and how its linears
/// lay out their matmuls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorParallel {
    pub degree: i64,
    pub linear: LinearForm,
    /// Low-precision matmuls produce f32 and round once after the bias (otherwise their
    /// result keeps the operands' dtype).
    pub f32_result: bool,
    /// A low-precision projection of a single row takes its vector through an identity
    /// gather (`GraphOptions::vector_operand`).
    pub gather_vector: bool,
    /// A projection of at most [`KERNEL_MAX_ROWS`] rows runs in one of the runtime's
    /// matrix-vector kernels (`GraphOptions::matvec`): bf16 with `[out, in]` weights, f32 with
    /// `[in, out]` ones.
    pub matvec_kernel: bool,
}

/// The most rows (sequences × tokens) a projection sends to the matrix-vector kernel: batched
/// decode up to 8 sequences. Past that the product is a GEMM, which XLA runs well.
pub const KERNEL_MAX_ROWS: i64 = 8;

/// Operand order and weight layout of a projection `y = x · wᵀ` (`w` is HF's `[out, in]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LinearForm {
    /// `dot(x, w)` contracting `x`'s last dim with `w`'s dim 1: what NxD emits.
    #[default]
    ActivationFirst,
    /// `dot(w, x)`, then a transpose of the (activation-sized) result back to `[..., out]`.
    /// XLA:CPU packs an `[out, in]` lhs contiguously for its GEMMs, but gathers it element by
    /// element as the rhs: prefill is about 3× faster this way (docs/decode-performance.md).
    WeightFirst,
    /// The weight stored transposed, `[in, out]` (the sharder transposes each rank's shard
    /// once), and `dot(x, w)` contracting `x`'s last dim with `w`'s dim 0: the `x @ W` form
    /// XLA:CPU runs as a plain row-major GEMM at every batch size (what JAX models emit).
    InputMajor,
}

impl LinearForm {
    /// Whether the projection weights are stored `[in, out]`.
    pub fn transposes_weights(self) -> bool {
        self == LinearForm::InputMajor
    }
}

impl TensorParallel {
    pub fn new(degree: i64) -> Self {
        TensorParallel {
            degree,
            linear: LinearForm::default(),
            f32_result: true,
            gather_vector: false,
            matvec_kernel: false,
        }
    }

    pub fn with_linear(self, linear: LinearForm) -> Self {
        TensorParallel { linear, ..self }
    }

    pub fn with_f32_result(self, f32_result: bool) -> Self {
        TensorParallel { f32_result, ..self }
    }

    pub fn with_gather_vector(self, gather_vector: bool) -> Self {
        TensorParallel {
            gather_vector,
            ..self
        }
    }

    pub fn with_matvec_kernel(self, matvec_kernel: bool) -> Self {
        TensorParallel {
            matvec_kernel,
            ..self
        }
    }

    /// How these ranks' projections multiply.
    pub fn linear_options(&self) -> LinearOptions {
        LinearOptions {
            form: self.linear,
            f32_result: self.f32_result,
            gather_vector: self.gather_vector,
            matvec_kernel: self.matvec_kernel,
        }
    }

    pub fn groups(&self) -> ReplicaGroups {
        ReplicaGroups::all(self.degree)
    }

    pub fn is_parallel(&self) -> bool {
        self.degree > 1
    }
}

/// How one projection multiplies: operand order and weight layout, result type, and the
/// single-row vector's path (see [`TensorParallel`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearOptions {
    pub form: LinearForm,
    pub f32_result: bool,
    pub gather_vector: bool,
    pub matvec_kernel: bool,
}

/// `x · wᵀ` for a weight stored `[out, in]`: `[..., in] → [..., out]`. Low-precision inputs
/// accumulate in f32 (the dot's result type) and round once at the end, as Neuron's matmul
/// engine and PyTorch's CPU/GPU bf16 matmuls do.
#[track_caller]
pub fn linear(x: &Tensor, weight: &Tensor) -> Result<Tensor, OpError> {
    linear_as(x, weight, LinearForm::ActivationFirst)
}

/// [`linear`] in the given operand order; both orders compute the same values.
#[track_caller]
pub fn linear_as(x: &Tensor, weight: &Tensor, form: LinearForm) -> Result<Tensor, OpError> {
    let options = LinearOptions {
        form,
        f32_result: true,
        gather_vector: false,
        matvec_kernel: false,
    };
    linear_with_bias(x, weight, None, options)
}

/// `x · wᵀ + bias`. With low-precision inputs and `f32_result`, the dot produces f32 and the
/// bias is added to that accumulation, so the result is rounded once (as PyTorch's CPU
/// `addmm` does); without it, the dot's result keeps the operands' dtype (the form AWS's
/// writers emit: Neuron accumulates in fp32 and rounds once either way) and the bias is
/// added in that dtype. With `gather_vector`, a low-precision product of a single row takes
/// that row through an identity gather first ([`gathered_vector`]). With `matvec_kernel`, a
/// product of at most [`KERNEL_MAX_ROWS`] rows is one of the runtime's kernels instead
/// ([`Tensor::matvec_kernel`]) when one takes its operands: bf16 with an `[out, in]` weight,
/// or f32 with an `[in, out]` one ([`LinearForm::InputMajor`]). The same f32 sums, then the
/// same bias and rounding.
#[track_caller]
pub fn linear_with_bias(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: LinearOptions,
) -> Result<Tensor, OpError> {
    let LinearOptions {
        form,
        f32_result,
        gather_vector,
        matvec_kernel,
    } = options;
    let rows = x.dims()[..x.rank() - 1].iter().product::<i64>();
    let kernel = if !matvec_kernel || rows > KERNEL_MAX_ROWS {
        None
    } else {
        match (x.dtype(), weight.dtype(), form.transposes_weights()) {
            (DType::BF16, DType::BF16, false) if f32_result => Some(MatvecKernel::Bf16),
            (DType::F32, DType::F32, true) => Some(MatvecKernel::F32),
            _ => None,
        }
    };
    let single_row = rows == 1;
    let gather = kernel.is_none()
        && gather_vector
        && f32_result
        && single_row
        && matches!(x.dtype(), DType::BF16 | DType::F16)
        && weight.dtype() == x.dtype();
    // A weight stored wider than the activations (f32 under bf16): widen x (exactly) and
    // multiply in the weight's dtype, then round once, as the f32-result form does. A gathered
    // vector is widened before its gather and multiplies the weight widened to f32 (XLA:CPU
    // widens it inside the product either way): the same products and f32 sums as the
    // f32-result dot, with no rounding of the vector left between the gather and the product.
    let (x, weight, out_dtype) = if gather {
        (
            gathered_vector(&x.convert(DType::F32)?)?,
            weight.convert(DType::F32)?,
            Some(x.dtype()),
        )
    } else if weight.dtype() != x.dtype() {
        (x.convert(weight.dtype())?, weight.clone(), Some(x.dtype()))
    } else {
        (x.clone(), weight.clone(), None)
    };
    let (x, weight) = (&x, &weight);
    let low_precision = f32_result && matches!(x.dtype(), DType::BF16 | DType::F16);
    let mut y = if let Some(kernel) = kernel {
        // [rows, in] times the weight → [rows, out] in f32 (the op's shape rule knows which
        // weight dim is `out`), back to x's leading dims.
        let y = x
            .reshape(&[rows, x.dims()[x.rank() - 1]])?
            .matvec_kernel(weight, kernel)?;
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("rank >= 1") = y.dims()[1];
        y.reshape(&dims)?
    } else {
        projection_dot(x, weight, form, low_precision)?
    };
    if let Some(b) = bias {
        // In the accumulation's dtype (f32 when the dot produced f32).
        let b = b.convert(y.dtype())?;
        let dims = y.dims().to_vec();
        let last = dims.len() as i64 - 1;
        y = y.add(&b.broadcast_in_dim(&dims, &[last])?)?;
    }
    match (low_precision, out_dtype) {
        (_, Some(dtype)) => y.convert(dtype),
        (true, None) => y.convert(x.dtype()),
        (false, None) => Ok(y),
    }
}

/// The projection as a `dot` in `form`'s operand order, `[..., out]` either way; with
/// `low_precision`, the dot produces f32.
#[track_caller]
fn projection_dot(
    x: &Tensor,
    weight: &Tensor,
    form: LinearForm,
    low_precision: bool,
) -> Result<Tensor, OpError> {
    let r = x.rank() as i64;
    let (lhs, rhs, dims) = match form {
        LinearForm::ActivationFirst => (
            x,
            weight,
            DotDims {
                lhs_contracting: vec![r - 1],
                rhs_contracting: vec![1],
                ..Default::default()
            },
        ),
        LinearForm::InputMajor => (
            x,
            weight,
            DotDims {
                lhs_contracting: vec![r - 1],
                rhs_contracting: vec![0],
                ..Default::default()
            },
        ),
        LinearForm::WeightFirst => (
            weight,
            x,
            DotDims {
                lhs_contracting: vec![1],
                rhs_contracting: vec![r - 1],
                ..Default::default()
            },
        ),
    };
    let mut y = if low_precision {
        lhs.dot_general_to(rhs, dims, DType::F32)?
    } else {
        lhs.dot_general(rhs, dims)?
    };
    if form == LinearForm::WeightFirst {
        // [out, ...] → [..., out]
        let perm: Vec<i64> = (1..r).chain([0]).collect();
        y = y.transpose(&perm)?;
    }
    Ok(y)
}

/// The same values as the single-row `x` (`[1, .., 1, n]`), through an identity gather
/// (indices `0..n`). XLA:CPU counts a gather as expensive and does not fuse it into a consumer
/// that reads each element many times, so the vector is computed once into its own buffer;
/// otherwise a matrix-vector product fuses the element-wise ops that make the vector and
/// evaluates them again for every weight row (`GraphOptions::vector_operand`).
#[track_caller]
pub fn gathered_vector(x: &Tensor) -> Result<Tensor, OpError> {
    let dims = x.dims().to_vec();
    let n = dims[dims.len() - 1];
    let ids = x.builder().iota(DType::S32, &[n], 0)?;
    x.reshape(&[n, 1])?.take(&ids)?.reshape(&dims)
}

/// Column-parallel linear: each rank holds `out/t` rows of the weight and produces that slice
/// of the output. With `gather_output`, an all-gather on the last dim rebuilds the full output.
#[track_caller]
pub fn column_parallel_linear(
    x: &Tensor,
    weight_shard: &Tensor,
    bias_shard: Option<&Tensor>,
    gather_output: bool,
    tp: &TensorParallel,
) -> Result<Tensor, OpError> {
    let y = linear_with_bias(x, weight_shard, bias_shard, tp.linear_options())?;
    if gather_output && tp.is_parallel() {
        y.all_gather(-1, &tp.groups())
    } else {
        Ok(y)
    }
}

/// Row-parallel linear with `input_is_parallel`: each rank holds `in/t` columns of the weight
/// and the matching slice of the input; an all-reduce sums the partial products, and the
/// (replicated) bias is added once, after it.
#[track_caller]
pub fn row_parallel_linear(
    x_shard: &Tensor,
    weight_shard: &Tensor,
    bias: Option<&Tensor>,
    tp: &TensorParallel,
) -> Result<Tensor, OpError> {
    let partial = linear_with_bias(x_shard, weight_shard, None, tp.linear_options())?;
    let y = if tp.is_parallel() {
        partial.all_reduce(ReduceKind::Sum, &tp.groups())?
    } else {
        partial
    };
    match bias {
        Some(b) => {
            let dims = y.dims().to_vec();
            let last = dims.len() as i64 - 1;
            y.add(&b.broadcast_in_dim(&dims, &[last])?)
        }
        None => Ok(y),
    }
}

/// Embedding sharded across the hidden dim (NxD's `shard_across_embedding`): each rank looks
/// up its `H/t` columns, then an all-gather on the last dim assembles the full rows.
#[track_caller]
pub fn parallel_embedding(
    ids: &Tensor,
    table_shard: &Tensor,
    tp: &TensorParallel,
) -> Result<Tensor, OpError> {
    let rows = table_shard.take(ids)?;
    if tp.is_parallel() {
        rows.all_gather(-1, &tp.groups())
    } else {
        Ok(rows)
    }
}
