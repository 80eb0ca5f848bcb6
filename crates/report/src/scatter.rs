//! Score against parameters: one scatter panel per parameter, e.g. the trials of a
//! hyper-parameter sweep (validation accuracy against learning rate, dropout, ...).

use crate::draw::{draw_err, font, nice_ticks, Canvas, Ticked, GRID, TEXT, TRAIN, VALID};
use crate::Error;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Size in pixels (width, height) of one panel of [`plot_scatter`].
pub const SCATTER_PANEL_SIZE: (u32, u32) = (460, 340);

/// Panels per row in [`plot_scatter`].
pub const SCATTER_COLUMNS: usize = 3;

/// How a panel's x axis reads its values.
#[derive(Debug, Clone, PartialEq)]
pub enum XAxis {
    /// Numbers on a linear axis.
    Linear,
    /// Positive numbers on a logarithmic axis.
    Log,
    /// Categories: `x` is an index into these labels.
    Categories(Vec<String>),
}

/// One point of a panel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScatterPoint {
    /// The parameter's value (a category index for [`XAxis::Categories`]).
    pub x: f64,
    /// The score.
    pub y: f64,
    /// Drawn in the emphasis colour (orange), e.g. trials that reached the last round; others blue.
    pub emphasis: bool,
}

/// One panel: a parameter and the points plotted against it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterPanel {
    /// The parameter's name (the panel's caption and x label).
    pub name: String,
    /// How to read `x`.
    pub axis: XAxis,
    /// The points; non-finite ones (and non-positive x on a log axis) are skipped.
    pub points: Vec<ScatterPoint>,
}

/// Draws `panels` in rows of [`SCATTER_COLUMNS`], each [`SCATTER_PANEL_SIZE`], under `title`, with
/// `y_desc` naming the score; written atomically to `path` as PNG.
///
/// Errors: no panels; drawing, encoding or writing failures.
pub fn plot_scatter(panels: &[ScatterPanel], title: &str, y_desc: &str, path: &Path) -> Result<(), Error> {
    if panels.is_empty() {
        return Err(Error::empty(path, "no parameters to plot"));
    }
    let cols = panels.len().min(SCATTER_COLUMNS);
    let rows = panels.len().div_ceil(SCATTER_COLUMNS);
    let size = (SCATTER_PANEL_SIZE.0 * cols as u32, SCATTER_PANEL_SIZE.1 * rows as u32 + 50);
    let ys: Vec<f64> = panels.iter().flat_map(|p| p.points.iter().map(|q| q.y)).filter(|y| y.is_finite()).collect();
    let (lo, hi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| (a.min(y), b.max(y)));
    let (y_lo, y_hi) = if lo.is_finite() { pad(lo, hi) } else { (0.0, 1.0) };
    let mut canvas = Canvas::new(size, path)?;
    {
        let root = canvas.area();
        let body = root.titled(title, font(24.0)).map_err(draw_err(path))?;
        let areas = body.split_evenly((rows, cols));
        for (panel, area) in panels.iter().zip(areas.iter()) {
            draw_panel(area, panel, (y_lo, y_hi), y_desc, path)?;
        }
        root.present().map_err(draw_err(path))?;
    }
    canvas.save_png(path)
}

/// `(lo, hi)` widened by 8 % of the span (or a little when the span is 0).
fn pad(lo: f64, hi: f64) -> (f64, f64) {
    let span = hi - lo;
    let p = if span > 0.0 { span * 0.08 } else { (hi.abs() * 0.05).max(0.5) };
    (lo - p, hi + p)
}

/// Formats a tick at an axis coordinate.
type TickLabel = Box<dyn Fn(f64) -> String>;

/// The x range, ticks and tick labels of a panel, in axis coordinates (log10 for a log axis).
fn x_layout(panel: &ScatterPanel, xs: &[f64]) -> (f64, f64, Vec<f64>, TickLabel) {
    match &panel.axis {
        XAxis::Categories(labels) => {
            let n = labels.len().max(1) as f64;
            let labels = labels.clone();
            let ticks = (0..labels.len()).map(|i| i as f64).collect();
            (-0.5, n - 0.5, ticks, Box::new(move |v| labels.get(v.round() as usize).cloned().unwrap_or_default()))
        }
        axis => {
            let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
            let (lo, hi) = if lo.is_finite() { pad(lo, hi) } else { (0.0, 1.0) };
            let log = *axis == XAxis::Log;
            let ticks = if log { (lo.ceil() as i64..=hi.floor() as i64).map(|e| e as f64).collect() } else { nice_ticks(lo, hi, 5) };
            let label: TickLabel = if log {
                Box::new(|v| format!("1e{v:.0}"))
            } else {
                let decimals = crate::curves::tick_decimals(ticks.get(1).zip(ticks.first()).map_or(1.0, |(b, a)| b - a));
                Box::new(move |v| crate::curves::tick_label(v, decimals))
            };
            (lo, hi, ticks, label)
        }
    }
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &ScatterPanel, y: (f64, f64), y_desc: &str, path: &Path) -> Result<(), Error>
where
    DB::ErrorType: 'static,
{
    let log = panel.axis == XAxis::Log;
    let points: Vec<ScatterPoint> = panel
        .points
        .iter()
        .filter(|p| p.x.is_finite() && p.y.is_finite() && (!log || p.x > 0.0))
        .map(|p| ScatterPoint { x: if log { p.x.log10() } else { p.x }, ..*p })
        .collect();
    let xs: Vec<f64> = points.iter().map(|p| p.x).collect();
    let (x_lo, x_hi, x_ticks, x_label) = x_layout(panel, &xs);
    let y_ticks = nice_ticks(y.0, y.1, 6);
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .caption(&panel.name, font(18.0))
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(Ticked { lo: x_lo, hi: x_hi, ticks: x_ticks }, Ticked { lo: y.0, hi: y.1, ticks: y_ticks })
        .map_err(draw_err(path))?;
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(TEXT)
        .y_desc(y_desc)
        .label_style(font(13.0))
        .axis_desc_style(font(14.0))
        .x_label_formatter(&|v| x_label(*v))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()
        .map_err(draw_err(path))?;
    // Emphasised points last, on top.
    for emphasis in [false, true] {
        let color = if emphasis { VALID.mix(1.0) } else { TRAIN.mix(0.6) };
        let pts = points.iter().filter(|p| p.emphasis == emphasis).map(|p| Circle::new((p.x, p.y), 4, color.filled()));
        chart.draw_series(pts).map_err(draw_err(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linear ticks carry the digits that tell them apart: a sweep over lr 0.0015 and 0.003 once
    /// printed 0.002 twice.
    #[test]
    fn linear_tick_labels_differ_at_any_scale() {
        for xs in [[0.0015, 0.003], [0.1, 0.3], [40.0, 120.0], [2e-5, 9e-5]] {
            let panel = ScatterPanel { name: "x".into(), axis: XAxis::Linear, points: Vec::new() };
            let (_, _, ticks, label) = x_layout(&panel, &xs);
            let labels: Vec<String> = ticks.iter().map(|&t| label(t)).collect();
            let mut unique = labels.clone();
            unique.dedup();
            assert!(!ticks.is_empty() && unique.len() == labels.len(), "{xs:?}: {labels:?}");
        }
    }
}
