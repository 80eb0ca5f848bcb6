//! Mapping named tensors from a weight file onto an architecture: torchvision's DenseNet key
//! remapping, strict key/shape checking, and copying into a `VarStore`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use checkpoint::{DType, TensorData, TensorMap};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::{Arch, Classifier, Error, HeadConfig, KeyReport, ShapeMismatch};

/// Remaps a legacy torchvision DenseNet key exactly as torchvision's `_load_state_dict` does with
/// `^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$`
/// → `\1\2`: `features.denseblock1.denselayer1.norm.1.weight` →
/// `features.denseblock1.denselayer1.norm1.weight`. Other keys are returned unchanged.
pub fn remap_torchvision_densenet_key(key: &str) -> Cow<'_, str> {
    // Python's `$` also matches just before one final newline, and `.` never matches a newline.
    let body = key.strip_suffix('\n').unwrap_or(key);
    if body.contains('\n') {
        return Cow::Borrowed(key);
    }
    // Split off the last three components: <module>.<1|2>.<param>.
    let mut it = body.rsplitn(4, '.');
    let (param, idx, module, prefix) = match (it.next(), it.next(), it.next(), it.next()) {
        (Some(p), Some(i), Some(m), Some(pre)) => (p, i, m, pre),
        _ => return Cow::Borrowed(key),
    };
    let param_ok = matches!(param, "weight" | "bias" | "running_mean" | "running_var");
    let idx_ok = matches!(idx, "1" | "2");
    let module_ok = matches!(module, "norm" | "relu" | "conv");
    // `.*denselayer\d+` : the prefix ends with "denselayer" followed by at least one digit
    // (ASCII digits; Python's `\d` would also accept other Unicode decimal digits).
    let digits = prefix.bytes().rev().take_while(u8::is_ascii_digit).count();
    let prefix_ok = digits > 0 && prefix[..prefix.len() - digits].ends_with("denselayer");
    if param_ok && idx_ok && module_ok && prefix_ok {
        Cow::Owned(format!("{prefix}.{module}{idx}.{param}"))
    } else {
        Cow::Borrowed(key)
    }
}

/// Applies [`remap_torchvision_densenet_key`] for DenseNet architectures, and to the names of an
/// ensemble's DenseNet members (identity for the others).
pub fn remap_key<'a>(arch: &Arch, key: &'a str) -> Cow<'a, str> {
    if let (Arch::Ensemble(members), Some((i, rest))) = (arch, arch.member_key(key)) {
        return match remap_key(&members[i], rest) {
            Cow::Owned(r) => Cow::Owned(format!("members.{i}.{r}")),
            Cow::Borrowed(_) => Cow::Borrowed(key),
        };
    }
    if let Arch::Rescaled { arch, .. } = arch {
        return remap_key(arch, key);
    }
    if arch.densenet_config().is_some() {
        remap_torchvision_densenet_key(key)
    } else {
        Cow::Borrowed(key)
    }
}

/// Shapes of every backbone variable (buffers included) of `arch`, by name.
///
/// Building a backbone allocates and initialises all its weights (a second for VGG-16 on a busy
/// machine), so the shapes are computed once per architecture and process and then remembered.
pub fn backbone_shapes(arch: &Arch) -> Result<BTreeMap<String, Vec<i64>>, Error> {
    type Shapes = BTreeMap<String, Vec<i64>>;
    static MEMO: std::sync::Mutex<BTreeMap<String, Shapes>> = std::sync::Mutex::new(BTreeMap::new());
    let key = serde_json::to_string(arch).map_err(|e| Error::Config(format!("serialising {arch}: {e}")))?;
    if let Some(s) = MEMO.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(s.clone());
    }
    let vs = VarStore::new(Device::Cpu);
    tch::no_grad(|| Classifier::new(&vs.root(), arch, &HeadConfig { hidden: vec![], ..Default::default() }, 1))?;
    let shapes: Shapes = vs.variables().into_iter().filter(|(k, _)| !arch.is_head_key(k)).map(|(k, t)| (k, t.size())).collect();
    MEMO.lock().unwrap_or_else(|p| p.into_inner()).insert(key, shapes.clone());
    Ok(shapes)
}

/// True for the batch-norm counter that PyTorch fills with 0 when an old state dict lacks it.
fn is_optional(key: &str) -> bool {
    key.ends_with(".num_batches_tracked")
}

/// Compares the (already remapped) shapes found in a file with the architecture's backbone.
/// Head keys ([`Arch::is_head_key`]) are skipped and returned; a missing `num_batches_tracked`
/// is allowed (PyTorch's `BatchNorm` fills it with 0 for old state dicts).
pub fn check_backbone_keys(arch: &Arch, expected: &BTreeMap<String, Vec<i64>>, found: &BTreeMap<String, Vec<i64>>) -> (KeyReport, Vec<String>) {
    let mut report = KeyReport::default();
    let mut head = Vec::new();
    for (k, shape) in found {
        if arch.is_head_key(k) {
            head.push(k.clone());
            continue;
        }
        match expected.get(k) {
            None => report.unexpected.push(k.clone()),
            Some(e) if e != shape => report.mis_shaped.push(ShapeMismatch { key: k.clone(), expected: e.clone(), found: shape.clone() }),
            Some(_) => {}
        }
    }
    report.missing = expected.keys().filter(|k| !found.contains_key(*k) && !is_optional(k)).cloned().collect();
    (report, head)
}

/// What a successful load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Tensors copied into the store.
    pub loaded: usize,
    /// Classifier keys in the file that were not loaded (e.g. torchvision's ImageNet `classifier`).
    pub ignored_head_keys: Vec<String>,
    /// `num_batches_tracked` buffers absent from the file, set to 0.
    pub filled_num_batches_tracked: usize,
}

/// Strictly loads the backbone part of `tensors` into `vs` (built by [`Classifier::new`] for
/// `arch`). Keys are remapped as torchvision does for DenseNet; any missing, unexpected or
/// mis-shaped backbone key fails the whole load (nothing is copied) with an error listing them.
/// `source` only names the file in errors.
pub fn load_backbone_tensors(vs: &VarStore, arch: &Arch, tensors: Vec<(String, Tensor)>, source: &Path) -> Result<LoadSummary, Error> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().filter(|(k, _)| !arch.is_head_key(k)).collect();
    let expected: BTreeMap<String, Vec<i64>> = vars.iter().map(|(k, t)| (k.clone(), t.size())).collect();
    let mut by_name = BTreeMap::new();
    for (k, t) in tensors {
        by_name.insert(remap_key(arch, &k).into_owned(), t);
    }
    let found: BTreeMap<String, Vec<i64>> = by_name.iter().map(|(k, t)| (k.clone(), t.size())).collect();
    let (report, ignored_head_keys) = check_backbone_keys(arch, &expected, &found);
    if !report.is_empty() {
        return Err(Error::Keys { path: source.to_path_buf(), arch: arch.to_string(), report });
    }
    by_name.retain(|k, _| !arch.is_head_key(k));
    let loaded = copy_into(&vars, &by_name, source)?;
    let summary = LoadSummary { loaded, filled_num_batches_tracked: vars.len() - loaded, ignored_head_keys };
    if !summary.ignored_head_keys.is_empty() {
        tracing::info!(file = %source.display(), keys = ?summary.ignored_head_keys, "ignored classifier keys");
    }
    Ok(summary)
}

/// Strictly loads every variable of `vs` (backbone and head, e.g. a trained classifier) from
/// `tensors`: the key sets must be equal (a missing `num_batches_tracked` is set to 0) and the
/// shapes identical, otherwise nothing is copied and the error lists every problem.
pub fn load_all_tensors(vs: &VarStore, tensors: Vec<(String, Tensor)>, source: &Path) -> Result<usize, Error> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let by_name: BTreeMap<String, Tensor> = tensors.into_iter().collect();
    let mut report = KeyReport::default();
    for (k, t) in &by_name {
        match vars.get(k) {
            None => report.unexpected.push(k.clone()),
            Some(v) if v.size() != t.size() => report.mis_shaped.push(ShapeMismatch { key: k.clone(), expected: v.size(), found: t.size() }),
            Some(_) => {}
        }
    }
    report.missing = vars.keys().filter(|k| !by_name.contains_key(*k) && !is_optional(k)).cloned().collect();
    if !report.is_empty() {
        return Err(Error::Keys { path: source.to_path_buf(), arch: "the model".into(), report });
    }
    copy_into(&vars, &by_name, source)
}

/// Copies `src` into `vars` (same key sets up to optional counters, already checked).
fn copy_into(vars: &BTreeMap<String, Tensor>, src: &BTreeMap<String, Tensor>, source: &Path) -> Result<usize, Error> {
    for (k, t) in src {
        if let Some(v) = vars.get(k) {
            if t.is_floating_point() != v.is_floating_point() {
                return Err(Error::DType { path: source.to_path_buf(), key: k.clone(), dtype: format!("{:?}", t.kind()) });
            }
        }
    }
    let mut loaded = 0;
    tch::no_grad(|| -> Result<(), Error> {
        for (k, var) in vars {
            let mut var = var.shallow_clone();
            let res = match src.get(k) {
                Some(t) => {
                    loaded += 1;
                    var.f_copy_(t)
                }
                None => var.f_zero_().map(|_| ()),
            };
            res.map_err(|e| Error::Torch { context: format!("{}: copying {k}", source.display()), source: e })?;
        }
        Ok(())
    })?;
    Ok(loaded)
}

/// Loads the backbone weights of `arch` from a weight file into `vs`, strictly (see
/// [`load_backbone_tensors`]); head keys in the file are ignored. The file may be anything
/// [`checkpoint::import`] reads: a petal checkpoint, safetensors, or a PyTorch `.pth` (zip or
/// legacy), e.g. torchvision's original DenseNet files with their old key names.
///
/// For an ensemble, `path` is either one file holding every member's tensors under
/// `members.{i}.`, or a folder holding each member's own file under the name `cargo xtask
/// fetch-weights` gives it ([`member_weight_files`]).
pub fn load_backbone_weights(vs: &mut VarStore, arch: &Arch, path: &Path) -> Result<LoadSummary, Error> {
    let tensors = match arch {
        Arch::Ensemble(_) if path.is_dir() => {
            let mut all = Vec::new();
            // Prefixed as found: [`load_backbone_tensors`] remaps each member's names itself.
            for (i, file) in member_weight_files(arch, path)?.iter().enumerate() {
                all.extend(read_tensors(file)?.into_iter().map(|(k, t)| (format!("members.{i}.{k}"), t)));
            }
            all
        }
        _ => read_tensors(path)?,
    };
    load_backbone_tensors(vs, arch, tensors, path)
}

/// What identifies the weights [`load_backbone_weights`] would load from `path` for `arch`, for
/// cache keys: [`petal_common::file_id`] of the file, or of each member's file (joined by `+`)
/// when `path` is an ensemble's folder.
pub fn weights_id(arch: &Arch, path: &Path) -> Result<String, Error> {
    let id = |p: &Path| petal_common::file_id(p).map_err(|e| Error::Io { path: e.path, source: e.source });
    match arch {
        Arch::Ensemble(_) if path.is_dir() => Ok(member_weight_files(arch, path)?.iter().map(|p| id(p)).collect::<Result<Vec<_>, _>>()?.join("+")),
        _ => id(path),
    }
}

/// The weight file of each member of the ensemble `arch` in the folder `dir`:
/// `<dir>/<member>-imagenet.safetensors`, the names `cargo xtask fetch-weights <member>` writes
/// into its cache. Errors name the first file that is missing (and the command that fetches it),
/// or a member without pretrained weights.
pub fn member_weight_files(arch: &Arch, dir: &Path) -> Result<Vec<std::path::PathBuf>, Error> {
    let Arch::Ensemble(members) = arch else {
        return Err(Error::Config(format!("{arch} is not an ensemble: its weights are one file, not the folder {}", dir.display())));
    };
    members
        .iter()
        .map(|m| {
            let p = crate::arch_registry::pretrained(m)
                .ok_or_else(|| Error::Config(format!("{m} has no pretrained weights to look for in {}", dir.display())))?;
            let file = dir.join(p.cache_name);
            if file.is_file() {
                Ok(file)
            } else {
                Err(Error::Config(format!("{}: no weights for {m} (`cargo xtask fetch-weights {m}` writes it)", file.display())))
            }
        })
        .collect()
}

/// Reads every tensor of a weight file through [`checkpoint::import`] (names as found).
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>, Error> {
    let imported = checkpoint::import(path).map_err(|e| checkpoint_err(path, e))?;
    for s in &imported.skipped {
        tracing::debug!(file = %path.display(), skipped = %s, "not imported");
    }
    imported.tensors.iter().map(|(k, td)| Ok((k.clone(), to_tensor(td, k, path)?))).collect()
}

pub(crate) fn checkpoint_err(path: &Path, e: checkpoint::Error) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), source: Box::new(e) }
}

fn kind_of(d: DType) -> Kind {
    match d {
        DType::F32 => Kind::Float,
        DType::F64 => Kind::Double,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::I16 => Kind::Int16,
        DType::I8 => Kind::Int8,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
    }
}

fn dtype_of(k: Kind) -> Option<DType> {
    Some(match k {
        Kind::Float => DType::F32,
        Kind::Double => DType::F64,
        Kind::Half => DType::F16,
        Kind::BFloat16 => DType::BF16,
        Kind::Int64 => DType::I64,
        Kind::Int => DType::I32,
        Kind::Int16 => DType::I16,
        Kind::Int8 => DType::I8,
        Kind::Uint8 => DType::U8,
        Kind::Bool => DType::Bool,
        _ => return None,
    })
}

/// Converts `checkpoint` tensor bytes into a CPU tensor (copying). `key` and `path` name the
/// tensor in errors.
pub fn to_tensor(td: &TensorData, key: &str, path: &Path) -> Result<Tensor, Error> {
    td.check().map_err(|e| checkpoint_err(path, e))?;
    let shape: Vec<i64> = td
        .shape
        .iter()
        .map(|&d| i64::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| Error::Config(format!("{}: tensor {key:?} has an absurd shape {:?}", path.display(), td.shape)))?;
    Tensor::f_from_data_size(&td.bytes, &shape, kind_of(td.dtype))
        .map_err(|e| Error::Torch { context: format!("{}: building tensor {key:?}", path.display()), source: e })
}

/// Converts a tensor (any device, any layout) into contiguous little-endian `checkpoint` bytes.
pub fn from_tensor(t: &Tensor, key: &str) -> Result<TensorData, Error> {
    let torch_err = |e| Error::Torch { context: format!("exporting tensor {key:?}"), source: e };
    let kind = t.f_kind().map_err(torch_err)?;
    let dtype = dtype_of(kind).ok_or_else(|| Error::Config(format!("tensor {key:?} has unsupported kind {kind:?}")))?;
    let c = t.f_to_device(tch::Device::Cpu).and_then(|c| c.f_contiguous()).map_err(torch_err)?;
    let numel = c.numel();
    let mut bytes = vec![0u8; numel * kind.elt_size_in_bytes()];
    c.f_copy_data_u8(&mut bytes, numel).map_err(torch_err)?;
    let shape = c.size().iter().map(|&d| d as usize).collect();
    TensorData::new(dtype, shape, bytes).map_err(|e| Error::Config(format!("tensor {key:?}: {e}")))
}

/// All variables of a store as `checkpoint` tensors (for saving a trained model).
pub fn varstore_tensors(vs: &VarStore) -> Result<TensorMap, Error> {
    vs.variables().iter().map(|(k, t)| Ok((k.clone(), from_tensor(t, k)?))).collect()
}
