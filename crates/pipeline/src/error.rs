//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong while configuring or running a job. Every variant that concerns a file names it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file cannot be read or is not a valid config.
    #[error("{}: {detail}", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// No dataset was named.
    #[error(
        "no dataset: pass --data <folder> (an ImageFolder with train/ valid/ [test/], or the official Oxford jpg/ + imagelabels.mat + setid.mat), \
         set `data` in the config, or run `cargo xtask pipeline` which downloads the Oxford 102 flowers"
    )]
    NoData,
    /// The run folder holds a finished run and neither overwriting nor resuming was asked for.
    #[error(
        "{} already holds a run; pass --overwrite to replace it, --resume to continue it, or choose another --name",
        path.display()
    )]
    RunExists {
        /// The run folder.
        path: PathBuf,
    },
    /// Image inputs that cannot be used (missing file, empty folder).
    #[error("{0}")]
    Inputs(String),
    /// A sweep trial failed.
    #[error("sweep trial {trial}: {detail}")]
    Trial {
        /// The trial id.
        trial: usize,
        /// What went wrong.
        detail: String,
    },
    /// The run folder is locked by another process.
    #[error(transparent)]
    Lock(#[from] petal_common::lock::LockError),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] petal_common::IoError),
    /// Dataset discovery or image caching failed.
    #[error(transparent)]
    Preprocess(#[from] preprocess::Error),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] train::Error),
    /// Prediction or evaluation failed.
    #[error(transparent)]
    Infer(#[from] infer::Error),
    /// The network or its device cannot be set up.
    #[error(transparent)]
    Model(#[from] model::Error),
    /// A checkpoint cannot be read, converted or written.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::Error),
    /// Drawing or writing a report file failed.
    #[error(transparent)]
    Report(#[from] report::Error),
    /// An input or output location (path, `file://` or `s3://` URL) cannot be reached.
    #[error(transparent)]
    Storage(#[from] petal_storage::Error),
    /// The parts of a sharded job cannot be merged (each shard to rerun is named).
    #[error(transparent)]
    Merge(#[from] petal_common::parts::MergeError),
}

impl Error {
    pub(crate) fn config(path: &std::path::Path, detail: impl std::fmt::Display) -> Self {
        Error::ConfigFile { path: path.to_path_buf(), detail: detail.to_string() }
    }
}
