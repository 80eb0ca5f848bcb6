//! onnxruntime through the `ort` crate: the library loaded once per process from where
//! `cargo xtask setup` put it, and [`OrtNet`], one model ready to run batches.

use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;
use parking_lot::Mutex;
use petal_common::onnxruntime as lib;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Which runtime runs the forward passes that do not train (feature extraction, prediction,
/// evaluation, serving). Training (backpropagation) always runs on libtorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// The fastest one measured on the device (docs/history/benchmarks.md, "onnxruntime"): onnxruntime on the
    /// CPU when its library loads, libtorch on CUDA and when it does not.
    #[default]
    Auto,
    /// libtorch (through `tch`), on any device.
    Torch,
    /// onnxruntime (CPU); its library comes from `cargo xtask setup`.
    Onnxruntime,
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Runtime::Auto => "auto",
            Runtime::Torch => "torch",
            Runtime::Onnxruntime => "onnxruntime",
        })
    }
}

impl std::str::FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Runtime::Auto),
            "torch" | "libtorch" => Ok(Runtime::Torch),
            "onnxruntime" | "ort" => Ok(Runtime::Onnxruntime),
            other => Err(format!("unknown runtime {other:?} (expected auto, torch or onnxruntime)")),
        }
    }
}

/// A runtime decided for a device: what runs, and why when it is not what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// [`Runtime::Torch`] or [`Runtime::Onnxruntime`], never `Auto`.
    pub runtime: Runtime,
    /// Set when `Auto` fell back to libtorch because onnxruntime could not be loaded.
    pub fallback: Option<String>,
}

impl Runtime {
    /// What runs on `device`: `Auto` is onnxruntime on the CPU when its library loads, libtorch
    /// otherwise (with the reason in [`Resolved::fallback`] when the library is missing). An explicit
    /// choice stays as asked, except that onnxruntime on a GPU is refused (petal provisions its CPU
    /// build only).
    pub fn resolve(self, device: tch::Device) -> Result<Resolved, Error> {
        match (self, device) {
            (Runtime::Torch, _) => Ok(Resolved { runtime: Runtime::Torch, fallback: None }),
            (Runtime::Auto, tch::Device::Cpu) => match environment() {
                Ok(_) => Ok(Resolved { runtime: Runtime::Onnxruntime, fallback: None }),
                Err(e) => Ok(Resolved { runtime: Runtime::Torch, fallback: Some(e.to_string()) }),
            },
            (Runtime::Auto, _) => Ok(Resolved { runtime: Runtime::Torch, fallback: None }),
            (Runtime::Onnxruntime, tch::Device::Cpu) => {
                environment()?;
                Ok(Resolved { runtime: Runtime::Onnxruntime, fallback: None })
            }
            (Runtime::Onnxruntime, other) => Err(Error::Library(format!(
                "petal runs onnxruntime on the CPU only (its CPU build is what setup provisions), not on {other:?}: use --runtime torch on a GPU"
            ))),
        }
    }
}

/// The process's onnxruntime environment, created on first use from the library
/// [`petal_common::onnxruntime::locate`] finds.
pub fn environment() -> Result<&'static Environment, Error> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = lib::locate().map_err(|searched| {
            let list: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
            format!(
                "its library ({}) was not found (looked for {}): run `cargo xtask setup`, or set {} to a folder whose lib/ holds onnxruntime {}",
                lib::library_name(),
                if list.is_empty() { "nothing".to_string() } else { list.join(", ") },
                lib::ENV_VAR,
                lib::VERSION
            )
        })?;
        load(&path)
    })
    .as_ref()
    .map_err(|e| Error::Library(e.clone()))
}

fn load(path: &Path) -> Result<Environment, String> {
    let builder =
        ort::init_from(path).map_err(|e| format!("{}: {e} (run `cargo xtask setup` to provision onnxruntime {})", path.display(), lib::VERSION))?;
    builder.with_name("petal").build().map_err(|e| format!("{}: {e}", path.display()))
}

/// The version string of the loaded library (`1.32.0`).
pub fn version() -> Result<String, Error> {
    environment()?;
    Ok(ort::info().split(',').find_map(|kv| kv.trim().strip_prefix("git-branch=rel-")).unwrap_or(lib::VERSION).to_string())
}

/// One output of [`OrtNet::run_all`]: its name, dimensions and values (row-major).
#[derive(Debug, Clone)]
pub struct NamedOutput {
    /// The graph output's name.
    pub name: String,
    /// Its dimensions.
    pub dims: Vec<usize>,
    /// Its values, row-major.
    pub values: Vec<f32>,
}

/// One ONNX model in an onnxruntime session, run one batch at a time (the session is behind a
/// mutex: `ort` runs take `&mut`).
pub struct OrtNet {
    session: Mutex<Session>,
    input: String,
    output: String,
    outputs: Vec<String>,
}

impl std::fmt::Debug for OrtNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtNet").field("input", &self.input).field("output", &self.output).finish()
    }
}

/// How an onnxruntime session runs: its intra-op threads and whether they spin between the
/// parallel parts of a pass. `SessionOptions::from(n)` is `n` threads without spinning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionOptions {
    /// Intra-op threads (0: one per core).
    pub threads: usize,
    /// Idle worker threads spin instead of sleeping (onnxruntime's own default). Off by default:
    /// petal's passes share the cores with image decoding (feature extraction, `serve`), which
    /// spinning workers starve (`petal serve` lost about 25 % of its throughput with it on). On, a
    /// lone small pass runs faster (Lite0 at batch 1 on 2 cores: about +25 %); turn it on when the
    /// process runs passes back to back and nothing else meanwhile (docs/history/benchmarks.md,
    /// "The head on one libtorch thread"). `infer::Predictor` then also runs its head on one libtorch
    /// thread.
    pub spinning: bool,
}

impl From<usize> for SessionOptions {
    fn from(threads: usize) -> SessionOptions {
        SessionOptions { threads, spinning: false }
    }
}

impl OrtNet {
    /// A session of the serialised model `bytes` with `options` (a thread count converts:
    /// that many intra-op threads, 0 for one per core, idle workers sleeping).
    pub fn new(bytes: &[u8], options: impl Into<SessionOptions>) -> Result<OrtNet, Error> {
        let SessionOptions { threads, spinning } = options.into();
        let env = environment()?;
        let err = |e: ort::Error<ort::session::builder::SessionBuilder>| Error::Run(e.to_string());
        let mut builder = Session::builder(env).map_err(|e| Error::Run(e.to_string()))?;
        if threads > 0 {
            builder = builder.with_intra_threads(threads).map_err(err)?;
        }
        builder = builder.with_intra_op_spinning(spinning).map_err(err)?;
        let session = builder.commit_from_memory(bytes).map_err(|e| Error::Run(format!("loading the model: {e}")))?;
        let input = session.inputs().first().map(|i| i.name().to_string()).ok_or_else(|| Error::Run("the model has no input".into()))?;
        let outputs: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
        let output = outputs.first().cloned().ok_or_else(|| Error::Run("the model has no output".into()))?;
        Ok(OrtNet { session: Mutex::new(session), input, output, outputs })
    }

    /// Runs one batch: `data` is row-major with dimensions `shape`; returns the first output's
    /// dimensions and values.
    pub fn run(&self, data: &[f32], shape: &[usize]) -> Result<(Vec<usize>, Vec<f32>), Error> {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let tensor = TensorRef::from_array_view((dims, data)).map_err(|e| Error::Run(format!("input of shape {shape:?}: {e}")))?;
        let mut session = self.session.lock();
        let outputs = session.run(ort::inputs![self.input.as_str() => tensor]).map_err(|e| Error::Run(e.to_string()))?;
        let (out_shape, values) = outputs[self.output.as_str()].try_extract_tensor::<f32>().map_err(|e| Error::Run(e.to_string()))?;
        Ok((out_shape.iter().map(|&d| d.max(0) as usize).collect(), values.to_vec()))
    }

    /// Runs one batch and returns every output.
    pub fn run_all(&self, data: &[f32], shape: &[usize]) -> Result<Vec<NamedOutput>, Error> {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let tensor = TensorRef::from_array_view((dims, data)).map_err(|e| Error::Run(format!("input of shape {shape:?}: {e}")))?;
        let mut session = self.session.lock();
        let outputs = session.run(ort::inputs![self.input.as_str() => tensor]).map_err(|e| Error::Run(e.to_string()))?;
        self.outputs
            .iter()
            .map(|name| {
                let (dims, values) = outputs[name.as_str()].try_extract_tensor::<f32>().map_err(|e| Error::Run(format!("output {name}: {e}")))?;
                Ok(NamedOutput { name: name.clone(), dims: dims.iter().map(|&d| d.max(0) as usize).collect(), values: values.to_vec() })
            })
            .collect()
    }
}
