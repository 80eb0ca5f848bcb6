//! Pillow's `Image.resize` for 8-bit RGB, ported from `libImaging/Resample.c`: a separable
//! convolution whose filter support is scaled by the downscale factor (antialiasing),
//! coefficients computed in `f64`, normalised to fixed point with `PRECISION_BITS = 32 - 8 - 2`,
//! accumulated in `i32` from a rounding bias of `1 << (PRECISION_BITS - 1)`, and clipped to
//! `0..=255` after each pass; horizontal pass first (only over the source rows the vertical pass
//! reads), then vertical, with uint8 in between. The output is byte-identical to Pillow's.
//!
//! `resample_region` computes only a rectangle of the output (e.g. the later `CenterCrop`
//! window); every output pixel depends only on its own coefficients, so the rectangle is
//! byte-identical to the same pixels of the full resize.
//!
//! Reading it next to Pillow's `Resample.c`: `Coeffs::new` is `precompute_coeffs` followed by
//! `normalize_coeffs_8bpc`, the scalar `horizontal` is `ImagingResampleHorizontal_8bpc` and the
//! scalar `vertical` is `ImagingResampleVertical_8bpc` (both kept as the reference), and
//! `resample_region` is `ImagingResampleInner` (which pass runs, over which rows).
//!
//! Both passes also run as vectorised kernels (module `x86`: AVX2, AVX-512 BW, AVX-512 VBMI),
//! chosen at run time by [`crate::simd_level`] (the CPU, capped by `PETAL_SIMD`, see
//! [`crate::simd`]). They are integer kernels with the same products and the same wrapping `i32`
//! sums as the scalar code, so they give the same bytes; the tests compare every level the CPU
//! supports with the scalar code.

use crate::simd::SimdLevel;
use crate::transform::View;

/// Fixed-point fraction bits of the coefficients (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's resampling filters (the convolution ones of `Image.Resampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Filter {
    /// `Resampling.BOX` (support 0.5).
    Box,
    /// `Resampling.BILINEAR`: the triangle filter, support 1 (torchvision's default).
    Bilinear,
    /// `Resampling.HAMMING` (support 1).
    Hamming,
    /// `Resampling.BICUBIC`: Keys' cubic with a = -0.5, support 2.
    Bicubic,
    /// `Resampling.LANCZOS`: 3-lobe windowed sinc, support 3.
    Lanczos,
}

impl Filter {
    /// The filter's support (half width) at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    /// The filter's weight at distance `x`.
    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Box => f64::from(u8::from(x > -0.5 && x <= 0.5)),
            Filter::Bilinear => (1.0 - x.abs()).max(0.0),
            Filter::Hamming => hamming(x.abs()),
            Filter::Bicubic => bicubic(x.abs()),
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn hamming(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let x = x * std::f64::consts::PI;
    // Pillow writes the constants as C floats (0.54f, 0.46f).
    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

/// Fixed-point coefficients of one pass: for output position `i`, source positions
/// `first[i] .. first[i] + count[i]` with weights `k[i * ksize ..][.. count[i]]`.
#[derive(Debug, Clone)]
pub(crate) struct Coeffs {
    ksize: usize,
    first: Vec<usize>,
    count: Vec<usize>,
    k: Vec<i32>,
}

impl Coeffs {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `out_size` outputs from the
    /// source interval `[in0, in1)` (C floats) of a source `in_size` long.
    pub(crate) fn new(in_size: usize, in0: f32, in1: f32, out_size: usize, filter: Filter) -> Coeffs {
        let scale = (in1 - in0) as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut c = Coeffs { ksize, first: Vec::with_capacity(out_size), count: Vec::with_capacity(out_size), k: vec![0; out_size * ksize] };
        let mut w = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = in0 as f64 + (xx as f64 + 0.5) * scale;
            // C casts truncate toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(xmin as i64) as usize - xmin;
            let xmax = xmax.min(ksize);
            let ss = 1.0 / filterscale;
            let mut ww = 0.0;
            for (x, slot) in w.iter_mut().enumerate().take(xmax) {
                *slot = filter.weight(((x + xmin) as f64 - center + 0.5) * ss);
                ww += *slot;
            }
            for (x, &wx) in w.iter().enumerate().take(xmax) {
                let v = if ww != 0.0 { wx / ww } else { wx };
                c.k[xx * ksize + x] = to_fixed(v);
            }
            c.first.push(xmin);
            c.count.push(xmax);
        }
        c
    }

    /// Source positions read by outputs `range`: `(first, end)`.
    fn span(&self, range: std::ops::Range<usize>) -> (usize, usize) {
        let first = range.clone().map(|i| self.first[i]).min().unwrap_or(0);
        let end = range.map(|i| self.first[i] + self.count[i]).max().unwrap_or(first);
        (first, end)
    }

    /// Output `i`'s weights.
    fn weights(&self, i: usize) -> &[i32] {
        &self.k[i * self.ksize..i * self.ksize + self.count[i]]
    }
}

/// Pillow's `normalize_coeffs_8bpc`: round half away from zero to `PRECISION_BITS` bits.
fn to_fixed(v: f64) -> i32 {
    let s = v * (1u32 << PRECISION_BITS) as f64;
    if v < 0.0 {
        (-0.5 + s) as i32
    } else {
        (0.5 + s) as i32
    }
}

/// Pillow's `clip8`: drop the fraction bits and clamp to a byte.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The rounding bias every accumulator starts from.
const BIAS: i32 = 1 << (PRECISION_BITS - 1);

/// A rectangle of output pixels: columns `x0..x1`, rows `y0..y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl Region {
    /// The whole `w`×`h` output.
    pub(crate) fn all(w: u32, h: u32) -> Region {
        Region { x0: 0, y0: 0, x1: w, y1: h }
    }
}

/// Horizontal pass at `level` (the scalar reference below, or a vector kernel of the same
/// contract when the CPU supports `level`).
fn horizontal_at(level: SimdLevel, src: View<'_>, col0: usize, rows: std::ops::Range<usize>, c: &Coeffs, cols: std::ops::Range<usize>) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 && level.supported() {
        return x86::horizontal(level, src, col0, rows, c, cols);
    }
    let _ = level;
    horizontal(src, col0, rows, c, cols)
}

/// Vertical pass at `level` (see [`horizontal_at`]).
fn vertical_at(
    level: SimdLevel,
    src: &[u8],
    src_w: usize,
    row0: usize,
    cols: std::ops::Range<usize>,
    c: &Coeffs,
    rows: std::ops::Range<usize>,
) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 && level.supported() {
        return x86::vertical(level, src, src_w, row0, cols, c, rows);
    }
    let _ = level;
    vertical(src, src_w, row0, cols, c, rows)
}

/// Horizontal pass (Pillow's `ImagingResampleHorizontal_8bpc`, the scalar reference): rows `rows` of `src` (whose column 0 is source column `col0`), output
/// columns `cols` → packed RGB8, `cols.len()` wide and `rows.len()` high.
fn horizontal(src: View<'_>, col0: usize, rows: std::ops::Range<usize>, c: &Coeffs, cols: std::ops::Range<usize>) -> Vec<u8> {
    let stride = src.w as usize * 3;
    let mut out = Vec::with_capacity(rows.len() * cols.len() * 3);
    for y in rows {
        let row = &src.data[y * stride..(y + 1) * stride];
        for xx in cols.clone() {
            let first = (c.first[xx] - col0) * 3;
            let (mut r, mut g, mut b) = (BIAS, BIAS, BIAS);
            for (px, &k) in row[first..].chunks_exact(3).zip(c.weights(xx)) {
                r += px[0] as i32 * k;
                g += px[1] as i32 * k;
                b += px[2] as i32 * k;
            }
            out.extend_from_slice(&[clip8(r), clip8(g), clip8(b)]);
        }
    }
    out
}

/// Vertical pass (Pillow's `ImagingResampleVertical_8bpc`, the scalar reference) over `src` (packed RGB8, `src_w` pixels wide, whose row 0 is source row
/// `row0`), reading columns `col0 .. col0 + width`, for output rows `rows`.
fn vertical(src: &[u8], src_w: usize, row0: usize, cols: std::ops::Range<usize>, c: &Coeffs, rows: std::ops::Range<usize>) -> Vec<u8> {
    let (col0, width) = (cols.start, cols.len());
    let n = width * 3;
    let mut out = Vec::with_capacity(rows.len() * n);
    let mut acc = vec![0i32; n];
    for yy in rows {
        acc.fill(BIAS);
        for (dy, &k) in c.weights(yy).iter().enumerate() {
            let start = ((c.first[yy] + dy - row0) * src_w + col0) * 3;
            for (a, &p) in acc.iter_mut().zip(&src[start..start + n]) {
                *a += p as i32 * k;
            }
        }
        out.extend(acc.iter().map(|&a| clip8(a)));
    }
    out
}

/// `Image.resize((out_w, out_h), filter, box)` restricted to the output rectangle `region`:
/// returns packed RGB8 of the region's size. `bx` is Pillow's `box` (left, top, right, bottom)
/// in source pixels, as C floats.
pub(crate) fn resample_region(src: View<'_>, out_w: u32, out_h: u32, filter: Filter, bx: [f32; 4], region: Region) -> Vec<u8> {
    resample_region_at(crate::simd::simd_level(), src, out_w, out_h, filter, bx, region)
}

/// [`resample_region`] with the kernels of `level` (Pillow's `ImagingResampleInner`).
pub(crate) fn resample_region_at(level: SimdLevel, src: View<'_>, out_w: u32, out_h: u32, filter: Filter, bx: [f32; 4], region: Region) -> Vec<u8> {
    let cols = region.x0 as usize..region.x1 as usize;
    let rows = region.y0 as usize..region.y1 as usize;
    if src.w == out_w && src.h == out_h && bx == [0.0, 0.0, out_w as f32, out_h as f32] {
        return vertical_at(level, src.data, src.w as usize, 0, cols, &identity(out_h as usize), rows);
    }
    let need_h = out_w != src.w || bx[0] != 0.0 || bx[2] != out_w as f32;
    let need_v = out_h != src.h || bx[1] != 0.0 || bx[3] != out_h as f32;
    let vert = if need_v { Coeffs::new(src.h as usize, bx[1], bx[3], out_h as usize, filter) } else { identity(out_h as usize) };
    let (first, end) = vert.span(rows.clone());
    if !need_h {
        return vertical_at(level, src.data, src.w as usize, 0, cols, &vert, rows);
    }
    let horiz = Coeffs::new(src.w as usize, bx[0], bx[2], out_w as usize, filter);
    if need_v && vertical_first(src, out_w, out_h) {
        let (x_first, x_end) = horiz.span(cols.clone());
        let tmp = vertical_at(level, src.data, src.w as usize, 0, x_first..x_end, &vert, rows.clone());
        let tmp_view = View { w: (x_end - x_first) as u32, h: rows.len() as u32, data: &tmp };
        return horizontal_at(level, tmp_view, x_first, 0..rows.len(), &horiz, cols);
    }
    let tmp = horizontal_at(level, src, 0, first..end, &horiz, cols.clone());
    if !need_v {
        return tmp;
    }
    vertical_at(level, &tmp, cols.len(), first, 0..cols.len(), &vert, rows)
}

/// The source pixels `[x0, y0, x1, y1)` (columns, then rows) that [`resample_region`] reads for
/// `region`: every tap of both passes. (The vector kernels also load bytes past a row's taps,
/// which they give no weight, so those bytes need only be readable.)
pub(crate) fn source_rect(src_w: u32, src_h: u32, out_w: u32, out_h: u32, filter: Filter, bx: [f32; 4], region: Region) -> [u32; 4] {
    let need_h = out_w != src_w || bx[0] != 0.0 || bx[2] != out_w as f32;
    let need_v = out_h != src_h || bx[1] != 0.0 || bx[3] != out_h as f32;
    let span = |need: bool, n_in: u32, in0: f32, in1: f32, n_out: u32, range: std::ops::Range<u32>| {
        if need {
            let (a, b) = Coeffs::new(n_in as usize, in0, in1, n_out as usize, filter).span(range.start as usize..range.end as usize);
            (a as u32, b as u32)
        } else {
            (range.start, range.end)
        }
    };
    let (x0, x1) = span(need_h, src_w, bx[0], bx[2], out_w, region.x0..region.x1);
    let (y0, y1) = span(need_v, src_h, bx[1], bx[3], out_h, region.y0..region.y1);
    [x0, y0, x1, y1]
}

/// Pillow 13 (python-pillow/Pillow#9549) runs the vertical pass first when the height shrinks
/// by more than twice as many pixels as the width does. The order changes the uint8 rounding
/// between the passes, so it is part of the result; the rule was fitted on 1,485 random
/// size pairs against Pillow 13.0.0 (every one matched) and is checked by the corpus test.
fn vertical_first(src: View<'_>, out_w: u32, out_h: u32) -> bool {
    let (dh, dw) = (src.h as i64 - out_h as i64, src.w as i64 - out_w as i64);
    dh > 0 && dh > 2 * dw
}

/// Coefficients that copy each position (a pass Pillow skips).
fn identity(n: usize) -> Coeffs {
    Coeffs { ksize: 1, first: (0..n).collect(), count: vec![1; n], k: vec![1 << PRECISION_BITS; n] }
}

/// `Image.resize((out_w, out_h), filter, box)` of a packed RGB8 image.
pub(crate) fn resample(src: View<'_>, out_w: u32, out_h: u32, filter: Filter, bx: [f32; 4]) -> Vec<u8> {
    resample_region(src, out_w, out_h, filter, bx, Region::all(out_w, out_h))
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod exactness;

#[cfg(test)]
mod tests {
    use super::*;

    fn view(w: u32, h: u32, data: &[u8]) -> View<'_> {
        View { w, h, data }
    }

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        for (n_in, n_out) in [(500usize, 256usize), (667, 341), (10, 37), (3, 1), (1, 5)] {
            for f in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos, Filter::Box, Filter::Hamming] {
                let c = Coeffs::new(n_in, 0.0, n_in as f32, n_out, f);
                for i in 0..n_out {
                    let s: i64 = c.weights(i).iter().map(|&k| k as i64).sum();
                    assert!((s - (1i64 << PRECISION_BITS)).abs() <= c.count[i] as i64, "{f:?} {n_in}->{n_out} at {i}: {s}");
                    assert!(c.first[i] + c.count[i] <= n_in);
                }
            }
        }
    }

    #[test]
    fn halving_bilinear_averages_pairs_like_pillow() {
        // 4x1 → 2x1 bilinear: support 2, centre 1.0 → weights 1/8, 3/8, 3/8, 1/8 clipped to the image.
        let data: Vec<u8> = [0u8, 100, 200, 40].iter().flat_map(|&v| [v, v, v]).collect();
        let out = resample(view(4, 1, &data), 2, 1, Filter::Bilinear, [0.0, 0.0, 4.0, 1.0]);
        // Pixel 0: taps x=0..2 with weights 3/7? Pillow: center 1.0, xmin 0, xmax 3; w = tri((x - 0.5) / 2)
        // = 0.75, 0.75, 0.25 → normalised 3/7, 3/7, 1/7 → (0 + 300 + 200) / 7 = 71.4 → 71.
        assert_eq!(out[0], 71);
        // Pixel 1: center 3.0, taps 1..4: 0.25, 0.75, 0.75 → (100 + 600 + 120) / 7 = 117.1 → 117.
        assert_eq!(out[3], 117);
    }

    #[test]
    fn region_equals_the_same_pixels_of_the_full_resize() {
        let (w, h) = (37u32, 23u32);
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 7919 % 251) as u8).collect();
        let full = resample(view(w, h, &data), 19, 30, Filter::Bicubic, [0.0, 0.0, w as f32, h as f32]);
        let r = Region { x0: 3, y0: 5, x1: 15, y1: 27 };
        let part = resample_region(view(w, h, &data), 19, 30, Filter::Bicubic, [0.0, 0.0, w as f32, h as f32], r);
        for y in r.y0..r.y1 {
            let a = ((y * 19 + r.x0) * 3) as usize;
            let b = (((y - r.y0) * (r.x1 - r.x0)) * 3) as usize;
            assert_eq!(&full[a..a + 36], &part[b..b + 36], "row {y}");
        }
    }

    #[test]
    fn same_size_is_a_copy() {
        let data: Vec<u8> = (0..5 * 4 * 3).map(|i| i as u8).collect();
        assert_eq!(resample(view(5, 4, &data), 5, 4, Filter::Bilinear, [0.0, 0.0, 5.0, 4.0]), data);
    }
}
