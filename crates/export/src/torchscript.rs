//! TorchScript export: the libtorch forward traced into a `torch.jit` module.

use std::path::Path;

use tch::{CModule, Kind, Tensor};

use crate::{Error, Loaded, OutputKind};

/// Traces `loaded`'s eval-mode forward followed by its output activation on a `[batch, 3, S, S]`
/// example; the module's `forward` takes any batch size (no shape-dependent operation is traced:
/// the input requires grad during tracing, so DenseNet takes torchvision's `cat` path rather
/// than the pre-allocated inference buffer, whose size would be frozen into the trace).
pub fn trace(loaded: &Loaded, batch: i64) -> Result<CModule, Error> {
    let example = Tensor::zeros(loaded.input_shape(batch), (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let output = loaded.output;
    let mut forward = |xs: &[Tensor]| {
        let logits = loaded.net.forward_t(&xs[0], false);
        let y = match output {
            OutputKind::Probabilities => logits.softmax(1, Kind::Float),
            OutputKind::LogProbabilities => logits.log_softmax(1, Kind::Float),
        };
        vec![y]
    };
    CModule::create_by_tracing("PetalClassifier", "forward", &[example], &mut forward).map_err(|e| Error::Torch(format!("tracing: {e}")))
}

/// The module as the bytes `torch.jit.save` writes: saved to a temp file beside nothing that
/// matters (the system temp folder), then read back, so the caller can write it atomically.
pub(crate) fn to_bytes(module: &CModule, out: &Path) -> Result<Vec<u8>, Error> {
    let tmp = tempfile::Builder::new()
        .prefix(".petal-export-")
        .suffix(".pt")
        .tempfile()
        .map_err(|e| Error::Output { path: out.to_path_buf(), detail: format!("creating a temp file: {e}") })?;
    module.save(tmp.path()).map_err(|e| Error::Torch(format!("saving the TorchScript module: {e}")))?;
    std::fs::read(tmp.path()).map_err(|e| Error::Output { path: tmp.path().to_path_buf(), detail: e.to_string() })
}
