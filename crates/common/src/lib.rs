//! Facts and helpers shared by every petal crate and by `xtask`, in pure Rust (no libtorch).
//!
//! * [`write_atomic`] / [`write_atomic_with`]: the one atomic file replacement (temp file in the
//!   same folder, fsync, rename, fsync of the folder) every stage uses;
//! * [`hex`] / [`sha256_hex`]: lowercase hex, never written by hand elsewhere;
//! * [`weights`]: the registry of pretrained ImageNet weights (URLs, hashes, file names) that both
//!   `model` and `xtask` read;
//! * [`lock`]: advisory file locks: a run folder in use ([`RunLock`]) and a cache file being
//!   computed ([`FileLock`]);
//! * [`progress`]: the events libraries report instead of printing;
//! * [`onnxruntime`]: the onnxruntime release setup provisions and where binaries find it;
//! * [`container`]: the one binary container format of the caches (magic, version, lengths,
//!   checksums) and its little-endian reader;
//! * [`file_id`]: the identity (path, size, mtime) of an input file, for cache keys and stamps.
//!
//! **Invariant:** no dependency on `tch` or on any stage crate, so `xtask` can use it.

#![warn(missing_docs)]

mod atomic;
pub mod container;
pub mod disk;
pub mod lock;
pub mod onnxruntime;
pub mod parts;
pub mod progress;
pub mod shard;
pub mod time;
pub mod weights;

use std::path::{Path, PathBuf};

pub use atomic::{write_atomic, write_atomic_with};
pub use lock::{FileLock, RunLock};
pub use progress::{Event, Progress, Silent};

/// An I/O error that names its file and what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{}: {action}: {source}", path.display())]
pub struct IoError {
    /// File concerned.
    pub path: PathBuf,
    /// What was being done ("creating temp file", "renaming temp file over target", ...).
    pub action: &'static str,
    /// Underlying error.
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    /// Builds the error.
    pub fn new(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        IoError { path: path.to_path_buf(), action, source }
    }
}

/// Lowercase hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Lowercase-hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// SHA-256 of a file's contents, lowercase hex, read in 1 MiB blocks (never whole).
pub fn sha256_file(path: &Path) -> Result<String, IoError> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| IoError::new(path, "opening", e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| IoError::new(path, "reading", e))?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Identity of an input file: its canonical path, size and modification time (ns), as
/// `path:size:mtime`. Changes whenever the file is replaced or edited.
pub fn file_id(path: &Path) -> Result<String, IoError> {
    let m = std::fs::metadata(path).map_err(|e| IoError::new(path, "reading metadata", e))?;
    let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(format!("{}:{}:{}", abs.display(), m.len(), mtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_known_digests() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn file_id_changes_with_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, b"one").expect("write");
        let a = file_id(&p).expect("id");
        std::fs::write(&p, b"three").expect("write");
        assert_ne!(a, file_id(&p).expect("id"));
        let err = file_id(&dir.path().join("absent")).expect_err("absent");
        assert!(err.to_string().contains("absent"), "{err}");
    }
}
