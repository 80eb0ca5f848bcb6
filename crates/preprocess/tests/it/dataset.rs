//! Dataset discovery, the MATLAB reader and every bad-input case of the issue.

use preprocess::{decode_rgb, discover, mat::read_mat, DiscoverOptions, Error, Layout, Problem};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

fn write_png(path: &Path, w: u32, h: u32, v: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb([v, v / 2, 255 - v])).save(path).unwrap();
}

fn write_jpeg(path: &Path, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, 90]));
    img.save_with_format(path, image::ImageFormat::Jpeg).unwrap();
}

/// A valid ImageFolder tree: classes "1", "10", "2" in train; valid has "1" and "2".
fn tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (split, class, n) in [("train", "1", 2), ("train", "10", 3), ("train", "2", 1), ("valid", "1", 1), ("valid", "2", 2)] {
        for i in 0..n {
            write_png(&d.path().join(split).join(class).join(format!("img_{i}.png")), 8, 6, (i * 40) as u8);
        }
    }
    std::fs::write(d.path().join("cat_to_name.json"), r#"{"1": "pink primrose", "10": "globe thistle", "2": "hard-leaved pocket orchid"}"#).unwrap();
    d
}

fn opts(skip_bad: bool) -> DiscoverOptions {
    DiscoverOptions { skip_bad, ..Default::default() }
}

#[test]
fn image_folder_classes_sorted_as_strings() {
    let d = tree();
    let ds = discover(d.path(), &opts(false)).unwrap();
    assert_eq!(ds.layout, Layout::ImageFolder);
    assert_eq!(ds.classes, vec!["1", "10", "2"]);
    assert_eq!(ds.names.as_ref().unwrap()[1], "globe thistle");
    let train = ds.split("train").unwrap();
    let labels: Vec<usize> = train.samples.iter().map(|s| s.label).collect();
    assert_eq!(labels, vec![0, 0, 1, 1, 1, 2]);
    assert!(train.samples[0].path.ends_with("train/1/img_0.png"));
    let valid = ds.split("valid").unwrap();
    assert_eq!(valid.samples.iter().map(|s| s.label).collect::<Vec<_>>(), vec![0, 2, 2]);
    assert!(ds.split("test").is_none());
    let text = ds.summary().to_string();
    assert!(text.contains("train") && text.contains("6 images"), "{text}");
    // valid lacks class "10": reported as empty; train class "2" has 1 image: tiny.
    let s = ds.summary();
    assert!(s.empty_classes.contains(&("valid".into(), "10".into())));
    assert!(s.tiny_classes.iter().any(|(sp, c, n)| sp == "train" && c == "2" && *n == 1));
}

/// Each bad input fails with an error naming the file and the problem; with `skip_bad` it is
/// skipped and listed.
fn check_bad(setup: impl Fn(&Path) -> PathBuf, problem: Problem) {
    let d = tree();
    let bad_path = setup(d.path());
    let err = discover(d.path(), &opts(false)).unwrap_err();
    let msg = err.to_string();
    let b = err.bad_input().unwrap_or_else(|| panic!("not a bad-input error: {msg}"));
    assert_eq!(b.problem, problem, "{msg}");
    assert_eq!(b.path, bad_path, "{msg}");
    assert!(msg.contains(&bad_path.display().to_string()), "{msg}");

    let ds = discover(d.path(), &opts(true)).unwrap();
    assert_eq!(ds.skipped.len(), 1, "{:?}", ds.skipped);
    assert_eq!(ds.skipped[0].problem, problem);
    assert!(ds.summary().to_string().contains("skipped 1 bad inputs"));
    assert!(ds.splits.iter().all(|s| s.samples.iter().all(|x| x.path != bad_path)));
}

#[test]
fn bad_non_image_content() {
    check_bad(
        |r| {
            let p = r.join("train/1/fake.jpg");
            std::fs::write(&p, b"this is text, not a JPEG").unwrap();
            p
        },
        Problem::NotAnImage,
    );
}

#[test]
fn bad_non_image_extension() {
    check_bad(
        |r| {
            let p = r.join("train/2/notes.txt");
            std::fs::write(&p, b"hello").unwrap();
            p
        },
        Problem::NotAnImage,
    );
}

#[test]
fn bad_truncated_jpeg() {
    check_bad(
        |r| {
            let p = r.join("train/10/cut.jpg");
            write_jpeg(&p, 64, 48);
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..b.len() * 2 / 3]).unwrap();
            p
        },
        Problem::Truncated,
    );
}

/// A PNG whose palette is not RGB triples (239 bytes), found by the `image` fuzz target
/// (`crates/fuzz`): the png crate panics on it; petal refuses it as corrupt, naming the file and
/// the chunk, from a file and from bytes.
#[test]
fn a_png_palette_of_broken_triples_is_refused_not_a_panic() {
    let p = fixtures().join("fuzz/png_plte_not_rgb_triples.png");
    let err = preprocess::decode_rgb(&p).expect_err("a corrupt palette");
    assert_eq!(err.bad_input().map(|b| b.problem), Some(Problem::Corrupt), "{err}");
    assert!(err.to_string().contains(&p.display().to_string()) && err.to_string().contains("PLTE chunk holds 239 bytes"), "{err}");
    let bytes = std::fs::read(&p).expect("fixture");
    let limits = preprocess::DecodeLimits::default();
    let from_bytes = preprocess::decode_rgb_bytes(&bytes, Path::new("upload.png"), &limits).expect_err("the same from bytes");
    assert!(from_bytes.to_string().contains("upload.png"), "{from_bytes}");
}

#[test]
fn bad_zero_byte_file() {
    check_bad(
        |r| {
            let p = r.join("train/1/empty.png");
            std::fs::write(&p, b"").unwrap();
            p
        },
        Problem::Empty,
    );
}

#[test]
fn bad_decompression_bomb() {
    check_bad(
        |r| {
            // A valid PNG header declaring 100000 x 100000 pixels (10^10 > the 1.79e8 limit).
            let p = r.join("train/1/bomb.png");
            let mut png = Vec::new();
            png.extend_from_slice(b"\x89PNG\r\n\x1a\n");
            let mut ihdr = b"IHDR".to_vec();
            ihdr.extend_from_slice(&100_000u32.to_be_bytes());
            ihdr.extend_from_slice(&100_000u32.to_be_bytes());
            ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
            png.extend_from_slice(&13u32.to_be_bytes());
            png.extend_from_slice(&ihdr);
            png.extend_from_slice(&crc32fast::hash(&ihdr).to_be_bytes());
            // An IDAT with a little zlib data (a real bomb would inflate to 3e10 bytes).
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut z, &[0u8; 1024]).unwrap();
            let mut idat = b"IDAT".to_vec();
            idat.extend_from_slice(&z.finish().unwrap());
            png.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
            png.extend_from_slice(&idat);
            png.extend_from_slice(&crc32fast::hash(&idat).to_be_bytes());
            png.extend_from_slice(&[0, 0, 0, 0]);
            png.extend_from_slice(b"IEND");
            png.extend_from_slice(&crc32fast::hash(b"IEND").to_be_bytes());
            std::fs::write(&p, &png).unwrap();
            p
        },
        Problem::TooLarge,
    );
}

#[cfg(unix)]
#[test]
fn bad_unreadable_file() {
    use std::os::unix::fs::PermissionsExt;
    let probe = tempfile::tempdir().unwrap();
    let f = probe.path().join("x");
    std::fs::write(&f, b"x").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&f).is_ok() {
        testkit::skip("preprocess/dataset/unreadable_file", "running as a user who can read mode-000 files (root)");
        return;
    }
    check_bad(
        |r| {
            let p = r.join("train/1/locked.png");
            write_png(&p, 4, 4, 1);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
            p
        },
        Problem::Unreadable,
    );
}

#[test]
fn bad_unreadable_file_decode() {
    // Reading a directory as an image is an I/O failure on every platform and user.
    let d = tempfile::tempdir().unwrap();
    let err = decode_rgb(d.path()).unwrap_err();
    assert_eq!(err.bad_input().unwrap().problem, Problem::Unreadable, "{err}");
}

#[cfg(unix)]
#[test]
fn bad_non_utf8_file_name() {
    use std::os::unix::ffi::OsStrExt;
    check_bad(
        |r| {
            let p = r.join("train/1").join(std::ffi::OsStr::from_bytes(b"caf\xe9.png"));
            write_png(&p, 4, 4, 9);
            p
        },
        Problem::NonUtf8Name,
    );
}

#[test]
fn bad_empty_class_folder() {
    check_bad(
        |r| {
            let p = r.join("train/3");
            std::fs::create_dir_all(&p).unwrap();
            p
        },
        Problem::EmptyClass,
    );
}

#[test]
fn bad_class_missing_from_train() {
    check_bad(
        |r| {
            let p = r.join("valid/77");
            write_png(&p.join("a.png"), 4, 4, 3);
            p
        },
        Problem::UnknownClass,
    );
}

#[test]
fn decode_formats_to_rgb() {
    let d = tempfile::tempdir().unwrap();
    let gray = image::GrayImage::from_fn(5, 4, |x, _| image::Luma([x as u8 * 10]));
    let p = d.path().join("g.png");
    gray.save(&p).unwrap();
    let rgb = decode_rgb(&p).unwrap();
    assert_eq!(rgb.get_pixel(3, 1).0, [30, 30, 30]);
    let rgba = image::RgbaImage::from_pixel(3, 2, image::Rgba([1, 2, 3, 4]));
    for (name, fmt) in [("a.png", image::ImageFormat::Png), ("a.webp", image::ImageFormat::WebP), ("a.bmp", image::ImageFormat::Bmp)] {
        let p = d.path().join(name);
        rgba.save_with_format(&p, fmt).unwrap();
        let rgb = decode_rgb(&p).unwrap();
        assert_eq!(rgb.dimensions(), (3, 2), "{name}");
        assert_eq!(rgb.get_pixel(0, 0).0, [1, 2, 3], "{name}: alpha dropped like convert('RGB')");
    }
    let p = d.path().join("gray.jpg");
    image::GrayImage::from_pixel(16, 8, image::Luma([77])).save_with_format(&p, image::ImageFormat::Jpeg).unwrap();
    let rgb = decode_rgb(&p).unwrap();
    let px = rgb.get_pixel(5, 5).0;
    assert!(px.iter().all(|&v| v.abs_diff(77) <= 1), "{px:?}");
}

#[test]
fn mat_fixtures_from_scipy() {
    let l = read_mat(&fixtures().join("imagelabels_small.mat")).unwrap();
    assert_eq!(l["labels"].dims, vec![1, 7]);
    assert_eq!(l["labels"].data, vec![3.0, 1.0, 2.0, 3.0, 1.0, 10.0, 2.0]);
    let s = read_mat(&fixtures().join("setid_small.mat")).unwrap();
    assert_eq!(s["trnid"].data, vec![1.0, 2.0, 6.0]); // uint8, small-element format
    assert_eq!(s["valid"].data, vec![3.0, 4.0]);
    assert_eq!(s["tstid"].data, vec![5.0, 7.0]); // int16
    assert!(!s.contains_key("note")); // char arrays skipped
    let m = read_mat(&fixtures().join("matrix_small.mat")).unwrap();
    assert_eq!(m["m"].dims, vec![2, 3]);
    assert_eq!(m["m"].data, vec![0.5, 3.5, 1.5, 4.5, 2.5, 5.5]); // column-major
                                                                 // Truncated file: an error naming it.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("cut.mat");
    let b = std::fs::read(fixtures().join("setid_small.mat")).unwrap();
    std::fs::write(&p, &b[..b.len() - 20]).unwrap();
    let e = read_mat(&p).unwrap_err();
    assert!(matches!(e, Error::Mat { .. }) && e.to_string().contains("cut.mat"), "{e}");
}

#[test]
fn oxford_layout_from_fixtures() {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures().join("imagelabels_small.mat"), d.path().join("imagelabels.mat")).unwrap();
    std::fs::copy(fixtures().join("setid_small.mat"), d.path().join("setid.mat")).unwrap();
    for i in 1..=7 {
        write_jpeg(&d.path().join(format!("jpg/image_{i:05}.jpg")), 16, 12);
    }
    let ds = discover(d.path(), &opts(false)).unwrap();
    assert_eq!(ds.layout, Layout::Oxford);
    assert_eq!(ds.classes, vec!["1", "10", "2", "3"]);
    let train = ds.split("train").unwrap();
    // trnid = 1, 2, 6 with labels 3, 1, 10 → indices 3, 0, 1, sorted by label.
    let got: Vec<(String, usize)> = train.samples.iter().map(|s| (s.path.file_name().unwrap().to_string_lossy().into_owned(), s.label)).collect();
    assert_eq!(got, vec![("image_00002.jpg".into(), 0), ("image_00006.jpg".into(), 1), ("image_00001.jpg".into(), 3)]);
    assert_eq!(ds.split("valid").unwrap().samples.len(), 2);
    assert_eq!(ds.split("test").unwrap().samples.len(), 2);
    // A missing image is a bad input naming the file.
    std::fs::remove_file(d.path().join("jpg/image_00007.jpg")).unwrap();
    let e = discover(d.path(), &opts(false)).unwrap_err();
    assert!(e.to_string().contains("image_00007.jpg"), "{e}");
    assert_eq!(discover(d.path(), &opts(true)).unwrap().skipped.len(), 1);
}

#[test]
fn real_oxford_metadata_matches_udacity_folders() {
    let meta = shared().join("oxford102-meta");
    let mini = shared().join("flowers102-mini");
    if !meta.join("imagelabels.mat").exists() || !mini.exists() {
        testkit::skip("preprocess/dataset/real_oxford_metadata", &format!("{} or {} absent (the shared data set)", meta.display(), mini.display()));
        return;
    }
    let l = read_mat(&meta.join("imagelabels.mat")).unwrap();
    let labels = &l["labels"].data;
    assert_eq!(labels.len(), 8189);
    assert!(labels.iter().all(|&v| (1.0..=102.0).contains(&v) && v.fract() == 0.0));
    let s = read_mat(&meta.join("setid.mat")).unwrap();
    assert_eq!((s["trnid"].data.len(), s["valid"].data.len(), s["tstid"].data.len()), (1020, 1020, 6149));
    // Cross-check: the class folder of every Udacity image equals its official label.
    let ds = discover(&mini, &DiscoverOptions { verify: false, ..Default::default() }).unwrap();
    assert_eq!(ds.classes.len(), 102);
    assert_eq!(&ds.classes[..4], &["1", "10", "100", "101"]);
    let mut checked = 0;
    for split in &ds.splits {
        for smp in &split.samples {
            let name = smp.path.file_stem().unwrap().to_string_lossy();
            let id: usize = name.trim_start_matches("image_").parse().unwrap();
            assert_eq!(labels[id - 1].to_string(), ds.classes[smp.label], "{}", smp.path.display());
            checked += 1;
        }
    }
    assert_eq!(checked, 2040 + 818);
    assert_eq!(ds.names.as_ref().unwrap().len(), 102);
}
