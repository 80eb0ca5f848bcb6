//! The frozen-backbone feature cache, and the image caches that feed it.
//!
//! A feature file is a petal checkpoint (`features` `[N, F]` f32, `labels` `[N]` i64) whose
//! `provenance` holds the cache format version and the full key it was computed from: architecture,
//! weights file identity, transform parameters, mode, view, seed and the source images' fingerprint.
//! The file name is a hash of that key, so any change computes new features; a file whose key does
//! not match, or that fails the checkpoint checksum, is recomputed. While it is computed, finished
//! chunks of `chunk_images` images go to `features-<split>-<digest>.chunks/` (see `crate::chunks`):
//! a run killed mid-way computes only the chunks that are missing, and the file it assembles is the
//! one an uninterrupted run writes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use checkpoint::{Checkpoint, DType, Metadata, TensorMap};
use petal_common::{Event, FileLock};
use preprocess::{Mode, Sample};
use tch::Tensor;

use crate::chunks::RowLayout;
pub use crate::extractor::{image_source, Extractor};
use crate::extractor::{PartOutcome, PassSpec, ShardJob};
use crate::rows::{RowCache, Rows};
use crate::tensors::{from_data, to_data};
use crate::Error;

/// Version of the feature cache layout (bump when what is stored changes meaning).
pub const FEATURE_CACHE_VERSION: u32 = 1;

impl Extractor<'_> {
    /// Features and labels of `samples` for (mode, view): from the cache, or computed and cached.
    /// Returns the seconds spent computing (0 on a cache hit).
    pub fn features(&self, samples: &Arc<[Sample]>, split: &str, mode: Mode, view: u64) -> Result<((Tensor, Tensor), f64), Error> {
        let (spec, key, path) = self.feature_cache(samples, split, mode, view)?;
        // Chunks of an interrupted extraction (see `crate::chunks`), named by the same digest.
        let chunk_dir = path.with_extension("chunks");
        if let Some(v) = self.cached(&path, &key) {
            checkpoint::chunks::discard(&chunk_dir);
            return Ok((v, 0.0));
        }
        // Another process may be computing this very file: wait for it and look again, so the
        // features are computed once; the file itself is written by atomic rename.
        let _lock = FileLock::exclusive(&path)?;
        if let Some(v) = self.cached(&path, &key) {
            checkpoint::chunks::discard(&chunk_dir);
            return Ok((v, 0.0));
        }
        crate::extractor::warn_unmerged(&path, self.progress);
        let forward = |x: &Tensor| self.backbone_features(x);
        let row = RowLayout { shape: vec![self.net.feature_dim()], kind: tch::Kind::Float };
        let (out, secs) = self.pass(samples, &spec, &key, &chunk_dir, (&forward, row))?;
        let (x, y) = (out.x, out.y);
        FeatureCache::write(&path, self.cfg.recipe.arch.name(), &key, &x, &y)?;
        if let Some(store) = out.store {
            store.finish();
        }
        Ok(((x, y), secs))
    }

    /// The pooled features of a batch, by the runtime this extractor was given.
    fn backbone_features(&self, x: &Tensor) -> Result<Tensor, Error> {
        match &self.ort {
            Some(ort) => ort.features(x),
            None => Ok(self.net.infer_features(x)),
        }
    }

    /// The pass, provenance key and file of the feature cache of `samples` for (mode, view).
    fn feature_cache<'s>(
        &self,
        samples: &[Sample],
        split: &'s str,
        mode: Mode,
        view: u64,
    ) -> Result<(PassSpec<'s>, serde_json::Value, PathBuf), Error> {
        let kind = ("petal.features", FEATURE_CACHE_VERSION);
        // libtorch's features keep the keys they always had; onnxruntime's say so.
        let extra = match self.ort {
            Some(_) => serde_json::json!({ "runtime": "onnxruntime" }),
            None => serde_json::Value::Null,
        };
        let spec = PassSpec { split, mode, view, kind, extra, ids: None };
        let key = self.key(&spec, &preprocess::fingerprint(samples)?);
        let digest = petal_common::sha256_hex(key.to_string().as_bytes());
        std::fs::create_dir_all(self.cache_dir).map_err(|e| Error::io(self.cache_dir, e))?;
        let path = self.cache_dir.join(format!("features-{split}-{}.safetensors", &digest[..24]));
        Ok((spec, key, path))
    }

    /// Computes `job`'s shard of the feature cache [`Self::features`] reads for (mode, view), as a
    /// part beside it (see [`crate::shards`]); a part already complete is kept.
    pub fn features_part(&self, samples: &Arc<[Sample]>, split: &str, (mode, view): (Mode, u64), job: &ShardJob) -> Result<PartOutcome, Error> {
        let (spec, key, path) = self.feature_cache(samples, split, mode, view)?;
        let forward = |x: &Tensor| self.backbone_features(x);
        let row = RowLayout { shape: vec![self.net.feature_dim()], kind: tch::Kind::Float };
        self.extract_part::<FeatureCache>(samples, spec, (&path, &key), job, (&forward, row))
    }

    /// The cached features at `path` when present and usable (an unusable file is reported).
    fn cached(&self, path: &Path, key: &serde_json::Value) -> Option<(Tensor, Tensor)> {
        if !path.exists() {
            return None;
        }
        match self.load(path, key) {
            Ok(v) => {
                tracing::info!(path = %path.display(), "feature cache hit");
                Some(v)
            }
            Err(e) => {
                self.progress.event(Event::Warning(&format!("feature cache {} is unusable ({e}); recomputing it", path.display())));
                None
            }
        }
    }

    fn load(&self, path: &Path, key: &serde_json::Value) -> Result<(Tensor, Tensor), Error> {
        let c = checkpoint::load(path)?;
        if &c.meta.provenance != key {
            return Err(Error::Mismatch { path: path.to_path_buf(), detail: "was computed from other inputs".into() });
        }
        let get = |k: &str| c.tensors.get(k).ok_or_else(|| Error::Mismatch { path: path.to_path_buf(), detail: format!("has no {k} tensor") });
        let x = from_data("features", get("features")?)?;
        let y = from_data("labels", get("labels")?)?;
        if x.size().first() != y.size().first() || x.size().get(1) != Some(&self.net.feature_dim()) {
            return Err(Error::Mismatch { path: path.to_path_buf(), detail: "has tensors of the wrong shape".into() });
        }
        Ok((x, y))
    }
}

/// The feature cache's files: a petal checkpoint with `features` `[N, F]` and `labels` `[N]`, the
/// architecture and the provenance key in its metadata (what [`Extractor::features`] writes and
/// reads).
pub struct FeatureCache;

impl FeatureCache {
    fn save(path: &Path, arch: &str, key: &serde_json::Value, features: checkpoint::TensorData, labels: checkpoint::TensorData) -> Result<(), Error> {
        let mut tensors = TensorMap::new();
        tensors.insert("features".into(), features);
        tensors.insert("labels".into(), labels);
        let meta = Metadata { arch: arch.into(), provenance: key.clone(), ..Metadata::default() };
        checkpoint::save(path, &Checkpoint { meta, tensors })?;
        Ok(())
    }
}

impl RowCache for FeatureCache {
    const NAME: &'static str = "features";
    const EXTENSION: &'static str = "safetensors";

    fn write(path: &Path, arch: &str, key: &serde_json::Value, x: &Tensor, y: &Tensor) -> Result<(), Error> {
        Self::save(path, arch, key, to_data("features", x)?, to_data("labels", y)?)
    }

    fn read_rows<'b>(bytes: &'b [u8], path: &Path, key: &serde_json::Value) -> Result<Rows<'b>, Error> {
        let mut c = checkpoint::load_bytes(bytes, path)?;
        let mismatch = |detail: &str| Error::Mismatch { path: path.to_path_buf(), detail: detail.into() };
        if &c.meta.provenance != key {
            return Err(mismatch("was computed from other inputs"));
        }
        let (Some(x), Some(y)) = (c.tensors.remove("features"), c.tensors.remove("labels")) else {
            return Err(mismatch("has no features or no labels"));
        };
        let labels: Vec<i64> = Vec::try_from(from_data("labels", &y)?).map_err(|e| mismatch(&format!("has unreadable labels: {e}")))?;
        if x.shape.first() != Some(&labels.len()) {
            return Err(mismatch("has tensors of the wrong shape"));
        }
        Ok(Rows { dtype: x.dtype, shape: x.shape[1..].to_vec(), labels, data: x.bytes.to_vec().into(), arch: c.meta.arch })
    }

    fn write_rows<'r>(
        path: &Path,
        arch: &str,
        key: &serde_json::Value,
        (dtype, shape): (DType, &[usize]),
        labels: &[i64],
        row: &dyn Fn(usize) -> &'r [u8],
    ) -> Result<(), Error> {
        let bytes: Vec<u8> = (0..labels.len()).flat_map(|i| row(i).iter().copied()).collect();
        let features = checkpoint::TensorData::new(dtype, [&[labels.len()][..], shape].concat(), bytes)?;
        let label_bytes = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
        Self::save(path, arch, key, features, checkpoint::TensorData::new(DType::I64, vec![labels.len()], label_bytes)?)
    }
}
