//! The recorder: owns the graph being built and the current scope path.

use super::error::OpError;
use super::tensor::Tensor;
use crate::ir::ops::{
    Concatenate, Constant, CustomCall, GetTupleElement, Iota, Op, Parameter, Tuple,
};
use crate::ir::{
    verify_recorded, Alias, AliasKind, ArrayType, DType, Graph, Literal, Node, NodeId, Operands,
    Provenance, ShapeError, Type, VerifyErrors,
};
use smallvec::SmallVec;
use std::cell::RefCell;
use std::panic::Location;
use std::rc::Rc;
use std::sync::Arc;

pub(crate) struct State {
    graph: Graph,
    scopes: Vec<String>,
    /// `scopes` joined by `/`, shared by every node recorded in it.
    path: Arc<str>,
    next_param: i64,
    finished: bool,
}

/// Records a graph. Cheap to clone: clones share the same graph, so layer functions can take
/// a builder by value or by reference. Not `Send`: a graph is recorded on one thread.
#[derive(Clone)]
pub struct GraphBuilder {
    pub(crate) state: Rc<RefCell<State>>,
}

/// Pops its scope when dropped. Returned by [`GraphBuilder::scope`].
pub struct ScopeGuard {
    state: Rc<RefCell<State>>,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let mut state = self.state.borrow_mut();
        state.scopes.pop();
        state.path = state.scopes.join("/").into();
    }
}

/// A tuple-typed value (from [`GraphBuilder::tuple`]); take elements with [`TupleValue::get`].
#[derive(Clone)]
pub struct TupleValue {
    pub(crate) id: NodeId,
    pub(crate) elems: Vec<ArrayType>,
    pub(crate) builder: GraphBuilder,
}

impl TupleValue {
    pub fn len(&self) -> usize {
        self.elems.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elems.is_empty()
    }

    #[track_caller]
    pub fn get(&self, index: usize) -> Result<Tensor, OpError> {
        let operand_ty = Type::Tuple(self.elems.clone());
        self.builder.record_raw(
            GetTupleElement {
                index: index as i64,
            }
            .into(),
            &[(self.id, operand_ty)],
        )
    }
}

impl GraphBuilder {
    pub fn new(name: impl Into<String>) -> Self {
        GraphBuilder {
            state: Rc::new(RefCell::new(State {
                graph: Graph::new(name),
                scopes: Vec::new(),
                path: "".into(),
                next_param: 0,
                finished: false,
            })),
        }
    }

    /// Makes room for `nodes` more nodes (and their operand edges), so that a caller who knows
    /// about how large its graph will be records it without the node storage growing (and
    /// being copied) a dozen times. Only a hint: the graph still grows past it.
    pub fn reserve(&self, nodes: usize) {
        self.state.borrow_mut().graph.reserve(nodes);
    }

    /// Enters a named scope (e.g. `layers.3`, then `self_attn`) until the guard drops. The scope
    /// path (`model/layers.3/self_attn`) goes into errors and into HLO `OpMetadata.op_name`.
    pub fn scope(&self, name: impl Into<String>) -> ScopeGuard {
        let mut state = self.state.borrow_mut();
        state.scopes.push(name.into());
        state.path = state.scopes.join("/").into();
        drop(state);
        ScopeGuard {
            state: self.state.clone(),
        }
    }

    pub fn scope_path(&self) -> String {
        self.state.borrow().path.to_string()
    }

    fn shared_scope_path(&self) -> Arc<str> {
        self.state.borrow().path.clone()
    }

    fn op_error(
        &self,
        op: &'static str,
        operands: Vec<Type>,
        error: ShapeError,
        location: &'static Location<'static>,
    ) -> OpError {
        OpError::new(op, operands, self.scope_path(), location, error)
    }

    /// Type-checks `op` against its operands and, if it is well-typed, adds it to the graph.
    #[track_caller]
    fn record_node(&self, op: Op, operands: &[(NodeId, Type)]) -> Result<(NodeId, Type), OpError> {
        let location = Location::caller();
        let types = || operands.iter().map(|(_, t)| t.clone()).collect();
        if self.state.borrow().finished {
            let e = ShapeError::invalid("builder", "the graph was already finished");
            return Err(self.op_error(op.name(), types(), e, location));
        }
        let refs: SmallVec<[&Type; 4]> = operands.iter().map(|(_, t)| t).collect();
        let ty = op
            .infer(&refs)
            .map_err(|e| self.op_error(op.name(), types(), e, location))?;
        let provenance = Provenance {
            scope: self.shared_scope_path(),
            file: location.file(),
            line: location.line(),
            column: location.column(),
        };
        let ids: Operands = operands.iter().map(|(id, _)| *id).collect();
        let id = self.state.borrow_mut().graph.add_node_unchecked(
            Node {
                op,
                ty: ty.clone(),
                provenance,
            },
            &ids,
        );
        Ok((id, ty))
    }

    /// [`record_node`](Self::record_node) for an op with an array result.
    #[track_caller]
    pub(crate) fn record_raw(
        &self,
        op: Op,
        operands: &[(NodeId, Type)],
    ) -> Result<Tensor, OpError> {
        let name = op.name();
        let location = Location::caller();
        let (id, ty) = self.record_node(op, operands)?;
        if let Type::Tuple(_) = ty {
            let types = operands.iter().map(|(_, t)| t.clone()).collect();
            let e = ShapeError::invalid(
                "result",
                "the op returns a tuple; record it with a tuple-valued call",
            );
            return Err(self.op_error(name, types, e, location));
        }
        Ok(Tensor::from_parts(id, ty, self.clone()))
    }

    /// Records an op with a tuple result (sort, a kernel returning several arrays).
    #[track_caller]
    pub(crate) fn record_tuple_op(
        &self,
        op: impl Into<Op>,
        operands: &[&Tensor],
    ) -> Result<TupleValue, OpError> {
        let raw: Vec<(NodeId, Type)> = operands
            .iter()
            .map(|t| (t.id(), Type::Array(t.ty().clone())))
            .collect();
        let (id, ty) = self.record_node(op.into(), &raw)?;
        let elems = match ty {
            Type::Tuple(elems) => elems,
            Type::Array(a) => vec![a],
        };
        Ok(TupleValue {
            id,
            elems,
            builder: self.clone(),
        })
    }

    #[track_caller]
    pub(crate) fn record(
        &self,
        op: impl Into<Op>,
        operands: &[&Tensor],
    ) -> Result<Tensor, OpError> {
        let op = op.into();
        let mut raw: SmallVec<[(NodeId, Type); 4]> = SmallVec::with_capacity(operands.len());
        for t in operands {
            if !Rc::ptr_eq(&t.builder.state, &self.state) {
                let types = operands
                    .iter()
                    .map(|t| Type::Array(t.ty().clone()))
                    .collect();
                let e = ShapeError::invalid("operand", "it was recorded by another graph builder");
                return Err(self.op_error(op.name(), types, e, Location::caller()));
            }
            raw.push((t.id(), Type::Array(t.ty().clone())));
        }
        self.record_raw(op, &raw)
    }

    /// Adds the next entry parameter. Parameters are numbered in the order they are created.
    #[track_caller]
    pub fn parameter(
        &self,
        name: impl Into<String>,
        dtype: DType,
        dims: &[i64],
    ) -> Result<Tensor, OpError> {
        let number = self.state.borrow().next_param;
        let t = self.record(
            Parameter {
                number,
                name: name.into(),
                ty: ArrayType::new(dtype, dims.to_vec()),
            },
            &[],
        )?;
        self.state.borrow_mut().next_param += 1;
        Ok(t)
    }

    #[track_caller]
    pub fn constant(&self, literal: Literal) -> Result<Tensor, OpError> {
        self.record(Constant(literal), &[])
    }

    #[track_caller]
    pub fn scalar(&self, dtype: DType, value: f64) -> Result<Tensor, OpError> {
        self.constant(Literal::scalar(dtype, value))
    }

    #[track_caller]
    pub fn constant_f64(
        &self,
        dtype: DType,
        dims: &[i64],
        values: &[f64],
    ) -> Result<Tensor, OpError> {
        self.constant(Literal::from_f64(dtype, dims, values))
    }

    #[track_caller]
    pub fn iota(&self, dtype: DType, dims: &[i64], dim: i64) -> Result<Tensor, OpError> {
        self.record(
            Iota {
                ty: ArrayType::new(dtype, dims.to_vec()),
                dim,
            },
            &[],
        )
    }

    #[track_caller]
    pub fn concatenate(&self, tensors: &[&Tensor], dim: i64) -> Result<Tensor, OpError> {
        self.record(Concatenate { dim }, tensors)
    }

    #[track_caller]
    pub fn tuple(&self, elems: &[&Tensor]) -> Result<TupleValue, OpError> {
        let t = self.record_tuple(elems)?;
        Ok(t)
    }

    #[track_caller]
    fn record_tuple(&self, elems: &[&Tensor]) -> Result<TupleValue, OpError> {
        let location = Location::caller();
        let types: Vec<ArrayType> = elems.iter().map(|t| t.ty().clone()).collect();
        let raw: Vec<(NodeId, Type)> = elems
            .iter()
            .map(|t| (t.id(), Type::Array(t.ty().clone())))
            .collect();
        let refs: Vec<&Type> = raw.iter().map(|(_, t)| t).collect();
        let ty = Op::from(Tuple).infer(&refs).map_err(|e| {
            self.op_error(
                "tuple",
                raw.iter().map(|(_, t)| t.clone()).collect(),
                e,
                location,
            )
        })?;
        let provenance = Provenance {
            scope: self.shared_scope_path(),
            file: location.file(),
            line: location.line(),
            column: location.column(),
        };
        let ids: Vec<NodeId> = raw.iter().map(|(id, _)| *id).collect();
        let id = self.state.borrow_mut().graph.add_node_unchecked(
            Node {
                op: Tuple.into(),
                ty,
                provenance,
            },
            &ids,
        );
        Ok(TupleValue {
            id,
            elems: types,
            builder: self.clone(),
        })
    }

    /// A call into a backend kernel. `result` is declared by the caller.
    #[track_caller]
    pub fn custom_call(
        &self,
        target: &str,
        operands: &[&Tensor],
        result: ArrayType,
        backend_config: Vec<u8>,
    ) -> Result<Tensor, OpError> {
        self.record(
            CustomCall {
                target: target.to_string(),
                backend_config,
                ty: Type::Array(result),
                has_side_effect: false,
            },
            operands,
        )
    }

    /// A call into a backend kernel that returns several arrays (declared by the caller).
    #[track_caller]
    pub fn custom_call_tuple(
        &self,
        target: &str,
        operands: &[&Tensor],
        results: Vec<ArrayType>,
        backend_config: Vec<u8>,
    ) -> Result<TupleValue, OpError> {
        for t in operands {
            if !Rc::ptr_eq(&t.builder.state, &self.state) {
                let types = operands
                    .iter()
                    .map(|t| Type::Array(t.ty().clone()))
                    .collect();
                let e = ShapeError::invalid("operand", "it was recorded by another graph builder");
                return Err(self.op_error("custom-call", types, e, Location::caller()));
            }
        }
        self.record_tuple_op(
            CustomCall {
                target: target.to_string(),
                backend_config,
                ty: Type::Tuple(results),
                has_side_effect: false,
            },
            operands,
        )
    }

    /// Declares that output `output` may reuse the buffer of parameter `param` (KV caches).
    /// Checked by the verifier when the graph is finished.
    #[track_caller]
    pub fn alias_output(&self, output: usize, param: &Tensor) -> Result<(), OpError> {
        self.alias_output_as(output, param, AliasKind::May)
    }

    /// [`GraphBuilder::alias_output`] with the alias kind.
    #[track_caller]
    pub fn alias_output_as(
        &self,
        output: usize,
        param: &Tensor,
        kind: AliasKind,
    ) -> Result<(), OpError> {
        let number = match &self.state.borrow().graph.node(param.id()).op {
            Op::Parameter(p) => Some(p.number),
            _ => None,
        };
        let Some(parameter) = number else {
            let e = ShapeError::invalid(
                "alias",
                format!("output {output} can only alias a parameter"),
            );
            return Err(self.op_error(
                "input_output_alias",
                vec![Type::Array(param.ty().clone())],
                e,
                Location::caller(),
            ));
        };
        self.state.borrow_mut().graph.aliases.push(Alias {
            output,
            parameter,
            kind,
        });
        Ok(())
    }

    /// Sets a module-level frontend attribute.
    pub fn set_attribute(&self, key: impl Into<String>, value: impl Into<String>) {
        self.state
            .borrow_mut()
            .graph
            .attributes
            .insert(key.into(), value.into());
    }

    /// Ends recording with `outputs` (the root tuple, in order) and verifies the graph.
    pub fn finish(&self, outputs: &[&Tensor]) -> Result<Graph, VerifyErrors> {
        let mut st = self.state.borrow_mut();
        st.finished = true;
        let mut graph = std::mem::take(&mut st.graph);
        graph.outputs = outputs.iter().map(|t| t.id()).collect();
        verify_recorded(&graph)?;
        Ok(graph)
    }
}
