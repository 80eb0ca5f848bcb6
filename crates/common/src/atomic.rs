//! Atomic file replacement: temp file in the same directory, fsync, rename, fsync directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::IoError;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Hidden temp name next to `path`, unique per process and call.
fn temp_path(path: &Path) -> Result<PathBuf, IoError> {
    let name = path
        .file_name()
        .ok_or_else(|| {
            IoError::new(path, "choosing a temp file", std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path has no file name"))
        })?
        .to_string_lossy()
        .into_owned();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id())))
}

/// Writes `bytes` to `path` atomically: readers (and other processes) see either the previous
/// file or the complete new one, never a torn file; on error `path` is left as it was. The parent
/// directory must exist.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    write_atomic_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp).map_err(|e| IoError::new(tmp, "creating temp file", e))?;
        f.write_all(bytes).map_err(|e| IoError::new(tmp, "writing temp file", e))
    })?;
    tracing::debug!(path = %path.display(), bytes = bytes.len(), "wrote file");
    Ok(())
}

/// Calls `write` to produce the content at a temp path next to `path`, then makes it durable and
/// renames it over `path`. On failure the temp file is removed and `path` is untouched. Temp files
/// left for `path` by writers that were killed mid-write are removed (Linux).
pub fn write_atomic_with<E: From<IoError>>(path: &Path, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    let tmp = temp_path(path)?;
    let result = (|| {
        write(&tmp)?;
        let f = std::fs::OpenOptions::new().write(true).open(&tmp).map_err(|e| IoError::new(&tmp, "reopening temp file", e))?;
        f.sync_all().map_err(|e| IoError::new(&tmp, "fsync of temp file", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| IoError::new(path, "renaming temp file over target", e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Makes the rename durable; a failure here does not undo the (already visible) replacement.
    if let Ok(d) = std::fs::File::open(&dir) {
        if let Err(e) = d.sync_all() {
            tracing::debug!(dir = %dir.display(), error = %e, "directory fsync failed");
        }
    }
    remove_stale_temps(path, &dir);
    Ok(())
}

/// Removes temp files left for `path` by writers that were killed mid-write (their process no
/// longer exists). Only where process liveness can be checked (Linux `/proc`).
fn remove_stale_temps(path: &Path, dir: &Path) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&prefix).and_then(|rest| rest.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::debug!(file = %e.path().display(), "removing temp file of a dead writer");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.txt");
        write_atomic(&p, b"first").expect("write");
        write_atomic(&p, b"second").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let err = write_atomic(&dir.path().join("missing/x"), b"x").expect_err("no parent");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn a_failed_writer_leaves_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("b.bin");
        write_atomic(&p, b"old").expect("write");
        let r: Result<(), IoError> = write_atomic_with(&p, |tmp| {
            std::fs::write(tmp, b"half").expect("write");
            Err(IoError::new(tmp, "simulated failure", std::io::Error::other("boom")))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).expect("read"), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
