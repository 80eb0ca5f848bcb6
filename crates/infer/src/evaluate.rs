//! Evaluation of a checkpoint on a dataset split: top-1/top-5 accuracy, per-class accuracy,
//! confusion matrix (CSV and PNG heatmap) and the worst classes by name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::BTreeMap;

use checkpoint::ClassEntry;
use petal_common::{Event, Progress};
use preprocess::{Dataset, ImageSource, LoaderConfig, Mode, Sample};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::calibrate::{confidences, reliability, Reliability, ECE_BINS};
use crate::{Error, Predictor, Tta};

/// Options of [`evaluate`].
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Images per forward pass.
    pub batch_size: usize,
    /// Where the network runs.
    pub device: Device,
    /// Folder for `evaluation-<split>.json`, `confusion-<split>.csv|png`, `per_class-<split>.csv`.
    pub out_dir: Option<PathBuf>,
    /// How many of the worst classes to name.
    pub worst: usize,
    /// Display names by folder name, for classes the checkpoint names differently or not at all.
    pub names: Option<BTreeMap<String, String>>,
    /// `names` replace the checkpoint's names (else they only fill in missing ones).
    pub names_override: bool,
    /// Test-time augmentation; `None` takes the checkpoint's recommendation (none if it records none).
    pub tta: Option<Tta>,
    /// What runs the backbone (see [`Predictor::set_runtime`]).
    pub runtime: crate::Runtime,
    /// The backbone's precision on onnxruntime (see [`Predictor::set_backend`]).
    pub precision: crate::Precision,
    /// Where the onnxruntime graph is cached (`None`: built in memory each time).
    pub graph_cache: Option<PathBuf>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            batch_size: 32,
            device: Device::Cpu,
            out_dir: None,
            worst: 5,
            names: None,
            names_override: false,
            tta: None,
            runtime: crate::Runtime::Auto,
            precision: crate::Precision::Auto,
            graph_cache: None,
        }
    }
}

/// Accuracy of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassAccuracy {
    /// Output index.
    pub index: usize,
    /// Folder name.
    pub folder: String,
    /// Display name (folder name when none).
    pub name: String,
    /// Correct top-1 predictions.
    pub correct: u64,
    /// Images of this class in the split.
    pub total: u64,
    /// `correct / total` (NaN-free: 0 when total is 0).
    pub accuracy: f64,
}

/// The result of an evaluation (what `evaluation-<split>.json` holds, and reads back; the confusion
/// matrix is drawn, not stored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    /// The checkpoint evaluated.
    pub checkpoint: PathBuf,
    /// The split.
    pub split: String,
    /// Images evaluated.
    pub images: usize,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy.
    pub top5: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Per class, in output order.
    pub per_class: Vec<ClassAccuracy>,
    /// The worst classes (lowest accuracy first, among classes present in the split).
    pub worst: Vec<ClassAccuracy>,
    /// `confusion[true][predicted]` counts.
    #[serde(skip)]
    pub confusion: Vec<Vec<u64>>,
    /// Seconds spent.
    pub seconds: f64,
    /// The test-time augmentation used.
    pub tta: Tta,
    /// Forward passes per image (the views of `tta`).
    pub forward_passes_per_image: usize,
    /// The temperature the logits were divided by (1: uncalibrated).
    pub temperature: f64,
    /// Reliability of the probabilities as served (with the temperature).
    pub reliability: Reliability,
    /// Reliability of the head's own probabilities (temperature 1), when a temperature applies
    /// and there is no test-time augmentation.
    pub reliability_uncalibrated: Option<Reliability>,
    /// Images of the split the checkpoint was trained on (see [`checkpoint::TrainedOn`]).
    pub trained_on_images: usize,
    /// What the reader must know before trusting the figures (e.g. trained-on images).
    pub warnings: Vec<String>,
}

/// `ds`, or when it lacks `split` and `split` is the selection or held-out part of a split the
/// checkpoint's holdout cut (its [`checkpoint::TrainedOn`] record), `ds` with that cut applied.
pub fn resolve_split<'a>(ds: &'a Dataset, split: &str, meta: &checkpoint::Metadata) -> Result<std::borrow::Cow<'a, Dataset>, Error> {
    if ds.split(split).is_some() {
        return Ok(std::borrow::Cow::Borrowed(ds));
    }
    if let Some(cut) = checkpoint::TrainedOn::of(meta).and_then(|t| t.holdout) {
        let names = [preprocess::Holdout::select_name(&cut.split), preprocess::Holdout::holdout_name(&cut.split)];
        if names.iter().any(|n| n == split) {
            let h = preprocess::Holdout { fraction: cut.fraction, seed: cut.seed };
            return Ok(std::borrow::Cow::Owned(h.apply(ds, &cut.split)?));
        }
    }
    Ok(std::borrow::Cow::Borrowed(ds))
}

/// How many of `samples` (of split `split`) the checkpoint trained on, and the warning to show.
fn trained_on(meta: &checkpoint::Metadata, ds: &Dataset, split: &str, samples: &[Sample], ckpt: &Path) -> (usize, Option<String>) {
    let Some(t) = checkpoint::TrainedOn::of(meta) else { return (0, None) };
    let n = samples.iter().filter(|s| t.contains(split, &ds.relative(&s.path))).count();
    let warning = (n > 0).then(|| {
        format!(
            "{n} of the {} images of {split} were used to train {}{}: its score on them is not a held-out figure",
            samples.len(),
            ckpt.display(),
            if t.final_fit { " (a final fit on the training split and the selection part)" } else { "" }
        )
    });
    (n, warning)
}

/// Class index remapping from a dataset's labels to a checkpoint's outputs (by folder name).
pub fn label_map(ds: &Dataset, classes: &[ClassEntry], path: &Path) -> Result<Vec<i64>, Error> {
    let by_folder: BTreeMap<&str, usize> = classes.iter().map(|c| (c.folder.as_str(), c.index)).collect();
    ds.classes
        .iter()
        .map(|f| {
            by_folder.get(f.as_str()).map(|&i| i as i64).ok_or_else(|| Error::Unusable {
                path: path.to_path_buf(),
                detail: format!("the dataset has class {f:?}, which this checkpoint was not trained on"),
            })
        })
        .collect()
}

/// Evaluates the checkpoint at `ckpt` on split `split` of `ds`, reporting progress to `progress`.
pub fn evaluate(ckpt: &Path, ds: &Dataset, split: &str, opts: &EvalOptions, progress: &dyn Progress) -> Result<EvalReport, Error> {
    let t0 = std::time::Instant::now();
    let mut pred = Predictor::load(ckpt, opts.device)?;
    pred.set_backend(opts.runtime, opts.precision, opts.graph_cache.as_deref())?;
    if let Some(names) = &opts.names {
        pred.set_names(names, opts.names_override);
    }
    let ds = resolve_split(ds, split, &pred.meta)?;
    let ds = ds.as_ref();
    let samples: Arc<[Sample]> = ds
        .split(split)
        .filter(|s| !s.samples.is_empty())
        .map(|s| Arc::from(s.samples.clone().into_boxed_slice()))
        .ok_or_else(|| Error::Data(format!("{} has no (non-empty) split {split:?}", ds.root.display())))?;
    if let Some(t) = opts.tta {
        pred.tta = t;
    }
    let (trained_on_images, warning) = trained_on(&pred.meta, ds, split, &samples, ckpt);
    let map = label_map(ds, &pred.classes, ckpt)?;
    let c = pred.num_classes();
    let mut tally =
        Tally { confusion: vec![vec![0u64; c]; c], top1: 0, top5: 0, loss_sum: 0.0, n: 0, conf: Default::default(), raw_conf: Default::default() };
    progress.event(Event::Start { task: &format!("evaluate {split}"), total: samples.len() as u64 });
    if pred.tta == Tta::None {
        let lcfg = LoaderConfig { batch_size: opts.batch_size, mode: Mode::Eval, channels_last: true, ..LoaderConfig::default() };
        for b in preprocess::loader(samples.clone(), ImageSource::Files, &pred.transform, &lcfg)? {
            let b = b?;
            let x = model::input_tensor(&b.images, b.shape, b.channels_last, opts.device);
            let y: Vec<i64> = b.labels.iter().map(|&l| map[l as usize]).collect();
            let raw = pred.raw_logits(&x)?.to_device(Device::Cpu);
            if pred.temperature() != 1.0 {
                let (c, ok) = confidences(&raw, &y)?;
                tally.raw_conf.0.extend(c);
                tally.raw_conf.1.extend(ok);
            }
            let logits = pred.apply_temperature(raw);
            let loss = logits.cross_entropy_for_logits(&Tensor::from_slice(&y)).double_value(&[]);
            let (c, ok) = confidences(&logits, &y)?;
            tally.conf.0.extend(c);
            tally.conf.1.extend(ok);
            tally.add(&logits, &y, loss)?;
            progress.event(Event::Advance { done: tally.n as u64, note: None });
        }
    } else {
        for batch in samples.chunks(opts.batch_size.max(1)) {
            let paths: Vec<PathBuf> = batch.iter().map(|s| s.path.clone()).collect();
            let probs = pred.probabilities_of_views(&pred.input_of_paths(&paths)?, pred.tta.views())?;
            let y: Vec<i64> = batch.iter().map(|s| map[s.label]).collect();
            // Cross-entropy of the averaged distribution.
            let log_probs = probs.clamp_min(1e-30).log();
            let loss = log_probs.nll_loss(&Tensor::from_slice(&y)).double_value(&[]);
            // The softmax of log-probabilities is the (averaged) distribution itself.
            let (c, ok) = confidences(&log_probs, &y)?;
            tally.conf.0.extend(c);
            tally.conf.1.extend(ok);
            tally.add(&probs, &y, loss)?;
            progress.event(Event::Advance { done: tally.n as u64, note: None });
        }
    }
    progress.event(Event::Finish { summary: None });
    let Tally { confusion, top1, top5, loss_sum, n, conf, raw_conf } = tally;
    let per_class: Vec<ClassAccuracy> = pred
        .classes
        .iter()
        .map(|e| {
            let total: u64 = confusion[e.index].iter().sum();
            let correct = confusion[e.index][e.index];
            ClassAccuracy {
                index: e.index,
                folder: e.folder.clone(),
                name: e.name.clone().unwrap_or_else(|| e.folder.clone()),
                correct,
                total,
                accuracy: if total == 0 { 0.0 } else { correct as f64 / total as f64 },
            }
        })
        .collect();
    let mut worst: Vec<ClassAccuracy> = per_class.iter().filter(|c| c.total > 0).cloned().collect();
    worst.sort_by(|a, b| a.accuracy.total_cmp(&b.accuracy).then(b.total.cmp(&a.total)));
    worst.truncate(opts.worst);
    let report = EvalReport {
        checkpoint: ckpt.to_path_buf(),
        split: split.to_string(),
        images: n,
        top1: top1 as f64 / n.max(1) as f64,
        top5: top5 as f64 / n.max(1) as f64,
        loss: loss_sum / n.max(1) as f64,
        per_class,
        worst,
        confusion,
        seconds: t0.elapsed().as_secs_f64(),
        tta: pred.tta,
        forward_passes_per_image: pred.tta.views(),
        temperature: pred.temperature(),
        reliability: reliability(&conf.0, &conf.1, ECE_BINS),
        reliability_uncalibrated: (!raw_conf.0.is_empty()).then(|| reliability(&raw_conf.0, &raw_conf.1, ECE_BINS)),
        trained_on_images,
        warnings: warning.into_iter().collect(),
    };
    if let Some(dir) = &opts.out_dir {
        write_report(&report, dir)?;
    }
    Ok(report)
}

/// Running counts of an evaluation.
struct Tally {
    confusion: Vec<Vec<u64>>,
    top1: u64,
    top5: u64,
    loss_sum: f64,
    n: usize,
    /// Top-class probability and correctness of each image, as served.
    conf: (Vec<f64>, Vec<bool>),
    /// The same at temperature 1, when a temperature applies.
    raw_conf: (Vec<f64>, Vec<bool>),
}

impl Tally {
    /// Adds a batch: `scores` `[n, C]` (logits or probabilities), true outputs `y`, mean `loss`.
    fn add(&mut self, scores: &Tensor, y: &[i64], loss: f64) -> Result<(), Error> {
        let k = 5.min(self.confusion.len() as i64);
        let (_, idx) = scores.topk(k, 1, true, true);
        let idx: Vec<i64> = Vec::<i64>::try_from(idx.to_kind(Kind::Int64).flatten(0, -1)).map_err(|e| Error::Torch(e.to_string()))?;
        for (i, &t) in y.iter().enumerate() {
            let row = &idx[i * k as usize..(i + 1) * k as usize];
            self.confusion[t as usize][row[0] as usize] += 1;
            self.top1 += u64::from(row[0] == t);
            self.top5 += u64::from(row.contains(&t));
        }
        self.loss_sum += loss * y.len() as f64;
        self.n += y.len();
        Ok(())
    }
}

/// Writes the evaluation files into `dir`.
pub fn write_report(r: &EvalReport, dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io(petal_common::IoError::new(dir, "creating folder", e)))?;
    let json = serde_json::to_string_pretty(r).map_err(|e| Error::Data(format!("serialising the evaluation: {e}")))?;
    report::write_atomic(&dir.join(format!("evaluation-{}.json", r.split)), json.as_bytes())?;
    let labels: Vec<String> = r.per_class.iter().map(|c| c.folder.clone()).collect();
    let mut header: Vec<&str> = vec!["true\\predicted"];
    header.extend(labels.iter().map(String::as_str));
    let rows: Vec<Vec<String>> =
        r.confusion.iter().enumerate().map(|(i, row)| std::iter::once(labels[i].clone()).chain(row.iter().map(u64::to_string)).collect()).collect();
    report::write_csv(&dir.join(format!("confusion-{}.csv", r.split)), &header, &rows)?;
    let rows: Vec<Vec<String>> = r
        .per_class
        .iter()
        .map(|c| {
            vec![c.index.to_string(), c.folder.clone(), c.name.clone(), c.correct.to_string(), c.total.to_string(), format!("{:.4}", c.accuracy)]
        })
        .collect();
    report::write_csv(&dir.join(format!("per_class-{}.csv", r.split)), &["index", "folder", "name", "correct", "total", "accuracy"], &rows)?;
    report::plot_confusion(
        &r.confusion,
        &labels,
        &format!("confusion matrix ({}, top-1 {:.1}%)", r.split, 100.0 * r.top1),
        &dir.join(format!("confusion-{}.png", r.split)),
    )?;
    let curve = |label: String, rel: &Reliability| report::ReliabilityCurve {
        label,
        points: rel.bins.iter().map(|b| (b.confidence, b.accuracy, b.count)).collect(),
    };
    let mut curves = Vec::new();
    if let Some(raw) = &r.reliability_uncalibrated {
        curves.push(curve(format!("head's own (ECE {:.1}%)", 100.0 * raw.ece), raw));
    }
    let label = if r.temperature == 1.0 { "uncalibrated".to_string() } else { format!("temperature {:.3}", r.temperature) };
    curves.push(curve(format!("{label} (ECE {:.1}%)", 100.0 * r.reliability.ece), &r.reliability));
    report::plot_reliability(&curves, &format!("reliability ({}, {} images)", r.split, r.images), &dir.join(format!("reliability-{}.png", r.split)))?;
    Ok(())
}

impl EvalReport {
    /// One standard error of the top-1 accuracy, as a fraction ([`standard_error`]).
    pub fn top1_standard_error(&self) -> f64 {
        standard_error(self.top1, self.images)
    }
}

/// One standard error of an accuracy `fraction` measured on `n` images, as a fraction: how far
/// another sample of as many images from the same distribution would typically land.
/// Agresti–Coull's (two right and two wrong answers added), so that a perfect score on a few
/// images does not claim zero error.
pub fn standard_error(fraction: f64, n: usize) -> f64 {
    let m = n as f64 + 4.0;
    let p = (fraction * n as f64 + 2.0) / m;
    (p * (1.0 - p) / m).sqrt()
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} on {} ({} images, tta {}: {} forward pass(es) per image, {:.1} ms per image): top-1 {:.2}% (± {:.2})  top-5 {:.2}%  loss {:.4}",
            self.checkpoint.display(),
            self.split,
            self.images,
            self.tta,
            self.forward_passes_per_image,
            1e3 * self.seconds / self.images.max(1) as f64,
            100.0 * self.top1,
            100.0 * self.top1_standard_error(),
            100.0 * self.top5,
            self.loss
        )?;
        match &self.reliability_uncalibrated {
            Some(raw) => writeln!(
                f,
                "expected calibration error {:.2}% at temperature {:.3} ({:.2}% before)",
                100.0 * self.reliability.ece,
                self.temperature,
                100.0 * raw.ece
            )?,
            None => writeln!(f, "expected calibration error {:.2}% (temperature {:.3})", 100.0 * self.reliability.ece, self.temperature)?,
        }
        write!(f, "worst classes:")?;
        for c in &self.worst {
            write!(f, "\n  {:>5.1}%  {} ({}/{}) [{}]", 100.0 * c.accuracy, c.name, c.correct, c.total, c.folder)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::standard_error;

    #[test]
    fn the_standard_error_of_an_accuracy_is_agresti_coulls() {
        // valid-select of the full set: 381 of 386 right.
        let se = standard_error(381.0 / 386.0, 386);
        let p: f64 = 383.0 / 390.0;
        assert!((se - (p * (1.0 - p) / 390.0).sqrt()).abs() < 1e-12);
        assert!((0.006..0.007).contains(&se), "{se}");
        // A perfect score on 10 images still has an error; more images shrink it.
        let few = standard_error(1.0, 10);
        assert!((few - (12.0f64 / 14.0 * 2.0 / 14.0 / 14.0).sqrt()).abs() < 1e-12);
        assert!(standard_error(1.0, 1000) < few / 5.0);
        // Half right is the widest.
        assert!(standard_error(0.5, 100) > standard_error(0.9, 100));
    }
}
