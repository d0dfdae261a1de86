//! Continuous batching on the host: many requests served over the set's `max_batch_size`
//! cache rows. Requests are prefilled into free rows (up to `ctx_batch_size` per call) while
//! the others decode; every active sequence decodes in one token-generation call per step, at
//! its own position, in the bucket the furthest of them needs; a row is freed as soon as its
//! sequence finishes (its `max_new_tokens`, or a stop token).
//!
//! Each request's uniforms for the on-device sampler come from its own seeded stream, one per
//! generated token, so a request's tokens do not depend on what it is batched with.
//!
//! Hugging Face's Phi-3 LongRoPE rule applies per sequence: when a sequence first grows past
//! `reencode_past` tokens while its cache was written below that length, that sequence (alone)
//! is encoded again from all its tokens, into its own row, instead of decoding a step. The
//! graphs choose LongRoPE factors per row, so the sequences it shares a batch with keep theirs.

use super::{DecodeRow, Engine, KvState, PrefillRow, RowOut, RunError, SamplerRow};

/// How a request picks its tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    Greedy,
    /// The on-device sampler's rule (`models::decoder::sampling`), with uniforms from `seed`.
    Sample {
        top_k: u32,
        top_p: f32,
        temperature: f32,
        seed: u64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub prompt: Vec<i32>,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Tokens that end generation (they are kept as the last token).
    pub stop: Vec<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was generated.
    Eos,
    /// `max_new_tokens` were generated.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The new tokens only.
    pub tokens: Vec<i32>,
    pub finish_reason: FinishReason,
}

/// A request's uniform stream (SplitMix64), 24-bit uniforms in [0, 1).
struct Uniforms(u64);

impl Uniforms {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// The `n`-th uniform of the stream seeded with `seed` (what [`serve`] feeds the sampler for
/// a request's `n`-th generated token).
pub fn uniform(seed: u64, n: usize) -> f32 {
    let mut u = Uniforms(seed);
    let mut x = 0.0;
    for _ in 0..=n {
        x = u.next();
    }
    x
}

struct Active {
    request: usize,
    row: usize,
    tokens: Vec<i32>,
    generated: usize,
    /// Tokens the row's cache holds.
    cached: usize,
    uniforms: Uniforms,
}

impl Active {
    fn sampler(&mut self, r: &Request) -> SamplerRow {
        match r.sampling {
            Sampling::Greedy => SamplerRow::GREEDY,
            Sampling::Sample {
                top_k,
                top_p,
                temperature,
                ..
            } => SamplerRow {
                top_k: top_k as f32,
                top_p,
                temperature,
                uniform: self.uniforms.next(),
            },
        }
    }
}

/// Checks what can be known before running: the prompt fits a bucket, the sequence fits the
/// cache and a re-encode (if the sequence will need one) fits a bucket.
fn check(engine: &Engine, r: &Request) -> Result<(), String> {
    let vocab = engine.manifest().model.vocab_size as i32;
    if r.prompt.is_empty() {
        return Err("the prompt is empty".into());
    }
    if let Some(t) = r.prompt.iter().find(|&&t| t < 0 || t >= vocab) {
        return Err(format!(
            "token id {t} is outside the vocabulary [0, {vocab})"
        ));
    }
    if r.max_new_tokens == 0 {
        return Err("max_new_tokens must be at least 1".into());
    }
    let largest = engine.max_prompt();
    if r.prompt.len() > largest {
        return Err(format!(
            "a prompt of {} tokens is longer than the largest context-encoding bucket ({largest})",
            r.prompt.len()
        ));
    }
    // The last new token is never fed back, so the cache needs prompt + new - 1 positions.
    let cache = engine.max_seq_len();
    if r.prompt.len() + r.max_new_tokens - 1 > cache {
        return Err(format!(
            "{} prompt + {} new tokens exceed the cache length {cache}",
            r.prompt.len(),
            r.max_new_tokens
        ));
    }
    if let Some(past) = engine.manifest().model.reencode_past {
        let crosses = r.prompt.len() <= past && r.prompt.len() + r.max_new_tokens - 1 > past;
        if crosses && largest <= past {
            return Err(format!(
                "the sequence grows past {past} tokens, where the model's LongRoPE rule re-encodes \
                 it, but the largest context-encoding bucket holds {largest}: build the set \
                 with a bucket of at least {}",
                past + 1
            ));
        }
    }
    if !engine.samples_on_device() && matches!(r.sampling, Sampling::Sample { .. }) {
        return Err(
            "sampling needs graphs with the on-device sampler (build-graphs --sampling on-device)"
                .into(),
        );
    }
    Ok(())
}

/// Serves every request, returning one result per request, in input order: its completion,
/// or why it could not be served. `on_token(request, token)` sees each token as it comes.
pub fn serve(
    engine: &Engine,
    requests: Vec<Request>,
    on_token: &mut dyn FnMut(usize, i32),
) -> Result<Vec<Result<Completion, String>>, RunError> {
    let mut results: Vec<Option<Result<Completion, String>>> = vec![None; requests.len()];
    let mut pending = std::collections::VecDeque::new();
    for (i, r) in requests.iter().enumerate() {
        match check(engine, r) {
            Ok(()) => pending.push_back(i),
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    let rows = engine.max_batch_size();
    let ctx_batch = engine.manifest().buckets.ctx_batch_size.max(1) as usize;
    let tkg_batch = engine.manifest().buckets.tkg_batch_size.max(1) as usize;
    let reencode = engine.manifest().model.reencode_past;
    let mut free: Vec<usize> = (0..rows).rev().collect();
    let mut active: Vec<Active> = Vec::new();
    let mut state: KvState = engine.new_state()?;

    // Records a row's new token; returns whether its sequence is done.
    let mut take =
        |a: &mut Active, out: &RowOut, results: &mut Vec<Option<Result<Completion, String>>>| {
            let r = &requests[a.request];
            let t = out.token();
            a.tokens.push(t);
            a.generated += 1;
            on_token(a.request, t);
            let reason = if r.stop.contains(&t) {
                Some(FinishReason::Eos)
            } else if a.generated == r.max_new_tokens {
                Some(FinishReason::Length)
            } else {
                None
            };
            if let Some(finish_reason) = reason {
                results[a.request] = Some(Ok(Completion {
                    tokens: a.tokens[r.prompt.len()..].to_vec(),
                    finish_reason,
                }));
                true
            } else {
                false
            }
        };

    loop {
        // Admit waiting requests into free rows, ctx_batch at a time.
        while !pending.is_empty() && !free.is_empty() {
            let mut group = Vec::new();
            while group.len() < ctx_batch && !pending.is_empty() && !free.is_empty() {
                let request = pending.pop_front().expect("not empty");
                let row = free.pop().expect("not empty");
                let seed = match requests[request].sampling {
                    Sampling::Sample { seed, .. } => seed,
                    Sampling::Greedy => 0,
                };
                group.push(Active {
                    request,
                    row,
                    tokens: requests[request].prompt.clone(),
                    generated: 0,
                    cached: requests[request].prompt.len(),
                    uniforms: Uniforms(seed),
                });
            }
            let samplers: Vec<SamplerRow> = group
                .iter_mut()
                .map(|a| {
                    let r = &requests[a.request];
                    a.sampler(r)
                })
                .collect();
            let rows_in: Vec<PrefillRow<'_>> = group
                .iter()
                .zip(&samplers)
                .map(|(a, s)| PrefillRow {
                    seq_id: a.row,
                    tokens: &a.tokens,
                    sampler: *s,
                })
                .collect();
            let outs = engine.prefill(&mut state, &rows_in)?;
            for (mut a, out) in group.into_iter().zip(&outs) {
                if take(&mut a, out, &mut results) {
                    free.push(a.row);
                } else {
                    active.push(a);
                }
            }
        }
        if active.is_empty() {
            if pending.is_empty() {
                break;
            }
            continue;
        }
        // Sequences that just crossed the re-encode boundary are encoded again, alone.
        let mut i = 0;
        let mut stepped = vec![false; active.len()];
        while i < active.len() {
            let a = &active[i];
            let cross = reencode.is_some_and(|past| a.tokens.len() > past && a.cached <= past);
            if cross {
                let request = active[i].request;
                let sampler = active[i].sampler(&requests[request]);
                let a = &active[i];
                let row = PrefillRow {
                    seq_id: a.row,
                    tokens: &a.tokens,
                    sampler,
                };
                let out = engine.prefill(&mut state, &[row])?;
                let a = &mut active[i];
                a.cached = a.tokens.len();
                stepped[i] = true;
                if take(a, &out[0], &mut results) {
                    free.push(a.row);
                    active.remove(i);
                    stepped.remove(i);
                    continue;
                }
            }
            i += 1;
        }
        // Everyone else decodes one token, together (tkg_batch at a time).
        let todo: Vec<usize> = (0..active.len()).filter(|&i| !stepped[i]).collect();
        let mut finished = Vec::new();
        for chunk in todo.chunks(tkg_batch) {
            let mut rows_in = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let request = active[i].request;
                let sampler = active[i].sampler(&requests[request]);
                let a = &active[i];
                rows_in.push(DecodeRow {
                    seq_id: a.row,
                    token: *a.tokens.last().expect("a prompt is never empty"),
                    position: a.tokens.len() - 1,
                    sampler,
                });
            }
            let outs = engine.decode(&mut state, &rows_in)?;
            for (&i, out) in chunk.iter().zip(&outs) {
                let a = &mut active[i];
                a.cached = a.tokens.len();
                if take(a, out, &mut results) {
                    finished.push(i);
                }
            }
        }
        for &i in finished.iter().rev() {
            free.push(active[i].row);
            active.remove(i);
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every request finished or was rejected"))
        .collect())
}
