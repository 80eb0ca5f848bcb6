//! `cargo xtask test`: provisions the reference, runs `cargo test --workspace` with a record
//! directory, then prints every skipped check and fails when a check CI must run was skipped (or,
//! in a full run, did not run at all). See TESTING.md.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Arguments of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Do not provision the PyTorch reference or download the Lite0 weights: the checks that need
    /// them skip, and the run fails unless PETAL_ALLOW_SKIP lists them (never allowed in CI).
    #[arg(long)]
    pub no_reference: bool,
    /// Extra arguments for `cargo test` (a full run has none).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// What the tests recorded: check id → skip reasons, and the checks that ran.
#[derive(Debug, Default, PartialEq)]
pub struct Records {
    /// Skipped checks with their reasons.
    pub skipped: BTreeMap<String, String>,
    /// Checks that reported running.
    pub ran: BTreeSet<String>,
}

/// Reads every `records-*.tsv` in `dir` (lines `SKIP|RAN <tab> check <tab> reason`).
pub fn read_records(dir: &Path) -> Result<Records> {
    let mut r = Records::default();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(r) };
    for e in entries {
        let path = e?.path();
        for line in std::fs::read_to_string(&path)?.lines() {
            let mut parts = line.splitn(3, '\t');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("SKIP"), Some(check), reason) => {
                    r.skipped.insert(check.to_string(), reason.unwrap_or("").to_string());
                }
                (Some("RAN"), Some(check), _) => {
                    r.ran.insert(check.to_string());
                }
                _ => bail!("{}: unreadable record {line:?}", path.display()),
            }
        }
    }
    Ok(r)
}

/// The policy: which skips fail the run. `allowed` is `$PETAL_ALLOW_SKIP` (ignored in CI);
/// `full` means the whole suite ran, so every required check must have reported.
pub fn violations(records: &Records, required: &[String], ci: bool, allowed: &[String], full: bool) -> Vec<String> {
    let mut out = Vec::new();
    for id in required {
        if let Some(reason) = records.skipped.get(id) {
            if ci {
                out.push(format!("{id} was skipped in CI ({reason})"));
            } else if !allowed.iter().any(|a| a == "*" || a == id) {
                out.push(format!("{id} was skipped ({reason}); set PETAL_ALLOW_SKIP={id} to accept that on this machine"));
            }
        } else if full && !records.ran.contains(id) {
            out.push(format!("{id} neither ran nor skipped: renamed or deleted? update tests/required-checks.txt"));
        }
    }
    out
}

/// The committed list of checks CI must run.
pub fn required_checks() -> Result<Vec<String>> {
    let path = crate::repo_root().join("tests/required-checks.txt");
    let text = std::fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))?;
    Ok(testkit::parse_check_list(&text))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| crate::repo_root().join("target"))
}

fn print_summary(records: &Records, required: &[String]) {
    if records.skipped.is_empty() {
        eprintln!("test summary: no check was skipped");
    } else {
        eprintln!("test summary: {} check(s) skipped:", records.skipped.len());
        for (id, reason) in &records.skipped {
            let tag = if required.contains(id) { " [required in CI]" } else { "" };
            eprintln!("  PETAL-SKIP {id}{tag}: {reason}");
        }
    }
    let ran = required.iter().filter(|id| records.ran.contains(*id)).count();
    eprintln!("required checks: {ran} of {} ran", required.len());
}

fn list(var: &str) -> Vec<String> {
    std::env::var(var).map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()).unwrap_or_default()
}

/// `cargo xtask test`.
pub fn run(args: TestArgs) -> Result<()> {
    crate::browser::ensure_chromium();
    let mut cmd = crate::cargo()?;
    if !args.no_reference {
        for (k, v) in crate::reference::test_env()? {
            cmd.env(k, v);
        }
    }
    let records = target_dir().join("petal-test-records");
    let _ = std::fs::remove_dir_all(&records);
    cmd.env(testkit::RECORD_DIR_ENV, &records);
    let full = args.args.is_empty();
    // `--workspace` would override a `-p` the user gave.
    let picks_package = args.args.iter().any(|a| a == "-p" || a == "--package" || a.to_string_lossy().starts_with("--package="));
    cmd.arg("test");
    if !picks_package {
        cmd.arg("--workspace");
    }
    cmd.args(args.args);
    let status = crate::run_status(cmd, "the test suite");
    let required = required_checks()?;
    let recs = read_records(&records)?;
    print_summary(&recs, &required);
    status?;
    let bad = violations(&recs, &required, testkit::in_ci(), &list(testkit::ALLOW_SKIP_ENV), full);
    if !bad.is_empty() {
        bail!("checks CI must run did not run:\n  {}", bad.join("\n  "));
    }
    if !full {
        eprintln!("test: arguments given, so the benchmark smoke run (`cargo xtask bench --smoke`) is skipped");
        return Ok(());
    }
    let smoke = crate::bench::BenchArgs { smoke: true, vs_pytorch: false, forward_all: false, only: Vec::new(), data: PathBuf::new() };
    crate::bench::run(&smoke).context("the benchmark smoke run (`cargo xtask bench --smoke`)")
}
