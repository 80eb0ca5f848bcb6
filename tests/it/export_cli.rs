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
    tiny_checkpoint_named(dir, "tiny.safetensors", None)
}

/// [`tiny_checkpoint`] at `dir/name`. Each call draws other random weights, unless another test
/// thread reseeded libtorch's generator to the same state in between (training tests do): a test
/// that needs two checkpoints to answer differently sets the last layer's bias with `last_bias`.
fn tiny_checkpoint_named(dir: &Path, name: &str, last_bias: Option<[f32; 3]>) -> std::path::PathBuf {
    let arch = Arch::DenseNet(DenseNetConfig { growth_rate: 4, block_config: vec![2, 2], num_init_features: 8, bn_size: 2, drop_rate: 0.0 });
    let head = HeadConfig { hidden: vec![8], ..Default::default() };
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    Classifier::new(&vs.root(), &arch, &head, 3).expect("classifier");
    if let Some(bias) = last_bias {
        let mut vars = vs.variables();
        let b = vars.get_mut("classifier.3.bias").expect("the head's last bias");
        tch::no_grad(|| b.copy_(&tch::Tensor::from_slice(&bias)));
    }
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
        // A calibration temperature, which every export must apply as `petal predict` does.
        inference: Some(serde_json::json!({ "calibration": {
            "temperature": 0.25, "split": "valid-select", "images": 10, "nll": [1.0, 0.5], "ece": [0.4, 0.05]
        } })),
        ..Metadata::default()
    };
    let path = dir.join(name);
    checkpoint::save(&path, &Checkpoint { meta, tensors: model::weights::varstore_tensors(&vs).unwrap() }).unwrap();
    path
}

/// The exported file's probabilities for `x` (`[2, 3, 32, 32]`): the ONNX file through
/// onnxruntime, the TorchScript file through `torch.jit`'s C++ loader.
fn run_exported(format: &str, file: &Path, x: &tch::Tensor) -> Vec<f32> {
    match format {
        "onnx" => {
            let net = petal_onnx::OrtNet::new(&std::fs::read(file).unwrap(), 1).expect("onnxruntime loads the exported file");
            let data: Vec<f32> = Vec::try_from(x.flatten(0, -1)).unwrap();
            let (shape, probs) = net.run(&data, &[2, 3, 32, 32]).expect("onnxruntime runs it");
            assert_eq!(shape, [2, 3]);
            probs
        }
        _ => {
            let module = tch::CModule::load(file).expect("torch.jit loads the exported file");
            let y = tch::no_grad(|| module.forward_ts(&[x.shallow_clone()])).expect("the module runs");
            Vec::try_from(y.flatten(0, -1)).unwrap()
        }
    }
}

#[test]
fn export_writes_onnx_torchscript_and_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = tiny_checkpoint(dir.path());
    // What `petal predict` computes (the temperature applied), and the head's own probabilities.
    let pred = infer::Predictor::load(&ckpt, tch::Device::Cpu).unwrap();
    assert_eq!(pred.temperature(), 0.25);
    let x = tch::Tensor::randn([2, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
    let want: Vec<f32> = Vec::try_from(pred.probabilities(&x).unwrap().flatten(0, -1)).unwrap();
    let raw: Vec<f32> = Vec::try_from(pred.raw_logits(&x).unwrap().softmax(-1, tch::Kind::Float).flatten(0, -1)).unwrap();
    assert!(want.iter().zip(&raw).any(|(a, b)| (a - b).abs() > 1e-3), "the temperature must change the probabilities");
    for (format, file) in [("onnx", "model.onnx"), ("torchscript", "model.pt")] {
        let out = dir.path().join(file);
        let o = petal().args(["export", "--checkpoint"]).arg(&ckpt).args(["--format", format, "--out"]).arg(&out).output().unwrap();
        assert!(o.status.success(), "petal export --format {format}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains(file));
        // The file runs, and answers what petal predicts, calibration included.
        let got = run_exported(format, &out, &x);
        assert_eq!(got.len(), want.len());
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "{format}: max |p_export - p_petal| = {diff}");
        let sidecar: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(format!("{file}.json"))).unwrap()).unwrap();
        assert_eq!(sidecar["format"], format);
        assert_eq!(sidecar["output"], "probabilities");
        assert_eq!(sidecar["classes"][2]["name"], "garden tulip");
        assert_eq!(sidecar["preprocessing"]["input_size"], 32);
        assert_eq!(sidecar["temperature"], 0.25);
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

#[test]
fn concurrent_exports_to_one_file_leave_a_file_and_sidecar_of_the_same_export() {
    let dir = tempfile::tempdir().unwrap();
    // Last biases far apart: the two answer differently whatever the random draws were. (At ±2
    // a CI run once drew weights whose logits outweighed them, through the calibration
    // temperature of 0.25, and both files gave the same saturated answer; ±20 puts class 0
    // first for one and class 2 for the other.)
    let ckpts = [
        tiny_checkpoint_named(dir.path(), "a.safetensors", Some([20.0, 0.0, -20.0])),
        tiny_checkpoint_named(dir.path(), "b.safetensors", Some([-20.0, 0.0, 20.0])),
    ];
    let out = dir.path().join("model.onnx");
    // Six real processes, two checkpoints, one output, all at once.
    let mut running: Vec<std::process::Child> = (0..6)
        .map(|i| {
            petal()
                .args(["export", "--checkpoint"])
                .arg(&ckpts[i % 2])
                .args(["--format", "onnx", "--out"])
                .arg(&out)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in &mut running {
        let status = c.wait().unwrap();
        assert!(status.success(), "a concurrent export failed");
    }
    // Whichever export came last, its file and its sidecar are a pair: the sidecar names a
    // checkpoint, and the file answers what that checkpoint predicts.
    let sidecar: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("model.onnx.json")).unwrap()).unwrap();
    let source = sidecar["source_checkpoint"].as_str().expect("source_checkpoint").to_string();
    assert!(source == "a.safetensors" || source == "b.safetensors", "{source}");
    let x = tch::Tensor::randn([2, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
    let got = run_exported("onnx", &out, &x);
    let probs = |c: &Path| -> Vec<f32> {
        Vec::try_from(infer::Predictor::load(c, tch::Device::Cpu).unwrap().probabilities(&x).unwrap().flatten(0, -1)).unwrap()
    };
    let diff = |want: &[f32]| got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let (named, other) = if source == "a.safetensors" { (&ckpts[0], &ckpts[1]) } else { (&ckpts[1], &ckpts[0]) };
    assert!(diff(&probs(named)) < 1e-5, "the file is not the export of the checkpoint its sidecar names");
    assert!(diff(&probs(other)) > 1e-4, "the two checkpoints must answer differently for this test to mean anything");
    // Nothing else is left in the folder but the lock beside the output.
    let mut left: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["a.safetensors", "b.safetensors", "model.onnx", "model.onnx.json", "model.onnx.lock"]);
}
