//! Served models: what the server needs of a network ([`Backend`]), its public description
//! ([`ModelInfo`]), and the implementation on a petal checkpoint ([`PredictorBackend`]).

use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use infer::{ClassProb, Predictor};
use preprocess::{TransformConfig, Tta};
use serde::Serialize;
use sha2::{Digest, Sha256};
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
}

/// What the server needs of a network. The server calls [`Backend::prepare`] on a thread pool,
/// one image per call and several at once, and [`Backend::predict`] from one blocking thread per
/// model at a time, never on the async runtime.
pub trait Backend: Send + Sync + 'static {
    /// The model's description.
    fn info(&self) -> &ModelInfo;
    /// Decodes and transforms one uploaded image into the network input: the `tta.views()` views
    /// of `tta` laid end to end (each `3 × S × S` floats, channels first); `name` only names the
    /// image in the error message.
    fn prepare(&self, bytes: &[u8], name: &str, tta: Tta) -> Result<Vec<f32>, String>;
    /// Runs the network on `ks.len()` prepared images laid end to end in `input`, and returns for
    /// image `i` its top `ks[i]` classes.
    fn predict(&self, input: &[f32], ks: &[usize]) -> Result<Vec<Vec<ClassProb>>, String>;
}

/// A [`Backend`] on a petal checkpoint, through [`infer::Predictor`].
pub struct PredictorBackend {
    info: ModelInfo,
    transform: TransformConfig,
    // A libtorch module is `Send` but not `Sync`; only the model's batcher locks it, one batch at a time.
    predictor: Mutex<Predictor>,
}

impl PredictorBackend {
    /// Loads `path` onto `device`, serving it as `name`; uploads larger than `max_pixels` are refused.
    pub fn load(name: &str, path: &Path, device: Device, max_pixels: u64) -> Result<Self, Error> {
        let err = |detail: String| Error::Checkpoint { path: path.to_path_buf(), detail };
        let checkpoint_sha256 = sha256_file(path).map_err(|e| err(e.to_string()))?;
        let predictor = Predictor::load(path, device).map_err(|e| err(e.to_string()))?;
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
        };
        Ok(PredictorBackend { info, transform, predictor: Mutex::new(predictor) })
    }
}

impl Backend for PredictorBackend {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn prepare(&self, bytes: &[u8], name: &str, tta: Tta) -> Result<Vec<f32>, String> {
        let img = preprocess::decode_rgb_bytes(bytes, Path::new(name), &self.transform.limits).map_err(|e| e.to_string())?;
        Ok(preprocess::tta_views(&img, &self.transform, tta).map_err(|e| format!("{name}: {e}"))?.concat())
    }

    fn predict(&self, input: &[f32], ks: &[usize]) -> Result<Vec<Vec<ClassProb>>, String> {
        let n = ks.len();
        let size = self.transform.image_size as i64;
        if n == 0 || input.len() != n * 3 * (size * size) as usize {
            return Err(format!("input of {} floats is not {n} images of 3x{size}x{size}", input.len()));
        }
        // The network is immutable: a panic in an earlier batch cannot have left it half-changed.
        let predictor = self.predictor.lock().unwrap_or_else(|p| p.into_inner());
        let x = Tensor::f_from_slice(input).and_then(|t| t.f_view([n as i64, 3, size, size])).map_err(|e| e.to_string())?;
        let probs = predictor.probabilities(&x);
        let flat = probs.f_flatten(0, -1).and_then(|t| Vec::<f32>::try_from(&t)).map_err(|e| e.to_string())?;
        let classes = predictor.num_classes();
        Ok(flat.chunks(classes).zip(ks).map(|(row, &k)| predictor.top_k(row, k)).collect())
    }
}

/// SHA-256 of a file, hex.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
