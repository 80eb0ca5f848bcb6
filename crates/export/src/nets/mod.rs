//! One ONNX graph description per architecture family, written with the layer methods of
//! [`Graph`] and the PyTorch module names of the model crate (see its crate docs).
//!
//! Adding an architecture: write `fn name(g, params, ...) -> Result<String, Error>` that emits its
//! backbone from the input to the pooled, flattened features (the head's input), and add a
//! match arm in [`backbone`]. The exporter is checked by `tests/onnx_tract.rs`, which compares the
//! ONNX file run by tract with petal's libtorch forward; add the architecture to its list.

mod densenet;
mod efficientnet;
mod head;

use model::Arch;

use crate::graph::{Graph, Params};
use crate::{Error, Format};

pub use head::head;

/// Emits the backbone of `arch` reading `input`; returns the pooled features `[batch, F]`.
/// An architecture without an exporter is [`Error::Unsupported`].
pub fn backbone(g: &mut Graph, params: &Params, arch: &Arch, input: &str) -> Result<String, Error> {
    #[allow(unreachable_patterns)]
    match arch {
        Arch::DenseNet121 | Arch::DenseNet161 | Arch::DenseNet169 | Arch::DenseNet201 | Arch::DenseNet(_) => {
            let cfg = arch.densenet_config().ok_or_else(|| Error::Graph(format!("{arch} has no DenseNet config")))?;
            densenet::densenet(g, params, &cfg, input)
        }
        Arch::EfficientNetLite0 => efficientnet::lite0(g, params, input),
        _ => Err(Error::Unsupported { path: Default::default(), arch: arch.name().to_string(), format: Format::Onnx }),
    }
}
