//! The Neuron compatibility lint: the default graph set is clean apart from the documented
//! allow-list, and each non-default knob that leaves the safe op set is flagged.

use phi3_neuron::dsl::*;
use phi3_neuron::hlo::{lower, LowerOptions};
use phi3_neuron::models::decoder::{CacheWrite, GraphSpec, NormImpl, Sampling};
use phi3_neuron::models::phi3::Phi3Config;
use phi3_neuron::models::DecoderModel;
use phi3_neuron::neuron::lint::{lint, Allowance, Finding};

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
        .map(|f| format!("{} {}: {}", f.opcode, f.instruction, f.message))
        .collect()
}

#[test]
fn default_graphs_are_clean_apart_from_the_allow_list() {
    for tp in [1, 2] {
        let cte = findings(&GraphSpec::context_encoding(1, 128, 4096, DType::BF16), tp);
        assert!(flagged(&cte).is_empty(), "{:#?}", flagged(&cte));
        let tkg = findings(&GraphSpec::token_generation(1, 4096, DType::BF16), tp);
        assert!(flagged(&tkg).is_empty(), "{:#?}", flagged(&tkg));
        assert!(tkg.iter().any(|f| f.allowance == Allowance::Scatter));
        if tp > 1 {
            assert!(tkg.iter().any(|f| f.allowance == Allowance::Collective));
        }
    }
}

#[test]
fn knobs_outside_the_safe_set_are_flagged() {
    let mut spec = GraphSpec::token_generation(1, 256, DType::BF16);
    spec.options.sampling = Sampling::Greedy;
    let f = flagged(&findings(&spec, 2));
    assert!(f.iter().any(|m| m.contains("variadic reduce")), "{f:#?}");

    let mut spec = GraphSpec::token_generation(1, 256, DType::BF16);
    spec.options.rms_norm = NormImpl::NeuronCustomCall;
    let f = flagged(&findings(&spec, 1));
    assert!(
        f.iter()
            .any(|m| m.contains("custom-call `AwsNeuronRmsNorm`")),
        "{f:#?}"
    );

    let mut spec = GraphSpec::token_generation(1, 256, DType::BF16);
    spec.options.decode_cache_write = CacheWrite::DynamicUpdateSlice;
    let all = findings(&spec, 1);
    assert!(flagged(&all).is_empty(), "{:#?}", flagged(&all));
    assert!(all.iter().any(|f| f.allowance == Allowance::DynamicKvWrite));
}

#[test]
fn rules_catch_each_documented_restriction() {
    let b = GraphBuilder::new("lint");
    let x = b.parameter("x", DType::F32, &[4]).unwrap();
    let e = b.parameter("e", DType::F32, &[4]).unwrap();
    let i = b.parameter("i", DType::S32, &[]).unwrap();
    let p = x.pow(&e).unwrap(); // runtime exponent
    let c = x.pow(&x.scalar_like(2.0).unwrap()).unwrap(); // constant exponent: fine
    let s = x.dynamic_slice(&[&i], &[2]).unwrap(); // runtime index, not a KV write
    let l = x.logistic().unwrap(); // outside the documented set
    let g = b.finish(&[&p, &c, &s, &l]).unwrap();
    let f = flagged(&lint(&lower(&g, &LowerOptions::default()).unwrap()));
    assert_eq!(f.len(), 3, "{f:#?}");
    assert!(f
        .iter()
        .any(|m| m.contains("power with a non-constant exponent")));
    assert!(f
        .iter()
        .any(|m| m.contains("dynamic-slice` with runtime indices")));
    assert!(f.iter().any(|m| m.contains("`logistic` is not in")));
}
