//! The neuronx-cc driver against a fake compiler (`tests/fixtures/fake-neuronx-cc`). The real
//! neuronx-cc is not run here. Each test makes its own folder and a wrapper script that sets
//! the fake's environment, so tests can run side by side.
#![cfg(unix)]

use phi3_neuron::manifest::GraphKind;
use phi3_neuron::neuron::driver::{
    self, cache_key, compile_all, compiler_version, find_compiler, find_compiler_in, shell_quote,
    CompileJob, DriverError,
};
use phi3_neuron::neuron::{default_compiler_flags, Target};
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const FAKE_VERSION_LINE: &str = "NeuronX Compiler version 2.21.0.0+fake";

fn fake_compiler() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-neuronx-cc")
}

/// A fresh folder for one test (removed at the end of a passing test; a failing one keeps it).
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("neuron_driver_{name}_{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A script at `dir/<name>` that runs the fake compiler with these environment variables.
fn wrapper(dir: &Path, name: &str, env: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from("#!/bin/sh\n");
    for (k, v) in env {
        text.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    text.push_str(&format!(
        "exec {} \"$@\"\n",
        shell_quote(fake_compiler().to_str().unwrap())
    ));
    let path = dir.join(name);
    write_executable(&path, &text);
    path
}

/// The fake compiler, logging its argv to `dir/argv.log`.
fn logging_compiler(dir: &Path) -> (PathBuf, PathBuf) {
    let argv_log = dir.join("argv.log");
    let cc = wrapper(
        dir,
        "neuronx-cc",
        &[("FAKE_NEURONX_CC_ARGV_LOG", argv_log.to_str().unwrap())],
    );
    (cc, argv_log)
}

fn argv_lines(log: &Path) -> Vec<Vec<String>> {
    match fs::read_to_string(log) {
        Ok(text) => text
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn write_proto(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn job(dir: &Path, name: &str, pb: &Path, flags: Vec<String>) -> CompileJob {
    CompileJob {
        name: name.to_string(),
        hlo_pb: pb.to_path_buf(),
        neff: dir.join("out").join(format!("{name}.neff")),
        flags,
        log: dir.join("logs").join(format!("{name}.log")),
    }
}

fn expected_neff(proto: &[u8]) -> String {
    let digest: String = Sha256::digest(proto)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("NEFF{digest}\n")
}

fn tkg_flags() -> Vec<String> {
    default_compiler_flags(GraphKind::TokenGeneration, Target::Trn1)
}

#[test]
fn compile_runs_exact_argv_and_writes_neff() {
    let dir = test_dir("argv");
    let (cc, argv_log) = logging_compiler(&dir);
    let proto = b"hlo module proto bytes".to_vec();
    let pb = write_proto(&dir, "token_generation.hlo.pb", &proto);
    let cache = dir.join("cache");
    let flags = tkg_flags();
    let j = job(&dir, "token_generation", &pb, flags.clone());

    let results = compile_all(&cc, std::slice::from_ref(&j), 1, &cache).unwrap();
    assert_eq!(results.len(), 1);
    let out = results.into_iter().next().unwrap().unwrap();

    let lines = argv_lines(&argv_log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let argv = &lines[0];
    assert_eq!(argv[0], "compile");
    assert_eq!(argv[1], "--framework=XLA");
    assert_eq!(argv[2], pb.to_str().unwrap());
    assert_eq!(argv[3], "--output");
    // A miss compiles into a staging file under the cache, then copies it into place.
    let staged = Path::new(&argv[4]);
    assert!(staged.starts_with(driver::work_root(&cache)), "{staged:?}");
    assert!(argv[4].ends_with("/entry/model.neff"), "{staged:?}");
    // The flags, then the driver's --logfile in the same work folder.
    assert_eq!(&argv[5..argv.len() - 1], &flags[..]);
    let work = staged.parent().unwrap().parent().unwrap();
    assert_eq!(
        argv.last().unwrap(),
        &format!("--logfile={}/log-neuron-cc.txt", work.display())
    );
    assert!(flags.iter().any(|f| f == "--target=trn1"));

    // The NEFF, the outcome, the log.
    let neff = fs::read_to_string(&j.neff).unwrap();
    assert_eq!(neff, expected_neff(&proto));
    assert_eq!(out.name, "token_generation");
    assert_eq!(out.neff, j.neff);
    assert_eq!(out.neff_bytes, neff.len() as u64);
    assert!(!out.cache_hit);
    assert!(out.seconds >= 0.0);
    assert_eq!(out.cache_key, cache_key(&proto, &flags, FAKE_VERSION_LINE));
    // The recorded command has no --logfile: the work folder is gone after a success.
    let expected_command = format!(
        "{} compile --framework=XLA {} --output {} --auto-cast=none --model-type=transformer \
         '--tensorizer-options=--enable-ccop-compute-overlap --cc-pipeline-tiling-factor=1 \
         --vectorize-strided-dma' -O2 --internal-hlo2tensorizer-options=--verify-hlo=true \
         --lnc=1 --target=trn1",
        cc.display(),
        pb.display(),
        j.neff.display()
    );
    assert_eq!(out.command, expected_command);
    let log = fs::read_to_string(&j.log).unwrap();
    assert!(log.contains("pass 50 of 50"), "{log}");
    assert!(log.contains(&expected_command), "{log}");

    // The cache entry, and no staging left behind.
    let entry = cache.join(&out.cache_key);
    assert_eq!(
        fs::read_to_string(entry.join("model.neff")).unwrap(),
        expected_neff(&proto)
    );
    let stored_flags: Vec<String> =
        serde_json::from_str(&fs::read_to_string(entry.join("compile_flags.json")).unwrap())
            .unwrap();
    assert_eq!(stored_flags, flags);
    assert_eq!(
        fs::read_to_string(entry.join("command.txt"))
            .unwrap()
            .trim(),
        expected_command
    );
    assert!(
        !work.exists(),
        "a successful compile removes its work folder"
    );
    assert_eq!(fs::read_dir(driver::work_root(&cache)).unwrap().count(), 0);
    assert_eq!(fs::read_dir(dir.join("out")).unwrap().count(), 1);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn version_is_trimmed_stdout() {
    let dir = test_dir("version");
    assert_eq!(
        compiler_version(&fake_compiler()).unwrap(),
        FAKE_VERSION_LINE
    );
    let cc = wrapper(
        &dir,
        "cc2",
        &[("FAKE_NEURONX_CC_VERSION", "2.99.1.0+other")],
    );
    assert_eq!(
        compiler_version(&cc).unwrap(),
        "NeuronX Compiler version 2.99.1.0+other"
    );

    let broken = dir.join("broken-cc");
    write_executable(
        &broken,
        "#!/bin/sh\necho 'no license for you' >&2\nexit 3\n",
    );
    let err = compiler_version(&broken).unwrap_err();
    assert!(matches!(err, DriverError::Version { .. }));
    let msg = err.to_string();
    assert!(msg.contains("no license for you"), "{msg}");

    // compile_all reports it as the outer error, before any compile.
    let pb = write_proto(&dir, "g.hlo.pb", b"x");
    let err = compile_all(
        &broken,
        &[job(&dir, "g", &pb, vec![])],
        1,
        &dir.join("cache"),
    )
    .unwrap_err();
    assert!(matches!(err, DriverError::Version { .. }));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn missing_compiler_error_says_how_to_install() {
    let dir = test_dir("missing");
    let empty = dir.join("empty-bin");
    fs::create_dir_all(&empty).unwrap();

    let err = find_compiler_in(None, Some(empty.as_os_str())).unwrap_err();
    assert!(matches!(err, DriverError::CompilerNotFound { .. }));
    let msg = err.to_string();
    assert!(msg.contains("neuronx-cc not found"), "{msg}");
    assert!(msg.contains("not on PyPI"), "{msg}");
    assert!(msg.contains("pip install neuronx-cc"), "{msg}");
    assert!(
        msg.contains("--extra-index-url=https://pip.repos.neuron.amazonaws.com"),
        "{msg}"
    );
    assert!(msg.contains("--neuronx-cc"), "{msg}");

    let err = find_compiler_in(None, None).unwrap_err();
    assert!(err.to_string().contains("pip install"));

    let missing = dir.join("nope/neuronx-cc");
    let err = find_compiler(Some(&missing)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(missing.to_str().unwrap()), "{msg}");
    assert!(msg.contains("pip install"), "{msg}");

    // A file that is not executable does not count.
    let plain = dir.join("plain");
    fs::write(&plain, "#!/bin/sh\n").unwrap();
    assert!(find_compiler(Some(&plain)).is_err());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn compiler_is_found_explicitly_or_on_path() {
    let dir = test_dir("find");
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let cc = wrapper(&bin, "neuronx-cc", &[]);

    // The override wins.
    assert_eq!(
        find_compiler(Some(&fake_compiler())).unwrap(),
        fake_compiler()
    );
    // PATH search: skips folders without it.
    let path = std::env::join_paths([dir.join("empty"), bin.clone()]).unwrap();
    assert_eq!(find_compiler_in(None, Some(&path)).unwrap(), cc);
    // A bare override name is looked up on the search path too.
    assert_eq!(
        find_compiler_in(Some(Path::new("neuronx-cc")), Some(OsStr::new(&path))).unwrap(),
        cc
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn failed_compile_shows_log_tail_and_reproduce_command() {
    let dir = test_dir("fail");
    let (cc, argv_log) = logging_compiler(&dir);
    let pb = write_proto(&dir, "will_fail.hlo.pb", b"bad graph");
    let cache = dir.join("cache");
    let j = job(&dir, "context_encoding", &pb, tkg_flags());
    // A stale NEFF from an earlier run must not survive a failed compile.
    fs::create_dir_all(j.neff.parent().unwrap()).unwrap();
    fs::write(&j.neff, "old").unwrap();

    let results = compile_all(&cc, std::slice::from_ref(&j), 1, &cache).unwrap();
    let err = results.into_iter().next().unwrap().unwrap_err();
    let DriverError::CompileFailed(failure) = &err else {
        panic!("expected CompileFailed, got {err:?}");
    };
    let driver::CompileFailure {
        graph,
        status,
        log_tail,
        command,
        log,
        compiler_log,
        work_dir,
    } = failure.as_ref();
    assert_eq!(graph, "context_encoding");
    assert_eq!(status.code(), Some(1));
    assert_eq!(log, &j.log);
    assert!(log_tail.contains("ERROR 1: [NCC_FAKE001]"), "{log_tail}");
    assert!(log_tail.contains("ERROR 2: [NCC_FAKE002]"), "{log_tail}");
    assert!(log_tail.lines().count() <= driver::LOG_TAIL_LINES);
    assert!(!log_tail.contains("pass 1 of 50"), "{log_tail}");

    // The work folder stays, with the compiler's own log (its --logfile) and its artifacts.
    assert!(
        work_dir.starts_with(driver::work_root(&cache)),
        "{work_dir:?}"
    );
    assert_eq!(compiler_log, &work_dir.join("log-neuron-cc.txt"));
    let kept = fs::read_to_string(compiler_log).unwrap();
    assert!(
        kept.contains("pass 1 of 50") && kept.contains("NCC_FAKE002"),
        "{kept}"
    );
    assert!(work_dir.join("cwd/neuronxcc-fake/notes.txt").is_file());
    let argv = argv_lines(&argv_log).remove(0);
    assert_eq!(
        argv.last().unwrap(),
        &format!("--logfile={}", compiler_log.display())
    );

    // The command reruns the compile in the kept folder, into the job's NEFF path.
    assert!(command.starts_with(&format!(
        "cd {}/cwd && {} compile --framework=XLA {} --output {}",
        work_dir.display(),
        cc.display(),
        pb.display(),
        j.neff.display()
    )));
    assert!(command.contains("'--tensorizer-options="), "{command}");
    assert!(
        command.ends_with(&format!("--logfile={}", compiler_log.display())),
        "{command}"
    );

    let msg = err.to_string();
    assert!(msg.contains("context_encoding"), "{msg}");
    assert!(msg.contains("ERROR 2: [NCC_FAKE002]"), "{msg}");
    assert!(
        msg.contains(&format!("compiler log kept at {}", compiler_log.display())),
        "{msg}"
    );
    assert!(msg.contains(&format!("reproduce with: {command}")), "{msg}");

    // No NEFF, no cache entry; the full job log stays.
    assert!(!j.neff.exists());
    assert_eq!(fs::read_dir(dir.join("out")).unwrap().count(), 0);
    let entries: Vec<_> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("work")]);
    assert_eq!(fs::read_dir(driver::work_root(&cache)).unwrap().count(), 1);
    let full = fs::read_to_string(&j.log).unwrap();
    assert!(full.contains("pass 1 of 50") && full.contains("NCC_FAKE002"));
    assert!(full.contains("work folder kept"), "{full}");

    // Rerunning that command reproduces the failure, logging to the same file.
    let rerun = std::process::Command::new("sh")
        .args(["-c", command])
        .output()
        .unwrap();
    assert_eq!(rerun.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&rerun.stderr).contains("NCC_FAKE002"));
    fs::remove_file(&j.neff).unwrap(); // the fake's partial output

    // The same through the environment switch, on an innocent file name; a --logfile in the
    // flags is used instead of the driver's.
    let cc_fail = wrapper(&dir, "cc-fail", &[("FAKE_NEURONX_CC_FAIL", "1")]);
    let pb2 = write_proto(&dir, "graph.hlo.pb", b"good graph");
    let mine = dir.join("my-neuron-cc.log");
    let j2 = job(
        &dir,
        "g2",
        &pb2,
        vec![format!("--logfile={}", mine.display())],
    );
    let r = compile_all(&cc_fail, std::slice::from_ref(&j2), 1, &cache).unwrap();
    match &r[0] {
        Err(DriverError::CompileFailed(f)) => assert_eq!(f.compiler_log, mine),
        other => panic!("expected CompileFailed, got {other:?}"),
    }
    assert!(fs::read_to_string(&mine).unwrap().contains("NCC_FAKE002"));
    assert!(!j2.neff.exists());

    // A missing proto is an error, not a panic, and runs nothing.
    let j3 = job(&dir, "g3", &dir.join("missing.hlo.pb"), vec![]);
    let r = compile_all(&cc, std::slice::from_ref(&j3), 1, &cache).unwrap();
    assert!(matches!(r[0], Err(DriverError::Io { .. })));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn flags_per_graph_kind_and_target() {
    let words = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        default_compiler_flags(GraphKind::ContextEncoding, Target::Trn1),
        words(&[
            "--auto-cast=none",
            "--model-type=transformer",
            "--tensorizer-options=--enable-ccop-compute-overlap --cc-pipeline-tiling-factor=2 \
             --vectorize-strided-dma",
            "-O1",
            "--internal-hlo2tensorizer-options=--modular-flow-mac-threshold=10 --verify-hlo=true",
            "--lnc=1",
            "--target=trn1",
        ])
    );
    assert_eq!(
        default_compiler_flags(GraphKind::TokenGeneration, Target::Trn2),
        words(&[
            "--auto-cast=none",
            "--model-type=transformer",
            "--tensorizer-options=--enable-ccop-compute-overlap --cc-pipeline-tiling-factor=1 \
             --vectorize-strided-dma",
            "-O2",
            "--internal-hlo2tensorizer-options=--verify-hlo=true",
            "--lnc=2",
            "--target=trn2",
        ])
    );
    let trn3 = default_compiler_flags(GraphKind::TokenGeneration, Target::Trn3);
    assert!(
        trn3.ends_with(&words(&["--lnc=2", "--target=trn3"])),
        "{trn3:?}"
    );
    let inf2 = default_compiler_flags(GraphKind::ContextEncoding, Target::Inf2);
    assert!(
        inf2.ends_with(&words(&["--lnc=1", "--target=trn1"])),
        "{inf2:?}"
    );
    for t in Target::ALL {
        assert_eq!(Target::parse(t.name()), Some(t));
    }
}

#[test]
fn same_proto_and_flags_hit_the_cache() {
    let dir = test_dir("hit");
    let (cc, argv_log) = logging_compiler(&dir);
    let proto = b"the same graph".to_vec();
    let pb = write_proto(&dir, "g.hlo.pb", &proto);
    let cache = dir.join("cache");

    let first = job(&dir, "first", &pb, tkg_flags());
    let a = compile_all(&cc, &[first], 1, &cache)
        .unwrap()
        .remove(0)
        .unwrap();
    assert!(!a.cache_hit);
    assert_eq!(argv_lines(&argv_log).len(), 1);

    // A second build (another output path) copies from the cache without running the compiler.
    let second = job(&dir, "second", &pb, tkg_flags());
    let b = compile_all(&cc, std::slice::from_ref(&second), 1, &cache)
        .unwrap()
        .remove(0)
        .unwrap();
    assert!(b.cache_hit);
    assert_eq!(argv_lines(&argv_log).len(), 1, "compiler ran again");
    assert_eq!(b.cache_key, a.cache_key);
    assert_eq!(b.neff_bytes, a.neff_bytes);
    assert_eq!(
        fs::read_to_string(&second.neff).unwrap(),
        expected_neff(&proto)
    );
    let log = fs::read_to_string(&second.log).unwrap();
    assert!(log.starts_with("cache hit"), "{log}");

    // Same key twice in one batch: compiled once.
    let pb2 = write_proto(&dir, "g2.hlo.pb", b"another graph");
    let jobs = [
        job(&dir, "twin_a", &pb2, tkg_flags()),
        job(&dir, "twin_b", &pb2, tkg_flags()),
    ];
    let r = compile_all(&cc, &jobs, 2, &cache).unwrap();
    let hits: Vec<bool> = r.iter().map(|o| o.as_ref().unwrap().cache_hit).collect();
    assert_eq!(hits.iter().filter(|h| **h).count(), 1, "{hits:?}");
    assert_eq!(argv_lines(&argv_log).len(), 2);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn changed_flags_or_compiler_version_miss_the_cache() {
    let dir = test_dir("miss");
    let (cc, argv_log) = logging_compiler(&dir);
    let pb = write_proto(&dir, "g.hlo.pb", b"graph");
    let cache = dir.join("cache");

    let run = |cc: &Path, name: &str, flags: Vec<String>| {
        compile_all(cc, &[job(&dir, name, &pb, flags)], 1, &cache)
            .unwrap()
            .remove(0)
            .unwrap()
    };
    let a = run(
        &cc,
        "trn1",
        default_compiler_flags(GraphKind::TokenGeneration, Target::Trn1),
    );
    let b = run(
        &cc,
        "trn2",
        default_compiler_flags(GraphKind::TokenGeneration, Target::Trn2),
    );
    assert!(!a.cache_hit && !b.cache_hit);
    assert_ne!(a.cache_key, b.cache_key);
    assert_eq!(argv_lines(&argv_log).len(), 2);
    let lines = argv_lines(&argv_log);
    assert!(lines[1].iter().any(|w| w == "--target=trn2"));

    // Same flags, another compiler version: a miss.
    let argv_log_str = argv_log.to_str().unwrap();
    let cc_new = wrapper(
        &dir,
        "neuronx-cc-new",
        &[
            ("FAKE_NEURONX_CC_ARGV_LOG", argv_log_str),
            ("FAKE_NEURONX_CC_VERSION", "2.22.0.0+fake"),
        ],
    );
    let c = run(
        &cc_new,
        "trn1_new",
        default_compiler_flags(GraphKind::TokenGeneration, Target::Trn1),
    );
    assert!(!c.cache_hit);
    assert_ne!(c.cache_key, a.cache_key);
    assert_eq!(argv_lines(&argv_log).len(), 3);

    // And back to the old compiler and flags: a hit.
    let d = run(
        &cc,
        "trn1_again",
        default_compiler_flags(GraphKind::TokenGeneration, Target::Trn1),
    );
    assert!(d.cache_hit);
    assert_eq!(d.cache_key, a.cache_key);
    assert_eq!(argv_lines(&argv_log).len(), 3);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn parallel_compiles_keep_job_order() {
    let dir = test_dir("parallel");
    let argv_log = dir.join("argv.log");
    let running = dir.join("running");
    let cc = wrapper(
        &dir,
        "neuronx-cc",
        &[
            ("FAKE_NEURONX_CC_ARGV_LOG", argv_log.to_str().unwrap()),
            ("FAKE_NEURONX_CC_SLEEP", "1"),
            ("FAKE_NEURONX_CC_RUNNING_DIR", running.to_str().unwrap()),
        ],
    );
    let cache = dir.join("cache");
    let names = ["g0", "g1", "g2_fail", "g3", "g4"];
    let jobs: Vec<CompileJob> = names
        .iter()
        .map(|n| {
            let pb = write_proto(&dir, &format!("{n}.hlo.pb"), n.as_bytes());
            job(&dir, n, &pb, tkg_flags())
        })
        .collect();

    let results = compile_all(&cc, &jobs, 2, &cache).unwrap();
    assert_eq!(results.len(), names.len());
    for (r, (j, n)) in results.iter().zip(jobs.iter().zip(names)) {
        if n.contains("fail") {
            match r {
                Err(DriverError::CompileFailed(f)) => assert_eq!(f.graph, n),
                other => panic!("{n}: expected CompileFailed, got {other:?}"),
            }
            assert!(!j.neff.exists());
        } else {
            let o = r.as_ref().unwrap();
            assert_eq!(o.name, n);
            assert_eq!(o.neff, j.neff);
            assert_eq!(
                fs::read_to_string(&j.neff).unwrap(),
                expected_neff(n.as_bytes())
            );
        }
    }
    assert_eq!(argv_lines(&argv_log).len(), names.len());

    // Never more than two compilers at once; with 1 s each, two did overlap.
    let counts: Vec<usize> = fs::read_to_string(dir.join("running.log"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), names.len());
    assert!(counts.iter().all(|c| *c <= 2), "{counts:?}");
    assert!(counts.contains(&2), "{counts:?}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn shell_quoting() {
    assert_eq!(shell_quote("--lnc=1"), "--lnc=1");
    assert_eq!(shell_quote("/a/b_c.hlo.pb"), "/a/b_c.hlo.pb");
    assert_eq!(shell_quote(""), "''");
    assert_eq!(shell_quote("a b"), "'a b'");
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
    assert_eq!(shell_quote("$HOME"), "'$HOME'");
}

/// Moving model code by a line changes the metadata, not the graph: the NEFF cache key must
/// not change, while a real change to the module must.
#[test]
fn cache_key_ignores_source_locations_only() {
    use phi3_neuron::dsl::{DType, GraphBuilder};
    use phi3_neuron::hlo::{lower, LowerOptions};
    use prost::Message;
    let b = GraphBuilder::new("key");
    let x = b.parameter("x", DType::F32, &[4]).unwrap();
    let y = x.exp().unwrap();
    let m = lower(&b.finish(&[&y]).unwrap(), &LowerOptions::default()).unwrap();
    let flags = vec!["--target=trn1".to_string()];
    let base = cache_key(&m.encode_to_vec(), &flags, "v1");

    let mut moved = m.clone();
    for i in moved
        .computations
        .iter_mut()
        .flat_map(|c| c.instructions.iter_mut())
    {
        if let Some(md) = &mut i.metadata {
            md.source_line += 7;
            md.source_file = "/elsewhere/src/models/phi3/graph.rs".into();
        }
    }
    assert_ne!(moved.encode_to_vec(), m.encode_to_vec());
    assert_eq!(cache_key(&moved.encode_to_vec(), &flags, "v1"), base);

    let mut changed = m.clone();
    let entry = changed.computations.last_mut().unwrap();
    let exp = entry
        .instructions
        .iter_mut()
        .find(|i| i.opcode == "exponential")
        .unwrap();
    exp.opcode = "tanh".into();
    assert_ne!(cache_key(&changed.encode_to_vec(), &flags, "v1"), base);
}

// ---------------------------------------------------------------------------------------------
// Expected NEFF input/output names

fn aliased_module(neff_attributes: bool) -> xla_proto::HloModuleProto {
    use phi3_neuron::dsl::{DType, GraphBuilder};
    use phi3_neuron::hlo::{lower, LowerOptions};
    let b = GraphBuilder::new("names");
    let x = b.parameter("x", DType::F32, &[4]).unwrap();
    let cache = b.parameter("cache", DType::F32, &[8]).unwrap();
    let at = b.scalar(DType::S32, 0.0).unwrap();
    let y = x.exp().unwrap();
    let written = cache.dynamic_update_slice(&x, &[&at]).unwrap();
    b.alias_output(1, &cache).unwrap();
    let g = b.finish(&[&y, &written]).unwrap();
    lower(
        &g,
        &LowerOptions {
            neff_io_names: neff_attributes,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn neff_names_follow_the_alias_kind_and_the_compiler_version() {
    use phi3_neuron::neuron::{neff_io_names, MUST_ALIAS_SUFFIX};
    use xla_proto::Kind;
    let may = aliased_module(true);
    assert_eq!(
        may.input_output_alias.as_ref().unwrap().entries[0].kind,
        Kind::MayAlias as i32
    );
    let names = neff_io_names(&may, None);
    assert_eq!(names.inputs, ["input0", "input1"]);
    assert_eq!(names.outputs, ["output0", "output1"]);
    assert_eq!(names.source, "expected");
    assert_eq!(names.compiler_version, None);

    // A must-alias input gets the suffix from 2.23 on, and when the version is unknown.
    let mut must = may.clone();
    must.input_output_alias.as_mut().unwrap().entries[0].kind = Kind::MustAlias as i32;
    let suffixed = vec!["input0".to_string(), format!("input1{MUST_ALIAS_SUFFIX}")];
    assert_eq!(suffixed[1], "input1.must_alias_input");
    for (version, expected) in [
        (None, &suffixed),
        (
            Some("NeuronX Compiler version 2.23.6484.0+3b612583"),
            &suffixed,
        ),
        (
            Some("NeuronX Compiler version 2.27.5334.0\n\nPython version 3.10"),
            &suffixed,
        ),
        (Some("a compiler of no known version"), &suffixed),
    ] {
        assert_eq!(
            &neff_io_names(&must, version).inputs,
            expected,
            "{version:?}"
        );
    }
    let old = neff_io_names(&must, Some(FAKE_VERSION_LINE));
    assert_eq!(old.inputs, ["input0", "input1"]);
    assert_eq!(old.compiler_version.as_deref(), Some("2.21.0.0+fake"));
    assert_eq!(
        neff_io_names(&must, Some("NeuronX Compiler version 2.23.1.0"))
            .compiler_version
            .as_deref(),
        Some("2.23.1.0")
    );

    // An alias entry with its kind unset is must-alias (as XLA reads it).
    let mut unset = may.clone();
    unset.input_output_alias.as_mut().unwrap().entries[0].kind = Kind::UndefinedAlias as i32;
    assert_eq!(neff_io_names(&unset, None).inputs, suffixed);

    // Without the frontend attributes the names follow the same input<i>/output<k> scheme.
    let bare = aliased_module(false);
    assert!(bare.computations.iter().all(|c| c
        .instructions
        .iter()
        .all(|i| i.frontend_attributes.is_none())));
    let names = neff_io_names(&bare, Some("2.22.0"));
    assert_eq!(names.inputs, ["input0", "input1"]);
    assert_eq!(names.outputs, ["output0", "output1"]);

    // The names come from the attributes when they are there.
    let mut renamed = must.clone();
    let id = renamed.entry_computation_id;
    let entry = renamed
        .computations
        .iter_mut()
        .find(|c| c.id == id)
        .unwrap();
    let root = entry.root_id;
    for i in &mut entry.instructions {
        let (key, value) = if i.id == root {
            ("neff_output_names", "logits,cache_out")
        } else if i.opcode == "parameter" && i.parameter_number == 1 {
            ("neff_input_names", "kv")
        } else {
            continue;
        };
        let attrs = &mut i.frontend_attributes.as_mut().unwrap().map;
        attrs.insert(key.into(), value.into());
    }
    let names = neff_io_names(&renamed, None);
    assert_eq!(names.inputs, ["input0", "kv.must_alias_input"]);
    assert_eq!(names.outputs, ["logits", "cache_out"]);
}
