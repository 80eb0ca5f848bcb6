//! Interrupted work resumes where it stopped: the real `petal` binary is killed with SIGKILL at
//! exact points of feature extraction and of batch prediction (the test-only variable
//! `PETAL_TEST_HALT_AFTER_BATCHES` makes the process stop after that many batches, so the kill
//! lands during the first chunk, between chunks, or during the last), then run again. The rerun
//! must compute only the images of the chunks that were not saved (counted from its `computed=`
//! progress event), and its result must equal an uninterrupted run's: the same feature cache file
//! (name = provenance digest) with the same values, the same CSV byte for byte.
//!
//! The activation cache of partial fine-tuning is born chunked the same way: killed during its
//! extraction, the rerun computes only the missing chunks and writes the same `.pact` files, byte
//! for byte, and the same trained network.
//!
//! Data: a generated ImageFolder (colour gradients with noise), a tiny random DenseNet (a random
//! EfficientNet-Lite0 at 32×32 pixels for partial mode).

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TRAIN_PER_CLASS: u32 = 13; // 39 images: 10 batches of 4, 5 chunks of 2 batches (the last 7 images)
const VALID_PER_CLASS: u32 = 8; // 24 images: 6 batches, 3 chunks

fn make_dataset(root: &Path) {
    for (split, n) in [("train", TRAIN_PER_CLASS), ("valid", VALID_PER_CLASS)] {
        for class in 0..3u32 {
            let dir = root.join(split).join(format!("c{class}"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            for i in 0..n {
                let mut state = class * 7919 + i * 104_729 + if split == "valid" { 55_555 } else { 0 };
                let img = image::RgbImage::from_fn(36, 36, |x, y| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let noise = (state >> 26) as u8;
                    let ramp = ((x + y) * 3) as u8;
                    let mut p = [60 + noise, 60 + noise, 60 + noise];
                    p[class as usize] = ramp.saturating_add(100 + noise);
                    image::Rgb(p)
                });
                img.save(dir.join(format!("{i:02}.png"))).expect("save png");
            }
        }
    }
}

/// The shared test config (`common::config`), run name `chunks`, with this test's batch sizes,
/// 2 epochs and `chunk_images`, written to `dir/chunks-<chunk_images>/chunks.toml`.
fn config(dir: &Path, chunk_images: usize) -> PathBuf {
    let chunks = chunk_images.to_string();
    let set = [
        ("views", "0"),
        ("epochs", "2"),
        ("batch_size", "8"),
        ("seed", "3"),
        ("eval_batch_size", "4"),
        ("chunk_images", chunks.as_str()),
        ("head.hidden", "[]"),
        ("head.dropout", "0.0"),
    ];
    common::config(&dir.join(format!("chunks-{chunk_images}")), "chunks", &set)
}

/// A `petal` command logging chunk progress, without a test halt inherited from the environment.
fn logged(mut c: Command) -> Command {
    c.env("RUST_LOG", "warn,checkpoint::chunks=info").env("NO_COLOR", "1").env_remove("PETAL_TEST_HALT_AFTER_BATCHES");
    c
}

/// Partial mode: the last block of a random Lite0 trains on activations cached in chunks of 8.
fn partial_config(dir: &Path) -> PathBuf {
    let text = r#"name = "partial"
arch = "efficientnet_lite0"
mode = "partial"
unfreeze_blocks = 1
views = 0
optimizer = "adam"
lr = 0.01
schedule = "constant"
epochs = 2
batch_size = 8
seed = 3
image_size = 32
resize_size = 36
channels_last = false
eval_batch_size = 4
chunk_images = 8
threads = 1

[head]
hidden = []
dropout = 0.0
"#;
    let p = dir.join("partial.toml");
    std::fs::write(&p, text).expect("config");
    p
}

fn petal() -> Command {
    logged(common::petal())
}

/// Removes ANSI escape sequences, in case the log is coloured anyway.
fn plain(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for ch in s.chars() {
        match (esc, ch) {
            (false, '\u{1b}') => esc = true,
            (true, c) if c.is_ascii_alphabetic() => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// Runs to completion; returns stderr (ANSI removed) and stdout.
fn finish(mut cmd: Command, what: &str) -> (String, String) {
    let out = cmd.output().expect("start petal");
    let err = plain(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed: {err}");
    (err, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts with a halt after `batches` batches, waits until the process reports that it halted,
/// then kills it with SIGKILL.
fn kill_after(mut cmd: Command, batches: usize) {
    cmd.env("PETAL_TEST_HALT_AFTER_BATCHES", batches.to_string()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start petal");
    let stderr = child.stderr.take().expect("stderr");
    let mut log = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = plain(&line.expect("read stderr"));
        log.push_str(&line);
        log.push('\n');
        if line.contains("halted for a test") {
            child.kill().expect("kill -9"); // SIGKILL on Unix
            child.wait().expect("wait");
            return;
        }
    }
    let status = child.wait().expect("wait");
    panic!("petal did not halt after {batches} batches ({status}): {log}");
}

/// `(computed, reused, total)` of every `computed N of M` event, in order.
fn computed(log: &str) -> Vec<(usize, usize, usize)> {
    let field = |line: &str, name: &str| -> usize {
        let at = line.find(&format!(" {name}=")).unwrap_or_else(|| panic!("no {name}= in {line}")) + name.len() + 2;
        line[at..].split(|c: char| !c.is_ascii_digit()).next().and_then(|v| v.parse().ok()).expect("number")
    };
    log.lines().filter(|l| l.contains(" computed=")).map(|l| (field(l, "computed"), field(l, "reused"), field(l, "total"))).collect()
}

/// `petal train --resume` with `cfg`, run and caches under `work`, logging chunk progress.
fn train_cmd(data: &Path, cfg: &Path, work: &Path) -> Command {
    let mut c = logged(common::train_cmd(data, Some(cfg), work));
    c.arg("--resume");
    c
}

/// The feature cache files of a cache folder by name, with their tensors and provenance; asserts
/// that no chunk folder is left.
fn feature_files(cache: &Path) -> Vec<(String, checkpoint::TensorMap, serde_json::Value)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(cache).expect("cache dir") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".chunks"), "chunk folder {name} left in {}", cache.display());
        if name.starts_with("features-") && name.ends_with(".safetensors") {
            let c = checkpoint::load(&cache.join(&name)).expect("load features");
            out.push((name, c.tensors, c.meta.provenance));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn chunk_files(cache: &Path) -> usize {
    std::fs::read_dir(cache)
        .expect("cache dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".chunks"))
        .map(|d| std::fs::read_dir(d.path()).expect("chunk dir").flatten().filter(|f| f.file_name().to_string_lossy().ends_with(".part")).count())
        .sum()
}

#[test]
fn killed_feature_extraction_resumes_with_only_the_missing_chunks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data);
    let cfg = config(tmp.path(), 8);
    let (train_n, valid_n) = (3 * TRAIN_PER_CLASS as usize, 3 * VALID_PER_CLASS as usize);

    let reference = tmp.path().join("reference");
    let (log, _) = finish(train_cmd(&data, &cfg, &reference), "uninterrupted train");
    assert_eq!(computed(&log), vec![(train_n, 0, train_n), (valid_n, 0, valid_n)], "{log}");
    let expected = feature_files(&reference.join("cache"));
    assert_eq!(expected.len(), 2);
    // Chunking changes nothing in the result: without it (chunk_images = 0) the same files, same values.
    let unchunked = tmp.path().join("unchunked");
    let (log, _) = finish(train_cmd(&data, &config(tmp.path(), 0), &unchunked), "train without chunks");
    assert!(computed(&log).is_empty(), "no chunk store without chunks: {log}");
    assert_eq!(feature_files(&unchunked.join("cache")), expected);

    // (halt after batch, chunk files left by the kill, images the rerun computes per split, damage chunk 0)
    // Train: 10 batches in 5 chunks [8, 8, 8, 8, 7 images]; valid: 6 batches in 3 chunks of 8.
    type Case = (usize, usize, Vec<(usize, usize, usize)>, bool);
    let cases: [Case; 5] = [
        (1, 0, vec![(39, 0, 39), (24, 0, 24)], false),  // during the first chunk
        (4, 2, vec![(23, 16, 39), (24, 0, 24)], false), // between chunks (after the 2nd)
        (9, 4, vec![(7, 32, 39), (24, 0, 24)], false),  // during the last chunk
        (13, 1, vec![(16, 8, 24)], false),              // train done, during valid's 2nd chunk
        (6, 3, vec![(23, 16, 39), (24, 0, 24)], true),  // chunk 0 damaged on disk
    ];
    for (i, (halt, left, rerun, damage)) in cases.into_iter().enumerate() {
        let work = tmp.path().join(format!("case{i}"));
        kill_after(train_cmd(&data, &cfg, &work), halt);
        let cache = work.join("cache");
        assert_eq!(chunk_files(&cache), left, "case {i}: chunk files after kill -9 after batch {halt}");
        if damage {
            let dir =
                std::fs::read_dir(&cache).expect("cache").flatten().find(|e| e.file_name().to_string_lossy().ends_with(".chunks")).expect("chunks");
            let c0 = dir.path().join("chunk-00000000.part");
            let mut b = std::fs::read(&c0).expect("chunk 0");
            let mid = b.len() / 2;
            b[mid] ^= 0x10;
            std::fs::write(&c0, b).expect("damage chunk 0");
        }
        let (log, _) = finish(train_cmd(&data, &cfg, &work), "rerun");
        assert_eq!(computed(&log), rerun, "case {i} (halt after {halt}): {log}");
        if rerun[0].1 > 0 {
            let msg = format!("reusing {} of {} features", rerun[0].1, rerun[0].2);
            assert!(log.contains(&msg), "case {i}: no {msg:?} in {log}");
        }
        assert_eq!(log.contains("damaged chunk"), damage, "case {i}: {log}");
        let got = feature_files(&cache);
        assert_eq!(got, expected, "case {i}: the resumed feature caches differ from the uninterrupted ones");
    }
}

#[test]
fn killed_batch_prediction_resumes_and_writes_the_same_csv() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data);
    let cfg = config(tmp.path(), 8);
    let work = tmp.path().join("model");
    finish(train_cmd(&data, &cfg, &work), "train");
    let ckpt = work.join("runs/chunks/best.safetensors");
    let n = 3 * (TRAIN_PER_CLASS + VALID_PER_CLASS) as usize; // 63 images: 16 batches of 4, 8 chunks of 8
    let predict = |csv: &Path| {
        let mut c = petal();
        c.args(["predict", "--json", "--top-k", "2", "--batch-size", "4", "--chunk-images", "8", "--checkpoint"])
            .arg(&ckpt)
            .arg("--csv")
            .arg(csv)
            .arg(data.join("train"))
            .arg(data.join("valid"));
        c
    };
    let reference = tmp.path().join("reference.csv");
    let (log, ref_json) = finish(predict(&reference), "uninterrupted predict");
    assert_eq!(computed(&log), vec![(n, 0, n)], "{log}");
    let expected = std::fs::read(&reference).expect("reference csv");
    assert_eq!(String::from_utf8_lossy(&expected).lines().count(), n + 1);

    // (halt after batch, images the rerun computes): between the 2nd and 3rd chunk plus one batch;
    // during the first chunk; during the last chunk (batches 15 and 16).
    for (i, (halt, rerun)) in [(5, n - 16), (1, n), (15, n - 56)].into_iter().enumerate() {
        let csv = tmp.path().join(format!("out{i}.csv"));
        kill_after(predict(&csv), halt);
        assert!(!csv.exists(), "case {i}: the CSV is written only when complete");
        let (log, json) = finish(predict(&csv), "rerun predict");
        assert_eq!(computed(&log), vec![(rerun, n - rerun, n)], "case {i}: {log}");
        assert_eq!(std::fs::read(&csv).expect("csv"), expected, "case {i}: CSV differs from the uninterrupted one");
        assert_eq!(json, ref_json, "case {i}: printed predictions differ");
        let left: Vec<_> =
            std::fs::read_dir(tmp.path()).expect("tmp").flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".chunks")).collect();
        assert!(left.is_empty(), "case {i}: chunk folders left: {left:?}");
    }
}

/// The activation cache files (`.pact`) of a cache folder by name, with their bytes; asserts that
/// no chunk folder is left.
fn activation_files(cache: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(cache).expect("cache dir") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".chunks"), "chunk folder {name} left in {}", cache.display());
        if name.ends_with(".pact") {
            out.push((name.clone(), std::fs::read(cache.join(&name)).expect("read cache")));
        }
    }
    out.sort();
    out
}

#[test]
fn killed_activation_extraction_resumes_with_only_the_missing_chunks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data);
    let cfg = partial_config(tmp.path());
    let (train_n, valid_n) = (3 * TRAIN_PER_CLASS as usize, 3 * VALID_PER_CLASS as usize);
    let reference = tmp.path().join("reference");
    let (log, _) = finish(train_cmd(&data, &cfg, &reference), "uninterrupted partial train");
    assert_eq!(computed(&log), vec![(train_n, 0, train_n), (valid_n, 0, valid_n)], "{log}");
    assert!(log.contains("activation cache: 2 file(s), 63 images × 320×1×1 F16"), "the size is announced: {log}");
    let expected = activation_files(&reference.join("cache"));
    assert_eq!(expected.len(), 2);
    let weights = |work: &Path| checkpoint::load(&work.join("runs/partial/last.safetensors")).expect("checkpoint").tensors;
    let trained = weights(&reference);
    // (halt after batch, chunk files left, images the rerun computes per split): the same layout as
    // the feature test (train: 10 batches in 5 chunks; valid: 6 batches in 3 chunks).
    let cases = [
        (1, 0, vec![(39, 0, 39), (24, 0, 24)]),
        (4, 2, vec![(23, 16, 39), (24, 0, 24)]),
        (9, 4, vec![(7, 32, 39), (24, 0, 24)]),
        (13, 1, vec![(16, 8, 24)]),
    ];
    for (i, (halt, left, rerun)) in cases.into_iter().enumerate() {
        let work = tmp.path().join(format!("partial{i}"));
        kill_after(train_cmd(&data, &cfg, &work), halt);
        assert_eq!(chunk_files(&work.join("cache")), left, "case {i}: chunk files after kill -9 after batch {halt}");
        let (log, _) = finish(train_cmd(&data, &cfg, &work), "rerun");
        assert_eq!(computed(&log), rerun, "case {i} (halt after {halt}): {log}");
        if rerun[0].1 > 0 {
            let msg = format!("reusing {} of {} activations", rerun[0].1, rerun[0].2);
            assert!(log.contains(&msg), "case {i}: no {msg:?} in {log}");
        }
        assert!(activation_files(&work.join("cache")) == expected, "case {i}: the resumed activation caches differ from the uninterrupted ones");
        assert!(weights(&work) == trained, "case {i}: the network trained after the resume differs");
    }
}
