//! Atomic file replacement: temp file in the same directory, fsync, rename, fsync directory.

use crate::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Temp-file name used while writing `path`: hidden, in the same directory, unique per process
/// and call, and never equal to a name `load` would be given for a checkpoint.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "checkpoint".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Calls `write` to produce the content at a temp path, then makes it durable and moves it over
/// `path`. On failure the temp file is removed and `path` is untouched.
pub(crate) fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<(), Error>) -> Result<(), Error> {
    let tmp = temp_path(path);
    let result = (|| {
        write(&tmp)?;
        let f = std::fs::OpenOptions::new().write(true).open(&tmp).map_err(|e| Error::io(&tmp, "reopening temp file", e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, "fsync of temp file", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "renaming temp file over target", e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable. Directories cannot be opened for fsync everywhere; a
    // failure here does not undo the (already visible) replacement.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let Ok(d) = std::fs::File::open(&dir) {
        if let Err(e) = d.sync_all() {
            tracing::debug!(dir = %dir.display(), error = %e, "directory fsync failed");
        }
    }
    remove_stale_temps(path, &dir);
    Ok(())
}

/// Removes temp files left for `path` by writers that were killed mid-save (their process no
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
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::debug!(file = %e.path().display(), "removing temp file of a dead writer");
            let _ = std::fs::remove_file(e.path());
        }
    }
}
