//! `cargo xtask bench`: the one entry point for benchmarks.
//!
//! Each suite is a Rust program (an example of a stage crate, built in release mode) and, with
//! `--vs-pytorch`, a Python reference script under `bench/` that measures the same work with
//! PyTorch 2.13 in the same run. Both print one JSON object as their last stdout line; the harness
//! prints a table of the figures and the ratios, and saves everything to `target/bench/latest.json`.

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Also run the committed PyTorch references (creates bench/.venv with torch==2.13.0 on first use).
    #[arg(long)]
    pub vs_pytorch: bool,
    /// Run only these suites (preprocess, checkpoint, forward, train, predict, export).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
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
}

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
        },
        Suite {
            name: "checkpoint",
            package: "checkpoint",
            example: "bench_io",
            script: "bench/checkpoint_io.py",
            metrics: &[("save_s", Lower), ("load_s", Lower)],
            args: |_| vec![],
        },
        Suite {
            name: "forward",
            package: "model",
            example: "bench_forward",
            script: "bench/forward_pytorch.py",
            metrics: &[("densenet121_img_s", Higher), ("efficientnet_lite0_img_s", Higher)],
            args: |_| vec![],
        },
        Suite {
            name: "train",
            package: "train",
            example: "bench_train",
            script: "bench/train_pytorch.py",
            metrics: &[("valid_acc", Higher), ("wall_s", Lower)],
            args: |d| vec!["--data".into(), d.join("flowers102-mini").display().to_string()],
        },
        Suite {
            name: "predict",
            package: "infer",
            example: "bench_predict",
            script: "bench/predict_pytorch.py",
            metrics: &[("cold_s", Lower), ("warm_img_s", Higher)],
            args: |d| vec!["--data".into(), d.join("flowers102-mini").display().to_string()],
        },
        // "pytorch" is onnxruntime here: petal (libtorch) vs onnxruntime on petal's ONNX export;
        // the example also reports tract (`tract_*` keys).
        Suite {
            name: "export",
            package: "export",
            example: "bench_export",
            script: "bench/export_onnxruntime.py",
            metrics: &[("lite0_b1_img_s", Higher), ("lite0_b32_img_s", Higher), ("densenet121_b1_img_s", Higher), ("densenet121_b32_img_s", Higher)],
            args: |d| vec!["--data".into(), d.join("flowers102-mini").display().to_string()],
        },
    ]
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
            .args(["-m", "pip", "install", "--quiet", "-r"])
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

/// Runs a command and parses the JSON object on its last stdout line.
fn run_json(mut cmd: Command, what: &str) -> Result<Map<String, Value>> {
    cmd.stderr(Stdio::inherit()).stdout(Stdio::piped());
    let out = cmd.output().with_context(|| format!("could not start {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().rev().find(|l| l.trim_start().starts_with('{')).with_context(|| format!("{what} printed no JSON line"))?;
    match serde_json::from_str::<Value>(last) {
        Ok(Value::Object(m)) => Ok(m),
        _ => bail!("{what} printed invalid JSON: {last}"),
    }
}

/// `cargo xtask bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let root = crate::repo_root();
    let py = if args.vs_pytorch { Some(python()?) } else { None };
    let mut report = Map::new();
    let mut rows = Vec::new();
    for s in suites() {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == s.name) {
            continue;
        }
        let example = root.join("crates").join(s.package).join("examples").join(format!("{}.rs", s.example));
        if !example.exists() {
            eprintln!("bench: suite {} has no {} yet; skipped", s.name, example.display());
            continue;
        }
        let extra = (s.args)(&args.data);
        eprintln!("bench: {} (rust)", s.name);
        let mut cmd = crate::cargo()?;
        cmd.args(["run", "--release", "--quiet", "-p", s.package, "--example", s.example, "--", "--json"]).args(&extra);
        let rust = run_json(cmd, &format!("{} benchmark", s.name))?;
        let pyres = match &py {
            Some(py) => {
                eprintln!("bench: {} (pytorch)", s.name);
                let mut cmd = Command::new(py);
                cmd.current_dir(&root).arg(s.script).arg("--json").args(&extra);
                Some(run_json(cmd, &format!("{} PyTorch reference", s.name))?)
            }
            None => None,
        };
        for (key, better) in s.metrics {
            let r = rust.get(*key).and_then(Value::as_f64);
            let p = pyres.as_ref().and_then(|m| m.get(*key)).and_then(Value::as_f64);
            let ratio = match (r, p, better) {
                (Some(r), Some(p), Better::Higher) if p > 0.0 => Some(r / p),
                (Some(r), Some(p), Better::Lower) if r > 0.0 => Some(p / r),
                _ => None,
            };
            rows.push((s.name, *key, r, p, ratio));
        }
        report.insert(s.name.to_string(), json!({ "rust": rust, "pytorch": pyres }));
    }
    println!("| suite | metric | rust | pytorch | advantage (×, >1 = rust better) |");
    println!("|---|---|---|---|---|");
    let fmt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into());
    for (suite, key, r, p, ratio) in rows {
        println!("| {suite} | {key} | {} | {} | {} |", fmt(r), fmt(p), ratio.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into()));
    }
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let machine = json!({ "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "os": std::env::consts::OS, "arch": std::env::consts::ARCH });
    report.insert("machine".into(), machine);
    let path = dir.join("latest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(report))?).with_context(|| format!("could not write {}", path.display()))?;
    eprintln!("bench: results saved to {}", path.display());
    Ok(())
}
