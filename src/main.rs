//! `petal`: the command-line front end that wires the stage crates together.
//!
//! Each subcommand is one stage and runs alone; `pipeline` runs them in order from one TOML config.
//! Libraries return typed errors; this binary adds the context a user needs (which stage, which file).

mod pipeline_cmd;
mod progress;
mod sweep_cmd;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use progress::Bars;

#[derive(Parser)]
#[command(name = "petal", version, about = "Transfer-learning image classification on libtorch (Oxford 102 flowers)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
    /// Serve checkpoints over HTTP: prediction API, upload page, metrics (see README "Serve").
    Serve(serve::ServeArgs),
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
    /// leaderboard, a plot and the best config (see README "Sweep").
    Sweep(sweep_cmd::SweepArgs),
    /// Quantize a checkpoint's backbone to int8 for onnxruntime: calibrate on training images,
    /// measure top-1 against float32 on the valid split, record both in the checkpoint; int8
    /// becomes its default only when it loses at most --max-loss points (see README "int8").
    Quantize(QuantizeArgs),
}

#[derive(Args)]
struct QuantizeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The checkpoint (rewritten atomically with the int8 record in its metadata).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Training images to calibrate on, spread evenly over the train split.
    #[arg(long, default_value_t = infer::quantize::DEFAULT_CALIBRATION_IMAGES)]
    calibration_images: usize,
    /// The most top-1 points int8 may lose on the valid split and still be the default.
    #[arg(long, default_value_t = infer::quantize::DEFAULT_MAX_LOSS_POINTS)]
    max_loss: f64,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Print the record as JSON (without the ranges).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DataArgs {
    /// Dataset root: an ImageFolder (train/ valid/ [test/] with one folder per class) or the official Oxford layout.
    #[arg(long)]
    data: PathBuf,
    /// Skip unreadable or corrupt images (they are listed) instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    /// JSON file mapping class folders to display names (default: cat_to_name.json in the data root, else in its parent).
    #[arg(long)]
    category_names: Option<PathBuf>,
}

#[derive(Args)]
struct PreprocessArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Where the image caches go.
    #[arg(long, default_value = "runs/.cache")]
    cache_dir: PathBuf,
    /// Shorter side of the cached images.
    #[arg(long, default_value_t = 256)]
    resize: u32,
    /// Only print the summary.
    #[arg(long)]
    summary_only: bool,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// TOML file with a training config (see `petal train --print-config`); its fields refine the preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The recipe to start from: `default` (the project's best) or `seed` (the Udacity project's).
    #[arg(long, value_enum)]
    preset: Option<pipeline::Preset>,
    /// Pretrained backbone weights (from `cargo xtask fetch-weights`); omit to start from random weights.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Start from a trained classifier instead: a petal checkpoint or an old PyTorch `.pth`
    /// (converted on the fly). Its architecture, head and weights are taken; its classes must be
    /// the dataset's.
    #[arg(long, conflicts_with_all = ["weights", "resume"])]
    init_from: Option<PathBuf>,
    /// Parent folder of run folders.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Image and feature caches.
    #[arg(long, default_value = "runs/.cache")]
    cache_dir: PathBuf,
    /// Continue the run from its last checkpoint.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Replace a run of the same name (without it, an existing run folder is an error; a run
    /// folder in use by another petal process is always an error, naming its pid).
    #[arg(long)]
    overwrite: bool,
    /// Print the resolved config as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// After training, evaluate the best checkpoint on the validation split with every
    /// test-time augmentation and record the best (only if it beats none) as its default.
    #[arg(long)]
    measure_tta: bool,
    /// Only compute the feature caches (frozen mode) or activation caches (partial mode) this
    /// training uses, then stop; with a shard (--shard, or the batch engine's environment), only
    /// that shard's part of each, which `petal merge <cache-dir>` joins (README "Many machines").
    #[arg(long)]
    extract_only: bool,
    #[command(flatten)]
    shard: ShardArgs,
    #[command(flatten)]
    overrides: OverrideArgs,
}

/// Architectures on the command line: every built-in one (`model::arch_registry::arch_names`,
/// listed by `--help`), case-insensitive, `-` for `_` (`efficientnet-lite0`), or several joined by
/// `+` (an ensemble).
#[derive(Clone)]
struct ArchParser;

impl clap::builder::TypedValueParser for ArchParser {
    type Value = model::Arch;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &std::ffi::OsStr) -> Result<model::Arch, clap::Error> {
        let text = value.to_str().ok_or_else(|| clap::Error::new(clap::error::ErrorKind::InvalidUtf8).with_cmd(cmd))?;
        text.parse::<model::Arch>().map_err(|_| {
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
    /// member's file (`cargo xtask fetch-weights efficientnet_lite0+efficientnet_lite1` fills it).
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
    pub device: Option<String>,
    /// libtorch threads (0: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// What runs frozen feature extraction: auto (onnxruntime on the CPU when `cargo xtask setup`
    /// provisioned it, else libtorch), torch or onnxruntime. Training always runs on libtorch.
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
            device: self.device.clone(),
            threads: self.threads,
            runtime: self.runtime,
            holdout: self.holdout,
            holdout_seed: self.holdout_seed,
            final_fit: self.final_fit.then_some(true),
        }
    }
}

#[derive(Args)]
struct EvaluateArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The checkpoint to evaluate.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Split name.
    #[arg(long, default_value = "valid")]
    split: String,
    /// Where to write the evaluation files (default: the checkpoint's folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// What runs the backbone: auto (onnxruntime on the CPU when provisioned, else libtorch), torch or onnxruntime.
    #[arg(long, value_enum, default_value_t = petal_onnx::Runtime::Auto)]
    runtime: petal_onnx::Runtime,
    /// The backbone's precision on onnxruntime: auto (int8 when `petal quantize` accepted it for the checkpoint, else fp32), fp32 or int8.
    #[arg(long, value_enum, default_value_t = petal_onnx::Precision::Auto)]
    precision: petal_onnx::Precision,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Test-time augmentation, averaged in probability space (default: the checkpoint's recommendation, else none).
    #[arg(long, value_enum)]
    tta: Option<infer::Tta>,
}

#[derive(Args)]
struct PredictArgs {
    /// Image files or folders (searched recursively): paths, file:// or s3://bucket/prefix URLs.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// The trained checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    /// How many classes to show.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Write a CSV of all predictions (default for more than one image: predictions.csv); a path or
    /// a file:// or s3:// URL.
    #[arg(long, conflicts_with = "jsonl")]
    csv: Option<String>,
    /// Write the predictions as JSON lines instead (a path or URL ending in .jsonl).
    #[arg(long)]
    jsonl: Option<String>,
    #[command(flatten)]
    shard: ShardArgs,
    /// Where remote (s3://) inputs are downloaded, and the progress journal of a remote output.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("petal-staging"))]
    staging: PathBuf,
    /// Draw the (first) image beside a bar chart of its top-k probabilities.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// What runs the backbone: auto (onnxruntime on the CPU when provisioned, else libtorch), torch or onnxruntime.
    #[arg(long, value_enum, default_value_t = petal_onnx::Runtime::Auto)]
    runtime: petal_onnx::Runtime,
    /// The backbone's precision on onnxruntime: auto (int8 when `petal quantize` accepted it for the checkpoint, else fp32), fp32 or int8.
    #[arg(long, value_enum, default_value_t = petal_onnx::Precision::Auto)]
    precision: petal_onnx::Precision,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Test-time augmentation, averaged in probability space (default: the checkpoint's recommendation, else none).
    #[arg(long, value_enum)]
    tta: Option<infer::Tta>,
    /// JSON file mapping class folders to display names (default: the names stored in the checkpoint).
    #[arg(long)]
    category_names: Option<PathBuf>,
    /// With a CSV: save progress every this many images (whole batches), so a rerun after a crash
    /// predicts only the images left.
    #[arg(long, default_value_t = 256)]
    chunk_images: usize,
    #[command(flatten)]
    legacy: LegacyArgs,
}

/// Which shard of a job this process runs.
#[derive(Args, Clone, Default)]
struct ShardArgs {
    /// Run only shard K of N (0-based) of the inputs, writing a part (to `<output>.parts/`, or
    /// beside each cache with `train --extract-only`) for `petal merge`. Default: from the batch engine's environment (Kubernetes Indexed Job:
    /// JOB_COMPLETION_INDEX with --shards or PETAL_SHARDS; Slurm array: SLURM_ARRAY_TASK_ID,
    /// SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_COUNT).
    #[arg(long, value_name = "K/N")]
    shard: Option<petal_common::shard::Shard>,
    /// Number of shards, for engines that give only the index (JOB_COMPLETION_INDEX).
    #[arg(long, value_name = "N")]
    shards: Option<u32>,
}

impl ShardArgs {
    /// The shard from the flag, else from the environment, else none.
    fn resolve(&self) -> Result<Option<petal_common::shard::Shard>> {
        match self.shard {
            Some(s) => Ok(Some(s)),
            None => Ok(petal_common::shard::Shard::from_env(|k| std::env::var(k).ok(), self.shards)?),
        }
    }
}

/// This process's command line without its shard options: what reruns one shard (with
/// `--shard K/N` appended).
fn command_without_shard() -> Vec<String> {
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
struct MergeArgs {
    /// The output the shards wrote parts for (their parts are in `<OUTPUT>.parts/`): a path or URL;
    /// or the cache folder of `petal train --extract-only --shard`, whose caches are all merged.
    output: String,
}

#[derive(Subcommand)]
enum CheckpointCmd {
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
struct LegacyArgs {
    /// Backbone architecture of an old checkpoint (checked against its tensors; needed for head-only files).
    #[arg(long)]
    arch: Option<String>,
    /// ImageNet backbone weights completing a head-only checkpoint (default: the fetch-weights cache).
    #[arg(long)]
    weights: Option<PathBuf>,
}

impl LegacyArgs {
    fn options(&self) -> Result<model::legacy::LegacyOptions> {
        let arch = self.arch.as_deref().map(|a| a.parse().map_err(|e| anyhow::anyhow!("--arch {a}: {e}"))).transpose()?;
        Ok(model::legacy::LegacyOptions { arch, backbone_weights: self.weights.clone() })
    }
}

#[derive(Args)]
struct ImportArgs {
    /// Architecture the weights are for.
    #[arg(long, value_parser = ArchParser)]
    arch: model::Arch,
    /// The downloaded PyTorch file.
    input: PathBuf,
    /// The converted file to write.
    output: PathBuf,
}

fn main() {
    // Warnings, and the progress of resumable work (what an interrupted run left to reuse).
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,checkpoint::chunks=info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Err(e) = run() {
        eprintln!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text is already there
/// (library errors often include their source's message, which `{:#}` would then print twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}

fn run() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Preprocess(a) => preprocess_cmd(&a),
        Cmd::Train(a) => train_cmd(&a),
        Cmd::Evaluate(a) => evaluate_cmd(&a),
        Cmd::Predict(a) => predict_cmd(&a),
        Cmd::Checkpoint(CheckpointCmd::Inspect { file, json }) => {
            let s = checkpoint::inspect(&file).with_context(|| format!("inspecting {}", file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("{s}");
            }
            Ok(())
        }
        Cmd::Checkpoint(CheckpointCmd::Convert { input, output, legacy }) => {
            let ctx = || format!("converting {} to {}", input.display(), output.display());
            let imported = checkpoint::import(&input).with_context(ctx)?;
            if imported.meta.is_none() {
                let r = model::legacy::convert_imported(imported, &input, &output, &legacy.options()?).with_context(ctx)?;
                eprintln!("{} ({}), head from the {}; {} classes", r.arch, r.arch_from, r.head.source, r.classes);
                r.assumptions.iter().for_each(|a| eprintln!("assumed: {a}"));
                println!("{}", checkpoint::inspect(&output).with_context(ctx)?);
                return Ok(());
            }
            drop(imported);
            let s = checkpoint::convert(&input, &output).with_context(ctx)?;
            println!("{s}");
            Ok(())
        }
        Cmd::ImportWeights(a) => {
            let arch = &a.arch;
            let c = model::arch_registry::convert_pretrained(arch, &a.input, &a.output)
                .with_context(|| format!("converting {} ({}) into {}", a.input.display(), arch, a.output.display()))?;
            eprintln!(
                "wrote {} ({} backbone tensors; dropped the source's classifier keys {:?})",
                a.output.display(),
                c.tensors,
                c.dropped_head_keys
            );
            Ok(())
        }
        Cmd::Pipeline(a) => pipeline_cmd::run(&a),
        Cmd::Merge(a) => merge_cmd(&a),
        Cmd::Sweep(a) => sweep_cmd::run(&a),
        Cmd::Quantize(a) => quantize_cmd(&a),
        Cmd::Serve(a) => serve::run(&a, |e| eprintln!("serve: {e}")).map(|_| ()).context("petal serve"),
        Cmd::Export { checkpoint, format, out } => {
            let e = export::export(&checkpoint, format, &out).with_context(|| format!("exporting {} to {format}", checkpoint.display()))?;
            println!("wrote {} ({} bytes, output {:?}) and {}", e.path.display(), e.bytes, e.info.output_name, e.sidecar.display());
            Ok(())
        }
    }
}

/// Discovers the dataset and prints its summary.
fn discover(d: &DataArgs) -> Result<preprocess::Dataset> {
    let ds = pipeline::discover(&d.data, d.skip_bad, d.category_names.as_deref())
        .with_context(|| format!("reading the dataset at {}", d.data.display()))?;
    eprintln!("{}", ds.summary());
    Ok(ds)
}

fn preprocess_cmd(a: &PreprocessArgs) -> Result<()> {
    let ds = discover(&a.data)?;
    if a.summary_only {
        return Ok(());
    }
    let tcfg = preprocess::TransformConfig { resize_size: a.resize, ..Default::default() };
    for c in pipeline::cache_splits(&ds, &a.cache_dir, &tcfg, a.data.skip_bad, &Bars::default()).context("caching images")? {
        eprintln!("{}: image cache ready ({} images, {:.1}s)", c.split, c.images, c.seconds);
    }
    Ok(())
}

fn train_cmd(a: &TrainArgs) -> Result<()> {
    let cfg = pipeline::load_train_config(a.config.as_deref(), a.preset, &a.overrides.to_overrides())?;
    if a.print_config {
        println!("{}", toml::to_string_pretty(&cfg)?);
        return Ok(());
    }
    if !a.extract_only && (a.shard.shard.is_some() || a.shard.shards.is_some()) {
        anyhow::bail!("--shard and --shards split the feature extraction: add --extract-only");
    }
    let existing = match (a.resume, a.overwrite) {
        (true, _) => pipeline::Existing::Resume,
        (_, true) => pipeline::Existing::Overwrite,
        _ => pipeline::Existing::Refuse,
    };
    let job = pipeline::TrainJob {
        data: a.data.data.clone(),
        config: cfg,
        weights: a.weights.clone(),
        init_from: a.init_from.clone(),
        runs_dir: a.runs_dir.clone(),
        cache_dir: a.cache_dir.clone(),
        skip_bad: a.data.skip_bad,
        category_names: a.data.category_names.clone(),
        existing,
    };
    if a.extract_only {
        return extract_cmd(&job, &a.shard);
    }
    let report = job.run_and_report(&Bars::default()).context("training")?;
    let out = &report.outcome;
    let best = &out.history[out.best_epoch.saturating_sub(1)];
    eprintln!(
        "done in {:.1}s (features {:.1}s); best epoch {}, {} acc {}; checkpoints in {}",
        out.wall_s,
        out.feature_s,
        out.best_epoch,
        out.selected_on.as_deref().unwrap_or("valid"),
        best.valid_acc.map(|v| format!("{:.2}%", 100.0 * v)).unwrap_or_else(|| "–".into()),
        out.run_dir.display()
    );
    if let Some(f) = &out.final_fit {
        eprintln!("final fit: {} epochs on {} images in {:.1}s: {}", f.epochs, f.images, f.wall_s, f.checkpoint.display());
    }
    if let Some(c) = &report.calibration {
        eprintln!("calibration: temperature {:.3} on {} (ECE {:.2}% -> {:.2}%)", c.temperature, c.split, 100.0 * c.ece.0, 100.0 * c.ece.1);
    }
    for r in &report.held_out {
        eprintln!("held out: {r}");
    }
    if a.measure_tta {
        let ds = pipeline::discover(&job.data, job.skip_bad, job.category_names.as_deref())?;
        let device = model::parse_device(&job.config.device)?;
        let split = out.selected_on.as_deref().unwrap_or("valid");
        let ds = infer::evaluate::resolve_split(&ds, split, &checkpoint::load(&out.best_checkpoint)?.meta)?;
        let advice = pipeline::recommend_tta(&out.best_checkpoint, &ds, split, (device, job.config.runtime), &Bars::default())
            .context("measuring test-time augmentation")?;
        // The final fit is the delivered network: it predicts with the same advice (as the pipeline's tta stage does).
        if let Some(f) = &out.final_fit {
            infer::record_advice(&f.checkpoint, &advice).with_context(|| format!("recording the advice in {}", f.checkpoint.display()))?;
            eprintln!("recorded in {}: predict uses tta {} by default", f.checkpoint.display(), advice.tta);
        }
    }
    Ok(())
}

/// `petal train --extract-only [--shard K/N]`: the caches (or this shard's parts of them), no training.
fn extract_cmd(job: &pipeline::TrainJob, shard: &ShardArgs) -> Result<()> {
    let shard = shard.resolve()?;
    let out = job.extract(shard.map(|s| (s, command_without_shard())), &Bars::default()).context("extracting features")?;
    for p in &out.parts {
        let how = if p.kept { "kept from an earlier run".to_string() } else { format!("{:.1}s", p.seconds) };
        eprintln!("{}: {} of {} images ({how})", p.part.display(), p.images, p.total);
    }
    match shard {
        Some(s) => eprintln!(
            "shard {s}: parts of {} caches written in {:.1}s (features {:.1}s); join them with: petal merge {}",
            out.caches,
            out.wall_s,
            out.feature_s,
            job.cache_dir.display()
        ),
        None => eprintln!("{} caches ready in {} ({:.1}s, features {:.1}s)", out.caches, job.cache_dir.display(), out.wall_s, out.feature_s),
    }
    Ok(())
}

fn evaluate_cmd(a: &EvaluateArgs) -> Result<()> {
    let ds = discover(&a.data)?;
    let out = a.out.clone().or_else(|| a.checkpoint.parent().map(Path::to_path_buf));
    let opts = infer::EvalOptions {
        device: model::parse_device(&a.device)?,
        out_dir: out,
        tta: a.tta,
        runtime: a.runtime,
        precision: a.precision,
        graph_cache: petal_common::onnxruntime::graph_cache(),
        ..Default::default()
    };
    let r = pipeline::evaluate_checkpoint(&a.checkpoint, &ds, &a.split, &opts, a.data.category_names.as_deref(), &Bars::default())
        .with_context(|| format!("evaluating {}", a.checkpoint.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("{r}");
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn quantize_cmd(a: &QuantizeArgs) -> Result<()> {
    let ds = discover(&a.data)?;
    let opts = infer::QuantizeOptions {
        calibration_images: a.calibration_images,
        max_loss_points: a.max_loss,
        batch_size: a.batch_size,
        graph_cache: petal_common::onnxruntime::graph_cache(),
        ..Default::default()
    };
    let r = infer::quantize(&a.checkpoint, &ds, &opts, &Bars::default()).with_context(|| format!("quantizing {}", a.checkpoint.display()))?;
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("ranges");
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    eprintln!(
        "int8 calibrated on {} {} images; {} top-1: fp32 {:.2} %, int8 {:.2} % ({:+.2} points); backbone {:.1} -> {:.1} img/s ({:.2}x)",
        r.calibration_images,
        r.calibration_split,
        r.eval_split,
        r.fp32_top1,
        r.int8_top1,
        -r.loss_points,
        r.fp32_img_s,
        r.int8_img_s,
        r.int8_img_s / r.fp32_img_s.max(1e-9)
    );
    if r.accepted {
        eprintln!("int8 is now the default of {} (--precision auto); --precision fp32 runs the reference", a.checkpoint.display());
    } else {
        eprintln!(
            "int8 refused as the default of {}: it loses {:.2} points, more than the {:.2} allowed; recorded, and run only with --precision int8",
            a.checkpoint.display(),
            r.loss_points,
            r.max_loss_points
        );
    }
    Ok(())
}

fn predict_cmd(a: &PredictArgs) -> Result<()> {
    let shard = a.shard.resolve()?;
    let device = model::parse_device(&a.device)?;
    let mut pred =
        infer::Predictor::load_with(&a.checkpoint, device, &a.legacy.options()?).with_context(|| format!("loading {}", a.checkpoint.display()))?;
    pred.set_backend(a.runtime, a.precision, petal_common::onnxruntime::graph_cache().as_deref()).context("choosing the runtime")?;
    if let Some(f) = &a.category_names {
        pred.set_names(&preprocess::read_names_file(f)?, true);
    }
    if let Some(t) = a.tta {
        pred.tta = t;
    }
    let t0 = std::time::Instant::now();
    let mut out = a.jsonl.clone().or_else(|| a.csv.clone());
    let remote = a.inputs.iter().any(|i| petal_storage::is_remote(i));
    if out.is_none() && (shard.is_some() || remote || pipeline::batch::list_inputs(&a.inputs)?.len() > 1) {
        out = Some("predictions.csv".into());
    }
    let pb = ProgressBar::hidden();
    pb.set_style(ProgressStyle::with_template("predict [{bar:30}] {pos}/{len} {per_sec}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let on_progress = |done: usize, total: usize| {
        if total > a.batch_size && pb.is_hidden() {
            pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    };
    let preds = match &out {
        // With an output file, predictions are journaled in chunks beside it: a rerun after a crash resumes.
        Some(out) => {
            let job = pipeline::batch::BatchJob {
                inputs: a.inputs.clone(),
                out: out.clone(),
                shard,
                top_k: a.top_k,
                batch_size: a.batch_size,
                chunk_images: a.chunk_images,
                staging: a.staging.clone(),
                command: command_without_shard(),
            };
            let r = pipeline::batch::batch_predict(&pred, &job, on_progress).context("predicting")?;
            pb.finish_and_clear();
            match shard {
                Some(s) => eprintln!("shard {s}: {} of {} images; wrote {}", r.predictions.len(), r.total_inputs, r.written),
                None => eprintln!("wrote {}", r.written),
            }
            r.predictions
        }
        None => {
            let paths: Vec<PathBuf> = a.inputs.iter().map(PathBuf::from).collect();
            let paths = pipeline::expand_inputs(&paths)?;
            pred.predict_paths(&paths, a.top_k, a.batch_size, |done| on_progress(done, paths.len())).context("predicting")?
        }
    };
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let source = if a.tta.is_some() { "--tta" } else { "the checkpoint's default" };
    eprintln!(
        "tta {} ({source}): {} forward pass(es) per image; {} image(s) in {:.2} s ({:.1} ms per image)",
        pred.tta,
        pred.tta.views(),
        preds.len(),
        secs,
        1e3 * secs / preds.len().max(1) as f64
    );
    if a.json {
        println!("{}", serde_json::to_string_pretty(&preds)?);
    } else {
        for p in &preds {
            println!("{}", p.path.display());
            for (i, c) in p.top.iter().enumerate() {
                println!("  {}. {:<28} {:6.2}%  [{}]", i + 1, c.name, 100.0 * c.prob, c.folder);
            }
        }
    }
    if let Some(plot) = &a.plot {
        let first = preds.first().context("no image to plot in this shard")?;
        let img = preprocess::decode_rgb(&first.path)?;
        let top: Vec<(String, f32)> = first.top.iter().map(|c| (c.name.clone(), c.prob)).collect();
        let title = first.top.first().map(|c| c.name.clone()).unwrap_or_default();
        report::plot_prediction(&img, &title, &top, plot).with_context(|| format!("drawing {}", plot.display()))?;
        eprintln!("wrote {}", plot.display());
    }
    Ok(())
}

fn merge_cmd(a: &MergeArgs) -> Result<()> {
    if Path::new(&a.output).is_dir() {
        return merge_caches(Path::new(&a.output));
    }
    let r = pipeline::batch::merge(&a.output).with_context(|| format!("merging the parts of {}", a.output))?;
    eprintln!("merged {} parts ({} images, {} bytes) into {}", r.parts, r.inputs, r.bytes, r.written);
    Ok(())
}

/// `petal merge <cache-dir>`: every feature or activation cache with parts there.
fn merge_caches(dir: &Path) -> Result<()> {
    let mut failed = Vec::new();
    for (cache, r) in train::shards::merge_dir(dir)? {
        match r {
            Ok(m) => eprintln!("merged {} parts ({} images of {}) into {}", m.parts, m.images, m.kind, cache.display()),
            Err(e) => failed.push(format!("{}: {e}", cache.display())),
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{} cache(s) could not be merged:\n{}", failed.len(), failed.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    /// An error whose message already holds its source's, as library errors often do.
    #[derive(Debug)]
    struct Opening(std::io::Error);

    impl std::fmt::Display for Opening {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "w.pth: opening: {}", self.0)
        }
    }

    impl std::error::Error for Opening {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = Err::<(), _>(Opening(io)).context("converting w.pth").expect_err("an error");
        assert_eq!(super::error_chain(&e), "converting w.pth: w.pth: opening: No such file or directory");
        assert_eq!(format!("{e:#}"), "converting w.pth: w.pth: opening: No such file or directory: No such file or directory");
    }
}
