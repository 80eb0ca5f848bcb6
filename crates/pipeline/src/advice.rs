//! The inference advice a trained checkpoint records: test-time augmentation measured on a
//! labelled split, recommended only when it beats plain inference.

use std::path::Path;

use infer::{EvalOptions, InferenceAdvice, Tta};
use petal_common::{Event, Progress};
use preprocess::Dataset;
use tch::Device;

use crate::Error;

/// Evaluates `checkpoint` on `split` of `ds` under every [`Tta`] mode, records the advice
/// ([`InferenceAdvice::choose`]: a costlier mode only when strictly more accurate) in the
/// checkpoint (atomic rewrite) and returns it.
/// `runtime` runs the backbone (see [`infer::Predictor::set_runtime`]).
pub fn recommend_tta(
    checkpoint: &Path,
    ds: &Dataset,
    split: &str,
    (device, runtime): (Device, infer::Runtime),
    progress: &dyn Progress,
) -> Result<InferenceAdvice, Error> {
    let mut measured = Vec::new();
    for tta in Tta::ALL {
        let opts = EvalOptions { device, tta: Some(tta), runtime, graph_cache: petal_common::onnxruntime::graph_cache(), ..EvalOptions::default() };
        let r = infer::evaluate(checkpoint, ds, split, &opts, progress)?;
        let per_image = r.seconds / r.images.max(1) as f64;
        let msg = format!("tta {tta:<9} on {split}: top-1 {:.2}%  ({} pass(es), {:.1} ms per image)", 100.0 * r.top1, tta.views(), 1e3 * per_image);
        progress.event(Event::Message(&msg));
        measured.push((tta, r.top1, per_image));
    }
    let advice = InferenceAdvice::choose(split, &measured);
    infer::record_advice(checkpoint, &advice)?;
    progress.event(Event::Message(&format!("recorded in {}: predict uses tta {} by default", checkpoint.display(), advice.tta)));
    Ok(advice)
}
