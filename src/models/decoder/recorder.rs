//! The recording context every decoder module writes into: the graph builder, the spec and
//! shard plan of the graph being recorded, and the inputs declared so far, each with its role.
//! A module declares its weights through [`Recorder::weight`] once, with their checkpoint keys
//! and shard rules; the resulting [`RecordedGraph`] carries those declarations to the
//! sharder, the manifest and the runner.

use super::spec::{DotResult, GraphSpec, Matvec, VectorOperand};
use crate::dsl::{ArrayType, DType, Graph, GraphBuilder, OpError, Tensor};
use crate::ir::VerifyErrors;
use crate::manifest::{InputRole, OutputRole};
use crate::parallel::{ShardPlan, TensorParallel};
use crate::weights::{Layout, ShardRule, WeightDecl, WeightPart, WeightsError};

/// One graph input or output: its parameter (or root-tuple) name, type and role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoInfo<R> {
    pub name: String,
    pub ty: ArrayType,
    pub role: R,
}

/// A recorded, verified graph with the description of its inputs and outputs.
pub struct RecordedGraph {
    pub spec: GraphSpec,
    pub graph: Graph,
    pub inputs: Vec<IoInfo<InputRole>>,
    pub outputs: Vec<IoInfo<OutputRole>>,
    /// The weight inputs' declarations, in parameter order.
    pub weights: Vec<WeightDecl>,
}

impl RecordedGraph {
    /// Total bytes of the inputs with a role matching `want`.
    pub fn input_bytes(&self, want: impl Fn(&InputRole) -> bool) -> u64 {
        self.inputs
            .iter()
            .filter(|i| want(&i.role))
            .map(|i| i.ty.byte_size() as u64)
            .sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The spec cannot be recorded for this model (names the model and graph).
    #[error("{model}: {graph}: {reason}")]
    Spec {
        model: String,
        graph: String,
        reason: String,
    },
    #[error("{0}")]
    Op(#[from] OpError),
    #[error("{0}")]
    Verify(#[from] VerifyErrors),
    #[error("{0}")]
    Weight(#[from] WeightsError),
}

/// One checkpoint tensor a weight is cut from.
pub fn part(key: impl Into<String>, hf_shape: &[usize], shard: ShardRule) -> WeightPart {
    WeightPart {
        checkpoint_key: key.into(),
        hf_shape: hf_shape.to_vec(),
        shard,
    }
}

pub struct Recorder<'a> {
    pub b: GraphBuilder,
    pub spec: &'a GraphSpec,
    pub plan: &'a ShardPlan,
    pub tp: TensorParallel,
    inputs: Vec<IoInfo<InputRole>>,
    weights: Vec<WeightDecl>,
}

impl<'a> Recorder<'a> {
    pub fn new(spec: &'a GraphSpec, plan: &'a ShardPlan) -> Recorder<'a> {
        Recorder {
            b: GraphBuilder::new(spec.name()),
            spec,
            plan,
            tp: TensorParallel::new(plan.tp)
                .with_linear(spec.options.linear)
                .with_f32_result(spec.options.dot_result == DotResult::F32)
                .with_gather_vector(spec.options.vector_operand == VectorOperand::Gathered)
                .with_matvec_kernel(spec.options.matvec == Matvec::Kernel),
            inputs: Vec::new(),
            weights: Vec::new(),
        }
    }

    /// Declares the next entry parameter with its role.
    #[track_caller]
    pub fn input(
        &mut self,
        name: &str,
        dtype: DType,
        dims: &[i64],
        role: InputRole,
    ) -> Result<Tensor, OpError> {
        let t = self.b.parameter(name, dtype, dims)?;
        self.inputs.push(IoInfo {
            name: name.to_string(),
            ty: t.ty().clone(),
            role,
        });
        Ok(t)
    }

    /// Declares a weight parameter `name` in the graph's dtype, cut from `parts` (stacked along
    /// dim 0). Its per-rank shape comes from the shard rules.
    #[track_caller]
    pub fn weight(&mut self, name: &str, parts: Vec<WeightPart>) -> Result<Tensor, BuildError> {
        self.declare(name, parts, Layout::Checkpoint)
    }

    /// Declares the weight of a projection (what the linears multiply by): as
    /// [`Recorder::weight`], laid out `[in, out]` when the linear form says so.
    #[track_caller]
    pub fn linear_weight(
        &mut self,
        name: &str,
        parts: Vec<WeightPart>,
    ) -> Result<Tensor, BuildError> {
        let layout = if self.tp.linear.transposes_weights() {
            Layout::Transposed
        } else {
            Layout::Checkpoint
        };
        let mut decl = WeightDecl::new(name, self.spec.dtype, parts, layout)?;
        // A low-precision projection with a long contraction may be stored in f32
        // (`GraphOptions::f32_weights_from`); the linear then multiplies in f32.
        if let Some(from) = self.spec.options.f32_weights_from {
            let contraction = match layout {
                Layout::Transposed => decl.shape[0],
                Layout::Checkpoint => decl.shape[decl.shape.len() - 1],
            };
            if matches!(decl.dtype, DType::BF16 | DType::F16) && contraction as i64 >= from {
                decl.dtype = DType::F32;
            }
        }
        self.push(decl)
    }

    #[track_caller]
    fn declare(
        &mut self,
        name: &str,
        parts: Vec<WeightPart>,
        layout: Layout,
    ) -> Result<Tensor, BuildError> {
        let decl = WeightDecl::new(name, self.spec.dtype, parts, layout)?;
        self.push(decl)
    }

    /// Declares `decl`'s graph input and records the declaration.
    #[track_caller]
    fn push(&mut self, decl: WeightDecl) -> Result<Tensor, BuildError> {
        decl.check(self.plan.tp as usize)?;
        let dims: Vec<i64> = decl.shape.iter().map(|&d| d as i64).collect();
        let role = InputRole::Weight {
            weight: decl.name.clone(),
        };
        let t = self.input(&decl.name, decl.dtype, &dims, role)?;
        self.weights.push(decl);
        Ok(t)
    }

    /// A 1-D weight every rank holds whole (norm weights, biases added after an all-reduce).
    #[track_caller]
    pub fn replicated(&mut self, key: &str, size: usize) -> Result<Tensor, BuildError> {
        let rule = self.plan.replicated();
        self.weight(key, vec![part(key, &[size], rule)])
    }

    /// Ends recording: `outputs` become the root tuple in order; `aliases` pairs an output
    /// index with the input tensor whose buffer it reuses.
    pub fn finish(
        self,
        outputs: Vec<(Tensor, OutputRole, String)>,
        aliases: Vec<(usize, Tensor)>,
    ) -> Result<RecordedGraph, BuildError> {
        for (output, param) in &aliases {
            self.b
                .alias_output_as(*output, param, self.spec.options.kv_alias)?;
        }
        let refs: Vec<&Tensor> = outputs.iter().map(|(t, _, _)| t).collect();
        let graph = self.b.finish(&refs).map_err(BuildError::Verify)?;
        let outputs = outputs
            .into_iter()
            .map(|(t, role, name)| IoInfo {
                name,
                ty: t.ty().clone(),
                role,
            })
            .collect();
        // The options as the graph is compiled (XNNPACK's dots only at one rank), which its
        // manifest entry's `xla_options` follow.
        let spec = GraphSpec {
            options: self.spec.options.clone().at_tp(self.plan.tp),
            ..self.spec.clone()
        };
        Ok(RecordedGraph {
            spec,
            graph,
            inputs: self.inputs,
            outputs,
            weights: self.weights,
        })
    }
}
