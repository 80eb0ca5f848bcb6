//! EfficientNet-Lite0/1/2 as `efficientnet_lite_pytorch` builds them, in eval mode.

use model::{static_same_pad, LiteConfig, LITE0_FEATURE_DIM};

use crate::graph::{ConvSpec, Graph, Params};
use crate::Error;

/// The package's batch-norm epsilon.
const EPS: f64 = 1e-3;

/// One convolution of the network: module names, stride, groups, the image side its static
/// padding is computed for, and whether ReLU6 follows.
struct Unit<'a> {
    conv: &'a str,
    bn: &'a str,
    stride: i64,
    groups: i64,
    image: i64,
    relu6: bool,
}

/// A convolution + its batch norm (folded), with the package's static "same" padding written as
/// the `Conv`'s explicit (possibly asymmetric) pads, then ReLU6 as `Clip(0, 6)` when asked.
fn unit(g: &mut Graph, p: &Params, x: &str, u: Unit) -> Result<String, Error> {
    let k = p.get(&format!("{}.weight", u.conv))?.shape[2];
    // `static_same_pad` gives (left, right, top, bottom); ONNX wants (top, left, bottom, right).
    let [l, r, t, b] = static_same_pad(u.image, k, u.stride);
    let y = g.conv_bn(x, p, u.conv, false, u.bn, EPS, ConvSpec { stride: u.stride, pads: [t, l, b, r], groups: u.groups })?;
    Ok(if u.relu6 { g.clip(&y, u.conv, 0.0, 6.0) } else { y })
}

/// Stem, the MBConv blocks (expand 1x1, depthwise, project 1x1, residual `Add` where the
/// shape is kept), head conv, global average pool, flatten. The static padding is the one the
/// package computes for `cfg.image_size`, whatever the input size (as petal's forward does).
///
/// With `until = Some(n)` the graph stops after the first `n` units of the model crate's split
/// (`model::Arch::backbone_blocks`: the stem, one unit per stage, then the head) and returns the
/// activation map there, what `model::Classifier::activations` computes for partial mode.
pub(crate) fn lite(g: &mut Graph, p: &Params, cfg: &LiteConfig, input: &str, until: Option<usize>) -> Result<String, Error> {
    let stages = cfg.stages();
    if let Some(n) = until {
        if n == 0 || n > stages.len() + 1 {
            return Err(Error::Graph(format!("EfficientNet-Lite can be cut after unit 1 to {} of its backbone, not after {n}", stages.len() + 1)));
        }
    }
    let mut image = cfg.image_size;
    let mut x = unit(g, p, input, Unit { conv: "_conv_stem", bn: "_bn0", stride: 2, groups: 1, image, relu6: true })?;
    image = (image + 1) / 2;
    let mut idx = 0;
    for (stage, (repeats, _k, stride, expand, c_in0, c_out)) in stages.into_iter().enumerate() {
        // Units done so far: the stem and `stage` stages.
        if until == Some(stage + 1) {
            return Ok(x);
        }
        for r in 0..repeats {
            let (c_in, s) = if r == 0 { (c_in0, stride) } else { (c_out, 1) };
            let blk = format!("_blocks.{idx}");
            let name = |m: &str| format!("{blk}.{m}");
            let mut h = x.clone();
            if expand != 1 {
                h = unit(g, p, &h, Unit { conv: &name("_expand_conv"), bn: &name("_bn0"), stride: 1, groups: 1, image, relu6: true })?;
            }
            let mid = c_in * expand;
            h = unit(g, p, &h, Unit { conv: &name("_depthwise_conv"), bn: &name("_bn1"), stride: s, groups: mid, image, relu6: true })?;
            image = (image + s - 1) / s;
            h = unit(g, p, &h, Unit { conv: &name("_project_conv"), bn: &name("_bn2"), stride: 1, groups: 1, image, relu6: false })?;
            x = if s == 1 && c_in == c_out { g.add(&h, &x, &blk) } else { h };
            idx += 1;
        }
    }
    if until.is_some() {
        return Ok(x);
    }
    x = unit(g, p, &x, Unit { conv: "_conv_head", bn: "_bn1", stride: 1, groups: 1, image, relu6: true })?;
    debug_assert_eq!(p.get("_bn1.weight").map(|w| w.shape[0]).ok(), Some(LITE0_FEATURE_DIM));
    Ok(g.global_avg_pool_flatten(&x, "_avg_pooling"))
}
