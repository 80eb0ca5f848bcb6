//! `petal pipeline`: preprocess → train → evaluate → predict-a-sample → report, from one TOML file.
//!
//! Each stage writes its artefact into `runs/<name>/` and a stamp (`stages/<stage>.json`) holding a
//! hash of its inputs; re-running a stage whose inputs are unchanged is skipped and says so.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{discover, Overrides};

/// Arguments of `petal pipeline`.
#[derive(Args)]
pub struct PipelineArgs {
    /// The pipeline config (TOML). Without it, the defaults below apply (the seed's recipe).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Dataset root (overrides the config's `data`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Pretrained weights (overrides the config's `weights`).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Parent folder of run folders.
    #[arg(long)]
    runs_dir: Option<PathBuf>,
    /// Run every stage even if its inputs are unchanged.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    overrides: Overrides,
}

/// The pipeline config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Dataset root.
    pub data: Option<PathBuf>,
    /// Pretrained backbone weights.
    pub weights: Option<PathBuf>,
    /// Parent of run folders.
    pub runs_dir: PathBuf,
    /// Image and feature caches.
    pub cache_dir: PathBuf,
    /// Skip corrupt images instead of stopping.
    pub skip_bad: bool,
    /// Classes shown per prediction.
    pub top_k: usize,
    /// Sample predictions drawn in the report.
    pub samples: usize,
    /// The training config (`[train]` table).
    pub train: train::TrainConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            data: None,
            weights: None,
            runs_dir: "runs".into(),
            cache_dir: "runs/.cache".into(),
            skip_bad: false,
            top_k: 5,
            samples: 6,
            // The seed's recipe, with its augmentation drawn as 2 precomputed views (recycled
            // over the 10 epochs) instead of a fresh backbone pass per image and epoch.
            train: train::TrainConfig { views: 2, ..train::TrainConfig::seed_preset() },
        }
    }
}

fn stamp_path(run: &Path, stage: &str) -> PathBuf {
    run.join("stages").join(format!("{stage}.json"))
}

fn hash(v: &serde_json::Value) -> String {
    Sha256::digest(v.to_string().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// True (and says so) when `stage` already ran with these inputs.
fn up_to_date(run: &Path, stage: &str, inputs: &serde_json::Value, force: bool, outputs: &[&Path]) -> bool {
    if force || outputs.iter().any(|p| !p.exists()) {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(stamp_path(run, stage)) else { return false };
    let same = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["inputs"].as_str().map(str::to_string)) == Some(hash(inputs));
    if same {
        eprintln!("[{stage}] inputs unchanged since the last run: skipped");
    }
    same
}

fn mark_done(run: &Path, stage: &str, inputs: &serde_json::Value) -> Result<()> {
    let p = stamp_path(run, stage);
    std::fs::create_dir_all(p.parent().unwrap_or(run)).with_context(|| format!("creating {}", run.display()))?;
    let v = serde_json::json!({ "stage": stage, "inputs": hash(inputs) });
    report::write_atomic(&p, v.to_string().as_bytes()).with_context(|| format!("writing {}", p.display()))
}

/// Identity of a file for stamps.
fn file_id(p: &Path) -> String {
    train::features::file_id(p).unwrap_or_else(|_| p.display().to_string())
}

/// Runs the pipeline.
pub fn run(a: &PipelineArgs) -> Result<()> {
    let mut pc: PipelineConfig = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("{} is not a valid pipeline config", p.display()))?
        }
        None => PipelineConfig::default(),
    };
    if let Some(d) = &a.data {
        pc.data = Some(d.clone());
    }
    if let Some(w) = &a.weights {
        pc.weights = Some(w.clone());
    }
    if let Some(r) = &a.runs_dir {
        pc.runs_dir = r.clone();
        pc.cache_dir = r.join(".cache");
    }
    a.overrides.apply(&mut pc.train)?;
    if a.overrides.name.is_none() && pc.train.name == "seed" {
        pc.train.name = format!("{}-pipeline", pc.train.arch.name());
    }
    pc.train.validate()?;
    let data = pc.data.clone().context(
        "no dataset: pass --data <folder> (an ImageFolder with train/ valid/ [test/], or the official Oxford jpg/ + imagelabels.mat + setid.mat), \
         or run `cargo xtask pipeline` which downloads the Oxford 102 flowers",
    )?;
    let run = pc.runs_dir.join(&pc.train.name);
    std::fs::create_dir_all(&run).with_context(|| format!("creating {}", run.display()))?;
    report::write_atomic(&run.join("pipeline.toml"), toml::to_string_pretty(&pc)?.as_bytes())?;

    // 1. preprocess
    eprintln!("[preprocess] {}", data.display());
    let ds = discover(&data, pc.skip_bad)?;
    let mut fps = serde_json::Map::new();
    for s in &ds.splits {
        fps.insert(s.name.clone(), preprocess::fingerprint(&s.samples)?.into());
    }
    let data_fp = serde_json::Value::Object(fps);
    let tcfg = train::transform_config(&pc.train);
    let inputs = serde_json::json!({ "data": data_fp, "resize": tcfg.resize_size });
    if !up_to_date(&run, "preprocess", &inputs, a.force, &[]) {
        for split in &ds.splits {
            if !split.samples.is_empty() {
                let samples = std::sync::Arc::from(split.samples.clone().into_boxed_slice());
                train::features::image_source(&pc.cache_dir, &split.name, &samples, &tcfg, pc.skip_bad)?;
            }
        }
        mark_done(&run, "preprocess", &inputs)?;
    }

    // 2. train
    let best = run.join("best.safetensors");
    let inputs = serde_json::json!({ "data": data_fp, "config": pc.train, "weights": pc.weights.as_deref().map(file_id) });
    let train_out = if up_to_date(&run, "train", &inputs, a.force, &[&best]) {
        None
    } else {
        eprintln!("[train] {} ({:?}, {} epochs)", pc.train.arch, pc.train.mode, pc.train.epochs);
        let req = train::TrainRequest {
            config: pc.train.clone(),
            weights: pc.weights.clone(),
            runs_dir: pc.runs_dir.clone(),
            cache_dir: pc.cache_dir.clone(),
            resume: false,
            train_split: "train".into(),
            valid_split: "valid".into(),
            skip_bad: pc.skip_bad,
        };
        // A changed config must not resume from an older run's state: start afresh.
        let _ = std::fs::remove_file(run.join("last.safetensors"));
        let out = train::train(&req, &ds).context("training")?;
        mark_done(&run, "train", &inputs)?;
        Some(out)
    };

    // 3. evaluate
    let mut evals = Vec::new();
    for split in ["valid", "test"] {
        if ds.split(split).is_none_or(|s| s.samples.is_empty()) {
            continue;
        }
        let json = run.join(format!("evaluation-{split}.json"));
        let inputs = serde_json::json!({ "checkpoint": file_id(&best), "data": data_fp[split] });
        let stage = format!("evaluate-{split}");
        if up_to_date(&run, &stage, &inputs, a.force, &[&json]) {
            let text = std::fs::read_to_string(&json)?;
            evals.push(serde_json::from_str::<serde_json::Value>(&text)?);
            continue;
        }
        eprintln!("[evaluate] {split}");
        let opts = train::EvalOptions { device: train::parse_device(&pc.train.device)?, out_dir: Some(run.clone()), ..Default::default() };
        let r = train::evaluate(&best, &ds, split, &opts)?;
        println!("{r}");
        evals.push(serde_json::to_value(&r)?);
        mark_done(&run, &stage, &inputs)?;
    }

    // 4. predict a sample
    let sample_png = run.join("sample_predictions.png");
    let split = if ds.split("test").is_some_and(|s| !s.samples.is_empty()) { "test" } else { "valid" };
    let inputs = serde_json::json!({ "checkpoint": file_id(&best), "split": split, "n": pc.samples, "k": pc.top_k });
    if !up_to_date(&run, "predict", &inputs, a.force, &[&sample_png]) {
        if let Some(s) = ds.split(split).filter(|s| !s.samples.is_empty()) {
            eprintln!("[predict] {} sample images of {split}", pc.samples);
            let pred = infer::Predictor::load(&best, train::parse_device(&pc.train.device)?)?;
            let step = (s.samples.len() / pc.samples.max(1)).max(1);
            let picked: Vec<&preprocess::Sample> = s.samples.iter().step_by(step).take(pc.samples).collect();
            let paths: Vec<PathBuf> = picked.iter().map(|x| x.path.clone()).collect();
            let preds = pred.predict_paths(&paths, pc.top_k, 16, |_| {})?;
            let mut panels = Vec::new();
            for (p, sample) in preds.iter().zip(&picked) {
                let truth = ds.display_name(sample.label).map(str::to_string).or_else(|| ds.classes.get(sample.label).cloned());
                panels.push(report::PredictionPanel {
                    image: preprocess::decode_rgb(&p.path)?,
                    truth,
                    topk: p.top.iter().map(|c| (c.name.clone(), c.prob)).collect(),
                });
            }
            report::plot_prediction_grid(&panels, &sample_png)?;
            report::write_atomic(&run.join("sample_predictions.json"), serde_json::to_string_pretty(&preds)?.as_bytes())?;
            mark_done(&run, "predict", &inputs)?;
        }
    }

    // 5. report
    write_readme(&run, &pc, &ds, train_out.as_ref(), &evals)?;
    eprintln!("report: {}", run.join("README.md").display());
    Ok(())
}

fn write_readme(
    run: &Path,
    pc: &PipelineConfig,
    ds: &preprocess::Dataset,
    out: Option<&train::TrainOutcome>,
    evals: &[serde_json::Value],
) -> Result<()> {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "# Run `{}`\n", pc.train.name);
    let _ = writeln!(s, "Dataset: `{}` ({} classes)\n", ds.root.display(), ds.classes.len());
    let _ = writeln!(s, "| split | images |\n|---|---|");
    for sp in &ds.splits {
        let _ = writeln!(s, "| {} | {} |", sp.name, sp.samples.len());
    }
    let _ = writeln!(s, "\n## Config\n\n```toml\n{}```\n", toml::to_string_pretty(&pc.train)?);
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    let last: Option<train::EpochMetrics> = metrics.lines().last().and_then(|l| serde_json::from_str(l).ok());
    if let Some(m) = last {
        let _ = writeln!(
            s,
            "## Training\n\n{} epochs; last epoch: train loss {:.4}, train acc {:.2}%, valid acc {}.",
            m.epoch,
            m.train_loss,
            100.0 * m.train_acc,
            m.valid_acc.map(|v| format!("{:.2}%", 100.0 * v)).unwrap_or_else(|| "–".into())
        );
    }
    if let Some(o) = out {
        let _ = writeln!(s, "Wall time {:.1} s (backbone features {:.1} s), best epoch {}.", o.wall_s, o.feature_s, o.best_epoch);
    }
    let _ = writeln!(s, "\n![loss and accuracy](curves.png)\n\nPer-epoch figures: `metrics.csv`, `metrics.jsonl`.\n");
    let _ = writeln!(s, "## Evaluation (best checkpoint)\n");
    for e in evals {
        let _ = writeln!(
            s,
            "- **{}**: {} images, top-1 {:.2}%, top-5 {:.2}%",
            e["split"].as_str().unwrap_or("?"),
            e["images"],
            100.0 * e["top1"].as_f64().unwrap_or(0.0),
            100.0 * e["top5"].as_f64().unwrap_or(0.0)
        );
        if let Some(w) = e["worst"].as_array() {
            let names: Vec<String> =
                w.iter().map(|c| format!("{} ({:.0}%)", c["name"].as_str().unwrap_or("?"), 100.0 * c["accuracy"].as_f64().unwrap_or(0.0))).collect();
            let _ = writeln!(s, "  worst classes: {}", names.join(", "));
        }
        let split = e["split"].as_str().unwrap_or("valid");
        let _ = writeln!(s, "\n  ![confusion matrix](confusion-{split}.png)\n");
    }
    let _ = writeln!(s, "## Sample predictions\n\n![sample predictions](sample_predictions.png)\n");
    let _ = writeln!(s, "Checkpoints: `best.safetensors`, `last.safetensors` (inspect with `cargo xtask checkpoint inspect`).");
    report::write_atomic(&run.join("README.md"), s.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_config_parses() {
        let pc: PipelineConfig = toml::from_str(include_str!("../examples/pipeline.toml")).expect("examples/pipeline.toml");
        assert_eq!(pc.train.arch, model::Arch::EfficientNetLite0);
        assert_eq!((pc.train.lr, pc.train.batch_size, pc.train.epochs), (0.003, 64, 10));
        pc.train.validate().expect("valid");
    }

    #[test]
    fn defaults_are_the_seed_recipe() {
        let d = PipelineConfig::default().train;
        let seed = train::TrainConfig::seed_preset();
        assert_eq!(d, train::TrainConfig { views: 2, ..seed });
    }
}
