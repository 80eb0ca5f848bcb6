//! `petal serve --runtime onnxruntime`: the backbone on onnxruntime, the head on libtorch, and the
//! service's guarantee kept: after the start-up probe an image's answer has the same bits alone and
//! in a batch of any size, and it equals libtorch's to 1e-5 with the same ranking.

use crate::common::*;

use infer::{Runtime, Tta};
use serve::{Backend, PredictorBackend};

#[test]
fn onnxruntime_answers_do_not_depend_on_the_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = tiny_checkpoint(dir.path(), "flowers", 5);
    let ort = PredictorBackend::load_with_runtime("flowers", &path, (tch::Device::Cpu, Runtime::Onnxruntime), 40_000_000).expect("load");
    assert_eq!(ort.info().runtime, Runtime::Onnxruntime);
    let torch = PredictorBackend::load("flowers", &path, tch::Device::Cpu, 40_000_000).expect("load");
    assert_eq!(torch.info().runtime, Runtime::Torch);
    const MAX: usize = 4;
    ort.calibrate(MAX).expect("calibrate");
    let inputs: Vec<Vec<u8>> = (0..6).map(|i| ort.prepare(&png(i), "x.png", Tta::None).expect("prepare")).collect();
    let k = 3;
    let single: Vec<Vec<infer::ClassProb>> = inputs.iter().map(|x| ort.predict(x, &[k]).expect("predict").remove(0)).collect();
    assert!(single.windows(2).any(|w| w[0] != w[1]), "the images give different answers");
    for n in 1..=MAX {
        let batch = ort.predict(&inputs[..n].concat(), &vec![k; n]).expect("batch");
        for (i, got) in batch.iter().enumerate() {
            let same = got.iter().zip(&single[i]).all(|(a, b)| a.index == b.index && a.prob.to_bits() == b.prob.to_bits());
            assert!(same, "image {i} in a batch of {n}: {got:?} vs alone {:?}", single[i]);
        }
    }
    for (x, want) in inputs.iter().zip(&single) {
        let t = torch.predict(x, &[k]).expect("torch").remove(0);
        let idx = |v: &[infer::ClassProb]| v.iter().map(|c| c.index).collect::<Vec<_>>();
        assert_eq!(idx(&t), idx(want), "the same top-{k}");
        for (a, b) in t.iter().zip(want) {
            assert!((a.prob - b.prob).abs() <= 1e-5, "libtorch {} vs onnxruntime {}", a.prob, b.prob);
        }
    }
}
