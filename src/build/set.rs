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

/// Each built graph's summary with the names of its files, in spec order.
pub type Written = Vec<(BuiltGraph, Vec<String>)>;

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
) -> Result<Written, SetError> {
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

/// One of the files [`stage_graphs`] can write per graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GraphFile {
    Pb,
    Txt,
    Dot,
}

impl GraphFile {
    fn suffix(self) -> &'static str {
        match self {
            GraphFile::Pb => ".hlo.pb",
            GraphFile::Txt => ".hlo.txt",
            GraphFile::Dot => ".dot",
        }
    }
}

/// What [`stage_graphs`] writes per graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    pub pb: bool,
    pub txt: bool,
    /// Graphviz view collapsed by scope.
    pub dot: bool,
    /// Graphs built at once (default: one per core).
    pub jobs: Option<usize>,
}

impl WriteOptions {
    /// The files written per graph, in writing order.
    fn files(self) -> impl Iterator<Item = GraphFile> + Clone {
        [
            (self.pb, GraphFile::Pb),
            (self.txt, GraphFile::Txt),
            (self.dot, GraphFile::Dot),
        ]
        .into_iter()
        .filter_map(|(on, file)| on.then_some(file))
    }
}

/// Builds every graph of `specs` and writes its files to temporaries in `dir` as soon as it is
/// built, each flushed to disk in the background while the next graphs build, after taking
/// away the folder's old `manifest.json` and any temporaries an interrupted run left: a
/// manifest must only ever describe the files beside it, so an interrupted run leaves none.
/// Nothing is in place until the returned [`StagedGraphs`] is committed
/// ([`StagedGraphs::commit`], then [`write_manifest`]; or [`StagedGraphs::commit_with_manifest`]);
/// dropping it removes the temporaries.
pub fn stage_graphs(
    model: &dyn DecoderModel,
    plan: &ShardPlan,
    specs: &[GraphSpec],
    dir: &std::path::Path,
    opts: WriteOptions,
    progress: &(dyn Fn() + Sync),
) -> Result<(Written, StagedGraphs), SetError> {
    use crate::files::{remove_stale_temporaries, Stager};
    let io = |path: std::path::PathBuf| move |error| SetError::Write { path, error };
    remove_stale_temporaries(dir).map_err(io(dir.to_path_buf()))?;
    let manifest = dir.join("manifest.json");
    match std::fs::remove_file(&manifest) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(manifest)(e)),
        _ => {}
    }
    let tp = plan.tp;
    let mut stager = Stager::new();
    // The files this set replaces are void now that their manifest is gone; freeing them
    // overlaps the build instead of slowing the renames at the end.
    stager.remove_in_background(specs.iter().flat_map(|spec| {
        let name = spec.name();
        opts.files()
            .map(move |file| dir.join(format!("{name}{}", file.suffix())))
    }));
    let staged = Mutex::new(stager);
    let write_files = |b: &BuiltGraph| -> Result<Vec<String>, SetError> {
        let name = b.recorded.spec.name();
        let mut files = Vec::new();
        let mut write = |file: String, bytes: &[u8]| -> Result<(), SetError> {
            let path = dir.join(&file);
            staged
                .lock()
                .expect("no panics under the lock")
                .stage(&path, bytes)
                .map_err(|error| SetError::Write { path, error })?;
            files.push(file);
            Ok(())
        };
        for file in opts.files() {
            let bytes: std::borrow::Cow<[u8]> = match file {
                GraphFile::Pb => (&b.bytes[..]).into(),
                GraphFile::Txt => b.text(tp).into_bytes().into(),
                GraphFile::Dot => super::to_dot(&b.recorded.graph, 3).into_bytes().into(),
            };
            write(format!("{name}{}", file.suffix()), &bytes)?;
        }
        Ok(files)
    };
    let built = build_all(model, plan, specs, opts.jobs, &write_files, progress);
    let stager = staged.into_inner().expect("no panics under the lock");
    // On an error the stager is dropped, which removes its temporaries.
    let built = built?;
    Ok((
        built,
        StagedGraphs {
            stager,
            dir: dir.to_path_buf(),
        },
    ))
}

/// A set's graph files written to temporaries and being flushed (from [`stage_graphs`]).
pub struct StagedGraphs {
    stager: crate::files::Stager,
    dir: std::path::PathBuf,
}

impl StagedGraphs {
    /// Waits until every file is on disk and renames each into place. The folder is not
    /// flushed: the manifest's write does that ([`write_manifest`]).
    pub fn commit(self) -> Result<(), SetError> {
        self.stager
            .commit()
            .map_err(|(path, error)| SetError::Write { path, error })
    }

    /// Stages `manifest` as the last file, waits until every file is on disk, renames the
    /// graph files into place and then the manifest, and flushes the folder once. The
    /// manifest is flushed beside the graphs instead of after them, and a crash at any point
    /// leaves either no manifest or one whose files are all complete.
    pub fn commit_with_manifest(mut self, manifest: &Manifest) -> Result<(), SetError> {
        let path = self.dir.join("manifest.json");
        self.stager
            .stage(&path, manifest.to_json_pretty().as_bytes())
            .map_err(|error| SetError::Write { path, error })?;
        self.stager
            .commit()
            .map_err(|(path, error)| SetError::Write { path, error })?;
        crate::files::sync_dir(&self.dir);
        Ok(())
    }
}

/// Writes `manifest` as `dir/manifest.json` (atomically).
pub fn write_manifest(dir: &std::path::Path, manifest: &Manifest) -> Result<(), SetError> {
    let path = dir.join("manifest.json");
    crate::files::write_atomic(&path, manifest.to_json_pretty().as_bytes())
        .map_err(|error| SetError::Write { path, error })
}
