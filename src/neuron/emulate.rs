//! Primitive stand-ins for Neuron's sampler kernels, for testing on CPU what `--preset
//! neuron` emits. The CPU plugin cannot run `AwsNeuronArgMax` or `AwsNeuronTopK`; this pass
//! replaces each with the primitives that compute what the kernel is documented to compute
//! (torch-neuronx's `Argmax` and `TopK` ops: the index of the largest value along `dim`, the
//! lowest among ties; the `k` largest values in descending order with their indices), so the
//! rest of the graph — everything our recorder wrote around the kernels — runs unchanged.
//! That the kernels themselves behave so on Neuron is UNVERIFIED here.

use crate::ir::ops::{Argmax, GetTupleElement, Iota, Slice, Sort, Tuple};
use crate::ir::{verify, ArrayType, Graph, Node, NodeId, Op, Type};

fn add(g: &mut Graph, op: Op, operands: &[NodeId], like: &Node) -> NodeId {
    let types: Vec<Type> = operands.iter().map(|o| g.node(*o).ty.clone()).collect();
    let refs: Vec<&Type> = types.iter().collect();
    let ty = op
        .infer(&refs)
        .unwrap_or_else(|e| panic!("emulating {}: {e}", like.op.name()));
    g.add_node_unchecked(
        Node {
            op,
            ty,
            provenance: like.provenance.clone(),
        },
        operands,
    )
}

fn config_int(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// Replaces every `AwsNeuronArgMax` and `AwsNeuronTopK` custom call of `g` with primitives;
/// returns how many it replaced. The graph is verified afterwards.
pub fn replace_kernels(g: &mut Graph) -> usize {
    let mut replaced = 0;
    for id in g.node_ids() {
        let node = g.node(id).clone();
        let Op::CustomCall(cc) = &node.op else {
            continue;
        };
        let operands = g.operands(id);
        let new = match cc.target.as_str() {
            "AwsNeuronArgMax" => {
                let Type::Array(out) = &cc.ty else { continue };
                let dim = config_int(&cc.backend_config).expect("argmax backend_config is a dim");
                add(
                    g,
                    Op::Argmax(Argmax {
                        dim,
                        index_dtype: out.dtype,
                    }),
                    &operands,
                    &node,
                )
            }
            "AwsNeuronTopK" => {
                let Type::Tuple(outs) = &cc.ty else { continue };
                let k = config_int(&cc.backend_config).expect("top-k backend_config is k");
                let x = g.node(operands[0]).ty.as_array().expect("array").clone();
                let last = x.rank() as i64 - 1;
                let iota = add(
                    g,
                    Op::Iota(Iota {
                        ty: ArrayType::new(outs[1].dtype, x.dims.clone()),
                        dim: last,
                    }),
                    &[],
                    &node,
                );
                let sorted = add(
                    g,
                    Op::Sort(Sort {
                        dim: last,
                        descending: true,
                    }),
                    &[operands[0], iota],
                    &node,
                );
                let mut limits = x.dims.clone();
                limits[last as usize] = k;
                let slice = Slice {
                    starts: vec![0; x.rank()],
                    limits,
                    strides: vec![1; x.rank()],
                };
                let parts: Vec<NodeId> = (0..2)
                    .map(|index| {
                        let e = add(
                            g,
                            Op::GetTupleElement(GetTupleElement { index }),
                            &[sorted],
                            &node,
                        );
                        add(g, Op::Slice(slice.clone()), &[e], &node)
                    })
                    .collect();
                add(g, Op::Tuple(Tuple), &parts, &node)
            }
            _ => continue,
        };
        g.replace_and_remove(id, new);
        replaced += 1;
    }
    if let Err(e) = verify(g) {
        panic!("the emulated graph does not verify: {e}");
    }
    replaced
}
