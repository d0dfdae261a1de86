//! Op conformance: every primitive op of the DSL is recorded, lowered, compiled and executed
//! through the PJRT CPU plugin (xla-cpu-pjrt 0.0.1), and its result is compared with values
//! computed independently here (hand tables, or a small reference implementation over [`Nd`]).
//! The graphs live in `tests/common/graphs.rs`, shared with `tests/printer_vs_xla.rs`.
//!
//! Tolerances (see each test for its own justification):
//! - Exact (`==`) for everything whose IEEE result is unique: data movement, integer ops,
//!   compare/select/clamp/max/min, f32 add/sub/mul/div/sqrt/neg/abs (correctly rounded in f32
//!   and in Rust alike), conversions. Reductions, dots, scatter-add and collectives use inputs
//!   that are multiples of 1/8 in [-4, 4] ([`Lcg::dyadic`]), so every partial sum is exact in
//!   f32 and the result does not depend on XLA's summation order.
//! - f32 transcendental ops (exp, log, rsqrt, tanh, logistic, sin, cos, pow) against f64 math:
//!   XLA's CPU backend uses its own polynomial approximations, which are not correctly rounded.
//!   [`F32_APPROX_RTOL`] (8 f32 ulps relative) and a 1e-7 absolute floor around zeros.
//! - bf16 (8 significant bits): a correctly rounded result is within half a bf16 ulp, i.e.
//!   2^-8 relative, of the exact one; ops XLA evaluates in f32 and rounds once more (exp)
//!   get one ulp, [`BF16_ULP`] = 2^-7. See `bf16_ops` for the dot and reduce bounds.

mod common;

use common::graphs::{self, *};
use common::*;
use half::{bf16, f16};
use phi3_neuron::dsl::Direction;
use pjrt_runtime::{Arg, CompileOptions, Error, ErrorCode};

/// 8 f32 ulps (2^-23 each), relative. XLA CPU's exp/log/rsqrt/tanh/logistic/pow are
/// approximations a few ulps wide; on these inputs the largest error measured was below one
/// ulp (sin and cos were exact), so this leaves margin without hiding a wrong formula.
const F32_APPROX_RTOL: f64 = 8.0 / (1u64 << 23) as f64;

fn f32_round(v: f64) -> f64 {
    v as f32 as f64
}

// ---- Reference implementations ----

fn transpose_ref(x: &Nd, perm: &[usize]) -> Nd {
    let dims: Vec<usize> = perm.iter().map(|&p| x.dims[p]).collect();
    Nd::from_fn(&dims, |out| {
        let mut src = vec![0; perm.len()];
        for (d, &p) in perm.iter().enumerate() {
            src[p] = out[d];
        }
        x.at(&src)
    })
}

/// HLO `pad`: element `i` of a dim lands at `low + i * (interior + 1)`; negative edges crop.
fn pad_ref(x: &Nd, value: f64, low: &[i64], high: &[i64], interior: &[i64]) -> Nd {
    let dims: Vec<usize> = (0..x.dims.len())
        .map(|d| {
            let n = x.dims[d] as i64;
            (low[d] + high[d] + n + (n - 1).max(0) * interior[d]) as usize
        })
        .collect();
    let mut out = Nd::filled(&dims, value);
    for idx in indices(&x.dims) {
        let pos: Vec<i64> = (0..idx.len())
            .map(|d| low[d] + idx[d] as i64 * (interior[d] + 1))
            .collect();
        if pos
            .iter()
            .zip(&dims)
            .all(|(&p, &n)| p >= 0 && (p as usize) < n)
        {
            let pos: Vec<usize> = pos.iter().map(|&p| p as usize).collect();
            out.set(&pos, x.at(&idx));
        }
    }
    out
}

/// General dot: output dims are batch, lhs free, rhs free.
fn dot_ref(l: &Nd, r: &Nd, lb: &[usize], rb: &[usize], lc: &[usize], rc: &[usize]) -> Nd {
    let free = |t: &Nd, b: &[usize], c: &[usize]| -> Vec<usize> {
        (0..t.dims.len())
            .filter(|d| !b.contains(d) && !c.contains(d))
            .collect()
    };
    let (lf, rf) = (free(l, lb, lc), free(r, rb, rc));
    let mut dims: Vec<usize> = lb.iter().map(|&d| l.dims[d]).collect();
    dims.extend(lf.iter().map(|&d| l.dims[d]));
    dims.extend(rf.iter().map(|&d| r.dims[d]));
    let contract: Vec<usize> = lc.iter().map(|&d| l.dims[d]).collect();
    Nd::from_fn(&dims, |out| {
        let (batch, rest) = out.split_at(lb.len());
        let (lfree, rfree) = rest.split_at(lf.len());
        let mut li = vec![0; l.dims.len()];
        let mut ri = vec![0; r.dims.len()];
        for (k, &v) in batch.iter().enumerate() {
            li[lb[k]] = v;
            ri[rb[k]] = v;
        }
        for (k, &v) in lfree.iter().enumerate() {
            li[lf[k]] = v;
        }
        for (k, &v) in rfree.iter().enumerate() {
            ri[rf[k]] = v;
        }
        indices(&contract)
            .iter()
            .map(|c| {
                for (k, &v) in c.iter().enumerate() {
                    li[lc[k]] = v;
                    ri[rc[k]] = v;
                }
                l.at(&li) * r.at(&ri)
            })
            .sum()
    })
}

/// Reduces `dims` of `x` with `f` starting from `init`.
fn reduce_ref(x: &Nd, dims: &[usize], init: f64, f: impl Fn(f64, f64) -> f64) -> Nd {
    let kept: Vec<usize> = (0..x.dims.len()).filter(|d| !dims.contains(d)).collect();
    let out_dims: Vec<usize> = kept.iter().map(|&d| x.dims[d]).collect();
    let mut out = Nd::filled(&out_dims, init);
    for idx in indices(&x.dims) {
        let o: Vec<usize> = kept.iter().map(|&d| idx[d]).collect();
        let v = f(out.at(&o), x.at(&idx));
        out.set(&o, v);
    }
    out
}

/// Embedding lookup: `[V, D]` rows at `ids`.
fn take_ref(table: &Nd, ids: &[i32], ids_dims: &[usize]) -> Nd {
    let d = table.dims[1];
    let mut dims = ids_dims.to_vec();
    dims.push(d);
    let data = ids
        .iter()
        .flat_map(|&i| (0..d).map(move |k| (i as usize, k)))
        .map(|(i, k)| table.at(&[i, k]))
        .collect();
    Nd::new(&dims, data)
}

// ---- Sources ----

#[test]
fn parameter_constants_iota() {
    let x = Lcg::new(1).f32s(6, -2.0, 2.0);
    let out = run(&graphs::sources(), &[input(x.clone(), &[2, 3])]);
    assert_exact("parameter", &read_f64::<f32>(&out[0], &[2, 3]), &f64s(&x));
    assert_exact("scalar constant", &read_f64::<f32>(&out[1], &[]), &[2.5]);
    let f32c: Vec<f64> = F32_CONSTANT.iter().map(|&v| f32_round(v)).collect();
    let got = read_f64::<f32>(&out[2], &[2, 3]);
    assert_exact("f32 constant", &got, &f32c);
    assert!(got[5].is_sign_negative(), "-0 keeps its sign");
    let sp = read::<f32>(&out[3], &[4]);
    assert_eq!(sp[0], f32::INFINITY);
    assert_eq!(sp[1], f32::NEG_INFINITY);
    assert!(sp[2].is_nan());
    assert_eq!(sp[3], 16777216.0, "16777217 rounds to even in f32");
    assert_eq!(read::<i32>(&out[4], &[3]), [-7, 0, i32::MAX]);
    assert_eq!(read::<i64>(&out[5], &[2]), S64_CONSTANT);
    let bf: Vec<bf16> = BF16_CONSTANT.iter().map(|&v| bf16::from_f64(v)).collect();
    assert_eq!(read::<bf16>(&out[6], &[4]), bf);
    let hf: Vec<f16> = F16_CONSTANT.iter().map(|&v| f16::from_f64(v)).collect();
    assert_eq!(read::<f16>(&out[7], &[3]), hf);
    assert_eq!(read::<f64>(&out[8], &[3]), F64_CONSTANT);
    assert_eq!(read::<bool>(&out[9], &[2]), [true, false]);
    assert_eq!(read::<bool>(&out[10], &[]), [true]);
    assert_exact(
        "large constant",
        &read_f64::<f32>(&out[11], &[3, 4]),
        &LARGE_CONSTANT,
    );
    assert_exact(
        "rank-3 constant",
        &read_f64::<f32>(&out[12], &[2, 2, 2]),
        &CUBE_CONSTANT,
    );
    assert_exact(
        "rank-4 constant",
        &read_f64::<f32>(&out[13], &[2, 1, 2, 2]),
        &CUBE_CONSTANT,
    );
    assert_exact(
        "[2,1] constant",
        &read_f64::<f32>(&out[14], &[2, 1]),
        &[5.0, 6.0],
    );
    assert_eq!(read::<i32>(&out[15], &[2, 3]), [0, 1, 2, 0, 1, 2]);
    assert_exact(
        "f32 iota",
        &read_f64::<f32>(&out[16], &[3, 2]),
        &[0.0, 0.0, 1.0, 1.0, 2.0, 2.0],
    );
    assert_exact(
        "bf16 iota",
        &read_f64::<bf16>(&out[17], &[4]),
        &[0.0, 1.0, 2.0, 3.0],
    );
}

#[test]
fn convert() {
    // 1 + 2^-8 and 1 + 3·2^-8 are ties in bf16: round to even gives 1 and 1 + 2^-6.
    let a: Vec<f32> = vec![-2.7, -0.5, -0.0, 1.003_906_3, 1.011_718_8, 1e9];
    let i: Vec<i32> = vec![-7, 0, 1, 16_777_217, i32::MIN, i32::MAX];
    let h = to_bf16(&Lcg::new(2).f32s(6, -100.0, 100.0));
    let out = run(
        &graphs::convert(),
        &[
            input(a.clone(), &[6]),
            input(i.clone(), &[6]),
            input(h.clone(), &[6]),
        ],
    );
    // f32 → s32 truncates toward zero.
    assert_eq!(read::<i32>(&out[0], &[6]), [-2, 0, 0, 1, 1, 1_000_000_000]);
    let a_bf = read::<bf16>(&out[1], &[6]);
    assert_eq!(a_bf, to_bf16(&a), "f32 → bf16 rounds to nearest even");
    assert_eq!(a_bf[3], bf16::from_f32(1.0));
    assert_eq!(a_bf[4], bf16::from_f32(1.015_625));
    let i_f: Vec<f32> = i.iter().map(|&v| v as f32).collect();
    assert_eq!(read::<f32>(&out[2], &[6]), i_f, "s32 → f32");
    let h_f: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
    assert_eq!(read::<f32>(&out[3], &[6]), h_f, "bf16 → f32 is exact");
    let p = [true, true, false, true, true, true];
    assert_eq!(read::<bool>(&out[4], &[6]), p, "f32 → pred is x != 0");
    assert_eq!(read::<i32>(&out[5], &[6]), [1, 1, 0, 1, 1, 1], "pred → s32");
}

// ---- Data movement ----

#[test]
fn reshape_transpose_broadcast() {
    let mut rng = Lcg::new(3);
    let (x, v, c, w) = (
        rng.f32s(24, -4.0, 4.0),
        rng.f32s(3, -4.0, 4.0),
        rng.f32s(3, -4.0, 4.0),
        rng.f32s(4, -4.0, 4.0),
    );
    let out = run(
        &graphs::movement(),
        &[
            input(x.clone(), &[2, 3, 4]),
            input(v.clone(), &[3]),
            input(c.clone(), &[3, 1]),
            input(w.clone(), &[4]),
        ],
    );
    let xn = Nd::of(&[2, 3, 4], &x);
    assert_exact("reshape", &read_f64::<f32>(&out[0], &[4, 6]), &xn.data);
    assert_exact(
        "transpose",
        &read_f64::<f32>(&out[1], &[4, 2, 3]),
        &transpose_ref(&xn, &[2, 0, 1]).data,
    );
    let bv = Nd::from_fn(&[2, 3, 4], |i| v[i[1]] as f64);
    assert_exact(
        "broadcast_in_dim",
        &read_f64::<f32>(&out[2], &[2, 3, 4]),
        &bv.data,
    );
    let bc = Nd::from_fn(&[2, 3, 4], |i| c[i[1]] as f64);
    assert_exact(
        "broadcast_to [3,1]",
        &read_f64::<f32>(&out[3], &[2, 3, 4]),
        &bc.data,
    );
    let sum = Nd::from_fn(&[2, 3, 4], |i| (xn.at(i) as f32 + w[i[2]]) as f64);
    assert_exact(
        "numpy-broadcast add",
        &read_f64::<f32>(&out[4], &[2, 3, 4]),
        &sum.data,
    );
}

#[test]
fn slice_and_concatenate() {
    let mut rng = Lcg::new(4);
    let (x, y) = (rng.f32s(30, -4.0, 4.0), rng.f32s(12, -4.0, 4.0));
    let out = run(
        &graphs::slice_concat(),
        &[input(x.clone(), &[6, 5]), input(y.clone(), &[6, 2])],
    );
    let xn = Nd::of(&[6, 5], &x);
    let yn = Nd::of(&[6, 2], &y);
    // Rows 1, 3, 5 and columns 0, 3.
    let strided = Nd::from_fn(&[3, 2], |i| xn.at(&[1 + 2 * i[0], 3 * i[1]]));
    assert_exact(
        "strided slice",
        &read_f64::<f32>(&out[0], &[3, 2]),
        &strided.data,
    );
    let cols = Nd::from_fn(&[6, 3], |i| xn.at(&[i[0], 1 + i[1]]));
    assert_exact("slice_dim", &read_f64::<f32>(&out[1], &[6, 3]), &cols.data);
    let cat = Nd::from_fn(&[6, 12], |i| match i[1] {
        c if c < 5 => xn.at(&[i[0], c]),
        c if c < 7 => yn.at(&[i[0], c - 5]),
        c => xn.at(&[i[0], c - 7]),
    });
    assert_exact(
        "concatenate dim 1",
        &read_f64::<f32>(&out[2], &[6, 12]),
        &cat.data,
    );
    let rows = Nd::from_fn(&[4, 5], |i| {
        xn.at(&[if i[0] < 2 { i[0] } else { i[0] + 2 }, i[1]])
    });
    assert_exact(
        "concatenate dim 0",
        &read_f64::<f32>(&out[3], &[4, 5]),
        &rows.data,
    );
}

#[test]
fn pad_edge_interior_negative() {
    let x = Lcg::new(5).f32s(6, -4.0, 4.0);
    let out = run(
        &graphs::pad(),
        &[input(x.clone(), &[2, 3]), input(vec![-9.5f32], &[])],
    );
    let xn = Nd::of(&[2, 3], &x);
    for (k, (lo, hi, int)) in PADS.iter().enumerate() {
        let want = pad_ref(&xn, -9.5, lo, hi, int);
        let dims: Vec<i64> = want.dims.iter().map(|&d| d as i64).collect();
        assert_exact(
            &format!("pad low={lo:?} high={hi:?} interior={int:?}"),
            &read_f64::<f32>(&out[k], &dims),
            &want.data,
        );
    }
    // One hand-checked case: interior 1 between rows, 2 between columns, low/high edges.
    let want1 = [
        -9.5,
        x[0] as f64,
        -9.5,
        -9.5,
        x[1] as f64,
        -9.5,
        -9.5,
        x[2] as f64, //
        -9.5,
        -9.5,
        -9.5,
        -9.5,
        -9.5,
        -9.5,
        -9.5,
        -9.5, //
        -9.5,
        x[3] as f64,
        -9.5,
        -9.5,
        x[4] as f64,
        -9.5,
        -9.5,
        x[5] as f64, //
        -9.5,
        -9.5,
        -9.5,
        -9.5,
        -9.5,
        -9.5,
        -9.5,
        -9.5,
    ];
    assert_exact("pad by hand", &read_f64::<f32>(&out[1], &[4, 8]), &want1);
}

#[test]
fn dynamic_slice_and_update_at_nonzero_offsets() {
    let mut rng = Lcg::new(6);
    let (x, u) = (rng.f32s(30, -4.0, 4.0), rng.f32s(6, -4.0, 4.0));
    let xn = Nd::of(&[5, 6], &x);
    let un = Nd::of(&[2, 3], &u);
    let exe = compile(&graphs::dynamic());
    // (2, 3) is in range; (4, 5) and (-1, 1) are clamped to (3, 3) and (0, 1).
    for (i, j, ci, cj) in [(2, 3, 2, 3), (4, 5, 3, 3), (-1, 1, 0, 1)] {
        let out = execute(
            &exe,
            &[
                input(x.clone(), &[5, 6]),
                input(u.clone(), &[2, 3]),
                input(vec![i], &[]),
                input(vec![j], &[]),
            ],
        );
        let ds = Nd::from_fn(&[2, 3], |k| xn.at(&[ci + k[0], cj + k[1]]));
        assert_exact(
            &format!("dynamic-slice at ({i}, {j})"),
            &read_f64::<f32>(&out[0], &[2, 3]),
            &ds.data,
        );
        let dus = |r0: usize, c0: usize| {
            Nd::from_fn(&[5, 6], |k| {
                if (r0..r0 + 2).contains(&k[0]) && (c0..c0 + 3).contains(&k[1]) {
                    un.at(&[k[0] - r0, k[1] - c0])
                } else {
                    xn.at(k)
                }
            })
        };
        assert_exact(
            &format!("dynamic-update-slice at ({i}, {j})"),
            &read_f64::<f32>(&out[1], &[5, 6]),
            &dus(ci, cj).data,
        );
        assert_exact(
            "dynamic-update-slice at constant (1, 2)",
            &read_f64::<f32>(&out[2], &[5, 6]),
            &dus(1, 2).data,
        );
    }
}

// ---- Indexing ----

#[test]
fn gather_embedding_and_columns() {
    let mut rng = Lcg::new(7);
    let table = rng.f32s(28, -4.0, 4.0);
    let ids = rng.ints(6, 0, 6);
    let x = rng.f32s(15, -4.0, 4.0);
    let cols = vec![4, 0, 2, 4];
    let out = run(
        &graphs::gather(),
        &[
            input(table.clone(), &[7, 4]),
            input(ids.clone(), &[2, 3]),
            input(x.clone(), &[3, 5]),
            input(cols.clone(), &[4]),
        ],
    );
    let want = take_ref(&Nd::of(&[7, 4], &table), &ids, &[2, 3]);
    assert_exact(
        "take with ids [2,3]",
        &read_f64::<f32>(&out[0], &[2, 3, 4]),
        &want.data,
    );
    let xn = Nd::of(&[3, 5], &x);
    let want = Nd::from_fn(&[3, 4], |i| xn.at(&[i[0], cols[i[1]] as usize]));
    assert_exact(
        "gather columns",
        &read_f64::<f32>(&out[1], &[3, 4]),
        &want.data,
    );
}

#[test]
fn scatter_cache_rows_assign_and_add() {
    let mut rng = Lcg::new(8);
    let cache = rng.dyadic(60);
    let pos = vec![3, 1];
    let rows = rng.dyadic(24);
    // Position 4 appears twice: Add accumulates both rows.
    let pos_add = vec![4, 0, 4];
    let rows_add = rng.dyadic(36);
    let out = run(
        &graphs::scatter(),
        &[
            input(cache.clone(), &[2, 2, 5, 3]),
            input(pos.clone(), &[2]),
            input(rows.clone(), &[2, 2, 2, 3]),
            input(pos_add.clone(), &[3]),
            input(rows_add.clone(), &[2, 2, 3, 3]),
        ],
    );
    let cn = Nd::of(&[2, 2, 5, 3], &cache);
    let (rn, an) = (
        Nd::of(&[2, 2, 2, 3], &rows),
        Nd::of(&[2, 2, 3, 3], &rows_add),
    );
    let mut assign = cn.clone();
    let mut add = cn.clone();
    for i in indices(&[2, 2, 2, 3]) {
        assign.set(&[i[0], i[1], pos[i[2]] as usize, i[3]], rn.at(&i));
    }
    for i in indices(&[2, 2, 3, 3]) {
        let at = [i[0], i[1], pos_add[i[2]] as usize, i[3]];
        add.set(&at, add.at(&at) + an.at(&i));
    }
    assert_exact(
        "scatter assign",
        &read_f64::<f32>(&out[0], &[2, 2, 5, 3]),
        &assign.data,
    );
    assert_exact(
        "scatter add",
        &read_f64::<f32>(&out[1], &[2, 2, 5, 3]),
        &add.data,
    );
}

// ---- Contraction, elementwise, reduction ----

#[test]
fn dot_with_batch_dims() {
    let mut rng = Lcg::new(9);
    let shapes: [&[usize]; 6] = [
        &[2, 3, 4],
        &[2, 4, 5],
        &[3, 2, 4],
        &[4, 2, 5],
        &[3, 4],
        &[4, 2],
    ];
    let data: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| rng.dyadic(s.iter().product()))
        .collect();
    let inputs: Vec<Input> = data
        .iter()
        .zip(shapes)
        .map(|(d, s)| {
            let dims: Vec<i64> = s.iter().map(|&x| x as i64).collect();
            input(d.clone(), &dims)
        })
        .collect();
    let out = run(&graphs::dot(), &inputs);
    let nd: Vec<Nd> = data.iter().zip(shapes).map(|(d, s)| Nd::of(s, d)).collect();
    // Exact: dyadic inputs make every product and partial sum exact in f32.
    let want = dot_ref(&nd[0], &nd[1], &[0], &[0], &[2], &[1]);
    assert_exact(
        "dot batch 0/0",
        &read_f64::<f32>(&out[0], &[2, 3, 5]),
        &want.data,
    );
    let want = dot_ref(&nd[2], &nd[3], &[1], &[1], &[2], &[0]);
    assert_exact(
        "dot batch 1/1, contracting 2/0",
        &read_f64::<f32>(&out[1], &[2, 3, 5]),
        &want.data,
    );
    let want = dot_ref(&nd[4], &nd[5], &[], &[], &[1], &[0]);
    assert_exact("matmul", &read_f64::<f32>(&out[2], &[3, 2]), &want.data);
}

#[test]
fn unary_ops_f32() {
    let mut rng = Lcg::new(10);
    let p = rng.f32s(12, 0.1, 4.0);
    let x = rng.f32s(12, -3.0, 3.0);
    let out = run(
        &graphs::unary(),
        &[input(p.clone(), &[12]), input(x.clone(), &[12])],
    );
    let map = |v: &[f32], f: fn(f64) -> f64| -> Vec<f64> {
        v.iter().map(|&a| f32_round(f(a as f64))).collect()
    };
    let got = |k: usize| read_f64::<f32>(&out[k], &[12]);
    // Correctly rounded in IEEE arithmetic: exact.
    assert_exact("negate", &got(0), &map(&x, |a| -a));
    assert_exact("abs", &got(1), &map(&x, f64::abs));
    assert_exact("sqrt", &got(4), &map(&p, f64::sqrt));
    type Case<'a> = (usize, &'a str, &'a [f32], fn(f64) -> f64);
    let approx: [Case; 7] = [
        (2, "exponential", &x, f64::exp),
        (3, "log", &p, f64::ln),
        (5, "rsqrt", &p, |a| 1.0 / a.sqrt()),
        (6, "tanh", &x, f64::tanh),
        (7, "logistic", &x, |a| 1.0 / (1.0 + (-a).exp())),
        (8, "sine", &x, f64::sin),
        (9, "cosine", &x, f64::cos),
    ];
    for (k, name, input, f) in approx {
        assert_close(name, &got(k), &map(input, f), 1e-7, F32_APPROX_RTOL);
    }
}

#[test]
fn binary_ops_f32() {
    let mut rng = Lcg::new(11);
    let a = rng.f32s(12, -4.0, 4.0);
    let b: Vec<f32> = rng
        .f32s(12, 0.5, 4.0)
        .into_iter()
        .zip(rng.ints(12, 0, 1))
        .map(|(m, s)| if s == 0 { m } else { -m })
        .collect();
    let p = rng.f32s(12, 0.1, 4.0);
    let q = rng.f32s(12, -2.0, 2.0);
    let out = run(
        &graphs::binary(),
        &[
            input(a.clone(), &[12]),
            input(b.clone(), &[12]),
            input(p.clone(), &[12]),
            input(q.clone(), &[12]),
        ],
    );
    let zip = |f: fn(f32, f32) -> f32| -> Vec<f64> {
        a.iter().zip(&b).map(|(&x, &y)| f(x, y) as f64).collect()
    };
    let got = |k: usize| read_f64::<f32>(&out[k], &[12]);
    // IEEE add/sub/mul/div are correctly rounded in XLA and in Rust alike: exact.
    assert_exact("add", &got(0), &zip(|x, y| x + y));
    assert_exact("subtract", &got(1), &zip(|x, y| x - y));
    assert_exact("multiply", &got(2), &zip(|x, y| x * y));
    assert_exact("divide", &got(3), &zip(|x, y| x / y));
    assert_exact("maximum", &got(4), &zip(f32::max));
    assert_exact("minimum", &got(5), &zip(f32::min));
    let pow: Vec<f64> = p
        .iter()
        .zip(&q)
        .map(|(&x, &y)| f32_round((x as f64).powf(y as f64)))
        .collect();
    assert_close("power", &got(6), &pow, 1e-7, F32_APPROX_RTOL);
}

#[test]
fn compare_all_directions_and_select() {
    let mut rng = Lcg::new(12);
    let mut a = rng.dyadic(8);
    let mut b = rng.dyadic(8);
    // Ties, signed zeros (equal under IEEE comparison) and a NaN (unordered).
    b[0] = a[0];
    b[3] = a[3];
    a[6] = -0.0;
    b[6] = 0.0;
    a[7] = f32::NAN;
    let i = vec![-5, 3, 7, -1, 0, i32::MIN, 2, 9];
    let j = vec![-5, -3, 8, -2, 0, 0, 2, 10];
    let out = run(
        &graphs::compare_select(),
        &[
            input(a.clone(), &[8]),
            input(b.clone(), &[8]),
            input(i.clone(), &[8]),
            input(j.clone(), &[8]),
        ],
    );
    for (k, d) in DIRECTIONS.iter().enumerate() {
        let f: fn(&f32, &f32) -> bool = match d {
            Direction::Eq => |x, y| x == y,
            Direction::Ne => |x, y| x != y,
            Direction::Lt => |x, y| x < y,
            Direction::Le => |x, y| x <= y,
            Direction::Gt => |x, y| x > y,
            Direction::Ge => |x, y| x >= y,
        };
        let want: Vec<bool> = a.iter().zip(&b).map(|(x, y)| f(x, y)).collect();
        assert_eq!(
            read::<bool>(&out[2 * k], &[8]),
            want,
            "compare {}",
            d.as_str()
        );
        let sel: Vec<f64> = (0..8)
            .map(|e| if want[e] { a[e] } else { b[e] } as f64)
            .collect();
        assert_exact(
            &format!("select on {}", d.as_str()),
            &read_f64::<f32>(&out[2 * k + 1], &[8]),
            &sel,
        );
    }
    let ge: Vec<bool> = i.iter().zip(&j).map(|(x, y)| x >= y).collect();
    assert_eq!(read::<bool>(&out[12], &[8]), ge, "s32 GE is signed");
}

#[test]
fn clamp_scalar_and_array_bounds() {
    let mut rng = Lcg::new(13);
    let x = rng.dyadic(8);
    let lo_a = rng.dyadic(8);
    let hi_a: Vec<f32> = lo_a
        .iter()
        .zip(rng.dyadic(8))
        .map(|(l, d)| l + d.abs())
        .collect();
    let out = run(
        &graphs::clamp(),
        &[
            input(x.clone(), &[8]),
            input(vec![-1.0f32], &[]),
            input(vec![1.5f32], &[]),
            input(lo_a.clone(), &[8]),
            input(hi_a.clone(), &[8]),
        ],
    );
    let want: Vec<f64> = x.iter().map(|&v| v.clamp(-1.0, 1.5) as f64).collect();
    assert_exact("clamp scalar", &read_f64::<f32>(&out[0], &[8]), &want);
    let want: Vec<f64> = (0..8)
        .map(|e| x[e].max(lo_a[e]).min(hi_a[e]) as f64)
        .collect();
    assert_exact("clamp array", &read_f64::<f32>(&out[1], &[8]), &want);
}

#[test]
fn reduce_sum_max_min() {
    let x = Lcg::new(14).dyadic(60);
    let out = run(&graphs::reduce(), &[input(x.clone(), &[3, 4, 5])]);
    let xn = Nd::of(&[3, 4, 5], &x);
    let add = |a: f64, b: f64| a + b;
    // Exact: dyadic inputs (see the file header).
    assert_exact(
        "max over 0",
        &read_f64::<f32>(&out[0], &[4, 5]),
        &reduce_ref(&xn, &[0], f64::NEG_INFINITY, f64::max).data,
    );
    assert_exact(
        "sum over 2",
        &read_f64::<f32>(&out[1], &[3, 4]),
        &reduce_ref(&xn, &[2], 0.0, add).data,
    );
    assert_exact(
        "min over 1",
        &read_f64::<f32>(&out[2], &[3, 5]),
        &reduce_ref(&xn, &[1], f64::INFINITY, f64::min).data,
    );
    assert_exact(
        "sum over all",
        &read_f64::<f32>(&out[3], &[]),
        &reduce_ref(&xn, &[0, 1, 2], 0.0, add).data,
    );
    assert_exact(
        "sum over 0, 2",
        &read_f64::<f32>(&out[4], &[4]),
        &reduce_ref(&xn, &[0, 2], 0.0, add).data,
    );
}

#[test]
fn argmax_first_index_among_ties() {
    let inf = f32::INFINITY;
    #[rustfmt::skip]
    let x: Vec<f32> = vec![
        1.0, 5.0, 2.0, 5.0, -1.0, 0.0,    // tie at 1 and 3 → 1
        2.0, 2.0, 2.0, 2.0, 2.0, 2.0,     // all equal → 0
        -inf, -3.0, -2.0, -1.0, -0.5, 7.0, // → 5
    ];
    #[rustfmt::skip]
    let k: Vec<i32> = vec![
        3, 9, 9, -1, 9,     // → 1
        -5, -5, -7, -5, -6, // → 0
    ];
    let out = run(&graphs::argmax(), &[input(x, &[3, 6]), input(k, &[2, 5])]);
    assert_eq!(read::<i32>(&out[0], &[3]), [1, 0, 5], "argmax over dim 1");
    // Columns: [1,2,-inf] [5,2,-3] [2,2,-2] (tie → 0) [5,2,-1] [-1,2,-0.5] [0,2,7].
    assert_eq!(
        read::<i64>(&out[1], &[6]),
        [1, 0, 0, 0, 1, 2],
        "argmax over dim 0 (s64)"
    );
    assert_eq!(read::<i32>(&out[2], &[2]), [1, 0], "argmax of s32");
}

#[test]
fn stable_sort_and_logic_ops() {
    #[rustfmt::skip]
    let x: Vec<f32> = vec![
        1.0, 3.0, 2.0, 3.0, -1.0,
        0.5, 0.5, 4.0, -2.0, 0.5,
    ];
    let out = run(
        &graphs::sort_logic(),
        &[
            input(x, &[2, 5]),
            input(vec![true, true, false, false], &[4]),
            input(vec![true, false, true, false], &[4]),
            input(vec![0b1100i32, -1, 7], &[3]),
            input(vec![0b1010i32, 5, 0], &[3]),
        ],
    );
    assert_eq!(
        read::<f32>(&out[0], &[2, 5]),
        [3.0, 3.0, 2.0, 1.0, -1.0, 4.0, 0.5, 0.5, 0.5, -2.0]
    );
    // Ties keep their order: the 3.0s at 1 and 3, the 0.5s at 0, 1 and 4.
    assert_eq!(
        read::<i32>(&out[1], &[2, 5]),
        [1, 3, 2, 0, 4, 2, 0, 1, 4, 3]
    );
    assert_eq!(
        read::<f32>(&out[2], &[2, 5]),
        [0.5, 0.5, 2.0, -2.0, -1.0, 1.0, 3.0, 4.0, 3.0, 0.5]
    );
    assert_eq!(read::<bool>(&out[3], &[4]), [true, false, false, false]);
    assert_eq!(read::<bool>(&out[4], &[4]), [true, true, true, false]);
    assert_eq!(read::<i32>(&out[5], &[3]), [0b1000, 5, 0]);
    assert_eq!(read::<i32>(&out[6], &[3]), [0b1110, -1, 7]);
}

#[test]
fn tuple_and_get_tuple_element() {
    let (x, y) = (vec![1.5f32, -2.0], vec![3.0f32, 4.0, -5.25]);
    let out = run(&graphs::tuple(), &[input(x, &[2]), input(y.clone(), &[3])]);
    assert_eq!(read::<f32>(&out[0], &[3]), y);
    assert_eq!(read::<f32>(&out[1], &[2]), [3.0, -4.0]);
}

/// bf16 versions of add, mul, exp, convert, dot, reduce, transpose and gather.
///
/// Tolerances, with u = 2^-8 (half a bf16 ulp, relative):
/// - add, mul: the exact result of two bf16 values fits in f32, so one rounding to bf16:
///   within u·|exact| (correct rounding).
/// - exp: evaluated in f32 (a few f32 ulps) then rounded to bf16: one bf16 ulp, 2u·|exact|.
/// - dot with a bf16 result, K = 8: whatever the accumulation precision, the error of a
///   K-term sum with rounding after each step is at most K·u·Σ|a_k·b_k| (the classic γ_K
///   bound); with f32 accumulation it is u·|exact|, which this includes.
/// - dot with an f32 result, and f32 → bf16 / bf16 → f32 conversions: exact (dyadic inputs;
///   RNE conversion is unique).
/// - sum of 16 bf16 values: same γ bound, 16·u·Σ|x|. This one is needed: XLA CPU accumulates
///   a bf16 reduce in bf16 (measured: 3.53125 for an exact 3.488, 0.24 of the bound), unlike
///   the dot, which came out correctly rounded. max, transpose, gather: exact.
#[test]
fn bf16_ops() {
    let mut rng = Lcg::new(15);
    let a = rng.dyadic_bf16(48);
    let b = rng.dyadic_bf16(80);
    let x = to_bf16(&rng.f32s(12, -4.0, 4.0));
    let y = to_bf16(&rng.f32s(12, -4.0, 4.0));
    let f = rng.f32s(12, -100.0, 100.0);
    let r = to_bf16(&rng.f32s(64, -4.0, 4.0));
    let table = to_bf16(&rng.f32s(28, -4.0, 4.0));
    let ids = rng.ints(6, 0, 6);
    let out = run(
        &graphs::bf16_ops(),
        &[
            input(a.clone(), &[2, 3, 8]),
            input(b.clone(), &[2, 8, 5]),
            input(x.clone(), &[12]),
            input(y.clone(), &[12]),
            input(f.clone(), &[12]),
            input(r.clone(), &[4, 16]),
            input(table.clone(), &[7, 4]),
            input(ids.clone(), &[2, 3]),
        ],
    );
    let u = 1.0 / 256.0;
    let (an, bn) = (Nd::of(&[2, 3, 8], &a), Nd::of(&[2, 8, 5], &b));
    let exact = dot_ref(&an, &bn, &[0], &[0], &[2], &[1]);
    let abs_sum = dot_ref(
        &Nd::new(&[2, 3, 8], an.data.iter().map(|v| v.abs()).collect()),
        &Nd::new(&[2, 8, 5], bn.data.iter().map(|v| v.abs()).collect()),
        &[0],
        &[0],
        &[2],
        &[1],
    );
    let tol: Vec<f64> = abs_sum.data.iter().map(|s| 8.0 * u * s).collect();
    assert_within(
        "bf16 dot",
        &read_f64::<bf16>(&out[0], &[2, 3, 5]),
        &exact.data,
        &tol,
    );
    assert_exact(
        "bf16 dot → f32",
        &read_f64::<f32>(&out[1], &[2, 3, 5]),
        &exact.data,
    );
    let xy = |g: fn(f64, f64) -> f64| -> Vec<f64> {
        x.iter()
            .zip(&y)
            .map(|(&p, &q)| g(p.into(), q.into()))
            .collect()
    };
    assert_close(
        "bf16 add",
        &read_f64::<bf16>(&out[2], &[12]),
        &xy(|p, q| p + q),
        0.0,
        u,
    );
    assert_close(
        "bf16 multiply",
        &read_f64::<bf16>(&out[3], &[12]),
        &xy(|p, q| p * q),
        0.0,
        u,
    );
    let exp: Vec<f64> = x.iter().map(|&v| f64::from(v).exp()).collect();
    assert_close(
        "bf16 exp",
        &read_f64::<bf16>(&out[4], &[12]),
        &exp,
        0.0,
        2.0 * u,
    );
    assert_eq!(read::<bf16>(&out[5], &[12]), to_bf16(&f), "f32 → bf16");
    let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    assert_eq!(read::<f32>(&out[6], &[12]), xf, "bf16 → f32");
    let rn = Nd::of(&[4, 16], &r);
    let sum = reduce_ref(&rn, &[1], 0.0, |p, q| p + q);
    let abs = reduce_ref(&rn, &[1], 0.0, |p, q| p + q.abs());
    let tol: Vec<f64> = abs.data.iter().map(|s| 16.0 * u * s).collect();
    assert_within(
        "bf16 sum",
        &read_f64::<bf16>(&out[7], &[4]),
        &sum.data,
        &tol,
    );
    assert_exact(
        "bf16 max",
        &read_f64::<bf16>(&out[8], &[16]),
        &reduce_ref(&rn, &[0], f64::NEG_INFINITY, f64::max).data,
    );
    assert_exact(
        "bf16 transpose",
        &read_f64::<bf16>(&out[9], &[8, 2, 3]),
        &transpose_ref(&an, &[2, 0, 1]).data,
    );
    assert_exact(
        "bf16 take",
        &read_f64::<bf16>(&out[10], &[2, 3, 4]),
        &take_ref(&Nd::of(&[7, 4], &table), &ids, &[2, 3]).data,
    );
}

// ---- Custom call (lowered, not executed) ----

/// There is no `AwsNeuronRmsNorm` kernel on CPU, so the custom call is checked on the lowered
/// instruction, and the plugin's refusal to compile it is pinned down.
#[test]
fn custom_call_lowered_fields() {
    let m = lower_default(&graphs::custom_call());
    let entry = m.computations.last().unwrap();
    let cc = entry
        .instructions
        .iter()
        .find(|i| i.opcode == "custom-call")
        .expect("a custom-call instruction");
    assert_eq!(cc.custom_call_target, "AwsNeuronRmsNorm");
    assert_eq!(cc.backend_config, CUSTOM_CALL_CONFIG);
    assert!(!cc.custom_call_has_side_effect);
    // Not unspecified (as torch-neuronx leaves it): XLA's proto reader rejects that.
    assert_eq!(
        cc.custom_call_api_version,
        xla_proto::CustomCallApiVersion::ApiVersionOriginal as i32
    );
    let shape = cc.shape.as_ref().unwrap();
    assert_eq!(shape.element_type, xla_proto::PrimitiveType::F32 as i32);
    assert_eq!(shape.dimensions, [2, 3]);
    let param = |n: i64| {
        entry
            .instructions
            .iter()
            .find(|i| i.opcode == "parameter" && i.parameter_number == n)
            .unwrap()
            .id
    };
    assert_eq!(cc.operand_ids, [param(0), param(1)]);
    assert!(cc.called_computation_ids.is_empty());
    let root = entry
        .instructions
        .iter()
        .find(|i| i.id == entry.root_id)
        .unwrap();
    assert_eq!(root.operand_ids, [cc.id]);

    match client(1).compile(&m, &CompileOptions::default()) {
        Err(Error::Pjrt { code, message }) => {
            assert_eq!(code, ErrorCode::NotFound, "{message}");
            assert!(
                message.contains("custom call to AwsNeuronRmsNorm"),
                "{message}"
            );
        }
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(_) => panic!("the CPU plugin compiled an unknown custom call"),
    }
}

// ---- Collectives ----

/// Each device d gets its own dyadic `x_d` (so sums are exact); every output is compared with
/// the group semantics computed here.
fn check_collectives(n: usize) {
    let mut rng = Lcg::new(100 + n as u64);
    let xs: Vec<Nd> = (0..n).map(|_| Nd::of(&[4, 2], &rng.dyadic(8))).collect();
    let per_device: Vec<Vec<Input>> = xs
        .iter()
        .map(|x| {
            let data: Vec<f32> = x.data.iter().map(|&v| v as f32).collect();
            vec![input(data, &[4, 2])]
        })
        .collect();
    let out = run_replicated(&graphs::collectives(n as i64), &per_device);
    let two = graphs::two_groups(n as i64).0;
    let group_of = |r: usize| -> Vec<usize> {
        two.iter()
            .find(|g| g.contains(&(r as i64)))
            .unwrap()
            .iter()
            .map(|&m| m as usize)
            .collect()
    };
    let combine = |members: &[usize], f: fn(f64, f64) -> f64| -> Nd {
        let mut acc = xs[members[0]].clone();
        for &m in &members[1..] {
            for (a, b) in acc.data.iter_mut().zip(&xs[m].data) {
                *a = f(*a, *b);
            }
        }
        acc
    };
    let all: Vec<usize> = (0..n).collect();
    let add = |a: f64, b: f64| a + b;
    for (r, outs) in out.iter().enumerate() {
        let what = |op: &str| format!("{op} on {n} devices, replica {r}");
        let group = group_of(r);
        let pos = group.iter().position(|&m| m == r).unwrap();
        assert_exact(
            &what("all-reduce sum, all"),
            &read_f64::<f32>(&outs[0], &[4, 2]),
            &combine(&all, add).data,
        );
        assert_exact(
            &what("all-reduce sum, two groups"),
            &read_f64::<f32>(&outs[1], &[4, 2]),
            &combine(&group, add).data,
        );
        assert_exact(
            &what("all-reduce max, all"),
            &read_f64::<f32>(&outs[2], &[4, 2]),
            &combine(&all, f64::max).data,
        );
        // Group {n-1, ..., 0}: blocks in group order, i.e. replica n-1's first.
        let gathered: Vec<f64> = (0..n).rev().flat_map(|m| xs[m].data.clone()).collect();
        assert_exact(
            &what("all-gather dim 0, reversed group"),
            &read_f64::<f32>(&outs[3], &[4 * n as i64, 2]),
            &gathered,
        );
        let g = group.len();
        let gathered = Nd::from_fn(&[4, 2 * g], |i| xs[group[i[1] / 2]].at(&[i[0], i[1] % 2]));
        assert_exact(
            &what("all-gather dim 1, two groups"),
            &read_f64::<f32>(&outs[4], &[4, 2 * g as i64]),
            &gathered.data,
        );
        let rows = 4 / n;
        let total = combine(&all, add);
        let block = Nd::from_fn(&[rows, 2], |i| total.at(&[r * rows + i[0], i[1]]));
        assert_exact(
            &what("reduce-scatter dim 0, all"),
            &read_f64::<f32>(&outs[5], &[rows as i64, 2]),
            &block.data,
        );
        let cols = 2 / g;
        let sum = combine(&group, add);
        let block = Nd::from_fn(&[4, cols], |i| sum.at(&[i[0], pos * cols + i[1]]));
        assert_exact(
            &what("reduce-scatter dim 1, two groups"),
            &read_f64::<f32>(&outs[6], &[4, cols as i64]),
            &block.data,
        );
    }
}

#[test]
fn collectives_on_2_devices() {
    check_collectives(2);
}

#[test]
fn collectives_on_4_devices() {
    check_collectives(4);
}

// ---- Aliasing and donation ----

#[test]
fn aliased_cache_updated_in_place() {
    let exe = compile(&graphs::alias());
    assert_eq!(exe.aliased_parameters(), [0]);
    let c = client(1);
    let cache: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let row = |v: f32| {
        c.buffer_from_slice(&[v, v + 1.0, v + 2.0], &[1, 3], 0)
            .unwrap()
    };
    let pos = |p: i32| c.buffer_from_scalar(p, 0).unwrap();

    // Borrowed: PJRT copies the aliased input, which keeps its old value.
    let kept = c.buffer_from_slice(&cache, &[4, 3], 0).unwrap();
    let (r, p) = (row(-1.0), pos(3));
    let out = exe
        .execute_one(vec![Arg::Borrow(&kept), Arg::Borrow(&r), Arg::Borrow(&p)])
        .unwrap();
    let mut want = cache.clone();
    want[9..12].copy_from_slice(&[-1.0, 0.0, 1.0]);
    assert_eq!(read::<f32>(&out[0], &[4, 3]), want);
    assert_eq!(
        kept.to_vec::<f32>().unwrap(),
        cache,
        "borrowed input intact"
    );

    // Donated: the output reuses the input buffer; feed it back as the next step's cache.
    let donated = c.buffer_from_slice(&cache, &[4, 3], 0).unwrap();
    let (r, p) = (row(100.0), pos(1));
    let out = exe
        .execute_one(vec![Arg::Donate(donated), Arg::Borrow(&r), Arg::Borrow(&p)])
        .unwrap();
    let step1 = out.into_iter().next().unwrap();
    let (r, p) = (row(200.0), pos(2));
    let out = exe
        .execute_one(vec![Arg::Donate(step1), Arg::Borrow(&r), Arg::Borrow(&p)])
        .unwrap();
    let mut want = cache.clone();
    want[3..6].copy_from_slice(&[100.0, 101.0, 102.0]);
    want[6..9].copy_from_slice(&[200.0, 201.0, 202.0]);
    assert_eq!(read::<f32>(&out[0], &[4, 3]), want);
}

// ---- Errors ----

/// A module whose `add` declares f32[2,4] instead of the inferred f32[2,3]: XLA's verifier
/// message must come through `Error::Pjrt` verbatim (hlo.md §2 row 12).
#[test]
fn invalid_module_error_surfaces_intact() {
    let mut m = lower_default(&graphs::small_add());
    let entry = m.computations.last_mut().unwrap();
    let add = entry
        .instructions
        .iter_mut()
        .find(|i| i.opcode == "add")
        .unwrap();
    add.shape.as_mut().unwrap().dimensions = vec![2, 4];
    let name = add.name.clone();
    match client(1).compile(&m, &CompileOptions::default()) {
        Err(Error::Pjrt { code, message }) => {
            assert!(
                message.contains(
                    "Expected instruction to have shape equal to f32[2,3], actual shape is f32[2,4]"
                ),
                "{code}: {message}"
            );
            assert!(message.contains(&name), "names the instruction: {message}");
            assert_eq!(code, ErrorCode::Internal, "{message}");
        }
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(_) => panic!("XLA accepted a wrong declared shape"),
    }
}
