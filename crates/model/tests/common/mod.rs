//! Helpers shared by the model tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// The Python used to generate goldens at test time: `$PETAL_PYTHON`, else `../venv-torch/bin/python`
/// beside the workspace (like `../shared`), else `python3` on the PATH.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("PETAL_PYTHON") {
        return PathBuf::from(p);
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../venv-torch/bin/python");
    if beside.exists() {
        return beside;
    }
    PathBuf::from("python3")
}

/// Runs `gen_goldens.py <what> <out>` once (cached under the cargo target tmp dir, keyed by the
/// script's contents). Returns `None` with the reason printed when Python or a package is
/// unavailable.
pub fn generated_golden(what: &str) -> Option<PathBuf> {
    generated_golden_ext(what, "safetensors")
}

/// [`generated_golden`] for an output file with extension `ext` (e.g. `shapes` writes JSON).
pub fn generated_golden_ext(what: &str, ext: &str) -> Option<PathBuf> {
    use std::hash::{Hash, Hasher};
    let script = std::fs::read(fixtures().join("gen_goldens.py")).expect("gen_goldens.py");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    script.hash(&mut h);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("model-golden-{what}-{:016x}.{ext}", h.finish()));
    if out.exists() {
        return Some(out);
    }
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let py = python();
    let res = Command::new(&py).arg(fixtures().join("gen_goldens.py")).arg(what).arg(&tmp).output();
    match res {
        Ok(o) if o.status.success() => {
            std::fs::rename(&tmp, &out).expect("rename golden");
            Some(out)
        }
        Ok(o) => {
            eprintln!(
                "SKIP: {} gen_goldens.py {what} failed ({}): {}",
                py.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
            );
            None
        }
        Err(e) => {
            eprintln!("SKIP: cannot run {} ({e}); set PETAL_PYTHON to a Python with torch", py.display());
            None
        }
    }
}
