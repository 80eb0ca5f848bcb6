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
        let logits = loaded.predictor.apply_temperature(loaded.predictor.network().forward_t(&xs[0], false));
        let y = match output {
            OutputKind::Probabilities => logits.softmax(1, Kind::Float),
            OutputKind::LogProbabilities => logits.log_softmax(1, Kind::Float),
        };
        vec![y]
    };
    CModule::create_by_tracing("PetalClassifier", "forward", &[example], &mut forward).map_err(|e| Error::Torch(format!("tracing: {e}")))
}

/// Saves the module as `torch.jit.save` does (`torch.jit.load` reads it) at `path`.
pub(crate) fn save(module: &CModule, path: &Path) -> Result<(), Error> {
    module.save(path).map_err(|e| Error::Torch(format!("saving the TorchScript module to {}: {e}", path.display())))
}
