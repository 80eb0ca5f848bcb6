//! What every request handler shares.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::auth::TokenSet;
use crate::batcher::ModelQueue;
use crate::limits::ClientLimiter;
use crate::metrics::Metrics;
use crate::model::Backend;

/// A served model: the network and its batcher's queue.
pub struct ServedModel {
    /// The network.
    pub backend: Arc<dyn Backend>,
    /// Its batcher's queue.
    pub queue: ModelQueue,
}

/// Request limits the handlers apply.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest body in bytes.
    pub max_body_bytes: usize,
    /// Most images per request.
    pub max_images: usize,
}

/// The server's shared state.
pub struct AppState {
    /// Models by name, fixed at start.
    pub models: BTreeMap<String, ServedModel>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Threads that decode and transform uploads.
    pub decode_pool: rayon::ThreadPool,
    /// Prediction requests in flight in the whole server.
    pub inflight: Arc<Semaphore>,
    /// Access tokens (empty: open).
    pub tokens: TokenSet,
    /// Per-client limits.
    pub limiter: Arc<ClientLimiter>,
    /// Body and image limits.
    pub limits: RequestLimits,
    /// Every limit in effect (shown on `/healthz`).
    pub effective: crate::config::EffectiveLimits,
    /// Security warnings shown at start and on `/healthz`.
    pub warnings: Vec<String>,
    /// False once shutdown has begun.
    pub ready: AtomicBool,
}
