//! The epoch loop: the frozen-feature fast path, fine-tuning, metrics, curves, checkpoints and
//! exact resume.
//!
//! This crate owns training runs. It is the one place that knows both the data (`preprocess`) and
//! the networks (`model`); it writes checkpoints only through `checkpoint` and pictures only through
//! `report`. A run lives in `<runs_dir>/<name>/`: `config.toml` (the resolved config),
//! `metrics.jsonl` and `metrics.csv` (one row per epoch), `curves.png`, `last.safetensors` and
//! `best.safetensors` (petal checkpoints with optimizer and RNG state). Evaluation is inference and
//! lives in `infer`; this crate never depends on it. Progress (bars, epoch lines) is reported through
//! [`petal_common::Progress`] events: the crate never prints.
//!
//! Frozen mode computes the backbone's features once per image and augmentation view and caches
//! them (a petal checkpoint file whose provenance records what it was computed from); the head
//! then trains on them for as many epochs as wanted, in seconds. Every random choice (order,
//! augmentation, dropout, initialisation) is a pure function of the seed and the epoch, and the
//! optimiser state is saved each epoch, so `--resume` after a crash or `kill -9` continues exactly
//! as if never interrupted. [`extract`] computes only the caches a run would use, whole or (on many
//! machines) one shard's part of each, which [`shards::merge_parts`] joins into the same files.

#![warn(missing_docs)]

pub mod activations;
mod cached;
mod chunks;
pub mod config;
mod error;
mod extractor;
pub mod features;
pub mod frozen;
pub mod lbfgs;
pub mod optim;
pub mod ort;
mod rows;
pub mod shards;
pub mod tensors;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use checkpoint::{Checkpoint, ClassEntry, Metadata, Preprocessing};
use model::Classifier;
pub use petal_common::{Event, Progress, Silent};
use preprocess::{Dataset, ImageSource, LoaderConfig, Mode, Sample, TransformConfig};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

pub use config::{ActivationDtype, OptimizerKind, Recipe, RunOptions, Schedule, TrainConfig, TrainDtype, TrainMode};
pub use error::Error;
pub use petal_onnx::Runtime;

/// libtorch version this crate is built against (recorded in checkpoints).
pub const LIBTORCH_VERSION: &str = "2.13.0";

/// Figures of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss (with label smoothing, as optimised).
    pub train_loss: f64,
    /// Training accuracy (on the augmented view used this epoch).
    pub train_acc: f64,
    /// Mean validation loss (plain cross-entropy), if there is a validation split.
    pub valid_loss: Option<f64>,
    /// Validation top-1 accuracy.
    pub valid_acc: Option<f64>,
    /// Learning rate used.
    pub lr: f64,
    /// Wall time of the epoch in seconds (training and validation).
    pub epoch_s: f64,
    /// Training images per second in this epoch.
    pub img_s: f64,
}

/// Figures of one training pass over an epoch's inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TrainFigures {
    /// Mean loss, as optimised.
    pub loss: f64,
    /// Accuracy on the inputs trained on.
    pub acc: f64,
    /// Images trained on.
    pub images: usize,
}

/// Figures of one validation pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct EvalFigures {
    /// Mean plain cross-entropy.
    pub loss: f64,
    /// Top-1 accuracy.
    pub acc: f64,
}

impl EpochMetrics {
    /// The figures of 0-based `epoch`: its training and validation passes and the learning rate,
    /// timed from `t0` (`train_s`: the training part).
    fn measured(epoch: usize, train: TrainFigures, valid: Option<EvalFigures>, lr: f64, t0: Instant, train_s: f64) -> Self {
        EpochMetrics {
            epoch: epoch + 1,
            train_loss: train.loss,
            train_acc: train.acc,
            valid_loss: valid.map(|v| v.loss),
            valid_acc: valid.map(|v| v.acc),
            lr,
            epoch_s: t0.elapsed().as_secs_f64(),
            img_s: train.images as f64 / train_s.max(1e-9),
        }
    }
}

/// What to train on and where to write.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// The run's configuration.
    pub config: TrainConfig,
    /// Pretrained backbone weights (any file `model` reads); `None` starts from random weights.
    pub weights: Option<PathBuf>,
    /// A trained classifier to start from instead (`--init-from`): a petal checkpoint, or an old
    /// PyTorch checkpoint converted in memory by [`model::legacy`]. Its architecture, head and
    /// every weight are taken (they replace the config's `arch` and `head` and `weights`); its
    /// classes must be the dataset's. Ignored when resuming a run.
    pub init_from: Option<PathBuf>,
    /// Parent of the run folder.
    pub runs_dir: PathBuf,
    /// Where image and feature caches go.
    pub cache_dir: PathBuf,
    /// Continue from `last.safetensors` of the run folder if it exists.
    pub resume: bool,
    /// Split to train on.
    pub train_split: String,
    /// Split to validate on (skipped when absent from the dataset).
    pub valid_split: String,
    /// Leave out images that cannot be decoded (each is named in a warning) instead of stopping.
    pub skip_bad: bool,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// `<runs_dir>/<name>`.
    pub run_dir: PathBuf,
    /// The best checkpoint (by validation accuracy, else training accuracy).
    pub best_checkpoint: PathBuf,
    /// The last checkpoint.
    pub last_checkpoint: PathBuf,
    /// Every epoch's figures, resumed epochs included.
    pub history: Vec<EpochMetrics>,
    /// 1-based epoch of the best checkpoint.
    pub best_epoch: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Seconds spent in this process (feature extraction included).
    pub wall_s: f64,
    /// Seconds spent computing backbone features (frozen mode) or activations (partial mode),
    /// cache hits excluded.
    pub feature_s: f64,
    /// Images trained on per epoch (the training split, plus the selection part in a final fit).
    pub images: usize,
    /// The split the epoch was chosen on (`valid`, or `valid-select` with a holdout), if any.
    pub selected_on: Option<String>,
    /// The final fit, when the config asks for one.
    pub final_fit: Option<FinalFit>,
}

/// A final fit: the chosen recipe trained again on the training split plus the selection part
/// of the holdout, for the epoch count the first run chose, its last epoch kept.
#[derive(Debug, Clone)]
pub struct FinalFit {
    /// `<run>/final.safetensors`.
    pub checkpoint: PathBuf,
    /// Its own run folder (`<run>/final/`: metrics, curves, checkpoints).
    pub run_dir: PathBuf,
    /// Epochs trained (the chosen run's best epoch).
    pub epochs: usize,
    /// Images trained on per epoch (training split plus selection part).
    pub images: usize,
    /// Seconds it took (feature extraction included).
    pub wall_s: f64,
    /// Seconds of it spent computing features or activations (cache hits excluded).
    pub feature_s: f64,
}

/// The transform configuration a training config implies.
pub fn transform_config(cfg: &TrainConfig) -> TransformConfig {
    TransformConfig {
        image_size: cfg.recipe.image_size,
        resize_size: cfg.recipe.resize_size,
        color_jitter: cfg.recipe.color_jitter.then_some(preprocess::ColorJitter { brightness: 0.2, contrast: 0.2, saturation: 0.2, hue: 0.02 }),
        ..TransformConfig::default()
    }
}

/// Class entries (folder, index, display name) of a dataset.
pub fn class_entries(ds: &Dataset) -> Vec<ClassEntry> {
    ds.classes
        .iter()
        .enumerate()
        .map(|(i, folder)| ClassEntry { folder: folder.clone(), index: i, name: ds.display_name(i).map(str::to_string) })
        .collect()
}

/// Makes a float tensor from a preprocess batch (NCHW logical shape, NHWC memory if channels_last).
pub fn batch_tensor(b: &preprocess::Batch, device: Device) -> Tensor {
    model::input_tensor(&b.images, b.shape, b.channels_last, device)
}

fn io_write(path: &Path, text: &str) -> Result<(), Error> {
    report::write_atomic(path, text.as_bytes()).map_err(Error::from)
}

/// Writes metrics.jsonl, metrics.csv and curves.png from the history.
fn write_metrics(dir: &Path, name: &str, history: &[EpochMetrics]) -> Result<(), Error> {
    let mut jsonl = String::new();
    for m in history {
        jsonl.push_str(&serde_json::to_string(m).map_err(|e| Error::Config(e.to_string()))?);
        jsonl.push('\n');
    }
    io_write(&dir.join("metrics.jsonl"), &jsonl)?;
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|m| {
            vec![
                m.epoch.to_string(),
                format!("{:.6}", m.train_loss),
                format!("{:.6}", m.train_acc),
                opt(m.valid_loss),
                opt(m.valid_acc),
                format!("{:.6e}", m.lr),
                format!("{:.3}", m.epoch_s),
                format!("{:.1}", m.img_s),
            ]
        })
        .collect();
    report::write_csv(&dir.join("metrics.csv"), &["epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr", "epoch_s", "img_s"], &rows)?;
    let points: Vec<report::EpochPoint> = history
        .iter()
        .map(|m| report::EpochPoint {
            epoch: m.epoch,
            train_loss: m.train_loss,
            train_acc: m.train_acc,
            valid_loss: m.valid_loss,
            valid_acc: m.valid_acc,
            lr: m.lr,
        })
        .collect();
    report::plot_curves(&points, &format!("{name}: loss and accuracy"), &dir.join("curves.png"))?;
    Ok(())
}

/// Saved in `metrics` of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedProgress {
    history: Vec<EpochMetrics>,
    best_epoch: usize,
    best_score: f64,
}

struct Saver<'a> {
    cfg: &'a TrainConfig,
    classes: Vec<ClassEntry>,
    provenance: serde_json::Value,
}

impl Saver<'_> {
    fn save(&self, path: &Path, vs: &VarStore, opt: &optim::Optimizer, progress: &SavedProgress) -> Result<(), Error> {
        let mut tensors = model::weights::varstore_tensors(vs)?;
        let (state, steps) = opt.export(checkpoint::OPTIMIZER_PREFIX)?;
        tensors.extend(state);
        let cfg = self.cfg;
        let meta = Metadata {
            libtorch_version: Some(LIBTORCH_VERSION.to_string()),
            arch: cfg.recipe.arch.name().to_string(),
            arch_config: json(&cfg.recipe.arch),
            classes: self.classes.clone(),
            preprocessing: Some(Preprocessing {
                input_size: cfg.recipe.image_size,
                resize_size: cfg.recipe.resize_size,
                mean: preprocess::IMAGENET_MEAN.to_vec(),
                std: preprocess::IMAGENET_STD.to_vec(),
                interpolation: checkpoint::Interpolation::Bilinear,
            }),
            head: json(&cfg.recipe.head),
            hyperparameters: json(&cfg.recipe),
            metrics: json(progress),
            optimizer: Some(serde_json::json!({ "kind": cfg.recipe.optimizer, "steps": steps })),
            rng: Some(serde_json::json!({ "seed": cfg.recipe.seed, "next_epoch": progress.history.len() })),
            provenance: self.provenance.clone(),
            ..Metadata::default()
        };
        checkpoint::save(path, &Checkpoint { meta, tensors })?;
        Ok(())
    }
}

/// A value as JSON (these types always serialise).
fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn split_samples(ds: &Dataset, name: &str) -> Option<Arc<[Sample]>> {
    ds.split(name).filter(|s| !s.samples.is_empty()).map(|s| Arc::from(s.samples.clone().into_boxed_slice()))
}

/// The classifier `--init-from` names: a petal checkpoint, or an old PyTorch checkpoint converted
/// in memory (architecture and head rebuilt by [`model::legacy`]).
fn init_checkpoint(path: &Path) -> Result<checkpoint::Checkpoint, Error> {
    let imported = checkpoint::import(path)?;
    Ok(match imported.meta {
        Some(meta) => checkpoint::Checkpoint { meta, tensors: imported.tensors },
        None => model::legacy::from_imported(imported, path, &model::legacy::LegacyOptions::default())?.0,
    })
}

/// `cfg` with the architecture and head of the classifier `c` (read from `path`).
fn adopt_network(mut cfg: TrainConfig, c: &checkpoint::Checkpoint, path: &Path) -> Result<TrainConfig, Error> {
    let unreadable =
        |what: &str, e: serde_json::Error| Error::Mismatch { path: path.to_path_buf(), detail: format!("its {what} cannot be read: {e}") };
    let arch: model::Arch = if c.meta.arch_config.is_null() {
        c.meta.arch.parse().map_err(|_| Error::Mismatch { path: path.to_path_buf(), detail: format!("unknown architecture {:?}", c.meta.arch) })?
    } else {
        serde_json::from_value(c.meta.arch_config.clone()).map_err(|e| unreadable("architecture config", e))?
    };
    let head: model::HeadConfig = if c.meta.head.is_null() {
        model::HeadConfig::default()
    } else {
        serde_json::from_value(c.meta.head.clone()).map_err(|e| unreadable("head config", e))?
    };
    if arch != cfg.recipe.arch || head != cfg.recipe.head {
        tracing::info!(file = %path.display(), arch = %arch, "the run takes the architecture and head of the classifier it starts from");
    }
    cfg.recipe.arch = arch;
    cfg.recipe.head = head;
    Ok(cfg)
}

/// The classes of a checkpoint the run continues from must be the dataset's, in order.
fn check_classes(c: &checkpoint::Checkpoint, classes: &[checkpoint::ClassEntry], path: &Path) -> Result<(), Error> {
    let mut saved = c.meta.classes.clone();
    saved.sort_by_key(|e| e.index);
    let folders: Vec<&str> = saved.iter().map(|e| e.folder.as_str()).collect();
    let now: Vec<&str> = classes.iter().map(|e| e.folder.as_str()).collect();
    if folders != now {
        return Err(Error::Mismatch {
            path: path.to_path_buf(),
            detail: format!("was trained on {} classes ({:?}) that differ from the dataset's {} ({:?})", folders.len(), folders, now.len(), now),
        });
    }
    Ok(())
}

/// Runs (or resumes) a training run on `ds`, reporting progress (feature extraction, epochs) to
/// `progress`.
///
/// The run holds [`model::random_generator_lock`] from start to end: libtorch's random generator
/// is process-wide, and a run must see exactly the draws its seed gives (resume and
/// reproducibility depend on it), so runs started concurrently in one process take turns.
pub fn train(req: &TrainRequest, ds: &Dataset, progress: &dyn Progress) -> Result<TrainOutcome, Error> {
    let _generator = model::random_generator_lock();
    let (mut out, cfg) = run_phase(req, ds, progress, Phase::Choose)?;
    if cfg.recipe.final_fit {
        out.final_fit = Some(final_fit(req, &cfg, &out, ds, progress)?);
    }
    Ok(out)
}

/// Test-only: after this many saved epochs the process stops (sleeps until killed), so an
/// end-to-end test can `kill -9` it between two exact epochs. Never set it otherwise.
pub const TEST_HALT_EPOCHS_ENV: &str = "PETAL_TEST_HALT_AFTER_EPOCHS";

/// The hook of [`TEST_HALT_EPOCHS_ENV`]: called after each epoch's checkpoints and metrics are
/// written, with the number of epochs saved.
fn test_halt_after_epoch(saved: usize, progress: &dyn Progress) {
    if std::env::var(TEST_HALT_EPOCHS_ENV).ok().and_then(|v| v.parse::<usize>().ok()) == Some(saved) {
        progress.event(Event::Message(&format!("halted for a test after epoch {saved} ({TEST_HALT_EPOCHS_ENV})")));
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// Which run of a training [`run_phase`] performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Train on the training split, choose the epoch on the validation split (or its selection
    /// part).
    Choose,
    /// Train on the training split plus the selection part, without validation, and keep the
    /// last epoch.
    FinalFit,
}

/// The final fit of the run `chosen`, trained with `cfg` (the config the run resolved).
fn final_fit(req: &TrainRequest, cfg: &TrainConfig, chosen: &TrainOutcome, ds: &Dataset, progress: &dyn Progress) -> Result<FinalFit, Error> {
    let epochs = chosen.best_epoch.max(1);
    progress.event(Event::Message(&format!("[final fit] {epochs} epochs on the training split plus the selection part")));
    let config = TrainConfig { name: "final".into(), recipe: Recipe { epochs, patience: 0, ..cfg.recipe.clone() }, run: cfg.run.clone() };
    let sub = TrainRequest { config, runs_dir: chosen.run_dir.clone(), ..req.clone() };
    let (out, _) = run_phase(&sub, ds, progress, Phase::FinalFit)?;
    let dest = chosen.run_dir.join("final.safetensors");
    let bytes = std::fs::read(&out.last_checkpoint).map_err(|e| Error::io(&out.last_checkpoint, e))?;
    petal_common::write_atomic(&dest, &bytes).map_err(|e| Error::io(&dest, e.source))?;
    Ok(FinalFit { checkpoint: dest, run_dir: out.run_dir, epochs, images: out.images, wall_s: out.wall_s, feature_s: out.feature_s })
}

/// One run of [`train`]: the chosen run, or its final fit. Returns the config it resolved.
/// What [`train`] and [`extract`] both open with (see [`RunSetup::prepare`]).
struct RunSetup {
    /// The run's configuration: the request's, or the saved one when resuming, with an
    /// `--init-from` network's architecture and head adopted; validated.
    cfg: TrainConfig,
    device: Device,
    /// What the run trains and validates on.
    data: RunData,
    /// The network, its pretrained backbone and the weights' identity.
    network: frozen::Network,
}

impl RunSetup {
    /// The configuration, the thread count, the device, the samples of `phase`, and the network
    /// (pretrained backbone, or `--init-from`'s classifier; channels_last on the CPU when asked).
    /// `resumed`: the last checkpoint of a run being resumed, whose configuration continues.
    fn prepare(req: &TrainRequest, ds: &Dataset, phase: Phase, resumed: Option<(&Checkpoint, &Path)>) -> Result<Self, Error> {
        let base = match resumed {
            Some((c, path)) => resumed_config(req, c, path)?,
            None => req.config.clone(),
        };
        let init = match (resumed, &req.init_from) {
            (None, Some(p)) => Some((init_checkpoint(p)?, p.clone())),
            _ => None,
        };
        let cfg = match &init {
            Some((c, p)) => adopt_network(base, c, p)?,
            None => base,
        };
        cfg.validate()?;
        if cfg.run.threads > 0 {
            tch::set_num_threads(cfg.run.threads as i32);
        }
        let device = cfg.run.device.device()?;
        let data = run_data(req, &cfg, ds, phase)?;
        for (c, path) in resumed.into_iter().chain(init.as_ref().map(|(c, p)| (c, p.as_path()))) {
            check_classes(c, &data.classes, path)?;
        }
        let init_from = init.as_ref().map(|(c, p)| (c, p.as_path()));
        let mut network = frozen::build_network(&cfg, req.weights.as_deref(), init_from, data.classes.len() as i64, device)?;
        if cfg.run.channels_last && device == Device::Cpu {
            network.net.set_channels_last(true)?;
        }
        Ok(RunSetup { cfg, device, data, network })
    }
}

/// The configuration a resumed run continues with: the saved recipe (only its epoch count may
/// grow) under the request's name and run options (a run may resume on other threads or another
/// device). Checkpoints of earlier versions stored their run options too; they are ignored.
fn resumed_config(req: &TrainRequest, c: &Checkpoint, path: &Path) -> Result<TrainConfig, Error> {
    let mut saved: Recipe = serde_json::from_value(c.meta.hyperparameters.clone()).map_err(|e| Error::Mismatch {
        path: path.to_path_buf(),
        detail: format!("its saved configuration cannot be read ({e}); start a new run instead of --resume"),
    })?;
    saved.epochs = req.config.recipe.epochs.max(saved.epochs);
    Ok(TrainConfig { name: req.config.name.clone(), recipe: saved, run: req.config.run.clone() })
}

/// Where a run's epochs come from.
enum EpochSource {
    /// Frozen and partial mode: features or activations, computed once per image and view.
    Cached(CachedInputs),
    /// Fine-tuning: the images, decoded and augmented every epoch.
    Images {
        /// The training images (all training parts joined) and their source.
        train: (Arc<[Sample]>, ImageSource),
        /// The validation images and their source, when there is a validation split.
        valid: Option<(Arc<[Sample]>, ImageSource)>,
    },
}

impl EpochSource {
    /// The source of a run: its cached inputs (computed or found; also returns the seconds spent
    /// computing them), or its images.
    fn prepare(setup: &RunSetup, req: &TrainRequest, tcfg: &TransformConfig, progress: &dyn Progress) -> Result<(Self, f64), Error> {
        let RunSetup { cfg, device, data, network } = setup;
        match cfg.recipe.mode {
            TrainMode::Frozen | TrainMode::Partial => {
                let fx = extractor((&network.vs, &network.net), (cfg, tcfg, *device), req, &network.weights_id, progress)?;
                let (passes, parts) = (data.passes(cfg), data.train.len());
                let (inputs, secs) =
                    if cfg.recipe.mode == TrainMode::Frozen { frozen_inputs(&fx, passes, parts)? } else { partial_inputs(&fx, passes, parts, cfg)? };
                Ok((EpochSource::Cached(inputs), secs))
            }
            TrainMode::Finetune => {
                let source =
                    |samples: &Arc<[Sample]>, split: &str| features::image_source(&req.cache_dir, split, samples, tcfg, req.skip_bad, progress);
                let (samples, name) = data.joined_train();
                let train = (samples.clone(), source(&samples, &name)?);
                let valid = match &data.valid {
                    Some((name, s)) => Some((s.clone(), source(s, name)?)),
                    None => None,
                };
                Ok((EpochSource::Images { train, valid }, 0.0))
            }
        }
    }

    /// Trains `net` for one epoch (0-based `epoch`), then validates it when there is a validation
    /// split. The caller seeds the epoch.
    fn run_epoch(&self, net: &Classifier, opt: &mut optim::Optimizer, epoch: usize, ctx: &EpochContext) -> Result<EpochMetrics, Error> {
        let EpochContext { cfg, tcfg, device, .. } = *ctx;
        match self {
            EpochSource::Cached(inputs) => cached::run_epoch(net, opt, inputs, cfg, epoch, device),
            EpochSource::Images { train: (samples, src), valid } => {
                let t0 = Instant::now();
                let lr = cfg.recipe.lr_at(epoch);
                let train = finetune_epoch(net, opt, samples, src.clone(), (epoch, lr), ctx)?;
                let train_s = t0.elapsed().as_secs_f64();
                let valid = valid.as_ref().map(|(samples, src)| image_eval(net, samples, src.clone(), tcfg, cfg, device)).transpose()?;
                Ok(EpochMetrics::measured(epoch, train, valid, lr, t0, train_s))
            }
        }
    }
}

/// What every epoch of a run shares.
#[derive(Clone, Copy)]
struct EpochContext<'a> {
    cfg: &'a TrainConfig,
    tcfg: &'a TransformConfig,
    device: Device,
    skip_bad: bool,
    progress: &'a dyn Progress,
}

impl SavedProgress {
    /// Records epoch `m` (0-based `epoch`): a choosing run keeps the best validation score (the
    /// training accuracy without validation), a final fit its last epoch, whose count was chosen
    /// before it. Returns whether `m` is the new best.
    fn record(&mut self, m: EpochMetrics, epoch: usize, phase: Phase) -> bool {
        let score = match phase {
            Phase::Choose => m.valid_acc.unwrap_or(m.train_acc),
            Phase::FinalFit => epoch as f64,
        };
        self.history.push(m);
        let improved = score > self.best_score;
        if improved {
            self.best_score = score;
            self.best_epoch = epoch + 1;
        }
        improved
    }

    /// Whether `patience` epochs (0: never) have passed without improvement after 0-based `epoch`.
    fn out_of_patience(&self, patience: usize, epoch: usize) -> bool {
        patience > 0 && epoch + 1 - self.best_epoch >= patience
    }
}

/// Logs an epoch's figures and reports them as a progress message.
fn report_epoch(m: &EpochMetrics, epochs: usize, progress: &dyn Progress) {
    tracing::info!(
        epoch = m.epoch,
        train_loss = format!("{:.4}", m.train_loss),
        train_acc = format!("{:.4}", m.train_acc),
        valid_loss = ?m.valid_loss.map(|v| (v * 1e4).round() / 1e4),
        valid_acc = ?m.valid_acc.map(|v| (v * 1e4).round() / 1e4),
        "epoch done"
    );
    progress.event(Event::Message(&format!(
        "epoch {:>3}/{}  train loss {:.4} acc {:.2}%  valid loss {} acc {}  lr {:.2e}  {:.1}s",
        m.epoch,
        epochs,
        m.train_loss,
        100.0 * m.train_acc,
        m.valid_loss.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into()),
        m.valid_acc.map(|v| format!("{:.2}%", 100.0 * v)).unwrap_or_else(|| "–".into()),
        m.lr,
        m.epoch_s
    )));
}

fn run_phase(req: &TrainRequest, ds: &Dataset, progress: &dyn Progress, phase: Phase) -> Result<(TrainOutcome, TrainConfig), Error> {
    let start = Instant::now();
    let run_dir = req.runs_dir.join(&req.config.name);
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
    let (last_path, best_path) = (run_dir.join("last.safetensors"), run_dir.join("best.safetensors"));
    // Resuming takes the saved configuration: the run must continue as it started.
    let resumed = if req.resume && last_path.exists() { Some(checkpoint::load(&last_path)?) } else { None };
    let mut setup = RunSetup::prepare(req, ds, phase, resumed.as_ref().map(|c| (c, last_path.as_path())))?;
    let (cfg, device) = (setup.cfg.clone(), setup.device);
    io_write(&run_dir.join("config.toml"), &toml::to_string_pretty(&cfg).map_err(|e| Error::Config(e.to_string()))?)?;
    let mut opt = frozen::optimizer_for(&setup.network.vs, &cfg);
    let mut saved = SavedProgress { history: Vec::new(), best_epoch: 0, best_score: f64::NEG_INFINITY };
    if let Some(c) = &resumed {
        tensors::load_model_tensors(&setup.network.vs, c, &last_path)?;
        let steps = c.meta.optimizer.as_ref().and_then(|o| o["steps"].as_i64()).unwrap_or(0);
        opt.import(&c.tensors, checkpoint::OPTIMIZER_PREFIX, steps)?;
        saved = serde_json::from_value(c.meta.metrics.clone())
            .map_err(|e| Error::Mismatch { path: last_path.clone(), detail: format!("its saved metrics cannot be read: {e}") })?;
        tracing::info!(epoch = saved.history.len(), "resuming");
    }
    let saver = Saver {
        cfg: &cfg,
        classes: setup.data.classes.clone(),
        provenance: serde_json::json!({
            "dataset": ds.root.display().to_string(),
            "weights": setup.network.weights_id,
            checkpoint::TrainedOn::KEY: json(&setup.data.trained_on),
        }),
    };
    if cfg.recipe.mode != TrainMode::Finetune {
        // The frozen blocks only run in eval mode: fold their batch norms for speed (the
        // trainable blocks' are left alone).
        setup.network.net.fold_batchnorm();
    }
    let tcfg = transform_config(&cfg);
    let (source, feature_s) = EpochSource::prepare(&setup, req, &tcfg, progress)?;
    // The head's small matrix products gain nothing from more threads, and spinning OpenMP
    // threads slow down badly when another process holds a core: train the head on one.
    let _threads = (cfg.recipe.mode == TrainMode::Frozen && device == Device::Cpu).then(|| model::TorchThreads::set(1));
    let (vs, net) = (&setup.network.vs, &setup.network.net);
    let ctx = EpochContext { cfg: &cfg, tcfg: &tcfg, device, skip_bad: req.skip_bad, progress };
    let mut stopped_early = false;
    for epoch in saved.history.len()..cfg.recipe.epochs {
        // Dropout and any other libtorch randomness: a pure function of (seed, epoch).
        frozen::seed_epoch(&cfg, epoch);
        let m = source.run_epoch(net, &mut opt, epoch, &ctx)?;
        report_epoch(&m, cfg.recipe.epochs, progress);
        // Best first: if we die between the two saves, `last` still points at a consistent state.
        if saved.record(m, epoch, phase) {
            saver.save(&best_path, vs, &opt, &saved)?;
        }
        saver.save(&last_path, vs, &opt, &saved)?;
        write_metrics(&run_dir, &cfg.name, &saved.history)?;
        test_halt_after_epoch(saved.history.len(), progress);
        if saved.out_of_patience(cfg.recipe.patience, epoch) {
            let msg = format!("early stopping: no improvement for {} epochs (best epoch {})", cfg.recipe.patience, saved.best_epoch);
            progress.event(Event::Message(&msg));
            stopped_early = true;
            break;
        }
    }
    if saved.history.is_empty() {
        return Err(Error::Config("no epoch was run".into()));
    }
    let outcome = TrainOutcome {
        run_dir,
        best_checkpoint: best_path,
        last_checkpoint: last_path,
        best_epoch: saved.best_epoch,
        history: saved.history,
        stopped_early,
        wall_s: start.elapsed().as_secs_f64(),
        feature_s,
        images: setup.data.train_images(),
        selected_on: setup.data.valid.as_ref().map(|(name, _)| name.clone()),
        final_fit: None,
    };
    Ok((outcome, cfg))
}

/// What one run trains and validates on.
struct RunData {
    /// The training parts: the training split, and for a final fit the selection part too.
    train: Vec<(String, Arc<[Sample]>)>,
    /// The split (or part) the epoch is chosen on.
    valid: Option<(String, Arc<[Sample]>)>,
    /// The dataset's classes (at least 2).
    classes: Vec<ClassEntry>,
    /// The record saved in the checkpoints.
    trained_on: checkpoint::TrainedOn,
}

impl RunData {
    /// Images trained on per epoch.
    fn train_images(&self) -> usize {
        self.train.iter().map(|(_, s)| s.len()).sum()
    }

    /// The training parts as one list of samples and a name for its image cache.
    fn joined_train(&self) -> (Arc<[Sample]>, String) {
        if let [(name, s)] = self.train.as_slice() {
            return (s.clone(), name.clone());
        }
        let all: Vec<Sample> = self.train.iter().flat_map(|(_, s)| s.iter().cloned()).collect();
        let name = self.train.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join("+");
        (Arc::from(all.into_boxed_slice()), name)
    }

    /// The cached passes of a run in frozen or partial mode (see [`cached_passes`]).
    fn passes(&self, cfg: &TrainConfig) -> Vec<CachedPass<'_>> {
        let train: Vec<(&str, &Arc<[Sample]>)> = self.train.iter().map(|(n, s)| (n.as_str(), s)).collect();
        cached_passes(cfg, &train, self.valid.as_ref().map(|(n, s)| (n.as_str(), s)))
    }
}

/// The samples `phase` of a run with `cfg` trains and validates on: the training split and the
/// validation split, or with a holdout its selection part; a final fit trains on the training
/// split and the selection part, and validates on nothing.
fn run_data(req: &TrainRequest, cfg: &TrainConfig, ds: &Dataset, phase: Phase) -> Result<RunData, Error> {
    let train = split_samples(ds, &req.train_split)
        .ok_or_else(|| Error::Data(format!("{} has no (non-empty) split {:?}", ds.root.display(), req.train_split)))?;
    let classes = class_entries(ds);
    if classes.len() < 2 {
        return Err(Error::Data(format!("{} has {} class(es); at least 2 are needed", ds.root.display(), classes.len())));
    }
    let (valid, held_out) = match cfg.recipe.holdout_cut() {
        Some(cut) => {
            let cut_ds = cut.apply(ds, &req.valid_split)?;
            let select = preprocess::Holdout::select_name(&req.valid_split);
            let samples = split_samples(&cut_ds, &select).ok_or_else(|| Error::Data(format!("{select:?} is empty")))?;
            let record = checkpoint::HoldoutCut { split: req.valid_split.clone(), fraction: cut.fraction, seed: cut.seed };
            (Some((select, samples)), Some(record))
        }
        None => (split_samples(ds, &req.valid_split).map(|s| (req.valid_split.clone(), s)), None),
    };
    let mut trained_on = checkpoint::TrainedOn { splits: vec![req.train_split.clone()], holdout: held_out, ..Default::default() };
    let mut parts = vec![(req.train_split.clone(), train)];
    let valid = match phase {
        Phase::Choose => {
            trained_on.selected_on = valid.as_ref().map(|(n, _)| n.clone());
            valid
        }
        Phase::FinalFit => {
            let (name, samples) = valid.ok_or_else(|| Error::Config("a final fit needs a holdout of a validation split".into()))?;
            trained_on.images = samples.iter().map(|s| ds.relative(&s.path)).collect();
            trained_on.final_fit = true;
            parts.push((name, samples));
            None
        }
    };
    Ok(RunData { train: parts, valid, classes, trained_on })
}

/// The feature and activation extractor of a run, with the runtime its config asks for.
fn extractor<'a>(
    (vs, net): (&'a VarStore, &'a Classifier),
    (cfg, tcfg, device): (&'a TrainConfig, &'a TransformConfig, Device),
    req: &'a TrainRequest,
    weights_id: &'a str,
    progress: &'a dyn Progress,
) -> Result<features::Extractor<'a>, Error> {
    let ort = ort::backbone_for((vs, net.feature_dim()), cfg, device, (&req.cache_dir, weights_id), progress)?;
    Ok(features::Extractor { net, cfg, tcfg, device, cache_dir: &req.cache_dir, weights_id, skip_bad: req.skip_bad, progress, ort })
}

/// What [`extract`] did.
#[derive(Debug, Clone)]
pub struct ExtractOutcome {
    /// The part of each cache this shard wrote or kept (empty without a shard).
    pub parts: Vec<shards::PartOutcome>,
    /// Cache files the run needs (computed, found, or with a part here).
    pub caches: usize,
    /// Seconds spent computing features or activations (cache hits and kept parts excluded).
    pub feature_s: f64,
    /// Seconds in all.
    pub wall_s: f64,
}

/// Computes the feature caches (frozen mode) or activation caches (partial mode) that
/// [`train`] with the same request would compute, and stops there: the whole caches, or with
/// `shard` only that shard's part of each (see [`shards`]; `petal merge` joins the parts into the
/// caches, which `train` then finds). The run folder is not touched, so shards run side by side.
pub fn extract(req: &TrainRequest, ds: &Dataset, shard: Option<&shards::ShardJob>, progress: &dyn Progress) -> Result<ExtractOutcome, Error> {
    let _generator = model::random_generator_lock();
    let start = Instant::now();
    if req.config.recipe.mode == TrainMode::Finetune {
        return Err(Error::Config("fine-tuning trains on images and has no feature cache: extract in mode frozen or partial".into()));
    }
    let RunSetup { cfg, device, data, network } = RunSetup::prepare(req, ds, Phase::Choose, None)?;
    // A final fit also trains on the selection part's training views (the same passes as its
    // validation pass when views is 0).
    let final_data = if cfg.recipe.final_fit && cfg.recipe.views > 0 { Some(run_data(req, &cfg, ds, Phase::FinalFit)?) } else { None };
    let frozen::Network { vs, mut net, weights_id } = network;
    let frozen = cfg.recipe.mode == TrainMode::Frozen;
    net.fold_batchnorm();
    let tcfg = transform_config(&cfg);
    let fx = extractor((&vs, &net), (&cfg, &tcfg, device), req, &weights_id, progress)?;
    let mut passes = data.passes(&cfg);
    if let Some(f) = &final_data {
        passes.extend(f.passes(&cfg).into_iter().filter(|p| p.split != req.train_split));
    }
    let caches = passes.len();
    let (parts, feature_s) = match (shard, frozen) {
        (None, true) => (Vec::new(), frozen_inputs(&fx, passes, 1)?.1),
        (None, false) => (Vec::new(), partial_inputs(&fx, passes, 1, &cfg)?.1),
        (Some(job), true) => {
            let parts = passes.iter().map(|p| fx.features_part(p.samples, p.split, (p.mode, p.view), job)).collect::<Result<Vec<_>, _>>()?;
            let secs = parts.iter().map(|p| p.seconds).sum();
            (parts, secs)
        }
        (Some(job), false) => partial_parts(&fx, passes, &cfg, job)?,
    };
    Ok(ExtractOutcome { parts, caches, feature_s, wall_s: start.elapsed().as_secs_f64() })
}

/// Partial mode, one shard: its part of the activation cache of every pass.
fn partial_parts(
    fx: &features::Extractor,
    passes: Vec<CachedPass>,
    cfg: &TrainConfig,
    job: &shards::ShardJob,
) -> Result<(Vec<shards::PartOutcome>, f64), Error> {
    let split = fx.net.units() - cfg.recipe.unfreeze_blocks;
    let samples: Vec<&Arc<[Sample]>> = passes.iter().map(|p| p.samples).collect();
    let plan = fx.plan_activations(passes, split, cfg.recipe.activation_dtype)?;
    fx.check_activation_space(&plan, split, cfg.recipe.activation_dtype, cfg.run.activation_cache_limit_mb)?;
    let parts =
        plan.iter().zip(samples).map(|(p, s)| fx.activations_part(p, s, (split, cfg.recipe.activation_dtype), job)).collect::<Result<Vec<_>, _>>()?;
    let secs = parts.iter().map(|p| p.seconds).sum();
    Ok((parts, secs))
}

/// The inputs of cached epochs.
pub(crate) struct CachedInputs {
    /// One per training view: epoch `e` trains on view `e % views`.
    pub views: Vec<cached::Cached>,
    /// The validation split's.
    pub valid: Option<cached::Cached>,
}

/// A cached pass over a split.
#[derive(Clone, Copy)]
pub(crate) struct CachedPass<'a> {
    /// The split's name (file names, messages).
    pub split: &'a str,
    /// Its images.
    pub samples: &'a Arc<[Sample]>,
    /// Eval transform or augmented view.
    pub mode: Mode,
    /// The augmented view (0 in eval mode).
    pub view: u64,
}

/// The cached passes a run needs: each training view (the eval transform when `views` is 0) of
/// each training part, view by view, then the validation split's eval transform.
pub(crate) fn cached_passes<'a>(
    cfg: &TrainConfig,
    train: &[(&'a str, &'a Arc<[Sample]>)],
    valid: Option<(&'a str, &'a Arc<[Sample]>)>,
) -> Vec<CachedPass<'a>> {
    let mode = if cfg.recipe.views == 0 { Mode::Eval } else { Mode::Train };
    let mut passes: Vec<CachedPass> = (0..cfg.recipe.views.max(1))
        .flat_map(|v| train.iter().map(move |&(split, samples)| CachedPass { split, samples, mode, view: v as u64 }))
        .collect();
    passes.extend(valid.map(|(split, samples)| CachedPass { split, samples, mode: Mode::Eval, view: 0 }));
    passes
}

/// Groups the cached inputs of [`cached_passes`] into training views (each the join of its
/// `parts` training parts) and the validation split's (the last pass when there is one more).
fn group_views(mut all: Vec<cached::Cached>, views: usize, parts: usize) -> Result<CachedInputs, Error> {
    let valid = if all.len() > views * parts { all.pop() } else { None };
    let mut grouped = Vec::with_capacity(views);
    let mut it = all.into_iter();
    for _ in 0..views {
        grouped.push(cached::Cached::join(it.by_ref().take(parts).collect())?);
    }
    Ok(CachedInputs { views: grouped, valid })
}

/// Frozen mode: pooled features of every pass.
pub(crate) fn frozen_inputs(fx: &features::Extractor, passes: Vec<CachedPass>, parts: usize) -> Result<(CachedInputs, f64), Error> {
    let (mut all, mut secs) = (Vec::new(), 0.0);
    for p in &passes {
        let ((x, y), s) = fx.features(p.samples, p.split, p.mode, p.view)?;
        secs += s;
        all.push(cached::Cached::Features(x, y));
    }
    Ok((group_views(all, fx.cfg.recipe.views.max(1), parts)?, secs))
}

/// Partial mode: activation maps at the split of every pass, after reporting their size and
/// checking that they fit.
pub(crate) fn partial_inputs(
    fx: &features::Extractor,
    passes: Vec<CachedPass>,
    parts: usize,
    cfg: &TrainConfig,
) -> Result<(CachedInputs, f64), Error> {
    let split = fx.net.units() - cfg.recipe.unfreeze_blocks;
    let samples: Vec<&Arc<[Sample]>> = passes.iter().map(|p| p.samples).collect();
    let plan = fx.plan_activations(passes, split, cfg.recipe.activation_dtype)?;
    fx.check_activation_space(&plan, split, cfg.recipe.activation_dtype, cfg.run.activation_cache_limit_mb)?;
    let (mut all, mut secs) = (Vec::new(), 0.0);
    for (p, s) in plan.iter().zip(samples) {
        let (c, t) = fx.activations(p, s, split, cfg.recipe.activation_dtype)?;
        secs += t;
        all.push(cached::Cached::Activations(c, split));
    }
    Ok((group_views(all, cfg.recipe.views.max(1), parts)?, secs))
}

/// Batch size of validation passes on cached inputs: pooled features are small, activation maps not.
pub(crate) fn cached_eval_batch(cfg: &TrainConfig) -> usize {
    cfg.run.eval_batch_size.max(if cfg.recipe.mode == TrainMode::Frozen { 256 } else { 64 })
}

pub(crate) fn loss_fn(logits: &Tensor, y: &Tensor, smoothing: f64) -> Tensor {
    logits.cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, -100, smoothing)
}

/// One fine-tuning epoch on augmented images.
fn finetune_epoch(
    net: &Classifier,
    opt: &mut optim::Optimizer,
    samples: &Arc<[Sample]>,
    src: ImageSource,
    (epoch, lr): (usize, f64),
    ctx: &EpochContext<'_>,
) -> Result<TrainFigures, Error> {
    let EpochContext { cfg, tcfg, device, skip_bad, progress } = *ctx;
    let lcfg = LoaderConfig {
        batch_size: cfg.recipe.batch_size,
        shuffle: true,
        seed: cfg.recipe.seed,
        epoch: epoch as u64,
        mode: Mode::Train,
        channels_last: cfg.run.channels_last,
        skip_bad,
        ..LoaderConfig::default()
    };
    let loader = preprocess::loader(samples.clone(), src, tcfg, &lcfg)?;
    progress.event(Event::Start { task: &format!("epoch {}", epoch + 1), total: samples.len() as u64 });
    let (mut loss_sum, mut correct, mut n) = (0.0, 0i64, 0usize);
    for b in loader {
        let b = b?;
        let x = batch_tensor(&b, device);
        let y = Tensor::from_slice(&b.labels).to_device(device);
        let logits = net.forward_t(&x, true);
        let loss = loss_fn(&logits, &y, cfg.recipe.label_smoothing);
        opt.zero_grad();
        loss.backward();
        opt.step(lr);
        let bl = loss.double_value(&[]);
        loss_sum += bl * b.labels.len() as f64;
        correct += logits.argmax(1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
        n += b.labels.len();
        progress.event(Event::Advance { done: n as u64, note: Some(&format!("loss {bl:.4}")) });
    }
    progress.event(Event::Finish { summary: None });
    Ok(TrainFigures { loss: loss_sum / n.max(1) as f64, acc: correct as f64 / n.max(1) as f64, images: n })
}

/// Loss and accuracy of the whole network on eval-transformed images.
fn image_eval(
    net: &Classifier,
    samples: &Arc<[Sample]>,
    src: ImageSource,
    tcfg: &TransformConfig,
    cfg: &TrainConfig,
    device: Device,
) -> Result<EvalFigures, Error> {
    let lcfg =
        LoaderConfig { batch_size: cfg.run.eval_batch_size, mode: Mode::Eval, channels_last: cfg.run.channels_last, ..LoaderConfig::default() };
    let (mut loss_sum, mut correct, mut n) = (0.0, 0i64, 0usize);
    for b in preprocess::loader(samples.clone(), src, tcfg, &lcfg)? {
        let b = b?;
        let x = batch_tensor(&b, device);
        let y = Tensor::from_slice(&b.labels).to_device(device);
        let logits = tch::no_grad(|| net.forward_t(&x, false));
        loss_sum += loss_fn(&logits, &y, 0.0).double_value(&[]) * b.labels.len() as f64;
        correct += logits.argmax(1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
        n += b.labels.len();
    }
    Ok(EvalFigures { loss: loss_sum / n.max(1) as f64, acc: correct as f64 / n.max(1) as f64 })
}
