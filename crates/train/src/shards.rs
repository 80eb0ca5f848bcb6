//! Feature extraction on many machines: each shard of a batch job computes the rows of its images
//! of every feature or activation cache a run needs, as a part, and [`merge_parts`] joins the
//! parts into the very cache file one process computes.
//!
//! A shard owns the images whose path relative to the dataset root hashes to it
//! ([`petal_common::shard`], the function batch prediction uses). For the cache `<cache>` (e.g.
//! `features-train-<digest>.safetensors`, `activations-valid-<digest>.pact`) shard `K/N` writes
//! `<cache>.parts/part-KKKKK-of-NNNNN.<safetensors|pact>`: the cache's own format, holding its
//! images' rows in split order under the key `{"part_of": <cache key>, "shard": "K/N"}`, computed
//! with each image's index in the whole split (so an augmented view gets the pixels it gets in a
//! pass over the whole split), in crash-safe chunks like a whole pass. Once the part is in place
//! its manifest ([`petal_common::parts::Manifest`]) follows: the images' positions in the split,
//! the part's size and SHA-256, the cache key, the version and the command that reruns the shard.
//! A rerun keeps a part whose manifest and bytes check out.
//!
//! [`merge_parts`] checks every shard's part ([`petal_common::parts::check_parts`]: a missing or
//! damaged one is named with its rerun command) and writes `<cache>` with every image's row at
//! its position in the split and the cache's key: the file `petal train` then finds and reuses.
//! Parts are kept, so merging twice writes the same cache again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use petal_common::parts::{self, Manifest};
use petal_common::shard::{self, Shard};
use petal_common::FileLock;
use preprocess::Sample;
use tch::{Kind, Tensor};

use crate::activations::{write_rows, ActivationCache, Layout};
use crate::chunks::RowLayout;
use crate::features::{save_features, Extractor, ForwardFn, PassSpec};
use crate::tensors::from_data;
use crate::Error;

/// One shard of an extraction job.
#[derive(Debug, Clone)]
pub struct ShardJob {
    /// The shard this process computes.
    pub shard: Shard,
    /// The dataset root: images are assigned to shards by their path relative to it.
    pub root: PathBuf,
    /// The command that reruns the job without its shard (recorded in each manifest).
    pub command: Vec<String>,
}

/// What one shard did for one cache.
#[derive(Debug, Clone)]
pub struct PartOutcome {
    /// The cache file the part belongs to.
    pub cache: PathBuf,
    /// The part written (or kept).
    pub part: PathBuf,
    /// Images of the split in this part.
    pub images: usize,
    /// Images of the split.
    pub total: usize,
    /// Whether a complete part from an earlier run was kept.
    pub kept: bool,
    /// Seconds spent computing.
    pub seconds: f64,
}

/// The two caches of cached training modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheKind {
    /// Pooled backbone features (frozen mode), a petal checkpoint.
    Features,
    /// Activation maps at a block boundary (partial mode), a `.pact` file.
    Activations,
}

impl CacheKind {
    fn name(self) -> &'static str {
        match self {
            CacheKind::Features => "features",
            CacheKind::Activations => "activations",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            CacheKind::Features => "safetensors",
            CacheKind::Activations => "pact",
        }
    }
}

/// A cache a shard writes a part of.
pub(crate) struct PartTarget<'a> {
    /// The cache file.
    pub cache: &'a Path,
    /// Its provenance key.
    pub key: &'a serde_json::Value,
    /// Its kind.
    pub kind: CacheKind,
}

/// The key stored in the part of `shard` of the cache whose key is `key`.
fn part_key(key: &serde_json::Value, shard: Shard) -> serde_json::Value {
    serde_json::json!({ "part_of": key, "shard": shard.to_string() })
}

/// The folder of `cache`'s parts: `<cache>.parts`.
pub fn parts_dir(cache: &Path) -> PathBuf {
    let mut name = cache.file_name().unwrap_or_default().to_os_string();
    name.push(".parts");
    cache.with_file_name(name)
}

/// Warns that `cache`, about to be computed, has shard parts that were not merged.
pub(crate) fn warn_unmerged(cache: &Path, progress: &dyn petal_common::Progress) {
    let dir = parts_dir(cache);
    if dir.is_dir() {
        let msg =
            format!("{} holds shard parts of this cache, not merged: computing it here (or stop and run `petal merge` on its folder)", dir.display());
        progress.event(petal_common::Event::Warning(&msg));
    }
}

impl Extractor<'_> {
    /// Computes and writes `job`'s part of `target` (whose pass over `samples` `spec` describes),
    /// then its manifest; keeps a complete part of an earlier run.
    pub(crate) fn extract_part(
        &self,
        samples: &Arc<[Sample]>,
        spec: PassSpec,
        target: &PartTarget,
        job: &ShardJob,
        (forward, row): (&ForwardFn, RowLayout),
    ) -> Result<PartOutcome, Error> {
        if self.skip_bad {
            return Err(Error::Config("sharded extraction cannot skip unreadable images (--skip-bad): fix or remove them first".into()));
        }
        let rels: Vec<String> = samples.iter().map(|s| shard::relative_path(&s.path, &job.root)).collect();
        let mine = shard::select(&rels, Some(job.shard), String::clone);
        let dir = parts_dir(target.cache);
        let part = dir.join(format!("{}.{}", job.shard.part_name(), target.kind.extension()));
        let manifest_path = dir.join(Manifest::file_name(job.shard));
        let mut manifest = Manifest {
            format: parts::PART_FORMAT.into(),
            version: parts::PART_VERSION,
            kind: target.kind.name().into(),
            shard: job.shard,
            petal_version: env!("CARGO_PKG_VERSION").into(),
            inputs_total: samples.len() as u64,
            inputs_digest: parts::inputs_digest(rels.iter().map(String::as_str)),
            provenance: target.key.clone(),
            part: part.file_name().unwrap_or_default().to_string_lossy().into_owned(),
            part_bytes: 0,
            part_sha256: String::new(),
            header_bytes: 0,
            positions: mine.iter().map(|&i| i as u64).collect(),
            lengths: Vec::new(),
            command: job.command.clone(),
        };
        let outcome =
            |kept, seconds| PartOutcome { cache: target.cache.into(), part: part.clone(), images: mine.len(), total: samples.len(), kept, seconds };
        if is_complete(&manifest_path, &manifest, &part) {
            return Ok(outcome(true, 0.0));
        }
        let _lock = FileLock::exclusive(&part)?;
        let key = part_key(target.key, job.shard);
        let sub: Arc<[Sample]> = mine.iter().map(|&i| samples[i].clone()).collect();
        let (x, y, store, secs) = if sub.is_empty() {
            (row.empty(), Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu)), None, 0.0)
        } else {
            let spec = PassSpec { ids: Some(mine.clone()), ..spec };
            let chunks = dir.join(format!("{}.chunks", job.shard.part_name()));
            let (out, secs) = self.pass(&sub, &spec, &key, &chunks, (forward, row))?;
            (out.x, out.y, out.store, secs)
        };
        match target.kind {
            CacheKind::Features => save_features(&part, self.cfg.arch.name(), &key, &x, &y)?,
            CacheKind::Activations => ActivationCache::write(&part, &key, &x.to_device(tch::Device::Cpu), &y)?,
        }
        manifest.part_bytes = std::fs::metadata(&part).map_err(|e| Error::io(&part, e))?.len();
        manifest.part_sha256 = petal_common::sha256_file(&part)?;
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Config(format!("cannot encode the manifest: {e}")))?;
        petal_common::write_atomic(&manifest_path, &text)?;
        if let Some(store) = store {
            store.finish();
        }
        Ok(outcome(false, secs))
    }
}

/// Whether the manifest at `path` describes `expected` (same job, same images) and its part is intact.
fn is_complete(path: &Path, expected: &Manifest, part: &Path) -> bool {
    let Some(found) = std::fs::read(path).ok().and_then(|b| serde_json::from_slice::<Manifest>(&b).ok()) else { return false };
    let same = found.kind == expected.kind
        && found.provenance == expected.provenance
        && found.inputs_digest == expected.inputs_digest
        && found.positions == expected.positions;
    let intact = || {
        std::fs::metadata(part).is_ok_and(|m| m.len() == found.part_bytes) && petal_common::sha256_file(part).is_ok_and(|s| s == found.part_sha256)
    };
    same && intact()
}

/// What [`merge_parts`] wrote.
#[derive(Debug, Clone)]
pub struct MergedCache {
    /// The cache file written.
    pub cache: PathBuf,
    /// `features` or `activations`.
    pub kind: String,
    /// Shards joined.
    pub parts: u32,
    /// Images in the cache.
    pub images: u64,
}

/// Joins the parts in `<cache>.parts/` into `cache` (atomically): the file one process computes,
/// row for row. Every shard's part must be there, intact and of the same cache; otherwise the
/// error names each shard to rerun and the command that reruns it. The parts are read into
/// memory (the cache's size, as much as one process's extraction holds).
pub fn merge_parts(cache: &Path) -> Result<MergedCache, Error> {
    let dir = parts_dir(cache);
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut found: Vec<parts::FoundManifest> = Vec::new();
    for e in entries {
        let name = e.map_err(|e| Error::io(&dir, e))?.file_name().to_string_lossy().into_owned();
        if name.starts_with("part-") && name.ends_with(".manifest.json") {
            let bytes = std::fs::read(dir.join(&name)).map_err(|e| e.to_string());
            found.push((name, bytes));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let checked =
        parts::check_parts(&dir.display().to_string(), found, |m| std::fs::read(dir.join(&m.part)).map_err(|e| format!("part unreadable: {e}")))?;
    let first = checked[0].0.clone();
    let _lock = FileLock::exclusive(cache)?;
    match first.kind.as_str() {
        "features" => merge_features(cache, &dir, &checked)?,
        "activations" => merge_activations(cache, &dir, &checked)?,
        other => return Err(Error::Data(format!("{}: parts of kind {other:?} are not a feature or activation cache", dir.display()))),
    }
    Ok(MergedCache { cache: cache.into(), kind: first.kind, parts: checked.len() as u32, images: first.inputs_total })
}

/// A part whose file is not the one its manifest describes (another key or row count).
fn foreign(path: &Path, m: &Manifest) -> Error {
    Error::Mismatch { path: path.into(), detail: format!("is not the part its manifest describes; rerun it alone with:\n    {}", m.rerun(m.shard)) }
}

fn merge_features(cache: &Path, dir: &Path, checked: &[(Manifest, Vec<u8>)]) -> Result<(), Error> {
    let (mut xs, mut ys, mut positions, mut arch) = (Vec::new(), Vec::new(), Vec::new(), String::new());
    for (m, bytes) in checked {
        let path = dir.join(&m.part);
        let c = checkpoint::load_bytes(bytes, &path)?;
        let get = |k: &str| c.tensors.get(k).ok_or_else(|| foreign(&path, m));
        let (x, y) = (from_data("features", get("features")?)?, from_data("labels", get("labels")?)?);
        if c.meta.provenance != part_key(&m.provenance, m.shard) || x.size()[0] as usize != m.positions.len() {
            return Err(foreign(&path, m));
        }
        positions.extend(m.positions.iter().map(|&p| p as i64));
        arch.clone_from(&c.meta.arch);
        xs.push(x);
        ys.push(y);
    }
    // The parts cover every position once (checked): sorting by position gives the split's order.
    let (_, order) = Tensor::from_slice(&positions).sort(0, false);
    let x = Tensor::cat(&xs, 0).index_select(0, &order);
    let y = Tensor::cat(&ys, 0).index_select(0, &order);
    save_features(cache, &arch, &checked[0].0.provenance, &x, &y)
}

fn merge_activations(cache: &Path, dir: &Path, checked: &[(Manifest, Vec<u8>)]) -> Result<(), Error> {
    let total = checked[0].0.inputs_total as usize;
    let mut layouts: Vec<Layout> = Vec::new();
    let mut at = vec![(0usize, 0usize); total];
    let mut labels = vec![0i64; total];
    for (p, (m, bytes)) in checked.iter().enumerate() {
        let path = dir.join(&m.part);
        let l = Layout::parse(bytes, &path, &part_key(&m.provenance, m.shard))?;
        let fits = layouts.first().is_none_or(|f| (f.dtype, f.shape) == (l.dtype, l.shape));
        if l.labels.len() != m.positions.len() || !fits {
            return Err(foreign(&path, m));
        }
        for (r, &pos) in m.positions.iter().enumerate() {
            at[pos as usize] = (p, r);
            labels[pos as usize] = l.labels[r];
        }
        layouts.push(l);
    }
    let (dtype, shape) = layouts.first().map_or((checkpoint::DType::F32, [0; 3]), |l| (l.dtype, l.shape.map(|d| d as usize)));
    let row = |i: usize| {
        let (p, r) = at[i];
        layouts[p].row(&checked[p].1, r).unwrap_or(&[])
    };
    write_rows(cache, &checked[0].0.provenance, (dtype, shape), &labels, &row)
}

/// A cache and the result of merging its parts.
pub type MergeResult = (PathBuf, Result<MergedCache, Error>);

/// Merges every cache with parts in `dir` (each `*.parts` folder of a feature or activation
/// cache); returns each cache's result. An error when `dir` holds none.
pub fn merge_dir(dir: &Path) -> Result<Vec<MergeResult>, Error> {
    let mut caches: Vec<PathBuf> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = e.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let cache = name.strip_suffix(".parts").filter(|c| c.starts_with("features-") || c.starts_with("activations-"));
        if let (Some(cache), true) = (cache, path.is_dir()) {
            caches.push(dir.join(cache));
        }
    }
    if caches.is_empty() {
        return Err(Error::Data(format!("{}: no feature or activation cache parts (*.parts folders) found; run the shards first", dir.display())));
    }
    caches.sort();
    Ok(caches.into_iter().map(|c| (c.clone(), merge_parts(&c))).collect())
}
