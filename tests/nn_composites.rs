//! The composite layers (`dsl::nn`) on the PJRT CPU plugin against Rust references that follow
//! Hugging Face's exact cast order. In bf16 the order of rounding is visible: RMSNorm must
//! round the normalised value to bf16 *before* multiplying by the weight, as `Phi3RMSNorm`
//! does, and this test tells that order from the other one.

mod common;

use common::{input, read, run, Lcg};
use half::bf16;
use phi3_neuron::dsl::nn::{apply_rotary, layer_norm, rms_norm, silu, softmax_f32};
use phi3_neuron::dsl::{DType, GraphBuilder};

const EPS: f64 = 1e-5;

fn bf16s(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

#[test]
fn rms_norm_bf16_rounds_before_the_weight() {
    let (rows, h) = (64usize, 256usize);
    let mut rng = Lcg::new(7);
    let x = bf16s(&rng.f32s(rows * h, -2.0, 2.0));
    let w = bf16s(&rng.f32s(h, 0.5, 1.5));
    let b = GraphBuilder::new("rms_norm");
    let xt = b
        .parameter("x", DType::BF16, &[rows as i64, h as i64])
        .unwrap();
    let wt = b.parameter("w", DType::BF16, &[h as i64]).unwrap();
    let y = rms_norm(&xt, &wt, EPS).unwrap();
    let g = b.finish(&[&y]).unwrap();
    let out = run(
        &g,
        &[
            input(x.clone(), &[rows as i64, h as i64]),
            input(w.clone(), &[h as i64]),
        ],
    );
    let got: Vec<bf16> = read(&out[0], &[rows as i64, h as i64]);

    let (mut same_hf, mut same_other) = (0usize, 0usize);
    for r in 0..rows {
        let row = &x[r * h..(r + 1) * h];
        let ms: f32 = row.iter().map(|v| v.to_f32() * v.to_f32()).sum::<f32>() / h as f32;
        let inv = 1.0 / (ms + EPS as f32).sqrt();
        for i in 0..h {
            let normed = row[i].to_f32() * inv;
            // HF: `weight * hidden_states.to(input_dtype)`: round, multiply in bf16.
            let hf = bf16::from_f32(bf16::from_f32(normed).to_f32() * w[i].to_f32());
            // The other order: multiply in f32, round once.
            let other = bf16::from_f32(normed * w[i].to_f32());
            same_hf += (got[r * h + i] == hf) as usize;
            same_other += (got[r * h + i] == other) as usize;
        }
    }
    let n = rows * h;
    // XLA's f32 sum and rsqrt may differ from this reference in the last f32 bit, which can
    // move a bf16 rounding now and then; the cast order moves many more.
    assert!(
        same_hf * 100 >= n * 99,
        "only {same_hf} of {n} elements follow HF's cast order"
    );
    assert!(
        same_other < same_hf - n / 100,
        "the test cannot tell the orders apart ({same_other} vs {same_hf})"
    );
}

#[test]
fn layer_norm_matches_the_definition() {
    let (rows, h) = (8usize, 96usize);
    let mut rng = Lcg::new(11);
    let x = rng.f32s(rows * h, -3.0, 3.0);
    let w = rng.f32s(h, 0.5, 1.5);
    let bias = rng.f32s(h, -0.5, 0.5);
    let b = GraphBuilder::new("layer_norm");
    let xt = b
        .parameter("x", DType::F32, &[rows as i64, h as i64])
        .unwrap();
    let wt = b.parameter("w", DType::F32, &[h as i64]).unwrap();
    let bt = b.parameter("b", DType::F32, &[h as i64]).unwrap();
    let y = layer_norm(&xt, &wt, &bt, EPS).unwrap();
    let g = b.finish(&[&y]).unwrap();
    let out = run(
        &g,
        &[
            input(x.clone(), &[rows as i64, h as i64]),
            input(w.clone(), &[h as i64]),
            input(bias.clone(), &[h as i64]),
        ],
    );
    let got: Vec<f32> = read(&out[0], &[rows as i64, h as i64]);
    for r in 0..rows {
        let row: Vec<f64> = x[r * h..(r + 1) * h].iter().map(|&v| v as f64).collect();
        let mean = row.iter().sum::<f64>() / h as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / h as f64;
        for i in 0..h {
            let want = (row[i] - mean) / (var + EPS).sqrt() * w[i] as f64 + bias[i] as f64;
            let d = (got[r * h + i] as f64 - want).abs();
            assert!(
                d <= 1e-5 * want.abs().max(1.0),
                "row {r} col {i}: {} vs {want}",
                got[r * h + i]
            );
        }
    }
}

#[test]
fn silu_bf16_rounds_once() {
    let n = 4096usize;
    let mut rng = Lcg::new(3);
    let x = bf16s(&rng.f32s(n, -8.0, 8.0));
    let b = GraphBuilder::new("silu");
    let xt = b.parameter("x", DType::BF16, &[n as i64]).unwrap();
    let g = b.finish(&[&silu(&xt).unwrap()]).unwrap();
    let got: Vec<bf16> = read(&run(&g, &[input(x.clone(), &[n as i64])])[0], &[n as i64]);
    let exact = x
        .iter()
        .zip(&got)
        .filter(|(v, g)| {
            let v = v.to_f32();
            bf16::from_f32(v / (1.0 + (-v).exp())) == **g
        })
        .count();
    assert!(
        exact * 100 >= n * 99,
        "{exact} of {n} match a single rounding of the f32 value"
    );
}

#[test]
fn softmax_and_partial_rotary_match_references() {
    let mut rng = Lcg::new(5);
    // softmax over the last dim, in f32
    let (rows, cols) = (4usize, 33usize);
    let s = rng.f32s(rows * cols, -10.0, 10.0);
    let b = GraphBuilder::new("softmax");
    let st = b
        .parameter("s", DType::F32, &[rows as i64, cols as i64])
        .unwrap();
    let g = b.finish(&[&softmax_f32(&st).unwrap()]).unwrap();
    let got: Vec<f32> = read(
        &run(&g, &[input(s.clone(), &[rows as i64, cols as i64])])[0],
        &[rows as i64, cols as i64],
    );
    for r in 0..rows {
        let row = &s[r * cols..(r + 1) * cols];
        let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        for c in 0..cols {
            let want = (row[c] as f64 - m).exp() / z;
            assert!(
                (got[r * cols + c] as f64 - want).abs() <= 1e-6,
                "softmax[{r},{c}]"
            );
        }
    }
    // NeoX rotary on the first 12 of 16 channels; the last 4 pass through.
    let (heads, seq, hd, rot) = (2usize, 3usize, 16usize, 12usize);
    let q = rng.f32s(heads * seq * hd, -1.0, 1.0);
    let angles: Vec<f32> = (0..seq * rot).map(|i| (i as f32) * 0.37).collect();
    let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
    let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
    let b = GraphBuilder::new("rotary");
    let qt = b
        .parameter("q", DType::F32, &[heads as i64, seq as i64, hd as i64])
        .unwrap();
    let ct = b
        .parameter("cos", DType::F32, &[1, seq as i64, rot as i64])
        .unwrap();
    let sn = b
        .parameter("sin", DType::F32, &[1, seq as i64, rot as i64])
        .unwrap();
    let g = b.finish(&[&apply_rotary(&qt, &ct, &sn).unwrap()]).unwrap();
    let dims = [heads as i64, seq as i64, hd as i64];
    let got: Vec<f32> = read(
        &run(
            &g,
            &[
                input(q.clone(), &dims),
                input(cos.clone(), &[1, seq as i64, rot as i64]),
                input(sin.clone(), &[1, seq as i64, rot as i64]),
            ],
        )[0],
        &dims,
    );
    for h in 0..heads {
        for t in 0..seq {
            let base = (h * seq + t) * hd;
            for d in 0..hd {
                let want = if d < rot {
                    let half = rot / 2;
                    let rotated = if d < half {
                        -q[base + d + half]
                    } else {
                        q[base + d - half]
                    };
                    q[base + d] * cos[t * rot + d] + rotated * sin[t * rot + d]
                } else {
                    q[base + d]
                };
                assert!(
                    (got[base + d] - want).abs() <= 1e-6,
                    "rotary[{h},{t},{d}]: {} vs {want}",
                    got[base + d]
                );
            }
        }
    }
}
