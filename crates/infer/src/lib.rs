//! Inference from a checkpoint: top-k class names and probabilities for images ([`Predictor`]),
//! and evaluation on a labelled dataset split ([`evaluate()`]: top-1/top-5, per-class accuracy,
//! confusion matrix, written as JSON, CSV and PNG through `report`).
//!
//! This crate owns turning a petal checkpoint back into a ready network ([`Predictor::load`]) and
//! running it on images. It needs nothing but a checkpoint file and images: it never imports
//! training code. The network is rebuilt from the checkpoint's own metadata (architecture config,
//! head config, classes, preprocessing), weights are loaded strictly, batch norms are folded and the
//! backbone runs in channels_last layout under `no_grad`.
#![warn(missing_docs)]

pub mod calibrate;
pub mod evaluate;
pub mod quantize;

mod resumable;
pub mod tta;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use checkpoint::{ClassEntry, Metadata};
use model::{Arch, Classifier, HeadConfig};
use preprocess::TransformConfig;
use serde::Serialize;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// What can go wrong while predicting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The checkpoint cannot be read.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::Error),
    /// The checkpoint's network cannot be rebuilt or its weights do not fit.
    #[error(transparent)]
    Model(#[from] model::Error),
    /// An image cannot be read.
    #[error(transparent)]
    Preprocess(#[from] preprocess::Error),
    /// The checkpoint lacks what prediction needs.
    #[error("{path}: {detail}")]
    Unusable {
        /// The checkpoint.
        path: PathBuf,
        /// What is missing or wrong.
        detail: String,
    },
    /// A libtorch operation failed.
    #[error("libtorch: {0}")]
    Torch(String),
    /// The dataset cannot be evaluated as it is (e.g. the split is missing).
    #[error("dataset problem: {0}")]
    Data(String),
    /// Writing an evaluation file failed.
    #[error(transparent)]
    Report(#[from] report::Error),
    /// A file or folder could not be created.
    #[error(transparent)]
    Io(#[from] petal_common::IoError),
    /// onnxruntime is missing, or refused the graph or a batch.
    #[error(transparent)]
    Onnx(#[from] petal_onnx::Error),
}

pub use petal_onnx::{Precision, Runtime};

pub use quantize::{quantize, record_int8, Int8Record, QuantizeOptions};

pub use petal_common::{Event, Progress, Silent};

pub use tta::{record_advice, InferenceAdvice, Tta};

pub use calibrate::{calibrate, record_calibration, Calibration};

pub use evaluate::{evaluate, label_map, standard_error, write_report, ClassAccuracy, EvalOptions, EvalReport};

/// One class with its probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassProb {
    /// Output index.
    pub index: usize,
    /// Dataset folder name (e.g. `"21"`).
    pub folder: String,
    /// Display name (e.g. `"fire lily"`), or the folder name when none is known.
    pub name: String,
    /// Softmax probability.
    pub prob: f32,
}

/// The top-k classes of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The image.
    pub path: PathBuf,
    /// Classes by decreasing probability.
    pub top: Vec<ClassProb>,
}

/// A network rebuilt from a checkpoint, ready to predict.
pub struct Predictor {
    vs: VarStore,
    net: Classifier,
    /// Classes in output order.
    pub classes: Vec<ClassEntry>,
    /// The evaluation transform the network expects.
    pub transform: TransformConfig,
    /// The checkpoint's metadata.
    pub meta: Metadata,
    head: HeadConfig,
    /// Test-time augmentation of [`Predictor::predict_paths`]: the checkpoint's recommendation
    /// ([`InferenceAdvice`]) when it records one, else none; set it to choose another.
    pub tta: Tta,
    device: Device,
    /// The checkpoint file (its digest keys the cached ONNX graph).
    source: PathBuf,
    /// The backbone in onnxruntime, after [`Predictor::set_runtime`] chose it, and its precision.
    ort: Option<(petal_onnx::OrtNet, Precision)>,
    /// How the onnxruntime session runs (threads, spinning); see [`Predictor::set_session_options`].
    session: petal_onnx::SessionOptions,
    /// Logits are divided by this before the softmax (the checkpoint's [`Calibration`], else 1).
    temperature: f64,
}

impl Predictor {
    /// Loads `path` onto `device`: a petal checkpoint, or an old PyTorch checkpoint (`.pth`,
    /// converted in memory by [`model::legacy`]: architecture and head rebuilt, ImageNet eval
    /// preprocessing assumed).
    pub fn load(path: &Path, device: Device) -> Result<Self, Error> {
        Self::load_with(path, device, &model::legacy::LegacyOptions::default())
    }

    /// [`Predictor::load`] with the choices an old head-only checkpoint needs (`--arch`, the
    /// backbone's ImageNet weights); they are ignored for petal checkpoints.
    pub fn load_with(path: &Path, device: Device, legacy: &model::legacy::LegacyOptions) -> Result<Self, Error> {
        let imported = checkpoint::import(path)?;
        let ckpt = match imported.meta {
            Some(meta) => checkpoint::Checkpoint { meta, tensors: imported.tensors },
            None => model::legacy::from_imported(imported, path, legacy)?.0,
        };
        Self::from_checkpoint(ckpt, path, device)
    }

    /// Builds the network of a checkpoint already in memory; `path` names it in errors.
    pub fn from_checkpoint(ckpt: checkpoint::Checkpoint, path: &Path, device: Device) -> Result<Self, Error> {
        let unusable = |detail: String| Error::Unusable { path: path.to_path_buf(), detail };
        let arch: Arch = if ckpt.meta.arch_config.is_null() {
            Arch::from_str(&ckpt.meta.arch).map_err(|_| unusable(format!("unknown architecture {:?}", ckpt.meta.arch)))?
        } else {
            serde_json::from_value(ckpt.meta.arch_config.clone()).map_err(|e| unusable(format!("architecture config cannot be read: {e}")))?
        };
        let head: HeadConfig = if ckpt.meta.head.is_null() {
            HeadConfig::default()
        } else {
            serde_json::from_value(ckpt.meta.head.clone()).map_err(|e| unusable(format!("head config cannot be read: {e}")))?
        };
        let mut classes = ckpt.meta.classes.clone();
        classes.sort_by_key(|c| c.index);
        if classes.is_empty() || classes.iter().enumerate().any(|(i, c)| c.index != i) {
            return Err(unusable("has no class list (or its indices are not 0..n); it is a weights file, not a trained classifier".into()));
        }
        let pre = ckpt.meta.preprocessing.clone().ok_or_else(|| unusable("records no preprocessing".into()))?;
        let (Ok(mean), Ok(std)) = (<[f32; 3]>::try_from(pre.mean.as_slice()), <[f32; 3]>::try_from(pre.std.as_slice())) else {
            return Err(unusable("mean/std must have 3 values".into()));
        };
        let transform = TransformConfig { image_size: pre.input_size, resize_size: pre.resize_size, mean, std, ..TransformConfig::default() };
        let vs = VarStore::new(device);
        let mut net = Classifier::new(&vs.root(), &arch, &head, classes.len() as i64)?;
        let tensors: Vec<(String, Tensor)> =
            ckpt.model_tensors().map(|(k, d)| model::weights::to_tensor(d, k, path).map(|t| (k.clone(), t))).collect::<Result<_, _>>()?;
        model::weights::load_all_tensors(&vs, tensors, path)?;
        tch::no_grad(|| {
            for (_, t) in vs.variables() {
                let _ = t.set_requires_grad(false);
            }
        });
        if device == Device::Cpu {
            net.set_channels_last(true)?;
        }
        net.fold_batchnorm();
        let tta = InferenceAdvice::from_meta(&ckpt.meta).map_or(Tta::None, |a| a.tta);
        let temperature = Calibration::from_meta(&ckpt.meta).map_or(1.0, |c| c.temperature);
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(unusable(format!("its calibration records temperature {temperature}, which is not a positive number")));
        }
        Ok(Predictor {
            vs,
            net,
            classes,
            transform,
            meta: ckpt.meta,
            head,
            tta,
            device,
            source: path.to_path_buf(),
            ort: None,
            session: Default::default(),
            temperature,
        })
    }

    /// Sets class display names from `names` (folder name → display name): of every class named
    /// there when `replace`, else only of classes that have none.
    pub fn set_names(&mut self, names: &std::collections::BTreeMap<String, String>, replace: bool) {
        for c in &mut self.classes {
            if replace || c.name.is_none() {
                if let Some(n) = names.get(&c.folder) {
                    c.name = Some(n.clone());
                }
            }
        }
    }

    /// The network: eval mode, frozen, batch norms folded, channels_last on the CPU.
    pub fn network(&self) -> &Classifier {
        &self.net
    }

    /// The head configuration the network was built with.
    pub fn head(&self) -> &HeadConfig {
        &self.head
    }

    /// The weights as the checkpoint holds them (batch norms not folded: folding leaves the
    /// variable store alone), by PyTorch name; empty after [`Predictor::release_checkpoint_weights`].
    pub fn variables(&self) -> std::collections::HashMap<String, Tensor> {
        self.vs.variables()
    }

    /// Lets go of the checkpoint's own copies of the weights that batch-norm folding replaced
    /// (every folded convolution's unfolded weight), keeping only what the network runs on: a
    /// long-lived server saves the memory of one copy of its backbone's convolutions. Predictions
    /// do not change; [`Predictor::variables`] is empty afterwards (export needs them: export first).
    pub fn release_checkpoint_weights(&mut self) {
        self.vs = VarStore::new(self.device);
    }

    /// Runs the backbone through `runtime` from now on (`auto`: onnxruntime on the CPU when its
    /// library loads, libtorch otherwise; see [`Runtime::resolve`]); the head always runs on
    /// libtorch. For onnxruntime the graph is built from the checkpoint's weights, or read from
    /// `cache` (a folder) when an earlier process left it there, keyed by the checkpoint file's
    /// SHA-256. Call it before [`Predictor::release_checkpoint_weights`]. Returns what was chosen.
    /// The precision is [`Precision::Auto`] (see [`Predictor::set_backend`]).
    pub fn set_runtime(&mut self, runtime: Runtime, cache: Option<&Path>) -> Result<petal_onnx::runtime::Resolved, Error> {
        self.set_backend(runtime, Precision::Auto, cache)
    }

    /// How the next onnxruntime session (made by [`Predictor::set_runtime`], [`Predictor::set_backend`]
    /// or [`Predictor::set_int8`]) runs: its threads (0, the default: one per core) and whether idle
    /// workers spin (off by default: see [`petal_onnx::SessionOptions::spinning`] for when to turn it
    /// on; with it on, the head that follows each pass also runs on one libtorch thread). A session
    /// already made is kept as it is.
    pub fn set_session_options(&mut self, options: petal_onnx::SessionOptions) {
        self.session = options;
    }

    /// [`Predictor::set_runtime`] with a precision: `auto` runs int8 when the checkpoint records
    /// an int8 calibration that `petal quantize` accepted ([`Int8Record::accepted`]) and the
    /// backbone runs on onnxruntime, float32 otherwise; `int8` needs both (an error names what is
    /// missing); `fp32` is the reference.
    pub fn set_backend(&mut self, runtime: Runtime, precision: Precision, cache: Option<&Path>) -> Result<petal_onnx::runtime::Resolved, Error> {
        let resolved = runtime.resolve(self.device)?;
        self.ort = None;
        let record = Int8Record::from_meta(&self.meta);
        if resolved.runtime != Runtime::Onnxruntime {
            if precision == Precision::Int8 {
                return Err(self.unusable("int8 runs on onnxruntime only: use --runtime onnxruntime (or auto on the CPU)".into()));
            }
            return Ok(resolved);
        }
        let int8 = match (precision, &record) {
            (Precision::Fp32, _) => None,
            (Precision::Auto, Some(r)) if r.accepted => Some(r.calibration.clone()),
            (Precision::Auto, _) => None,
            (Precision::Int8, Some(r)) => Some(r.calibration.clone()),
            (Precision::Int8, None) => {
                return Err(self.unusable("records no int8 calibration: run `petal quantize --checkpoint <this file> --data <dataset>` first".into()))
            }
        };
        let digest = match cache {
            Some(_) => {
                let bytes = std::fs::read(&self.source).map_err(|e| petal_common::IoError {
                    path: self.source.clone(),
                    action: "reading the checkpoint for its digest",
                    source: e,
                })?;
                petal_common::sha256_hex(&bytes)
            }
            None => String::new(),
        };
        self.ort = Some(match int8 {
            Some(calibration) => (self.int8_net(&calibration, cache, &digest)?, Precision::Int8),
            None => {
                let spec = self.backbone_spec(&digest);
                let vs = &self.vs;
                (petal_onnx::backbone_net(spec, || petal_onnx::graph::Params::new(vs.variables()), cache, self.session)?, Precision::Fp32)
            }
        });
        Ok(resolved)
    }

    fn unusable(&self, detail: String) -> Error {
        Error::Unusable { path: self.source.clone(), detail }
    }

    fn backbone_spec<'a>(&'a self, weights: &'a str) -> petal_onnx::BackboneSpec<'a> {
        petal_onnx::BackboneSpec { arch: self.net.arch(), side: self.transform.image_size as i64, feature_dim: self.net.feature_dim(), weights }
    }

    fn int8_net(&self, calibration: &petal_onnx::Calibration, cache: Option<&Path>, digest: &str) -> Result<petal_onnx::OrtNet, Error> {
        let vs = &self.vs;
        Ok(petal_onnx::backbone_net_int8(
            self.backbone_spec(digest),
            || petal_onnx::graph::Params::new(vs.variables()),
            calibration,
            cache,
            self.session,
        )?)
    }

    /// The backbone's float graph (the one onnxruntime runs), built from the checkpoint's weights.
    pub fn backbone_graph(&self) -> Result<petal_onnx::proto::ModelProto, Error> {
        let params = petal_onnx::graph::Params::new(self.vs.variables());
        Ok(petal_onnx::backbone_model(&params, self.net.arch(), self.transform.image_size as i64, self.net.feature_dim())?)
    }

    /// Runs the backbone on onnxruntime in int8 with `calibration` (made on this checkpoint's
    /// float graph, e.g. by [`quantize()`]) from now on, whatever the checkpoint records.
    pub fn set_int8(&mut self, calibration: &petal_onnx::Calibration) -> Result<(), Error> {
        self.ort = Some((self.int8_net(calibration, None, "")?, Precision::Int8));
        Ok(())
    }

    /// The runtime the backbone runs on: [`Runtime::Onnxruntime`] or [`Runtime::Torch`].
    pub fn runtime(&self) -> Runtime {
        if self.ort.is_some() {
            Runtime::Onnxruntime
        } else {
            Runtime::Torch
        }
    }

    /// The precision the backbone runs in: [`Precision::Int8`] or [`Precision::Fp32`].
    pub fn precision(&self) -> Precision {
        self.ort.as_ref().map_or(Precision::Fp32, |(_, p)| *p)
    }

    /// The pooled features `[N, F]` of a batch, by the backbone's runtime (on the network's
    /// device for libtorch, on the CPU for onnxruntime).
    pub fn features(&self, x: &Tensor) -> Result<Tensor, Error> {
        match &self.ort {
            Some((net, _)) => Ok(net.run_tensor(x)?),
            None => Ok(tch::no_grad(|| self.net.features(&x.to_device(self.device), false))),
        }
    }

    /// The device the network runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// The temperature logits are divided by before the softmax: the checkpoint's calibration
    /// ([`Calibration`]), else 1.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// Divides logits by `t` from now on (1: the head's own probabilities). Errors unless `t` is
    /// a positive number.
    pub fn set_temperature(&mut self, t: f64) -> Result<(), Error> {
        if !(t > 0.0 && t.is_finite()) {
            return Err(self.unusable(format!("temperature {t} is not a positive number")));
        }
        self.temperature = t;
        Ok(())
    }

    /// The head's logits `[N, C]` for a batch `[N, 3, H, W]` of normalised images, before the
    /// temperature. The head runs each image's features alone (`Classifier::head_forward_rows`),
    /// so an image's logits do not depend on the rest of the batch.
    pub fn raw_logits(&self, x: &Tensor) -> Result<Tensor, Error> {
        let feats = self.features(x)?.to_device(self.device);
        // With spinning onnxruntime workers (passes back to back, nothing else running), the
        // head, a few small matrix products, runs on one libtorch thread: a second would wake
        // libtorch's OpenMP team, whose worker then spins against onnxruntime's next pass (Lite0
        // at batch 1 on 2 cores: 147 img/s with two libtorch threads, 185 with one; onnxruntime's
        // features alone 190). Otherwise libtorch keeps its threads: under `petal serve`, where
        // decoding fills the gaps between passes, one thread gained nothing and lost up to 10 %.
        let _threads = (self.ort.is_some() && self.session.spinning && self.device == Device::Cpu).then(|| model::TorchThreads::set(1));
        Ok(tch::no_grad(|| self.net.head_forward_rows(&feats)))
    }

    /// `logits` divided by the temperature (the same tensor when it is 1, so uncalibrated
    /// checkpoints keep their bits).
    pub fn apply_temperature(&self, logits: Tensor) -> Tensor {
        if self.temperature == 1.0 {
            logits
        } else {
            logits / self.temperature
        }
    }

    /// Calibrated logits `[N, C]` for a batch `[N, 3, H, W]` of normalised images (the head's,
    /// divided by the temperature).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor, Error> {
        Ok(self.apply_temperature(self.raw_logits(x)?))
    }

    /// Softmax probabilities `[N, C]` (on the CPU) for a batch. An image's row does not depend on
    /// the rest of the batch through the head ([`Predictor::raw_logits`]); the backbone's
    /// convolutions may still round differently at another batch size on some CPUs and thread
    /// counts, which is why `serve` calibrates its pass sizes at start.
    pub fn probabilities(&self, x: &Tensor) -> Result<Tensor, Error> {
        Ok(self.logits(x)?.softmax(-1, Kind::Float).to_device(Device::Cpu))
    }

    /// The top-k of one row of probabilities.
    pub fn top_k(&self, probs: &[f32], k: usize) -> Vec<ClassProb> {
        let mut idx: Vec<usize> = (0..probs.len()).collect();
        idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        idx.truncate(k.min(probs.len()));
        idx.into_iter()
            .map(|i| {
                let c = &self.classes[i];
                ClassProb { index: i, folder: c.folder.clone(), name: c.name.clone().unwrap_or_else(|| c.folder.clone()), prob: probs[i] }
            })
            .collect()
    }

    /// Predicts images in batches of `batch_size`; `on_batch` is told how many are done.
    pub fn predict_paths(&self, paths: &[PathBuf], k: usize, batch_size: usize, mut on_batch: impl FnMut(usize)) -> Result<Vec<Prediction>, Error> {
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(batch_size.max(1)) {
            out.extend(self.predict_batch(chunk, k, 0)?);
            on_batch(out.len());
        }
        Ok(out)
    }

    /// Probabilities `[n, C]` of `n` images from `n · views` consecutive view rows `[n · views, 3, H, W]`,
    /// averaged over each image's views.
    pub fn probabilities_of_views(&self, x: &Tensor, views: usize) -> Result<Tensor, Error> {
        Ok(tta::average_views(&self.probabilities(x)?, views))
    }

    /// The network input of `paths` under [`Predictor::tta`]: `[n · views, 3, H, W]`, each image's
    /// views consecutive (decoded and transformed in parallel).
    pub fn input_of_paths(&self, paths: &[PathBuf]) -> Result<Tensor, Error> {
        use rayon::prelude::*;
        let size = self.transform.image_size as i64;
        let (transform, tta) = (&self.transform, self.tta);
        let pixels: Vec<Vec<f32>> = match tta {
            Tta::None => paths.par_iter().map(|p| preprocess::predict_tensor(p, transform)).collect::<Result<_, _>>()?,
            _ => paths.par_iter().map(|p| preprocess::tta_views_of_file(p, transform, tta).map(|v| v.concat())).collect::<Result<_, _>>()?,
        };
        let flat: Vec<f32> = pixels.concat();
        Ok(Tensor::from_slice(&flat).view([(paths.len() * tta.views()) as i64, 3, size, size]))
    }

    /// The top `k` of each image of one batch (decoded and transformed in parallel). With
    /// `pad_to` above the batch's length, the forward pass runs on that many images (zeros after
    /// the batch's): libtorch's CPU kernels choose their blocking by shape, so an image's
    /// probabilities can differ in the last bits between batch sizes, but not between batches of
    /// one size.
    fn predict_batch(&self, chunk: &[PathBuf], k: usize, pad_to: usize) -> Result<Vec<Prediction>, Error> {
        let views = self.tta.views();
        let x = self.input_of_paths(chunk)?;
        let rows = (pad_to.max(chunk.len()) * views) as i64;
        let x = match rows - x.size()[0] {
            0 => x,
            missing => {
                let mut shape = x.size();
                shape[0] = missing;
                Tensor::cat(&[x.shallow_clone(), Tensor::zeros(shape.as_slice(), (x.kind(), x.device()))], 0)
            }
        };
        let probs = self.probabilities_of_views(&x, views)?;
        chunk
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let row: Vec<f32> = Vec::<f32>::try_from(probs.get(i as i64)).map_err(|e| Error::Torch(e.to_string()))?;
                Ok(Prediction { path: p.clone(), top: self.top_k(&row, k) })
            })
            .collect()
    }
}
