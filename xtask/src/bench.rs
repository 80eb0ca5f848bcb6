//! `cargo xtask bench`: the one entry point for benchmarks.
//!
//! Each suite is a Rust program (an example of a stage crate, built in release mode) and, with
//! `--vs-pytorch`, a Python reference script under `bench/` that measures the same work with
//! PyTorch 2.13 in the same run. Both print one JSON object as their last stdout line (the
//! protocol of `crates/benchkit`); the harness prints a table of the figures and the ratios, and
//! saves them to the record `target/bench/latest.json`. A suite that fails is reported and the
//! others still run; the command then fails naming it.
//!
//! The suites, and what each measures against what, are declared in [`mod@suites`]. The record
//! accumulates: each suite's entry carries its own date, commit, machine, load, wall time and
//! command ([`record`], from [`host`]), and a run replaces only the entries of the suites it ran
//! successfully. `--write-md` runs no suite: it copies the record to `bench/record.json` and
//! writes `BENCHMARKS.md`, its rendering ([`page`]), which `cargo xtask lint` keeps in step.
//!
//! `--smoke` runs every suite on tiny generated inputs (dev profile, no Python, seconds each) and
//! checks that each reports its metrics as finite numbers: `cargo xtask test` runs it so the
//! benchmarks cannot rot. Its figures go to `target/bench/smoke.json` and never into the record.

mod host;
mod page;
mod record;
mod suites;

pub(crate) use page::render;
use suites::{suites, with_run_metrics, Better, Suite, SUITE_NAMES};

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Also run the committed PyTorch references (creates bench/.venv with torch==2.13.0 on first use).
    #[arg(long, conflicts_with = "smoke")]
    pub vs_pytorch: bool,
    /// Check that every suite still runs: tiny generated inputs, dev build, no Python, seconds per suite.
    #[arg(long)]
    pub smoke: bool,
    /// Run only these suites.
    #[arg(long, value_delimiter = ',', value_parser = SUITE_NAMES)]
    pub only: Vec<String>,
    /// Forward suite: every architecture issue 11 added (VGG, ResNet, AlexNet, Lite1/2) instead of
    /// the short default, at batch 8 with one timed batch (~10 minutes on 2 cores with the reference).
    #[arg(long)]
    pub forward_all: bool,
    /// Real-data folder for suites that read images.
    #[arg(long, default_value = DEFAULT_DATA)]
    pub data: PathBuf,
    /// Run no suite: copy the record (target/bench/latest.json) to bench/record.json and write
    /// BENCHMARKS.md from it.
    #[arg(long, conflicts_with_all = ["vs_pytorch", "smoke", "only", "forward_all", "data"])]
    pub write_md: bool,
}

/// The default of `--data`.
pub(crate) const DEFAULT_DATA: &str = "../shared/data";

/// The `cargo xtask bench …` command line that gives `args`: every flag that differs from its
/// default, in a fixed order (what a suite's entry in the record names as its `command`).
fn command_line(args: &BenchArgs) -> String {
    let mut words = vec!["cargo xtask bench".to_string()];
    let flags = [("--vs-pytorch", args.vs_pytorch), ("--smoke", args.smoke), ("--forward-all", args.forward_all), ("--write-md", args.write_md)];
    words.extend(flags.iter().filter(|(_, on)| *on).map(|(flag, _)| flag.to_string()));
    if !args.only.is_empty() {
        words.push(format!("--only {}", args.only.join(",")));
    }
    if args.data != Path::new(DEFAULT_DATA) {
        words.push(format!("--data {}", shell_word(&args.data.display().to_string())));
    }
    words.join(" ")
}

/// `word` as a POSIX shell reads it back: unchanged when it is plain, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./,:=+-@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// The Python used for references: `PETAL_BENCH_PYTHON`, else bench/.venv (created on first use).
fn python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PETAL_BENCH_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let root = crate::repo_root();
    let venv = root.join("bench/.venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        eprintln!("bench: creating {} with torch==2.13.0 (first use only)", venv.display());
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().context("python3 is needed for --vs-pytorch")?;
        if !ok.success() {
            bail!("python3 -m venv {} failed", venv.display());
        }
        let ok = Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "--no-cache-dir", "-r"])
            .arg(root.join("bench/requirements.txt"))
            .status()
            .context("pip failed to start")?;
        if !ok.success() {
            let _ = std::fs::remove_dir_all(&venv);
            bail!("pip install -r bench/requirements.txt failed (PyPI unreachable?)");
        }
    }
    Ok(py)
}

/// Runs a command and parses the JSON object it reports (see [`parse_report`]).
fn run_json(mut cmd: Command, what: &str) -> Result<Report> {
    cmd.stderr(Stdio::inherit()).stdout(Stdio::piped());
    let out = cmd.output().with_context(|| format!("could not start {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({})", out.status);
    }
    parse_report(&String::from_utf8_lossy(&out.stdout)).with_context(|| format!("{what} broke the report protocol"))
}

/// The report in a benchmark's stdout: the last line that is a JSON object (the protocol), or
/// else the whole output as one JSON object (a pretty-printed report). Errors quote the output's end.
fn parse_report(stdout: &str) -> Result<Report> {
    let object = |text: &str| match serde_json::from_str::<Value>(text.trim()) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    };
    if let Some(m) = stdout.lines().rev().find(|l| !l.trim().is_empty()).and_then(object).or_else(|| object(stdout)) {
        return Ok(m);
    }
    let tail: Vec<&str> = stdout.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
    bail!(
        "expected one JSON object on the last stdout line, got {}",
        if tail.is_empty() { "no output".to_string() } else { format!("…\n{}", tail.join("\n")) }
    )
}

/// Metrics of `s` that `report` lacks or that are not finite numbers.
fn missing_metrics(s: &Suite, report: &Report) -> Vec<&'static str> {
    s.metrics.iter().filter(|(k, _)| !report.get(*k).and_then(Value::as_f64).is_some_and(f64::is_finite)).map(|(k, _)| *k).collect()
}

/// What one side of a suite reported.
type Report = Map<String, Value>;

/// One suite: the Rust side, then (with a Python) the reference.
fn run_suite(s: &Suite, args: &BenchArgs, py: Option<&Path>) -> Result<(Report, Option<Report>)> {
    let root = crate::repo_root();
    let mut extra = if args.smoke { vec!["--smoke".to_string()] } else { (s.args)(&args.data) };
    if s.name == "forward" && args.forward_all && !args.smoke {
        extra.extend(["--all", "--batch", "8", "--batches", "1"].map(String::from));
    }
    eprintln!("bench: {} (rust{})", s.name, if args.smoke { ", smoke" } else { "" });
    let mut cmd = if args.smoke {
        // The examples and `petal` as `cargo test --workspace` built them (see `build_for_smoke`):
        // `cargo run -p <crate>` would resolve features per crate and rebuild libtorch's bindings.
        let mut cmd = Command::new(crate::setup::target_dir().join("debug/examples").join(s.example));
        crate::setup::Native::ensure()?.apply(&mut cmd);
        if s.runs_petal {
            cmd.arg("--petal").arg(crate::setup::target_dir().join("debug").join(format!("petal{}", std::env::consts::EXE_SUFFIX)));
        }
        cmd.current_dir(&root);
        cmd
    } else {
        let mut cmd = crate::cargo()?;
        cmd.args(["run", "--quiet", "--release", "-p", s.package, "--example", s.example, "--"]);
        if s.runs_petal {
            cmd.arg("--petal").arg(crate::setup::petal_binary()?);
        }
        if let Some(arch) = s.weights {
            cmd.arg("--weights").arg(crate::weights::ensure(arch, false)?);
        }
        cmd
    };
    cmd.arg("--json").args(&extra);
    if let (true, Some(py)) = (s.self_compared, py) {
        cmd.arg("--vs-pytorch").arg("--python").arg(py);
    }
    let mut rust = run_json(cmd, &format!("{} benchmark", s.name))?;
    if s.self_compared {
        // The example ran the reference itself and printed `{"rust": {...}, "pytorch": {...}}`.
        let side = |k: &str| rust.get(k).and_then(Value::as_object).cloned();
        let pyres = side("pytorch");
        rust = side("rust").unwrap_or_default();
        return Ok((rust, pyres));
    }
    let missing = missing_metrics(s, &rust);
    if !missing.is_empty() {
        bail!("{} benchmark reported no number for {}", s.name, missing.join(", "));
    }
    let pyres = match py {
        Some(py) => {
            eprintln!("bench: {} (pytorch)", s.name);
            let mut cmd = Command::new(py);
            cmd.current_dir(&root).arg(s.script).arg("--json").args(&extra);
            Some(run_json(cmd, &format!("{} PyTorch reference", s.name))?)
        }
        None => None,
    };
    Ok((rust, pyres))
}

/// One line of a table: suite, metric, petal's figure, the reference's, and the ratio.
type Row = (&'static str, &'static str, Option<f64>, Option<f64>, Option<f64>);

/// The rows of `s`'s declared metrics; the ratio is "× better for petal" (petal ÷ reference for a
/// higher-is-better metric, reference ÷ petal otherwise), absent when a side lacks the figure or
/// the divisor is not positive.
fn rows(s: &Suite, rust: &Report, pyres: Option<&Report>) -> Vec<Row> {
    let mut rows = Vec::new();
    for (key, better) in s.metrics {
        let r = rust.get(*key).and_then(Value::as_f64);
        let p = pyres.and_then(|m| m.get(*key)).and_then(Value::as_f64);
        let ratio = match (r, p, better) {
            (Some(r), Some(p), Better::Higher) if p > 0.0 => Some(r / p),
            (Some(r), Some(p), Better::Lower) if r > 0.0 => Some(p / r),
            _ => None,
        };
        rows.push((s.name, *key, r, p, ratio));
    }
    rows
}

/// A figure for a table: integers and values of 100 or more without decimals, smaller ones with
/// up to 4 decimals (trailing zeros trimmed), tiny ones in scientific notation; `–` when absent.
fn figure(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if !v.is_finite() => "–".into(),
        Some(v) if v.abs() >= 100.0 || v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) if v.abs() < 1e-4 => format!("{v:.2e}"),
        Some(v) => format!("{v:.4}").trim_end_matches('0').trim_end_matches('.').to_string(),
    }
}

/// A ratio for a table: 2 decimals; `–` when absent.
fn ratio(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite()).map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into())
}

fn print_table(rows: &[Row]) {
    println!("| suite | metric | rust | pytorch | advantage (×, >1 = rust better) |");
    println!("|---|---|---|---|---|");
    for (suite, key, r, p, x) in rows {
        println!("| {suite} | {key} | {} | {} | {} |", figure(*r), figure(*p), ratio(*x));
    }
}

/// Builds every example and binary of the workspace in the dev profile, with the workspace's
/// feature resolution (what `cargo test --workspace` builds, so after it this is a no-op).
fn build_for_smoke() -> Result<()> {
    let mut cmd = crate::cargo()?;
    cmd.args(crate::setup::SHARED_BUILD).arg("--quiet");
    crate::run_status(cmd, "cargo build --workspace --examples --bins")
}

/// The suites `args` asks for, in the harness's order, with the metrics they will report.
fn selected(args: &BenchArgs) -> Vec<Suite> {
    let mut out = Vec::new();
    for s in suites() {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == s.name) {
            continue;
        }
        if args.smoke && !s.smoke {
            // Every suite has a smoke mode today; a new one may not yet.
            eprintln!("bench: suite {} has no smoke mode; not run", s.name);
            continue;
        }
        out.push(with_run_metrics(s, args.forward_all && !args.smoke));
    }
    out
}

/// What a run produced: an entry per suite that succeeded, the table's rows, the suites that failed.
struct Outcome {
    entries: record::Record,
    rows: Vec<Row>,
    failed: Vec<&'static str>,
}

/// Runs the selected suites one after the other; a failure is reported and the others still run.
fn run_suites(args: &BenchArgs, py: Option<&Path>) -> Outcome {
    let root = crate::repo_root();
    let machine = host::machine();
    let command = command_line(args);
    let mut out = Outcome { entries: record::Record::new(), rows: Vec::new(), failed: Vec::new() };
    for s in selected(args) {
        let start = record::Start::now(&root);
        match run_suite(&s, args, py) {
            Ok((rust, pyres)) => {
                out.rows.extend(rows(&s, &rust, pyres.as_ref()));
                out.entries.insert(s.name.to_string(), start.finish(&machine, &command, rust, pyres));
            }
            Err(e) => {
                eprintln!("bench: suite {} FAILED: {e:#}", s.name);
                out.failed.push(s.name);
            }
        }
    }
    out
}

/// Saves a run's entries: merged into the record `target/bench/latest.json` (the suites it did not
/// run, or that failed, keep their earlier entries), or alone into `smoke.json` for a smoke run.
fn save(root: &Path, smoke: bool, entries: record::Record) -> Result<()> {
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    // Smoke figures are meaningless as measurements: they never replace the last real run's.
    let (path, saved) = if smoke {
        (dir.join("smoke.json"), entries)
    } else {
        let path = dir.join("latest.json");
        let previous = record::read_previous(&path);
        (path, record::merge(previous, entries))
    };
    record::write(&path, &saved)?;
    eprintln!("bench: results saved to {}", path.display());
    Ok(())
}

/// `cargo xtask bench --write-md`: the record becomes `bench/record.json` and `BENCHMARKS.md`.
/// The page is rendered from the file as written, exactly as `cargo xtask lint` will read it.
fn write_md(root: &Path) -> Result<()> {
    let latest = root.join("target/bench/latest.json");
    let text = std::fs::read_to_string(&latest)
        .with_context(|| format!("could not read {}: run `cargo xtask bench --vs-pytorch` first (or `--only <suite>`)", latest.display()))?;
    let value: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", latest.display()))?;
    let saved = record::parse(&value)
        .with_context(|| format!("{} is not a record of this harness (an older format? rerun the suites to start a new record)", latest.display()))?;
    let copy = root.join(RECORD);
    record::write(&copy, &saved)?;
    let page = render_file(&copy)?;
    let md = root.join(PAGE);
    petal_common::write_atomic(&md, page.as_bytes()).with_context(|| format!("could not write {}", md.display()))?;
    eprintln!("bench: {} suite(s) copied to {RECORD}; {PAGE} written from it", saved.len());
    Ok(())
}

/// Where the committed record lives, relative to the repository root.
pub(crate) const RECORD: &str = "bench/record.json";
/// The page rendered from it, relative to the repository root.
pub(crate) const PAGE: &str = "BENCHMARKS.md";

/// The rendering of the record in `path` (see [`render`]).
pub(crate) fn render_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
    let value: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    render(&value).with_context(|| format!("{} is not a record this harness can render", path.display()))
}

/// `cargo xtask bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let root = crate::repo_root();
    if args.write_md {
        return write_md(&root);
    }
    let py = if args.vs_pytorch { Some(python()?) } else { None };
    if args.smoke {
        build_for_smoke()?;
    }
    let outcome = run_suites(args, py.as_deref());
    print_table(&outcome.rows);
    save(&root, args.smoke, outcome.entries)?;
    if !outcome.failed.is_empty() {
        bail!("benchmark suite(s) failed: {} (the reason is printed above each)", outcome.failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_is_the_last_json_line_or_the_whole_output() {
        let m = parse_report("progress 1\n{\"a\": 1}\nnoise\n{\"eval_img_s\": 2.5}\n\n").expect("last line");
        assert_eq!(m.get("eval_img_s").and_then(Value::as_f64), Some(2.5));
        let pretty = "{\n  \"eval_img_s\": 3.0,\n  \"images\": 12\n}\n";
        assert_eq!(parse_report(pretty).expect("pretty").get("images").and_then(Value::as_u64), Some(12));
        let err = format!("{:#}", parse_report("warming up\n{\n  \"broken\": \n").expect_err("invalid"));
        assert!(err.contains("last stdout line") && err.contains("\"broken\""), "{err}");
        assert!(format!("{:#}", parse_report("").expect_err("empty")).contains("no output"));
    }

    #[test]
    fn missing_or_non_finite_metrics_are_named() {
        let s = suites().into_iter().find(|s| s.name == "checkpoint").expect("suite");
        let m = parse_report("{\"save_s\": 0.1, \"load_s\": null}").expect("json");
        assert_eq!(missing_metrics(&s, &m), vec!["load_s"]);
        let m = parse_report("{\"save_s\": 0.1, \"load_s\": 0.2}").expect("json");
        assert!(missing_metrics(&s, &m).is_empty());
    }

    #[test]
    fn every_suite_has_its_example_and_reference() {
        let root = crate::repo_root();
        let names: Vec<&str> = suites().iter().map(|s| s.name).collect();
        assert_eq!(names, SUITE_NAMES);
        for s in suites() {
            assert!(root.join("crates").join(s.package).join("examples").join(format!("{}.rs", s.example)).is_file(), "{}", s.name);
            assert!(s.script.is_empty() || root.join(s.script).is_file(), "{}", s.script);
            assert!(s.about.len() > 100 && s.about.ends_with('.') && !s.about.contains("  "), "{}: {}", s.name, s.about);
        }
    }

    /// `cargo xtask bench ARGS`, parsed as the command line is.
    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        <Cli as clap::Parser>::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn the_command_line_names_every_flag_that_is_not_a_default() {
        let line = |args: &[&str]| command_line(&parse(args).expect("valid arguments"));
        assert_eq!(line(&[]), "cargo xtask bench");
        assert_eq!(line(&["--only", "serve", "--vs-pytorch"]), "cargo xtask bench --vs-pytorch --only serve");
        assert_eq!(
            line(&["--only=forward,train", "--forward-all", "--data", "../shared/data"]),
            "cargo xtask bench --forward-all --only forward,train"
        );
        assert_eq!(line(&["--smoke", "--only", "soak", "--only", "export"]), "cargo xtask bench --smoke --only soak,export");
        assert_eq!(line(&["--data", "/mnt/my data/it's"]), "cargo xtask bench --data '/mnt/my data/it'\\''s'");
        assert_eq!(line(&["--write-md"]), "cargo xtask bench --write-md");
        // What it prints parses back to the same arguments.
        let words = ["--vs-pytorch", "--forward-all", "--only", "forward,predict", "--data", "/srv/data"];
        let printed = line(&words);
        assert_eq!(line(&printed.split_whitespace().skip(3).collect::<Vec<_>>()), printed);
    }

    #[test]
    fn write_md_runs_alone() {
        assert!(parse(&["--write-md"]).expect("alone").write_md);
        for other in [&["--only", "serve"][..], &["--vs-pytorch"], &["--smoke"], &["--forward-all"], &["--data", "x"]] {
            let args: Vec<&str> = std::iter::once("--write-md").chain(other.iter().copied()).collect();
            assert!(parse(&args).is_err(), "{args:?}");
        }
        assert!(parse(&["--only", "nosuch"]).is_err());
    }

    #[test]
    fn figures_have_sensible_precision() {
        let f = |v: f64| figure(Some(v));
        assert_eq!((f(12345.678), f(142.7), f(100.0), f(3.0), f(0.0)), ("12346".into(), "143".into(), "100".into(), "3".into(), "0".into()));
        assert_eq!((f(42.123456), f(0.05), f(2.5), f(0.00001234)), ("42.1235".into(), "0.05".into(), "2.5".into(), "1.23e-5".into()));
        assert_eq!((figure(None), f(f64::NAN), ratio(Some(2.0)), ratio(None)), ("–".into(), "–".into(), "2.00".into(), "–".into()));
    }

    #[test]
    fn ratios_are_better_for_petal_above_one() {
        let s = suites().into_iter().find(|s| s.name == "predict").expect("suite");
        let rust = parse_report(r#"{"cold_s": 0.5, "warm_img_s": 30}"#).expect("json");
        let py = parse_report(r#"{"cold_s": 2.0, "warm_img_s": 10}"#).expect("json");
        let got: Vec<Option<f64>> = rows(&s, &rust, Some(&py)).into_iter().map(|r| r.4).collect();
        assert_eq!(got, [Some(4.0), Some(3.0)]);
        assert_eq!(rows(&s, &rust, None)[0].4, None);
    }
}
