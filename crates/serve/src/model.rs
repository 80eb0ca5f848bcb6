//! Served models: what the server needs of a network ([`Backend`]), its public description
//! ([`ModelInfo`]), and the implementation on a petal checkpoint ([`PredictorBackend`]).

use std::path::Path;
use std::sync::Mutex;

use infer::{ClassProb, Predictor};
use preprocess::{TransformConfig, Tta};
use serde::Serialize;
use tch::{Device, Tensor};

use crate::Error;

/// One class as `GET /v1/models` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassInfo {
    /// Output index (the class id in predictions).
    pub index: usize,
    /// Dataset folder name.
    pub folder: String,
    /// Display name (the folder name when the checkpoint has none).
    pub name: String,
}

/// A served model's description: `GET /v1/models` returns one per model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// The name it is served under (`/v1/models/{name}/predict`).
    pub name: String,
    /// The checkpoint's file name (without its folder).
    pub file: String,
    /// SHA-256 of the checkpoint file, hex.
    pub checkpoint_sha256: String,
    /// Architecture name.
    pub arch: String,
    /// Number of classes.
    pub num_classes: usize,
    /// Classes in output order.
    pub classes: Vec<ClassInfo>,
    /// The evaluation preprocessing applied to uploads.
    pub preprocessing: Option<checkpoint::Preprocessing>,
    /// Training and validation metrics recorded in the checkpoint.
    pub metrics: serde_json::Value,
    /// When the checkpoint was written (RFC 3339 UTC).
    pub created_utc: String,
    /// Test-time augmentation used when a request names none (`?tta=`): the checkpoint's recommendation.
    pub tta: Tta,
    /// What runs the backbone (`torch` or `onnxruntime`).
    pub runtime: infer::Runtime,
    /// The backbone's precision (`fp32`, or `int8` on onnxruntime).
    pub precision: infer::Precision,
    /// The int8 calibration and its measured accuracy change, when `petal quantize` recorded one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int8: Option<Int8Summary>,
}

/// What `/v1/models` shows of a checkpoint's int8 record (not its ranges and weight shifts).
#[derive(Debug, Clone, Serialize)]
pub struct Int8Summary {
    /// Whether int8 is the checkpoint's default (it lost at most `max_loss_points`).
    pub accepted: bool,
    /// Top-1 (%) on `eval_split` in float32 and in int8.
    pub fp32_top1: f64,
    /// See `fp32_top1`.
    pub int8_top1: f64,
    /// Points lost by int8.
    pub loss_points: f64,
    /// The share (%) of images on which int8's top class is float32's (absent in older records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1_agreement: Option<f64>,
    /// Whether the biases were corrected for the weights' rounding.
    pub bias_corrected: bool,
    /// The bound it was accepted against.
    pub max_loss_points: f64,
    /// The split measured on.
    pub eval_split: String,
    /// Training images calibrated on.
    pub calibration_images: usize,
}

/// Why a [`Backend`] could not do what was asked: the client's image, or the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The uploaded image cannot be used (not an image, too large, undecodable): the client is
    /// answered 400 `bad_image` with this message.
    #[error("{0}")]
    BadImage(String),
    /// The network failed on good input: the client is answered 500.
    #[error("{0}")]
    Failed(String),
}

/// What the server needs of a network. The server calls [`Backend::prepare`] on a thread pool,
/// one image per call and several at once, and [`Backend::predict`] from one blocking thread per
/// model at a time, never on the async runtime.
pub trait Backend: Send + Sync + 'static {
    /// The model's description.
    fn info(&self) -> &ModelInfo;
    /// Decodes and transforms one uploaded image into the network input before normalisation: the
    /// `tta.views()` views of `tta` laid end to end, each a packed RGB8 `S × S` image
    /// ([`preprocess::tta_views_u8`]; a quarter of the floats' size while it waits in the queue);
    /// `name` only names the image in the error message.
    fn prepare(&self, bytes: &[u8], name: &str, tta: Tta) -> Result<Vec<u8>, BackendError>;
    /// Runs the network on `ks.len()` prepared images laid end to end in `input`, and returns for
    /// image `i` its top `ks[i]` classes. After [`Backend::calibrate`], an image's answer has the
    /// same bits whatever else shares its pass.
    fn predict(&self, input: &[u8], ks: &[usize]) -> Result<Vec<Vec<ClassProb>>, BackendError>;
    /// Called once before serving when answers must not depend on batch size: lets the backend
    /// find how to run passes of 1 to `max_batch` images so that each gives an image the same bits
    /// as a full pass, and run them so from then on; returns, for each `n` in `0..=max_batch`, how
    /// many images a pass of `n` runs as. The default runs every pass at its size and returns
    /// `0..=max_batch`.
    fn calibrate(&self, max_batch: usize) -> Result<Vec<usize>, BackendError> {
        Ok((0..=max_batch).collect())
    }
}

/// A [`Backend`] on a petal checkpoint, through [`infer::Predictor`].
pub struct PredictorBackend {
    info: ModelInfo,
    transform: TransformConfig,
    // A libtorch module is `Send` but not `Sync`; only the model's batcher locks it, one batch at a time.
    predictor: Mutex<Predictor>,
    /// From [`Backend::calibrate`]: a pass of `n` images runs as `run_as[n]` images (blank images
    /// added) to give the bits of a full pass.
    run_as: Mutex<Option<Vec<usize>>>,
}

impl PredictorBackend {
    /// Loads `path` onto `device` with libtorch, serving it as `name`; uploads larger than
    /// `max_pixels` are refused.
    pub fn load(name: &str, path: &Path, device: Device, max_pixels: u64) -> Result<Self, Error> {
        Self::load_with_runtime(name, path, (device, infer::Runtime::Torch), max_pixels)
    }

    /// [`PredictorBackend::load`] with the backbone on `runtime` (see [`Predictor::set_runtime`]).
    pub fn load_with_runtime(name: &str, path: &Path, (device, runtime): (Device, infer::Runtime), max_pixels: u64) -> Result<Self, Error> {
        Self::load_with_backend(name, path, (device, runtime, infer::Precision::Auto), max_pixels)
    }

    /// [`PredictorBackend::load`] with the backbone on `runtime` in `precision` (see
    /// [`Predictor::set_backend`]).
    pub fn load_with_backend(
        name: &str,
        path: &Path,
        (device, runtime, precision): (Device, infer::Runtime, infer::Precision),
        max_pixels: u64,
    ) -> Result<Self, Error> {
        let err = |detail: String| Error::Checkpoint { path: path.to_path_buf(), detail };
        let checkpoint_sha256 = petal_common::sha256_file(path).map_err(|e| err(e.to_string()))?;
        let mut predictor = Predictor::load(path, device).map_err(|e| err(e.to_string()))?;
        predictor.set_backend(runtime, precision, None).map_err(|e| err(e.to_string()))?;
        // The network runs on its folded weights; the unfolded originals would only take memory.
        predictor.release_checkpoint_weights();
        let mut transform = predictor.transform.clone();
        transform.limits.max_pixels = max_pixels;
        transform.validate().map_err(|e| err(e.to_string()))?;
        let classes = predictor
            .classes
            .iter()
            .map(|c| ClassInfo { index: c.index, folder: c.folder.clone(), name: c.name.clone().unwrap_or_else(|| c.folder.clone()) })
            .collect();
        let meta = &predictor.meta;
        let info = ModelInfo {
            name: name.to_string(),
            file: path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            checkpoint_sha256,
            arch: meta.arch.clone(),
            num_classes: predictor.num_classes(),
            classes,
            preprocessing: meta.preprocessing.clone(),
            metrics: meta.metrics.clone(),
            created_utc: meta.created_utc.clone(),
            tta: predictor.tta,
            runtime: predictor.runtime(),
            precision: predictor.precision(),
            int8: infer::Int8Record::from_meta(meta).map(|r| Int8Summary {
                accepted: r.accepted,
                fp32_top1: r.fp32_top1,
                int8_top1: r.int8_top1,
                loss_points: r.loss_points,
                top1_agreement: r.top1_agreement,
                bias_corrected: !r.calibration.weight_shifts.is_empty(),
                max_loss_points: r.max_loss_points,
                eval_split: r.eval_split,
                calibration_images: r.calibration_images,
            }),
        };
        Ok(PredictorBackend { info, transform, predictor: Mutex::new(predictor), run_as: Mutex::new(None) })
    }
}

impl Backend for PredictorBackend {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn prepare(&self, bytes: &[u8], name: &str, tta: Tta) -> Result<Vec<u8>, BackendError> {
        let views = preprocess::tta_views_u8_of_bytes(bytes, Path::new(name), &self.transform, tta).map_err(|e| match e {
            preprocess::Error::BadInput(_) => BackendError::BadImage(e.to_string()),
            other => BackendError::BadImage(format!("{name}: {other}")),
        })?;
        Ok(views.into_iter().flat_map(|v| v.into_raw()).collect())
    }

    fn predict(&self, input: &[u8], ks: &[usize]) -> Result<Vec<Vec<ClassProb>>, BackendError> {
        let n = ks.len();
        let per_image = self.per_image();
        if n == 0 || input.len() != n * per_image {
            return Err(BackendError::Failed(format!("input of {} bytes is not {n} images of {per_image} values", input.len())));
        }
        let run_as = self.run_as(n);
        let mut padded;
        let input = if run_as > n {
            padded = input.to_vec();
            padded.resize(run_as * per_image, 0);
            &padded[..]
        } else {
            input
        };
        // The network is immutable: a panic in an earlier batch cannot have left it half-changed.
        let predictor = self.predictor.lock().unwrap_or_else(|p| p.into_inner());
        let flat = self.probabilities(&predictor, input).map_err(BackendError::Failed)?;
        let classes = predictor.num_classes();
        Ok(flat.chunks(classes).take(n).zip(ks).map(|(row, &k)| predictor.top_k(row, k)).collect())
    }

    fn calibrate(&self, max_batch: usize) -> Result<Vec<usize>, BackendError> {
        let per_image = self.per_image();
        // Any input will do: kernels are chosen by shape, not by value.
        let mut state = 0x9e37_79b9u32;
        let probe: Vec<u8> = (0..max_batch * per_image)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        let predictor = self.predictor.lock().unwrap_or_else(|p| p.into_inner());
        let full = self.probabilities(&predictor, &probe).map_err(BackendError::Failed)?;
        let row = full.len() / max_batch;
        // agrees[m]: a pass of m images gives each of them the bits of the full pass.
        let mut agrees = vec![false; max_batch + 1];
        agrees[max_batch] = true;
        for (m, ok) in agrees.iter_mut().enumerate().take(max_batch).skip(1) {
            let got = self.probabilities(&predictor, &probe[..m * per_image]).map_err(BackendError::Failed)?;
            *ok = got.iter().zip(&full[..m * row]).all(|(a, b)| a.to_bits() == b.to_bits());
        }
        let run_as: Vec<usize> = (0..=max_batch).map(|n| (n..=max_batch).find(|&m| agrees[m]).unwrap_or(max_batch)).collect();
        *self.run_as.lock().unwrap_or_else(|p| p.into_inner()) = Some(run_as.clone());
        Ok(run_as)
    }
}

impl PredictorBackend {
    /// Bytes per prepared image (and floats per network input image).
    fn per_image(&self) -> usize {
        let s = self.transform.image_size as usize;
        3 * s * s
    }

    /// How many images a pass of `n` runs as: as calibrated, or `n` itself when not calibrated
    /// or when `n` is past the calibrated sizes.
    fn run_as(&self, n: usize) -> usize {
        match &*self.run_as.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(run_as) => run_as.get(n).copied().unwrap_or(n),
            None => n,
        }
    }

    /// Probabilities of the prepared images laid end to end in `input`, flat (the head runs each
    /// image alone, [`Predictor::raw_logits`]); `ToTensor` + `Normalize` happen here, just before
    /// the pass.
    fn probabilities(&self, predictor: &Predictor, input: &[u8]) -> Result<Vec<f32>, String> {
        let size = self.transform.image_size as i64;
        let per_image = self.per_image();
        let n = (input.len() / per_image) as i64;
        let mut floats = vec![0f32; input.len()];
        for (rgb, out) in input.chunks(per_image).zip(floats.chunks_mut(per_image)) {
            preprocess::write_tensor(rgb, size as u32, &self.transform, false, false, out);
        }
        let x = Tensor::f_from_slice(&floats).and_then(|t| t.f_view([n, 3, size, size])).map_err(|e| e.to_string())?;
        let probs = predictor.probabilities(&x).map_err(|e| e.to_string())?;
        probs.f_flatten(0, -1).and_then(|t| Vec::<f32>::try_from(&t)).map_err(|e| e.to_string())
    }

    /// The calibrated pass sizes (`run_as[n]` for passes of `n` images), if [`Backend::calibrate`] ran.
    pub fn calibrated(&self) -> Option<Vec<usize>> {
        self.run_as.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
