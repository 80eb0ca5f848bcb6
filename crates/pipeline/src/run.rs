//! `petal pipeline`: preprocess → train → evaluate → predict a sample → run README, from one config.
//!
//! Each stage writes its artefact into `<runs_dir>/<name>/` and a stamp (`stages/<stage>.json`)
//! holding a hash of its inputs; re-running a stage whose inputs are unchanged is skipped and says
//! so. The run folder is locked while the pipeline runs; a trained model from other inputs is
//! only replaced when the caller allows it ([`PipelineRun::overwrite`]).

use std::path::{Path, PathBuf};

use petal_common::{Event, Progress};
use preprocess::Dataset;

use crate::stages::{cache_splits, claim_run, discover, evaluate_checkpoint, Existing};
use crate::{Error, PipelineConfig};

/// A pipeline run: the config and how to treat earlier results.
#[derive(Debug, Clone)]
pub struct PipelineRun {
    /// The resolved config (see [`crate::load_pipeline_config`]).
    pub config: PipelineConfig,
    /// Run every stage even if its inputs are unchanged.
    pub force: bool,
    /// Replace a trained model in the run folder that came from other inputs (else that is an
    /// error); the pipeline's own unchanged stages are skipped either way.
    pub overwrite: bool,
}

/// What a pipeline run produced.
#[derive(Debug, Clone)]
pub struct PipelineOutcome {
    /// `<runs_dir>/<name>`.
    pub run_dir: PathBuf,
    /// Stages that ran (the others were up to date).
    pub ran: Vec<String>,
    /// The evaluation of each split (`evaluation-<split>.json`, as JSON).
    pub evaluations: Vec<serde_json::Value>,
    /// The run README.
    pub readme: PathBuf,
}

/// Stamps of one run folder.
struct Stamps<'a> {
    run: &'a Path,
    force: bool,
    progress: &'a dyn Progress,
}

impl Stamps<'_> {
    fn path(&self, stage: &str) -> PathBuf {
        self.run.join("stages").join(format!("{stage}.json"))
    }

    /// True (and says so) when `stage` already ran with these inputs and its outputs exist.
    fn up_to_date(&self, stage: &str, inputs: &serde_json::Value, outputs: &[&Path]) -> bool {
        if self.force || outputs.iter().any(|p| !p.exists()) {
            return false;
        }
        let Ok(text) = std::fs::read_to_string(self.path(stage)) else { return false };
        let stored = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["inputs"].as_str().map(str::to_string));
        let same = stored == Some(hash(inputs));
        if same {
            self.progress.event(Event::Message(&format!("[{stage}] inputs unchanged since the last run: skipped")));
        }
        same
    }

    fn mark_done(&self, stage: &str, inputs: &serde_json::Value) -> Result<(), Error> {
        let p = self.path(stage);
        let dir = self.run.join("stages");
        std::fs::create_dir_all(&dir).map_err(|e| petal_common::IoError::new(&dir, "creating folder", e))?;
        let v = serde_json::json!({ "stage": stage, "inputs": hash(inputs) });
        Ok(petal_common::write_atomic(&p, v.to_string().as_bytes())?)
    }
}

fn hash(v: &serde_json::Value) -> String {
    petal_common::sha256_hex(v.to_string().as_bytes())
}

/// Identity of a file for stamps.
fn file_id(p: &Path) -> String {
    petal_common::file_id(p).unwrap_or_else(|_| p.display().to_string())
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    Ok(petal_common::write_atomic(path, text.as_bytes())?)
}

fn json_err(e: impl std::fmt::Display) -> Error {
    Error::Inputs(format!("serialising the run's records: {e}"))
}

/// Runs the pipeline, reporting stages and progress to `progress`.
pub fn run_pipeline(job: &PipelineRun, progress: &dyn Progress) -> Result<PipelineOutcome, Error> {
    let pc = &job.config;
    let data = pc.data.clone().ok_or(Error::NoData)?;
    let run = pc.runs_dir.join(&pc.train.name);
    // The pipeline continues its own run (stamps decide what re-runs); the train stage below
    // refuses to replace a model trained from other inputs unless `overwrite`.
    let _lock = claim_run(&run, Existing::Resume)?;
    write(&run.join("pipeline.toml"), &toml::to_string_pretty(pc).map_err(json_err)?)?;
    let stamps = Stamps { run: &run, force: job.force, progress };
    let mut ran = Vec::new();

    progress.event(Event::Message(&format!("[preprocess] {}", data.display())));
    let ds = discover(&data, pc.skip_bad, pc.category_names.as_deref())?;
    progress.event(Event::Message(&ds.summary().to_string()));
    let mut fps = serde_json::Map::new();
    for s in &ds.splits {
        fps.insert(s.name.clone(), preprocess::fingerprint(&s.samples)?.into());
    }
    let data_fp = serde_json::Value::Object(fps);
    let tcfg = train::transform_config(&pc.train);
    let inputs = serde_json::json!({ "data": data_fp, "resize": tcfg.resize_size });
    if !stamps.up_to_date("preprocess", &inputs, &[]) {
        cache_splits(&ds, &pc.cache_dir, &tcfg, pc.skip_bad, progress)?;
        stamps.mark_done("preprocess", &inputs)?;
        ran.push("preprocess".to_string());
    }

    let best = run.join("best.safetensors");
    let names = ds.names.clone();
    let inputs = serde_json::json!({ "data": data_fp, "config": pc.train, "weights": pc.weights.as_deref().map(file_id), "names": names });
    let train_out = if stamps.up_to_date("train", &inputs, &[&best]) {
        None
    } else {
        if crate::stages::has_run(&run) && !job.overwrite {
            return Err(Error::RunExists { path: run.clone() });
        }
        progress.event(Event::Message(&format!("[train] {} ({:?}, {} epochs)", pc.train.arch, pc.train.mode, pc.train.epochs)));
        let job = crate::TrainJob {
            data: data.clone(),
            config: pc.train.clone(),
            weights: pc.weights.clone(),
            init_from: None,
            runs_dir: pc.runs_dir.clone(),
            cache_dir: pc.cache_dir.clone(),
            skip_bad: pc.skip_bad,
            category_names: pc.category_names.clone(),
            existing: Existing::Overwrite,
        };
        // A changed config must not resume from an older run's state: start afresh.
        for f in ["last.safetensors", "best.safetensors", "metrics.jsonl"] {
            let _ = std::fs::remove_file(run.join(f));
        }
        let out = train::train(&job.request(), &ds, progress)?;
        stamps.mark_done("train", &inputs)?;
        ran.push("train".to_string());
        Some(out)
    };
    tta_stage(&stamps, pc, &ds, &inputs, &best, &mut ran, progress)?;

    let evaluations = evaluate_stage(&stamps, pc, &ds, &data_fp, &best, &mut ran, progress)?;
    predict_stage(&stamps, pc, &ds, &best, &mut ran, progress)?;
    let readme = run.join("README.md");
    write(&readme, &readme_text(&run, pc, &ds, train_out.as_ref(), &evaluations)?)?;
    progress.event(Event::Message(&format!("report: {}", readme.display())));
    Ok(PipelineOutcome { run_dir: run, ran, evaluations, readme })
}

/// Measures test-time augmentation on `valid` and records the advice in `best` (which changes
/// the file, so the stamp is keyed by the training inputs, not by the checkpoint).
fn tta_stage(
    stamps: &Stamps<'_>,
    pc: &PipelineConfig,
    ds: &Dataset,
    train_inputs: &serde_json::Value,
    best: &Path,
    ran: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<(), Error> {
    if !pc.measure_tta || ds.split("valid").is_none_or(|s| s.samples.is_empty()) {
        return Ok(());
    }
    let inputs = serde_json::json!({ "train": train_inputs });
    if stamps.up_to_date("tta", &inputs, &[best]) {
        return Ok(());
    }
    progress.event(Event::Message("[tta] test-time augmentation on valid"));
    crate::recommend_tta(best, ds, "valid", (model::parse_device(&pc.train.device)?, pc.train.runtime), progress)?;
    stamps.mark_done("tta", &inputs)?;
    ran.push("tta".to_string());
    Ok(())
}

fn evaluate_stage(
    stamps: &Stamps<'_>,
    pc: &PipelineConfig,
    ds: &Dataset,
    data_fp: &serde_json::Value,
    best: &Path,
    ran: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<Vec<serde_json::Value>, Error> {
    let mut evals = Vec::new();
    for split in ["valid", "test"] {
        if ds.split(split).is_none_or(|s| s.samples.is_empty()) {
            continue;
        }
        let json = stamps.run.join(format!("evaluation-{split}.json"));
        let inputs = serde_json::json!({ "checkpoint": file_id(best), "data": data_fp[split] });
        let stage = format!("evaluate-{split}");
        if stamps.up_to_date(&stage, &inputs, &[&json]) {
            let text = std::fs::read_to_string(&json).map_err(|e| petal_common::IoError::new(&json, "reading", e))?;
            evals.push(serde_json::from_str::<serde_json::Value>(&text).map_err(|e| Error::Inputs(format!("{}: {e}", json.display())))?);
            continue;
        }
        progress.event(Event::Message(&format!("[evaluate] {split}")));
        let opts = infer::EvalOptions {
            device: model::parse_device(&pc.train.device)?,
            out_dir: Some(stamps.run.to_path_buf()),
            runtime: pc.train.runtime,
            graph_cache: petal_common::onnxruntime::graph_cache(),
            ..Default::default()
        };
        let r = evaluate_checkpoint(best, ds, split, &opts, pc.category_names.as_deref(), progress)?;
        progress.event(Event::Message(&r.to_string()));
        evals.push(serde_json::to_value(&r).map_err(json_err)?);
        stamps.mark_done(&stage, &inputs)?;
        ran.push(stage);
    }
    Ok(evals)
}

fn predict_stage(
    stamps: &Stamps<'_>,
    pc: &PipelineConfig,
    ds: &Dataset,
    best: &Path,
    ran: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let sample_png = stamps.run.join("sample_predictions.png");
    let split = if ds.split("test").is_some_and(|s| !s.samples.is_empty()) { "test" } else { "valid" };
    let inputs = serde_json::json!({ "checkpoint": file_id(best), "split": split, "n": pc.samples, "k": pc.top_k });
    if stamps.up_to_date("predict", &inputs, &[&sample_png]) {
        return Ok(());
    }
    let Some(s) = ds.split(split).filter(|s| !s.samples.is_empty()) else { return Ok(()) };
    progress.event(Event::Message(&format!("[predict] {} sample images of {split}", pc.samples)));
    let mut pred = infer::Predictor::load(best, model::parse_device(&pc.train.device)?)?;
    pred.set_runtime(pc.train.runtime, petal_common::onnxruntime::graph_cache().as_deref())?;
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
    write(&stamps.run.join("sample_predictions.json"), &serde_json::to_string_pretty(&preds).map_err(json_err)?)?;
    stamps.mark_done("predict", &inputs)?;
    ran.push("predict".to_string());
    Ok(())
}

fn readme_text(
    run: &Path,
    pc: &PipelineConfig,
    ds: &Dataset,
    out: Option<&train::TrainOutcome>,
    evals: &[serde_json::Value],
) -> Result<String, Error> {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "# Run `{}`\n", pc.train.name);
    let _ = writeln!(s, "Dataset: `{}` ({} classes)\n", ds.root.display(), ds.classes.len());
    let _ = writeln!(s, "| split | images |\n|---|---|");
    for sp in &ds.splits {
        let _ = writeln!(s, "| {} | {} |", sp.name, sp.samples.len());
    }
    let _ = writeln!(s, "\n## Config (preset `{:?}`)\n\n```toml\n{}```\n", pc.preset, toml::to_string_pretty(&pc.train).map_err(json_err)?);
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
    Ok(s)
}
