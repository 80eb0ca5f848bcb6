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
use std::time::Instant;

use checkpoint::chunks::ChunkStore;
use checkpoint::{Checkpoint, Metadata, TensorMap};
use model::Classifier;
use petal_common::{Event, FileLock, Progress};
use preprocess::{ImageSource, LoaderConfig, Mode, Sample, TransformConfig};
use tch::{Device, Tensor};

use crate::chunks::{Extracted, RowLayout};
use crate::config::TrainConfig;
use crate::shards::{CacheKind, PartOutcome, PartTarget, ShardJob};
use crate::tensors::{from_data, to_data};
use crate::Error;

/// Version of the feature cache layout (bump when what is stored changes meaning).
pub const FEATURE_CACHE_VERSION: u32 = 1;

/// An image cache for `samples` (see [`preprocess::split_cache`]), opened or built; a rebuild is
/// reported to `progress`.
pub fn image_source(
    cache_dir: &Path,
    split: &str,
    samples: &Arc<[Sample]>,
    tcfg: &TransformConfig,
    skip_bad: bool,
    progress: &dyn Progress,
) -> Result<ImageSource, Error> {
    let t0 = Instant::now();
    let (cache, status) = preprocess::split_cache(cache_dir, split, samples, tcfg, skip_bad)?;
    if let preprocess::CacheStatus::Built { .. } = status {
        let msg = format!("{split}: image cache built ({} images, {:.1}s)", samples.len(), t0.elapsed().as_secs_f64());
        progress.event(Event::Message(&msg));
    }
    Ok(ImageSource::Cache(Arc::new(cache)))
}

/// Computes or loads backbone features.
pub struct Extractor<'a> {
    /// The network whose backbone computes the features.
    pub net: &'a Classifier,
    /// The run's config (architecture, views, seed, batch sizes).
    pub cfg: &'a TrainConfig,
    /// The image transform.
    pub tcfg: &'a TransformConfig,
    /// Where the backbone runs.
    pub device: Device,
    /// Where feature and image caches go.
    pub cache_dir: &'a Path,
    /// Identity of the backbone weights (part of the cache key).
    pub weights_id: &'a str,
    /// Leave out undecodable images instead of stopping.
    pub skip_bad: bool,
    /// Receives progress events.
    pub progress: &'a dyn Progress,
    /// Frozen features through onnxruntime instead of the libtorch `net` (see [`crate::ort`]).
    pub ort: Option<crate::ort::OrtBackbone<'a>>,
}

/// What a backbone pass over a split computes: the provenance key's parts and how to name it.
#[derive(Clone)]
pub(crate) struct PassSpec<'a> {
    /// The split's name (file names, messages).
    pub split: &'a str,
    /// Eval transform or augmented view.
    pub mode: Mode,
    /// The augmented view (ignored in eval mode).
    pub view: u64,
    /// The cache's kind (`petal.features`, `petal.activations`) and version.
    pub kind: (&'static str, u32),
    /// Further key parts (e.g. the split point of a partial network).
    pub extra: serde_json::Value,
    /// For one shard of the split: each sample's index in the whole split (its augmentation).
    pub ids: Option<Vec<usize>>,
}

/// The network part a pass runs on each batch of images.
pub(crate) type ForwardFn<'a> = dyn Fn(&Tensor) -> Result<Tensor, Error> + 'a;

impl PassSpec<'_> {
    /// Several views of the same images are read from the decoded-image cache (resized to the eval
    /// resize size), a single view from the files: the source changes the pixels.
    fn reads_image_cache(&self, cfg: &TrainConfig) -> bool {
        self.mode == Mode::Train && cfg.views > 1
    }

    /// What the pass computes, in one word.
    fn word(&self) -> &'static str {
        if self.kind.0 == "petal.features" {
            "features"
        } else {
            "activations"
        }
    }

    /// `features (valid split)`, `activations of view 2 (train split)`: the items in progress messages.
    fn noun(&self) -> String {
        match self.mode {
            Mode::Train => format!("{} of view {} ({} split)", self.word(), self.view + 1, self.split),
            Mode::Eval => format!("{} ({} split)", self.word(), self.split),
        }
    }
}

impl Extractor<'_> {
    /// The provenance key of `spec` over images of fingerprint `fp`: every input of the result.
    pub(crate) fn key(&self, spec: &PassSpec, fp: &str) -> serde_json::Value {
        let mut key = serde_json::json!({
            "kind": spec.kind.0,
            "version": spec.kind.1,
            "arch": self.cfg.arch,
            "weights": self.weights_id,
            "transform": self.tcfg,
            "mode": spec.mode,
            "view": if spec.mode == Mode::Train { spec.view } else { 0 },
            "seed": self.cfg.seed,
            "images": fp,
            "source": if spec.reads_image_cache(self.cfg) { "image-cache" } else { "files" },
        });
        if let (Some(k), serde_json::Value::Object(extra)) = (key.as_object_mut(), &spec.extra) {
            k.extend(extra.clone());
        }
        key
    }

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
        crate::shards::warn_unmerged(&path, self.progress);
        let forward = |x: &Tensor| self.backbone_features(x);
        let row = RowLayout { shape: vec![self.net.feature_dim()], kind: tch::Kind::Float };
        let (out, secs) = self.pass(samples, &spec, &key, &chunk_dir, (&forward, row))?;
        let (x, y) = (out.x, out.y);
        save_features(&path, self.cfg.arch.name(), &key, &x, &y)?;
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
        let target = PartTarget { cache: &path, key: &key, kind: CacheKind::Features };
        self.extract_part(samples, spec, &target, job, (&forward, row))
    }

    /// Runs `forward` over `samples` as `spec` says, in chunks kept in `chunk_dir` (when chunking
    /// is on), reporting progress; returns the rows and the seconds it took. The caller saves the
    /// result, then finishes the store.
    pub(crate) fn pass(
        &self,
        samples: &Arc<[Sample]>,
        spec: &PassSpec,
        key: &serde_json::Value,
        chunk_dir: &Path,
        (forward, row): (&ForwardFn, RowLayout),
    ) -> Result<(Extracted, f64), Error> {
        let t0 = Instant::now();
        let source = if spec.reads_image_cache(self.cfg) {
            // Several views of the same images: decode each JPEG once.
            image_source(self.cache_dir, spec.split, samples, self.tcfg, self.skip_bad, self.progress)?
        } else {
            ImageSource::Files
        };
        let lcfg = LoaderConfig {
            batch_size: self.cfg.eval_batch_size,
            shuffle: false,
            seed: self.cfg.seed,
            epoch: spec.view,
            mode: spec.mode,
            channels_last: self.cfg.channels_last,
            skip_bad: self.skip_bad,
            // One preparation thread: decoding is ~10x cheaper than the backbone, and a second
            // rayon thread would only fight libtorch's threads for the same cores.
            threads: 1,
            sample_ids: spec.ids.clone(),
            ..LoaderConfig::default()
        };
        let noun = spec.noun();
        let what = match spec.mode {
            Mode::Train => format!("{} view {}", spec.split, spec.view + 1),
            Mode::Eval => format!("{} {}", spec.split, spec.word()),
        };
        let store = match crate::chunks::chunk_items(self.cfg.chunk_images, lcfg.batch_size) {
            Some(items) => Some(ChunkStore::open(chunk_dir, key, samples.len(), items, &noun)?),
            None => None,
        };
        self.progress.event(Event::Start { task: &what, total: samples.len() as u64 });
        let job = crate::chunks::Job { forward, row, device: self.device, samples, source, tcfg: self.tcfg, lcfg };
        let mut done = 0;
        let out = crate::chunks::extract(&job, store, &mut |n| {
            done += n;
            self.progress.event(Event::Advance { done, note: None });
        })?;
        let secs = t0.elapsed().as_secs_f64();
        let summary = format!("{what}: {} images in {secs:.1}s ({:.1} img/s)", out.computed, out.computed as f64 / secs.max(1e-9));
        self.progress.event(Event::Finish { summary: Some(&summary) });
        Ok((out, secs))
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

/// Writes a feature cache file: `features` `x` `[N, F]` and `labels` `y` `[N]` of architecture
/// `arch`, with their provenance `key` (what [`Extractor::features`] writes and reads).
pub(crate) fn save_features(path: &Path, arch: &str, key: &serde_json::Value, x: &Tensor, y: &Tensor) -> Result<(), Error> {
    let mut tensors = TensorMap::new();
    tensors.insert("features".into(), to_data("features", x)?);
    tensors.insert("labels".into(), to_data("labels", y)?);
    let meta = Metadata { arch: arch.into(), provenance: key.clone(), ..Metadata::default() };
    checkpoint::save(path, &Checkpoint { meta, tensors })?;
    Ok(())
}
