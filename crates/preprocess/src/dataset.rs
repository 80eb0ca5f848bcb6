//! Dataset discovery: torchvision `ImageFolder` layout and the official Oxford 102 release.
//!
//! * ImageFolder: `root/{train,valid,test}/<class>/**/<image>`. Class indices are assigned as
//!   torchvision's `ImageFolder` does: class-folder names sorted as strings ("1", "10", "100",
//!   "101", "102", "11", ...). Files are listed per class by a recursive walk sorted like
//!   `sorted(os.walk(...))` then by file name, keeping the extensions the decoders read
//!   ([`crate::IMAGE_EXTENSIONS`], case-insensitive). Unlike torchvision (which takes each split's own
//!   folders), all splits use the **training** split's class list, so a label means the same
//!   class everywhere; a class folder unknown to the training split is a bad input.
//! * Oxford: `root/jpg/image_NNNNN.jpg` + `imagelabels.mat` (`labels`, 1-based class per image)
//!   and `setid.mat` (`trnid`, `valid`, `tstid`) → splits "train", "valid", "test". Classes are
//!   the label numbers as strings, sorted as strings, so indices match the Udacity ImageFolder
//!   split of the same images.
//!
//! An optional `cat_to_name.json` at the root maps class-folder names to display names.

use crate::decode::{probe, DecodeLimits};
use crate::error::{BadInput, Error, Problem};
use crate::mat::read_mat;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Extensions of image files: exactly the formats the decoders read ([`crate::IMAGE_EXTENSIONS`]).
pub use crate::decode::IMAGE_EXTENSIONS as IMG_EXTENSIONS;

/// A class with fewer images than this in a split is reported as tiny in the summary.
pub const TINY_CLASS: usize = 3;

/// Split folder names looked for in an ImageFolder root, in this order.
pub const SPLIT_NAMES: [&str; 4] = ["train", "valid", "val", "test"];

/// One labelled image file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// The image file.
    pub path: PathBuf,
    /// Class index into [`Dataset::classes`].
    pub label: usize,
}

/// A named list of samples ("train", "valid", "test").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Split {
    /// Split name.
    pub name: String,
    /// Samples in a deterministic order (class, then path).
    pub samples: Vec<Sample>,
}

/// Which on-disk layout a dataset was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Layout {
    /// `root/<split>/<class>/<image>`.
    ImageFolder,
    /// Official Oxford 102 release (`jpg/`, `imagelabels.mat`, `setid.mat`).
    Oxford,
}

/// A discovered dataset.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dataset {
    /// Dataset root.
    pub root: PathBuf,
    /// Layout it was read from.
    pub layout: Layout,
    /// Class-folder names; the index is the label.
    pub classes: Vec<String>,
    /// Display names (from `cat_to_name.json`), same order as `classes`.
    pub names: Option<Vec<String>>,
    /// Splits present, in the order train, valid/val, test.
    pub splits: Vec<Split>,
    /// Inputs skipped because of [`DiscoverOptions::skip_bad`].
    pub skipped: Vec<BadInput>,
}

/// Options of [`discover`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DiscoverOptions {
    /// Skip bad inputs (listing them in [`Dataset::skipped`]) instead of failing on the first.
    pub skip_bad: bool,
    /// Open every image and check its header (format, declared size against the pixel limit)
    /// and, for JPEG, that it is complete. Catches non-images, truncated files and
    /// decompression bombs up front. Costs one read of every file.
    pub verify: bool,
    /// Pixel limit for `verify`.
    pub limits: DecodeLimits,
    /// Display-name file; default: `cat_to_name.json` in the root, else in its parent ([`find_names_file`]).
    pub names_file: Option<PathBuf>,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        DiscoverOptions { skip_bad: false, verify: true, limits: DecodeLimits::default(), names_file: None }
    }
}

impl Dataset {
    /// The split called `name`, if present.
    pub fn split(&self, name: &str) -> Option<&Split> {
        self.splits.iter().find(|s| s.name == name)
    }

    /// `path` relative to the root, with `/` separators (the form records of trained-on images
    /// keep; a path outside the root is kept whole).
    pub fn relative(&self, path: &Path) -> String {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
    }

    /// Display name of a class (falls back to the folder name).
    pub fn display_name(&self, label: usize) -> Option<&str> {
        match &self.names {
            Some(n) => n.get(label).map(String::as_str),
            None => self.classes.get(label).map(String::as_str),
        }
    }

    /// Images per split and class, empty and tiny classes, skipped inputs.
    pub fn summary(&self) -> DatasetSummary {
        let mut splits = Vec::new();
        let mut empty = Vec::new();
        let mut tiny = Vec::new();
        for s in &self.splits {
            let mut per_class = vec![0usize; self.classes.len()];
            for x in &s.samples {
                if let Some(c) = per_class.get_mut(x.label) {
                    *c += 1;
                }
            }
            for (i, &n) in per_class.iter().enumerate() {
                if n == 0 {
                    empty.push((s.name.clone(), self.classes[i].clone()));
                } else if n < TINY_CLASS {
                    tiny.push((s.name.clone(), self.classes[i].clone(), n));
                }
            }
            splits.push(SplitSummary { name: s.name.clone(), images: s.samples.len(), per_class });
        }
        DatasetSummary {
            root: self.root.clone(),
            layout: self.layout,
            classes: self.classes.clone(),
            splits,
            empty_classes: empty,
            tiny_classes: tiny,
            skipped: self.skipped.clone(),
        }
    }
}

/// Per-split counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SplitSummary {
    /// Split name.
    pub name: String,
    /// Number of images.
    pub images: usize,
    /// Images per class index.
    pub per_class: Vec<usize>,
}

/// What [`Dataset::summary`] reports; `Display` prints it for humans.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DatasetSummary {
    /// Dataset root.
    pub root: PathBuf,
    /// Layout.
    pub layout: Layout,
    /// Class-folder names.
    pub classes: Vec<String>,
    /// Per-split counts.
    pub splits: Vec<SplitSummary>,
    /// (split, class) pairs without any image.
    pub empty_classes: Vec<(String, String)>,
    /// (split, class, count) with fewer than 3 images.
    pub tiny_classes: Vec<(String, String, usize)>,
    /// Skipped bad inputs.
    pub skipped: Vec<BadInput>,
}

impl fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset {} ({:?} layout), {} classes", self.root.display(), self.layout, self.classes.len())?;
        for s in &self.splits {
            let (min, max) = s.per_class.iter().fold((usize::MAX, 0), |(a, b), &n| (a.min(n), b.max(n)));
            let min = if s.per_class.is_empty() { 0 } else { min };
            writeln!(f, "  {:<6} {:>6} images, per class min {min} / max {max}", s.name, s.images)?;
        }
        if !self.empty_classes.is_empty() {
            let list: Vec<String> = self.empty_classes.iter().map(|(s, c)| format!("{s}/{c}")).collect();
            writeln!(f, "  empty classes: {}", list.join(", "))?;
        }
        if !self.tiny_classes.is_empty() {
            let list: Vec<String> = self.tiny_classes.iter().map(|(s, c, n)| format!("{s}/{c} ({n})")).collect();
            writeln!(f, "  tiny classes (< 3 images): {}", list.join(", "))?;
        }
        if !self.skipped.is_empty() {
            writeln!(f, "  skipped {} bad inputs:", self.skipped.len())?;
            for b in &self.skipped {
                writeln!(f, "    {b}")?;
            }
        }
        Ok(())
    }
}

/// Collects bad inputs: fails on the first unless `skip_bad`.
struct Bad<'a> {
    opts: &'a DiscoverOptions,
    list: Vec<BadInput>,
}

impl Bad<'_> {
    fn report(&mut self, b: BadInput) -> Result<(), Error> {
        if self.opts.skip_bad {
            tracing::warn!("skipping {b}");
            self.list.push(b);
            Ok(())
        } else {
            Err(Error::BadInput(b))
        }
    }
}

/// Reads a dataset root, detecting the layout: Oxford when `imagelabels.mat` and `setid.mat`
/// exist at the root, ImageFolder when split folders exist.
pub fn discover(root: &Path, opts: &DiscoverOptions) -> Result<Dataset, Error> {
    let meta = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
    if !meta.is_dir() {
        return Err(Error::Layout { path: root.to_path_buf(), problem: "is not a directory".into() });
    }
    let mut bad = Bad { opts, list: Vec::new() };
    let (layout, classes, mut splits) = if root.join("imagelabels.mat").is_file() && root.join("setid.mat").is_file() {
        let (c, s) = discover_oxford(root, &mut bad)?;
        (Layout::Oxford, c, s)
    } else {
        let (c, s) = discover_image_folder(root, &mut bad)?;
        (Layout::ImageFolder, c, s)
    };
    if opts.verify {
        verify_samples(&mut splits, &mut bad)?;
    }
    let names = read_names(root, opts, &classes)?;
    let ds = Dataset { root: root.to_path_buf(), layout, classes, names, splits, skipped: bad.list };
    tracing::info!("{}", ds.summary());
    Ok(ds)
}

fn verify_samples(splits: &mut [Split], bad: &mut Bad<'_>) -> Result<(), Error> {
    let limits = bad.opts.limits;
    for split in splits.iter_mut() {
        let results: Vec<Option<BadInput>> = split
            .samples
            .par_iter()
            .map(|s| {
                probe(&s.path, &limits).err().map(|e| match e {
                    Error::BadInput(b) => b,
                    other => BadInput::new(&s.path, Problem::Unreadable, other.to_string()),
                })
            })
            .collect();
        let mut keep = Vec::with_capacity(split.samples.len());
        for (s, r) in split.samples.drain(..).zip(results) {
            match r {
                None => keep.push(s),
                Some(b) => bad.report(b)?,
            }
        }
        split.samples = keep;
    }
    Ok(())
}

fn utf8_name(path: &Path, bad: &mut Bad<'_>) -> Result<Option<String>, Error> {
    match path.file_name().map(|n| n.to_str()) {
        Some(Some(s)) => Ok(Some(s.to_string())),
        _ => {
            bad.report(BadInput::new(path, Problem::NonUtf8Name, format!("{:?}", path.file_name().unwrap_or_default())))?;
            Ok(None)
        }
    }
}

/// Sorted subdirectories (following symlinks) with UTF-8 names.
fn class_dirs(dir: &Path, bad: &mut Bad<'_>) -> Result<Vec<(String, PathBuf)>, Error> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if let Some(name) = utf8_name(&path, bad)? {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Image files under a class folder, in torchvision's order.
fn class_files(dir: &Path, bad: &mut Bad<'_>) -> Result<Vec<PathBuf>, Error> {
    let mut dirs: Vec<(String, PathBuf)> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut files: Vec<(String, String, PathBuf)> = Vec::new();
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) => {
                bad.report(BadInput::new(&d, Problem::Unreadable, e.to_string()))?;
                continue;
            }
        };
        let dkey = d.to_string_lossy().into_owned();
        dirs.push((dkey.clone(), d.clone()));
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let path = entry.path();
            let Some(name) = utf8_name(&path, bad)? else { continue };
            if path.is_dir() {
                if stack.len() < 10_000 {
                    stack.push(path);
                }
                continue;
            }
            if name.starts_with('.') {
                continue; // hidden files (.DS_Store, editor backups)
            }
            let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
            if !IMG_EXTENSIONS.contains(&ext.as_str()) {
                bad.report(BadInput::new(&path, Problem::NotAnImage, format!("extension {ext:?} is not an image extension")))?;
                continue;
            }
            match std::fs::metadata(&path) {
                Err(e) => bad.report(BadInput::new(&path, Problem::Unreadable, e.to_string()))?,
                Ok(m) if m.len() == 0 => bad.report(BadInput::new(&path, Problem::Empty, ""))?,
                Ok(_) => {
                    if let Err(e) = std::fs::File::open(&path) {
                        bad.report(BadInput::new(&path, Problem::Unreadable, e.to_string()))?;
                    } else {
                        files.push((dkey.clone(), name, path));
                    }
                }
            }
        }
    }
    files.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    Ok(files.into_iter().map(|(_, _, p)| p).collect())
}

fn discover_image_folder(root: &Path, bad: &mut Bad<'_>) -> Result<(Vec<String>, Vec<Split>), Error> {
    let split_dirs: Vec<(&str, PathBuf)> = SPLIT_NAMES.iter().map(|&n| (n, root.join(n))).filter(|(_, p)| p.is_dir()).collect();
    if split_dirs.is_empty() {
        return Err(Error::Layout {
            path: root.to_path_buf(),
            problem: "neither an ImageFolder root (train/, valid/, test/) nor an Oxford release \
                      (imagelabels.mat, setid.mat, jpg/)"
                .into(),
        });
    }
    // The training split (or the first present) defines the classes.
    let (_, ref_dir) = &split_dirs[0];
    let ref_classes = class_dirs(ref_dir, bad)?;
    let classes: Vec<String> = ref_classes.iter().map(|(n, _)| n.clone()).collect();
    if classes.is_empty() {
        return Err(Error::Layout { path: ref_dir.clone(), problem: "contains no class folders".into() });
    }
    let index: BTreeMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let mut splits = Vec::new();
    for (name, dir) in &split_dirs {
        let mut samples = Vec::new();
        for (cname, cdir) in class_dirs(dir, bad)? {
            let Some(&label) = index.get(cname.as_str()) else {
                bad.report(BadInput::new(&cdir, Problem::UnknownClass, format!("class {cname:?} of split {name:?}")))?;
                continue;
            };
            let files = class_files(&cdir, bad)?;
            if files.is_empty() {
                bad.report(BadInput::new(&cdir, Problem::EmptyClass, format!("split {name:?}")))?;
            }
            samples.extend(files.into_iter().map(|path| Sample { path, label }));
        }
        splits.push(Split { name: name.to_string(), samples });
    }
    Ok((classes, splits))
}

fn mat_vector(path: &Path, vars: &BTreeMap<String, crate::mat::MatArray>, name: &str) -> Result<Vec<usize>, Error> {
    let arr = vars.get(name).ok_or_else(|| Error::Mat { path: path.to_path_buf(), problem: format!("no variable '{name}'") })?;
    arr.data
        .iter()
        .map(|&v| {
            if v >= 1.0 && v.fract() == 0.0 && v < 1e9 {
                Ok(v as usize)
            } else {
                Err(Error::Mat { path: path.to_path_buf(), problem: format!("'{name}' holds {v}, not a positive integer") })
            }
        })
        .collect()
}

fn discover_oxford(root: &Path, bad: &mut Bad<'_>) -> Result<(Vec<String>, Vec<Split>), Error> {
    let lpath = root.join("imagelabels.mat");
    let spath = root.join("setid.mat");
    let labels = mat_vector(&lpath, &read_mat(&lpath)?, "labels")?;
    let set = read_mat(&spath)?;
    let class_set: BTreeSet<String> = labels.iter().map(|l| l.to_string()).collect();
    let classes: Vec<String> = class_set.into_iter().collect(); // string order, like ImageFolder
    let index: BTreeMap<String, usize> = classes.iter().enumerate().map(|(i, c)| (c.clone(), i)).collect();
    let mut splits = Vec::new();
    for (var, name) in [("trnid", "train"), ("valid", "valid"), ("tstid", "test")] {
        let ids = mat_vector(&spath, &set, var)?;
        let mut samples = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(&l) = labels.get(id - 1) else {
                return Err(Error::Mat {
                    path: spath.clone(),
                    problem: format!("'{var}' refers to image {id} but imagelabels.mat has {} labels", labels.len()),
                });
            };
            let path = root.join("jpg").join(format!("image_{id:05}.jpg"));
            match std::fs::metadata(&path) {
                Err(e) => bad.report(BadInput::new(&path, Problem::Unreadable, e.to_string()))?,
                Ok(m) if m.len() == 0 => bad.report(BadInput::new(&path, Problem::Empty, ""))?,
                Ok(_) => samples.push(Sample { path, label: index[&l.to_string()] }),
            }
        }
        samples.sort_by(|a, b| (a.label, &a.path).cmp(&(b.label, &b.path)));
        splits.push(Split { name: name.to_string(), samples });
    }
    Ok((classes, splits))
}

/// Name of the display-name file looked for beside a dataset.
pub const NAMES_FILE: &str = "cat_to_name.json";

/// The display-name file of a dataset at `root`: `root/cat_to_name.json`, else the one in
/// `root`'s parent (the Udacity layout: `flowers/{train,valid,test}` with `cat_to_name.json` one
/// level up); `None` when neither exists.
pub fn find_names_file(root: &Path) -> Option<PathBuf> {
    let parent = root.canonicalize().ok().and_then(|r| r.parent().map(Path::to_path_buf));
    std::iter::once(root.to_path_buf()).chain(parent).map(|d| d.join(NAMES_FILE)).find(|p| p.is_file())
}

/// Reads a display-name file: a JSON object mapping class-folder names to display names.
pub fn read_names_file(path: &Path) -> Result<BTreeMap<String, String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Layout { path: path.to_path_buf(), problem: format!("not a JSON object of strings: {e}") })
}

/// Reads the display names (the given file, else [`find_names_file`]) when there are any.
fn read_names(root: &Path, opts: &DiscoverOptions, classes: &[String]) -> Result<Option<Vec<String>>, Error> {
    let path = match opts.names_file.clone().or_else(|| find_names_file(root)) {
        Some(p) => p,
        None => return Ok(None),
    };
    let map = read_names_file(&path)?;
    let mut missing = 0;
    let names = classes
        .iter()
        .map(|c| {
            map.get(c).cloned().unwrap_or_else(|| {
                missing += 1;
                c.clone()
            })
        })
        .collect();
    if missing > 0 {
        tracing::warn!("{}: {missing} classes have no display name", path.display());
    }
    Ok(Some(names))
}
