//! A flaky object store costs retries, never data (issue 30): sharded `petal predict` and `petal
//! merge` on `s3://` inputs and outputs, through a fault-injecting proxy written here in front of
//! the local S3 server (moto on 127.0.0.1). The proxy answers the first attempt of every distinct
//! request with one fault in turn: a 500, a 503 `SlowDown`, a connection reset mid-body (an
//! upload cut off half-way, or an answer cut off half-way), or an answer stalled past the client's
//! timeout. The job must retry its way to exactly the output of a fault-free run. Then, with every
//! PUT refused (503), it must end with an error naming the object and the status, publish no
//! object, and complete when rerun against a healthy store.

use crate::shard::{http, kubernetes_env, moto_job, predict, run_all};

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CHECK: &str = "petal/flaky_s3/moto";
/// The client's timeout per attempt in the test (`AWS_TIMEOUT`); a stalled answer waits longer.
const TIMEOUT: &str = "1s";
const STALL: Duration = Duration::from_millis(2500);

/// What the proxy does.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// The first attempt of every distinct request gets a fault, in turn; later attempts pass.
    Flaky,
    /// Every PUT is answered 503 SlowDown; the rest passes.
    PutsRefused,
    /// Everything passes.
    Healthy,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Fault {
    Status500,
    SlowDown,
    ResetMidBody,
    Stall,
}

const FAULTS: [Fault; 4] = [Fault::Status500, Fault::SlowDown, Fault::ResetMidBody, Fault::Stall];

#[derive(Default)]
struct State {
    seen: HashSet<String>,
    next: usize,
    injected: BTreeMap<String, usize>,
    refused_puts: usize,
}

/// The proxy: a listener on 127.0.0.1 that forwards to moto one request per connection.
struct Proxy {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(Mutex::new(Mode::Flaky));
        let state = Arc::new(Mutex::new(State::default()));
        let (m, st) = (mode.clone(), state.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (m, st) = (m.clone(), st.clone());
                std::thread::spawn(move || serve(conn, upstream, &m, &st));
            }
        });
        Proxy { port, mode, state }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }
}

/// Reads a request head (up to the blank line) and returns it with what was read past it.
fn read_head(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn content_length(head: &str) -> usize {
    head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))).unwrap_or(0)
}

/// `head` with its `Connection` header replaced by `Connection: close`.
fn closing(head: &str) -> String {
    let mut lines: Vec<&str> = head.trim_end_matches("\r\n").split("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
    lines.push("Connection: close");
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

fn answer(conn: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
}

fn serve(mut conn: TcpStream, upstream: u16, mode: &Mutex<Mode>, state: &Mutex<State>) {
    let Some((head, mut body)) = read_head(&mut conn) else { return };
    let request_line = head.lines().next().unwrap_or_default().to_string();
    let method = request_line.split(' ').next().unwrap_or_default().to_string();
    let want = content_length(&head);
    let mode = *mode.lock().expect("mode");
    let fault = {
        let mut st = state.lock().expect("state");
        match mode {
            Mode::Flaky if st.seen.insert(request_line.clone()) => {
                let f = FAULTS[st.next % FAULTS.len()];
                st.next += 1;
                *st.injected.entry(format!("{f:?}")).or_default() += 1;
                Some(f)
            }
            Mode::PutsRefused if method == "PUT" => {
                st.refused_puts += 1;
                Some(Fault::SlowDown)
            }
            _ => None,
        }
    };
    // An upload cut off half-way: read half of its body, then drop the connection.
    if fault == Some(Fault::ResetMidBody) && want > 0 {
        while body.len() < want / 2 {
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        return;
    }
    while body.len() < want {
        let mut chunk = [0u8; 65536];
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    match fault {
        Some(Fault::Status500) => return answer(&mut conn, "500 Internal Server Error", ""),
        Some(Fault::SlowDown) => {
            let xml =
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            return answer(&mut conn, "503 Slow Down", xml);
        }
        Some(Fault::Stall) => {
            std::thread::sleep(STALL);
            return;
        }
        _ => {}
    }
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
    if up.write_all(closing(&head).as_bytes()).and_then(|_| up.write_all(&body)).is_err() {
        return;
    }
    let mut response = Vec::new();
    let _ = up.read_to_end(&mut response);
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else { return };
    let resp_head = closing(&String::from_utf8_lossy(&response[..split]));
    let resp_body = &response[split..];
    // An answer cut off half-way (one without a body is cut after its head).
    let sent = if fault == Some(Fault::ResetMidBody) { &resp_body[..resp_body.len() / 2] } else { resp_body };
    let _ = conn.write_all(resp_head.as_bytes()).and_then(|_| conn.write_all(sent));
    if fault == Some(Fault::ResetMidBody) && resp_body.is_empty() {
        let _ = conn.shutdown(std::net::Shutdown::Both);
    }
}

/// The status line of `method path` on moto.
fn status(port: u16, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let auth = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_flaky_object_store_costs_retries_never_data() {
    let Some((f, moto)) = moto_job(CHECK) else { return };
    let proxy = Proxy::start(moto.port);
    let env = |port: u16| {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_TIMEOUT", TIMEOUT.into()),
            ("PETAL_S3_BACKOFF_INITIAL_MS", "20".into()),
            ("PETAL_S3_BACKOFF_MAX_MS", "200".into()),
        ]
    };
    let s3_predict = |port: u16, out: &str, extra: &[(&str, String)]| {
        let mut e = env(port);
        e.extend_from_slice(extra);
        let mut c = predict(&f, "s3://petal/photos/", out, &e);
        c.arg("--staging").arg(f.dir.join(format!("staging-{}", out.replace(['/', ':'], "_"))));
        c
    };
    let merge = |port: u16, out: &str, extra: &[(&str, String)]| {
        let mut c = crate::shard::petal();
        c.args(["merge", out]).envs(env(port).iter().chain(extra).map(|(k, v)| (*k, v.clone())));
        c.output().expect("merge")
    };

    // The reference: one process, straight to moto.
    crate::common::ok(s3_predict(moto.port, "s3://petal/out/clean.csv", &[]).output().expect("clean"), "fault-free predict");
    let clean = http(moto.port, "GET", "/petal/out/clean.csv", b"");

    // Two shards and the merge through the flaky proxy: the same bytes.
    run_all((0..2).map(|k| s3_predict(proxy.port, "s3://petal/out/flaky.csv", &kubernetes_env(k, 2)).spawn().expect("spawn")).collect());
    crate::common::ok(merge(proxy.port, "s3://petal/out/flaky.csv", &[]), "merge through the flaky proxy");
    assert!(http(moto.port, "GET", "/petal/out/flaky.csv", b"") == clean, "the flaky store's output differs from a fault-free run's");
    let injected = proxy.state.lock().expect("state").injected.clone();
    assert_eq!(injected.len(), FAULTS.len(), "every kind of fault was met: {injected:?}");
    assert!(injected.values().sum::<usize>() >= 20, "{injected:?}");

    // Every PUT refused: a clear error naming the object and the status, and no object published.
    proxy.set(Mode::PutsRefused);
    let few = [("PETAL_S3_MAX_RETRIES", "2".to_string())];
    let out = s3_predict(proxy.port, "s3://petal/out/down.csv", &few).output().expect("predict");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "predict succeeded with every PUT refused: {err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains("s3://petal/out/down.csv") && line.contains("503"), "{line}");
    eprintln!("every PUT refused: {line}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(proxy.state.lock().expect("state").refused_puts >= 3, "the PUT was retried");
    assert!(status(moto.port, "GET", "/petal/out/down.csv").contains(" 404"), "nothing was published");

    // The rerun against a healthy store completes.
    proxy.set(Mode::Healthy);
    crate::common::ok(s3_predict(proxy.port, "s3://petal/out/down.csv", &few).output().expect("rerun"), "rerun after the store recovered");
    assert!(http(moto.port, "GET", "/petal/out/down.csv", b"") == clean, "the rerun's output");
    eprintln!("faults injected: {injected:?}");
}
