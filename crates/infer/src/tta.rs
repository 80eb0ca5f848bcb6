//! Test-time augmentation at inference: views of each image averaged in probability space
//! ([`crate::Predictor::tta`]), and the advice a checkpoint records about it ([`InferenceAdvice`]).

use std::collections::BTreeMap;
use std::path::Path;

use checkpoint::Metadata;
pub use preprocess::Tta;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::Error;

/// What a checkpoint records in its `inference` metadata: the test-time augmentation to use by
/// default, chosen from accuracies measured on a labelled split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceAdvice {
    /// The recommended mode: the most accurate one, and never a costlier mode that does not beat `none`.
    pub tta: Tta,
    /// The split measured on (e.g. `valid`).
    pub split: String,
    /// Top-1 accuracy per mode name.
    pub top1: BTreeMap<String, f64>,
    /// Seconds per image per mode name (decoding and forward passes, as measured).
    pub seconds_per_image: BTreeMap<String, f64>,
}

impl InferenceAdvice {
    /// The advice from measured `(mode, top-1, seconds per image)`: the best top-1; a mode is only
    /// recommended over a cheaper one when strictly more accurate.
    pub fn choose(split: &str, measured: &[(Tta, f64, f64)]) -> InferenceAdvice {
        let mut sorted = measured.to_vec();
        sorted.sort_by_key(|m| m.0.views());
        let best = sorted.iter().fold(None::<(Tta, f64)>, |b, m| match b {
            Some((_, acc)) if acc >= m.1 => b,
            _ => Some((m.0, m.1)),
        });
        InferenceAdvice {
            tta: best.map_or(Tta::None, |b| b.0),
            split: split.to_string(),
            top1: measured.iter().map(|m| (m.0.name().to_string(), m.1)).collect(),
            seconds_per_image: measured.iter().map(|m| (m.0.name().to_string(), m.2)).collect(),
        }
    }

    /// The advice recorded in `meta`, if any (an unreadable record counts as none).
    pub fn from_meta(meta: &Metadata) -> Option<InferenceAdvice> {
        meta.inference.as_ref().and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// Rewrites the checkpoint at `path` (atomically) with `advice` in its `inference` metadata,
/// keeping what else `inference` holds (an int8 record).
pub fn record_advice(path: &Path, advice: &InferenceAdvice) -> Result<(), Error> {
    match serde_json::to_value(advice).map_err(|e| Error::Data(e.to_string()))? {
        serde_json::Value::Object(fields) => merge_inference(path, fields),
        other => Err(Error::Data(format!("the advice is not a JSON object: {other}"))),
    }
}

/// Rewrites the checkpoint at `path` (atomically) with `fields` set in its `inference` metadata
/// object, keeping the fields it already holds under other names.
pub(crate) fn merge_inference(path: &Path, fields: serde_json::Map<String, serde_json::Value>) -> Result<(), Error> {
    let mut ckpt = checkpoint::load(path)?;
    let mut obj = ckpt.meta.inference.take().and_then(|v| v.as_object().cloned()).unwrap_or_default();
    obj.extend(fields);
    ckpt.meta.inference = Some(serde_json::Value::Object(obj));
    checkpoint::save(path, &ckpt)?;
    Ok(())
}

/// Probabilities `[n, C]` averaged over `views` consecutive rows of `probs` `[n · views, C]`.
pub(crate) fn average_views(probs: &Tensor, views: usize) -> Tensor {
    if views == 1 {
        return probs.shallow_clone();
    }
    let c = probs.size()[1];
    probs.view([-1, views as i64, c]).mean_dim(1, false, Kind::Float)
}
