//! Batch prediction as a batch job: inputs and outputs on local disk or object storage, one
//! process or many ([`shard::Shard`]s started by Kubernetes Indexed Jobs, Slurm arrays or by hand), and the
//! merge of the shards' parts into exactly what one process writes.
//!
//! The inputs are listed in one global order (each input argument in turn; a folder or prefix
//! recursively, sorted by relative path component by component), and a shard takes the inputs
//! whose path relative to their input argument hashes to it ([`petal_common::shard`]). A shard
//! writes `<out>.parts/part-KKKKK-of-NNNNN.<csv|jsonl>` (its rows, in global order, under the same
//! header) and then its manifest ([`petal_common::parts::Manifest`]); [`merge`] checks every part
//! and writes `<out>`. Remote inputs are downloaded to a local staging folder (only the shard's);
//! the crash-safe prediction journal lives beside a local output, or in the staging folder for a
//! remote one.

use std::path::{Path, PathBuf};

use infer::{Prediction, Predictor};
use petal_common::parts::{self, Manifest};
use petal_common::shard;
use petal_storage::Location;

use crate::{Error, PredictJob};

/// How predictions are written, from the output's name: `.jsonl` gives JSON lines, anything else CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// A header, then `path,top1_name,top1_folder,top1_prob,…` per image.
    Csv,
    /// One JSON object per image (`{"path":…,"top":[{"index","folder","name","prob"}…]}`).
    Jsonl,
}

impl OutputFormat {
    /// The format for an output named `name`.
    pub fn of(name: &str) -> Self {
        if name.ends_with(".jsonl") {
            OutputFormat::Jsonl
        } else {
            OutputFormat::Csv
        }
    }

    fn extension(self) -> &'static str {
        match self {
            OutputFormat::Csv => "csv",
            OutputFormat::Jsonl => "jsonl",
        }
    }
}

/// One input image: where it is, how outputs name it, and its path relative to its input root.
#[derive(Debug, Clone)]
pub struct Input {
    /// The file or object.
    pub location: Location,
    /// Its name in outputs (the local path, or the URL).
    pub display: String,
    /// Its path relative to the input argument it was found under, with `/` separators.
    pub rel: String,
}

/// Lists the images of `inputs` (local paths, `file://` or `s3://` URLs of files, folders or
/// prefixes) in the global order every shard agrees on.
pub fn list_inputs(inputs: &[String]) -> Result<Vec<Input>, Error> {
    let mut out = Vec::new();
    for text in inputs {
        let root = Location::parse(text)?;
        let local_file = root.local().is_some_and(Path::is_file);
        let found = if local_file { Vec::new() } else { root.list()? };
        if found.is_empty() {
            match root.local() {
                Some(p) if !p.exists() => return Err(Error::Inputs(format!("{text} does not exist"))),
                Some(p) if p.is_dir() => continue,
                _ => {}
            }
            let rel = root.file_name();
            out.push(Input { display: display(&root), location: root, rel });
            continue;
        }
        for (rel, location) in found {
            if preprocess::is_image_path(Path::new(&rel)) {
                out.push(Input { display: display(&location), location, rel });
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Inputs(format!("no images found in {inputs:?}")));
    }
    Ok(out)
}

fn display(l: &Location) -> String {
    l.to_string()
}

/// What a batch job did.
#[derive(Debug)]
pub struct BatchOutcome {
    /// The predictions of this process's inputs.
    pub predictions: Vec<Prediction>,
    /// The file or object written (the part, for a shard).
    pub written: String,
    /// Inputs of the whole job.
    pub total_inputs: usize,
}

/// Runs `job` (or its shard) with `pred`, writing `out` (a path or URL; with a shard, its part goes
/// to `<out>.parts/`) through a journal, so a rerun after a crash predicts only the images left;
/// `on_progress(done, total)` follows this process's images.
pub fn batch_predict(pred: &Predictor, job: &PredictJob, out: &str, mut on_progress: impl FnMut(usize, usize)) -> Result<BatchOutcome, Error> {
    let inputs = list_inputs(&job.inputs)?;
    let mine = shard::select(&inputs, job.shard, |i| i.rel.clone());
    let format = OutputFormat::of(out);
    let out = Location::parse(out)?;
    let target = match job.shard {
        Some(s) => out.with_suffix(".parts").join(&format!("{}.{}", s.part_name(), format.extension())),
        None => out.clone(),
    };
    let paths = stage(&inputs, &mine, &job.staging)?;
    let journal = match target.local() {
        Some(p) => p.to_path_buf(),
        None => job.staging.join("journal").join(&petal_common::sha256_hex(target.to_string().as_bytes())[..16]).join(target.file_name()),
    };
    if let Some(dir) = journal.parent() {
        std::fs::create_dir_all(dir).map_err(|e| petal_common::IoError::new(dir, "creating the folder", e))?;
    }
    let mut preds = Vec::new();
    let mut store = None;
    if !paths.is_empty() {
        let (p, s) = pred.predict_paths_resumable(&paths, job.top_k, job.batch_size, job.chunk_images, &journal, |d| on_progress(d, paths.len()))?;
        (preds, store) = (p, Some(s));
    }
    for (p, &i) in preds.iter_mut().zip(&mine) {
        p.path = PathBuf::from(&inputs[i].display);
    }
    let k = job.top_k.min(pred.num_classes());
    let (header, records) = render(&preds, k, format, &target)?;
    let mut bytes = header.clone().into_bytes();
    records.iter().for_each(|r| bytes.extend_from_slice(r.as_bytes()));
    target.write_atomic(&bytes)?;
    if let Some(s) = job.shard {
        let m = Manifest {
            format: parts::PART_FORMAT.into(),
            version: parts::PART_VERSION,
            kind: format!("predictions-{}", format.extension()),
            shard: s,
            petal_version: env!("CARGO_PKG_VERSION").into(),
            inputs_total: inputs.len() as u64,
            inputs_digest: parts::inputs_digest(inputs.iter().map(|i| i.rel.as_str())),
            provenance: serde_json::json!({"weights": pred.meta.tensor_checksum, "classes": pred.classes, "k": k, "transform": pred.transform, "tta": pred.tta, "runtime": pred.runtime(), "precision": pred.precision()}),
            part: target.file_name(),
            part_bytes: bytes.len() as u64,
            part_sha256: petal_common::sha256_hex(&bytes),
            header_bytes: header.len() as u64,
            positions: mine.iter().map(|&i| i as u64).collect(),
            lengths: records.iter().map(|r| r.len() as u64).collect(),
            command: job.command.clone(),
        };
        let text = serde_json::to_vec_pretty(&m).map_err(|e| Error::Inputs(format!("cannot encode the manifest: {e}")))?;
        out.with_suffix(".parts").join(&Manifest::file_name(s)).write_atomic(&text)?;
    }
    if let Some(s) = store {
        s.finish();
    }
    Ok(BatchOutcome { predictions: preds, written: target.to_string(), total_inputs: inputs.len() })
}

/// Local paths of the inputs at `positions`: local inputs as they are, remote ones downloaded
/// under `staging` (kept, so a retry does not download them again).
fn stage(inputs: &[Input], positions: &[usize], staging: &Path) -> Result<Vec<PathBuf>, Error> {
    positions
        .iter()
        .map(|&i| {
            let input = &inputs[i];
            if let Some(p) = input.location.local() {
                return Ok(p.to_path_buf());
            }
            let url = input.location.to_string();
            let dir = staging.join("inputs").join(&petal_common::sha256_hex(url.as_bytes())[..16]);
            let local = dir.join(input.location.file_name());
            if !local.exists() {
                Location::Local(local.clone()).write_atomic(&input.location.read()?)?;
            }
            Ok(local)
        })
        .collect()
}

/// The header and one record per prediction, in `format`.
fn render(preds: &[Prediction], k: usize, format: OutputFormat, target: &Location) -> Result<(String, Vec<String>), Error> {
    match format {
        OutputFormat::Jsonl => {
            let records = preds
                .iter()
                .map(|p| serde_json::to_string(p).map(|s| s + "\n").map_err(|e| Error::Inputs(format!("cannot encode a prediction: {e}"))))
                .collect::<Result<_, _>>()?;
            Ok((String::new(), records))
        }
        OutputFormat::Csv => {
            let name = PathBuf::from(target.to_string());
            let (header, rows) = crate::stages::prediction_table(preds, k);
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            let head = report::csv_text(&name, &header, &[])?;
            let records =
                rows.into_iter().map(|r| Ok(report::csv_text(&name, &header, &[r])?[head.len()..].to_string())).collect::<Result<_, Error>>()?;
            Ok((head, records))
        }
    }
}

/// What [`merge`] wrote.
#[derive(Debug)]
pub struct MergeOutcome {
    /// The output written.
    pub written: String,
    /// Shards joined.
    pub parts: u32,
    /// Inputs covered.
    pub inputs: u64,
    /// Bytes written.
    pub bytes: usize,
}

/// Joins the parts in `<out>.parts/` into `<out>` (atomically), after checking that every shard's
/// part is there, intact and of the same job; else the error names each shard to rerun and how.
/// Parts are kept, so merging again writes the same bytes.
pub fn merge(out: &str) -> Result<MergeOutcome, Error> {
    let target = Location::parse(out)?;
    let dir = target.with_suffix(".parts");
    let parts = read_parts(&dir)?;
    let bytes = parts::merge_records(&parts).map_err(|detail| parts::MergeError::Inconsistent { dir: dir.to_string(), detail })?;
    target.write_atomic(&bytes)?;
    let inputs = parts.first().map_or(0, |(m, _)| m.inputs_total);
    Ok(MergeOutcome { written: target.to_string(), parts: parts.len() as u32, inputs, bytes: bytes.len() })
}

/// The checked parts (manifest and bytes) in `dir`, a folder or prefix of parts and manifests.
pub fn read_parts(dir: &Location) -> Result<Vec<(Manifest, Vec<u8>)>, Error> {
    let found: Vec<parts::FoundManifest> = dir
        .list()?
        .into_iter()
        .filter(|(rel, _)| !rel.contains('/') && rel.starts_with("part-") && rel.ends_with(".manifest.json"))
        .map(|(rel, loc)| (rel, loc.read().map_err(|e| e.to_string())))
        .collect();
    Ok(parts::check_parts(&dir.to_string(), found, |m| dir.join(&m.part).read().map_err(|e| format!("part unreadable: {e}")))?)
}
