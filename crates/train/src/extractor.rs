//! The extractor: what runs a backbone (or its frozen blocks) over a split, in crash-safe chunks,
//! for either row cache of cached training (the feature cache, `crate::features`; the activation
//! cache, `crate::activations`), and the types of a shard's part of such a cache
//! (`crate::shards`). A leaf: it knows neither cache kind.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use checkpoint::chunks::ChunkStore;
use model::Classifier;
use petal_common::shard::Shard;
use petal_common::{Event, Progress};
use preprocess::{ImageSource, LoaderConfig, Mode, Sample, TransformConfig};
use tch::{Device, Tensor};

use crate::chunks::{Extracted, RowLayout};
use crate::config::TrainConfig;
use crate::Error;

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
        self.mode == Mode::Train && cfg.recipe.views > 1
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

/// One shard of an extraction job.
#[derive(Debug, Clone)]
pub struct ShardJob {
    /// The shard this process computes.
    pub shard: Shard,
    /// The dataset root: images are assigned to shards by their path relative to it.
    pub root: PathBuf,
    /// The command that reruns the job without its shard (recorded in each manifest).
    pub command: Vec<String>,
}

/// What one shard did for one cache.
#[derive(Debug, Clone)]
pub struct PartOutcome {
    /// The cache file the part belongs to.
    pub cache: PathBuf,
    /// The part written (or kept).
    pub part: PathBuf,
    /// Images of the split in this part.
    pub images: usize,
    /// Images of the split.
    pub total: usize,
    /// Whether a complete part from an earlier run was kept.
    pub kept: bool,
    /// Seconds spent computing.
    pub seconds: f64,
}

/// The key stored in the part of `shard` of the cache whose key is `key`.
pub(crate) fn part_key(key: &serde_json::Value, shard: Shard) -> serde_json::Value {
    serde_json::json!({ "part_of": key, "shard": shard.to_string() })
}

/// The folder of `cache`'s parts: `<cache>.parts`.
pub fn parts_dir(cache: &Path) -> PathBuf {
    let mut name = cache.file_name().unwrap_or_default().to_os_string();
    name.push(".parts");
    cache.with_file_name(name)
}

/// Warns that `cache`, about to be computed, has shard parts that were not merged.
pub(crate) fn warn_unmerged(cache: &Path, progress: &dyn petal_common::Progress) {
    let dir = parts_dir(cache);
    if dir.is_dir() {
        let msg =
            format!("{} holds shard parts of this cache, not merged: computing it here (or stop and run `petal merge` on its folder)", dir.display());
        progress.event(petal_common::Event::Warning(&msg));
    }
}

impl Extractor<'_> {
    /// The provenance key of `spec` over images of fingerprint `fp`: every input of the result.
    pub(crate) fn key(&self, spec: &PassSpec, fp: &str) -> serde_json::Value {
        let mut key = serde_json::json!({
            "kind": spec.kind.0,
            "version": spec.kind.1,
            "arch": self.cfg.recipe.arch,
            "weights": self.weights_id,
            "transform": self.tcfg,
            "mode": spec.mode,
            "view": if spec.mode == Mode::Train { spec.view } else { 0 },
            "seed": self.cfg.recipe.seed,
            "images": fp,
            "source": if spec.reads_image_cache(self.cfg) { "image-cache" } else { "files" },
        });
        if let (Some(k), serde_json::Value::Object(extra)) = (key.as_object_mut(), &spec.extra) {
            k.extend(extra.clone());
        }
        key
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
            batch_size: self.cfg.run.eval_batch_size,
            shuffle: false,
            seed: self.cfg.recipe.seed,
            epoch: spec.view,
            mode: spec.mode,
            channels_last: self.cfg.run.channels_last,
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
        let store = match crate::chunks::chunk_items(self.cfg.run.chunk_images, lcfg.batch_size) {
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
}
