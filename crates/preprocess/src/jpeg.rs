//! JPEG decoding through libjpeg-turbo's libjpeg API, the library and the calls Pillow uses, with
//! exactly Pillow's settings: integer slow IDCT (`JDCT_ISLOW`) and fancy upsampling. The library is
//! the one Pillow's wheel ships (provisioned by `cargo xtask setup`, SIMD included); the two calls
//! live in a small C shim (`csrc/jpeg_shim.c`) that keeps libjpeg's `longjmp` error handling in C.
//! The colour conversions after the library follow Pillow: 4-component JPEGs are read as inverted
//! CMYK (`"CMYK;I"`, Adobe's convention, which Pillow assumes for every CMYK/YCCK JPEG) and
//! converted with Pillow's `cmyk2rgb`; grayscale is replicated into the three channels.
//!
//! libjpeg warnings (e.g. "extraneous bytes before marker") do not fail the decode, as in
//! Pillow; truncation is caught before decoding by [`crate::decode`]'s marker walk.

use std::ffi::{c_char, c_int, c_uint, c_ulong, CStr};

/// The size of the shim's message buffer (`PETAL_MSG_LEN` in `csrc/jpeg_shim.c`).
const MSG_LEN: usize = 200;

extern "C" {
    fn petal_jpeg_header(buf: *const u8, len: c_ulong, width: *mut c_uint, height: *mut c_uint, cmyk: *mut c_int, msg: *mut c_char) -> c_int;
    fn petal_jpeg_decode(buf: *const u8, len: c_ulong, cmyk: c_int, out: *mut u8, out_len: usize, msg: *mut c_char) -> c_int;
    fn petal_jpeg_decode_rect(
        buf: *const u8,
        len: c_ulong,
        x0: c_uint,
        y0: c_uint,
        w: c_uint,
        h: c_uint,
        out: *mut u8,
        out_len: usize,
        msg: *mut c_char,
    ) -> c_int;
}

/// A JPEG's header: size and whether its pixels are 4-component (CMYK or YCCK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub width: u32,
    pub height: u32,
    pub cmyk: bool,
}

/// The library's message left in `msg` by a failed call.
fn message(msg: &[c_char; MSG_LEN]) -> String {
    // SAFETY: the shim always leaves a NUL-terminated string in the buffer (it clears byte 0 first
    // and terminates what it copies).
    let text = unsafe { CStr::from_ptr(msg.as_ptr()) }.to_string_lossy().into_owned();
    if text.is_empty() {
        "libjpeg-turbo failed without a message".to_string()
    } else {
        text
    }
}

/// Reads the frame header.
pub(crate) fn header(bytes: &[u8]) -> Result<Header, String> {
    let len = libc_ulong(bytes.len())?;
    let (mut w, mut h, mut cmyk) = (0, 0, 0);
    let mut msg = [0 as c_char; MSG_LEN];
    // SAFETY: `bytes` is valid for `len` bytes; the outputs are plain ints and a MSG_LEN buffer.
    let rc = unsafe { petal_jpeg_header(bytes.as_ptr(), len, &mut w, &mut h, &mut cmyk, msg.as_mut_ptr()) };
    if rc != 0 {
        return Err(message(&msg));
    }
    if w == 0 || h == 0 {
        return Err(format!("declared size {w}x{h}"));
    }
    Ok(Header { width: w, height: h, cmyk: cmyk != 0 })
}

fn libc_ulong(n: usize) -> Result<c_ulong, String> {
    c_ulong::try_from(n).map_err(|_| format!("{n} bytes is too large for libjpeg-turbo"))
}

/// Decompresses into RGB (3 bytes a pixel) or, for a 4-component JPEG, its stored CMYK samples.
fn decompress(bytes: &[u8], hd: &Header) -> Result<Vec<u8>, String> {
    let len = libc_ulong(bytes.len())?;
    let pixel_size = if hd.cmyk { 4 } else { 3 };
    let size = hd.width as usize * hd.height as usize * pixel_size;
    // Not zeroed first: the shim writes every byte before it reports success.
    let mut out = Vec::<u8>::with_capacity(size);
    let mut msg = [0 as c_char; MSG_LEN];
    // SAFETY: `out` has room for `size` bytes, which the shim checks against the decoded size
    // before writing, through the raw pointer only; `bytes` is valid for `len` bytes.
    let rc = unsafe { petal_jpeg_decode(bytes.as_ptr(), len, c_int::from(hd.cmyk), out.as_mut_ptr(), size, msg.as_mut_ptr()) };
    if rc != 0 {
        return Err(message(&msg));
    }
    // SAFETY: rc 0 means the shim read every scanline, `output_height` rows of `stride` bytes,
    // whose product it checked equals `size`.
    unsafe { out.set_len(size) };
    Ok(out)
}

/// Decodes at least the pixels of `rect` (`[x0, y0, x1, y1)`) of a JPEG into `out`, the packed RGB8
/// buffer of the whole image (`width × height × 3` bytes), each at its place; the other bytes of
/// `out` are left as they were. libjpeg-turbo's cropped decode treats the window's edges as image
/// edges when upsampling chroma, so the pixels within [`RECT_MARGIN`] of an edge inside the image
/// may differ from a whole decode: ask for the margin around the pixels you read.
/// Returns `Ok(false)`, decoding nothing, for a progressive or 4-component JPEG.
pub(crate) fn decode_rgb_rect(bytes: &[u8], hd: &Header, rect: [u32; 4], out: &mut [u8]) -> Result<bool, String> {
    let len = libc_ulong(bytes.len())?;
    let [x0, y0, x1, y1] = rect;
    if hd.cmyk {
        return Ok(false);
    }
    if x1 <= x0 || y1 <= y0 || x1 > hd.width || y1 > hd.height || out.len() != hd.width as usize * hd.height as usize * 3 {
        return Err(format!("window {rect:?} or buffer of {} bytes does not fit the {}x{} image", out.len(), hd.width, hd.height));
    }
    let mut msg = [0 as c_char; MSG_LEN];
    // SAFETY: `out` is valid for `out.len()` bytes, which the shim checks against the decoded size
    // before writing inside it; `bytes` is valid for `len` bytes.
    let rc = unsafe { petal_jpeg_decode_rect(bytes.as_ptr(), len, x0, y0, x1 - x0, y1 - y0, out.as_mut_ptr(), out.len(), msg.as_mut_ptr()) };
    match rc {
        0 => Ok(true),
        1 => Ok(false),
        _ => Err(message(&msg)),
    }
}

/// Pixels around a window that [`decode_rgb_rect`] may decode differently from a whole decode
/// (chroma upsampling reads one subsampled neighbour, 2 pixels; 16 is one iMCU of 4:2:0).
pub(crate) const RECT_MARGIN: u32 = 16;

/// Decodes a JPEG to packed RGB8 exactly as `Image.open(p).convert("RGB")` does.
pub(crate) fn decode_rgb(bytes: &[u8]) -> Result<(Header, Vec<u8>), String> {
    let hd = header(bytes)?;
    let pixels = decompress(bytes, &hd)?;
    if hd.cmyk {
        Ok((hd, inverted_cmyk_to_rgb(&pixels)))
    } else {
        Ok((hd, pixels))
    }
}

/// Pillow's `CMYK;I` unpacking (each byte inverted) followed by its `cmyk2rgb`
/// (`255 - k - MULDIV255(c, 255 - k)` per channel).
pub(crate) fn inverted_cmyk_to_rgb(stored: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(stored.len() / 4 * 3);
    for px in stored.chunks_exact(4) {
        let nk = px[3] as i32; // 255 - k, where k = 255 - stored
        for &v in &px[..3] {
            let c = 255 - v as i32;
            rgb.push((nk - muldiv255(c, nk)).clamp(0, 255) as u8);
        }
    }
    rgb
}

/// Pillow's `MULDIV255(a, b)`: `a * b / 255` rounded, in integers.
fn muldiv255(a: i32, b: i32) -> i32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_conversion_matches_pillow_formula() {
        // Stored (inverted) bytes 255 = no ink: white.
        assert_eq!(inverted_cmyk_to_rgb(&[255, 255, 255, 255]), vec![255, 255, 255]);
        // Full black ink (stored 0) → black whatever the colour.
        assert_eq!(inverted_cmyk_to_rgb(&[10, 200, 30, 0]), vec![0, 0, 0]);
        // c = 255 - 155 = 100, k = 255 - 205 = 50: nk = 205, 205 - round(100 * 205 / 255) = 205 - 80.
        assert_eq!(inverted_cmyk_to_rgb(&[155, 255, 255, 205]), vec![125, 205, 205]);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(header(b"\xFF\xD8\xFF\xE0 not really a jpeg").is_err());
    }
}
