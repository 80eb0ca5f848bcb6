//! The frozen backbone in onnxruntime: feature extraction (90 % of a frozen run), and partial
//! mode's frozen blocks (its activation caches), as the faster runtime runs them on the CPU
//! (docs/history/benchmarks.md, "onnxruntime"), with the same numbers to 1e-5.
//!
//! The graph is the `onnx` crate's description of the architecture (the one `petal export`
//! writes), built from the run's own variables on first use, so a run whose features are all
//! cached never builds it. The serialised graph is kept in the cache folder, keyed by the digest of
//! what it is built from (architecture, input size, weights identity). Features computed here carry
//! `"runtime": "onnxruntime"` in their cache key, so they never mix with libtorch's; so do
//! activations. The trainable blocks and the head always train on libtorch.

use std::path::Path;
use std::sync::OnceLock;

use petal_common::{Event, Progress};
use petal_onnx::graph::Params;
use petal_onnx::{BackboneSpec, OrtNet, Runtime};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::config::{TrainConfig, TrainMode};
use crate::Error;

/// A run's frozen backbone as onnxruntime runs it, built on first use.
pub struct OrtBackbone<'a> {
    vs: &'a VarStore,
    cfg: &'a TrainConfig,
    feature_dim: i64,
    cache_dir: &'a Path,
    weights_id: &'a str,
    net: OnceLock<Result<OrtNet, String>>,
    prefix: OnceLock<Result<(usize, OrtNet), String>>,
}

impl<'a> OrtBackbone<'a> {
    /// The backbone over `vs` (the run's variables, loaded) for `cfg`'s architecture and input
    /// size; `feature_dim` is what the network's `feature_dim` says. The graph is cached in `cache_dir`.
    pub fn new(vs: &'a VarStore, cfg: &'a TrainConfig, feature_dim: i64, cache_dir: &'a Path, weights_id: &'a str) -> Self {
        OrtBackbone { vs, cfg, feature_dim, cache_dir, weights_id, net: OnceLock::new(), prefix: OnceLock::new() }
    }

    fn spec(&self) -> BackboneSpec<'_> {
        BackboneSpec { arch: &self.cfg.recipe.arch, side: self.cfg.recipe.image_size as i64, feature_dim: self.feature_dim, weights: self.weights_id }
    }

    fn session(&self) -> Result<&OrtNet, Error> {
        let built = self.net.get_or_init(|| {
            petal_onnx::backbone_net(self.spec(), || Params::new(self.vs.variables()), Some(self.cache_dir), self.cfg.run.threads)
                .map_err(|e| e.to_string())
        });
        built.as_ref().map_err(|e| Error::Onnx(petal_onnx::Error::Run(e.clone())))
    }

    /// The pooled features `[N, F]` (on the CPU) of the batch `x` (`[N, 3, S, S]`).
    pub fn features(&self, x: &Tensor) -> Result<Tensor, Error> {
        Ok(self.session()?.run_tensor(x)?)
    }

    /// The activation map `[N, C, H, W]` (on the CPU) after the first `split` backbone units of the
    /// batch `x`: what `model::Classifier::activations` computes. A run has one split; its graph
    /// is built on the first call.
    pub fn activations(&self, x: &Tensor, split: usize) -> Result<Tensor, Error> {
        let built = self.prefix.get_or_init(|| {
            petal_onnx::prefix_net(self.spec(), split, || Params::new(self.vs.variables()), Some(self.cache_dir), self.cfg.run.threads)
                .map(|net| (split, net))
                .map_err(|e| e.to_string())
        });
        match built {
            Ok((built_for, net)) if *built_for == split => Ok(net.run_tensor(x)?),
            Ok((built_for, _)) => Err(Error::Config(format!("the onnxruntime backbone was cut after unit {built_for}, not {split}"))),
            Err(e) => Err(Error::Onnx(petal_onnx::Error::Run(e.clone()))),
        }
    }
}

/// The onnxruntime backbone of a run when its runtime resolves to onnxruntime on `device`: frozen
/// mode's features and partial mode's frozen blocks (fine-tuning runs its whole backbone on
/// libtorch). When `auto` falls back to libtorch because the library is missing, `progress` is
/// told why.
pub fn backbone_for<'a>(
    (vs, feature_dim): (&'a VarStore, i64),
    cfg: &'a TrainConfig,
    device: Device,
    (cache_dir, weights_id): (&'a Path, &'a str),
    progress: &dyn Progress,
) -> Result<Option<OrtBackbone<'a>>, Error> {
    if cfg.recipe.mode == TrainMode::Finetune {
        // Its whole backbone trains on libtorch (an explicit onnxruntime is refused by
        // `TrainConfig::validate`).
        return Ok(None);
    }
    let resolved = cfg.run.runtime.resolve(device)?;
    if let Some(why) = &resolved.fallback {
        progress.event(Event::Message(&format!("features on libtorch: onnxruntime is not available ({why})")));
    }
    Ok((resolved.runtime == Runtime::Onnxruntime).then(|| OrtBackbone::new(vs, cfg, feature_dim, cache_dir, weights_id)))
}
