//! torchvision's DenseNet-BC (`torchvision.models.densenet`) in eval mode.

use model::DenseNetConfig;

use crate::graph::{ConvSpec, Graph, Params};
use crate::Error;

/// torchvision's batch-norm epsilon.
const EPS: f64 = 1e-5;

/// `features` → ReLU → global average pool → flatten. `conv0`+`norm0` and each layer's
/// `conv1`+`norm2` are folded; the pre-activation batch norms stay `BatchNormalization` nodes.
/// Every dense layer reads the `Concat` of the block's previous maps, as torchvision's
/// `torch.cat(inputs, 1)` does.
pub(crate) fn densenet(g: &mut Graph, p: &Params, cfg: &DenseNetConfig, input: &str) -> Result<String, Error> {
    let mut x = g.conv_bn(input, p, "features.conv0", false, "features.norm0", EPS, ConvSpec::new(2, 3))?;
    x = g.relu(&x, "features.relu0");
    x = g.max_pool(&x, "features.pool0", 3, 2, 1);
    for (b, &layers) in cfg.block_config.iter().enumerate() {
        let block = format!("features.denseblock{}", b + 1);
        let mut maps = vec![x.clone()];
        for l in 1..=layers {
            let s = format!("{block}.denselayer{l}");
            let input = if maps.len() == 1 { maps[0].clone() } else { g.concat(&maps.iter().map(String::as_str).collect::<Vec<_>>(), &s, 1) };
            let h = g.batch_norm(&input, p, &format!("{s}.norm1"), EPS)?;
            let h = g.relu(&h, &format!("{s}.relu1"));
            let h = g.conv_bn(&h, p, &format!("{s}.conv1"), false, &format!("{s}.norm2"), EPS, ConvSpec::new(1, 0))?;
            let h = g.relu(&h, &format!("{s}.relu2"));
            maps.push(g.conv(&h, p, &format!("{s}.conv2"), false, ConvSpec::new(1, 1))?);
        }
        x = g.concat(&maps.iter().map(String::as_str).collect::<Vec<_>>(), &block, 1);
        if b + 1 < cfg.block_config.len() {
            let t = format!("features.transition{}", b + 1);
            x = g.batch_norm(&x, p, &format!("{t}.norm"), EPS)?;
            x = g.relu(&x, &format!("{t}.relu"));
            x = g.conv(&x, p, &format!("{t}.conv"), false, ConvSpec::new(1, 0))?;
            x = g.avg_pool(&x, &format!("{t}.pool"), 2, 2, 0);
        }
    }
    x = g.batch_norm(&x, p, "features.norm5", EPS)?;
    x = g.relu(&x, "");
    Ok(g.global_avg_pool_flatten(&x, ""))
}
