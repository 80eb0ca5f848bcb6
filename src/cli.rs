//! The command line: every subcommand's arguments, parsed by clap. Parsing only: each maps onto a
//! library job or call in `main.rs`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::{pipeline_cmd, sweep_cmd};

#[derive(Parser)]
#[command(name = "petal", version, about = "Transfer-learning image classification on libtorch (Oxford 102 flowers)")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Discover a dataset, print its summary, and build the decoded-image caches.
    Preprocess(PreprocessArgs),
    /// Train a classifier head (frozen backbone) or fine-tune.
    Train(TrainArgs),
    /// Evaluate a checkpoint on a split: top-1/top-5, per-class accuracy, confusion matrix.
    Evaluate(EvaluateArgs),
    /// Predict the top-k classes of images (files or folders).
    Predict(PredictArgs),
    /// Inspect or convert checkpoint files (petal, safetensors, PyTorch .pth).
    #[command(subcommand)]
    Checkpoint(CheckpointCmd),
    /// Convert downloaded pretrained weights (a PyTorch file) into the project's format.
    ImportWeights(ImportArgs),
    /// Run preprocess → train → evaluate → predict from one config file.
    Pipeline(pipeline_cmd::PipelineArgs),
    /// Serve checkpoints over HTTP: prediction API, upload page, metrics (see docs/serve.md).
    Serve(crate::serve_cmd::ServeArgs),
    /// Join the parts that the shards of `predict --shard` or `train --extract-only --shard` wrote
    /// into the one output (or caches) a single process writes.
    Merge(MergeArgs),
    /// Export a checkpoint to ONNX or TorchScript, with a JSON sidecar `<out>.json` (classes, preprocessing, output).
    Export {
        /// The petal checkpoint.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output format.
        #[arg(long, value_enum)]
        format: export::Format,
        /// Output file (e.g. model.onnx, model.pt); its folder must exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// Search training fields (grid or random, successive halving) on cached features; writes a
    /// leaderboard, a plot and the best config (see docs/accuracy.md, "Sweep").
    Sweep(sweep_cmd::SweepArgs),
    /// Quantize a checkpoint's backbone to int8 for onnxruntime: calibrate on training images,
    /// measure top-1 against float32 on the valid split, record both in the checkpoint; int8
    /// becomes its default only when it loses at most --max-loss points (see docs/setup.md, "int8").
    Quantize(QuantizeArgs),
}

#[derive(Args)]
pub(crate) struct QuantizeArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// The checkpoint (rewritten atomically with the int8 record in its metadata).
    #[arg(long)]
    pub(crate) checkpoint: PathBuf,
    /// Training images to calibrate on, spread evenly over the train split.
    #[arg(long, default_value_t = infer::quantize::DEFAULT_CALIBRATION_IMAGES)]
    pub(crate) calibration_images: usize,
    /// The most top-1 points int8 may lose on the valid split and still be the default.
    #[arg(long, default_value_t = infer::quantize::DEFAULT_MAX_LOSS_POINTS)]
    pub(crate) max_loss: f64,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    pub(crate) batch_size: usize,
    /// Round the biases as they are, without correcting them for the weights' rounding (the
    /// correction is on by default; this measures what it does).
    #[arg(long)]
    pub(crate) no_bias_correction: bool,
    /// Print the record as JSON (without the ranges and weight shifts).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct DataArgs {
    /// Dataset root: an ImageFolder (train/ valid/ [test/] with one folder per class) or the official Oxford layout.
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// Skip unreadable or corrupt images (they are listed) instead of stopping.
    #[arg(long)]
    pub(crate) skip_bad: bool,
    /// JSON file mapping class folders to display names (default: cat_to_name.json in the data root, else in its parent).
    #[arg(long)]
    pub(crate) category_names: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct PreprocessArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Where the image caches go.
    #[arg(long, default_value = "runs/.cache")]
    pub(crate) cache_dir: PathBuf,
    /// Shorter side of the cached images.
    #[arg(long, default_value_t = 256)]
    pub(crate) resize: u32,
    /// Only print the summary.
    #[arg(long)]
    pub(crate) summary_only: bool,
}

#[derive(Args)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// TOML file with a training config (see `petal train --print-config`); its fields refine the preset.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// The recipe to start from: `default` (the project's best) or `seed` (the Udacity project's).
    #[arg(long, value_enum)]
    pub(crate) preset: Option<pipeline::Preset>,
    /// Pretrained backbone weights (from `cargo xtask fetch-weights`); omit to start from random weights.
    #[arg(long)]
    pub(crate) weights: Option<PathBuf>,
    /// Start from a trained classifier instead: a petal checkpoint or an old PyTorch `.pth`
    /// (converted on the fly). Its architecture, head and weights are taken; its classes must be
    /// the dataset's.
    #[arg(long, conflicts_with_all = ["weights", "resume"])]
    pub(crate) init_from: Option<PathBuf>,
    /// Parent folder of run folders.
    #[arg(long, default_value = "runs")]
    pub(crate) runs_dir: PathBuf,
    /// Image and feature caches.
    #[arg(long, default_value = "runs/.cache")]
    pub(crate) cache_dir: PathBuf,
    /// Continue the run from its last checkpoint.
    #[arg(long, conflicts_with = "overwrite")]
    pub(crate) resume: bool,
    /// Replace a run of the same name (without it, an existing run folder is an error; a run
    /// folder in use by another petal process is always an error, naming its pid).
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// Print the resolved config as TOML and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
    /// After training, evaluate the best checkpoint on the validation split with every
    /// test-time augmentation and record the best (only if it beats none) as its default.
    #[arg(long)]
    pub(crate) measure_tta: bool,
    /// Only compute the feature caches (frozen mode) or activation caches (partial mode) this
    /// training uses, then stop; with a shard (--shard, or the batch engine's environment), only
    /// that shard's part of each, which `petal merge <cache-dir>` joins (docs/sharding.md).
    #[arg(long)]
    pub(crate) extract_only: bool,
    #[command(flatten)]
    pub(crate) shard: ShardArgs,
    #[command(flatten)]
    pub(crate) overrides: OverrideArgs,
}

/// Architectures on the command line: every built-in one (`model::arch_registry::arch_names`,
/// listed by `--help`), case-insensitive, `-` for `_` (`efficientnet-lite0`), or several joined by
/// `+` (an ensemble).
#[derive(Clone)]
pub(crate) struct ArchParser;

impl clap::builder::TypedValueParser for ArchParser {
    type Value = model::Arch;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &std::ffi::OsStr) -> Result<model::Arch, clap::Error> {
        let text = value.to_str().ok_or_else(|| clap::Error::new(clap::error::ErrorKind::InvalidUtf8).with_cmd(cmd))?;
        text.parse::<model::Arch>().map_err(|err| {
            if !matches!(err, model::Error::UnknownArch(_)) {
                // A known name used wrongly (a rescaled member alone, a side out of range): say why.
                let flag = arg.map_or("--arch".into(), |a| a.to_string());
                return clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("invalid value '{text}' for '{flag}': {err}\n"))
                    .with_cmd(cmd);
            }
            let mut e = clap::Error::new(clap::error::ErrorKind::InvalidValue).with_cmd(cmd);
            e.insert(clap::error::ContextKind::InvalidArg, clap::error::ContextValue::String(arg.map_or("--arch".into(), |a| a.to_string())));
            e.insert(clap::error::ContextKind::InvalidValue, clap::error::ContextValue::String(text.to_string()));
            let names = model::arch_registry::arch_names().into_iter().map(String::from).collect();
            e.insert(clap::error::ContextKind::ValidValue, clap::error::ContextValue::Strings(names));
            e
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(model::arch_registry::arch_names().into_iter().map(clap::builder::PossibleValue::new)))
    }
}

/// Command-line overrides of config fields.
#[derive(Args, Default, Clone)]
pub struct OverrideArgs {
    /// Run name.
    #[arg(long)]
    pub name: Option<String>,
    /// Architecture; several joined by `+` (`efficientnet_lite0+efficientnet_lite1`) make an
    /// ensemble: one head on their concatenated features, `--weights` then the folder holding each
    /// member's file (`cargo xtask fetch-weights efficientnet_lite0+efficientnet_lite1` fills it). A
    /// member may run at its own side for multi-scale features (`efficientnet_lite0+efficientnet_lite0@224`).
    #[arg(long, value_parser = ArchParser)]
    pub arch: Option<model::Arch>,
    /// Frozen backbone, fine-tuning, or partial fine-tuning on cached activations.
    #[arg(long, value_enum)]
    pub mode: Option<train::TrainMode>,
    /// Fine-tuning and partial mode: trailing backbone blocks to train.
    #[arg(long, visible_alias = "trainable-blocks")]
    pub unfreeze_blocks: Option<usize>,
    /// Partial mode: refuse an activation cache larger than this many MB (0: only the free disk limits it).
    #[arg(long)]
    pub activation_cache_limit_mb: Option<u64>,
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Augmented views per training image (frozen mode).
    #[arg(long)]
    pub views: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Early-stopping patience in epochs (0: off).
    #[arg(long)]
    pub patience: Option<usize>,
    /// cpu, cuda, cuda:N.
    #[arg(long)]
    pub device: Option<model::DeviceSpec>,
    /// libtorch threads (0: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// What runs the frozen backbone (frozen mode's features, partial mode's frozen blocks): auto
    /// (onnxruntime on the CPU when `cargo xtask setup` provisioned it, else libtorch), torch or
    /// onnxruntime. Training always runs on libtorch.
    #[arg(long, value_enum)]
    pub runtime: Option<petal_onnx::Runtime>,
    /// Hold out this fraction of each class of the validation split (e.g. 0.5): the epoch, the
    /// calibration and TTA are chosen on the rest (`valid-select`), and the held-out part
    /// (`valid-holdout`) only reports.
    #[arg(long)]
    pub holdout: Option<f64>,
    /// Seed of the holdout cut (default 0; apart from --seed, so every trial holds out the same images).
    #[arg(long)]
    pub holdout_seed: Option<u64>,
    /// After training, retrain on train plus the selection part for the chosen number of epochs
    /// (`final.safetensors`); needs --holdout.
    #[arg(long)]
    pub final_fit: bool,
    /// Frozen mode: the dtype of the head's matrix products while it trains: f32, or bf16
    /// (autocast: f32 weights and optimiser state; on the best recipe it saved 4 % of the head's epochs).
    #[arg(long, value_enum)]
    pub train_dtype: Option<train::TrainDtype>,
}

impl OverrideArgs {
    /// The library's typed overrides.
    pub fn to_overrides(&self) -> pipeline::Overrides {
        pipeline::Overrides {
            name: self.name.clone(),
            arch: self.arch.clone(),
            mode: self.mode,
            unfreeze_blocks: self.unfreeze_blocks,
            activation_cache_limit_mb: self.activation_cache_limit_mb,
            epochs: self.epochs,
            views: self.views,
            lr: self.lr,
            batch_size: self.batch_size,
            seed: self.seed,
            patience: self.patience,
            device: self.device,
            threads: self.threads,
            runtime: self.runtime,
            holdout: self.holdout,
            holdout_seed: self.holdout_seed,
            final_fit: self.final_fit.then_some(true),
            train_dtype: self.train_dtype,
        }
    }
}

#[derive(Args)]
pub(crate) struct EvaluateArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// The checkpoint to evaluate.
    #[arg(long)]
    pub(crate) checkpoint: PathBuf,
    /// Split name.
    #[arg(long, default_value = "valid")]
    pub(crate) split: String,
    /// Where to write the evaluation files (default: the checkpoint's folder).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    pub(crate) device: model::DeviceSpec,
    /// What runs the backbone: auto (onnxruntime on the CPU when provisioned, else libtorch), torch or onnxruntime.
    #[arg(long, value_enum, default_value_t = petal_onnx::Runtime::Auto)]
    pub(crate) runtime: petal_onnx::Runtime,
    /// The backbone's precision on onnxruntime: auto (int8 when `petal quantize` accepted it for the checkpoint, else fp32), fp32 or int8.
    #[arg(long, value_enum, default_value_t = petal_onnx::Precision::Auto)]
    pub(crate) precision: petal_onnx::Precision,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Test-time augmentation, averaged in probability space (default: the checkpoint's recommendation, else none).
    #[arg(long, value_enum)]
    pub(crate) tta: Option<infer::Tta>,
}

#[derive(Args)]
pub(crate) struct PredictArgs {
    /// Image files or folders (searched recursively): paths, file:// or s3://bucket/prefix URLs.
    #[arg(required = true)]
    pub(crate) inputs: Vec<String>,
    /// The trained checkpoint.
    #[arg(long)]
    pub(crate) checkpoint: PathBuf,
    /// How many classes to show.
    #[arg(long, default_value_t = 5)]
    pub(crate) top_k: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write a CSV of all predictions (default for more than one image: predictions.csv); a path or
    /// a file:// or s3:// URL.
    #[arg(long, conflicts_with = "jsonl")]
    pub(crate) csv: Option<String>,
    /// Write the predictions as JSON lines instead (a path or URL ending in .jsonl).
    #[arg(long)]
    pub(crate) jsonl: Option<String>,
    #[command(flatten)]
    pub(crate) shard: ShardArgs,
    /// Where remote (s3://) inputs are downloaded, and the progress journal of a remote output.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("petal-staging"))]
    pub(crate) staging: PathBuf,
    /// Draw the (first) image beside a bar chart of its top-k probabilities.
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
    /// cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    pub(crate) device: model::DeviceSpec,
    /// What runs the backbone: auto (onnxruntime on the CPU when provisioned, else libtorch), torch or onnxruntime.
    #[arg(long, value_enum, default_value_t = petal_onnx::Runtime::Auto)]
    pub(crate) runtime: petal_onnx::Runtime,
    /// The backbone's precision on onnxruntime: auto (int8 when `petal quantize` accepted it for the checkpoint, else fp32), fp32 or int8.
    #[arg(long, value_enum, default_value_t = petal_onnx::Precision::Auto)]
    pub(crate) precision: petal_onnx::Precision,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    pub(crate) batch_size: usize,
    /// Test-time augmentation, averaged in probability space (default: the checkpoint's recommendation, else none).
    #[arg(long, value_enum)]
    pub(crate) tta: Option<infer::Tta>,
    /// JSON file mapping class folders to display names (default: the names stored in the checkpoint).
    #[arg(long)]
    pub(crate) category_names: Option<PathBuf>,
    /// With a CSV: save progress every this many images (whole batches), so a rerun after a crash
    /// predicts only the images left.
    #[arg(long, default_value_t = 256)]
    pub(crate) chunk_images: usize,
    #[command(flatten)]
    pub(crate) legacy: LegacyArgs,
}

/// Which shard of a job this process runs.
#[derive(Args, Clone, Default)]
pub(crate) struct ShardArgs {
    /// Run only shard K of N (0-based) of the inputs, writing a part (to `<output>.parts/`, or
    /// beside each cache with `train --extract-only`) for `petal merge`. Default: from the batch engine's environment (Kubernetes Indexed Job:
    /// JOB_COMPLETION_INDEX with --shards or PETAL_SHARDS; Slurm array: SLURM_ARRAY_TASK_ID,
    /// SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_COUNT).
    #[arg(long, value_name = "K/N")]
    pub(crate) shard: Option<petal_common::shard::Shard>,
    /// Number of shards, for engines that give only the index (JOB_COMPLETION_INDEX).
    #[arg(long, value_name = "N")]
    pub(crate) shards: Option<u32>,
}

impl ShardArgs {
    /// The shard from the flag, else from the environment, else none.
    pub(crate) fn resolve(&self) -> Result<Option<petal_common::shard::Shard>> {
        match self.shard {
            Some(s) => Ok(Some(s)),
            None => Ok(petal_common::shard::Shard::from_env(|k| std::env::var(k).ok(), self.shards)?),
        }
    }
}

/// This process's command line without its shard options: what reruns one shard (with
/// `--shard K/N` appended).
pub(crate) fn command_without_shard() -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args();
    while let Some(a) = args.next() {
        if a == "--shard" || a == "--shards" {
            args.next();
        } else if !a.starts_with("--shard=") && !a.starts_with("--shards=") {
            out.push(a);
        }
    }
    out
}

#[derive(Args)]
pub(crate) struct MergeArgs {
    /// The output the shards wrote parts for (their parts are in `<OUTPUT>.parts/`): a path or URL;
    /// or the cache folder of `petal train --extract-only --shard`, whose caches are all merged.
    pub(crate) output: String,
}

#[derive(Subcommand)]
pub(crate) enum CheckpointCmd {
    /// Summarise a checkpoint or weight file.
    Inspect {
        /// The file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Convert a PyTorch checkpoint (or safetensors file) into the project's format.
    Convert {
        /// Input file.
        input: PathBuf,
        /// Output file.
        output: PathBuf,
        #[command(flatten)]
        legacy: LegacyArgs,
    },
}

/// Choices for old PyTorch checkpoints (see `model::legacy`).
#[derive(Args, Clone)]
pub(crate) struct LegacyArgs {
    /// Backbone architecture of an old checkpoint (checked against its tensors; needed for head-only files).
    #[arg(long)]
    pub(crate) arch: Option<String>,
    /// ImageNet backbone weights completing a head-only checkpoint (default: the fetch-weights cache).
    #[arg(long)]
    pub(crate) weights: Option<PathBuf>,
}

impl LegacyArgs {
    pub(crate) fn options(&self) -> Result<model::legacy::LegacyOptions> {
        let arch = self.arch.as_deref().map(|a| a.parse().map_err(|e| anyhow::anyhow!("--arch {a}: {e}"))).transpose()?;
        Ok(model::legacy::LegacyOptions { arch, backbone_weights: self.weights.clone() })
    }
}

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// Architecture the weights are for.
    #[arg(long, value_parser = ArchParser)]
    pub(crate) arch: model::Arch,
    /// The downloaded PyTorch file.
    pub(crate) input: PathBuf,
    /// The converted file to write.
    pub(crate) output: PathBuf,
}
