//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong reading, importing or writing a checkpoint.
///
/// Every variant that concerns a file names it; messages say what is wrong and, where it
/// helps, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused a read or write.
    #[error("{path}: {action}: {source}")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// What was being done ("reading", "renaming temp file", ...).
        action: &'static str,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is damaged or is not what it claims to be (truncated, flipped bytes, bad magic,
    /// impossible sizes, malformed pickle, ...).
    #[error("{path}: corrupt or malformed file: {detail}")]
    Corrupt {
        /// File concerned.
        path: PathBuf,
        /// What exactly is wrong.
        detail: String,
    },
    /// The file's format is recognised but this reader does not support it (or it is not a
    /// weight file at all).
    #[error("{path}: unsupported: {detail}")]
    Unsupported {
        /// File concerned.
        path: PathBuf,
        /// What is unsupported.
        detail: String,
    },
    /// The file was written by a newer major version of the format than this reader knows.
    #[error(
        "{path}: written with checkpoint format version {file_major}.{file_minor}, but this build reads \
         format versions up to {supported_major}.x; upgrade petal to read it"
    )]
    NewerVersion {
        /// File concerned.
        path: PathBuf,
        /// Major version found in the file.
        file_major: u32,
        /// Minor version found in the file.
        file_minor: u32,
        /// Highest major version this build reads.
        supported_major: u32,
    },
    /// The stored checksum over the tensor bytes does not match the bytes read.
    #[error("{path}: tensor data checksum mismatch (stored {stored}, computed {computed}): the file is damaged")]
    Checksum {
        /// File concerned.
        path: PathBuf,
        /// Checksum recorded in the metadata.
        stored: String,
        /// Checksum of the bytes actually read.
        computed: String,
    },
    /// The stored checksum over the tensors' names, dtypes and shapes (format ≥ 1.1) does not
    /// match the tensors read: tensors were renamed, swapped, reshaped or retyped.
    #[error("{path}: tensor names, dtypes or shapes do not match their checksum (stored {stored}, computed {computed}): the file is damaged")]
    LayoutChecksum {
        /// File concerned.
        path: PathBuf,
        /// Layout checksum recorded in the metadata.
        stored: String,
        /// Layout checksum of the tensors actually read.
        computed: String,
    },
    /// A tensor is inconsistent in itself (byte length vs shape and dtype, unsupported
    /// conversion).
    #[error("invalid tensor: {0}")]
    Tensor(String),
    /// The checkpoint given to [`crate::save`] is not valid (e.g. a tensor name that cannot be
    /// stored).
    #[error("{path}: cannot save: {detail}")]
    InvalidCheckpoint {
        /// Target file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl From<petal_common::IoError> for Error {
    fn from(e: petal_common::IoError) -> Self {
        Error::Io { path: e.path, action: e.action, source: e.source }
    }
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, action: &'static str, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), action, source }
    }
    pub(crate) fn corrupt(path: &std::path::Path, detail: impl Into<String>) -> Self {
        Error::Corrupt { path: path.to_path_buf(), detail: detail.into() }
    }
    pub(crate) fn unsupported(path: &std::path::Path, detail: impl Into<String>) -> Self {
        Error::Unsupported { path: path.to_path_buf(), detail: detail.into() }
    }
}
