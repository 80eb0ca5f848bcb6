//! The exported TorchScript loaded back with libtorch's `CModule` (no Python), random weights at
//! 64 px: traced at batch 2, it runs at batch 1 and 3 and matches petal's probabilities (max
//! |diff| ≤ 1e-4, same top-5). One architecture per family by default; every built-in one with
//! `--ignored`.

use crate::common;

use common::*;
use model::Arch;

fn check(dir: &std::path::Path, arch: &Arch, x: &tch::Tensor, size: u32, classes: usize) {
    let ckpt = random_checkpoint(dir, arch.name(), arch, serde_json::json!({"hidden": [32], "dropout": 0.2}), classes, size, x);
    let out = dir.join("m.pt");
    let e = export::export(&ckpt, export::Format::Torchscript, &out).expect("export");
    assert_eq!(e.info.opset, None);
    let m = tch::CModule::load(&out).expect("load torchscript");
    let want = rows(&petal_probabilities(&ckpt, x));
    for n in [1, 3] {
        let y = tch::no_grad(|| m.forward_ts(&[x.narrow(0, 0, n)])).expect("forward");
        assert_close(&format!("{} torchscript batch {n}", arch.name()), &rows(&y), &want[..n as usize], 1e-4);
    }
    std::fs::remove_file(&ckpt).unwrap();
}

/// One architecture of each family (TorchScript export is one trace for all of them).
#[test]
fn torchscript_matches_petal_at_any_batch_one_architecture_per_family() {
    let dir = tempfile::tempdir().unwrap();
    let x = batch(&images("export/torchscript/real_images", 3), 64);
    for arch in [tiny_densenet(), Arch::ResNet18, Arch::Vgg11Bn, Arch::AlexNet, Arch::EfficientNetLite0] {
        check(dir.path(), &arch, &x, 64, 10);
    }
}

/// Every built-in architecture (minutes: `cargo test -p export --test it torchscript:: -- --ignored`).
#[test]
#[ignore]
fn every_architecture_torchscript_matches_petal_at_any_batch() {
    let dir = tempfile::tempdir().unwrap();
    let x = batch(&images("export/torchscript/real_images", 3), 64);
    for arch in Arch::builtin() {
        check(dir.path(), &arch, &x, 64, 10);
    }
}
