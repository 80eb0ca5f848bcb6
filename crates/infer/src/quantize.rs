//! int8: the backbone quantized statically for onnxruntime (see [`petal_onnx::quantize`]),
//! calibrated on training images and measured against float32 on the valid split.
//!
//! [`quantize()`] records the calibration (the ranges, and the weight shifts that correct the biases) and
//! the measured accuracy in the checkpoint's `inference.int8` metadata ([`Int8Record`]); the int8
//! graph itself is rebuilt from the checkpoint's weights and that record whenever it is needed (and
//! cached like the float graph).
//! The record is *accepted* when int8 loses at most [`QuantizeOptions::max_loss_points`] of top-1
//! accuracy; only then does `--precision auto` (the default) run int8.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use petal_common::{Event, Progress};
use petal_onnx::{Calibration, Precision, Runtime};
use preprocess::{Dataset, ImageSource, LoaderConfig, Mode, Sample};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::{label_map, Error, Predictor};

/// Training images calibrated on by default: enough for stable ranges (onnxruntime's examples use
/// a few hundred), a few seconds of forward passes.
pub const DEFAULT_CALIBRATION_IMAGES: usize = 256;
/// The most top-1 accuracy (points) int8 may lose and still be the default.
pub const DEFAULT_MAX_LOSS_POINTS: f64 = 0.5;

/// How [`quantize()`] calibrates and measures.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// Training images to calibrate on, spread evenly over the split (all of them when it has fewer).
    pub calibration_images: usize,
    /// The split calibrated on.
    pub calibration_split: String,
    /// The split accuracy is measured on.
    pub eval_split: String,
    /// Images per forward pass.
    pub batch_size: usize,
    /// The most top-1 points int8 may lose and still be accepted as the default.
    pub max_loss_points: f64,
    /// Where the graphs are cached (`None`: in memory only).
    pub graph_cache: Option<PathBuf>,
    /// Whether the biases are corrected for the weights' rounding (see [`petal_onnx::quantize`]);
    /// on by default, off to measure what it does.
    pub bias_correction: bool,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            calibration_images: DEFAULT_CALIBRATION_IMAGES,
            calibration_split: "train".into(),
            eval_split: "valid".into(),
            batch_size: 16,
            max_loss_points: DEFAULT_MAX_LOSS_POINTS,
            graph_cache: None,
            bias_correction: true,
        }
    }
}

/// What `petal quantize` records in a checkpoint (`inference.int8`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Int8Record {
    /// `onnx-qdq-int8`: onnxruntime's QDQ format, uint8 activations, per-channel int8 weights.
    pub format: String,
    /// The split calibrated on and how many of its images.
    pub calibration_split: String,
    /// Images calibrated on.
    pub calibration_images: usize,
    /// The calibrated range of every quantized tensor (`ranges`), and each convolution's weight
    /// shift its bias is corrected by (`weight_shifts`; absent in records written without bias
    /// correction).
    #[serde(flatten)]
    pub calibration: Calibration,
    /// The split measured on and how many of its images.
    pub eval_split: String,
    /// Images measured on.
    pub eval_images: usize,
    /// Top-1 accuracy (%) of the float32 graph on onnxruntime.
    pub fp32_top1: f64,
    /// Top-1 accuracy (%) of the int8 graph.
    pub int8_top1: f64,
    /// `fp32_top1 - int8_top1` (points; negative when int8 did better).
    pub loss_points: f64,
    /// The share (%) of the measured images on which int8's top class is float32's: how faithful
    /// int8 is, a steadier figure than the difference of two accuracies (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top1_agreement: Option<f64>,
    /// The bound it was accepted against.
    pub max_loss_points: f64,
    /// Whether int8 is the default (`loss_points <= max_loss_points`).
    pub accepted: bool,
    /// Backbone images/s of each graph during the measurement (batches of `batch_size`).
    pub fp32_img_s: f64,
    /// See `fp32_img_s`.
    pub int8_img_s: f64,
}

impl Int8Record {
    /// The record in `meta`, if any (an unreadable record counts as none).
    pub fn from_meta(meta: &checkpoint::Metadata) -> Option<Int8Record> {
        meta.inference.as_ref()?.get("int8").and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// Rewrites the checkpoint at `path` (atomically) with `record` as its `inference.int8`, keeping
/// what else `inference` holds (the TTA advice).
pub fn record_int8(path: &Path, record: &Int8Record) -> Result<(), Error> {
    let value = serde_json::to_value(record).map_err(|e| Error::Data(e.to_string()))?;
    crate::tta::merge_inference(path, serde_json::Map::from_iter([("int8".to_string(), value)]))
}

/// `n` samples of `samples` spread evenly (every class of a class-sorted split is reached), or all.
fn spread(samples: &[Sample], n: usize) -> Vec<Sample> {
    if samples.len() <= n {
        return samples.to_vec();
    }
    (0..n).map(|i| samples[i * samples.len() / n].clone()).collect()
}

fn split<'a>(ds: &'a Dataset, name: &str) -> Result<&'a [Sample], Error> {
    ds.split(name)
        .map(|s| s.samples.as_slice())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::Data(format!("{} has no (non-empty) split {name:?}", ds.root.display())))
}

/// How a graph did on the eval split: top-1 (%), the backbone's images/s, and its top class of
/// every image (in the model's class indices).
struct Measured {
    top1: f64,
    img_s: f64,
    predicted: Vec<i64>,
}

/// [`Measured`] of `pred` as it is set on `samples`.
fn measure(pred: &Predictor, samples: Arc<[Sample]>, map: &[i64], batch_size: usize, progress: &dyn Progress) -> Result<Measured, Error> {
    let lcfg = LoaderConfig { batch_size, mode: Mode::Eval, channels_last: true, ..LoaderConfig::default() };
    let (mut correct, mut secs) = (0usize, 0f64);
    let mut predicted = Vec::new();
    for b in preprocess::loader(samples, ImageSource::Files, &pred.transform, &lcfg)? {
        let b = b?;
        let x = model::input_tensor(&b.images, b.shape, b.channels_last, Device::Cpu);
        let t = Instant::now();
        let feats = pred.features(&x)?;
        secs += t.elapsed().as_secs_f64();
        let logits = tch::no_grad(|| pred.network().head_forward(&feats.to_device(pred.device()), false)).to_device(Device::Cpu);
        let best = Vec::<i64>::try_from(logits.argmax(-1, false)).map_err(|e| Error::Torch(e.to_string()))?;
        correct += best.iter().zip(&b.labels).filter(|(p, &l)| **p == map[l as usize]).count();
        predicted.extend(best);
        progress.event(Event::Advance { done: predicted.len() as u64, note: None });
    }
    let n = predicted.len().max(1) as f64;
    Ok(Measured { top1: 100.0 * correct as f64 / n, img_s: predicted.len() as f64 / secs.max(1e-9), predicted })
}

/// Calibrates the backbone of the checkpoint at `ckpt` on training images of `ds`, measures int8
/// against float32 (both on onnxruntime) on the valid split, and records the outcome in the
/// checkpoint ([`record_int8`]). Returns the record; int8 is the default only when it is accepted.
pub fn quantize(ckpt: &Path, ds: &Dataset, opts: &QuantizeOptions, progress: &dyn Progress) -> Result<Int8Record, Error> {
    let mut pred = Predictor::load(ckpt, Device::Cpu)?;
    pred.set_backend(Runtime::Onnxruntime, Precision::Fp32, opts.graph_cache.as_deref())?;
    let map = label_map(ds, &pred.classes, ckpt)?;
    let calib = spread(split(ds, &opts.calibration_split)?, opts.calibration_images.max(1));
    let eval: Arc<[Sample]> = Arc::from(split(ds, &opts.eval_split)?.to_vec().into_boxed_slice());

    progress.event(Event::Start { task: &format!("calibrate int8 on {} {} images", calib.len(), opts.calibration_split), total: calib.len() as u64 });
    let mut calibrator = petal_onnx::quantize::Calibrator::new(&pred.backbone_graph()?, 0)?;
    let lcfg = LoaderConfig { batch_size: opts.batch_size.max(1), mode: Mode::Eval, channels_last: false, ..LoaderConfig::default() };
    for b in preprocess::loader(Arc::from(calib.into_boxed_slice()), ImageSource::Files, &pred.transform, &lcfg)? {
        let b = b?;
        let s = &b.shape;
        calibrator.observe(&b.images, &[s[0], s[1], s[2], s[3]])?;
        progress.event(Event::Advance { done: calibrator.images() as u64, note: None });
    }
    progress.event(Event::Finish { summary: None });
    let mut calibration = calibrator.calibration()?;
    if !opts.bias_correction {
        calibration = calibration.without_bias_correction();
    }

    progress.event(Event::Start { task: &format!("measure fp32 on {}", opts.eval_split), total: eval.len() as u64 });
    let fp32 = measure(&pred, eval.clone(), &map, opts.batch_size, progress)?;
    progress.event(Event::Finish { summary: Some(&format!("fp32 top-1 {:.2} %", fp32.top1)) });
    pred.set_int8(&calibration)?;
    progress.event(Event::Start { task: &format!("measure int8 on {}", opts.eval_split), total: eval.len() as u64 });
    let int8 = measure(&pred, eval.clone(), &map, opts.batch_size, progress)?;
    progress.event(Event::Finish { summary: Some(&format!("int8 top-1 {:.2} %", int8.top1)) });

    let loss_points = fp32.top1 - int8.top1;
    let same = fp32.predicted.iter().zip(&int8.predicted).filter(|(a, b)| a == b).count();
    let record = Int8Record {
        format: "onnx-qdq-int8".into(),
        calibration_split: opts.calibration_split.clone(),
        calibration_images: calibrator.images(),
        calibration,
        eval_split: opts.eval_split.clone(),
        eval_images: eval.len(),
        fp32_top1: fp32.top1,
        int8_top1: int8.top1,
        loss_points,
        top1_agreement: Some(100.0 * same as f64 / fp32.predicted.len().max(1) as f64),
        max_loss_points: opts.max_loss_points,
        accepted: loss_points <= opts.max_loss_points,
        fp32_img_s: fp32.img_s,
        int8_img_s: int8.img_s,
    };
    record_int8(ckpt, &record)?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_without_shifts_still_load_and_shifts_sit_beside_the_ranges() {
        // A record as `petal quantize` wrote it before bias correction: no `weight_shifts`.
        let old = serde_json::json!({
            "format": "onnx-qdq-int8", "calibration_split": "train", "calibration_images": 3,
            "ranges": {"t": [0.0, 6.0]}, "eval_split": "valid", "eval_images": 10,
            "fp32_top1": 90.0, "int8_top1": 89.0, "loss_points": 1.0, "max_loss_points": 0.5,
            "accepted": false, "fp32_img_s": 10.0, "int8_img_s": 20.0
        });
        let r: Int8Record = serde_json::from_value(old.clone()).expect("an old record loads");
        assert!(r.calibration.weight_shifts.is_empty());
        assert_eq!(r.calibration.ranges.0["t"], [0.0, 6.0]);
        assert_eq!(serde_json::to_value(&r).unwrap(), old, "and is written back as it was");

        let mut with = r.clone();
        with.calibration.weight_shifts.0.insert("w".into(), vec![0.5, 1.5]);
        let v = serde_json::to_value(&with).unwrap();
        assert_eq!(v["weight_shifts"]["w"], serde_json::json!([0.5, 1.5]));
        assert_eq!(v["ranges"]["t"], serde_json::json!([0.0, 6.0]));
        assert_eq!(serde_json::from_value::<Int8Record>(v).unwrap(), with);
        assert!(with.calibration.without_bias_correction().weight_shifts.is_empty());
    }
}
