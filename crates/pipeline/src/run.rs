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

/// What an evaluated split is to the figures read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitRole {
    /// Choices (epoch, recipe, TTA, temperature) were made on these images: a selection score.
    Selection,
    /// Used for no choice: an honest estimate.
    HeldOut,
    /// Neither (the training split, a test split).
    Other,
}

impl PipelineOutcome {
    /// The role of `split` in this run: `valid-select` (or `valid` when there is no holdout) chose,
    /// `valid-holdout` only reports.
    pub fn role(&self, split: &str) -> SplitRole {
        let holdout = self.evaluations.iter().any(|e| e.split.ends_with("-holdout"));
        if split.ends_with("-holdout") {
            SplitRole::HeldOut
        } else if split.ends_with("-select") || (split == "valid" && !holdout) {
            SplitRole::Selection
        } else {
            SplitRole::Other
        }
    }
}

/// What a pipeline run produced.
#[derive(Debug, Clone)]
pub struct PipelineOutcome {
    /// `<runs_dir>/<name>`.
    pub run_dir: PathBuf,
    /// Stages that ran (the others were up to date).
    pub ran: Vec<String>,
    /// The evaluation of each split (`evaluation-<split>.json`) of the chosen checkpoint
    /// (`best.safetensors`).
    pub evaluations: Vec<infer::EvalReport>,
    /// The evaluations of the final fit (`final/evaluation-<split>.json`), when there is one.
    pub final_evaluations: Vec<infer::EvalReport>,
    /// The checkpoint the run delivers: `final.safetensors` after a final fit, else `best.safetensors`.
    pub model: PathBuf,
    /// Seconds per stage that ran in this process, in order (`images`, `features`, `epochs`,
    /// `final fit`, `calibrate`, `tta`, `evaluate`, `predict`).
    pub stage_seconds: Vec<(String, f64)>,
    /// The run README.
    pub readme: PathBuf,
}

/// The splits of a run: with a holdout, the validation split cut into its selection part and
/// its held-out part.
struct Splits {
    /// The dataset with the cut applied (the discovered one without a holdout).
    ds: Dataset,
    /// Where choices are made: `valid`, or `valid-select`.
    select: Option<String>,
    /// The held-out part, reported only: `valid-holdout`.
    holdout: Option<String>,
}

impl Splits {
    fn of(ds: &Dataset, cfg: &train::TrainConfig) -> Result<Splits, Error> {
        let nonempty = |d: &Dataset, n: &str| d.split(n).is_some_and(|s| !s.samples.is_empty());
        match cfg.recipe.holdout_cut() {
            Some(cut) if nonempty(ds, "valid") => Ok(Splits {
                ds: cut.apply(ds, "valid")?,
                select: Some(preprocess::Holdout::select_name("valid")),
                holdout: Some(preprocess::Holdout::holdout_name("valid")),
            }),
            _ => Ok(Splits { ds: ds.clone(), select: nonempty(ds, "valid").then(|| "valid".to_string()), holdout: None }),
        }
    }

    /// The splits evaluated: selection, held-out, and test when the dataset has one.
    fn evaluated(&self) -> Vec<String> {
        let test = self.ds.split("test").is_some_and(|s| !s.samples.is_empty()).then(|| "test".to_string());
        self.select.iter().chain(&self.holdout).cloned().chain(test).collect()
    }
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
    let mut timed: Vec<(String, f64)> = Vec::new();
    let clock = std::time::Instant::now();

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
        timed.push(("images".into(), clock.elapsed().as_secs_f64()));
    }
    let splits = Splits::of(&ds, &pc.train)?;

    let best = run.join("best.safetensors");
    let final_ckpt = run.join("final.safetensors");
    let names = ds.names.clone();
    let inputs = serde_json::json!({ "data": data_fp, "config": pc.train, "weights": pc.weights.as_deref().map(file_id), "names": names });
    let train_outputs: Vec<&Path> = if pc.train.recipe.final_fit { vec![&best, &final_ckpt] } else { vec![&best] };
    let train_out = if stamps.up_to_date("train", &inputs, &train_outputs) {
        None
    } else {
        if crate::stages::has_run(&run) && !job.overwrite {
            return Err(Error::RunExists { path: run.clone() });
        }
        progress.event(Event::Message(&format!("[train] {} ({:?}, {} epochs)", pc.train.recipe.arch, pc.train.recipe.mode, pc.train.recipe.epochs)));
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
        for f in ["last.safetensors", "best.safetensors", "final.safetensors", "metrics.jsonl", "final/last.safetensors", "final/best.safetensors"] {
            let _ = std::fs::remove_file(run.join(f));
        }
        let out = train::train(&job.request(), &ds, progress)?;
        stamps.mark_done("train", &inputs)?;
        ran.push("train".to_string());
        timed.push(("features".into(), out.feature_s));
        timed.push(("epochs".into(), out.wall_s - out.feature_s));
        if let Some(f) = &out.final_fit {
            timed.push(("final fit".into(), f.wall_s));
        }
        Some(out)
    };
    let delivered: Vec<&Path> = if pc.train.recipe.final_fit { vec![&best, &final_ckpt] } else { vec![&best] };
    let mut time = |name: &str, t0: std::time::Instant| timed.push((name.to_string(), t0.elapsed().as_secs_f64()));
    let t0 = std::time::Instant::now();
    let ctx = Delivery { stamps: &stamps, pc, splits: &splits, train_inputs: &inputs, delivered: &delivered };
    let calibration = calibrate_stage(&ctx, &mut ran, progress)?;
    time("calibrate", t0);
    let t0 = std::time::Instant::now();
    if tta_stage(&ctx, &mut ran, progress)? {
        time("tta", t0);
    }

    let t0 = std::time::Instant::now();
    let evaluations = evaluate_stage(&stamps, pc, &splits, (&data_fp, &best, &run), &mut ran, progress)?;
    let final_evaluations = if pc.train.recipe.final_fit {
        // The final fit trained on the selection part: only the held-out part (and test) score it.
        let held = Splits { ds: splits.ds.clone(), select: None, holdout: splits.holdout.clone() };
        evaluate_stage(&stamps, pc, &held, (&data_fp, &final_ckpt, &run.join("final")), &mut ran, progress)?
    } else {
        Vec::new()
    };
    time("evaluate", t0);
    let model = if pc.train.recipe.final_fit { final_ckpt.clone() } else { best.clone() };
    let t0 = std::time::Instant::now();
    predict_stage(&stamps, pc, &splits, &model, &mut ran, progress)?;
    time("predict", t0);
    let readme = run.join("README.md");
    let report = Report {
        run: &run,
        pc,
        ds: &ds,
        splits: &splits,
        out: train_out.as_ref(),
        evals: &evaluations,
        final_evals: &final_evaluations,
        calibration: calibration.as_ref(),
        stage_seconds: &timed,
    };
    write(&readme, &report.text()?)?;
    progress.event(Event::Message(&format!("report: {}", readme.display())));
    Ok(PipelineOutcome { run_dir: run, ran, evaluations, final_evaluations, model, stage_seconds: timed, readme })
}

/// What the stages after training share: the checkpoints they record into (the chosen one
/// first, then the final fit), and the training inputs their stamps are keyed by.
#[derive(Clone, Copy)]
struct Delivery<'a> {
    stamps: &'a Stamps<'a>,
    pc: &'a PipelineConfig,
    splits: &'a Splits,
    train_inputs: &'a serde_json::Value,
    delivered: &'a [&'a Path],
}

/// Fits the calibration temperature of the chosen checkpoint on the selection split and records
/// it in every delivered checkpoint (the final fit trained on the selection part, so it takes the
/// chosen run's temperature rather than fitting one on images it learnt).
fn calibrate_stage(ctx: &Delivery<'_>, ran: &mut Vec<String>, progress: &dyn Progress) -> Result<Option<infer::Calibration>, Error> {
    let Delivery { stamps, pc, splits, train_inputs, delivered } = *ctx;
    let Some(select) = &splits.select else { return Ok(None) };
    let inputs = serde_json::json!({ "train": train_inputs, "split": select });
    if stamps.up_to_date("calibrate", &inputs, delivered) {
        return Ok(checkpoint::load(delivered[0]).ok().and_then(|c| infer::Calibration::from_meta(&c.meta)));
    }
    progress.event(Event::Message(&format!("[calibrate] temperature on {select}")));
    let opts = infer::EvalOptions {
        device: pc.train.run.device.device()?,
        runtime: pc.train.run.runtime,
        graph_cache: petal_common::onnxruntime::graph_cache(),
        ..Default::default()
    };
    let paths: Vec<PathBuf> = delivered.iter().map(|p| p.to_path_buf()).collect();
    let cal = crate::stages::calibrate_delivered(&paths, &splits.ds, select, &opts, progress)?;
    progress.event(Event::Message(&format!(
        "temperature {:.3} on {} ({} images): cross-entropy {:.4} -> {:.4}, ECE {:.2}% -> {:.2}%",
        cal.temperature,
        cal.split,
        cal.images,
        cal.nll.0,
        cal.nll.1,
        100.0 * cal.ece.0,
        100.0 * cal.ece.1
    )));
    stamps.mark_done("calibrate", &inputs)?;
    ran.push("calibrate".to_string());
    Ok(Some(cal))
}

/// Measures test-time augmentation on the selection split and records the advice in the
/// delivered checkpoints (which changes the files, so the stamp is keyed by the training inputs,
/// not by the checkpoint); returns whether it ran.
fn tta_stage(ctx: &Delivery<'_>, ran: &mut Vec<String>, progress: &dyn Progress) -> Result<bool, Error> {
    let Delivery { stamps, pc, splits, train_inputs, delivered } = *ctx;
    let Some(select) = splits.select.as_deref().filter(|_| pc.measure_tta) else { return Ok(false) };
    let inputs = serde_json::json!({ "train": train_inputs, "split": select });
    if stamps.up_to_date("tta", &inputs, delivered) {
        return Ok(false);
    }
    progress.event(Event::Message(&format!("[tta] test-time augmentation on {select}")));
    crate::stages::advise_delivered(delivered, &splits.ds, select, (pc.train.run.device.device()?, pc.train.run.runtime), progress)?;
    stamps.mark_done("tta", &inputs)?;
    ran.push("tta".to_string());
    Ok(true)
}

/// Evaluates `ckpt` on the selection, held-out and test splits, writing into `out_dir`.
fn evaluate_stage(
    stamps: &Stamps<'_>,
    pc: &PipelineConfig,
    splits: &Splits,
    (data_fp, best, out_dir): (&serde_json::Value, &Path, &Path),
    ran: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<Vec<infer::EvalReport>, Error> {
    let mut evals = Vec::new();
    let ds = &splits.ds;
    let tag =
        if out_dir == stamps.run { String::new() } else { format!("{}-", out_dir.file_name().map(|f| f.to_string_lossy()).unwrap_or_default()) };
    for split in splits.evaluated() {
        let split = split.as_str();
        let json = out_dir.join(format!("evaluation-{split}.json"));
        let base = split.split('-').next().unwrap_or(split);
        let inputs = serde_json::json!({ "checkpoint": file_id(best), "data": data_fp[base], "holdout": [pc.train.recipe.holdout, pc.train.recipe.holdout_seed] });
        let stage = format!("evaluate-{tag}{split}");
        if stamps.up_to_date(&stage, &inputs, &[&json]) {
            // A report this version cannot read (an older petal's) is evaluated again.
            let earlier = std::fs::read_to_string(&json).ok().and_then(|t| serde_json::from_str::<infer::EvalReport>(&t).ok());
            if let Some(r) = earlier {
                evals.push(r);
                continue;
            }
        }
        progress.event(Event::Message(&format!("[evaluate] {split}")));
        let opts = infer::EvalOptions {
            device: pc.train.run.device.device()?,
            out_dir: Some(out_dir.to_path_buf()),
            runtime: pc.train.run.runtime,
            graph_cache: petal_common::onnxruntime::graph_cache(),
            ..Default::default()
        };
        let r = evaluate_checkpoint(best, ds, split, &opts, pc.category_names.as_deref(), progress)?;
        progress.event(Event::Message(&r.to_string()));
        for w in &r.warnings {
            progress.event(Event::Message(&format!("warning: {w}")));
        }
        evals.push(r);
        stamps.mark_done(&stage, &inputs)?;
        ran.push(stage);
    }
    Ok(evals)
}

fn predict_stage(
    stamps: &Stamps<'_>,
    pc: &PipelineConfig,
    splits: &Splits,
    best: &Path,
    ran: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let ds = &splits.ds;
    let sample_png = stamps.run.join("sample_predictions.png");
    let split = if ds.split("test").is_some_and(|s| !s.samples.is_empty()) { "test" } else { splits.holdout.as_deref().unwrap_or("valid") };
    let inputs = serde_json::json!({ "checkpoint": file_id(best), "split": split, "n": pc.samples, "k": pc.top_k });
    if stamps.up_to_date("predict", &inputs, &[&sample_png]) {
        return Ok(());
    }
    let Some(s) = ds.split(split).filter(|s| !s.samples.is_empty()) else { return Ok(()) };
    progress.event(Event::Message(&format!("[predict] {} sample images of {split}", pc.samples)));
    let mut pred = infer::Predictor::load(best, pc.train.run.device.device()?)?;
    pred.set_runtime(pc.train.run.runtime, petal_common::onnxruntime::graph_cache().as_deref())?;
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

/// What the run README shows.
struct Report<'a> {
    run: &'a Path,
    pc: &'a PipelineConfig,
    ds: &'a Dataset,
    splits: &'a Splits,
    out: Option<&'a train::TrainOutcome>,
    evals: &'a [infer::EvalReport],
    final_evals: &'a [infer::EvalReport],
    calibration: Option<&'a infer::Calibration>,
    stage_seconds: &'a [(String, f64)],
}

/// "top-1 x % (± se), top-5 y %" of an evaluation (the standard error of top-1 in points).
fn scores(e: &infer::EvalReport) -> String {
    format!("top-1 {:.2}% (± {:.2}), top-5 {:.2}%", 100.0 * e.top1, 100.0 * e.top1_standard_error(), 100.0 * e.top5)
}

impl Report<'_> {
    fn text(&self) -> Result<String, Error> {
        use std::fmt::Write;
        let (run, pc, ds) = (self.run, self.pc, self.ds);
        let mut s = String::new();
        let _ = writeln!(s, "# Run `{}`\n", pc.train.name);
        let _ = writeln!(s, "Dataset: `{}` ({} classes)\n", ds.root.display(), ds.classes.len());
        let _ = writeln!(s, "| split | images | used for |\n|---|---|---|");
        let select = self.splits.select.as_deref();
        for sp in &self.splits.ds.splits {
            let role = match sp.name.as_str() {
                "train" => "training",
                n if Some(n) == select && pc.train.recipe.final_fit => "choosing (epoch, calibration, TTA), then the final fit's training",
                n if Some(n) == select => "choosing the epoch, the calibration and TTA (a selection score)",
                n if Some(n) == self.splits.holdout.as_deref() => "reporting only (held out)",
                "test" => "reporting only",
                _ => "",
            };
            let _ = writeln!(s, "| {} | {} | {role} |", sp.name, sp.samples.len());
        }
        self.headline(&mut s);
        let _ = writeln!(s, "\n## Config (preset `{:?}`)\n\n```toml\n{}```\n", pc.preset, toml::to_string_pretty(&pc.train).map_err(json_err)?);
        let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
        let last: Option<train::EpochMetrics> = metrics.lines().last().and_then(|l| serde_json::from_str(l).ok());
        let on = select.unwrap_or("valid");
        if let Some(m) = last {
            let _ = writeln!(
                s,
                "## Training\n\n{} epochs; last epoch: train loss {:.4}, train acc {:.2}%, {on} acc {}.",
                m.epoch,
                m.train_loss,
                100.0 * m.train_acc,
                m.valid_acc.map(|v| format!("{:.2}%", 100.0 * v)).unwrap_or_else(|| "–".into())
            );
        }
        if let Some(o) = self.out {
            let _ =
                writeln!(s, "Wall time {:.1} s (backbone features {:.1} s), best epoch {} (chosen on {on}).", o.wall_s, o.feature_s, o.best_epoch);
        }
        let _ = writeln!(s, "\n![loss and accuracy](curves.png)\n\nPer-epoch figures: `metrics.csv`, `metrics.jsonl`.\n");
        let _ = writeln!(s, "## Final fit\n");
        match (pc.train.recipe.final_fit, self.out.and_then(|o| o.final_fit.as_ref())) {
            (true, Some(f)) => {
                let _ = writeln!(
                    s,
                    "Retrained on train plus {on} ({} images) for the chosen {} epochs in {:.1} s: `final.safetensors` (curves in `final/`).\n",
                    f.images, f.epochs, f.wall_s
                );
            }
            (true, None) => {
                let _ =
                    writeln!(s, "`final.safetensors`: retrained on train plus {on} for the chosen epoch count (an earlier run of this pipeline).\n");
            }
            (false, _) => {
                let _ = writeln!(s, "None (`final_fit = false`): `best.safetensors` is the model.\n");
            }
        }
        if let Some(c) = self.calibration {
            let _ = writeln!(
                s,
                "## Calibration\n\nTemperature {:.3}, fitted on {} ({} images): cross-entropy {:.4} -> {:.4}, expected calibration error {:.2}% -> {:.2}% there. Predictions, evaluation, serving and exports divide the logits by it; no argmax changes.\n",
                c.temperature, c.split, c.images, c.nll.0, c.nll.1, 100.0 * c.ece.0, 100.0 * c.ece.1
            );
        }
        for (title, evals, dir) in [
            ("Evaluation of the chosen checkpoint (`best.safetensors`)", self.evals, ""),
            ("Evaluation of the final fit", self.final_evals, "final/"),
        ] {
            if evals.is_empty() {
                continue;
            }
            let _ = writeln!(s, "## {title}\n");
            for e in evals {
                let split = e.split.as_str();
                let kind = if Some(split) == select {
                    " (selection score: choices were made on these images)"
                } else if Some(split) == self.splits.holdout.as_deref() {
                    " (held out)"
                } else {
                    ""
                };
                let _ = writeln!(s, "- **{split}**{kind}: {} images, {}", e.images, scores(e));
                let before = e.reliability_uncalibrated.as_ref().map(|r| format!(" ({:.2}% before calibration)", 100.0 * r.ece)).unwrap_or_default();
                let _ = writeln!(s, "  expected calibration error {:.2}%{before}", 100.0 * e.reliability.ece);
                if !e.worst.is_empty() {
                    let names: Vec<String> = e.worst.iter().map(|c| format!("{} ({:.0}%)", c.name, 100.0 * c.accuracy)).collect();
                    let _ = writeln!(s, "  worst classes: {}", names.join(", "));
                }
                for w in &e.warnings {
                    let _ = writeln!(s, "  **warning**: {w}");
                }
                let _ = writeln!(s, "\n  ![confusion matrix]({dir}confusion-{split}.png) ![reliability]({dir}reliability-{split}.png)\n");
            }
        }
        if !self.stage_seconds.is_empty() {
            let _ = writeln!(s, "## Wall time by stage (this invocation)\n\n| stage | seconds |\n|---|---|");
            for (name, secs) in self.stage_seconds {
                let _ = writeln!(s, "| {name} | {secs:.1} |");
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "## Sample predictions\n\n![sample predictions](sample_predictions.png)\n");
        let model = if pc.train.recipe.final_fit { "`final.safetensors` (the model), " } else { "" };
        let _ = writeln!(s, "Checkpoints: {model}`best.safetensors`, `last.safetensors` (inspect with `cargo xtask checkpoint inspect`).");
        Ok(s)
    }

    /// The figures a reader wants first: held-out and selection scores, and what the model is.
    fn headline(&self, s: &mut String) {
        use std::fmt::Write;
        let find = |evals: &'_ [infer::EvalReport], split: &str| evals.iter().find(|e| e.split == split).cloned();
        let _ = writeln!(s, "\n## Result\n");
        if let Some(h) = self.splits.holdout.as_deref() {
            if let Some(e) = find(self.final_evals, h) {
                let _ = writeln!(s, "- **held-out** ({h}), final fit: {}", scores(&e));
            }
            if let Some(e) = find(self.evals, h) {
                let _ = writeln!(s, "- **held-out** ({h}), chosen checkpoint: {}", scores(&e));
            }
        }
        if let Some(sel) = self.splits.select.as_deref() {
            if let Some(e) = find(self.evals, sel) {
                let what = if self.splits.holdout.is_some() {
                    "selection score"
                } else {
                    "selection score (no holdout: the epoch was chosen on these images)"
                };
                let _ = writeln!(s, "- {what} ({sel}): {}", scores(&e));
            }
        }
        if let Some(e) = find(self.evals, "test") {
            let _ = writeln!(s, "- test: {}", scores(&e));
        }
        let status = if self.pc.train.recipe.final_fit { "final fit on train + selection part (`final.safetensors`)" } else { "no final fit" };
        let _ = writeln!(s, "- {status}");
        let _ = writeln!(
            s,
            "\n± is one standard error of top-1, in points: recipes or checkpoints whose scores differ by less than about two of them cannot be told apart on these images."
        );
    }
}
