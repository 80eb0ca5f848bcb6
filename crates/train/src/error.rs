//! Typed errors of the training stage.

use std::path::PathBuf;

/// What can go wrong while training or evaluating.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range or inconsistent with the data.
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// A cache would not fit the free disk (checked before any work; the message names the folder).
    #[error("{0}")]
    NoSpace(String),
    /// The dataset cannot be trained on as it is.
    #[error("dataset problem: {0}")]
    Data(String),
    /// Reading or transforming images failed.
    #[error(transparent)]
    Preprocess(#[from] preprocess::Error),
    /// Building the network or loading weights failed.
    #[error(transparent)]
    Model(#[from] model::Error),
    /// Reading or writing a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::Error),
    /// Drawing a plot or writing a report file failed.
    #[error(transparent)]
    Report(#[from] report::Error),
    /// A libtorch operation failed.
    #[error("libtorch: {0}")]
    Torch(String),
    /// Building or running the onnxruntime backbone failed.
    #[error(transparent)]
    Onnx(#[from] petal_onnx::Error),
    /// A checkpoint does not fit this run (e.g. resuming with another architecture).
    #[error("{path}: {detail}")]
    Mismatch {
        /// The checkpoint.
        path: PathBuf,
        /// What does not fit.
        detail: String,
    },
    /// The parts of a sharded extraction cannot be merged (missing, damaged, or of other jobs).
    #[error(transparent)]
    Parts(#[from] petal_common::parts::MergeError),
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<petal_common::IoError> for Error {
    fn from(e: petal_common::IoError) -> Self {
        Error::Io { path: e.path, source: e.source }
    }
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}
