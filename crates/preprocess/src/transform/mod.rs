//! Image transforms with torchvision's semantics on PIL images (torchvision 0.2x, Pillow 1x).
//!
//! | torchvision | here | exactness |
//! |---|---|---|
//! | `Resize(256)` (int: shorter side → 256, longer side `int(256 * long / short)`, bilinear, antialias) | [`resize_shorter`] via [`crate::resample`], a port of Pillow's `Resample.c` (triangle filter, support scaled by the downscale factor, 22-bit fixed point, horizontal pass then vertical, uint8 in between) | byte-identical, see the pixels corpus test |
//! | `CenterCrop(224)` (`top = int(round((h - 224) / 2.0))`, round half to even; zero padding when smaller) | [`center_crop`] | exact |
//! | `ToTensor` (`/255` in f32) + `Normalize(mean, std)` (`(x - m) / s` in f32) | [`write_tensor`]: a lookup table, or vector kernels doing the same three `f32` operations (AVX2, AVX-512 VBMI) | bit-exact |
//! | `RandomRotation(30)` (angle ~ U(-30, 30), PIL `rotate`, NEAREST, `expand=False`, fill 0, centre (w/2, h/2), 16.16 fixed-point affine) | `rotate_crop_into` (only the pixels of the later crop are computed) | bit-exact for a given angle |
//! | `RandomResizedCrop(224, scale=(0.08, 1), ratio=(3/4, 4/3))` (10 tries, then the central fallback; `get_params` verbatim) + `F.resized_crop` (PIL `crop` then `resize`, no box) | [`train_params`] + [`resized_crop`] | same distribution; resize byte-identical |
//! | `RandomHorizontalFlip(0.5)` | applied while writing the tensor | exact |
//! | `ColorJitter(b, c, s, h)` (random order of the four ops, PIL `ImageEnhance` blends, HSV hue shift) | [`apply_jitter`] | integer arithmetic ported from Pillow |
//!
//! Exact by default: decoding original files ([`crate::ImageSource::Files`]) gives PIL's pixels at
//! every step above. The one approximate path is named and chosen explicitly: train views drawn
//! from the [`crate::ImageCache`] ([`crate::ImageSource::Cache`]) crop a 256-px copy instead of
//! the original, with crop boxes scaled into it (faster when several views of each image are
//! needed); eval views from the cache are exact, since the cache holds `Resize(256)` itself.
//!
//! The random numbers are not torch's: every random draw comes from [`crate::rng::Rng`] keyed by
//! (seed, epoch, sample index), so a sample's view is a pure function of those three numbers.
//! Use `epoch = v` to request "augmentation view v" of a frozen-feature cache.

use crate::decode::DecodeLimits;
use crate::simd::SimdLevel;
use image::RgbImage;

mod draw;
mod geometry;
mod jitter;
#[cfg(target_arch = "x86_64")]
mod tensor_x86;

pub use draw::{train_params, TrainParams};
pub use geometry::{center_crop, eval_u8, resize, resize_center_crop_source, resize_output_size, resize_shorter, resized_crop, rotate_nearest};
pub(crate) use geometry::{center_crop_view, eval_u8_view, resize_center_crop, resize_view, rotate_crop_into, rotate_crop_source};
pub use jitter::{apply_jitter, JitterParams};

/// ImageNet channel means used by torchvision's pretrained models.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations used by torchvision's pretrained models.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// `torchvision.transforms.ColorJitter` parameters (0 disables a component).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ColorJitter {
    /// Brightness factor drawn from [max(0, 1 - b), 1 + b].
    pub brightness: f32,
    /// Contrast factor drawn from [max(0, 1 - c), 1 + c].
    pub contrast: f32,
    /// Saturation factor drawn from [max(0, 1 - s), 1 + s].
    pub saturation: f32,
    /// Hue shift drawn from [-h, h], h ≤ 0.5.
    pub hue: f32,
}

/// Parameters of the eval and train transforms (serialisable into run configs).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TransformConfig {
    /// Output side (CenterCrop / RandomResizedCrop size), 224.
    pub image_size: u32,
    /// Eval `Resize` shorter side, 256. Also the shorter side of cached images.
    pub resize_size: u32,
    /// Normalisation mean per RGB channel.
    pub mean: [f32; 3],
    /// Normalisation standard deviation per RGB channel.
    pub std: [f32; 3],
    /// `RandomRotation(degrees)`; 0 disables it. The seed recipe uses 30.
    pub rotation_degrees: f64,
    /// `RandomResizedCrop` area scale range.
    pub crop_scale: [f64; 2],
    /// `RandomResizedCrop` aspect-ratio range.
    pub crop_ratio: [f64; 2],
    /// `RandomHorizontalFlip` probability.
    pub hflip_prob: f64,
    /// Optional `ColorJitter`, applied after the flip.
    pub color_jitter: Option<ColorJitter>,
    /// Decoder limits (pixel-count guard).
    pub limits: DecodeLimits,
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            image_size: 224,
            resize_size: 256,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            rotation_degrees: 30.0,
            crop_scale: [0.08, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip_prob: 0.5,
            color_jitter: None,
            limits: DecodeLimits::default(),
        }
    }
}

impl TransformConfig {
    /// Checks the values; the loader calls this.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |m: String| Err(crate::Error::Config(m));
        if self.image_size == 0 || self.resize_size == 0 || self.image_size > 8192 || self.resize_size > 8192 {
            return bad(format!("image_size {} / resize_size {} must be in 1..=8192", self.image_size, self.resize_size));
        }
        if self.std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
            return bad(format!("std {:?} must be positive", self.std));
        }
        let [s0, s1] = self.crop_scale;
        let [r0, r1] = self.crop_ratio;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0 && r0 > 0.0 && r0 <= r1) {
            return bad(format!("crop scale {:?} / ratio {:?} invalid", self.crop_scale, self.crop_ratio));
        }
        if !(0.0..=180.0).contains(&self.rotation_degrees) || !(0.0..=1.0).contains(&self.hflip_prob) {
            return bad("rotation_degrees must be in [0, 180] and hflip_prob in [0, 1]".into());
        }
        if let Some(j) = self.color_jitter {
            if j.brightness < 0.0 || j.contrast < 0.0 || j.saturation < 0.0 || !(0.0..=0.5).contains(&j.hue) {
                return bad(format!("color jitter {j:?} invalid"));
            }
        }
        Ok(())
    }
}

/// Which transform to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// Resize → CenterCrop → ToTensor → Normalize.
    Eval,
    /// RandomRotation → RandomResizedCrop → RandomHorizontalFlip → [ColorJitter] → ToTensor → Normalize.
    Train,
}

/// A borrowed packed RGB8 image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub w: u32,
    pub h: u32,
    pub data: &'a [u8],
}

impl<'a> View<'a> {
    pub(crate) fn of(img: &'a RgbImage) -> Self {
        View { w: img.width(), h: img.height(), data: img.as_raw() }
    }
}

/// `ToTensor` + `Normalize` (+ optional horizontal flip) of a packed RGB8 `size`×`size` image
/// into `out` (CHW, or HWC when `channels_last`). Values are bit-identical to torchvision's
/// float32 `(x / 255 - mean) / std`, at every kernel level ([`crate::simd_level`]).
pub fn write_tensor(rgb: &[u8], size: u32, cfg: &TransformConfig, flip: bool, channels_last: bool, out: &mut [f32]) {
    write_tensor_at(crate::simd::simd_level(), rgb, size, cfg, flip, channels_last, out);
}

/// [`write_tensor`] with the kernels of `level` (the scalar lookup table when the CPU lacks it).
pub(crate) fn write_tensor_at(level: SimdLevel, rgb: &[u8], size: u32, cfg: &TransformConfig, flip: bool, channels_last: bool, out: &mut [f32]) {
    let s = size as usize;
    let hw = s * s;
    if rgb.len() < hw * 3 || out.len() < hw * 3 {
        tracing::error!("write_tensor: buffers too small for {size}x{size}");
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 && level.supported() {
        return tensor_x86::write(level, rgb, s, &cfg.mean, &cfg.std, flip, channels_last, out);
    }
    let _ = level;
    write_tensor_lut(rgb, s, cfg, flip, channels_last, out);
}

/// The scalar reference of [`write_tensor`]: a lookup table of the 3 × 256 values.
fn write_tensor_lut(rgb: &[u8], s: usize, cfg: &TransformConfig, flip: bool, channels_last: bool, out: &mut [f32]) {
    let hw = s * s;
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, slot) in table.iter_mut().enumerate() {
            *slot = (v as f32 / 255.0 - cfg.mean[c]) / cfg.std[c];
        }
    }
    for y in 0..s {
        let row = &rgb[y * s * 3..(y + 1) * s * 3];
        for x in 0..s {
            let sx = if flip { s - 1 - x } else { x };
            let p = &row[sx * 3..sx * 3 + 3];
            if channels_last {
                let o = (y * s + x) * 3;
                out[o] = lut[0][p[0] as usize];
                out[o + 1] = lut[1][p[1] as usize];
                out[o + 2] = lut[2][p[2] as usize];
            } else {
                let o = y * s + x;
                out[o] = lut[0][p[0] as usize];
                out[hw + o] = lut[1][p[1] as usize];
                out[2 * hw + o] = lut[2][p[2] as usize];
            }
        }
    }
}

/// The train view up to uint8 (before flip): rotation, random resized crop, colour jitter.
/// `src` is the decoded image or a cached, downscaled copy of it; `orig` is the original
/// size in which `p` was drawn (crop boxes are scaled into `src`'s pixels).
pub(crate) fn train_u8(src: View<'_>, orig: (u32, u32), p: &TrainParams, cfg: &TransformConfig) -> Vec<u8> {
    let size = cfg.image_size;
    let sx = src.w as f64 / orig.0.max(1) as f64;
    let sy = src.h as f64 / orig.1.max(1) as f64;
    let exact = src.w == orig.0 && src.h == orig.1;
    // torchvision crops first, then resizes the crop alone (the filter never reads pixels
    // outside the crop), so the crop is materialised (rotated when needed) before resizing.
    let (l, t, cw, ch) = if exact {
        (p.left, p.top, p.width, p.height)
    } else {
        let l = ((p.left as f64 * sx).round() as u32).min(src.w.saturating_sub(1));
        let t = ((p.top as f64 * sy).round() as u32).min(src.h.saturating_sub(1));
        let cw = ((p.width as f64 * sx).round() as u32).clamp(1, src.w - l);
        let ch = ((p.height as f64 * sy).round() as u32).clamp(1, src.h - t);
        (l, t, cw, ch)
    };
    let mut buf = vec![0u8; cw as usize * ch as usize * 3];
    rotate_crop_into(src, p.angle, l, t, cw, ch, &mut buf);
    let mut out = resize_view(View { w: cw, h: ch, data: &buf }, size, size);
    if let Some(j) = &p.jitter {
        apply_jitter(&mut out, j);
    }
    out
}

/// One sample's normalised pixels (3 × size × size, CHW), deterministic in (seed, epoch, index).
/// `Mode::Eval` ignores the seed, epoch and index.
pub fn transform(img: &RgbImage, mode: Mode, cfg: &TransformConfig, seed: u64, epoch: u64, index: u64) -> Vec<f32> {
    let s = cfg.image_size as usize;
    let mut out = vec![0f32; 3 * s * s];
    transform_view_into(View::of(img), None, AugmentDraw { mode, seed, epoch, index }, cfg, false, &mut out);
    out
}

/// Which view of a sample to make: the transform, and for a train view the key of its random
/// draws (see [`train_params`]); `Mode::Eval` ignores the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AugmentDraw {
    /// Eval transform or augmented train view.
    pub mode: Mode,
    /// The run's seed.
    pub seed: u64,
    /// The epoch (or the augmentation view of a frozen-feature cache).
    pub epoch: u64,
    /// The sample's index in its whole split.
    pub index: u64,
}

/// Core of every path: `src` is either a decoded original (`resized_from == None`) or an image
/// already resized to shorter side `cfg.resize_size` from an original of size `resized_from`.
pub(crate) fn transform_view_into(
    src: View<'_>,
    resized_from: Option<(u32, u32)>,
    draw: AugmentDraw,
    cfg: &TransformConfig,
    channels_last: bool,
    out: &mut [f32],
) {
    let size = cfg.image_size;
    if src.w == 0 || src.h == 0 {
        let zeros = vec![0u8; size as usize * size as usize * 3];
        write_tensor(&zeros, size, cfg, false, channels_last, out);
        return;
    }
    match draw.mode {
        Mode::Eval => {
            let crop = match resized_from {
                Some(_) => center_crop_view(src, size),
                None => resize_center_crop(src, cfg.resize_size, size),
            };
            write_tensor(&crop, size, cfg, false, channels_last, out);
        }
        Mode::Train => {
            let orig = resized_from.unwrap_or((src.w, src.h));
            let p = train_params(orig.0, orig.1, cfg, draw.seed, draw.epoch, draw.index);
            let view = train_u8(src, orig, &p, cfg);
            write_tensor(&view, size, cfg, p.flip, channels_last, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::draw::rrc_params;
    use super::geometry::round_half_even;
    use super::jitter::{hsv2rgb, luma, rgb2hsv};
    use super::*;
    use crate::rng::{Rng, STREAM_AUGMENT};

    #[test]
    fn python_round_and_sizes() {
        assert_eq!(round_half_even(16.5), 16.0);
        assert_eq!(round_half_even(17.5), 18.0);
        assert_eq!(round_half_even(-0.5), -0.0);
        assert_eq!(round_half_even(2.4), 2.0);
        assert_eq!(round_half_even(2.6), 3.0);
        assert_eq!(resize_output_size(500, 667, 256), (256, 341)); // int(256*667/500)=341
        assert_eq!(resize_output_size(752, 500, 256), (385, 256));
        assert_eq!(resize_output_size(256, 256, 256), (256, 256));
    }

    #[test]
    fn center_crop_offsets_and_padding() {
        // 5x1 image, crop 2 → offset round(1.5) = 2
        let img = RgbImage::from_fn(5, 3, |x, _| image::Rgb([x as u8, 0, 0]));
        let c = center_crop(&img, 2);
        assert_eq!(c.get_pixel(0, 0)[0], 2);
        // 3 wide, crop 2 → round(0.5) = 0
        let img = RgbImage::from_fn(3, 3, |x, _| image::Rgb([x as u8 + 1, 0, 0]));
        assert_eq!(center_crop(&img, 2).get_pixel(0, 0)[0], 1);
        // padding: 2 wide into 5 → pad left (5-2)//2 = 1
        let img = RgbImage::from_fn(2, 2, |x, _| image::Rgb([x as u8 + 1, 0, 0]));
        let c = center_crop(&img, 5);
        let row: Vec<u8> = (0..5).map(|x| c.get_pixel(x, 1)[0]).collect();
        assert_eq!(row, vec![0, 1, 2, 0, 0]);
        // 2 wide into 8 → pad left (8-2)//2 = 3, and the same rows above: 2 high → 3 rows
        let c = center_crop(&img, 8);
        let row: Vec<u8> = (0..8).map(|x| c.get_pixel(x, 4)[0]).collect();
        assert_eq!(row, vec![0, 0, 0, 1, 2, 0, 0, 0]);
        assert!((0..8).all(|x| c.get_pixel(x, 2)[0] == 0 && c.get_pixel(x, 5)[0] == 0));
    }

    #[test]
    fn normalisation_is_torchvision_float32() {
        let cfg = TransformConfig { image_size: 1, ..Default::default() };
        let mut out = [0f32; 3];
        write_tensor(&[0, 128, 255], 1, &cfg, false, false, &mut out);
        assert_eq!(out[0], (0f32 / 255.0 - 0.485) / 0.229);
        assert_eq!(out[1], (128f32 / 255.0 - 0.456) / 0.224);
        assert_eq!(out[2], (1f32 - 0.406) / 0.225);
    }

    /// The vector kernels of `write_tensor` at every level the CPU supports give the lookup
    /// table's bits: every byte value in every channel, flip on and off, CHW and HWC, sizes 1–40
    /// (every remainder modulo the 8- and 16-pixel chunks) and 63–65, 224, with the ImageNet and
    /// random statistics; values outside each image stay untouched.
    #[test]
    fn write_tensor_kernels_equal_the_lookup_table() {
        let levels = crate::simd::supported_levels();
        let mut rng = Rng::keyed(31, 5, 0, 0);
        let mut cfgs = vec![TransformConfig::default()];
        for _ in 0..2 {
            let (m, s) = (|r: &mut Rng| r.uniform(-1.0, 1.0) as f32, |r: &mut Rng| r.uniform(0.01, 3.0) as f32);
            cfgs.push(TransformConfig {
                mean: [m(&mut rng), m(&mut rng), m(&mut rng)],
                std: [s(&mut rng), s(&mut rng), s(&mut rng)],
                ..Default::default()
            });
        }
        let mut values = 0usize;
        for size in (1..=40).chain([63, 64, 65, 224]) {
            let hw = size * size;
            for offset in (0..256).step_by(hw.min(256)) {
                let rgb: Vec<u8> = (0..3 * hw).map(|i| ((offset + i / 3) * 7 + i % 3 * 85 + size) as u8).collect();
                for cfg in &cfgs {
                    for flip in [false, true] {
                        for channels_last in [false, true] {
                            let mut want = vec![f32::NAN; 3 * hw + 5];
                            write_tensor_at(SimdLevel::Scalar, &rgb, size as u32, cfg, flip, channels_last, &mut want);
                            for &level in &levels {
                                let mut got = vec![f32::NAN; 3 * hw + 5];
                                write_tensor_at(level, &rgb, size as u32, cfg, flip, channels_last, &mut got);
                                let bad = got.iter().zip(&want).position(|(g, w)| g.to_bits() != w.to_bits());
                                if let Some(i) = bad {
                                    panic!(
                                        "{size}x{size} from value {offset}, mean {:?} std {:?}, flip {flip}, channels_last {channels_last}, level {level}: \
                                         value {i} is {} ({:#x}), lookup table {} ({:#x})",
                                        cfg.mean, cfg.std, got[i], got[i].to_bits(), want[i], want[i].to_bits()
                                    );
                                }
                                values += 3 * hw;
                            }
                        }
                    }
                }
            }
        }
        assert!(values > 100_000, "{values}");
        // The table itself is torchvision's float32 formula, for all 3 × 256 values.
        let cfg = TransformConfig::default();
        let rgb: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();
        let mut out = vec![0f32; 768];
        write_tensor_at(SimdLevel::Scalar, &rgb, 16, &cfg, false, true, &mut out);
        for (i, &o) in out.iter().enumerate() {
            let (v, c) = ((i / 3) as f32, i % 3);
            assert_eq!(o.to_bits(), ((v / 255.0 - cfg.mean[c]) / cfg.std[c]).to_bits(), "value {v}, channel {c}");
        }
    }

    #[test]
    fn train_params_deterministic_and_in_range() {
        let cfg = TransformConfig::default();
        for i in 0..2000 {
            let p = train_params(500, 667, &cfg, 42, 3, i);
            assert_eq!(p, train_params(500, 667, &cfg, 42, 3, i));
            assert!(p.angle.abs() <= 30.0);
            assert!(p.left + p.width <= 500 && p.top + p.height <= 667);
            let area = (p.width * p.height) as f64 / (500.0 * 667.0);
            assert!(area > 0.07 && area <= 1.0, "{area}");
        }
        assert_ne!(train_params(500, 667, &cfg, 42, 3, 0), train_params(500, 667, &cfg, 42, 4, 0));
    }

    #[test]
    fn rrc_fallback_is_central() {
        // Extreme aspect ratio: no try fits the ratio range, so the fallback crops the centre.
        let mut rng = Rng::keyed(0, 0, 0, 0);
        let (i, j, h, w) = rrc_params(1000, 10, [0.99, 1.0], [0.75, 1.3333333333333333], &mut rng);
        assert_eq!((i, h), (0, 10));
        assert_eq!(w, 13);
        assert_eq!(j, (1000 - 13) / 2);
        // Tall: the crop takes the full width at the smallest ratio, centred vertically.
        assert_eq!(rrc_params(10, 1000, [0.99, 1.0], [0.75, 4.0 / 3.0], &mut rng), ((1000 - 13) / 2, 0, 13, 10));
        // Within the ratio range (no try fits a scale of 1 at another ratio): the whole image.
        assert_eq!(rrc_params(400, 300, [1.0, 1.0], [0.5, 2.0], &mut rng), (0, 0, 300, 400));
    }

    #[test]
    fn rotation_by_180_reverses() {
        let img = RgbImage::from_fn(4, 3, |x, y| image::Rgb([(x + 10 * y) as u8, 0, 0]));
        let r = rotate_nearest(&img, 180.0);
        for y in 0..3 {
            for x in 0..4 {
                assert_eq!(r.get_pixel(x, y), img.get_pixel(3 - x, 2 - y));
            }
        }
        assert_eq!(rotate_nearest(&img, 0.0), img);
    }

    /// PIL first reduces the angle (`angle % 360.0`, exact), so angles a multiple of 360° apart
    /// rotate alike, even past 10^15 degrees where converting the unreduced angle to radians is
    /// off by a tenth of a degree (640 and 24 of these 3072 pixels would move).
    #[test]
    fn angles_a_multiple_of_360_degrees_apart_rotate_alike() {
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) % 256) as u8]));
        let turns = 360.0 * 2f64.powi(44);
        let ten = rotate_nearest(&img, 10.0);
        assert_eq!(rotate_nearest(&img, 10.0 + turns), ten);
        assert_eq!(rotate_nearest(&img, -350.0 - turns), ten);
        assert_eq!(rotate_nearest(&img, -350.0), ten);
    }

    /// Where PIL's 15-decimal rounding of cos decides a 16.16 coefficient, the angle must be reduced
    /// to [0, 360) exactly as PIL does: at these two angles cos rounds to 0.610359191894531 (40000
    /// in 16.16) from the reduced angle and to …532 (40001) from the angle ± 360°, which moves 8
    /// pixels of this 64×48 image. Pixels (x, y) of PIL's
    /// `Image.fromarray(a).rotate(angle, Image.NEAREST, fillcolor=(0, 0, 0))` and the source pixel
    /// (sx, sy) of each, printed by Python (Pillow 13).
    #[test]
    fn angles_are_reduced_like_pil_where_cos_rounds_to_a_16_16_boundary() {
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) % 256) as u8]));
        type Pixels = &'static [(u32, u32, u32, u32)];
        #[rustfmt::skip]
        let positive: Pixels = &[
            (37, 18, 39, 24), (23, 22, 27, 16), (40, 25, 35, 31), (37, 29, 30, 31), (30, 32, 24, 27), (54, 32, 38, 47), (51, 36, 33, 47),
            (23, 46, 8, 30),
        ];
        #[rustfmt::skip]
        let negative: Pixels = &[
            (30, 15, 24, 19), (54, 15, 38, 0), (57, 19, 43, 1), (40, 22, 35, 16), (26, 29, 32, 31), (37, 29, 39, 22), (44, 43, 55, 25),
            (40, 46, 55, 30),
        ];
        for (angle, pixels) in [(52.38452058942882, positive), (-52.3845205894288, negative)] {
            let r = rotate_nearest(&img, angle);
            for &(x, y, sx, sy) in pixels {
                assert_eq!(r.get_pixel(x, y), img.get_pixel(sx, sy), "{angle}°: pixel ({x}, {y}) is PIL's source ({sx}, {sy})");
            }
        }
    }

    #[test]
    fn jitter_identity_factors_keep_pixels() {
        let mut px: Vec<u8> = (0..300u32).map(|v| (v * 7 % 256) as u8).collect();
        let orig = px.clone();
        let j = JitterParams { order: [0, 1, 2, 3], brightness: Some(1.0), contrast: Some(1.0), saturation: Some(1.0), hue: None };
        apply_jitter(&mut px, &j);
        assert_eq!(px, orig);
        let j0 = JitterParams { order: [0, 1, 2, 3], brightness: Some(0.0), contrast: None, saturation: None, hue: None };
        apply_jitter(&mut px, &j0);
        assert!(px.iter().all(|&v| v == 0));
    }

    /// Every bound of [`TransformConfig::validate`], just inside (accepted) and just outside
    /// (refused, the message naming the field).
    #[test]
    fn validate_accepts_the_bounds_and_refuses_past_them() {
        type Edit = fn(&mut TransformConfig);
        let jitter = |b: f32, c: f32, s: f32, h: f32| Some(ColorJitter { brightness: b, contrast: c, saturation: s, hue: h });
        let ok: [Edit; 9] = [
            |c| (c.image_size, c.resize_size) = (1, 1),
            |c| (c.image_size, c.resize_size) = (8192, 8192),
            |c| c.std = [f32::MIN_POSITIVE, 1.0, 1e30],
            |c| (c.crop_scale, c.crop_ratio) = ([1.0, 1.0], [2.0, 2.0]),
            |c| (c.crop_scale, c.crop_ratio) = ([1e-9, 0.5], [1e-9, 1e-9]),
            |c| (c.rotation_degrees, c.hflip_prob) = (0.0, 0.0),
            |c| (c.rotation_degrees, c.hflip_prob) = (180.0, 1.0),
            |c| c.color_jitter = Some(ColorJitter { brightness: 0.0, contrast: 0.0, saturation: 0.0, hue: 0.0 }),
            |c| c.color_jitter = Some(ColorJitter { brightness: 9.0, contrast: 9.0, saturation: 9.0, hue: 0.5 }),
        ];
        for (i, edit) in ok.iter().enumerate() {
            let mut c = TransformConfig::default();
            edit(&mut c);
            assert!(c.validate().is_ok(), "case {i}: {c:?} must be accepted");
        }
        let bad: Vec<(TransformConfig, &str)> = vec![
            (TransformConfig { image_size: 0, ..Default::default() }, "image_size"),
            (TransformConfig { resize_size: 0, ..Default::default() }, "image_size"),
            (TransformConfig { image_size: 8193, ..Default::default() }, "image_size"),
            (TransformConfig { resize_size: 8193, ..Default::default() }, "image_size"),
            (TransformConfig { std: [0.2, 0.0, 0.2], ..Default::default() }, "std"),
            (TransformConfig { std: [0.2, 0.2, f32::INFINITY], ..Default::default() }, "std"),
            (TransformConfig { std: [-0.2, 0.2, 0.2], ..Default::default() }, "std"),
            (TransformConfig { crop_scale: [0.0, 1.0], ..Default::default() }, "crop scale"),
            (TransformConfig { crop_scale: [0.6, 0.5], ..Default::default() }, "crop scale"),
            (TransformConfig { crop_scale: [0.5, 1.0001], ..Default::default() }, "crop scale"),
            (TransformConfig { crop_ratio: [0.0, 1.0], ..Default::default() }, "ratio"),
            (TransformConfig { crop_ratio: [1.5, 1.4], ..Default::default() }, "ratio"),
            (TransformConfig { rotation_degrees: -0.001, ..Default::default() }, "rotation_degrees"),
            (TransformConfig { rotation_degrees: 180.001, ..Default::default() }, "rotation_degrees"),
            (TransformConfig { hflip_prob: -0.001, ..Default::default() }, "hflip_prob"),
            (TransformConfig { hflip_prob: 1.001, ..Default::default() }, "hflip_prob"),
            (TransformConfig { color_jitter: jitter(-0.1, 0.0, 0.0, 0.0), ..Default::default() }, "color jitter"),
            (TransformConfig { color_jitter: jitter(0.0, -0.1, 0.0, 0.0), ..Default::default() }, "color jitter"),
            (TransformConfig { color_jitter: jitter(0.0, 0.0, -0.1, 0.0), ..Default::default() }, "color jitter"),
            (TransformConfig { color_jitter: jitter(0.0, 0.0, 0.0, -0.1), ..Default::default() }, "color jitter"),
            (TransformConfig { color_jitter: jitter(0.0, 0.0, 0.0, 0.51), ..Default::default() }, "color jitter"),
        ];
        for (c, field) in bad {
            let msg = c.validate().expect_err(&format!("{c:?} must be refused")).to_string();
            assert!(msg.contains(field), "{c:?}: {msg}");
        }
    }

    /// The eval path's crop of the resize (computed as a window when it fits) equals resizing the
    /// whole image then `CenterCrop`, also when the crop is larger than one or both sides (zero
    /// padding) and when it equals them.
    #[test]
    fn resize_center_crop_equals_resize_then_crop() {
        for (w, h, resize, size) in [(4, 8, 4, 6), (8, 4, 4, 6), (4, 4, 4, 6), (4, 6, 4, 6), (10, 7, 5, 6), (12, 9, 6, 6), (30, 20, 16, 9)] {
            let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 17 + y) as u8, (y * 29) as u8, (x * y) as u8]));
            let want = center_crop(&resize_shorter(&img, resize), size);
            let cfg = TransformConfig { resize_size: resize, image_size: size, ..Default::default() };
            assert_eq!(eval_u8(&img, &cfg), want, "eval_u8 {w}x{h} resize {resize} crop {size}");
            assert_eq!(resize_center_crop(View::of(&img), resize, size), want.into_raw(), "{w}x{h} resize {resize} crop {size}");
        }
    }

    /// `write_tensor` writes nothing (and does not panic) when either buffer is too small for the
    /// size, and fills the first `3·size²` values when both are large enough, larger included.
    #[test]
    fn write_tensor_checks_both_buffers() {
        let cfg = TransformConfig { image_size: 2, ..Default::default() };
        let rgb: Vec<u8> = (0..13).map(|v| v * 9).collect();
        for (rgb_len, out_len, written) in [(11, 12, false), (12, 11, false), (12, 12, true), (13, 14, true)] {
            let mut out = vec![f32::NAN; out_len];
            write_tensor(&rgb[..rgb_len], 2, &cfg, false, true, &mut out);
            let want = |i: usize| (rgb[i] as f32 / 255.0 - cfg.mean[i % 3]) / cfg.std[i % 3];
            for (i, v) in out.iter().enumerate() {
                if written && i < 12 {
                    assert_eq!(*v, want(i), "rgb {rgb_len}, out {out_len}: value {i}");
                } else {
                    assert!(v.is_nan(), "rgb {rgb_len}, out {out_len}: value {i} written");
                }
            }
        }
    }

    /// The draws of `train_params`: angles cover both signs of ±degrees; no rotation draws
    /// nothing (the crop is the first draw of the stream); flip probabilities 0 and 1 are exact;
    /// the jitter order is a uniform shuffle that reaches all 24 orders.
    #[test]
    fn train_params_draws() {
        let cfg =
            TransformConfig { color_jitter: Some(ColorJitter { brightness: 0.2, contrast: 0.2, saturation: 0.2, hue: 0.1 }), ..Default::default() };
        let ps: Vec<TrainParams> = (0..2000).map(|i| train_params(300, 200, &cfg, 9, 1, i)).collect();
        let (lo, hi) = ps.iter().fold((0f64, 0f64), |(lo, hi), p| (lo.min(p.angle), hi.max(p.angle)));
        assert!(lo < -25.0 && hi > 25.0, "angles in [{lo}, {hi}]");
        let orders: std::collections::BTreeSet<[u8; 4]> = ps.iter().filter_map(|p| p.jitter.as_ref().map(|j| j.order)).collect();
        assert_eq!(orders.len(), 24, "{orders:?}");
        let flips = ps.iter().filter(|p| p.flip).count();
        assert!((800..1200).contains(&flips), "{flips} flips of 2000 at p = 0.5");
        for p in &ps {
            let j = p.jitter.as_ref().expect("jitter");
            for f in [j.brightness, j.contrast, j.saturation] {
                assert!(f.is_some_and(|f| (0.8..=1.2).contains(&f)), "{j:?}");
            }
            assert!(j.hue.is_some_and(|h| (-0.1..=0.1).contains(&h)), "{j:?}");
        }
        let brightness: Vec<f32> = ps.iter().filter_map(|p| p.jitter.as_ref()?.brightness).collect();
        let (lo, hi) = brightness.iter().fold((2f32, 0f32), |(lo, hi), &b| (lo.min(b), hi.max(b)));
        assert!(lo < 0.82 && hi > 1.18, "brightness factors in [{lo}, {hi}], expected to span [0.8, 1.2]");
        let hues: Vec<f32> = ps.iter().filter_map(|p| p.jitter.as_ref()?.hue).collect();
        let (lo, hi) = hues.iter().fold((1f32, -1f32), |(lo, hi), &h| (lo.min(h), hi.max(h)));
        assert!(lo < -0.09 && hi > 0.09, "hue shifts in [{lo}, {hi}], expected to span [-0.1, 0.1]");
        let off =
            TransformConfig { color_jitter: Some(ColorJitter { brightness: 0.0, contrast: 0.3, saturation: 0.0, hue: 0.0 }), ..Default::default() };
        let j = train_params(300, 200, &off, 9, 1, 0).jitter.expect("jitter");
        assert!(j.brightness.is_none() && j.saturation.is_none() && j.hue.is_none() && j.contrast.is_some(), "{j:?}");
        for (prob, want) in [(0.0, 0), (1.0, 2000)] {
            let c = TransformConfig { hflip_prob: prob, rotation_degrees: 0.0, ..Default::default() };
            let ps: Vec<TrainParams> = (0..2000).map(|i| train_params(300, 200, &c, 9, 1, i)).collect();
            assert_eq!(ps.iter().filter(|p| p.flip).count(), want, "hflip_prob {prob}");
            for (i, p) in ps.iter().enumerate() {
                let mut rng = Rng::keyed(9, 1, i as u64, STREAM_AUGMENT);
                assert_eq!(p.angle, 0.0);
                assert_eq!((p.top, p.left, p.height, p.width), rrc_params(300, 200, c.crop_scale, c.crop_ratio, &mut rng), "sample {i}");
            }
        }
    }

    /// 20 pixels: black, white, grey, the primaries and secondaries, and colours in every hue
    /// sector, bright, dark and near grey.
    #[rustfmt::skip]
    const PIXELS: [[u8; 3]; 20] = [
        [0, 0, 0], [255, 255, 255], [77, 77, 77], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255], [200, 30, 40],
        [30, 200, 40], [40, 30, 200], [13, 240, 120], [250, 120, 10], [120, 10, 250], [100, 90, 80], [5, 6, 7], [254, 1, 128], [90, 200, 201], [10, 9, 10],
    ];

    /// Pillow's conversions, exactly: `im.convert("L")`, `im.convert("HSV")` of [`PIXELS`] and
    /// `Image.new("HSV", ...).putdata(hsv).convert("RGB")` (Pillow 13, values printed by Python).
    #[test]
    fn luma_and_hsv_match_pillow_exactly() {
        let luma_want = [0, 255, 77, 76, 150, 29, 226, 179, 105, 82, 131, 52, 158, 146, 70, 92, 6, 91, 167, 9];
        #[rustfmt::skip]
        let hsv_want = [
            (0, 0, 0), (0, 0, 255), (0, 0, 77), (0, 255, 255), (85, 255, 255), (170, 255, 255), (42, 255, 255), (127, 255, 255), (212, 255, 255),
            (252, 216, 200), (87, 216, 200), (172, 216, 200), (105, 241, 240), (19, 244, 250), (189, 244, 250), (21, 51, 100), (148, 72, 7),
            (233, 253, 254), (127, 140, 201), (212, 25, 10),
        ];
        for (i, p) in PIXELS.iter().enumerate() {
            assert_eq!(luma(p), luma_want[i], "luma of {p:?}");
            assert_eq!(rgb2hsv(p[0], p[1], p[2]), hsv_want[i], "hsv of {p:?}");
        }
        #[rustfmt::skip]
        let hsv: [[u8; 3]; 16] = [
            [0, 0, 90], [0, 255, 255], [21, 200, 180], [42, 255, 200], [64, 128, 255], [85, 255, 100], [106, 30, 250], [128, 255, 255],
            [149, 180, 90], [170, 255, 255], [191, 100, 60], [213, 255, 255], [234, 77, 199], [255, 255, 255], [255, 1, 1], [43, 250, 3],
        ];
        #[rustfmt::skip]
        let rgb_want: [[u8; 3]; 16] = [
            [90, 90, 90], [255, 0, 0], [180, 109, 39], [200, 198, 0], [190, 255, 127], [0, 100, 0], [221, 250, 235], [0, 252, 255],
            [26, 58, 90], [0, 0, 255], [48, 36, 60], [255, 0, 252], [199, 139, 169], [255, 0, 0], [1, 1, 1], [3, 3, 0],
        ];
        for (h, want) in hsv.iter().zip(rgb_want) {
            assert_eq!(hsv2rgb(h[0], h[1], h[2]), want, "rgb of hsv {h:?}");
        }
    }

    /// Each ColorJitter component on [`PIXELS`] equals torchvision's `F.adjust_*` of the PIL image
    /// exactly (torchvision 0.28, Pillow 13: `list(F.adjust_brightness(im, 0.6).getdata())` ...).
    #[test]
    fn jitter_components_match_torchvision_exactly() {
        let none = JitterParams { order: [0, 1, 2, 3], brightness: None, contrast: None, saturation: None, hue: None };
        #[rustfmt::skip]
        let cases: [(JitterParams, [u8; 60]); 8] = [
            (JitterParams { brightness: Some(0.6), ..none }, [0, 0, 0, 153, 153, 153, 46, 46, 46, 153, 0, 0, 0, 153, 0, 0, 0, 153, 153, 153, 0, 0, 153, 153, 153, 0, 153, 120, 18, 24, 18, 120, 24, 24, 18, 120, 7, 144, 72, 150, 72, 6, 72, 6, 150, 60, 54, 48, 3, 3, 4, 152, 0, 76, 54, 120, 120, 6, 5, 6]),
            (JitterParams { brightness: Some(1.3), ..none }, [0, 0, 0, 255, 255, 255, 100, 100, 100, 255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0, 0, 255, 255, 255, 0, 255, 255, 39, 52, 39, 255, 52, 52, 39, 255, 16, 255, 156, 255, 156, 13, 156, 13, 255, 130, 116, 104, 6, 7, 9, 255, 1, 166, 116, 255, 255, 13, 11, 13]),
            (JitterParams { contrast: Some(0.7), ..none }, [31, 31, 31, 210, 210, 210, 85, 85, 85, 210, 31, 31, 31, 210, 31, 31, 31, 210, 210, 210, 31, 31, 210, 210, 210, 31, 210, 171, 52, 59, 52, 171, 59, 59, 52, 171, 40, 199, 115, 206, 115, 38, 115, 38, 206, 101, 94, 87, 35, 35, 36, 209, 32, 121, 94, 171, 172, 38, 37, 38]),
            (JitterParams { contrast: Some(1.5), ..none }, [0, 0, 0, 255, 255, 255, 63, 63, 63, 255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0, 0, 255, 255, 255, 0, 255, 247, 0, 7, 0, 247, 7, 7, 0, 247, 0, 255, 127, 255, 127, 0, 127, 0, 255, 97, 82, 67, 0, 0, 0, 255, 0, 139, 82, 247, 249, 0, 0, 0]),
            (JitterParams { saturation: Some(0.3), ..none }, [0, 0, 0, 255, 255, 255, 77, 77, 77, 129, 53, 53, 105, 181, 105, 20, 20, 96, 234, 234, 158, 125, 201, 201, 150, 73, 150, 117, 66, 69, 100, 151, 103, 48, 45, 96, 114, 182, 146, 177, 138, 105, 85, 52, 124, 94, 91, 88, 5, 6, 6, 139, 64, 102, 143, 176, 177, 9, 9, 9]),
            (JitterParams { saturation: Some(1.4), ..none }, [0, 0, 0, 255, 255, 255, 77, 77, 77, 255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0, 0, 255, 255, 255, 0, 255, 247, 9, 23, 0, 227, 3, 35, 21, 255, 0, 255, 104, 255, 109, 0, 140, 0, 255, 103, 89, 75, 4, 6, 7, 255, 0, 142, 59, 213, 214, 10, 9, 10]),
            (JitterParams { hue: Some(0.1), ..none }, [0, 0, 0, 255, 255, 255, 77, 77, 77, 255, 150, 0, 0, 255, 150, 150, 0, 255, 108, 255, 0, 0, 108, 255, 255, 0, 108, 200, 114, 31, 31, 200, 138, 138, 31, 200, 13, 227, 240, 242, 250, 11, 250, 11, 242, 98, 100, 80, 5, 5, 7, 254, 14, 2, 91, 137, 201, 10, 9, 9]),
            (JitterParams { hue: Some(-0.27), ..none }, [0, 0, 0, 255, 255, 255, 77, 77, 77, 108, 0, 255, 255, 102, 0, 0, 255, 102, 255, 0, 150, 156, 255, 0, 0, 156, 255, 86, 31, 200, 200, 106, 31, 31, 200, 106, 240, 211, 13, 219, 11, 250, 11, 250, 213, 98, 80, 100, 5, 7, 5, 2, 32, 254, 158, 201, 91, 9, 10, 10]),
        ];
        for (j, want) in cases {
            let mut px = PIXELS.concat();
            apply_jitter(&mut px, &j);
            assert_eq!(px, want, "{j:?}");
        }
    }

    /// `RandomResizedCrop.get_params`' distribution: the crop's area is a uniform fraction of the
    /// image in `scale` and its log aspect ratio uniform in log `ratio`, so over 2000 draws with
    /// torchvision's defaults both ends of each range are reached, and every crop drawn in the
    /// loop keeps its ratio within `ratio` (up to the rounding of each side to whole pixels).
    #[test]
    fn rrc_params_span_the_scale_and_ratio_ranges() {
        let (w, h) = (500u32, 667u32);
        let (scale, ratio) = ([0.08, 1.0], [3.0 / 4.0, 4.0 / 3.0]);
        let (mut areas, mut ratios) = (Vec::new(), Vec::new());
        // Crops smaller than the image that touch each side: the offsets reach both ends of their range.
        let mut touching = [0; 4];
        for i in 0..2000 {
            let (top, left, ch, cw) = rrc_params(w, h, scale, ratio, &mut Rng::keyed(5, 0, i, STREAM_AUGMENT));
            assert!(left + cw <= w && top + ch <= h, "{i}: {left},{top} {cw}x{ch}");
            for (k, touches) in [top == 0 && ch < h, top + ch == h && ch < h, left == 0 && cw < w, left + cw == w && cw < w].into_iter().enumerate() {
                touching[k] += usize::from(touches);
            }
            areas.push((cw * ch) as f64 / (w * h) as f64);
            let r = cw as f64 / ch as f64;
            assert!((0.74..=1.35).contains(&r), "{i}: ratio {r} of {cw}x{ch}");
            ratios.push(r);
        }
        let span = |v: &[f64]| v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        let ((alo, ahi), (rlo, rhi)) = (span(&areas), span(&ratios));
        assert!(alo < 0.1 && ahi > 0.95, "areas in [{alo}, {ahi}]");
        assert!(rlo < 0.77 && rhi > 1.3, "ratios in [{rlo}, {rhi}]");
        let small = areas.iter().filter(|&&a| a < 0.5).count();
        assert!(touching.iter().all(|&n| n >= 3), "crops at the top, bottom, left, right edges: {touching:?}");
        assert!(small > 600, "{small} of 2000 crops below half the area");
    }

    /// On images of a few pixels a try can round a side to 0 pixels: it is rejected (never an
    /// empty crop), and what is returned fits the image.
    #[test]
    fn rrc_params_never_return_an_empty_crop() {
        let mut zero_tries = 0;
        for (w, h) in [(1u32, 1u32), (2, 1), (1, 3), (3, 2)] {
            for i in 0..500 {
                let mut rng = Rng::keyed(1, 2, i, STREAM_AUGMENT);
                let mut probe = rng.clone();
                let (top, left, ch, cw) = rrc_params(w, h, [0.08, 1.0], [3.0 / 4.0, 4.0 / 3.0], &mut rng);
                assert!(cw >= 1 && ch >= 1 && left + cw <= w && top + ch <= h, "{w}x{h} key {i}: {left},{top} {cw}x{ch}");
                // The first try's sides, as rrc_params draws them.
                let ta = (w * h) as f64 * probe.uniform(0.08, 1.0);
                let aspect = probe.uniform((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln()).exp();
                zero_tries += usize::from(round_half_even((ta * aspect).sqrt()) == 0.0 || round_half_even((ta / aspect).sqrt()) == 0.0);
            }
        }
        assert!(zero_tries > 100, "only {zero_tries} first tries rounded a side to 0: the test does not reach the case");
    }

    /// Pillow's floating-point path (taken when a corner maps past ±32768: in y on a 3×40000
    /// image, in x on a 40000×3 one): the rotation equals PIL's exactly. The non-black output
    /// pixels of `im.rotate(angle, Image.NEAREST, fillcolor=(0, 0, 0))`, printed by Python
    /// (Pillow 13); every source row (column) is the output row (column).
    #[test]
    fn rotation_of_a_very_tall_image_matches_pil() {
        // Pixel (x, y) of the tall image; the wide one is its transpose.
        let px = tall_pixel;
        let tall = RgbImage::from_fn(3, 40_000, px);
        let wide = RgbImage::from_fn(40_000, 3, |x, y| px(y, x));
        // Per output column of the tall image (row of the wide one): the first row (column) of its
        // run and the source column (row) of each.
        type Lines = [(u32, &'static str); 3];
        let runs: [(bool, f64, Lines); 4] = [
            (false, 10.0, [(19986, "22222111111000000"), (19991, "222222111111000000"), (19997, "22222211111100000")]),
            (false, -7.5, [(19996, "00000000111111122222222"), (19989, "0000000111111112222222"), (19981, "00000000111111122222222")]),
            (true, 10.0, [(19997, "00000011111122222"), (19991, "000000111111222222"), (19986, "00000111111222222")]),
            (true, -7.5, [(19981, "22222222111111100000000"), (19989, "2222222111111110000000"), (19996, "22222222111111100000000")]),
        ];
        for (transposed, angle, lines) in runs {
            let img = if transposed { &wide } else { &tall };
            let r = rotate_nearest(img, angle);
            for (a, (first, sources)) in lines.iter().enumerate() {
                for b in 0..40_000u32 {
                    let src = b.checked_sub(*first).and_then(|k| sources.as_bytes().get(k as usize)).map(|c| u32::from(c - b'0'));
                    let ((x, y), from) = if transposed { ((b, a as u32), src.map(|s| (b, s))) } else { ((a as u32, b), src.map(|s| (s, b))) };
                    let want = from.map_or(image::Rgb([0, 0, 0]), |(sx, sy)| *img.get_pixel(sx, sy));
                    assert_eq!(*r.get_pixel(x, y), want, "transposed {transposed}, angle {angle}: pixel ({x}, {y})");
                }
            }
        }
    }

    /// Pixel (x, y) of a 3-pixel-wide test image: every pixel of the first 64256 rows a distinct colour.
    fn tall_pixel(x: u32, y: u32) -> image::Rgb<u8> {
        image::Rgb([(y % 251) as u8, (y / 251 % 256) as u8, 40 + 80 * x as u8])
    }

    /// Pillow's fixed-point path on long images whose corners all map inside ±32768 (3×25000 and
    /// 25000×3): the rotation equals PIL's exactly, and here the floating-point path would not (2
    /// or 3 pixels land in another source pixel), so a `fixed_ok` test that picks the wrong path
    /// shows. The four rotations (80° and 155° of the tall image, -80° and -155° of the wide one)
    /// were chosen so that each slip in the test's two sums (a `*` made `+` or `/`, a `+` made `-`
    /// or `*`) pushes some corner past ±32768 in at least one of them. The non-black output pixels
    /// (x, y) of `im.rotate(angle, Image.NEAREST, fillcolor=(0, 0, 0))` on the tall image and the
    /// source pixel (sx, sy) of each, printed by Python (Pillow 13); PIL's rotation of the wide
    /// image (its transpose) by -angle is the transposed output (checked in Python too).
    #[test]
    fn rotation_of_long_images_through_fixed_point_matches_pil() {
        type Shown = &'static [(u32, u32, u32, u32)];
        #[rustfmt::skip]
        let cases: [(f64, Shown); 2] = [
            (80.0, &[
                (0, 12498, 2, 12498), (0, 12499, 1, 12498), (1, 12499, 2, 12499), (2, 12499, 2, 12500), (0, 12500, 0, 12499), (1, 12500, 1, 12500),
                (2, 12500, 1, 12501), (1, 12501, 0, 12500), (2, 12501, 0, 12501),
            ]),
            (155.0, &[
                (2, 12494, 2, 12505), (2, 12495, 2, 12504), (1, 12496, 2, 12503), (2, 12496, 2, 12503), (1, 12497, 2, 12502), (2, 12497, 1, 12502),
                (0, 12498, 2, 12500), (1, 12498, 2, 12501), (2, 12498, 1, 12501), (0, 12499, 2, 12499), (1, 12499, 1, 12500), (2, 12499, 0, 12500),
                (0, 12500, 2, 12499), (1, 12500, 1, 12499), (2, 12500, 0, 12499), (0, 12501, 1, 12498), (1, 12501, 0, 12498), (0, 12502, 1, 12497),
                (1, 12502, 0, 12497), (0, 12503, 0, 12496), (0, 12504, 0, 12495), (0, 12505, 0, 12494),
            ]),
        ];
        for (angle, shown) in cases {
            assert_long_rotations_show(25_000, angle, shown);
        }
    }

    /// `rotate_crop_source` bounds what `rotate_crop_into` reads: an image whose pixels outside
    /// the window are replaced gives the same crop (random sizes, angles of both paths, crops
    /// inside and partly outside the rotated image).
    #[test]
    fn the_rotated_crops_window_holds_every_pixel_it_reads() {
        for case in 0..300u64 {
            let mut rng = Rng::keyed(5, 31, case, 0);
            let (w, h) = (1 + rng.below(700) as u32, 1 + rng.below(700) as u32);
            let angle = match case % 4 {
                0 => 0.0,
                1 => rng.uniform(-180.0, 180.0),
                _ => rng.uniform(-30.0, 30.0),
            };
            let (cw, ch) = (1 + rng.below(w as u64) as u32, 1 + rng.below(h as u64) as u32);
            let (left, top) = (rng.below((w - cw + 1) as u64) as u32, rng.below((h - ch + 1) as u64) as u32);
            let data: Vec<u8> = (0..w * h * 3).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 1).collect();
            let mut full = vec![0u8; (cw * ch * 3) as usize];
            rotate_crop_into(View { w, h, data: &data }, angle, left, top, cw, ch, &mut full);
            let Some([x0, y0, x1, y1]) = rotate_crop_source(w, h, angle, left, top, cw, ch) else {
                assert!(full.iter().all(|&v| v == 0), "case {case}: no window, but the crop shows pixels");
                continue;
            };
            let mut masked = data.clone();
            for (i, px) in masked.chunks_exact_mut(3).enumerate() {
                let (x, y) = (i as u32 % w, i as u32 / w);
                if !(x0..x1).contains(&x) || !(y0..y1).contains(&y) {
                    px.copy_from_slice(&[0, 0, 0]);
                }
            }
            let mut got = vec![0u8; full.len()];
            rotate_crop_into(View { w, h, data: &masked }, angle, left, top, cw, ch, &mut got);
            assert_eq!(got, full, "case {case}: {w}x{h}, {angle}°, crop {cw}x{ch} at ({left}, {top}), window {:?}", [x0, y0, x1, y1]);
        }
    }

    /// Pillow's test of the fixed-point path at a corner that maps to exactly 32768.0: `< 32768`
    /// fails, so PIL takes the floating-point path, which differs from the fixed-point one in 3
    /// pixels here. 3×40009 at 50.359111060630305° (the y sum at corner (3, 40009)) and its
    /// transpose at -50.359111060630305° (the x sum at (40009, 0)) were found by a search over
    /// widths and angles. Pixels as in `rotation_of_long_images_through_fixed_point_matches_pil`.
    #[test]
    fn rotation_with_a_corner_at_exactly_32768_takes_the_float_path_like_pil() {
        #[rustfmt::skip]
        let shown = [
            (0, 20002, 2, 20002), (0, 20003, 1, 20003), (1, 20003, 2, 20003), (2, 20003, 2, 20004), (0, 20004, 0, 20003), (1, 20004, 1, 20004),
            (2, 20004, 2, 20005), (0, 20005, 0, 20004), (1, 20005, 0, 20005), (2, 20005, 1, 20005), (2, 20006, 0, 20006),
        ];
        assert_long_rotations_show(40_009, 50.359111060630305, &shown);
    }

    /// The 3×`rows` image of `tall_pixel` rotated by `angle` shows exactly the pixels (x, y, sx, sy)
    /// listed, and its transpose rotated by -`angle` the same pixels transposed (as PIL's are).
    fn assert_long_rotations_show(rows: u32, angle: f64, shown: &[(u32, u32, u32, u32)]) {
        let tall = RgbImage::from_fn(3, rows, tall_pixel);
        let wide = RgbImage::from_fn(rows, 3, |x, y| tall_pixel(y, x));
        assert_rotation_shows(&tall, angle, shown.iter().copied());
        assert_rotation_shows(&wide, -angle, shown.iter().map(|&(x, y, sx, sy)| (y, x, sy, sx)));
    }

    /// Pillow's floating-point path where a source coordinate is exactly 0.0: 90° of a 3×65534
    /// image (a corner maps to 32768.5) takes output row 32768 from source column 0 (truncation,
    /// not the -1 of a negative coordinate). Its non-black pixels, printed by Python as in
    /// `rotation_of_long_images_through_fixed_point_matches_pil`; rows from 64256 on repeat the
    /// colours of the first ones, far from the pixels shown.
    #[test]
    fn rotation_by_90_degrees_truncates_a_source_coordinate_of_zero_like_pil() {
        let img = RgbImage::from_fn(3, 65_534, tall_pixel);
        #[rustfmt::skip]
        let shown = [
            (0, 32766, 2, 32766), (1, 32766, 2, 32767), (2, 32766, 2, 32768), (0, 32767, 1, 32766), (1, 32767, 1, 32767), (2, 32767, 1, 32768),
            (0, 32768, 0, 32766), (1, 32768, 0, 32767), (2, 32768, 0, 32768),
        ];
        assert_rotation_shows(&img, 90.0, shown);
    }

    /// `rotate_nearest(img, angle)` is black but for the pixels (x, y, sx, sy) listed, each pixel
    /// (sx, sy) of `img`.
    fn assert_rotation_shows(img: &RgbImage, angle: f64, shown: impl IntoIterator<Item = (u32, u32, u32, u32)>) {
        let mut want = RgbImage::new(img.width(), img.height());
        for (x, y, sx, sy) in shown {
            want.put_pixel(x, y, *img.get_pixel(sx, sy));
        }
        let got = rotate_nearest(img, angle);
        let diff: Vec<_> = got.enumerate_pixels().filter(|&(x, y, p)| p != want.get_pixel(x, y)).map(|(x, y, _)| (x, y)).take(5).collect();
        assert!(diff.is_empty(), "{}×{} at {angle}°: pixels {diff:?} differ from PIL", img.width(), img.height());
    }

    /// `train_u8` from a copy of the image at half size (as the cache stores it) crops the box
    /// drawn in the original's pixels scaled by 1/2, then resizes: on an image made of 2×2 blocks
    /// the view equals the one from the original; a 1-pixel box at the far corner of an odd-sized
    /// original stays inside the copy.
    #[test]
    fn train_u8_scales_the_crop_box_into_a_smaller_copy() {
        let small = RgbImage::from_fn(100, 50, |x, y| image::Rgb([(x * 2) as u8, (y * 5) as u8, (x * y % 256) as u8]));
        let big = RgbImage::from_fn(200, 100, |x, y| *small.get_pixel(x / 2, y / 2));
        let cfg = TransformConfig { image_size: 16, ..Default::default() };
        let p = TrainParams { angle: 0.0, top: 20, left: 40, height: 60, width: 80, flip: false, jitter: None };
        let crop = |img: &RgbImage, l, t, w, h| image::imageops::crop_imm(img, l, t, w, h).to_image();
        let want = resize_view(View::of(&crop(&small, 20, 10, 40, 30)), 16, 16);
        assert_eq!(train_u8(View::of(&small), (200, 100), &p, &cfg), want);
        assert_eq!(train_u8(View::of(&big), (200, 100), &p, &cfg), resize_view(View::of(&crop(&big, 40, 20, 80, 60)), 16, 16));
        // 201×101 original, 100×50 copy: the box (200, 100, 1, 1) maps to the copy's last pixel.
        let corner = TrainParams { top: 100, left: 200, height: 1, width: 1, ..p };
        assert_eq!(train_u8(View::of(&small), (201, 101), &corner, &cfg), resize_view(View::of(&crop(&small, 99, 49, 1, 1)), 16, 16));
        // Scale factors differ per axis: a 100×50 copy of a 100×100 original halves heights only,
        // of a 200×50 original widths only.
        let tall = TrainParams { top: 40, left: 10, height: 20, width: 30, ..p };
        assert_eq!(train_u8(View::of(&small), (100, 100), &tall, &cfg), resize_view(View::of(&crop(&small, 10, 20, 30, 10)), 16, 16));
        let wide = TrainParams { top: 10, left: 40, height: 30, width: 80, ..p };
        // Rounding both ends up would overrun the copy: a 4×4 box (1, 1, 3, 3) in a 2×2 copy is its last pixel.
        let tiny = RgbImage::from_fn(2, 2, |x, y| image::Rgb([(x * 100 + y * 10) as u8, 50, 60]));
        let over = TrainParams { top: 1, left: 1, height: 3, width: 3, ..p };
        assert_eq!(train_u8(View::of(&tiny), (4, 4), &over, &cfg), resize_view(View::of(&crop(&tiny, 1, 1, 1, 1)), 16, 16));
        assert_eq!(train_u8(View::of(&small), (200, 50), &wide, &cfg), resize_view(View::of(&crop(&small, 20, 10, 40, 30)), 16, 16));
    }

    /// An image with no pixels (0 wide or 0 high) gives the normalised black view in both modes.
    #[test]
    fn images_without_pixels_give_the_normalised_black_view() {
        let cfg = TransformConfig { image_size: 4, resize_size: 4, ..Default::default() };
        for (w, h) in [(0, 5), (5, 0), (0, 0)] {
            for mode in [Mode::Eval, Mode::Train] {
                let t = transform(&RgbImage::new(w, h), mode, &cfg, 1, 2, 3);
                let want: Vec<f32> = (0..48).map(|i| (0.0 - cfg.mean[i / 16]) / cfg.std[i / 16]).collect();
                assert_eq!(t, want, "{w}x{h} {mode:?}");
            }
        }
    }

    /// `resized_crop` clips a box reaching past the right and bottom edges to the image (callers
    /// never draw one: `RandomResizedCrop`'s boxes fit) instead of padding the outside with black.
    #[test]
    fn resized_crop_clips_a_box_past_the_edges() {
        let img = RgbImage::from_fn(20, 10, |x, y| image::Rgb([(x * 12) as u8, (y * 25) as u8, 7]));
        assert_eq!(resized_crop(&img, 5, 15, 10, 10, 4), resized_crop(&img, 5, 15, 5, 5, 4));
    }
}
