//! Chunked, checksummed, resumable result stores: the write-ahead log of long computations.
//!
//! A computation over `items` items (images whose features are extracted, images whose classes are
//! predicted, ...) is cut into chunks of `chunk_items` consecutive items. Each finished chunk is
//! written to its own file in a folder the caller names after the result's provenance digest
//! ([`digest`]), atomically (temp file, fsync, rename, fsync of the folder) and with a header that
//! carries a CRC-32 of the payload and the digest of the key it was computed from. After a crash,
//! power loss or `kill -9`, the next run [`ChunkStore::load`]s every complete chunk and computes
//! only the missing ones ([`missing_runs`]); a chunk that is torn, damaged, or was computed from
//! other inputs or another chunk layout is detected, deleted and recomputed, never read. When the
//! caller has written its final result, [`ChunkStore::finish`] removes the folder.
//!
//! Payloads are opaque bytes: the caller encodes its own records. Nothing here knows tensors.
//!
//! # Chunk file layout
//!
//! A chunk file is a `petal_common::container` of magic `PETALCHK`, version
//! [`CHUNK_FORMAT_VERSION`]: the container checks the lengths and the CRC-32s. Its body is the
//! payload (summed whole); its meta block (little-endian) is:
//!
//! | bytes | field |
//! |---|---|
//! | 32 | SHA-256 of the store key (the provenance key plus `items` and `chunk_items`) |
//! | 8, 8, 8 | chunk index, first item, end item (exclusive) |
//!
//! Progress is reported as `tracing` events of this module's target (`checkpoint::chunks`) at
//! `info`: how much an interrupted run left to reuse, and how much this run computed.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::Error;
use petal_common::container::{self, le, Kind};

/// Version of the chunk file layout (2: the common container, `petal_common::container`).
pub const CHUNK_FORMAT_VERSION: u32 = 2;
/// A chunk file is a container of this kind: the body is the payload, checked whole; the meta
/// block is the store's key digest (32 bytes), then the chunk's number, first item and end item
/// (`u64` each).
const KIND: Kind = Kind { magic: *b"PETALCHK", version: CHUNK_FORMAT_VERSION, name: "chunk file", body_crc: true };

/// Test-only: after this many computed batches the process stops (sleeps until killed), so an
/// end-to-end test can `kill -9` it at an exact point of its work. Never set it otherwise.
pub const TEST_HALT_ENV: &str = "PETAL_TEST_HALT_AFTER_BATCHES";

/// SHA-256 of a provenance key's JSON text, as lowercase hex: what callers name result files and
/// chunk folders after.
pub fn digest(key: &serde_json::Value) -> String {
    petal_common::sha256_hex(key.to_string().as_bytes())
}

/// `6552` → `"6,552"`, for progress messages.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The chunks of a resumable computation (see the module docs).
#[derive(Debug)]
pub struct ChunkStore {
    dir: PathBuf,
    key_digest: [u8; 32],
    items: usize,
    chunk_items: usize,
    what: String,
    reused: usize,
    computed: usize,
}

/// Why a chunk file cannot be used.
enum Unusable {
    /// Written for other inputs or another chunk layout: expected after a change, not damage.
    Stale(String),
    /// Truncated or damaged.
    Damaged(String),
}

impl ChunkStore {
    /// The store in `dir` for a computation over `items` items in chunks of `chunk_items` (≥ 1),
    /// keyed by `key` (the provenance of the final result). `what` names the items in progress
    /// messages ("features", "predictions"). Creates `dir`; reads nothing yet.
    pub fn open(dir: impl Into<PathBuf>, key: &serde_json::Value, items: usize, chunk_items: usize, what: &str) -> Result<Self, Error> {
        let dir = dir.into();
        if chunk_items == 0 {
            return Err(Error::InvalidCheckpoint { path: dir, detail: "chunks must hold at least one item".into() });
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "creating the chunk folder", e))?;
        let store_key = serde_json::json!({ "key": key, "items": items, "chunk_items": chunk_items, "version": CHUNK_FORMAT_VERSION });
        let key_digest: [u8; 32] = Sha256::digest(store_key.to_string().as_bytes()).into();
        Ok(ChunkStore { dir, key_digest, items, chunk_items, what: what.to_string(), reused: 0, computed: 0 })
    }

    /// The folder holding the chunks.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of chunks.
    pub fn chunks(&self) -> usize {
        self.items.div_ceil(self.chunk_items)
    }

    /// Items per chunk (the last chunk may hold fewer).
    pub fn chunk_items(&self) -> usize {
        self.chunk_items
    }

    /// The items of chunk `chunk`.
    pub fn range(&self, chunk: usize) -> Range<usize> {
        let lo = (chunk * self.chunk_items).min(self.items);
        lo..(lo + self.chunk_items).min(self.items)
    }

    /// The file of chunk `chunk`.
    pub fn chunk_path(&self, chunk: usize) -> PathBuf {
        self.dir.join(format!("chunk-{chunk:08}.part"))
    }

    /// Items reused from earlier runs (counted by [`ChunkStore::load`]).
    pub fn reused(&self) -> usize {
        self.reused
    }

    /// Items computed by this run (counted by [`ChunkStore::save`]).
    pub fn computed(&self) -> usize {
        self.computed
    }

    /// Every complete, intact chunk an earlier run left (`None` where a chunk is missing). Unusable
    /// chunk files are deleted so they are recomputed: damaged ones with a warning, ones computed
    /// from other inputs or another layout quietly. Reports how much is reused.
    pub fn load(&mut self) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::with_capacity(self.chunks());
        self.reused = 0;
        for chunk in 0..self.chunks() {
            let path = self.chunk_path(chunk);
            let payload = match std::fs::read(&path) {
                Ok(bytes) => match self.check(chunk, &bytes) {
                    Ok(payload) => Some(payload.to_vec()),
                    Err(why) => {
                        match why {
                            Unusable::Stale(d) => tracing::info!(file = %path.display(), "recomputing a chunk: {d}"),
                            Unusable::Damaged(d) => tracing::warn!(file = %path.display(), "damaged chunk ({d}); recomputing it"),
                        }
                        let _ = std::fs::remove_file(&path);
                        None
                    }
                },
                Err(_) => None,
            };
            if payload.is_some() {
                self.reused += self.range(chunk).len();
            }
            out.push(payload);
        }
        if self.reused > 0 {
            tracing::info!(
                reused = self.reused,
                total = self.items,
                dir = %self.dir.display(),
                "reusing {} of {} {} from an interrupted run",
                thousands(self.reused),
                thousands(self.items),
                self.what
            );
        }
        out
    }

    /// The payload of chunk `chunk`'s file `b`, when the file is intact and belongs to this store.
    fn check<'b>(&self, chunk: usize, b: &'b [u8]) -> Result<&'b [u8], Unusable> {
        let parts =
            container::open(b, &KIND).map_err(|e| if e.is_damage() { Unusable::Damaged(e.to_string()) } else { Unusable::Stale(e.to_string()) })?;
        let mut meta = le::Reader::new(parts.meta);
        if meta.bytes(32) != Some(&self.key_digest[..]) {
            return Err(Unusable::Stale("computed from other inputs or with another chunk size".into()));
        }
        let r = self.range(chunk);
        if (meta.u64(), meta.u64(), meta.u64()) != (Some(chunk as u64), Some(r.start as u64), Some(r.end as u64)) {
            return Err(Unusable::Damaged("its header names another chunk".into()));
        }
        Ok(parts.body)
    }

    /// Writes chunk `chunk` durably and atomically: once this returns, a crash cannot lose it,
    /// and a crash before leaves no file that [`ChunkStore::load`] would read.
    pub fn save(&mut self, chunk: usize, payload: &[u8]) -> Result<(), Error> {
        let r = self.range(chunk);
        let mut meta = self.key_digest.to_vec();
        for v in [chunk as u64, r.start as u64, r.end as u64] {
            meta.extend_from_slice(&v.to_le_bytes());
        }
        let bytes = container::to_vec(&KIND, payload, &meta);
        // Another process that finished the same result removes the folder once its result is
        // durable, possibly between our making sure the folder exists and our rename into it:
        // make it again and retry (the chunk's bytes are the same whoever writes them).
        let path = self.chunk_path(chunk);
        let mut tries = 0;
        loop {
            std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, "creating the chunk folder", e))?;
            match petal_common::write_atomic(&path, &bytes) {
                Ok(()) => break,
                Err(e) if e.source.kind() == std::io::ErrorKind::NotFound && tries < 8 => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
        self.computed += r.len();
        tracing::debug!(chunk, chunks = self.chunks(), file = %path.display(), "chunk saved");
        Ok(())
    }

    /// Reports what this run computed and removes the chunk folder: call it once the final result
    /// is durable. A folder that cannot be removed is only worth a warning.
    pub fn finish(self) {
        tracing::info!(
            computed = self.computed,
            reused = self.reused,
            total = self.items,
            "computed {} of {} {}",
            thousands(self.computed),
            thousands(self.items),
            self.what
        );
        discard(&self.dir);
    }
}

/// Removes a chunk folder left behind (for example by a run killed between writing its final
/// result and removing its chunks).
pub fn discard(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the chunk folder; delete it by hand"),
    }
}

/// The runs of consecutive missing chunks, in order: what is left to compute.
pub fn missing_runs<T>(chunks: &[Option<T>]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        if c.is_some() {
            continue;
        }
        match runs.last_mut() {
            Some(r) if r.end == i => r.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

/// Test-only hook (see [`TEST_HALT_ENV`]): call after each computed batch. Counts the batches
/// this process computed and, when the variable is set and the count reaches it, reports it and
/// sleeps until the process is killed. Does nothing otherwise.
pub fn test_halt_point() {
    static HALT: OnceLock<Option<usize>> = OnceLock::new();
    static DONE: AtomicUsize = AtomicUsize::new(0);
    let Some(halt) = *HALT.get_or_init(|| std::env::var(TEST_HALT_ENV).ok().and_then(|v| v.parse().ok())) else {
        return;
    };
    let done = DONE.fetch_add(1, Ordering::SeqCst) + 1;
    if done == halt {
        tracing::info!(batches = done, "halted for a test ({TEST_HALT_ENV})");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(chunk: usize) -> Vec<u8> {
        (0..100 + chunk).map(|i| (i * 7 + chunk) as u8).collect()
    }

    fn store(dir: &Path, key: &serde_json::Value, chunk_items: usize) -> ChunkStore {
        ChunkStore::open(dir.join("c"), key, 10, chunk_items, "things").expect("open")
    }

    #[test]
    fn layout_and_ranges() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = store(tmp.path(), &json!(1), 4);
        assert_eq!(s.chunks(), 3);
        assert_eq!((s.range(0), s.range(1), s.range(2)), (0..4, 4..8, 8..10));
        assert_eq!(thousands(6552), "6,552");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert!(ChunkStore::open(tmp.path().join("z"), &json!(1), 10, 0, "x").is_err());
    }

    #[test]
    fn saved_chunks_are_reused_and_missing_ones_listed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let key = json!({"k": "v"});
        let mut s = store(tmp.path(), &key, 4);
        assert_eq!(s.load(), vec![None, None, None]);
        s.save(0, &payload(0)).expect("save 0");
        s.save(2, &payload(2)).expect("save 2");
        assert_eq!(s.computed(), 6);
        let mut again = store(tmp.path(), &key, 4);
        let got = again.load();
        assert_eq!(got, vec![Some(payload(0)), None, Some(payload(2))]);
        assert_eq!(again.reused(), 6);
        assert_eq!(missing_runs(&got), vec![1..2]);
        assert_eq!(missing_runs(&[None::<u8>, None, Some(1), None]), vec![0..2, 3..4]);
        again.finish();
        assert!(!tmp.path().join("c").exists(), "finish removes the folder");
    }

    #[test]
    fn damaged_torn_and_stale_chunks_are_recomputed_never_read() {
        let tmp = tempfile::tempdir().expect("tmp");
        let key = json!({"k": 1});
        let mut s = store(tmp.path(), &key, 2);
        for c in 0..5 {
            s.save(c, &payload(c)).expect("save");
        }
        // Flip one payload bit of chunk 0, truncate chunk 1, break chunk 2's header, and leave a
        // temp file of a writer killed mid-write (it is never a chunk name).
        let p0 = s.chunk_path(0);
        let mut b = std::fs::read(&p0).expect("read");
        b[container::PREAMBLE] ^= 1;
        std::fs::write(&p0, &b).expect("write");
        let p1 = s.chunk_path(1);
        let b = std::fs::read(&p1).expect("read");
        std::fs::write(&p1, &b[..b.len() - 10]).expect("write");
        let p2 = s.chunk_path(2);
        let mut b = std::fs::read(&p2).expect("read");
        b[50] ^= 0xff;
        std::fs::write(&p2, &b).expect("write");
        std::fs::write(tmp.path().join("c").join(".chunk-00000003.part.tmp-1-0"), b"half").expect("temp");
        let mut again = store(tmp.path(), &key, 2);
        let got = again.load();
        assert_eq!(got, vec![None, None, None, Some(payload(3)), Some(payload(4))]);
        assert_eq!(again.reused(), 4);
        assert!(!p0.exists() && !p1.exists() && !p2.exists(), "unusable chunks are deleted");
        // Another key or another chunk size: nothing is reused, everything is recomputed.
        assert_eq!(store(tmp.path(), &json!({"k": 2}), 2).load().iter().flatten().count(), 0);
        let mut s = store(tmp.path(), &key, 2);
        s.save(0, &payload(0)).expect("save");
        assert_eq!(store(tmp.path(), &key, 3).load().iter().flatten().count(), 0);
    }

    #[test]
    fn a_chunk_renamed_into_another_slot_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let key = json!("k");
        let mut s = store(tmp.path(), &key, 5);
        s.save(0, &payload(0)).expect("save");
        std::fs::rename(s.chunk_path(0), s.chunk_path(1)).expect("rename");
        assert_eq!(store(tmp.path(), &key, 5).load(), vec![None, None]);
    }

    #[test]
    fn digests_are_stable_hex() {
        let d = digest(&json!({"a": 1}));
        assert_eq!(d.len(), 64);
        assert_eq!(d, petal_common::sha256_hex(br#"{"a":1}"#));
    }
}
