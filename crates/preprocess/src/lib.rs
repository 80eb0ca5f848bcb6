//! Dataset discovery, image decoding, torchvision-exact transforms, parallel batch production
//! and a versioned on-disk image cache for the petal pipeline.
//!
//! This crate owns everything between image files on disk and normalised `f32` batches:
//! * [`discover`]: ImageFolder (`root/{train,valid,test}/<class>/…`) and the official Oxford 102
//!   layout (`jpg/` + `imagelabels.mat` + `setid.mat`, read by the [`mat`] module), with bad-input
//!   detection and a printable [`DatasetSummary`];
//! * [`decode_rgb`]: JPEG/PNG/WebP/BMP/GIF/TIFF (grayscale, CMYK, palette, 16-bit, alpha) → RGB8
//!   byte-identical to PIL's `convert("RGB")`, with a pixel limit and truncation checks;
//! * [`transform()`]: torchvision's eval and train transforms (documented per transform in
//!   [`mod@transform`]), random draws keyed by (seed, epoch, index);
//! * [`tta_views`]: test-time augmentation views ([`Tta`]: none, flip, torchvision's five-crop);
//! * [`loader()`]: batches prepared on rayon behind a bounded prefetch queue;
//! * [`ImageCache`]: memory-mapped cache of resized uint8 images, rebuilt when stale or corrupt.
//!
//! Architecture invariant: this crate knows nothing about models, tensors libraries or libtorch
//! (no `tch`); it hands out plain `Vec<f32>` in NCHW (or NHWC) order that the training crate
//! converts. It never panics on bad input files: every problem is an [`Error`] naming the file.

#![warn(missing_docs)]

pub mod cache;
pub mod dataset;
pub mod decode;
pub mod error;
pub mod holdout;
mod jpeg;
pub mod loader;
pub mod mat;
pub mod resample;
pub mod rng;
pub mod simd;
pub mod transform;
pub mod tta;

pub use cache::{fingerprint, split_cache, CacheParams, CacheStatus, CachedImage, ImageCache, CACHE_VERSION};
pub use dataset::{
    discover, find_names_file, read_names_file, Dataset, DatasetSummary, DiscoverOptions, Layout, Sample, Split, SplitSummary, NAMES_FILE,
};
pub use decode::{decode_rgb, decode_rgb_bytes, decode_rgb_with, is_image_path, probe, DecodeLimits, IMAGE_EXTENSIONS};
pub use error::{BadInput, Error, Problem};
pub use holdout::Holdout;
pub use loader::{loader, num_batches, predict_tensor, split_loader, Batch, ImageSource, Loader, LoaderConfig};
pub use rng::epoch_order;
pub use simd::{simd_level, SimdLevel};
pub use transform::{
    center_crop, eval_u8, resize_shorter, rotate_nearest, train_params, transform, write_tensor, AugmentDraw, ColorJitter, JitterParams, Mode,
    TrainParams, TransformConfig, IMAGENET_MEAN, IMAGENET_STD,
};

pub use tta::{five_crop, tta_views, tta_views_of_file, tta_views_u8, tta_views_u8_of_bytes, Tta};

/// The image type returned by [`decode_rgb`] (re-exported from the `image` crate).
pub use image::RgbImage;
