//! The training configuration: every knob of a run, serialisable to the run folder (`config.toml`).
//! `Default` is this project's recommended recipe; [`TrainConfig::seed_preset`] is the seed's.

use model::{Arch, HeadConfig};
use serde::{Deserialize, Serialize};

/// How the backbone takes part in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum TrainMode {
    /// The backbone is frozen: its features are computed once per image and augmentation view
    /// (cached on disk), then only the head trains, on those features.
    Frozen,
    /// The last `unfreeze_blocks` backbone blocks train too (at `backbone_lr_scale` × lr), with
    /// full augmentation every epoch. Batch norms of frozen blocks keep their running statistics.
    #[cfg_attr(feature = "clap", value(alias = "fine-tune"))]
    Finetune,
    /// The last `unfreeze_blocks` backbone blocks and the head train on cached activations: the
    /// frozen blocks run once per image and augmentation view (like frozen mode's features), their
    /// output at the split is cached on disk (`activation_dtype`), and every epoch runs only the
    /// trainable blocks. Batch norms of the trainable blocks train.
    Partial,
}

/// How activations are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationDtype {
    /// Half precision: half the disk and page cache; training reads them back as f32.
    F16,
    /// Single precision: exactly what the frozen blocks computed.
    F32,
}

impl ActivationDtype {
    pub(crate) fn kind(self) -> tch::Kind {
        match self {
            ActivationDtype::F16 => tch::Kind::Half,
            ActivationDtype::F32 => tch::Kind::Float,
        }
    }

    pub(crate) fn dtype(self) -> checkpoint::DType {
        match self {
            ActivationDtype::F16 => checkpoint::DType::F16,
            ActivationDtype::F32 => checkpoint::DType::F32,
        }
    }
}

/// The dtype of the trainable head's matrix products while it trains (`train_dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum TrainDtype {
    /// Single precision throughout.
    #[default]
    F32,
    /// bfloat16 products with f32 weights, gradients and optimiser state, like `torch.autocast`
    /// on a CPU (native on CPUs with AVX-512 BF16 or AMX). Validation, the checkpoint and every
    /// later forward pass stay f32.
    Bf16,
}

impl TrainDtype {
    /// The tensor kind of the products.
    pub fn kind(self) -> tch::Kind {
        match self {
            TrainDtype::F32 => tch::Kind::Float,
            TrainDtype::Bf16 => tch::Kind::BFloat16,
        }
    }

    fn is_f32(&self) -> bool {
        *self == TrainDtype::F32
    }
}

/// The optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Adam (weight decay as L2 on the gradient, like `torch.optim.Adam`).
    Adam,
    /// AdamW (decoupled weight decay, like `torch.optim.AdamW`).
    Adamw,
    /// SGD with (heavy-ball) momentum, like `torch.optim.SGD`.
    Sgd,
}

/// The learning-rate schedule, evaluated once per epoch; each kind carries its own settings.
/// In a config file it is the flat keys `schedule` (`constant`, `step` or `cosine`) and the kind's
/// own keys (`step_size` and `gamma`, or `warmup_epochs`); a key of another kind is ignored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// `lr` throughout.
    Constant,
    /// `lr · gamma^(epoch / step_size)`.
    Step {
        /// Epochs per decay (at least 1).
        step_size: usize,
        /// Decay factor (above 0).
        gamma: f64,
    },
    /// Linear warm-up over `warmup_epochs`, then cosine decay to 0 at the last epoch.
    Cosine {
        /// Warm-up epochs.
        warmup_epochs: usize,
    },
}

impl Schedule {
    /// The step schedule's settings when a config names it without them.
    const STEP: Schedule = Schedule::Step { step_size: 5, gamma: 0.1 };
    /// The cosine schedule's settings when a config names it without them.
    const COSINE: Schedule = Schedule::Cosine { warmup_epochs: 1 };
}

/// What makes a model: the architecture, the head, how it trains and on which images. This is
/// what a checkpoint stores as its hyper-parameters, what feature-cache keys and sweeps are made
/// of, and what a resumed run continues with. How a run executes is [`RunOptions`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "Flat", from = "Flat")]
pub struct Recipe {
    /// Backbone architecture.
    pub arch: Arch,
    /// Classifier head.
    pub head: HeadConfig,
    /// Frozen backbone or fine-tuning.
    pub mode: TrainMode,
    /// Frozen mode: augmented views computed per training image; epoch `e` trains on view `e % views`.
    /// 0 trains on the eval transform only (no augmentation).
    pub views: usize,
    /// Fine-tuning and partial mode: number of trailing backbone blocks to train (see
    /// `model::Arch::backbone_blocks`; fine-tuning: a large number trains all; partial: from 1 to
    /// one less than the number of blocks).
    pub unfreeze_blocks: usize,
    /// Fine-tuning: backbone learning rate = `lr · backbone_lr_scale`.
    pub backbone_lr_scale: f64,
    /// Optimiser.
    pub optimizer: OptimizerKind,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum (Adam's betas are fixed at 0.9, 0.999).
    pub momentum: f64,
    /// Weight decay (L2 for Adam/SGD, decoupled for AdamW).
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Label smoothing of the cross-entropy, in `[0, 1)`.
    pub label_smoothing: f64,
    /// Epochs.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Seed of every random choice (order, augmentation, dropout, head initialisation).
    pub seed: u64,
    /// Stop when validation accuracy has not improved for this many epochs (0: never).
    pub patience: usize,
    /// Fraction of each class of the validation split held out (0: none): the epoch is chosen
    /// on the rest (`<valid>-select`), and the held-out part (`<valid>-holdout`) is never seen
    /// by training (see [`preprocess::Holdout`]).
    pub holdout: f64,
    /// Seed of the holdout cut (apart from `seed`, so runs with other seeds hold out the same
    /// images).
    pub holdout_seed: u64,
    /// After the run, train the same recipe again on the training split plus the selection part,
    /// for the number of epochs the run chose, and keep its last epoch (`final.safetensors`).
    /// Needs `holdout`.
    pub final_fit: bool,
    /// Network input size (the crop).
    pub image_size: u32,
    /// Eval resize (shorter side).
    pub resize_size: u32,
    /// Apply ColorJitter(0.2, 0.2, 0.2, 0.02) in the train augmentation.
    pub color_jitter: bool,
    /// Partial mode: how cached activations are stored (`f16` halves the disk they take, and
    /// the trainable blocks read them back rounded).
    pub activation_dtype: ActivationDtype,
    /// Frozen mode: the dtype of the head's matrix products while it trains (bf16 autocast).
    pub train_dtype: TrainDtype,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            arch: Arch::DenseNet121,
            // The best of the sweep `examples/sweep.toml` on flowers102-mini (docs/history/benchmarks.md, "Sweep"):
            // a linear head (so no dropout applies), AdamW lr 0.00185 without weight decay, label
            // smoothing 0.2, batch 128, 80 cosine epochs: 89.0 % valid vs 88.3 % for the previous recipe.
            head: HeadConfig { hidden: vec![], activation: model::Activation::Relu, dropout: 0.0 },
            mode: TrainMode::Frozen,
            // Frozen features of the eval transform beat augmented views on flowers102-mini
            // (88.3 % vs 85.9 % with 2 views with the previous head recipe, see docs/history/benchmarks.md) at
            // half the backbone work.
            views: 0,
            unfreeze_blocks: 1,
            backbone_lr_scale: 0.1,
            optimizer: OptimizerKind::Adamw,
            lr: 0.00185,
            momentum: 0.9,
            weight_decay: 0.0,
            schedule: Schedule::COSINE,
            label_smoothing: 0.2,
            epochs: 80,
            batch_size: 128,
            seed: 0,
            patience: 0,
            holdout: 0.0,
            holdout_seed: 0,
            final_fit: false,
            image_size: 224,
            resize_size: 256,
            color_jitter: false,
            activation_dtype: ActivationDtype::F16,
            train_dtype: TrainDtype::F32,
        }
    }
}

impl Recipe {
    /// The seed project's recipe: densenet121, frozen, hidden 512, ReLU, dropout 0.2, Adam lr 0.003,
    /// batch 64, 10 epochs, a fresh RandomRotation(30)/RandomResizedCrop(224)/flip view every epoch.
    pub fn seed_preset() -> Self {
        Recipe {
            arch: Arch::DenseNet121,
            head: HeadConfig::default(),
            mode: TrainMode::Frozen,
            views: 10,
            optimizer: OptimizerKind::Adam,
            lr: 0.003,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            label_smoothing: 0.0,
            epochs: 10,
            batch_size: 64,
            ..Recipe::default()
        }
    }

    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |m: &str| Err(crate::Error::Config(m.to_string()));
        if self.epochs == 0 {
            return bad("epochs must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr must be a positive number");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing must be in [0, 1)");
        }
        if let Schedule::Step { step_size, gamma } = self.schedule {
            if step_size == 0 || gamma.is_nan() || gamma <= 0.0 {
                return bad("the step schedule needs step_size ≥ 1 and gamma > 0");
            }
        }
        let units = self.arch.backbone_blocks().len();
        if self.mode == TrainMode::Partial && matches!(self.arch, Arch::Ensemble(_)) && units < 2 {
            return bad(&format!(
                "partial mode splits an ensemble between blocks only when its members are efficientnet_lite0/1/2 at the ensemble's input size (none at its own `@side`), which share them; {} is not: train it frozen or fine-tune it",
                self.arch
            ));
        }
        if self.train_dtype == TrainDtype::Bf16 && self.mode != TrainMode::Frozen {
            return bad(&format!(
                "train_dtype = \"bf16\" applies to frozen mode's head only (mode is {:?}, whose backbone blocks train in f32)",
                self.mode
            ));
        }
        if self.mode == TrainMode::Partial && !(1..units).contains(&self.unfreeze_blocks) {
            return bad(&format!(
                "partial mode trains 1 to {} of the {units} blocks of {} (unfreeze_blocks), not {}",
                units - 1,
                self.arch,
                self.unfreeze_blocks
            ));
        }
        if !(0.0..1.0).contains(&self.holdout) {
            return bad("holdout must be in [0, 1): the fraction of each class of the validation split held out");
        }
        if self.final_fit && self.holdout == 0.0 {
            return bad("final_fit retrains on the training split plus the selection part of a holdout: set holdout too (e.g. 0.5)");
        }
        self.head.validate().map_err(|e| crate::Error::Config(e.to_string()))
    }

    /// The holdout cut of the validation split, if any.
    pub fn holdout_cut(&self) -> Option<preprocess::Holdout> {
        (self.holdout > 0.0).then_some(preprocess::Holdout { fraction: self.holdout, seed: self.holdout_seed })
    }

    /// The learning rate of `epoch` (0-based) under the schedule.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Step { step_size, gamma } => self.lr * gamma.powi((epoch / step_size.max(1)) as i32),
            Schedule::Cosine { warmup_epochs } => {
                if epoch < warmup_epochs {
                    self.lr * (epoch + 1) as f64 / (warmup_epochs + 1) as f64
                } else {
                    let span = (self.epochs - warmup_epochs).max(1) as f64;
                    let t = (epoch - warmup_epochs) as f64 / span;
                    0.5 * self.lr * (1.0 + (std::f64::consts::PI * t).cos())
                }
            }
        }
    }
}

/// How a run executes, apart from what it makes: where, how many threads, in what batches, how
/// often it saves progress, how much disk it may take. Changing these changes no result (up to
/// the runtimes' float tolerance, see `petal_onnx::Runtime`), so they stay out of checkpoints and
/// cache keys, and a resumed run takes today's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunOptions {
    /// Where the network runs.
    pub device: model::DeviceSpec,
    /// What runs the frozen backbone: frozen mode's feature extraction and partial mode's frozen
    /// blocks (its activation caches). `auto` (onnxruntime on the CPU when its library loads, else
    /// libtorch), `torch` or `onnxruntime`. Training itself (backpropagation, and the whole
    /// backbone in fine-tuning) always runs on libtorch.
    pub runtime: petal_onnx::Runtime,
    /// Run the backbone in channels_last layout (faster with oneDNN on CPU).
    pub channels_last: bool,
    /// libtorch intra-op threads (0: all cores).
    pub threads: usize,
    /// Backbone batch size for feature extraction and evaluation.
    pub eval_batch_size: usize,
    /// Frozen mode: feature extraction saves its progress every this many images (rounded down to
    /// whole `eval_batch_size` batches, at least one batch), so a run interrupted by a crash or
    /// `kill -9` resumes from its last saved chunk. 0 saves only the finished cache.
    pub chunk_images: usize,
    /// Partial mode: refuse to build an activation cache larger than this many MB (0: no limit but
    /// the free disk).
    pub activation_cache_limit_mb: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            device: model::DeviceSpec::Cpu,
            runtime: petal_onnx::Runtime::Auto,
            channels_last: true,
            threads: 0,
            eval_batch_size: 32,
            chunk_images: 256,
            activation_cache_limit_mb: 0,
        }
    }
}

/// Everything that defines a training run: its name, its [`Recipe`] and its [`RunOptions`]. In a
/// config file the three are one flat table of keys (`epochs = 40`, `device = "cpu"`, …); an
/// unknown key is refused with its name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "Flat", from = "Flat")]
pub struct TrainConfig {
    /// Run name: outputs go to `<runs_dir>/<name>/`.
    pub name: String,
    /// What the run makes.
    pub recipe: Recipe,
    /// How it runs.
    pub run: RunOptions,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig { name: "run".into(), recipe: Recipe::default(), run: RunOptions::default() }
    }
}

impl TrainConfig {
    /// The seed project's recipe ([`Recipe::seed_preset`]) under the name `seed`.
    pub fn seed_preset() -> Self {
        TrainConfig { name: "seed".into(), recipe: Recipe::seed_preset(), run: RunOptions::default() }
    }

    /// A preset by name: `seed` or `default`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "seed" => Some(Self::seed_preset()),
            "default" | "fast" => Some(Self::default()),
            _ => None,
        }
    }

    /// Checks ranges of the recipe, the run options and how they combine; the message names the
    /// field.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |m: &str| Err(crate::Error::Config(m.to_string()));
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name == ".." {
            return bad("name must be a plain folder name");
        }
        if self.run.eval_batch_size == 0 {
            return bad("eval_batch_size must be at least 1");
        }
        if self.recipe.mode == TrainMode::Finetune && self.run.runtime == petal_onnx::Runtime::Onnxruntime {
            return bad("runtime onnxruntime runs frozen feature extraction, partial mode's frozen blocks and inference; mode finetune trains its whole backbone on libtorch: use --runtime torch or auto");
        }
        self.recipe.validate()
    }
}

/// The spelling of a schedule's kind in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ScheduleKind {
    Constant,
    Step,
    Cosine,
}

/// The flat table of keys a config file, a sweep and a checkpoint's stored settings are written
/// in: the name, the recipe's keys (the schedule's kind and its settings side by side, each setting
/// written only for its kind) and the run options' keys. Unknown keys are refused, named. A
/// [`Recipe`] is written without the name and run options; read, it ignores them (a checkpoint of
/// an earlier version stored them).
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Flat {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    arch: Arch,
    head: HeadConfig,
    mode: TrainMode,
    views: usize,
    unfreeze_blocks: usize,
    backbone_lr_scale: f64,
    optimizer: OptimizerKind,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    schedule: ScheduleKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    warmup_epochs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gamma: Option<f64>,
    label_smoothing: f64,
    epochs: usize,
    batch_size: usize,
    seed: u64,
    patience: usize,
    holdout: f64,
    holdout_seed: u64,
    final_fit: bool,
    image_size: u32,
    resize_size: u32,
    color_jitter: bool,
    activation_dtype: ActivationDtype,
    #[serde(skip_serializing_if = "TrainDtype::is_f32")]
    train_dtype: TrainDtype,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<model::DeviceSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<petal_onnx::Runtime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels_last: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_batch_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk_images: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    activation_cache_limit_mb: Option<u64>,
}

impl Default for Flat {
    fn default() -> Self {
        Recipe::default().into()
    }
}

impl From<Recipe> for Flat {
    fn from(r: Recipe) -> Self {
        let (schedule, warmup_epochs, step_size, gamma) = match r.schedule {
            Schedule::Constant => (ScheduleKind::Constant, None, None, None),
            Schedule::Step { step_size, gamma } => (ScheduleKind::Step, None, Some(step_size), Some(gamma)),
            Schedule::Cosine { warmup_epochs } => (ScheduleKind::Cosine, Some(warmup_epochs), None, None),
        };
        Flat {
            name: None,
            arch: r.arch,
            head: r.head,
            mode: r.mode,
            views: r.views,
            unfreeze_blocks: r.unfreeze_blocks,
            backbone_lr_scale: r.backbone_lr_scale,
            optimizer: r.optimizer,
            lr: r.lr,
            momentum: r.momentum,
            weight_decay: r.weight_decay,
            schedule,
            warmup_epochs,
            step_size,
            gamma,
            label_smoothing: r.label_smoothing,
            epochs: r.epochs,
            batch_size: r.batch_size,
            seed: r.seed,
            patience: r.patience,
            holdout: r.holdout,
            holdout_seed: r.holdout_seed,
            final_fit: r.final_fit,
            image_size: r.image_size,
            resize_size: r.resize_size,
            color_jitter: r.color_jitter,
            activation_dtype: r.activation_dtype,
            train_dtype: r.train_dtype,
            device: None,
            runtime: None,
            channels_last: None,
            threads: None,
            eval_batch_size: None,
            chunk_images: None,
            activation_cache_limit_mb: None,
        }
    }
}

impl From<Flat> for Recipe {
    fn from(f: Flat) -> Self {
        let schedule = match f.schedule {
            ScheduleKind::Constant => Schedule::Constant,
            ScheduleKind::Step => {
                let Schedule::Step { step_size, gamma } = Schedule::STEP else { unreachable!("Schedule::STEP is a step schedule") };
                Schedule::Step { step_size: f.step_size.unwrap_or(step_size), gamma: f.gamma.unwrap_or(gamma) }
            }
            ScheduleKind::Cosine => {
                let Schedule::Cosine { warmup_epochs } = Schedule::COSINE else { unreachable!("Schedule::COSINE is a cosine schedule") };
                Schedule::Cosine { warmup_epochs: f.warmup_epochs.unwrap_or(warmup_epochs) }
            }
        };
        Recipe {
            arch: f.arch,
            head: f.head,
            mode: f.mode,
            views: f.views,
            unfreeze_blocks: f.unfreeze_blocks,
            backbone_lr_scale: f.backbone_lr_scale,
            optimizer: f.optimizer,
            lr: f.lr,
            momentum: f.momentum,
            weight_decay: f.weight_decay,
            schedule,
            label_smoothing: f.label_smoothing,
            epochs: f.epochs,
            batch_size: f.batch_size,
            seed: f.seed,
            patience: f.patience,
            holdout: f.holdout,
            holdout_seed: f.holdout_seed,
            final_fit: f.final_fit,
            image_size: f.image_size,
            resize_size: f.resize_size,
            color_jitter: f.color_jitter,
            activation_dtype: f.activation_dtype,
            train_dtype: f.train_dtype,
        }
    }
}

impl From<TrainConfig> for Flat {
    fn from(c: TrainConfig) -> Self {
        let r = c.run;
        Flat {
            name: Some(c.name),
            device: Some(r.device),
            runtime: Some(r.runtime),
            channels_last: Some(r.channels_last),
            threads: Some(r.threads),
            eval_batch_size: Some(r.eval_batch_size),
            chunk_images: Some(r.chunk_images),
            activation_cache_limit_mb: Some(r.activation_cache_limit_mb),
            ..Flat::from(c.recipe)
        }
    }
}

impl From<Flat> for TrainConfig {
    fn from(f: Flat) -> Self {
        let (d, name) = (RunOptions::default(), f.name.clone().unwrap_or_else(|| TrainConfig::default().name));
        let run = RunOptions {
            device: f.device.unwrap_or(d.device),
            runtime: f.runtime.unwrap_or(d.runtime),
            channels_last: f.channels_last.unwrap_or(d.channels_last),
            threads: f.threads.unwrap_or(d.threads),
            eval_batch_size: f.eval_batch_size.unwrap_or(d.eval_batch_size),
            chunk_images: f.chunk_images.unwrap_or(d.chunk_images),
            activation_cache_limit_mb: f.activation_cache_limit_mb.unwrap_or(d.activation_cache_limit_mb),
        };
        TrainConfig { name, recipe: f.into(), run }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let mut c = Recipe { lr: 1.0, epochs: 10, ..Recipe::default() };
        c.schedule = Schedule::Constant;
        assert_eq!(c.lr_at(7), 1.0);
        c.schedule = Schedule::Step { step_size: 3, gamma: 0.5 };
        assert_eq!((c.lr_at(2), c.lr_at(3), c.lr_at(6)), (1.0, 0.5, 0.25));
        c.schedule = Schedule::Cosine { warmup_epochs: 1 };
        assert_eq!(c.lr_at(0), 0.5);
        assert!((c.lr_at(1) - 1.0).abs() < 1e-12);
        assert!(c.lr_at(9) < 0.05 && c.lr_at(5) < c.lr_at(3));
    }

    #[test]
    fn seed_preset_is_the_seed_recipe() {
        let seed = TrainConfig::seed_preset();
        let s = &seed.recipe;
        assert_eq!(s.arch, Arch::DenseNet121);
        assert_eq!(s.mode, TrainMode::Frozen);
        assert_eq!(s.head, HeadConfig { hidden: vec![512], activation: model::Activation::Relu, dropout: 0.2 });
        assert_eq!((s.optimizer, s.lr, s.batch_size, s.epochs), (OptimizerKind::Adam, 0.003, 64, 10));
        assert_eq!((s.schedule, s.weight_decay, s.label_smoothing), (Schedule::Constant, 0.0, 0.0));
        // A fresh augmented view for each of the 10 epochs, as the seed recomputed every epoch.
        assert_eq!(s.views, 10);
        assert_eq!(TrainConfig::preset("seed"), Some(seed.clone()));
        assert_eq!(TrainConfig::preset("nope"), None);
    }

    #[test]
    fn the_default_is_the_recorded_sweep_winner() {
        // docs/sweep-lite0/best.toml: the best trial of `petal sweep --config examples/sweep.toml`
        // (docs/history/benchmarks.md, "Sweep"). Only the name differs, and the dropout, which a head without
        // hidden layers never applies.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/sweep-lite0/best.toml");
        let text = std::fs::read_to_string(&path).expect("docs/sweep-lite0/best.toml");
        let mut best: TrainConfig = toml::from_str(&text).expect("a training config");
        assert!(best.recipe.head.hidden.is_empty());
        best.recipe.head.dropout = 0.0;
        let default = TrainConfig::default();
        best.name = default.name.clone();
        best.recipe.arch = default.recipe.arch.clone();
        assert_eq!(best, default);
    }

    #[test]
    fn toml_round_trip_and_unknown_fields() {
        let c = TrainConfig::seed_preset();
        let text = toml::to_string(&c).expect("serialise");
        let back: TrainConfig = toml::from_str(&text).expect("parse");
        assert_eq!(back, c);
        let err = toml::from_str::<TrainConfig>("epoch = 3").expect_err("typo must be refused");
        assert!(err.to_string().contains("epoch"));
        let mut zero = c.clone();
        zero.recipe.epochs = 0;
        assert!(zero.validate().is_err());
        // The run options are keys of the same flat table.
        let run: TrainConfig = toml::from_str("device = \"cuda:1\"\nthreads = 3\nepochs = 4").expect("parse");
        assert_eq!((run.run.device, run.run.threads, run.recipe.epochs), (model::DeviceSpec::Cuda(1), 3, 4));
    }

    #[test]
    fn a_schedule_carries_its_own_keys() {
        // Each kind reads its own keys and falls back to the recipe defaults without them.
        let parse = |text: &str| toml::from_str::<TrainConfig>(text).expect("parse").recipe.schedule;
        assert_eq!(parse("schedule = \"step\"\nstep_size = 3\ngamma = 0.5"), Schedule::Step { step_size: 3, gamma: 0.5 });
        assert_eq!(parse("schedule = \"step\""), Schedule::Step { step_size: 5, gamma: 0.1 });
        assert_eq!(parse("schedule = \"cosine\"\nwarmup_epochs = 4"), Schedule::Cosine { warmup_epochs: 4 });
        assert_eq!(parse("schedule = \"cosine\""), Schedule::Cosine { warmup_epochs: 1 });
        // A key of another kind is accepted and has no effect (sweeps vary keys independently).
        assert_eq!(parse("schedule = \"constant\"\nwarmup_epochs = 4\ngamma = 0.5"), Schedule::Constant);
        // Written back, a schedule has only its own keys.
        let cfg =
            TrainConfig { recipe: Recipe { schedule: Schedule::Step { step_size: 2, gamma: 0.3 }, ..Recipe::default() }, ..TrainConfig::default() };
        let text = toml::to_string(&cfg).expect("serialise");
        assert!(text.contains("step_size = 2") && text.contains("gamma = 0.3") && !text.contains("warmup_epochs"), "{text}");
        assert_eq!(toml::from_str::<TrainConfig>(&text).expect("parse"), cfg);
    }

    #[test]
    fn bf16_is_a_frozen_head_setting_written_only_when_set() {
        // The default writes no train_dtype, so every stored recipe and cache key stays as it was.
        let text = toml::to_string(&TrainConfig::default()).expect("serialise");
        assert!(!text.contains("train_dtype"), "{text}");
        let bf16: TrainConfig = toml::from_str("train_dtype = \"bf16\"").expect("parse");
        assert_eq!((bf16.recipe.train_dtype, bf16.recipe.train_dtype.kind()), (TrainDtype::Bf16, tch::Kind::BFloat16));
        bf16.validate().expect("frozen mode trains its head in bf16");
        let back: TrainConfig = toml::from_str(&toml::to_string(&bf16).expect("serialise")).expect("parse");
        assert_eq!(back, bf16);
        for mode in [TrainMode::Partial, TrainMode::Finetune] {
            let mut c = bf16.clone();
            c.recipe.mode = mode;
            c.recipe.arch = Arch::EfficientNetLite0;
            let err = c.validate().expect_err("bf16 outside frozen mode must be refused").to_string();
            assert!(err.contains("train_dtype = \"bf16\"") && err.contains("frozen mode"), "{err}");
        }
    }

    #[test]
    fn a_recipe_holds_no_run_options_and_reads_an_earlier_checkpoints_settings() {
        let cfg = TrainConfig::default();
        let stored = serde_json::to_value(&cfg.recipe).expect("serialise");
        for key in ["device", "threads", "runtime", "eval_batch_size", "chunk_images", "channels_last", "activation_cache_limit_mb", "name"] {
            assert!(stored.get(key).is_none(), "the recipe must not store {key}: {stored}");
        }
        assert_eq!(stored["epochs"], 80);
        // Checkpoints of earlier versions stored the whole flat config: its recipe still reads.
        let mut old = serde_json::to_value(&cfg).expect("serialise");
        old["epochs"] = serde_json::json!(7);
        old["device"] = serde_json::json!("cuda:0");
        let recipe: Recipe = serde_json::from_value(old).expect("an earlier checkpoint's settings");
        assert_eq!(recipe, Recipe { epochs: 7, ..Recipe::default() });
    }
}
