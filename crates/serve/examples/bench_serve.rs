//! Load benchmark of `petal serve` (suite `serve` of `cargo xtask bench`), and with `--vs-pytorch`
//! of the reference FastAPI + PyTorch server `bench/serve_pytorch.py`, in the same run, on the same
//! network and weights (`target/bench/predict-lite0.safetensors`, built by the `predict` suite's
//! example when missing), with the same images and the same load generator.
//!
//! The load generator is bounded and loopback-only: for each of 1, 8 and 32 concurrent clients
//! (closed loop, one raw JPEG per request, keep-alive), `--requests` requests or `--time-cap`
//! seconds, whichever ends first. Both servers run side by side and are measured in `--rounds`
//! rounds (default 5), alternating level by level (petal then PyTorch, then PyTorch then petal in
//! the next round), so that a slow minute of a shared machine falls on both; each figure is the
//! median over the rounds, and every round's figures are kept under `rounds`. It reports
//! throughput, p50, p99 and errors (summed), then each server's peak RSS (VmHWM). Then an overload run against petal serve only: an open loop at twice the
//! best measured throughput for `--overload-s` seconds, every request on its own task with a 60 s
//! client timeout; it counts answered (200), shed (503/429) and lost (no answer) requests, the
//! client's errors for the lost ones (`overload_lost_why`, error → count), and the p99 of the
//! answered ones.
//!
//! Then, when `ab` (ApacheBench, Debian `apache2-utils`) is on the PATH, `--ab-requests` requests of
//! one JPEG with `ab` at 1, 8 and 32 clients (HTTP/1.0, a connection per request), against a fresh
//! petal serve at its defaults and against one with low per-client limits (`--client-rps 5
//! --client-concurrency 4`): complete, failed, non-2xx, and whether ab finished (a hung or reset
//! connection makes it fail).
//!
//! `petal serve` runs with its defaults: `--checkpoint flowers=FILE --addr 127.0.0.1:PORT` and nothing
//! else unless asked (`--max-batch N`); the JSON names the exact `command` and its `non_default_flags`.
//!
//! `cargo run --release -p serve --example bench_serve -- [--json] [--smoke] [--data DIR] [--requests N]
//! [--time-cap S] [--rounds N] [--overload-s S] [--max-batch N] [--vs-pytorch] [--python PY]
//! [--petal BIN] [--checkpoint FILE] [--ab-requests N]`
//!
//! `--petal` measures another binary (e.g. `target/debug/petal`, the one `cargo xtask serve` builds
//! and runs); with `--checkpoint` too, nothing is built. `--smoke` (for
//! `cargo xtask bench --smoke`): generated images, a random-weight checkpoint written by the sibling
//! `bench_predict` example, the dev `petal` binary next to this example's folder, 8 requests per
//! level, one round, a 1 s overload run, no Python.
//!
//! With `--json` the last stdout line is `{"rust": {...}, "pytorch": {...}|null}` with, per side,
//! `c{1,8,32}_{rps,p50_ms,p99_ms,errors}`, `rss_mb` and `rounds`, and for rust `overload_*`,
//! `command`, `non_default_flags` and `ab` (`defaults`/`rate_limited` → `c{1,8,32}` → figures).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

#[path = "harness/mod.rs"]
mod harness;
use harness::{free_port, percentile, start_petal, wait_ready, Inputs};

struct Args {
    json: bool,
    smoke: bool,
    /// `--max-batch` for petal serve, when given (else the server's default).
    max_batch: Option<usize>,
    /// The `petal` binary to measure instead of the release one (e.g. `target/debug/petal`, which `cargo xtask serve` runs).
    petal: Option<PathBuf>,
    /// A checkpoint instead of `target/bench/predict-lite0.safetensors`.
    checkpoint: Option<PathBuf>,
    /// Requests per `ab` run (0: no ab runs).
    ab_requests: usize,
    data: PathBuf,
    requests: usize,
    time_cap: f64,
    overload_s: f64,
    rounds: usize,
    python: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        json: false,
        smoke: false,
        max_batch: None,
        petal: None,
        checkpoint: None,
        ab_requests: 400,
        data: "../shared/data".into(),
        requests: 300,
        time_cap: 60.0,
        overload_s: 10.0,
        rounds: 5,
        python: None,
    };
    let mut vs = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |n: &str| it.next().ok_or(format!("{n} needs a value"));
        match arg.as_str() {
            "--json" => a.json = true,
            "--smoke" => a.smoke = true,
            "--max-batch" => a.max_batch = Some(val("--max-batch")?.parse().map_err(|e| format!("--max-batch: {e}"))?),
            "--petal" => a.petal = Some(val("--petal")?.into()),
            "--checkpoint" => a.checkpoint = Some(val("--checkpoint")?.into()),
            "--ab-requests" => a.ab_requests = val("--ab-requests")?.parse().map_err(|e| format!("--ab-requests: {e}"))?,
            "--vs-pytorch" => vs = true,
            "--data" => a.data = val("--data")?.into(),
            "--python" => a.python = Some(val("--python")?.into()),
            "--requests" => a.requests = val("--requests")?.parse().map_err(|e| format!("--requests: {e}"))?,
            "--time-cap" => a.time_cap = val("--time-cap")?.parse().map_err(|e| format!("--time-cap: {e}"))?,
            "--rounds" => a.rounds = val("--rounds")?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--overload-s" => a.overload_s = val("--overload-s")?.parse().map_err(|e| format!("--overload-s: {e}"))?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.smoke {
        (a.requests, a.time_cap, a.overload_s, a.rounds, a.ab_requests) = (8, 30.0, 1.0, 1, 8);
        a.python = None;
        vs = false;
    }
    if vs && a.python.is_none() {
        a.python = Some(std::env::var_os("PETAL_BENCH_PYTHON").map(PathBuf::from).unwrap_or_else(|| "python3".into()));
    }
    if a.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    Ok(a)
}

/// Closed loop: `clients` tasks send requests back to back until `total` are done or the time cap.
async fn closed_loop(client: &reqwest::Client, url: &str, imgs: &Arc<Vec<Vec<u8>>>, clients: usize, total: usize, cap: f64) -> Map<String, Value> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, imgs, next) = (client.clone(), url.to_string(), imgs.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total || start.elapsed().as_secs_f64() > cap {
                    return out;
                }
                let t = Instant::now();
                let ok = match client.post(&url).body(imgs[i % imgs.len()].clone()).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                out.push((ok, t.elapsed().as_secs_f64() * 1e3));
            }
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap_or_default());
    }
    let wall = start.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = results.iter().filter(|r| r.0).map(|r| r.1).collect();
    lat.sort_by(f64::total_cmp);
    let mut m = Map::new();
    m.insert(format!("c{clients}_rps"), json!(lat.len() as f64 / wall));
    m.insert(format!("c{clients}_p50_ms"), json!(percentile(&lat, 0.5)));
    m.insert(format!("c{clients}_p99_ms"), json!(percentile(&lat, 0.99)));
    m.insert(format!("c{clients}_errors"), json!(results.len() - lat.len()));
    m
}

/// Open loop at `rate` requests/s for `secs`: every request on its own task.
async fn overload(client: &reqwest::Client, url: &str, imgs: &Arc<Vec<Vec<u8>>>, rate: f64, secs: f64) -> Map<String, Value> {
    let n = (rate * secs).ceil() as usize;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        let (client, url, body) = (client.clone(), url.to_string(), imgs[i % imgs.len()].clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = client.post(&url).body(body).timeout(Duration::from_secs(60)).send().await;
            let (status, why) = match r {
                Ok(r) => {
                    let status = r.status().as_u16();
                    match r.bytes().await {
                        Ok(_) => (status, None),
                        Err(e) => (0, Some(format!("{e:?}").replace(&url, "<url>"))),
                    }
                }
                Err(e) => (0, Some(format!("{e:?}").replace(&url, "<url>"))),
            };
            (status, t.elapsed().as_secs_f64() * 1e3, why)
        }));
    }
    let mut res = Vec::with_capacity(n);
    let mut lost_why: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for t in tasks {
        let (status, ms, why) = t.await.unwrap_or((0, 0.0, Some("the task panicked".into())));
        if let Some(why) = why {
            *lost_why
                .entry(
                    why.split(", url:").next().unwrap_or_default().to_string()
                        + &why.rsplit("source:").next().map(|s| format!(" source:{s}")).unwrap_or_default(),
                )
                .or_insert(0) += 1;
        }
        res.push((status, ms));
    }
    let mut ok: Vec<f64> = res.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    ok.sort_by(f64::total_cmp);
    let shed = res.iter().filter(|r| r.0 == 503 || r.0 == 429).count();
    json!({ "overload_offered_rps": rate, "overload_sent": n, "overload_ok": ok.len(), "overload_503": shed,
            "overload_lost": n - ok.len() - shed, "overload_lost_why": lost_why,
            "overload_p50_ms": percentile(&ok, 0.5), "overload_p99_ms": percentile(&ok, 0.99) })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// `ab` at 1, 8 and 32 clients against petal serve with `flags` (its defaults), then with the
/// per-client limits on and low (`--client-rps 5 --client-concurrency 4`: most requests get 429), each
/// on a fresh server: zero hung and zero reset connections is the goal.
fn ab_runs(inp: &Inputs, imgs: &[Vec<u8>], flags: &[String], n: usize) -> Result<Value, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let body = dir.path().join("photo.jpg");
    std::fs::write(&body, imgs.first().ok_or("no image")?).map_err(|e| e.to_string())?;
    let limited: Vec<String> = flags.iter().cloned().chain(["--client-rps", "5", "--client-concurrency", "4"].map(String::from)).collect();
    let mut out = Map::new();
    for (name, flags) in [("defaults", flags.to_vec()), ("rate_limited", limited)] {
        let port = free_port();
        let (child, command) = start_petal(&inp.petal, &inp.ckpt, port, &flags)?;
        let side = Side { name: "petal", base: format!("http://127.0.0.1:{port}"), child, rounds: Vec::new() };
        let rt = tokio::runtime::Handle::current();
        let client = reqwest::Client::new();
        tokio::task::block_in_place(|| rt.block_on(wait_ready(&client, &format!("{}/readyz", side.base))))?;
        let mut runs = Map::new();
        for c in [1, 8, 32] {
            eprintln!("bench_serve: ab, {name}: {c} clients");
            runs.insert(format!("c{c}"), harness::ab(&side.predict_url(), &body, n, c, &[]));
        }
        runs.insert("command".into(), json!(command));
        out.insert(name.into(), Value::Object(runs));
    }
    Ok(Value::Object(out))
}

/// One server under test: its name in the output, base URL, process and the per-round results.
struct Side {
    name: &'static str,
    base: String,
    child: Child,
    rounds: Vec<Map<String, Value>>,
}

impl Side {
    /// The prediction endpoint of the served model.
    fn predict_url(&self) -> String {
        format!("{}/v1/models/flowers/predict", self.base)
    }
}

impl Drop for Side {
    /// Stops the server with SIGTERM (its graceful path) and reaps it, also when the run fails.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// The closed-loop levels, `rounds` times, alternating the servers level by level (ABAB, then BABA in
/// the next round), so that a slow minute of a shared machine falls on both sides and not on one.
/// Each side's figure is the median over the rounds; every round's figures stay in `rounds`.
async fn measure(client: &reqwest::Client, sides: &mut [Side], imgs: &Arc<Vec<Vec<u8>>>, a: &Args) -> Vec<Map<String, Value>> {
    for side in sides.iter() {
        // One untimed warm-up pass.
        closed_loop(client, &side.predict_url(), imgs, 4, 16, a.time_cap).await;
    }
    for round in 0..a.rounds {
        let mut maps = vec![Map::new(); sides.len()];
        for c in [1, 8, 32] {
            for k in 0..sides.len() {
                let i = if round % 2 == 0 { k } else { sides.len() - 1 - k };
                eprintln!("bench_serve: round {}/{}: {}: {c} clients", round + 1, a.rounds, sides[i].name);
                maps[i].extend(closed_loop(client, &sides[i].predict_url(), imgs, c, a.requests, a.time_cap).await);
            }
        }
        for (side, m) in sides.iter_mut().zip(maps) {
            side.rounds.push(m);
        }
    }
    sides
        .iter()
        .map(|side| {
            let mut m = Map::new();
            for c in [1, 8, 32] {
                for key in ["rps", "p50_ms", "p99_ms"] {
                    let k = format!("c{c}_{key}");
                    m.insert(
                        k.clone(),
                        json!(benchkit::median(&side.rounds.iter().filter_map(|r| r.get(&k).and_then(Value::as_f64)).collect::<Vec<_>>())),
                    );
                }
                let k = format!("c{c}_errors");
                m.insert(k.clone(), json!(side.rounds.iter().filter_map(|r| r.get(&k).and_then(Value::as_u64)).sum::<u64>()));
            }
            m.insert("rss_mb".into(), json!(harness::proc_status(side.child.id(), "VmHWM") / 1024.0));
            m.insert("rounds".into(), Value::Array(side.rounds.iter().cloned().map(Value::Object).collect()));
            m
        })
        .collect()
}

/// A sibling program of this example's binary: `bench_predict` beside it, `petal` one folder up.
async fn run(a: Args) -> Result<Value, String> {
    let inp = harness::inputs(a.smoke, &a.data, a.checkpoint.as_deref(), a.petal.as_deref())?;
    let (ckpt, imgs) = (&inp.ckpt, Arc::new(inp.imgs.clone()));
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().map_err(|e| e.to_string())?;

    // petal serve with its defaults: only the checkpoint, the port and what the user asked for.
    let port = free_port();
    let mut flags: Vec<String> = Vec::new();
    if let Some(b) = a.max_batch {
        flags.extend(["--max-batch".into(), b.to_string()]);
    }
    let (petal, command) = start_petal(&inp.petal, ckpt, port, &flags)?;
    let mut sides = vec![Side { name: "petal", base: format!("http://127.0.0.1:{port}"), child: petal, rounds: Vec::new() }];
    wait_ready(&client, &format!("{}/readyz", sides[0].base)).await?;
    if let Some(py) = &a.python {
        let port = free_port();
        let child = Command::new(py)
            .current_dir(harness::root())
            .args(["bench/serve_pytorch.py", "--port", &port.to_string()])
            .arg("--petal-checkpoint")
            .arg(ckpt)
            .arg("--pth")
            .arg(ckpt.with_extension("pth"))
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", py.display()))?;
        sides.push(Side { name: "pytorch", base: format!("http://127.0.0.1:{port}"), child, rounds: Vec::new() });
        wait_ready(&client, &format!("{}/healthz", sides[1].base)).await?;
    }
    let mut results = measure(&client, &mut sides, &imgs, &a).await.into_iter();
    let mut rust = results.next().unwrap_or_default();
    let pytorch = results.next().map_or(Value::Null, Value::Object);
    sides.truncate(1); // stops the reference server
    let petal = &sides[0];
    let capacity = [1, 8, 32].iter().filter_map(|c| rust.get(&format!("c{c}_rps")).and_then(Value::as_f64)).fold(0.0, f64::max);
    eprintln!("bench_serve: overload at {:.1} requests/s (2x capacity) for {} s", 2.0 * capacity, a.overload_s);
    rust.extend(overload(&client, &petal.predict_url(), &imgs, 2.0 * capacity, a.overload_s).await);
    drop(sides);
    if a.ab_requests > 0 && harness::on_path("ab") {
        rust.insert("ab".into(), ab_runs(&inp, &imgs, &flags, a.ab_requests)?);
    } else if a.ab_requests > 0 {
        eprintln!("bench_serve: ab is not on PATH (Debian apache2-utils): no ab runs");
    }
    rust.insert("command".into(), json!(command));
    rust.insert("non_default_flags".into(), json!(flags));
    Ok(json!({ "rust": rust, "pytorch": pytorch }))
}

fn main() {
    harness::main_of("bench_serve", parse, |a| a.json, run);
}
