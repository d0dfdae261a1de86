//! Building a whole graph set: every graph, several at once, each handed to a writer as soon
//! as it is built and then slimmed to its summary (so a large set never holds every module);
//! and the in-memory form of a set (manifest plus protos) that tests and the `phi3` binary's
//! convenience path run without touching the disk.

use super::manifest::{graph_entry, manifest, weights_table, GraphArtifact, SetInfo};
use super::{build_graph, default_jobs, BuiltGraph, SetError};
use crate::manifest::Manifest;
use crate::models::decoder::{DecoderModel, GraphSpec};
use crate::neuron::{default_compiler_flags, Target};
use crate::parallel::ShardPlan;
use std::collections::HashMap;
use std::sync::Mutex;

/// Writes one built graph's files; returns their names (relative to the set's folder).
pub type WriteFiles<'a> = dyn Fn(&BuiltGraph) -> Result<Vec<String>, SetError> + Sync + 'a;

/// Builds every graph of `specs`, `jobs` at a time (default: one per core), keeping the input
/// order. Each graph goes through `write` and is then slimmed to its summary; `progress` is
/// called once per finished graph.
pub fn build_all(
    model: &dyn DecoderModel,
    plan: &ShardPlan,
    specs: &[GraphSpec],
    jobs: Option<usize>,
    write: &WriteFiles<'_>,
    progress: &(dyn Fn() + Sync),
) -> Result<Vec<(BuiltGraph, Vec<String>)>, SetError> {
    let jobs = jobs
        .unwrap_or_else(default_jobs)
        .clamp(1, specs.len().max(1));
    let next = Mutex::new(0usize);
    type Slot = Option<Result<(BuiltGraph, Vec<String>), SetError>>;
    let results: Mutex<Vec<Slot>> = Mutex::new((0..specs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = {
                    let mut n = next.lock().expect("no panics while holding the lock");
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(spec) = specs.get(i) else { break };
                let r = build_graph(model, plan, spec)
                    .map_err(SetError::from)
                    .and_then(|mut b| {
                        let files = write(&b)?;
                        b.drop_module();
                        Ok((b, files))
                    });
                progress();
                results.lock().expect("no panics while holding the lock")[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .expect("no panics while holding the lock")
        .into_iter()
        .map(|r| r.expect("every graph was built"))
        .collect()
}

/// A set held in memory: its manifest and each graph's serialized proto, by graph name.
pub struct MemorySet {
    pub manifest: Manifest,
    pub protos: HashMap<String, Vec<u8>>,
}

/// Builds `specs` (which must share one option set) into memory. The manifest goes through
/// its JSON text and back, so an in-memory set is read exactly as a written one.
pub fn memory_set(
    model: &dyn DecoderModel,
    plan: &ShardPlan,
    specs: &[GraphSpec],
    target: Target,
) -> Result<MemorySet, SetError> {
    let mut built = Vec::with_capacity(specs.len());
    for spec in specs {
        built.push(build_graph(model, plan, spec)?);
    }
    let refs: Vec<&BuiltGraph> = built.iter().collect();
    let weights = weights_table(&refs)?;
    let entries = built
        .iter()
        .map(|b| {
            graph_entry(
                model,
                &GraphArtifact {
                    built: b,
                    files: vec![format!("{}.hlo.pb", b.recorded.spec.name())],
                    compiler_flags: default_compiler_flags(b.recorded.spec.kind, target),
                    compile: None,
                },
            )
        })
        .collect();
    let options = specs.first().map(|s| s.options.clone()).unwrap_or_default();
    let set = SetInfo {
        model,
        plan,
        dtype: specs
            .first()
            .map(|s| s.dtype)
            .unwrap_or(crate::ir::DType::F32),
        target: target.name(),
        options: &options,
        specs,
    };
    let m = manifest(&set, weights, entries);
    let text = m.to_json_pretty();
    let manifest = Manifest::parse(
        text.as_bytes(),
        std::path::Path::new("<memory>/manifest.json"),
    )?;
    let protos = built
        .into_iter()
        .map(|b| (b.recorded.spec.name(), b.bytes))
        .collect();
    Ok(MemorySet { manifest, protos })
}
