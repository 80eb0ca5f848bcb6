//! In-process test harness: a real server on 127.0.0.1 (ephemeral port) in its own runtime thread,
//! and a [`Backend`] wrapper that can hold a forward pass at a gate or panic on demand.
#![allow(dead_code)]

pub mod fixtures;

pub use fixtures::*;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use infer::ClassProb;
use serve::{Backend, Drained, ModelInfo, PredictorBackend, ServeConfig, Server};

/// Test arguments: port 0 on 127.0.0.1, no per-client limits (tests poll `/metrics`), then `f`
/// changes what the test needs.
pub fn args(f: impl FnOnce(&mut ServeConfig)) -> ServeConfig {
    let mut a = ServeConfig::serving(&[]);
    a.addr = "127.0.0.1:0".parse().expect("addr");
    a.backend.decode_threads = 2;
    a.limits.client_rps = Some(0.0);
    a.limits.client_concurrency = Some(1000);
    f(&mut a);
    a
}

/// The tiny checkpoint loaded as a backend named `name`.
pub fn tiny_backend(dir: &Path, name: &str, seed: i64) -> Arc<dyn Backend> {
    let path = tiny_checkpoint(dir, name, seed);
    Arc::new(PredictorBackend::load(name, &path, tch::Device::Cpu, 40_000_000).expect("load the tiny checkpoint"))
}

/// A running server.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Drained>>,
    /// The temp folder of the server's checkpoint, removed after the server stops.
    dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Binds and runs a server, or returns why it cannot start.
    pub fn try_start(args: ServeConfig, backends: Vec<Arc<dyn Backend>>) -> Result<TestServer, serve::Error> {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                match Server::bind(&args, backends).await {
                    Ok(server) => {
                        let _ = addr_tx.send(Ok(server.local_addr()));
                        server
                            .run(async move {
                                let _ = stop_rx.await;
                            })
                            .await
                    }
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                        Drained::Completely
                    }
                }
            })
        });
        let addr = addr_rx.recv().expect("server thread answered")?;
        Ok(TestServer { addr, stop: Some(stop_tx), thread: Some(thread), dir: None })
    }

    /// A server for one backend that `backend` makes in a fresh temp folder (kept until the server
    /// stops), with the test [`args`] changed by `f`.
    fn in_temp_dir(f: impl FnOnce(&mut ServeConfig), backend: impl FnOnce(&Path) -> Arc<dyn Backend>) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut srv = Self::start(args(f), vec![backend(dir.path())]);
        srv.dir = Some(dir);
        srv
    }

    /// A server for model `flowers`, the tiny checkpoint of `seed`, with the test [`args`] changed
    /// by `f`.
    pub fn flowers(seed: i64, f: impl FnOnce(&mut ServeConfig)) -> TestServer {
        Self::in_temp_dir(f, |dir| tiny_backend(dir, "flowers", seed))
    }

    /// [`TestServer::flowers`] with the backend wrapped in [`Instrumented`], returned too.
    pub fn instrumented(seed: i64, f: impl FnOnce(&mut ServeConfig)) -> (TestServer, Arc<Instrumented>) {
        let mut made = None;
        let srv = Self::in_temp_dir(f, |dir| {
            let inst = Instrumented::new(tiny_backend(dir, "flowers", seed));
            made = Some(inst.clone());
            inst
        });
        (srv, made.expect("the backend was made"))
    }

    /// Binds and runs a server.
    pub fn start(args: ServeConfig, backends: Vec<Arc<dyn Backend>>) -> TestServer {
        Self::try_start(args, backends).expect("server starts")
    }

    /// Starts the shutdown and waits for the drain.
    pub fn stop(mut self) -> Drained {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Drained {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.thread.take().map(|t| t.join().expect("server thread")).unwrap_or(Drained::Completely)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A gate a forward pass waits at while it is closed.
#[derive(Default)]
pub struct Gate {
    closed: Mutex<bool>,
    cv: Condvar,
    /// Forward passes that reached the gate.
    pub arrived: AtomicUsize,
}

impl Gate {
    /// Closes the gate.
    pub fn close(&self) {
        *self.closed.lock().expect("gate") = true;
    }

    /// Opens the gate and wakes waiting forward passes.
    pub fn open(&self) {
        *self.closed.lock().expect("gate") = false;
        self.cv.notify_all();
    }

    fn pass(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let mut closed = self.closed.lock().expect("gate");
        while *closed {
            closed = self.cv.wait(closed).expect("gate");
        }
    }
}

/// A backend around a real one: records batch sizes, can hold forward passes at a [`Gate`], panics
/// in `prepare` on bytes starting with `PANIC`, and in `predict` while `panic_forward` is set; drops
/// the last image's answer while `short_answer` is set (a network that answers too few rows).
pub struct Instrumented {
    /// The real backend.
    pub inner: Arc<dyn Backend>,
    /// Where forward passes wait.
    pub gate: Gate,
    /// Makes the next forward passes panic.
    pub panic_forward: AtomicBool,
    /// Makes the next forward passes answer one image fewer than they were given.
    pub short_answer: AtomicBool,
    /// Images per forward pass, in order.
    pub batches: Mutex<Vec<usize>>,
    /// `max_batch` of every start-up probe ([`Backend::calibrate`]), in order.
    pub calibrations: Mutex<Vec<usize>>,
}

impl Instrumented {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Instrumented {
            inner,
            gate: Gate::default(),
            panic_forward: AtomicBool::new(false),
            short_answer: AtomicBool::new(false),
            batches: Mutex::new(Vec::new()),
            calibrations: Mutex::new(Vec::new()),
        })
    }
}

impl Backend for Instrumented {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    fn prepare(&self, bytes: &[u8], name: &str, tta: preprocess::Tta) -> Result<Vec<u8>, serve::BackendError> {
        if bytes.starts_with(b"PANIC") {
            panic!("injected panic while decoding {name}");
        }
        self.inner.prepare(bytes, name, tta)
    }

    fn predict(&self, input: &[u8], ks: &[usize]) -> Result<Vec<Vec<ClassProb>>, serve::BackendError> {
        self.gate.pass();
        self.batches.lock().expect("batches").push(ks.len());
        if self.panic_forward.load(Ordering::SeqCst) {
            panic!("injected panic in the forward pass");
        }
        let mut answers = self.inner.predict(input, ks)?;
        if self.short_answer.load(Ordering::SeqCst) {
            answers.pop();
        }
        Ok(answers)
    }

    fn calibrate(&self, max_batch: usize) -> Result<Vec<usize>, serve::BackendError> {
        self.calibrations.lock().expect("calibrations").push(max_batch);
        self.inner.calibrate(max_batch)
    }
}

/// Polls `/metrics` until `line` appears (the server's own report, not a timing assumption); panics
/// after a generous limit so that a broken server fails the test instead of hanging it.
pub fn wait_for_metric(addr: SocketAddr, line: &str, auth: &[(&str, &str)]) {
    wait_for(&format!("metric {line:?}"), || {
        let text = http(addr, "GET", "/metrics", auth, b"").text();
        text.lines().any(|l| l == line).then_some(()).ok_or_else(|| format!("(the metrics:\n{text})"))
    });
}

/// Polls until `cond` holds (same rules as [`wait_for`]).
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    wait_for(what, || cond().then_some(()).ok_or_else(String::new));
}

/// Polls `probe` every 10 ms until it gives a value, and returns it; after 120 s, fails the test
/// naming `what` and the state the last probe described.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(state) => assert!(start.elapsed() < Duration::from_secs(120), "{what} never happened {state}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A new connection to `addr` whose reads give up after 60 s (a broken server fails the test
/// instead of hanging it).
pub fn connect(addr: SocketAddr) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    s
}

/// One request on a new connection whose source address is `from` (e.g. 127.0.0.2, another client).
pub fn http_from(from: std::net::IpAddr, addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    use std::io::Write;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(from, 0)).expect("bind the source address");
        socket.connect(addr).await.expect("connect")
    });
    let mut s = stream.into_std().expect("std stream");
    s.set_nonblocking(false).expect("blocking");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    s.write_all(&request_bytes(method, path, headers, body)).expect("send");
    read_response(&mut s)
}
