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

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use checkpoint::chunks::ChunkStore;
use checkpoint::{Checkpoint, Metadata, TensorMap};
use model::Classifier;
use preprocess::{CacheParams, ImageCache, ImageSource, LoaderConfig, Mode, Sample, TransformConfig};
use sha2::{Digest, Sha256};
use tch::{Device, Tensor};

use crate::config::TrainConfig;
use crate::tensors::{from_data, to_data};
use crate::{bar, Error};

/// Version of the feature cache layout (bump when what is stored changes meaning).
pub const FEATURE_CACHE_VERSION: u32 = 1;

/// Identity of a file: path, size and modification time.
pub fn file_id(path: &Path) -> Result<String, Error> {
    let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(format!("{}:{}:{}", abs.display(), m.len(), mtime))
}

/// An image cache for `samples` (decoded once, resized to the eval resize size), opened or built.
/// `skip_bad` records undecodable images as missing entries instead of failing.
pub fn image_source(cache_dir: &Path, split: &str, samples: &Arc<[Sample]>, tcfg: &TransformConfig, skip_bad: bool) -> Result<ImageSource, Error> {
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    let fp = preprocess::fingerprint(samples)?;
    let short: String = hex(&Sha256::digest(fp.as_bytes()))[..16].to_string();
    let path = cache_dir.join(format!("images-{split}-{}-{short}.pcache", tcfg.resize_size));
    let params = CacheParams::new(tcfg.resize_size, &tcfg.limits);
    let (cache, status) = ImageCache::open_or_build(&path, samples, &params, skip_bad)?;
    tracing::info!(path = %path.display(), ?status, "image cache");
    Ok(ImageSource::Cache(Arc::new(cache)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Computes or loads backbone features.
pub struct Extractor<'a> {
    pub net: &'a Classifier,
    pub cfg: &'a TrainConfig,
    pub tcfg: &'a TransformConfig,
    pub device: Device,
    pub cache_dir: &'a Path,
    pub weights_id: &'a str,
    pub skip_bad: bool,
}

impl Extractor<'_> {
    /// Features and labels of `samples` for (mode, view): from the cache, or computed and cached.
    /// Returns the seconds spent computing (0 on a cache hit).
    pub fn features(&self, samples: &Arc<[Sample]>, split: &str, mode: Mode, view: u64) -> Result<((Tensor, Tensor), f64), Error> {
        let fp = preprocess::fingerprint(samples)?;
        // Several views of the same images are read from the decoded-image cache (resized to the
        // eval resize size), a single view from the files: the source changes the pixels.
        let from_cache = mode == Mode::Train && self.cfg.views > 1;
        let key = serde_json::json!({
            "kind": "petal.features",
            "version": FEATURE_CACHE_VERSION,
            "arch": self.cfg.arch,
            "weights": self.weights_id,
            "transform": self.tcfg,
            "mode": mode,
            "view": if mode == Mode::Train { view } else { 0 },
            "seed": self.cfg.seed,
            "images": fp,
            "source": if from_cache { "image-cache" } else { "files" },
        });
        let key_text = key.to_string();
        let digest = hex(&Sha256::digest(key_text.as_bytes()));
        std::fs::create_dir_all(self.cache_dir).map_err(|e| Error::io(self.cache_dir, e))?;
        let path = self.cache_dir.join(format!("features-{split}-{}.safetensors", &digest[..24]));
        // Chunks of an interrupted extraction (see `crate::chunks`), named by the same digest.
        let chunk_dir = self.cache_dir.join(format!("features-{split}-{}.chunks", &digest[..24]));
        if path.exists() {
            match self.load(&path, &key) {
                Ok(v) => {
                    tracing::info!(path = %path.display(), "feature cache hit");
                    checkpoint::chunks::discard(&chunk_dir);
                    return Ok((v, 0.0));
                }
                Err(e) => eprintln!("warning: feature cache {} is unusable ({e}); recomputing it", path.display()),
            }
        }
        let t0 = Instant::now();
        let source = if from_cache {
            // Several views of the same images: decode each JPEG once.
            crate::features::image_source(self.cache_dir, split, samples, self.tcfg, self.skip_bad)?
        } else {
            ImageSource::Files
        };
        let lcfg = LoaderConfig {
            batch_size: self.cfg.eval_batch_size,
            shuffle: false,
            seed: self.cfg.seed,
            epoch: view,
            mode,
            channels_last: self.cfg.channels_last,
            skip_bad: self.skip_bad,
            // One preparation thread: decoding is ~10x cheaper than the backbone, and a second
            // rayon thread would only fight libtorch's threads for the same cores.
            threads: 1,
            ..LoaderConfig::default()
        };
        let what = match mode {
            Mode::Train => format!("{split} view {}", view + 1),
            Mode::Eval => format!("{split} features"),
        };
        let noun = match mode {
            Mode::Train => format!("features of view {} ({split} split)", view + 1),
            Mode::Eval => format!("features ({split} split)"),
        };
        let store = match crate::chunks::chunk_items(self.cfg.chunk_images, lcfg.batch_size) {
            Some(items) => Some(ChunkStore::open(&chunk_dir, &key, samples.len(), items, &noun)?),
            None => None,
        };
        let pb = bar(samples.len() as u64, &what);
        let job = crate::chunks::Job { net: self.net, device: self.device, samples, source, tcfg: self.tcfg, lcfg };
        let out = crate::chunks::extract(&job, store, &mut |n| pb.inc(n))?;
        pb.finish_and_clear();
        let (x, y) = (out.x, out.y);
        let secs = t0.elapsed().as_secs_f64();
        eprintln!("{what}: {} images in {secs:.1}s ({:.1} img/s)", out.computed, out.computed as f64 / secs.max(1e-9));
        let mut tensors = TensorMap::new();
        tensors.insert("features".into(), to_data("features", &x)?);
        tensors.insert("labels".into(), to_data("labels", &y)?);
        let meta = Metadata { arch: self.cfg.arch.name().into(), provenance: key, ..Metadata::default() };
        checkpoint::save(&path, &Checkpoint { meta, tensors })?;
        if let Some(store) = out.store {
            store.finish();
        }
        Ok(((x, y), secs))
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
