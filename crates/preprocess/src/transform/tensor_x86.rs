//! x86-64 kernels of [`super::write_tensor`]: ToTensor + Normalize (+ horizontal flip, CHW or
//! HWC) bit-identical to the scalar lookup table.
//!
//! Each value is computed by the same three IEEE-754 `f32` operations as the table entry
//! `(v as f32 / 255.0 - mean[c]) / std[c]`, in the same order and correctly rounded (`vdivps`,
//! `vsubps`; no fused multiply-add, no reciprocal): the same bits. The byte → `f32` conversion is
//! exact. Pixels are taken in chunks of 16 (AVX-512 VBMI: one `vpermb` reorders the 48 bytes
//! into output order) or 8 (AVX2: `vpshufb` from two registers); the last `size % chunk` pixels
//! of a row use the scalar formula.
//!
//! Callers check the CPU first; these functions assume it.

use crate::simd::SimdLevel;
use std::arch::x86_64::*;

/// For a chunk of `p` pixels: the source byte (in the chunk's `3p` bytes) and the channel of each
/// of the `3p` output values in output order (CHW: channel-major; HWC: pixel-major), with the
/// pixel order reversed when `flip`.
fn order(p: usize, flip: bool, channels_last: bool) -> Vec<(usize, usize)> {
    (0..3 * p)
        .map(|t| {
            let (px, c) = if channels_last { (t / 3, t % 3) } else { (t % p, t / p) };
            let src = if flip { p - 1 - px } else { px };
            (3 * src + c, c)
        })
        .collect()
}

/// Per-call tables of a chunk: output value i (in output order) is source byte `idx[i]`
/// (VBMI), or lane i % 8 of `shuf[2·(i / 8)]` applied to the first 16 bytes OR'ed with
/// `shuf[2·(i / 8) + 1]` applied to the last 8 (AVX2), normalised with `means[i]`, `stds[i]`.
struct Tables {
    idx: [u8; 64],
    shuf: [[u8; 16]; 6],
    means: [f32; 48],
    stds: [f32; 48],
}

/// The scalar formula of one value (the lookup table's entry).
#[inline(always)]
fn normalise(v: u8, mean: f32, std: f32) -> f32 {
    (v as f32 / 255.0 - mean) / std
}

/// Writes the tensor at `level` (AVX2 or wider, supported by the CPU). Buffers are checked by
/// the caller: `rgb` holds `3·s²` bytes and `out` at least `3·s²` values.
#[allow(clippy::too_many_arguments)]
pub(super) fn write(level: SimdLevel, rgb: &[u8], s: usize, mean: &[f32; 3], std: &[f32; 3], flip: bool, channels_last: bool, out: &mut [f32]) {
    assert!(level >= SimdLevel::Avx2 && level.supported(), "{level} kernels on this CPU");
    let hw = s * s;
    assert!(rgb.len() >= 3 * hw && out.len() >= 3 * hw);
    let p = if level >= SimdLevel::Avx512Vbmi { 16 } else { 8 };
    let ord = order(p, flip, channels_last);
    let mut t = Tables { idx: [0; 64], shuf: [[0x80; 16]; 6], means: [0.0; 48], stds: [1.0; 48] };
    for (i, &(b, c)) in ord.iter().enumerate() {
        t.means[i] = mean[c];
        t.stds[i] = std[c];
        t.idx[i] = b as u8;
        if p == 8 {
            // Output vector i / 8, lane i % 8: byte b of the 16 + 8 loaded (0x80 in a shuffle
            // index gives 0, so each byte comes from one of the two registers).
            let (j, l) = (i / 8, i % 8);
            if b < 16 {
                t.shuf[2 * j][l] = b as u8;
            } else {
                t.shuf[2 * j + 1][l] = (b - 16) as u8;
            }
        }
    }
    // Where output value j·p + l of the chunk at (y, x0) goes, and the output offset step.
    let dest = |y: usize, x0: usize, j: usize| if channels_last { (y * s + x0) * 3 + j * p } else { j * hw + y * s + x0 };
    for y in 0..s {
        let row = &rgb[y * s * 3..(y + 1) * s * 3];
        let mut x0 = 0;
        while x0 + p <= s {
            let sp = if flip { s - x0 - p } else { x0 };
            let src = &row[sp * 3..(sp + p) * 3];
            let d = [dest(y, x0, 0), dest(y, x0, 1), dest(y, x0, 2)];
            for &o in &d {
                assert!(o + p <= out.len());
            }
            // SAFETY: the CPU supports `level`; `src` is the chunk's 3p bytes, and each
            // destination d[j] has p values in `out` (asserted).
            unsafe {
                if p == 16 {
                    chunk_vbmi(src, &t, out.as_mut_ptr(), d);
                } else {
                    chunk_avx2(src, &t, out.as_mut_ptr(), d);
                }
            }
            x0 += p;
        }
        for x in x0..s {
            let sx = if flip { s - 1 - x } else { x };
            for c in 0..3 {
                let o = if channels_last { (y * s + x) * 3 + c } else { c * hw + y * s + x };
                out[o] = normalise(row[sx * 3 + c], mean[c], std[c]);
            }
        }
    }
}

/// 16 pixels: 48 bytes reordered by one byte permute, three vectors of 16 values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
unsafe fn chunk_vbmi(src: &[u8], t: &Tables, out: *mut f32, d: [usize; 3]) {
    let v = _mm512_maskz_loadu_epi8(0xFFFF_FFFF_FFFF, src.as_ptr().cast());
    let o = _mm512_permutexvar_epi8(_mm512_loadu_si512(t.idx.as_ptr().cast()), v);
    let parts = [_mm512_castsi512_si128(o), _mm512_extracti32x4_epi32::<1>(o), _mm512_extracti32x4_epi32::<2>(o)];
    let d255 = _mm512_set1_ps(255.0);
    for (j, &b) in parts.iter().enumerate() {
        let f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b));
        let f = _mm512_sub_ps(_mm512_div_ps(f, d255), _mm512_loadu_ps(t.means.as_ptr().add(16 * j)));
        _mm512_storeu_ps(out.add(d[j]), _mm512_div_ps(f, _mm512_loadu_ps(t.stds.as_ptr().add(16 * j))));
    }
}

/// 8 pixels: 24 bytes in two registers, each output vector of 8 gathered by two byte shuffles.
#[target_feature(enable = "avx2")]
unsafe fn chunk_avx2(src: &[u8], t: &Tables, out: *mut f32, d: [usize; 3]) {
    let lo = _mm_loadu_si128(src.as_ptr().cast());
    let hi = _mm_loadl_epi64(src.as_ptr().add(16).cast());
    let d255 = _mm256_set1_ps(255.0);
    for (j, &dj) in d.iter().enumerate() {
        let bytes = _mm_or_si128(
            _mm_shuffle_epi8(lo, _mm_loadu_si128(t.shuf[2 * j].as_ptr().cast())),
            _mm_shuffle_epi8(hi, _mm_loadu_si128(t.shuf[2 * j + 1].as_ptr().cast())),
        );
        let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
        let f = _mm256_sub_ps(_mm256_div_ps(f, d255), _mm256_loadu_ps(t.means.as_ptr().add(8 * j)));
        _mm256_storeu_ps(out.add(dj), _mm256_div_ps(f, _mm256_loadu_ps(t.stds.as_ptr().add(8 * j))));
    }
}
