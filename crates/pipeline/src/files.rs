//! The file commands behind `petal checkpoint convert` and `petal merge`: which reader or merger a
//! file calls for is decided here, so that a library user gets the same answers as the binary.

use std::path::{Path, PathBuf};

use model::legacy::{LegacyOptions, LegacyReport};

use crate::batch::{self, MergeOutcome};
use crate::Error;

/// What [`convert_checkpoint`] wrote.
#[derive(Debug)]
pub enum Converted {
    /// An old PyTorch checkpoint (no petal metadata) rebuilt into the project's format: what was
    /// found and assumed, and the written file's summary.
    Legacy(Box<LegacyReport>, checkpoint::Summary),
    /// A file with metadata (petal, safetensors) rewritten in the current format.
    Current(checkpoint::Summary),
}

/// Converts `input` (a PyTorch checkpoint of any era, or a safetensors file) into the project's
/// format at `output` (written atomically). Old checkpoints are completed by `legacy`.
pub fn convert_checkpoint(input: &Path, output: &Path, legacy: &LegacyOptions) -> Result<Converted, Error> {
    let imported = checkpoint::import(input)?;
    if imported.meta.is_none() {
        let report = model::legacy::convert_imported(imported, input, output, legacy)?;
        return Ok(Converted::Legacy(Box::new(report), checkpoint::inspect(output)?));
    }
    drop(imported);
    Ok(Converted::Current(checkpoint::convert(input, output)?))
}

/// What [`merge`] joined.
#[derive(Debug)]
pub enum Merged {
    /// The parts of a sharded `predict` output, joined into it.
    Output(MergeOutcome),
    /// The feature and activation caches with parts in a cache folder (`train --extract-only
    /// --shard`): those merged, and those that could not be, each with why (the others were merged
    /// all the same).
    Caches {
        /// The caches written.
        merged: Vec<train::shards::MergedCache>,
        /// The caches whose parts could not be joined.
        failed: Vec<(PathBuf, train::Error)>,
    },
}

impl Merged {
    /// An error naming every cache that could not be merged, if any.
    pub fn failures(&self) -> Option<Error> {
        let Merged::Caches { failed, .. } = self else { return None };
        let lines: Vec<String> = failed.iter().map(|(c, e)| format!("{}: {e}", c.display())).collect();
        (!failed.is_empty()).then(|| Error::Inputs(format!("{} cache(s) could not be merged:\n{}", failed.len(), lines.join("\n"))))
    }
}

/// Joins the shards' parts of `output`: every cache with parts in it when `output` is a folder,
/// else the parts of a prediction output (`<output>.parts/`, a path or URL).
pub fn merge(output: &str) -> Result<Merged, Error> {
    let dir = Path::new(output);
    if !dir.is_dir() {
        return Ok(Merged::Output(batch::merge(output)?));
    }
    let (mut merged, mut failed) = (Vec::new(), Vec::new());
    for (cache, r) in train::shards::merge_dir(dir)? {
        match r {
            Ok(m) => merged.push(m),
            Err(e) => failed.push((cache, e)),
        }
    }
    Ok(Merged::Caches { merged, failed })
}
