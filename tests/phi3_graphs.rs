//! Decoder graphs build and lower for every embedded model (the Phi-3 family and Llama) at
//! every supported TP degree, with the collectives the design promises.

use phi3_neuron::dsl::DType;
use phi3_neuron::hlo::{lower, LowerOptions};
use phi3_neuron::models::decoder::GraphSpec;
use phi3_neuron::models::{embedded_names, resolve};

fn count(m: &xla_proto::HloModuleProto, opcode: &str) -> usize {
    m.computations
        .iter()
        .flat_map(|c| &c.instructions)
        .filter(|i| i.opcode == opcode)
        .count()
}

#[test]
fn all_embedded_models_build_at_all_tp_degrees() {
    for name in embedded_names() {
        let cfg = resolve(name).unwrap().with_layers(2);
        for tp in [1, 2, 4, 8, 16, 32] {
            let plan = cfg.plan(tp).unwrap();
            for spec in [
                GraphSpec::context_encoding(1, 128, 4096, DType::BF16),
                GraphSpec::token_generation(1, 4096, DType::BF16),
            ] {
                let g = cfg
                    .record(&plan, &spec)
                    .unwrap_or_else(|e| panic!("{name} tp{tp}: {e}"));
                let m = lower(&g.graph, &LowerOptions::default()).unwrap();
                let all_reduces = count(&m, "all-reduce");
                let expected = if tp > 1 { 2 * 2 } else { 0 };
                assert_eq!(
                    all_reduces,
                    expected,
                    "{name} tp{tp} {}: two all-reduces per layer",
                    spec.name()
                );
                let aliases = m.input_output_alias.as_ref().unwrap().entries.len();
                assert_eq!(aliases, 4, "one alias per K and V cache");
            }
        }
    }
}
