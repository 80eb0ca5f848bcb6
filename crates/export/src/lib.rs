//! Export of petal checkpoints to ONNX and TorchScript, for runtimes outside petal (ONNX Runtime,
//! TensorRT, OpenVINO, browsers and phones read ONNX; PyTorch users load TorchScript).
//!
//! This crate owns the exported files and their JSON sidecar. It rebuilds the network from a
//! checkpoint exactly as prediction does (architecture and head from the metadata, strict weight
//! load), then:
//! - **ONNX**: walks the architecture with a small graph builder ([`graph`]) and writes the
//!   `ModelProto` with `prost` types generated from the official `onnx.proto` (committed in
//!   `proto/` of the `onnx` crate), never through Python. The graph is the one `torch.onnx.export` gives for the same
//!   torchvision/`efficientnet_lite_pytorch` model in eval mode: `Conv` with batch norms that
//!   follow a convolution folded in, `BatchNormalization` for the pre-activation ones,
//!   `Relu`/`Clip` (ReLU6), `Concat`, pools, `GlobalAveragePool`, `Flatten`, `Gemm`, then
//!   `Softmax` or `LogSoftmax` according to the checkpoint's output semantics. Opset
//!   [`OPSET`], IR version [`IR_VERSION`], a dynamic batch dimension (`dim_param` `batch`).
//! - **TorchScript**: traces the libtorch forward (plus the output activation) into a
//!   `torch.jit` module that `torch.jit.load` reads.
//!
//! Class names, preprocessing, output semantics and the petal version go into the ONNX
//! `metadata_props` and into a JSON sidecar `<out>.json` ([`ExportInfo`]). Files are written
//! atomically. Adding an architecture means one function in [`nets`].

#![warn(missing_docs)]

mod onnx;
mod torchscript;

/// The graph builder, the architectures' graphs and the ONNX protobuf types live in the `onnx`
/// crate (package `petal-onnx`), which also runs them in onnxruntime; they are re-exported here.
pub use petal_onnx::{graph, nets, proto};

use std::path::{Path, PathBuf};

use checkpoint::{ClassEntry, Preprocessing};
use infer::Predictor;
use model::{Arch, HeadConfig};
use serde::{Deserialize, Serialize};
use tch::Device;

pub use onnx::onnx_model;
pub use petal_onnx::{INPUT_NAME, IR_VERSION, OPSET};
pub use torchscript::trace;

/// The petal version stamped into every export.
pub const PETAL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What can go wrong while exporting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The checkpoint cannot be read, names an unknown architecture, or its weights do not fit.
    #[error(transparent)]
    Load(#[from] infer::Error),
    /// The checkpoint lacks what an export needs.
    #[error("{}: {detail}", path.display())]
    Unusable {
        /// The checkpoint.
        path: PathBuf,
        /// What is missing or wrong.
        detail: String,
    },
    /// The output cannot be written.
    #[error("{}: cannot write the export: {detail}", path.display())]
    Output {
        /// The output file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] petal_common::IoError),
    /// Building the graph failed (a parameter missing or mis-shaped).
    #[error("building the ONNX graph: {0}")]
    Graph(String),
    /// The graph builder failed.
    #[error(transparent)]
    Onnx(#[from] petal_onnx::Error),
    /// A libtorch operation failed (tracing, saving).
    #[error("libtorch: {0}")]
    Torch(String),
}

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// ONNX (opset [`OPSET`]).
    Onnx,
    /// TorchScript (a traced `torch.jit` module, `torch.jit.load` reads it).
    Torchscript,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Onnx => "ONNX",
            Format::Torchscript => "TorchScript",
        })
    }
}

/// What the exported network outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Softmax probabilities `[batch, classes]` (petal heads: what `petal predict` reports).
    Probabilities,
    /// Log-probabilities (seed-style heads that end in `LogSoftmax`; `exp` gives probabilities).
    LogProbabilities,
}

impl OutputKind {
    /// The output tensor's name, which is also the value of the `output` metadata entry.
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Probabilities => "probabilities",
            OutputKind::LogProbabilities => "log_probabilities",
        }
    }

    /// The output kind of a checkpoint: a seed-style head that ends in `LogSoftmax` is marked by
    /// `"output": "log_softmax"` in the head config, or in the `provenance` of a checkpoint
    /// converted from an old PyTorch file ([`model::legacy`]); anything else outputs probabilities.
    pub fn of_meta(meta: &checkpoint::Metadata) -> OutputKind {
        let log = [&meta.head, &meta.provenance]
            .iter()
            .any(|v| matches!(v.get("output").and_then(|v| v.as_str()), Some("log_softmax" | "log_probabilities" | "logsoftmax")));
        if log {
            OutputKind::LogProbabilities
        } else {
            OutputKind::Probabilities
        }
    }
}

/// A checkpoint rebuilt into a libtorch network by [`infer::Predictor`] (the code `petal predict`
/// runs), with what the export records about it.
pub struct Loaded {
    /// The network as prediction runs it (frozen, batch norms folded); its variable store keeps
    /// the unfolded weights, which [`Loaded::params`] reads.
    pub predictor: Predictor,
    /// The architecture.
    pub arch: Arch,
    /// The evaluation preprocessing.
    pub preprocessing: Preprocessing,
    /// Output semantics.
    pub output: OutputKind,
    /// The checkpoint file.
    pub source: PathBuf,
}

impl Loaded {
    /// Reads `path` (a petal checkpoint, or an old PyTorch one that [`infer::Predictor::load`]
    /// converts) and rebuilds its network on the CPU; the weights are loaded strictly (every
    /// missing, unexpected or mis-shaped tensor is named).
    pub fn load(path: &Path) -> Result<Loaded, Error> {
        let predictor = Predictor::load(path, Device::Cpu)?;
        let preprocessing = predictor
            .meta
            .preprocessing
            .clone()
            .ok_or_else(|| Error::Unusable { path: path.to_path_buf(), detail: "records no preprocessing".into() })?;
        let output = OutputKind::of_meta(&predictor.meta);
        let arch = predictor.network().arch().clone();
        Ok(Loaded { predictor, arch, preprocessing, output, source: path.to_path_buf() })
    }

    /// The network's parameters and buffers by PyTorch name (batch norms not folded).
    pub fn params(&self) -> graph::Params {
        graph::Params::new(self.predictor.variables())
    }

    /// The head configuration.
    pub fn head(&self) -> &HeadConfig {
        self.predictor.head()
    }

    /// Classes in output order.
    pub fn classes(&self) -> &[ClassEntry] {
        &self.predictor.classes
    }

    /// The input shape `[batch, 3, size, size]` with `batch` as given.
    pub fn input_shape(&self, batch: i64) -> [i64; 4] {
        let s = self.preprocessing.input_size as i64;
        [batch, 3, s, s]
    }
}

/// What an export records about itself: written into the ONNX `metadata_props` (one entry per
/// field, JSON-valued fields as JSON text) and as the sidecar `<out>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportInfo {
    /// The format.
    pub format: Format,
    /// Architecture name (`densenet121`, ...).
    pub arch: String,
    /// Classes in output order (folder, index, display name).
    pub classes: Vec<ClassEntry>,
    /// The preprocessing the input must have had (resize, center crop, mean/std).
    pub preprocessing: Preprocessing,
    /// Output semantics.
    pub output: OutputKind,
    /// Input tensor name ([`INPUT_NAME`]).
    pub input_name: String,
    /// Input layout in words.
    pub input_layout: String,
    /// Output tensor name (`probabilities` or `log_probabilities`).
    pub output_name: String,
    /// ONNX opset (none for TorchScript).
    pub opset: Option<i64>,
    /// petal version that wrote the file.
    pub petal_version: String,
    /// File name of the source checkpoint.
    pub source_checkpoint: String,
    /// The calibration temperature the logits are divided by before the output activation (1:
    /// none), as the checkpoint records it.
    pub temperature: f64,
}

impl ExportInfo {
    /// The record for exporting `loaded` to `format`.
    pub fn new(loaded: &Loaded, format: Format) -> ExportInfo {
        let s = loaded.preprocessing.input_size;
        ExportInfo {
            format,
            arch: loaded.arch.name().to_string(),
            classes: loaded.classes().to_vec(),
            preprocessing: loaded.preprocessing.clone(),
            output: loaded.output,
            input_name: INPUT_NAME.into(),
            input_layout: format!("float32 [batch, 3, {s}, {s}], RGB scaled to [0, 1] then normalised with mean/std"),
            output_name: loaded.output.name().into(),
            opset: (format == Format::Onnx).then_some(OPSET),
            petal_version: PETAL_VERSION.into(),
            source_checkpoint: loaded.source.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            temperature: loaded.predictor.temperature(),
        }
    }
}

/// What [`export`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The model file.
    pub path: PathBuf,
    /// The JSON sidecar.
    pub sidecar: PathBuf,
    /// Its content.
    pub info: ExportInfo,
    /// Size of the model file in bytes.
    pub bytes: u64,
}

/// The sidecar path of an export: `<out>.json` (`model.onnx` → `model.onnx.json`).
pub fn sidecar_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// Exports the checkpoint at `checkpoint` to `format` at `out`, plus the sidecar
/// ([`sidecar_path`]). Both are written atomically (temp file + rename in the target folder);
/// the output folder must exist. Exports to the same `out` take turns through a lock beside it
/// (`<out>.lock`), so the file and its sidecar always come from the same export.
pub fn export(checkpoint: &Path, format: Format, out: &Path) -> Result<Exported, Error> {
    check_writable(out)?;
    let loaded = Loaded::load(checkpoint)?;
    let info = ExportInfo::new(&loaded, format);
    let output_err = |e: petal_common::IoError| Error::Output { path: out.to_path_buf(), detail: e.to_string() };
    let _turn = petal_common::FileLock::exclusive(out).map_err(output_err)?;
    match format {
        Format::Onnx => petal_common::write_atomic(out, &onnx::to_bytes(&onnx_model(&loaded, &info)?)).map_err(output_err)?,
        Format::Torchscript => {
            let module = trace(&loaded, 2)?;
            petal_common::write_atomic_with(out, |tmp| torchscript::save(&module, tmp)).map_err(|e| match e {
                Error::Io(e) => output_err(e),
                e => e,
            })?
        }
    }
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    let sidecar = sidecar_path(out);
    let json = serde_json::to_vec_pretty(&info).map_err(|e| Error::Output { path: sidecar.clone(), detail: e.to_string() })?;
    petal_common::write_atomic(&sidecar, &json).map_err(|e| Error::Output { path: sidecar.clone(), detail: e.to_string() })?;
    tracing::info!(out = %out.display(), %format, arch = %info.arch, bytes, "exported");
    Ok(Exported { path: out.to_path_buf(), sidecar, info, bytes })
}

/// Fails early (before any work) when `out` cannot be a file in an existing folder.
fn check_writable(out: &Path) -> Result<(), Error> {
    let fail = |detail: &str| Err(Error::Output { path: out.to_path_buf(), detail: detail.into() });
    if out.file_name().is_none() {
        return fail("the path has no file name");
    }
    if out.is_dir() {
        return fail("it is a directory");
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return fail(&format!("the folder {} does not exist", dir.display()));
    }
    // A file is created (and removed) in the folder, so that a read-only folder is refused now
    // rather than after the network has been built.
    let probe = dir.join(format!(".petal-export-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => fail(&format!("cannot create a file in {}: {e}", dir.display())),
    }
}
