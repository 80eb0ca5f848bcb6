//! Streaming import: converting a large old checkpoint (a torchvision VGG-16 state dict with
//! random weights, ~553 MB, in the zip and the legacy serialization) into a petal checkpoint,
//! against `torch.load` of the same file, same run. Each conversion and each `torch.load` runs
//! in a fresh process, so its peak RSS (`VmHWM`) is its own.
//!
//! `cargo run --release -p model --example bench_convert -- [--json] [--smoke] [--rounds N]
//! [--dir DIR] [--python PY] [--vs-pytorch]`
//!
//! The files are written once into `--dir` (default `$TMPDIR/petal-bench-convert`) by
//! `bench/convert_pytorch.py write` with `--python` (default `$PETAL_PYTHON`, else
//! `../venv-torch/bin/python`, else `python3`). The conversion is what `petal checkpoint convert`
//! does before printing its summary: [`checkpoint::import`] then [`model::legacy::convert_imported`].
//! Reported per serialization: median seconds (`zip_s`, `legacy_s`) and peak RSS as a multiple of
//! the file size (`zip_peak_rss_x`, `legacy_peak_rss_x`); the floor of any conversion that writes a
//! file of that size, a plain copy of the input and its fsync (`zip_copy_s` + `zip_copy_fsync_s`, …); with `--vs-pytorch`, the same for
//! `torch.load` (`bench/convert_pytorch.py load`), as `{"rust": {...}, "pytorch": {...}}`.
//! `--smoke`: the small committed VGG-16 fixtures of `crates/infer/tests/fixtures/legacy`, one
//! round, no Python.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};

/// Flags of this benchmark (plus `--json`/`--smoke`, see `benchkit`).
#[derive(clap::Args)]
struct Args {
    /// Alternating rounds (conversion, then torch.load) per serialization; medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Folder of the generated files (kept between runs).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Python with torch and torchvision (generates the files; runs the reference).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Also time torch.load of each file.
    #[arg(long)]
    vs_pytorch: bool,
    /// Internal: convert INPUT to OUTPUT in this process and report time and VmHWM.
    #[arg(long, num_args = 2, value_names = ["INPUT", "OUTPUT"], hide = true)]
    child: Vec<PathBuf>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/convert_pytorch.py")
}

fn python(a: &Args) -> PathBuf {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../venv-torch/bin/python");
    a.python.clone().or_else(|| std::env::var_os("PETAL_PYTHON").map(PathBuf::from)).unwrap_or(if beside.exists() {
        beside
    } else {
        "python3".into()
    })
}

/// A `/proc/self/status` field in bytes (Linux; 0 elsewhere).
fn status_bytes(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse::<u64>().ok()).unwrap_or(0) * 1024
}

/// The child: one conversion, as `petal checkpoint convert` does it.
fn child(input: &Path, output: &Path) -> benchkit::Result<Value> {
    let t = Instant::now();
    let imported = checkpoint::import(input)?;
    let r = model::legacy::convert_imported(imported, input, output, &model::legacy::LegacyOptions::default())?;
    let s = t.elapsed().as_secs_f64();
    Ok(json!({ "convert_s": s, "peak_rss_bytes": status_bytes("VmHWM"), "arch": r.arch }))
}

/// Runs `cmd` and parses the JSON object on its last stdout line.
fn run_json(mut cmd: Command, what: &str) -> benchkit::Result<Value> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    Ok(serde_json::from_str(last).map_err(|e| format!("{what}: {e} in {last:?}"))?)
}

fn convert_once(input: &Path, out_dir: &Path) -> benchkit::Result<(f64, u64)> {
    let output = out_dir.join("converted.safetensors");
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--json").arg("--child").arg(input).arg(&output);
    let v = run_json(cmd, "conversion")?;
    std::fs::remove_file(&output)?;
    Ok((v["convert_s"].as_f64().unwrap_or(f64::NAN), v["peak_rss_bytes"].as_u64().unwrap_or(0)))
}

/// The floor of any conversion that writes a file of the input's size: a plain copy of the input
/// (`std::fs::copy`, in-kernel where the system allows) and its fsync, timed separately.
fn copy_once(input: &Path, out_dir: &Path) -> benchkit::Result<(f64, f64)> {
    let output = out_dir.join("copy.bin");
    let t = Instant::now();
    std::fs::copy(input, &output)?;
    let copy_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    std::fs::File::open(&output)?.sync_all()?;
    let fsync_s = t.elapsed().as_secs_f64();
    std::fs::remove_file(&output)?;
    Ok((copy_s, fsync_s))
}

fn load_once(py: &Path, input: &Path) -> benchkit::Result<(f64, u64)> {
    let mut cmd = Command::new(py);
    cmd.arg(script()).arg("load").arg(input);
    let v = run_json(cmd, "torch.load")?;
    Ok((v["load_s"].as_f64().unwrap_or(f64::NAN), v["peak_rss_bytes"].as_u64().unwrap_or(0)))
}

/// The two input files: the committed small fixtures (smoke), or the generated VGG-16 files.
fn inputs(a: &Args, smoke: bool) -> benchkit::Result<Vec<(&'static str, PathBuf)>> {
    if smoke {
        let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infer/tests/fixtures/legacy");
        return Ok(vec![("zip", d.join("vgg16_dataparallel_zip.pth")), ("legacy", d.join("vgg16_dataparallel_legacy.pth"))]);
    }
    let dir = a.dir.clone().unwrap_or_else(|| std::env::temp_dir().join("petal-bench-convert"));
    let files = vec![("zip", dir.join("vgg16_zip.pth")), ("legacy", dir.join("vgg16_legacy.pth"))];
    if files.iter().any(|(_, f)| !f.exists()) {
        eprintln!("bench_convert: writing the VGG-16 files into {} with {}", dir.display(), python(a).display());
        let ok = Command::new(python(a)).arg(script()).arg("write").arg(&dir).status()?;
        if !ok.success() {
            return Err("bench/convert_pytorch.py write failed (needs a Python with torch and torchvision: --python)".into());
        }
    }
    Ok(files)
}

fn run(a: &Args, common: &benchkit::Common) -> benchkit::Result<Value> {
    if let [input, output] = a.child.as_slice() {
        return child(input, output);
    }
    let rounds = if common.smoke { 1 } else { a.rounds };
    let vs_pytorch = a.vs_pytorch && !common.smoke;
    let tmp = tempfile::tempdir()?;
    let (mut rust, mut torch) = (serde_json::Map::new(), serde_json::Map::new());
    for (kind, file) in inputs(a, common.smoke)? {
        let size = std::fs::metadata(&file)?.len();
        let _ = std::fs::read(&file)?; // the page cache holds the file for both sides
        let (mut ct, mut cr, mut lt, mut lr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut copies, mut fsyncs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (s, rss) = convert_once(&file, tmp.path())?;
            ct.push(s);
            cr.push(rss as f64 / size as f64);
            let (c, f) = copy_once(&file, tmp.path())?;
            copies.push(c);
            fsyncs.push(f);
            if vs_pytorch {
                let (s, rss) = load_once(&python(a), &file)?;
                lt.push(s);
                lr.push(rss as f64 / size as f64);
            }
        }
        eprintln!("bench_convert: {kind} ({size} bytes): convert {:.3} s, peak RSS {:.2}x the file", benchkit::median(&ct), benchkit::median(&cr));
        rust.insert(format!("{kind}_s"), json!(benchkit::median(&ct)));
        rust.insert(format!("{kind}_peak_rss_x"), json!(benchkit::median(&cr)));
        rust.insert(format!("{kind}_file_bytes"), json!(size));
        let (copy_s, fsync_s) = (benchkit::median(&copies), benchkit::median(&fsyncs));
        eprintln!("bench_convert: {kind}: plain copy {copy_s:.3} s + fsync {fsync_s:.3} s");
        rust.insert(format!("{kind}_copy_s"), json!(copy_s));
        rust.insert(format!("{kind}_copy_fsync_s"), json!(fsync_s));
        if vs_pytorch {
            eprintln!("bench_convert: {kind}: torch.load {:.3} s, peak RSS {:.2}x the file", benchkit::median(&lt), benchkit::median(&lr));
            torch.insert(format!("{kind}_s"), json!(benchkit::median(&lt)));
            torch.insert(format!("{kind}_peak_rss_x"), json!(benchkit::median(&lr)));
        }
    }
    rust.insert("rounds".into(), json!(rounds));
    rust.insert("impl".into(), json!("petal (mmap import, streamed atomic safetensors write)"));
    if vs_pytorch {
        torch.insert("impl".into(), json!("torch.load(map_location='cpu', weights_only=True), torch 2.13"));
    }
    Ok(json!({ "rust": rust, "pytorch": if vs_pytorch { Value::Object(torch) } else { Value::Null } }))
}

fn main() -> std::process::ExitCode {
    benchkit::main("bench_convert", run)
}
