//! What the two caches of cached training have in common: rows in, rows out. The feature cache
//! (`crate::features::FeatureCache`, pooled features, a petal checkpoint) and the activation cache
//! (`crate::activations::ActivationCache`, activation maps, a container file) each hold one row per
//! image of a split, in split order, with the images' labels and the provenance key they were
//! computed from. Sharded extraction and the merge of its parts (`crate::shards`) are written once
//! against [`RowCache`]; a new cache kind implements it and is sharded and merged for free.

use std::borrow::Cow;
use std::path::Path;

use checkpoint::DType;
use tch::Tensor;

use crate::Error;

/// One cache file's rows, read back for a merge.
pub(crate) struct Rows<'b> {
    /// Element type of the rows.
    pub dtype: DType,
    /// One row's shape.
    pub shape: Vec<usize>,
    /// Each image's label.
    pub labels: Vec<i64>,
    /// The rows, one after another.
    pub data: Cow<'b, [u8]>,
    /// The architecture the rows were computed with, where the format records it.
    pub arch: String,
}

impl Rows<'_> {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size_in_bytes()
    }

    /// Row `i`, when there is one.
    pub fn row(&self, i: usize) -> Option<&[u8]> {
        let rb = self.row_bytes();
        if i >= self.labels.len() {
            return None;
        }
        self.data.get(i * rb..(i + 1) * rb)
    }
}

/// A cache of one row per image (see the module docs).
pub(crate) trait RowCache {
    /// The kind's name: the file-name prefix, the manifest's `kind` (`features`, `activations`).
    const NAME: &'static str;
    /// The extension of its files and of its parts (`safetensors`, `pact`).
    const EXTENSION: &'static str;

    /// Writes rows `x` `[N, ...]` and labels `y` `[N]` computed by architecture `arch` from `key`
    /// to `path`, atomically.
    fn write(path: &Path, arch: &str, key: &serde_json::Value, x: &Tensor, y: &Tensor) -> Result<(), Error>;

    /// The rows of the file whose bytes are `bytes` (`path` names it in errors), checked against
    /// the key it must have been computed from.
    fn read_rows<'b>(bytes: &'b [u8], path: &Path, key: &serde_json::Value) -> Result<Rows<'b>, Error>;

    /// Writes `labels.len()` rows, row `i` being `row(i)`, of `layout` (element type and one
    /// row's shape), with their labels and `key`, to `path`, atomically: the file [`RowCache::write`]
    /// writes for the same rows.
    fn write_rows<'r>(
        path: &Path,
        arch: &str,
        key: &serde_json::Value,
        layout: (DType, &[usize]),
        labels: &[i64],
        row: &dyn Fn(usize) -> &'r [u8],
    ) -> Result<(), Error>;
}
