//! The geometry of the transforms: torchvision's `Resize`, `CenterCrop`, the rotation of
//! `RandomRotation` and the resize of `RandomResizedCrop`, on packed RGB8, byte-identical with
//! Pillow (the resampling itself is [`crate::resample`]).

use image::RgbImage;

use super::{TransformConfig, View};
use crate::resample::{resample, resample_region, source_rect, Filter, Region};

/// torchvision's `Resize(size)` output size for a `w`×`h` image (shorter side → `size`).
pub fn resize_output_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    if short == 0 {
        return (w, h);
    }
    // Python: int(size * long / short): exact integer product, correctly rounded division, truncation.
    let new_long = ((size as u64 * long as u64) as f64 / short as f64) as u32;
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Python's `round()` on floats: round half to even.
pub(crate) fn round_half_even(v: f64) -> f64 {
    v.round_ties_even()
}

/// Bilinear antialiased resize of the whole of `src` to `dw`×`dh`: Pillow's
/// `Image.resize(.., BILINEAR)`, byte for byte. Returns packed RGB8.
pub(crate) fn resize_view(src: View<'_>, dw: u32, dh: u32) -> Vec<u8> {
    resample(src, dw, dh, Filter::Bilinear, [0.0, 0.0, src.w as f32, src.h as f32])
}

/// Pillow's `Image.resize((w, h), filter)` of an RGB image (byte-identical).
pub fn resize(img: &RgbImage, w: u32, h: u32, filter: Filter) -> RgbImage {
    let data = resample(View::of(img), w, h, filter, [0.0, 0.0, img.width() as f32, img.height() as f32]);
    RgbImage::from_raw(w, h, data).unwrap_or_else(|| RgbImage::new(w, h))
}

/// torchvision `Resize(size)` (shorter side, bilinear, antialias) on an RGB image.
pub fn resize_shorter(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = resize_output_size(img.width(), img.height(), size);
    let data = resize_view(View::of(img), w, h);
    RgbImage::from_raw(w, h, data).unwrap_or_else(|| RgbImage::new(w, h))
}

/// torchvision `CenterCrop(size)`: offsets `int(round((h - size) / 2.0))`, zero padding when the
/// image is smaller. Returns packed RGB8 of `size`×`size`.
pub(crate) fn center_crop_view(src: View<'_>, size: u32) -> Vec<u8> {
    let (left, top) = (center_offset(src.w, size), center_offset(src.h, size));
    let s = size as usize;
    let mut out = vec![0u8; s * s * 3];
    for y in 0..s {
        let sy = y as i64 + top;
        if sy < 0 || sy >= src.h as i64 {
            continue;
        }
        let x0 = (-left).max(0) as usize; // first output column inside the source
        let x1 = ((src.w as i64 - left).min(s as i64)).max(0) as usize;
        if x0 >= x1 {
            continue;
        }
        let sx0 = (x0 as i64 + left) as usize;
        let row = sy as usize * src.w as usize * 3;
        out[(y * s + x0) * 3..(y * s + x1) * 3].copy_from_slice(&src.data[row + sx0 * 3..row + (sx0 + x1 - x0) * 3]);
    }
    out
}

/// torchvision `CenterCrop`'s offset of a `size` window in a side `len` long (negative: padding).
fn center_offset(len: u32, size: u32) -> i64 {
    if size > len {
        -(((size - len) / 2) as i64)
    } else {
        round_half_even((len - size) as f64 / 2.0) as i64
    }
}

/// `Resize(resize_size)` then `CenterCrop(size)`, computing only the crop window of the resize
/// when it fits (byte-identical to resizing everything, see [`resample_region`]).
pub(crate) fn resize_center_crop(src: View<'_>, resize_size: u32, size: u32) -> Vec<u8> {
    let (w, h) = resize_output_size(src.w, src.h, resize_size);
    let bx = [0.0, 0.0, src.w as f32, src.h as f32];
    if size > w || size > h {
        let resized = resample(src, w, h, Filter::Bilinear, bx);
        return center_crop_view(View { w, h, data: &resized }, size);
    }
    let (x0, y0) = (center_offset(w, size) as u32, center_offset(h, size) as u32);
    resample_region(src, w, h, Filter::Bilinear, bx, Region { x0, y0, x1: x0 + size, y1: y0 + size })
}

/// The source pixels `[x0, y0, x1, y1)` of a `w`×`h` image that the eval view
/// (`Resize(resize_size)` then `CenterCrop(size)`) reads, for [`crate::decode::decode_rgb_window`]
/// (`None`: all of them, when the crop is larger than the resize).
pub fn resize_center_crop_source(w: u32, h: u32, resize_size: u32, size: u32) -> Option<[u32; 4]> {
    let (rw, rh) = resize_output_size(w, h, resize_size);
    if size > rw || size > rh {
        return None;
    }
    let (x0, y0) = (center_offset(rw, size) as u32, center_offset(rh, size) as u32);
    Some(source_rect(w, h, rw, rh, Filter::Bilinear, [0.0, 0.0, w as f32, h as f32], Region { x0, y0, x1: x0 + size, y1: y0 + size }))
}

/// torchvision `CenterCrop(size)` on an RGB image.
pub fn center_crop(img: &RgbImage, size: u32) -> RgbImage {
    let data = center_crop_view(View::of(img), size);
    RgbImage::from_raw(size, size, data).unwrap_or_else(|| RgbImage::new(size, size))
}

/// The eval transform up to uint8: `Resize(resize_size)` then `CenterCrop(image_size)`.
pub fn eval_u8(img: &RgbImage, cfg: &TransformConfig) -> RgbImage {
    eval_u8_view(View::of(img), cfg)
}

/// [`eval_u8`] of a borrowed image.
pub(crate) fn eval_u8_view(src: View<'_>, cfg: &TransformConfig) -> RgbImage {
    let s = cfg.image_size;
    let data = resize_center_crop(src, cfg.resize_size, s);
    RgbImage::from_raw(s, s, data).unwrap_or_else(|| RgbImage::new(s, s))
}

/// The inverse map of PIL's `Image.rotate(angle, NEAREST, expand=False)` about the centre of a
/// `w`×`h` image: output pixel → source pixel, with Pillow's 16.16 fixed-point affine path
/// (or its float path when a corner's coordinates do not fit it).
struct RotationMap {
    identity: bool,
    fixed_ok: bool,
    /// The matrix, rounded to 15 decimals as Pillow's Python side does.
    m: [f64; 6],
    /// The fixed-point matrix (with the half-pixel offsets in `a[2]`, `a[5]`).
    a: [i64; 6],
}

impl RotationMap {
    fn new(w: u32, h: u32, angle: f64) -> RotationMap {
        // Python: angle % 360.0 (result takes the sign of the divisor).
        let mut a = angle % 360.0;
        if a != 0.0 && a < 0.0 {
            a += 360.0;
        }
        let rad = -(a.to_radians());
        let r15 = |v: f64| -> f64 { format!("{v:.15}").parse().unwrap_or(v) };
        let (m0, m1, m3, m4) = (r15(rad.cos()), r15(rad.sin()), r15(-rad.sin()), r15(rad.cos()));
        let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
        let m2 = m0 * -cx + m1 * -cy + 0.0 + cx;
        let m5 = m3 * -cx + m4 * -cy + 0.0 + cy;
        let fix = |v: f64| -> i64 { (v * 65536.0 + 0.5).floor() as i64 };
        let fixed_ok = [(0, 0), (w, h), (0, h), (w, 0)].iter().all(|&(x, y)| {
            let (x, y) = (x as f64, y as f64);
            (x * m0 + y * m1 + m2).abs() < 32768.0 && (x * m3 + y * m4 + m5).abs() < 32768.0
        });
        let a2 = fix(m2 + m0 * 0.5 + m1 * 0.5);
        let a5 = fix(m5 + m3 * 0.5 + m4 * 0.5);
        RotationMap { identity: a == 0.0, fixed_ok, m: [m0, m1, m2, m3, m4, m5], a: [fix(m0), fix(m1), a2, fix(m3), fix(m4), a5] }
    }

    /// The source pixel (possibly outside the image) of output pixel (`ox`, `oy`).
    #[inline(always)]
    fn source(&self, ox: i64, oy: i64) -> (i64, i64) {
        let [a0, a1, a2, a3, a4, a5] = self.a;
        let [m0, m1, m2, m3, m4, m5] = self.m;
        if self.identity {
            (ox, oy)
        } else if self.fixed_ok {
            // C: int arithmetic, accumulated per row / column (no overflow by check_fixed).
            let xx = (a2 + oy * a1 + ox * a0) as i32;
            let yy = (a5 + oy * a4 + ox * a3) as i32;
            ((xx >> 16) as i64, (yy >> 16) as i64)
        } else {
            let xx = m2 + m1 * 0.5 + m0 * 0.5 + oy as f64 * m1 + ox as f64 * m0;
            let yy = m5 + m4 * 0.5 + m3 * 0.5 + oy as f64 * m4 + ox as f64 * m3;
            let c = |v: f64| if v < 0.0 { -1 } else { v as i64 };
            (c(xx), c(yy))
        }
    }
}

/// PIL `Image.rotate(angle, NEAREST, expand=False, fillcolor=0)` restricted to the output
/// rectangle (left, top, cw, ch): fills `out` (packed RGB8, cw×ch). Pixels that map outside
/// the source are black. Bit-exact with Pillow's 16.16 fixed-point affine path.
pub(crate) fn rotate_crop_into(src: View<'_>, angle: f64, left: u32, top: u32, cw: u32, ch: u32, out: &mut [u8]) {
    let (w, h) = (src.w as i64, src.h as i64);
    let stride = src.w as usize * 3;
    let map = RotationMap::new(src.w, src.h, angle);
    for y in 0..ch as i64 {
        let oy = y + top as i64;
        let orow = &mut out[(y as usize) * cw as usize * 3..(y as usize + 1) * cw as usize * 3];
        for x in 0..cw as i64 {
            let ox = x + left as i64;
            let (xin, yin) = map.source(ox, oy);
            let o = x as usize * 3;
            if xin >= 0 && xin < w && yin >= 0 && yin < h {
                let s = yin as usize * stride + xin as usize * 3;
                orow[o..o + 3].copy_from_slice(&src.data[s..s + 3]);
            } else {
                orow[o..o + 3].copy_from_slice(&[0, 0, 0]);
            }
        }
    }
}

/// The source pixels `[x0, y0, x1, y1)` of a `w`×`h` image that [`rotate_crop_into`] reads for
/// the output rectangle (left, top, cw, ch), `None` when it reads none. Each source coordinate
/// is a monotonic function of the output position (a floor of an affine map), so its extremes
/// are at the rectangle's corners.
pub(crate) fn rotate_crop_source(w: u32, h: u32, angle: f64, left: u32, top: u32, cw: u32, ch: u32) -> Option<[u32; 4]> {
    if cw == 0 || ch == 0 {
        return None;
    }
    let map = RotationMap::new(w, h, angle);
    let (l, t, r, b) = (left as i64, top as i64, (left + cw - 1) as i64, (top + ch - 1) as i64);
    let corners = [map.source(l, t), map.source(r, t), map.source(l, b), map.source(r, b)];
    let x0 = corners.iter().map(|c| c.0).min()?.max(0);
    let y0 = corners.iter().map(|c| c.1).min()?.max(0);
    let x1 = (corners.iter().map(|c| c.0).max()? + 1).min(w as i64);
    let y1 = (corners.iter().map(|c| c.1).max()? + 1).min(h as i64);
    (x0 < x1 && y0 < y1).then_some([x0 as u32, y0 as u32, x1 as u32, y1 as u32])
}

/// PIL `Image.rotate(angle, NEAREST, expand=False, fillcolor=(0, 0, 0))` of a whole image.
pub fn rotate_nearest(img: &RgbImage, angle: f64) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = vec![0u8; w as usize * h as usize * 3];
    rotate_crop_into(View::of(img), angle, 0, 0, w, h, &mut out);
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

/// torchvision `F.resized_crop(img, top, left, height, width, [size, size], BILINEAR,
/// antialias=True)` on an RGB image (the resize step of `RandomResizedCrop`).
pub fn resized_crop(img: &RgbImage, top: u32, left: u32, height: u32, width: u32, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (left, top) = (left.min(w), top.min(h));
    let (width, height) = (width.min(w - left), height.min(h - top));
    let mut buf = vec![0u8; width as usize * height as usize * 3];
    rotate_crop_into(View::of(img), 0.0, left, top, width, height, &mut buf);
    let data = resize_view(View { w: width, h: height, data: &buf }, size, size);
    RgbImage::from_raw(size, size, data).unwrap_or_else(|| RgbImage::new(size, size))
}
