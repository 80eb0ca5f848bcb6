//! Which built-in architecture a state dict's backbone keys and shapes belong to.
//!
//! Detection looks at a few signature keys (DenseNet's `features.denseblock*`, EfficientNet-Lite's
//! `_conv_stem`, ResNet's `layer*`, VGG's and AlexNet's `features.{i}`) and counts layers; the
//! caller then checks every key and shape strictly against the detected architecture
//! ([`crate::weights::check_backbone_keys`]), so a near miss is an error naming the mismatched
//! shapes, never a silent wrong guess.

use std::collections::{BTreeMap, BTreeSet};

use crate::Arch;

type Shapes = BTreeMap<String, Vec<i64>>;

/// Distinct values of the path component that follows `prefix` (`_blocks.` → block indices).
fn children(shapes: &Shapes, prefix: &str) -> BTreeSet<String> {
    shapes.keys().filter_map(|k| k.strip_prefix(prefix)).filter_map(|r| r.split('.').next()).map(str::to_owned).collect()
}

fn count(shapes: &Shapes, prefix: &str) -> usize {
    children(shapes, prefix).len()
}

/// The architecture whose backbone these (prefix-stripped, DenseNet-remapped) keys look like,
/// or `None` when no built-in one matches (e.g. a head-only state dict).
pub fn detect_arch(shapes: &Shapes) -> Option<Arch> {
    if let Some(conv0) = shapes.get("features.conv0.weight") {
        return densenet(shapes, conv0);
    }
    if shapes.contains_key("_conv_stem.weight") {
        return lite(shapes);
    }
    if shapes.contains_key("layer1.0.conv1.weight") {
        return resnet(shapes);
    }
    let first = shapes.get("features.0.weight")?;
    match first.as_slice() {
        [64, 3, 11, 11] => Some(Arch::AlexNet),
        [64, 3, 3, 3] => vgg(shapes),
        _ => None,
    }
}

fn densenet(shapes: &Shapes, conv0: &[i64]) -> Option<Arch> {
    if conv0.first() == Some(&96) {
        return Some(Arch::DenseNet161);
    }
    match count(shapes, "features.denseblock3.") {
        24 => Some(Arch::DenseNet121),
        32 => Some(Arch::DenseNet169),
        48 => Some(Arch::DenseNet201),
        _ => None,
    }
}

fn lite(shapes: &Shapes) -> Option<Arch> {
    let head_in = shapes.get("_conv_head.weight").and_then(|s| s.get(1).copied());
    match (count(shapes, "_blocks."), head_in) {
        (16, _) => Some(Arch::EfficientNetLite0),
        (21, Some(320)) => Some(Arch::EfficientNetLite1),
        (21, Some(352)) => Some(Arch::EfficientNetLite2),
        _ => None,
    }
}

fn resnet(shapes: &Shapes) -> Option<Arch> {
    let bottleneck = shapes.contains_key("layer1.0.conv3.weight");
    match (bottleneck, count(shapes, "layer2."), count(shapes, "layer3.")) {
        (false, 2, 2) => Some(Arch::ResNet18),
        (false, 4, 6) => Some(Arch::ResNet34),
        (true, 4, 6) => Some(Arch::ResNet50),
        (true, 4, 23) => Some(Arch::ResNet101),
        (true, 8, 36) => Some(Arch::ResNet152),
        _ => None,
    }
}

fn vgg(shapes: &Shapes) -> Option<Arch> {
    let convs = shapes.iter().filter(|(k, s)| k.starts_with("features.") && k.ends_with(".weight") && s.len() == 4).count();
    let bn = shapes.keys().any(|k| k.starts_with("features.") && k.ends_with(".running_mean"));
    Some(match (convs, bn) {
        (8, false) => Arch::Vgg11,
        (8, true) => Arch::Vgg11Bn,
        (10, false) => Arch::Vgg13,
        (10, true) => Arch::Vgg13Bn,
        (13, false) => Arch::Vgg16,
        (13, true) => Arch::Vgg16Bn,
        (16, false) => Arch::Vgg19,
        (16, true) => Arch::Vgg19Bn,
        _ => return None,
    })
}

/// Reads an architecture name as old scripts wrote it (`"vgg16"`, `"densenet121"`,
/// `"efficientnet-lite0"`, `"models.resnet50"`, `"VGG16_BN"`).
pub fn parse_arch_name(s: &str) -> Option<Arch> {
    let last = s.trim().rsplit('.').next().unwrap_or(s);
    last.parse().ok()
}
