//! Atomic file replacement and CSV writing.

use crate::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Hidden temp name next to `path`, unique per process and call.
fn temp_path(path: &Path) -> Result<PathBuf, Error> {
    let name = path.file_name().ok_or_else(|| Error::invalid(path, "the path has no file name"))?.to_string_lossy().into_owned();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id())))
}

/// Writes `bytes` to `path` atomically: the bytes go to a hidden temp file in the same
/// directory, which is fsynced and then renamed over `path` (the directory is fsynced too where
/// the platform allows). Readers see either the previous file or the complete new one; on
/// error the temp file is removed and `path` is left as it was. The parent directory must exist.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = temp_path(path)?;
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, "creating temp file", e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, "writing temp file", e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, "fsync of temp file", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "renaming temp file over target", e))
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
    tracing::debug!(path = %path.display(), bytes = bytes.len(), "wrote file");
    Ok(())
}

/// Appends one CSV field, quoted (RFC 4180) when it holds a comma, a double quote, a line
/// break, or leading/trailing spaces; inner double quotes are doubled.
fn push_field(out: &mut String, field: &str) {
    let needs_quotes = field.contains([',', '"', '\n', '\r']) || field.starts_with(' ') || field.ends_with(' ');
    if needs_quotes {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

/// Writes a CSV file atomically (see [`write_atomic`]): the header line, then one line per row,
/// fields separated by commas, lines ended by `\n`, fields quoted (RFC 4180) where needed.
/// Every row must have as many fields as the header; an empty header is an error.
pub fn write_csv(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<(), Error> {
    if header.is_empty() {
        return Err(Error::empty(path, "the CSV header has no columns"));
    }
    let mut out = String::new();
    let mut line = |fields: &mut dyn Iterator<Item = &str>| {
        for (i, f) in fields.enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_field(&mut out, f);
        }
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for (i, row) in rows.iter().enumerate() {
        if row.len() != header.len() {
            return Err(Error::invalid(path, format!("CSV row {} has {} fields, the header has {}", i + 1, row.len(), header.len())));
        }
        line(&mut row.iter().map(String::as_str));
    }
    write_atomic(path, out.as_bytes())
}
