//! Cross-replica collectives with explicit replica groups. Groups are emitted in the legacy
//! `replica_groups` field (49): an older XLA fork such as neuronx-cc's would silently drop
//! the newer `collective_device_list` (87) and turn a sub-group collective into a global one.

use super::{array, check_dim, expect_arity, OpRule, ReduceKind};
use crate::ir::emit::{collective_reducer, CompEmitter};
use crate::ir::error::ShapeError;
use crate::ir::types::Type;
use xla_proto::ReplicaGroup;

/// Replica groups, e.g. `[[0,1],[2,3]]`. Always explicit: an empty list would mean "all
/// replicas" to XLA, which is how aws-neuron-sdk#1107 lost its groups.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReplicaGroups(pub Vec<Vec<i64>>);

impl ReplicaGroups {
    /// One group of replicas `0..n`.
    pub fn all(n: i64) -> Self {
        ReplicaGroups(vec![(0..n).collect()])
    }

    /// Checks the groups are non-empty, equally sized and disjoint; returns the group size.
    pub fn group_size(&self) -> Result<i64, ShapeError> {
        let bad = |reason: String| ShapeError::invalid("replica groups", reason);
        let first = self
            .0
            .first()
            .ok_or_else(|| bad("no groups given".into()))?;
        if first.is_empty() || self.0.iter().any(|g| g.len() != first.len()) {
            return Err(bad(format!(
                "{:?}: groups must be non-empty and of equal size",
                self.0
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for &r in self.0.iter().flatten() {
            if r < 0 || !seen.insert(r) {
                return Err(bad(format!(
                    "{:?}: replica {r} is negative or repeated",
                    self.0
                )));
            }
        }
        Ok(first.len() as i64)
    }

    pub fn to_proto(&self) -> Vec<ReplicaGroup> {
        self.0
            .iter()
            .map(|g| ReplicaGroup {
                replica_ids: g.clone(),
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AllReduce {
    pub kind: ReduceKind,
    pub groups: ReplicaGroups,
}

impl OpRule for AllReduce {
    fn name(&self) -> &'static str {
        "all-reduce"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 1)?;
        self.groups.group_size()?;
        Ok(Type::Array(array(operands, 0)?.clone()))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        let dtype = ty.as_array().expect("all-reduce result is an array").dtype;
        let comp = collective_reducer(cx.module(), self.kind.opcode(), dtype);
        cx.emit("all-reduce", ty, operands, |i| {
            i.replica_groups = self.groups.to_proto();
            i.called_computation_ids = vec![comp];
        })
    }
}

/// Concatenates each group member's operand along `dim`, in group order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AllGather {
    pub dim: i64,
    pub groups: ReplicaGroups,
}

impl OpRule for AllGather {
    fn name(&self) -> &'static str {
        "all-gather"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 1)?;
        let x = array(operands, 0)?;
        let n = self.groups.group_size()?;
        let d = check_dim(self.dim, x.rank())?;
        let mut dims = x.dims.clone();
        dims[d] *= n;
        Ok(Type::Array(x.with_dims(dims)))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        cx.emit("all-gather", ty, operands, |i| {
            i.replica_groups = self.groups.to_proto();
            i.dimensions = vec![self.dim];
        })
    }
}

/// Reduces across the group, then member `r` keeps block `r` of `dim`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReduceScatter {
    pub kind: ReduceKind,
    pub dim: i64,
    pub groups: ReplicaGroups,
}

impl OpRule for ReduceScatter {
    fn name(&self) -> &'static str {
        "reduce-scatter"
    }
    fn infer(&self, operands: &[&Type]) -> Result<Type, ShapeError> {
        expect_arity(operands, 1)?;
        let x = array(operands, 0)?;
        let n = self.groups.group_size()?;
        let d = check_dim(self.dim, x.rank())?;
        if x.dims[d] % n != 0 {
            return Err(ShapeError::NotDivisible {
                dim: d,
                size: x.dims[d],
                group_size: n,
            });
        }
        let mut dims = x.dims.clone();
        dims[d] /= n;
        Ok(Type::Array(x.with_dims(dims)))
    }
    fn lower(&self, cx: &mut CompEmitter<'_>, operands: &[i64], ty: &Type) -> i64 {
        let dtype = ty
            .as_array()
            .expect("reduce-scatter result is an array")
            .dtype;
        let comp = collective_reducer(cx.module(), self.kind.opcode(), dtype);
        cx.emit("reduce-scatter", ty, operands, |i| {
            i.replica_groups = self.groups.to_proto();
            i.dimensions = vec![self.dim];
            i.called_computation_ids = vec![comp];
        })
    }
}
