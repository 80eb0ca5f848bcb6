//! Shared drawing machinery: the embedded font, the in-memory canvas, colours and helpers.

use crate::Error;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::OnceLock;

/// DejaVu Sans 2.37, see `assets/LICENSE-DejaVu.txt`.
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// The family name every text style in this crate uses.
pub(crate) const FAMILY: &str = "sans-serif";

pub(crate) const TRAIN: RGBColor = RGBColor(31, 119, 180);
pub(crate) const VALID: RGBColor = RGBColor(255, 127, 14);
pub(crate) const BAR: RGBColor = RGBColor(31, 119, 180);
pub(crate) const TRUTH_BAR: RGBColor = RGBColor(44, 160, 44);
pub(crate) const OK: RGBColor = RGBColor(27, 122, 27);
pub(crate) const WRONG: RGBColor = RGBColor(200, 30, 30);
pub(crate) const GRID: RGBColor = RGBColor(225, 225, 225);
pub(crate) const TEXT: RGBColor = RGBColor(20, 20, 20);

/// Registers the embedded font once per process.
fn ensure_font(path: &Path) -> Result<(), Error> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        let normal = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT_BYTES).is_ok();
        let bold = plotters::style::register_font(FAMILY, FontStyle::Bold, FONT_BYTES).is_ok();
        normal && bold
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Font { path: path.to_path_buf() })
    }
}

/// Text style of the embedded font at `size` (roughly pixels of line height).
pub(crate) fn font(size: f64) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&TEXT)
}

/// Maps any drawing-library error to [`Error::Draw`] naming `path`.
pub(crate) fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Draw { path: path.to_path_buf(), message: e.to_string() }
}

/// An in-memory RGB picture, white when created.
pub(crate) struct Canvas {
    pub(crate) buf: Vec<u8>,
    pub(crate) size: (u32, u32),
}

impl Canvas {
    /// A white canvas; registers the font so that drawing text can work.
    pub(crate) fn new(size: (u32, u32), path: &Path) -> Result<Self, Error> {
        ensure_font(path)?;
        Ok(Canvas { buf: vec![255u8; size.0 as usize * size.1 as usize * 3], size })
    }

    /// The whole canvas as a plotters drawing area.
    pub(crate) fn area(&mut self) -> DrawingArea<BitMapBackend<'_>, Shift> {
        BitMapBackend::with_buffer(&mut self.buf, self.size).into_drawing_area()
    }

    /// Encodes the canvas as PNG and writes it atomically to `path`.
    pub(crate) fn save_png(self, path: &Path) -> Result<(), Error> {
        let (w, h) = self.size;
        let img = image::RgbImage::from_raw(w, h, self.buf)
            .ok_or_else(|| Error::Draw { path: path.to_path_buf(), message: "canvas buffer size mismatch".into() })?;
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|source| Error::Encode { path: path.to_path_buf(), source })?;
        crate::io::write_atomic(path, &png)?;
        tracing::info!(path = %path.display(), width = w, height = h, "wrote figure");
        Ok(())
    }
}

/// `text` shortened with an ellipsis so that it is at most `max_w` pixels wide in `style`.
pub(crate) fn fit_text<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, text: &str, style: &TextStyle<'_>, max_w: u32) -> String {
    let width = |s: &str| area.estimate_text_size(s, style).map(|(w, _)| w).unwrap_or(u32::MAX);
    if width(text) <= max_w {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    // Binary search the longest prefix that fits with the ellipsis.
    let (mut lo, mut hi) = (0usize, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let candidate: String = chars[..mid].iter().collect::<String>() + "…";
        if width(&candidate) <= max_w {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    chars[..lo].iter().collect::<String>().trim_end().to_string() + "…"
}

/// Scales `img` to fit inside `max` (w, h), keeping its aspect ratio.
pub(crate) fn fit_image(img: &image::RgbImage, max: (u32, u32)) -> image::RgbImage {
    let (w, h) = img.dimensions();
    let scale = (max.0 as f64 / w as f64).min(max.1 as f64 / h as f64);
    let nw = ((w as f64 * scale).round() as u32).clamp(1, max.0);
    let nh = ((h as f64 * scale).round() as u32).clamp(1, max.1);
    if (nw, nh) == (w, h) {
        return img.clone();
    }
    image::imageops::resize(img, nw, nh, image::imageops::FilterType::Triangle)
}

/// Draws `img` scaled to fit and centred in the box at `pos` of size `max`, in `area`'s pixels.
pub(crate) fn draw_image<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    img: &image::RgbImage,
    pos: (i32, i32),
    max: (u32, u32),
    path: &Path,
) -> Result<(), Error> {
    use plotters::backend::RGBPixel;
    let fitted = fit_image(img, max);
    let (w, h) = fitted.dimensions();
    let at = (pos.0 + (max.0 - w) as i32 / 2, pos.1 + (max.1 - h) as i32 / 2);
    let element = BitMapElement::<_, RGBPixel>::with_ref(at, (w, h), fitted.as_raw())
        .ok_or_else(|| Error::Draw { path: path.to_path_buf(), message: "image buffer size mismatch".into() })?;
    area.draw(&element).map_err(draw_err(path))?;
    area.draw(&Rectangle::new([(at.0 - 1, at.1 - 1), (at.0 + w as i32, at.1 + h as i32)], GRID.stroke_width(1))).map_err(draw_err(path))
}

/// About `max_ticks` "nice" tick values (steps of 1, 2 or 5 × 10^k) covering `lo..=hi`.
pub(crate) fn nice_ticks(lo: f64, hi: f64, max_ticks: usize) -> Vec<f64> {
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) || max_ticks < 2 {
        return vec![lo];
    }
    let raw = span / (max_ticks - 1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Matplotlib's "Blues" colour map at `t` in [0, 1] (piecewise linear between its anchors).
pub(crate) fn blues(t: f64) -> RGBColor {
    const ANCHORS: [(u8, u8, u8); 9] = [
        (247, 251, 255),
        (222, 235, 247),
        (198, 219, 239),
        (158, 202, 225),
        (107, 174, 214),
        (66, 146, 198),
        (33, 113, 181),
        (8, 81, 156),
        (8, 48, 107),
    ];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let x = t * (ANCHORS.len() - 1) as f64;
    let i = (x.floor() as usize).min(ANCHORS.len() - 2);
    let f = x - i as f64;
    let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

/// A linear f64 axis whose ticks (and grid lines) are exactly `ticks`: plotters' own f64 axis
/// picks its ticks itself and cannot take a label formatter together with fixed ticks.
#[derive(Clone)]
pub(crate) struct Ticked {
    pub(crate) lo: f64,
    pub(crate) hi: f64,
    pub(crate) ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.hi - self.lo;
        if span == 0.0 || !span.is_finite() {
            return (limit.0 + limit.1) / 2;
        }
        let t = ((*v - self.lo) / span).clamp(-10.0, 10.0);
        let len = (limit.1 - limit.0) as f64;
        if len >= 0.0 {
            limit.0 + (len * t + 1e-3).floor() as i32
        } else {
            limit.0 + (len * t - 1e-3).ceil() as i32
        }
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}
