//! Old PyTorch checkpoints (PyTorch 0.4 to 2.x, legacy or zip, any storage device, `module.`
//! prefixes) turned into complete petal checkpoints: architecture, head, classes, names and
//! preprocessing, ready for prediction, evaluation and fine-tuning.
//!
//! * The architecture is named by the file (`arch` entry) or the caller (`--arch`), or inferred
//!   from key names and shapes ([`crate::detect`]); a named one is checked against the tensors.
//! * The head is rebuilt without executing pickle code ([`crate::rebuild`]): from the pickled
//!   module tree when present, else from tensor shapes, with the assumptions recorded.
//! * Head-only state dicts (`fc1/fc2`, `hidden_layers.N`/`output`, numbered `Sequential`) are
//!   completed with the named backbone's ImageNet weights.
//! * Preprocessing, which old files never record, is the ImageNet eval transform (Resize 256,
//!   CenterCrop 224, ImageNet mean/std), marked `preprocessing_assumed` in the provenance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use checkpoint::{Checkpoint, ClassEntry, Imported, Metadata, PickledModule, Preprocessing, TensorData, TensorMap};
use serde::Serialize;

use crate::arch_registry::backbone_tensors;
use crate::detect::{detect_arch, parse_arch_name};
use crate::rebuild::{self, RebuiltHead};
use crate::weights::{checkpoint_err, remap_torchvision_densenet_key};
use crate::{Arch, Error};

/// ImageNet mean, as torchvision's `Normalize` in the seed.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Choices the file itself cannot make.
#[derive(Debug, Clone, Default)]
pub struct LegacyOptions {
    /// The backbone architecture (`--arch`); required for head-only files, checked otherwise.
    pub arch: Option<Arch>,
    /// ImageNet backbone weights completing a head-only file (any file [`checkpoint::import`]
    /// reads); default: [`default_weights_path`].
    pub backbone_weights: Option<PathBuf>,
}

/// What the conversion found and assumed.
#[derive(Debug, Clone, Serialize)]
pub struct LegacyReport {
    /// Architecture name.
    pub arch: String,
    /// `"the file's arch entry"`, `"--arch"` or `"key names and shapes"`.
    pub arch_from: String,
    /// The rebuilt head.
    pub head: RebuiltHead,
    /// Number of classes.
    pub classes: usize,
    /// Where the backbone weights came from (`"the file"` or the ImageNet weight file).
    pub backbone_from: String,
    /// Everything assumed, in words (head, classes, preprocessing).
    pub assumptions: Vec<String>,
}

/// Where `cargo xtask fetch-weights <arch>` caches converted ImageNet weights:
/// `$PETAL_CACHE_DIR`, else `$XDG_CACHE_HOME/petal`, else `~/.cache/petal`, then
/// `weights/<arch>-imagenet.safetensors`.
pub fn default_weights_path(arch: &Arch) -> Option<PathBuf> {
    let root = match std::env::var_os("PETAL_CACHE_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?
            .join("petal"),
    };
    Some(root.join("weights").join(format!("{}-imagenet.safetensors", arch.name())))
}

/// Reads an old checkpoint and builds the complete petal checkpoint (in memory).
pub fn legacy_checkpoint(path: &Path, opts: &LegacyOptions) -> Result<(Checkpoint, LegacyReport), Error> {
    let imported = checkpoint::import(path).map_err(|e| checkpoint_err(path, e))?;
    from_imported(imported, path, opts)
}

/// [`legacy_checkpoint`], written atomically to `output`.
///
/// Streams: the input is memory-mapped by [`checkpoint::import`], its contiguous tensors are
/// borrowed from the map rather than copied, and [`checkpoint::save`] writes them from there, so
/// converting needs about one input size of memory (see BENCHMARKS.md, suite `convert`).
pub fn convert_legacy(input: &Path, output: &Path, opts: &LegacyOptions) -> Result<LegacyReport, Error> {
    let imported = checkpoint::import(input).map_err(|e| checkpoint_err(input, e))?;
    convert_imported(imported, input, output, opts)
}

/// [`convert_legacy`] of a file already imported from `input`.
pub fn convert_imported(imported: Imported, input: &Path, output: &Path, opts: &LegacyOptions) -> Result<LegacyReport, Error> {
    let (ckpt, report) = from_imported(imported, input, opts)?;
    checkpoint::save(output, &ckpt).map_err(|e| checkpoint_err(output, e))?;
    tracing::info!(input = %input.display(), output = %output.display(), arch = %report.arch, "converted an old checkpoint");
    Ok(report)
}

fn legacy_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Legacy { path: path.to_path_buf(), detail: detail.into() }
}

fn shapes_of(t: &TensorMap) -> BTreeMap<String, Vec<i64>> {
    t.iter().map(|(k, v)| (k.clone(), v.shape.iter().map(|&d| d as i64).collect())).collect()
}

/// The conversion proper (see the module docs).
pub fn from_imported(imported: Imported, path: &Path, opts: &LegacyOptions) -> Result<(Checkpoint, LegacyReport), Error> {
    if imported.meta.is_some() {
        return Err(legacy_err(path, "already a petal checkpoint"));
    }
    // Cheap: tensors of a mapped file are shared ranges, not copies.
    let tensors = strip_module(imported.tensors.clone());
    let remapped: BTreeMap<String, Vec<i64>> =
        shapes_of(&tensors).into_iter().map(|(k, s)| (remap_torchvision_densenet_key(&k).into_owned(), s)).collect();
    let (arch, arch_from) = resolve_arch(&imported, &remapped, path, opts)?;
    let expected = crate::weights::backbone_shapes(&arch)?;
    let head_only = !remapped.keys().any(|k| expected.contains_key(k));
    let (backbone, head_tensors, backbone_from) = if head_only {
        head_only_parts(&arch, tensors, path, opts)?
    } else {
        let (b, h, _) = backbone_tensors(&arch, tensors, path)?;
        (b, strip_head_prefix(h), "the file".to_string())
    };
    let head = rebuild_head(&imported.modules, &head_tensors, path)?;
    let mut assumptions = head.assumptions.clone();
    let head_map = head_tensor_map(&head, head_tensors, &arch, path, &mut assumptions)?;
    let classes = class_entries(&imported, head.layers.last().map_or(0, |l| l.out_features), path, &mut assumptions)?;
    assumptions.push(
        "preprocessing is not recorded in the file: assumed the ImageNet eval transform (Resize 256, CenterCrop 224, ImageNet mean/std)".into(),
    );
    let report = LegacyReport { arch: arch.name().into(), arch_from, head, classes: classes.len(), backbone_from, assumptions };
    let meta = metadata(&arch, &imported, classes, &report, path)?;
    let mut all = backbone;
    all.extend(head_map);
    Ok((Checkpoint { meta, tensors: all }, report))
}

/// The architecture: named by the file or the caller (then checked against the detected one),
/// or detected.
fn resolve_arch(imp: &Imported, shapes: &BTreeMap<String, Vec<i64>>, path: &Path, opts: &LegacyOptions) -> Result<(Arch, String), Error> {
    let from_file = match imp.arch.as_deref() {
        Some(s) => Some(parse_arch_name(s).ok_or_else(|| legacy_err(path, format!("the file's arch entry {s:?} is not a known architecture")))?),
        None => None,
    };
    if let (Some(f), Some(o)) = (&from_file, &opts.arch) {
        if f != o {
            return Err(legacy_err(path, format!("the file's arch entry says {f} but --arch says {o}")));
        }
    }
    let detected = detect_arch(shapes);
    let named = opts.arch.clone().map(|a| (a, "--arch")).or(from_file.map(|a| (a, "the file's arch entry")));
    match (named, detected) {
        (Some((n, from)), Some(d)) if n != d => {
            let expected = crate::weights::backbone_shapes(&n)?;
            let (report, _) = crate::weights::check_backbone_keys(&n, &expected, shapes);
            Err(legacy_err(path, format!("{from} names {n}, but the tensors are those of {d}: {report}")))
        }
        (Some((n, from)), _) => Ok((n, from.to_string())),
        (None, Some(d)) => Ok((d, "key names and shapes".into())),
        (None, None) => Err(legacy_err(
            path,
            "cannot tell the architecture: no known backbone keys (a head-only state dict?); name it with --arch (densenet121/161/169/201, vgg11/13/16/19[_bn], resnet18/34/50/101/152, alexnet, efficientnet_lite0/1/2)",
        )),
    }
}

/// A head-only file: the backbone comes from the ImageNet weights of `arch`.
fn head_only_parts(arch: &Arch, tensors: TensorMap, path: &Path, opts: &LegacyOptions) -> Result<(TensorMap, TensorMap, String), Error> {
    let weights = opts.backbone_weights.clone().or_else(|| default_weights_path(arch));
    let Some(w) = weights.filter(|w| w.exists()) else {
        return Err(legacy_err(
            path,
            format!(
                "a head-only state dict: its {arch} backbone needs ImageNet weights (pass --weights FILE, or run `cargo xtask fetch-weights {}` to cache them at {})",
                arch.name(),
                default_weights_path(arch).map(|p| p.display().to_string()).unwrap_or_default()
            ),
        ));
    };
    let imp = checkpoint::import(&w).map_err(|e| checkpoint_err(&w, e))?;
    let (backbone, _, _) = backbone_tensors(arch, strip_module(imp.tensors), &w)?;
    Ok((backbone, strip_head_prefix(tensors), w.display().to_string()))
}

/// Names without DataParallel's `module.` prefix.
fn strip_module(t: TensorMap) -> TensorMap {
    t.into_iter().map(|(k, v)| (k.strip_prefix("module.").map(str::to_owned).unwrap_or(k), v)).collect()
}

/// Head tensors relative to the head: without a common `classifier.`, `fc.` or `_fc.` prefix.
fn strip_head_prefix(h: TensorMap) -> TensorMap {
    for p in ["classifier.", "fc.", "_fc."] {
        if !h.is_empty() && h.keys().all(|k| k.starts_with(p)) {
            return h.into_iter().map(|(k, v)| (k[p.len()..].to_owned(), v)).collect();
        }
    }
    h
}

/// The pickled head, when the file has one: a `classifier`/`fc`/`_fc` entry, that child of a
/// pickled model, or a pickled module that is the head itself.
fn head_module(modules: &BTreeMap<String, PickledModule>) -> Option<&PickledModule> {
    const NAMES: [&str; 4] = ["classifier", "fc", "_fc", "head"];
    if let Some(m) = NAMES.iter().find_map(|n| modules.get(*n)) {
        return Some(m);
    }
    let whole = modules.get("").or_else(|| modules.get("model"))?;
    whole.children.iter().find(|(n, _)| NAMES.contains(&n.as_str())).map(|(_, c)| c).or_else(|| {
        let backbone_like = whole.children.iter().any(|(n, _)| matches!(n.as_str(), "features" | "layer1" | "_blocks" | "conv1"));
        (!backbone_like).then_some(whole)
    })
}

fn rebuild_head(modules: &BTreeMap<String, PickledModule>, head: &TensorMap, path: &Path) -> Result<RebuiltHead, Error> {
    let r = match head_module(modules) {
        Some(m) => rebuild::from_module(m).map_err(|e| format!("the pickled head {m}: {e}")),
        None => rebuild::from_shapes(&shapes_of(head)),
    };
    r.map_err(|e| legacy_err(path, format!("cannot rebuild the classifier head: {e}")))
}

/// The head's tensors under this crate's names, checked against the rebuilt layers.
fn head_tensor_map(head: &RebuiltHead, mut src: TensorMap, arch: &Arch, path: &Path, notes: &mut Vec<String>) -> Result<TensorMap, Error> {
    let first = &head.layers[0];
    if first.in_features != arch.feature_dim() {
        return Err(legacy_err(
            path,
            format!(
                "the head's first Linear {:?} takes {} features but {arch} gives {} (weight shape expected [{}, {}], found [{}, {}])",
                first.prefix,
                first.in_features,
                arch.feature_dim(),
                first.out_features,
                arch.feature_dim(),
                first.out_features,
                first.in_features
            ),
        ));
    }
    let mut out = TensorMap::new();
    for (i, l) in head.layers.iter().enumerate() {
        let key = |leaf: &str| if l.prefix.is_empty() { leaf.to_owned() } else { format!("{}.{leaf}", l.prefix) };
        let w = src.remove(&key("weight")).ok_or_else(|| legacy_err(path, format!("the head's Linear {:?} has no weight tensor", l.prefix)))?;
        let want = vec![l.out_features as usize, l.in_features as usize];
        if w.shape != want {
            return Err(legacy_err(path, format!("head tensor {:?}: expected shape {want:?}, found {:?}", key("weight"), w.shape)));
        }
        let b = match src.remove(&key("bias")) {
            Some(b) if b.shape == [l.out_features as usize] => b,
            Some(b) => {
                return Err(legacy_err(path, format!("head tensor {:?}: expected shape [{}], found {:?}", key("bias"), l.out_features, b.shape)))
            }
            None => {
                notes.push(format!("Linear {:?} has no bias: a zero bias was written", l.prefix));
                TensorData::from_f32(vec![l.out_features as usize], &vec![0.0; l.out_features as usize])
            }
        };
        for (leaf, t) in [("weight", w), ("bias", b)] {
            let t = if t.dtype == checkpoint::DType::F32 {
                t
            } else {
                TensorData::from_f32(t.shape.clone(), &t.to_f32_vec().map_err(|e| checkpoint_err(path, e))?)
            };
            out.insert(format!("classifier.{}.{leaf}", 3 * i), t);
        }
    }
    if !src.is_empty() {
        return Err(legacy_err(path, format!("head tensors that belong to no Linear layer: {:?}", src.keys().collect::<Vec<_>>())));
    }
    Ok(out)
}

/// Classes from `class_to_idx` (names from a `cat_to_name` entry when present), else `0..n`.
fn class_entries(imp: &Imported, n: i64, path: &Path, notes: &mut Vec<String>) -> Result<Vec<ClassEntry>, Error> {
    let names: BTreeMap<String, String> = match imp.extra.get("cat_to_name") {
        Some(serde_json::Value::Object(m)) => m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned()))).collect(),
        _ => BTreeMap::new(),
    };
    let mut classes: Vec<ClassEntry> = match &imp.class_to_idx {
        Some(m) => m.iter().map(|(f, &i)| ClassEntry { folder: f.clone(), index: i, name: names.get(f).cloned() }).collect(),
        None => {
            notes.push(format!("the file has no class_to_idx: classes named by their output index 0..{}", n - 1));
            (0..n as usize).map(|i| ClassEntry { folder: i.to_string(), index: i, name: None }).collect()
        }
    };
    classes.sort_by_key(|c| c.index);
    if classes.len() as i64 != n || classes.iter().enumerate().any(|(i, c)| c.index != i) {
        return Err(legacy_err(
            path,
            format!("class_to_idx has {} classes (indices not 0..n or not matching) but the head outputs {n}", classes.len()),
        ));
    }
    Ok(classes)
}

fn metadata(arch: &Arch, imp: &Imported, classes: Vec<ClassEntry>, report: &LegacyReport, path: &Path) -> Result<Metadata, Error> {
    let mut hyper = imp.extra.clone();
    hyper.remove("cat_to_name");
    Ok(Metadata {
        arch: arch.name().to_string(),
        arch_config: serde_json::to_value(arch).map_err(|e| Error::Config(format!("serialising {arch}: {e}")))?,
        classes,
        preprocessing: Some(Preprocessing {
            input_size: 224,
            resize_size: 256,
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
            interpolation: Default::default(),
        }),
        head: serde_json::to_value(&report.head.config).map_err(|e| Error::Config(format!("serialising the head: {e}")))?,
        hyperparameters: serde_json::Value::Object(hyper),
        provenance: serde_json::json!({
            "converted_from": path.file_name().map(|f| f.to_string_lossy().into_owned()),
            "source_format": imp.source,
            "arch_from": report.arch_from,
            "backbone_from": report.backbone_from,
            "head_source": report.head.source,
            "head_layers": report.head.layers,
            "output": report.head.output,
            "preprocessing_assumed": true,
            "assumptions": report.assumptions,
            "skipped": imp.skipped,
        }),
        ..Metadata::default()
    })
}
