//! The listening socket: accepting connections within the connection limits, HTTP/1.1 with
//! header-size and header-read/idle timeouts, graceful shutdown, and a lingering close of every
//! connection ([`crate::linger`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::auth::TokenSet;
use crate::batcher::{self, BatchConfig};
use crate::config::is_local_only;
use crate::http::{router, Peer};
use crate::limits::ClientLimiter;
use crate::linger::{Linger, Returned};
use crate::metrics::Metrics;
use crate::model::Backend;
use crate::state::{AppState, RequestLimits, ServedModel};
use crate::torch_thread::TorchThread;
use crate::{Error, ServeConfig};

/// How a server run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every in-flight request was answered.
    Completely,
    /// The drain timeout passed with connections still open (they were closed).
    TimedOut,
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    app: axum::Router,
    http: http1::Builder,
    max_connections: usize,
    max_per_ip: usize,
    drain_timeout: Duration,
    linger: Linger,
    /// Connections refused over the limits that are being answered and drained (at most `max_connections`).
    refusing: Arc<Semaphore>,
}

/// Security warnings for a configuration (shown at start and on `/healthz`).
pub fn warnings(args: &ServeConfig, tokens: &TokenSet) -> Vec<String> {
    let mut w = Vec::new();
    if tokens.is_empty() && !is_local_only(args.addr.ip()) {
        w.push(format!("listening on {} without access tokens (--insecure-no-auth): anyone who can reach this port can use the service", args.addr));
    }
    w
}

impl Server {
    /// Checks the configuration, starts one batcher per model and binds `args.addr`. Must be called
    /// inside a tokio runtime. An address other than 127.0.0.1 or ::1 without tokens is refused unless
    /// `auth.insecure_no_auth` is set.
    ///
    /// The process's allocator is the embedder's: [`crate::run`] calls [`crate::memory::keep_freed_heap`]
    /// first, so that memory freed after a burst of large batches is reused rather than returned
    /// and faulted in again; an embedder that wants the same behaviour calls it before loading
    /// its models.
    pub async fn bind(args: &ServeConfig, backends: Vec<Arc<dyn Backend>>) -> Result<Server, Error> {
        Self::bind_on(args, backends, TorchThread::spawn()?).await
    }

    /// [`Server::bind`], running every forward pass on `torch` (the thread that loaded the models:
    /// see [`crate::torch_thread`] for why it matters).
    pub async fn bind_on(args: &ServeConfig, backends: Vec<Arc<dyn Backend>>, torch: TorchThread) -> Result<Server, Error> {
        args.validate()?;
        let tokens = match &args.auth.token_file {
            Some(f) => TokenSet::from_file(f)?,
            None => TokenSet::default(),
        };
        if tokens.is_empty() && !is_local_only(args.addr.ip()) && !args.auth.insecure_no_auth {
            return Err(Error::Unprotected(args.addr));
        }
        let metrics = Arc::new(Metrics::default());
        let cfg = BatchConfig {
            max_batch: args.batching.max_batch,
            max_wait: Duration::from_millis(args.batching.max_wait_ms),
            queue: args.batching.queue,
            pad: !args.batching.unpadded_batches,
        };
        let mut models = BTreeMap::new();
        for backend in backends {
            let name = backend.info().name.clone();
            let (queue, run_as) = batcher::start(backend.clone(), cfg, metrics.clone(), torch.clone())
                .await
                .map_err(|e| Error::Config(format!("model {name:?}: calibrating batch sizes: {e}")))?;
            tracing::info!("model {name:?}: passes of 1..={} images run as {:?} images", cfg.max_batch, &run_as[1..]);
            if models.insert(name.clone(), ServedModel { backend, queue }).is_some() {
                return Err(Error::Config(format!("two models are named {name:?}")));
            }
        }
        let decode_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(args.backend.decode_threads)
            .thread_name(|i| format!("petal-decode-{i}"))
            .build()
            .map_err(|e| Error::Runtime(e.to_string()))?;
        let state = Arc::new(AppState {
            models,
            metrics,
            decode_pool,
            inflight: Arc::new(Semaphore::new(args.limits.max_inflight)),
            limiter: ClientLimiter::from_limits(&args.effective_limits().per_client),
            limits: RequestLimits { max_body_bytes: args.limits.max_body_bytes, max_images: args.limits.max_images },
            effective: args.effective_limits(),
            warnings: warnings(args, &tokens),
            tokens,
            ready: true.into(),
        });
        let app = router(state.clone(), args.request_timeout(), &args.auth.cors_origin)?;
        let listener = TcpListener::bind(args.addr).await.map_err(|source| Error::Bind { addr: args.addr, source })?;
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(args.idle_timeout())
            .max_buf_size(args.limits.max_header_bytes)
            .max_headers(args.limits.max_headers)
            .keep_alive(true);
        Ok(Server {
            listener,
            state,
            app,
            http,
            max_connections: args.limits.max_connections,
            max_per_ip: args.limits.max_connections_per_ip,
            drain_timeout: Duration::from_secs(args.timeouts.drain_timeout_s),
            linger: Linger::for_body_limit(args.limits.max_body_bytes),
            refusing: Arc::new(Semaphore::new(args.limits.max_connections)),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has a local address; fall back to an unspecified one if the OS says otherwise.
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The security warnings of this configuration.
    pub fn warnings(&self) -> &[String] {
        &self.state.warnings
    }

    /// Serves one connection in memory, with no socket: the client sends `raw` and closes its
    /// sending side, and the connection goes through what a connection from 127.0.0.1 goes through
    /// (the HTTP settings and header limits, the router, authentication, per-client limits, body and
    /// multipart parsing, decoding, the batcher), every request in `raw` answered in turn. Returns
    /// every byte the server wrote. For tests and the request front end's fuzz target
    /// (`crates/fuzz`).
    pub async fn serve_bytes(&self, raw: &[u8]) -> Vec<u8> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let app = self.app.clone();
        let peer = SocketAddr::from(([127, 0, 0, 1], 9));
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            app.clone().oneshot(req)
        });
        // The client half-closes once it has sent `raw`; every request in it is still answered.
        let mut http = self.http.clone();
        http.half_close(true);
        let conn = http.serve_connection(TokioIo::new(server), svc);
        let (mut rd, mut wr) = tokio::io::split(client);
        let send = async move {
            let _ = wr.write_all(raw).await;
            let _ = wr.shutdown().await;
        };
        let receive = async move {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        let (_, _, out) = tokio::join!(conn, send, receive);
        out
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// (up to the drain timeout) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Drained {
        let graceful = GracefulShutdown::new();
        let conns = Arc::new(ConnCount::default());
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    // Out of file descriptors and the like: back off instead of spinning.
                    Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue }
                },
                _ = &mut shutdown => break,
            };
            let Some(slot) = conns.open(peer.ip(), self.max_connections, self.max_per_ip) else {
                // Drained like any closing connection while few are refused at once; beyond that closed at once.
                let linger = self.refusing.clone().try_acquire_owned().ok().map(|permit| (self.linger, permit));
                tokio::spawn(refuse(stream, linger));
                continue;
            };
            let app = self.app.clone();
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                app.clone().oneshot(req)
            });
            let (io, returned) = Returned::new(stream);
            let conn = graceful.watch(self.http.serve_connection(TokioIo::new(io), svc));
            let linger = self.linger;
            tokio::spawn(async move {
                let _ = conn.await;
                if let Ok(stream) = returned.await {
                    linger.close(stream).await;
                }
                drop(slot);
            });
        }
        self.state.ready.store(false, Ordering::Relaxed);
        drop(self.listener);
        tokio::select! {
            _ = graceful.shutdown() => Drained::Completely,
            _ = tokio::time::sleep(self.drain_timeout) => Drained::TimedOut,
        }
    }
}

/// Reads what the client sends until the end of its request head (`\r\n\r\n`), at most
/// [`REFUSE_HEAD_BYTES`] or [`REFUSE_HEAD_WAIT`]: an HTTP client treats an answer that arrives
/// before it has sent its request as a broken connection (hyper: "unexpected message"), so a
/// refusal waits for the request it answers.
async fn read_request_head(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let mut seen: Vec<u8> = Vec::new();
    let _ = tokio::time::timeout(REFUSE_HEAD_WAIT, async {
        while seen.len() < REFUSE_HEAD_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let from = seen.len().saturating_sub(3);
                    seen.extend_from_slice(&buf[..n]);
                    if seen[from..].windows(4).any(|w| w == b"\r\n\r\n") {
                        return;
                    }
                }
            }
        }
    })
    .await;
}

/// The most bytes a refused connection's request head is read for (see [`read_request_head`]).
const REFUSE_HEAD_BYTES: usize = 16 * 1024;
/// The longest a refused connection's request head is waited for.
const REFUSE_HEAD_WAIT: Duration = Duration::from_secs(1);

/// Answers a connection over the limits with 503 (`Connection: close`, Retry-After) once its
/// request head has arrived ([`read_request_head`]), then closes it: with a lingering close when
/// `linger` is given (the client reads the answer even while it uploads), else at once.
async fn refuse(mut stream: TcpStream, linger: Option<(Linger, tokio::sync::OwnedSemaphorePermit)>) {
    read_request_head(&mut stream).await;
    let body = r#"{"error":{"code":"overloaded","message":"too many open connections; retry shortly"}}"#;
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let written = tokio::time::timeout(Duration::from_secs(1), stream.write_all(msg.as_bytes())).await;
    if let (Ok(Ok(())), Some((linger, _permit))) = (written, linger) {
        linger.close(stream).await;
    }
}

/// Open connections, in total and per IP address.
#[derive(Default)]
struct ConnCount {
    inner: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One open connection; counted until dropped.
struct ConnSlot {
    count: Arc<ConnCount>,
    ip: IpAddr,
}

impl ConnCount {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<IpAddr, usize>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(self: &Arc<Self>, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Option<ConnSlot> {
        let mut guard = self.lock();
        let (total, by_ip) = &mut *guard;
        let n = by_ip.get(&ip).copied().unwrap_or(0);
        if *total >= max_total || n >= max_per_ip {
            return None;
        }
        *total += 1;
        by_ip.insert(ip, n + 1);
        Some(ConnSlot { count: self.clone(), ip })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut guard = self.count.lock();
        let (total, by_ip) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}
