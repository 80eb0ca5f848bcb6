//! A versioned, memory-mapped on-disk cache of decoded and resized uint8 images.
//!
//! Each entry is the output of torchvision `Resize(short_side)` (bilinear, antialias) of one
//! source image, packed RGB8, plus the source's original size (so train-time crop parameters
//! are drawn exactly as from the file). Eval from the cache is therefore bit-identical to eval
//! from the files; train from the cache applies the same random geometry to the downscaled image
//! (a documented approximation: small crops are upsampled from fewer pixels).
//!
//! File layout: a `petal_common::container` of magic `PETALIMG`, format version
//! [`CACHE_VERSION`] (the container checks lengths and the meta block's CRC-32; the pixels are
//! checked entry by entry, by [`ImageCache::verify`]):
//!
//! ```text
//! body: entry pixels, each starting on a 64-byte boundary (of the file too)
//! meta (little endian): u32 JSON length, JSON header (version, params, source fingerprint,
//!       count), then per entry 40 bytes: u64 body offset, u64 length, u32 width, u32 height,
//!       u32 original width, u32 original height, u32 CRC-32 of the pixels, u32 flags
//! ```
//!
//! The fingerprint is a SHA-256 over every source's path, size and modification time; the
//! params record the resize size, filter and decoder. A cache whose version, params or
//! fingerprint differ, or that is truncated or fails a checksum, is reported and rebuilt by
//! [`ImageCache::open_or_build`]. Writes are atomic (temp file in the same directory, fsync,
//! rename).

use crate::dataset::Sample;
use crate::decode::{decode_rgb_with, DecodeLimits};
use crate::error::{BadInput, Error, Problem};
use crate::transform::{resize_output_size, resize_view, View};
use petal_common::container::{self, le, Kind, PREAMBLE};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Current cache format version; bump on any layout or pixel-semantics change (2: the common
/// container).
pub const CACHE_VERSION: u32 = 2;
const KIND: Kind = Kind { magic: *b"PETALIMG", version: CACHE_VERSION, name: "image cache", body_crc: false };
const ENTRY_BYTES: usize = 40;
const FLAG_MISSING: u32 = 1;
/// Identifies the resize implementation; part of the params.
const RESIZE_ID: &str = "pillow-Resample.c-port/Bilinear/torchvision-Resize-int";
/// Identifies the decoders; part of the params.
const DECODER_ID: &str = "libjpeg-turbo-islow-fancy/image-0.25-pil-modes";
/// (resized width, height, original width, height, pixels).
type Resized = (u32, u32, u32, u32, Vec<u8>);

/// Parameters that determine the cached pixels.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheParams {
    /// Shorter side of the cached images (torchvision `Resize(short_side)`).
    pub short_side: u32,
    /// Decoder pixel limit.
    pub max_pixels: u64,
    /// Resize implementation identifier.
    pub resize: String,
    /// Decoder identifier.
    pub decoder: String,
}

impl CacheParams {
    /// Params for a given shorter side and limits.
    pub fn new(short_side: u32, limits: &DecodeLimits) -> Self {
        CacheParams { short_side, max_pixels: limits.max_pixels, resize: RESIZE_ID.to_string(), decoder: DECODER_ID.to_string() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Header {
    version: u32,
    params: CacheParams,
    fingerprint: String,
    count: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    len: u64,
    w: u32,
    h: u32,
    orig_w: u32,
    orig_h: u32,
    crc: u32,
    flags: u32,
}

/// One cached image, borrowed from the memory map.
#[derive(Debug, Clone, Copy)]
pub struct CachedImage<'a> {
    /// Width of the cached (resized) image.
    pub width: u32,
    /// Height of the cached image.
    pub height: u32,
    /// Width of the original source image.
    pub orig_width: u32,
    /// Height of the original source image.
    pub orig_height: u32,
    /// Packed RGB8 pixels, `width * height * 3` bytes.
    pub pixels: &'a [u8],
}

/// What [`ImageCache::open_or_build`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// An up-to-date cache was found and reused.
    Reused,
    /// The cache was (re)built; the reason says why (missing, stale, corrupt, ...).
    Built {
        /// Why it was built.
        reason: String,
    },
}

/// A memory-mapped image cache (see the module docs).
#[derive(Debug)]
pub struct ImageCache {
    path: PathBuf,
    map: memmap2::Mmap,
    header: Header,
    entries: Vec<Entry>,
    /// Inputs that could not be cached (only with `skip_bad`).
    pub bad: Vec<BadInput>,
}

/// Fingerprint of source files: SHA-256 over (path, size, mtime) of every sample, in order.
pub fn fingerprint(samples: &[Sample]) -> Result<String, Error> {
    let mut h = Sha256::new();
    h.update((samples.len() as u64).to_le_bytes());
    for s in samples {
        let bytes = s.path.as_os_str().as_encoded_bytes();
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
        // A missing or unreadable file still fingerprints (as "absent"): it is cached as missing.
        match std::fs::metadata(&s.path) {
            Ok(m) => {
                h.update(m.len().to_le_bytes());
                let t = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| (d.as_secs(), d.subsec_nanos()))
                    .unwrap_or((0, 0));
                h.update(t.0.to_le_bytes());
                h.update(t.1.to_le_bytes());
            }
            Err(_) => h.update(u64::MAX.to_le_bytes()),
        }
    }
    Ok(petal_common::hex(&h.finalize()))
}

/// Why an existing cache file cannot be reused: `damaged` when the file itself is broken (worth a
/// warning), not when it is missing or was built for other inputs (the normal case).
struct Unusable {
    reason: String,
    damaged: bool,
}

impl ImageCache {
    /// Opens the cache at `path` if it is valid for these samples and params (verifying every
    /// checksum), otherwise (re)builds it, reporting why. `skip_bad`: images that fail to
    /// decode are recorded as missing (listed in [`ImageCache::bad`]) instead of failing.
    pub fn open_or_build(path: &Path, samples: &[Sample], params: &CacheParams, skip_bad: bool) -> Result<(ImageCache, CacheStatus), Error> {
        let fp = fingerprint(samples)?;
        if let Ok(c) = Self::reuse(path, samples, params, &fp) {
            return Ok((c, CacheStatus::Reused));
        }
        // Another process may be building this very file: wait for it, then look again, so the
        // cache is computed once (and always written by atomic rename, never torn).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let _lock = petal_common::FileLock::exclusive(path).map_err(|e| Error::io(&e.path, e.source))?;
        let reason = match Self::reuse(path, samples, params, &fp) {
            Ok(c) => return Ok((c, CacheStatus::Reused)),
            Err(Unusable { reason, damaged: true }) => {
                tracing::warn!("rebuilding a damaged image cache: {reason}");
                reason
            }
            // A cache that does not exist yet or was built for other inputs is the normal case.
            Err(Unusable { reason, damaged: false }) => {
                tracing::info!("building image cache: {reason}");
                reason
            }
        };
        let bad = ImageCache::build(path, samples, params, &fp, skip_bad)?;
        let mut c = ImageCache::open(path)?;
        c.check(params, &fp, samples.len())?;
        c.bad = bad;
        Ok((c, CacheStatus::Built { reason }))
    }

    /// The cache at `path` if it exists, matches and verifies; else why not.
    fn reuse(path: &Path, samples: &[Sample], params: &CacheParams, fp: &str) -> Result<ImageCache, Unusable> {
        if !path.exists() {
            return Err(Unusable { reason: format!("{}: no cache yet", path.display()), damaged: false });
        }
        let damaged = |e: Error| Unusable { reason: e.to_string(), damaged: true };
        let mut c = ImageCache::open_parts(path).map_err(|(e, damage)| Unusable { reason: e.to_string(), damaged: damage })?;
        c.check(params, fp, samples.len()).map_err(|e| Unusable { reason: e.to_string(), damaged: false })?;
        c.verify().map_err(damaged)?;
        c.bad = c
            .entries
            .iter()
            .zip(samples)
            .filter(|(e, _)| e.flags & FLAG_MISSING != 0)
            .map(|(_, s)| BadInput::new(&s.path, Problem::Corrupt, "failed to decode when the cache was built"))
            .collect();
        tracing::info!("{}: reusing image cache ({} images)", path.display(), c.len());
        Ok(c)
    }

    fn check(&self, params: &CacheParams, fp: &str, count: usize) -> Result<(), Error> {
        if &self.header.params != params {
            return Err(Error::cache(&self.path, format!("built with other parameters ({:?}, now {:?})", self.header.params, params)));
        }
        if self.header.fingerprint != fp || self.entries.len() != count {
            return Err(Error::cache(&self.path, "stale: the source files changed (paths, sizes or modification times)"));
        }
        Ok(())
    }

    /// Maps and validates the structure of a cache file (magic, version, meta checksum, entry
    /// bounds). Pixel checksums are checked by [`ImageCache::verify`].
    pub fn open(path: &Path) -> Result<ImageCache, Error> {
        Self::open_parts(path).map_err(|(e, _)| e)
    }

    /// [`ImageCache::open`], saying whether a failure is damage (rather than another format
    /// version, which an upgrade leaves behind).
    fn open_parts(path: &Path) -> Result<ImageCache, (Error, bool)> {
        let file = std::fs::File::open(path).map_err(|e| (Error::io(path, e), true))?;
        // SAFETY: the map is read-only; the cache file is private to this program and replaced
        // only by atomic rename (which leaves an existing map pointing at the old inode).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| (Error::io(path, e), true))?;
        let err = |m: String| (Error::cache(path, m), true);
        let parts = container::open(&map, &KIND).map_err(|e| (Error::cache(path, e.to_string()), e.is_damage()))?;
        let mut meta = le::Reader::new(parts.meta);
        let json = meta.u32().and_then(|n| meta.bytes(n as usize)).ok_or_else(|| err("corrupt: header length".into()))?;
        let header: Header = serde_json::from_slice(json).map_err(|e| err(format!("corrupt header: {e}")))?;
        let table = meta.rest();
        if header.version != CACHE_VERSION || (table.len() / ENTRY_BYTES) as u64 != header.count || !table.len().is_multiple_of(ENTRY_BYTES) {
            return Err(err(format!("corrupt: {} index bytes for {} entries", table.len(), header.count)));
        }
        let body_len = parts.body.len() as u64;
        let mut entries = Vec::with_capacity(table.len() / ENTRY_BYTES);
        let mut r = le::Reader::new(table);
        for i in 0..header.count {
            let (offset, len) = (r.u64().unwrap_or_default(), r.u64().unwrap_or_default());
            let [w, h, orig_w, orig_h, crc, flags] = std::array::from_fn(|_| r.u32().unwrap_or_default());
            let en = Entry { offset, len, w, h, orig_w, orig_h, crc, flags };
            let ok = en.flags & FLAG_MISSING != 0
                || (en.len == en.w as u64 * en.h as u64 * 3 && en.offset.checked_add(en.len).is_some_and(|end| end <= body_len));
            if !ok {
                return Err(err(format!("corrupt: entry {i} out of bounds")));
            }
            entries.push(en);
        }
        Ok(ImageCache { path: path.to_path_buf(), map, header, entries, bad: Vec::new() })
    }

    /// The pixels of entry `e`, from the map.
    fn pixels(&self, e: &Entry) -> &[u8] {
        let at = PREAMBLE + e.offset as usize;
        &self.map[at..at + e.len as usize]
    }

    /// Checks every entry's pixel checksum (in parallel).
    pub fn verify(&self) -> Result<(), Error> {
        let bad = self.entries.par_iter().position_first(|e| e.flags & FLAG_MISSING == 0 && crc32fast::hash(self.pixels(e)) != e.crc);
        match bad {
            Some(i) => Err(Error::cache(&self.path, format!("corrupt: checksum mismatch in entry {i}"))),
            None => Ok(()),
        }
    }

    /// Number of entries (one per sample it was built for).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Shorter side of the cached images.
    pub fn short_side(&self) -> u32 {
        self.header.params.short_side
    }

    /// Entry `i`; an error when out of range or recorded as missing (a bad source image).
    pub fn get(&self, i: usize) -> Result<CachedImage<'_>, Error> {
        let e = self.entries.get(i).ok_or_else(|| Error::cache(&self.path, format!("no entry {i} (has {})", self.entries.len())))?;
        if e.flags & FLAG_MISSING != 0 {
            return Err(Error::cache(&self.path, format!("entry {i} is missing (its source image was bad)")));
        }
        Ok(CachedImage { width: e.w, height: e.h, orig_width: e.orig_w, orig_height: e.orig_h, pixels: self.pixels(e) })
    }

    /// Decodes and resizes every sample (in parallel, in bounded chunks) and writes the cache
    /// atomically. Returns the bad inputs recorded as missing entries (`skip_bad`).
    pub fn build(path: &Path, samples: &[Sample], params: &CacheParams, fingerprint: &str, skip_bad: bool) -> Result<Vec<BadInput>, Error> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| Error::io(&dir, e))?;
        let io = |e| Error::io(path, e);
        let mut w = container::Writer::new(std::io::BufWriter::with_capacity(1 << 20, tmp.as_file()), KIND).map_err(io)?;
        let mut entries = Vec::with_capacity(samples.len());
        let mut bad = Vec::new();
        let limits = DecodeLimits { max_pixels: params.max_pixels };
        let chunk = (rayon::current_num_threads() * 8).max(8);
        for group in samples.chunks(chunk) {
            let done: Vec<Result<Resized, Error>> = group
                .par_iter()
                .map(|s| {
                    let img = decode_rgb_with(&s.path, &limits)?;
                    let (ow, oh) = img.dimensions();
                    let (rw, rh) = resize_output_size(ow, oh, params.short_side);
                    let px = resize_view(View::of(&img), rw, rh);
                    Ok((rw, rh, ow, oh, px))
                })
                .collect();
            for (s, r) in group.iter().zip(done) {
                match r {
                    Ok((rw, rh, ow, oh, px)) => {
                        w.align(64).map_err(io)?;
                        let offset = w.body_len();
                        w.write_body(&px).map_err(io)?;
                        entries.push(Entry {
                            offset,
                            len: px.len() as u64,
                            w: rw,
                            h: rh,
                            orig_w: ow,
                            orig_h: oh,
                            crc: crc32fast::hash(&px),
                            flags: 0,
                        });
                    }
                    Err(e) if skip_bad => {
                        let b = match e {
                            Error::BadInput(b) => b,
                            other => BadInput::new(&s.path, Problem::Unreadable, other.to_string()),
                        };
                        tracing::warn!("cache: skipping {b}");
                        bad.push(b);
                        entries.push(Entry { offset: 0, len: 0, w: 0, h: 0, orig_w: 0, orig_h: 0, crc: 0, flags: FLAG_MISSING });
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let header = Header { version: CACHE_VERSION, params: params.clone(), fingerprint: fingerprint.to_string(), count: entries.len() as u64 };
        let json = serde_json::to_vec(&header).map_err(|e| Error::cache(path, format!("cannot serialise header: {e}")))?;
        let mut meta = Vec::with_capacity(4 + json.len() + entries.len() * ENTRY_BYTES);
        meta.extend_from_slice(&(json.len() as u32).to_le_bytes());
        meta.extend_from_slice(&json);
        for e in &entries {
            for v in [e.offset, e.len] {
                meta.extend_from_slice(&v.to_le_bytes());
            }
            for v in [e.w, e.h, e.orig_w, e.orig_h, e.crc, e.flags] {
                meta.extend_from_slice(&v.to_le_bytes());
            }
        }
        let out = w.finish(&meta).map_err(io)?;
        drop(out);
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        tracing::info!("{}: wrote image cache ({} images, {} bad)", path.display(), entries.len(), bad.len());
        Ok(bad)
    }
}

/// The image cache of one split of a dataset in `cache_dir` (decoded once, shorter side resized to
/// `tcfg.resize_size`), opened or built. The file name carries the split, the size and a hash of
/// the images' fingerprint, so any change to the images builds a new cache. Safe with concurrent
/// processes: one builds, the others wait and reuse. `skip_bad` records undecodable images as
/// missing entries instead of failing.
pub fn split_cache(
    cache_dir: &Path,
    split: &str,
    samples: &std::sync::Arc<[Sample]>,
    tcfg: &crate::TransformConfig,
    skip_bad: bool,
) -> Result<(ImageCache, CacheStatus), Error> {
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    let fp = fingerprint(samples)?;
    let short = &petal_common::sha256_hex(fp.as_bytes())[..16];
    let path = cache_dir.join(format!("images-{split}-{}-{short}.pcache", tcfg.resize_size));
    let params = CacheParams::new(tcfg.resize_size, &tcfg.limits);
    ImageCache::open_or_build(&path, samples, &params, skip_bad)
}
