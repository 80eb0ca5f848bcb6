//! Batch prediction that survives a crash: predictions are journaled in chunks of whole batches
//! (a [`ChunkStore`] beside the output file, named by the prediction's provenance digest), so a
//! rerun after `kill -9` predicts only the images of the missing chunks, and the result equals an
//! uninterrupted run's. Chunk payloads are `rows: u32, k: u32`, then per image `k` pairs of class
//! index (u32) and probability (f32 bits), little-endian.

use std::path::{Path, PathBuf};

use checkpoint::chunks::{self, ChunkStore};

use crate::{ClassProb, Error, Prediction, Predictor};

impl Predictor {
    /// The provenance key of predicting the top `k` of `paths` in batches of `batch_size`: the
    /// checkpoint's weights (tensor checksum) and classes, the transform, the test-time augmentation, and every image's path,
    /// size and modification time (as one digest).
    pub fn prediction_key(&self, paths: &[PathBuf], k: usize, batch_size: usize) -> serde_json::Value {
        let mut list = String::new();
        for p in paths {
            let stamp = std::fs::metadata(p).ok().map(|m| {
                let t = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
                format!("{}:{t}", m.len())
            });
            list.push_str(&format!("{}\0{}\n", p.display(), stamp.unwrap_or_else(|| "missing".into())));
        }
        let mut key = serde_json::json!({
            "kind": "petal.predictions",
            "version": 1,
            "weights": self.meta.tensor_checksum,
            "classes": self.classes,
            "transform": self.transform,
            "k": k.min(self.classes.len()),
            "batch_size": batch_size,
            "images": petal_common::sha256_hex(list.as_bytes()),
        });
        // Test-time augmentation changes the answers (absent for none: keys of earlier versions stay valid).
        if self.tta != crate::Tta::None {
            key["tta"] = serde_json::json!(self.tta);
        }
        key
    }

    /// [`Predictor::predict_paths`] journaled in chunks of about `chunk_images` images (whole
    /// batches) in a folder beside `out`, the file the caller will write the predictions to. Every
    /// forward pass has `batch_size` rows (the last batch is padded), so the predictions of any
    /// subset of `paths` (a shard) are bit for bit those of the whole list.
    /// Chunks an interrupted run left are reused. Returns the predictions and the store, which the
    /// caller [`ChunkStore::finish`]es once `out` is written.
    pub fn predict_paths_resumable(
        &self,
        paths: &[PathBuf],
        k: usize,
        batch_size: usize,
        chunk_images: usize,
        out: &Path,
        mut on_batch: impl FnMut(usize),
    ) -> Result<(Vec<Prediction>, ChunkStore), Error> {
        let bs = batch_size.max(1);
        let key = self.prediction_key(paths, k, bs);
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "predictions".into());
        let dir = out.with_file_name(format!(".{name}.{}.chunks", &chunks::digest(&key)[..16]));
        let mut store = ChunkStore::open(dir, &key, paths.len(), (chunk_images / bs).max(1) * bs, "predictions")?;
        let loaded = store.load();
        let mut parts: Vec<Option<Vec<Prediction>>> =
            loaded.into_iter().enumerate().map(|(c, p)| p.and_then(|bytes| self.decode(&bytes, &paths[store.range(c)], k))).collect();
        let mut done: usize = parts.iter().flatten().map(Vec::len).sum();
        on_batch(done);
        for c in 0..parts.len() {
            if parts[c].is_some() {
                continue;
            }
            let mut preds = Vec::with_capacity(store.chunk_items());
            let mut records = Vec::new();
            for batch in paths[store.range(c)].chunks(bs) {
                // Every pass has `bs` rows, so an image's result does not depend on its batch mates'
                // count: a shard of the inputs predicts exactly what one process over all of them does.
                for p in self.predict_batch(batch, k, bs)? {
                    encode_into(&mut records, &p);
                    preds.push(p);
                }
                done += batch.len();
                on_batch(done);
                if preds.len() == store.range(c).len() {
                    let mut payload = Vec::with_capacity(8 + records.len());
                    payload.extend_from_slice(&(preds.len() as u32).to_le_bytes());
                    payload.extend_from_slice(&(k.min(self.classes.len()) as u32).to_le_bytes());
                    payload.extend_from_slice(&records);
                    store.save(c, &payload)?;
                }
                chunks::test_halt_point();
            }
            parts[c] = Some(preds);
        }
        Ok((parts.into_iter().flatten().flatten().collect(), store))
    }

    /// The predictions of one chunk's `paths`, or `None` (with a warning) when the payload does
    /// not fit them or this checkpoint's classes.
    fn decode(&self, bytes: &[u8], paths: &[PathBuf], k: usize) -> Option<Vec<Prediction>> {
        let word = |at: usize| petal_common::container::le::u32_at(bytes, at).map(|w| w as usize);
        let (rows, kk) = (word(0)?, word(4)?);
        let fits = rows == paths.len() && kk == k.min(self.classes.len()) && bytes.len() == 8 + rows * kk * 8;
        let out = fits.then(|| {
            paths
                .iter()
                .enumerate()
                .map(|(r, path)| {
                    let top = (0..kk)
                        .map(|j| {
                            let at = 8 + (r * kk + j) * 8;
                            let index = word(at)?;
                            let c = self.classes.get(index)?;
                            let prob = f32::from_bits(word(at + 4)? as u32);
                            Some(ClassProb { index, folder: c.folder.clone(), name: c.name.clone().unwrap_or_else(|| c.folder.clone()), prob })
                        })
                        .collect::<Option<Vec<_>>>()?;
                    Some(Prediction { path: path.clone(), top })
                })
                .collect::<Option<Vec<_>>>()
        });
        let out = out.flatten();
        if out.is_none() {
            tracing::warn!("a prediction chunk does not fit these images or classes; recomputing it");
        }
        out
    }
}

fn encode_into(records: &mut Vec<u8>, p: &Prediction) {
    for c in &p.top {
        records.extend_from_slice(&(c.index as u32).to_le_bytes());
        records.extend_from_slice(&c.prob.to_bits().to_le_bytes());
    }
}
