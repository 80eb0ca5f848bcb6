//! Confusion matrix heatmap.

use crate::draw::{blues, draw_err, fit_text, font, Canvas, TEXT};
use crate::Error;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// Size in pixels (width, height) of the figure [`plot_confusion`] draws.
pub const CONFUSION_SIZE: (u32, u32) = (1100, 1000);

/// Largest class count accepted (a cell would be under 1 pixel beyond it).
const MAX_CLASSES: usize = 700;
/// Up to this many classes the axes carry class names; beyond, every 10th class index.
const NAMED_TICKS_MAX: usize = 25;
/// Up to this many classes every cell shows its count.
const COUNTS_MAX: usize = 15;

// Layout, in pixels.
const MAP_X: i32 = 190;
const MAP_Y: i32 = 80;
const MAP_SIZE: i32 = 760;
const BAR_X: i32 = 975;
const BAR_W: i32 = 24;
/// Colour of rows whose true class has no samples.
const NO_SAMPLES: RGBColor = RGBColor(228, 228, 228);

/// Draws a confusion matrix as a heatmap: `matrix[t][p]` counts samples of true class `t`
/// predicted as `p` (rows = true class, top to bottom; columns = predicted class, left to
/// right). Colour is row-normalised (the share of the true class's samples, "Blues" colour
/// map, with a colour bar on the right), so rare classes are as readable as common ones; rows
/// without samples are grey. `title` is on top with a subtitle giving the sample count and
/// overall accuracy (trace / total). The axes carry `class_labels` (shortened to fit) when
/// there are at most 25 classes, otherwise every 10th class index; cells show their counts
/// when there are at most 15 classes. `class_labels` is either empty (indices are used) or
/// has one label per class. The PNG is [`CONFUSION_SIZE`] and written atomically to `path`.
///
/// Errors: an empty or non-square matrix, more than 700 classes, a label count that is
/// neither 0 nor the class count; drawing, encoding or writing failures.
pub fn plot_confusion(matrix: &[Vec<u64>], class_labels: &[String], title: &str, path: &Path) -> Result<(), Error> {
    let n = matrix.len();
    if n == 0 {
        return Err(Error::empty(path, "the confusion matrix has no rows"));
    }
    if n > MAX_CLASSES {
        return Err(Error::invalid(path, format!("{n} classes is more than the {MAX_CLASSES} a heatmap can show")));
    }
    if let Some((i, row)) = matrix.iter().enumerate().find(|(_, r)| r.len() != n) {
        return Err(Error::invalid(path, format!("the confusion matrix is not square: row {i} has {} columns, there are {n} rows", row.len())));
    }
    if !class_labels.is_empty() && class_labels.len() != n {
        return Err(Error::invalid(path, format!("{} class labels for {n} classes", class_labels.len())));
    }
    let label = |i: usize| class_labels.get(i).cloned().unwrap_or_else(|| i.to_string());
    let row_sums: Vec<u64> = matrix.iter().map(|r| r.iter().fold(0u64, |a, &v| a.saturating_add(v))).collect();
    let total = row_sums.iter().fold(0u64, |a, &v| a.saturating_add(v));
    let correct = (0..n).fold(0u64, |a, i| a.saturating_add(matrix[i][i]));

    let edge = |i: usize| (i as f64 * MAP_SIZE as f64 / n as f64).round() as i32;
    let centre = |i: usize| (edge(i) + edge(i + 1)) / 2;

    let mut canvas = Canvas::new(CONFUSION_SIZE, path)?;
    {
        let root = canvas.area();
        let err = draw_err(path);
        let (w, _) = CONFUSION_SIZE;
        let centred = |size: f64| font(size).pos(Pos::new(HPos::Center, VPos::Top));
        let title_style = centred(26.0);
        let title_text = fit_text(&root, title, &title_style, w - 40);
        root.draw_text(&title_text, &title_style, (w as i32 / 2, 12)).map_err(&err)?;
        let subtitle = if total > 0 {
            format!("{total} samples, {n} classes, accuracy {:.2}% (colour: share of the true class)", correct as f64 * 100.0 / total as f64)
        } else {
            format!("no samples, {n} classes")
        };
        root.draw_text(&subtitle, &centred(16.0), (w as i32 / 2, 46)).map_err(&err)?;

        // Cells, with thin white separators when they are large.
        let gap = if n <= NAMED_TICKS_MAX { 1 } else { 0 };
        let count_style_size = ((MAP_SIZE as f64 / n as f64) / 3.2).clamp(9.0, 18.0);
        for (t, row) in matrix.iter().enumerate() {
            for (p, &v) in row.iter().enumerate() {
                let share = if row_sums[t] > 0 { v as f64 / row_sums[t] as f64 } else { f64::NAN };
                let color = if share.is_nan() { NO_SAMPLES } else { blues(share) };
                let (x0, x1) = (MAP_X + edge(p), MAP_X + edge(p + 1) - gap);
                let (y0, y1) = (MAP_Y + edge(t), MAP_Y + edge(t + 1) - gap);
                root.draw(&Rectangle::new([(x0, y0), (x1.max(x0), y1.max(y0))], color.filled())).map_err(&err)?;
                if n <= COUNTS_MAX {
                    let ink = if share > 0.55 { WHITE } else { TEXT };
                    let style = font(count_style_size).color(&ink).pos(Pos::new(HPos::Center, VPos::Center));
                    root.draw_text(&v.to_string(), &style, (MAP_X + centre(p), MAP_Y + centre(t))).map_err(&err)?;
                }
            }
        }
        let frame = [(MAP_X - 1, MAP_Y - 1), (MAP_X + MAP_SIZE, MAP_Y + MAP_SIZE)];
        root.draw(&Rectangle::new(frame, TEXT.stroke_width(1))).map_err(&err)?;

        // Ticks and tick labels.
        let ticks: Vec<usize> = if n <= NAMED_TICKS_MAX { (0..n).collect() } else { (0..n).step_by(10).collect() };
        let tick_size = if n <= 12 { 14.0 } else { 12.0 };
        let y_style = font(tick_size).pos(Pos::new(HPos::Right, VPos::Center));
        let x_style = font(tick_size).pos(Pos::new(HPos::Right, VPos::Center)).transform(FontTransform::Rotate270);
        let (mut y_label_w, mut x_label_h) = (0u32, 0u32);
        for &i in &ticks {
            let text = if n <= NAMED_TICKS_MAX { label(i) } else { i.to_string() };
            let (cx, cy) = (MAP_X + centre(i), MAP_Y + centre(i));
            root.draw(&PathElement::new(vec![(MAP_X - 5, cy), (MAP_X - 1, cy)], TEXT)).map_err(&err)?;
            let ytext = fit_text(&root, &text, &y_style, (MAP_X - 50) as u32);
            root.draw_text(&ytext, &y_style, (MAP_X - 8, cy)).map_err(&err)?;
            y_label_w = y_label_w.max(root.estimate_text_size(&ytext, &y_style).map_or(0, |s| s.0));
            let bottom = MAP_Y + MAP_SIZE;
            root.draw(&PathElement::new(vec![(cx, bottom), (cx, bottom + 4)], TEXT)).map_err(&err)?;
            let xtext = fit_text(&root, &text, &font(tick_size), 120);
            root.draw_text(&xtext, &x_style, (cx, bottom + 8)).map_err(&err)?;
            x_label_h = x_label_h.max(root.estimate_text_size(&xtext, &font(tick_size)).map_or(0, |s| s.0));
        }
        let desc = font(17.0).pos(Pos::new(HPos::Center, VPos::Center));
        let x_desc_y = MAP_Y + MAP_SIZE + 8 + x_label_h as i32 + 22;
        root.draw_text("predicted class", &desc, (MAP_X + MAP_SIZE / 2, x_desc_y)).map_err(&err)?;
        let y_desc_x = (MAP_X - 8 - y_label_w as i32 - 22).max(14);
        root.draw_text("true class", &desc.transform(FontTransform::Rotate270), (y_desc_x, MAP_Y + MAP_SIZE / 2)).map_err(&err)?;

        // Colour bar: 1 at the top, 0 at the bottom.
        for y in 0..MAP_SIZE {
            let t = 1.0 - y as f64 / (MAP_SIZE - 1) as f64;
            let c = blues(t);
            root.draw(&PathElement::new(vec![(BAR_X, MAP_Y + y), (BAR_X + BAR_W - 1, MAP_Y + y)], c)).map_err(&err)?;
        }
        root.draw(&Rectangle::new([(BAR_X - 1, MAP_Y - 1), (BAR_X + BAR_W, MAP_Y + MAP_SIZE)], TEXT.stroke_width(1))).map_err(&err)?;
        let bar_style = font(13.0).pos(Pos::new(HPos::Left, VPos::Center));
        for k in 0..=4 {
            let y = MAP_Y + MAP_SIZE - 1 - ((MAP_SIZE - 1) * k) / 4;
            root.draw(&PathElement::new(vec![(BAR_X + BAR_W, y), (BAR_X + BAR_W + 4, y)], TEXT)).map_err(&err)?;
            root.draw_text(&format!("{}%", k * 25), &bar_style, (BAR_X + BAR_W + 7, y)).map_err(&err)?;
        }
        root.present().map_err(&err)?;
    }
    canvas.save_png(path)
}
