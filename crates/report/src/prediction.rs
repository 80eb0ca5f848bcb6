//! The per-image sanity check: the image beside a bar chart of its top-k class probabilities.

use crate::draw::{draw_err, draw_image, fit_text, font, Canvas, Ticked, BAR, GRID, OK, TEXT, TRUTH_BAR, WRONG};
use crate::Error;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// Size in pixels (width, height) of the figure [`plot_prediction`] draws.
pub const PREDICTION_SIZE: (u32, u32) = (1000, 440);
/// Size in pixels (width, height) of one panel of [`plot_prediction_grid`].
pub const GRID_PANEL_SIZE: (u32, u32) = (620, 300);
/// Panels per row of [`plot_prediction_grid`] (fewer when there are fewer panels).
pub const GRID_COLUMNS: usize = 2;
/// Most panels [`plot_prediction_grid`] draws (the first ones; a warning is logged).
pub const MAX_GRID_PANELS: usize = 48;
/// Most bars one bar chart draws (the highest probabilities; a warning is logged).
pub const MAX_BARS: usize = 20;

/// One panel of [`plot_prediction_grid`]: an image, its true class name if known, and the
/// model's top-k (class name, probability) pairs.
#[derive(Debug, Clone)]
pub struct PredictionPanel {
    /// The image as the model saw it (or as loaded); any size, scaled to fit.
    pub image: image::RgbImage,
    /// The true class name, when known.
    pub truth: Option<String>,
    /// Top-k (class name, probability in [0, 1]) pairs, any order.
    pub topk: Vec<(String, f32)>,
}

/// Pixel layout of one panel, relative to its drawing area.
struct Layout {
    title_size: f64,
    title_y: i32,
    image_pos: (i32, i32),
    image_max: (u32, u32),
    chart_pos: (i32, i32),
    chart_size: (u32, u32),
    name_area: u32,
    label_size: f64,
}

const SINGLE: Layout = Layout {
    title_size: 26.0,
    title_y: 12,
    image_pos: (20, 60),
    image_max: (370, 360),
    chart_pos: (410, 52),
    chart_size: (575, 380),
    name_area: 175,
    label_size: 15.0,
};

const PANEL: Layout = Layout {
    title_size: 18.0,
    title_y: 8,
    image_pos: (10, 40),
    image_max: (240, 250),
    chart_pos: (262, 34),
    chart_size: (350, 262),
    name_area: 125,
    label_size: 13.0,
};

/// Finite bars sorted by probability, highest first; errors when none is left or too many.
fn bars(topk: &[(String, f32)], path: &Path) -> Result<Vec<(String, f64)>, Error> {
    if topk.is_empty() {
        return Err(Error::empty(path, "top-k is empty (k = 0)"));
    }
    let mut out: Vec<(String, f64)> = topk.iter().filter(|(_, p)| p.is_finite()).map(|(n, p)| (n.clone(), *p as f64)).collect();
    if out.is_empty() {
        return Err(Error::empty(path, "every top-k probability is NaN or infinite"));
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    if out.len() > MAX_BARS {
        tracing::warn!(path = %path.display(), k = out.len(), "drawing only the {MAX_BARS} highest probabilities");
        out.truncate(MAX_BARS);
    }
    Ok(out)
}

fn check_image(image: &image::RgbImage, path: &Path) -> Result<(), Error> {
    if image.width() == 0 || image.height() == 0 {
        return Err(Error::empty(path, "the image has no pixels"));
    }
    Ok(())
}

/// Draws the reference project's "Figure 1.1" sanity check: `image` (left, scaled to fit)
/// beside a horizontal bar chart of the `topk` (class name, probability) pairs (right),
/// highest probability on top, probability axis from 0 to 1, each bar labelled with its
/// percentage; `title` (the true or predicted class name) on top. Non-finite probabilities
/// are skipped; beyond [`MAX_BARS`] entries only the highest are drawn. The PNG is
/// [`PREDICTION_SIZE`] and written atomically to `path`.
///
/// Errors: an empty image, k = 0, or no finite probability; drawing, encoding or writing
/// failures.
pub fn plot_prediction(image: &image::RgbImage, title: &str, topk: &[(String, f32)], path: &Path) -> Result<(), Error> {
    check_image(image, path)?;
    let bars = bars(topk, path)?;
    let mut canvas = Canvas::new(PREDICTION_SIZE, path)?;
    {
        let root = canvas.area();
        draw_panel(&root, PREDICTION_SIZE, image, title, TEXT, &bars, None, &SINGLE, path)?;
        root.present().map_err(draw_err(path))?;
    }
    canvas.save_png(path)
}

/// Draws several prediction panels in a grid of [`GRID_COLUMNS`] columns (each panel
/// [`GRID_PANEL_SIZE`], so the PNG is `columns × width` by `rows × height`). A panel with a
/// known truth is titled "true: X" in green when the top-1 class is X, or
/// "true: X (predicted: Y)" in red otherwise, and the true class's bar is green; without a
/// truth the title is "predicted: Y" in black. Beyond [`MAX_GRID_PANELS`] panels only the
/// first are drawn. Written atomically to `path`.
///
/// Errors: no panels, or any panel that [`plot_prediction`] would refuse (the error names the
/// panel); drawing, encoding or writing failures.
pub fn plot_prediction_grid(items: &[PredictionPanel], path: &Path) -> Result<(), Error> {
    if items.is_empty() {
        return Err(Error::empty(path, "no prediction panels"));
    }
    let items = if items.len() > MAX_GRID_PANELS {
        tracing::warn!(path = %path.display(), panels = items.len(), "drawing only the first {MAX_GRID_PANELS} panels");
        &items[..MAX_GRID_PANELS]
    } else {
        items
    };
    let mut prepared = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let with_index = |e: Error| match e {
            Error::Empty { path, what } => Error::Empty { path, what: format!("panel {i}: {what}") },
            Error::Invalid { path, what } => Error::Invalid { path, what: format!("panel {i}: {what}") },
            other => other,
        };
        check_image(&item.image, path).map_err(with_index)?;
        prepared.push(bars(&item.topk, path).map_err(with_index)?);
    }
    let cols = GRID_COLUMNS.min(items.len());
    let rows = items.len().div_ceil(cols);
    let (pw, ph) = GRID_PANEL_SIZE;
    let size = (pw * cols as u32, ph * rows as u32);
    let mut canvas = Canvas::new(size, path)?;
    {
        let root = canvas.area();
        for (i, (item, bars)) in items.iter().zip(&prepared).enumerate() {
            let (r, c) = (i / cols, i % cols);
            let area = root.clone().shrink((c as u32 * pw, r as u32 * ph), GRID_PANEL_SIZE);
            let top1 = bars[0].0.as_str();
            let (title, color) = match item.truth.as_deref() {
                Some(t) if t == top1 => (format!("true: {t}"), OK),
                Some(t) => (format!("true: {t} (predicted: {top1})"), WRONG),
                None => (format!("predicted: {top1}"), TEXT),
            };
            draw_panel(&area, GRID_PANEL_SIZE, &item.image, &title, color, bars, item.truth.as_deref(), &PANEL, path)?;
            if c > 0 {
                area.draw(&PathElement::new(vec![(0, 6), (0, ph as i32 - 6)], GRID)).map_err(draw_err(path))?;
            }
            if r > 0 {
                area.draw(&PathElement::new(vec![(6, 0), (pw as i32 - 6, 0)], GRID)).map_err(draw_err(path))?;
            }
        }
        root.present().map_err(draw_err(path))?;
    }
    canvas.save_png(path)
}

/// Title, image and bar chart into `area` (of `size` pixels) following `layout`.
#[allow(clippy::too_many_arguments)]
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    size: (u32, u32),
    image: &image::RgbImage,
    title: &str,
    title_color: RGBColor,
    bars: &[(String, f64)],
    truth: Option<&str>,
    layout: &Layout,
    path: &Path,
) -> Result<(), Error>
where
    DB::ErrorType: 'static,
{
    let err = draw_err(path);
    let title_style = font(layout.title_size).color(&title_color).pos(Pos::new(HPos::Center, VPos::Top));
    let title = fit_text(area, title, &title_style, size.0 - 20);
    area.draw_text(&title, &title_style, (size.0 as i32 / 2, layout.title_y)).map_err(&err)?;
    draw_image(area, image, layout.image_pos, layout.image_max, path)?;

    let k = bars.len();
    let chart_area = area.clone().shrink((layout.chart_pos.0 as u32, layout.chart_pos.1 as u32), layout.chart_size);
    let centres: Vec<f64> = (0..k).map(|i| k as f64 - i as f64 - 0.5).collect();
    let name_style = font(layout.label_size);
    let names: Vec<String> = bars.iter().map(|(n, _)| fit_text(area, n, &name_style, layout.name_area - 14)).collect();
    let name_of = |v: &f64| {
        let i = (k as f64 - 0.5 - v).round();
        if i >= 0.0 && (i as usize) < k {
            names[i as usize].clone()
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(&chart_area)
        .margin_right(18)
        .margin_top(4)
        .x_label_area_size(42)
        .y_label_area_size(layout.name_area)
        .build_cartesian_2d(
            Ticked { lo: 0.0, hi: 1.0, ticks: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0] },
            Ticked { lo: 0.0, hi: k as f64, ticks: centres.clone() },
        )
        .map_err(&err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(TEXT)
        .x_desc("probability")
        .label_style(font(layout.label_size))
        .axis_desc_style(font(layout.label_size + 1.0))
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(&name_of)
        .draw()
        .map_err(&err)?;
    let value_size = layout.label_size - 1.0;
    for (i, (name, p)) in bars.iter().enumerate() {
        let c = centres[i];
        let shown = p.clamp(0.0, 1.0);
        let color = if truth == Some(name.as_str()) { TRUTH_BAR } else { BAR };
        chart.draw_series(std::iter::once(Rectangle::new([(0.0, c - 0.36), (shown, c + 0.36)], color.filled()))).map_err(&err)?;
        let text = format!("{:.1}%", p * 100.0);
        let (x, style) = if shown > 0.82 {
            (shown - 0.01, font(value_size).color(&WHITE).pos(Pos::new(HPos::Right, VPos::Center)))
        } else {
            (shown + 0.01, font(value_size).pos(Pos::new(HPos::Left, VPos::Center)))
        };
        chart.draw_series(std::iter::once(Text::new(text, (x, c), style))).map_err(&err)?;
    }
    Ok(())
}
