//! int8 (`petal_onnx::quantize`): the QDQ graph of a full-size EfficientNet-Lite0 and DenseNet-121
//! runs in onnxruntime and tracks the float graph on photos; its structure is onnxruntime's QDQ
//! format with the stem left float; a graph without its calibrated ranges is refused; and the
//! predictor's precision rules (`auto` without a record is float32, `int8` without one names
//! `petal quantize`, int8 on libtorch is refused).

use crate::common;

use common::*;
use infer::{Precision, Predictor, Runtime};
use model::Arch;
use petal_onnx::quantize::{quantize, Calibrator};
use tch::{Device, Kind, Tensor};

const REAL: &str = "export/int8/real_images";

/// Cosine similarity of each row of `a` with the same row of `b`.
fn row_cosines(a: &Tensor, b: &Tensor) -> Vec<f64> {
    let cos = (a * b).sum_dim_intlist(1, false, Kind::Double)
        / (a.norm_scalaropt_dim(2, [1], false) * b.norm_scalaropt_dim(2, [1], false)).to_kind(Kind::Double);
    Vec::<f64>::try_from(cos).unwrap()
}

fn calibrated(pred: &Predictor, x: &Tensor) -> petal_onnx::Ranges {
    let mut c = Calibrator::new(&pred.backbone_graph().unwrap(), 0).expect("calibrator");
    let x = x.contiguous();
    let dims: Vec<usize> = x.size().iter().map(|&d| d as usize).collect();
    c.observe(&Vec::<f32>::try_from(x.flatten(0, -1)).unwrap(), &dims).expect("calibration pass");
    assert_eq!(c.images(), dims[0]);
    c.ranges().expect("ranges")
}

#[test]
fn int8_tracks_the_float_graph_on_photos() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(REAL, 8);
    let x = batch(&paths, 224);
    for arch in [Arch::EfficientNetLite0, Arch::DenseNet121] {
        let ckpt = random_checkpoint(dir.path(), arch.name(), &arch, serde_json::json!({"hidden": [], "dropout": 0.0}), 102, 224, &x);
        let mut fp32 = Predictor::load(&ckpt, Device::Cpu).unwrap();
        fp32.set_backend(Runtime::Onnxruntime, Precision::Fp32, None).expect("onnxruntime (run `cargo xtask setup`)");
        let ranges = calibrated(&fp32, &x);
        let mut int8 = Predictor::load(&ckpt, Device::Cpu).unwrap();
        int8.set_int8(&ranges).expect("int8 session");
        assert_eq!((int8.runtime(), int8.precision(), fp32.precision()), (Runtime::Onnxruntime, Precision::Int8, Precision::Fp32));

        // Structure: QDQ nodes, every convolution but the stem reads dequantized int8 weights.
        let graph = quantize(&fp32.backbone_graph().unwrap(), &ranges).expect("quantize");
        let nodes = &graph.graph.as_ref().unwrap().node;
        let count = |op: &str| nodes.iter().filter(|n| n.op_type.as_deref() == Some(op)).count();
        let convs: Vec<_> = nodes.iter().filter(|n| n.op_type.as_deref() == Some("Conv")).collect();
        assert!(
            count("QuantizeLinear") > 10 && count("DequantizeLinear") > convs.len(),
            "{}: {} Q, {} DQ",
            arch.name(),
            count("QuantizeLinear"),
            count("DequantizeLinear")
        );
        let float_convs: Vec<&str> = convs.iter().filter(|n| !n.input[1].ends_with("_dequantized")).map(|n| n.input[0].as_str()).collect();
        assert_eq!(float_convs, ["input"], "{}: only the stem stays float", arch.name());

        let (f, q) = (fp32.features(&x).unwrap(), int8.features(&x).unwrap());
        let cos = row_cosines(&q, &f);
        let worst = cos.iter().cloned().fold(1.0, f64::min);
        eprintln!("{}: feature cosine int8 vs fp32, worst of 8: {worst:.5}", arch.name());
        assert!(worst > 0.98, "{}: int8 features drift from float: cosines {cos:?}", arch.name());
        let (pf, pq) = (rows(&fp32.probabilities(&x).unwrap()), rows(&int8.probabilities(&x).unwrap()));
        let agree = pf.iter().zip(&pq).filter(|(a, b)| top_k(a, 1) == top_k(b, 1)).count();
        assert!(agree >= 7, "{}: int8 agrees with float on the top class of {agree} of 8 photos", arch.name());
    }
}

#[test]
fn a_graph_without_its_ranges_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let x = batch(&images(REAL, 1), 64);
    let ckpt = random_checkpoint(dir.path(), "d", &tiny_densenet(), serde_json::json!({"hidden": [], "dropout": 0.0}), 5, 64, &x);
    let pred = Predictor::load(&ckpt, Device::Cpu).unwrap();
    let err = quantize(&pred.backbone_graph().unwrap(), &petal_onnx::Ranges::default()).expect_err("no ranges");
    assert!(err.to_string().contains("no calibrated range for"), "{err}");
}

#[test]
fn precision_rules_without_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let x = batch(&images(REAL, 1), 64);
    let ckpt = random_checkpoint(dir.path(), "d", &tiny_densenet(), serde_json::json!({"hidden": [], "dropout": 0.0}), 5, 64, &x);
    let mut p = Predictor::load(&ckpt, Device::Cpu).unwrap();
    p.set_backend(Runtime::Onnxruntime, Precision::Auto, None).unwrap();
    assert_eq!(p.precision(), Precision::Fp32, "auto without an int8 record is float32");
    let err = p.set_backend(Runtime::Onnxruntime, Precision::Int8, None).expect_err("no record");
    assert!(err.to_string().contains("petal quantize"), "{err}");
    let err = p.set_backend(Runtime::Torch, Precision::Int8, None).expect_err("int8 on libtorch");
    assert!(err.to_string().contains("onnxruntime only"), "{err}");
}
