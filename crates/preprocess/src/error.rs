//! Typed errors. Every variant that concerns a file names that file.

use std::fmt;
use std::path::{Path, PathBuf};

/// What is wrong with one input file or folder (see [`BadInput`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Problem {
    /// The file has an image extension but its content is no supported image, or the file has
    /// no image extension at all.
    NotAnImage,
    /// The file is empty (zero bytes).
    Empty,
    /// The image data ends before the image does (e.g. a JPEG without its end-of-image marker).
    Truncated,
    /// The image data is corrupt in some other way.
    Corrupt,
    /// The declared image size exceeds the configured pixel limit (decompression bomb guard).
    TooLarge,
    /// The file or folder cannot be read (permissions, I/O error).
    Unreadable,
    /// The file or folder name is not valid UTF-8.
    NonUtf8Name,
    /// A class folder contains no image.
    EmptyClass,
    /// A class folder of a non-training split has no counterpart in the training split.
    UnknownClass,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Problem::NotAnImage => "not an image",
            Problem::Empty => "empty file (0 bytes)",
            Problem::Truncated => "truncated image data",
            Problem::Corrupt => "corrupt image data",
            Problem::TooLarge => "image too large (pixel limit)",
            Problem::Unreadable => "unreadable",
            Problem::NonUtf8Name => "name is not valid UTF-8",
            Problem::EmptyClass => "class folder has no images",
            Problem::UnknownClass => "class not present in the training split",
        })
    }
}

/// One rejected input: which file or folder, what kind of problem, and details.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BadInput {
    /// The offending file or folder.
    pub path: PathBuf,
    /// The kind of problem.
    pub problem: Problem,
    /// Human-readable details (decoder message, sizes, ...).
    pub detail: String,
}

impl BadInput {
    pub(crate) fn new(path: &Path, problem: Problem, detail: impl Into<String>) -> Self {
        BadInput { path: path.to_path_buf(), problem, detail: detail.into() }
    }
}

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            write!(f, "{}: {}", self.path.display(), self.problem)
        } else {
            write!(f, "{}: {}: {}", self.path.display(), self.problem, self.detail)
        }
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad input file or folder (see [`Problem`]).
    #[error("{0}")]
    BadInput(BadInput),
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The dataset root has neither an ImageFolder nor an Oxford layout, or is inconsistent.
    #[error("{}: {problem}", path.display())]
    Layout {
        /// The dataset root or the offending file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A MATLAB v5 file could not be read.
    #[error("{}: MATLAB file: {problem}", path.display())]
    Mat {
        /// The .mat file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A tensor cache file is corrupt, truncated or of another version.
    #[error("{}: cache: {problem}", path.display())]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// An invalid configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
    pub(crate) fn bad(path: &Path, problem: Problem, detail: impl Into<String>) -> Self {
        Error::BadInput(BadInput::new(path, problem, detail))
    }
    pub(crate) fn cache(path: &Path, problem: impl Into<String>) -> Self {
        Error::Cache { path: path.to_path_buf(), problem: problem.into() }
    }
    /// The bad input this error reports, if it is one.
    pub fn bad_input(&self) -> Option<&BadInput> {
        match self {
            Error::BadInput(b) => Some(b),
            _ => None,
        }
    }
}
