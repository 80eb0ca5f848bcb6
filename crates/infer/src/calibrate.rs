//! Calibration: probabilities people can read.
//!
//! A head trained with label smoothing on frozen features is under-confident: right answers come
//! out at 6 % or 20 %. Temperature scaling (Guo et al., 2017) divides the logits by one number `T`
//! fitted to minimise the cross-entropy on a labelled split the head did not train on (the
//! selection part of a holdout). Dividing by a positive number never changes which class is
//! largest, so accuracy is unchanged. The fitted temperature is stored in the checkpoint's
//! `inference.calibration`, and every consumer ([`crate::Predictor`], and through it `evaluate`,
//! `predict` and `serve`; the exporters) applies it.
//!
//! [`reliability`] measures the expected calibration error (ECE): the confidence of the top class
//! against its accuracy, over equal-width confidence bins, weighted by the bins' sizes.

use std::path::Path;
use std::sync::Arc;

use checkpoint::Metadata;
use petal_common::{Event, Progress};
use preprocess::{Dataset, ImageSource, LoaderConfig, Mode, Sample};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::{Error, Predictor};

/// Confidence bins of [`reliability`] (the usual 15).
pub const ECE_BINS: usize = 15;

/// A fitted temperature, as `inference.calibration` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Logits are divided by this before the softmax.
    pub temperature: f64,
    /// The split it was fitted on.
    pub split: String,
    /// Images it was fitted on.
    pub images: usize,
    /// Mean cross-entropy on them before and after.
    pub nll: (f64, f64),
    /// Expected calibration error on them before and after.
    pub ece: (f64, f64),
}

impl Calibration {
    /// The key under `inference`.
    pub const KEY: &'static str = "calibration";

    /// The calibration recorded in `meta`, if any (an unreadable record counts as none).
    pub fn from_meta(meta: &Metadata) -> Option<Calibration> {
        meta.inference.as_ref().and_then(|v| v.get(Self::KEY)).and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// One confidence bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    /// Lower edge of the bin (its upper edge is `lo + 1 / bins`).
    pub lo: f64,
    /// Images whose top-class probability falls in the bin.
    pub count: usize,
    /// Their mean top-class probability.
    pub confidence: f64,
    /// The fraction of them whose top class is right.
    pub accuracy: f64,
}

/// A reliability diagram and its expected calibration error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reliability {
    /// Non-empty bins, by confidence.
    pub bins: Vec<Bin>,
    /// Σ over bins of `count / n · |accuracy − confidence|`.
    pub ece: f64,
}

/// The reliability of top-class `confidence`s, each with whether its class was `correct`, over
/// `bins` equal-width bins of [0, 1] (a confidence of exactly 1 falls in the last).
pub fn reliability(confidence: &[f64], correct: &[bool], bins: usize) -> Reliability {
    let bins = bins.max(1);
    let mut acc = vec![(0usize, 0.0f64, 0usize); bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c * bins as f64) as usize).min(bins - 1);
        acc[b].0 += 1;
        acc[b].1 += c;
        acc[b].2 += usize::from(ok);
    }
    let n = confidence.len().max(1) as f64;
    let mut ece = 0.0;
    let mut out = Vec::new();
    for (b, &(count, sum, right)) in acc.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let (confidence, accuracy) = (sum / count as f64, right as f64 / count as f64);
        ece += count as f64 / n * (accuracy - confidence).abs();
        out.push(Bin { lo: b as f64 / bins as f64, count, confidence, accuracy });
    }
    Reliability { bins: out, ece }
}

/// Top-class probability and correctness of each row of `logits` `[N, C]` against `y`.
pub fn confidences(logits: &Tensor, y: &[i64]) -> Result<(Vec<f64>, Vec<bool>), Error> {
    let probs = logits.to_kind(Kind::Double).softmax(-1, Kind::Double);
    let (top, idx) = probs.max_dim(1, false);
    let top: Vec<f64> = Vec::<f64>::try_from(top).map_err(|e| Error::Torch(e.to_string()))?;
    let idx: Vec<i64> = Vec::<i64>::try_from(idx).map_err(|e| Error::Torch(e.to_string()))?;
    Ok((top, idx.iter().zip(y).map(|(a, b)| a == b).collect()))
}

/// Mean cross-entropy of `logits / t` against `y`.
pub fn nll(logits: &Tensor, y: &Tensor, t: f64) -> f64 {
    (logits.to_kind(Kind::Double) / t).cross_entropy_for_logits(y).double_value(&[])
}

/// The temperature minimising the mean cross-entropy of `logits / T` against `y`: a golden-section
/// search over `ln T` in [−4, 4] (the cross-entropy is convex in `1/T`, so it has one minimum there).
pub fn fit_temperature(logits: &Tensor, y: &[i64]) -> f64 {
    let y = Tensor::from_slice(y);
    let f = |s: f64| nll(logits, &y, s.exp());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (-4.0f64, 4.0f64);
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    while b - a > 1e-6 {
        if fc < fd {
            (b, d, fd) = (d, c, fc);
            c = b - g * (b - a);
            fc = f(c);
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}

/// The uncalibrated logits `[N, C]` (on the CPU) of `samples` and their labels in the
/// checkpoint's output order.
fn split_logits(
    pred: &Predictor,
    ds: &Dataset,
    samples: &Arc<[Sample]>,
    ckpt: &Path,
    batch: usize,
    progress: &dyn Progress,
) -> Result<(Tensor, Vec<i64>), Error> {
    let map = crate::label_map(ds, &pred.classes, ckpt)?;
    let lcfg = LoaderConfig { batch_size: batch.max(1), mode: Mode::Eval, channels_last: true, ..LoaderConfig::default() };
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for b in preprocess::loader(samples.clone(), ImageSource::Files, &pred.transform, &lcfg)? {
        let b = b?;
        let x = model::input_tensor(&b.images, b.shape, b.channels_last, pred.device());
        rows.push(pred.raw_logits(&x)?.to_device(Device::Cpu));
        labels.extend(b.labels.iter().map(|&l| map[l as usize]));
        progress.event(Event::Advance { done: labels.len() as u64, note: None });
    }
    Ok((Tensor::cat(&rows, 0), labels))
}

/// Fits the temperature of the checkpoint at `ckpt` on split `split` of `ds` (a split the head did
/// not train on: the selection part of a holdout), records it in the checkpoint (atomically,
/// keeping the rest of `inference`) and returns it.
pub fn calibrate(ckpt: &Path, ds: &Dataset, split: &str, opts: &crate::EvalOptions, progress: &dyn Progress) -> Result<Calibration, Error> {
    let mut pred = Predictor::load(ckpt, opts.device)?;
    pred.set_backend(opts.runtime, opts.precision, opts.graph_cache.as_deref())?;
    let ds = crate::evaluate::resolve_split(ds, split, &pred.meta)?;
    let samples: Arc<[Sample]> = ds
        .split(split)
        .filter(|s| !s.samples.is_empty())
        .map(|s| Arc::from(s.samples.clone().into_boxed_slice()))
        .ok_or_else(|| Error::Data(format!("{} has no (non-empty) split {split:?}", ds.root.display())))?;
    progress.event(Event::Start { task: &format!("calibrate on {split}"), total: samples.len() as u64 });
    let (logits, y) = split_logits(&pred, &ds, &samples, ckpt, opts.batch_size, progress)?;
    progress.event(Event::Finish { summary: None });
    let t = fit_temperature(&logits, &y);
    let yt = Tensor::from_slice(&y);
    let ece = |t: f64| -> Result<f64, Error> {
        let (c, ok) = confidences(&(&logits / t), &y)?;
        Ok(reliability(&c, &ok, ECE_BINS).ece)
    };
    let cal = Calibration {
        temperature: t,
        split: split.to_string(),
        images: y.len(),
        nll: (nll(&logits, &yt, 1.0), nll(&logits, &yt, t)),
        ece: (ece(1.0)?, ece(t)?),
    };
    record_calibration(ckpt, &cal)?;
    Ok(cal)
}

/// Rewrites the checkpoint at `path` (atomically) with `cal` as its `inference.calibration`.
pub fn record_calibration(path: &Path, cal: &Calibration) -> Result<(), Error> {
    let v = serde_json::to_value(cal).map_err(|e| Error::Data(e.to_string()))?;
    crate::tta::merge_inference(path, serde_json::Map::from_iter([(Calibration::KEY.to_string(), v)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits of a deliberately under-confident model: the right class leads by a small margin
    /// on most rows (right 80 % of the time), so softmax(z) is far below the accuracy.
    fn underconfident(n: usize, c: usize) -> (Tensor, Vec<i64>) {
        let mut z = vec![0f32; n * c];
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let label = (i * 7) % c;
            // Deterministic noise in [0, 0.3).
            for j in 0..c {
                z[i * c + j] = ((i * 31 + j * 17) % 97) as f32 / 97.0 * 0.3;
            }
            let top = if i % 5 == 4 { (label + 1) % c } else { label };
            z[i * c + top] += 0.8;
            y.push(label as i64);
        }
        (Tensor::from_slice(&z).view([n as i64, c as i64]), y)
    }

    #[test]
    fn temperature_lowers_the_ece_of_an_underconfident_model_and_keeps_every_argmax() {
        let (z, y) = underconfident(500, 20);
        let t = fit_temperature(&z, &y);
        assert!(t < 0.5, "an under-confident model needs T < 1, got {t}");
        let (c0, ok0) = confidences(&z, &y).unwrap();
        let (c1, ok1) = confidences(&(&z / t), &y).unwrap();
        let (e0, e1) = (reliability(&c0, &ok0, ECE_BINS).ece, reliability(&c1, &ok1, ECE_BINS).ece);
        assert!(e0 > 0.4, "the model is built under-confident: ECE {e0}");
        assert!(e1 < e0 / 4.0, "calibration must lower the ECE: {e0} -> {e1}");
        assert_eq!(ok0, ok1);
        assert!(z.argmax(1, false).equal(&(&z / t).argmax(1, false)));
        // The minimum: the cross-entropy rises on both sides.
        let yt = Tensor::from_slice(&y);
        assert!(nll(&z, &yt, t) < nll(&z, &yt, t * 1.05) && nll(&z, &yt, t) < nll(&z, &yt, t / 1.05));
    }

    #[test]
    fn reliability_bins_and_ece_by_hand() {
        // Two bins: [0, 0.5) holds 0.2 (wrong) and 0.4 (right); [0.5, 1] holds 0.9 and 1.0 (both right).
        let r = reliability(&[0.2, 0.4, 0.9, 1.0], &[false, true, true, true], 2);
        assert_eq!(r.bins.len(), 2);
        assert_eq!((r.bins[0].count, r.bins[1].count), (2, 2));
        assert!((r.bins[0].confidence - 0.3).abs() < 1e-12 && (r.bins[0].accuracy - 0.5).abs() < 1e-12);
        assert!((r.bins[1].confidence - 0.95).abs() < 1e-12 && (r.bins[1].accuracy - 1.0).abs() < 1e-12);
        assert!((r.ece - (0.5 * 0.2 + 0.5 * 0.05)).abs() < 1e-12);
    }
}
