//! The benchmark record: for each suite, its last successful figures and where, when and how they
//! were measured. Runs accumulate into it (a run replaces only the entries of the suites it ran),
//! so each entry has its own date. It is JSON: `target/bench/latest.json` while it grows,
//! `bench/record.json` once `--write-md` copies it into the repository (keys sorted, so a refresh
//! of one suite changes only that suite's lines).

use super::{host, Report, SUITE_NAMES};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// The record: an entry per suite name.
pub(super) type Record = BTreeMap<String, Entry>;

/// One suite's entry: its figures, and where, when and how they were measured.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct Entry {
    /// When the suite finished, RFC 3339, UTC.
    pub(super) recorded_utc: String,
    /// The commit checked out when the suite started (`None` outside a git checkout).
    pub(super) commit: Option<String>,
    /// Whether tracked files differed from that commit.
    pub(super) dirty: bool,
    /// The `cargo xtask bench …` command of the run (see `command_line`).
    pub(super) command: String,
    /// The machine it ran on.
    pub(super) machine: Machine,
    /// The 1-minute load average before and after the suite.
    pub(super) load: Load,
    /// The suite's wall time in seconds, both sides and any build included.
    pub(super) wall_s: f64,
    /// What the petal side reported.
    pub(super) rust: Report,
    /// What the reference reported (`None` without `--vs-pytorch`, or for a suite without one).
    pub(super) pytorch: Option<Report>,
}

/// The machine a suite ran on; what the platform does not tell is `None`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct Machine {
    /// CPU model (`model name` of `/proc/cpuinfo`).
    pub(super) cpu: Option<String>,
    /// Logical CPUs available to the process.
    pub(super) cpus: Option<usize>,
    /// Memory (`MemTotal` of `/proc/meminfo`) in GiB.
    pub(super) mem_gib: Option<f64>,
    /// `std::env::consts::OS`.
    pub(super) os: String,
    /// `std::env::consts::ARCH`.
    pub(super) arch: String,
}

/// The 1-minute load average around a suite (`/proc/loadavg`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct Load {
    /// Before the suite started.
    pub(super) before: Option<f64>,
    /// After it ended.
    pub(super) after: Option<f64>,
}

/// What is noted as a suite starts, to complete its entry when it ends.
pub(super) struct Start {
    commit: Option<String>,
    dirty: bool,
    load_before: Option<f64>,
    clock: Instant,
}

impl Start {
    /// Notes the checkout of `root`, the load and the time.
    pub(super) fn now(root: &Path) -> Start {
        let (commit, dirty) = host::git_state(root);
        Start { commit, dirty, load_before: host::load_now(), clock: Instant::now() }
    }

    /// The entry of a suite that started at `self` and has just reported.
    pub(super) fn finish(self, machine: &Machine, command: &str, rust: Report, pytorch: Option<Report>) -> Entry {
        Entry {
            recorded_utc: petal_common::time::now_rfc3339(),
            commit: self.commit,
            dirty: self.dirty,
            command: command.to_string(),
            machine: machine.clone(),
            load: Load { before: self.load_before, after: host::load_now() },
            wall_s: (self.clock.elapsed().as_secs_f64() * 100.0).round() / 100.0,
            rust,
            pytorch,
        }
    }
}

/// Reads a record from JSON: an object whose keys are suite names and whose values are entries.
/// The error names the suite and the field at fault.
pub(super) fn parse(value: &Value) -> Result<Record> {
    let Value::Object(map) = value else { bail!("a record is a JSON object with an entry per suite, not {}", kind(value)) };
    let mut record = Record::new();
    for (name, entry) in map {
        if !SUITE_NAMES.contains(&name.as_str()) {
            bail!("`{name}` is not a suite of the harness ({})", SUITE_NAMES.join(", "));
        }
        let entry = Entry::deserialize(entry).with_context(|| format!("the entry of suite `{name}`"))?;
        record.insert(name.clone(), entry);
    }
    Ok(record)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `previous` with the entries of `fresh` in place of its own: a suite that did not run, or
/// failed, keeps its earlier entry.
pub(super) fn merge(mut previous: Record, fresh: Record) -> Record {
    previous.extend(fresh);
    previous
}

/// The record in `path`; empty when there is none yet, or (said on stderr) when it cannot be read
/// or is in an older format: a new run then starts a fresh record.
pub(super) fn read_previous(path: &Path) -> Record {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Record::new(),
        Err(e) => {
            eprintln!("bench: could not read {} ({e}); starting a fresh record", path.display());
            return Record::new();
        }
    };
    match serde_json::from_str::<Value>(&text).map_err(anyhow::Error::from).and_then(|v| parse(&v)) {
        Ok(record) => record,
        Err(e) => {
            eprintln!("bench: {} is not a record in this format ({e:#}); starting a fresh record", path.display());
            Record::new()
        }
    }
}

/// Writes `record` to `path` atomically (temp file and rename in the same folder), pretty-printed
/// with every object's keys sorted.
pub(super) fn write(path: &Path, record: &Record) -> Result<()> {
    let value = sort_keys(serde_json::to_value(record).context("the record does not serialise")?);
    let mut text = serde_json::to_string_pretty(&value).context("the record does not serialise")?;
    text.push('\n');
    petal_common::write_atomic(path, text.as_bytes()).with_context(|| format!("could not write {}", path.display()))
}

/// `value` with the keys of every object in sorted order, whatever order the map type keeps.
fn sort_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut pairs: Vec<(String, Value)> = map.into_iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(pairs.into_iter().map(|(k, v)| (k, sort_keys(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    /// An entry for tests: `rust` and `pytorch` figures, recorded at `when` at commit `commit`.
    pub(in crate::bench) fn entry(when: &str, commit: &str, rust: Value, pytorch: Value) -> Entry {
        Entry::deserialize(json!({
            "recorded_utc": when,
            "commit": commit,
            "dirty": false,
            "command": "cargo xtask bench --vs-pytorch",
            "machine": {"cpu": "Test CPU @ 2.0GHz", "cpus": 2, "mem_gib": 23.4, "os": "linux", "arch": "x86_64"},
            "load": {"before": 0.5, "after": 1.25},
            "wall_s": 12.5,
            "rust": rust,
            "pytorch": pytorch,
        }))
        .expect("a valid entry")
    }

    fn old_and_new() -> (Record, Record) {
        let old_checkpoint = entry("2026-12-01T10:00:00Z", "aaaaaaa", json!({"save_s": 0.2, "load_s": 0.1}), Value::Null);
        let old_serve = entry("2026-12-01T11:00:00Z", "aaaaaaa", json!({"c1_rps": 10.0}), Value::Null);
        let new_serve = entry("2026-12-05T09:00:00Z", "bbbbbbb", json!({"c1_rps": 20.0}), json!({"c1_rps": 5.0}));
        let old = Record::from([("checkpoint".to_string(), old_checkpoint), ("serve".to_string(), old_serve)]);
        (old, Record::from([("serve".to_string(), new_serve)]))
    }

    #[test]
    fn a_run_replaces_the_suites_it_ran_and_keeps_the_others() {
        let (old, new) = old_and_new();
        let merged = merge(old.clone(), new.clone());
        assert_eq!(merged.keys().collect::<Vec<_>>(), ["checkpoint", "serve"]);
        assert_eq!(merged["checkpoint"], old["checkpoint"]);
        assert_eq!(merged["serve"], new["serve"]);
        assert_eq!(merged["serve"].recorded_utc, "2026-12-05T09:00:00Z");
        // A run where every suite failed has no entries: the record stays as it was.
        assert_eq!(merge(old.clone(), Record::new()), old);
    }

    #[test]
    fn the_record_round_trips_through_its_file_and_old_files_start_fresh() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("latest.json");
        assert_eq!(read_previous(&path), Record::new(), "no file yet");
        let (old, new) = old_and_new();
        write(&path, &old).expect("write");
        assert_eq!(read_previous(&path), old);
        write(&path, &merge(read_previous(&path), new.clone())).expect("write");
        let back = read_previous(&path);
        assert_eq!((back["checkpoint"].clone(), back["serve"].clone()), (old["checkpoint"].clone(), new["serve"].clone()));
        // Nothing left beside it: the temp file was renamed over it.
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
        // Keys are sorted at every level, so the file is stable.
        let text = std::fs::read_to_string(&path).expect("read");
        let (c, s) = (text.find("\"checkpoint\"").expect("checkpoint"), text.find("\"serve\"").expect("serve"));
        assert!(c < s && text.find("\"command\"") < text.find("\"wall_s\"") && text.ends_with("}\n"), "{text}");
        // The format before entries had dates, and a file that is not JSON: both start fresh.
        std::fs::write(&path, r#"{"checkpoint": {"rust": {"save_s": 1}, "pytorch": null}, "machine": {"cpus": 2}}"#).expect("write");
        assert_eq!(read_previous(&path), Record::new());
        std::fs::write(&path, "{ truncated").expect("write");
        assert_eq!(read_previous(&path), Record::new());
    }

    #[test]
    fn parse_names_what_is_wrong() {
        let err = |v: Value| format!("{:#}", parse(&v).expect_err("invalid"));
        assert!(err(json!([])).contains("not an array"));
        assert!(err(json!({"machine": {"cpus": 2}})).contains("`machine` is not a suite of the harness (preprocess, checkpoint,"));
        let mut e = serde_json::to_value(&old_and_new().0["checkpoint"]).expect("value");
        e.as_object_mut().expect("object").remove("recorded_utc");
        let e2 = err(json!({ "checkpoint": e }));
        assert!(e2.contains("suite `checkpoint`") && e2.contains("recorded_utc"), "{e2}");
        assert_eq!(parse(&json!({})).expect("empty"), Record::new());
    }
}
