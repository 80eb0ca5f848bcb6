//! Test fixtures shared by the serve tests and the workspace's `tests/serve.rs`: a tiny randomly
//! initialised DenseNet checkpoint, images to classify, and a minimal blocking HTTP/1.1 client
//! (raw sockets, so that tests can send paths and headers no ordinary client would).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use checkpoint::{Checkpoint, ClassEntry, Metadata, Preprocessing};
use model::{Arch, Classifier, DenseNetConfig, HeadConfig};
use tch::nn::VarStore;
use tch::Device;

/// Class folders and display names of the fixture checkpoint.
pub const CLASSES: [(&str, &str); 3] = [("daisy", "oxeye daisy"), ("iris", "bearded iris"), ("tulip", "garden tulip")];

/// Writes a tiny DenseNet classifier (random weights from `seed`, 32×32 input) to `dir/name.safetensors`.
pub fn tiny_checkpoint(dir: &Path, name: &str, seed: i64) -> PathBuf {
    let arch = Arch::DenseNet(DenseNetConfig { growth_rate: 4, block_config: vec![2, 2], num_init_features: 8, bn_size: 2, drop_rate: 0.0 });
    let head = HeadConfig { hidden: vec![16], ..HeadConfig::default() };
    let _generator = model::random_generator_lock(); // seeded draws, not interleaved with another test's
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let _net = Classifier::new(&vs.root(), &arch, &head, CLASSES.len() as i64).expect("build the tiny network");
    let tensors = model::weights::varstore_tensors(&vs).expect("export tensors");
    let classes = CLASSES.iter().enumerate().map(|(i, (f, n))| ClassEntry { folder: f.to_string(), index: i, name: Some(n.to_string()) }).collect();
    let meta = Metadata {
        arch: arch.name().into(),
        arch_config: serde_json::to_value(&arch).expect("arch json"),
        classes,
        preprocessing: Some(Preprocessing {
            input_size: 32,
            resize_size: 36,
            mean: preprocess::IMAGENET_MEAN.to_vec(),
            std: preprocess::IMAGENET_STD.to_vec(),
            interpolation: checkpoint::Interpolation::Bilinear,
        }),
        head: serde_json::to_value(&head).expect("head json"),
        metrics: serde_json::json!({ "best_valid_acc": 0.5 }),
        ..Metadata::default()
    };
    let path = dir.join(format!("{name}.safetensors"));
    checkpoint::save(&path, &Checkpoint { meta, tensors }).expect("save the checkpoint");
    path
}

/// A 48×40 picture (a coloured disc on noise); `i` varies colour, position and noise.
pub fn picture(i: u32) -> image::RgbImage {
    let mut img = image::RgbImage::new(48, 40);
    let mut state = 7919u32.wrapping_mul(i + 1);
    let (cx, cy, r) = (10 + (i * 7) % 28, 8 + (i * 5) % 24, 6 + (i % 5) as i32);
    let colour = [(40 + i * 53 % 200) as u8, (30 + i * 97 % 210) as u8, (20 + i * 31 % 220) as u8];
    for (x, y, p) in img.enumerate_pixels_mut() {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = (state >> 25) as u8;
        let (dx, dy) = (x as i32 - cx as i32, y as i32 - cy as i32);
        *p = if dx * dx + dy * dy <= r * r { image::Rgb(colour) } else { image::Rgb([noise, noise / 2 + 60, 120 - noise / 3]) };
    }
    img
}

/// `picture(i)` encoded as PNG.
pub fn png(i: u32) -> Vec<u8> {
    encode(&picture(i), image::ImageFormat::Png)
}

/// `picture(i)` encoded as JPEG.
pub fn jpeg(i: u32) -> Vec<u8> {
    encode(&picture(i), image::ImageFormat::Jpeg)
}

fn encode(img: &image::RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Header fields, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("status {} body is not JSON ({e}): {}", self.status, self.text()))
    }
}

/// Sends raw request bytes on a new connection and reads the answer until the server closes it.
pub fn raw(addr: SocketAddr, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    s.write_all(request).expect("send");
    read_response(&mut s)
}

/// Reads one whole answer from a connection the server closes after it (`Connection: close`).
pub fn read_response(s: &mut TcpStream) -> Resp {
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse(&buf)
}

/// Parses an HTTP/1.1 answer (Content-Length or chunked body).
pub fn parse(buf: &[u8]) -> Resp {
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Resp { status: 0, headers: vec![], body: buf.to_vec() };
    };
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let mut body = buf[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Resp { status, headers, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

/// A request with `Connection: close`: method, path, extra headers, body.
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request on a new connection.
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    raw(addr, &request_bytes(method, path, headers, body))
}

/// A GET.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    http(addr, "GET", path, &[], b"")
}

/// A multipart/form-data body of files `(file name, bytes)`, with its Content-Type.
pub fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----petal-test-boundary-7d3f";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The probabilities of every class of one answered image, by class index.
pub fn probs_by_index(prediction: &serde_json::Value) -> Vec<f32> {
    let top = prediction["top"].as_array().expect("top array");
    let mut out = vec![f32::NAN; top.len()];
    for c in top {
        let i = c["index"].as_u64().expect("index") as usize;
        out[i] = c["prob"].as_f64().expect("prob") as f32;
    }
    out
}
