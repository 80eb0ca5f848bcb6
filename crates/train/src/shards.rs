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
use petal_common::shard;
use petal_common::FileLock;
use preprocess::Sample;
use tch::{Kind, Tensor};

use crate::activations::ActivationCache;
use crate::chunks::RowLayout;
use crate::extractor::{part_key, Extractor, ForwardFn, PassSpec};
pub use crate::extractor::{parts_dir, PartOutcome, ShardJob};
use crate::features::FeatureCache;
use crate::rows::{RowCache, Rows};
use crate::Error;

impl Extractor<'_> {
    /// Computes and writes `job`'s part of the cache of kind `C` at `cache` with provenance `key`
    /// (whose pass over `samples` `spec` describes), then its manifest; keeps a complete part of
    /// an earlier run.
    pub(crate) fn extract_part<C: RowCache>(
        &self,
        samples: &Arc<[Sample]>,
        spec: PassSpec,
        (cache, cache_key): (&Path, &serde_json::Value),
        job: &ShardJob,
        (forward, row): (&ForwardFn, RowLayout),
    ) -> Result<PartOutcome, Error> {
        if self.skip_bad {
            return Err(Error::Config("sharded extraction cannot skip unreadable images (--skip-bad): fix or remove them first".into()));
        }
        let rels: Vec<String> = samples.iter().map(|s| shard::relative_path(&s.path, &job.root)).collect();
        let mine = shard::select(&rels, Some(job.shard), String::clone);
        let dir = parts_dir(cache);
        let part = dir.join(format!("{}.{}", job.shard.part_name(), C::EXTENSION));
        let manifest_path = dir.join(Manifest::file_name(job.shard));
        let mut manifest = Manifest {
            format: parts::PART_FORMAT.into(),
            version: parts::PART_VERSION,
            kind: C::NAME.into(),
            shard: job.shard,
            petal_version: env!("CARGO_PKG_VERSION").into(),
            inputs_total: samples.len() as u64,
            inputs_digest: parts::inputs_digest(rels.iter().map(String::as_str)),
            provenance: cache_key.clone(),
            part: part.file_name().unwrap_or_default().to_string_lossy().into_owned(),
            part_bytes: 0,
            part_sha256: String::new(),
            header_bytes: 0,
            positions: mine.iter().map(|&i| i as u64).collect(),
            lengths: Vec::new(),
            command: job.command.clone(),
        };
        let outcome =
            |kept, seconds| PartOutcome { cache: cache.into(), part: part.clone(), images: mine.len(), total: samples.len(), kept, seconds };
        if is_complete(&manifest_path, &manifest, &part) {
            return Ok(outcome(true, 0.0));
        }
        let _lock = FileLock::exclusive(&part)?;
        let key = part_key(cache_key, job.shard);
        let sub: Arc<[Sample]> = mine.iter().map(|&i| samples[i].clone()).collect();
        let (x, y, store, secs) = if sub.is_empty() {
            (row.empty(), Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu)), None, 0.0)
        } else {
            let spec = PassSpec { ids: Some(mine.clone()), ..spec };
            let chunks = dir.join(format!("{}.chunks", job.shard.part_name()));
            let (out, secs) = self.pass(&sub, &spec, &key, &chunks, (forward, row))?;
            (out.x, out.y, out.store, secs)
        };
        C::write(&part, self.cfg.recipe.arch.name(), &key, &x, &y)?;
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
        FeatureCache::NAME => merge::<FeatureCache>(cache, &dir, &checked)?,
        ActivationCache::NAME => merge::<ActivationCache>(cache, &dir, &checked)?,
        other => return Err(Error::Data(format!("{}: parts of kind {other:?} are not a feature or activation cache", dir.display()))),
    }
    Ok(MergedCache { cache: cache.into(), kind: first.kind, parts: checked.len() as u32, images: first.inputs_total })
}

/// A part whose file is not the one its manifest describes (another key or row count).
fn foreign(path: &Path, m: &Manifest) -> Error {
    Error::Mismatch { path: path.into(), detail: format!("is not the part its manifest describes; rerun it alone with:\n    {}", m.rerun(m.shard)) }
}

/// Writes `cache` from its shards' parts `checked` (in `dir`): every image's row at its position
/// in the split, under the cache's own key.
fn merge<C: RowCache>(cache: &Path, dir: &Path, checked: &[(Manifest, Vec<u8>)]) -> Result<(), Error> {
    let total = checked[0].0.inputs_total as usize;
    let mut parts: Vec<Rows> = Vec::with_capacity(checked.len());
    let mut at = vec![(0usize, 0usize); total];
    let mut labels = vec![0i64; total];
    for (p, (m, bytes)) in checked.iter().enumerate() {
        let path = dir.join(&m.part);
        let rows = C::read_rows(bytes, &path, &part_key(&m.provenance, m.shard)).map_err(|_| foreign(&path, m))?;
        let fits = parts.first().is_none_or(|f| (f.dtype, &f.shape) == (rows.dtype, &rows.shape));
        if rows.labels.len() != m.positions.len() || !fits {
            return Err(foreign(&path, m));
        }
        for (r, &pos) in m.positions.iter().enumerate() {
            at[pos as usize] = (p, r);
            labels[pos as usize] = rows.labels[r];
        }
        parts.push(rows);
    }
    let (dtype, shape, arch) = parts
        .iter()
        .find(|r| !r.arch.is_empty())
        .or(parts.first())
        .map_or((checkpoint::DType::F32, vec![], String::new()), |r| (r.dtype, r.shape.clone(), r.arch.clone()));
    let row = |i: usize| {
        let (p, r) = at[i];
        parts[p].row(r).unwrap_or(&[])
    };
    C::write_rows(cache, &arch, &checked[0].0.provenance, (dtype, &shape), &labels, &row)
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
