//! The crate's error type.

use std::fmt;
use std::path::PathBuf;

/// Errors of the `model` crate. Messages name the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An architecture or head configuration that cannot be built.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// An architecture name that is not known.
    #[error("unknown architecture {0:?} (known: densenet121/161/169/201, efficientnet_lite0/1/2, vgg11/13/16/19 and vgg11_bn/13_bn/16_bn/19_bn, resnet18/34/50/101/152, alexnet)")]
    UnknownArch(String),
    /// A libtorch operation failed.
    #[error("{context}: {source}")]
    Torch {
        /// What was being done.
        context: String,
        /// The libtorch error.
        #[source]
        source: tch::TchError,
    },
    /// A weight file whose tensors do not match the architecture.
    #[error("{}: weights do not match {arch}: {report}", path.display())]
    Keys {
        /// The weight file.
        path: PathBuf,
        /// The architecture it was checked against.
        arch: String,
        /// Missing, unexpected and mis-shaped keys.
        report: KeyReport,
    },
    /// A tensor of a dtype that cannot be a weight.
    #[error("{}: tensor {key:?} has dtype {dtype}, expected a floating-point or integer type", path.display())]
    DType {
        /// The weight file.
        path: PathBuf,
        /// The tensor name.
        key: String,
        /// Its dtype.
        dtype: String,
    },
    /// Reading or writing a weight file failed in the `checkpoint` crate (the message names the
    /// file once: the `checkpoint` crate's own messages mostly name it already).
    #[error("{}", with_path(path, source.as_ref()))]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An old PyTorch checkpoint whose architecture or head cannot be rebuilt.
    #[error("{}: {detail}", path.display())]
    Legacy {
        /// The checkpoint.
        path: PathBuf,
        /// What could not be rebuilt, with the expected and found shapes.
        detail: String,
    },
    /// A file-system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// `source`'s message, prefixed with `path` unless it already names it.
fn with_path(path: &std::path::Path, source: &(dyn std::error::Error + Send + Sync)) -> String {
    let text = source.to_string();
    let shown = path.display().to_string();
    if text.contains(&shown) {
        text
    } else {
        format!("{shown}: {text}")
    }
}

/// A tensor whose shape differs from the architecture's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// Variable name.
    pub key: String,
    /// Shape the architecture has.
    pub expected: Vec<i64>,
    /// Shape found in the file.
    pub found: Vec<i64>,
}

/// Every key problem found when matching a file against an architecture.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyReport {
    /// Keys the architecture needs that the file lacks.
    pub missing: Vec<String>,
    /// Keys in the file that the architecture does not have.
    pub unexpected: Vec<String>,
    /// Keys present in both with different shapes.
    pub mis_shaped: Vec<ShapeMismatch>,
}

impl KeyReport {
    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mis_shaped.is_empty()
    }
}

/// At most this many names of each kind are listed in messages (the rest are counted).
const LISTED: usize = 12;

fn listed(v: &[String]) -> String {
    let mut s = v.iter().take(LISTED).cloned().collect::<Vec<_>>().join(", ");
    if v.len() > LISTED {
        s.push_str(&format!(", ... and {} more", v.len() - LISTED));
    }
    s
}

impl fmt::Display for KeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("{} missing key(s): {}", self.missing.len(), listed(&self.missing)));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("{} unexpected key(s): {}", self.unexpected.len(), listed(&self.unexpected)));
        }
        if !self.mis_shaped.is_empty() {
            let v: Vec<String> = self.mis_shaped.iter().map(|m| format!("{} (expected {:?}, found {:?})", m.key, m.expected, m.found)).collect();
            parts.push(format!("{} mis-shaped key(s): {}", v.len(), listed(&v)));
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_error_names_its_file_once() {
        let path = PathBuf::from("/tmp/old.pth");
        let named = checkpoint::Error::Corrupt { path: path.clone(), detail: "truncated".into() };
        let e = Error::Checkpoint { path: path.clone(), source: Box::new(named) };
        assert_eq!(e.to_string(), "/tmp/old.pth: corrupt or malformed file: truncated");
        let unnamed = checkpoint::Error::Tensor("bad length".into());
        let e = Error::Checkpoint { path, source: Box::new(unnamed) };
        assert_eq!(e.to_string(), "/tmp/old.pth: invalid tensor: bad length");
    }
}
