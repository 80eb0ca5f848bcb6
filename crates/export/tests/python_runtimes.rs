//! The exported ONNX run by onnxruntime (default CPU provider) and the exported TorchScript run
//! by `torch.jit.load`, in the Python test venv (`$PETAL_PYTHON`, else `../venv-torch` beside the
//! workspace): max |diff| ≤ 1e-4 on probabilities against petal and the same top-5. Skips with a
//! printed reason when that Python lacks onnxruntime, onnx or torch.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use model::Arch;

/// The check id (skipped with the reason recorded when the Python lacks a runtime).
const CHECK: &str = "export/python_runtimes/onnxruntime_torch_jit";

/// The test venv's Python when it imports onnx, onnxruntime, torch and numpy; else the check is
/// skipped loudly (`PETAL-SKIP`) and `None` returned.
fn python_with_runtimes() -> Option<PathBuf> {
    let reference = testkit::Reference::find(CHECK, &["onnx", "onnxruntime", "torch", "numpy"])?;
    testkit::ran(CHECK);
    Some(reference.python)
}

fn read_f32(path: &Path, cols: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let v: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    v.chunks(cols).map(<[f32]>::to_vec).collect()
}

fn verify(py: &Path, dir: &Path, ckpt: &Path, paths: &[PathBuf], size: u32) {
    let onnx = dir.join("m.onnx");
    let ts = dir.join("m.pt");
    export::export(ckpt, export::Format::Onnx, &onnx).expect("onnx export");
    export::export(ckpt, export::Format::Torchscript, &ts).expect("torchscript export");
    let x = batch(paths, size);
    let want = rows(&petal_probabilities(ckpt, &x));
    let input: Vec<u8> = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap().iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("x.bin"), input).unwrap();
    let shape = x.size().iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/verify_runtimes.py");
    let o = Command::new(py)
        .arg(&script)
        .args([&onnx, &ts, &dir.join("x.bin")])
        .arg(&shape)
        .args([dir.join("y_onnx.bin"), dir.join("y_ts.bin")])
        .output()
        .expect("run python");
    assert!(o.status.success(), "verify_runtimes.py failed: {}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("report json");
    assert_eq!(report["opset"], serde_json::json!([17]));
    assert_eq!(report["input_shape"][0], "batch");
    assert_eq!(report["output"], "probabilities");
    assert_eq!(report["metadata"]["output"], "probabilities");
    let c = want[0].len();
    assert_close("onnxruntime", &read_f32(&dir.join("y_onnx.bin"), c), &want, 1e-4);
    assert_close("torch.jit.load", &read_f32(&dir.join("y_ts.bin"), c), &want, 1e-4);
}

const REAL: &str = "export/python_runtimes/real_images";

#[test]
fn onnxruntime_and_torch_jit_match_petal_one_architecture_per_family() {
    let Some(py) = python_with_runtimes() else { return };
    let dir = tempfile::tempdir().unwrap();
    let paths = images(REAL, 3);
    let x = batch(&paths, 64);
    for arch in [tiny_densenet(), Arch::ResNet50, Arch::Vgg11Bn, Arch::AlexNet, Arch::EfficientNetLite1] {
        let ckpt = random_checkpoint(dir.path(), arch.name(), &arch, serde_json::json!({"hidden": [16], "dropout": 0.2}), 10, 64, &x);
        verify(&py, dir.path(), &ckpt, &paths, 64);
    }
}

#[test]
fn onnxruntime_and_torch_jit_match_petal_full_size_lite0() {
    let Some(py) = python_with_runtimes() else { return };
    let dir = tempfile::tempdir().unwrap();
    let paths = images(REAL, 3);
    let ckpt = random_checkpoint(
        dir.path(),
        "lite0",
        &Arch::EfficientNetLite0,
        serde_json::json!({"hidden": [512], "dropout": 0.2}),
        102,
        224,
        &batch(&paths, 224),
    );
    verify(&py, dir.path(), &ckpt, &paths, 224);
}
