//! x86-64 kernels of the two passes (AVX2, AVX-512 BW, AVX-512 VBMI), bit-identical to the
//! scalar `horizontal` / `vertical` of the parent module (Pillow's `ImagingResampleHorizontal_8bpc`
//! / `ImagingResampleVertical_8bpc`).
//!
//! Exactness: every output byte is `clip8(BIAS + Σ k·p)` over the same `i32` products as the
//! scalar code. Lanes multiply with `vpmulld` (the low 32 bits of the product, i.e. wrapping
//! `i32` multiplication) and add with `vpaddd` (wrapping addition); wrapping addition is
//! associative and commutative, so the vector order of summation gives the same `i32` as the
//! scalar loop (which never overflows for 8-bit inputs: |Σ k| stays well below 2³¹ / 255).
//! The VBMI horizontal kernel multiplies four taps at once with VNNI's `vpdpbusd` (unsigned
//! 8-bit pixels × signed 8-bit factors, four products summed into each `i32` lane), which needs
//! 8-bit factors: each coefficient is written in three balanced base-256 digits,
//! `k = d0 + 2⁸·d1 + 2¹⁶·d2` with every digit in `-128..=127`, the three digits accumulate apart,
//! and `acc0 + (acc1 << 8) + (acc2 << 16)` is again `Σ k·p` in wrapping `i32`.
//! The final `>> 22` is an arithmetic shift (`vpsrad`) and the clamp to `0..=255` a max with 0
//! followed by an unsigned saturating narrow, which is `clamp(0, 255)` of the shifted value.
//!
//! Callers check the CPU first ([`SimdLevel::supported`]); these functions assume it.

use super::{Coeffs, BIAS};
use crate::simd::SimdLevel;
use crate::transform::View;
use std::arch::x86_64::*;
use std::ops::Range;

/// Zero bytes after the copy of a source row, so that window loads past its end stay in bounds.
const PAD: usize = 192;

/// Horizontal coefficients laid out for the vector kernels, prepared once per pass and reused
/// for every row.
struct HorizPlan {
    /// Per output pixel: byte offset of its first tap in the row copy, first chunk, chunk count.
    px: Vec<(usize, usize, usize)>,
    /// Per-pixel chunks of `lanes` coefficients: chunk `m` of a pixel holds taps
    /// `m·P .. (m+1)·P` (P = lanes / 3 rounded down) expanded per channel
    /// (`k0 k0 k0 k1 k1 k1 …`), zero in unused lanes and past the pixel's taps.
    chunks: Vec<i32>,
    /// Groups of up to 5 output pixels for the VBMI kernel (empty on other levels).
    groups: Vec<Group>,
    /// Per four group taps (`4m` .. `4m + 4`), in order.
    quads: Vec<TapQuad>,
}

/// Four taps of a group for `vpdpbusd`, per i32 lane `l = 3q + c` (pixel `q` of the group,
/// channel `c`): byte `4l + e` belongs to tap `4m + e`.
struct TapQuad {
    /// Byte index into the 128-byte source window of each byte (0 past a pixel's taps, where the
    /// digits are 0).
    idx: [u8; 64],
    /// The coefficients' balanced base-256 digits, least significant first.
    digits: [[i8; 64]; 3],
}

/// `k`'s balanced base-256 digits (`k = d0 + 2⁸·d1 + 2¹⁶·d2`, each in `-128..=127`), `None`
/// outside `-8,421,504 ..= 8,355,711` (a weight of about ±2; Pillow's normalised weights stay
/// near 1 at most).
fn digits(k: i32) -> Option<[i8; 3]> {
    let low = |v: i64| ((v + 128) & 255) - 128;
    let d0 = low(k as i64);
    let r1 = (k as i64 - d0) >> 8; // exact: k - d0 is a multiple of 256
    let d1 = low(r1);
    let d2 = (r1 - d1) >> 8;
    Some([d0 as i8, d1 as i8, i8::try_from(d2).ok()?])
}

/// Up to 5 consecutive output pixels whose taps all lie in one 128-byte (42-pixel) window.
struct Group {
    /// Index of the group's first output pixel (in the pass's output columns).
    px0: usize,
    /// Number of output pixels, 1..=5.
    npx: usize,
    /// Byte offset of the window in the row copy.
    off: usize,
    /// First tap in `idx` / `coef`, and the number of taps (`None`: the window is too narrow,
    /// the pixels run through the per-pixel kernel).
    taps: Option<(usize, usize)>,
}

impl HorizPlan {
    fn new(level: SimdLevel, c: &Coeffs, cols: Range<usize>, span0: usize) -> HorizPlan {
        let lanes = if level >= SimdLevel::Avx512Bw { 16 } else { 8 };
        let per = lanes / 3;
        let mut plan = HorizPlan { px: Vec::with_capacity(cols.len()), chunks: Vec::new(), groups: Vec::new(), quads: Vec::new() };
        for xx in cols.clone() {
            let w = c.weights(xx);
            let nch = w.len().div_ceil(per);
            plan.px.push(((c.first[xx] - span0) * 3, plan.chunks.len() / lanes, nch));
            for m in 0..nch {
                for l in 0..lanes {
                    let t = m * per + l / 3;
                    plan.chunks.push(if l < 3 * per && t < w.len() { w[t] } else { 0 });
                }
            }
        }
        if level >= SimdLevel::Avx512Vbmi {
            let n = cols.len();
            for px0 in (0..n).step_by(5) {
                let npx = (n - px0).min(5);
                let xs = cols.start + px0..cols.start + px0 + npx;
                let base = xs.clone().map(|x| c.first[x]).min().unwrap_or(0);
                let end = xs.clone().map(|x| c.first[x] + c.count[x]).max().unwrap_or(base);
                let ntaps = xs.clone().map(|x| c.count[x]).max().unwrap_or(0);
                let mut g = Group { px0, npx, off: (base - span0) * 3, taps: None };
                let fits = xs.clone().all(|x| c.weights(x).iter().all(|&k| digits(k).is_some()));
                if (end - base) * 3 <= 128 && fits {
                    let first = plan.quads.len();
                    for m in 0..ntaps.div_ceil(4) {
                        let mut quad = TapQuad { idx: [0; 64], digits: [[0; 64]; 3] };
                        for (q, x) in xs.clone().enumerate() {
                            for e in 0..4 {
                                let j = 4 * m + e;
                                let Some(&k) = c.weights(x).get(j) else { continue };
                                let d = digits(k).unwrap_or_default();
                                for ch in 0..3 {
                                    let b = 4 * (3 * q + ch) + e;
                                    quad.idx[b] = ((c.first[x] - base + j) * 3 + ch) as u8;
                                    for (plane, &dv) in quad.digits.iter_mut().zip(&d) {
                                        plane[b] = dv;
                                    }
                                }
                            }
                        }
                        plan.quads.push(quad);
                    }
                    g.taps = Some((first, plan.quads.len() - first));
                }
                plan.groups.push(g);
            }
        }
        plan
    }
}

/// The horizontal pass at `level` (AVX2 or wider, supported by the CPU): same contract as the
/// scalar `horizontal`.
pub(super) fn horizontal(level: SimdLevel, src: View<'_>, col0: usize, rows: Range<usize>, c: &Coeffs, cols: Range<usize>) -> Vec<u8> {
    assert!(level >= SimdLevel::Avx2 && level.supported(), "{level} kernels on this CPU");
    let n = cols.len() * 3;
    let mut out = vec![0u8; rows.len() * n];
    if n == 0 || rows.is_empty() {
        return out;
    }
    let stride = src.w as usize * 3;
    let (span0, span1) = c.span(cols.clone());
    let (lo, hi) = ((span0 - col0) * 3, (span1 - col0) * 3);
    let plan = HorizPlan::new(level, c, cols, span0);
    let (mut copy0, mut copy1) = (vec![0u8; hi - lo + PAD], vec![0u8; hi - lo + PAD]);
    let mut rows = rows.zip(out.chunks_exact_mut(n));
    // SAFETY (every call below): the CPU supports `level` (asserted above); every load stays
    // inside its row slice: a pixel's chunks start at most at its last tap and read 16 bytes, a
    // group's window starts at a tap and reads 128 bytes, and `source_row` gives PAD ≥ 128 bytes
    // after the taps. Stores write the pixels of the row's `o` (3 bytes per output pixel).
    while let Some((y0, o0)) = rows.next() {
        let r0 = source_row(src.data, y0 * stride, lo..hi, &mut copy0);
        match level {
            SimdLevel::Avx512Vbmi => match rows.next() {
                // Two rows at a time share each group's coefficient loads.
                Some((y1, o1)) => unsafe { h_rows_vbmi([r0, source_row(src.data, y1 * stride, lo..hi, &mut copy1)], &plan, [o0, o1]) },
                None => unsafe { h_rows_vbmi([r0], &plan, [o0]) },
            },
            SimdLevel::Avx512Bw => unsafe { h_row_avx512(r0, &plan, o0) },
            _ => unsafe { h_row_avx2(r0, &plan, o0) },
        }
    }
    out
}

/// Bytes `taps` of the row starting at `start` in `data`, followed by at least PAD readable
/// bytes: in place where `data` goes on long enough, else copied into `copy` (zero-padded).
fn source_row<'a>(data: &'a [u8], start: usize, taps: Range<usize>, copy: &'a mut [u8]) -> &'a [u8] {
    let (a, b) = (start + taps.start, start + taps.end);
    if b + PAD <= data.len() {
        return &data[a..];
    }
    copy[..b - a].copy_from_slice(&data[a..b]);
    copy
}

/// Writes the low 3 bytes of `v` at pixel `x` of `out`.
#[inline(always)]
fn put3(out: &mut [u8], x: usize, v: i32) {
    out[x * 3..x * 3 + 3].copy_from_slice(&v.to_le_bytes()[..3]);
}

#[target_feature(enable = "avx2")]
unsafe fn h_row_avx2(row: &[u8], plan: &HorizPlan, out: &mut [u8]) {
    for (x, &(off, k0, nch)) in plan.px.iter().enumerate() {
        put3(out, x, h_px_avx2(row, off, &plan.chunks[k0 * 8..(k0 + nch) * 8]));
    }
}

/// One output pixel, 2 taps (6 lanes of 8) per step; returns its 3 bytes in the low bytes.
#[target_feature(enable = "avx2")]
unsafe fn h_px_avx2(row: &[u8], off: usize, ks: &[i32]) -> i32 {
    let p = row.as_ptr().add(off);
    let mut acc = _mm256_setzero_si256();
    for (m, k) in ks.chunks_exact(8).enumerate() {
        let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(6 * m).cast()));
        acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(v, _mm256_loadu_si256(k.as_ptr().cast())));
    }
    // Lanes 0..3 += lanes 3..6: the two taps of each chunk, per channel.
    let sum = _mm256_add_epi32(acc, _mm256_permutevar8x32_epi32(acc, _mm256_setr_epi32(3, 4, 5, 6, 7, 7, 7, 7)));
    let sum = _mm256_srai_epi32::<22>(_mm256_add_epi32(sum, _mm256_set1_epi32(BIAS)));
    let s = _mm256_castsi256_si128(sum);
    let s = _mm_packs_epi32(s, s);
    _mm_cvtsi128_si32(_mm_packus_epi16(s, s))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
unsafe fn h_row_avx512(row: &[u8], plan: &HorizPlan, out: &mut [u8]) {
    for (x, &(off, k0, nch)) in plan.px.iter().enumerate() {
        put3(out, x, h_px_avx512(row, off, &plan.chunks[k0 * 16..(k0 + nch) * 16]));
    }
}

/// One output pixel, 5 taps (15 lanes of 16) per step; returns its 3 bytes in the low bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
unsafe fn h_px_avx512(row: &[u8], off: usize, ks: &[i32]) -> i32 {
    let p = row.as_ptr().add(off);
    let mut acc = _mm512_setzero_si512();
    for (m, k) in ks.chunks_exact(16).enumerate() {
        let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(15 * m).cast()));
        acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(v, _mm512_loadu_si512(k.as_ptr().cast())));
    }
    // Per channel c, the sum of lanes c, c+3, …, c+12 (lane 15 is 0): u = a + a[9..],
    // then u + u[3..] + u[6..] in lanes 0..3.
    let z = _mm512_setzero_si512();
    let u = _mm512_add_epi32(acc, _mm512_alignr_epi32::<9>(z, acc));
    let s = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_alignr_epi32::<3>(z, u)), _mm512_alignr_epi32::<6>(z, u));
    let s = _mm512_srai_epi32::<22>(_mm512_add_epi32(s, _mm512_set1_epi32(BIAS)));
    _mm_cvtsi128_si32(_mm512_cvtusepi32_epi8(_mm512_max_epi32(s, z)))
}

/// `R` rows (1 or 2) through the groups of the plan, each group's coefficients loaded once for
/// all of them.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2")]
unsafe fn h_rows_vbmi<const R: usize>(rows: [&[u8]; R], plan: &HorizPlan, mut outs: [&mut [u8]; R]) {
    let z = _mm512_setzero_si512();
    for g in &plan.groups {
        let Some((m0, nm)) = g.taps else {
            for (row, out) in rows.iter().zip(outs.iter_mut()) {
                for x in g.px0..g.px0 + g.npx {
                    let (off, k0, nch) = plan.px[x];
                    put3(out, x, h_px_avx512(row, off, &plan.chunks[k0 * 16..(k0 + nch) * 16]));
                }
            }
            continue;
        };
        let win = rows.map(|row| {
            let p = row.as_ptr().add(g.off);
            (_mm512_loadu_si512(p.cast()), _mm512_loadu_si512(p.add(64).cast()))
        });
        let (mut a0, mut a1, mut a2) = ([_mm512_set1_epi32(BIAS); R], [z; R], [z; R]);
        for t in &plan.quads[m0..m0 + nm] {
            let idx = _mm512_loadu_si512(t.idx.as_ptr().cast());
            let [d0, d1, d2] = t.digits.map(|d| _mm512_loadu_si512(d.as_ptr().cast()));
            for r in 0..R {
                let v = _mm512_permutex2var_epi8(win[r].0, idx, win[r].1);
                a0[r] = _mm512_dpbusd_epi32(a0[r], v, d0);
                a1[r] = _mm512_dpbusd_epi32(a1[r], v, d1);
                a2[r] = _mm512_dpbusd_epi32(a2[r], v, d2);
            }
        }
        let mask = ((1u32 << (3 * g.npx)) - 1) as u16;
        for r in 0..R {
            let acc = _mm512_add_epi32(_mm512_add_epi32(a0[r], _mm512_slli_epi32::<8>(a1[r])), _mm512_slli_epi32::<16>(a2[r]));
            let bytes = _mm512_cvtusepi32_epi8(_mm512_max_epi32(_mm512_srai_epi32::<22>(acc), z));
            let dst = &mut outs[r][g.px0 * 3..(g.px0 + g.npx) * 3];
            _mm_mask_storeu_epi8(dst.as_mut_ptr().cast(), mask, bytes);
        }
    }
}

/// The vertical pass at `level` (AVX2 or wider, supported by the CPU): same contract as the
/// scalar `vertical`.
pub(super) fn vertical(level: SimdLevel, src: &[u8], src_w: usize, row0: usize, cols: Range<usize>, c: &Coeffs, rows: Range<usize>) -> Vec<u8> {
    let (col0, width) = (cols.start, cols.len());
    assert!(level >= SimdLevel::Avx2 && level.supported(), "{level} kernels on this CPU");
    let n = width * 3;
    let stride = src_w * 3;
    let mut out = vec![0u8; rows.len() * n];
    if n == 0 {
        return out;
    }
    for (yy, o) in rows.zip(out.chunks_exact_mut(n)) {
        let ks = c.weights(yy);
        let start = if ks.is_empty() { 0 } else { ((c.first[yy] - row0) * src_w + col0) * 3 };
        assert!(ks.is_empty() || start + (ks.len() - 1) * stride + n <= src.len(), "vertical pass reads past the source");
        // SAFETY: the CPU supports `level`; tap `dy` reads bytes `start + dy·stride ..+ n` of
        // `src` (in bounds, asserted) and the row writes the `n` bytes of `o`.
        unsafe {
            let p = src.as_ptr().add(start);
            if level >= SimdLevel::Avx512Bw {
                v_row_avx512(p, stride, ks, n, o.as_mut_ptr());
            } else {
                v_row_avx2(p, stride, ks, n, o.as_mut_ptr());
            }
        }
    }
    out
}

/// `clip8` of 16 accumulators → 16 bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn clip8_512(acc: __m512i) -> __m128i {
    _mm512_cvtusepi32_epi8(_mm512_max_epi32(_mm512_srai_epi32::<22>(acc), _mm512_setzero_si512()))
}

/// One output row of the vertical pass: `n` bytes at `out` from the `n` bytes at
/// `src + dy·stride` weighted by `ks[dy]`. 64 bytes (4 × 16 lanes) per step, then 16, then a
/// masked step for the last `n % 16`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn v_row_avx512(src: *const u8, stride: usize, ks: &[i32], n: usize, out: *mut u8) {
    let bias = _mm512_set1_epi32(BIAS);
    let tap = |p: *const u8, k: __m512i| _mm512_mullo_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast())), k);
    let mut i = 0;
    while i + 64 <= n {
        let (mut a0, mut a1, mut a2, mut a3) = (bias, bias, bias, bias);
        for (dy, &k) in ks.iter().enumerate() {
            let (k, p) = (_mm512_set1_epi32(k), src.add(dy * stride + i));
            a0 = _mm512_add_epi32(a0, tap(p, k));
            a1 = _mm512_add_epi32(a1, tap(p.add(16), k));
            a2 = _mm512_add_epi32(a2, tap(p.add(32), k));
            a3 = _mm512_add_epi32(a3, tap(p.add(48), k));
        }
        let o = out.add(i);
        _mm_storeu_si128(o.cast(), clip8_512(a0));
        _mm_storeu_si128(o.add(16).cast(), clip8_512(a1));
        _mm_storeu_si128(o.add(32).cast(), clip8_512(a2));
        _mm_storeu_si128(o.add(48).cast(), clip8_512(a3));
        i += 64;
    }
    while i + 16 <= n {
        let mut a = bias;
        for (dy, &k) in ks.iter().enumerate() {
            a = _mm512_add_epi32(a, tap(src.add(dy * stride + i), _mm512_set1_epi32(k)));
        }
        _mm_storeu_si128(out.add(i).cast(), clip8_512(a));
        i += 16;
    }
    if i < n {
        let m = ((1u32 << (n - i)) - 1) as u16;
        let mut a = bias;
        for (dy, &k) in ks.iter().enumerate() {
            let v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, src.add(dy * stride + i).cast()));
            a = _mm512_add_epi32(a, _mm512_mullo_epi32(v, _mm512_set1_epi32(k)));
        }
        _mm_mask_storeu_epi8(out.add(i).cast(), m, clip8_512(a));
    }
}

/// One output row of the vertical pass with AVX2: 32 bytes (4 × 8 lanes) per step, then 8, then
/// scalar for the last `n % 8`.
#[target_feature(enable = "avx2")]
unsafe fn v_row_avx2(src: *const u8, stride: usize, ks: &[i32], n: usize, out: *mut u8) {
    let bias = _mm256_set1_epi32(BIAS);
    let tap = |p: *const u8, k: __m256i| _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast())), k);
    let mut i = 0;
    while i + 32 <= n {
        let (mut a0, mut a1, mut a2, mut a3) = (bias, bias, bias, bias);
        for (dy, &k) in ks.iter().enumerate() {
            let (k, p) = (_mm256_set1_epi32(k), src.add(dy * stride + i));
            a0 = _mm256_add_epi32(a0, tap(p, k));
            a1 = _mm256_add_epi32(a1, tap(p.add(8), k));
            a2 = _mm256_add_epi32(a2, tap(p.add(16), k));
            a3 = _mm256_add_epi32(a3, tap(p.add(24), k));
        }
        // Shift, then saturate to i16 (exact: |acc >> 22| < 512) and to u8 (the clamp); the packs
        // interleave 128-bit halves, the permute restores the order.
        let sh = |a| _mm256_srai_epi32::<22>(a);
        let bytes = _mm256_packus_epi16(_mm256_packs_epi32(sh(a0), sh(a1)), _mm256_packs_epi32(sh(a2), sh(a3)));
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(out.add(i).cast(), bytes);
        i += 32;
    }
    while i + 8 <= n {
        let mut a = bias;
        for (dy, &k) in ks.iter().enumerate() {
            a = _mm256_add_epi32(a, tap(src.add(dy * stride + i), _mm256_set1_epi32(k)));
        }
        let a = _mm256_srai_epi32::<22>(a);
        let s = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
        _mm_storel_epi64(out.add(i).cast(), _mm_packus_epi16(s, s));
        i += 8;
    }
    for j in i..n {
        let mut a = BIAS;
        for (dy, &k) in ks.iter().enumerate() {
            a = a.wrapping_add((*src.add(dy * stride + j) as i32).wrapping_mul(k));
        }
        *out.add(j) = super::clip8(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resample::Filter;

    /// Three balanced base-256 digits rebuild every coefficient in -8,421,504 ..= 8,355,711 (2²² is
    /// a weight of 1) and refuse the others, whose groups fall back to the per-pixel kernel.
    #[test]
    fn coefficient_digits_rebuild_the_coefficient() {
        let rebuild = |d: [i8; 3]| d[0] as i32 + 256 * d[1] as i32 + 65536 * d[2] as i32;
        let edges = [0, 1, -1, 127, 128, -128, -129, 255, 256, 1 << 22, -(1 << 22), 8_355_711, -8_421_504];
        let mut rng = crate::rng::Rng::keyed(3, 1, 4, 1);
        let random = (0..10_000).map(|_| rng.below(2 * 8_355_711 + 1) as i32 - 8_355_711);
        for k in edges.into_iter().chain(random) {
            assert_eq!(digits(k).map(rebuild), Some(k), "{k}");
        }
        for k in [8_355_712, -8_421_505, i32::MAX, i32::MIN] {
            assert_eq!(digits(k), None, "{k}");
        }
    }

    /// The VBMI kernel takes the downscales of the pipeline (shorter side 500 → 256 bilinear, and
    /// random resized crops of up to ~3.5× down) as windows of 5 pixels, not the per-pixel path;
    /// past a 42-pixel window (a 10× Lanczos downscale) every group falls back.
    #[test]
    fn vbmi_groups_cover_the_common_downscales() {
        for (n_in, n_out, filter, windowed) in [
            (500, 256, Filter::Bilinear, true),
            (667, 341, Filter::Bilinear, true),
            (780, 224, Filter::Bilinear, true),
            (2240, 224, Filter::Lanczos, false),
        ] {
            let c = Coeffs::new(n_in, 0.0, n_in as f32, n_out, filter);
            let plan = HorizPlan::new(SimdLevel::Avx512Vbmi, &c, 0..n_out, 0);
            assert_eq!(plan.groups.len(), n_out.div_ceil(5));
            assert!(plan.groups.iter().all(|g| g.taps.is_some() == windowed), "{n_in} → {n_out} {filter:?}");
        }
    }
}
