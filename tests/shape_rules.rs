//! Every primitive op's shape rule: the inferred result type, and the error message (op,
//! operand types, scope path and source location) for each class of mistake.

use phi3_neuron::dsl::*;
use phi3_neuron::ir::ShapeError;

fn b() -> GraphBuilder {
    GraphBuilder::new("shape_rules")
}

fn p(b: &GraphBuilder, name: &str, dtype: DType, dims: &[i64]) -> Tensor {
    b.parameter(name, dtype, dims).unwrap()
}

fn ty(t: &Tensor) -> String {
    t.ty().to_string()
}

#[test]
fn parameter_constant_iota() {
    let b = b();
    assert_eq!(ty(&p(&b, "x", DType::BF16, &[2, 3])), "bf16[2,3]");
    assert_eq!(ty(&b.scalar(DType::F32, 1.5).unwrap()), "f32[]");
    assert_eq!(
        ty(&b
            .constant_f64(DType::S32, &[2, 2], &[1.0, 2.0, 3.0, 4.0])
            .unwrap()),
        "s32[2,2]"
    );
    assert_eq!(ty(&b.iota(DType::S32, &[2, 5], 1).unwrap()), "s32[2,5]");
    let e = b.iota(DType::S32, &[2, 5], 2).unwrap_err();
    assert!(
        matches!(e.error, ShapeError::DimOutOfRange { dim: 2, rank: 2 }),
        "{e}"
    );
    let bad = Literal {
        ty: ArrayType::new(DType::F32, vec![3]),
        bytes: vec![0; 8],
    };
    assert!(b
        .constant(bad)
        .unwrap_err()
        .to_string()
        .contains("needs 12 bytes"));
}

#[test]
fn elementwise_rules_and_errors() {
    let b = b();
    let x = p(&b, "x", DType::F32, &[2, 3]);
    let y = p(&b, "y", DType::F32, &[2, 3]);
    let i = p(&b, "i", DType::S32, &[2, 3]);
    for t in [
        x.neg(),
        x.abs(),
        x.exp(),
        x.log(),
        x.sqrt(),
        x.rsqrt(),
        x.tanh(),
        x.logistic(),
        x.sin(),
        x.cos(),
    ] {
        assert_eq!(ty(&t.unwrap()), "f32[2,3]");
    }
    for t in [
        x.add(&y),
        x.sub(&y),
        x.mul(&y),
        x.div(&y),
        x.max(&y),
        x.min(&y),
        x.pow(&y),
    ] {
        assert_eq!(ty(&t.unwrap()), "f32[2,3]");
    }
    assert_eq!(ty(&x.lt(&y).unwrap()), "pred[2,3]");
    assert_eq!(ty(&x.lt(&y).unwrap().select(&x, &y).unwrap()), "f32[2,3]");
    let lo = b.scalar(DType::F32, -1.0).unwrap();
    let hi = b.scalar(DType::F32, 1.0).unwrap();
    assert_eq!(ty(&x.clamp(&lo, &hi).unwrap()), "f32[2,3]");
    assert_eq!(ty(&x.convert(DType::BF16).unwrap()), "bf16[2,3]");

    // dtype mismatch names the op, both operand types and the source line.
    let e = x.add(&i).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(
        e.error,
        ShapeError::DTypeMismatch {
            expected: DType::F32,
            got: DType::S32,
            ..
        }
    ));
    assert!(
        msg.contains("`add`") && msg.contains("f32[2,3], s32[2,3]"),
        "{msg}"
    );
    assert!(msg.contains("tests/shape_rules.rs:"), "{msg}");
    // math on integers is rejected
    let e = i.exp().unwrap_err();
    assert!(
        matches!(
            e.error,
            ShapeError::DTypeNotAllowed {
                dtype: DType::S32,
                ..
            }
        ),
        "{e}"
    );
    // select wants a pred
    let e = x.select(&x, &y).unwrap_err();
    assert!(
        e.to_string().contains("predicate is f32, expected pred"),
        "{e}"
    );
    // clamp bounds of another dtype
    let ilo = b.scalar(DType::S32, 0.0).unwrap();
    assert!(matches!(
        x.clamp(&ilo, &hi).unwrap_err().error,
        ShapeError::DTypeMismatch { .. }
    ));
}

#[test]
fn numpy_broadcasting_records_explicit_ops() {
    let b = b();
    let x = p(&b, "x", DType::F32, &[4, 2, 3]);
    let row = p(&b, "row", DType::F32, &[3]);
    let col = p(&b, "col", DType::F32, &[4, 1, 1]);
    assert_eq!(ty(&x.add(&row).unwrap()), "f32[4,2,3]");
    assert_eq!(ty(&x.mul(&col).unwrap()), "f32[4,2,3]");
    assert_eq!(ty(&x.add_scalar(1.0).unwrap()), "f32[4,2,3]");
    // bad broadcast
    let bad = p(&b, "bad", DType::F32, &[2]);
    let e = x.add(&bad).unwrap_err();
    assert!(matches!(e.error, ShapeError::BadBroadcast { .. }), "{e}");
    assert!(e.to_string().contains("dim 2 has sizes 3 and 2"), "{e}");
    let e = x.broadcast_to(&[3]).unwrap_err();
    assert!(e.to_string().contains("target has lower rank"), "{e}");
    // HLO broadcast: mapping must match sizes
    let v = p(&b, "v", DType::F32, &[3]);
    assert_eq!(ty(&v.broadcast_in_dim(&[2, 3], &[1]).unwrap()), "f32[2,3]");
    let e = v.broadcast_in_dim(&[3, 2], &[1]).unwrap_err();
    assert!(
        e.to_string()
            .contains("operand dim 0 has size 3 but output dim 1 has size 2"),
        "{e}"
    );
}

#[test]
fn movement_rules() {
    let b = b();
    let x = p(&b, "x", DType::F32, &[2, 3, 4]);
    assert_eq!(ty(&x.reshape(&[6, 4]).unwrap()), "f32[6,4]");
    let e = x.reshape(&[5, 5]).unwrap_err();
    assert!(
        matches!(
            e.error,
            ShapeError::ElementCount {
                from_count: 24,
                to_count: 25,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(ty(&x.transpose(&[2, 0, 1]).unwrap()), "f32[4,2,3]");
    assert!(x
        .transpose(&[0, 0, 1])
        .unwrap_err()
        .to_string()
        .contains("not a permutation"));
    assert_eq!(
        ty(&x.slice(&[0, 1, 0], &[2, 3, 4], &[1, 1, 2]).unwrap()),
        "f32[2,2,2]"
    );
    assert_eq!(ty(&x.slice_dim(-1, 1, 3).unwrap()), "f32[2,3,2]");
    // out-of-range slice
    let e = x.slice(&[0, 0, 0], &[2, 3, 5], &[1, 1, 1]).unwrap_err();
    assert!(
        matches!(
            e.error,
            ShapeError::SliceOutOfRange {
                dim: 2,
                limit: 5,
                size: 4,
                ..
            }
        ),
        "{e}"
    );
    // wrong rank of slice bounds
    let e = x.slice(&[0, 0], &[2, 3], &[1, 1]).unwrap_err();
    assert!(
        matches!(
            e.error,
            ShapeError::WrongRank {
                expected: 3,
                got: 2,
                ..
            }
        ),
        "{e}"
    );
    let y = p(&b, "y", DType::F32, &[2, 5, 4]);
    assert_eq!(ty(&Tensor::concat(&[&x, &y], 1).unwrap()), "f32[2,8,4]");
    assert!(matches!(
        Tensor::concat(&[&x, &y], 0).unwrap_err().error,
        ShapeError::ShapeMismatch { .. }
    ));
    let zero = b.scalar(DType::F32, 0.0).unwrap();
    assert_eq!(
        ty(&x.pad(&zero, &[1, 0, 0], &[0, 2, 0], &[0, 0, 1]).unwrap()),
        "f32[3,5,7]"
    );
    let e = x.pad(&zero, &[0], &[0], &[0]).unwrap_err();
    assert!(
        matches!(
            e.error,
            ShapeError::WrongRank {
                what: "padding config",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn indexing_rules() {
    let b = b();
    let cache = p(&b, "cache", DType::F32, &[2, 4, 16, 8]);
    let upd = p(&b, "upd", DType::F32, &[2, 4, 3, 8]);
    let z = b.scalar(DType::S32, 0.0).unwrap();
    let pos = p(&b, "pos", DType::S32, &[]);
    assert_eq!(
        ty(&cache
            .dynamic_update_slice(&upd, &[&z, &z, &pos, &z])
            .unwrap()),
        "f32[2,4,16,8]"
    );
    assert_eq!(
        ty(&cache
            .dynamic_slice(&[&z, &z, &pos, &z], &[2, 4, 5, 8])
            .unwrap()),
        "f32[2,4,5,8]"
    );
    let e = cache.dynamic_slice(&[&z, &z], &[2, 4, 5, 8]).unwrap_err();
    assert!(
        matches!(
            e.error,
            ShapeError::WrongRank {
                expected: 4,
                got: 2,
                ..
            }
        ),
        "{e}"
    );
    let big = p(&b, "big", DType::F32, &[2, 4, 17, 8]);
    assert!(cache
        .dynamic_update_slice(&big, &[&z, &z, &z, &z])
        .unwrap_err()
        .to_string()
        .contains("does not fit"));

    let table = p(&b, "table", DType::F32, &[100, 16]);
    let ids = p(&b, "ids", DType::S32, &[2, 7]);
    assert_eq!(ty(&table.take(&ids).unwrap()), "f32[2,7,16]");
    let fids = p(&b, "fids", DType::F32, &[2, 7]);
    assert!(matches!(
        table.take(&fids).unwrap_err().error,
        ShapeError::DTypeNotAllowed { .. }
    ));

    // Row scatter along axis 2 of a [B,H,S,D] cache: indices (b, s) pairs.
    let idx = p(&b, "idx", DType::S32, &[2, 2]);
    let rows = p(&b, "rows", DType::F32, &[2, 4, 8]);
    let dims = ScatterDims {
        update_window_dims: vec![1, 2],
        inserted_window_dims: vec![0, 2],
        scatter_dims_to_operand_dims: vec![0, 2],
        index_vector_dim: 1,
    };
    assert_eq!(
        ty(&cache
            .scatter(&idx, &rows, dims.clone(), ScatterCombiner::Assign)
            .unwrap()),
        "f32[2,4,16,8]"
    );
    let wrong = p(&b, "wrong", DType::F32, &[3, 4, 8]);
    let e = cache
        .scatter(&idx, &wrong, dims, ScatterCombiner::Assign)
        .unwrap_err();
    assert!(
        e.to_string().contains("differ from the index batch dims"),
        "{e}"
    );
}

#[test]
fn dot_rules() {
    let b = b();
    let l = p(&b, "l", DType::F32, &[2, 2, 3]);
    let r = p(&b, "r", DType::F32, &[2, 3, 4]);
    let batched = DotDims {
        lhs_batch: vec![0],
        rhs_batch: vec![0],
        lhs_contracting: vec![2],
        rhs_contracting: vec![1],
    };
    assert_eq!(ty(&l.dot_general(&r, batched).unwrap()), "f32[2,2,4]");
    let w = p(&b, "w", DType::F32, &[3, 5]);
    assert_eq!(ty(&l.matmul(&w).unwrap()), "f32[2,2,5]");
    // bad dot dims: contracting sizes differ
    let bad = p(&b, "bad", DType::F32, &[4, 5]);
    let e = l.matmul(&bad).unwrap_err();
    assert!(matches!(e.error, ShapeError::BadDotDims { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("contracting dimension sizes differ: lhs dim 2 = 3, rhs dim 0 = 4"),
        "{e}"
    );
    // a dim used twice
    let dup = DotDims {
        lhs_batch: vec![0],
        rhs_batch: vec![0],
        lhs_contracting: vec![0],
        rhs_contracting: vec![1],
    };
    assert!(matches!(
        l.dot_general(&r, dup).unwrap_err().error,
        ShapeError::BadDotDims { .. }
    ));
    // bf16 operands may accumulate into f32
    let lb = p(&b, "lb", DType::BF16, &[2, 3]);
    let wb = p(&b, "wb", DType::BF16, &[3, 5]);
    let dims = DotDims {
        lhs_contracting: vec![1],
        rhs_contracting: vec![0],
        ..Default::default()
    };
    assert_eq!(
        ty(&lb.dot_general_to(&wb, dims, DType::F32).unwrap()),
        "f32[2,5]"
    );
    assert!(matches!(
        lb.matmul(&w).unwrap_err().error,
        ShapeError::DTypeMismatch { .. }
    ));
}

#[test]
fn reduce_and_argmax_rules() {
    let b = b();
    let x = p(&b, "x", DType::F32, &[2, 3, 4]);
    assert_eq!(ty(&x.sum(&[2]).unwrap()), "f32[2,3]");
    assert_eq!(ty(&x.reduce_max(&[0, 2]).unwrap()), "f32[3]");
    assert_eq!(ty(&x.reduce_min(&[-1]).unwrap()), "f32[2,3]");
    assert!(x
        .sum(&[1, 1])
        .unwrap_err()
        .to_string()
        .contains("must be distinct dims"));
    assert_eq!(ty(&x.argmax(-1, DType::S32).unwrap()), "s32[2,3]");
    assert!(matches!(
        x.argmax(1, DType::F32).unwrap_err().error,
        ShapeError::DTypeNotAllowed { .. }
    ));
}

#[test]
fn collective_rules() {
    let b = b();
    let x = p(&b, "x", DType::F32, &[4, 6]);
    let g2 = ReplicaGroups(vec![vec![0, 1], vec![2, 3]]);
    let g4 = ReplicaGroups::all(4);
    assert_eq!(ty(&x.all_reduce(ReduceKind::Sum, &g2).unwrap()), "f32[4,6]");
    assert_eq!(ty(&x.all_gather(1, &g4).unwrap()), "f32[4,24]");
    assert_eq!(
        ty(&x.reduce_scatter(ReduceKind::Sum, 0, &g4).unwrap()),
        "f32[1,6]"
    );
    // not divisible by the group size
    let e = x.reduce_scatter(ReduceKind::Sum, 1, &g4).unwrap_err();
    assert!(
        matches!(
            e.error,
            ShapeError::NotDivisible {
                dim: 1,
                size: 6,
                group_size: 4
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("dimension 1 of size 6 is not divisible by the group size 4"),
        "{e}"
    );
    let ragged = ReplicaGroups(vec![vec![0, 1], vec![2]]);
    assert!(x
        .all_reduce(ReduceKind::Sum, &ragged)
        .unwrap_err()
        .to_string()
        .contains("equal size"));
    assert!(x
        .all_reduce(ReduceKind::Sum, &ReplicaGroups(vec![]))
        .unwrap_err()
        .to_string()
        .contains("no groups"));
}

#[test]
fn tuple_and_custom_call() {
    let b = b();
    let x = p(&b, "x", DType::F32, &[2]);
    let y = p(&b, "y", DType::S32, &[3]);
    let t = b.tuple(&[&x, &y]).unwrap();
    assert_eq!(ty(&t.get(1).unwrap()), "s32[3]");
    assert!(t.get(2).unwrap_err().to_string().contains("out of range"));
    let c = b
        .custom_call(
            "AwsNeuronRmsNorm",
            &[&x],
            ArrayType::new(DType::F32, vec![2]),
            vec![],
        )
        .unwrap();
    assert_eq!(ty(&c), "f32[2]");
    assert!(b.custom_call("", &[&x], x.ty().clone(), vec![]).is_err());
}

#[test]
fn errors_carry_the_scope_path() {
    let b = GraphBuilder::new("m");
    let _model = b.scope("model");
    let _layer = b.scope("layers.3");
    let _attn = b.scope("self_attn");
    let x = p(&b, "x", DType::F32, &[1, 8, 3072]);
    let w = p(&b, "w", DType::F32, &[3000, 9216]);
    let e = {
        let _s = b.scope("qkv_proj");
        x.matmul(&w).unwrap_err()
    };
    assert_eq!(e.scope, "model/layers.3/self_attn/qkv_proj");
    let msg = e.to_string();
    assert!(
        msg.starts_with("`dot` at model/layers.3/self_attn/qkv_proj (tests/shape_rules.rs:"),
        "{msg}"
    );
    assert!(
        msg.contains("operands: (f32[1,8,3072], f32[3000,9216])"),
        "{msg}"
    );
    // the guard popped the scope
    assert_eq!(b.scope_path(), "model/layers.3/self_attn");
}

#[test]
fn operands_from_another_builder_are_rejected() {
    let (b1, b2) = (b(), b());
    let x = p(&b1, "x", DType::F32, &[2]);
    let y = p(&b2, "y", DType::F32, &[2]);
    assert!(x
        .add(&y)
        .unwrap_err()
        .to_string()
        .contains("another graph builder"));
}
