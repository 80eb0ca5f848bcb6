//! `petal export` end to end: the real binary exports a small checkpoint to ONNX and TorchScript
//! with the sidecar, and names the file and the problem on bad input (exit code 1, no panic).

use std::path::Path;
use std::process::Command;

use checkpoint::{Checkpoint, ClassEntry, Metadata, Preprocessing};
use model::{Arch, Classifier, DenseNetConfig, HeadConfig};

fn petal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_petal"))
}

/// A tiny random DenseNet classifier checkpoint with 3 named classes.
fn tiny_checkpoint(dir: &Path) -> std::path::PathBuf {
    let arch = Arch::DenseNet(DenseNetConfig { growth_rate: 4, block_config: vec![2, 2], num_init_features: 8, bn_size: 2, drop_rate: 0.0 });
    let head = HeadConfig { hidden: vec![8], ..Default::default() };
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    Classifier::new(&vs.root(), &arch, &head, 3).expect("classifier");
    let meta = Metadata {
        arch: arch.name().into(),
        arch_config: serde_json::to_value(&arch).unwrap(),
        classes: ["daisy", "iris", "tulip"]
            .iter()
            .enumerate()
            .map(|(i, n)| ClassEntry { folder: n.to_string(), index: i, name: Some(format!("garden {n}")) })
            .collect(),
        preprocessing: Some(Preprocessing {
            input_size: 32,
            resize_size: 36,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            interpolation: Default::default(),
        }),
        head: serde_json::to_value(&head).unwrap(),
        ..Metadata::default()
    };
    let path = dir.join("tiny.safetensors");
    checkpoint::save(&path, &Checkpoint { meta, tensors: model::weights::varstore_tensors(&vs).unwrap() }).unwrap();
    path
}

#[test]
fn export_writes_onnx_torchscript_and_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = tiny_checkpoint(dir.path());
    for (format, file) in [("onnx", "model.onnx"), ("torchscript", "model.pt")] {
        let out = dir.path().join(file);
        let o = petal().args(["export", "--checkpoint"]).arg(&ckpt).args(["--format", format, "--out"]).arg(&out).output().unwrap();
        assert!(o.status.success(), "petal export --format {format}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains(file));
        assert!(std::fs::metadata(&out).unwrap().len() > 1000);
        let sidecar: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(format!("{file}.json"))).unwrap()).unwrap();
        assert_eq!(sidecar["format"], format);
        assert_eq!(sidecar["output"], "probabilities");
        assert_eq!(sidecar["classes"][2]["name"], "garden tulip");
        assert_eq!(sidecar["preprocessing"]["input_size"], 32);
    }
}

#[test]
fn export_bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = tiny_checkpoint(dir.path());
    let out = dir.path().join("no-such-folder/model.onnx");
    let o = petal().args(["export", "--checkpoint"]).arg(&ckpt).args(["--format", "onnx", "--out"]).arg(&out).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no-such-folder") && err.contains("does not exist") && !err.contains("panicked"), "{err}");
    let o = petal().args(["export", "--checkpoint"]).arg(&ckpt).args(["--format", "tflite", "--out"]).arg(&out).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("onnx") && err.contains("torchscript"), "{err}");
    let missing = dir.path().join("missing.safetensors");
    let o =
        petal().args(["export", "--checkpoint"]).arg(&missing).args(["--format", "onnx", "--out"]).arg(dir.path().join("m.onnx")).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("missing.safetensors") && !err.contains("panicked"), "{err}");
}
