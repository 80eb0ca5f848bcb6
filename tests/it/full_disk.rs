//! A full disk loses nothing (issue 30): each writer, when the disk fills mid-write, stops with an
//! error line naming the path and "no space left", leaves every earlier file intact (no truncated
//! checkpoint, cache or CSV, no temp file), and once space is freed finishes with the bytes of an
//! uninterrupted run. The disk is a tmpfs of its own ([`testkit::SmallDisk`], root only, as in CI;
//! elsewhere the check is skipped and recorded), filled by a file the test writes and removes.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{config, make_dataset, ok, petal, train_cmd};
use testkit::{SmallDisk, FILLER};

const CHECK: &str = "petal/full_disk/tmpfs";

/// Every file under `dir` (but the filler and lock files) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    common::files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != FILLER && !n.to_string_lossy().ends_with(".lock")))
        .map(|p| (p.strip_prefix(dir).expect("under dir").to_path_buf(), std::fs::read(&p).expect("read")))
        .collect()
}

/// The failed command's error line: it names a path on the disk and says "no space left"; no panic.
fn no_space(out: &Output, what: &str, disk: &Path) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{what} succeeded on a full disk: {err}");
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{what}: no error line in {err}"));
    assert!(line.to_lowercase().contains("no space left"), "{what}: {line}");
    assert!(line.contains(&disk.display().to_string()), "{what}: the error names no path on the disk: {line}");
    eprintln!("{what} on a full disk: {line}");
    line.to_string()
}

/// No temp file of an atomic write is left under `dir`.
fn no_temp_files(dir: &Path, what: &str) {
    let is_temp = |p: &PathBuf| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        name.contains(".tmp-") || name.starts_with(".tmp")
    };
    let temps: Vec<_> = snapshot(dir).into_keys().filter(is_temp).collect();
    assert!(temps.is_empty(), "{what} left temp files: {temps:?}");
}

/// `a` and `b` hold the same bytes (without printing them).
fn same_bytes(a: &Path, b: &Path, what: &str) {
    let (x, y) = (std::fs::read(a).expect("read"), std::fs::read(b).expect("read"));
    assert!(x == y, "{what}: {} ({} bytes) differs from {} ({} bytes)", a.display(), x.len(), b.display(), y.len());
}

/// The same checkpoint: every tensor byte for byte, and the metadata but its creation time.
fn same_checkpoint(a: &Path, b: &Path, what: &str) {
    let (x, y) = (checkpoint::load(a).expect("load"), checkpoint::load(b).expect("load"));
    assert!(x.tensors == y.tensors, "{what}: the tensors differ");
    let strip = |m: &checkpoint::Metadata| {
        let mut v = serde_json::to_value(m).expect("metadata");
        v["created_utc"] = serde_json::Value::Null;
        v
    };
    assert_eq!(strip(&x.meta), strip(&y.meta), "{what}: the metadata differs");
}

/// A trained tiny checkpoint (frozen DenseNet head, 3 classes) and its dataset, under `root`.
fn trained(root: &Path, name: &str, epochs: &str) -> (PathBuf, PathBuf) {
    let data = root.join("data");
    if !data.exists() {
        make_dataset(&data, 6, 4, 0);
    }
    let cfg = config(root, name, &[("epochs", epochs), ("views", "0")]);
    ok(train_cmd(&data, Some(&cfg), root).output().expect("train"), "petal train");
    (data, root.join(format!("runs/{name}/best.safetensors")))
}

#[test]
fn export_convert_predict_and_merge_on_a_full_disk_lose_nothing_and_finish_after_it_is_freed() {
    let Some(disk) = SmallDisk::mount(CHECK, 64) else { return };
    testkit::ran(CHECK);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, a) = trained(tmp.path(), "a", "2");
    let (_, b) = trained(tmp.path(), "b", "3");
    let reference = tmp.path().join("reference");
    std::fs::create_dir_all(&reference).unwrap();
    let d = &disk.dir;

    // export: B over an earlier export of A.
    let export =
        |ckpt: &Path, out: &Path| petal().args(["export", "--format", "onnx", "--checkpoint"]).arg(ckpt).arg("--out").arg(out).output().unwrap();
    ok(export(&b, &reference.join("b.onnx")), "export to a roomy disk");
    ok(export(&a, &d.join("m.onnx")), "export of A");
    let before = snapshot(d);
    disk.fill(0);
    no_space(&export(&b, &d.join("m.onnx")), "export", d);
    assert!(snapshot(d) == before, "export: A's file and sidecar are intact");
    disk.free();
    ok(export(&b, &d.join("m.onnx")), "export after freeing");
    same_bytes(&d.join("m.onnx"), &reference.join("b.onnx"), "export: the bytes of a roomy run");
    same_bytes(&d.join("m.onnx.json"), &reference.join("b.onnx.json"), "export: the sidecar of a roomy run");

    // checkpoint convert: B over an earlier conversion of A.
    let convert = |ckpt: &Path, out: &Path| petal().args(["checkpoint", "convert"]).arg(ckpt).arg(out).output().unwrap();
    ok(convert(&b, &reference.join("b.safetensors")), "convert to a roomy disk");
    ok(convert(&a, &d.join("c.safetensors")), "convert of A");
    let before = snapshot(d);
    disk.fill(0);
    no_space(&convert(&b, &d.join("c.safetensors")), "checkpoint convert", d);
    assert!(snapshot(d) == before, "convert: A's file is intact");
    disk.free();
    ok(convert(&b, &d.join("c.safetensors")), "convert after freeing");
    same_checkpoint(&d.join("c.safetensors"), &reference.join("b.safetensors"), "convert: what a roomy run writes");

    // predict --csv, journaled in chunks of 4 images: the disk fills part of the way through.
    let predict = |out: &Path, shard: Option<&str>| {
        let mut c = petal();
        c.args(["predict", "--runtime", "torch", "--chunk-images", "4", "--batch-size", "4", "--checkpoint"]).arg(&b).arg("--csv").arg(out);
        if let Some(s) = shard {
            c.args(["--shard", s]);
        }
        c.arg(data.join("train")).arg(data.join("valid"));
        c.output().unwrap()
    };
    ok(predict(&reference.join("p.csv"), None), "predict to a roomy disk");
    let csv = std::fs::read(reference.join("p.csv")).unwrap();
    assert!(csv.len() > 1000, "a CSV of 30 images: {} bytes", csv.len());
    // Leave one more page each time until the disk fills after some chunks of the journal were kept.
    let chunks = || snapshot(d).into_keys().filter(|p| p.to_string_lossy().contains(".chunks/chunk-")).count();
    let mut kept = 0;
    for pages in 1..64 {
        disk.fill(pages * 4096);
        let out = predict(&d.join("p.csv"), None);
        if out.status.success() {
            panic!("predict finished with {pages} pages free before the disk ever filled after a kept chunk");
        }
        no_space(&out, "predict --csv", d);
        assert!(!d.join("p.csv").exists(), "no half-written CSV");
        no_temp_files(d, "predict --csv");
        disk.free();
        kept = chunks();
        if kept > 0 {
            break;
        }
    }
    assert!(kept > 0, "the disk never filled part of the way through the journal");
    let out = predict(&d.join("p.csv"), None);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out, "predict after freeing");
    assert!(log.contains(&format!("reusing {} of 30", 4 * kept)), "the rerun reuses the {kept} chunk(s) of 4 images kept: {log}");
    same_bytes(&d.join("p.csv"), &reference.join("p.csv"), "predict: the bytes of a roomy run");

    // merge: the shards' parts are on the disk; the merged output does not fit.
    for s in ["0/2", "1/2"] {
        ok(predict(&d.join("q.csv"), Some(s)), "a shard");
    }
    let parts = snapshot(d);
    disk.fill(0);
    let merge = || petal().arg("merge").arg(d.join("q.csv")).output().unwrap();
    no_space(&merge(), "merge", d);
    assert!(snapshot(d) == parts, "merge: the parts are intact");
    disk.free();
    ok(merge(), "merge after freeing");
    same_bytes(&d.join("q.csv"), &reference.join("p.csv"), "merge: one process's bytes");
}

#[test]
fn training_on_a_full_disk_keeps_whole_files_and_resumes_to_an_uninterrupted_runs_weights() {
    let Some(disk) = SmallDisk::mount(CHECK, 64) else { return };
    testkit::ran(CHECK);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data, 8, 4, 0);
    // Two augmented views, so that training reads the image cache and feature caches of both.
    let set = [("epochs", "6"), ("views", "2"), ("chunk_images", "8")];
    let run = |root: &Path, resume: bool| {
        let cfg = root.join("full.toml");
        let mut c = train_cmd(&data, Some(&cfg), root);
        if resume {
            c.arg("--resume");
        }
        c.output().unwrap()
    };
    let roomy = tmp.path().join("roomy");
    config(&roomy, "full", &set);
    ok(run(&roomy, false), "training on a roomy disk");
    let used: u64 = snapshot(&roomy).values().map(|b| b.len() as u64).sum();

    let d = &disk.dir;
    config(d, "full", &set);
    // The disk fills at a later stage each time (image cache, feature caches, checkpoints); each
    // time the run resumes from what the earlier ones kept.
    let mut failures = Vec::new();
    for share in [0.2, 0.5, 0.8, 0.95] {
        disk.fill((used as f64 * share) as u64);
        let out = run(d, true);
        if out.status.success() {
            disk.free();
            break;
        }
        failures.push(no_space(&out, "train", d));
        // Whatever was written is whole: every checkpoint and feature cache loads.
        for (p, _) in snapshot(d) {
            if p.extension().is_some_and(|e| e == "safetensors") {
                checkpoint::load(&d.join(&p)).unwrap_or_else(|e| panic!("{} is damaged after the full disk: {e}", p.display()));
            }
        }
        no_temp_files(d, "train");
        disk.free();
    }
    assert!(failures.len() >= 2, "the disk filled at fewer than two stages: {failures:?}");
    ok(run(d, true), "training resumed after freeing");
    let (want, got) =
        (checkpoint::load(&roomy.join("runs/full/last.safetensors")).unwrap(), checkpoint::load(&d.join("runs/full/last.safetensors")).unwrap());
    assert_eq!(want.tensors.len(), got.tensors.len());
    for (name, t) in &want.tensors {
        assert!(got.tensors.get(name).is_some_and(|o| o.bytes[..] == t.bytes[..]), "{name} differs from the uninterrupted run");
    }
    let acc = |root: &Path| common::metrics(&root.join("runs/full")).iter().map(|m| m["valid_acc"].clone()).collect::<Vec<_>>();
    assert_eq!(acc(d), acc(&roomy), "the same accuracy at every epoch");
}
