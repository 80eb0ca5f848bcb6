//! `cargo xtask test`: provisions the reference, runs `cargo test --workspace` with a record
//! directory, then prints every skipped check and fails when a check CI must run was skipped (or,
//! in a full run, did not run at all). See TESTING.md.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::Path;

/// Arguments of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Run every test that needs no Python and no download beyond setup's: no PyTorch reference
    /// venv (~5 GB), no moto venv, no Lite0 weights, no Chromium install. The checks that need them
    /// skip and are listed at the end; the run does not fail for them (CI never runs this way).
    #[arg(long, alias = "no-reference")]
    pub offline: bool,
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

/// The packages a `cargo build --message-format json` run compiled (its artifacts that were not fresh).
pub fn compiled_packages(json_lines: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in json_lines.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] == "compiler-artifact" && msg["fresh"] == false {
            out.push(msg["target"]["name"].as_str().unwrap_or("?").to_string());
        }
    }
    out
}

/// Builds the binaries as xtask does, then as plain `cargo` does (in a user's shell: no package
/// variables of an outer cargo, `LIBTORCH`/`PETAL_LIBJPEG` from .cargo/config.toml), then as xtask
/// again: the last two must compile nothing (issue 24: alternating the two rebuilt ring and its
/// dependents for a minute each time).
fn shared_build_check() -> Result<()> {
    eprintln!("test: checking that plain cargo and cargo xtask share one build (nothing recompiles when they alternate)");
    let run = |mut cmd: std::process::Command, what: &str| -> Result<Vec<String>> {
        cmd.args(crate::setup::SHARED_BUILD).args(["--message-format", "json"]).stderr(std::process::Stdio::inherit());
        let out = cmd.output().with_context(|| format!("could not run {what}"))?;
        if !out.status.success() {
            bail!("{what} failed ({})", out.status);
        }
        Ok(compiled_packages(&String::from_utf8_lossy(&out.stdout)))
    };
    run(crate::cargo()?, "cargo build (as xtask runs it)")?;
    let native = crate::setup::Native::ensure()?;
    let mut plain = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    plain.current_dir(crate::repo_root());
    for (key, _) in std::env::vars_os() {
        // A user who chose their own libraries has them in their shell too; ours come from .cargo/config.toml.
        let ours = |k: &str| {
            (k == "LIBTORCH" && !native.torch.user_supplied)
                || (k == "PETAL_LIBJPEG" && !native.jpeg.user_supplied)
                || (k == petal_common::onnxruntime::ENV_VAR && !native.ort.user_supplied)
        };
        if key.to_str().is_some_and(|k| crate::setup::is_package_var(k) || ours(k)) {
            plain.env_remove(&key);
        }
    }
    let plain_built = run(plain, "plain cargo build")?;
    let xtask_built = run(crate::cargo()?, "cargo build (as xtask runs it, again)")?;
    if !plain_built.is_empty() || !xtask_built.is_empty() {
        bail!(
            "switching between plain cargo and cargo xtask recompiled {plain_built:?} then {xtask_built:?}: an environment variable differs between the two (see `CARGO_LOG=cargo::core::compiler::fingerprint=info`)"
        );
    }
    eprintln!("test: plain cargo and cargo xtask share one build");
    Ok(())
}

/// The pixel tests again with `PETAL_SIMD=scalar`: the full run above took the widest SIMD kernels
/// the CPU has, this one the scalar reference kernels, so CI proves both paths give Pillow's pixels
/// (the check `preprocess/pixels/corpus_scalar`).
fn scalar_pixels_pass(records: &Path, offline: bool) -> Result<()> {
    let mut cmd = crate::cargo()?;
    if !offline {
        for (k, v) in crate::reference::test_env()? {
            cmd.env(k, v);
        }
    }
    cmd.env(testkit::RECORD_DIR_ENV, records).env("PETAL_SIMD", "scalar");
    cmd.args(["test", "-p", "preprocess", "--test", "it", "--", "pixels::", "golden::"]);
    eprintln!("test: the pixel tests again with the scalar kernels (PETAL_SIMD=scalar)");
    crate::run_status(cmd, "the pixel tests with PETAL_SIMD=scalar")
}

/// `cargo xtask test`.
pub fn run(args: TestArgs) -> Result<()> {
    if args.offline && testkit::in_ci() {
        bail!("`cargo xtask test --offline` skips checks CI must run; CI runs `cargo xtask test`");
    }
    let mut cmd = crate::cargo()?;
    if !args.offline {
        crate::browser::ensure_chromium();
        for (k, v) in crate::reference::test_env()? {
            cmd.env(k, v);
        }
    }
    let records = crate::setup::target_dir().join("petal-test-records");
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
    let mut status = crate::run_status(cmd, "the test suite");
    if full && status.is_ok() {
        status = scalar_pixels_pass(&records, args.offline);
    }
    let required = required_checks()?;
    let recs = read_records(&records)?;
    print_summary(&recs, &required);
    status?;
    let allowed = if args.offline { vec!["*".to_string()] } else { list(testkit::ALLOW_SKIP_ENV) };
    let bad = violations(&recs, &required, testkit::in_ci(), &allowed, full);
    if !bad.is_empty() {
        bail!("checks CI must run did not run:\n  {}", bad.join("\n  "));
    }
    if !full {
        eprintln!("test: arguments given, so the rebuild check and the benchmark smoke run (`cargo xtask bench --smoke`) are skipped");
        return Ok(());
    }
    shared_build_check()?;
    let smoke = crate::bench::BenchArgs {
        smoke: true,
        vs_pytorch: false,
        forward_all: false,
        write_md: false,
        only: Vec::new(),
        data: crate::bench::DEFAULT_DATA.into(),
    };
    crate::bench::run(&smoke).context("the benchmark smoke run (`cargo xtask bench --smoke`)")
}
