//! The project's own checkpoint format: a safetensors container whose `__metadata__` holds
//! one key, [`METADATA_KEY`] (`"petal"`), mapping to the JSON of [`Metadata`].

use crate::{DType, Error, TensorData, TensorMap};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Value of [`Metadata::format`] in every file of this format.
pub const FORMAT_NAME: &str = "petal.checkpoint";
/// Major format version written by this build. Readers of major `M` read every file of major
/// `≤ M` (via [`MIGRATIONS`]) and refuse files of major `> M`.
pub const FORMAT_MAJOR: u32 = 1;
/// Minor format version written by this build. Minor versions only add optional metadata
/// fields; any reader of the same major reads any minor (unknown fields are ignored, missing
/// ones take their defaults).
///
/// * 1.0: `tensor_checksum` over the tensors' bytes only.
/// * 1.1: adds `tensor_layout_checksum` over the tensors' names, dtypes and shapes, so a file
///   whose tensors were renamed, swapped or reshaped is refused (see [`tensor_layout_checksum`]).
pub const FORMAT_MINOR: u32 = 1;
/// First minor version of major 1 whose files must carry `tensor_layout_checksum`.
const LAYOUT_CHECKSUM_SINCE: FormatVersion = FormatVersion { major: 1, minor: 1 };
/// Key of the metadata JSON inside the safetensors `__metadata__` string map.
pub const METADATA_KEY: &str = "petal";
/// Reserved tensor-name prefix for optimizer state (e.g. `optimizer/state.0.exp_avg`).
pub const OPTIMIZER_PREFIX: &str = "optimizer/";
/// Reserved tensor-name prefix for random-number-generator state, stored as U8 tensors
/// (e.g. `rng/torch_cpu`).
pub const RNG_PREFIX: &str = "rng/";
/// The writer string stamped into every file by [`save`].
pub const WRITER: &str = concat!("petal-checkpoint ", env!("CARGO_PKG_VERSION"));

/// A `major.minor` format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct FormatVersion {
    /// Incompatible layout changes; older majors are migrated on load.
    pub major: u32,
    /// Backwards-compatible additions.
    pub minor: u32,
}

impl std::fmt::Display for FormatVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One class: the dataset folder name, its output index, and an optional display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassEntry {
    /// Folder (label) name as in the dataset, e.g. `"21"`; PyTorch's `class_to_idx` key.
    pub folder: String,
    /// Index of the class in the network's output.
    pub index: usize,
    /// Human-readable name, e.g. `"fire lily"`.
    #[serde(default)]
    pub name: Option<String>,
}

/// Interpolation used when resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (torchvision's default).
    #[default]
    Bilinear,
    /// Bicubic.
    Bicubic,
}

/// The evaluation preprocessing a network expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Side of the square network input (center crop), e.g. 224.
    pub input_size: u32,
    /// Shorter side after resizing, before cropping, e.g. 256.
    pub resize_size: u32,
    /// Per-channel mean subtracted after scaling to [0, 1].
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by.
    pub std: Vec<f32>,
    /// Resize interpolation.
    #[serde(default)]
    pub interpolation: Interpolation,
}

/// What a trained checkpoint's weights saw, stored under `provenance.trained_on` (written by the
/// train crate; absent from checkpoints of other origins). Evaluation uses it to warn when asked
/// to score images the checkpoint trained on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainedOn {
    /// Whole splits trained on (`["train"]`).
    pub splits: Vec<String>,
    /// Further images trained on, by path relative to the dataset root (a final fit's selection
    /// part).
    pub images: Vec<String>,
    /// The split (or part of one) the epoch was chosen on, if any.
    pub selected_on: Option<String>,
    /// The cut of the validation split into a selection part and a held-out part, if any.
    pub holdout: Option<HoldoutCut>,
    /// Trained on train plus the selection part for the epoch count chosen before (a final fit).
    pub final_fit: bool,
}

/// A holdout cut as [`TrainedOn`] records it (see `preprocess::Holdout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutCut {
    /// The split cut (`valid`).
    pub split: String,
    /// Fraction of each class held out.
    pub fraction: f64,
    /// Seed of the cut.
    pub seed: u64,
}

impl TrainedOn {
    /// The key under `provenance`.
    pub const KEY: &'static str = "trained_on";

    /// The record of `meta`, if it has one that reads.
    pub fn of(meta: &Metadata) -> Option<TrainedOn> {
        meta.provenance.get(Self::KEY).and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// Whether a sample of split `split` at `rel` (relative to the dataset root) was trained on.
    pub fn contains(&self, split: &str, rel: &str) -> bool {
        self.splits.iter().any(|s| s == split) || self.images.iter().any(|i| i == rel)
    }
}

/// Typed metadata of a checkpoint. The stage crates own the schemas of the JSON-valued fields
/// (`arch_config`, `head`, `hyperparameters`, `metrics`, `optimizer`, `rng`); this crate only
/// stores them.
///
/// `format`, `format_version`, `writer`, `created_utc` and `tensor_checksum` are stamped by
/// [`save`] (whatever the caller put there is replaced); [`load`] returns them as found in the
/// file, so `format_version` tells which version the file was written with even after migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Format version the file was written with.
    pub format_version: FormatVersion,
    /// Crate and version that wrote the file (see [`WRITER`]).
    pub writer: String,
    /// libtorch version used for training, if any (set by the caller; this crate does not link
    /// libtorch).
    pub libtorch_version: Option<String>,
    /// Creation time, RFC 3339 UTC (`2025-01-31T12:00:00Z`).
    pub created_utc: String,
    /// Architecture name, e.g. `"densenet121"`.
    pub arch: String,
    /// Architecture configuration (schema owned by the model crate).
    pub arch_config: serde_json::Value,
    /// Classes in output order.
    pub classes: Vec<ClassEntry>,
    /// Evaluation preprocessing.
    pub preprocessing: Option<Preprocessing>,
    /// Classifier head configuration (schema owned by the model crate).
    pub head: serde_json::Value,
    /// Training hyperparameters (schema owned by the train crate).
    pub hyperparameters: serde_json::Value,
    /// Training/validation metrics (schema owned by the train crate).
    pub metrics: serde_json::Value,
    /// Optimizer state's non-tensor part; its tensors are stored under [`OPTIMIZER_PREFIX`].
    pub optimizer: Option<serde_json::Value>,
    /// RNG state's non-tensor part; its byte blobs are U8 tensors under [`RNG_PREFIX`].
    pub rng: Option<serde_json::Value>,
    /// Where the weights came from (e.g. set by [`crate::convert`]); free-form JSON.
    pub provenance: serde_json::Value,
    /// How to run the network at inference (schema owned by the infer crate, e.g. the recommended
    /// test-time augmentation measured on a validation split); absent in files that record none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference: Option<serde_json::Value>,
    /// `"<algorithm>:<hex>"` over the tensor bytes, tensors taken in name order (see
    /// [`tensor_checksum`]).
    pub tensor_checksum: String,
    /// `"<algorithm>:<hex>"` over the tensors' names, dtypes and shapes, in name order (see
    /// [`tensor_layout_checksum`]); empty in files of format 1.0, which did not record it.
    /// Together with `tensor_checksum` it covers every tensor's name, dtype, shape and bytes.
    pub tensor_layout_checksum: String,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            format: FORMAT_NAME.to_owned(),
            format_version: FormatVersion { major: FORMAT_MAJOR, minor: FORMAT_MINOR },
            writer: WRITER.to_owned(),
            libtorch_version: None,
            created_utc: String::new(),
            arch: String::new(),
            arch_config: serde_json::Value::Null,
            classes: Vec::new(),
            preprocessing: None,
            head: serde_json::Value::Null,
            hyperparameters: serde_json::Value::Null,
            metrics: serde_json::Value::Null,
            optimizer: None,
            rng: None,
            provenance: serde_json::Value::Null,
            inference: None,
            tensor_checksum: String::new(),
            tensor_layout_checksum: String::new(),
        }
    }
}

/// The project's own checkpoint: metadata plus named tensors (model weights, and optionally
/// optimizer and RNG state under the reserved prefixes).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    /// Metadata.
    pub meta: Metadata,
    /// All tensors, including those under [`OPTIMIZER_PREFIX`] and [`RNG_PREFIX`].
    pub tensors: TensorMap,
}

impl Checkpoint {
    /// `class_to_idx` as PyTorch's ImageFolder would give it.
    pub fn class_to_idx(&self) -> BTreeMap<String, usize> {
        self.meta.classes.iter().map(|c| (c.folder.clone(), c.index)).collect()
    }

    /// Sets display names from a folder → name map (e.g. Udacity's `cat_to_name.json`);
    /// returns how many classes got a name. Classes missing from the map keep theirs.
    pub fn set_class_names(&mut self, names: &BTreeMap<String, String>) -> usize {
        let mut n = 0;
        for c in &mut self.meta.classes {
            if let Some(name) = names.get(&c.folder) {
                c.name = Some(name.clone());
                n += 1;
            }
        }
        n
    }

    /// The model's tensors: every tensor not under a reserved prefix.
    pub fn model_tensors(&self) -> impl Iterator<Item = (&String, &TensorData)> {
        self.tensors.iter().filter(|(k, _)| !is_reserved(k))
    }
}

/// True for tensor names under a reserved prefix ([`OPTIMIZER_PREFIX`], [`RNG_PREFIX`]).
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(OPTIMIZER_PREFIX) || name.starts_with(RNG_PREFIX)
}

/// A migration upgrades metadata JSON and tensors from major version `i + 1` to `i + 2`
/// (the function at index `i`).
pub type Migration = fn(&mut serde_json::Map<String, serde_json::Value>, &mut TensorMap) -> Result<(), String>;

/// The migration chain. Invariant (checked at compile time): one migration per major step, so
/// any file of an older major is brought to [`FORMAT_MAJOR`] by running the tail of this list.
/// Adding a major version means appending a function here and committing a fixture file
/// written by the previous version under `tests/fixtures/format/`.
pub const MIGRATIONS: &[Migration] = &[];
const _: () = assert!(MIGRATIONS.len() as u32 + 1 == FORMAT_MAJOR);

/// Checksum algorithm written by this build.
pub const CHECKSUM_ALGORITHM: &str = "crc32";

/// Checksum over the tensor bytes: the tensors' bytes concatenated in name order, hashed with
/// `algorithm` (`"sha256"` or `"crc32"`), as `"<algorithm>:<lowercase hex>"`.
pub fn tensor_checksum(tensors: &TensorMap, algorithm: &str) -> Option<String> {
    match algorithm {
        "sha256" => {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            for t in tensors.values() {
                h.update(&t.bytes);
            }
            let d = h.finalize();
            Some(format!("sha256:{}", petal_common::hex(&d)))
        }
        "crc32" => {
            let mut h = crc32fast::Hasher::new();
            for t in tensors.values() {
                h.update(&t.bytes);
            }
            Some(format!("crc32:{:08x}", h.finalize()))
        }
        _ => None,
    }
}

/// Checksum over the tensors' names, dtypes and shapes, tensors in name order, hashed with
/// `algorithm` (`"sha256"` or `"crc32"`), as `"<algorithm>:<lowercase hex>"`. Each tensor
/// contributes its name's byte length (u64 little-endian) and UTF-8 bytes, its dtype name
/// (length-prefixed the same way), its number of dimensions and each dimension (u64 LE), so no
/// two different layouts hash the same input. With [`tensor_checksum`], whose byte stream is cut
/// into tensors by the lengths these shapes imply, every tensor's name, dtype, shape and bytes
/// are covered.
pub fn tensor_layout_checksum(tensors: &TensorMap, algorithm: &str) -> Option<String> {
    let mut text = Vec::new();
    for (name, t) in tensors {
        for part in [name.as_bytes(), t.dtype.name().as_bytes()] {
            text.extend_from_slice(&(part.len() as u64).to_le_bytes());
            text.extend_from_slice(part);
        }
        text.extend_from_slice(&(t.shape.len() as u64).to_le_bytes());
        for d in &t.shape {
            text.extend_from_slice(&(*d as u64).to_le_bytes());
        }
    }
    match algorithm {
        "sha256" => Some(format!("sha256:{}", petal_common::sha256_hex(&text))),
        "crc32" => Some(format!("crc32:{:08x}", crc32fast::hash(&text))),
        _ => None,
    }
}

struct View<'a>(&'a TensorData);

impl safetensors::View for View<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        self.0.dtype.to_safetensors()
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0.bytes)
    }
    fn data_len(&self) -> usize {
        self.0.bytes.len()
    }
}

/// Writes `ckpt` to `path` atomically (temp file in the same directory, fsync, rename, fsync of
/// the directory): readers see either the previous file or the complete new one.
///
/// The format fields of the metadata are stamped here (see [`Metadata`]).
pub fn save(path: &Path, ckpt: &Checkpoint) -> Result<(), Error> {
    let invalid = |detail: String| Error::InvalidCheckpoint { path: path.to_path_buf(), detail };
    for (name, t) in &ckpt.tensors {
        if name == "__metadata__" {
            return Err(invalid("a tensor may not be named \"__metadata__\"".into()));
        }
        t.check().map_err(|e| invalid(format!("tensor {name:?}: {e}")))?;
    }
    let mut meta = ckpt.meta.clone();
    meta.format = FORMAT_NAME.to_owned();
    meta.format_version = FormatVersion { major: FORMAT_MAJOR, minor: FORMAT_MINOR };
    meta.writer = WRITER.to_owned();
    meta.created_utc = petal_common::time::now_rfc3339();
    meta.tensor_checksum = tensor_checksum(&ckpt.tensors, CHECKSUM_ALGORITHM).unwrap_or_default();
    meta.tensor_layout_checksum = tensor_layout_checksum(&ckpt.tensors, CHECKSUM_ALGORITHM).unwrap_or_default();
    let json = serde_json::to_string(&meta).map_err(|e| invalid(format!("metadata: {e}")))?;
    let info: HashMap<String, String> = [(METADATA_KEY.to_owned(), json)].into_iter().collect();
    petal_common::write_atomic_with(path, |tmp| {
        let views = ckpt.tensors.iter().map(|(k, t)| (k.as_str(), View(t)));
        safetensors::serialize_to_file(views, Some(info), tmp).map_err(|e| match e {
            safetensors::SafeTensorError::IoError(io) => Error::io(tmp, "writing", io),
            other => invalid(format!("safetensors: {other}")),
        })
    })?;
    tracing::debug!(path = %path.display(), tensors = ckpt.tensors.len(), "checkpoint saved");
    Ok(())
}

/// Reads a checkpoint written by this or any earlier format version (older majors are migrated),
/// verifying the tensor checksum. Files of a newer major version are refused with
/// [`Error::NewerVersion`].
///
/// The file is memory-mapped and the tensors borrow from the map (see [`crate::import`]).
pub fn load(path: &Path) -> Result<Checkpoint, Error> {
    let buf = crate::map_file(path)?;
    load_source(crate::tensor::Source { data: (*buf).as_ref(), shared: Some(&buf) }, path)
}

/// [`load`] on bytes already in memory (the tensors are copied); `path` is only used in error
/// messages.
pub fn load_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint, Error> {
    load_source(crate::tensor::Source::plain(bytes), path)
}

fn load_source(src: crate::tensor::Source<'_>, path: &Path) -> Result<Checkpoint, Error> {
    let (info, tensors, skipped) = read_safetensors(src, path)?;
    if let Some(name) = skipped.first() {
        return Err(Error::unsupported(path, format!("tensor {name}")));
    }
    let json = info
        .get(METADATA_KEY)
        .ok_or_else(|| Error::unsupported(path, format!("a safetensors file without petal metadata (no {METADATA_KEY:?} key); use import()")))?;
    from_parts(json, tensors, path)
}

/// Builds a checkpoint from the metadata JSON string and the tensors: version check,
/// migrations, typed metadata, checksum verification.
pub(crate) fn from_parts(json: &str, mut tensors: TensorMap, path: &Path) -> Result<Checkpoint, Error> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| Error::corrupt(path, format!("metadata is not valid JSON: {e}")))?;
    let serde_json::Value::Object(mut obj) = value else {
        return Err(Error::corrupt(path, "metadata is not a JSON object"));
    };
    let format = obj.get("format").and_then(|f| f.as_str()).unwrap_or_default();
    if format != FORMAT_NAME {
        return Err(Error::unsupported(path, format!("metadata format is {format:?}, expected {FORMAT_NAME:?}")));
    }
    let version: FormatVersion = obj
        .get("format_version")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| Error::corrupt(path, "metadata has no valid format_version"))?;
    if version.major > FORMAT_MAJOR {
        return Err(Error::NewerVersion {
            path: path.to_path_buf(),
            file_major: version.major,
            file_minor: version.minor,
            supported_major: FORMAT_MAJOR,
        });
    }
    if version.major == 0 {
        return Err(Error::corrupt(path, "format version 0 does not exist"));
    }
    // Verify integrity against the bytes as written, before any migration touches them.
    verify_checksums(&obj, version, &tensors, path)?;
    for (i, migrate) in MIGRATIONS.iter().enumerate().skip(version.major as usize - 1) {
        migrate(&mut obj, &mut tensors).map_err(|e| Error::corrupt(path, format!("migrating format {} to {}: {e}", i + 1, i + 2)))?;
    }
    let mut meta: Metadata = serde_json::from_value(serde_json::Value::Object(obj))
        .map_err(|e| Error::corrupt(path, format!("metadata does not match format {version}: {e}")))?;
    meta.format_version = version;
    Ok(Checkpoint { meta, tensors })
}

/// Checks `tensor_checksum` (every version) and `tensor_layout_checksum` (required from format
/// 1.1 on; verified whenever present) against the tensors read.
fn verify_checksums(obj: &serde_json::Map<String, serde_json::Value>, version: FormatVersion, tensors: &TensorMap, path: &Path) -> Result<(), Error> {
    let field = |key: &str| obj.get(key).and_then(|c| c.as_str()).unwrap_or_default().to_owned();
    let stored = field("tensor_checksum");
    let algorithm = stored.split(':').next().unwrap_or_default();
    let computed =
        tensor_checksum(tensors, algorithm).ok_or_else(|| Error::corrupt(path, format!("unknown or missing tensor checksum {stored:?}")))?;
    if computed != stored {
        return Err(Error::Checksum { path: path.to_path_buf(), stored, computed });
    }
    let stored = field("tensor_layout_checksum");
    if stored.is_empty() && version < LAYOUT_CHECKSUM_SINCE {
        return Ok(()); // format 1.0 did not record names, dtypes and shapes
    }
    let algorithm = stored.split(':').next().unwrap_or_default();
    let computed = tensor_layout_checksum(tensors, algorithm).ok_or_else(|| {
        Error::corrupt(path, format!("unknown or missing tensor layout checksum {stored:?} (required since format {LAYOUT_CHECKSUM_SINCE})"))
    })?;
    if computed != stored {
        return Err(Error::LayoutChecksum { path: path.to_path_buf(), stored, computed });
    }
    Ok(())
}

/// A safetensors file taken apart: `__metadata__`, supported tensors, names of the others.
pub(crate) type SafetensorsParts = (HashMap<String, String>, TensorMap, Vec<String>);

/// Parses a safetensors container: its `__metadata__` map, its tensors (copied out), and the
/// names (with dtype) of tensors whose dtype this crate does not support.
/// Tensors borrow from `src`'s shared buffer when it has one, else they are copied.
pub(crate) fn read_safetensors(src: crate::tensor::Source<'_>, path: &Path) -> Result<SafetensorsParts, Error> {
    let bytes = src.data;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::corrupt(path, format!("safetensors container: {e}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| Error::corrupt(path, format!("safetensors header: {e}")))?;
    let info = header.metadata().clone().unwrap_or_default();
    let mut tensors = TensorMap::new();
    let mut skipped = Vec::new();
    for (name, view) in st.iter() {
        match DType::from_safetensors(view.dtype()) {
            Some(dtype) => {
                let t = TensorData { dtype, shape: view.shape().to_vec(), bytes: src.bytes(view.data()) };
                t.check().map_err(|e| Error::corrupt(path, format!("tensor {name:?}: {e}")))?;
                tensors.insert(name.to_owned(), t);
            }
            None => skipped.push(format!("{name:?} (dtype {} not supported)", view.dtype())),
        }
    }
    Ok((info, tensors, skipped))
}
