//! The parts a sharded computation writes (one per [`Shard`]) and their checked reunion.
//!
//! Each shard writes its part (the output of its inputs, in the global input order) and, once the
//! part is in place, a small [`Manifest`] beside it, `part-KKKKK-of-NNNNN.manifest.json`: which
//! inputs it covers (their positions in the full, sorted input list, of how many, and a digest of
//! that list), the part's size and SHA-256, the versions that produced it, and the command that
//! reruns it. [`check_parts`] accepts a set of parts only when every shard's manifest and part are
//! there, intact and from the same job, and together cover every input exactly once; otherwise its
//! [`MergeError`] names each missing or damaged shard with the command that reruns that shard alone.
//! [`merge_records`] joins record-oriented parts (CSV rows, JSON lines) into the bytes one process
//! writes. Nothing here does I/O: callers read and write through whatever storage they use.

use serde::{Deserialize, Serialize};

use crate::shard::Shard;

/// `format` of every manifest.
pub const PART_FORMAT: &str = "petal.part";
/// Version of the manifest layout.
pub const PART_VERSION: u32 = 1;

/// What one shard wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`PART_FORMAT`].
    pub format: String,
    /// [`PART_VERSION`] when written.
    pub version: u32,
    /// What the part holds (e.g. `predictions-csv`, `features`); all parts of a merge agree.
    pub kind: String,
    /// The shard that wrote it.
    pub shard: Shard,
    /// Version of the program that wrote it.
    pub petal_version: String,
    /// Number of inputs of the whole job (all shards).
    pub inputs_total: u64,
    /// [`inputs_digest`] of the whole job's input list.
    pub inputs_digest: String,
    /// What else must agree between parts (checkpoint, top-k, transform...).
    pub provenance: serde_json::Value,
    /// File name of the part, beside the manifest.
    pub part: String,
    /// Size of the part in bytes.
    pub part_bytes: u64,
    /// Lowercase-hex SHA-256 of the part.
    pub part_sha256: String,
    /// Bytes of the part before its first record (a CSV header); 0 when there is none.
    pub header_bytes: u64,
    /// Position in the whole job's input list of each input this part covers, increasing.
    pub positions: Vec<u64>,
    /// Byte length of each record, for record-oriented parts (empty otherwise).
    pub lengths: Vec<u64>,
    /// The command that reruns this job, without its shard (`--shard K/N` is appended).
    pub command: Vec<String>,
}

impl Manifest {
    /// The manifest's file name for `shard`.
    pub fn file_name(shard: Shard) -> String {
        format!("{}.manifest.json", shard.part_name())
    }

    /// The shell command that reruns `shard` of this job alone.
    pub fn rerun(&self, shard: Shard) -> String {
        let mut words: Vec<String> = self.command.iter().map(|w| shell_quote(w)).collect();
        words.extend(["--shard".to_string(), shard.to_string()]);
        words.join(" ")
    }
}

/// Quotes `word` for a POSIX shell when it holds anything but safe characters.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// SHA-256 over the relative paths of a job's inputs in order, each followed by `\n`: the identity
/// of the input list that all parts of one job share.
pub fn inputs_digest<'a>(rels: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for r in rels {
        h.update(r.as_bytes());
        h.update(b"\n");
    }
    crate::hex(&h.finalize())
}

/// One shard that cannot be merged.
#[derive(Debug, Clone, PartialEq)]
pub struct PartProblem {
    /// The shard.
    pub shard: Shard,
    /// What is wrong ("missing", "damaged: ...").
    pub problem: String,
    /// The command that reruns this shard alone, when any manifest of the job records it.
    pub rerun: Option<String>,
}

/// Why parts cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// No manifest at all.
    #[error("{dir}: no part manifests (part-*-of-*.manifest.json) found; run the shards first")]
    NoParts {
        /// Where parts were looked for.
        dir: String,
    },
    /// Some shards are missing or damaged; the others are fine.
    #[error("{dir}: {} of {count} parts cannot be merged:{}", problems.len(), list(problems))]
    Incomplete {
        /// Where the parts are.
        dir: String,
        /// Number of shards of the job.
        count: u32,
        /// One entry per shard to rerun.
        problems: Vec<PartProblem>,
    },
    /// The parts do not belong to one job (other shard counts, inputs or settings).
    #[error("{dir}: the parts are not of one job: {detail}")]
    Inconsistent {
        /// Where the parts are.
        dir: String,
        /// What disagrees.
        detail: String,
    },
}

fn list(problems: &[PartProblem]) -> String {
    problems
        .iter()
        .map(|p| match &p.rerun {
            Some(cmd) => format!("\n  shard {}: {}; rerun it alone with:\n    {cmd}", p.shard, p.problem),
            None => format!("\n  shard {}: {}", p.shard, p.problem),
        })
        .collect()
}

/// The shard named by a part or manifest file name (`part-00003-of-00008…`).
pub fn shard_from_name(name: &str) -> Option<Shard> {
    let rest = name.strip_prefix("part-")?;
    let (k, rest) = rest.split_once("-of-")?;
    let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Shard::new(k.parse().ok()?, n.parse().ok()?).ok()
}

/// A manifest file as found: its name and its bytes (or why they could not be read).
pub type FoundManifest = (String, Result<Vec<u8>, String>);

/// Checks the parts of one job. `manifests` are the manifest files found where the parts live;
/// `read_part` reads the part a manifest names. Returns each shard's manifest and part bytes, in
/// shard order, or the list of shards to rerun (with their commands), or why the parts are not
/// one job's.
pub fn check_parts(
    dir: &str,
    manifests: Vec<FoundManifest>,
    read_part: impl Fn(&Manifest) -> Result<Vec<u8>, String>,
) -> Result<Vec<(Manifest, Vec<u8>)>, MergeError> {
    let inconsistent = |detail: String| MergeError::Inconsistent { dir: dir.to_string(), detail };
    let mut good: Vec<Manifest> = Vec::new();
    let mut problems: Vec<PartProblem> = Vec::new();
    for (name, bytes) in manifests {
        let parsed = bytes.and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(m) if m.format == PART_FORMAT && m.version <= PART_VERSION && Some(m.shard) == shard_from_name(&name) => good.push(m),
            Ok(_) => problems.push(damaged(&name, "the manifest is not a petal part manifest of this shard".into())?),
            Err(e) => problems.push(damaged(&name, format!("the manifest cannot be read ({e})"))?),
        }
    }
    let first = match good.first().cloned() {
        Some(m) => m,
        None if problems.is_empty() => return Err(MergeError::NoParts { dir: dir.to_string() }),
        None => return Err(MergeError::Incomplete { dir: dir.to_string(), count: problems[0].shard.count, problems }),
    };
    for m in &good {
        let same =
            m.shard.count == first.shard.count && m.kind == first.kind && m.inputs_digest == first.inputs_digest && m.provenance == first.provenance;
        if !same {
            return Err(inconsistent(format!(
                "{} and {} differ in shard count, inputs or settings (remove the parts of the other run)",
                Manifest::file_name(first.shard),
                Manifest::file_name(m.shard)
            )));
        }
    }
    let count = first.shard.count;
    problems.retain(|p| p.shard.count == count);
    let mut out = Vec::new();
    for index in 0..count {
        let shard = Shard { index, count };
        if problems.iter().any(|p| p.shard == shard) {
            continue;
        }
        let Some(m) = good.iter().find(|m| m.shard == shard) else {
            problems.push(PartProblem { shard, problem: "missing (no manifest: it did not finish)".into(), rerun: None });
            continue;
        };
        match read_part(m).and_then(|bytes| verify(m, bytes)) {
            Ok(bytes) => out.push((m.clone(), bytes)),
            Err(e) => problems.push(PartProblem { shard, problem: e, rerun: None }),
        }
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.shard.index);
        problems.iter_mut().for_each(|p| p.rerun = Some(first.rerun(p.shard)));
        return Err(MergeError::Incomplete { dir: dir.to_string(), count, problems });
    }
    check_coverage(&out, first.inputs_total).map_err(inconsistent)?;
    Ok(out)
}

fn damaged(name: &str, problem: String) -> Result<PartProblem, MergeError> {
    match shard_from_name(name) {
        Some(shard) => Ok(PartProblem { shard, problem, rerun: None }),
        None => Err(MergeError::Inconsistent { dir: name.to_string(), detail: problem }),
    }
}

/// The part's bytes when they match its manifest.
fn verify(m: &Manifest, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    if bytes.len() as u64 != m.part_bytes || crate::sha256_hex(&bytes) != m.part_sha256 {
        return Err(format!("damaged: {} does not match its manifest's size and SHA-256", m.part));
    }
    let records: u64 = m.lengths.iter().sum();
    if !m.lengths.is_empty() && (m.lengths.len() != m.positions.len() || m.header_bytes + records != m.part_bytes) {
        return Err(format!("damaged: the manifest of {} does not describe its records", m.part));
    }
    Ok(bytes)
}

/// Every position in `0..total` is covered by exactly one part.
fn check_coverage(parts: &[(Manifest, Vec<u8>)], total: u64) -> Result<(), String> {
    let mut seen = vec![false; total as usize];
    for (m, _) in parts {
        for &p in &m.positions {
            match seen.get_mut(p as usize) {
                Some(s) if !*s => *s = true,
                _ => return Err(format!("{} covers input {p} twice or out of range", m.part)),
            }
        }
    }
    match seen.iter().position(|s| !s) {
        Some(p) => Err(format!("no part covers input {p} of {total}")),
        None => Ok(()),
    }
}

/// Joins checked record parts (see [`check_parts`]) into one output: the header (which all parts
/// share), then every record at its position. Equal to what one process writes for the whole job.
pub fn merge_records(parts: &[(Manifest, Vec<u8>)]) -> Result<Vec<u8>, String> {
    let header = |(m, b): &(Manifest, Vec<u8>)| b[..m.header_bytes as usize].to_vec();
    let head = parts.first().map(header).unwrap_or_default();
    let total: u64 = parts.iter().map(|(m, _)| m.positions.len() as u64).sum();
    let mut records: Vec<&[u8]> = vec![&[]; total as usize];
    for part in parts {
        if header(part) != head {
            return Err(format!("{} has another header than {}", part.0.part, parts[0].0.part));
        }
        let mut at = part.0.header_bytes as usize;
        for (&pos, &len) in part.0.positions.iter().zip(&part.0.lengths) {
            records[pos as usize] = &part.1[at..at + len as usize];
            at += len as usize;
        }
    }
    let mut out = head;
    records.iter().for_each(|r| out.extend_from_slice(r));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parts of a 5-input job over 2 shards: inputs 0, 2, 3 in shard 0 and 1, 4 in shard 1.
    fn job() -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for (index, rows) in [(0u32, vec![0u64, 2, 3]), (1, vec![1, 4])] {
            let shard = Shard { index, count: 2 };
            let mut part = b"h1,h2\n".to_vec();
            let lengths: Vec<u64> = rows
                .iter()
                .map(|r| {
                    let rec = format!("row{r},x\n");
                    part.extend_from_slice(rec.as_bytes());
                    rec.len() as u64
                })
                .collect();
            let m = Manifest {
                format: PART_FORMAT.into(),
                version: PART_VERSION,
                kind: "test".into(),
                shard,
                petal_version: "0".into(),
                inputs_total: 5,
                inputs_digest: inputs_digest(["a", "b"]),
                provenance: serde_json::json!({"k": 1}),
                part: format!("{}.csv", shard.part_name()),
                part_bytes: part.len() as u64,
                part_sha256: crate::sha256_hex(&part),
                header_bytes: 6,
                positions: rows,
                lengths,
                command: vec!["petal".into(), "predict".into(), "my dir".into()],
            };
            out.push((Manifest::file_name(shard), serde_json::to_vec(&m).expect("json"), part));
        }
        out
    }

    fn check(files: &[(String, Vec<u8>, Vec<u8>)]) -> Result<Vec<(Manifest, Vec<u8>)>, MergeError> {
        let found = files.iter().map(|(n, m, _)| (n.clone(), Ok(m.clone()))).collect();
        check_parts("out.parts", found, |m| files.iter().find(|f| f.0.starts_with(&m.shard.part_name())).map(|f| f.2.clone()).ok_or("gone".into()))
    }

    #[test]
    fn merges_in_input_order() {
        let parts = check(&job()).expect("complete");
        let merged = merge_records(&parts).expect("merge");
        assert_eq!(String::from_utf8(merged).expect("utf8"), "h1,h2\nrow0,x\nrow1,x\nrow2,x\nrow3,x\nrow4,x\n");
    }

    #[test]
    fn names_missing_and_damaged_shards_with_their_commands() {
        let files = job();
        let e = check(&files[..1]).expect_err("missing").to_string();
        assert!(e.contains("shard 1/2: missing") && e.contains("petal predict 'my dir' --shard 1/2"), "{e}");
        let mut bad = job();
        bad[0].2[8] ^= 1;
        let e = check(&bad).expect_err("damaged").to_string();
        assert!(e.contains("shard 0/2: damaged") && e.contains("--shard 0/2"), "{e}");
        let mut bad = job();
        bad[1].1.truncate(10);
        let e = check(&bad).expect_err("torn manifest").to_string();
        assert!(e.contains("shard 1/2: the manifest cannot be read") && e.contains("--shard 1/2"), "{e}");
        assert!(matches!(check(&[]), Err(MergeError::NoParts { .. })));
    }

    #[test]
    fn refuses_parts_of_other_jobs() {
        let mut files = job();
        let mut m: Manifest = serde_json::from_slice(&files[1].1).expect("json");
        m.provenance = serde_json::json!({"k": 2});
        files[1].1 = serde_json::to_vec(&m).expect("json");
        assert!(matches!(check(&files), Err(MergeError::Inconsistent { .. })));
    }

    #[test]
    fn names_parse_back() {
        let s = Shard { index: 3, count: 12 };
        assert_eq!(shard_from_name(&Manifest::file_name(s)), Some(s));
        assert_eq!(shard_from_name("part-3-of-2.json"), None);
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
