//! Crash-safe output files: write to a temporary file in the target folder, flush it to disk,
//! rename it into place, then flush the folder, so an interrupted run never leaves a
//! truncated artifact. Also the content hash artifacts are named and checked by.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Temporary files are `.<name>.tmp.<pid>.<n>`: unique per process and per call, so two
/// writers of the same target never share one.
const TMP_MARKER: &str = ".tmp.";

pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temporary_path(path)?;
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        commit(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A fresh temporary path beside `path` (creating the folder), for writers that stream into
/// the file before [`commit`]ting it.
pub fn temporary_path(path: &Path) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!(".{name}{TMP_MARKER}{}.{n}", std::process::id())))
}

/// Renames a fully written (and synced) temporary file into place, durably.
pub fn commit(tmp: &Path, path: &Path) -> io::Result<()> {
    fs::rename(tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

/// Flushes a folder, making the renames into it durable (best effort: not every platform can
/// open a folder, and that is not an error).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes a set of files crash-safely and together: each goes to a temporary beside its
/// target as soon as it is ready, a background thread flushes each to disk while the caller
/// produces the next, and [`Stager::commit`] renames them all into place, in staging order,
/// once every flush is done. The folder itself is not flushed: the caller flushes it once for
/// all of them ([`sync_dir`], or a last [`write_atomic`]), and journaling file systems commit
/// renames in order, so a last rename (a manifest naming the others) cannot outlive the ones
/// before it.
pub struct Stager {
    staged: Vec<(PathBuf, PathBuf)>,
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    flusher: Option<std::thread::JoinHandle<io::Result<()>>>,
}

/// What the background thread of a [`Stager`] does, in the order it was asked to.
enum Job {
    Flush(fs::File),
    Remove(PathBuf),
}

impl Default for Stager {
    fn default() -> Self {
        Stager::new()
    }
}

impl Stager {
    pub fn new() -> Stager {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let flusher = std::thread::spawn(move || {
            let mut result = Ok(());
            for job in rx {
                match job {
                    Job::Flush(f) => {
                        if let Err(e) = f.sync_all() {
                            result = result.and(Err(e));
                        }
                    }
                    // Best effort: a file that stays is replaced by the rename anyway.
                    Job::Remove(path) => {
                        let _ = fs::remove_file(path);
                    }
                }
            }
            result
        });
        Stager {
            staged: Vec::new(),
            jobs: Some(tx),
            flusher: Some(flusher),
        }
    }

    /// Removes the files at `paths` in the background, before anything is renamed into place:
    /// for a caller whose old outputs are already void (their manifest is gone), so that the
    /// renames at [`Stager::commit`] do not wait for the file system to free the files they
    /// replace. Missing files and failures are ignored (a file that stays is replaced by its
    /// rename anyway).
    pub fn remove_in_background(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        if let Some(tx) = &self.jobs {
            for path in paths {
                let _ = tx.send(Job::Remove(path));
            }
        }
    }

    /// Writes `bytes` to a fresh temporary beside `path` and queues it to be flushed.
    pub fn stage(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = temporary_path(path)?;
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            Ok(f)
        })();
        match written {
            Ok(f) => {
                self.staged.push((tmp, path.to_path_buf()));
                if let Some(tx) = &self.jobs {
                    // The flusher only stops when the sender is dropped.
                    let _ = tx.send(Job::Flush(f));
                }
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn wait_for_flushes(&mut self) -> io::Result<()> {
        drop(self.jobs.take());
        match self.flusher.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the flushing thread panicked"))),
            None => Ok(()),
        }
    }

    /// Waits until every staged file is on disk, then renames each into place. On an error
    /// (with the file it concerns) no temporary is left behind; files already renamed stay,
    /// complete.
    pub fn commit(mut self) -> Result<(), (PathBuf, io::Error)> {
        let staged = std::mem::take(&mut self.staged);
        let mut first_error = self.wait_for_flushes().err().map(|e| {
            let dir = staged.first().and_then(|(_, p)| p.parent());
            (dir.unwrap_or(Path::new(".")).to_path_buf(), e)
        });
        for (tmp, path) in staged {
            if first_error.is_none() {
                match fs::rename(&tmp, &path) {
                    Ok(()) => continue,
                    Err(e) => first_error = Some((path, e)),
                }
            }
            let _ = fs::remove_file(&tmp);
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Stager {
    /// A stager dropped without [`Stager::commit`] removes its temporaries.
    fn drop(&mut self) {
        let _ = self.wait_for_flushes();
        for (tmp, _) in self.staged.drain(..) {
            let _ = fs::remove_file(&tmp);
        }
    }
}

/// Removes temporary files that an interrupted earlier run left in `dir`.
pub fn remove_stale_temporaries(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(TMP_MARKER) {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("phi3-files-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn stager_replaces_files_and_removes_what_it_was_told_to_first() {
        let dir = fresh_dir("stager");
        for name in ["a", "b", "void"] {
            fs::write(dir.join(name), "old").unwrap();
        }
        let mut stager = Stager::new();
        stager.remove_in_background(["a", "void", "missing"].map(|n| dir.join(n)));
        stager.stage(&dir.join("a"), b"new a").unwrap();
        stager.stage(&dir.join("b"), b"new b").unwrap();
        stager.stage(&dir.join("c"), b"new c").unwrap();
        // Nothing is in place before the commit; the staged files are temporaries.
        assert!(names(&dir).iter().any(|n| n.contains(TMP_MARKER)));
        stager.commit().unwrap();
        assert_eq!(names(&dir), ["a", "b", "c"]);
        for name in ["a", "b", "c"] {
            assert_eq!(
                fs::read(dir.join(name)).unwrap(),
                format!("new {name}").as_bytes()
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_dropped_stager_leaves_no_temporaries() {
        let dir = fresh_dir("dropped");
        fs::write(dir.join("a"), "old").unwrap();
        let mut stager = Stager::new();
        stager.stage(&dir.join("a"), b"new").unwrap();
        stager.stage(&dir.join("b"), b"new").unwrap();
        drop(stager);
        assert_eq!(names(&dir), ["a"]);
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"old");
        fs::remove_dir_all(&dir).unwrap();
    }
}
