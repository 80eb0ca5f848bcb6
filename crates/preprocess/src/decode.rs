//! Decoding image files to 8-bit RGB exactly as `PIL.Image.open(p).convert("RGB")` does (the
//! torchvision `pil_loader`), with the checks PIL applies: a pixel limit against decompression
//! bombs and truncated-file detection. EXIF orientation is ignored, as `Image.open` does.
//!
//! * JPEG: the system libjpeg-turbo (see `crate::jpeg`), ISLOW IDCT and fancy upsampling as
//!   Pillow's bundled libjpeg-turbo; CMYK/YCCK as Pillow's inverted-CMYK conversion.
//! * GIF: the first frame on PIL's canvas (see [`gif_first_frame`]).
//! * PNG, WebP, BMP, TIFF: the `image` crate, then Pillow's mode conversions (`pil_rgb`):
//!   16-bit colour keeps the high byte, 16-bit grayscale (`I;16`) is clipped to 255, alpha is
//!   dropped, grayscale is replicated.
//!
//! The format is sniffed from the content, not the file extension.

use crate::error::{Error, Problem};
use image::RgbImage;
use std::io::Cursor;
use std::path::Path;

/// File extensions (lower case, without the dot) of the formats [`decode_rgb`] reads: the one list every
/// part of petal uses to recognise image files (dataset discovery, `petal predict` on folders). The
/// content decides the format; the extension only selects which files a scan considers.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// True when `path` has one of [`IMAGE_EXTENSIONS`] (case-insensitive).
pub fn is_image_path(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// PIL's decompression-bomb error threshold (`2 * Image.MAX_IMAGE_PIXELS`).
pub const DEFAULT_MAX_PIXELS: u64 = 178_956_970;

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecodeLimits {
    /// Largest accepted `width * height` declared by a file; larger files are rejected with
    /// [`Problem::TooLarge`] before any pixel memory is allocated.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_pixels: DEFAULT_MAX_PIXELS }
    }
}

/// Image container formats this crate decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JPEG (baseline and progressive; grayscale, YCbCr, CMYK, YCCK).
    Jpeg,
    /// PNG (any bit depth, palette, alpha).
    Png,
    /// WebP (lossy and lossless).
    Webp,
    /// Windows bitmap.
    Bmp,
    /// GIF (the first frame is decoded).
    Gif,
    /// TIFF (the first page is decoded).
    Tiff,
}

/// Detects the format from the first bytes of a file.
pub fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(Format::Webp)
    } else if bytes.starts_with(b"BM") {
        Some(Format::Bmp)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(Format::Gif)
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some(Format::Tiff)
    } else {
        None
    }
}

/// Decodes an image file to RGB8 with the default [`DecodeLimits`].
pub fn decode_rgb(path: &Path) -> Result<RgbImage, Error> {
    decode_rgb_with(path, &DecodeLimits::default())
}

/// Decodes an image file to RGB8 with the given limits.
pub fn decode_rgb_with(path: &Path, limits: &DecodeLimits) -> Result<RgbImage, Error> {
    let bytes = read_file(path)?;
    decode_rgb_bytes(&bytes, path, limits)
}

/// Reads a whole file, mapping failures to [`Problem::Unreadable`] / [`Problem::Empty`].
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::bad(path, Problem::Unreadable, e.to_string()))?;
    if bytes.is_empty() {
        return Err(Error::bad(path, Problem::Empty, ""));
    }
    Ok(bytes)
}

/// Checks a file without decoding its pixels: readable, non-empty, a supported format, declared
/// size within the limit, and (for JPEG) complete up to its end-of-image marker.
/// Returns the declared (width, height).
pub fn probe(path: &Path, limits: &DecodeLimits) -> Result<(u32, u32), Error> {
    let bytes = read_file(path)?;
    let (format, w, h) = header(&bytes, path, limits)?;
    if format == Format::Jpeg {
        jpeg_check_complete(&bytes).map_err(|(p, d)| Error::bad(path, p, d))?;
    }
    Ok((w, h))
}

/// Sniffs the format and reads the declared dimensions, enforcing the pixel limit.
fn header(bytes: &[u8], path: &Path, limits: &DecodeLimits) -> Result<(Format, u32, u32), Error> {
    let format = sniff(bytes).ok_or_else(|| Error::bad(path, Problem::NotAnImage, "content is not JPEG, PNG, WebP, BMP, GIF or TIFF"))?;
    let (w, h) = match format {
        Format::Jpeg => {
            let hd = crate::jpeg::header(bytes).map_err(|e| jpeg_error(path, e))?;
            (hd.width, hd.height)
        }
        _ => {
            let mut r = image::ImageReader::new(Cursor::new(bytes));
            r.set_format(to_image_format(format));
            r.limits(image::Limits::no_limits());
            r.into_dimensions().map_err(|e| image_error(path, e))?
        }
    };
    if w == 0 || h == 0 {
        return Err(Error::bad(path, Problem::Corrupt, format!("declared size {w}x{h}")));
    }
    let pixels = w as u64 * h as u64;
    if pixels > limits.max_pixels {
        return Err(Error::bad(
            path,
            Problem::TooLarge,
            format!("declared size {w}x{h} = {pixels} pixels exceeds the limit of {}", limits.max_pixels),
        ));
    }
    Ok((format, w, h))
}

fn to_image_format(f: Format) -> image::ImageFormat {
    match f {
        Format::Jpeg => image::ImageFormat::Jpeg,
        Format::Png => image::ImageFormat::Png,
        Format::Webp => image::ImageFormat::WebP,
        Format::Bmp => image::ImageFormat::Bmp,
        Format::Gif => image::ImageFormat::Gif,
        Format::Tiff => image::ImageFormat::Tiff,
    }
}

fn jpeg_error(path: &Path, msg: String) -> Error {
    let lower = msg.to_ascii_lowercase();
    let problem = if lower.contains("premature end") || lower.contains("truncat") { Problem::Truncated } else { Problem::Corrupt };
    Error::bad(path, problem, format!("JPEG: {msg}"))
}

fn image_error(path: &Path, e: image::ImageError) -> Error {
    use image::ImageError as E;
    let problem = match &e {
        E::Limits(_) => Problem::TooLarge,
        E::Unsupported(_) => Problem::NotAnImage,
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => Problem::Truncated,
        E::IoError(_) => Problem::Unreadable,
        _ => {
            let msg = e.to_string().to_ascii_lowercase();
            if msg.contains("eof") || msg.contains("end of") || msg.contains("truncat") {
                Problem::Truncated
            } else {
                Problem::Corrupt
            }
        }
    };
    Error::bad(path, problem, e.to_string())
}

/// Decodes image bytes (`path` only names the file in errors).
pub fn decode_rgb_bytes(bytes: &[u8], path: &Path, limits: &DecodeLimits) -> Result<RgbImage, Error> {
    if bytes.is_empty() {
        return Err(Error::bad(path, Problem::Empty, ""));
    }
    let (format, w, h) = header(bytes, path, limits)?;
    match format {
        Format::Jpeg => {
            // PIL raises "image file is truncated" where libjpeg would pad missing data with
            // gray, so the marker structure is checked first.
            jpeg_check_complete(bytes).map_err(|(p, d)| Error::bad(path, p, d))?;
            let (hd, rgb) = crate::jpeg::decode_rgb(bytes).map_err(|e| jpeg_error(path, e))?;
            rgb_image(path, hd.width, hd.height, rgb)
        }
        Format::Gif => gif_first_frame(bytes, path, limits),
        _ => {
            if format == Format::Png {
                png_check_palette(bytes).map_err(|d| Error::bad(path, Problem::Corrupt, d))?;
            }
            let mut r = image::ImageReader::new(Cursor::new(bytes));
            r.set_format(to_image_format(format));
            let mut lim = image::Limits::default();
            lim.max_image_width = Some(w);
            lim.max_image_height = Some(h);
            // RGBA16 output plus decoder working memory.
            lim.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
            r.limits(lim);
            // A decoder crate that panics on a crafted file (the fuzzer found one in png 0.18:
            // see `png_check_palette`) must not take the process down: the file is corrupt.
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.decode()))
                .map_err(|_| Error::bad(path, Problem::Corrupt, "the image decoder failed on this file"))?;
            let img = decoded.map_err(|e| image_error(path, e))?;
            Ok(pil_rgb(img))
        }
    }
}

/// What [`decode_rgb_window`] decoded.
pub enum Pixels {
    /// The whole image (not a sequential 3- or 1-component JPEG, or no window asked for).
    Whole(RgbImage),
    /// A `w`×`h` image in the caller's buffer, exact (as [`decode_rgb_bytes`] would give) inside
    /// the window asked for; the other bytes are whatever the buffer held.
    Window {
        /// The image's width.
        w: u32,
        /// The image's height.
        h: u32,
    },
}

/// Decodes what a transform reads of an image file: `window(w, h)` names the source pixels
/// `[x0, y0, x1, y1)` it reads from a `w`×`h` image (`None`: all of them). A JPEG is decoded
/// around the window only (libjpeg-turbo's cropped decode with 16 pixels of margin, skipping
/// the IDCT of rows outside it) into `buf`, reused across calls; other images (and progressive
/// or CMYK JPEGs) are decoded whole. Checks and errors are [`decode_rgb_with`]'s.
pub fn decode_rgb_window(
    path: &Path,
    limits: &DecodeLimits,
    window: impl FnOnce(u32, u32) -> Option<[u32; 4]>,
    buf: &mut Vec<u8>,
) -> Result<Pixels, Error> {
    decode_rgb_window_bytes(&read_file(path)?, path, limits, window, buf)
}

/// [`decode_rgb_window`] of a file's bytes (`path` names it in errors).
pub fn decode_rgb_window_bytes(
    bytes: &[u8],
    path: &Path,
    limits: &DecodeLimits,
    window: impl FnOnce(u32, u32) -> Option<[u32; 4]>,
    buf: &mut Vec<u8>,
) -> Result<Pixels, Error> {
    if bytes.is_empty() {
        return Err(Error::bad(path, Problem::Empty, ""));
    }
    let (format, w, h) = header(bytes, path, limits)?;
    let rect = window(w, h);
    if let (Format::Jpeg, Some([x0, y0, x1, y1])) = (format, rect.filter(|r| r[0] < r[2] && r[1] < r[3])) {
        jpeg_check_complete(bytes).map_err(|(p, d)| Error::bad(path, p, d))?;
        let hd = crate::jpeg::header(bytes).map_err(|e| jpeg_error(path, e))?;
        let m = crate::jpeg::RECT_MARGIN;
        let rect = [x0.saturating_sub(m), y0.saturating_sub(m), x1.saturating_add(m).min(w), y1.saturating_add(m).min(h)];
        buf.resize(w as usize * h as usize * 3, 0);
        if (hd.width, hd.height) == (w, h) && crate::jpeg::decode_rgb_rect(bytes, &hd, rect, buf).map_err(|e| jpeg_error(path, e))? {
            return Ok(Pixels::Window { w, h });
        }
    }
    decode_rgb_bytes(bytes, path, limits).map(Pixels::Whole)
}

thread_local! {
    /// This thread's buffer for windowed decodes (see [`with_window_buf`]).
    static WINDOW_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The largest window buffer a thread keeps between images: 24 MiB, an RGB image of 8 megapixels.
const WINDOW_BUF_KEEP: usize = 24 << 20;

/// Runs `f` with this thread's reused buffer for [`decode_rgb_window`] (freed after a larger
/// image than 8 megapixels). Not re-entrant: `f` must not call it again.
pub(crate) fn with_window_buf<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    WINDOW_BUF.with_borrow_mut(|buf| {
        let r = f(buf);
        if buf.capacity() > WINDOW_BUF_KEEP {
            *buf = Vec::new();
        }
        r
    })
}

/// A PNG's `PLTE` chunk must hold 1 to 256 RGB triples (a multiple of 3 bytes, at most 768): the
/// png crate (0.18.1) panics on one that does not (found by the `image` fuzz target,
/// `crates/preprocess/tests/fixtures/fuzz/`). Walks the chunks up to `IDAT`; a file cut short is
/// left to the decoder.
fn png_check_palette(bytes: &[u8]) -> Result<(), String> {
    let mut at = 8;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        match &head[4..8] {
            b"PLTE" if len == 0 || !len.is_multiple_of(3) || len > 768 => {
                return Err(format!("its PLTE chunk holds {len} bytes, not 1 to 256 RGB entries (a multiple of 3, at most 768)"))
            }
            b"IDAT" | b"IEND" => return Ok(()),
            _ => {}
        }
        at = at.saturating_add(12).saturating_add(len);
    }
    Ok(())
}

fn rgb_image(path: &Path, w: u32, h: u32, rgb: Vec<u8>) -> Result<RgbImage, Error> {
    RgbImage::from_raw(w, h, rgb).ok_or_else(|| Error::bad(path, Problem::Corrupt, "decoded buffer has the wrong size"))
}

/// Pillow's `convert("RGB")` of the mode PIL opens each decoded layout as: 8-bit data as is;
/// 16-bit colour (`RGB;16B`, `RGBA;16B`, `LA;16B` raw modes) keeps the high byte; 16-bit
/// grayscale (mode `I;16`) is clipped to 255; alpha is dropped.
pub(crate) fn pil_rgb(img: image::DynamicImage) -> RgbImage {
    use image::DynamicImage as D;
    let (w, h) = (img.width(), img.height());
    let gray = |v: u8| [v, v, v];
    let px: Vec<u8> = match img {
        D::ImageRgb8(i) => return i,
        D::ImageRgba8(i) => i.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect(),
        D::ImageLuma8(i) => i.pixels().flat_map(|p| gray(p[0])).collect(),
        D::ImageLumaA8(i) => i.pixels().flat_map(|p| gray(p[0])).collect(),
        D::ImageLuma16(i) => i.pixels().flat_map(|p| gray(p[0].min(255) as u8)).collect(),
        D::ImageLumaA16(i) => i.pixels().flat_map(|p| gray((p[0] >> 8) as u8)).collect(),
        D::ImageRgb16(i) => i.pixels().flat_map(|p| p.0.map(|v| (v >> 8) as u8)).collect(),
        D::ImageRgba16(i) => i.pixels().flat_map(|p| [p[0], p[1], p[2]].map(|v| (v >> 8) as u8)).collect(),
        other => return other.into_rgb8(),
    };
    RgbImage::from_raw(w, h, px).unwrap_or_else(|| RgbImage::new(w, h))
}

/// The first frame of a GIF as PIL shows it: a canvas the size of the logical screen (grown to
/// hold the frame), filled with the frame's transparent index (else index 0), the frame's
/// indices pasted at its offset, then mapped through the frame's palette (else the global one;
/// no palette: the indices are gray levels). Transparency is dropped, as `convert("RGB")` does.
pub fn gif_first_frame(bytes: &[u8], path: &Path, limits: &DecodeLimits) -> Result<RgbImage, Error> {
    let gif_err = |e: gif::DecodingError| {
        let problem = if matches!(&e, gif::DecodingError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof) {
            Problem::Truncated
        } else {
            Problem::Corrupt
        };
        Error::bad(path, problem, format!("GIF: {e}"))
    };
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::Indexed);
    let mut d = opts.read_info(Cursor::new(bytes)).map_err(gif_err)?;
    let global = d.global_palette().map(<[u8]>::to_vec);
    let (sw, sh) = (d.width() as u32, d.height() as u32);
    let frame = d.read_next_frame().map_err(gif_err)?.ok_or_else(|| Error::bad(path, Problem::Corrupt, "GIF has no frame"))?;
    let (w, h) = (sw.max(frame.left as u32 + frame.width as u32), sh.max(frame.top as u32 + frame.height as u32));
    if w as u64 * h as u64 > limits.max_pixels {
        return Err(Error::bad(path, Problem::TooLarge, format!("GIF canvas {w}x{h} exceeds the limit of {} pixels", limits.max_pixels)));
    }
    let mut canvas = vec![frame.transparent.unwrap_or(0); w as usize * h as usize];
    for (row, src) in frame.buffer.chunks_exact(frame.width.max(1) as usize).enumerate() {
        let start = (frame.top as usize + row) * w as usize + frame.left as usize;
        canvas[start..start + src.len()].copy_from_slice(src);
    }
    let palette = frame.palette.clone().or(global);
    let rgb = canvas.iter().flat_map(|&i| palette_rgb(palette.as_deref(), i)).collect();
    rgb_image(path, w, h, rgb)
}

/// One palette entry; without a palette the index is a gray level (PIL mode `L`). Indices past
/// the palette's end read black.
fn palette_rgb(palette: Option<&[u8]>, i: u8) -> [u8; 3] {
    match palette {
        None => [i, i, i],
        Some(p) => p.get(i as usize * 3..i as usize * 3 + 3).map(|c| [c[0], c[1], c[2]]).unwrap_or([0, 0, 0]),
    }
}

/// Walks the JPEG marker structure and fails if the end-of-image marker is missing, i.e. the
/// file is truncated. Cost: one linear scan of the bytes.
pub(crate) fn jpeg_check_complete(b: &[u8]) -> Result<(), (Problem, String)> {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return Err((Problem::NotAnImage, "no JPEG start-of-image marker".into()));
    }
    let truncated = |at: usize| (Problem::Truncated, format!("JPEG data ends at byte {at} without an end-of-image marker"));
    let mut pos = 2usize;
    loop {
        // Find the next marker (skip stray bytes and fill bytes).
        while pos < b.len() && b[pos] != 0xFF {
            pos += 1;
        }
        while pos < b.len() && b[pos] == 0xFF {
            pos += 1;
        }
        let Some(&marker) = b.get(pos) else { return Err(truncated(b.len())) };
        pos += 1;
        match marker {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD7 => {}
            _ => {
                let Some(len) = b.get(pos..pos + 2).map(|s| u16::from_be_bytes([s[0], s[1]]) as usize) else {
                    return Err(truncated(b.len()));
                };
                if len < 2 {
                    return Err((Problem::Corrupt, format!("JPEG segment at byte {pos} has length {len}")));
                }
                pos += len;
                if pos > b.len() {
                    return Err(truncated(b.len()));
                }
                if marker == 0xDA {
                    // Entropy-coded data: ends at the first 0xFF not followed by 0x00, a
                    // restart marker or another 0xFF.
                    loop {
                        match b[pos.min(b.len())..].iter().position(|&x| x == 0xFF) {
                            None => return Err(truncated(b.len())),
                            Some(off) => {
                                let i = pos + off;
                                match b.get(i + 1) {
                                    None => return Err(truncated(b.len())),
                                    Some(0x00) | Some(0xD0..=0xD7) => pos = i + 2,
                                    Some(0xFF) => pos = i + 1,
                                    Some(_) => {
                                        pos = i;
                                        break;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A windowed decode equals the whole decode inside its window, for every JPEG layout of the
    /// pixel fixtures (4:2:0, 4:2:2, 4:4:4, grayscale, restart markers, thin strips), windows at
    /// every edge and inside, into one buffer reused across images and filled with other bytes
    /// first; progressive and CMYK JPEGs and other formats are decoded whole.
    #[test]
    fn windowed_decodes_equal_the_whole_decode_inside_the_window() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pixels");
        let mut buf = vec![0xAB; 1 << 20];
        let (mut windowed, mut whole) = (0, 0);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if !is_image_path(&path) {
                continue;
            }
            let full = decode_rgb(&path).unwrap();
            let (w, h) = full.dimensions();
            let mut rng = crate::rng::Rng::keyed(17, w as u64, h as u64, 0);
            let mut windows = vec![[0, 0, w, h], [0, 0, 1, 1], [w - 1, h - 1, w, h], [w / 3, 0, w / 3 + 1, h]];
            for _ in 0..12 {
                let (x0, y0) = (rng.below(w as u64) as u32, rng.below(h as u64) as u32);
                windows.push([x0, y0, x0 + 1 + rng.below((w - x0) as u64) as u32, y0 + 1 + rng.below((h - y0) as u64) as u32]);
            }
            for win in windows {
                match decode_rgb_window(&path, &DecodeLimits::default(), |_, _| Some(win), &mut buf).unwrap() {
                    Pixels::Whole(img) => {
                        assert_eq!(img, full, "{}", path.display());
                        whole += 1;
                    }
                    Pixels::Window { w: bw, h: bh } => {
                        assert_eq!((bw, bh), (w, h));
                        let [x0, y0, x1, y1] = win;
                        for y in y0..y1 {
                            let row = (y * w) as usize * 3;
                            let (a, b) = (row + x0 as usize * 3, row + x1 as usize * 3);
                            assert_eq!(&buf[a..b], &full.as_raw()[a..b], "{} window {win:?}, row {y}", path.display());
                        }
                        windowed += 1;
                    }
                }
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let mut is_whole = |win| matches!(decode_rgb_window(&path, &DecodeLimits::default(), |_, _| Some(win), &mut buf), Ok(Pixels::Whole(_)));
            let expect_whole = !name.starts_with("jpeg_") || name.contains("progressive") || name.contains("cmyk");
            assert_eq!(is_whole([0, 0, 1, 1]), expect_whole, "{name}");
        }
        assert!(windowed >= 9 * 16 && whole >= 16, "{windowed} windowed and {whole} whole decodes");
    }

    #[test]
    fn sniffs_formats() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Format::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some(Format::Png));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::Webp));
        assert_eq!(sniff(b"BM.."), Some(Format::Bmp));
        assert_eq!(sniff(b"GIF89a"), Some(Format::Gif));
        assert_eq!(sniff(b"II*\0...."), Some(Format::Tiff));
        assert_eq!(sniff(b"MM\0*...."), Some(Format::Tiff));
        assert_eq!(sniff(b"P6 1 1"), None);
    }

    #[test]
    fn jpeg_marker_walk() {
        let ok = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xD9];
        assert!(jpeg_check_complete(&ok).is_ok());
        let cut = &ok[..ok.len() - 2];
        assert_eq!(jpeg_check_complete(cut).unwrap_err().0, Problem::Truncated);
        assert_eq!(jpeg_check_complete(&ok[..5]).unwrap_err().0, Problem::Truncated);
        assert_eq!(jpeg_check_complete(b"abc").unwrap_err().0, Problem::NotAnImage);
    }
}
