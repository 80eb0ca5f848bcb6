//! Save/load benchmark of a densenet121-shaped checkpoint (~32 MB of F32), for `cargo xtask
//! bench`. Compare with `bench/checkpoint_io.py` (torch.save/torch.load, same shapes).
//!
//! `cargo run --release -p checkpoint --example bench_io -- [--json] [--runs N] [--dir DIR]`
//! prints medians of `save_s` (atomic: temp file, fsync, rename) and `load_s` (read, parse,
//! checksum verification).

use checkpoint::{load, save, Checkpoint, DType, Metadata, TensorData, TensorMap};
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = opt("--runs").map(|r| r.parse()).transpose()?.unwrap_or(7);
    let dir = match opt("--dir") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir(),
    };
    let path = dir.join(format!("petal-bench-io-{}.petal", std::process::id()));

    let mut tensors = TensorMap::new();
    let mut s = 0x2545_f491_4f6c_dd1du64;
    for (name, dtype, shape) in densenet121_shapes() {
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
    let (save_s, load_s) = (median(save_t), median(load_t));
    if json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "checkpoint_io", "impl": "petal-checkpoint (Rust, safetensors + crc32, atomic+fsync)",
                "tensors": ckpt.tensors.len(), "numel": numel, "tensor_bytes": bytes, "file_bytes": file_bytes,
                "runs": runs, "save_s": save_s, "load_s": load_s,
            })
        );
    } else {
        println!(
            "petal checkpoint, densenet121 shapes ({} tensors, {numel} elements, {file_bytes} bytes): save {:.1} ms, load {:.1} ms (median of {runs})",
            ckpt.tensors.len(),
            save_s * 1e3,
            load_s * 1e3
        );
    }
    Ok(())
}
