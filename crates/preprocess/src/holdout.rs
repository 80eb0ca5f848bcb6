//! A held-out part of a split: the fair protocol for choosing on validation images.
//!
//! Choosing the epoch, the recipe or the test-time augmentation on the same images that report
//! the score makes the score optimistic. [`Holdout::apply`] cuts a split (normally `valid`) into a
//! *selection* part, on which every choice is made, and a *held-out* part, which only reports.
//!
//! The cut is stratified (each class gives `round(n · fraction)` of its `n` images to the held-out
//! part) and deterministic: an image's side depends only on the seed and its path relative to the
//! dataset root, through SHA-256, so it does not change with the machine, the order files were
//! listed in, or the images added to other classes.

use sha2::{Digest, Sha256};

use crate::dataset::{Dataset, Sample, Split};
use crate::Error;

/// Suffix of the selection part's split name (`valid` → `valid-select`).
pub const SELECT_SUFFIX: &str = "-select";
/// Suffix of the held-out part's split name (`valid` → `valid-holdout`).
pub const HOLDOUT_SUFFIX: &str = "-holdout";

/// How much of which split to hold out.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Holdout {
    /// Fraction of each class's images held out, in `(0, 1)`.
    pub fraction: f64,
    /// Seed of the cut (independent of the training seed, so trials with different seeds are
    /// scored on the same images).
    pub seed: u64,
}

impl Holdout {
    /// The selection part's name for `split`.
    pub fn select_name(split: &str) -> String {
        format!("{split}{SELECT_SUFFIX}")
    }

    /// The held-out part's name for `split`.
    pub fn holdout_name(split: &str) -> String {
        format!("{split}{HOLDOUT_SUFFIX}")
    }

    /// `ds` with split `split` replaced by its selection part (`<split>-select`) and its held-out
    /// part (`<split>-holdout`), each in the split's own order (class, then path).
    ///
    /// Errors: a fraction outside `(0, 1)`, no such split, or a part left empty.
    pub fn apply(&self, ds: &Dataset, split: &str) -> Result<Dataset, Error> {
        if !(self.fraction > 0.0 && self.fraction < 1.0) {
            return Err(Error::Config(format!("holdout fraction {} is not between 0 and 1 (exclusive)", self.fraction)));
        }
        let pos = ds
            .splits
            .iter()
            .position(|s| s.name == split && !s.samples.is_empty())
            .ok_or_else(|| Error::Config(format!("{} has no (non-empty) split {split:?} to hold images out of", ds.root.display())))?;
        let held = self.held_out(ds, &ds.splits[pos].samples);
        let (mut select, mut holdout) = (Vec::new(), Vec::new());
        for (s, h) in ds.splits[pos].samples.iter().zip(held) {
            if h {
                holdout.push(s.clone())
            } else {
                select.push(s.clone())
            }
        }
        if select.is_empty() || holdout.is_empty() {
            return Err(Error::Config(format!(
                "holding out {} of the {} images of {split:?} leaves {} to select on and {} held out: both need images",
                self.fraction,
                select.len() + holdout.len(),
                select.len(),
                holdout.len()
            )));
        }
        let mut out = ds.clone();
        out.splits.splice(
            pos..=pos,
            [Split { name: Self::select_name(split), samples: select }, Split { name: Self::holdout_name(split), samples: holdout }],
        );
        Ok(out)
    }

    /// For each sample, whether it is held out.
    fn held_out(&self, ds: &Dataset, samples: &[Sample]) -> Vec<bool> {
        let classes = samples.iter().map(|s| s.label).max().map_or(0, |m| m + 1);
        let mut by_class: Vec<Vec<(usize, [u8; 32])>> = vec![Vec::new(); classes];
        for (i, s) in samples.iter().enumerate() {
            by_class[s.label].push((i, self.rank(ds, s)));
        }
        let mut held = vec![false; samples.len()];
        for mut members in by_class {
            members.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
            let k = (members.len() as f64 * self.fraction).round() as usize;
            for &(i, _) in &members[..k] {
                held[i] = true;
            }
        }
        held
    }

    /// The sample's place in its class's random order: SHA-256 of the seed and its path relative
    /// to the dataset root.
    fn rank(&self, ds: &Dataset, s: &Sample) -> [u8; 32] {
        let rel = s.path.strip_prefix(&ds.root).unwrap_or(&s.path);
        let mut h = Sha256::new();
        h.update(self.seed.to_le_bytes());
        h.update(rel.to_string_lossy().as_bytes());
        h.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Layout;
    use std::path::PathBuf;

    fn dataset(per_class: &[usize]) -> Dataset {
        let root = PathBuf::from("/data/flowers");
        let mut valid = Vec::new();
        for (c, &n) in per_class.iter().enumerate() {
            for i in 0..n {
                valid.push(Sample { path: root.join(format!("valid/{c}/image_{i:05}.jpg")), label: c });
            }
        }
        let train =
            valid.iter().map(|s| Sample { path: PathBuf::from(s.path.to_string_lossy().replace("valid", "train")), label: s.label }).collect();
        Dataset {
            root,
            layout: Layout::ImageFolder,
            classes: (0..per_class.len()).map(|c| c.to_string()).collect(),
            names: None,
            splits: vec![Split { name: "train".into(), samples: train }, Split { name: "valid".into(), samples: valid }],
            skipped: Vec::new(),
        }
    }

    fn counts(split: &Split, classes: usize) -> Vec<usize> {
        let mut c = vec![0; classes];
        for s in &split.samples {
            c[s.label] += 1;
        }
        c
    }

    #[test]
    fn the_cut_is_stratified_disjoint_and_complete() {
        let per_class = [10, 7, 3, 1, 20];
        let ds = dataset(&per_class);
        let out = Holdout { fraction: 0.5, seed: 7 }.apply(&ds, "valid").unwrap();
        let names: Vec<&str> = out.splits.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["train", "valid-select", "valid-holdout"]);
        let (sel, held) = (out.split("valid-select").unwrap(), out.split("valid-holdout").unwrap());
        // round(n / 2) per class is held out (Rust rounds halves away from zero).
        assert_eq!(counts(held, 5), [5, 4, 2, 1, 10]);
        assert_eq!(counts(sel, 5), [5, 3, 1, 0, 10]);
        let mut all: Vec<&PathBuf> = sel.samples.iter().chain(&held.samples).map(|s| &s.path).collect();
        all.sort();
        let before = all.len();
        all.dedup();
        assert_eq!(all.len(), before, "the two parts share an image");
        assert_eq!(all.len(), per_class.iter().sum::<usize>());
        // Each part keeps the split's order.
        assert!(held.samples.windows(2).all(|w| (w[0].label, &w[0].path) < (w[1].label, &w[1].path)));
    }

    #[test]
    fn the_cut_depends_on_the_seed_and_paths_only() {
        let ds = dataset(&[40, 40]);
        let cut = Holdout { fraction: 0.25, seed: 1 };
        let a = cut.apply(&ds, "valid").unwrap();
        // The same cut whatever order the files were listed in.
        let mut shuffled = ds.clone();
        shuffled.splits[1].samples.reverse();
        let b = cut.apply(&shuffled, "valid").unwrap();
        let set = |d: &Dataset| {
            let mut v: Vec<PathBuf> = d.split("valid-holdout").unwrap().samples.iter().map(|s| s.path.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(set(&a), set(&b));
        assert_eq!(set(&a).len(), 20);
        // Another seed, another cut.
        let c = Holdout { fraction: 0.25, seed: 2 }.apply(&ds, "valid").unwrap();
        assert_ne!(set(&a), set(&c));
        // Not simply the first files of each class.
        let first: Vec<PathBuf> = ds.splits[1].samples.iter().filter(|s| s.label == 0).take(10).map(|s| s.path.clone()).collect();
        assert_ne!(set(&a).into_iter().filter(|p| p.to_string_lossy().contains("/0/")).collect::<Vec<_>>(), first);
    }

    #[test]
    fn bad_cuts_are_refused_by_name() {
        let ds = dataset(&[4, 4]);
        for f in [0.0, 1.0, -0.5, f64::NAN] {
            let e = Holdout { fraction: f, seed: 0 }.apply(&ds, "valid").unwrap_err().to_string();
            assert!(e.contains("holdout fraction"), "{e}");
        }
        let e = Holdout { fraction: 0.5, seed: 0 }.apply(&ds, "test").unwrap_err().to_string();
        assert!(e.contains("\"test\""), "{e}");
        let e = Holdout { fraction: 0.01, seed: 0 }.apply(&ds, "valid").unwrap_err().to_string();
        assert!(e.contains("0 held out"), "{e}");
    }
}
