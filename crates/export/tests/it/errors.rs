//! Bad input: an unknown architecture, a weights-only file, unwritable outputs; and atomicity:
//! a failed export leaves an existing output untouched and no temp files behind.

use crate::common;

use std::path::Path;

use checkpoint::{Checkpoint, Metadata};
use common::*;

/// A valid tiny checkpoint, then its metadata rewritten by `edit`.
fn edited(dir: &Path, name: &str, edit: impl FnOnce(&mut Metadata)) -> std::path::PathBuf {
    let x = tch::Tensor::zeros([1, 3, 64, 64], (tch::Kind::Float, tch::Device::Cpu));
    let ckpt = random_checkpoint(dir, name, &tiny_densenet(), serde_json::json!({"hidden": [], "dropout": 0.0}), 10, 64, &x);
    let mut c: Checkpoint = checkpoint::load(&ckpt).unwrap();
    edit(&mut c.meta);
    checkpoint::save(&ckpt, &c).unwrap();
    ckpt
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn unknown_architecture_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for (name, arch, config) in
        [("by-name", "inception_v3", serde_json::Value::Null), ("by-config", "inception_v3", serde_json::json!("inception_v3"))]
    {
        let ckpt = edited(dir.path(), name, |m| {
            m.arch = arch.into();
            m.arch_config = config;
        });
        for format in [export::Format::Onnx, export::Format::Torchscript] {
            let out = dir.path().join(format!("{name}.out"));
            let err = export::export(&ckpt, format, &out).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, export::Error::Load(infer::Error::Unusable { .. })), "{msg}");
            assert!(msg.contains("inception_v3") && msg.contains(&*ckpt.to_string_lossy()), "{msg}");
            assert!(!out.exists());
        }
    }
}

#[test]
fn weights_only_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = edited(dir.path(), "weights", |m| m.classes.clear());
    let err = export::export(&ckpt, export::Format::Onnx, &dir.path().join("m.onnx")).unwrap_err().to_string();
    assert!(err.contains("no class list") && err.contains("weights.safetensors"), "{err}");
}

#[test]
fn unwritable_outputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = edited(dir.path(), "ok", |_| {});
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let cases = [
        (dir.path().join("missing/m.onnx"), "does not exist"),
        (blocker.join("m.onnx"), "does not exist"),
        (dir.path().to_path_buf(), "is a directory"),
    ];
    for (out, why) in cases {
        let err = export::export(&ckpt, export::Format::Onnx, &out).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, export::Error::Output { .. }), "{msg}");
        assert!(msg.contains(why) && msg.contains(&*out.to_string_lossy()), "{msg}");
    }
    // A folder nobody may create files in: /proc refuses even root; a read-only folder refuses
    // anyone else. Both formats fail at the atomic write, naming the output.
    let read_only = dir.path().join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    std::fs::set_permissions(&read_only, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    let mut outs = vec![Path::new("/proc/petal-export-test.onnx").to_path_buf()];
    if is_root() {
        testkit::skip("export/errors/read_only_folder", "running as root, who may write into a read-only folder");
    } else {
        outs.push(read_only.join("m.onnx"));
    }
    for out in outs {
        for format in [export::Format::Onnx, export::Format::Torchscript] {
            let err = export::export(&ckpt, format, &out).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, export::Error::Output { .. }), "{msg}");
            assert!(msg.contains(&*out.to_string_lossy()) && msg.contains("cannot write"), "{msg}");
        }
    }
    assert!(files(&read_only).is_empty());
}

/// Whether this process runs as root (uid 0), read from `/proc/self/status`.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

#[test]
fn failed_export_leaves_the_previous_file_and_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = edited(dir.path(), "good", |_| {});
    let bad = edited(dir.path(), "bad", |m| m.arch_config = serde_json::json!({"nonsense": 1}));
    let out = dir.path().join("m.onnx");
    export::export(&good, export::Format::Onnx, &out).unwrap();
    let before = std::fs::read(&out).unwrap();
    let listing = files(dir.path());
    assert!(export::export(&bad, export::Format::Onnx, &out).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), before);
    assert_eq!(files(dir.path()), listing);
    // A second export over the first replaces it whole; still no temp files.
    export::export(&good, export::Format::Torchscript, &out).unwrap();
    assert_ne!(std::fs::read(&out).unwrap(), before);
    assert_eq!(files(dir.path()), listing);
}
