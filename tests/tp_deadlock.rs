//! Repeated prefills at tp 2 with the cpu preset's f32 forms (`[in, out]` weights, which
//! XLA:CPU runs as XNNPACK fusions). Before `CompileOptions` turned XNNPACK fusions off for
//! replicated executables, the second prefill deadlocked in its first all-reduce (one replica
//! destroying an XNNPACK thread pool that the other's rendezvous wait held a thread of) and XLA
//! aborted the process after 40 s.

use phi3_neuron::build::session::{engine_for, SetShape};
use phi3_neuron::dsl::DType;
use phi3_neuron::models::decoder::GraphOptions;
use phi3_neuron::run::{PrefillRow, SamplerRow};

#[test]
fn repeated_tp2_prefills_with_input_major_weights_complete() {
    let config = std::fs::read_to_string(testkit::repo().join("tools/bench-jax/config.json"))
        .unwrap()
        .replace("\"num_hidden_layers\":8", "\"num_hidden_layers\":2");
    let model = phi3_neuron::models::from_json_str(&config, "tp-deadlock").unwrap();
    let checkpoint = testkit::scratch_checkpoint(
        "tp-deadlock",
        &config,
        &testkit::model_tensors(model.as_ref()),
    );
    let dir = checkpoint.path();
    let shape = SetShape {
        cte_buckets: vec![128],
        tkg_buckets: vec![512],
        max_seq_len: 512,
        max_batch: 1,
        ctx_batch: 1,
    };
    let engine = engine_for(
        &testkit::plugin(),
        dir,
        2,
        DType::F32,
        &shape,
        &GraphOptions::cpu(),
    )
    .unwrap();
    let mut state = engine.new_state().unwrap();
    let prompt: Vec<i32> = (0..128).map(|i| i * 37 % 32000).collect();
    let mut first = None;
    for call in 0..4 {
        let row = PrefillRow {
            seq_id: 0,
            tokens: &prompt,
            sampler: SamplerRow::GREEDY,
        };
        let out = engine.prefill(&mut state, &[row]).unwrap().remove(0);
        let first = first.get_or_insert_with(|| out.logits.clone());
        assert_eq!(
            &out.logits, first,
            "prefill {call} of the same prompt differs"
        );
    }
}
