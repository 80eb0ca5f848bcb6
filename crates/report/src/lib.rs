//! Report figures for petal, drawn as PNG, and the atomic file writes that go with them.
//!
//! **Owns:** the pictures people would rather see than read: training curves
//! ([`plot_curves`], loss and accuracy per epoch, train vs validation), the confusion matrix
//! heatmap ([`plot_confusion`]), the per-image sanity check (the image beside a bar chart of
//! its top-k class probabilities, [`plot_prediction`], [`plot_prediction_grid`]), CSV tables
//! ([`write_csv`]), score-against-parameter scatter panels ([`plot_scatter`], for sweeps) and atomic file replacement ([`write_atomic`]). Pure Rust: text is drawn
//! with an embedded DejaVu Sans font, so no system fonts, fontconfig, libtorch or Python are
//! needed. Every figure is rendered in memory, PNG-encoded, then written atomically: a
//! figure file is either the old one or the complete new one, never half a PNG.
//!
//! **Must never know:** models, tensors, datasets or how numbers were computed. Callers hand
//! over plain numbers, class names and RGB images; NaN or infinite values are skipped, never
//! drawn.
//!
//! Colours follow matplotlib's defaults: train `#1f77b4` (blue), validation `#ff7f0e`
//! (orange), probability bars `#1f77b4`, the true class's bar `#2ca02c` (green), and the
//! confusion matrix uses the "Blues" colour map (white = 0, dark blue = the whole row).

#![warn(missing_docs)]

mod confusion;
mod curves;
mod draw;
mod io;
mod prediction;
mod reliability;
mod scatter;

use std::path::{Path, PathBuf};

pub use confusion::{plot_confusion, CONFUSION_SIZE};
pub use curves::{plot_curves, EpochPoint, CURVES_SIZE};
pub use io::{csv_text, write_atomic, write_csv};
pub use prediction::{
    plot_prediction, plot_prediction_grid, PredictionPanel, GRID_COLUMNS, GRID_PANEL_SIZE, MAX_BARS, MAX_GRID_PANELS, PREDICTION_SIZE,
};
pub use reliability::{plot_reliability, ReliabilityCurve, RELIABILITY_SIZE};
pub use scatter::{plot_scatter, ScatterPanel, ScatterPoint, XAxis, SCATTER_COLUMNS, SCATTER_PANEL_SIZE};

/// Everything that can go wrong while drawing or writing a report file; each variant names the
/// file being written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input holds nothing to draw or write (no epochs, empty matrix, k = 0, empty image).
    #[error("{}: nothing to draw: {what}", path.display())]
    Empty {
        /// The output file.
        path: PathBuf,
        /// What was empty.
        what: String,
    },
    /// The input is inconsistent (non-square matrix, label count mismatch, ragged CSV row, …).
    #[error("{}: invalid input: {what}", path.display())]
    Invalid {
        /// The output file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The embedded font could not be loaded (a corrupt build).
    #[error("{}: the embedded font could not be loaded", path.display())]
    Font {
        /// The output file.
        path: PathBuf,
    },
    /// The drawing library failed.
    #[error("{}: drawing failed: {message}", path.display())]
    Draw {
        /// The output file.
        path: PathBuf,
        /// The drawing library's message.
        message: String,
    },
    /// PNG encoding failed.
    #[error("{}: PNG encoding failed: {source}", path.display())]
    Encode {
        /// The output file.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: image::ImageError,
    },
    /// A file-system operation failed.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl From<petal_common::IoError> for Error {
    fn from(e: petal_common::IoError) -> Self {
        Error::Io { path: e.path, op: e.action, source: e.source }
    }
}

impl Error {
    pub(crate) fn empty(path: &Path, what: impl Into<String>) -> Self {
        Error::Empty { path: path.to_path_buf(), what: what.into() }
    }
    pub(crate) fn invalid(path: &Path, what: impl Into<String>) -> Self {
        Error::Invalid { path: path.to_path_buf(), what: what.into() }
    }
}
