//! `petal serve`'s flags: one per field of [`serve::ServeConfig`] (`--max-batch` sets
//! `batching.max_batch`), their defaults taken from `ServeConfig::default()`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serve::ServeConfig;

fn d() -> ServeConfig {
    ServeConfig::default()
}

/// Arguments of `petal serve`. Every limit has a safe default.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A checkpoint to serve, as `FILE` (served under its file stem) or `NAME=FILE`; repeat for several.
    /// The set of served checkpoints is fixed at start: no request can load another model or file.
    #[arg(long = "checkpoint", value_name = "[NAME=]FILE", required = true)]
    pub checkpoints: Vec<String>,
    /// Address to listen on. Anything but 127.0.0.1 or ::1 needs --token-file or --insecure-no-auth.
    #[arg(long, default_value_t = d().addr)]
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
    /// Device the networks run on: cpu, cuda (the first GPU) or cuda:N.
    #[arg(long, default_value_t = d().backend.device)]
    pub device: model::DeviceSpec,
    /// What runs the backbone: auto (onnxruntime on the CPU when `cargo xtask setup` provisioned
    /// it, else libtorch), torch or onnxruntime. The head always runs on libtorch; answers stay
    /// independent of the batch they come in (the start-up probe calibrates either runtime).
    #[arg(long, value_enum, default_value_t = d().backend.runtime)]
    pub runtime: infer::Runtime,
    /// The backbone's precision on onnxruntime: auto (int8 when `petal quantize` accepted it for
    /// the checkpoint, else fp32), fp32 or int8.
    #[arg(long, value_enum, default_value_t = d().backend.precision)]
    pub precision: infer::Precision,
    /// libtorch intra-op threads for the forward pass (0: libtorch's default).
    #[arg(long, default_value_t = d().backend.threads)]
    pub threads: usize,
    /// Threads that decode and transform uploaded images (0: one per core).
    #[arg(long, default_value_t = d().backend.decode_threads)]
    pub decode_threads: usize,
    /// Most images in one forward pass (dynamic batching). A lone request runs alone; at start
    /// the passes of 1 to this many images are probed so that answers do not depend on what shared
    /// the pass. The default suits a few cores and
    /// little memory: on 2 cores with EfficientNet-Lite0, 4 serves ~20 % more requests per second
    /// than 2 but peaks 50–90 MB higher (the activations of a bigger pass, and what the allocator
    /// keeps of them); raise it with more cores and memory.
    #[arg(long, default_value_t = d().batching.max_batch)]
    pub max_batch: usize,
    /// Skip the start-up probe of pass sizes and run every pass at its own size: a faster start,
    /// but where the backbone's convolutions round differently per batch size (several threads per
    /// pass), an image's probabilities then differ in the last bits with the pass it shares.
    #[arg(long)]
    pub unpadded_batches: bool,
    /// Longest time the first request of a batch waits for more, in milliseconds. With 0 (the
    /// default) a lone request runs at once and a batch is whatever queued up while the previous
    /// pass ran.
    #[arg(long, default_value_t = d().batching.max_wait_ms)]
    pub max_wait_ms: u64,
    /// Images admitted per model (queued or in a forward pass); beyond it requests get 503 with Retry-After.
    #[arg(long, default_value_t = d().batching.queue)]
    pub queue: usize,
    /// Prediction requests in flight in the whole server (bodies being read, decoded or predicted); beyond it 503.
    #[arg(long, default_value_t = d().limits.max_inflight)]
    pub max_inflight: usize,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, default_value_t = d().limits.max_body_bytes)]
    pub max_body_bytes: usize,
    /// Most images in one multipart request.
    #[arg(long, default_value_t = d().limits.max_images)]
    pub max_images: usize,
    /// Largest accepted image in pixels (width × height, checked before decoding: decompression bombs get 400).
    #[arg(long, default_value_t = d().limits.max_pixels)]
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
    #[arg(long, default_value_t = d().limits.client_burst)]
    pub client_burst: f64,
    /// Open connections in the whole server; beyond it new connections get 503 and are closed.
    #[arg(long, default_value_t = d().limits.max_connections)]
    pub max_connections: usize,
    /// Open connections per IP address; beyond it new connections get 503 and are closed.
    #[arg(long, default_value_t = d().limits.max_connections_per_ip)]
    pub max_connections_per_ip: usize,
    /// Largest request head (request line and headers) in bytes (at least 8192); larger ones get 431.
    #[arg(long, default_value_t = d().limits.max_header_bytes)]
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    #[arg(long, default_value_t = d().limits.max_headers)]
    pub max_headers: usize,
    /// Seconds a request may take, from its headers to its answer (slow bodies get 408).
    #[arg(long, default_value_t = d().timeouts.request_timeout_s)]
    pub request_timeout_s: u64,
    /// Seconds a connection may stay idle, or take to send a request's headers, before it is closed.
    #[arg(long, default_value_t = d().timeouts.idle_timeout_s)]
    pub idle_timeout_s: u64,
    /// Seconds to let in-flight requests finish after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = d().timeouts.drain_timeout_s)]
    pub drain_timeout_s: u64,
}

impl From<ServeArgs> for ServeConfig {
    fn from(a: ServeArgs) -> Self {
        ServeConfig {
            checkpoints: a.checkpoints,
            addr: a.addr,
            auth: serve::AuthConfig { token_file: a.token_file, insecure_no_auth: a.insecure_no_auth, cors_origin: a.cors_origin },
            backend: serve::BackendConfig {
                device: a.device,
                runtime: a.runtime,
                precision: a.precision,
                threads: a.threads,
                decode_threads: a.decode_threads,
            },
            batching: serve::BatchingConfig {
                max_batch: a.max_batch,
                unpadded_batches: a.unpadded_batches,
                max_wait_ms: a.max_wait_ms,
                queue: a.queue,
            },
            limits: serve::LimitsConfig {
                max_inflight: a.max_inflight,
                max_body_bytes: a.max_body_bytes,
                max_images: a.max_images,
                max_pixels: a.max_pixels,
                client_concurrency: a.client_concurrency,
                client_rps: a.client_rps,
                client_burst: a.client_burst,
                max_connections: a.max_connections,
                max_connections_per_ip: a.max_connections_per_ip,
                max_header_bytes: a.max_header_bytes,
                max_headers: a.max_headers,
            },
            timeouts: serve::TimeoutsConfig {
                request_timeout_s: a.request_timeout_s,
                idle_timeout_s: a.idle_timeout_s,
                drain_timeout_s: a.drain_timeout_s,
            },
        }
    }
}

/// `petal serve`: the configuration the flags give, served until SIGTERM or Ctrl-C. A setting out
/// of range is named by its flag (the library names the field, which the flag mirrors).
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = ServeConfig::from(args);
    match serve::run(&cfg, |e| eprintln!("serve: {e}")) {
        Ok(_) => Ok(()),
        Err(serve::Error::Setting { field, problem }) => {
            let flag = |f: &str| format!("--{}", f.replace('_', "-"));
            Err(anyhow::anyhow!("{} {}", flag(field), problem.describe(flag)).context("petal serve"))
        }
        Err(e) => Err(anyhow::Error::new(e).context("petal serve")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn the_flags_default_to_the_library_defaults() {
        let args = Wrap::parse_from(["serve", "--checkpoint", "m.safetensors"]).args;
        assert_eq!(ServeConfig::from(args), ServeConfig::serving(&["m.safetensors"]));
        let args = Wrap::parse_from(["serve", "--checkpoint", "a=m", "--max-batch", "4", "--device", "cuda:1", "--token-file", "t"]).args;
        let cfg = ServeConfig::from(args);
        assert_eq!((cfg.batching.max_batch, cfg.backend.device), (4, model::DeviceSpec::Cuda(1)));
        assert_eq!(cfg.auth.token_file, Some(PathBuf::from("t")));
    }
}
