//! `petal sweep` end to end with the real binary on a generated dataset: a sweep killed with
//! SIGKILL resumes from its journal without redoing finished trials and ends with the leaderboard
//! of an uninterrupted run; the same seed gives the same trials and scores, another seed other
//! trials; the best config it writes is accepted by `petal train --config` and trains to the
//! sweep's score.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{make_dataset, ok, petal};

const TRIALS: usize = 6;

/// A sweep file: `TRIALS` random trials, 2 rounds of halving (eta 2), 2 workers, over the training
/// config of the other end-to-end tests (tiny DenseNet, 12 epochs).
fn sweep_file(dir: &Path, data: &Path, out: &str, seed: u64) -> PathBuf {
    let train = std::fs::read_to_string(common::config(dir, &format!("{out}-base"), &[])).expect("base config");
    let text = format!(
        r#"data = "{data}"
out = "{out}"
cache_dir = "{cache}"
method = "random"
trials = {TRIALS}
seed = {seed}
workers = 2

[halving]
rounds = 2
eta = 2

[space]
lr = {{ log_uniform = [0.001, 0.05] }}
label_smoothing = [0.0, 0.1]
"head.dropout" = {{ uniform = [0.0, 0.4] }}

[train]
{train}"#,
        data = data.display(),
        out = dir.join(out).display(),
        cache = dir.join("cache").display(),
        train = train.replace("[arch.densenet]", "[train.arch.densenet]").replace("[head]", "[train.head]"),
    );
    let p = dir.join(format!("{out}.toml"));
    std::fs::write(&p, text).expect("sweep file");
    p
}

fn leaderboard(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("leaderboard.json")).expect("leaderboard.json")).expect("json")
}

/// (trial, rounds, score, point) of every row.
fn rows(board: &serde_json::Value) -> Vec<(u64, u64, f64, String)> {
    board["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["trial"].as_u64().expect("trial"),
                r["rounds"].as_u64().expect("rounds"),
                r["valid_acc"].as_f64().expect("acc"),
                r["point"].to_string(),
            )
        })
        .collect()
}

fn journal(out: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(out.join("trials"))
        .map(|d| d.map(|e| e.expect("entry").path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.file_name().expect("name").to_string_lossy().into_owned(), std::fs::read(&p).expect("read")))
        .collect();
    v.sort();
    v
}

/// `(run, reused)` from the final line of `petal sweep`.
fn counts(stdout: &str) -> (usize, usize) {
    let line = stdout.lines().find(|l| l.contains("jobs run,")).unwrap_or_else(|| panic!("no summary line in {stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[0].parse().expect("run"), words[3].parse().expect("reused"))
}

#[test]
fn a_killed_sweep_resumes_from_its_journal_and_equals_an_uninterrupted_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    make_dataset(&data, 8, 4, 0);
    // Jobs: every trial in round 1, the best half (3) in round 2.
    let total_jobs = TRIALS + TRIALS.div_ceil(2);

    let whole = sweep_file(dir.path(), &data, "whole", 11);
    let out = ok(petal().args(["sweep", "--config"]).arg(&whole).output().expect("run"), "uninterrupted sweep");
    assert_eq!(counts(&out), (total_jobs, 0));
    let want = leaderboard(&dir.path().join("whole"));
    assert_eq!(rows(&want).len(), TRIALS);
    for f in ["leaderboard.csv", "sweep.png", "best.toml"] {
        assert!(dir.path().join("whole").join(f).is_file(), "{f} written");
    }

    // The same sweep, killed (SIGKILL) once 3 jobs are journaled, then run again.
    let killed = sweep_file(dir.path(), &data, "killed", 11);
    let mut child = petal()
        .args(["sweep", "--config"])
        .arg(&killed)
        .env("PETAL_TEST_SWEEP_HALT_AFTER_JOBS", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    for line in stderr.lines() {
        let line = line.expect("line");
        let halted = line.contains("halted for a test");
        seen.push(line);
        if halted {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(seen.iter().any(|l| l.contains("halted for a test")), "the sweep never reached the halt point: {seen:#?}");
    let before = journal(&dir.path().join("killed"));
    assert!(before.len() >= 3 && before.len() < total_jobs, "{} journal entries at the kill", before.len());
    assert!(!dir.path().join("killed/leaderboard.json").exists(), "killed before the end");

    let out = ok(petal().args(["sweep", "--config"]).arg(&killed).output().expect("rerun"), "resumed sweep");
    assert_eq!(counts(&out), (total_jobs - before.len(), before.len()), "only the jobs without a journal entry ran");
    let after = journal(&dir.path().join("killed"));
    for (name, bytes) in &before {
        let now = after.iter().find(|(n, _)| n == name).map(|(_, b)| b);
        assert_eq!(now, Some(bytes), "{name} was not redone");
    }
    assert_eq!(rows(&leaderboard(&dir.path().join("killed"))), rows(&want), "resumed leaderboard = uninterrupted one");

    // Once finished, a rerun only reads the journal.
    let out = ok(petal().args(["sweep", "--config"]).arg(&killed).output().expect("again"), "finished sweep");
    assert_eq!(counts(&out), (0, total_jobs));
}

#[test]
fn sweeps_are_reproducible_by_seed_and_the_best_config_trains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    make_dataset(&data, 8, 4, 0);
    let a = sweep_file(dir.path(), &data, "a", 3);
    let b = sweep_file(dir.path(), &data, "b", 3);
    let c = sweep_file(dir.path(), &data, "c", 4);
    // One worker here, two there: scheduling must not change anything.
    ok(petal().args(["sweep", "--workers", "1", "--config"]).arg(&a).output().expect("a"), "sweep a");
    ok(petal().args(["sweep", "--config"]).arg(&b).output().expect("b"), "sweep b");
    ok(petal().args(["sweep", "--config"]).arg(&c).output().expect("c"), "sweep c");
    let (ra, rb, rc) =
        (rows(&leaderboard(&dir.path().join("a"))), rows(&leaderboard(&dir.path().join("b"))), rows(&leaderboard(&dir.path().join("c"))));
    assert_eq!(ra, rb, "same seed, same trials and scores");
    let points = |r: &[(u64, u64, f64, String)]| {
        let mut p: Vec<String> = r.iter().map(|x| x.3.clone()).collect();
        p.sort();
        p
    };
    assert_ne!(points(&ra), points(&rc), "another seed draws other trials");

    // best.toml is a training config: `petal train --config` reproduces the winner's score.
    let best = dir.path().join("a/best.toml");
    let out = ok(
        petal()
            .args(["train", "--data"])
            .arg(&data)
            .args(["--runs-dir"])
            .arg(dir.path().join("runs"))
            .args(["--cache-dir"])
            .arg(dir.path().join("cache"))
            .args(["--config"])
            .arg(&best)
            .output()
            .expect("train"),
        "petal train --config best.toml",
    );
    let _ = out;
    let metrics = common::metrics(&dir.path().join("runs/sweep-best"));
    let best_valid = metrics.iter().filter_map(|m| m["valid_acc"].as_f64()).fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(best_valid, ra[0].2, "the trained run reaches the sweep's best score exactly");
}
