//! The exported ONNX run by onnxruntime (default CPU provider) and the exported TorchScript run
//! by `torch.jit.load`, in the Python test venv (`$PETAL_PYTHON`, set by `cargo xtask test`): max
//! |diff| ≤ 1e-4 on probabilities against petal and the same top-5. Skips, recorded through
//! `testkit`, when that Python lacks onnxruntime, onnx or torch (a required check: not in CI).

use crate::common;

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

/// One network: its checkpoint, exported to both formats in `dir/<stem>.{onnx,pt}`, and the
/// input and expected probabilities.
struct Job {
    ckpt: PathBuf,
    x: tch::Tensor,
    want: Vec<Vec<f32>>,
}

impl Job {
    fn new(ckpt: PathBuf, paths: &[PathBuf], size: u32) -> Job {
        let x = batch(paths, size);
        let want = rows(&petal_probabilities(&ckpt, &x));
        Job { ckpt, x, want }
    }

    fn file(&self, ext: &str) -> PathBuf {
        self.ckpt.with_extension(ext)
    }

    /// Exports both formats and writes the input; returns the job's entry for the script.
    fn prepare(&self) -> serde_json::Value {
        export::export(&self.ckpt, export::Format::Onnx, &self.file("onnx")).expect("onnx export");
        export::export(&self.ckpt, export::Format::Torchscript, &self.file("pt")).expect("torchscript export");
        let input: Vec<u8> = Vec::<f32>::try_from(self.x.flatten(0, -1)).unwrap().iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(self.file("x.bin"), input).unwrap();
        serde_json::json!({
            "onnx": self.file("onnx"), "torchscript": self.file("pt"), "input": self.file("x.bin"), "shape": self.x.size(),
            "out_onnx": self.file("y_onnx.bin"), "out_torchscript": self.file("y_ts.bin"),
        })
    }
}

/// Runs every job in one Python process and compares both runtimes with petal.
fn verify(py: &Path, dir: &Path, jobs: &[Job]) {
    let spec: Vec<serde_json::Value> = jobs.iter().map(Job::prepare).collect();
    let spec_path = dir.join("jobs.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/verify_runtimes.py");
    let o = Command::new(py).arg(&script).arg(&spec_path).output().expect("run python");
    assert!(o.status.success(), "verify_runtimes.py failed: {}", String::from_utf8_lossy(&o.stderr));
    let reports: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).expect("report json");
    for (job, report) in jobs.iter().zip(&reports) {
        let name = job.ckpt.file_stem().unwrap().to_string_lossy().into_owned();
        assert_eq!(report["opset"], serde_json::json!([17]), "{name}");
        assert_eq!(report["input_shape"][0], "batch", "{name}");
        assert_eq!(report["output"], "probabilities", "{name}");
        assert_eq!(report["metadata"]["output"], "probabilities", "{name}");
        let c = job.want[0].len();
        assert_close(&format!("{name} onnxruntime"), &read_f32(&job.file("y_onnx.bin"), c), &job.want, 1e-4);
        assert_close(&format!("{name} torch.jit.load"), &read_f32(&job.file("y_ts.bin"), c), &job.want, 1e-4);
    }
    assert_eq!(reports.len(), jobs.len());
}

const REAL: &str = "export/python_runtimes/real_images";

/// One architecture per family at 64 px, and Lite0 at its full 224 px, in one Python process.
#[test]
fn onnxruntime_and_torch_jit_match_petal() {
    let Some(py) = python_with_runtimes() else { return };
    let dir = tempfile::tempdir().unwrap();
    let paths = images(REAL, 3);
    let x = batch(&paths, 64);
    let mut jobs: Vec<Job> = [tiny_densenet(), Arch::ResNet50, Arch::Vgg11Bn, Arch::AlexNet, Arch::EfficientNetLite1]
        .iter()
        .map(|arch| {
            let ckpt = random_checkpoint(dir.path(), arch.name(), arch, serde_json::json!({"hidden": [16], "dropout": 0.2}), 10, 64, &x);
            Job::new(ckpt, &paths, 64)
        })
        .collect();
    let head = serde_json::json!({"hidden": [512], "dropout": 0.2});
    let lite0 = random_checkpoint(dir.path(), "lite0-224", &Arch::EfficientNetLite0, head, 102, 224, &batch(&paths, 224));
    jobs.push(Job::new(lite0, &paths, 224));
    verify(&py, dir.path(), &jobs);
}
