//! Pixel-level behaviour of the figures: each PNG decodes, has its documented size, is not
//! blank, and its marks are where and how large the numbers say.

use image::{Rgb, RgbImage};
use report::{EpochPoint, Error, PredictionPanel};
use std::path::Path;

// The palette the crate documents (matplotlib defaults).
const TRAIN: Rgb<u8> = Rgb([31, 119, 180]);
const VALID: Rgb<u8> = Rgb([255, 127, 14]);
const BAR: Rgb<u8> = Rgb([31, 119, 180]);
const TRUTH_BAR: Rgb<u8> = Rgb([44, 160, 44]);

fn load(path: &Path) -> RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

/// Fails unless the picture has marks: enough non-white pixels and several colours.
fn assert_not_blank(img: &RgbImage) {
    let non_white = img.pixels().filter(|p| p.0.iter().any(|&c| c < 240)).count();
    assert!(non_white > 2000, "only {non_white} non-white pixels");
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() > 20, "only {} distinct colours", colours.len());
}

/// Dark, text-like pixels in the rectangle x0..x1, y0..y1.
fn dark_pixels(img: &RgbImage, x0: u32, x1: u32, y0: u32, y1: u32) -> usize {
    (y0..y1).flat_map(|y| (x0..x1).map(move |x| (x, y))).filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 100)).count()
}

/// Median y of the pixels of exactly `colour` with x in x0..x1.
fn median_y(img: &RgbImage, colour: Rgb<u8>, x0: u32, x1: u32) -> Option<f64> {
    let mut ys: Vec<u32> = img.enumerate_pixels().filter(|(x, _, p)| *x >= x0 && *x < x1 && **p == colour).map(|(_, y, _)| y).collect();
    if ys.is_empty() {
        return None;
    }
    ys.sort_unstable();
    Some(ys[ys.len() / 2] as f64)
}

fn count(img: &RgbImage, colour: Rgb<u8>) -> usize {
    img.pixels().filter(|p| **p == colour).count()
}

fn epoch(e: usize, train_loss: f64, train_acc: f64, valid: Option<(f64, f64)>) -> EpochPoint {
    EpochPoint { epoch: e, train_loss, train_acc, valid_loss: valid.map(|v| v.0), valid_acc: valid.map(|v| v.1), lr: 0.001 }
}

#[test]
fn curves_put_each_series_at_its_level_in_its_colour() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.png");
    // Train loss above valid loss; train accuracy below valid accuracy.
    let points: Vec<EpochPoint> = (1..=12).map(|e| epoch(e, 2.0, 0.3, Some((1.0, 0.8)))).collect();
    report::plot_curves(&points, "Run 7: training", &path).unwrap();
    let img = load(&path);
    assert_eq!(img.dimensions(), report::CURVES_SIZE);
    assert_not_blank(&img);
    let half = report::CURVES_SIZE.0 / 2;
    assert!(count(&img, TRAIN) > 300, "train colour missing");
    assert!(count(&img, VALID) > 300, "valid colour missing");
    let (lt, lv) = (median_y(&img, TRAIN, 0, half).unwrap(), median_y(&img, VALID, 0, half).unwrap());
    assert!(lt + 50.0 < lv, "loss panel: train (y={lt}) must be well above valid (y={lv})");
    let (at, av) = (median_y(&img, TRAIN, half, 2 * half).unwrap(), median_y(&img, VALID, half, 2 * half).unwrap());
    assert!(at > av + 50.0, "accuracy panel: train (y={at}) must be well below valid (y={av})");
    // The title is drawn with the embedded font (no system fonts needed).
    assert!(dark_pixels(&img, 0, 2 * half, 0, 34) > 150, "no title text");
}

#[test]
fn curves_without_validation_or_with_nan_draw_no_validation_series() {
    let dir = tempfile::tempdir().unwrap();
    let no_valid: Vec<EpochPoint> = (1..=5).map(|e| epoch(e, 1.0 / e as f64, 0.2 * e as f64 - 0.1, None)).collect();
    let p1 = dir.path().join("a.png");
    report::plot_curves(&no_valid, "no validation", &p1).unwrap();
    let img = load(&p1);
    assert!(count(&img, TRAIN) > 200);
    assert_eq!(count(&img, VALID), 0, "validation colour drawn without validation data");

    // Validation values all NaN: skipped, nothing orange; train NaN at one epoch: still drawn.
    let nan: Vec<EpochPoint> = (1..=5).map(|e| epoch(e, if e == 3 { f64::NAN } else { 1.0 }, 0.5, Some((f64::NAN, f64::NAN)))).collect();
    let p2 = dir.path().join("b.png");
    report::plot_curves(&nan, "nan", &p2).unwrap();
    let img = load(&p2);
    assert_eq!(img.dimensions(), report::CURVES_SIZE);
    assert!(count(&img, TRAIN) > 100);
    assert_eq!(count(&img, VALID), 0, "NaN validation values were drawn");

    // A single epoch is drawn too.
    let p3 = dir.path().join("c.png");
    report::plot_curves(&[epoch(1, 0.7, 0.6, Some((0.8, 0.5)))], "one", &p3).unwrap();
    let img = load(&p3);
    assert!(count(&img, TRAIN) > 20 && count(&img, VALID) > 20, "single-epoch markers missing");
}

#[test]
fn curves_survive_extreme_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("extreme.png");
    let points =
        [epoch(1, 1e300, 0.0, Some((f64::INFINITY, 1.0))), epoch(2, -1e300, 1.0, Some((f64::NEG_INFINITY, 0.5))), epoch(1_000_000, 0.0, 0.5, None)];
    report::plot_curves(&points, "extreme", &path).unwrap();
    assert_eq!(load(&path).dimensions(), report::CURVES_SIZE);
    let flat = [epoch(3, 0.5, 0.5, Some((0.5, 0.5))), epoch(3, 0.5, 0.5, Some((0.5, 0.5)))];
    report::plot_curves(&flat, "flat", &path).unwrap();
    assert_eq!(load(&path).dimensions(), report::CURVES_SIZE);
}

#[test]
fn curves_reject_empty_input_and_percent_accuracies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.png");
    assert!(matches!(report::plot_curves(&[], "t", &path), Err(Error::Empty { .. })));
    let err = report::plot_curves(&[epoch(1, 1.0, 87.0, None)], "t", &path).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("x.png"), "error must name the file: {err}");
    assert!(!path.exists());
}

/// Bounding box (x0, x1, y0, y1) of the heatmap: the first run of columns (gaps of up to 3 px
/// allowed) holding saturated blue pixels, and the rows of those pixels.
fn heatmap_box(img: &RgbImage) -> (u32, u32, u32, u32) {
    let blue = |p: &Rgb<u8>| p[2] as i32 - p[0] as i32 > 80 && p[0] < 120;
    let cols: Vec<u32> = (0..img.width()).filter(|&x| (0..img.height()).any(|y| blue(img.get_pixel(x, y)))).collect();
    let mut x1 = cols[0];
    for &c in &cols[1..] {
        if c > x1 + 4 {
            break;
        }
        x1 = c;
    }
    let x0 = cols[0];
    let rows: Vec<u32> = (0..img.height()).filter(|&y| (x0..=x1).any(|x| blue(img.get_pixel(x, y)))).collect();
    (x0, x1 + 1, rows[0], rows[rows.len() - 1] + 1)
}

/// Mean luma of a 3×3 patch at fraction (fx, fy) of cell (row, col).
fn cell_luma(img: &RgbImage, b: (u32, u32, u32, u32), n: usize, row: usize, col: usize, f: f64) -> f64 {
    let (w, h) = ((b.1 - b.0) as f64 / n as f64, (b.3 - b.2) as f64 / n as f64);
    let cx = (b.0 as f64 + (col as f64 + f) * w) as u32;
    let cy = (b.2 as f64 + (row as f64 + f) * h) as u32;
    let mut s = 0.0;
    for dy in 0..3 {
        for dx in 0..3 {
            let p = img.get_pixel(cx + dx - 1, cy + dy - 1);
            s += 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64;
        }
    }
    s / 9.0
}

#[test]
fn confusion_identity_is_dark_on_the_diagonal_only() {
    let dir = tempfile::tempdir().unwrap();
    for (n, f) in [(8usize, 0.25), (102, 0.5)] {
        let m: Vec<Vec<u64>> = (0..n).map(|i| (0..n).map(|j| if i == j { 5 + i as u64 } else { 0 }).collect()).collect();
        let labels: Vec<String> = (0..n).map(|i| format!("flower {i}")).collect();
        let path = dir.path().join(format!("cm{n}.png"));
        report::plot_confusion(&m, &labels, "identity", &path).unwrap();
        let img = load(&path);
        assert_eq!(img.dimensions(), report::CONFUSION_SIZE);
        assert_not_blank(&img);
        let b = heatmap_box(&img);
        let side = (b.1 - b.0) as f64;
        assert!((side - (b.3 - b.2) as f64).abs() <= 3.0, "n={n}: heatmap {b:?} is not square");
        assert!(side > 500.0, "n={n}: heatmap {b:?} too small");
        let max_diag = (0..n).map(|i| cell_luma(&img, b, n, i, i, f)).fold(0.0, f64::max);
        let min_off = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| cell_luma(&img, b, n, i, j, f))
            .fold(255.0, f64::min);
        assert!(max_diag + 100.0 < min_off, "n={n}: diagonal luma up to {max_diag}, off-diagonal down to {min_off}");
    }
}

#[test]
fn confusion_colour_is_row_normalised_and_empty_rows_are_grey() {
    let dir = tempfile::tempdir().unwrap();
    let n = 30;
    let mut m = vec![vec![0u64; n]; n];
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = 2;
    }
    m[0][0] = 1000; // 100 % of a large row
    m[1][1] = 1; // 100 % of a one-sample row: same colour
    m[2][2] = 3; // 75 % vs 25 %
    m[2][3] = 1;
    m[15] = vec![0; n]; // a class without samples
    m[14][15] = 2; // 50 % / 50 %, and keeps column 15 marked so the heatmap's extent can be found
    let path = dir.path().join("cm.png");
    report::plot_confusion(&m, &[], "row normalised", &path).unwrap();
    let img = load(&path);
    let b = heatmap_box(&img);
    let l = |r, c| cell_luma(&img, b, n, r, c, 0.5);
    assert!((l(0, 0) - l(1, 1)).abs() < 2.0, "equal shares must look equal: {} vs {}", l(0, 0), l(1, 1));
    assert!((l(14, 14) - l(14, 15)).abs() < 2.0, "equal shares must look equal: {} vs {}", l(14, 14), l(14, 15));
    assert!(l(0, 0) + 40.0 < l(14, 14), "100% cell ({}) must be darker than a 50% cell ({})", l(0, 0), l(14, 14));
    assert!(l(2, 2) + 40.0 < l(2, 3), "75% cell ({}) must be darker than 25% cell ({})", l(2, 2), l(2, 3));
    assert!(l(2, 3) + 20.0 < l(2, 4), "25% cell ({}) must be darker than a 0% cell ({})", l(2, 3), l(2, 4));
    let (w, h) = ((b.1 - b.0) as f64 / n as f64, (b.3 - b.2) as f64 / n as f64);
    let grey = img.get_pixel((b.0 as f64 + 10.5 * w) as u32, (b.2 as f64 + 15.5 * h) as u32);
    assert!(grey[0] == grey[1] && grey[1] == grey[2] && grey[0] > 200 && grey[0] < 240, "empty row not grey: {grey:?}");
}

#[test]
fn confusion_rejects_bad_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cm.png");
    assert!(matches!(report::plot_confusion(&[], &[], "t", &path), Err(Error::Empty { .. })));
    let ragged = vec![vec![1, 0], vec![0]];
    assert!(matches!(report::plot_confusion(&ragged, &[], "t", &path), Err(Error::Invalid { .. })));
    let ok = vec![vec![1, 0], vec![0, 1]];
    let labels = vec!["a".to_string()];
    assert!(matches!(report::plot_confusion(&ok, &labels, "t", &path), Err(Error::Invalid { .. })));
    assert!(!path.exists());
}

/// Horizontal bars of exactly `colour`: for each run of rows holding that colour, the widest
/// row's pixel count; top to bottom.
fn bar_lengths(img: &RgbImage, colour: Rgb<u8>, x0: u32, x1: u32, y0: u32, y1: u32) -> Vec<u32> {
    let mut bars = Vec::new();
    let mut current: Option<u32> = None;
    for y in y0..y1 {
        let c = (x0..x1).filter(|&x| *img.get_pixel(x, y) == colour).count() as u32;
        match (c > 0, current) {
            (true, Some(m)) => current = Some(m.max(c)),
            (true, None) => current = Some(c),
            (false, Some(m)) => {
                bars.push(m);
                current = None;
            }
            (false, None) => {}
        }
    }
    bars.extend(current);
    bars
}

#[test]
fn prediction_bars_are_sorted_and_proportional() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pred.png");
    let red = Rgb([200, 20, 20]);
    let image = RgbImage::from_pixel(300, 200, red);
    let topk: Vec<(String, f32)> = vec![
        ("moon orchid".into(), 0.10),
        ("pink primrose".into(), 0.60),
        ("broken".into(), f32::NAN),
        ("sweet pea".into(), 0.05),
        ("mexican aster".into(), 0.25),
    ];
    report::plot_prediction(&image, "pink primrose", &topk, &path).unwrap();
    let img = load(&path);
    assert_eq!(img.dimensions(), report::PREDICTION_SIZE);
    assert_not_blank(&img);

    let (w, h) = img.dimensions();
    let lengths = bar_lengths(&img, BAR, 0, w, 0, h);
    assert_eq!(lengths.len(), 4, "one bar per finite probability: {lengths:?}");
    let probs = [0.60, 0.25, 0.10, 0.05];
    assert!(lengths.windows(2).all(|p| p[0] > p[1]), "bars not sorted, longest on top: {lengths:?}");
    let px_per_unit = lengths[0] as f64 / probs[0];
    for (l, p) in lengths.iter().zip(probs) {
        assert!((*l as f64 - p * px_per_unit).abs() <= 3.0, "bar {l}px for p={p} (scale {px_per_unit}px/1)");
    }
    assert!(px_per_unit > 300.0, "probability axis too short: {px_per_unit}px");

    // The image keeps its 3:2 aspect ratio and fills its box's width.
    let red_px: Vec<(u32, u32)> = img.enumerate_pixels().filter(|(_, _, p)| **p == red).map(|(x, y, _)| (x, y)).collect();
    let (x0, x1) = (red_px.iter().map(|p| p.0).min().unwrap(), red_px.iter().map(|p| p.0).max().unwrap());
    let (y0, y1) = (red_px.iter().map(|p| p.1).min().unwrap(), red_px.iter().map(|p| p.1).max().unwrap());
    let ratio = (x1 - x0 + 1) as f64 / (y1 - y0 + 1) as f64;
    assert!((ratio - 1.5).abs() < 0.02, "image aspect ratio {ratio}");
    assert!(x1 < w / 2, "image must be on the left");
    assert!(dark_pixels(&img, 0, w, 0, 45) > 100, "no title text");
}

#[test]
fn prediction_draws_only_the_highest_bars_and_first_panels_beyond_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.png");
    let image = RgbImage::from_pixel(50, 50, Rgb([200, 20, 20]));
    let n = report::MAX_BARS + 5;
    // Increasing probabilities: the highest ones come last in the input.
    let topk: Vec<(String, f32)> = (0..n).map(|i| (format!("c{i}"), 0.02 + 0.03 * i as f32)).collect();
    report::plot_prediction(&image, "many", &topk, &path).unwrap();
    let img = load(&path);
    let (w, h) = img.dimensions();
    let lengths = bar_lengths(&img, BAR, 0, w, 0, h);
    assert_eq!(lengths.len(), report::MAX_BARS, "{lengths:?}");
    let scale = lengths[0] as f64 / topk[n - 1].1 as f64;
    let last_drawn = topk[n - report::MAX_BARS].1 as f64;
    assert!((lengths[report::MAX_BARS - 1] as f64 - last_drawn * scale).abs() <= 3.0, "the lowest bars must be the ones dropped");

    let panel = PredictionPanel { image, truth: None, topk: vec![("a".into(), 0.5)] };
    let items = vec![panel; report::MAX_GRID_PANELS + 3];
    report::plot_prediction_grid(&items, &path).unwrap();
    let (pw, ph) = report::GRID_PANEL_SIZE;
    let rows = report::MAX_GRID_PANELS.div_ceil(report::GRID_COLUMNS) as u32;
    assert_eq!(load(&path).dimensions(), (pw * report::GRID_COLUMNS as u32, ph * rows));
}

#[test]
fn prediction_rejects_empty_inputs_without_touching_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pred.png");
    std::fs::write(&path, b"old").unwrap();
    let img = RgbImage::from_pixel(10, 10, Rgb([0, 0, 0]));
    assert!(matches!(report::plot_prediction(&img, "t", &[], &path), Err(Error::Empty { .. })));
    let nan = vec![("a".to_string(), f32::NAN)];
    assert!(matches!(report::plot_prediction(&img, "t", &nan, &path), Err(Error::Empty { .. })));
    let one = vec![("a".to_string(), 0.5)];
    assert!(matches!(report::plot_prediction(&RgbImage::new(0, 0), "t", &one, &path), Err(Error::Empty { .. })));
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
}

/// Pixels in the rectangle matching `pred`.
fn count_in(img: &RgbImage, x0: u32, x1: u32, y0: u32, y1: u32, pred: impl Fn(&Rgb<u8>) -> bool) -> usize {
    (y0..y1).flat_map(|y| (x0..x1).map(move |x| (x, y))).filter(|&(x, y)| pred(img.get_pixel(x, y))).count()
}

#[test]
fn prediction_grid_colours_titles_by_correctness() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grid.png");
    let grey = RgbImage::from_pixel(64, 64, Rgb([128, 128, 128]));
    let topk = vec![("rose".to_string(), 0.7f32), ("tulip".to_string(), 0.2), ("daisy".to_string(), 0.1)];
    let panel = |truth: Option<&str>| PredictionPanel { image: grey.clone(), truth: truth.map(String::from), topk: topk.clone() };
    let items = [panel(Some("rose")), panel(Some("tulip")), panel(None)];
    report::plot_prediction_grid(&items, &path).unwrap();
    let img = load(&path);
    let (pw, ph) = report::GRID_PANEL_SIZE;
    assert_eq!(img.dimensions(), (2 * pw, 2 * ph), "2 columns, 2 rows");
    assert_not_blank(&img);

    let green = |p: &Rgb<u8>| p[1] as i32 > p[0] as i32 + 50 && p[1] as i32 > p[2] as i32 + 50;
    let red = |p: &Rgb<u8>| p[0] as i32 > p[1] as i32 + 80 && p[0] as i32 > p[2] as i32 + 80;
    let title = |i: u32| {
        let (x, y) = ((i % 2) * pw, (i / 2) * ph);
        (count_in(&img, x, x + pw, y, y + 34, green), count_in(&img, x, x + pw, y, y + 34, red))
    };
    let (g0, r0) = title(0);
    let (g1, r1) = title(1);
    let (g2, r2) = title(2);
    assert!(g0 > 40 && r0 == 0, "correct panel title must be green: green {g0}, red {r0}");
    assert!(r1 > 40 && g1 == 0, "wrong panel title must be red: green {g1}, red {r1}");
    assert!(g2 == 0 && r2 == 0, "panel without truth must be neutral: green {g2}, red {r2}");

    // The true class's bar is green: the top bar in panel 0, the second in panel 1, none in panel 2.
    let bars = |i: u32, colour| {
        let (x, y) = ((i % 2) * pw, (i / 2) * ph);
        bar_lengths(&img, colour, x, x + pw, y + 34, y + ph)
    };
    assert_eq!(bars(0, TRUTH_BAR).len(), 1);
    assert_eq!(bars(0, BAR).len(), 2);
    assert!(bars(0, TRUTH_BAR)[0] > bars(0, BAR)[0], "panel 0: the green bar is the top (longest) one");
    assert_eq!(bars(1, TRUTH_BAR).len(), 1);
    let blue1 = bars(1, BAR);
    assert!(blue1[0] > bars(1, TRUTH_BAR)[0] && bars(1, TRUTH_BAR)[0] > blue1[1], "panel 1: green bar is second");
    assert!(bars(2, TRUTH_BAR).is_empty() && bars(2, BAR).len() == 3);
}

#[test]
fn prediction_grid_names_the_bad_panel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grid.png");
    assert!(matches!(report::plot_prediction_grid(&[], &path), Err(Error::Empty { .. })));
    let ok = PredictionPanel { image: RgbImage::new(4, 4), truth: None, topk: vec![("a".into(), 1.0)] };
    let bad = PredictionPanel { image: RgbImage::new(4, 4), truth: None, topk: vec![] };
    let err = report::plot_prediction_grid(&[ok, bad], &path).unwrap_err();
    assert!(err.to_string().contains("panel 1"), "{err}");
    assert!(!path.exists());
}
