//! Training curves: loss and accuracy per epoch, train vs validation.

use crate::draw::{draw_err, font, nice_ticks, Canvas, Ticked, GRID, TEXT, TRAIN, VALID};
use crate::Error;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Size in pixels (width, height) of the figure [`plot_curves`] draws.
pub const CURVES_SIZE: (u32, u32) = (1200, 520);

/// One epoch's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPoint {
    /// Epoch number (as the training loop counts it, e.g. from 1).
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Training accuracy, a fraction in [0, 1].
    pub train_acc: f64,
    /// Validation loss, when validation ran this epoch.
    pub valid_loss: Option<f64>,
    /// Validation accuracy, a fraction in [0, 1], when validation ran this epoch.
    pub valid_acc: Option<f64>,
    /// Learning rate used in the epoch (for tables; not drawn).
    pub lr: f64,
}

/// One curve: its name, colour and (epoch, value) points; non-finite values break the line.
struct Series {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

impl Series {
    /// Runs of consecutive finite points.
    fn segments(&self) -> Vec<Vec<(f64, f64)>> {
        let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &(x, y) in &self.points {
            if y.is_finite() {
                if let Some(last) = out.last_mut() {
                    last.push((x, y));
                }
            } else if out.last().is_some_and(|l| !l.is_empty()) {
                out.push(Vec::new());
            }
        }
        out.retain(|s| !s.is_empty());
        out
    }
}

/// Draws the training curves of a run, like the reference project's "Figure 1.0": `title` on
/// top, loss per epoch (left panel) and accuracy in percent per epoch (right panel), train in
/// blue and validation in orange, with a legend; the validation legend entry names the best
/// validation accuracy and its epoch. Points are drawn in the order given. NaN or infinite
/// values are skipped (the line breaks there). The PNG is [`CURVES_SIZE`] and written
/// atomically to `path`.
///
/// Errors: no points; an accuracy outside [0, 1]; drawing, encoding or writing failures.
pub fn plot_curves(points: &[EpochPoint], title: &str, path: &Path) -> Result<(), Error> {
    if points.is_empty() {
        return Err(Error::empty(path, "no epochs to plot"));
    }
    for p in points {
        for acc in [Some(p.train_acc), p.valid_acc].into_iter().flatten() {
            if acc.is_finite() && !(0.0..=1.0).contains(&acc) {
                return Err(Error::invalid(path, format!("epoch {}: accuracy {acc} is not a fraction in [0, 1]", p.epoch)));
            }
        }
    }
    let x = |p: &EpochPoint| p.epoch as f64;
    let series = |name: &str, color, f: &dyn Fn(&EpochPoint) -> Option<f64>| Series {
        name: name.to_string(),
        color,
        points: points.iter().filter_map(|p| f(p).map(|v| (x(p), v))).collect(),
    };
    let loss = [series("train", TRAIN, &|p| Some(p.train_loss)), series("validation", VALID, &|p| p.valid_loss)];
    let mut acc = [series("train", TRAIN, &|p| Some(p.train_acc * 100.0)), series("validation", VALID, &|p| p.valid_acc.map(|a| a * 100.0))];
    let best = acc[1].points.iter().filter(|(_, v)| v.is_finite()).fold(None, |b: Option<(f64, f64)>, &(e, v)| match b {
        Some((_, bv)) if bv >= v => b,
        _ => Some((e, v)),
    });
    if let Some((e, v)) = best {
        acc[1].name = format!("validation (best {v:.1}% @ epoch {e:.0})");
    }

    let mut canvas = Canvas::new(CURVES_SIZE, path)?;
    {
        let root = canvas.area();
        let body = root.titled(title, font(26.0)).map_err(draw_err(path))?;
        let (left, right) = body.split_horizontally(CURVES_SIZE.0 / 2);
        let epochs: Vec<f64> = points.iter().map(x).collect();
        panel(&left, "Loss", "loss", &loss, &epochs, false, path)?;
        panel(&right, "Accuracy", "accuracy (%)", &acc, &epochs, true, path)?;
        root.present().map_err(draw_err(path))?;
    }
    canvas.save_png(path)
}

/// Value range of all finite values in `series`, padded; `None` when there are none.
fn value_range(series: &[Series], percent: bool) -> (f64, f64) {
    let vals = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|v| v.is_finite());
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return if percent { (0.0, 100.0) } else { (0.0, 1.0) };
    }
    let span = hi - lo;
    let pad = if span > 0.0 { span * 0.08 } else { (hi.abs() * 0.1).max(0.05) };
    let (mut lo, mut hi) = (lo - pad, hi + pad);
    if lo < 0.0 && series.iter().all(|s| s.points.iter().all(|p| !p.1.is_finite() || p.1 >= 0.0)) {
        lo = 0.0;
    }
    if percent {
        lo = lo.max(0.0);
        hi = hi.min(100.0);
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    (lo, hi)
}

/// One panel: axes with integer epoch ticks, the series, and a legend.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    series: &[Series],
    epochs: &[f64],
    percent: bool,
    path: &Path,
) -> Result<(), Error>
where
    DB::ErrorType: 'static,
{
    let (e_lo, e_hi) = epochs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &e| (a.min(e), b.max(e)));
    let pad = ((e_hi - e_lo) * 0.03).max(0.5);
    let ticks: Vec<f64> = nice_ticks(e_lo, e_hi, 11).into_iter().map(|t| t.round()).collect::<Vec<_>>();
    let mut ticks = ticks;
    ticks.dedup();
    let (y_lo, y_hi) = value_range(series, percent);
    let y_ticks = nice_ticks(y_lo, y_hi, 7);

    let mut chart = ChartBuilder::on(area)
        .margin_left(12)
        .margin_right(24)
        .margin_top(6)
        .margin_bottom(8)
        .caption(caption, font(20.0))
        .x_label_area_size(48)
        .y_label_area_size(68)
        .build_cartesian_2d(Ticked { lo: e_lo - pad, hi: e_hi + pad, ticks }, Ticked { lo: y_lo, hi: y_hi, ticks: y_ticks.clone() })
        .map_err(draw_err(path))?;
    let y_step = if y_ticks.len() > 1 { y_ticks[1] - y_ticks[0] } else { 1.0 };
    let decimals = tick_decimals(y_step);
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(TEXT)
        .x_desc("epoch")
        .y_desc(y_desc)
        .label_style(font(15.0))
        .axis_desc_style(font(17.0))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| tick_label(*v, decimals))
        .draw()
        .map_err(draw_err(path))?;

    for s in series {
        let segments = s.segments();
        let style = s.color.stroke_width(2);
        let mut labelled = false;
        for seg in &segments {
            let anno = chart.draw_series(std::iter::once(PathElement::new(seg.clone(), style))).map_err(draw_err(path))?;
            if !labelled {
                let color = s.color;
                anno.label(s.name.as_str()).legend(move |(x, y)| {
                    // Parts added to an EmptyElement are positioned relative to it.
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (22, 0)], color.stroke_width(2))
                        + Circle::new((11, 0), 3, color.filled())
                });
                labelled = true;
            }
            chart.draw_series(seg.iter().map(|&p| Circle::new(p, 3, s.color.filled()))).map_err(draw_err(path))?;
        }
    }
    if series.iter().any(|s| !s.segments().is_empty()) {
        chart
            .configure_series_labels()
            .position(if percent { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperRight })
            .background_style(WHITE.mix(0.85))
            .border_style(GRID)
            .label_font(font(15.0))
            .draw()
            .map_err(draw_err(path))?;
    }
    Ok(())
}

/// Digits after the point that tell ticks `step` apart (0 for steps of 1 and more, at most 6).
pub(crate) fn tick_decimals(step: f64) -> usize {
    (-step.log10().floor()).clamp(0.0, 6.0) as usize
}

/// A tick label: fixed-point with `decimals` digits, or scientific for very large or small
/// magnitudes so that labels stay short.
pub(crate) fn tick_label(v: f64, decimals: usize) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        format!("{v:.2e}")
    } else {
        format!("{v:.decimals$}")
    }
}
