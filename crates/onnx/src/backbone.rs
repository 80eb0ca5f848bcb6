//! A network's backbone as an onnxruntime session: the graph built from its parameters, or read
//! from a cache folder where an earlier process left it.

use std::path::{Path, PathBuf};

use model::Arch;
use tch::Tensor;

use crate::graph::Params;
use crate::quantize::Calibration;
use crate::runtime::SessionOptions;
use crate::{backbone_model, prefix_model, to_bytes, Error, OrtNet};

/// Version of cached backbone files (bump when the graph of the same weights changes).
pub const GRAPH_CACHE_VERSION: u32 = 1;

/// What a backbone graph is built from: the architecture, the input side, the feature width, and
/// the identity of the weights (a checkpoint's digest, a weights file's identity).
#[derive(Debug, Clone, Copy)]
pub struct BackboneSpec<'a> {
    /// The architecture.
    pub arch: &'a Arch,
    /// The input is `[batch, 3, side, side]`.
    pub side: i64,
    /// The pooled features' width.
    pub feature_dim: i64,
    /// Identity of the weights (part of the cache file's name).
    pub weights: &'a str,
}

impl BackboneSpec<'_> {
    /// The cached float graph for this spec in `dir`: `backbone-<digest>.onnx`, the digest of every
    /// field and of [`GRAPH_CACHE_VERSION`] and the opset.
    pub fn cache_path(&self, dir: &Path) -> PathBuf {
        self.cache_path_of(dir, serde_json::Value::Null)
    }

    /// The cached file of a variant of this spec's graph (`variant` names how it differs from the
    /// float graph, e.g. its int8 calibration); `Null` is the float graph.
    fn cache_path_of(&self, dir: &Path, variant: serde_json::Value) -> PathBuf {
        let mut key = serde_json::json!({
            "kind": "petal.backbone.onnx",
            "version": GRAPH_CACHE_VERSION,
            "opset": crate::OPSET,
            "arch": self.arch,
            "side": self.side,
            "feature_dim": self.feature_dim,
            "weights": self.weights,
        });
        if !variant.is_null() {
            key["variant"] = variant;
        }
        let digest = petal_common::sha256_hex(key.to_string().as_bytes());
        dir.join(format!("backbone-{}.onnx", &digest[..24]))
    }
}

/// The backbone of `spec` in an onnxruntime session run with `options` (a thread count converts, 0: one per
/// core). With `cache`, the serialised graph is read from there when an earlier run left it
/// (rebuilt once if onnxruntime refuses the file), and otherwise written there atomically; `params`
/// is only called when the graph has to be built.
pub fn backbone_net(
    spec: BackboneSpec,
    params: impl Fn() -> Params,
    cache: Option<&Path>,
    options: impl Into<SessionOptions>,
) -> Result<OrtNet, Error> {
    let build = || -> Result<Vec<u8>, Error> { Ok(to_bytes(&backbone_model(&params(), spec.arch, spec.side, spec.feature_dim)?)) };
    cached_net(cache.map(|dir| spec.cache_path(dir)), build, options.into())
}

/// The frozen part of `spec`'s backbone, cut after its first `units` units (partial mode's
/// activations, see [`crate::model::prefix_model`]); cached under a name that also covers the cut.
/// `spec.feature_dim` is the whole backbone's (it only names the file).
pub fn prefix_net(
    spec: BackboneSpec,
    units: usize,
    params: impl Fn() -> Params,
    cache: Option<&Path>,
    options: impl Into<SessionOptions>,
) -> Result<OrtNet, Error> {
    let build = || -> Result<Vec<u8>, Error> { Ok(to_bytes(&prefix_model(&params(), spec.arch, spec.side, units)?)) };
    cached_net(cache.map(|dir| spec.cache_path_of(dir, serde_json::json!({ "prefix_units": units }))), build, options.into())
}

/// [`backbone_net`] quantized to int8 with `calibration` (see [`crate::quantize`]); cached under a
/// name that also covers the calibration (its ranges and means).
pub fn backbone_net_int8(
    spec: BackboneSpec,
    params: impl Fn() -> Params,
    calibration: &Calibration,
    cache: Option<&Path>,
    options: impl Into<SessionOptions>,
) -> Result<OrtNet, Error> {
    let build = || -> Result<Vec<u8>, Error> {
        let float = backbone_model(&params(), spec.arch, spec.side, spec.feature_dim)?;
        Ok(to_bytes(&crate::quantize::quantize(&float, calibration)?))
    };
    let variant = || {
        let calibration = serde_json::to_string(calibration).unwrap_or_default();
        serde_json::json!({"precision": "int8", "calibration": petal_common::sha256_hex(calibration.as_bytes())})
    };
    cached_net(cache.map(|dir| spec.cache_path_of(dir, variant())), build, options.into())
}

/// A session of the graph cached at `path` (rebuilt by `build` when absent or refused, and written
/// there atomically), or of `build`'s graph when there is no cache.
fn cached_net(path: Option<PathBuf>, build: impl Fn() -> Result<Vec<u8>, Error>, options: SessionOptions) -> Result<OrtNet, Error> {
    let Some(path) = path else { return OrtNet::new(&build()?, options) };
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(net) = OrtNet::new(&bytes, options) {
            return Ok(net);
        }
    }
    let bytes = build()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Cache(format!("{}: {e}", dir.display())))?;
    }
    petal_common::write_atomic(&path, &bytes).map_err(|e| Error::Cache(e.to_string()))?;
    OrtNet::new(&bytes, options)
}

impl OrtNet {
    /// Runs the batch `x` (any device and float kind; converted to f32 on the CPU) and returns the
    /// first output as a CPU tensor.
    pub fn run_tensor(&self, x: &Tensor) -> Result<Tensor, Error> {
        let x = x.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).contiguous();
        let shape: Vec<usize> = x.size().iter().map(|&d| d as usize).collect();
        let data = Vec::<f32>::try_from(x.flatten(0, -1)).map_err(|e| Error::Run(format!("reading the input batch: {e}")))?;
        let (out_shape, values) = self.run(&data, &shape)?;
        let dims: Vec<i64> = out_shape.iter().map(|&d| d as i64).collect();
        Ok(Tensor::from_slice(&values).view(dims.as_slice()))
    }
}
