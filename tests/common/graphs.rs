//! The conformance graphs, recorded with the DSL. `tests/conformance.rs` executes each one
//! against a Rust reference; `tests/printer_vs_xla.rs` compares our HLO text of each with XLA's
//! own dump. Parameter order and shapes are part of each function's contract (documented on
//! it), since the conformance tests build matching inputs.

use phi3_neuron::dsl::*;

/// Groups of `n / 2` consecutive replicas: `{{0},{1}}` for 2, `{{0,1},{2,3}}` for 4.
pub fn two_groups(n: i64) -> ReplicaGroups {
    let h = n / 2;
    ReplicaGroups(vec![(0..h).collect(), (h..n).collect()])
}

/// All `n` replicas in reverse order, `{{n-1, ..., 0}}`: all-gather must concatenate in group
/// order, not in replica-id order.
pub fn reversed_group(n: i64) -> ReplicaGroups {
    ReplicaGroups(vec![(0..n).rev().collect()])
}

/// Large constants (more than 10 elements) are printed by XLA as `{...}`.
pub const LARGE_CONSTANT: [f64; 12] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0,
];
/// Values whose text forms are worth checking: short and long decimals, exponents, -0.
pub const F32_CONSTANT: [f64; 6] = [0.1, -1.5, 1e-5, 3.0, 1e10, -0.0];
pub const F32_SPECIALS: [f64; 4] = [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 16777217.0];
pub const BF16_CONSTANT: [f64; 4] = [1.5, -0.3, 256.0, 1e-3];
pub const F16_CONSTANT: [f64; 3] = [0.1, -65504.0, 3.0];
pub const F64_CONSTANT: [f64; 3] = [0.1, 1.0 / 3.0, -2.5e-300];
pub const S32_CONSTANT: [f64; 3] = [-7.0, 0.0, 2147483647.0];
pub const S64_CONSTANT: [i64; 2] = [i64::MIN, 1 << 40];
/// Rank 3 and rank 4 (whose text carries `/*iN=V*/` markers), and rows of one element.
pub const CUBE_CONSTANT: [f64; 8] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];

/// Params: `x f32[2,3]`. Outputs, in order:
///  0 `x`; 1 f32[] `2.5`; 2 f32[2,3] `F32_CONSTANT`; 3 f32[4] `F32_SPECIALS`;
///  4 s32[3] `S32_CONSTANT`; 5 s64[2] `S64_CONSTANT`; 6 bf16[4] `BF16_CONSTANT`;
///  7 f16[3] `F16_CONSTANT`; 8 f64[3] `F64_CONSTANT`; 9 pred[2] `{1,0}`; 10 pred[] `true`;
/// 11 f32[3,4] `LARGE_CONSTANT`; 12 f32[2,2,2] and 13 f32[2,1,2,2] `CUBE_CONSTANT`;
/// 14 f32[2,1] `{5,6}`; 15 s32 iota [2,3] dim 1; 16 f32 iota [3,2] dim 0; 17 bf16 iota [4].
/// The module carries a frontend attribute.
pub fn sources() -> Graph {
    let b = GraphBuilder::new("conf_sources");
    b.set_attribute("phi3.suite", "conformance");
    let x = b.parameter("x", DType::F32, &[2, 3]).unwrap();
    let outs = [
        x,
        b.scalar(DType::F32, 2.5).unwrap(),
        b.constant_f64(DType::F32, &[2, 3], &F32_CONSTANT).unwrap(),
        b.constant_f64(DType::F32, &[4], &F32_SPECIALS).unwrap(),
        b.constant_f64(DType::S32, &[3], &S32_CONSTANT).unwrap(),
        b.constant(Literal::from_i64(DType::S64, &[2], &S64_CONSTANT))
            .unwrap(),
        b.constant_f64(DType::BF16, &[4], &BF16_CONSTANT).unwrap(),
        b.constant_f64(DType::F16, &[3], &F16_CONSTANT).unwrap(),
        b.constant_f64(DType::F64, &[3], &F64_CONSTANT).unwrap(),
        b.constant(Literal::from_f64(DType::Pred, &[2], &[1.0, 0.0]))
            .unwrap(),
        b.constant(Literal::scalar(DType::Pred, 1.0)).unwrap(),
        b.constant_f64(DType::F32, &[3, 4], &LARGE_CONSTANT)
            .unwrap(),
        b.constant_f64(DType::F32, &[2, 2, 2], &CUBE_CONSTANT)
            .unwrap(),
        b.constant_f64(DType::F32, &[2, 1, 2, 2], &CUBE_CONSTANT)
            .unwrap(),
        b.constant_f64(DType::F32, &[2, 1], &[5.0, 6.0]).unwrap(),
        b.iota(DType::S32, &[2, 3], 1).unwrap(),
        b.iota(DType::F32, &[3, 2], 0).unwrap(),
        b.iota(DType::BF16, &[4], 0).unwrap(),
    ];
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Params: `a f32[6]`, `i s32[6]`, `h bf16[6]`. Outputs: a→s32, a→bf16, i→f32, h→f32, a→pred,
/// (a→pred)→s32.
pub fn convert() -> Graph {
    let b = GraphBuilder::new("conf_convert");
    let a = b.parameter("a", DType::F32, &[6]).unwrap();
    let i = b.parameter("i", DType::S32, &[6]).unwrap();
    let h = b.parameter("h", DType::BF16, &[6]).unwrap();
    let p = a.convert(DType::Pred).unwrap();
    let outs = [
        a.convert(DType::S32).unwrap(),
        a.convert(DType::BF16).unwrap(),
        i.convert(DType::F32).unwrap(),
        h.convert(DType::F32).unwrap(),
        p.clone(),
        p.convert(DType::S32).unwrap(),
    ];
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Params: `x f32[2,3,4]`, `v f32[3]`, `c f32[3,1]`, `w f32[4]`. Outputs: x reshaped [4,6];
/// x transposed [2,0,1]; v broadcast_in_dim to [2,3,4] along dim 1; c broadcast_to [2,3,4];
/// x + w (numpy broadcasting).
pub fn movement() -> Graph {
    let b = GraphBuilder::new("conf_movement");
    let x = b.parameter("x", DType::F32, &[2, 3, 4]).unwrap();
    let v = b.parameter("v", DType::F32, &[3]).unwrap();
    let c = b.parameter("c", DType::F32, &[3, 1]).unwrap();
    let w = b.parameter("w", DType::F32, &[4]).unwrap();
    let outs = [
        x.reshape(&[4, 6]).unwrap(),
        x.transpose(&[2, 0, 1]).unwrap(),
        v.broadcast_in_dim(&[2, 3, 4], &[1]).unwrap(),
        c.broadcast_to(&[2, 3, 4]).unwrap(),
        x.add(&w).unwrap(),
    ];
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Params: `x f32[6,5]`, `y f32[6,2]`. Outputs: x[1:6:2, 0:5:3]; x[:, 1:4]; concat(x, y, x)
/// on dim 1; concat(x[0:2], x[4:6]) on dim 0.
pub fn slice_concat() -> Graph {
    let b = GraphBuilder::new("conf_slice_concat");
    let x = b.parameter("x", DType::F32, &[6, 5]).unwrap();
    let y = b.parameter("y", DType::F32, &[6, 2]).unwrap();
    let top = x.slice_dim(0, 0, 2).unwrap();
    let bottom = x.slice_dim(0, 4, 6).unwrap();
    let outs = [
        x.slice(&[1, 0], &[6, 5], &[2, 3]).unwrap(),
        x.slice_dim(1, 1, 4).unwrap(),
        b.concatenate(&[&x, &y, &x], 1).unwrap(),
        Tensor::concat(&[&top, &bottom], 0).unwrap(),
    ];
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Pad configs `(low, high, interior)` of [`pad`], applied to `x f32[2,3]`.
pub const PADS: [([i64; 2], [i64; 2], [i64; 2]); 3] = [
    ([1, 0], [0, 2], [0, 0]),
    ([0, 1], [1, 0], [1, 2]),
    ([-1, 1], [0, -1], [0, 1]),
];

/// Params: `x f32[2,3]`, `value f32[]`. Outputs: x padded with each of [`PADS`].
pub fn pad() -> Graph {
    let b = GraphBuilder::new("conf_pad");
    let x = b.parameter("x", DType::F32, &[2, 3]).unwrap();
    let v = b.parameter("value", DType::F32, &[]).unwrap();
    let outs: Vec<Tensor> = PADS
        .iter()
        .map(|(lo, hi, int)| x.pad(&v, lo, hi, int).unwrap())
        .collect();
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Params: `x f32[5,6]`, `u f32[2,3]`, `i s32[]`, `j s32[]`. Outputs: dynamic-slice of x at
/// (i, j) sized [2,3]; x with u written at (i, j); x with u written at the constant (1, 2).
pub fn dynamic() -> Graph {
    let b = GraphBuilder::new("conf_dynamic");
    let x = b.parameter("x", DType::F32, &[5, 6]).unwrap();
    let u = b.parameter("u", DType::F32, &[2, 3]).unwrap();
    let i = b.parameter("i", DType::S32, &[]).unwrap();
    let j = b.parameter("j", DType::S32, &[]).unwrap();
    let one = b.scalar(DType::S32, 1.0).unwrap();
    let two = b.scalar(DType::S32, 2.0).unwrap();
    let outs = [
        x.dynamic_slice(&[&i, &j], &[2, 3]).unwrap(),
        x.dynamic_update_slice(&u, &[&i, &j]).unwrap(),
        x.dynamic_update_slice(&u, &[&one, &two]).unwrap(),
    ];
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Params: `table f32[7,4]`, `ids s32[2,3]`, `x f32[3,5]`, `cols s32[4]`. Outputs:
/// `table.take(ids)` [2,3,4]; columns `cols` of x, [3,4] (a gather along dim 1).
pub fn gather() -> Graph {
    let b = GraphBuilder::new("conf_gather");
    let table = b.parameter("table", DType::F32, &[7, 4]).unwrap();
    let ids = b.parameter("ids", DType::S32, &[2, 3]).unwrap();
    let x = b.parameter("x", DType::F32, &[3, 5]).unwrap();
    let cols = b.parameter("cols", DType::S32, &[4]).unwrap();
    let outs = [
        table.take(&ids).unwrap(),
        x.gather(
            &cols,
            GatherDims {
                offset_dims: vec![0],
                collapsed_slice_dims: vec![1],
                start_index_map: vec![1],
                index_vector_dim: 1,
            },
            &[3, 1],
        )
        .unwrap(),
    ];
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// KV-cache style row writes along axis 2 of a `[B,H,S,D]` cache.
pub fn cache_scatter_dims() -> ScatterDims {
    ScatterDims {
        update_window_dims: vec![0, 1, 3],
        inserted_window_dims: vec![2],
        scatter_dims_to_operand_dims: vec![2],
        index_vector_dim: 1,
    }
}

/// Params: `cache f32[2,2,5,3]`, `pos s32[2]`, `rows f32[2,2,2,3]`, `pos_add s32[3]`,
/// `rows_add f32[2,2,3,3]`. Outputs: cache with rows `pos` overwritten (Assign); cache with
/// `rows_add` added at `pos_add` (Add; repeated positions accumulate).
pub fn scatter() -> Graph {
    let b = GraphBuilder::new("conf_scatter");
    let cache = b.parameter("cache", DType::F32, &[2, 2, 5, 3]).unwrap();
    let pos = b.parameter("pos", DType::S32, &[2]).unwrap();
    let rows = b.parameter("rows", DType::F32, &[2, 2, 2, 3]).unwrap();
    let pos_add = b.parameter("pos_add", DType::S32, &[3]).unwrap();
    let rows_add = b.parameter("rows_add", DType::F32, &[2, 2, 3, 3]).unwrap();
    let outs = [
        cache
            .scatter(&pos, &rows, cache_scatter_dims(), ScatterCombiner::Assign)
            .unwrap(),
        cache
            .scatter(
                &pos_add,
                &rows_add,
                cache_scatter_dims(),
                ScatterCombiner::Add,
            )
            .unwrap(),
    ];
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// The batch dot of [`dot`] whose batch dim is not leading.
pub fn middle_batch_dims() -> DotDims {
    DotDims {
        lhs_batch: vec![1],
        rhs_batch: vec![1],
        lhs_contracting: vec![2],
        rhs_contracting: vec![0],
    }
}

pub fn leading_batch_dims() -> DotDims {
    DotDims {
        lhs_batch: vec![0],
        rhs_batch: vec![0],
        lhs_contracting: vec![2],
        rhs_contracting: vec![1],
    }
}

/// Params: `a f32[2,3,4]`, `b f32[2,4,5]`, `c f32[3,2,4]`, `d f32[4,2,5]`, `e f32[3,4]`,
/// `f f32[4,2]`. Outputs: a·b with batch 0/0 → [2,3,5]; c·d with batch 1/1 and contracting
/// 2/0 → [2,3,5]; e·f → [3,2].
pub fn dot() -> Graph {
    let g = GraphBuilder::new("conf_dot");
    let _model = g.scope("model");
    let _layer = g.scope("layers.0");
    let a = g.parameter("a", DType::F32, &[2, 3, 4]).unwrap();
    let b = g.parameter("b", DType::F32, &[2, 4, 5]).unwrap();
    let c = g.parameter("c", DType::F32, &[3, 2, 4]).unwrap();
    let d = g.parameter("d", DType::F32, &[4, 2, 5]).unwrap();
    let e = g.parameter("e", DType::F32, &[3, 4]).unwrap();
    let f = g.parameter("f", DType::F32, &[4, 2]).unwrap();
    let outs = [
        a.dot_general(&b, leading_batch_dims()).unwrap(),
        c.dot_general(&d, middle_batch_dims()).unwrap(),
        e.matmul(&f).unwrap(),
    ];
    g.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Params: `p f32[12]` (positive), `x f32[12]`. Outputs, in order: negate(x), abs(x), exp(x),
/// log(p), sqrt(p), rsqrt(p), tanh(x), logistic(x), sin(x), cos(x).
pub fn unary() -> Graph {
    let b = GraphBuilder::new("conf_unary");
    let p = b.parameter("p", DType::F32, &[12]).unwrap();
    let x = b.parameter("x", DType::F32, &[12]).unwrap();
    let outs = [
        x.neg().unwrap(),
        x.abs().unwrap(),
        x.exp().unwrap(),
        p.log().unwrap(),
        p.sqrt().unwrap(),
        p.rsqrt().unwrap(),
        x.tanh().unwrap(),
        x.logistic().unwrap(),
        x.sin().unwrap(),
        x.cos().unwrap(),
    ];
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Params: `a f32[12]`, `b f32[12]` (nonzero), `p f32[12]` (positive), `q f32[12]`. Outputs:
/// a+b, a-b, a*b, a/b, max(a,b), min(a,b), p^q.
pub fn binary() -> Graph {
    let g = GraphBuilder::new("conf_binary");
    let a = g.parameter("a", DType::F32, &[12]).unwrap();
    let b = g.parameter("b", DType::F32, &[12]).unwrap();
    let p = g.parameter("p", DType::F32, &[12]).unwrap();
    let q = g.parameter("q", DType::F32, &[12]).unwrap();
    let outs = [
        a.add(&b).unwrap(),
        a.sub(&b).unwrap(),
        a.mul(&b).unwrap(),
        a.div(&b).unwrap(),
        a.max(&b).unwrap(),
        a.min(&b).unwrap(),
        p.pow(&q).unwrap(),
    ];
    g.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

pub const DIRECTIONS: [Direction; 6] = [
    Direction::Eq,
    Direction::Ne,
    Direction::Lt,
    Direction::Le,
    Direction::Gt,
    Direction::Ge,
];

/// Params: `a f32[8]`, `b f32[8]`, `i s32[8]`, `j s32[8]`. Outputs: for each of
/// [`DIRECTIONS`], `compare(a, b)` then `select(compare(a, b), a, b)`; then `i >= j` (signed).
pub fn compare_select() -> Graph {
    let g = GraphBuilder::new("conf_compare_select");
    let a = g.parameter("a", DType::F32, &[8]).unwrap();
    let b = g.parameter("b", DType::F32, &[8]).unwrap();
    let i = g.parameter("i", DType::S32, &[8]).unwrap();
    let j = g.parameter("j", DType::S32, &[8]).unwrap();
    let mut outs = Vec::new();
    for d in DIRECTIONS {
        let p = a.compare(&b, d).unwrap();
        let s = p.select(&a, &b).unwrap();
        outs.extend([p, s]);
    }
    outs.push(i.ge(&j).unwrap());
    g.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Params: `x f32[8]`, `lo f32[]`, `hi f32[]`, `lo_a f32[8]`, `hi_a f32[8]`. Outputs:
/// clamp(x, lo, hi); clamp(x, lo_a, hi_a).
pub fn clamp() -> Graph {
    let b = GraphBuilder::new("conf_clamp");
    let x = b.parameter("x", DType::F32, &[8]).unwrap();
    let lo = b.parameter("lo", DType::F32, &[]).unwrap();
    let hi = b.parameter("hi", DType::F32, &[]).unwrap();
    let lo_a = b.parameter("lo_a", DType::F32, &[8]).unwrap();
    let hi_a = b.parameter("hi_a", DType::F32, &[8]).unwrap();
    let outs = [x.clamp(&lo, &hi).unwrap(), x.clamp(&lo_a, &hi_a).unwrap()];
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Params: `x f32[3,4,5]`. Outputs: max over dim 0; sum over dim 2; min over dim 1; sum of
/// everything (a scalar); sum over dims 0 and 2. The sum is recorded before the max but
/// output after it, so the order XLA prints the reducer computations in is pinned down.
pub fn reduce() -> Graph {
    let b = GraphBuilder::new("conf_reduce");
    let x = b.parameter("x", DType::F32, &[3, 4, 5]).unwrap();
    let sum = x.sum(&[2]).unwrap();
    let outs = [
        x.reduce_max(&[0]).unwrap(),
        sum,
        x.reduce_min(&[1]).unwrap(),
        x.sum(&[0, 1, 2]).unwrap(),
        x.sum(&[0, 2]).unwrap(),
    ];
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Params: `x f32[3,6]`, `k s32[2,5]`. Outputs: argmax of x along dim 1 (s32); along dim 0
/// (s64); argmax of k along dim 1 (s32).
pub fn argmax() -> Graph {
    let b = GraphBuilder::new("conf_argmax");
    let x = b.parameter("x", DType::F32, &[3, 6]).unwrap();
    let k = b.parameter("k", DType::S32, &[2, 5]).unwrap();
    let outs = [
        x.argmax(1, DType::S32).unwrap(),
        x.argmax(0, DType::S64).unwrap(),
        k.argmax(-1, DType::S32).unwrap(),
    ];
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Params: `x f32[2,5]`, `p pred[4]`, `q pred[4]`, `m s32[3]`, `n s32[3]`. Outputs: x sorted
/// descending along dim 1 with its iota (stable: ties keep the lower index first); x sorted
/// ascending along dim 0; p and q; p or q; m and n (bitwise); m or n.
pub fn sort_logic() -> Graph {
    let b = GraphBuilder::new("conf_sort_logic");
    let x = b.parameter("x", DType::F32, &[2, 5]).unwrap();
    let p = b.parameter("p", DType::Pred, &[4]).unwrap();
    let q = b.parameter("q", DType::Pred, &[4]).unwrap();
    let m = b.parameter("m", DType::S32, &[3]).unwrap();
    let n = b.parameter("n", DType::S32, &[3]).unwrap();
    let idx = b.iota(DType::S32, &[2, 5], 1).unwrap();
    let desc = x.sort_with(1, true, &[&idx]).unwrap();
    let asc = x.sort_with(0, false, &[]).unwrap();
    let outs = [
        desc[0].clone(),
        desc[1].clone(),
        asc[0].clone(),
        p.and(&q).unwrap(),
        p.or(&q).unwrap(),
        m.and(&n).unwrap(),
        m.or(&n).unwrap(),
    ];
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Params: `x f32[2]`, `y f32[3]`. Outputs: `tuple(x, y).get(1)`, `tuple(x, y).get(0) * 2`.
pub fn tuple() -> Graph {
    let b = GraphBuilder::new("conf_tuple");
    let x = b.parameter("x", DType::F32, &[2]).unwrap();
    let y = b.parameter("y", DType::F32, &[3]).unwrap();
    let t = b.tuple(&[&x, &y]).unwrap();
    let outs = [
        t.get(1).unwrap(),
        t.get(0).unwrap().mul_scalar(2.0).unwrap(),
    ];
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Params: `a bf16[2,3,8]`, `b bf16[2,8,5]`, `x bf16[12]`, `y bf16[12]`, `f f32[12]`,
/// `r bf16[4,16]`, `table bf16[7,4]`, `ids s32[2,3]`. Outputs: a·b batch dot (bf16 result);
/// the same with an f32 result; x+y; x*y; exp(x); f→bf16; x→f32; sum of r over dim 1;
/// max of r over dim 0; a transposed [2,0,1]; table.take(ids).
pub fn bf16_ops() -> Graph {
    let g = GraphBuilder::new("conf_bf16");
    let a = g.parameter("a", DType::BF16, &[2, 3, 8]).unwrap();
    let b = g.parameter("b", DType::BF16, &[2, 8, 5]).unwrap();
    let x = g.parameter("x", DType::BF16, &[12]).unwrap();
    let y = g.parameter("y", DType::BF16, &[12]).unwrap();
    let f = g.parameter("f", DType::F32, &[12]).unwrap();
    let r = g.parameter("r", DType::BF16, &[4, 16]).unwrap();
    let table = g.parameter("table", DType::BF16, &[7, 4]).unwrap();
    let ids = g.parameter("ids", DType::S32, &[2, 3]).unwrap();
    let outs = [
        a.dot_general(&b, leading_batch_dims()).unwrap(),
        a.dot_general_to(&b, leading_batch_dims(), DType::F32)
            .unwrap(),
        x.add(&y).unwrap(),
        x.mul(&y).unwrap(),
        x.exp().unwrap(),
        f.convert(DType::BF16).unwrap(),
        x.convert(DType::F32).unwrap(),
        r.sum(&[1]).unwrap(),
        r.reduce_max(&[0]).unwrap(),
        a.transpose(&[2, 0, 1]).unwrap(),
        table.take(&ids).unwrap(),
    ];
    g.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Not executable on CPU (no such kernel): only lowered. Params: `x f32[2,3]`, `w f32[3]`.
/// Output: `custom-call "AwsNeuronRmsNorm"(x, w)` declared f32[2,3], with a backend config.
pub fn custom_call() -> Graph {
    let b = GraphBuilder::new("conf_custom_call");
    let x = b.parameter("x", DType::F32, &[2, 3]).unwrap();
    let w = b.parameter("w", DType::F32, &[3]).unwrap();
    let y = b
        .custom_call(
            "AwsNeuronRmsNorm",
            &[&x, &w],
            ArrayType::new(DType::F32, vec![2, 3]),
            CUSTOM_CALL_CONFIG.to_vec(),
        )
        .unwrap();
    b.finish(&[&y]).unwrap()
}

pub const CUSTOM_CALL_CONFIG: &[u8] = b"{\"eps\":1e-05}";

/// For `n` replicas. Params: `x f32[4,2]` (one per replica). Outputs: all-reduce sum over all;
/// all-reduce sum over [`two_groups`]; all-reduce max over all; all-gather on dim 0 over
/// [`reversed_group`]; all-gather on dim 1 over two groups; reduce-scatter sum on dim 0 over
/// all; reduce-scatter sum on dim 1 over two groups.
pub fn collectives(n: i64) -> Graph {
    let b = GraphBuilder::new(format!("conf_collectives_{n}"));
    let x = b.parameter("x", DType::F32, &[4, 2]).unwrap();
    let all = ReplicaGroups::all(n);
    let two = two_groups(n);
    let outs = [
        x.all_reduce(ReduceKind::Sum, &all).unwrap(),
        x.all_reduce(ReduceKind::Sum, &two).unwrap(),
        x.all_reduce(ReduceKind::Max, &all).unwrap(),
        x.all_gather(0, &reversed_group(n)).unwrap(),
        x.all_gather(1, &two).unwrap(),
        x.reduce_scatter(ReduceKind::Sum, 0, &all).unwrap(),
        x.reduce_scatter(ReduceKind::Sum, 1, &two).unwrap(),
    ];
    b.finish(&outs.iter().collect::<Vec<_>>()).unwrap()
}

/// Params: `cache f32[4,3]` (aliased to output 0), `row f32[1,3]`, `pos s32[]`. Output: cache
/// with `row` written at row `pos`.
pub fn alias() -> Graph {
    let b = GraphBuilder::new("conf_alias");
    let cache = b.parameter("cache", DType::F32, &[4, 3]).unwrap();
    let row = b.parameter("row", DType::F32, &[1, 3]).unwrap();
    let pos = b.parameter("pos", DType::S32, &[]).unwrap();
    let zero = b.scalar(DType::S32, 0.0).unwrap();
    let out = cache.dynamic_update_slice(&row, &[&pos, &zero]).unwrap();
    b.alias_output(0, &cache).unwrap();
    b.finish(&[&out]).unwrap()
}

/// Params: `x f32[2,3]`, `y f32[2,3]`. Output: x + y. The module the invalid-module test
/// corrupts.
pub fn small_add() -> Graph {
    let b = GraphBuilder::new("conf_small_add");
    let x = b.parameter("x", DType::F32, &[2, 3]).unwrap();
    let y = b.parameter("y", DType::F32, &[2, 3]).unwrap();
    let s = x.add(&y).unwrap();
    b.finish(&[&s]).unwrap()
}

/// Every conformance graph with the replica count it is compiled for.
pub fn all() -> Vec<(Graph, i64)> {
    vec![
        (sources(), 1),
        (convert(), 1),
        (movement(), 1),
        (slice_concat(), 1),
        (pad(), 1),
        (dynamic(), 1),
        (gather(), 1),
        (scatter(), 1),
        (dot(), 1),
        (unary(), 1),
        (binary(), 1),
        (compare_select(), 1),
        (clamp(), 1),
        (reduce(), 1),
        (argmax(), 1),
        (sort_logic(), 1),
        (tuple(), 1),
        (bf16_ops(), 1),
        (custom_call(), 1),
        (collectives(2), 2),
        (collectives(4), 4),
        (alias(), 1),
        (small_add(), 1),
    ]
}
