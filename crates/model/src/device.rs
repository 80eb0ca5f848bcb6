//! Where networks run, and how plain `f32` image batches become tensors there.

use tch::{Device, Tensor};

use crate::Error;

/// Where networks run, as a user names it: `cpu`, `cuda` (the first GPU) or `cuda:N`. Parsing
/// checks the spelling only; [`DeviceSpec::device`] checks that libtorch sees the GPU. Written and
/// read back as that text (configs, checkpoints' stored settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum DeviceSpec {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => Ok(DeviceSpec::Cuda(n)),
                None => Err(Error::Config(format!("unknown device {other:?} (use cpu, cuda or cuda:N)"))),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl DeviceSpec {
    /// The libtorch device; an error when libtorch sees no such GPU.
    pub fn device(self) -> Result<Device, Error> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                let count = tch::Cuda::device_count() as usize;
                if n >= count {
                    return Err(Error::Config(format!(
                        "device {self} requested but libtorch sees {count} CUDA device(s); the libtorch from `cargo xtask setup` is CPU-only (see docs/setup.md, GPU)"
                    )));
                }
                Ok(Device::Cuda(n))
            }
        }
    }
}

/// Parses `cpu`, `cuda`, `cuda:N` ([`DeviceSpec`]); refuses CUDA when libtorch sees no such GPU.
pub fn parse_device(s: &str) -> Result<Device, Error> {
    s.parse::<DeviceSpec>()?.device()
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

/// libtorch's intra-op thread count, set for a scope: [`TorchThreads::set`] changes it and the guard
/// restores the count it found when dropped (also on a panic). With libtorch's OpenMP build the
/// count is the calling thread's: threads that already ran libtorch code keep theirs, and only a
/// thread whose first libtorch call falls inside the scope starts with the scope's count.
#[must_use = "the count is restored when the guard is dropped"]
#[derive(Debug)]
pub struct TorchThreads {
    before: i32,
}

impl TorchThreads {
    /// Sets the count to `n` (at least 1) until the guard is dropped.
    pub fn set(n: i32) -> TorchThreads {
        let before = tch::get_num_threads();
        if before != n.max(1) {
            tch::set_num_threads(n.max(1));
        }
        TorchThreads { before }
    }
}

impl Drop for TorchThreads {
    fn drop(&mut self) {
        if tch::get_num_threads() != self.before {
            tch::set_num_threads(self.before);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TorchThreads;

    #[test]
    fn torch_threads_are_set_for_a_scope_and_restored() {
        let before = tch::get_num_threads();
        {
            let _one = TorchThreads::set(1);
            assert_eq!(tch::get_num_threads(), 1);
            {
                let _zero = TorchThreads::set(0);
                assert_eq!(tch::get_num_threads(), 1, "at least one thread");
            }
            assert_eq!(tch::get_num_threads(), 1);
        }
        assert_eq!(tch::get_num_threads(), before);
        let caught = std::panic::catch_unwind(|| {
            let _one = TorchThreads::set(1);
            panic!("inside the scope");
        });
        assert!(caught.is_err());
        assert_eq!(tch::get_num_threads(), before, "restored on a panic too");
    }
}
