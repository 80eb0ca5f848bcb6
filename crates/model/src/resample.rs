//! Resampling a batch of images to another side inside the network, for a rescaled ensemble member
//! ([`crate::Arch::Rescaled`]): Pillow's antialiased bilinear filter (what torchvision's
//! `Resize` uses on PIL images, and `torch.nn.functional.interpolate(mode="bilinear",
//! antialias=True)` on tensors) in floating point, as two matrix products, `A_h · x · A_wᵀ`. Matrix
//! products run the same on libtorch, onnxruntime and tract, so every runtime gives the same
//! features (the ONNX graph holds the two matrices as initializers).

use tch::Tensor;

use crate::Net;

/// The `[out_size, in_size]` matrix (row-major) of Pillow's antialiased bilinear resample of
/// `in_size` samples to `out_size`: row `i` holds the triangle filter's weights around the centre
/// of output sample `i`, widened by the scale when downscaling and normalised to sum to 1 (the
/// float weights of Pillow's `precompute_coeffs`, before its fixed-point rounding).
pub fn resample_matrix(in_size: usize, out_size: usize) -> Vec<f32> {
    let mut m = vec![0f32; in_size * out_size];
    if in_size == 0 || out_size == 0 {
        return m;
    }
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the triangle's support is 1 input sample at scale 1
    for (i, row) in m.chunks_exact_mut(in_size).enumerate() {
        let center = (i as f64 + 0.5) * scale;
        // Pillow truncates toward zero, then clamps to the input.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
        let weights: Vec<f64> = (lo..hi).map(|x| triangle((x as f64 - center + 0.5) / filter_scale)).collect();
        let total: f64 = weights.iter().sum();
        if total != 0.0 {
            for (x, w) in (lo..hi).zip(weights) {
                row[x] = (w / total) as f32;
            }
        }
    }
    m
}

/// The bilinear filter's kernel.
fn triangle(x: f64) -> f64 {
    (1.0 - x.abs()).max(0.0)
}

/// `xs` (`[N, C, H, W]`) resampled to `[N, C, side, side]` by [`resample_matrix`] along both axes;
/// a shallow copy when it already has that size.
pub fn resample(xs: &Tensor, side: i64) -> Tensor {
    let size = xs.size();
    let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
    if h == side && w == side {
        return xs.shallow_clone();
    }
    let matrix = |n: i64| Tensor::from_slice(&resample_matrix(n as usize, side as usize)).view([side, n]).to_kind(xs.kind()).to_device(xs.device());
    matrix(h).matmul(xs).matmul(&matrix(w).tr())
}

/// A backbone run on its input resampled to `side` px.
#[derive(Debug)]
pub(crate) struct Rescaled {
    pub(crate) inner: Box<dyn Net>,
    pub(crate) side: i64,
}

impl Net for Rescaled {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.inner.forward_t(&resample(xs, self.side), train)
    }

    fn fold_batchnorm(&mut self) -> usize {
        self.inner.fold_batchnorm()
    }

    fn set_channels_last(&mut self, on: bool) -> Result<(), tch::TchError> {
        self.inner.set_channels_last(on)
    }
}
