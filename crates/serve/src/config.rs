//! The command line of `petal serve` and the settings derived from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::linger::Linger;
use crate::Error;

/// Default `--client-concurrency` of an exposed service.
pub const EXPOSED_CLIENT_CONCURRENCY: usize = 8;
/// Default `--client-rps` of an exposed service.
pub const EXPOSED_CLIENT_RPS: f64 = 20.0;

/// Per-client limits in effect (`None`: off).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PerClient {
    /// Whether the service is exposed ([`ServeArgs::exposed`]), which turns the limits on by default.
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

/// Where the networks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceArg {
    /// The CPU.
    #[default]
    Cpu,
    /// The first CUDA device (needs a CUDA build of libtorch).
    Cuda,
}

impl DeviceArg {
    /// The libtorch device.
    pub fn device(self) -> tch::Device {
        match self {
            DeviceArg::Cpu => tch::Device::Cpu,
            DeviceArg::Cuda => tch::Device::Cuda(0),
        }
    }
}

/// Arguments of `petal serve`. Every limit has a safe default.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// A checkpoint to serve, as `FILE` (served under its file stem) or `NAME=FILE`; repeat for several.
    /// The set of served checkpoints is fixed at start: no request can load another model or file.
    #[arg(long = "checkpoint", value_name = "[NAME=]FILE", required = true)]
    pub checkpoints: Vec<String>,
    /// Address to listen on. Anything but 127.0.0.1 or ::1 needs --token-file or --insecure-no-auth.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// File of access tokens, one per line (blank lines and `#` comments ignored, at least 16 characters each).
    /// When given, /v1/* and /metrics need `Authorization: Bearer <token>`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Allow a non-loopback --addr without tokens: anyone who reaches the port can use the service.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Origins allowed to call the API from browsers (CORS), e.g. `https://app.example.org`; none by default.
    #[arg(long, value_name = "ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// Device the networks run on.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// What runs the backbone: auto (onnxruntime on the CPU when `cargo xtask setup` provisioned
    /// it, else libtorch), torch or onnxruntime. The head always runs on libtorch; answers stay
    /// independent of the batch they come in (the start-up probe calibrates either runtime).
    #[arg(long, value_enum, default_value_t = infer::Runtime::Auto)]
    pub runtime: infer::Runtime,
    /// The backbone's precision on onnxruntime: auto (int8 when `petal quantize` accepted it for
    /// the checkpoint, else fp32), fp32 or int8.
    #[arg(long, value_enum, default_value_t = infer::Precision::Auto)]
    pub precision: infer::Precision,
    /// libtorch intra-op threads for the forward pass (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Threads that decode and transform uploaded images (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub decode_threads: usize,
    /// Most images in one forward pass (dynamic batching). A lone request runs alone; the
    /// classifier head of every pass runs at this many rows (zero rows added to the features) so
    /// that answers do not depend on what shared the pass. The default suits a few cores and
    /// little memory: on 2 cores with EfficientNet-Lite0, 4 serves ~20 % more requests per second
    /// than 2 but peaks 50–90 MB higher (the activations of a bigger pass, and what the allocator
    /// keeps of them); raise it with more cores and memory.
    #[arg(long, default_value_t = 2)]
    pub max_batch: usize,
    /// Run each pass's classifier head at the pass's actual size instead of --max-batch rows: saves
    /// a few microseconds, but an image's probabilities then differ in the last bits with the number
    /// of images it shares its pass with (libtorch's CPU matrix products round differently per row count).
    #[arg(long)]
    pub unpadded_batches: bool,
    /// Longest time the first request of a batch waits for more, in milliseconds. With 0 (the
    /// default) a lone request runs at once and a batch is whatever queued up while the previous
    /// pass ran.
    #[arg(long, default_value_t = 0)]
    pub max_wait_ms: u64,
    /// Images admitted per model (queued or in a forward pass); beyond it requests get 503 with Retry-After.
    #[arg(long, default_value_t = 128)]
    pub queue: usize,
    /// Prediction requests in flight in the whole server (bodies being read, decoded or predicted); beyond it 503.
    #[arg(long, default_value_t = 64)]
    pub max_inflight: usize,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, default_value_t = 20 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most images in one multipart request.
    #[arg(long, default_value_t = 16)]
    pub max_images: usize,
    /// Largest accepted image in pixels (width × height, checked before decoding: decompression bombs get 400).
    #[arg(long, default_value_t = 40_000_000)]
    pub max_pixels: u64,
    /// Concurrent requests per client (per token, or per IP address without tokens); beyond it 429.
    /// Default: 8 when the service is exposed (--token-file, or an address other than 127.0.0.1 and
    /// ::1); off on 127.0.0.1/::1 without tokens, where every program of this machine is one client.
    #[arg(long)]
    pub client_concurrency: Option<usize>,
    /// Sustained requests per second per client (0: unlimited); beyond it 429 with Retry-After.
    /// Default: 20 when the service is exposed, off on 127.0.0.1/::1 without tokens (see --client-concurrency).
    #[arg(long)]
    pub client_rps: Option<f64>,
    /// Requests a client may send at once above its rate (token-bucket size; 0: twice the rate, at least 1).
    #[arg(long, default_value_t = 0.0)]
    pub client_burst: f64,
    /// Open connections in the whole server; beyond it new connections get 503 and are closed.
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
    /// Open connections per IP address; beyond it new connections get 503 and are closed.
    #[arg(long, default_value_t = 64)]
    pub max_connections_per_ip: usize,
    /// Largest request head (request line and headers) in bytes (at least 8192); larger ones get 431.
    #[arg(long, default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    #[arg(long, default_value_t = 64)]
    pub max_headers: usize,
    /// Seconds a request may take, from its headers to its answer (slow bodies get 408).
    #[arg(long, default_value_t = 30)]
    pub request_timeout_s: u64,
    /// Seconds a connection may stay idle, or take to send a request's headers, before it is closed.
    #[arg(long, default_value_t = 20)]
    pub idle_timeout_s: u64,
    /// Seconds to let in-flight requests finish after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout_s: u64,
}

impl ServeArgs {
    /// Arguments with every default, serving `checkpoints` (`[NAME=]FILE`): what a library user or a test
    /// starts from before changing single fields.
    pub fn with_checkpoints(checkpoints: &[&str]) -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: ServeArgs,
        }
        // A constant, valid command line: parsing it cannot fail.
        let mut args = Wrap::parse_from(["serve", "--checkpoint", "model"]).args;
        args.checkpoints = checkpoints.iter().map(|c| (*c).to_string()).collect();
        args
    }

    /// Checks ranges that clap cannot express.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        let positive = [
            ("--max-batch", self.max_batch),
            ("--queue", self.queue),
            ("--max-inflight", self.max_inflight),
            ("--max-body-bytes", self.max_body_bytes),
            ("--max-images", self.max_images),
            ("--client-concurrency", self.client_concurrency.unwrap_or(1)),
            ("--max-connections", self.max_connections),
            ("--max-connections-per-ip", self.max_connections_per_ip),
            ("--max-headers", self.max_headers),
            ("--request-timeout-s", self.request_timeout_s as usize),
            ("--idle-timeout-s", self.idle_timeout_s as usize),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return bad(format!("{name} must be at least 1"));
        }
        if self.max_header_bytes < 8192 {
            return bad(format!("--max-header-bytes must be at least 8192, not {}", self.max_header_bytes));
        }
        if self.queue < self.max_images {
            return bad(format!("--queue ({}) must be at least --max-images ({})", self.queue, self.max_images));
        }
        let rps = self.client_rps.unwrap_or(0.0);
        if !(rps.is_finite() && rps >= 0.0 && self.client_burst.is_finite() && self.client_burst >= 0.0) {
            return bad("--client-rps and --client-burst must be finite and not negative".into());
        }
        if self.max_pixels == 0 {
            return bad("--max-pixels must be at least 1".into());
        }
        Ok(())
    }

    /// Whether the service is exposed: access tokens are configured, or it listens on an address other
    /// than 127.0.0.1 and ::1. Only then do the per-client limits apply by default.
    pub fn exposed(&self) -> bool {
        self.token_file.is_some() || !is_local_only(self.addr.ip())
    }

    /// The limits this configuration serves with (printed at start, shown on `/healthz`).
    pub fn effective_limits(&self) -> EffectiveLimits {
        let exposed = self.exposed();
        let concurrency = self.client_concurrency.or(exposed.then_some(EXPOSED_CLIENT_CONCURRENCY));
        let rps = self.client_rps.or(exposed.then_some(EXPOSED_CLIENT_RPS)).filter(|&r| r > 0.0);
        let burst = rps.map(|r| if self.client_burst > 0.0 { self.client_burst } else { (2.0 * r).max(1.0) });
        EffectiveLimits {
            per_client: PerClient { exposed, concurrency, rps, burst },
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_inflight: self.max_inflight,
            queue_images: self.queue,
            max_body_bytes: self.max_body_bytes,
            max_images: self.max_images,
            max_pixels: self.max_pixels,
            request_timeout_s: self.request_timeout_s,
            idle_timeout_s: self.idle_timeout_s,
            linger: Linger::for_body_limit(self.max_body_bytes),
        }
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_s)
    }

    /// The idle (and header-read) timeout of connections.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_s)
    }

    /// Splits `--checkpoint` values into (name, file) pairs; names must be unique and URL-safe.
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
                    "model name {name:?} (from --checkpoint {spec}) may only hold letters, digits, '-', '_' and '.'; use NAME=FILE"
                )));
            }
            if out.iter().any(|(n, _)| *n == name) {
                return Err(Error::Config(format!("two checkpoints are named {name:?}; name them with NAME=FILE")));
            }
            out.push((name, file));
        }
        if out.is_empty() {
            return Err(Error::Config("no --checkpoint given".into()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(addr: &str, f: impl FnOnce(&mut ServeArgs)) -> PerClient {
        let mut a = ServeArgs::with_checkpoints(&["m.safetensors"]);
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
        assert_eq!(at("127.0.0.1:8080", |a| a.token_file = Some("t".into())), on, "tokens: per-token limits");
        assert_eq!(at("0.0.0.0:8080", |a| a.insecure_no_auth = true), on);
        assert_eq!(at("127.0.0.2:8080", |_| {}), on, "127.0.0.2 counts as exposed");
    }

    #[test]
    fn given_limits_apply_everywhere() {
        let p = at("127.0.0.1:8080", |a| a.client_rps = Some(5.0));
        assert_eq!((p.concurrency, p.rps, p.burst), (None, Some(5.0), Some(10.0)));
        let p = at("127.0.0.1:8080", |a| a.client_concurrency = Some(3));
        assert_eq!((p.concurrency, p.rps), (Some(3), None));
        let p = at("0.0.0.0:8080", |a| {
            a.client_rps = Some(0.0);
            a.client_burst = 7.0;
        });
        assert_eq!((p.concurrency, p.rps, p.burst), (Some(8), None, None), "--client-rps 0 turns the rate off");
        let text = ServeArgs::with_checkpoints(&["m"]).effective_limits().to_string();
        assert!(text.starts_with("limits: per client (token, else IP address): off"), "{text}");
        let mut a = ServeArgs::with_checkpoints(&["m"]);
        a.client_concurrency = Some(0);
        assert!(a.validate().is_err(), "--client-concurrency 0 is refused");
    }
}
