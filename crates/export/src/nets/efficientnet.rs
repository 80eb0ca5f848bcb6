//! EfficientNet-Lite as `efficientnet_lite_pytorch` builds it, in eval mode.

use model::{static_same_pad, LITE0_IMAGE_SIZE, LITE0_STAGES};

use crate::graph::{ConvSpec, Graph, Params};
use crate::Error;

/// The package's batch-norm epsilon.
const EPS: f64 = 1e-3;

/// A convolution + its batch norm (folded), with the package's static "same" padding written as
/// the `Conv`'s explicit (possibly asymmetric) pads, then ReLU6 as `Clip(0, 6)` when `relu6`.
#[allow(clippy::too_many_arguments)]
fn conv_bn(g: &mut Graph, p: &Params, x: &str, conv: &str, bn: &str, stride: i64, groups: i64, image: i64, relu6: bool) -> Result<String, Error> {
    let k = p.get(&format!("{conv}.weight"))?.shape[2];
    // `static_same_pad` gives (left, right, top, bottom); ONNX wants (top, left, bottom, right).
    let [l, r, t, b] = static_same_pad(image, k, stride);
    let y = g.conv_bn(x, p, conv, bn, EPS, ConvSpec { stride, pads: [t, l, b, r], groups })?;
    Ok(if relu6 { g.clip(&y, conv, 0.0, 6.0) } else { y })
}

/// Stem, the MBConv blocks (expand 1x1, depthwise, project 1x1, residual `Add` where the
/// shape is kept), head conv, global average pool, flatten.
pub(crate) fn lite0(g: &mut Graph, p: &Params, input: &str) -> Result<String, Error> {
    let mut image = LITE0_IMAGE_SIZE;
    let mut x = conv_bn(g, p, input, "_conv_stem", "_bn0", 2, 1, image, true)?;
    image = (image + 1) / 2;
    let mut idx = 0;
    for &(repeats, _k, stride, expand, c_in0, c_out) in LITE0_STAGES.iter() {
        for r in 0..repeats {
            let (c_in, s) = if r == 0 { (c_in0, stride) } else { (c_out, 1) };
            let blk = format!("_blocks.{idx}");
            let mut h = x.clone();
            if expand != 1 {
                h = conv_bn(g, p, &h, &format!("{blk}._expand_conv"), &format!("{blk}._bn0"), 1, 1, image, true)?;
            }
            let mid = c_in * expand;
            h = conv_bn(g, p, &h, &format!("{blk}._depthwise_conv"), &format!("{blk}._bn1"), s, mid, image, true)?;
            image = (image + s - 1) / s;
            h = conv_bn(g, p, &h, &format!("{blk}._project_conv"), &format!("{blk}._bn2"), 1, 1, image, false)?;
            x = if s == 1 && c_in == c_out { g.add(&h, &x, &blk) } else { h };
            idx += 1;
        }
    }
    x = conv_bn(g, p, &x, "_conv_head", "_bn1", 1, 1, image, true)?;
    Ok(g.global_avg_pool_flatten(&x, "_avg_pooling"))
}
