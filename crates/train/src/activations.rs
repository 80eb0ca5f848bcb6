//! The activation cache of partial fine-tuning: the backbone's activation maps at a block boundary,
//! computed once per image and augmentation view, so that the trainable blocks after the split and
//! the head train epoch after epoch without running the frozen blocks again.
//!
//! A cache file (`activations-<split>-<digest>.pact`) is born chunked: while it is computed,
//! finished chunks go to `activations-<split>-<digest>.chunks/` through
//! [`checkpoint::chunks::ChunkStore`], so a run killed mid-way computes only the missing chunks;
//! the assembled file is then written atomically and read memory-mapped (batches are copied out
//! of the map, the whole cache is never loaded). Its name is the digest of its provenance key
//! (architecture, weights identity, split point, element type, transform, mode, view, seed and the
//! images' fingerprint), which the file also carries; a file of another key, version or layout, or
//! whose checksum fails, is recomputed.
//!
//! # File layout
//!
//! A `petal_common::container` of magic `PETALACT`, version [`ACTIVATION_CACHE_VERSION`] (the
//! container checks the lengths and the CRC-32s, the body's whole). The body is the activations
//! `[N, C, H, W]`, one image's row after another, 64-byte aligned in the file. The meta block
//! (little-endian) is a `u32` length and a JSON object (`key`: the provenance key, `dtype`: `"f32"`
//! or `"f16"`, `shape`: `[C, H, W]`, `images`: `N`), then the `N` labels (`i64`).

use petal_common::container::{self, le, PREAMBLE};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use checkpoint::{DType, TensorData};
use petal_common::{Event, FileLock};
use preprocess::Sample;
use tch::{Device, Kind, Tensor};

use crate::chunks::RowLayout;
use crate::config::ActivationDtype;
use crate::extractor::{Extractor, PartOutcome, PassSpec, ShardJob};
use crate::rows::{RowCache, Rows};
use crate::tensors::{from_data, to_data};
use crate::Error;

/// Version of the activation cache layout (bump when what is stored changes meaning; 2: the
/// common container).
pub const ACTIVATION_CACHE_VERSION: u32 = 2;
const KIND: container::Kind = container::Kind { magic: *b"PETALACT", version: ACTIVATION_CACHE_VERSION, name: "activation cache", body_crc: true };

/// What the meta block's JSON says.
#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    key: serde_json::Value,
    dtype: String,
    shape: [usize; 3],
    images: usize,
}

/// A finished activation cache, memory-mapped.
#[derive(Debug)]
pub struct ActivationCache {
    path: PathBuf,
    map: memmap2::Mmap,
    layout: Layout,
}

/// What a cache file's header says: element type, one image's shape, labels, where rows start.
#[derive(Debug)]
struct Layout {
    pub dtype: DType,
    pub shape: [i64; 3],
    pub labels: Vec<i64>,
}

impl Layout {
    /// Bytes of one image's activations.
    pub fn row_bytes(&self) -> usize {
        self.shape.iter().product::<i64>() as usize * self.dtype.size_in_bytes()
    }

    /// The bytes of image `i`'s activations in `file` (the bytes this layout was parsed from).
    pub fn row<'b>(&self, file: &'b [u8], i: usize) -> Option<&'b [u8]> {
        let rb = self.row_bytes();
        if i >= self.labels.len() {
            return None;
        }
        file.get(PREAMBLE + i * rb..PREAMBLE + (i + 1) * rb)
    }

    /// Parses and checks the bytes of a cache file (`path` names it in errors): layout,
    /// checksums, and that it was computed from `key`.
    pub fn parse(b: &[u8], path: &Path, key: &serde_json::Value) -> Result<Self, Error> {
        let bad = |detail: String| Error::Mismatch { path: path.to_path_buf(), detail };
        let parts = container::open(b, &KIND).map_err(|e| bad(format!("is not a usable activation cache: {e}")))?;
        let mut meta = le::Reader::new(parts.meta);
        let json = meta.u32().and_then(|n| meta.bytes(n as usize)).ok_or_else(|| bad("has a damaged meta block".into()))?;
        let m: Meta = serde_json::from_slice(json).map_err(|e| bad(format!("has an unreadable meta block: {e}")))?;
        let dtype = match m.dtype.as_str() {
            "f32" => DType::F32,
            "f16" => DType::F16,
            other => return Err(bad(format!("holds activations of type {other:?}"))),
        };
        let expected = m.shape.iter().try_fold(m.images, |n, &d| n.checked_mul(d)).and_then(|e| e.checked_mul(dtype.size_in_bytes()));
        if expected != Some(parts.body.len()) || meta.rest().len() != m.images.saturating_mul(8) {
            return Err(bad(format!("holds {} bytes of rows, its meta block says {expected:?} (torn or truncated)", parts.body.len())));
        }
        if m.key != *key {
            return Err(bad("was computed from other inputs".into()));
        }
        let labels = (0..m.images).map_while(|_| meta.i64()).collect();
        Ok(Layout { dtype, shape: m.shape.map(|d| d as i64), labels })
    }
}

impl ActivationCache {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.layout.labels.len()
    }

    /// Whether the cache holds no image.
    pub fn is_empty(&self) -> bool {
        self.layout.labels.is_empty()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// Shape of one image's activations `[C, H, W]`.
    pub fn shape(&self) -> [i64; 3] {
        self.layout.shape
    }

    /// The activations (as f32, `[len, C, H, W]`) and labels of the images at `idx`.
    pub fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor), Error> {
        let l = &self.layout;
        let mut bytes = Vec::with_capacity(idx.len() * l.row_bytes());
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            let row = l.row(&self.map, i).ok_or_else(|| Error::Data(format!("{}: image {i} is out of range", self.path.display())))?;
            bytes.extend_from_slice(row);
            labels.push(l.labels[i]);
        }
        let shape = vec![idx.len(), l.shape[0] as usize, l.shape[1] as usize, l.shape[2] as usize];
        let data = TensorData::new(l.dtype, shape, bytes)?;
        Ok((from_data("activations", &data)?.to_kind(Kind::Float), Tensor::from_slice(&labels)))
    }

    /// Writes activations `x` `[N, C, H, W]` and labels `y` with their provenance `key` to `path`,
    /// atomically.
    pub(crate) fn write_tensors(path: &Path, key: &serde_json::Value, x: &Tensor, y: &Tensor) -> Result<(), Error> {
        let (xd, yd) = (to_data("activations", x)?, to_data("labels", y)?);
        if xd.shape.len() != 4 || yd.dtype != DType::I64 || yd.shape != [xd.shape[0]] {
            return Err(Error::Config(format!("activations {:?} and labels {:?} do not fit together", xd.shape, yd.shape)));
        }
        let mut r = le::Reader::new(&yd.bytes);
        let labels: Vec<i64> = std::iter::from_fn(|| r.i64()).collect();
        let rb = xd.bytes.len() / xd.shape[0].max(1);
        let rows = |i: usize| &xd.bytes[i * rb..(i + 1) * rb];
        write_rows(path, key, (xd.dtype, [xd.shape[1], xd.shape[2], xd.shape[3]]), &labels, &rows)
    }

    /// Opens the cache at `path`, checking its layout, checksums and that it was computed from `key`.
    pub fn open(path: &Path, key: &serde_json::Value) -> Result<Self, Error> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: cache files are only ever replaced by atomic rename, never written in place, so
        // the mapped bytes do not change while mapped; every read below is bounds-checked.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let layout = Layout::parse(&map, path, key)?;
        Ok(ActivationCache { path: path.to_path_buf(), map, layout })
    }
}

impl RowCache for ActivationCache {
    const NAME: &'static str = "activations";
    const EXTENSION: &'static str = "pact";

    fn write(path: &Path, _arch: &str, key: &serde_json::Value, x: &Tensor, y: &Tensor) -> Result<(), Error> {
        Self::write_tensors(path, key, &x.to_device(Device::Cpu), y)
    }

    fn read_rows<'b>(bytes: &'b [u8], path: &Path, key: &serde_json::Value) -> Result<Rows<'b>, Error> {
        let l = Layout::parse(bytes, path, key)?;
        let rows = l.row_bytes() * l.labels.len();
        let data =
            bytes.get(PREAMBLE..PREAMBLE + rows).ok_or_else(|| Error::Mismatch { path: path.into(), detail: "is shorter than its rows".into() })?;
        Ok(Rows { dtype: l.dtype, shape: l.shape.iter().map(|&d| d as usize).collect(), labels: l.labels, data: data.into(), arch: String::new() })
    }

    fn write_rows<'r>(
        path: &Path,
        _arch: &str,
        key: &serde_json::Value,
        (dtype, shape): (DType, &[usize]),
        labels: &[i64],
        row: &dyn Fn(usize) -> &'r [u8],
    ) -> Result<(), Error> {
        let shape: [usize; 3] = shape.try_into().map_err(|_| Error::Config(format!("activation rows of shape {shape:?} are not [C, H, W]")))?;
        write_rows(path, key, (dtype, shape), labels, row)
    }
}

/// Writes a cache file of `labels.len()` images to `path`, atomically: `key`, element type and
/// one image's shape `[C, H, W]`, then the labels and the bytes `row(i)` of each image in order.
fn write_rows<'r>(
    path: &Path,
    key: &serde_json::Value,
    (dtype, shape): (DType, [usize; 3]),
    labels: &[i64],
    row: &dyn Fn(usize) -> &'r [u8],
) -> Result<(), Error> {
    let dtype = match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        other => return Err(Error::Config(format!("activations of type {other:?} cannot be cached"))),
    };
    let meta = Meta { key: key.clone(), dtype: dtype.into(), shape, images: labels.len() };
    let json = serde_json::to_vec(&meta).map_err(|e| Error::Config(format!("cannot write the activation cache's meta block: {e}")))?;
    let mut meta_bytes = Vec::with_capacity(4 + json.len() + 8 * labels.len());
    meta_bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    meta_bytes.extend_from_slice(&json);
    meta_bytes.extend(labels.iter().flat_map(|l| l.to_le_bytes()));
    petal_common::write_atomic_with(path, |tmp: &Path| -> Result<(), Error> {
        let f = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let mut w = container::Writer::new(std::io::BufWriter::new(f), KIND).map_err(|e| Error::io(tmp, e))?;
        for i in 0..labels.len() {
            w.write_body(row(i)).map_err(|e| Error::io(tmp, e))?;
        }
        w.finish(&meta_bytes).map_err(|e| Error::io(tmp, e))?;
        Ok(())
    })
}

/// One activation cache file a run needs: which pass, and where it lives.
pub(crate) struct Planned<'a> {
    spec: PassSpec<'a>,
    key: serde_json::Value,
    path: PathBuf,
    chunk_dir: PathBuf,
    images: usize,
}

/// What a partial run's activation caches take on disk, for the size report and the refusal.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePlan {
    /// Bytes of every file the run uses.
    pub total_bytes: u64,
    /// Bytes of the files still to compute.
    pub missing_bytes: u64,
    /// The largest file (its chunks and the file coexist until the file is written).
    pub largest_bytes: u64,
    /// Free bytes on the cache's file system, when known.
    pub free_bytes: Option<u64>,
}

impl Extractor<'_> {
    /// Plans the activation caches of `passes` at unit `split_unit`.
    pub(crate) fn plan_activations<'s>(
        &self,
        passes: Vec<crate::CachedPass<'s>>,
        split_unit: usize,
        dtype: ActivationDtype,
    ) -> Result<Vec<Planned<'s>>, Error> {
        let blocks = self.cfg.recipe.arch.backbone_blocks();
        let after = blocks.get(split_unit.wrapping_sub(1)).cloned().unwrap_or_default();
        std::fs::create_dir_all(self.cache_dir).map_err(|e| Error::io(self.cache_dir, e))?;
        let mut out = Vec::new();
        for crate::CachedPass { split, samples, mode, view } in passes {
            let mut extra = serde_json::json!({ "split_unit": split_unit, "split_after": after, "dtype": dtype });
            // libtorch's activations keep the keys they always had; onnxruntime's say so.
            if self.ort.is_some() {
                extra["runtime"] = "onnxruntime".into();
            }
            let spec = PassSpec { split, mode, view, kind: ("petal.activations", ACTIVATION_CACHE_VERSION), extra, ids: None };
            let key = self.key(&spec, &preprocess::fingerprint(samples)?);
            let d = checkpoint::chunks::digest(&key);
            let path = self.cache_dir.join(format!("activations-{split}-{}.pact", &d[..24]));
            let chunk_dir = self.cache_dir.join(format!("activations-{split}-{}.chunks", &d[..24]));
            out.push(Planned { spec, key, path, chunk_dir, images: samples.len() });
        }
        Ok(out)
    }

    /// The activations of a batch at `split_unit`, by the runtime this extractor was given.
    fn frozen_blocks(&self, x: &Tensor, split_unit: usize) -> Result<Tensor, Error> {
        match &self.ort {
            Some(ort) => Ok(ort.activations(x, split_unit)?.to_device(self.device)),
            None => self.net.activations(x, split_unit).map_err(Error::from),
        }
    }

    /// The shape `[C, H, W]` of one image's activations at `split_unit`.
    fn activation_shape(&self, split_unit: usize) -> Result<[i64; 3], Error> {
        let s = self.cfg.recipe.image_size as i64;
        let x = Tensor::zeros([1, 3, s, s], (Kind::Float, self.device));
        let a = self.net.activations(&x, split_unit)?;
        match a.size()[..] {
            [_, c, h, w] => Ok([c, h, w]),
            ref other => Err(Error::Config(format!("activations at unit {split_unit} have shape {other:?}, not [N, C, H, W]"))),
        }
    }

    /// Sizes the planned caches, reports the size, and refuses when the missing files would not
    /// fit the free disk or `limit_mb` (0: no limit) would be exceeded.
    pub(crate) fn check_activation_space(
        &self,
        plan: &[Planned],
        split_unit: usize,
        dtype: ActivationDtype,
        limit_mb: u64,
    ) -> Result<CachePlan, Error> {
        let shape = self.activation_shape(split_unit)?;
        let row = shape.iter().product::<i64>() as u64 * dtype.dtype().size_in_bytes() as u64;
        let size = |p: &Planned| PREAMBLE as u64 + 64 + p.key.to_string().len() as u64 + p.images as u64 * (row + 8);
        let total_bytes = plan.iter().map(size).sum();
        let missing: Vec<&Planned> = plan.iter().filter(|p| !p.path.exists()).collect();
        let missing_bytes = missing.iter().map(|p| size(p)).sum();
        let largest_bytes = missing.iter().map(|p| size(p)).max().unwrap_or(0);
        let free_bytes = petal_common::disk::free_bytes(self.cache_dir);
        let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
        let images: usize = plan.iter().map(|p| p.images).sum();
        let msg = format!(
            "activation cache: {} file(s), {} images × {}×{}×{} {:?} = {} ({} to compute; {} free in {})",
            plan.len(),
            checkpoint::chunks::thousands(images),
            shape[0],
            shape[1],
            shape[2],
            dtype,
            mb(total_bytes),
            mb(missing_bytes),
            free_bytes.map_or("unknown".into(), mb),
            self.cache_dir.display()
        );
        self.progress.event(Event::Message(&msg));
        if limit_mb > 0 && total_bytes > limit_mb * 1_000_000 {
            return Err(Error::Config(format!(
                "the activation cache would take {} but activation_cache_limit_mb is {limit_mb}: train fewer blocks (unfreeze_blocks), fewer views, activation_dtype = \"f16\", or raise the limit",
                mb(total_bytes)
            )));
        }
        if let Some(free) = free_bytes {
            if missing_bytes + largest_bytes > free {
                return Err(Error::NoSpace(format!(
                    "no space left in {} for the activation cache: it needs {} more (plus {} while its largest file is assembled) but only {} is free: free some space, move cache_dir, or train fewer blocks or views",
                    self.cache_dir.display(),
                    mb(missing_bytes),
                    mb(largest_bytes),
                    mb(free)
                )));
            }
        }
        Ok(CachePlan { total_bytes, missing_bytes, largest_bytes, free_bytes })
    }

    /// The activation cache of one planned pass: opened when present and usable, else computed
    /// (reusing the chunks of an interrupted run) and written. Returns the seconds spent computing.
    pub(crate) fn activations(
        &self,
        p: &Planned,
        samples: &Arc<[Sample]>,
        split_unit: usize,
        dtype: ActivationDtype,
    ) -> Result<(ActivationCache, f64), Error> {
        if let Some(c) = self.cached_activations(p) {
            return Ok((c, 0.0));
        }
        let _lock = FileLock::exclusive(&p.path)?;
        if let Some(c) = self.cached_activations(p) {
            return Ok((c, 0.0));
        }
        crate::extractor::warn_unmerged(&p.path, self.progress);
        let shape = self.activation_shape(split_unit)?;
        let forward = |x: &Tensor| Ok(self.frozen_blocks(x, split_unit)?.to_kind(dtype.kind()).contiguous());
        let row = RowLayout { shape: shape.to_vec(), kind: dtype.kind() };
        let (out, secs) = self.pass(samples, &p.spec, &p.key, &p.chunk_dir, (&forward, row))?;
        ActivationCache::write_tensors(&p.path, &p.key, &out.x.to_device(Device::Cpu), &out.y)?;
        drop(out.x);
        if let Some(store) = out.store {
            store.finish();
        }
        Ok((ActivationCache::open(&p.path, &p.key)?, secs))
    }

    /// Computes `job`'s shard of the planned activation cache `p`, as a part beside it (see
    /// [`crate::shards`]); a part already complete is kept.
    pub(crate) fn activations_part(
        &self,
        p: &Planned,
        samples: &Arc<[Sample]>,
        (split_unit, dtype): (usize, ActivationDtype),
        job: &ShardJob,
    ) -> Result<PartOutcome, Error> {
        let shape = self.activation_shape(split_unit)?;
        let forward = |x: &Tensor| Ok(self.frozen_blocks(x, split_unit)?.to_kind(dtype.kind()).contiguous());
        let row = RowLayout { shape: shape.to_vec(), kind: dtype.kind() };
        self.extract_part::<ActivationCache>(samples, p.spec.clone(), (&p.path, &p.key), job, (&forward, row))
    }

    fn cached_activations(&self, p: &Planned) -> Option<ActivationCache> {
        if !p.path.exists() {
            return None;
        }
        match ActivationCache::open(&p.path, &p.key) {
            Ok(c) => {
                tracing::info!(path = %p.path.display(), "activation cache hit");
                checkpoint::chunks::discard(&p.chunk_dir);
                Some(c)
            }
            Err(e) => {
                self.progress.event(Event::Warning(&format!("activation cache {} is unusable ({e}); recomputing it", p.path.display())));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trip_and_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.pact");
        let key = serde_json::json!({ "kind": "test", "n": 1 });
        let x = Tensor::arange(2 * 3 * 2 * 2, (Kind::Float, Device::Cpu)).view([2, 3, 2, 2]).to_kind(Kind::Half);
        let y = Tensor::from_slice(&[4i64, 7]);
        ActivationCache::write_tensors(&path, &key, &x, &y).expect("write");
        let c = ActivationCache::open(&path, &key).expect("open");
        assert_eq!((c.len(), c.shape()), (2, [3, 2, 2]));
        let (xb, yb) = c.batch(&[1, 0, 1]).expect("batch");
        assert!(xb.equal(&Tensor::cat(&[x.get(1), x.get(0), x.get(1)], 0).view([3, 3, 2, 2]).to_kind(Kind::Float)));
        assert_eq!(Vec::<i64>::try_from(&yb).expect("labels"), vec![7, 4, 7]);
        assert!(c.batch(&[2]).is_err(), "out of range");
        let other = serde_json::json!({ "kind": "test", "n": 2 });
        assert!(ActivationCache::open(&path, &other).expect_err("other key").to_string().contains("other inputs"));
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("damage");
        assert!(ActivationCache::open(&path, &key).expect_err("damaged").to_string().contains("checksum"));
        std::fs::write(&path, &bytes[..last]).expect("truncate");
        assert!(ActivationCache::open(&path, &key).expect_err("torn").to_string().contains("torn"));
    }
}
