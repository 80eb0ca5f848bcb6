//! `--runtime`: frozen features computed by onnxruntime and by libtorch are cached under different
//! keys (switching runtimes computes the other's features once, switching back computes nothing),
//! the two give the same accuracy to the last epoch on the same data, and `predict` answers the
//! same top-3 with either runtime.

use crate::common;

use std::path::Path;

use common::{config, make_dataset, metrics, ok, train_cmd};

/// The feature cache files in `dir`, sorted.
fn feature_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("features-") && n.ends_with(".safetensors"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn runtimes_have_their_own_feature_caches_and_agree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, work) = (tmp.path().join("data"), tmp.path().join("work"));
    make_dataset(&data, 6, 4, 0);
    let cfg = config(&work, "rt", &[("epochs", "3"), ("views", "0")]);
    let cache = work.join("cache");
    let run = |runtime: &str, name: &str| {
        let mut c = train_cmd(&data, Some(&cfg), &work);
        c.args(["--runtime", runtime, "--name", name]);
        ok(c.output().expect("train"), &format!("petal train --runtime {runtime}"));
        metrics(&work.join("runs").join(name))
    };
    let torch = run("torch", "rt-torch");
    let torch_files = feature_files(&cache);
    assert_eq!(torch_files.len(), 2, "train and valid features: {torch_files:?}");
    let ort = run("onnxruntime", "rt-ort");
    let both = feature_files(&cache);
    assert_eq!(both.len(), 4, "onnxruntime's features are cached under their own keys: {both:?}");
    assert!(torch_files.iter().all(|f| both.contains(f)), "libtorch's files are kept");
    let mtimes = |files: &[String]| files.iter().map(|f| std::fs::metadata(cache.join(f)).unwrap().modified().unwrap()).collect::<Vec<_>>();
    let before = mtimes(&both);
    run("torch", "rt-torch-again");
    run("onnxruntime", "rt-ort-again");
    assert_eq!(feature_files(&cache), both, "switching back computes nothing new");
    assert_eq!(mtimes(&both), before, "and rewrites nothing");
    // The same head on features equal to 1e-5: the same accuracy at every epoch.
    let acc = |m: &[serde_json::Value]| m.iter().map(|e| e["valid_acc"].as_f64()).collect::<Vec<_>>();
    assert_eq!(acc(&torch), acc(&ort), "valid accuracy per epoch");

    // predict: the same top-3 classes through either runtime.
    let ckpt = work.join("runs/rt-torch/best.safetensors");
    let top = |runtime: &str| -> Vec<String> {
        let mut c = common::petal();
        c.args(["predict", "--json", "--top-k", "3", "--runtime", runtime, "--checkpoint"]).arg(&ckpt).arg(data.join("valid/daisy"));
        c.args(["--csv"]).arg(work.join(format!("p-{runtime}.csv")));
        ok(c.output().expect("predict"), "petal predict");
        let text = std::fs::read_to_string(work.join(format!("p-{runtime}.csv"))).expect("csv");
        // Probabilities may differ in the last digits; the classes may not.
        text.lines().map(|l| l.split(',').filter(|f| f.parse::<f64>().is_err()).collect::<Vec<_>>().join(",")).collect()
    };
    assert_eq!(top("torch"), top("onnxruntime"));
}
