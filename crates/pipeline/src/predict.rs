//! `petal predict` as a job a library user can run: a checkpoint with its runtime choices, the
//! inputs, and where the predictions go. With an output (given, or `predictions.csv` by the rule
//! of [`PredictJob::output`]) the predictions are journaled beside it through [`crate::batch`], so
//! a rerun after a crash resumes and a shard writes its part; without one they are only returned.

use std::path::PathBuf;
use std::time::Instant;

use infer::{Precision, Prediction, Predictor, Runtime, Tta};
use model::legacy::LegacyOptions;
use petal_common::shard::Shard;
use tch::Device;

use crate::batch::{batch_predict, list_inputs};
use crate::Error;

/// The output a job writes when none is given but it has more than one image, is sharded or
/// reads remote inputs.
pub const DEFAULT_OUTPUT: &str = "predictions.csv";

/// A prediction job.
#[derive(Debug, Clone)]
pub struct PredictJob {
    /// The trained checkpoint (or an old PyTorch one, completed by `legacy`).
    pub checkpoint: PathBuf,
    /// Choices for an old PyTorch checkpoint.
    pub legacy: LegacyOptions,
    /// Where the network runs.
    pub device: Device,
    /// What runs the backbone.
    pub runtime: Runtime,
    /// The backbone's precision on onnxruntime.
    pub precision: Precision,
    /// A folder → display name file replacing the checkpoint's names.
    pub category_names: Option<PathBuf>,
    /// Test-time augmentation; `None`: the checkpoint's recommendation.
    pub tta: Option<Tta>,
    /// Image files or folders: paths, file:// or s3:// URLs.
    pub inputs: Vec<String>,
    /// The CSV or JSON-lines output (a path or URL); `None`: see [`PredictJob::output`].
    pub out: Option<String>,
    /// This process's shard, or `None` for the whole job.
    pub shard: Option<Shard>,
    /// Classes per image.
    pub top_k: usize,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Images per journal chunk.
    pub chunk_images: usize,
    /// Where remote inputs are downloaded and a remote output's journal is kept.
    pub staging: PathBuf,
    /// The command that reruns this job without its shard (recorded in a shard's manifest).
    pub command: Vec<String>,
}

/// Where a job's predictions were written.
#[derive(Debug, Clone)]
pub struct Written {
    /// The file or object (the part, for a shard).
    pub path: String,
    /// Inputs of the whole job (all shards).
    pub total_inputs: usize,
}

/// What a prediction job did.
#[derive(Debug)]
pub struct PredictOutcome {
    /// The predictions of this process's images, in input order.
    pub predictions: Vec<Prediction>,
    /// The output written, when there is one.
    pub written: Option<Written>,
    /// The test-time augmentation used.
    pub tta: Tta,
    /// Seconds from the loaded network to the last prediction.
    pub seconds: f64,
}

impl PredictJob {
    /// The output the job writes: the one given; else [`DEFAULT_OUTPUT`] when the job is sharded,
    /// reads remote inputs or finds more than one image (remote inputs are not listed for this:
    /// they always write one); else none (the predictions are only returned).
    pub fn output(&self) -> Result<Option<String>, Error> {
        if self.out.is_some() {
            return Ok(self.out.clone());
        }
        let remote = self.inputs.iter().any(|i| petal_storage::is_remote(i));
        let several = self.shard.is_some() || remote || list_inputs(&self.inputs)?.len() > 1;
        Ok(several.then(|| DEFAULT_OUTPUT.to_string()))
    }

    /// Loads the network, predicts, and writes the output; `on_progress(done, total)` follows this
    /// process's images.
    pub fn run(&self, mut on_progress: impl FnMut(usize, usize)) -> Result<PredictOutcome, Error> {
        let mut pred = Predictor::load_with(&self.checkpoint, self.device, &self.legacy)?;
        pred.set_backend(self.runtime, self.precision, petal_common::onnxruntime::graph_cache().as_deref())?;
        if let Some(f) = &self.category_names {
            pred.set_names(&preprocess::read_names_file(f)?, true);
        }
        if let Some(t) = self.tta {
            pred.tta = t;
        }
        let t0 = Instant::now();
        let (predictions, written) = match self.output()? {
            Some(out) => {
                let r = batch_predict(&pred, self, &out, on_progress)?;
                (r.predictions, Some(Written { path: r.written, total_inputs: r.total_inputs }))
            }
            None => {
                let paths: Vec<PathBuf> = self.inputs.iter().map(PathBuf::from).collect();
                let paths = crate::expand_inputs(&paths)?;
                let n = paths.len();
                (pred.predict_paths(&paths, self.top_k, self.batch_size, |done| on_progress(done, n))?, None)
            }
        };
        Ok(PredictOutcome { predictions, written, tta: pred.tta, seconds: t0.elapsed().as_secs_f64() })
    }
}
