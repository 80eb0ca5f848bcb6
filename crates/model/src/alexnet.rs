//! AlexNet as in torchvision (`torchvision.models.alexnet`, the "one weird trick" variant):
//! `features.{0,3,6,8,10}` convolutions with bias, ReLU, max-pooling 3x3 stride 2 after the first,
//! second and fifth, then adaptive average pooling to 6x6 and flatten (9216 values, the input of
//! torchvision's `classifier`, which this crate's head replaces).

use crate::vgg::{Layer, PlainSpec};

/// torchvision's AlexNet feature stack.
pub(crate) fn spec() -> PlainSpec {
    let layers = vec![
        Layer::Conv(64, 11, 4, 2),
        Layer::Pool(3, 2),
        Layer::Conv(192, 5, 1, 2),
        Layer::Pool(3, 2),
        Layer::Conv(384, 3, 1, 1),
        Layer::Conv(256, 3, 1, 1),
        Layer::Conv(256, 3, 1, 1),
        Layer::Pool(3, 2),
    ];
    PlainSpec { layers, batch_norm: false, pool: 6, vgg_init: false }
}
