//! The random draws of a train view: rotation angle, `RandomResizedCrop` box, flip and colour
//! jitter factors, from the keyed generator (a pure function of seed, epoch and sample index).

use super::geometry::round_half_even;
use super::jitter::JitterParams;
use super::TransformConfig;
use crate::rng::{Rng, STREAM_AUGMENT};

/// Random parameters of one train view, drawn from the (seed, epoch, index) stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainParams {
    /// Rotation angle in degrees (counter-clockwise, PIL convention).
    pub angle: f64,
    /// Crop top row (in the original image's pixels).
    pub top: u32,
    /// Crop left column.
    pub left: u32,
    /// Crop height.
    pub height: u32,
    /// Crop width.
    pub width: u32,
    /// Whether the view is flipped horizontally.
    pub flip: bool,
    /// Colour-jitter factors, if enabled.
    pub jitter: Option<JitterParams>,
}

/// Draws the train-view parameters for an image of `w`×`h` (the original, full-resolution size),
/// following torchvision's `RandomRotation.get_params`, `RandomResizedCrop.get_params`,
/// `RandomHorizontalFlip` and `ColorJitter.get_params` with our keyed generator.
pub fn train_params(w: u32, h: u32, cfg: &TransformConfig, seed: u64, epoch: u64, index: u64) -> TrainParams {
    let mut rng = Rng::keyed(seed, epoch, index, STREAM_AUGMENT);
    let angle = if cfg.rotation_degrees > 0.0 { rng.uniform(-cfg.rotation_degrees, cfg.rotation_degrees) } else { 0.0 };
    let (top, left, height, width) = rrc_params(w, h, cfg.crop_scale, cfg.crop_ratio, &mut rng);
    let flip = rng.next_f64() < cfg.hflip_prob;
    let jitter = cfg.color_jitter.map(|j| {
        let mut order = [0u8, 1, 2, 3];
        for i in (1..4usize).rev() {
            let k = rng.below(i as u64 + 1) as usize;
            order.swap(i, k);
        }
        let mut factor = |v: f32| {
            if v > 0.0 {
                Some(rng.uniform((1.0 - v as f64).max(0.0), 1.0 + v as f64) as f32)
            } else {
                None
            }
        };
        let brightness = factor(j.brightness);
        let contrast = factor(j.contrast);
        let saturation = factor(j.saturation);
        let hue = if j.hue > 0.0 { Some(rng.uniform(-j.hue as f64, j.hue as f64) as f32) } else { None };
        JitterParams { order, brightness, contrast, saturation, hue }
    });
    TrainParams { angle, top, left, height, width, flip, jitter }
}

/// `RandomResizedCrop.get_params` (returns top, left, height, width).
pub(super) fn rrc_params(width: u32, height: u32, scale: [f64; 2], ratio: [f64; 2], rng: &mut Rng) -> (u32, u32, u32, u32) {
    let area = width as f64 * height as f64;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target_area = area * rng.uniform(scale[0], scale[1]);
        let aspect = rng.uniform(lr0, lr1).exp();
        let w = round_half_even((target_area * aspect).sqrt());
        let h = round_half_even((target_area / aspect).sqrt());
        if w > 0.0 && w <= width as f64 && h > 0.0 && h <= height as f64 {
            let (w, h) = (w as u32, h as u32);
            let i = rng.below((height - h + 1) as u64) as u32;
            let j = rng.below((width - w + 1) as u64) as u32;
            return (i, j, h, w);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio[0] {
        (width, round_half_even(width as f64 / ratio[0]) as u32)
    } else if in_ratio > ratio[1] {
        (round_half_even(height as f64 * ratio[1]) as u32, height)
    } else {
        (width, height)
    };
    ((height - h.min(height)) / 2, (width - w.min(width)) / 2, h.min(height), w.min(width))
}
