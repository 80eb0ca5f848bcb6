//! `petal serve`: an HTTP prediction service for petal checkpoints.
//!
//! **Owns:** the HTTP API (`POST /v1/models/{name}/predict`, `GET /v1/models`, `/healthz`,
//! `/readyz`, `/metrics`), the upload page at `/` (embedded in the binary), dynamic batching of
//! concurrent requests into one forward pass ([`batcher`]), and the service's protections: access
//! tokens ([`auth`]), per-client limits ([`limits`]) when exposed, connection, header, body, pixel and time
//! limits, refusals every client can read ([`linger`]), safe response headers, caught panics and graceful shutdown.
//!
//! **Must never know:** training, datasets, or how a network is built: models come in through
//! [`Backend`], implemented on [`infer::Predictor`] by [`PredictorBackend`]. The served checkpoints
//! are fixed at start; no request can load a model, read a file or fetch a URL.
//!
//! Threads: the async runtime only moves bytes. Uploads are decoded and transformed on a rayon pool
//! (several images at once), and every libtorch call (loading, and each model's forward passes, one
//! batch at a time) runs on one OS thread ([`torch_thread`]).
//!
//! Like every library of the workspace it never prints: [`run`] reports what happens through a
//! callback of [`Event`]s, and the `petal` binary prints them.

#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod batcher;
pub mod config;
pub mod error;
pub mod http;
pub mod limits;
pub mod linger;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod server;
pub mod state;
pub mod torch_thread;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{AuthConfig, BackendConfig, BatchingConfig, EffectiveLimits, LimitsConfig, ServeConfig, TimeoutsConfig};
pub use error::{ApiError, Error, Problem};
pub use model::{Backend, BackendError, ClassInfo, ModelInfo, PredictorBackend};
pub use server::{Drained, Server};
pub use torch_thread::TorchThread;

/// Something `run` reports while starting, serving and stopping.
#[derive(Debug, Clone)]
pub enum Event {
    /// A checkpoint was loaded.
    Loaded(Box<ModelInfo>),
    /// The limits in effect (after defaults).
    Limits(Box<EffectiveLimits>),
    /// The server listens.
    Listening(SocketAddr),
    /// A security warning (also shown on `/healthz`).
    Warning(String),
    /// SIGTERM or Ctrl-C arrived: no new connections, in-flight requests finish.
    Draining,
    /// The server stopped.
    Stopped(Drained),
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Loaded(m) => write!(
                f,
                "model {:?}: {} ({}), {} classes, sha256 {}, backbone on {} ({})",
                m.name,
                m.file,
                m.arch,
                m.num_classes,
                &m.checkpoint_sha256[..m.checkpoint_sha256.len().min(16)],
                m.runtime,
                m.precision
            ),
            Event::Limits(l) => write!(f, "{l}"),
            Event::Listening(a) => write!(f, "listening on http://{a}/ (Ctrl-C or SIGTERM to stop)"),
            Event::Warning(w) => write!(f, "WARNING: {w}"),
            Event::Draining => f.write_str("shutting down: no new connections, finishing in-flight requests"),
            Event::Stopped(Drained::Completely) => f.write_str("stopped: every in-flight request was answered"),
            Event::Stopped(Drained::TimedOut) => f.write_str("stopped: the drain timeout passed; remaining connections were closed"),
        }
    }
}

/// Loads every checkpoint of `cfg` as a [`PredictorBackend`].
pub fn load_models(cfg: &ServeConfig, on_event: &mut impl FnMut(Event)) -> Result<Vec<Arc<dyn Backend>>, Error> {
    let mut out: Vec<Arc<dyn Backend>> = Vec::new();
    let b = &cfg.backend;
    let device = b.device.device().map_err(|e| Error::Config(e.to_string()))?;
    for (name, path) in cfg.named_checkpoints()? {
        let b = PredictorBackend::load_with_backend(&name, &path, (device, b.runtime, b.precision), cfg.limits.max_pixels)?;
        on_event(Event::Loaded(Box::new(b.info().clone())));
        out.push(Arc::new(b));
    }
    Ok(out)
}

/// `petal serve`: loads the checkpoints, serves until SIGTERM or Ctrl-C, drains, and returns.
pub fn run(cfg: &ServeConfig, mut on_event: impl FnMut(Event)) -> Result<Drained, Error> {
    cfg.validate()?;
    // Refuse an unprotected address before the (slow) checkpoint loading.
    if cfg.auth.token_file.is_none() && !config::is_local_only(cfg.addr.ip()) && !cfg.auth.insecure_no_auth {
        return Err(Error::Unprotected(cfg.addr));
    }
    memory::keep_freed_heap();
    let torch = TorchThread::spawn()?;
    let threads = cfg.backend.threads;
    let loader = cfg.clone();
    let loaded = torch.run_blocking(move || {
        if threads > 0 {
            tch::set_num_threads(threads as i32);
        }
        let mut events = Vec::new();
        load_models(&loader, &mut |e| events.push(e)).map(|b| (b, events))
    });
    let (backends, events) = loaded.map_err(|e| Error::Runtime(format!("loading the models: {e:?}")))??;
    events.into_iter().for_each(&mut on_event);
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("petal-serve").build().map_err(|e| Error::Runtime(e.to_string()))?;
    rt.block_on(async {
        let server = Server::bind_on(cfg, backends, torch).await?;
        for w in server.warnings() {
            on_event(Event::Warning(w.clone()));
        }
        on_event(Event::Limits(Box::new(cfg.effective_limits())));
        on_event(Event::Listening(server.local_addr()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = server.run(async move {
            let _ = stop_rx.await;
        });
        tokio::pin!(serving);
        let result = tokio::select! {
            d = &mut serving => d,
            _ = shutdown_signal() => {
                on_event(Event::Draining);
                let _ = stop_tx.send(());
                serving.await
            }
        };
        on_event(Event::Stopped(result));
        Ok(result)
    })
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
