//! The neuronx-cc driver: find the compiler, ask its version, and compile `HloModuleProto`
//! files to NEFFs, several at once, through a content-addressed cache.
//!
//! Each compile runs the form every observed caller uses (see `neuron.md`, "The neuronx-cc
//! command line"):
//!
//! ```text
//! neuronx-cc compile --framework=XLA <graph.hlo.pb> --output <graph.neff> <flags...>
//! ```
//!
//! `--target`, `--lnc` and the rest come in through the flags
//! ([`default_compiler_flags`](super::default_compiler_flags) already holds them). The
//! compiler's stdout and stderr both go to the job's log file.
//!
//! **Work folder.** Each compile runs in its own folder `<cache_dir>/work/<key>.<pid>.<n>/`:
//! the compiler's current directory is `cwd/` in it (neuronx-cc leaves its artifacts there),
//! the NEFF is staged in `entry/`, and the driver adds
//! `--logfile=<work folder>/log-neuron-cc.txt` to the command (unless the flags already name
//! a `--logfile`). A successful compile removes the folder; **a failed one keeps it**, so the
//! compiler's own log and artifacts can be read (or sent to AWS) afterwards.
//!
//! **Cache.** The key is `sha256(proto bytes ‖ NUL ‖ flags joined by '\n' ‖ NUL ‖ the compiler's
//! --version output)`, as lowercase hex; the per-run `--logfile` is not part of it. An entry
//! is a folder `<cache_dir>/<key>/` holding `model.neff`, `compile_flags.json` (the flags as a
//! JSON array), `command.txt` (the command line) and `compiler_version.txt`. The entry is
//! staged in the work folder and renamed into place as a whole, so an entry with a
//! `model.neff` is always complete. A hit copies the cached NEFF to the job's output without
//! running the compiler.
//!
//! **Failure.** A failed compile leaves no NEFF at the job's output path (a stale one from an
//! earlier run is removed too) and no cache entry; the error carries the tail of the log, the
//! kept compiler log and work folder, and a copy-pasteable command that reruns the compile in
//! that folder.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

/// The compiler's executable name, looked up on `PATH`.
pub const COMPILER_NAME: &str = "neuronx-cc";

/// How many lines of compiler output a [`DriverError::CompileFailed`] carries.
pub const LOG_TAIL_LINES: usize = 40;

/// Where neuronx-cc comes from, for the "not found" error.
pub const INSTALL_HINT: &str = "neuronx-cc ships with the AWS Neuron SDK and is not on PyPI; \
install it from the Neuron pip repository, e.g. \
`python -m pip install neuronx-cc==2.* --extra-index-url=https://pip.repos.neuron.amazonaws.com` \
(or use a Neuron DLAMI / Deep Learning Container), then put it on PATH or pass --neuronx-cc PATH";

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// No usable compiler: `searched` says where we looked.
    #[error("neuronx-cc not found ({searched}). {hint}", hint = INSTALL_HINT)]
    CompilerNotFound { searched: String },

    /// `neuronx-cc --version` could not run or failed.
    #[error("`{} --version` failed: {detail}", compiler.display())]
    Version { compiler: PathBuf, detail: String },

    /// A file-system or process-spawn error, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// The compiler ran and failed.
    #[error(transparent)]
    CompileFailed(Box<CompileFailure>),
}

/// A compile that ran and failed: what [`DriverError::CompileFailed`] carries.
#[derive(Debug, thiserror::Error)]
#[error(
    "neuronx-cc failed to compile graph `{graph}` ({status}); last lines of {}:\n{log_tail}\n\
     compiler log kept at {} (work folder {})\nreproduce with: {command}",
    log.display(), compiler_log.display(), work_dir.display()
)]
pub struct CompileFailure {
    pub graph: String,
    pub status: ExitStatus,
    /// The last [`LOG_TAIL_LINES`] lines of the compiler's stdout+stderr (of its `--logfile`
    /// when those were empty).
    pub log_tail: String,
    /// A shell command line that reruns the compile in the kept work folder (output to the
    /// job's NEFF path, log to `compiler_log`).
    pub command: String,
    /// The job's log: the compiler's stdout+stderr.
    pub log: PathBuf,
    /// The compiler's own log (`--logfile`), kept.
    pub compiler_log: PathBuf,
    /// The kept work folder: the compiler's current directory is `cwd/` in it.
    pub work_dir: PathBuf,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> DriverError {
    let context = context.into();
    move |source| DriverError::Io { context, source }
}

/// One graph to compile.
#[derive(Clone, Debug)]
pub struct CompileJob {
    /// The graph's name, for messages and outcomes.
    pub name: String,
    /// The serialized `HloModuleProto`.
    pub hlo_pb: PathBuf,
    /// Where the NEFF goes.
    pub neff: PathBuf,
    /// neuronx-cc flags after the output (including `--target=…`).
    pub flags: Vec<String>,
    /// Where the compiler's stdout+stderr go (on a hit: one line saying so).
    pub log: PathBuf,
}

/// A finished compile (or cache hit).
#[derive(Clone, Debug)]
pub struct CompileOutcome {
    pub name: String,
    /// The NEFF written (the job's `neff`).
    pub neff: PathBuf,
    pub neff_bytes: u64,
    /// Wall-clock seconds for this job (hashing, compiling or copying, storing).
    pub seconds: f64,
    pub cache_hit: bool,
    pub cache_key: String,
    /// The command line that produces this NEFF (what a miss ran, with the final output path).
    pub command: String,
}

// ---------------------------------------------------------------------------------------------
// Finding the compiler and its version

/// The compiler to use: `explicit` (the `--neuronx-cc PATH` override) if given, else
/// `neuronx-cc` on `PATH`.
pub fn find_compiler(explicit: Option<&Path>) -> Result<PathBuf, DriverError> {
    find_compiler_in(explicit, std::env::var_os("PATH").as_deref())
}

/// [`find_compiler`] with the search path given (`None`: no search path).
///
/// An explicit path that names an existing file is taken as is; an explicit bare name (no
/// `/`) that is not a file in the current folder is looked up on the search path.
pub fn find_compiler_in(
    explicit: Option<&Path>,
    search_path: Option<&OsStr>,
) -> Result<PathBuf, DriverError> {
    if let Some(p) = explicit {
        if is_executable(p) {
            return Ok(p.to_path_buf());
        }
        let bare = p.components().count() == 1 && !p.as_os_str().is_empty();
        if bare {
            if let Some(found) = search(p.as_os_str(), search_path) {
                return Ok(found);
            }
        }
        let why = if p.is_file() {
            "is not executable"
        } else {
            "does not exist"
        };
        return Err(DriverError::CompilerNotFound {
            searched: format!("--neuronx-cc {} {why}", p.display()),
        });
    }
    search(OsStr::new(COMPILER_NAME), search_path).ok_or_else(|| DriverError::CompilerNotFound {
        searched: match search_path {
            Some(sp) if !sp.is_empty() => format!("not on PATH={}", sp.to_string_lossy()),
            _ => "PATH is empty".to_string(),
        },
    })
}

fn search(name: &OsStr, search_path: Option<&OsStr>) -> Option<PathBuf> {
    let sp = search_path?;
    std::env::split_paths(sp)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|cand| is_executable(cand))
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn is_executable(p: &Path) -> bool {
    p.is_file()
}

/// Runs `run` again while it fails with ETXTBSY ("text file busy"): exec of a file that some
/// other thread of this process still holds open for writing (a compiler just installed or a
/// wrapper script just written, whose descriptor a concurrent fork inherited) fails briefly.
fn retry_text_file_busy<T>(mut run: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    const ETXTBSY: i32 = 26;
    let mut delay = std::time::Duration::from_millis(5);
    for _ in 0..8 {
        match run() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            other => return other,
        }
    }
    run()
}

/// `<compiler> --version`, trimmed stdout (stderr if stdout is empty).
pub fn compiler_version(compiler: &Path) -> Result<String, DriverError> {
    let out = retry_text_file_busy(|| {
        Command::new(compiler)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
    })
    .map_err(|e| DriverError::Version {
        compiler: compiler.to_path_buf(),
        detail: format!("could not run it: {e}"),
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(DriverError::Version {
            compiler: compiler.to_path_buf(),
            detail: format!("{}; stderr:\n{}", out.status, tail_lines(&stderr, 20)),
        });
    }
    let version = if stdout.is_empty() {
        stderr.trim().to_string()
    } else {
        stdout
    };
    if version.is_empty() {
        return Err(DriverError::Version {
            compiler: compiler.to_path_buf(),
            detail: "it printed nothing".into(),
        });
    }
    Ok(version)
}

// ---------------------------------------------------------------------------------------------
// Command lines

/// Quotes one word for a POSIX shell: as is when it holds only safe characters, else in single
/// quotes (with `'` written as `'\''`).
pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./=:,+@%^".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The argv after the program: `compile --framework=XLA <pb> --output <neff> <flags...>`.
pub fn compile_args(hlo_pb: &Path, neff: &Path, flags: &[String]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "compile".into(),
        "--framework=XLA".into(),
        hlo_pb.as_os_str().to_owned(),
        "--output".into(),
        neff.as_os_str().to_owned(),
    ];
    args.extend(flags.iter().map(OsString::from));
    args
}

/// A copy-pasteable shell command line for `program args...`.
pub fn shell_command(program: &Path, args: &[OsString]) -> String {
    std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|w| shell_quote(&w.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Cache keys

/// The cache key for these proto bytes, flags and compiler version (lowercase hex sha256).
pub fn cache_key(proto: &[u8], flags: &[String], compiler_version: &str) -> String {
    let mut h = Sha256::new();
    h.update(without_source_locations(proto));
    finish_key(h, flags, compiler_version)
}

/// The proto bytes that decide what neuronx-cc produces. Each instruction's metadata names the
/// Rust file and line that recorded it; keeping those in the key would invalidate every cached
/// NEFF (tens of minutes each) whenever model code moves by a line. Bytes that are not an
/// `HloModuleProto` are keyed as they are.
fn without_source_locations(proto: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use prost::Message;
    let Ok(mut module) = xla_proto::HloModuleProto::decode(proto) else {
        return std::borrow::Cow::Borrowed(proto);
    };
    for instr in module
        .computations
        .iter_mut()
        .flat_map(|c| c.instructions.iter_mut())
    {
        if let Some(m) = &mut instr.metadata {
            m.source_file.clear();
            m.source_line = 0;
        }
    }
    std::borrow::Cow::Owned(module.encode_to_vec())
}

/// [`cache_key`] of a proto file.
pub fn cache_key_for_file(
    hlo_pb: &Path,
    flags: &[String],
    compiler_version: &str,
) -> io::Result<String> {
    Ok(cache_key(&fs::read(hlo_pb)?, flags, compiler_version))
}

fn finish_key(mut h: Sha256, flags: &[String], compiler_version: &str) -> String {
    h.update([0u8]);
    h.update(flags.join("\n").as_bytes());
    h.update([0u8]);
    h.update(compiler_version.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache entry folder for `key`.
pub fn cache_entry(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join(key)
}

// ---------------------------------------------------------------------------------------------
// Compiling

/// Compiles `jobs` with up to `parallel` compiler processes at once (0 counts as 1). Runs
/// `<compiler> --version` once first (its failure is the outer error). The results are in the
/// order of `jobs`; one job's failure does not stop the others.
pub fn compile_all(
    compiler: &Path,
    jobs: &[CompileJob],
    parallel: usize,
    cache_dir: &Path,
) -> Result<Vec<Result<CompileOutcome, DriverError>>, DriverError> {
    let version = compiler_version(&absolute_program(compiler))?;
    Ok(compile_all_with_version(
        compiler, &version, jobs, parallel, cache_dir,
    ))
}

/// [`compile_all`] for a caller that already asked the compiler for its `--version`.
pub fn compile_all_with_version(
    compiler: &Path,
    version: &str,
    jobs: &[CompileJob],
    parallel: usize,
    cache_dir: &Path,
) -> Vec<Result<CompileOutcome, DriverError>> {
    let compiler = absolute_program(compiler);
    let driver = Driver {
        compiler: &compiler,
        version,
        cache_dir,
        key_locks: Mutex::new(HashMap::new()),
    };
    let workers = parallel.max(1).min(jobs.len());
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (driver, next) = (&driver, &next);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs.get(i) else { break };
                if tx.send((i, driver.compile_one(job))).is_err() {
                    break;
                }
            });
        }
    });
    drop(tx);
    let mut slots: Vec<Option<Result<CompileOutcome, DriverError>>> =
        jobs.iter().map(|_| None).collect();
    for (i, r) in rx {
        slots[i] = Some(r);
    }
    slots
        .into_iter()
        .map(|s| s.expect("every job index is sent exactly once"))
        .collect()
}

/// Compiles one job (see [`compile_all`]), given the compiler's `--version` output.
pub fn compile_one(
    compiler: &Path,
    compiler_version: &str,
    job: &CompileJob,
    cache_dir: &Path,
) -> Result<CompileOutcome, DriverError> {
    let compiler = absolute_program(compiler);
    Driver {
        compiler: &compiler,
        version: compiler_version,
        cache_dir,
        key_locks: Mutex::new(HashMap::new()),
    }
    .compile_one(job)
}

struct Driver<'a> {
    compiler: &'a Path,
    version: &'a str,
    cache_dir: &'a Path,
    /// One lock per cache key, so two jobs with the same key in one batch compile once.
    key_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Driver<'_> {
    fn compile_one(&self, job: &CompileJob) -> Result<CompileOutcome, DriverError> {
        let start = Instant::now();
        let hlo_pb = absolute(&job.hlo_pb)?;
        let neff = absolute(&job.neff)?;
        let log = absolute(&job.log)?;
        let key = cache_key_for_file(&hlo_pb, &job.flags, self.version).map_err(io_err(
            format!("graph `{}`: reading {}", job.name, hlo_pb.display()),
        ))?;
        let command = shell_command(self.compiler, &compile_args(&hlo_pb, &neff, &job.flags));

        let lock = {
            let mut locks = self.key_locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key.clone()).or_default().clone()
        };
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());

        let entry = cache_entry(self.cache_dir, &key);
        let cached = entry.join("model.neff");
        let cache_hit = cached.is_file();
        if cache_hit {
            copy_atomic(&cached, &neff).map_err(io_err(format!(
                "graph `{}`: copying cached {} to {}",
                job.name,
                cached.display(),
                neff.display()
            )))?;
            write_file(
                &log,
                format!(
                    "cache hit {key}: copied {}\n$ {command}\n",
                    cached.display()
                )
                .as_bytes(),
            )
            .map_err(io_err(format!("writing {}", log.display())))?;
        } else {
            let result = self.compile_miss(job, &hlo_pb, &neff, &log, &key, &command);
            if result.is_err() {
                let _ = fs::remove_file(&neff);
            }
            result?;
        }
        let neff_bytes = fs::metadata(&neff)
            .map_err(io_err(format!("reading {}", neff.display())))?
            .len();
        Ok(CompileOutcome {
            name: job.name.clone(),
            neff,
            neff_bytes,
            seconds: start.elapsed().as_secs_f64(),
            cache_hit,
            cache_key: key,
            command,
        })
    }

    /// Runs the compiler in a fresh work folder, copies its NEFF to the output, and installs
    /// the staged entry in the cache. The work folder is removed unless the compile failed.
    fn compile_miss(
        &self,
        job: &CompileJob,
        hlo_pb: &Path,
        neff: &Path,
        log: &Path,
        key: &str,
        command: &str,
    ) -> Result<(), DriverError> {
        let work = work_root(self.cache_dir).join(format!("{key}.{}", unique_suffix()));
        let dirs = WorkDirs {
            stage: work.join("entry"),
            cwd: work.join("cwd"),
            compiler_log: logfile_flag(&job.flags).unwrap_or_else(|| work.join(COMPILER_LOG_NAME)),
            root: work,
        };
        for d in [&dirs.stage, &dirs.cwd] {
            fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
        }
        let result = self.run_compiler(job, hlo_pb, neff, log, key, command, &dirs);
        if !matches!(result, Err(DriverError::CompileFailed(_))) {
            let _ = fs::remove_dir_all(&dirs.root);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn run_compiler(
        &self,
        job: &CompileJob,
        hlo_pb: &Path,
        neff: &Path,
        log: &Path,
        key: &str,
        command: &str,
        dirs: &WorkDirs,
    ) -> Result<(), DriverError> {
        let (stage, cwd) = (&dirs.stage, &dirs.cwd);
        let staged_neff = stage.join("model.neff");
        let flags = with_logfile(&job.flags, &dirs.compiler_log);
        let args = compile_args(hlo_pb, &staged_neff, &flags);

        if let Some(dir) = log.parent() {
            fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let mut log_file = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(log)
            .map_err(io_err(format!("creating {}", log.display())))?;
        let header = format!(
            "$ {command}\n# staged output: {}\n# compiler log: {}\n",
            staged_neff.display(),
            dirs.compiler_log.display()
        );
        log_file
            .write_all(header.as_bytes())
            .map_err(io_err(format!("writing {}", log.display())))?;
        let out_handle = log_file
            .try_clone()
            .map_err(io_err(format!("opening {}", log.display())))?;
        let err_handle = log_file
            .try_clone()
            .map_err(io_err(format!("opening {}", log.display())))?;

        let status = retry_text_file_busy(|| {
            Command::new(self.compiler)
                .args(&args)
                .current_dir(cwd)
                .stdin(Stdio::null())
                .stdout(out_handle.try_clone()?)
                .stderr(err_handle.try_clone()?)
                .status()
        })
        .map_err(io_err(format!(
            "graph `{}`: running {}",
            job.name,
            self.compiler.display()
        )))?;

        let ok = status.success() && staged_neff.is_file();
        if !ok {
            let mut output = Vec::new();
            let _ = log_file.seek(SeekFrom::Start(header.len() as u64));
            let _ = log_file.read_to_end(&mut output);
            let mut log_tail = tail_lines(&String::from_utf8_lossy(&output), LOG_TAIL_LINES);
            if log_tail.trim().is_empty() {
                if let Ok(text) = fs::read(&dirs.compiler_log) {
                    log_tail = tail_lines(&String::from_utf8_lossy(&text), LOG_TAIL_LINES);
                }
            }
            if status.success() {
                log_tail.push_str(&format!(
                    "\n[driver] the compiler exited 0 but wrote no {}",
                    staged_neff.display()
                ));
            }
            let rerun = format!(
                "cd {} && {}",
                shell_quote(&cwd.to_string_lossy()),
                shell_command(
                    self.compiler,
                    &compile_args(hlo_pb, neff, &with_logfile(&job.flags, &dirs.compiler_log))
                )
            );
            let _ = writeln!(
                log_file,
                "[driver] compile failed; work folder kept: {}",
                dirs.root.display()
            );
            return Err(DriverError::CompileFailed(Box::new(CompileFailure {
                graph: job.name.clone(),
                status,
                log_tail,
                command: rerun,
                log: log.to_path_buf(),
                compiler_log: dirs.compiler_log.clone(),
                work_dir: dirs.root.clone(),
            })));
        }
        drop(log_file);

        copy_atomic(&staged_neff, neff).map_err(io_err(format!(
            "graph `{}`: copying {} to {}",
            job.name,
            staged_neff.display(),
            neff.display()
        )))?;

        // Store in the cache; a failure here only costs a recompile later, so it is noted in
        // the log rather than failing the job.
        if let Err(e) = self.install_entry(stage, key, command, &job.flags) {
            if let Ok(mut f) = fs::OpenOptions::new().append(true).open(log) {
                let _ = writeln!(f, "[driver] warning: not stored in the compile cache: {e}");
            }
        }
        Ok(())
    }

    fn install_entry(
        &self,
        stage: &Path,
        key: &str,
        command: &str,
        flags: &[String],
    ) -> io::Result<()> {
        let flags_json = serde_json::to_string_pretty(flags).map_err(io::Error::other)?;
        write_file(&stage.join("compile_flags.json"), flags_json.as_bytes())?;
        write_file(
            &stage.join("command.txt"),
            format!("{command}\n").as_bytes(),
        )?;
        write_file(
            &stage.join("compiler_version.txt"),
            format!("{}\n", self.version).as_bytes(),
        )?;
        let entry = cache_entry(self.cache_dir, key);
        match fs::rename(stage, &entry) {
            Ok(()) => Ok(()),
            // Another process stored the same key first: its entry is as good as ours.
            Err(_) if entry.join("model.neff").is_file() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Work folders and the compiler's own log

/// The file name of the compiler's own log in a work folder (NxD's name for it).
pub const COMPILER_LOG_NAME: &str = "log-neuron-cc.txt";

/// Where compiles run: `<cache_dir>/work/`, one folder per compile (kept when it failed).
pub fn work_root(cache_dir: &Path) -> PathBuf {
    cache_dir.join("work")
}

/// One compile's folders.
struct WorkDirs {
    root: PathBuf,
    /// The staged cache entry (`model.neff` and the metadata files).
    stage: PathBuf,
    /// The compiler's current directory.
    cwd: PathBuf,
    /// The compiler's `--logfile`.
    compiler_log: PathBuf,
}

/// The `--logfile` the flags already pass (`--logfile=PATH` or `--logfile PATH`), if any.
fn logfile_flag(flags: &[String]) -> Option<PathBuf> {
    flags.iter().enumerate().find_map(|(k, f)| {
        if let Some(p) = f.strip_prefix("--logfile=") {
            Some(PathBuf::from(p))
        } else if f == "--logfile" {
            flags.get(k + 1).map(PathBuf::from)
        } else {
            None
        }
    })
}

/// `flags` plus `--logfile=<log>`, unless they already name a log file.
fn with_logfile(flags: &[String], log: &Path) -> Vec<String> {
    let mut flags = flags.to_vec();
    if logfile_flag(&flags).is_none() {
        flags.push(format!("--logfile={}", log.display()));
    }
    flags
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The last `n` lines of `text`.
fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn unique_suffix() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

fn absolute(p: &Path) -> Result<PathBuf, DriverError> {
    std::path::absolute(p).map_err(io_err(format!("resolving {}", p.display())))
}

/// A program path that still works after `current_dir`: relative paths with a folder part are
/// made absolute; bare names are left for the `PATH` lookup.
fn absolute_program(p: &Path) -> PathBuf {
    if p.components().count() > 1 && p.is_relative() {
        std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
    } else {
        p.to_path_buf()
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, bytes)
}

/// Copies `from` to `to` through a temporary file in `to`'s folder, synced, then renamed.
fn copy_atomic(from: &Path, to: &Path) -> io::Result<()> {
    let dir = to.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = to.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp.{}", unique_suffix()));
    let result = (|| {
        let mut src = fs::File::open(from)?;
        let mut dst = fs::File::create(&tmp)?;
        io::copy(&mut src, &mut dst)?;
        dst.sync_all()?;
        fs::rename(&tmp, to)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
