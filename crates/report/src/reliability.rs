//! Reliability diagrams: how often a model is right against how sure it says it is.

use crate::draw::{draw_err, font, Canvas, GRID, TEXT, TRAIN, VALID};
use crate::Error;
use plotters::prelude::*;
use std::path::Path;

/// Size in pixels (width, height) of the figure [`plot_reliability`] draws.
pub const RELIABILITY_SIZE: (u32, u32) = (720, 640);

/// One model's reliability: a legend label and, per non-empty confidence bin, (mean top-class
/// probability, accuracy, images), all fractions in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct ReliabilityCurve {
    /// Legend label (e.g. "temperature 0.42 (ECE 1.8%)").
    pub label: String,
    /// (confidence, accuracy, count) per bin, by confidence.
    pub points: Vec<(f64, f64, usize)>,
}

/// Draws accuracy against confidence in percent, the diagonal of perfect calibration dashed, each
/// curve a line through its bins with markers sized by the bin's share of images (the first curve
/// blue, the second orange), under `title`; written atomically to `path` as PNG
/// ([`RELIABILITY_SIZE`]).
///
/// Errors: no curves, a value outside [0, 1], drawing, encoding or writing failures.
pub fn plot_reliability(curves: &[ReliabilityCurve], title: &str, path: &Path) -> Result<(), Error> {
    if curves.is_empty() {
        return Err(Error::empty(path, "no curves to plot"));
    }
    for c in curves {
        if let Some(p) = c.points.iter().find(|p| !(0.0..=1.0).contains(&p.0) || !(0.0..=1.0).contains(&p.1)) {
            return Err(Error::invalid(path, format!("{}: ({}, {}) is not a pair of fractions in [0, 1]", c.label, p.0, p.1)));
        }
    }
    let mut canvas = Canvas::new(RELIABILITY_SIZE, path)?;
    {
        let root = canvas.area();
        let body = root.titled(title, font(22.0)).map_err(draw_err(path))?;
        let mut chart = ChartBuilder::on(&body)
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..100f64, 0f64..100f64)
            .map_err(draw_err(path))?;
        chart
            .configure_mesh()
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(TEXT)
            .x_desc("confidence: probability of the top class (%)")
            .y_desc("accuracy (%)")
            .label_style(font(15.0))
            .axis_desc_style(font(17.0))
            .draw()
            .map_err(draw_err(path))?;
        let dashes: Vec<(f64, f64)> = (0..=20).map(|i| f64::from(i) * 5.0).map(|v| (v, v)).collect();
        for pair in dashes.chunks(2) {
            chart.draw_series(std::iter::once(PathElement::new(pair.to_vec(), TEXT.mix(0.5).stroke_width(1)))).map_err(draw_err(path))?;
        }
        let total = |c: &ReliabilityCurve| c.points.iter().map(|p| p.2).sum::<usize>().max(1) as f64;
        for (i, c) in curves.iter().enumerate() {
            let color = if i == 0 { TRAIN } else { VALID };
            let pts: Vec<(f64, f64)> = c.points.iter().map(|p| (100.0 * p.0, 100.0 * p.1)).collect();
            chart
                .draw_series(std::iter::once(PathElement::new(pts, color.stroke_width(2))))
                .map_err(draw_err(path))?
                .label(c.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2)));
            let n = total(c);
            chart
                .draw_series(
                    c.points.iter().map(|p| Circle::new((100.0 * p.0, 100.0 * p.1), 3 + (12.0 * (p.2 as f64 / n).sqrt()) as i32, color.filled())),
                )
                .map_err(draw_err(path))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(GRID)
            .label_font(font(15.0))
            .draw()
            .map_err(draw_err(path))?;
        root.present().map_err(draw_err(path))?;
    }
    canvas.save_png(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_and_refuses_what_is_not_a_fraction() {
        let dir = std::env::temp_dir().join(format!("petal-reliability-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.png");
        let curves = [
            ReliabilityCurve { label: "before".into(), points: vec![(0.05, 0.6, 50), (0.15, 0.9, 300)] },
            ReliabilityCurve { label: "after".into(), points: vec![(0.6, 0.62, 40), (0.95, 0.96, 310)] },
        ];
        plot_reliability(&curves, "reliability", &path).unwrap();
        let img = image::open(&path).unwrap();
        assert_eq!((img.width(), img.height()), RELIABILITY_SIZE);
        let bad = [ReliabilityCurve { label: "x".into(), points: vec![(1.5, 0.5, 1)] }];
        let e = plot_reliability(&bad, "t", &dir.join("bad.png")).unwrap_err().to_string();
        assert!(e.contains("not a pair of fractions"), "{e}");
        assert!(!dir.join("bad.png").exists());
        assert!(plot_reliability(&[], "t", &dir.join("none.png")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
