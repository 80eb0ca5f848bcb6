//! Decoding image files to 8-bit RGB, with the checks torchvision's `pil_loader` gets from PIL:
//! a pixel limit against decompression bombs, truncated-file detection, and conversion of
//! grayscale, CMYK/YCCK, palette and alpha images to RGB (alpha is dropped, as
//! `PIL.Image.convert("RGB")` does; EXIF orientation is ignored, as PIL does).
//!
//! Decoder choice (measured, see BENCHMARKS.md): JPEG goes straight to `zune-jpeg` (the decoder
//! inside `image` 0.25, minus `image`'s copy of the whole file and its wrapper), PNG/WebP/BMP go
//! through `image` with [`image::Limits`]. The format is sniffed from the content, not the
//! file extension.

use crate::error::{Error, Problem};
use image::RgbImage;
use std::io::Cursor;
use std::path::Path;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

/// File extensions (lowercase) of the formats [`decode_rgb`] reads: the one list every part of
/// petal uses to recognise image files (dataset discovery, `petal predict` on folders).
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "bmp"];

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
    let format = sniff(bytes).ok_or_else(|| Error::bad(path, Problem::NotAnImage, "content is not JPEG, PNG, WebP or BMP"))?;
    let (w, h) = match format {
        Format::Jpeg => {
            let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), jpeg_options());
            d.decode_headers().map_err(|e| jpeg_error(path, e))?;
            let (w, h) = d.dimensions().ok_or_else(|| Error::bad(path, Problem::Corrupt, "no frame header"))?;
            (w as u32, h as u32)
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
    }
}

fn jpeg_options() -> DecoderOptions {
    DecoderOptions::default().set_strict_mode(false).set_max_width(65535).set_max_height(65535)
}

fn jpeg_error(path: &Path, e: zune_jpeg::errors::DecodeErrors) -> Error {
    use zune_jpeg::errors::DecodeErrors as E;
    let problem = match e {
        E::ExhaustedData => Problem::Truncated,
        E::IllegalMagicBytes(_) => Problem::NotAnImage,
        _ => Problem::Corrupt,
    };
    Error::bad(path, problem, format!("JPEG: {e:?}"))
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
            // zune-jpeg in non-strict mode pads missing data silently (as browsers do); PIL
            // raises "image file is truncated", so we check the marker structure first.
            jpeg_check_complete(bytes).map_err(|(p, d)| Error::bad(path, p, d))?;
            let opts = jpeg_options().jpeg_set_out_colorspace(ColorSpace::RGB);
            let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
            let pixels = d.decode().map_err(|e| jpeg_error(path, e))?;
            let out_w = d.dimensions().map(|(w, _)| w as u32).unwrap_or(w);
            if d.output_colorspace() != Some(ColorSpace::RGB) {
                return Err(Error::bad(path, Problem::Corrupt, "JPEG: could not convert to RGB"));
            }
            RgbImage::from_raw(out_w, h, pixels).ok_or_else(|| Error::bad(path, Problem::Corrupt, "JPEG: decoded buffer has the wrong size"))
        }
        _ => {
            let mut r = image::ImageReader::new(Cursor::new(bytes));
            r.set_format(to_image_format(format));
            let mut lim = image::Limits::default();
            lim.max_image_width = Some(w);
            lim.max_image_height = Some(h);
            // RGBA16 output plus decoder working memory.
            lim.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
            r.limits(lim);
            let img = r.decode().map_err(|e| image_error(path, e))?;
            Ok(img.into_rgb8())
        }
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

    #[test]
    fn sniffs_formats() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Format::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some(Format::Png));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::Webp));
        assert_eq!(sniff(b"BM.."), Some(Format::Bmp));
        assert_eq!(sniff(b"GIF89a"), None);
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
