//! The serve request front end as a function of bytes: one connection's raw bytes through a real
//! `serve::Server` in memory (`Server::serve_bytes`): HTTP/1.1 parsing under the header limits,
//! routing, the query (`top_k`, `tta`), authentication, per-client limits, the body limit, raw and
//! multipart bodies, and decoding. The network is a stub (no libtorch pass), so the fuzzer spends
//! its time in the front end. Every answer must be well-formed HTTP (1.1, or 1.0 to a 1.0 request); nothing may panic or hang.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use serve::{Backend, ClassInfo, ModelInfo, ServeConfig, Server};

/// A 3-class network whose input is the decoded image's size, for an 8-pixel square.
struct Stub {
    info: ModelInfo,
}

impl Backend for Stub {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn prepare(&self, bytes: &[u8], name: &str, tta: preprocess::Tta) -> Result<Vec<u8>, serve::BackendError> {
        let limits = preprocess::DecodeLimits { max_pixels: 1_000_000 };
        let img = preprocess::decode_rgb_bytes(bytes, std::path::Path::new(name), &limits).map_err(|e| serve::BackendError::BadImage(e.to_string()))?;
        Ok(vec![(img.width() % 251) as u8; 8 * 8 * 3 * tta.views()])
    }

    fn predict(&self, input: &[u8], ks: &[usize]) -> Result<Vec<Vec<infer::ClassProb>>, serve::BackendError> {
        let per = input.len() / ks.len().max(1);
        Ok(ks
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                let v = input.get(i * per).copied().unwrap_or(0) as usize % 3;
                (0..k.min(3))
                    .map(|j| infer::ClassProb {
                        index: (v + j) % 3,
                        folder: format!("{}", (v + j) % 3),
                        name: "flower".into(),
                        prob: 1.0 / (j + 1) as f32,
                    })
                    .collect()
            })
            .collect())
    }
}

fn server() -> &'static (tokio::runtime::Runtime, Server) {
    static S: OnceLock<(tokio::runtime::Runtime, Server)> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let mut args = ServeConfig::serving(&["stub"]);
        args.addr = "127.0.0.1:0".parse().expect("addr");
        args.limits.max_body_bytes = 256 * 1024;
        args.limits.max_images = 4;
        args.backend.decode_threads = 1;
        let classes = (0..3).map(|i| ClassInfo { index: i, folder: i.to_string(), name: "flower".into() }).collect();
        let info = ModelInfo {
            name: "stub".into(),
            file: "stub.safetensors".into(),
            checkpoint_sha256: "0".repeat(64),
            arch: "stub".into(),
            num_classes: 3,
            classes,
            preprocessing: None,
            metrics: serde_json::Value::Null,
            created_utc: String::new(),
            tta: preprocess::Tta::None,
            runtime: infer::Runtime::Torch,
            precision: infer::Precision::Fp32,
            int8: None,
        };
        let backend: Arc<dyn Backend> = Arc::new(Stub { info });
        let server = rt.block_on(Server::bind(&args, vec![backend])).expect("bind the server");
        (rt, server)
    })
}

fuzz_target!(|data: &[u8]| {
    let (rt, server) = server();
    let out = rt.block_on(server.serve_bytes(data));
    let http = out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 ");
    assert!(out.is_empty() || http, "not an HTTP answer: {:?}", String::from_utf8_lossy(&out[..out.len().min(80)]));
});
