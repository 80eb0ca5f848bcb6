//! What a server runs with: [`ServeConfig`] (every setting, with `Default`), and the limits it
//! derives ([`EffectiveLimits`]). The `petal` binary's `serve` flags map onto these fields.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Problem;
use crate::linger::Linger;
use crate::Error;

/// Default `--client-concurrency` of an exposed service.
pub const EXPOSED_CLIENT_CONCURRENCY: usize = 8;
/// Default `--client-rps` of an exposed service.
pub const EXPOSED_CLIENT_RPS: f64 = 20.0;

/// Per-client limits in effect (`None`: off).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PerClient {
    /// Whether the service is exposed ([`ServeConfig::exposed`]), which turns the limits on by default.
    pub exposed: bool,
    /// Requests in flight per client.
    pub concurrency: Option<usize>,
    /// Sustained requests per second per client.
    pub rps: Option<f64>,
    /// Token-bucket size (requests a client may send at once above its rate).
    pub burst: Option<f64>,
}

/// Every limit a server runs with, after defaults: printed by `petal serve` at start and shown on `/healthz`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EffectiveLimits {
    /// Per client (token, else IP address).
    pub per_client: PerClient,
    /// Open connections in the whole server.
    pub max_connections: usize,
    /// Open connections per IP address.
    pub max_connections_per_ip: usize,
    /// Prediction requests in flight in the whole server.
    pub max_inflight: usize,
    /// Images admitted per model.
    pub queue_images: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Most images per request.
    pub max_images: usize,
    /// Largest image in pixels.
    pub max_pixels: u64,
    /// Seconds a request may take.
    pub request_timeout_s: u64,
    /// Seconds a connection may stay idle.
    pub idle_timeout_s: u64,
    /// How a closing connection is drained ([`crate::linger`]).
    pub linger: Linger,
}

impl std::fmt::Display for EffectiveLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.per_client;
        f.write_str("limits: per client (token, else IP address): ")?;
        if p.concurrency.is_none() && p.rps.is_none() {
            f.write_str("off (127.0.0.1/::1 without tokens; --client-concurrency and --client-rps set them)")?;
        } else {
            match p.concurrency {
                Some(c) => write!(f, "{c} requests in flight, ")?,
                None => f.write_str("no limit in flight, ")?,
            }
            match (p.rps, p.burst) {
                (Some(r), Some(b)) => write!(f, "{r} requests/s (burst {b})")?,
                _ => f.write_str("no rate limit")?,
            }
        }
        write!(
            f,
            "; per server: {} connections ({} per IP), {} predictions in flight, {} queued images per model, bodies up to {} bytes, \
             {} images per request, {} s per request",
            self.max_connections,
            self.max_connections_per_ip,
            self.max_inflight,
            self.queue_images,
            self.max_body_bytes,
            self.max_images,
            self.request_timeout_s
        )
    }
}

/// Whether `ip` is 127.0.0.1 or ::1, the only addresses served without access tokens. Other
/// loopback addresses (127.0.0.2, ...) count as exposed: containers and port forwarders publish them.
pub fn is_local_only(ip: std::net::IpAddr) -> bool {
    ip == std::net::Ipv4Addr::LOCALHOST || ip == std::net::Ipv6Addr::LOCALHOST
}

/// Who may use the service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthConfig {
    /// File of access tokens, one per line (blank lines and `#` comments ignored, at least 16
    /// characters each). When given, /v1/* and /metrics need `Authorization: Bearer <token>`.
    pub token_file: Option<PathBuf>,
    /// Allow an address other than 127.0.0.1 or ::1 without tokens: anyone who reaches the port can
    /// use the service.
    pub insecure_no_auth: bool,
    /// Origins allowed to call the API from browsers (CORS); none by default.
    pub cors_origin: Vec<String>,
}

/// What runs the networks.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Where the networks run.
    pub device: model::DeviceSpec,
    /// What runs the backbone (`auto`: onnxruntime on the CPU when provisioned, else libtorch).
    pub runtime: infer::Runtime,
    /// The backbone's precision on onnxruntime (`auto`: int8 when `petal quantize` accepted it).
    pub precision: infer::Precision,
    /// libtorch intra-op threads for the forward pass (0: libtorch's default).
    pub threads: usize,
    /// Threads that decode and transform uploaded images (0: one per core).
    pub decode_threads: usize,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            device: model::DeviceSpec::Cpu,
            runtime: infer::Runtime::Auto,
            precision: infer::Precision::Auto,
            threads: 0,
            decode_threads: 0,
        }
    }
}

/// Dynamic batching.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchingConfig {
    /// Most images in one forward pass. A lone request runs alone; at start the passes of 1 to
    /// this many images are calibrated so that answers do not depend on what shared the pass. 2 suits
    /// a few cores and little memory (on 2 cores with EfficientNet-Lite0, 4 serves ~20 % more
    /// requests per second but peaks 50–90 MB higher).
    pub max_batch: usize,
    /// Skip the start-up calibration and run every pass at its own size: a faster start, but where
    /// the backbone's convolutions round differently per batch size (several threads per pass), an
    /// image's probabilities then differ in the last bits with the pass it shares.
    pub unpadded_batches: bool,
    /// Longest time the first request of a batch waits for more, in milliseconds (0: a lone request
    /// runs at once, and a batch is whatever queued up while the previous pass ran).
    pub max_wait_ms: u64,
    /// Images admitted per model (queued or in a forward pass); beyond it 503 with Retry-After.
    pub queue: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig { max_batch: 2, unpadded_batches: false, max_wait_ms: 0, queue: 128 }
    }
}

/// Limits on what clients may send and hold.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Prediction requests in flight in the whole server; beyond it 503.
    pub max_inflight: usize,
    /// Largest request body in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Most images in one multipart request.
    pub max_images: usize,
    /// Largest accepted image in pixels (checked before decoding).
    pub max_pixels: u64,
    /// Concurrent requests per client (token, else IP address); beyond it 429. `None`: 8 when the
    /// service is exposed, off on 127.0.0.1/::1 without tokens.
    pub client_concurrency: Option<usize>,
    /// Sustained requests per second per client (0: unlimited). `None`: 20 when exposed, else off.
    pub client_rps: Option<f64>,
    /// Requests a client may send at once above its rate (0: twice the rate, at least 1).
    pub client_burst: f64,
    /// Open connections in the whole server; beyond it new connections get 503 and are closed.
    pub max_connections: usize,
    /// Open connections per IP address.
    pub max_connections_per_ip: usize,
    /// Largest request head in bytes (at least 8192); larger ones get 431.
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_inflight: 64,
            max_body_bytes: 20 * 1024 * 1024,
            max_images: 16,
            max_pixels: 40_000_000,
            client_concurrency: None,
            client_rps: None,
            client_burst: 0.0,
            max_connections: 512,
            max_connections_per_ip: 64,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
        }
    }
}

/// How long things may take.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeoutsConfig {
    /// Seconds a request may take, from its headers to its answer (slow bodies get 408).
    pub request_timeout_s: u64,
    /// Seconds a connection may stay idle, or take to send a request's headers.
    pub idle_timeout_s: u64,
    /// Seconds to let in-flight requests finish after SIGTERM or Ctrl-C.
    pub drain_timeout_s: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig { request_timeout_s: 30, idle_timeout_s: 20, drain_timeout_s: 30 }
    }
}

/// Everything a server runs with. [`ServeConfig::default`] holds every default `petal serve`
/// has (the binary's flags are these fields); a library user starts from
/// [`ServeConfig::serving`] and changes single fields. Every limit has a safe default.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// The checkpoints served, each `FILE` (served under its file stem) or `NAME=FILE`. The set is
    /// fixed at start: no request can load another model or file.
    pub checkpoints: Vec<String>,
    /// Address to listen on. Anything but 127.0.0.1 or ::1 needs tokens or `insecure_no_auth`.
    pub addr: SocketAddr,
    /// Who may use the service.
    pub auth: AuthConfig,
    /// What runs the networks.
    pub backend: BackendConfig,
    /// Dynamic batching.
    pub batching: BatchingConfig,
    /// Limits on clients and requests.
    pub limits: LimitsConfig,
    /// Timeouts.
    pub timeouts: TimeoutsConfig,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            checkpoints: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth: AuthConfig::default(),
            backend: BackendConfig::default(),
            batching: BatchingConfig::default(),
            limits: LimitsConfig::default(),
            timeouts: TimeoutsConfig::default(),
        }
    }
}

impl ServeConfig {
    /// Every default, serving `checkpoints` (`[NAME=]FILE`).
    pub fn serving(checkpoints: &[&str]) -> Self {
        ServeConfig { checkpoints: checkpoints.iter().map(|c| (*c).to_string()).collect(), ..ServeConfig::default() }
    }

    /// Checks the ranges of the settings; an error names the field (`max_batch`), which the
    /// binary's flag of the same name (`--max-batch`) sets.
    pub fn validate(&self) -> Result<(), Error> {
        let (b, l, t) = (&self.batching, &self.limits, &self.timeouts);
        let bad = |field: &'static str, problem: Problem| Err(Error::Setting { field, problem });
        let positive = [
            ("max_batch", b.max_batch),
            ("queue", b.queue),
            ("max_inflight", l.max_inflight),
            ("max_body_bytes", l.max_body_bytes),
            ("max_images", l.max_images),
            ("client_concurrency", l.client_concurrency.unwrap_or(1)),
            ("max_connections", l.max_connections),
            ("max_connections_per_ip", l.max_connections_per_ip),
            ("max_headers", l.max_headers),
            ("request_timeout_s", t.request_timeout_s as usize),
            ("idle_timeout_s", t.idle_timeout_s as usize),
        ];
        if let Some(&(field, value)) = positive.iter().find(|(_, v)| *v == 0) {
            return bad(field, Problem::Below { min: 1, value });
        }
        if l.max_header_bytes < 8192 {
            return bad("max_header_bytes", Problem::Below { min: 8192, value: l.max_header_bytes });
        }
        if b.queue < l.max_images {
            return bad("queue", Problem::BelowSetting { value: b.queue, other: "max_images", other_value: l.max_images });
        }
        let rps = l.client_rps.unwrap_or(0.0);
        if !(rps.is_finite() && rps >= 0.0) {
            return bad("client_rps", Problem::NotFiniteOrNegative);
        }
        if !(l.client_burst.is_finite() && l.client_burst >= 0.0) {
            return bad("client_burst", Problem::NotFiniteOrNegative);
        }
        if l.max_pixels == 0 {
            return bad("max_pixels", Problem::Below { min: 1, value: 0 });
        }
        Ok(())
    }

    /// Whether the service is exposed: access tokens are configured, or it listens on an address other
    /// than 127.0.0.1 and ::1. Only then do the per-client limits apply by default.
    pub fn exposed(&self) -> bool {
        self.auth.token_file.is_some() || !is_local_only(self.addr.ip())
    }

    /// The limits this configuration serves with (printed at start, shown on `/healthz`).
    pub fn effective_limits(&self) -> EffectiveLimits {
        let (l, exposed) = (&self.limits, self.exposed());
        let concurrency = l.client_concurrency.or(exposed.then_some(EXPOSED_CLIENT_CONCURRENCY));
        let rps = l.client_rps.or(exposed.then_some(EXPOSED_CLIENT_RPS)).filter(|&r| r > 0.0);
        let burst = rps.map(|r| if l.client_burst > 0.0 { l.client_burst } else { (2.0 * r).max(1.0) });
        EffectiveLimits {
            per_client: PerClient { exposed, concurrency, rps, burst },
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
            max_inflight: l.max_inflight,
            queue_images: self.batching.queue,
            max_body_bytes: l.max_body_bytes,
            max_images: l.max_images,
            max_pixels: l.max_pixels,
            request_timeout_s: self.timeouts.request_timeout_s,
            idle_timeout_s: self.timeouts.idle_timeout_s,
            linger: Linger::for_body_limit(l.max_body_bytes),
        }
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.request_timeout_s)
    }

    /// The idle (and header-read) timeout of connections.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.idle_timeout_s)
    }

    /// Splits the checkpoints into (name, file) pairs; names must be unique and URL-safe.
    pub fn named_checkpoints(&self) -> Result<Vec<(String, PathBuf)>, Error> {
        let mut out: Vec<(String, PathBuf)> = Vec::new();
        for spec in &self.checkpoints {
            let (name, file) = match spec.split_once('=') {
                Some((n, f)) if !n.is_empty() && !n.contains('/') => (n.to_string(), PathBuf::from(f)),
                _ => {
                    let file = PathBuf::from(spec);
                    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_string();
                    (stem, file)
                }
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || name.starts_with('.') {
                return Err(Error::Config(format!(
                    "model name {name:?} (from checkpoint {spec}) may only hold letters, digits, '-', '_' and '.'; use NAME=FILE"
                )));
            }
            if out.iter().any(|(n, _)| *n == name) {
                return Err(Error::Config(format!("two checkpoints are named {name:?}; name them with NAME=FILE")));
            }
            out.push((name, file));
        }
        if out.is_empty() {
            return Err(Error::Config("no checkpoint to serve".into()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(addr: &str, f: impl FnOnce(&mut ServeConfig)) -> PerClient {
        let mut a = ServeConfig::serving(&["m.safetensors"]);
        a.addr = addr.parse().expect("addr");
        f(&mut a);
        a.effective_limits().per_client
    }

    #[test]
    fn per_client_limits_apply_by_default_only_when_exposed() {
        let off = PerClient { exposed: false, concurrency: None, rps: None, burst: None };
        assert_eq!(at("127.0.0.1:8080", |_| {}), off, "one host on loopback is not throttled");
        assert_eq!(at("[::1]:8080", |_| {}), off);
        let on = PerClient { exposed: true, concurrency: Some(8), rps: Some(20.0), burst: Some(40.0) };
        assert_eq!(at("127.0.0.1:8080", |a| a.auth.token_file = Some("t".into())), on, "tokens: per-token limits");
        assert_eq!(at("0.0.0.0:8080", |a| a.auth.insecure_no_auth = true), on);
        assert_eq!(at("127.0.0.2:8080", |_| {}), on, "127.0.0.2 counts as exposed");
    }

    #[test]
    fn given_limits_apply_everywhere() {
        let p = at("127.0.0.1:8080", |a| a.limits.client_rps = Some(5.0));
        assert_eq!((p.concurrency, p.rps, p.burst), (None, Some(5.0), Some(10.0)));
        let p = at("127.0.0.1:8080", |a| a.limits.client_concurrency = Some(3));
        assert_eq!((p.concurrency, p.rps), (Some(3), None));
        let p = at("0.0.0.0:8080", |a| {
            a.limits.client_rps = Some(0.0);
            a.limits.client_burst = 7.0;
        });
        assert_eq!((p.concurrency, p.rps, p.burst), (Some(8), None, None), "--client-rps 0 turns the rate off");
        let text = ServeConfig::serving(&["m"]).effective_limits().to_string();
        assert!(text.starts_with("limits: per client (token, else IP address): off"), "{text}");
        let mut a = ServeConfig::serving(&["m"]);
        a.limits.client_concurrency = Some(0);
        let e = a.validate().expect_err("a concurrency of 0 is refused");
        assert!(matches!(e, Error::Setting { field: "client_concurrency", .. }), "{e}");
        assert_eq!(e.to_string(), "client_concurrency must be at least 1, not 0");
        // A setting that depends on another names it by field, which a front end can rename.
        let mut a = ServeConfig::serving(&["m"]);
        (a.batching.queue, a.limits.max_images) = (4, 8);
        let e = a.validate().expect_err("a queue smaller than one request is refused");
        assert_eq!(e.to_string(), "queue (4) must be at least max_images (8)");
        let Error::Setting { problem, .. } = e else { panic!("a setting error") };
        assert_eq!(problem.describe(|f| format!("--{}", f.replace('_', "-"))), "(4) must be at least --max-images (8)");
        assert!(ServeConfig::serving(&["m"]).validate().is_ok(), "the defaults are valid");
    }
}
