//! torchvision's ResNet (V1.5) in eval mode: every batch norm follows a convolution and is
//! folded into it, so the graph is `Conv`, `Relu`, `MaxPool`, `Add` and the global pooling.

use model::ResNetConfig;

use crate::graph::{ConvSpec, Graph, Params};
use crate::Error;

/// torchvision's batch-norm epsilon.
const EPS: f64 = 1e-5;

/// A `BasicBlock` or `Bottleneck` named `s` (`layer2.0`) with stride `stride`; `downsample` when
/// the block has one.
fn block(g: &mut Graph, p: &Params, x: &str, s: &str, bottleneck: bool, stride: i64, downsample: bool) -> Result<String, Error> {
    let convs: &[(i64, i64)] = if bottleneck { &[(1, 0), (stride, 1), (1, 0)] } else { &[(stride, 1), (1, 1)] };
    let mut h = x.to_string();
    for (i, &(st, pad)) in convs.iter().enumerate() {
        h = g.conv_bn(&h, p, &format!("{s}.conv{}", i + 1), false, &format!("{s}.bn{}", i + 1), EPS, ConvSpec::new(st, pad))?;
        if i + 1 < convs.len() {
            h = g.relu(&h, &format!("{s}.relu"));
        }
    }
    let identity = if downsample {
        g.conv_bn(x, p, &format!("{s}.downsample.0"), false, &format!("{s}.downsample.1"), EPS, ConvSpec::new(stride, 0))?
    } else {
        x.to_string()
    };
    let sum = g.add(&h, &identity, s);
    Ok(g.relu(&sum, &format!("{s}.relu")))
}

/// `conv1`+`bn1`, ReLU, max-pool, `layer1`..`layer4`, global average pool, flatten.
pub(crate) fn resnet(g: &mut Graph, p: &Params, cfg: &ResNetConfig, input: &str) -> Result<String, Error> {
    let mut x = g.conv_bn(input, p, "conv1", false, "bn1", EPS, ConvSpec::new(2, 3))?;
    x = g.relu(&x, "relu");
    x = g.max_pool(&x, "maxpool", 3, 2, 1);
    let expansion = if cfg.bottleneck() { 4 } else { 1 };
    let mut c_in = 64;
    for (i, &n) in cfg.layers().iter().enumerate() {
        let planes = 64 << i;
        for j in 0..n {
            let stride = if i > 0 && j == 0 { 2 } else { 1 };
            let downsample = stride != 1 || c_in != planes * expansion;
            x = block(g, p, &x, &format!("layer{}.{j}", i + 1), cfg.bottleneck(), stride, downsample)?;
            c_in = planes * expansion;
        }
    }
    Ok(g.global_avg_pool_flatten(&x, "avgpool"))
}
