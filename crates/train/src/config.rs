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

/// The learning-rate schedule, evaluated once per epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// `lr` throughout.
    Constant,
    /// `lr · gamma^(epoch / step_size)`.
    Step,
    /// Linear warm-up over `warmup_epochs`, then cosine decay to 0 at the last epoch.
    Cosine,
}

/// Everything that defines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Run name: outputs go to `<runs_dir>/<name>/`.
    pub name: String,
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
    /// Cosine: warm-up epochs.
    pub warmup_epochs: usize,
    /// Step: epochs per decay.
    pub step_size: usize,
    /// Step: decay factor.
    pub gamma: f64,
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
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// What runs the frozen backbone: frozen mode's feature extraction and partial mode's frozen
    /// blocks (its activation caches). `auto` (onnxruntime on the CPU when its library loads, else
    /// libtorch), `torch` or `onnxruntime`. Training itself (backpropagation, and the whole
    /// backbone in fine-tuning) always runs on libtorch.
    pub runtime: petal_onnx::Runtime,
    /// Network input size (the crop).
    pub image_size: u32,
    /// Eval resize (shorter side).
    pub resize_size: u32,
    /// Apply ColorJitter(0.2, 0.2, 0.2, 0.02) in the train augmentation.
    pub color_jitter: bool,
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
    /// Partial mode: how cached activations are stored (`f16` halves the disk they take).
    pub activation_dtype: ActivationDtype,
    /// Partial mode: refuse to build an activation cache larger than this many MB (0: no limit but
    /// the free disk).
    pub activation_cache_limit_mb: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            name: "run".into(),
            arch: Arch::DenseNet121,
            // The best of the sweep `examples/sweep.toml` on flowers102-mini (BENCHMARKS.md, "Sweep"):
            // a linear head (so no dropout applies), AdamW lr 0.00185 without weight decay, label
            // smoothing 0.2, batch 128, 80 cosine epochs: 89.0 % valid vs 88.3 % for the previous recipe.
            head: HeadConfig { hidden: vec![], activation: model::Activation::Relu, dropout: 0.0 },
            mode: TrainMode::Frozen,
            // Frozen features of the eval transform beat augmented views on flowers102-mini
            // (88.3 % vs 85.9 % with 2 views with the previous head recipe, see BENCHMARKS.md) at
            // half the backbone work.
            views: 0,
            unfreeze_blocks: 1,
            backbone_lr_scale: 0.1,
            optimizer: OptimizerKind::Adamw,
            lr: 0.00185,
            momentum: 0.9,
            weight_decay: 0.0,
            schedule: Schedule::Cosine,
            warmup_epochs: 1,
            step_size: 5,
            gamma: 0.1,
            label_smoothing: 0.2,
            epochs: 80,
            batch_size: 128,
            seed: 0,
            patience: 0,
            holdout: 0.0,
            holdout_seed: 0,
            final_fit: false,
            device: "cpu".into(),
            runtime: petal_onnx::Runtime::Auto,
            image_size: 224,
            resize_size: 256,
            color_jitter: false,
            channels_last: true,
            threads: 0,
            eval_batch_size: 32,
            chunk_images: 256,
            activation_dtype: ActivationDtype::F16,
            activation_cache_limit_mb: 0,
        }
    }
}

impl TrainConfig {
    /// The seed project's recipe: densenet121, frozen, hidden 512, ReLU, dropout 0.2, Adam lr 0.003,
    /// batch 64, 10 epochs, a fresh RandomRotation(30)/RandomResizedCrop(224)/flip view every epoch.
    pub fn seed_preset() -> Self {
        TrainConfig {
            name: "seed".into(),
            arch: Arch::DenseNet121,
            head: HeadConfig::default(),
            mode: TrainMode::Frozen,
            views: 10,
            optimizer: OptimizerKind::Adam,
            lr: 0.003,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            warmup_epochs: 0,
            label_smoothing: 0.0,
            epochs: 10,
            batch_size: 64,
            ..TrainConfig::default()
        }
    }

    /// A preset by name: `seed` or `default`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "seed" => Some(Self::seed_preset()),
            "default" | "fast" => Some(Self::default()),
            _ => None,
        }
    }

    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |m: &str| Err(crate::Error::Config(m.to_string()));
        if self.epochs == 0 {
            return bad("epochs must be at least 1");
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("batch_size and eval_batch_size must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr must be a positive number");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing must be in [0, 1)");
        }
        if self.schedule == Schedule::Step && (self.step_size == 0 || self.gamma.is_nan() || self.gamma <= 0.0) {
            return bad("the step schedule needs step_size ≥ 1 and gamma > 0");
        }
        let units = self.arch.backbone_blocks().len();
        if self.mode == TrainMode::Partial && matches!(self.arch, Arch::Ensemble(_)) {
            return bad(&format!("partial mode cannot split an ensemble ({}) between blocks: train it frozen or fine-tune it", self.arch));
        }
        if self.mode == TrainMode::Partial && !(1..units).contains(&self.unfreeze_blocks) {
            return bad(&format!(
                "partial mode trains 1 to {} of the {units} blocks of {} (unfreeze_blocks), not {}",
                units - 1,
                self.arch,
                self.unfreeze_blocks
            ));
        }
        if self.mode == TrainMode::Finetune && self.runtime == petal_onnx::Runtime::Onnxruntime {
            return bad("runtime onnxruntime runs frozen feature extraction, partial mode's frozen blocks and inference; mode finetune trains its whole backbone on libtorch: use --runtime torch or auto");
        }
        if !(0.0..1.0).contains(&self.holdout) {
            return bad("holdout must be in [0, 1): the fraction of each class of the validation split held out");
        }
        if self.final_fit && self.holdout == 0.0 {
            return bad("final_fit retrains on the training split plus the selection part of a holdout: set holdout too (e.g. 0.5)");
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name == ".." {
            return bad("name must be a plain folder name");
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
            Schedule::Step => self.lr * self.gamma.powi((epoch / self.step_size.max(1)) as i32),
            Schedule::Cosine => {
                if epoch < self.warmup_epochs {
                    self.lr * (epoch + 1) as f64 / (self.warmup_epochs + 1) as f64
                } else {
                    let span = (self.epochs - self.warmup_epochs).max(1) as f64;
                    let t = (epoch - self.warmup_epochs) as f64 / span;
                    0.5 * self.lr * (1.0 + (std::f64::consts::PI * t).cos())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let mut c = TrainConfig { lr: 1.0, epochs: 10, ..TrainConfig::default() };
        c.schedule = Schedule::Constant;
        assert_eq!(c.lr_at(7), 1.0);
        c.schedule = Schedule::Step;
        c.step_size = 3;
        c.gamma = 0.5;
        assert_eq!((c.lr_at(2), c.lr_at(3), c.lr_at(6)), (1.0, 0.5, 0.25));
        c.schedule = Schedule::Cosine;
        c.warmup_epochs = 1;
        assert_eq!(c.lr_at(0), 0.5);
        assert!((c.lr_at(1) - 1.0).abs() < 1e-12);
        assert!(c.lr_at(9) < 0.05 && c.lr_at(5) < c.lr_at(3));
    }

    #[test]
    fn seed_preset_is_the_seed_recipe() {
        let s = TrainConfig::seed_preset();
        assert_eq!(s.arch, Arch::DenseNet121);
        assert_eq!(s.mode, TrainMode::Frozen);
        assert_eq!(s.head, HeadConfig { hidden: vec![512], activation: model::Activation::Relu, dropout: 0.2 });
        assert_eq!((s.optimizer, s.lr, s.batch_size, s.epochs), (OptimizerKind::Adam, 0.003, 64, 10));
        assert_eq!((s.schedule, s.weight_decay, s.label_smoothing), (Schedule::Constant, 0.0, 0.0));
        // A fresh augmented view for each of the 10 epochs, as the seed recomputed every epoch.
        assert_eq!(s.views, 10);
        assert_eq!(TrainConfig::preset("seed"), Some(s));
        assert_eq!(TrainConfig::preset("nope"), None);
    }

    #[test]
    fn the_default_is_the_recorded_sweep_winner() {
        // docs/sweep-lite0/best.toml: the best trial of `petal sweep --config examples/sweep.toml`
        // (BENCHMARKS.md, "Sweep"). Only the name differs, and the dropout, which a head without
        // hidden layers never applies.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/sweep-lite0/best.toml");
        let text = std::fs::read_to_string(&path).expect("docs/sweep-lite0/best.toml");
        let mut best: TrainConfig = toml::from_str(&text).expect("a training config");
        assert!(best.head.hidden.is_empty());
        best.head.dropout = 0.0;
        let default = TrainConfig::default();
        assert_eq!(TrainConfig { name: default.name.clone(), arch: default.arch.clone(), ..best }, default);
    }

    #[test]
    fn toml_round_trip_and_unknown_fields() {
        let c = TrainConfig::seed_preset();
        let text = toml::to_string(&c).expect("serialise");
        let back: TrainConfig = toml::from_str(&text).expect("parse");
        assert_eq!(back, c);
        let err = toml::from_str::<TrainConfig>("epoch = 3").expect_err("typo must be refused");
        assert!(err.to_string().contains("epoch"));
        assert!(TrainConfig { epochs: 0, ..c }.validate().is_err());
    }
}
