//! Checkpoints for petal: the project's own version-tagged file format, and safe import of
//! PyTorch and safetensors weight files.
//!
//! **Owns:** the on-disk format of trained networks ([`save`], [`load`], [`Checkpoint`],
//! [`Metadata`]), reading foreign weight files ([`import`]), and their summaries ([`inspect`],
//! [`convert`]). Pure Rust: it needs no libtorch and no Python, so `inspect` works anywhere.
//!
//! **Must never know:** models, layers or training. Architecture config, head config,
//! hyperparameters and metrics are opaque JSON owned by the model and train crates; tensors are
//! named byte blobs. Key remapping (e.g. DataParallel's `module.` prefix) belongs to the model
//! crate: names are kept exactly as found.
//!
//! # The format
//!
//! A checkpoint is a [safetensors](https://github.com/huggingface/safetensors) file. Its
//! `__metadata__` string map has one key, `"petal"`, whose value is the JSON of [`Metadata`]:
//! format name (`"petal.checkpoint"`) and `format_version {major, minor}`, writer version,
//! libtorch version, creation time, `arch` and `arch_config`, `classes` (folder, index, display
//! name), `preprocessing`, `head`, `hyperparameters`, `metrics`, the optimizer and RNG states'
//! JSON parts, `provenance`, `tensor_checksum` (`"crc32:<hex>"` of all tensors' bytes
//! concatenated in name order; readers also accept `"sha256:<hex>"`) and, since format 1.1,
//! `tensor_layout_checksum` (the same over every tensor's name, dtype and shape, see
//! [`tensor_layout_checksum`]; files of format 1.0 lack it and load without that check). Tensors are
//! little-endian, row-major and contiguous. Tensor names are free, except two reserved
//! prefixes: [`OPTIMIZER_PREFIX`] (`optimizer/…`, the optimizer's tensors) and [`RNG_PREFIX`]
//! (`rng/…`, RNG states as U8 tensors).
//!
//! Reading a checkpoint from Python needs only the `safetensors` package:
//!
//! ```python
//! import json
//! from safetensors import safe_open
//! with safe_open("model.petal", framework="pt") as f:     # or framework="numpy"
//!     meta = json.loads(f.metadata()["petal"])
//!     weights = {k: f.get_tensor(k) for k in f.keys() if not k.startswith(("optimizer/", "rng/"))}
//! class_to_idx = {c["folder"]: c["index"] for c in meta["classes"]}
//! ```
//!
//! # Compatibility contract
//!
//! * Every file written by any earlier format version loads in every later version. A minor
//!   version only adds optional metadata fields (older readers ignore them, newer readers
//!   default them). A major version change comes with a migration function in [`MIGRATIONS`]
//!   and a fixture file of the previous version committed under `tests/fixtures/format/`;
//!   the test suite loads every committed fixture.
//! * A file of a newer major version is refused with [`Error::NewerVersion`], whose message
//!   names the file's version and the newest version this build reads.
//! * Writes are atomic ([`save`]): a crash mid-save leaves the previous file intact.
//!
//! # Importing PyTorch files
//!
//! [`import`] reads the zip format (PyTorch ≥ 1.6), the legacy format (PyTorch ≤ 1.5,
//! including 0.4-era files), safetensors and this crate's own format. Pickles are interpreted as
//! data, never executed: only a whitelist of rebuild functions (`torch._utils._rebuild_tensor`,
//! `_rebuild_tensor_v2`, `_rebuild_parameter`, `collections.OrderedDict`, typed storage classes,
//! ...) is understood, like PyTorch's `weights_only=True`. Anything else, such as a pickled
//! `nn.Module`, is reported by class name in [`Imported::skipped`]; for a pickled module, its
//! parameters and buffers are recovered from its saved state when no state dict is present, and
//! its module tree (class names, plain attributes such as `in_features` or `p`, children in order)
//! is returned as data in [`Imported::modules`], so callers can rebuild a head without running it.
//!
//! # Robustness
//!
//! Truncated or damaged files, wrong magic numbers, absurd declared sizes and pickle bombs give
//! an [`Error`] naming the file, never a panic. No size read from a file is used to allocate
//! before it has been checked against the file's length; tensors materialised from strided
//! views are bounded to 4× the file size plus 256 MiB.

#![warn(missing_docs)]

pub mod chunks;
mod error;
mod format;
mod module_tree;
mod pickle;
mod tensor;
mod torch;
mod zip;

pub use error::Error;
pub use format::{
    is_reserved, load, load_bytes, save, tensor_checksum, tensor_layout_checksum, Checkpoint, ClassEntry, FormatVersion, HoldoutCut, Interpolation,
    Metadata, Migration, Preprocessing, TrainedOn, CHECKSUM_ALGORITHM, FORMAT_MAJOR, FORMAT_MINOR, FORMAT_NAME, METADATA_KEY, MIGRATIONS,
    OPTIMIZER_PREFIX, RNG_PREFIX, WRITER,
};
pub use module_tree::PickledModule;
pub use tensor::{Bytes, DType, TensorData, TensorMap};

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The kind of file a set of weights came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SourceFormat {
    /// This crate's own format, with the version the file was written with.
    Petal {
        /// The file's format version.
        version: FormatVersion,
    },
    /// A plain safetensors file.
    Safetensors,
    /// `torch.save` zip format (PyTorch ≥ 1.6).
    PytorchZip,
    /// `torch.save` legacy format (PyTorch ≤ 1.5, `_use_new_zipfile_serialization=False`).
    PytorchLegacy,
}

impl std::fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceFormat::Petal { version } => write!(f, "petal checkpoint, format {version}"),
            SourceFormat::Safetensors => f.write_str("safetensors"),
            SourceFormat::PytorchZip => f.write_str("PyTorch zip format (torch.save, PyTorch >= 1.6)"),
            SourceFormat::PytorchLegacy => f.write_str("PyTorch legacy format (PyTorch <= 1.5)"),
        }
    }
}

/// Weights read from any supported file.
#[derive(Debug, Clone)]
pub struct Imported {
    /// What kind of file it was.
    pub source: SourceFormat,
    /// The model's tensors (a training checkpoint's `state_dict`/`model_state_dict`; for a
    /// petal checkpoint, everything but the reserved optimizer/RNG prefixes). Names as found.
    pub tensors: TensorMap,
    /// The `class_to_idx` mapping, when the file has one.
    pub class_to_idx: Option<BTreeMap<String, usize>>,
    /// Architecture name (`arch` entry), when the file has one.
    pub arch: Option<String>,
    /// Other plain-data entries (epochs, learning rate, hidden sizes, ...) as JSON. For a petal
    /// checkpoint: its metadata fields.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Human-readable notes on what was not imported (pickled objects by class name, optimizer
    /// state, tensors of unsupported dtypes, ...).
    pub skipped: Vec<String>,
    /// The full metadata, for petal checkpoints.
    pub meta: Option<Metadata>,
    /// Pickled `nn.Module` objects read as data (class names, attributes such as `in_features`
    /// or `p`, children), by entry name: `"classifier"` for the seed's checkpoint dict entry,
    /// `""` when the whole file is a pickled module (`torch.save(model)`).
    pub modules: BTreeMap<String, PickledModule>,
}

impl Imported {
    /// Builds a petal checkpoint from imported weights: `arch`, classes (ordered by index, no
    /// display names), the extra entries as `hyperparameters`, and the origin in `provenance`.
    pub fn into_checkpoint(self, origin: &str) -> Checkpoint {
        if let Some(meta) = self.meta {
            return Checkpoint { meta, tensors: self.tensors };
        }
        let mut classes: Vec<ClassEntry> =
            self.class_to_idx.unwrap_or_default().into_iter().map(|(folder, index)| ClassEntry { folder, index, name: None }).collect();
        classes.sort_by(|a, b| a.index.cmp(&b.index).then_with(|| a.folder.cmp(&b.folder)));
        let meta = Metadata {
            arch: self.arch.unwrap_or_default(),
            classes,
            hyperparameters: serde_json::Value::Object(self.extra),
            provenance: serde_json::json!({
                "converted_from": origin,
                "source_format": self.source,
                "skipped": self.skipped,
            }),
            ..Metadata::default()
        };
        Checkpoint { meta, tensors: self.tensors }
    }
}

/// Files at least this large are memory-mapped rather than read.
const MAP_THRESHOLD: u64 = 1 << 20;

/// The file's bytes as a shared buffer: memory-mapped (large files) or read (small ones).
///
/// Mapping is what keeps importing a large checkpoint at about one file size of memory: tensors
/// that are contiguous in the file borrow from the map instead of being copied, and writing
/// them out ([`save`]) streams from it. The map is read-only and private to this process; petal
/// replaces files by rename ([`save`] is atomic), which leaves a mapped file intact. A file
/// truncated in place by another program while it is mapped would end this process (SIGBUS), as
/// with any memory-mapped reader.
pub(crate) fn map_file(path: &Path) -> Result<tensor::SharedBuf, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let len = file.metadata().map_err(|e| Error::io(path, "reading the size of", e))?.len();
    if len < MAP_THRESHOLD {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, "reading", e))?;
        return Ok(std::sync::Arc::new(bytes));
    }
    // SAFETY: the map is read-only; see the doc comment for the (documented) truncation caveat.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, "memory-mapping", e))?;
    Ok(std::sync::Arc::new(map))
}

/// Reads the weights of any supported file: petal checkpoint, safetensors, PyTorch zip,
/// PyTorch legacy. Never executes code from the file.
///
/// Large files are memory-mapped and their contiguous tensors borrow from the map
/// ([`TensorData::bytes`] is then a shared range), so importing a checkpoint needs about one
/// file size of memory, not two or three.
pub fn import(path: &Path) -> Result<Imported, Error> {
    let buf = map_file(path)?;
    import_source(tensor::Source { data: (*buf).as_ref(), shared: Some(&buf) }, path)
}

/// [`import`] on bytes already in memory (tensors are copied out); `path` is only used in
/// messages.
pub fn import_bytes(data: &[u8], path: &Path) -> Result<Imported, Error> {
    import_source(tensor::Source::plain(data), path)
}

fn import_source(src: tensor::Source<'_>, path: &Path) -> Result<Imported, Error> {
    let data = src.data;
    let from_torch = |t: torch::TorchImport| Imported {
        source: t.source,
        tensors: t.tensors,
        class_to_idx: t.class_to_idx,
        arch: t.arch,
        extra: t.extra,
        skipped: t.skipped,
        meta: None,
        modules: t.modules,
    };
    if zip::is_zip(data) {
        return torch::read_zip(src).map(from_torch).map_err(|f| f.at(path));
    }
    if torch::is_legacy(data) {
        return torch::read_legacy(src).map(from_torch).map_err(|f| f.at(path));
    }
    if data.len() >= 262 && &data[257..262] == b"ustar" {
        return Err(Error::unsupported(path, "tar archive: the PyTorch < 0.1.10 tar format is not supported"));
    }
    if data.len() >= 9 && data[8] == b'{' {
        let (info, tensors, mut skipped) = format::read_safetensors(src, path)?;
        if let Some(json) = info.get(METADATA_KEY) {
            if !skipped.is_empty() {
                return Err(Error::unsupported(path, format!("tensor {}", skipped.join(", "))));
            }
            let ckpt = format::from_parts(json, tensors, path)?;
            return Ok(from_checkpoint(ckpt));
        }
        let extra = info.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        skipped.sort();
        return Ok(Imported {
            source: SourceFormat::Safetensors,
            tensors,
            class_to_idx: None,
            arch: None,
            extra,
            skipped,
            meta: None,
            modules: BTreeMap::new(),
        });
    }
    if data.first() == Some(&0x80) {
        return Err(Error::unsupported(path, "a pickle without PyTorch's magic number: not a torch.save file"));
    }
    let head: Vec<String> = data.iter().take(8).map(|b| petal_common::hex(&[*b])).collect();
    Err(Error::unsupported(
        path,
        format!("unknown file type (first bytes {}): expected a petal checkpoint, safetensors, or a PyTorch .pth/.pt file", head.join(" ")),
    ))
}

fn from_checkpoint(ckpt: Checkpoint) -> Imported {
    let meta = ckpt.meta;
    let mut tensors = ckpt.tensors;
    let mut skipped = Vec::new();
    for prefix in [OPTIMIZER_PREFIX, RNG_PREFIX] {
        let n = tensors.keys().filter(|k| k.starts_with(prefix)).count();
        if n > 0 {
            skipped.push(format!("{n} tensors under {prefix} (training state, not model weights)"));
        }
    }
    tensors.retain(|k, _| !is_reserved(k));
    let class_to_idx = if meta.classes.is_empty() { None } else { Some(meta.classes.iter().map(|c| (c.folder.clone(), c.index)).collect()) };
    let extra = match serde_json::to_value(&meta) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    Imported {
        source: SourceFormat::Petal { version: meta.format_version },
        tensors,
        class_to_idx,
        arch: if meta.arch.is_empty() { None } else { Some(meta.arch.clone()) },
        extra,
        skipped,
        meta: Some(meta),
        modules: BTreeMap::new(),
    }
}

/// One tensor in a [`Summary`].
#[derive(Debug, Clone, Serialize)]
pub struct TensorSummary {
    /// Name as stored.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<usize>,
}

/// What [`inspect`] reports about a file. `Display` gives the human form, `Serialize` the JSON
/// form (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// File inspected.
    pub path: String,
    /// Its size in bytes.
    pub file_bytes: u64,
    /// Its format.
    pub source: SourceFormat,
    /// Architecture name, if recorded.
    pub arch: Option<String>,
    /// Number of classes, if a class mapping is present.
    pub class_count: Option<usize>,
    /// Number of model tensors.
    pub tensor_count: usize,
    /// Total elements over the model tensors.
    pub element_count: u64,
    /// Total bytes over the model tensors.
    pub tensor_bytes: u64,
    /// Number of tensors per dtype.
    pub dtypes: BTreeMap<DType, usize>,
    /// Every model tensor, in name order.
    pub tensors: Vec<TensorSummary>,
    /// Full metadata of a petal checkpoint.
    pub metadata: Option<Metadata>,
    /// Other plain-data entries of a PyTorch checkpoint.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// What was not imported.
    pub skipped: Vec<String>,
    /// Pickled modules read as data (see [`Imported::modules`]).
    pub modules: BTreeMap<String, PickledModule>,
}

impl Summary {
    fn new(path: &Path, file_bytes: u64, imp: &Imported) -> Self {
        let mut dtypes = BTreeMap::new();
        for t in imp.tensors.values() {
            *dtypes.entry(t.dtype).or_insert(0) += 1;
        }
        Summary {
            path: path.display().to_string(),
            file_bytes,
            source: imp.source,
            arch: imp.arch.clone(),
            class_count: imp.class_to_idx.as_ref().map(|m| m.len()),
            tensor_count: imp.tensors.len(),
            element_count: imp.tensors.values().map(|t| t.numel() as u64).sum(),
            tensor_bytes: imp.tensors.values().map(|t| t.bytes.len() as u64).sum(),
            dtypes,
            tensors: imp.tensors.iter().map(|(k, t)| TensorSummary { name: k.clone(), dtype: t.dtype, shape: t.shape.clone() }).collect(),
            metadata: imp.meta.clone(),
            extra: if imp.meta.is_some() { serde_json::Map::new() } else { imp.extra.clone() },
            skipped: imp.skipped.clone(),
            modules: imp.modules.clone(),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "file:     {} ({} bytes)", self.path, self.file_bytes)?;
        writeln!(f, "format:   {}", self.source)?;
        if let Some(a) = &self.arch {
            writeln!(f, "arch:     {a}")?;
        }
        if let Some(n) = self.class_count {
            writeln!(f, "classes:  {n}")?;
        }
        let dt: Vec<String> = self.dtypes.iter().map(|(d, n)| format!("{d} x{n}")).collect();
        writeln!(f, "tensors:  {} ({} elements, {} bytes; {})", self.tensor_count, self.element_count, self.tensor_bytes, dt.join(", "))?;
        if let Some(m) = &self.metadata {
            writeln!(f, "written:  {} by {}", m.created_utc, m.writer)?;
            if let Some(v) = &m.libtorch_version {
                writeln!(f, "libtorch: {v}")?;
            }
            if let Some(p) = &m.preprocessing {
                writeln!(
                    f,
                    "preprocessing: resize {} -> crop {} ({:?}), mean {:?}, std {:?}{}",
                    p.resize_size,
                    p.input_size,
                    p.interpolation,
                    p.mean,
                    p.std,
                    if m.provenance["preprocessing_assumed"] == true { " [assumed: not recorded in the source file]" } else { "" }
                )?;
            }
            for (k, v) in [("head", &m.head), ("hyperparameters", &m.hyperparameters), ("metrics", &m.metrics)] {
                if !v.is_null() {
                    writeln!(f, "{k}: {v}")?;
                }
            }
            if let Some(inference) = &m.inference {
                // The inference advice (TTA, int8 and its measured accuracy), without the int8
                // calibration's per-tensor ranges and per-convolution weight shifts.
                let mut shown = inference.clone();
                if let Some(int8) = shown.get_mut("int8").and_then(|v| v.as_object_mut()) {
                    if let Some(n) = int8.remove("ranges").and_then(|r| r.as_object().map(|o| o.len())) {
                        int8.insert("ranges".into(), serde_json::Value::String(format!("{n} tensors")));
                    }
                    if let Some(n) = int8.remove("weight_shifts").and_then(|r| r.as_object().map(|o| o.len())) {
                        int8.insert("weight_shifts".into(), serde_json::Value::String(format!("{n} convolutions")));
                    }
                }
                writeln!(f, "inference: {shown}")?;
            }
            writeln!(f, "checksum: {}", m.tensor_checksum)?;
            if !m.tensor_layout_checksum.is_empty() {
                writeln!(f, "layout checksum: {}", m.tensor_layout_checksum)?;
            }
        }
        for (k, v) in &self.extra {
            writeln!(f, "extra:    {k} = {v}")?;
        }
        for s in &self.skipped {
            writeln!(f, "skipped:  {s}")?;
        }
        for (name, m) in &self.modules {
            writeln!(f, "module:   {} = {m}", if name.is_empty() { "<root>" } else { name })?;
        }
        let w = self.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for t in &self.tensors {
            writeln!(f, "  {:w$}  {:4}  {:?}", t.name, t.dtype.name(), t.shape)?;
        }
        Ok(())
    }
}

/// Summarises any supported file (format, tensors, classes, metadata, what was skipped).
pub fn inspect(path: &Path) -> Result<Summary, Error> {
    let buf = map_file(path)?;
    let data: &[u8] = (*buf).as_ref();
    let imp = import_source(tensor::Source { data, shared: Some(&buf) }, path)?;
    Ok(Summary::new(path, data.len() as u64, &imp))
}

/// Converts any supported file (typically a PyTorch checkpoint, with its `class_to_idx` if
/// present) into a petal checkpoint at `output`, written atomically, and returns the summary of
/// the written file. A petal checkpoint given as input is rewritten in the current format
/// version, optimizer and RNG state included.
pub fn convert(input: &Path, output: &Path) -> Result<Summary, Error> {
    let imp = import(input)?;
    let ckpt = if imp.meta.is_some() {
        load(input)?
    } else {
        let origin = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        imp.into_checkpoint(&origin)
    };
    save(output, &ckpt)?;
    inspect(output)
}

#[doc(hidden)]
/// Fuzzing entry point: runs the pickle reader on arbitrary bytes.
pub fn fuzz_pickle(data: &[u8]) -> bool {
    pickle::parse(data).is_ok()
}
