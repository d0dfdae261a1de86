//! The IR: verifier (reports every error), passes (CSE, DCE) and the deterministic order.

use phi3_neuron::dsl::*;
use phi3_neuron::ir::ops::{Binary, BinaryOp, Op, Parameter};
use phi3_neuron::ir::passes::{CommonSubexpressionElimination, DeadCodeElimination, Pass};
use phi3_neuron::ir::{verify, Alias, Node, Provenance};

fn param(number: i64, name: &str, dims: &[i64]) -> Node {
    Node {
        op: Op::Parameter(Parameter {
            number,
            name: name.into(),
            ty: ArrayType::new(DType::F32, dims.to_vec()),
        }),
        ty: Type::Array(ArrayType::new(DType::F32, dims.to_vec())),
        provenance: Provenance::default(),
    }
}

#[test]
fn verifier_reports_three_independent_errors() {
    let mut g = Graph::new("broken");
    let a = g.add_node_unchecked(param(0, "a", &[2, 3]), &[]);
    // Error 1: parameter number 0 used twice.
    let b = g.add_node_unchecked(param(0, "b", &[2, 3]), &[]);
    // Error 2: an add whose recorded type differs from the inferred one.
    let add = g.add_node_unchecked(
        Node {
            op: Op::Binary(Binary(BinaryOp::Add)),
            ty: Type::Array(ArrayType::new(DType::F32, vec![2, 4])),
            provenance: Provenance {
                scope: "model/layers.0/mlp".into(),
                file: "src/x.rs",
                line: 7,
                column: 1,
            },
        },
        &[a, b],
    );
    g.outputs = vec![add];
    // Error 3: an alias to a parameter that does not exist.
    g.aliases.push(Alias {
        output: 0,
        parameter: 9,
        kind: Default::default(),
    });

    let errs = verify(&g).unwrap_err();
    assert_eq!(errs.errors.len(), 3, "{errs}");
    let text = errs.to_string();
    assert!(
        text.contains("parameter number 0 is also used by %0"),
        "{text}"
    );
    assert!(
        text.contains("recorded type f32[2,4] differs from the inferred type f32[2,3]"),
        "{text}"
    );
    assert!(
        text.contains("at model/layers.0/mlp (src/x.rs:7:1)"),
        "{text}"
    );
    assert!(
        text.contains("alias of output 0 to parameter 9: no such parameter"),
        "{text}"
    );
}

#[test]
fn verifier_catches_ill_typed_nodes_and_bad_outputs() {
    let mut g = Graph::new("broken");
    let a = g.add_node_unchecked(param(0, "a", &[2]), &[]);
    let b = g.add_node_unchecked(param(1, "b", &[3]), &[]);
    let add = g.add_node_unchecked(
        Node {
            op: Op::Binary(Binary(BinaryOp::Add)),
            ty: Type::Array(ArrayType::new(DType::F32, vec![2])),
            provenance: Provenance::default(),
        },
        &[a, b],
    );
    g.outputs = vec![add];
    g.aliases.push(Alias {
        output: 3,
        parameter: 0,
        kind: Default::default(),
    });
    let errs = verify(&g).unwrap_err();
    assert_eq!(errs.errors.len(), 2, "{errs}");
    assert!(errs.errors[0]
        .message
        .contains("ill-typed add: shapes must be equal: f32[2] vs f32[3]"));
    assert!(errs.errors[1].message.contains("there are only 1 outputs"));
}

#[test]
fn finish_checks_alias_types() {
    let b = GraphBuilder::new("alias");
    let cache = b.parameter("cache", DType::F32, &[4]).unwrap();
    let x = b.parameter("x", DType::F32, &[2]).unwrap();
    b.alias_output(0, &cache).unwrap();
    assert!(
        b.alias_output(0, &x.neg().unwrap()).is_err(),
        "only parameters can be aliased"
    );
    let err = b.finish(&[&x]).unwrap_err();
    assert!(
        err.to_string()
            .contains("alias of output 0 (f32[2]) to parameter 0 (f32[4]): types differ"),
        "{err}"
    );
}

#[test]
fn cse_merges_equal_nodes_and_dce_removes_dead_ones() {
    let b = GraphBuilder::new("passes");
    let x = b.parameter("x", DType::F32, &[4]).unwrap();
    let _unused_weight = b.parameter("w", DType::F32, &[4]).unwrap();
    let e1 = x.exp().unwrap();
    let e2 = x.exp().unwrap();
    let s = e1.add(&e2).unwrap();
    let _dead = s.log().unwrap();
    let mut g = b.finish(&[&s]).unwrap();
    assert_eq!(g.node_count(), 6);
    assert!(CommonSubexpressionElimination.run(&mut g));
    assert_eq!(g.node_count(), 5);
    let add = g.outputs[0];
    let ops = g.operands(add);
    assert_eq!(
        ops[0], ops[1],
        "both operands of the add are now the same exp"
    );
    assert!(DeadCodeElimination.run(&mut g));
    // x, w (parameters stay), exp, add
    assert_eq!(g.node_count(), 4);
    assert!(
        !(CommonSubexpressionElimination, DeadCodeElimination).run(&mut g),
        "fixed point"
    );
    verify(&g).unwrap();
}

#[test]
fn collectives_and_parameters_are_never_merged() {
    let b = GraphBuilder::new("barrier");
    let x = b.parameter("x", DType::F32, &[4]).unwrap();
    let groups = ReplicaGroups::all(2);
    let r1 = x.all_reduce(ReduceKind::Sum, &groups).unwrap();
    let r2 = x.all_reduce(ReduceKind::Sum, &groups).unwrap();
    let s = r1.add(&r2).unwrap();
    let mut g = b.finish(&[&s]).unwrap();
    assert!(!CommonSubexpressionElimination.run(&mut g));
    assert_eq!(g.node_count(), 4);
}

#[test]
fn topological_order_is_insertion_order() {
    let b = GraphBuilder::new("order");
    let x = b.parameter("x", DType::F32, &[4]).unwrap();
    let y = b.parameter("y", DType::F32, &[4]).unwrap();
    let c = y.exp().unwrap();
    let a = x.exp().unwrap();
    let s = a.add(&c).unwrap();
    let g = b.finish(&[&s]).unwrap();
    let order: Vec<_> = g.topo_order();
    assert_eq!(order, vec![x.id(), y.id(), c.id(), a.id(), s.id()]);
    assert_eq!(order, g.node_ids());
}

/// A replacement that points a use at a newer node makes insertion order non-topological;
/// the order must still put every operand before its users.
#[test]
fn topological_order_survives_a_replacement_by_a_newer_node() {
    let b = GraphBuilder::new("order");
    let x = b.parameter("x", DType::F32, &[4]).unwrap();
    let a = x.exp().unwrap();
    let user = a.log().unwrap();
    let newer = x.neg().unwrap();
    let out = user.add(&newer).unwrap();
    let mut g = b.finish(&[&out]).unwrap();
    g.replace_and_remove(a.id(), newer.id());
    let order = g.topo_order();
    assert_eq!(order, vec![x.id(), newer.id(), user.id(), out.id()]);
    assert_ne!(
        order,
        g.node_ids(),
        "insertion order is not topological here"
    );
    verify(&g).unwrap();
}
