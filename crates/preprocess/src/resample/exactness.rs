//! Every vector kernel level the CPU supports against the scalar reference, on random inputs
//! (seeded, so a failure names a case that reruns identically): exact byte equality.

use super::*;
use crate::rng::Rng;
use crate::simd::supported_levels;

const FILTERS: [Filter; 5] = [Filter::Box, Filter::Bilinear, Filter::Hamming, Filter::Bicubic, Filter::Lanczos];

/// Random bytes, a quarter of them 0 or 255 (clipping after negative lobes), some runs of
/// alternating extremes (the largest overshoots of Bicubic and Lanczos).
fn pixels(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        match rng.below(10) {
            0 => v.push(0),
            1 => v.push(255),
            2 => {
                let run = 3 * (1 + rng.below(8) as usize);
                v.extend((0..run).map(|i| if i / 3 % 2 == 0 { 0 } else { 255 }));
            }
            _ => v.push(rng.below(256) as u8),
        }
    }
    v.truncate(n);
    v
}

/// A size in 1..=max, log-uniform (small sizes as often as large ones).
fn size(rng: &mut Rng, max: usize) -> usize {
    let e = rng.uniform(0.0, (max as f64).ln());
    (e.exp() as usize).clamp(1, max)
}

/// A source interval `[in0, in1)` of `n` pixels: the whole, or (half the time) a random
/// sub-interval with fractional ends (Pillow's `box`).
fn interval(rng: &mut Rng, n: usize) -> (f32, f32) {
    if rng.below(2) == 0 {
        return (0.0, n as f32);
    }
    let a = rng.uniform(0.0, n as f64 * 0.5) as f32;
    let b = rng.uniform(a as f64 + 0.1f64.min(n as f64 - a as f64), n as f64) as f32;
    (a, b.max(a + 1e-3).min(n as f32))
}

/// A random non-empty sub-range of `0..n` (the whole one a third of the time).
fn sub_range(rng: &mut Rng, n: usize) -> std::ops::Range<usize> {
    if rng.below(3) == 0 {
        return 0..n;
    }
    let a = rng.below(n as u64) as usize;
    let b = a + 1 + rng.below((n - a) as u64) as usize;
    a..b
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<(usize, u8, u8)> {
    a.iter().zip(b).enumerate().find(|(_, (x, y))| x != y).map(|(i, (&x, &y))| (i, x, y))
}

/// Horizontal pass: 1–3 rows, source and output widths from 1 to 4,000 (up and down), every
/// filter, random boxes, a random range of output columns, and a source view that starts at
/// the first column read (as the vertical-first path passes it).
#[test]
fn horizontal_kernels_equal_the_scalar_pass() {
    let levels = supported_levels();
    let mut clipped = [0usize; 2];
    for case in 0..240u64 {
        let mut rng = Rng::keyed(31, 1, case, 0);
        let in_w = size(&mut rng, 4000);
        let out_w = size(&mut rng, 4000);
        let filter = FILTERS[case as usize % 5];
        let (in0, in1) = interval(&mut rng, in_w);
        let c = Coeffs::new(in_w, in0, in1, out_w, filter);
        let cols = sub_range(&mut rng, out_w);
        let h = 1 + rng.below(3) as usize;
        let (col0, end) = if rng.below(2) == 0 { (0, in_w) } else { c.span(cols.clone()) };
        let data = pixels(&mut rng, (end - col0) * h * 3);
        let src = View { w: (end - col0) as u32, h: h as u32, data: &data };
        let want = horizontal(src, col0, 0..h, &c, cols.clone());
        clipped[0] += want.iter().filter(|&&v| v == 0).count();
        clipped[1] += want.iter().filter(|&&v| v == 255).count();
        for &level in &levels {
            let got = horizontal_at(level, src, col0, 0..h, &c, cols.clone());
            assert_eq!(got.len(), want.len());
            if let Some((i, g, w)) = first_difference(&got, &want) {
                panic!(
                    "case {case}: horizontal {in_w}→{out_w} px × {h} rows, {filter:?}, box [{in0}, {in1}), cols {cols:?}, col0 {col0}, \
                     level {level}: byte {i} is {g}, scalar {w}"
                );
            }
        }
    }
    assert!(clipped.iter().all(|&n| n > 1000), "the cases clip too rarely: {clipped:?} bytes at 0 / 255");
}

/// Vertical pass: source heights and output heights from 1 to 4,000 (up and down), small odd
/// and even widths, every filter, random boxes, a random range of output rows read from a
/// source that starts at the first row they need, and a random range of source columns.
#[test]
fn vertical_kernels_equal_the_scalar_pass() {
    let levels = supported_levels();
    for case in 0..240u64 {
        let mut rng = Rng::keyed(31, 2, case, 0);
        let in_h = size(&mut rng, 4000);
        let out_h = size(&mut rng, 4000);
        let filter = FILTERS[case as usize % 5];
        let (in0, in1) = interval(&mut rng, in_h);
        let c = Coeffs::new(in_h, in0, in1, out_h, filter);
        let rows = sub_range(&mut rng, out_h);
        let (row0, end) = if rng.below(2) == 0 { (0, in_h) } else { c.span(rows.clone()) };
        let src_w = 1 + rng.below(if case % 4 == 0 { 70 } else { 12 }) as usize;
        let cols = sub_range(&mut rng, src_w);
        let data = pixels(&mut rng, (end - row0) * src_w * 3);
        let want = vertical(&data, src_w, row0, cols.clone(), &c, rows.clone());
        for &level in &levels {
            let got = vertical_at(level, &data, src_w, row0, cols.clone(), &c, rows.clone());
            assert_eq!(got.len(), want.len());
            if let Some((i, g, w)) = first_difference(&got, &want) {
                panic!(
                    "case {case}: vertical {in_h}→{out_h} px, {src_w} wide (cols {cols:?}), {filter:?}, box [{in0}, {in1}), rows {rows:?}, \
                     row0 {row0}, level {level}: byte {i} is {g}, scalar {w}"
                );
            }
        }
    }
}

/// The whole resize (both pass orders, the skipped passes, the copy) and its sub-rectangle path
/// (`resample_region`): every level equals the scalar resize.
#[test]
fn resample_region_at_every_level_equals_the_scalar_resize() {
    let levels = supported_levels();
    for case in 0..160u64 {
        let mut rng = Rng::keyed(31, 3, case, 0);
        let (w, h) = (size(&mut rng, 300), size(&mut rng, 300));
        let (ow, oh) = match rng.below(4) {
            0 => (w, h),
            1 => (w, size(&mut rng, 300)),
            2 => (size(&mut rng, 300), h),
            _ => (size(&mut rng, 300), size(&mut rng, 300)),
        };
        let filter = FILTERS[case as usize % 5];
        let ((x0, x1), (y0, y1)) =
            if rng.below(2) == 0 { ((0.0, w as f32), (0.0, h as f32)) } else { (interval(&mut rng, w), interval(&mut rng, h)) };
        let bx = [x0, y0, x1, y1];
        let (cols, rows) = (sub_range(&mut rng, ow), sub_range(&mut rng, oh));
        let region = Region { x0: cols.start as u32, x1: cols.end as u32, y0: rows.start as u32, y1: rows.end as u32 };
        let data = pixels(&mut rng, w * h * 3);
        let src = View { w: w as u32, h: h as u32, data: &data };
        let (ow, oh) = (ow as u32, oh as u32);
        let want = resample_region_at(SimdLevel::Scalar, src, ow, oh, filter, bx, region);
        for &level in &levels {
            let got = resample_region_at(level, src, ow, oh, filter, bx, region);
            if let Some((i, g, v)) = first_difference(&got, &want) {
                panic!("case {case}: {w}x{h} → {ow}x{oh}, {filter:?}, box {bx:?}, region {region:?}, level {level}: byte {i} is {g}, scalar {v}");
            }
            assert_eq!(got.len(), want.len());
        }
    }
}

/// The kernels' edge cases by hand: 1-pixel sources and outputs, the widest tap windows of the
/// VBMI kernel (groups of 5 pixels whose taps span exactly 42 source pixels and one more), and
/// rows whose byte counts leave every remainder modulo 64.
#[test]
fn kernel_edges_equal_the_scalar_passes() {
    let levels = supported_levels();
    let mut rng = Rng::keyed(31, 4, 0, 0);
    for (in_w, out_w, filter) in
        [(1, 1, Filter::Box), (1, 7, Filter::Lanczos), (7, 1, Filter::Lanczos), (43, 5, Filter::Box), (45, 5, Filter::Bilinear)]
            .into_iter()
            .chain((1..=70).map(|w| (w, w + 1, Filter::Bicubic)))
    {
        let c = Coeffs::new(in_w, 0.0, in_w as f32, out_w, filter);
        let data = pixels(&mut rng, in_w * 2 * 3);
        let src = View { w: in_w as u32, h: 2, data: &data };
        let want = horizontal(src, 0, 0..2, &c, 0..out_w);
        let vc = Coeffs::new(2, 0.0, 2.0, 3, filter);
        let vwant = vertical(&data, in_w, 0, 0..in_w, &vc, 0..3);
        for &level in &levels {
            assert_eq!(horizontal_at(level, src, 0, 0..2, &c, 0..out_w), want, "horizontal {in_w}→{out_w}, {filter:?}, level {level}");
            assert_eq!(vertical_at(level, &data, in_w, 0, 0..in_w, &vc, 0..3), vwant, "vertical 2→3, {in_w} wide, {filter:?}, level {level}");
        }
    }
}
