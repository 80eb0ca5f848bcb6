//! Soak of `petal serve` under mixed traffic (suite `soak` of `cargo xtask bench`): a bounded,
//! loopback-only load for `--seconds` (default 600; `--smoke` 20), with the server's access tokens
//! on (`--token-file`, so that the per-client limits apply as they do when the service is exposed)
//! and a 1 MB body limit (`--max-body-bytes 1000000`, so that oversized bodies stay cheap to send).
//! Those are the only non-default flags, and the JSON names them.
//!
//! Traffic, all at once:
//! - **valid** (token A, 3 paced clients at most 4 requests/s each): one JPEG, PNG or WebP per
//!   request in turn, and every 4th request a multipart batch of 3 images;
//! - **abuse** (token C, one client, about 3 requests/s): a junk body, a body over the limit, a
//!   multipart request with too many parts, and a bad token, in turn;
//! - **rate-limited** (token B, 12 concurrent requests back to back): most get 429;
//! - **raw sockets** (token A): an upload cut off half-way, a slow sender (a JPEG in 1 KiB pieces
//!   over about 4 s), and an idle connection held past the server's idle timeout (it must be closed
//!   by the server).
//!
//! Then, when `ab` (ApacheBench) is on the PATH, against the same soaked server: `ab` with the valid
//! token at 1, 8 and 32 clients (`--ab-requests` each, default 200; 0: none), where the per-client
//! limits answer most of the 8- and 32-client requests 429; every run must finish (ab fails on a
//! hung or reset connection).
//!
//! It reports the answers by kind and status, the p50/p99 latency of the valid requests, the valid
//! requests lost (no answer), the 5xx answers other than the designed 503, the server's resident
//! memory at the start, the middle and the end, and its open file descriptors and threads at the
//! start and the end. Goals (issue 30): no 5xx but 503, no valid request lost, RSS growth at most 5 %
//! from the middle to the end, no descriptor or thread growth.
//!
//! `cargo run --release -p serve --example bench_soak -- [--json] [--smoke] [--seconds S] [--data DIR]
//! [--petal BIN] [--checkpoint FILE] [--ab-requests N]`

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "harness/mod.rs"]
mod harness;

const TOKENS: [&str; 3] = ["soak-valid-token-aaaaaaaa", "soak-hammer-token-bbbbbbb", "soak-abuse-token-cccccccc"];
const MAX_BODY: usize = 1_000_000;

struct Args {
    json: bool,
    smoke: bool,
    seconds: f64,
    data: PathBuf,
    petal: Option<PathBuf>,
    checkpoint: Option<PathBuf>,
    ab_requests: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args { json: false, smoke: false, seconds: 600.0, data: "../shared/data".into(), petal: None, checkpoint: None, ab_requests: 200 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |n: &str| it.next().ok_or(format!("{n} needs a value"));
        match arg.as_str() {
            "--json" => a.json = true,
            "--smoke" => a.smoke = true,
            "--seconds" => a.seconds = val("--seconds")?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--data" => a.data = val("--data")?.into(),
            "--petal" => a.petal = Some(val("--petal")?.into()),
            "--ab-requests" => a.ab_requests = val("--ab-requests")?.parse().map_err(|e| format!("--ab-requests: {e}"))?,
            "--checkpoint" => a.checkpoint = Some(val("--checkpoint")?.into()),
            // The harness passes these to self-compared suites; the soak has no reference.
            "--vs-pytorch" => {}
            "--python" => drop(val("--python")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.smoke {
        a.seconds = 20.0;
    }
    Ok(a)
}

/// Answers by kind of traffic and status (`lost` when there was none), and valid latencies.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<String, BTreeMap<String, u64>>,
    valid_ms: Vec<f64>,
}

impl Tally {
    fn add(&mut self, kind: &str, status: &str) {
        *self.statuses.entry(kind.into()).or_default().entry(status.into()).or_default() += 1;
    }
}

/// `image` re-encoded as PNG or WebP (the first decodable JPEG of the set).
fn reencode(jpeg: &[u8], format: image::ImageFormat) -> Vec<u8> {
    let img = image::load_from_memory(jpeg).expect("a JPEG of the set decodes").to_rgb8();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

fn multipart(parts: &[&[u8]]) -> (String, Vec<u8>) {
    let boundary = "soak-boundary-7d1f";
    let mut body = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{i}.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(p);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn send(client: &reqwest::Client, url: &str, token: &str, content_type: &str, body: Vec<u8>) -> Result<u16, String> {
    let r = client.post(url).bearer_auth(token).header("Content-Type", content_type).body(body).send().await.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    r.bytes().await.map_err(|e| e.to_string())?;
    Ok(status)
}

/// Writes `head` and `body` over a raw connection, `pieces` bytes at a time with `pause` between,
/// then reads the status code of the answer (None: no answer).
fn raw(port: u16, head: &str, body: &[u8], pieces: usize, pause: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    s.write_all(head.as_bytes()).ok()?;
    for chunk in body.chunks(pieces.max(1)) {
        s.write_all(chunk).ok()?;
        std::thread::sleep(pause);
    }
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.split(' ').nth(1)?.parse().ok()
}

struct Snapshot {
    rss_mb: f64,
    fds: usize,
    threads: f64,
}

fn snapshot(pid: u32) -> Snapshot {
    Snapshot { rss_mb: harness::proc_status(pid, "VmRSS") / 1024.0, fds: harness::open_fds(pid), threads: harness::proc_status(pid, "Threads") }
}

async fn run(a: Args) -> Result<Value, String> {
    let inp = harness::inputs(a.smoke, &a.data, a.checkpoint.as_deref(), a.petal.as_deref())?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let tokens = tmp.path().join("tokens.txt");
    std::fs::write(&tokens, TOKENS.join("\n")).map_err(|e| e.to_string())?;
    let flags: Vec<String> = vec!["--token-file".into(), tokens.display().to_string(), "--max-body-bytes".into(), MAX_BODY.to_string()];
    let port = harness::free_port();
    let (mut child, command) = harness::start_petal(&inp.petal, &inp.ckpt, port, &flags)?;
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().map_err(|e| e.to_string())?;
    harness::wait_ready(&client, &format!("{base}/readyz")).await?;
    let url = format!("{base}/v1/models/flowers/predict");

    let jpeg = inp.imgs.iter().find(|b| image::load_from_memory(b).is_ok()).cloned().ok_or("no decodable image")?;
    let bodies: Arc<Vec<(&'static str, Vec<u8>)>> = Arc::new(vec![
        ("image/jpeg", jpeg.clone()),
        ("image/png", reencode(&jpeg, image::ImageFormat::Png)),
        ("image/webp", reencode(&jpeg, image::ImageFormat::WebP)),
    ]);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.seconds);
    let first = snapshot(pid);
    let mut tasks = Vec::new();

    // Valid traffic: paced, one JPEG/PNG/WebP at a time, every 4th request a batch of three.
    for w in 0..3usize {
        let (client, url, bodies, tally) = (client.clone(), url.clone(), bodies.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let (ct, body) = if i % 4 == 3 {
                    let parts: Vec<&[u8]> = bodies.iter().map(|(_, b)| b.as_slice()).collect();
                    let (ct, b) = multipart(&parts);
                    (ct, b)
                } else {
                    (bodies[i % 3].0.to_string(), bodies[i % 3].1.clone())
                };
                let kind = if i % 4 == 3 { "valid multipart" } else { bodies[i % 3].0 };
                let r = send(&client, &url, TOKENS[0], &ct, body).await;
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                {
                    let mut t = tally.lock().expect("tally");
                    match r {
                        Ok(s) => {
                            t.add(kind, &s.to_string());
                            if s == 200 {
                                t.valid_ms.push(ms);
                            }
                        }
                        Err(_) => t.add(kind, "lost"),
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(250).saturating_sub(t0.elapsed())).await;
            }
        }));
    }
    // Abuse: junk, oversized, too many parts, a bad token.
    {
        let (client, url, tally, jpeg) = (client.clone(), url.clone(), tally.clone(), jpeg.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            let junk: Vec<u8> = (0..20_000u32).map(|x| (x.wrapping_mul(2654435761) >> 13) as u8).collect();
            let big = vec![0xffu8; MAX_BODY + 500_000];
            let many: Vec<&[u8]> = (0..20).map(|_| jpeg.as_slice()).collect();
            let (many_ct, many_body) = multipart(&many);
            while Instant::now() < deadline {
                let (kind, token, ct, body) = match i % 4 {
                    0 => ("junk body", TOKENS[2], "image/jpeg".to_string(), junk.clone()),
                    1 => ("oversized body", TOKENS[2], "image/jpeg".to_string(), big.clone()),
                    2 => ("too many parts", TOKENS[2], many_ct.clone(), many_body.clone()),
                    _ => ("bad token", "soak-wrong-token-zzzzzzzz", "image/jpeg".to_string(), jpeg.clone()),
                };
                let r = send(&client, &url, token, &ct, body).await;
                tally.lock().expect("tally").add(kind, &r.map_or("no answer".to_string(), |s| s.to_string()));
                i += 1;
                tokio::time::sleep(Duration::from_millis(330)).await;
            }
        }));
    }
    // A client over its limits: 12 requests in flight, back to back.
    for _ in 0..12 {
        let (client, url, tally, jpeg) = (client.clone(), url.clone(), tally.clone(), jpeg.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let r = send(&client, &url, TOKENS[1], "image/jpeg", jpeg.clone()).await;
                let s = r.map_or("no answer".to_string(), |s| s.to_string());
                let pause = s == "429";
                tally.lock().expect("tally").add("rate-limited client", &s);
                if pause {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    // Raw sockets: a cut-off upload, a slow sender, an idle connection.
    let raw_task = {
        let (tally, jpeg) = (tally.clone(), jpeg.clone());
        tokio::task::spawn_blocking(move || {
            let head = |len: usize| {
                format!("POST /v1/models/flowers/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\n\r\n", TOKENS[0])
            };
            let mut i = 0usize;
            while Instant::now() < deadline {
                match i % 3 {
                    0 => {
                        // Half the body, then the connection is dropped: no answer is expected.
                        let sent = TcpStream::connect(("127.0.0.1", port))
                            .and_then(|mut s| s.write_all(head(jpeg.len()).as_bytes()).and_then(|_| s.write_all(&jpeg[..jpeg.len() / 2])));
                        tally.lock().expect("tally").add("cut-off upload", if sent.is_ok() { "closed by the client" } else { "refused" });
                    }
                    1 => {
                        let pause = Duration::from_secs_f64(4.0 / (jpeg.len() / 1024 + 1) as f64);
                        let s = raw(port, &head(jpeg.len()), &jpeg, 1024, pause);
                        tally.lock().expect("tally").add("slow sender", &s.map_or("no answer".to_string(), |s| s.to_string()));
                    }
                    _ => {
                        // Held without a byte: the server closes it after its idle timeout (20 s).
                        let closed = TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
                            s.set_read_timeout(Some(Duration::from_secs(40))).ok()?;
                            let mut b = [0u8; 1];
                            Some(matches!(s.read(&mut b), Ok(0)))
                        });
                        let what = if closed == Some(true) { "closed by the server" } else { "left open" };
                        tally.lock().expect("tally").add("idle connection", what);
                    }
                }
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs_f64(a.seconds / 2.0)).await;
    let middle = snapshot(pid);
    for t in tasks {
        let _ = t.await;
    }
    let _ = raw_task.await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = snapshot(pid);
    let ab = ab_runs(&tmp, &url, &jpeg, if a.smoke { a.ab_requests.min(20) } else { a.ab_requests })?;
    let _ = child.kill();
    let _ = child.wait();

    let t = tally.lock().expect("tally");
    let mut ms = t.valid_ms.clone();
    ms.sort_by(f64::total_cmp);
    let valid_kinds = ["image/jpeg", "image/png", "image/webp", "valid multipart"];
    let count = |kinds: &[&str], pred: &dyn Fn(&str) -> bool| -> u64 {
        t.statuses
            .iter()
            .filter(|(k, _)| kinds.is_empty() || kinds.contains(&k.as_str()))
            .flat_map(|(_, m)| m.iter())
            .filter(|(s, _)| pred(s))
            .map(|(_, n)| n)
            .sum()
    };
    let server_5xx = count(&[], &|s| s.starts_with('5') && s != "503");
    let valid_lost = count(&valid_kinds, &|s| s == "lost");
    // Runs that did not finish (a hung or reset connection); absent when ab did not run.
    let ab_unfinished = ab.as_object().map(|runs| runs.values().filter(|r| r["finished"] != true).count());
    let report = json!({
        "seconds": a.seconds,
        "valid_requests": count(&valid_kinds, &|_| true),
        "valid_ok": count(&valid_kinds, &|s| s == "200"),
        "valid_lost": valid_lost,
        "valid_p50_ms": harness::percentile(&ms, 0.5),
        "valid_p99_ms": harness::percentile(&ms, 0.99),
        "server_5xx": server_5xx,
        "statuses": t.statuses,
        "rss_mb_start": first.rss_mb,
        "rss_mb_middle": middle.rss_mb,
        "rss_mb_end": end.rss_mb,
        "rss_growth_pct": 100.0 * (end.rss_mb - middle.rss_mb) / middle.rss_mb.max(1e-9),
        "fds_start": first.fds,
        "fds_end": end.fds,
        "fd_growth": end.fds as f64 - first.fds as f64,
        "threads_start": first.threads,
        "threads_end": end.threads,
        "thread_growth": end.threads - first.threads,
        "command": command,
        "non_default_flags": flags,
        "ab_unfinished": ab_unfinished,
        "ab": ab,
    });
    // The protocol of self-compared suites; the soak has no reference.
    Ok(json!({ "rust": report, "pytorch": Value::Null }))
}

/// `ab` with the valid token at 1, 8 and 32 clients, `n` requests each, against the soaked server
/// (`null` when `ab` is not on the PATH or `n` is 0).
fn ab_runs(tmp: &tempfile::TempDir, url: &str, jpeg: &[u8], n: usize) -> Result<Value, String> {
    if n == 0 || !harness::on_path("ab") {
        return Ok(Value::Null);
    }
    let body = tmp.path().join("photo.jpg");
    std::fs::write(&body, jpeg).map_err(|e| e.to_string())?;
    let auth = [format!("Authorization: Bearer {}", TOKENS[0])];
    let mut runs = serde_json::Map::new();
    for c in [1, 8, 32] {
        eprintln!("bench_soak: ab, {c} clients");
        runs.insert(format!("c{c}"), harness::ab(url, &body, n, c, &auth));
    }
    Ok(Value::Object(runs))
}

fn main() {
    harness::main_of("bench_soak", parse, |a| a.json, run);
}
