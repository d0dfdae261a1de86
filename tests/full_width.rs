//! Real configs at full width against Hugging Face transformers: Phi-3-mini-4k (head_dim 96),
//! Phi-3-medium (40 query / 10 KV heads: CONVERT_TO_MHA at tp 4), Phi-4-mini (head_dim 128,
//! partial rotary, LongRoPE, vocab 200064, tied), Phi-3.5-mini and Llama-3.2-1B, cut to one or
//! two layers. The weights are never committed: `tools/fixtures/make_full_width.py` ran HF on
//! counter-hash weights rounded to bf16 and committed only its outputs; `testkit` writes the
//! identical checkpoint under `target/scratch/` for the tests that use it and deletes it after.
//!
//! The default suite runs the short prompts (`suite: "default"`); `tools/test-full` runs the
//! 2k–4k-token prompts too (`PHI3_FULL_WIDTH=full`).
//!
//! Every step is checked: the prompt's last-position logits, then each decode step fed HF's own
//! greedy token (teacher forcing, so a near-tie cannot make the paths part and skip the rest),
//! on HF's top-32 ids and 256 evenly spaced probes. Tolerance `5e-5 · max|logit|` (f32 graphs
//! on the bf16 values HF ran in f32; observed errors are one to two orders smaller); our
//! argmax must be HF's token unless HF's own top-2 margin is under `4 ·` that — a near-tie
//! any reordering of f32 sums can flip. Short prompts also go through the scheduler's
//! free-running greedy generation, which must equal HF's until such a near-tie.

use phi3_neuron::build::session::{engine_for, SetShape};
use phi3_neuron::dsl::DType;
use phi3_neuron::models::decoder::GraphOptions;
use phi3_neuron::run::{argmax, DecodeRow, PrefillRow, SamplerRow};
use testkit::{FullWidthCase, FullWidthPrompt, FULL_WIDTH};

fn suite() -> String {
    std::env::var("PHI3_FULL_WIDTH").unwrap_or_else(|_| "default".into())
}

fn tolerance(max_abs: f32) -> f32 {
    5e-5 * max_abs.max(1.0)
}

fn check(name: &str, tps: &[i64]) {
    check_with(name, tps, &GraphOptions::default())
}

fn check_with(name: &str, tps: &[i64], options: &GraphOptions) {
    let case = FullWidthCase::load(name);
    let suites: Vec<String> = match suite().as_str() {
        "full" => vec!["default".into(), "full".into()],
        s => vec![s.to_string()],
    };
    let prompts: Vec<&FullWidthPrompt> = suites.iter().flat_map(|s| case.prompts(s)).collect();
    if prompts.is_empty() {
        return;
    }
    let checkpoint = case.checkpoint();
    let dir = checkpoint.path();
    let plugin = testkit::plugin();
    for &tp in tps {
        for p in &prompts {
            let n = p.prompt_ids.len();
            let bucket = (n + p.steps.len()).next_power_of_two().max(128) as i64;
            let t0 = std::time::Instant::now();
            let what = format!("{name} tp {tp} prompt {n}");
            let engine = engine_for(
                &plugin,
                dir,
                tp,
                DType::F32,
                &SetShape::single(bucket),
                options,
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            let mut state = engine.new_state().unwrap();
            let greedy = SamplerRow::GREEDY;
            let mut worst = 0f32;
            for (k, step) in p.steps.iter().enumerate() {
                let out = if k == 0 {
                    let row = PrefillRow {
                        seq_id: 0,
                        tokens: &p.prompt_ids,
                        sampler: greedy,
                    };
                    engine.prefill(&mut state, &[row])
                } else {
                    let row = DecodeRow {
                        seq_id: 0,
                        token: p.greedy[k - 1],
                        position: n + k - 1,
                        sampler: greedy,
                    };
                    engine.decode(&mut state, &[row])
                }
                .unwrap_or_else(|e| panic!("{what} step {k}: {e}"))
                .remove(0);
                let tol = tolerance(step.max_abs);
                let err = step.max_err(&out.logits);
                worst = worst.max(err / tol);
                assert!(
                    err <= tol,
                    "{what} step {k}: logits differ from HF's by {err} (> {tol})"
                );
                let ours = argmax(&out.logits);
                assert!(
                    ours == step.token || step.margin < 4.0 * tol,
                    "{what} step {k}: argmax {ours}, HF's {} with margin {}",
                    step.token,
                    step.margin
                );
            }
            if n < 512 {
                let free = engine.generate(&p.prompt_ids, p.greedy.len()).unwrap();
                let same = free
                    .iter()
                    .zip(&p.greedy)
                    .take_while(|(a, b)| a == b)
                    .count();
                if same < p.greedy.len() {
                    let m = p.steps[same].margin;
                    assert!(
                        m < 4.0 * tolerance(p.steps[same].max_abs),
                        "{what}: free-running greedy {free:?} parts from HF's {:?} at step {same} (HF margin {m})",
                        p.greedy
                    );
                }
            }
            eprintln!(
                "{what}: worst step error {:.3} of the tolerance, {:.1} s",
                worst,
                t0.elapsed().as_secs_f64()
            );
        }
    }
}

/// The checkpoint HF ran on is the one our model declares: same keys, same shapes.
#[test]
fn the_declared_checkpoint_is_hfs() {
    for name in FULL_WIDTH {
        let case = FullWidthCase::load(name);
        let model = phi3_neuron::models::from_json_str(&case.config_json, name).unwrap();
        let mut ours = testkit::model_tensors(model.as_ref());
        let mut hf = case.checkpoint.clone();
        ours.sort();
        hf.sort();
        assert_eq!(ours, hf, "{name}");
    }
}

#[test]
fn phi3_mini_4k() {
    check("phi-3-mini-4k.2l", &[1, 2, 4]);
}

/// The cpu preset's forms (`[in, out]` weights, per-row dynamic-update-slice cache writes) at
/// full width.
#[test]
fn phi3_mini_4k_cpu_preset() {
    check_with("phi-3-mini-4k.2l", &[2], &GraphOptions::cpu());
}

#[test]
fn phi3_medium_4k_ten_kv_heads_at_tp4() {
    check("phi-3-medium-4k.1l", &[4]);
}

#[test]
fn phi4_mini() {
    check("phi-4-mini.2l", &[2]);
}

#[test]
fn phi3_5_mini() {
    check("phi-3.5-mini.2l", &[1]);
}

#[test]
fn llama_3_2_1b() {
    check("llama-3.2-1b.2l", &[2]);
}
