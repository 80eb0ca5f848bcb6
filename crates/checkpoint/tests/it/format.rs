//! The own format: round trip, committed fixtures of every format version, refusal of newer
//! versions, integrity checks, inspect/convert.

use crate::common;

use checkpoint::{import, inspect, load, save, Checkpoint, Error, FormatVersion, SourceFormat, FORMAT_MAJOR, FORMAT_MINOR, METADATA_KEY};
use common::{fixtures, sample_checkpoint};
use std::path::Path;

fn without_stamps(c: &Checkpoint) -> Checkpoint {
    let mut c = c.clone();
    c.meta.created_utc.clear();
    c.meta.tensor_checksum.clear();
    c.meta.tensor_layout_checksum.clear();
    c.meta.writer.clear();
    c
}

#[test]
fn round_trip_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.petal");
    let c = sample_checkpoint();
    save(&p, &c).unwrap();
    let back = load(&p).unwrap();
    assert_eq!(without_stamps(&back), without_stamps(&c));
    assert_eq!(back.meta.format, "petal.checkpoint");
    assert_eq!(back.meta.format_version, FormatVersion { major: FORMAT_MAJOR, minor: FORMAT_MINOR });
    assert!(back.meta.tensor_checksum.starts_with("crc32:"));
    assert_eq!(Some(back.meta.tensor_layout_checksum.clone()), checkpoint::tensor_layout_checksum(&c.tensors, "crc32"));
    assert_eq!(back.meta.created_utc.len(), "2025-01-01T00:00:00Z".len());
    assert_eq!(back.class_to_idx()["10"], 1);
    assert_eq!(back.model_tensors().count(), c.tensors.len() - 2);
    // Nothing but the target is left in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// Every committed fixture of every format version loads, and holds the sample checkpoint.
/// `PETAL_WRITE_FORMAT_FIXTURE=<folder>` writes the current version's fixture into that folder
/// (`<folder>/v<major>.<minor>/sample.petal`, never into the source tree) when no committed fixture
/// of this version exists: copy it into `fixtures/format/`, commit it and add its sha256 to
/// `fixtures/SHA256SUMS`. A committed fixture is never rewritten. See `fixtures/format/README.md`
/// for where each fixture came from.
#[test]
fn every_committed_format_version_loads() {
    let dir = fixtures().join("format");
    let version = format!("v{FORMAT_MAJOR}.{FORMAT_MINOR}");
    if let Some(out) = std::env::var_os("PETAL_WRITE_FORMAT_FIXTURE") {
        assert!(
            !dir.join(&version).join("sample.petal").exists(),
            "{version} has a committed fixture: committed fixtures are frozen, never rewritten"
        );
        let target = std::path::PathBuf::from(out).join(&version).join("sample.petal");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        save(&target, &sample_checkpoint()).unwrap();
    }
    let mut seen = Vec::new();
    let mut checksums = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    for d in dirs {
        let f = d.join("sample.petal");
        let c = load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(without_stamps(&c).tensors, sample_checkpoint().tensors, "{}", f.display());
        let mut want = without_stamps(&sample_checkpoint()).meta;
        want.format_version = c.meta.format_version;
        assert_eq!(without_stamps(&c).meta, want, "{}", f.display());
        seen.push(c.meta.format_version);
        let algorithm = |c: &str| c.split(':').next().unwrap_or_default().to_string();
        checksums.push((algorithm(&c.meta.tensor_checksum), algorithm(&c.meta.tensor_layout_checksum)));
    }
    // The original 1.0 file (sha256 checksum) and the later 1.0 writer's file (crc32) stay
    // readable without a layout checksum; 1.1 added it.
    let want = [("sha256", ""), ("crc32", ""), ("crc32", "crc32")].map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(checksums, want, "fixtures v1.0, v1.0-crc32 and v1.1");
    assert!(
        seen.contains(&FormatVersion { major: FORMAT_MAJOR, minor: FORMAT_MINOR }),
        "a fixture of the current format version {FORMAT_MAJOR}.{FORMAT_MINOR} must be committed (found {seen:?})"
    );
}

/// Rewrites the metadata JSON of a saved file with `edit` (keeping the tensors).
fn rewrite_meta(src: &Path, dst: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&header.metadata().as_ref().unwrap()[METADATA_KEY]).unwrap();
    edit(&mut meta);
    let info = [(METADATA_KEY.to_string(), meta.to_string())].into_iter().collect();
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    safetensors::serialize_to_file(tensors, Some(info), dst).unwrap();
}

#[test]
fn newer_major_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.petal"), dir.path().join("future.petal"));
    save(&a, &sample_checkpoint()).unwrap();
    rewrite_meta(&a, &b, |m| m["format_version"] = serde_json::json!({"major": FORMAT_MAJOR + 1, "minor": 3}));
    let err = load(&b).unwrap_err();
    assert!(matches!(err, Error::NewerVersion { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{}.3", FORMAT_MAJOR + 1)), "{msg}");
    assert!(msg.contains(&format!("up to {FORMAT_MAJOR}.x")), "{msg}");
    assert!(msg.contains("future.petal"), "{msg}");
}

#[test]
fn newer_minor_with_unknown_fields_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.petal"), dir.path().join("minor.petal"));
    save(&a, &sample_checkpoint()).unwrap();
    rewrite_meta(&a, &b, |m| {
        m["format_version"]["minor"] = serde_json::json!(FORMAT_MINOR + 5);
        m["some_future_field"] = serde_json::json!({"x": 1});
    });
    let c = load(&b).unwrap();
    assert_eq!(c.meta.format_version.minor, FORMAT_MINOR + 5);
    assert_eq!(c.tensors, sample_checkpoint().tensors);
}

#[test]
fn flipped_tensor_byte_fails_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.petal");
    save(&p, &sample_checkpoint()).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    // The data section is at the end; every byte of it is covered.
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize + 8;
    for i in (header..n).step_by(3) {
        bytes[i] ^= 0x10;
        let e = checkpoint::load_bytes(&bytes, &p).unwrap_err();
        assert!(matches!(e, Error::Checksum { .. }), "flip at {i}: {e}");
        bytes[i] ^= 0x10;
    }
}

#[test]
fn load_refuses_foreign_files_clearly() {
    let e = load(&fixtures().join("plain.safetensors")).unwrap_err();
    assert!(e.to_string().contains("without petal metadata"), "{e}");
    let e = load(Path::new("/nonexistent/x.petal")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/x.petal"), "{e}");
}

#[test]
fn import_and_inspect_own_format() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.petal");
    save(&p, &sample_checkpoint()).unwrap();
    let imp = import(&p).unwrap();
    assert!(matches!(imp.source, SourceFormat::Petal { .. }));
    assert_eq!(imp.tensors.len(), sample_checkpoint().tensors.len() - 2, "reserved prefixes excluded");
    assert_eq!(imp.arch.as_deref(), Some("densenet121"));
    assert_eq!(imp.class_to_idx.unwrap().len(), 3);
    let s = inspect(&p).unwrap();
    assert_eq!(s.tensor_count, sample_checkpoint().tensors.len() - 2);
    let text = s.to_string();
    assert!(text.contains("densenet121") && text.contains("classes:  3") && text.contains("crc32:"), "{text}");
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["source"]["kind"], "petal");
    assert_eq!(json["metadata"]["preprocessing"]["resize_size"], 256);
}

#[test]
fn convert_pytorch_checkpoint_to_petal() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("converted.petal");
    let src = fixtures().join("train_legacy.pth");
    let summary = checkpoint::convert(&src, &out).unwrap();
    let orig = import(&src).unwrap();
    let c = load(&out).unwrap();
    assert_eq!(c.tensors, orig.tensors);
    assert_eq!(c.class_to_idx(), orig.class_to_idx.clone().unwrap());
    // Classes are stored in index order.
    let idx: Vec<usize> = c.meta.classes.iter().map(|x| x.index).collect();
    assert_eq!(idx, (0..idx.len()).collect::<Vec<_>>());
    assert_eq!(c.meta.arch, "densenet121");
    assert_eq!(c.meta.hyperparameters["epochs"], 3);
    assert_eq!(c.meta.provenance["converted_from"], "train_legacy.pth");
    let mut named = c.clone();
    let names = [("1".to_string(), "pink primrose".to_string()), ("999".into(), "nope".into())].into_iter().collect();
    assert_eq!(named.set_class_names(&names), 1);
    assert_eq!(named.meta.classes[0].name.as_deref(), Some("pink primrose"));
    assert_eq!(summary.tensor_count, orig.tensors.len());
    // Converting the converted file is a no-op on content.
    let again = dir.path().join("again.petal");
    checkpoint::convert(&out, &again).unwrap();
    assert_eq!(without_stamps(&load(&again).unwrap()), without_stamps(&c));
}

#[test]
fn invalid_checkpoints_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.petal");
    let mut c = sample_checkpoint();
    c.tensors.get_mut("classifier.bias").unwrap().bytes.to_mut().pop();
    assert!(matches!(save(&p, &c), Err(Error::InvalidCheckpoint { .. })));
    assert!(!p.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no temp file left");
}

#[test]
fn sha256_checksums_are_verified_too() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.petal"), dir.path().join("sha.petal"));
    let c = sample_checkpoint();
    save(&a, &c).unwrap();
    let sha = checkpoint::tensor_checksum(&c.tensors, "sha256").unwrap();
    rewrite_meta(&a, &b, |m| m["tensor_checksum"] = serde_json::json!(sha));
    assert_eq!(load(&b).unwrap().tensors, c.tensors);
    let wrong = format!("sha256:{}", "0".repeat(64));
    rewrite_meta(&a, &b, |m| m["tensor_checksum"] = serde_json::json!(wrong));
    assert!(matches!(load(&b), Err(Error::Checksum { .. })));
}

/// Rewrites a saved file with two tensors' names swapped (each name keeps the other's dtype,
/// shape and bytes), metadata untouched.
fn swap_names(src: &Path, dst: &Path, a: &str, b: &str) {
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                if n == a {
                    b.to_string()
                } else if n == b {
                    a.to_string()
                } else {
                    n
                },
                v,
            )
        })
        .collect();
    safetensors::serialize_to_file(tensors, header.metadata().clone(), dst).unwrap();
}

/// Two tensors whose bytes are equal but whose shapes differ: swapping their names leaves the
/// bytes in name order, and so `tensor_checksum`, unchanged.
fn twins() -> Checkpoint {
    let mut c = sample_checkpoint();
    c.tensors.insert("head.bias".into(), checkpoint::TensorData::from_f32(vec![4], &[0.0; 4]));
    c.tensors.insert("head.scale".into(), checkpoint::TensorData::from_f32(vec![2, 2], &[0.0; 4]));
    c
}

#[test]
fn swapped_tensor_names_fail_the_layout_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.petal"), dir.path().join("swapped.petal"));
    save(&a, &twins()).unwrap();
    swap_names(&a, &b, "head.bias", "head.scale");
    let err = load(&b).unwrap_err();
    assert!(matches!(err, Error::LayoutChecksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("swapped.petal") && msg.contains("names, dtypes or shapes"), "{msg}");
    assert!(import(&b).is_err(), "import verifies the same checksums");
    // A rename that keeps the name order (so the bytes' order too) is caught as well.
    let renamed = dir.path().join("renamed.petal");
    swap_names(&a, &renamed, "head.bias", "head.biaz");
    assert!(matches!(load(&renamed), Err(Error::LayoutChecksum { .. })));
}

#[test]
fn layout_checksum_sha256_and_its_absence() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.petal"), dir.path().join("b.petal"));
    let c = twins();
    save(&a, &c).unwrap();
    // sha256 layout checksums are accepted like sha256 tensor checksums.
    let sha = checkpoint::tensor_layout_checksum(&c.tensors, "sha256").unwrap();
    assert!(sha.starts_with("sha256:") && sha.len() == 7 + 64, "{sha}");
    rewrite_meta(&a, &b, |m| m["tensor_layout_checksum"] = serde_json::json!(sha));
    assert_eq!(load(&b).unwrap().tensors, c.tensors);
    // A 1.1 file without its layout checksum is refused, naming the field's absence.
    rewrite_meta(&a, &b, |m| m["tensor_layout_checksum"] = serde_json::json!(""));
    let e = load(&b).unwrap_err().to_string();
    assert!(e.contains("missing tensor layout checksum") && e.contains("b.petal"), "{e}");
    // The same file labelled 1.0 loads: 1.0 did not record the layout, and that is all it checks.
    rewrite_meta(&a, &b, |m| {
        m["tensor_layout_checksum"] = serde_json::json!("");
        m["format_version"] = serde_json::json!({"major": 1, "minor": 0});
    });
    assert_eq!(load(&b).unwrap().meta.format_version, FormatVersion { major: 1, minor: 0 });
}

/// The weakness 1.1 fixes, on the frozen 1.0 fixtures: old files still load, and a name swap of
/// two equal-byte tensors in them cannot be detected (they carry no layout checksum), while the
/// same swap in the 1.1 fixture is refused.
#[test]
fn old_files_load_without_layout_checksum_new_ones_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let c = sample_checkpoint();
    // Two tensors of the sample with equal bytes and byte length but different dtypes.
    let (x, y) = c
        .tensors
        .iter()
        .flat_map(|(n, t)| c.tensors.iter().filter(move |(m, u)| n < *m && t.bytes == u.bytes && t.dtype != u.dtype).map(move |(m, _)| (n, m)))
        .next()
        .expect("the sample has two equal-byte tensors of different dtypes");
    for (version, caught) in [("v1.0", false), ("v1.0-crc32", false), ("v1.1", true)] {
        let src = fixtures().join("format").join(version).join("sample.petal");
        let dst = dir.path().join(format!("{version}.petal"));
        swap_names(&src, &dst, x, y);
        let r = load(&dst);
        assert_eq!(r.is_err(), caught, "{version}: {:?}", r.map(|_| ()));
        if caught {
            assert!(matches!(r, Err(Error::LayoutChecksum { .. })));
        } else {
            assert_eq!(load(&src).unwrap().tensors, c.tensors);
        }
    }
}

#[test]
fn large_files_are_mapped_and_their_tensors_borrowed() {
    // Above the 1 MiB threshold, load/import memory-map the file: tensors are shared ranges of
    // the map, not copies, and equal what was saved.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.petal");
    let values: Vec<f32> = (0..400_000).map(|i| i as f32 * 0.5).collect();
    let mut ckpt = checkpoint::Checkpoint::default();
    ckpt.tensors.insert("w".into(), checkpoint::TensorData::from_f32(vec![400, 1000], &values));
    checkpoint::save(&path, &ckpt).unwrap();
    let loaded = checkpoint::load(&path).unwrap();
    assert!(loaded.tensors["w"].bytes.is_shared());
    assert_eq!(loaded.tensors["w"], ckpt.tensors["w"]);
    let imported = checkpoint::import(&path).unwrap();
    assert!(imported.tensors["w"].bytes.is_shared());
    assert_eq!(imported.tensors["w"].to_f32_vec().unwrap(), values);
    // A copy that is changed no longer borrows, and the original is untouched.
    let mut t = loaded.tensors["w"].clone();
    t.bytes.to_mut()[0] = 1;
    assert!(!t.bytes.is_shared() && t != loaded.tensors["w"]);
}
