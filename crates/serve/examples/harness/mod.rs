//! What the serve benchmarks (`bench_serve`, `bench_soak`) share: the checkpoint, images and
//! `petal` binary of a run (generated ones for `--smoke`), starting `petal serve` with only the
//! flags asked for, waiting until it answers, reading a process's figures from `/proc`, and
//! running ApacheBench (`ab`) against it.

#![allow(dead_code)] // each example uses part of it

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let ok = Command::new(cargo).current_dir(root()).args(args).stdout(Stdio::null()).status().map_err(|e| e.to_string())?;
    ok.success().then_some(()).ok_or(format!("cargo {args:?} failed"))
}

/// Up to 32 image files of the `train/` split of the image folder `data`.
pub fn images(data: &Path) -> Result<Vec<Vec<u8>>, String> {
    let train = data.join("train");
    let mut files = Vec::new();
    for class in std::fs::read_dir(&train).map_err(|e| format!("{}: {e}", train.display()))?.flatten() {
        for f in std::fs::read_dir(class.path()).into_iter().flatten().flatten() {
            files.push(f.path());
        }
    }
    files.sort();
    files.into_iter().step_by(7).take(32).map(|p| std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))).collect()
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(18080)
}

/// A field of `/proc/<pid>/status` in kB or as a count (`VmHWM`, `VmRSS`, `Threads`).
pub fn proc_status(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let v = status.lines().find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')));
    v.and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).unwrap_or(0.0)
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Waits until `url` answers 2xx (five minutes at most).
pub async fn wait_ready(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(300) {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{url} never answered"))
}

/// The `q` quantile of sorted values (NaN when there are none).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Starts `petal serve` on `ckpt` at 127.0.0.1:`port` with `flags` and nothing else; returns the
/// process and its command line (as it would be typed, the checkpoint as given).
pub fn start_petal(petal: &Path, ckpt: &Path, port: u16, flags: &[String]) -> Result<(Child, String), String> {
    let spec = format!("flowers={}", ckpt.display());
    let addr = format!("127.0.0.1:{port}");
    let args: Vec<String> = ["serve", "--checkpoint", &spec, "--addr", &addr].iter().map(|s| s.to_string()).chain(flags.iter().cloned()).collect();
    let child = Command::new(petal).args(&args).stderr(Stdio::null()).spawn().map_err(|e| format!("{}: {e}", petal.display()))?;
    Ok((child, format!("{} {}", petal.display(), args.join(" "))))
}

fn sibling(rel: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no folder for the running example")?;
    Ok(dir.join(rel))
}

/// The checkpoint, the images and the `petal` binary of a run; `_tmp` holds what a smoke run generated.
pub struct Inputs {
    pub ckpt: PathBuf,
    pub imgs: Vec<Vec<u8>>,
    pub petal: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// With `smoke`: generated images, a random-weight checkpoint written by the sibling
/// `bench_predict` example, and the dev `petal` next to this example's folder. Otherwise the JPEGs
/// of `<data>/flowers102-mini`, and `checkpoint` and `petal` when given (else
/// `target/bench/predict-lite0.safetensors`, built by the predict suite's example when missing, and
/// the release `petal`, built).
pub fn inputs(smoke: bool, data: &Path, checkpoint: Option<&Path>, petal: Option<&Path>) -> Result<Inputs, String> {
    if smoke {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = tmp.path().join("data");
        benchkit::image_folder(&data, 3, &[("train", 4)], 96, 96).map_err(|e| e.to_string())?;
        let ckpt = tmp.path().join("smoke.safetensors");
        let ok = Command::new(sibling("bench_predict")?)
            .arg("--save-checkpoint")
            .arg(&ckpt)
            .arg("--data")
            .arg(&data)
            .arg("--smoke")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("bench_predict: {e}"))?;
        ok.success().then_some(()).ok_or("bench_predict --save-checkpoint failed")?;
        let petal = sibling(&format!("../petal{}", std::env::consts::EXE_SUFFIX))?;
        return Ok(Inputs { ckpt, imgs: images(&data)?, petal, _tmp: Some(tmp) });
    }
    let data = data.join("flowers102-mini");
    if let (Some(ckpt), Some(petal)) = (checkpoint, petal) {
        return Ok(Inputs { ckpt: ckpt.to_path_buf(), imgs: images(&data)?, petal: petal.to_path_buf(), _tmp: None });
    }
    let ckpt = checkpoint.map_or_else(|| root().join("target/bench/predict-lite0.safetensors"), Path::to_path_buf);
    if !ckpt.exists() {
        eprintln!("serve benchmark: building {} with the predict suite's example", ckpt.display());
        let d = data.display().to_string();
        cargo(&[
            "run",
            "--release",
            "--quiet",
            "-p",
            "infer",
            "--example",
            "bench_predict",
            "--",
            "--runs",
            "1",
            "--images",
            "8",
            "--batch",
            "8",
            "--data",
            &d,
        ])?;
    }
    let petal = match petal {
        Some(p) => p.to_path_buf(),
        None => {
            cargo(&["build", "--release", "--quiet", "-p", "petal"])?;
            root().join("target/release/petal")
        }
    };
    Ok(Inputs { ckpt, imgs: images(&data)?, petal, _tmp: None })
}

/// The `main` of a serve benchmark: parses the arguments (exit 2 naming the problem), runs the
/// benchmark on a 2-thread runtime, prints its report (pretty on stderr; with `--json` one line on
/// stdout, the benchmark protocol) or its error (exit 1).
pub fn main_of<A, F>(name: &str, parse: impl FnOnce() -> Result<A, String>, json: impl Fn(&A) -> bool, run: impl FnOnce(A) -> F)
where
    F: std::future::Future<Output = Result<serde_json::Value, String>>,
{
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(2);
        }
    };
    let json_out = json(&a);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    match rt.block_on(run(a)) {
        Ok(v) => {
            eprintln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            if json_out {
                println!("{v}");
            }
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(1);
        }
    }
}

/// Whether `program` is a file in one of `PATH`'s folders.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// One `ab -n N -c C -s 60 -l [-H HEADER]… -p FILE -T image/jpeg URL` (HTTP/1.0, a connection per
/// request), `n` at least `c` (ab refuses fewer): its figures, and whether it finished (ab exits
/// non-zero on a hung or reset connection).
pub fn ab(url: &str, body: &Path, n: usize, c: usize, headers: &[String]) -> serde_json::Value {
    let (n, c) = (n.max(c).to_string(), c.to_string());
    let mut cmd = Command::new("ab");
    cmd.args(["-n", &n, "-c", &c, "-s", "60", "-l", "-T", "image/jpeg"]);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    let out = cmd.arg("-p").arg(body).arg(url).output();
    let (ok, text) = match out {
        Ok(o) => (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))),
        Err(e) => (false, e.to_string()),
    };
    let field = |name: &str| -> serde_json::Value {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(serde_json::Value::Null, |v| serde_json::json!(v))
    };
    let error = text.lines().find(|l| l.starts_with("apr_") || l.contains("reset") || l.contains("timeout")).map(str::to_string);
    serde_json::json!({ "finished": ok, "complete": field("Complete requests:"), "failed": field("Failed requests:"),
            "non_2xx": field("Non-2xx responses:"), "rps": field("Requests per second:"), "error": error })
}
