//! Parallel batch production through a bounded prefetch queue.
//!
//! A producer thread walks the epoch's batches in order; each batch's samples are prepared in
//! parallel on rayon (a dedicated pool when [`LoaderConfig::threads`] > 0, else the global one)
//! directly into the batch's f32 buffer. Finished batches go through a
//! `sync_channel(prefetch)`: at most `prefetch` finished batches wait, plus one in preparation,
//! so memory is bounded and preparation overlaps the consumer's compute. Dropping the
//! [`Loader`] stops the producer. A dropped [`Batch`] hands its pixel buffer back to the
//! producer, which fills it again instead of allocating and zeroing a new one (every sample's
//! slice is overwritten; stale values only sit in slices of failed samples, which never leave).

use crate::cache::ImageCache;
use crate::dataset::{Sample, Split};
use crate::decode::{decode_rgb_window, with_window_buf, Pixels};
use crate::error::{BadInput, Error};
use crate::rng::epoch_order;
use crate::transform::{resize_center_crop_source, rotate_crop_source, train_params, transform_view_into, AugmentDraw, Mode, TransformConfig, View};
use rayon::prelude::*;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Where pixels come from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// Decode the image files.
    Files,
    /// Read from an image cache built for exactly these samples (entry i = sample i).
    Cache(Arc<ImageCache>),
}

/// Batch iteration settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Shuffle the order (a pure function of `seed` and `epoch`).
    pub shuffle: bool,
    /// Seed of shuffling and augmentation.
    pub seed: u64,
    /// Epoch (or augmentation view) number.
    pub epoch: u64,
    /// Eval or train transform.
    pub mode: Mode,
    /// Finished batches that may wait in the queue (≥ 1).
    pub prefetch: usize,
    /// Drop the last incomplete batch.
    pub drop_last: bool,
    /// Lay out `images` as NHWC instead of NCHW.
    pub channels_last: bool,
    /// Rayon threads of a dedicated pool; 0 uses the global pool.
    pub threads: usize,
    /// Skip this many batches at the start (exact mid-epoch resume).
    pub start_batch: usize,
    /// Stop before this batch (`None`: at the end of the epoch). With `start_batch` it selects a
    /// range of batches whose samples keep their indices in the epoch (and so their augmentation).
    pub end_batch: Option<usize>,
    /// Drop samples that fail to decode from their batch (listed in [`Batch::skipped`]) instead of
    /// ending the epoch with an error. A batch whose samples all fail is not sent.
    pub skip_bad: bool,
    /// For a subset of a split (one shard of it): the index in the whole split of each of the
    /// loader's samples, which keys its augmentation in place of its position, so that an image
    /// gets the pixels it gets in a pass over the whole split. `None`: the position.
    pub sample_ids: Option<Vec<usize>>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 32,
            shuffle: false,
            seed: 0,
            epoch: 0,
            mode: Mode::Eval,
            prefetch: 2,
            drop_last: false,
            channels_last: false,
            threads: 0,
            start_batch: 0,
            end_batch: None,
            skip_bad: false,
            sample_ids: None,
        }
    }
}

/// One batch of normalised images.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Where `images` goes back to when the batch is dropped (to its loader, for reuse).
    recycle: Recycle,
    /// `N*3*H*W` values: NCHW, or NHWC when `channels_last`.
    pub images: Vec<f32>,
    /// Logical shape `[N, 3, H, W]` (also when the memory layout is NHWC).
    pub shape: [usize; 4],
    /// Class labels.
    pub labels: Vec<i64>,
    /// Indices of the samples in the split.
    pub indices: Vec<usize>,
    /// Whether `images` is laid out NHWC.
    pub channels_last: bool,
    /// Samples dropped from this batch because they could not be read (only with `skip_bad`).
    pub skipped: Vec<BadInput>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(tx) = &self.recycle.0 {
            // A full pool or a finished loader just frees the buffer.
            let _ = tx.try_send(std::mem::take(&mut self.images));
        }
    }
}

/// The way back of a batch's buffer; not part of a batch's value (equal, in any two batches).
#[derive(Debug, Clone, Default)]
struct Recycle(Option<SyncSender<Vec<f32>>>);

impl PartialEq for Recycle {
    fn eq(&self, _: &Recycle) -> bool {
        true
    }
}

/// Bounded-queue batch iterator (see the module docs).
pub struct Loader {
    rx: Receiver<Result<Batch, Error>>,
    handle: Option<JoinHandle<()>>,
    remaining: usize,
}

impl Loader {
    /// Batches still to come.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.rx.recv() {
            Ok(b) => {
                self.remaining = self.remaining.saturating_sub(1);
                if b.is_err() {
                    self.remaining = 0;
                }
                Some(b)
            }
            Err(_) => {
                if let Some(h) = self.handle.take() {
                    if h.join().is_err() {
                        return Some(Err(Error::Config("loader thread panicked".into())));
                    }
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

/// Number of batches of an epoch.
pub fn num_batches(samples: usize, batch_size: usize, drop_last: bool) -> usize {
    if batch_size == 0 {
        0
    } else if drop_last {
        samples / batch_size
    } else {
        samples.div_ceil(batch_size)
    }
}

/// One view of an image file into `out`: only the window of the image the view reads is
/// decoded ([`decode_rgb_window`]: the eval view's `Resize` + `CenterCrop` window, or the
/// rotated crop's bounding box of a train view), into this thread's reused buffer; the values
/// are those of decoding the whole file.
fn view_of_file_into(path: &std::path::Path, draw: AugmentDraw, tcfg: &TransformConfig, channels_last: bool, out: &mut [f32]) -> Result<(), Error> {
    let window = |w, h| match draw.mode {
        Mode::Eval => resize_center_crop_source(w, h, tcfg.resize_size, tcfg.image_size),
        Mode::Train => {
            let p = train_params(w, h, tcfg, draw.seed, draw.epoch, draw.index);
            rotate_crop_source(w, h, p.angle, p.left, p.top, p.width, p.height)
        }
    };
    with_window_buf(|buf| {
        match decode_rgb_window(path, &tcfg.limits, window, buf)? {
            Pixels::Whole(img) => transform_view_into(View::of(&img), None, draw, tcfg, channels_last, out),
            Pixels::Window { w, h } => transform_view_into(View { w, h, data: buf }, None, draw, tcfg, channels_last, out),
        }
        Ok(())
    })
}

/// Prepares one sample into `out` (3 × size × size values): `index` is its position (and image
/// cache entry), `draw` the view to make (its `index` the sample's in the whole split).
pub(crate) fn prepare(
    sample: &Sample,
    index: usize,
    source: &ImageSource,
    tcfg: &TransformConfig,
    draw: AugmentDraw,
    channels_last: bool,
    out: &mut [f32],
) -> Result<(), Error> {
    match source {
        ImageSource::Files => view_of_file_into(&sample.path, draw, tcfg, channels_last, out)?,
        ImageSource::Cache(c) => {
            // An entry left missing because its source was bad reports that source's problem.
            let e = c.get(index).map_err(|err| match c.bad.iter().find(|b| b.path == sample.path) {
                Some(b) => Error::BadInput(b.clone()),
                None => err,
            })?;
            let v = View { w: e.width, h: e.height, data: e.pixels };
            transform_view_into(v, Some((e.orig_width, e.orig_height)), draw, tcfg, channels_last, out);
        }
    }
    Ok(())
}

/// Starts a loader over `samples` (sample index = position in `samples`, which keys the
/// augmentation randomness and the cache entry).
pub fn loader(samples: Arc<[Sample]>, source: ImageSource, tcfg: &TransformConfig, lcfg: &LoaderConfig) -> Result<Loader, Error> {
    tcfg.validate()?;
    if lcfg.batch_size == 0 || lcfg.prefetch == 0 {
        return Err(Error::Config("batch_size and prefetch must be at least 1".into()));
    }
    if lcfg.sample_ids.as_ref().is_some_and(|ids| ids.len() != samples.len()) {
        return Err(Error::Config(format!("sample_ids has {} entries for {} samples", lcfg.sample_ids.as_ref().map_or(0, Vec::len), samples.len())));
    }
    if let ImageSource::Cache(c) = &source {
        if c.len() != samples.len() {
            return Err(Error::cache(c.path(), format!("has {} entries for {} samples", c.len(), samples.len())));
        }
        if c.short_side() != tcfg.resize_size {
            return Err(Error::cache(c.path(), format!("short side {} but resize_size is {}", c.short_side(), tcfg.resize_size)));
        }
    }
    let pool = if lcfg.threads > 0 {
        Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(lcfg.threads)
                .thread_name(|i| format!("preprocess-{i}"))
                .build()
                .map_err(|e| Error::Config(format!("cannot start {} loader threads: {e}", lcfg.threads)))?,
        )
    } else {
        None
    };
    let order = epoch_order(samples.len(), lcfg.seed, lcfg.epoch, lcfg.shuffle);
    let all = num_batches(samples.len(), lcfg.batch_size, lcfg.drop_last);
    let total = lcfg.end_batch.map_or(all, |e| e.min(all));
    let start = lcfg.start_batch.min(total);
    let (tx, rx) = sync_channel(lcfg.prefetch);
    // Buffers of dropped batches: those in flight, and one more.
    let (recycle_tx, recycle_rx) = sync_channel::<Vec<f32>>(lcfg.prefetch + 2);
    let tcfg = tcfg.clone();
    let lcfg = lcfg.clone();
    let size = tcfg.image_size as usize;
    let per = 3 * size * size;
    let handle = std::thread::Builder::new()
        .name("preprocess-loader".into())
        .spawn(move || {
            for b in start..total {
                let lo = b * lcfg.batch_size;
                let hi = (lo + lcfg.batch_size).min(order.len());
                let idx = &order[lo..hi];
                let n = idx.len();
                let mut images = match recycle_rx.try_recv() {
                    Ok(mut v) => {
                        v.resize(n * per, 0.0);
                        v
                    }
                    Err(_) => vec![0f32; n * per],
                };
                let (buf, samples, source, tcfg, lcfg) = (&mut images, &samples, &source, &tcfg, &lcfg);
                let mut work = move || {
                    buf.par_chunks_mut(per)
                        .zip(idx.par_iter())
                        .map(|(out, &i)| {
                            let id = lcfg.sample_ids.as_ref().map_or(i, |ids| ids[i]);
                            prepare(
                                &samples[i],
                                i,
                                source,
                                tcfg,
                                AugmentDraw { mode: lcfg.mode, seed: lcfg.seed, epoch: lcfg.epoch, index: id as u64 },
                                lcfg.channels_last,
                                out,
                            )
                        })
                        .collect::<Vec<Result<(), Error>>>()
                };
                let results = match &pool {
                    Some(p) => p.install(work),
                    None => work(),
                };
                let msg = assemble(images, idx, results, samples, per, [n, 3, size, size], lcfg).map(|mut b| {
                    b.recycle = Recycle(Some(recycle_tx.clone()));
                    b
                });
                let msg = match msg {
                    Ok(b) if b.indices.is_empty() => continue, // every sample was bad and skipped
                    other => other,
                };
                let stop = msg.is_err();
                if tx.send(msg).is_err() || stop {
                    return; // consumer gone, or error delivered
                }
            }
        })
        .map_err(|e| Error::Config(format!("cannot start the loader thread: {e}")))?;
    Ok(Loader { rx, handle: Some(handle), remaining: total - start })
}

/// Builds a batch from per-sample results: the first error fails it, unless `skip_bad` drops
/// unreadable samples (compacting the pixels) and lists them.
fn assemble(
    mut images: Vec<f32>,
    idx: &[usize],
    results: Vec<Result<(), Error>>,
    samples: &[Sample],
    per: usize,
    mut shape: [usize; 4],
    lcfg: &LoaderConfig,
) -> Result<Batch, Error> {
    let mut skipped = Vec::new();
    let mut kept = Vec::with_capacity(idx.len());
    for (k, (r, &i)) in results.into_iter().zip(idx).enumerate() {
        match r {
            Ok(()) => {
                let dst = kept.len();
                if dst != k {
                    images.copy_within(k * per..(k + 1) * per, dst * per);
                }
                kept.push(i);
            }
            Err(Error::BadInput(b)) if lcfg.skip_bad => {
                tracing::warn!(file = %b.path.display(), problem = %b.problem, "skipped an unreadable image");
                skipped.push(b);
            }
            Err(e) => return Err(e),
        }
    }
    images.truncate(kept.len() * per);
    shape[0] = kept.len();
    Ok(Batch {
        recycle: Recycle::default(),
        labels: kept.iter().map(|&i| samples[i].label as i64).collect(),
        indices: kept,
        shape,
        images,
        channels_last: lcfg.channels_last,
        skipped,
    })
}

/// [`loader`] over a split.
pub fn split_loader(split: &Split, source: ImageSource, tcfg: &TransformConfig, lcfg: &LoaderConfig) -> Result<Loader, Error> {
    loader(split.samples.clone().into(), source, tcfg, lcfg)
}

/// Decode + eval transform of one file, for inference (CHW, 3 × size × size): the values of
/// decoding the whole file and `transform(.., Mode::Eval, ..)`, decoding only the window the
/// crop reads.
pub fn predict_tensor(path: &std::path::Path, cfg: &TransformConfig) -> Result<Vec<f32>, Error> {
    cfg.validate()?;
    let s = cfg.image_size as usize;
    let mut out = vec![0f32; 3 * s * s];
    view_of_file_into(path, AugmentDraw { mode: Mode::Eval, seed: 0, epoch: 0, index: 0 }, cfg, false, &mut out)?;
    Ok(out)
}
