//! One trial in this process: the features from the cache, the head trained as `petal train`
//! trains it (same network construction, optimiser, order and seeds), no files written.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use petal_common::{Progress, Silent};
use preprocess::{Dataset, Sample};
use tch::Device;
use train::frozen::{self, CachedFeatures, Network};
use train::{TrainConfig, TrainMode};

use super::{Sweep, TrialJob, TrialResult, TrialRunner};
use crate::Error;

/// The dataset of a sweep, opened once per process.
pub struct TrialContext {
    ds: Dataset,
    train: Arc<[Sample]>,
    valid: Arc<[Sample]>,
    /// `valid`, or its selection part (`valid-select`) when the base config holds part out.
    valid_name: String,
    weights: Option<PathBuf>,
    cache_dir: PathBuf,
    skip_bad: bool,
}

fn samples(ds: &Dataset, split: &str) -> Result<Arc<[Sample]>, Error> {
    match ds.split(split).filter(|s| !s.samples.is_empty()) {
        Some(s) => Ok(Arc::from(s.samples.clone().into_boxed_slice())),
        None => Err(Error::Inputs(format!("{}: a sweep needs a non-empty `{split}` split to score trials on", ds.root.display()))),
    }
}

impl TrialContext {
    /// Discovers the sweep's dataset (it must have `train` and `valid` splits).
    pub fn open(sweep: &Sweep) -> Result<TrialContext, Error> {
        let data = sweep.file.data.as_deref().ok_or(Error::NoData)?;
        let ds = crate::discover(data, sweep.file.skip_bad, None)?;
        let train = samples(&ds, "train")?;
        // Trials are ranked on the selection part only: the held-out part scores the winner.
        let (valid_name, valid) = match sweep.base.recipe.holdout_cut() {
            Some(cut) => {
                let name = preprocess::Holdout::select_name("valid");
                (name.clone(), samples(&cut.apply(&ds, "valid")?, &name)?)
            }
            None => ("valid".to_string(), samples(&ds, "valid")?),
        };
        Ok(TrialContext {
            ds,
            train,
            valid,
            valid_name,
            weights: sweep.file.weights.clone(),
            cache_dir: sweep.file.cache_dir.clone(),
            skip_bad: sweep.file.skip_bad,
        })
    }

    /// The network of `cfg` and its cached inputs (pooled features in frozen mode, activation
    /// maps at the split in partial mode), built as `petal train` builds them.
    fn features(&self, cfg: &TrainConfig, progress: &dyn Progress) -> Result<(Network, CachedFeatures), Error> {
        if cfg.recipe.mode == TrainMode::Finetune {
            return Err(Error::Inputs(format!(
                "{}: a sweep trains on cached inputs (mode frozen or partial); fine-tuning is not supported",
                cfg.name
            )));
        }
        let device = cfg.run.device.device()?;
        let mut network = frozen::build_network(cfg, self.weights.as_deref(), None, self.ds.classes.len() as i64, device)?;
        if cfg.run.channels_last && device == Device::Cpu {
            network.net.set_channels_last(true)?;
        }
        network.net.fold_batchnorm();
        let tcfg = train::transform_config(cfg);
        let fx = train::features::Extractor {
            net: &network.net,
            cfg,
            tcfg: &tcfg,
            device,
            cache_dir: &self.cache_dir,
            weights_id: &network.weights_id,
            skip_bad: self.skip_bad,
            progress,
            ort: train::ort::backbone_for((&network.vs, network.net.feature_dim()), cfg, device, (&self.cache_dir, &network.weights_id), progress)?,
        };
        let feats = frozen::cached_features(&fx, (&self.train, "train"), Some((&self.valid, &self.valid_name)))?;
        Ok((network, feats))
    }

    /// The L-BFGS logistic regression on the base config's features (see
    /// [`train::frozen::Baseline`]), or `None` when the base config is not in frozen mode.
    pub fn baseline(&self, sweep: &Sweep, progress: &dyn Progress) -> Result<Option<train::frozen::Baseline>, Error> {
        if sweep.base.recipe.mode != TrainMode::Frozen {
            return Ok(None);
        }
        let _generator = model::random_generator_lock();
        let (_, feats) = self.features(&sweep.base, progress)?;
        Ok(Some(feats.logistic_baseline(self.ds.classes.len() as i64, &train::frozen::BASELINE_L2)?))
    }

    /// Computes (or finds in the cache) the features of every distinct feature setting among the
    /// trials, here with all of libtorch's threads, so that trials only load them. Returns the
    /// seconds spent computing.
    pub fn prepare(&self, sweep: &Sweep, progress: &dyn Progress) -> Result<f64, Error> {
        let _generator = model::random_generator_lock();
        let mut seen = BTreeSet::new();
        let mut secs = 0.0;
        for t in &sweep.trials {
            let c = &t.config;
            let key = serde_json::json!([
                c.recipe.arch,
                c.recipe.views,
                c.recipe.seed,
                c.recipe.image_size,
                c.recipe.resize_size,
                c.recipe.color_jitter,
                c.run.channels_last,
                c.run.device,
                c.recipe.mode,
                c.recipe.unfreeze_blocks,
                c.recipe.activation_dtype
            ])
            .to_string();
            if seen.insert(key) {
                secs += self.features(c, progress)?.1.feature_s;
            }
        }
        Ok(secs)
    }

    /// Trains `job` on libtorch's current thread setting and returns its result.
    pub fn run(&self, sweep: &Sweep, job: &TrialJob) -> Result<TrialResult, Error> {
        // Seeded initialisation and dropout: no other thread of this process may draw meanwhile.
        let _generator = model::random_generator_lock();
        let t0 = Instant::now();
        let cfg = &sweep.trials.get(job.trial).ok_or_else(|| Error::Inputs(format!("no trial {} in {}", job.trial, sweep.path.display())))?.config;
        let (network, feats) = self.features(cfg, &Silent)?;
        let mut opt = frozen::optimizer_for(&network.vs, cfg);
        let history = frozen::fit_head(&network.net, &mut opt, &feats, cfg, job.epochs, |_| {})?;
        let valid_acc: Vec<f64> = history.iter().map(|m| m.valid_acc.unwrap_or(f64::NAN)).collect();
        // Best epoch as `petal train` keeps it: the first epoch with the highest accuracy.
        let (best_epoch, score) = valid_acc.iter().enumerate().fold((0, f64::NEG_INFINITY), |b, (i, &a)| if a > b.1 { (i + 1, a) } else { b });
        Ok(TrialResult {
            trial: job.trial,
            round: job.round,
            epochs: history.len(),
            digest: sweep.digest(job),
            valid_acc,
            train_loss: history.iter().map(|m| m.train_loss).collect(),
            score,
            best_epoch,
            wall_s: t0.elapsed().as_secs_f64(),
        })
    }
}

/// What a trial process does: libtorch on one thread, the sweep's dataset opened, `round` of
/// `trial` trained; returns its result.
pub fn run_one(sweep: &Sweep, trial: usize, round: usize) -> Result<TrialResult, Error> {
    if trial >= sweep.trials.len() || round >= sweep.file.halving.rounds {
        return Err(Error::Trial { trial, detail: format!("{} has no round {round} of trial {trial}", sweep.path.display()) });
    }
    tch::set_num_threads(1);
    let ctx = TrialContext::open(sweep)?;
    ctx.run(sweep, &TrialJob { trial, round, epochs: sweep.epochs_in_round(trial, round) })
}

/// Runs trials in this process, one at a time (whatever `workers` says), on one libtorch thread.
pub struct InProcess {
    /// The opened dataset.
    pub context: TrialContext,
    lock: std::sync::Mutex<()>,
}

impl InProcess {
    /// A runner over `context`.
    pub fn new(context: TrialContext) -> Self {
        InProcess { context, lock: std::sync::Mutex::new(()) }
    }
}

impl TrialRunner for InProcess {
    fn run(&self, sweep: &Sweep, job: &TrialJob) -> Result<TrialResult, Error> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let before = tch::get_num_threads();
        tch::set_num_threads(1);
        let r = self.context.run(sweep, job);
        tch::set_num_threads(before);
        r
    }
}
