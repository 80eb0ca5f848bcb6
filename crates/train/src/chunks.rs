//! Backbone passes over a split in crash-safe chunks (the write-ahead log of the frozen-feature
//! and activation caches).
//!
//! A chunk is a whole number of loader batches, so a resumed run computes exactly the batches an
//! uninterrupted run would, with the same samples at the same global indices (and so the same
//! augmentation): the assembled result is identical value for value. Finished chunks go to a
//! [`ChunkStore`] (atomic, checksummed files); after a crash the next run reuses them and runs the
//! backbone only on the chunks that are missing. Chunk payloads are `rows: u64, row_len: u64`, then
//! `rows × row_len` values of the rows' element type (f32 features; f32 or f16 activations) and
//! `rows` i64 labels, little-endian.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use checkpoint::chunks::{self, ChunkStore};
use checkpoint::{DType, TensorData};
use preprocess::{ImageSource, LoaderConfig, Sample, TransformConfig};
use tch::{Device, Kind, Tensor};

use crate::tensors::{from_data, to_data};
use crate::{batch_tensor, Error};

/// Chunk size in images for `chunk_images` requested and batches of `batch_size`: whole batches,
/// at least one; `None` when chunking is off (`chunk_images` = 0).
pub fn chunk_items(chunk_images: usize, batch_size: usize) -> Option<usize> {
    (chunk_images > 0 && batch_size > 0).then(|| (chunk_images / batch_size).max(1) * batch_size)
}

/// What one row of a pass's result is: its shape (without the batch dimension) and element kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RowLayout {
    pub shape: Vec<i64>,
    pub kind: Kind,
}

impl RowLayout {
    fn len(&self) -> i64 {
        self.shape.iter().product()
    }

    fn dtype(&self) -> DType {
        if self.kind == Kind::Half {
            DType::F16
        } else {
            DType::F32
        }
    }

    pub(crate) fn empty(&self) -> Tensor {
        let mut shape = vec![0];
        shape.extend_from_slice(&self.shape);
        Tensor::zeros(shape.as_slice(), (self.kind, Device::Cpu))
    }
}

/// One backbone pass: the network part, the samples and how they are loaded.
pub(crate) struct Job<'a> {
    /// A batch of images (on `device`) → its rows, in `row.kind`.
    pub forward: &'a dyn Fn(&Tensor) -> Result<Tensor, Error>,
    pub row: RowLayout,
    pub device: Device,
    pub samples: &'a Arc<[Sample]>,
    pub source: ImageSource,
    pub tcfg: &'a TransformConfig,
    /// Batch size, seed, view, mode...; its batch range is set per run of missing chunks.
    pub lcfg: LoaderConfig,
}

/// What a pass produced.
pub(crate) struct Extracted {
    /// Rows `[N, ...row shape]` (CPU).
    pub x: Tensor,
    /// Labels `[N]` (i64).
    pub y: Tensor,
    /// Images this process ran through the backbone (reused chunks excluded).
    pub computed: usize,
    /// The chunks, to [`ChunkStore::finish`] once the final cache is saved.
    pub store: Option<ChunkStore>,
}

/// Features and labels of one chunk.
struct Part {
    x: Tensor,
    y: Tensor,
}

/// Runs the backbone over every sample of `job` that `store` (if any) does not already hold,
/// saving each finished chunk; `progress` is told how many images were reused or computed.
pub(crate) fn extract(job: &Job, mut store: Option<ChunkStore>, progress: &mut dyn FnMut(u64)) -> Result<Extracted, Error> {
    let n = job.samples.len();
    let row = &job.row;
    let chunk_items = store.as_ref().map_or(n.max(1), ChunkStore::chunk_items);
    let mut parts: Vec<Option<Part>> = match store.as_mut() {
        Some(s) => {
            let loaded = s.load();
            loaded.into_iter().enumerate().map(|(c, p)| p.and_then(|bytes| decode(&bytes, row, &s.chunk_path(c)))).collect()
        }
        None => (0..n.div_ceil(chunk_items)).map(|_| None).collect(),
    };
    let reused: usize = (0..parts.len()).filter(|&c| parts[c].is_some()).map(|c| range(c, chunk_items, n).len()).sum();
    progress(reused as u64);
    let bs = job.lcfg.batch_size;
    let mut pass = Pass { parts: &mut parts, store: store.as_mut(), chunk_items, n, row, computed: 0 };
    for run in chunks::missing_runs(pass.parts) {
        // Chunks are whole batches (without a store, one chunk holds everything): exact bounds.
        let (lo, hi) = (range(run.start, chunk_items, n).start, range(run.end - 1, chunk_items, n).end);
        let lcfg = LoaderConfig { start_batch: lo / bs, end_batch: Some(hi.div_ceil(bs)), ..job.lcfg.clone() };
        pass.run(job, run, &lcfg, progress)?;
    }
    let computed = pass.computed;
    let parts: Vec<Part> = parts.into_iter().flatten().collect();
    let (x, y) = match <[Part; 1]>::try_from(parts) {
        Ok([only]) => (only.x, only.y),
        Err(parts) if parts.is_empty() => (row.empty(), Tensor::zeros([0], (Kind::Int64, Device::Cpu))),
        Err(parts) => {
            let xs: Vec<&Tensor> = parts.iter().map(|p| &p.x).collect();
            let ys: Vec<&Tensor> = parts.iter().map(|p| &p.y).collect();
            (Tensor::cat(&xs, 0), Tensor::cat(&ys, 0))
        }
    };
    Ok(Extracted { x, y, computed, store })
}

fn range(chunk: usize, chunk_items: usize, n: usize) -> Range<usize> {
    let lo = (chunk * chunk_items).min(n);
    lo..(lo + chunk_items).min(n)
}

/// The state of a pass over the missing chunks.
struct Pass<'a> {
    parts: &'a mut Vec<Option<Part>>,
    store: Option<&'a mut ChunkStore>,
    chunk_items: usize,
    n: usize,
    row: &'a RowLayout,
    computed: usize,
}

impl Pass<'_> {
    /// Computes the chunks of `run` (consecutive, all missing) from the batches `lcfg` selects.
    fn run(&mut self, job: &Job, run: Range<usize>, lcfg: &LoaderConfig, progress: &mut dyn FnMut(u64)) -> Result<(), Error> {
        let bs = lcfg.batch_size;
        let (mut chunk, mut feats, mut labels) = (run.start, Vec::new(), Vec::new());
        for b in preprocess::loader(job.samples.clone(), job.source.clone(), job.tcfg, lcfg)? {
            let b = b?;
            // Batches whose samples all failed (skip_bad) are not sent: close the chunks they end.
            let batch_no = b.indices[0] / bs;
            while chunk < batch_no * bs / self.chunk_items {
                self.flush(chunk, &mut feats, &mut labels)?;
                chunk += 1;
            }
            let x = batch_tensor(&b, job.device);
            feats.push((job.forward)(&x)?.to_device(Device::Cpu));
            labels.extend_from_slice(&b.labels);
            let seen = b.labels.len() + b.skipped.len();
            self.computed += seen;
            progress(seen as u64);
            if (batch_no + 1) * bs >= range(chunk, self.chunk_items, self.n).end {
                self.flush(chunk, &mut feats, &mut labels)?;
                chunk += 1;
            }
            chunks::test_halt_point();
        }
        while chunk < run.end {
            self.flush(chunk, &mut feats, &mut labels)?;
            chunk += 1;
        }
        Ok(())
    }

    /// Closes chunk `chunk` with the batches gathered for it: saved (when chunking) and kept.
    fn flush(&mut self, chunk: usize, feats: &mut Vec<Tensor>, labels: &mut Vec<i64>) -> Result<(), Error> {
        let x = if feats.is_empty() { self.row.empty() } else { Tensor::cat(feats, 0) };
        let y = Tensor::from_slice(labels);
        feats.clear();
        labels.clear();
        if let Some(store) = self.store.as_deref_mut() {
            store.save(chunk, &encode(&x, &y, self.row)?)?;
        }
        self.parts[chunk] = Some(Part { x, y });
        Ok(())
    }
}

fn encode(x: &Tensor, y: &Tensor, row: &RowLayout) -> Result<Vec<u8>, Error> {
    let (xd, yd) = (to_data("features", x)?, to_data("labels", y)?);
    let shape: Vec<i64> = xd.shape.iter().skip(1).map(|&d| d as i64).collect();
    if xd.dtype != row.dtype() || yd.dtype != DType::I64 || shape != row.shape {
        let want = format!("{:?} {:?}", row.dtype(), row.shape);
        return Err(Error::Config(format!("rows are {:?} {:?} and labels {:?}; [N] + {want} and i64 were expected", xd.dtype, xd.shape, yd.dtype)));
    }
    let mut out = Vec::with_capacity(16 + xd.bytes.len() + yd.bytes.len());
    out.extend_from_slice(&(xd.shape[0] as u64).to_le_bytes());
    out.extend_from_slice(&(row.len() as u64).to_le_bytes());
    out.extend_from_slice(&xd.bytes);
    out.extend_from_slice(&yd.bytes);
    Ok(out)
}

/// A chunk's rows and labels, or `None` (with a warning) when its payload does not fit the
/// layout: a checksummed chunk of the right key always fits, so this is a bug or tampering.
fn decode(bytes: &[u8], row: &RowLayout, path: &Path) -> Option<Part> {
    let word = |at: usize| petal_common::container::le::u64_at(bytes, at).map(|w| w as usize);
    let (rows, cols) = (word(0)?, word(8)?);
    let fbytes = rows.checked_mul(cols)?.checked_mul(row.dtype().size_in_bytes())?;
    let ok = cols as i64 == row.len() && 16usize.checked_add(fbytes)?.checked_add(rows.checked_mul(8)?)? == bytes.len();
    let part = ok
        .then(|| {
            let mut shape = vec![rows];
            shape.extend(row.shape.iter().map(|&d| d as usize));
            let xd = TensorData::new(row.dtype(), shape, bytes[16..16 + fbytes].to_vec()).ok()?;
            let yd = TensorData::new(DType::I64, vec![rows], bytes[16 + fbytes..].to_vec()).ok()?;
            Some(Part { x: from_data("features", &xd).ok()?, y: from_data("labels", &yd).ok()? })
        })
        .flatten();
    if part.is_none() {
        tracing::warn!(file = %path.display(), "chunk payload does not fit the rows this pass computes; recomputing it");
    }
    part
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_whole_batches() {
        assert_eq!(chunk_items(256, 32), Some(256));
        assert_eq!(chunk_items(300, 32), Some(288));
        assert_eq!(chunk_items(10, 32), Some(32));
        assert_eq!(chunk_items(0, 32), None);
        assert_eq!(range(2, 8, 20), 16..20);
        assert_eq!(range(3, 8, 20), 20..20);
    }

    #[test]
    fn payload_round_trip_and_refusal() {
        let x = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 4.0, 5.0, 6.0]).view([2, 3]);
        let y = Tensor::from_slice(&[7i64, 9]);
        let layout = |shape: &[i64], kind| RowLayout { shape: shape.to_vec(), kind };
        let f32x3 = layout(&[3], Kind::Float);
        let bytes = encode(&x, &y, &f32x3).expect("encode");
        let p = decode(&bytes, &f32x3, Path::new("c")).expect("decode");
        assert!(p.x.equal(&x) && p.y.equal(&y));
        assert!(decode(&bytes, &layout(&[4], Kind::Float), Path::new("c")).is_none(), "another feature width");
        assert!(decode(&bytes[..bytes.len() - 1], &f32x3, Path::new("c")).is_none(), "short payload");
        let empty = encode(&f32x3.empty(), &Tensor::from_slice::<i64>(&[]), &f32x3).expect("encode empty");
        assert_eq!(decode(&empty, &f32x3, Path::new("c")).expect("decode empty").x.size(), vec![0, 3]);
        // Activation maps in half precision: [rows, C, H, W].
        let half = layout(&[1, 3, 1], Kind::Half);
        let xh = x.to_kind(Kind::Half).view([2, 1, 3, 1]);
        let p = decode(&encode(&xh, &y, &half).expect("encode f16"), &half, Path::new("c")).expect("decode f16");
        assert!(p.x.equal(&xh) && p.x.kind() == Kind::Half);
        assert!(encode(&xh, &y, &layout(&[1, 3, 1], Kind::Float)).is_err(), "wrong element type");
    }
}
