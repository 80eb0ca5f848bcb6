//! Where networks run, and how plain `f32` image batches become tensors there.

use tch::{Device, Tensor};

use crate::Error;

/// Parses `cpu`, `cuda`, `cuda:N`; refuses CUDA when libtorch sees no such GPU.
pub fn parse_device(s: &str) -> Result<Device, Error> {
    let d = match s {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => Device::Cuda(n),
            None => return Err(Error::Config(format!("unknown device {other:?} (use cpu, cuda or cuda:N)"))),
        },
    };
    if let Device::Cuda(n) = d {
        let count = tch::Cuda::device_count() as usize;
        if n >= count {
            return Err(Error::Config(format!(
                "device {s} requested but libtorch sees {count} CUDA device(s); the libtorch from `cargo xtask setup` is CPU-only (see docs/setup.md, GPU)"
            )));
        }
    }
    Ok(d)
}

/// A float tensor of logical shape `[n, c, h, w]` on `device` from `images` laid out as NCHW, or
/// as NHWC when `channels_last` (the tensor is then a permuted, channels_last view).
pub fn input_tensor(images: &[f32], shape: [usize; 4], channels_last: bool, device: Device) -> Tensor {
    let [n, c, h, w] = shape.map(|v| v as i64);
    let t = if channels_last {
        Tensor::from_slice(images).view([n, h, w, c]).permute([0, 3, 1, 2])
    } else {
        Tensor::from_slice(images).view([n, c, h, w])
    };
    t.to_device(device)
}
