//! int8 (`petal_onnx::quantize`): the QDQ graph of a full-size EfficientNet-Lite0 and DenseNet-121
//! runs in onnxruntime and tracks the float graph on photos; its structure is onnxruntime's QDQ
//! format with the stem left float; bias correction subtracts the mean shift the int8 weights cause
//! on the calibration images (checked against libtorch's convolution), and without shifts the biases
//! round as before; a graph without its calibrated ranges is refused; and the
//! predictor's precision rules (`auto` without a record is float32, `int8` without one names
//! `petal quantize`, int8 on libtorch is refused).

use crate::common;

use common::*;
use infer::{Precision, Predictor, Runtime};
use model::Arch;
use std::collections::HashMap;

use petal_onnx::proto::{GraphProto, NodeProto};
use petal_onnx::quantize::{batch_norms_as_convolutions, quantize, quantize_weights, Calibrator, Plan};
use petal_onnx::OrtNet;
use tch::{Device, Kind, Tensor};

const REAL: &str = "export/int8/real_images";

/// Cosine similarity of each row of `a` with the same row of `b`.
fn row_cosines(a: &Tensor, b: &Tensor) -> Vec<f64> {
    let cos = (a * b).sum_dim_intlist(1, false, Kind::Double)
        / (a.norm_scalaropt_dim(2, [1], false) * b.norm_scalaropt_dim(2, [1], false)).to_kind(Kind::Double);
    Vec::<f64>::try_from(cos).unwrap()
}

fn calibrated(pred: &Predictor, x: &Tensor) -> petal_onnx::Calibration {
    let mut c = Calibrator::new(&pred.backbone_graph().unwrap(), 0).expect("calibrator");
    let x = x.contiguous();
    let dims: Vec<usize> = x.size().iter().map(|&d| d as usize).collect();
    c.observe(&Vec::<f32>::try_from(x.flatten(0, -1)).unwrap(), &dims).expect("calibration pass");
    assert_eq!(c.images(), dims[0]);
    c.calibration().expect("calibration")
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
        let calibration = calibrated(&fp32, &x);
        let mut int8 = Predictor::load(&ckpt, Device::Cpu).unwrap();
        int8.set_int8(&calibration).expect("int8 session");
        assert_eq!((int8.runtime(), int8.precision(), fp32.precision()), (Runtime::Onnxruntime, Precision::Int8, Precision::Fp32));

        // Structure: QDQ nodes, every convolution but the stem reads dequantized int8 weights.
        let graph = quantize(&fp32.backbone_graph().unwrap(), &calibration).expect("quantize");
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

/// The raw bytes of initializer `name` of `g`.
fn raw<'a>(g: &'a GraphProto, name: &str) -> &'a [u8] {
    let t = g.initializer.iter().find(|t| t.name.as_deref() == Some(name)).unwrap_or_else(|| panic!("no initializer {name}"));
    t.raw_data.as_deref().unwrap_or_else(|| panic!("{name} has no raw data"))
}

fn f32s(g: &GraphProto, name: &str) -> Vec<f32> {
    raw(g, name).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn ints(n: &NodeProto, key: &str, default: &[i64]) -> Vec<i64> {
    n.attribute.iter().find(|a| a.name.as_deref() == Some(key)).map_or(default.to_vec(), |a| a.ints.clone())
}

/// The mean over images and positions of each output channel of `n`'s convolution of `x` with
/// the weight `w` (no bias), in f64 by libtorch.
fn conv_channel_means(n: &NodeProto, x: &Tensor, w: &Tensor) -> Vec<f64> {
    let pads = ints(n, "pads", &[0; 4]);
    let groups = n.attribute.iter().find(|a| a.name.as_deref() == Some("group")).and_then(|a| a.i).unwrap_or(1);
    let x = x.constant_pad_nd([pads[1], pads[3], pads[0], pads[2]]);
    let y = x.conv2d(w, None::<Tensor>, ints(n, "strides", &[1, 1]), [0, 0], ints(n, "dilations", &[1, 1]), groups);
    Vec::<f64>::try_from(y.mean_dim([0, 2, 3].as_slice(), false, Kind::Double)).unwrap()
}

#[test]
fn bias_correction_cancels_the_weights_mean_shift() {
    let dir = tempfile::tempdir().unwrap();
    let x = batch(&images(REAL, 4), 224);
    for arch in [Arch::EfficientNetLite0, Arch::DenseNet121] {
        let ckpt = random_checkpoint(dir.path(), arch.name(), &arch, serde_json::json!({"hidden": [], "dropout": 0.0}), 102, 224, &x);
        let mut pred = Predictor::load(&ckpt, Device::Cpu).unwrap();
        pred.set_backend(Runtime::Onnxruntime, Precision::Fp32, None).expect("onnxruntime (run `cargo xtask setup`)");
        let calibration = calibrated(&pred, &x);
        // DenseNet's pre-activation norms are quantized as the depthwise convolutions they are.
        let float = batch_norms_as_convolutions(&pred.backbone_graph().unwrap()).unwrap();
        let fg = float.graph.as_ref().unwrap();
        let shifts = &calibration.weight_shifts.0;
        let convs: Vec<&NodeProto> = fg.node.iter().filter(|n| n.op_type.as_deref() == Some("Conv") && n.input[0] != "input").collect();
        assert_eq!(shifts.len(), convs.len(), "{}: a shift for every convolution but the stem", arch.name());

        // Every convolution's input on the same images, from the float graph.
        let plan = Plan::of(&float).unwrap();
        let net = OrtNet::new(&petal_onnx::to_bytes(&plan.calibration_model(&float).unwrap()), 0).unwrap();
        let dims: Vec<usize> = x.size().iter().map(|&d| d as usize).collect();
        let acts: HashMap<String, Tensor> = net
            .run_all(&Vec::<f32>::try_from(x.contiguous().flatten(0, -1)).unwrap(), &dims)
            .unwrap()
            .into_iter()
            .map(|o| {
                (o.name, Tensor::from_slice(&o.values).view(o.dims.iter().map(|&d| d as i64).collect::<Vec<_>>().as_slice()).to_kind(Kind::Double))
            })
            .collect();

        let int8 = quantize(&float, &calibration).expect("quantize").graph.unwrap();
        let plain = quantize(&float, &calibration.without_bias_correction()).expect("quantize").graph.unwrap();
        let (mut steps, mut count) = (0f64, 0usize);
        for n in convs {
            let wname = &n.input[1];
            let wt = fg.initializer.iter().find(|t| t.name.as_deref() == Some(wname.as_str())).unwrap();
            let w = f32s(fg, wname);
            let o = wt.dims[0] as usize;
            let (q, scales) = quantize_weights(&w, o);
            let per = w.len() / o;
            let delta: Vec<f64> = w.iter().enumerate().map(|(i, &v)| f64::from(q[i]) * f64::from(scales[i / per]) - f64::from(v)).collect();
            let delta = Tensor::from_slice(&delta).view(wt.dims.as_slice());
            // The recorded shift is the mean of the convolution of the calibration images'
            // activations with the weights' rounding error.
            let want = conv_channel_means(n, &acts[&n.input[0]], &delta);
            let got = &shifts[wname];
            for (c, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!((f64::from(*g) - e).abs() <= 1e-5 * (1.0 + e.abs()), "{} {wname} channel {c}: shift {g}, by libtorch {e}", arch.name());
            }
            // The int8 bias is the float bias less the shift, to within half a step (the input's
            // scale × the weight's); without the shifts it is the float bias.
            let bias: Vec<f64> =
                n.input.get(2).filter(|b| !b.is_empty()).map_or(vec![0.0; o], |b| f32s(fg, b).iter().map(|&v| f64::from(v)).collect());
            let sx = f32s(&int8, &format!("{}_scale", n.input[0]))[0];
            let int32 = |g: &GraphProto| -> Option<Vec<f64>> {
                let qn = g
                    .node
                    .iter()
                    .find(|m| m.op_type.as_deref() == Some("Conv") && m.input[1] == format!("{wname}_dequantized"))
                    .expect("the int8 convolution");
                let b = qn.input.get(2)?.strip_suffix("_dequantized").expect("a quantized bias").to_string();
                Some(raw(g, &format!("{b}_quantized")).chunks_exact(4).map(|v| f64::from(i32::from_le_bytes([v[0], v[1], v[2], v[3]]))).collect())
            };
            let corrected = int32(&int8).expect("a corrected convolution has a bias");
            let uncorrected = int32(&plain).unwrap_or_else(|| vec![0.0; o]);
            for c in 0..o {
                let step = f64::from(sx * scales[c]);
                let d = f64::from(got[c]);
                assert!((corrected[c] * step - (bias[c] - d)).abs() <= step * (0.5 + 1e-3), "{} {wname} channel {c}: corrected", arch.name());
                assert!((uncorrected[c] * step - bias[c]).abs() <= step * (0.5 + 1e-3), "{} {wname} channel {c}: uncorrected", arch.name());
                steps += d.abs() / step;
                count += 1;
            }
        }
        // The correction is not a no-op: the rounding moves the means by many bias steps.
        let mean_steps = steps / count as f64;
        eprintln!("{}: the weights' rounding shifts a channel's mean by {mean_steps:.1} bias steps on average", arch.name());
        assert!(mean_steps > 2.0, "{}: {mean_steps}", arch.name());
    }
}

#[test]
fn batch_norms_written_as_depthwise_convolutions_answer_as_the_norms_did() {
    let dir = tempfile::tempdir().unwrap();
    let x = batch(&images(REAL, 4), 224);
    let ckpt = random_checkpoint(dir.path(), "d", &Arch::DenseNet121, serde_json::json!({"hidden": [], "dropout": 0.0}), 102, 224, &x);
    let pred = Predictor::load(&ckpt, Device::Cpu).unwrap();
    let norms = pred.backbone_graph().unwrap();
    let convs = batch_norms_as_convolutions(&norms).unwrap();
    let ops =
        |m: &petal_onnx::proto::ModelProto, op: &str| m.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type.as_deref() == Some(op)).count();
    // DenseNet-121: 58 dense layers, 3 transitions and the last norm.
    assert_eq!((ops(&norms, "BatchNormalization"), ops(&convs, "BatchNormalization")), (62, 0));
    assert_eq!(ops(&convs, "Conv"), ops(&norms, "Conv") + 62);
    assert_eq!(batch_norms_as_convolutions(&convs).unwrap(), convs, "nothing left to rewrite");
    let run = |m: &petal_onnx::proto::ModelProto| OrtNet::new(&petal_onnx::to_bytes(m), 0).unwrap().run_tensor(&x).unwrap();
    let (a, b) = (run(&norms), run(&convs));
    let rel = f64::try_from((&a - &b).abs().max()).unwrap() / f64::try_from(a.abs().max()).unwrap();
    assert!(rel < 1e-5, "the rewritten graph's features differ by {rel} of the largest");
}

#[test]
fn a_graph_without_its_ranges_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let x = batch(&images(REAL, 1), 64);
    let ckpt = random_checkpoint(dir.path(), "d", &tiny_densenet(), serde_json::json!({"hidden": [], "dropout": 0.0}), 5, 64, &x);
    let pred = Predictor::load(&ckpt, Device::Cpu).unwrap();
    let err = quantize(&pred.backbone_graph().unwrap(), &petal_onnx::Calibration::default()).expect_err("no ranges");
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
