//! torchvision's VGG (with and without batch norm) and AlexNet in eval mode: `features` (a
//! `Conv` per convolution, its batch norm folded in, `Relu`, `MaxPool`), then the adaptive
//! average pooling and flatten.

use model::{Layer, PlainSpec};

use crate::graph::{ConvSpec, Graph, Params};
use crate::Error;

/// torchvision's batch-norm epsilon.
const EPS: f64 = 1e-5;

/// Emits `features` on a `[N, 3, side, side]` input, then `avgpool` and flatten; the side of the
/// last map decides how the adaptive pooling is written (see [`Graph::adaptive_avg_pool_flatten`]).
pub(crate) fn plain(g: &mut Graph, p: &Params, spec: &PlainSpec, side: i64, input: &str) -> Result<String, Error> {
    let mut x = input.to_string();
    let mut side = side;
    for (layer, at) in spec.layers.iter().zip(spec.indices()) {
        match *layer {
            Layer::Conv(_, k, stride, pad) => {
                let conv = format!("features.{at}");
                x = if spec.batch_norm {
                    g.conv_bn(&x, p, &conv, true, &format!("features.{}", at + 1), EPS, ConvSpec::new(stride, pad))?
                } else {
                    g.conv(&x, p, &conv, true, ConvSpec::new(stride, pad))?
                };
                x = g.relu(&x, &format!("features.{}", at + 1 + usize::from(spec.batch_norm)));
                side = (side + 2 * pad - k) / stride + 1;
            }
            Layer::Pool(k, stride) => {
                x = g.max_pool(&x, &format!("features.{at}"), k, stride, 0);
                side = (side - k) / stride + 1;
            }
        }
        if side < 1 {
            return Err(Error::Graph(format!("the input is too small: the feature map vanishes at features.{at}")));
        }
    }
    Ok(g.adaptive_avg_pool_flatten(&x, "avgpool", spec.channels(), side, spec.pool))
}
