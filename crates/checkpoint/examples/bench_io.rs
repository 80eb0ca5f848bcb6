//! Save/load benchmark of a densenet121-shaped checkpoint (~32 MB of F32), for `cargo xtask
//! bench`. Compare with `bench/checkpoint_io.py` (torch.save/torch.load, same shapes).
//!
//! `cargo run --release -p checkpoint --example bench_io -- [--json] [--smoke] [--runs N] [--dir DIR]`
//! reports medians of `save_s` (atomic: temp file, fsync, rename) and `load_s` (read, parse,
//! checksum verification). `--smoke` saves only the first few tensors, once.

use checkpoint::{load, save, Checkpoint, DType, Metadata, TensorData, TensorMap};
use std::path::PathBuf;
use std::time::Instant;

/// torchvision densenet121's state-dict shapes (growth 32, blocks 6-12-24-16, bn_size 4).
fn densenet121_shapes() -> Vec<(String, DType, Vec<usize>)> {
    let mut v = Vec::new();
    let norm = |v: &mut Vec<(String, DType, Vec<usize>)>, p: &str, c: usize| {
        for s in ["weight", "bias", "running_mean", "running_var"] {
            v.push((format!("{p}.{s}"), DType::F32, vec![c]));
        }
        v.push((format!("{p}.num_batches_tracked"), DType::I64, vec![]));
    };
    v.push(("features.conv0.weight".into(), DType::F32, vec![64, 3, 7, 7]));
    norm(&mut v, "features.norm0", 64);
    let mut c = 64;
    for (b, layers) in [6, 12, 24, 16].into_iter().enumerate() {
        for l in 0..layers {
            let p = format!("features.denseblock{}.denselayer{}", b + 1, l + 1);
            let cin = c + l * 32;
            norm(&mut v, &format!("{p}.norm1"), cin);
            v.push((format!("{p}.conv1.weight"), DType::F32, vec![128, cin, 1, 1]));
            norm(&mut v, &format!("{p}.norm2"), 128);
            v.push((format!("{p}.conv2.weight"), DType::F32, vec![32, 128, 3, 3]));
        }
        c += layers * 32;
        if b < 3 {
            let p = format!("features.transition{}", b + 1);
            norm(&mut v, &format!("{p}.norm"), c);
            v.push((format!("{p}.conv.weight"), DType::F32, vec![c / 2, c, 1, 1]));
            c /= 2;
        }
    }
    norm(&mut v, "features.norm5", c);
    v.push(("classifier.weight".into(), DType::F32, vec![1000, c]));
    v.push(("classifier.bias".into(), DType::F32, vec![1000]));
    v
}

/// Flags of this benchmark (plus `--json`/`--smoke`, see `benchkit`).
#[derive(clap::Args)]
struct Args {
    /// Timed save/load pairs (the median is reported).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Folder for the file (default: the system's temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Deterministic pseudo-random tensors with the given shapes.
fn tensors(shapes: Vec<(String, DType, Vec<usize>)>) -> benchkit::Result<TensorMap> {
    let mut tensors = TensorMap::new();
    let mut s = 0x2545_f491_4f6c_dd1du64;
    for (name, dtype, shape) in shapes {
        let n: usize = shape.iter().product();
        let t = if dtype == DType::F32 {
            let vals: Vec<f32> = (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s >> 40) as f32 / 16_777_216.0 - 0.5
                })
                .collect();
            TensorData::from_f32(shape, &vals)
        } else {
            TensorData::new(dtype, shape, vec![0; n * dtype.size_in_bytes()])?
        };
        tensors.insert(name, t);
    }
    Ok(tensors)
}

fn run(a: &Args, common: &benchkit::Common) -> benchkit::Result<serde_json::Value> {
    let dir = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("petal-bench-io-{}.petal", std::process::id()));
    let mut shapes = densenet121_shapes();
    if common.smoke {
        shapes.truncate(12); // conv0, norm0 and the first dense layer: ~50 kB
    }
    let runs = if common.smoke { 1 } else { a.runs.max(1) };
    let tensors = tensors(shapes)?;
    let numel: usize = tensors.values().map(|t| t.numel()).sum();
    let bytes: usize = tensors.values().map(|t| t.bytes.len()).sum();
    let ckpt = Checkpoint { meta: Metadata { arch: "densenet121".into(), ..Metadata::default() }, tensors };

    save(&path, &ckpt)?; // warm-up
    let _ = load(&path)?;
    let (mut save_t, mut load_t) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        save(&path, &ckpt)?;
        save_t.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let back = load(&path)?;
        load_t.push(t.elapsed().as_secs_f64());
        if back.tensors.len() != ckpt.tensors.len() {
            return Err("round trip lost tensors".into());
        }
    }
    let file_bytes = std::fs::metadata(&path)?.len();
    std::fs::remove_file(&path)?;
    let (save_s, load_s) = (benchkit::median(&save_t), benchkit::median(&load_t));
    eprintln!(
        "petal checkpoint, densenet121 shapes ({} tensors, {numel} elements, {file_bytes} bytes): save {:.1} ms, load {:.1} ms (median of {runs})",
        ckpt.tensors.len(),
        save_s * 1e3,
        load_s * 1e3
    );
    Ok(serde_json::json!({
        "bench": "checkpoint_io", "impl": "petal-checkpoint (Rust, safetensors + crc32, atomic+fsync)",
        "tensors": ckpt.tensors.len(), "numel": numel, "tensor_bytes": bytes, "file_bytes": file_bytes,
        "runs": runs, "save_s": save_s, "load_s": load_s,
    }))
}

fn main() -> std::process::ExitCode {
    benchkit::main("bench_io", run)
}
