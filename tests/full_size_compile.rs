//! Every embedded full-size config, cut to 2 layers, lowers to modules that XLA's verifier and
//! compiler accept at the real widths: one prefill and one decode graph per model, compiled
//! by the PJRT CPU plugin for 2 replicas (so the collectives are checked too).

use phi3_neuron::dsl::DType;
use phi3_neuron::hlo::{lower, LowerOptions};
use phi3_neuron::models::decoder::GraphSpec;
use phi3_neuron::models::{embedded_names, resolve};
use pjrt_runtime::{Client, ClientOptions, CompileOptions, Plugin};

#[test]
fn two_layer_cuts_of_every_model_compile_on_cpu() {
    let plugin = Plugin::from_env().unwrap_or_else(|e| panic!("{e}"));
    let tp = 2;
    let client = Client::new(
        &plugin,
        &ClientOptions {
            cpu_device_count: Some(tp),
        },
    )
    .unwrap();
    for name in embedded_names() {
        let cfg = resolve(name).unwrap().with_layers(2);
        let plan = cfg.plan(tp).unwrap();
        for spec in [
            GraphSpec::context_encoding(1, 128, 256, DType::BF16),
            GraphSpec::token_generation(1, 256, DType::BF16),
        ] {
            let g = cfg.record(&plan, &spec).unwrap();
            let m = lower(&g.graph, &LowerOptions::default()).unwrap();
            let exe = client
                .compile(&m, &CompileOptions::replicas(tp))
                .unwrap_or_else(|e| panic!("{name} {}: XLA rejected the module: {e}", spec.name()));
            assert_eq!(exe.num_outputs(), 1 + 2 * 2, "{name}: logits plus 4 caches");
        }
    }
}
