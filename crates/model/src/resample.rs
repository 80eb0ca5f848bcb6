//! Resampling a batch of images to another side inside the network, for a rescaled ensemble member
//! ([`crate::Arch::Rescaled`]): Pillow's antialiased bilinear filter (what torchvision's
//! `Resize` uses on PIL images, and `torch.nn.functional.interpolate(mode="bilinear",
//! antialias=True)` on tensors) in floating point, as two matrix products, `A_h · x · A_wᵀ`. Matrix
//! products run the same on libtorch, onnxruntime and tract, so every runtime gives the same
//! features (the ONNX graph holds the two matrices as initializers).

use tch::Tensor;

use crate::Net;

/// The `[out_size, in_size]` matrix (row-major) of Pillow's antialiased bilinear resample of
/// `in_size` samples to `out_size`: row `xx` holds the triangle filter's weights around the centre
/// of output sample `xx`, widened by the scale when downscaling and normalised to sum to 1. A port
/// of Pillow's `precompute_coeffs` (`Resample.c`, its names kept) without its fixed-point rounding.
pub fn resample_matrix(in_size: usize, out_size: usize) -> Vec<f32> {
    let mut kk = vec![0f32; in_size * out_size];
    if in_size == 0 || out_size == 0 {
        return kk;
    }
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the bilinear filter's support (1) times filterscale
    let ss = 1.0 / filterscale;
    for (xx, k) in kk.chunks_exact_mut(in_size).enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        // Pillow truncates toward zero, then clamps to the input.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
        let w: Vec<f64> = (xmin..xmax).map(|x| bilinear_filter((x as f64 - center + 0.5) * ss)).collect();
        let ww: f64 = w.iter().sum();
        if ww != 0.0 {
            for (x, w) in (xmin..xmax).zip(w) {
                k[x] = (w / ww) as f32;
            }
        }
    }
    kk
}

/// Pillow's `bilinear_filter`: the triangle kernel.
fn bilinear_filter(x: f64) -> f64 {
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
