//! Which architectures are built in, their pretrained weights (the registry itself lives in
//! `petal_common::weights`, shared with `xtask`, which downloads), and how a downloaded file
//! becomes the project's weight file.

use std::collections::BTreeMap;
use std::path::Path;

use checkpoint::{Checkpoint, DType, Metadata, TensorData, TensorMap};

use crate::{weights, Arch, Error};

pub use petal_common::weights::{Pretrained, Sha256, Source, PRETRAINED};

/// Names of every built-in architecture, for the CLI.
pub fn arch_names() -> Vec<&'static str> {
    Arch::builtin().iter().map(Arch::name).collect()
}

/// The pretrained weights of `arch`, if any (custom DenseNets have none).
pub fn pretrained(arch: &Arch) -> Option<&'static Pretrained> {
    if let Arch::Rescaled { arch, .. } = arch {
        return pretrained(arch);
    }
    PRETRAINED.iter().find(|p| p.arch == arch.name() && !matches!(arch, Arch::DenseNet(_)))
}

/// What [`convert_pretrained`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// Backbone tensors written.
    pub tensors: usize,
    /// Classifier keys of the source that were dropped (ImageNet `classifier.*` / `_fc.*`).
    pub dropped_head_keys: Vec<String>,
    /// `num_batches_tracked` buffers the source lacked, written as 0 (as PyTorch does).
    pub filled_num_batches_tracked: usize,
    /// Kind of the source file, in words.
    pub source_format: String,
}

/// The backbone of `arch` out of named tensors (already free of `module.` prefixes): keys are
/// remapped like torchvision's DenseNet loader, checked strictly (missing, unexpected and
/// mis-shaped keys are listed in the error; classifier keys per [`Arch::is_head_key`] are set
/// aside and returned), floating-point tensors become F32 and missing `num_batches_tracked`
/// counters are written as 0. `path` names the file in errors.
pub(crate) fn backbone_tensors(arch: &Arch, source: TensorMap, path: &Path) -> Result<(TensorMap, TensorMap, usize), Error> {
    let mut tensors = TensorMap::new();
    for (k, td) in source {
        let name = weights::remap_key(arch, &k).into_owned();
        if tensors.insert(name.clone(), td).is_some() {
            return Err(Error::Config(format!("{}: two tensors map to {name:?} after torchvision's key remapping", path.display())));
        }
    }
    let expected = weights::backbone_shapes(arch)?;
    let found: BTreeMap<String, Vec<i64>> = tensors.iter().map(|(k, t)| (k.clone(), t.shape.iter().map(|&d| d as i64).collect())).collect();
    let (report, _) = weights::check_backbone_keys(arch, &expected, &found);
    if !report.is_empty() {
        return Err(Error::Keys { path: path.to_path_buf(), arch: arch.to_string(), report });
    }
    let (head, mut tensors): (TensorMap, TensorMap) = tensors.into_iter().partition(|(k, _)| arch.is_head_key(k));
    for (k, td) in tensors.iter_mut() {
        let counter = k.ends_with(".num_batches_tracked");
        let float = matches!(td.dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16);
        if counter == float {
            return Err(Error::DType { path: path.to_path_buf(), key: k.clone(), dtype: td.dtype.to_string() });
        }
        if float && td.dtype != DType::F32 {
            let v = td.to_f32_vec().map_err(|e| weights::checkpoint_err(path, e))?;
            *td = TensorData::from_f32(td.shape.clone(), &v);
        }
    }
    let mut filled = 0;
    for k in expected.keys() {
        if !tensors.contains_key(k) {
            tensors.insert(k.clone(), TensorData { dtype: DType::I64, shape: vec![], bytes: 0i64.to_le_bytes().to_vec().into() });
            filled += 1;
        }
    }
    Ok((tensors, head, filled))
}

/// Converts a downloaded pretrained file (anything [`checkpoint::import`] reads) into the
/// project's checkpoint format at `out` (written atomically by [`checkpoint::save`]): DenseNet
/// keys are remapped exactly like torchvision's `_load_state_dict`, the ImageNet classifier is
/// dropped, the backbone is checked strictly against `arch` (missing, unexpected and mis-shaped
/// keys are listed in the error), floating-point tensors are stored as F32, and the metadata
/// records `arch`, its config and the source.
pub fn convert_pretrained(arch: &Arch, downloaded: &Path, out: &Path) -> Result<Converted, Error> {
    if let Arch::Ensemble(members) = arch {
        let each: Vec<String> = members.iter().map(Arch::to_string).collect();
        return Err(Error::Config(format!(
            "{}: a downloaded file holds one architecture, not the ensemble {arch}; convert each member ({}) on its own",
            downloaded.display(),
            each.join(", ")
        )));
    }
    let imported = checkpoint::import(downloaded).map_err(|e| weights::checkpoint_err(downloaded, e))?;
    let source_format = imported.source.to_string();
    let (tensors, head, filled) = backbone_tensors(arch, imported.tensors, downloaded)?;
    let dropped_head_keys: Vec<String> = head.into_keys().collect();
    let n = tensors.len();
    let meta = Metadata {
        arch: arch.name().to_string(),
        arch_config: serde_json::to_value(arch).map_err(|e| Error::Config(format!("serialising {arch}: {e}")))?,
        provenance: serde_json::json!({
            "converted_from": downloaded.file_name().map(|f| f.to_string_lossy().into_owned()),
            "source_format": source_format,
            "pretrained": pretrained(arch).map(|p| p.note),
            "dropped_head_keys": dropped_head_keys,
        }),
        ..Metadata::default()
    };
    checkpoint::save(out, &Checkpoint { meta, tensors }).map_err(|e| weights::checkpoint_err(out, e))?;
    tracing::info!(arch = %arch, out = %out.display(), tensors = n, "converted pretrained weights");
    Ok(Converted { tensors: n, dropped_head_keys, filled_num_batches_tracked: filled, source_format })
}
