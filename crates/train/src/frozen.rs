//! The frozen-backbone pieces of a run, usable without a run folder: the network built exactly as
//! [`crate::train`] builds it, its optimiser, the cached features, and head epochs on them.
//!
//! A hyper-parameter sweep trains many heads on the same features; [`fit_head`] gives a trial the
//! figures [`crate::train`] would give the same config, epoch for epoch, bit for bit (same
//! initialisation, order, dropout and optimiser), without writing checkpoints or reports.

use std::path::Path;
use std::sync::Arc;

use model::Classifier;
use preprocess::Sample;
use tch::nn::VarStore;
use tch::Device;

use crate::cached::Cached;
use crate::config::{TrainConfig, TrainMode};
use crate::features::Extractor;
use crate::{cached, optim, tensors, CachedInputs, EpochMetrics, Error};

/// The network of a run with its variables.
pub struct Network {
    /// The variables (backbone and head).
    pub vs: VarStore,
    /// The classifier over `vs`.
    pub net: Classifier,
    /// Identity of the pretrained weights (part of the feature cache key).
    pub weights_id: String,
}

/// Builds the network of `cfg` for `num_classes` classes as a run starts: the libtorch seed set to
/// `cfg.recipe.seed`, then either every variable from a trained classifier `init` (`petal train
/// --init-from`) or the pretrained backbone from `weights` (random when both are `None`), the
/// backbone frozen except the trailing blocks fine-tuning and partial mode train. The caller
/// holds [`model::random_generator_lock`] when other threads may draw random numbers.
pub fn build_network(
    cfg: &TrainConfig,
    weights: Option<&Path>,
    init: Option<(&checkpoint::Checkpoint, &Path)>,
    num_classes: i64,
    device: Device,
) -> Result<Network, Error> {
    tch::manual_seed(cfg.recipe.seed as i64);
    let mut vs = VarStore::new(device);
    let net = Classifier::new(&vs.root(), &cfg.recipe.arch, &cfg.recipe.head, num_classes)?;
    let weights_id = match (init, weights) {
        (Some((c, p)), _) => {
            let n = tensors::load_model_tensors(&vs, c, p)?;
            tracing::info!(file = %p.display(), loaded = n, "network initialised from a trained classifier");
            petal_common::file_id(p).map_err(Error::from)?
        }
        (None, Some(w)) => {
            let summary = model::load_backbone_weights(&mut vs, &cfg.recipe.arch, w)?;
            tracing::info!(file = %w.display(), loaded = summary.loaded, "pretrained backbone loaded");
            model::weights::weights_id(&cfg.recipe.arch, w)?
        }
        (None, None) => {
            tracing::warn!("no pretrained weights: the backbone starts from random initialisation");
            format!("random-init-seed-{}", cfg.recipe.seed)
        }
    };
    let trainable_blocks = if cfg.recipe.mode == TrainMode::Frozen { 0 } else { cfg.recipe.unfreeze_blocks };
    model::freeze_backbone(&vs, &cfg.recipe.arch, trainable_blocks);
    Ok(Network { vs, net, weights_id })
}

/// The optimiser of `cfg` over every trainable variable of `vs` (the backbone's at
/// `backbone_lr_scale` × lr), in name order.
pub fn optimizer_for(vs: &VarStore, cfg: &TrainConfig) -> optim::Optimizer {
    let mut params = Vec::new();
    for (name, t) in vs.variables() {
        if t.requires_grad() {
            let lr_scale = if cfg.recipe.arch.is_head_key(&name) { 1.0 } else { cfg.recipe.backbone_lr_scale };
            params.push(optim::Param { name, tensor: t, lr_scale });
        }
    }
    params.sort_by(|a, b| a.name.cmp(&b.name));
    optim::Optimizer::new(cfg.recipe.optimizer, cfg.recipe.momentum, cfg.recipe.weight_decay, params)
}

/// The cached inputs of a run in frozen or partial mode: one set per training view (epoch `e`
/// trains on view `e % views`) and the validation split's — pooled features (frozen mode) or the
/// activation maps at the split (partial mode).
pub struct CachedFeatures {
    inputs: CachedInputs,
    /// Seconds spent computing (cache hits excluded).
    pub feature_s: f64,
}

/// What a run of `fx.cfg` in frozen or partial mode trains on: `views` augmented views of `train`
/// (the eval transform when `views` is 0) and the eval view of `valid`, from the cache or computed
/// and cached, exactly as [`crate::train`] gets them. Fine-tuning has no cached inputs: an error.
pub fn cached_features(fx: &Extractor<'_>, train: (&Arc<[Sample]>, &str), valid: Option<(&Arc<[Sample]>, &str)>) -> Result<CachedFeatures, Error> {
    let passes = crate::cached_passes(fx.cfg, &[(train.1, train.0)], valid.map(|(s, n)| (n, s)));
    let (inputs, feature_s) = match fx.cfg.recipe.mode {
        TrainMode::Frozen => crate::frozen_inputs(fx, passes, 1)?,
        TrainMode::Partial => crate::partial_inputs(fx, passes, 1, fx.cfg)?,
        TrainMode::Finetune => return Err(Error::Config("fine-tuning trains on images: it has no cached inputs".into())),
    };
    Ok(CachedFeatures { inputs, feature_s })
}

/// The L2 strengths [`CachedFeatures::logistic_baseline`] tries.
pub const BASELINE_L2: [f64; 5] = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

/// A multinomial logistic regression fitted by L-BFGS on the cached training features (see
/// [`crate::lbfgs`]), its L2 strength chosen on the validation features: the baseline a trained
/// head must beat.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Baseline {
    /// The chosen L2 strength.
    pub l2: f64,
    /// Its validation top-1.
    pub valid_acc: f64,
    /// Validation top-1 of every strength tried.
    pub grid: Vec<(f64, f64)>,
    /// L-BFGS iterations of the chosen fit.
    pub iterations: usize,
    /// Seconds spent on all the fits.
    pub seconds: f64,
}

impl CachedFeatures {
    /// Fits the [`Baseline`] on the first training view and scores it on the validation
    /// features, for each strength of `grid`. Frozen mode only (the inputs are pooled features).
    pub fn logistic_baseline(&self, classes: i64, grid: &[f64]) -> Result<Baseline, Error> {
        let t0 = std::time::Instant::now();
        let (Some(Cached::Features(x, y)), Some(Cached::Features(vx, vy))) = (self.inputs.views.first(), &self.inputs.valid) else {
            return Err(Error::Config("the logistic baseline needs pooled training and validation features (frozen mode)".into()));
        };
        let mut best: Option<(f64, f64, usize)> = None;
        let mut scores = Vec::new();
        for &l2 in grid {
            let fit = crate::lbfgs::fit_logistic(x, y, classes, l2, 1000, 1e-6)?;
            let acc = fit.accuracy(vx, vy);
            scores.push((l2, acc));
            if best.is_none_or(|b| acc > b.1) {
                best = Some((l2, acc, fit.iterations));
            }
        }
        let (l2, valid_acc, iterations) = best.ok_or_else(|| Error::Config("no L2 strength to try".into()))?;
        Ok(Baseline { l2, valid_acc, grid: scores, iterations, seconds: t0.elapsed().as_secs_f64() })
    }
}

/// Seeds libtorch's generator (dropout) for `epoch`: a pure function of (seed, epoch).
pub(crate) fn seed_epoch(cfg: &TrainConfig, epoch: usize) {
    tch::manual_seed((cfg.recipe.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64)) as i64);
}

/// Trains the head of `net` on `feats` for the first `epochs` epochs of `cfg`'s schedule (fewer
/// than `cfg.recipe.epochs` stops early on the same trajectory), validating after each; calls `on_epoch`
/// with each epoch's figures and returns them all. Runs on libtorch's current thread setting.
pub fn fit_head(
    net: &Classifier,
    opt: &mut optim::Optimizer,
    feats: &CachedFeatures,
    cfg: &TrainConfig,
    epochs: usize,
    mut on_epoch: impl FnMut(&EpochMetrics),
) -> Result<Vec<EpochMetrics>, Error> {
    let device = cfg.run.device.device()?;
    if feats.inputs.views.is_empty() {
        return Err(Error::Config("no training features".into()));
    }
    let mut history = Vec::new();
    for epoch in 0..epochs.min(cfg.recipe.epochs) {
        seed_epoch(cfg, epoch);
        let m = cached::run_epoch(net, opt, &feats.inputs, cfg, epoch, device)?;
        on_epoch(&m);
        history.push(m);
    }
    Ok(history)
}
