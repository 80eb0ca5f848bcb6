//! Colour jitter: torchvision's `ColorJitter` as Pillow's `ImageEnhance` blends and HSV hue shift
//! compute it, in integer arithmetic ported from Pillow.

/// Colour-jitter factors of one view (torchvision `ColorJitter.get_params`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterParams {
    /// Application order of (0 brightness, 1 contrast, 2 saturation, 3 hue).
    pub order: [u8; 4],
    /// Brightness factor (None: disabled).
    pub brightness: Option<f32>,
    /// Contrast factor.
    pub contrast: Option<f32>,
    /// Saturation factor.
    pub saturation: Option<f32>,
    /// Hue shift in [-0.5, 0.5].
    pub hue: Option<f32>,
}

/// PIL `ImageEnhance` / torchvision `adjust_*` on packed RGB8, in `j.order`.
pub fn apply_jitter(rgb: &mut [u8], j: &JitterParams) {
    for op in j.order {
        match op {
            0 => {
                if let Some(f) = j.brightness {
                    blend_const(rgb, 0, f);
                }
            }
            1 => {
                if let Some(f) = j.contrast {
                    let n = (rgb.len() / 3).max(1);
                    let sum: u64 = rgb.chunks_exact(3).map(|p| luma(p) as u64).sum();
                    let mean = (sum as f64 / n as f64 + 0.5) as u8;
                    blend_const(rgb, mean, f);
                }
            }
            2 => {
                if let Some(f) = j.saturation {
                    for p in rgb.chunks_exact_mut(3) {
                        let l = luma(p);
                        for v in p.iter_mut() {
                            *v = blend(l, *v, f);
                        }
                    }
                }
            }
            _ => {
                if let Some(hf) = j.hue {
                    // numpy: np_h += np.uint8(int8(hue * 255)) (wrapping)
                    let shift = ((hf * 255.0) as i8) as u8;
                    for p in rgb.chunks_exact_mut(3) {
                        let (h, s, v) = rgb2hsv(p[0], p[1], p[2]);
                        let rgbv = hsv2rgb(h.wrapping_add(shift), s, v);
                        p.copy_from_slice(&rgbv);
                    }
                }
            }
        }
    }
}

/// Pillow's `L` conversion: ITU-R 601-2 luma in 16-bit fixed point.
pub(super) fn luma(p: &[u8]) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Pillow `ImagingBlend(im1 = degenerate, im2 = image, alpha)`.
fn blend(d: u8, v: u8, alpha: f32) -> u8 {
    let t = d as i32 as f32 + alpha * (v as i32 - d as i32) as f32;
    if (0.0..=1.0).contains(&alpha) {
        t as u8
    } else if t <= 0.0 {
        0
    } else if t >= 255.0 {
        255
    } else {
        t as u8
    }
}

fn blend_const(rgb: &mut [u8], d: u8, alpha: f32) {
    for v in rgb.iter_mut() {
        *v = blend(d, *v, alpha);
    }
}

fn clip8(v: i64) -> u8 {
    v.clamp(0, 255) as u8
}

/// Pillow `rgb2hsv_row`.
pub(super) fn rgb2hsv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if minc == maxc {
        return (0, 0, maxc);
    }
    let cr = (maxc - minc) as f32;
    let s = cr / maxc as f32;
    let rc = (maxc - r) as f32 / cr;
    let gc = (maxc - g) as f32 / cr;
    let bc = (maxc - b) as f32 / cr;
    let h: f32 = if r == maxc {
        bc - gc
    } else if g == maxc {
        (2.0f64 + rc as f64 - bc as f64) as f32
    } else {
        (4.0f64 + gc as f64 - rc as f64) as f32
    };
    let h = ((h as f64 / 6.0 + 1.0) % 1.0) as f32;
    (clip8((h as f64 * 255.0) as i64), clip8((s as f64 * 255.0) as i64), maxc)
}

/// Pillow `hsv2rgb`.
pub(super) fn hsv2rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    if s == 0 {
        return [v, v, v];
    }
    let i = (h as f32 as f64 * 6.0 / 255.0).floor() as i64;
    let f = (h as f32 as f64 * 6.0 / 255.0 - i as f32 as f64) as f32;
    let fs = (s as f32 as f64 / 255.0) as f32;
    let vf = v as f32 as f64;
    let p = clip8((vf * (1.0 - fs as f64)).round() as i64);
    let q = clip8((vf * (1.0 - (fs * f) as f64)).round() as i64);
    let t = clip8((vf * (1.0 - (fs as f64 * (1.0 - f as f64)))).round() as i64);
    match i % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}
