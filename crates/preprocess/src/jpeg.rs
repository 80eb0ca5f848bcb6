//! JPEG decoding through the system libjpeg-turbo (TurboJPEG API, via `turbojpeg-sys`), with
//! exactly the settings Pillow uses: integer slow IDCT (`JDCT_ISLOW`) and fancy upsampling,
//! which are TurboJPEG's defaults when no flag is passed. The colour conversions after the
//! library follow Pillow: 4-component JPEGs are read as inverted CMYK (`"CMYK;I"`, Adobe's
//! convention, which Pillow assumes for every CMYK/YCCK JPEG) and converted with Pillow's
//! `cmyk2rgb`; grayscale is replicated into the three channels.
//!
//! libjpeg warnings (e.g. "extraneous bytes before marker") do not fail the decode, as in
//! Pillow; truncation is caught before decoding by [`crate::decode`]'s marker walk.

use std::cell::RefCell;
use std::ffi::CStr;
use turbojpeg_sys as tj;

/// A JPEG's header: size and whether its pixels are 4-component (CMYK or YCCK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub width: u32,
    pub height: u32,
    pub cmyk: bool,
}

/// One TurboJPEG decompressor handle, destroyed on drop.
struct Handle(tj::tjhandle);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitDecompress and is destroyed once.
        unsafe { tj::tjDestroy(self.0) };
    }
}

thread_local! {
    static HANDLE: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's decompressor (created on first use).
fn with_handle<T>(f: impl FnOnce(tj::tjhandle) -> Result<T, String>) -> Result<T, String> {
    HANDLE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            // SAFETY: plain constructor; null means failure.
            let h = unsafe { tj::tjInitDecompress() };
            if h.is_null() {
                return Err("libjpeg-turbo: could not create a decompressor".to_string());
            }
            *slot = Some(Handle(h));
        }
        let h = slot.as_ref().map(|h| h.0).unwrap_or(std::ptr::null_mut());
        f(h)
    })
}

/// The library's message for the last error on `h`.
fn last_error(h: tj::tjhandle) -> String {
    // SAFETY: tjGetErrorStr2 returns a NUL-terminated static or per-handle buffer.
    let msg = unsafe { CStr::from_ptr(tj::tjGetErrorStr2(h)) };
    msg.to_string_lossy().into_owned()
}

/// Whether the last failure on `h` was only a warning (the image was decoded completely).
fn only_warning(h: tj::tjhandle) -> bool {
    // SAFETY: valid handle.
    unsafe { tj::tjGetErrorCode(h) == tj::TJERR_TJERR_WARNING as i32 }
}

/// Reads the frame header.
pub(crate) fn header(bytes: &[u8]) -> Result<Header, String> {
    let len = libc_ulong(bytes.len())?;
    with_handle(|h| {
        let (mut w, mut ht, mut subsamp, mut cs) = (0, 0, 0, 0);
        // SAFETY: `bytes` is valid for `len` bytes; the outputs are plain ints.
        let rc = unsafe { tj::tjDecompressHeader3(h, bytes.as_ptr(), len, &mut w, &mut ht, &mut subsamp, &mut cs) };
        if rc != 0 {
            return Err(last_error(h));
        }
        if w <= 0 || ht <= 0 {
            return Err(format!("declared size {w}x{ht}"));
        }
        let cmyk = cs == tj::TJCS_TJCS_CMYK as i32 || cs == tj::TJCS_TJCS_YCCK as i32;
        Ok(Header { width: w as u32, height: ht as u32, cmyk })
    })
}

fn libc_ulong(n: usize) -> Result<std::os::raw::c_ulong, String> {
    std::os::raw::c_ulong::try_from(n).map_err(|_| format!("{n} bytes is too large for libjpeg-turbo"))
}

/// Decompresses into `out` (`pixel_size` bytes per pixel) in TurboJPEG pixel format `format`.
fn decompress(bytes: &[u8], hd: &Header, format: tj::TJPF, pixel_size: usize) -> Result<Vec<u8>, String> {
    let len = libc_ulong(bytes.len())?;
    let mut out = vec![0u8; hd.width as usize * hd.height as usize * pixel_size];
    with_handle(|h| {
        // SAFETY: `out` holds width*height*pixel_size bytes, pitch 0 = width*pixel_size,
        // flags 0 = ISLOW IDCT and fancy upsampling (libjpeg-turbo's and Pillow's default).
        // `TJPF` is a C enum: `i32` or `u32` depending on the target, hence the cast.
        #[allow(clippy::unnecessary_cast)]
        let rc = unsafe { tj::tjDecompress2(h, bytes.as_ptr(), len, out.as_mut_ptr(), hd.width as i32, 0, hd.height as i32, format as i32, 0) };
        if rc != 0 && !only_warning(h) {
            return Err(last_error(h));
        }
        Ok(())
    })?;
    Ok(out)
}

/// Decodes a JPEG to packed RGB8 exactly as `Image.open(p).convert("RGB")` does.
pub(crate) fn decode_rgb(bytes: &[u8]) -> Result<(Header, Vec<u8>), String> {
    let hd = header(bytes)?;
    if hd.cmyk {
        let cmyk = decompress(bytes, &hd, tj::TJPF_TJPF_CMYK, 4)?;
        Ok((hd, inverted_cmyk_to_rgb(&cmyk)))
    } else {
        Ok((hd, decompress(bytes, &hd, tj::TJPF_TJPF_RGB, 3)?))
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
