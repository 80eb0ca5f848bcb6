//! `cargo xtask bench`: the one entry point for benchmarks.
//!
//! Each suite is a Rust program (an example of a stage crate, built in release mode) and, with
//! `--vs-pytorch`, a Python reference script under `bench/` that measures the same work with
//! PyTorch 2.13 in the same run. Both print one JSON object as their last stdout line (the
//! protocol of `crates/benchkit`); the harness prints a table of the figures and the ratios, and
//! saves everything to `target/bench/latest.json`. A suite that fails is reported and the others
//! still run; the command then fails naming it.
//!
//! `--smoke` runs every suite on tiny generated inputs (dev profile, no Python, seconds each) and
//! checks that each reports its metrics as finite numbers: `cargo xtask test` runs it so the
//! benchmarks cannot rot.

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
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
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
}

/// How one metric compares: higher is better (throughput) or lower is better (seconds).
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

struct Suite {
    name: &'static str,
    package: &'static str,
    example: &'static str,
    script: &'static str,
    metrics: &'static [(&'static str, Better)],
    /// Arguments for both sides, given the data folder.
    args: fn(&Path) -> Vec<String>,
    /// The example drives the reference itself (given `--vs-pytorch --python PY`) and prints
    /// `{"rust": {...}, "pytorch": {...}}`; `script` is the reference it starts.
    self_compared: bool,
    /// The example has a `--smoke` mode (a self-compared suite may not).
    smoke: bool,
}

/// The suites, in the order they run.
const SUITE_NAMES: [&str; 9] = ["preprocess", "checkpoint", "convert", "forward", "train", "predict", "serve", "export", "soak"];

fn suites() -> Vec<Suite> {
    use Better::*;
    vec![
        Suite {
            name: "preprocess",
            package: "preprocess",
            example: "bench_preprocess",
            script: "bench/preprocess_torchvision.py",
            metrics: &[("eval_img_s", Higher), ("train_img_s", Higher), ("cached_eval_img_s", Higher), ("cached_train_img_s", Higher)],
            args: |d| vec!["--data".into(), d.join("flowers102-fullres-sample").display().to_string()],
            self_compared: false,
            smoke: true,
        },
        Suite {
            name: "checkpoint",
            package: "checkpoint",
            example: "bench_io",
            script: "bench/checkpoint_io.py",
            metrics: &[("save_s", Lower), ("load_s", Lower)],
            args: |_| vec![],
            self_compared: false,
            smoke: true,
        },
        Suite {
            name: "convert",
            package: "model",
            example: "bench_convert",
            script: "bench/convert_pytorch.py",
            metrics: &[("zip_s", Lower), ("legacy_s", Lower), ("zip_peak_rss_x", Lower), ("legacy_peak_rss_x", Lower)],
            args: |_| vec![],
            self_compared: true,
            smoke: true,
        },
        Suite {
            name: "forward",
            package: "model",
            example: "bench_forward",
            script: "bench/forward_pytorch.py",
            metrics: &[("densenet121", Higher), ("efficientnet_lite0", Higher)],
            args: |_| vec![],
            self_compared: false,
            smoke: true,
        },
        Suite {
            name: "train",
            package: "train",
            example: "bench_train",
            script: "bench/train_pytorch.py",
            metrics: &[("valid_acc", Higher), ("wall_s", Lower)],
            args: |d| vec!["--data".into(), d.join("flowers102-mini").display().to_string()],
            self_compared: false,
            smoke: true,
        },
        Suite {
            name: "predict",
            package: "infer",
            example: "bench_predict",
            script: "bench/predict_pytorch.py",
            metrics: &[("cold_s", Lower), ("warm_img_s", Higher)],
            args: |d| vec!["--data".into(), d.join("flowers102-mini").display().to_string()],
            self_compared: false,
            smoke: true,
        },
        Suite {
            name: "serve",
            package: "serve",
            example: "bench_serve",
            script: "bench/serve_pytorch.py",
            metrics: &[
                ("c1_rps", Higher),
                ("c1_p50_ms", Lower),
                ("c1_p99_ms", Lower),
                ("c8_rps", Higher),
                ("c8_p50_ms", Lower),
                ("c8_p99_ms", Lower),
                ("c32_rps", Higher),
                ("c32_p50_ms", Lower),
                ("c32_p99_ms", Lower),
                ("c1_errors", Lower),
                ("c8_errors", Lower),
                ("c32_errors", Lower),
                ("rss_mb", Lower),
                ("overload_offered_rps", Higher),
                ("overload_ok", Higher),
                ("overload_503", Higher),
                ("overload_lost", Lower),
                ("overload_p99_ms", Lower),
            ],
            args: |d| vec!["--data".into(), d.display().to_string()],
            self_compared: true,
            smoke: true,
        },
        // The "pytorch" column is onnxruntime here: petal (libtorch) vs onnxruntime on the ONNX
        // files petal exported in the same run; the `tract_*` rows are tract on the same files; the
        // `int8_*` rows are petal's int8 path vs onnxruntime on the same quantized file; the
        // `eager_*` rows are petal's libtorch path vs PyTorch eager on the same architecture.
        Suite {
            name: "export",
            package: "export",
            example: "bench_export",
            script: "bench/export_onnxruntime.py",
            metrics: &[
                ("lite0_b1_img_s", Higher),
                ("lite0_b32_img_s", Higher),
                ("lite2_b1_img_s", Higher),
                ("lite2_b32_img_s", Higher),
                ("densenet121_b1_img_s", Higher),
                ("densenet121_b32_img_s", Higher),
                ("lite012_b1_img_s", Higher),
                ("lite012_b32_img_s", Higher),
                ("ort_lite0_b1_img_s", Higher),
                ("ort_lite0_b32_img_s", Higher),
                ("ort_lite2_b1_img_s", Higher),
                ("ort_lite2_b32_img_s", Higher),
                ("ort_densenet121_b1_img_s", Higher),
                ("ort_densenet121_b32_img_s", Higher),
                ("ort_lite012_b1_img_s", Higher),
                ("ort_lite012_b32_img_s", Higher),
                ("int8_lite0_b1_img_s", Higher),
                ("int8_lite0_b32_img_s", Higher),
                ("int8_lite2_b1_img_s", Higher),
                ("int8_lite2_b32_img_s", Higher),
                ("int8_densenet121_b1_img_s", Higher),
                ("int8_densenet121_b32_img_s", Higher),
                ("int8_lite012_b1_img_s", Higher),
                ("int8_lite012_b32_img_s", Higher),
                ("eager_lite0_b1_img_s", Higher),
                ("eager_lite0_b32_img_s", Higher),
                ("eager_lite2_b1_img_s", Higher),
                ("eager_lite2_b32_img_s", Higher),
                ("eager_densenet121_b1_img_s", Higher),
                ("eager_densenet121_b32_img_s", Higher),
                ("eager_lite012_b1_img_s", Higher),
                ("eager_lite012_b32_img_s", Higher),
                ("tract_lite0_b1_img_s", Higher),
                ("tract_lite0_b32_img_s", Higher),
                ("tract_densenet121_b1_img_s", Higher),
                ("tract_densenet121_b32_img_s", Higher),
            ],
            args: |d| vec!["--data".into(), d.join("flowers102-mini").display().to_string()],
            self_compared: false,
            smoke: true,
        },
        // No reference: `petal serve` alone under mixed traffic for 10 minutes (20 s in smoke).
        Suite {
            name: "soak",
            package: "serve",
            example: "bench_soak",
            script: "",
            metrics: &[
                ("valid_ok", Higher),
                ("valid_lost", Lower),
                ("valid_p50_ms", Lower),
                ("valid_p99_ms", Lower),
                ("server_5xx", Lower),
                ("rss_growth_pct", Lower),
                ("fd_growth", Lower),
                ("thread_growth", Lower),
            ],
            args: |d| vec!["--data".into(), d.display().to_string()],
            self_compared: true,
            smoke: true,
        },
    ]
}

/// The forward suite's metrics with `--forward-all`: every architecture issue 11 added.
const FORWARD_ALL: &[(&str, Better)] = &[
    ("vgg11", Better::Higher),
    ("vgg11_bn", Better::Higher),
    ("vgg13", Better::Higher),
    ("vgg13_bn", Better::Higher),
    ("vgg16", Better::Higher),
    ("vgg16_bn", Better::Higher),
    ("vgg19", Better::Higher),
    ("vgg19_bn", Better::Higher),
    ("resnet18", Better::Higher),
    ("resnet34", Better::Higher),
    ("resnet50", Better::Higher),
    ("resnet101", Better::Higher),
    ("resnet152", Better::Higher),
    ("alexnet", Better::Higher),
    ("efficientnet_lite1", Better::Higher),
    ("efficientnet_lite2", Better::Higher),
];

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
        if s.name == "predict" {
            cmd.arg("--petal").arg(crate::setup::target_dir().join("debug").join(format!("petal{}", std::env::consts::EXE_SUFFIX)));
        }
        cmd.current_dir(&root);
        cmd
    } else {
        let mut cmd = crate::cargo()?;
        cmd.args(["run", "--quiet", "--release", "-p", s.package, "--example", s.example, "--"]);
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

type Row = (&'static str, &'static str, Option<f64>, Option<f64>, Option<f64>);

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

fn print_table(rows: &[Row]) {
    println!("| suite | metric | rust | pytorch | advantage (×, >1 = rust better) |");
    println!("|---|---|---|---|---|");
    let fmt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into());
    for (suite, key, r, p, ratio) in rows {
        println!("| {suite} | {key} | {} | {} | {} |", fmt(*r), fmt(*p), ratio.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into()));
    }
}

/// Builds every example and binary of the workspace in the dev profile, with the workspace's
/// feature resolution (what `cargo test --workspace` builds, so after it this is a no-op).
fn build_for_smoke() -> Result<()> {
    let mut cmd = crate::cargo()?;
    cmd.args(crate::setup::SHARED_BUILD).arg("--quiet");
    crate::run_status(cmd, "cargo build --workspace --examples --bins")
}

/// `cargo xtask bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let root = crate::repo_root();
    let py = if args.vs_pytorch { Some(python()?) } else { None };
    if args.smoke {
        build_for_smoke()?;
    }
    let mut report = Map::new();
    let mut rows_all = Vec::new();
    let mut failed = Vec::new();
    for s in suites() {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == s.name) {
            continue;
        }
        let s = if s.name == "forward" && args.forward_all && !args.smoke { Suite { metrics: FORWARD_ALL, ..s } } else { s };
        if args.smoke && !s.smoke {
            // Every suite has a smoke mode today; a new one may not yet.
            eprintln!("bench: suite {} has no smoke mode; not run", s.name);
            continue;
        }
        match run_suite(&s, args, py.as_deref()) {
            Ok((rust, pyres)) => {
                rows_all.extend(rows(&s, &rust, pyres.as_ref()));
                report.insert(s.name.to_string(), json!({ "rust": rust, "pytorch": pyres }));
            }
            Err(e) => {
                eprintln!("bench: suite {} FAILED: {e:#}", s.name);
                failed.push(s.name);
            }
        }
    }
    print_table(&rows_all);
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let machine = json!({ "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "os": std::env::consts::OS, "arch": std::env::consts::ARCH });
    report.insert("machine".into(), machine);
    // Smoke figures are meaningless as measurements: they never replace the last real run's.
    let path = dir.join(if args.smoke { "smoke.json" } else { "latest.json" });
    std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(report))?).with_context(|| format!("could not write {}", path.display()))?;
    eprintln!("bench: results saved to {}", path.display());
    if !failed.is_empty() {
        bail!("benchmark suite(s) failed: {} (the reason is printed above each)", failed.join(", "));
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
        }
    }
}
