//! The exported TorchScript loaded back with libtorch's `CModule` (no Python): traced at batch 2,
//! it runs at batch 1 and 3 and matches petal's probabilities (max |diff| ≤ 1e-4, same top-5).

mod common;

use common::*;

fn check(arch: &model::Arch, size: u32, classes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(dir.path(), 3);
    let x = batch(&paths, size);
    let ckpt = random_checkpoint(dir.path(), arch.name(), arch, serde_json::json!({"hidden": [32], "dropout": 0.2}), classes, size, &x);
    let out = dir.path().join("m.pt");
    let e = export::export(&ckpt, export::Format::Torchscript, &out).expect("export");
    assert_eq!(e.info.opset, None);
    let m = tch::CModule::load(&out).expect("load torchscript");
    let want = rows(&petal_probabilities(&ckpt, &x));
    for n in [1, 3] {
        let y = tch::no_grad(|| m.forward_ts(&[x.narrow(0, 0, n)])).expect("forward");
        assert_close(&format!("{} torchscript batch {n}", arch.name()), &rows(&y), &want[..n as usize], 1e-4);
    }
}

#[test]
fn tiny_densenet_torchscript_matches_petal_at_any_batch() {
    check(&tiny_densenet(), 64, 10);
}

#[test]
fn lite0_torchscript_matches_petal_at_any_batch() {
    check(&model::Arch::EfficientNetLite0, 224, 102);
}
