//! `petal`: the command-line front end that wires the stage crates together.
//!
//! Each subcommand is one stage and runs alone; `pipeline` runs them in order from one TOML config.
//! Libraries return typed errors; this binary adds the context a user needs (which stage, which file).

mod pipeline;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

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
    Pipeline(pipeline::PipelineArgs),
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
}

#[derive(Args)]
struct DataArgs {
    /// Dataset root: an ImageFolder (train/ valid/ [test/] with one folder per class) or the official Oxford layout.
    #[arg(long)]
    data: PathBuf,
    /// Skip unreadable or corrupt images (they are listed) instead of stopping.
    #[arg(long)]
    skip_bad: bool,
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
    /// TOML file with a training config (see `petal train --print-config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Start from a preset: `seed` (the Udacity project's recipe) or `default`.
    #[arg(long)]
    preset: Option<String>,
    /// Pretrained backbone weights (from `cargo xtask fetch-weights`); omit to start from random weights.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Parent folder of run folders.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Image and feature caches.
    #[arg(long, default_value = "runs/.cache")]
    cache_dir: PathBuf,
    /// Continue the run from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Print the resolved config as TOML and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    overrides: Overrides,
}

/// Command-line overrides of config fields.
#[derive(Args, Default, Clone)]
pub struct Overrides {
    /// Run name.
    #[arg(long)]
    pub name: Option<String>,
    /// Architecture: densenet121|161|169|201, efficientnet_lite0.
    #[arg(long)]
    pub arch: Option<String>,
    /// frozen or finetune.
    #[arg(long)]
    pub mode: Option<String>,
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
}

impl Overrides {
    /// Applies the given overrides to `cfg`.
    pub fn apply(&self, cfg: &mut train::TrainConfig) -> Result<()> {
        if let Some(v) = &self.name {
            cfg.name = v.clone();
        }
        if let Some(v) = &self.arch {
            cfg.arch = v.parse().map_err(|e| anyhow::anyhow!("--arch {v}: {e}"))?;
        }
        if let Some(v) = &self.mode {
            cfg.mode = match v.as_str() {
                "frozen" => train::TrainMode::Frozen,
                "finetune" | "fine-tune" => train::TrainMode::Finetune,
                _ => bail!("--mode must be frozen or finetune, not {v:?}"),
            };
        }
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { cfg.$f = v.clone(); } )* };
        }
        set!(epochs, views, lr, batch_size, seed, patience, device, threads);
        Ok(())
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
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PredictArgs {
    /// Image files or folders (searched recursively).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The trained checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    /// How many classes to show.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Write a CSV of all predictions (default for more than one image: predictions.csv).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Draw the (first) image beside a bar chart of its top-k probabilities.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
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
    },
}

#[derive(Args)]
struct ImportArgs {
    /// Architecture the weights are for.
    #[arg(long)]
    arch: String,
    /// The downloaded PyTorch file.
    input: PathBuf,
    /// The converted file to write.
    output: PathBuf,
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Preprocess(a) => preprocess_cmd(&a).map(|_| ()),
        Cmd::Train(a) => train_cmd(&a).map(|_| ()),
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
        Cmd::Checkpoint(CheckpointCmd::Convert { input, output }) => {
            let s = checkpoint::convert(&input, &output).with_context(|| format!("converting {} to {}", input.display(), output.display()))?;
            println!("{s}");
            Ok(())
        }
        Cmd::ImportWeights(a) => {
            let arch: model::Arch = a.arch.parse().map_err(|e| anyhow::anyhow!("--arch {}: {e}", a.arch))?;
            let c = model::arch_registry::convert_pretrained(&arch, &a.input, &a.output)
                .with_context(|| format!("converting {} ({}) into {}", a.input.display(), arch, a.output.display()))?;
            eprintln!(
                "wrote {} ({} backbone tensors; dropped the source's classifier keys {:?})",
                a.output.display(),
                c.tensors,
                c.dropped_head_keys
            );
            Ok(())
        }
        Cmd::Pipeline(a) => pipeline::run(&a),
        Cmd::Export { checkpoint, format, out } => {
            let e = export::export(&checkpoint, format, &out).with_context(|| format!("exporting {} to {format}", checkpoint.display()))?;
            println!("wrote {} ({} bytes, output {:?}) and {}", e.path.display(), e.bytes, e.info.output_name, e.sidecar.display());
            Ok(())
        }
    }
}

/// Discovers the dataset and prints its summary.
pub fn discover(data: &Path, skip_bad: bool) -> Result<preprocess::Dataset> {
    let opts = preprocess::DiscoverOptions { skip_bad, ..Default::default() };
    let ds = preprocess::discover(data, &opts).with_context(|| format!("reading the dataset at {}", data.display()))?;
    eprintln!("{}", ds.summary());
    Ok(ds)
}

fn preprocess_cmd(a: &PreprocessArgs) -> Result<preprocess::Dataset> {
    let ds = discover(&a.data.data, a.data.skip_bad)?;
    if a.summary_only {
        return Ok(ds);
    }
    std::fs::create_dir_all(&a.cache_dir).with_context(|| format!("creating {}", a.cache_dir.display()))?;
    for split in &ds.splits {
        if split.samples.is_empty() {
            continue;
        }
        let samples = std::sync::Arc::from(split.samples.clone().into_boxed_slice());
        let tcfg = preprocess::TransformConfig { resize_size: a.resize, ..Default::default() };
        let t0 = std::time::Instant::now();
        train::features::image_source(&a.cache_dir, &split.name, &samples, &tcfg, a.data.skip_bad)
            .with_context(|| format!("caching the {} split", split.name))?;
        eprintln!("{}: image cache ready ({} images, {:.1}s)", split.name, split.samples.len(), t0.elapsed().as_secs_f64());
    }
    Ok(ds)
}

/// Resolves the training config: preset or file, then command-line overrides.
pub fn resolve_config(config: Option<&Path>, preset: Option<&str>, o: &Overrides) -> Result<train::TrainConfig> {
    let mut cfg = match (config, preset) {
        (Some(p), _) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("{} is not a valid training config", p.display()))?
        }
        (None, Some(name)) => train::TrainConfig::preset(name).with_context(|| format!("unknown preset {name:?} (seed, default)"))?,
        (None, None) => train::TrainConfig::default(),
    };
    o.apply(&mut cfg)?;
    cfg.validate()?;
    Ok(cfg)
}

fn train_cmd(a: &TrainArgs) -> Result<train::TrainOutcome> {
    let cfg = resolve_config(a.config.as_deref(), a.preset.as_deref(), &a.overrides)?;
    if a.print_config {
        println!("{}", toml::to_string_pretty(&cfg)?);
        std::process::exit(0);
    }
    let ds = discover(&a.data.data, a.data.skip_bad)?;
    let req = train::TrainRequest {
        config: cfg,
        weights: a.weights.clone(),
        runs_dir: a.runs_dir.clone(),
        cache_dir: a.cache_dir.clone(),
        resume: a.resume,
        train_split: "train".into(),
        valid_split: "valid".into(),
        skip_bad: a.data.skip_bad,
    };
    let out = train::train(&req, &ds).context("training")?;
    let best = &out.history[out.best_epoch.saturating_sub(1)];
    eprintln!(
        "done in {:.1}s (features {:.1}s); best epoch {} valid acc {}; checkpoints in {}",
        out.wall_s,
        out.feature_s,
        out.best_epoch,
        best.valid_acc.map(|v| format!("{:.2}%", 100.0 * v)).unwrap_or_else(|| "–".into()),
        out.run_dir.display()
    );
    Ok(out)
}

fn evaluate_cmd(a: &EvaluateArgs) -> Result<()> {
    let ds = discover(&a.data.data, a.data.skip_bad)?;
    let out = a.out.clone().or_else(|| a.checkpoint.parent().map(Path::to_path_buf));
    let opts = train::EvalOptions { device: train::parse_device(&a.device)?, out_dir: out, ..Default::default() };
    let r = train::evaluate(&a.checkpoint, &ds, &a.split, &opts).with_context(|| format!("evaluating {}", a.checkpoint.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("{r}");
    }
    Ok(())
}

/// Expands folders into the image files below them (sorted).
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut stack = vec![p.clone()];
            let mut found = Vec::new();
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
                    let path = e.with_context(|| format!("listing {}", d.display()))?.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if is_image_name(&path) {
                        found.push(path);
                    }
                }
            }
            found.sort();
            out.extend(found);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    if out.is_empty() {
        bail!("no images found in {:?}", inputs);
    }
    Ok(out)
}

fn is_image_name(p: &Path) -> bool {
    let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    matches!(ext.as_str(), "jpg" | "jpeg" | "png" | "webp" | "bmp")
}

fn predict_cmd(a: &PredictArgs) -> Result<()> {
    let device = train::parse_device(&a.device)?;
    let pred = infer::Predictor::load(&a.checkpoint, device).with_context(|| format!("loading {}", a.checkpoint.display()))?;
    let paths = expand_inputs(&a.inputs)?;
    let pb = if paths.len() > a.batch_size { ProgressBar::new(paths.len() as u64) } else { ProgressBar::hidden() };
    pb.set_style(ProgressStyle::with_template("predict [{bar:30}] {pos}/{len} {per_sec}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let preds = pred.predict_paths(&paths, a.top_k, a.batch_size, |done| pb.set_position(done as u64)).context("predicting")?;
    pb.finish_and_clear();
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
    let csv = a.csv.clone().or_else(|| (preds.len() > 1).then(|| PathBuf::from("predictions.csv")));
    if let Some(csv) = csv {
        let mut header = vec!["path".to_string()];
        for i in 1..=a.top_k.min(pred.num_classes()) {
            header.extend([format!("top{i}_name"), format!("top{i}_folder"), format!("top{i}_prob")]);
        }
        let rows: Vec<Vec<String>> = preds
            .iter()
            .map(|p| {
                let mut r = vec![p.path.display().to_string()];
                for c in &p.top {
                    r.extend([c.name.clone(), c.folder.clone(), format!("{:.6}", c.prob)]);
                }
                r
            })
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        report::write_csv(&csv, &header, &rows).with_context(|| format!("writing {}", csv.display()))?;
        eprintln!("wrote {}", csv.display());
    }
    if let Some(plot) = &a.plot {
        let first = &preds[0];
        let img = preprocess::decode_rgb(&first.path)?;
        let top: Vec<(String, f32)> = first.top.iter().map(|c| (c.name.clone(), c.prob)).collect();
        let title = first.top.first().map(|c| c.name.clone()).unwrap_or_default();
        report::plot_prediction(&img, &title, &top, plot).with_context(|| format!("drawing {}", plot.display()))?;
        eprintln!("wrote {}", plot.display());
    }
    Ok(())
}
