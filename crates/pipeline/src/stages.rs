//! The stages one at a time, as the `petal` subcommands run them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use petal_common::{Event, Progress, RunLock};
use preprocess::{CacheStatus, Dataset, TransformConfig};
use train::{TrainConfig, TrainOutcome, TrainRequest};

use crate::Error;

/// Discovers the dataset at `data` (see [`preprocess::discover`]); display names come from
/// `names_file`, else `cat_to_name.json` in `data`, else in its parent.
pub fn discover(data: &Path, skip_bad: bool, names_file: Option<&Path>) -> Result<Dataset, Error> {
    let opts = preprocess::DiscoverOptions { skip_bad, names_file: names_file.map(Path::to_path_buf), ..Default::default() };
    Ok(preprocess::discover(data, &opts)?)
}

/// What [`cache_splits`] did for one split.
#[derive(Debug, Clone)]
pub struct SplitCache {
    /// The split.
    pub split: String,
    /// Images in it.
    pub images: usize,
    /// Reused or built (and why).
    pub status: CacheStatus,
    /// Seconds spent.
    pub seconds: f64,
}

/// Builds (or reuses) the decoded-image cache of every non-empty split of `ds` in `cache_dir`.
pub fn cache_splits(
    ds: &Dataset,
    cache_dir: &Path,
    tcfg: &TransformConfig,
    skip_bad: bool,
    progress: &dyn Progress,
) -> Result<Vec<SplitCache>, Error> {
    let mut out = Vec::new();
    for split in ds.splits.iter().filter(|s| !s.samples.is_empty()) {
        let t0 = Instant::now();
        progress.event(Event::Message(&format!("{}: caching {} images", split.name, split.samples.len())));
        let samples: Arc<[preprocess::Sample]> = Arc::from(split.samples.clone().into_boxed_slice());
        let (_, status) = preprocess::split_cache(cache_dir, &split.name, &samples, tcfg, skip_bad)?;
        out.push(SplitCache { split: split.name.clone(), images: split.samples.len(), status, seconds: t0.elapsed().as_secs_f64() });
    }
    Ok(out)
}

/// What to do when a run folder already holds a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Fail with [`Error::RunExists`].
    #[default]
    Refuse,
    /// Delete the old run's files and start afresh.
    Overwrite,
    /// Continue the run from its last checkpoint.
    Resume,
}

/// True when `dir` holds (part of) a training run.
pub fn has_run(dir: &Path) -> bool {
    ["last.safetensors", "best.safetensors", "metrics.jsonl"].iter().any(|f| dir.join(f).exists())
}

/// Claims the run folder `dir` for this process: locks it (a second process fails at once, naming
/// the holder's pid; the lock goes when the returned guard is dropped or the process dies), then
/// applies `existing` to a run already there.
pub fn claim_run(dir: &Path, existing: Existing) -> Result<RunLock, Error> {
    let lock = RunLock::acquire(dir)?;
    if has_run(dir) {
        match existing {
            Existing::Refuse => return Err(Error::RunExists { path: dir.to_path_buf() }),
            Existing::Overwrite => clear_run(dir)?,
            Existing::Resume => {}
        }
    }
    Ok(lock)
}

/// Removes everything in a run folder but its lock file.
fn clear_run(dir: &Path) -> Result<(), Error> {
    let io = |p: &Path, e| petal_common::IoError::new(p, "clearing the old run", e);
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if path.file_name().is_some_and(|n| n == RunLock::FILE) {
            continue;
        }
        let r = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        r.map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// A training run as `petal train` starts it.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// Dataset root.
    pub data: PathBuf,
    /// The resolved training config.
    pub config: TrainConfig,
    /// Pretrained backbone weights; `None` starts from random weights.
    pub weights: Option<PathBuf>,
    /// A trained classifier to start from (see [`TrainRequest::init_from`]).
    pub init_from: Option<PathBuf>,
    /// Parent of the run folder.
    pub runs_dir: PathBuf,
    /// Image and feature caches.
    pub cache_dir: PathBuf,
    /// Leave out undecodable images instead of stopping.
    pub skip_bad: bool,
    /// Display-name file (default: `cat_to_name.json` beside the data); stored in the checkpoint.
    pub category_names: Option<PathBuf>,
    /// What to do with a run already in the folder.
    pub existing: Existing,
}

/// Fits the calibration temperature of `delivered[0]` (the chosen checkpoint) on `split` and
/// records it in every delivered checkpoint: a final fit trained on that split, so it takes the
/// chosen run's temperature rather than one fitted on images it learnt.
pub fn calibrate_delivered(
    delivered: &[PathBuf],
    ds: &preprocess::Dataset,
    split: &str,
    opts: &infer::EvalOptions,
    progress: &dyn Progress,
) -> Result<infer::Calibration, Error> {
    let (chosen, others) = delivered.split_first().ok_or_else(|| Error::Inputs("no checkpoint to calibrate".into()))?;
    let cal = infer::calibrate(chosen, ds, split, opts, progress)?;
    for other in others {
        infer::record_calibration(other, &cal)?;
    }
    Ok(cal)
}

/// Measures test-time augmentation of `delivered[0]` (the chosen checkpoint) on `split` and
/// records the advice in every delivered checkpoint: a final fit predicts as its chosen run was
/// measured to predict best. `runtime` runs the backbone.
pub fn advise_delivered(
    delivered: &[impl AsRef<Path>],
    ds: &preprocess::Dataset,
    split: &str,
    (device, runtime): (tch::Device, infer::Runtime),
    progress: &dyn Progress,
) -> Result<infer::InferenceAdvice, Error> {
    let (chosen, others) = delivered.split_first().ok_or_else(|| Error::Inputs("no checkpoint to measure".into()))?;
    let advice = crate::recommend_tta(chosen.as_ref(), ds, split, (device, runtime), progress)?;
    for other in others {
        infer::record_advice(other.as_ref(), &advice)?;
        progress.event(Event::Message(&format!("recorded in {}: predict uses tta {} by default", other.as_ref().display(), advice.tta)));
    }
    Ok(advice)
}

/// What [`TrainJob::run_and_report`] did.
#[derive(Debug)]
pub struct TrainReport {
    /// The training run (and its final fit).
    pub outcome: TrainOutcome,
    /// The temperature fitted on the selection part, with a holdout.
    pub calibration: Option<infer::Calibration>,
    /// With a holdout: the chosen checkpoint on the held-out part, then the final fit's.
    pub held_out: Vec<infer::EvalReport>,
    /// With `measure_tta`: the test-time augmentation advice recorded in the delivered checkpoints.
    pub advice: Option<infer::InferenceAdvice>,
}

impl TrainJob {
    /// The run folder, `<runs_dir>/<name>`.
    pub fn run_dir(&self) -> PathBuf {
        self.runs_dir.join(&self.config.name)
    }

    /// The request handed to [`train::train`].
    pub fn request(&self) -> TrainRequest {
        TrainRequest {
            config: self.config.clone(),
            weights: self.weights.clone(),
            init_from: self.init_from.clone(),
            runs_dir: self.runs_dir.clone(),
            cache_dir: self.cache_dir.clone(),
            resume: self.existing == Existing::Resume,
            train_split: "train".into(),
            valid_split: "valid".into(),
            skip_bad: self.skip_bad,
        }
    }

    /// Claims the run folder, discovers the dataset (its summary goes to `progress`), and trains.
    pub fn run(&self, progress: &dyn Progress) -> Result<TrainOutcome, Error> {
        Ok(self.run_on_data(progress)?.0)
    }

    /// [`Self::run`], also returning the dataset it discovered.
    fn run_on_data(&self, progress: &dyn Progress) -> Result<(TrainOutcome, preprocess::Dataset), Error> {
        let _lock = claim_run(&self.run_dir(), self.existing)?;
        let ds = discover(&self.data, self.skip_bad, self.category_names.as_deref())?;
        progress.event(Event::Message(&ds.summary().to_string()));
        let outcome = train::train(&self.request(), &ds, progress)?;
        Ok((outcome, ds))
    }

    /// [`Self::run`], then with a holdout: the calibration temperature fitted on the selection
    /// part and recorded in the delivered checkpoints (`best`, and `final` after a final fit),
    /// and each of them scored on the held-out part. With `measure_tta`, test-time augmentation
    /// is then measured on the split the epoch was chosen on and its advice recorded in every
    /// delivered checkpoint (as the pipeline's `tta` stage does).
    pub fn run_and_report(&self, measure_tta: bool, progress: &dyn Progress) -> Result<TrainReport, Error> {
        let (outcome, ds) = self.run_on_data(progress)?;
        let device = self.config.run.device.device()?;
        let mut delivered = vec![outcome.best_checkpoint.clone()];
        delivered.extend(outcome.final_fit.as_ref().map(|f| f.checkpoint.clone()));
        let (calibration, held_out, ds) = match self.config.recipe.holdout_cut() {
            None => (None, Vec::new(), ds),
            Some(cut) => {
                let ds = cut.apply(&ds, "valid")?;
                let opts = infer::EvalOptions {
                    device,
                    runtime: self.config.run.runtime,
                    graph_cache: petal_common::onnxruntime::graph_cache(),
                    ..Default::default()
                };
                let select = preprocess::Holdout::select_name("valid");
                let calibration = calibrate_delivered(&delivered, &ds, &select, &opts, progress)?;
                let held = preprocess::Holdout::holdout_name("valid");
                let held_out = delivered
                    .iter()
                    .map(|c| {
                        let opts = infer::EvalOptions { out_dir: c.parent().map(Path::to_path_buf), ..opts.clone() };
                        evaluate_checkpoint(c, &ds, &held, &opts, self.category_names.as_deref(), progress)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (Some(calibration), held_out, ds)
            }
        };
        let split = outcome.selected_on.as_deref().unwrap_or("valid");
        let advice = measure_tta.then(|| advise_delivered(&delivered, &ds, split, (device, self.config.run.runtime), progress)).transpose()?;
        Ok(TrainReport { outcome, calibration, held_out, advice })
    }

    /// Discovers the dataset and computes only the caches [`Self::run`] would compute (see
    /// [`train::extract`]); with `shard` (and the command that reruns the job without it), only
    /// that shard's part of each. The run folder is not claimed, so shards run side by side.
    pub fn extract(&self, shard: Option<(petal_common::shard::Shard, Vec<String>)>, progress: &dyn Progress) -> Result<train::ExtractOutcome, Error> {
        let ds = discover(&self.data, self.skip_bad, self.category_names.as_deref())?;
        progress.event(Event::Message(&ds.summary().to_string()));
        let job = shard.map(|(shard, command)| train::shards::ShardJob { shard, root: ds.root.clone(), command });
        Ok(train::extract(&self.request(), &ds, job.as_ref(), progress)?)
    }
}

/// Evaluates `checkpoint` on `split` of `ds` (see [`infer::evaluate()`]). Class names: those of
/// `names_file` when given, else the checkpoint's, else the dataset's.
pub fn evaluate_checkpoint(
    checkpoint: &Path,
    ds: &Dataset,
    split: &str,
    opts: &infer::EvalOptions,
    names_file: Option<&Path>,
    progress: &dyn Progress,
) -> Result<infer::EvalReport, Error> {
    let mut opts = opts.clone();
    opts.names = match names_file {
        Some(p) => Some(preprocess::read_names_file(p)?),
        None => dataset_names(ds).filter(|m| !m.is_empty()),
    };
    opts.names_override = names_file.is_some();
    Ok(infer::evaluate(checkpoint, ds, split, &opts, progress)?)
}

/// The dataset's display names by folder, if it has any.
fn dataset_names(ds: &Dataset) -> Option<BTreeMap<String, String>> {
    let names = ds.names.as_ref()?;
    Some(ds.classes.iter().cloned().zip(names.iter().cloned()).collect())
}

/// Expands folders into the image files below them (sorted; [`preprocess::IMAGE_EXTENSIONS`]);
/// files are taken as given.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let found = petal_storage::Location::Local(p.clone()).list()?;
            out.extend(
                found
                    .into_iter()
                    .filter_map(|(rel, l)| preprocess::is_image_path(Path::new(&rel)).then(|| l.local().map(Path::to_path_buf)).flatten()),
            );
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(Error::Inputs(format!("{} does not exist", p.display())));
        }
    }
    if out.is_empty() {
        return Err(Error::Inputs(format!("no images found in {inputs:?}")));
    }
    Ok(out)
}

/// Writes predictions as CSV: `path`, then name, folder and probability of each of the top `k`.
pub fn write_predictions_csv(path: &Path, preds: &[infer::Prediction], k: usize) -> Result<(), Error> {
    let (header, rows) = prediction_table(preds, k);
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    Ok(report::write_csv(path, &header, &rows)?)
}

/// The CSV columns (`path`, then name, folder and probability of each of the top `k`) and rows
/// of `preds`.
pub fn prediction_table(preds: &[infer::Prediction], k: usize) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header = vec!["path".to_string()];
    for i in 1..=k {
        header.extend([format!("top{i}_name"), format!("top{i}_folder"), format!("top{i}_prob")]);
    }
    let rows: Vec<Vec<String>> = preds
        .iter()
        .map(|p| {
            let mut r = vec![p.path.display().to_string()];
            for c in p.top.iter().take(k) {
                r.extend([c.name.clone(), c.folder.clone(), format!("{:.6}", c.prob)]);
            }
            r.resize(header.len(), String::new());
            r
        })
        .collect();
    (header, rows)
}
