//! `petal serve` as a real process: SIGTERM drains in-flight requests and exits 0, an exposed
//! address without tokens is refused, `--insecure-no-auth` warns, and `--help` lists the limits.

#[path = "../../crates/serve/tests/it/common/fixtures.rs"]
pub(crate) mod fixtures;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fixtures::*;

fn petal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_petal"))
}

/// A started `petal serve`.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    /// Stderr lines printed before the listening line.
    before: Vec<String>,
    /// Later stderr lines (read by a thread until the process closes stderr).
    lines: mpsc::Receiver<String>,
}

/// Starts `petal serve ARGS` and reads stderr until it says where it listens.
// The child is handed to the caller (which waits for it); only a failed start panics without waiting.
#[allow(clippy::zombie_processes)]
pub(crate) fn spawn(args: &[&str]) -> Served {
    let mut child = petal().arg("serve").args(args).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("start petal serve");
    let stderr: ChildStderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| panic!("petal serve did not start: {seen:?}"));
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split('/').next().and_then(|a| a.parse().ok()).expect("address in the listening line");
            return Served { child, addr, before: seen, lines: rx };
        }
        seen.push(line);
    }
}

pub(crate) fn sigterm(child: &Child) {
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
    assert!(ok.success());
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ckpt = tiny_checkpoint(dir.path(), "flowers", 1);
    // A lone request waits up to 10 s for company (--max-wait-ms): it is surely in flight when SIGTERM comes.
    let spec = format!("flowers={}", ckpt.display());
    let Served { mut child, addr, lines, before } = spawn(&["--checkpoint", &spec, "--addr", "127.0.0.1:0", "--max-wait-ms", "10000"]);
    // On 127.0.0.1 without tokens one host is not throttled: the start says so, and /healthz.
    assert!(before.iter().any(|l| l.contains("limits: per client (token, else IP address): off")), "{before:?}");
    assert_eq!(get(addr, "/healthz").json()["limits"]["per_client"]["concurrency"], serde_json::Value::Null);
    let req = std::thread::spawn(move || http(addr, "POST", "/v1/models/flowers/predict", &[], &png(1)));
    let start = Instant::now();
    while !get(addr, "/metrics").text().lines().any(|l| l == "petal_queue_depth_images{model=\"flowers\"} 1") {
        assert!(start.elapsed() < Duration::from_secs(120), "the request never reached the queue");
        std::thread::sleep(Duration::from_millis(20));
    }
    sigterm(&child);
    let r = req.join().expect("request thread");
    assert_eq!(r.status, 200, "the in-flight request is answered: {}", r.text());
    assert_eq!(r.json()["predictions"][0]["top"].as_array().map(Vec::len), Some(3));
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit status {status}");
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("every in-flight request was answered")), "{rest:?}");
    assert!(std::net::TcpStream::connect(addr).is_err(), "nothing listens after the exit");
}

#[test]
fn an_exposed_address_needs_tokens_and_insecure_no_auth_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ckpt = tiny_checkpoint(dir.path(), "flowers", 1);
    let ckpt = ckpt.to_str().expect("utf-8 path");
    let out = petal().args(["serve", "--checkpoint", ckpt, "--addr", "127.0.0.2:0"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 127.0.0.2:0 without access tokens") && err.contains("--token-file"), "{err}");

    let mut s = spawn(&["--checkpoint", ckpt, "--addr", "127.0.0.2:0", "--insecure-no-auth"]);
    assert!(s.before.iter().any(|l| l.contains("WARNING") && l.contains("without access tokens")), "warned at start: {:?}", s.before);
    let exposed = "limits: per client (token, else IP address): 8 requests in flight, 20 requests/s (burst 40)";
    assert!(s.before.iter().any(|l| l.contains(exposed)), "exposed: the per-client limits are on: {:?}", s.before);
    let health = get(s.addr, "/healthz").json();
    assert_eq!((health["limits"]["per_client"]["concurrency"].as_u64(), health["limits"]["per_client"]["rps"].as_f64()), (Some(8), Some(20.0)));
    assert!(health["warnings"][0].as_str().is_some_and(|w| w.contains("without access tokens")), "{health}");
    sigterm(&s.child);
    assert!(s.child.wait().expect("wait").success());
    let out = petal().args(["serve", "--checkpoint", ckpt, "--addr", "127.0.0.2:0", "--insecure-no-auth", "--max-batch", "0"]).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-batch must be at least 1"));
}

#[test]
fn help_lists_every_limit() {
    let out = petal().args(["serve", "--help"]).output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--token-file",
        "--insecure-no-auth",
        "--cors-origin",
        "--max-batch",
        "--max-wait-ms",
        "--queue",
        "--max-body-bytes",
        "--max-pixels",
        "--client-concurrency",
        "--client-rps",
        "--max-connections",
        "--max-header-bytes",
        "--request-timeout-s",
        "--idle-timeout-s",
        "[default: 127.0.0.1:8080]",
    ] {
        assert!(help.contains(flag), "{flag} missing from petal serve --help:\n{help}");
    }
}
