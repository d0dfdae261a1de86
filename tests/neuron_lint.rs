//! The Neuron compatibility lint: the default graph set has no error (only allow-listed
//! forms), each knob's findings have the expected code and severity, and every rule fires on
//! a small graph that breaks it (built with the DSL, or a lowered module edited by hand where
//! the DSL cannot express the form).

use phi3_neuron::dsl::*;
use phi3_neuron::hlo::{lower, LowerOptions};
use phi3_neuron::models::decoder::{
    CacheWrite, GraphOptions, GraphSpec, NormImpl, SamplerKernels, Sampling,
};
use phi3_neuron::models::phi3::Phi3Config;
use phi3_neuron::models::DecoderModel;
use phi3_neuron::neuron::lint::{lint, rule, Finding, Severity, RULES};
use xla_proto::{
    CollectiveDeviceListProto, HloComputationProto, HloInstructionProto, HloModuleProto,
    IotaReplicaGroupListProto, PrimitiveType,
};

fn findings(spec: &GraphSpec, tp: i64) -> Vec<Finding> {
    let cfg = Phi3Config::embedded("phi-3-mini-4k")
        .unwrap()
        .with_layers(2);
    let plan = cfg.plan(tp).unwrap();
    let g = cfg.record(&plan, spec).unwrap();
    lint(&lower(&g.graph, &LowerOptions::default()).unwrap())
}

fn flagged(f: &[Finding]) -> Vec<String> {
    f.iter()
        .filter(|f| f.is_flagged())
        .map(|f| format!("{} {} {}: {}", f.code, f.opcode, f.instruction, f.message))
        .collect()
}

fn codes(f: &[Finding], severity: Severity) -> Vec<&'static str> {
    let mut c: Vec<&'static str> = f
        .iter()
        .filter(|f| f.severity == severity)
        .map(|f| f.code)
        .collect();
    c.sort();
    c.dedup();
    c
}

fn module(g: &Graph) -> HloModuleProto {
    lower(g, &LowerOptions::default()).unwrap()
}

fn entry(m: &mut HloModuleProto) -> &mut HloComputationProto {
    let id = m.entry_computation_id;
    m.computations.iter_mut().find(|c| c.id == id).unwrap()
}

/// The first entry instruction with this opcode.
fn instr<'a>(m: &'a mut HloModuleProto, opcode: &str) -> &'a mut HloInstructionProto {
    entry(m)
        .instructions
        .iter_mut()
        .find(|i| i.opcode == opcode)
        .unwrap_or_else(|| panic!("no `{opcode}`"))
}

/// The findings with `code`; asserts the rule's severity on each.
fn with_code<'a>(f: &'a [Finding], code: &str) -> Vec<&'a Finding> {
    let expected = rule(code)
        .unwrap_or_else(|| panic!("{code} is not a rule"))
        .severity;
    let hits: Vec<&Finding> = f.iter().filter(|f| f.code == code).collect();
    for h in &hits {
        assert_eq!(h.severity, expected, "{h:?}");
    }
    hits
}

fn assert_code(f: &[Finding], code: &str) {
    assert!(!with_code(f, code).is_empty(), "no {code} in {f:#?}");
}

// ---------------------------------------------------------------------------------------------
// Graph sets

#[test]
fn default_graphs_have_no_errors_or_warnings() {
    for tp in [1, 2] {
        let cte = findings(&GraphSpec::context_encoding(1, 128, 4096, DType::BF16), tp);
        assert!(flagged(&cte).is_empty(), "{:#?}", flagged(&cte));
        assert!(codes(&cte, Severity::Warning).is_empty(), "{cte:#?}");
        let tkg = findings(&GraphSpec::token_generation(1, 4096, DType::BF16), tp);
        assert!(flagged(&tkg).is_empty(), "{:#?}", flagged(&tkg));
        assert!(codes(&tkg, Severity::Warning).is_empty(), "{tkg:#?}");
        assert_code(&tkg, "ALLOW_SCATTER");
        assert_code(&cte, "ALLOW_KV_DYNAMIC_WRITE");
        if tp > 1 {
            assert_code(&tkg, "ALLOW_COLLECTIVE");
        }
    }
}

#[test]
fn knobs_get_the_right_codes() {
    // Greedy argmax from primitives: the variadic reduce compiles (NxD emits it), slowly.
    let mut spec = GraphSpec::token_generation(1, 256, DType::BF16);
    spec.options.sampling = Sampling::Greedy;
    spec.options.sampler_kernels = SamplerKernels::Primitives;
    let f = findings(&spec, 2);
    assert!(flagged(&f).is_empty(), "{:#?}", flagged(&f));
    assert_code(&f, "LINT_VARIADIC_REDUCE");

    // Greedy through AwsNeuronArgMax, and RMSNorm through AwsNeuronRmsNorm: recognised
    // targets, no longer flagged (the old lint flagged every custom call).
    let mut spec = GraphSpec::token_generation(1, 256, DType::BF16);
    spec.options.sampling = Sampling::Greedy;
    spec.options.sampler_kernels = SamplerKernels::Neuron;
    spec.options.rms_norm = NormImpl::NeuronCustomCall;
    let f = findings(&spec, 1);
    assert!(flagged(&f).is_empty(), "{:#?}", flagged(&f));
    let calls: Vec<&str> = with_code(&f, "ALLOW_CUSTOM_CALL")
        .iter()
        .map(|f| f.message.as_str())
        .collect();
    assert!(
        calls.iter().any(|m| m.contains("AwsNeuronRmsNorm")),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|m| m.contains("AwsNeuronArgMax")),
        "{calls:?}"
    );

    // On-device sampling with the neuron preset (AwsNeuronTopK): no error; `or` is
    // undocumented (a warning).
    let mut spec = GraphSpec::token_generation(1, 256, DType::BF16);
    spec.options = GraphOptions::neuron();
    spec.options.sampling = Sampling::OnDevice;
    let f = findings(&spec, 2);
    assert!(flagged(&f).is_empty(), "{:#?}", flagged(&f));
    assert_eq!(codes(&f, Severity::Warning), ["LINT_UNDOCUMENTED_OP"]);
    assert!(with_code(&f, "ALLOW_CUSTOM_CALL")
        .iter()
        .any(|f| f.message.contains("AwsNeuronTopK")));

    // ... and from primitives: a stable sort, which stays an error.
    spec.options.sampler_kernels = SamplerKernels::Primitives;
    let f = findings(&spec, 2);
    assert_eq!(codes(&f, Severity::Error), ["LINT_UNSUPPORTED_OP"]);
    assert!(with_code(&f, "LINT_UNSUPPORTED_OP")
        .iter()
        .all(|f| f.opcode == "sort"));

    // The CPU preset's runtime-index writes into the aliased KV state are allow-listed.
    let mut spec = GraphSpec::token_generation(1, 256, DType::BF16);
    spec.options.decode_cache_write = CacheWrite::DynamicUpdateSlice;
    let all = findings(&spec, 1);
    assert!(flagged(&all).is_empty(), "{:#?}", flagged(&all));
    assert_code(&all, "ALLOW_KV_DYNAMIC_WRITE");
}

// ---------------------------------------------------------------------------------------------
// One test per rule

#[test]
fn custom_call_targets_outside_the_recognised_list() {
    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", DType::F32, &[4]).unwrap();
    let ok = b
        .custom_call(
            "AwsNeuronSilu",
            &[&x],
            ArrayType::new(DType::F32, vec![4]),
            vec![],
        )
        .unwrap();
    let bad = b
        .custom_call(
            "MyFastKernel",
            &[&x],
            ArrayType::new(DType::F32, vec![4]),
            vec![],
        )
        .unwrap();
    let f = lint(&module(&b.finish(&[&ok, &bad]).unwrap()));
    let errors = with_code(&f, "NCC_EVRF015");
    assert_eq!(errors.len(), 1, "{f:#?}");
    assert!(errors[0].message.contains("`MyFastKernel`"));
    assert!(errors[0].is_flagged());
    assert_eq!(with_code(&f, "ALLOW_CUSTOM_CALL").len(), 1);
}

#[test]
fn top_k_on_integer_data() {
    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", DType::S32, &[1, 8]).unwrap();
    let t = b
        .custom_call_tuple(
            "AwsNeuronTopK",
            &[&x],
            vec![
                ArrayType::new(DType::S32, vec![1, 2]),
                ArrayType::new(DType::U32, vec![1, 2]),
            ],
            b"2".to_vec(),
        )
        .unwrap();
    let v = t.get(0).unwrap();
    let f = lint(&module(&b.finish(&[&v]).unwrap()));
    assert_code(&f, "NCC_EVRF013");
}

#[test]
fn sixty_four_bit_types() {
    let b = GraphBuilder::new("lint");
    let ids = b.parameter("ids", DType::S64, &[4]).unwrap();
    let x = b.parameter("x", DType::F64, &[4]).unwrap();
    let y = ids.convert(DType::S32).unwrap();
    let z = x.convert(DType::F32).unwrap();
    let mut m = module(&b.finish(&[&y, &z]).unwrap());
    let f = lint(&m);
    let s64 = with_code(&f, "NCC_EVRF062");
    assert_eq!(s64.len(), 1, "{f:#?}");
    assert_eq!(s64[0].opcode, "parameter");
    assert_eq!(with_code(&f, "LINT_F64").len(), 1, "{f:#?}");
    assert!(f.iter().filter(|f| f.is_flagged()).count() == 2, "{f:#?}");

    // u64: the DSL has no u64, so retype the s64 parameter.
    instr(&mut m, "parameter")
        .shape
        .as_mut()
        .unwrap()
        .element_type = PrimitiveType::U64 as i32;
    let f = lint(&m);
    assert_code(&f, "NCC_ESFH002");
    assert!(with_code(&f, "NCC_EVRF062").is_empty());
}

#[test]
fn complex_fp8_and_f4_types() {
    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", DType::F32, &[4]).unwrap();
    let y = x.exp().unwrap();
    let m = module(&b.finish(&[&y]).unwrap());
    let retyped = |t: PrimitiveType| {
        let mut m = m.clone();
        instr(&mut m, "exponential")
            .shape
            .as_mut()
            .unwrap()
            .element_type = t as i32;
        lint(&m)
    };
    for (t, code) in [
        (PrimitiveType::C64, "NCC_EVRF004"),
        (PrimitiveType::C128, "NCC_EVRF004"),
        (PrimitiveType::F8e4m3fnuz, "NCC_EVRF005"),
        (PrimitiveType::F8e5m2fnuz, "NCC_EVRF005"),
        (PrimitiveType::F8e4m3b11fnuz, "NCC_EVRF005"),
        (PrimitiveType::F4e2m1fn, "NCC_ESPP004"),
        (PrimitiveType::F8e4m3fn, "NCC_EVRF051"),
        (PrimitiveType::F8e4m3, "NCC_EVRF052"),
    ] {
        let f = retyped(t);
        assert_code(&f, code);
    }
    // fp8 e4m3fn is target-dependent: a warning, not an error.
    assert!(flagged(&retyped(PrimitiveType::F8e4m3fn)).is_empty());
    assert!(lint(&m).iter().all(|f| f.severity == Severity::Info));
}

#[test]
fn integer_dot() {
    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", DType::S32, &[2, 3]).unwrap();
    let w = b.parameter("w", DType::S32, &[3, 4]).unwrap();
    let y = x.matmul(&w).unwrap();
    let f = lint(&module(&b.finish(&[&y]).unwrap()));
    assert_code(&f, "NCC_EVRF035");

    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", DType::BF16, &[2, 3]).unwrap();
    let w = b.parameter("w", DType::BF16, &[3, 4]).unwrap();
    let y = x
        .dot_general_to(
            &w,
            DotDims {
                lhs_contracting: vec![1],
                rhs_contracting: vec![0],
                ..Default::default()
            },
            DType::F32,
        )
        .unwrap();
    assert!(lint(&module(&b.finish(&[&y]).unwrap())).is_empty());
}

#[test]
fn integer_all_reduce_and_reduce_scatter() {
    let groups = ReplicaGroups::all(2);
    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", DType::S32, &[4]).unwrap();
    let s = x.all_reduce(ReduceKind::Sum, &groups).unwrap();
    let r = x.reduce_scatter(ReduceKind::Sum, 0, &groups).unwrap();
    let xf = b.parameter("xf", DType::F32, &[4]).unwrap();
    let sf = xf.all_reduce(ReduceKind::Sum, &groups).unwrap();
    let g = x.all_gather(0, &groups).unwrap(); // an integer all-gather is fine
    let f = lint(&module(&b.finish(&[&s, &r, &sf, &g]).unwrap()));
    assert_eq!(with_code(&f, "NCC_EVRF061").len(), 1, "{f:#?}");
    assert_eq!(with_code(&f, "NCC_EVRF063").len(), 1, "{f:#?}");
    assert_eq!(flagged(&f).len(), 2, "{f:#?}");
    assert_eq!(with_code(&f, "ALLOW_COLLECTIVE").len(), 4);
}

fn row_scatter(dtype: DType, combiner: ScatterCombiner) -> Vec<Finding> {
    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", dtype, &[4, 3]).unwrap();
    let idx = b.parameter("idx", DType::S32, &[1, 1]).unwrap();
    let upd = b.parameter("upd", dtype, &[1, 3]).unwrap();
    let y = x
        .scatter(
            &idx,
            &upd,
            ScatterDims {
                update_window_dims: vec![1],
                inserted_window_dims: vec![0],
                scatter_dims_to_operand_dims: vec![0],
                index_vector_dim: 1,
            },
            combiner,
        )
        .unwrap();
    lint(&module(&b.finish(&[&y]).unwrap()))
}

#[test]
fn scatter_that_computes_on_integer_data() {
    let f = row_scatter(DType::S32, ScatterCombiner::Add);
    assert_code(&f, "NCC_EVRF060");
    // An overwrite scatter is fine on any type, a computing one on float data too.
    for (dtype, combiner) in [
        (DType::S32, ScatterCombiner::Assign),
        (DType::F32, ScatterCombiner::Add),
        (DType::F32, ScatterCombiner::Assign),
    ] {
        let f = row_scatter(dtype, combiner);
        assert!(flagged(&f).is_empty(), "{dtype:?} {combiner:?}: {f:#?}");
        assert_code(&f, "ALLOW_SCATTER");
    }
}

#[test]
fn iota_derived_indices_out_of_bounds() {
    // gather rows iota(4) + offset of an [8, 3] table: in bounds up to offset 4.
    let gather = |offset: f64| {
        let b = GraphBuilder::new("lint");
        let table = b.parameter("table", DType::F32, &[8, 3]).unwrap();
        let rows = b
            .iota(DType::S32, &[4], 0)
            .unwrap()
            .add_scalar(offset)
            .unwrap();
        let y = table.take(&rows).unwrap();
        lint(&module(&b.finish(&[&y]).unwrap()))
    };
    assert!(flagged(&gather(4.0)).is_empty(), "{:#?}", gather(4.0));
    let f = gather(5.0);
    let hits = with_code(&f, "NCC_EVRF031");
    assert_eq!(hits.len(), 1, "{f:#?}");
    assert!(hits[0].message.contains("5..=8"), "{}", hits[0].message);
    assert_eq!(hits[0].opcode, "gather");

    // scatter of [2, 3] windows at rows (iota(2) + offset, 0) of a [4, 3] operand, the
    // index vector built by a concatenate: component 0 is iota-derived, component 1 constant.
    let scatter = |offset: f64| {
        let b = GraphBuilder::new("lint");
        let x = b.parameter("x", DType::F32, &[4, 3]).unwrap();
        let rows = b
            .iota(DType::S32, &[2, 1], 0)
            .unwrap()
            .add_scalar(offset)
            .unwrap();
        let cols = b.constant_f64(DType::S32, &[2, 1], &[0.0, 0.0]).unwrap();
        let idx = Tensor::concat(&[&rows, &cols], 1).unwrap();
        let upd = b.parameter("upd", DType::F32, &[2, 3]).unwrap();
        let y = x
            .scatter(
                &idx,
                &upd,
                ScatterDims {
                    update_window_dims: vec![1],
                    inserted_window_dims: vec![0],
                    scatter_dims_to_operand_dims: vec![0, 1],
                    index_vector_dim: 1,
                },
                ScatterCombiner::Assign,
            )
            .unwrap();
        lint(&module(&b.finish(&[&y]).unwrap()))
    };
    assert!(flagged(&scatter(2.0)).is_empty(), "{:#?}", scatter(2.0));
    let f = scatter(3.0);
    let hits = with_code(&f, "NCC_EVRF031");
    assert_eq!(hits.len(), 1, "{f:#?}");
    assert!(
        hits[0].message.contains("component 0"),
        "{}",
        hits[0].message
    );

    // An index from a parameter is not checked (its values are unknown).
    let b = GraphBuilder::new("lint");
    let table = b.parameter("table", DType::F32, &[8, 3]).unwrap();
    let ids = b.parameter("ids", DType::S32, &[4]).unwrap();
    let y = table.take(&ids.add_scalar(100.0).unwrap()).unwrap();
    assert!(flagged(&lint(&module(&b.finish(&[&y]).unwrap()))).is_empty());
}

#[test]
fn dynamic_shapes() {
    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", DType::F32, &[4]).unwrap();
    let y = x.exp().unwrap();
    let z = y.add(&x).unwrap();
    let mut m = module(&b.finish(&[&z]).unwrap());
    instr(&mut m, "exponential")
        .shape
        .as_mut()
        .unwrap()
        .is_dynamic_dimension = vec![true];
    instr(&mut m, "add").opcode = "set-dimension-size".into();
    let f = lint(&m);
    let hits = with_code(&f, "NCC_EMOD025");
    assert_eq!(hits.len(), 2, "{f:#?}");
    assert!(hits.iter().any(|h| h.opcode == "exponential"));
    assert!(hits.iter().any(|h| h.opcode == "set-dimension-size"));
}

#[test]
fn more_than_sixteen_communicators() {
    let module_with = |sets: i64| {
        let b = GraphBuilder::new("lint");
        let x = b.parameter("x", DType::F32, &[4]).unwrap();
        let mut acc = x.clone();
        for k in 1..=sets {
            acc = acc
                .all_reduce(ReduceKind::Sum, &ReplicaGroups(vec![vec![0, k]]))
                .unwrap();
        }
        // The same set again is the same communicator.
        let acc = acc
            .all_reduce(ReduceKind::Sum, &ReplicaGroups(vec![vec![1, 0]]))
            .unwrap();
        lint(&module(&b.finish(&[&acc]).unwrap()))
    };
    assert!(with_code(&module_with(16), "LINT_COMMUNICATORS").is_empty());
    let f = module_with(17);
    let hits = with_code(&f, "LINT_COMMUNICATORS");
    assert_eq!(hits.len(), 1, "{f:#?}");
    assert!(
        hits[0].message.contains("17 distinct"),
        "{}",
        hits[0].message
    );
}

#[test]
fn raw_parameter_outputs() {
    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", DType::F32, &[4]).unwrap();
    let cache = b.parameter("cache", DType::F32, &[4]).unwrap();
    let y = x.exp().unwrap();
    let f = lint(&module(&b.finish(&[&y, &cache]).unwrap()));
    let hits = with_code(&f, "LINT_RAW_PARAMETER_OUTPUT");
    assert_eq!(hits.len(), 1, "{f:#?}");
    assert!(
        hits[0].message.contains("output 1 is parameter 1"),
        "{}",
        hits[0].message
    );
}

#[test]
fn collectives_need_explicit_legacy_groups() {
    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", DType::F32, &[4]).unwrap();
    let y = x
        .all_reduce(ReduceKind::Sum, &ReplicaGroups::all(2))
        .unwrap();
    let m = module(&b.finish(&[&y]).unwrap());
    assert_eq!(codes(&lint(&m), Severity::Info), ["ALLOW_COLLECTIVE"]);

    let mut empty = m.clone();
    instr(&mut empty, "all-reduce").replica_groups.clear();
    let f = lint(&empty);
    assert_code(&f, "LINT_EMPTY_REPLICA_GROUPS");
    assert!(flagged(&f).is_empty());

    let mut iota = m.clone();
    let ar = instr(&mut iota, "all-reduce");
    ar.replica_groups.clear();
    ar.collective_device_list = Some(Box::new(CollectiveDeviceListProto {
        replica_groups: vec![],
        iota_replica_group_list: Some(IotaReplicaGroupListProto {
            num_replica_groups: 1,
            num_devices_per_group: 2,
            iota_reshape_dims: vec![2],
            iota_transpose_perm: vec![0],
        }),
    }));
    assert_code(&lint(&iota), "LINT_DEVICE_LIST_GROUPS");
}

#[test]
fn rng_bit_generator_algorithm() {
    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", DType::U32, &[2]).unwrap();
    let y = x.add(&x).unwrap();
    let mut m = module(&b.finish(&[&y]).unwrap());
    let add = instr(&mut m, "add");
    add.opcode = "rng-bit-generator".into();
    assert!(lint(&m).is_empty(), "RNG_DEFAULT is fine");
    instr(&mut m, "rng-bit-generator").rng_algorithm = xla_proto::RandomAlgorithm::RngPhilox as i32;
    let f = lint(&m);
    let hits = with_code(&f, "NCC_EVRF006");
    assert_eq!(hits.len(), 1, "{f:#?}");
    assert!(hits[0].message.contains("RNG_PHILOX"));
}

#[test]
fn shift_right_arithmetic_width_and_reduce_window() {
    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", DType::S8, &[2]).unwrap();
    let y = x.add(&x).unwrap();
    let w = b.parameter("w", DType::S32, &[2]).unwrap();
    let v = w.add(&w).unwrap();
    let mut m = module(&b.finish(&[&y, &v]).unwrap());
    for i in &mut entry(&mut m).instructions {
        if i.opcode == "add" {
            i.opcode = "shift-right-arithmetic".into();
        }
    }
    let f = lint(&m);
    assert_eq!(with_code(&f, "NCC_EVRF022").len(), 1, "{f:#?}");

    instr(&mut m, "shift-right-arithmetic").opcode = "reduce-window".into();
    assert_code(&lint(&m), "NCC_EVRF017");
}

#[test]
fn opcodes_outside_the_documented_table() {
    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", DType::F32, &[4]).unwrap();
    let l = x.logistic().unwrap(); // NxD/TNX SiLU: known to compile
    let p = x.gt(&x.scalar_like(0.0).unwrap()).unwrap();
    let o = p.or(&x.lt(&x.scalar_like(-1.0).unwrap()).unwrap()).unwrap(); // undocumented
    let s = x.sort_with(0, true, &[]).unwrap().remove(0); // no evidence: an error
    let g = b.finish(&[&l, &o, &s]).unwrap();
    let f = lint(&module(&g));
    assert_eq!(with_code(&f, "LINT_EVIDENCED_OP")[0].opcode, "logistic");
    assert_eq!(with_code(&f, "LINT_UNDOCUMENTED_OP")[0].opcode, "or");
    let errors = with_code(&f, "LINT_UNSUPPORTED_OP");
    assert_eq!(errors.len(), 1, "{f:#?}");
    assert_eq!(errors[0].opcode, "sort");
    assert_eq!(flagged(&f).len(), 1, "{f:#?}");
}

#[test]
fn reduce_power_and_dynamic_index_restrictions() {
    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", DType::F32, &[4]).unwrap();
    let e = b.parameter("e", DType::F32, &[4]).unwrap();
    let i = b.parameter("i", DType::S32, &[]).unwrap();
    let p = x.pow(&e).unwrap(); // runtime exponent
    let c = x.pow(&x.scalar_like(2.0).unwrap()).unwrap(); // constant exponent: fine
    let s = x.dynamic_slice(&[&i], &[2]).unwrap(); // runtime index, not the KV state
    let r = x.sum(&[0]).unwrap();
    let a = x.argmax(0, DType::S32).unwrap(); // variadic reduce
    let g = b.finish(&[&p, &c, &s, &r, &a]).unwrap();
    let m = module(&g);
    let f = lint(&m);
    assert_eq!(flagged(&f).len(), 1, "{f:#?}");
    assert_code(&f, "LINT_POW_EXPONENT");
    assert_code(&f, "LINT_DYNAMIC_INDEX");
    assert_code(&f, "LINT_VARIADIC_REDUCE");

    // A reduce with a non-constant init, and one whose computation is not add/max/min/mul.
    let mut bad = m.clone();
    let param_e = entry(&mut bad)
        .instructions
        .iter()
        .find(|i| i.opcode == "parameter" && i.parameter_number == 1)
        .unwrap()
        .clone();
    let reduce = entry(&mut bad)
        .instructions
        .iter_mut()
        .find(|i| i.opcode == "reduce" && i.operand_ids.len() == 2)
        .unwrap();
    let comp = reduce.called_computation_ids[0];
    reduce.operand_ids[1] = param_e.id; // (an f32[4], not a scalar: the lint does not mind)
    let reducer = bad.computations.iter_mut().find(|c| c.id == comp).unwrap();
    let root = reducer.root_id;
    reducer
        .instructions
        .iter_mut()
        .find(|i| i.id == root)
        .unwrap()
        .opcode = "divide".into();
    let f = lint(&bad);
    assert_code(&f, "LINT_REDUCE_INIT");
    let kinds = with_code(&f, "LINT_REDUCE_COMPUTATION");
    assert!(
        kinds.iter().any(|k| k.message.contains("`divide`")),
        "{f:#?}"
    );
}

#[test]
fn every_rule_is_documented() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/neuron-lint.md"))
        .unwrap();
    for r in RULES {
        assert!(
            doc.contains(&format!("`{}`", r.code)),
            "{} is not in docs/neuron-lint.md",
            r.code
        );
    }
    let mut seen = std::collections::HashSet::new();
    assert!(RULES.iter().all(|r| seen.insert(r.code)), "duplicate codes");
}
